//! Typed views of the SDP attributes an SBC and a media relay act on.

use std::net::IpAddr;

fn split_space(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b' ').filter(|p| !p.is_empty())
}

fn number<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `opus`, `telephone-event`).
    pub encoding: &'a [u8],
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (audio), when written.
    pub channels: Option<u8>,
}

impl<'a> RtpMap<'a> {
    /// Parses the attribute value.
    pub fn parse(v: &'a [u8]) -> Option<RtpMap<'a>> {
        let sp = memchr::memchr(b' ', v)?;
        let payload_type = number(&v[..sp])?;
        let mut parts = v[sp + 1..].split(|b| *b == b'/');
        let encoding = parts.next().filter(|e| !e.is_empty())?;
        let clock_rate = number(parts.next()?)?;
        let channels = match parts.next() {
            Some(c) => Some(number(c)?),
            None => None,
        };
        Some(RtpMap {
            payload_type,
            encoding,
            clock_rate,
            channels,
        })
    }

    /// Case-insensitive comparison of the encoding name.
    pub fn is(&self, encoding: &str) -> bool {
        self.encoding.eq_ignore_ascii_case(encoding.as_bytes())
    }
}

/// `a=fmtp:<payload type> <parameters>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp<'a> {
    /// Payload type.
    pub payload_type: u8,
    /// The format parameters as written.
    pub params: &'a [u8],
}

impl<'a> Fmtp<'a> {
    /// Parses the attribute value.
    pub fn parse(v: &'a [u8]) -> Option<Fmtp<'a>> {
        let sp = memchr::memchr(b' ', v).unwrap_or(v.len());
        Some(Fmtp {
            payload_type: number(&v[..sp])?,
            params: v.get(sp + 1..).unwrap_or(&[]),
        })
    }

    /// The value of `name=value` among `;`-separated parameters.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.params.split(|b| *b == b';').find_map(|p| {
            let p = p.trim_ascii();
            let eq = memchr::memchr(b'=', p)?;
            p[..eq]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| p[eq + 1..].trim_ascii())
        })
    }
}

/// Media direction (RFC 3264 §5.1, RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// Resolves an attribute name.
    pub fn from_name(n: &[u8]) -> Option<Direction> {
        match n {
            b"sendrecv" => Some(Direction::SendRecv),
            b"sendonly" => Some(Direction::SendOnly),
            b"recvonly" => Some(Direction::RecvOnly),
            b"inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction the answerer uses for an offer with this one (RFC 3264 §6.1).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    /// RTCP port.
    pub port: u16,
    /// RTCP address, when given.
    pub address: Option<IpAddr>,
}

impl Rtcp {
    /// Parses the attribute value.
    pub fn parse(v: &[u8]) -> Option<Rtcp> {
        let mut parts = split_space(v);
        let port = number(parts.next()?)?;
        let address = match parts.next() {
            None => None,
            Some(b"IN") => {
                let _addr_type = parts.next()?;
                Some(number(parts.next()?)?)
            }
            Some(_) => return None,
        };
        Some(Rtcp { port, address })
    }
}

/// One key of an `a=crypto` line: `inline:<key||salt base64>[|<lifetime>][|<MKI>:<length>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParam<'a> {
    /// Base64 of the master key and salt.
    pub key_salt: &'a [u8],
    /// Lifetime (`2^31` or a number), as written.
    pub lifetime: Option<&'a [u8]>,
    /// MKI value and length, as written.
    pub mki: Option<(&'a [u8], &'a [u8])>,
}

/// `a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]` (RFC 4568 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto<'a> {
    /// Tag that the answer echoes.
    pub tag: u32,
    /// Crypto suite name (`AES_CM_128_HMAC_SHA1_80`, ...).
    pub suite: &'a [u8],
    /// Keys (usually one).
    pub keys: Vec<KeyParam<'a>>,
    /// Session parameters (`UNENCRYPTED_SRTP`, `KDR=...`, ...).
    pub session_params: Vec<&'a [u8]>,
}

impl<'a> Crypto<'a> {
    /// Parses the attribute value.
    pub fn parse(v: &'a [u8]) -> Option<Crypto<'a>> {
        let mut parts = split_space(v);
        let tag = number(parts.next()?)?;
        let suite = parts.next()?;
        let key_text = parts.next()?;
        let mut keys = Vec::new();
        for kp in key_text.split(|b| *b == b';') {
            let info = kp.strip_prefix(b"inline:")?;
            let mut fields = info.split(|b| *b == b'|');
            let key_salt = fields.next().filter(|k| !k.is_empty())?;
            let mut lifetime = None;
            let mut mki = None;
            for f in fields {
                match memchr::memchr(b':', f) {
                    Some(c) => mki = Some((&f[..c], &f[c + 1..])),
                    None => lifetime = Some(f),
                }
            }
            keys.push(KeyParam {
                key_salt,
                lifetime,
                mki,
            });
        }
        Some(Crypto {
            tag,
            suite,
            keys,
            session_params: parts.collect(),
        })
    }
}

/// `a=candidate` (RFC 8839 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate<'a> {
    /// Foundation.
    pub foundation: &'a [u8],
    /// Component id (1 RTP, 2 RTCP).
    pub component: u16,
    /// Transport (`UDP`).
    pub transport: &'a [u8],
    /// Priority.
    pub priority: u32,
    /// Connection address (IP or FQDN) as written.
    pub address: &'a [u8],
    /// Port.
    pub port: u16,
    /// Candidate type (`host`, `srflx`, `prflx`, `relay`).
    pub kind: &'a [u8],
}

impl<'a> IceCandidate<'a> {
    /// Parses the attribute value.
    pub fn parse(v: &'a [u8]) -> Option<IceCandidate<'a>> {
        let mut p = split_space(v);
        let foundation = p.next()?;
        let component = number(p.next()?)?;
        let transport = p.next()?;
        let priority = number(p.next()?)?;
        let address = p.next()?;
        let port = number(p.next()?)?;
        if p.next()? != b"typ" {
            return None;
        }
        let kind = p.next()?;
        Some(IceCandidate {
            foundation,
            component,
            transport,
            priority,
            address,
            port,
            kind,
        })
    }
}

/// Attributes whose value starts with the payload type they describe.
pub(super) fn is_payload_attribute(name: &[u8]) -> bool {
    [&b"rtpmap"[..], b"fmtp", b"rtcp-fb"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// The payload type a payload attribute's value starts with (`*` gives None).
pub(super) fn leading_payload_type(v: &[u8]) -> Option<u8> {
    let end = v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    number(&v[..end])
}
