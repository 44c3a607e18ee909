//! SDES: SRTP keys in SDP `a=crypto` attributes (RFC 4568).
//!
//! `a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [<session-params>]`
//!
//! rvoip reads one key per attribute (the first `inline:`; further keys are
//! only usable through their MKI, which rvoip does not switch between), and
//! refuses session parameters that weaken the protection
//! (`UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`) or that
//! it does not implement (`FEC_KEY`), with the reason in the error.

use crate::entropy::Entropy;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

use super::{MAX_KEY, MAX_SALT, MasterKey, Mki, Suite};
use crate::sdp::Crypto;

/// One parsed `a=crypto` attribute.
#[derive(Debug, Clone)]
pub struct CryptoAttr {
    /// The attribute's tag (answers echo the tag of the offer they accept).
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    /// The key the attribute's author will send with.
    pub master: MasterKey,
    /// `WSH=` window size hint, if given.
    pub window_hint: Option<u32>,
}

/// Why an `a=crypto` attribute is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdesError {
    /// Not `tag suite key-params [session-params]`.
    Syntax(&'static str),
    /// A crypto-suite rvoip does not implement (skipped in offers).
    UnknownSuite(String),
    /// The key is not base64 of key || salt of the suite's lengths.
    BadKey(&'static str),
    /// A session parameter rvoip refuses.
    Refused(String),
}

impl std::fmt::Display for SdesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdesError::Syntax(s) => write!(f, "a=crypto: {s}"),
            SdesError::UnknownSuite(s) => write!(f, "a=crypto: unsupported crypto-suite {s}"),
            SdesError::BadKey(s) => write!(f, "a=crypto: {s}"),
            SdesError::Refused(s) => write!(f, "a=crypto: {s}"),
        }
    }
}

impl std::error::Error for SdesError {}

fn lifetime(s: &str) -> Result<u64, SdesError> {
    let v = if let Some(exp) = s.strip_prefix("2^") {
        let e: u32 = exp
            .parse()
            .map_err(|_| SdesError::Syntax("key lifetime is not 2^n or a number"))?;
        if e > 63 {
            return Err(SdesError::Syntax("key lifetime above 2^63"));
        }
        1u64 << e
    } else {
        s.parse()
            .map_err(|_| SdesError::Syntax("key lifetime is not 2^n or a number"))?
    };
    if v == 0 {
        return Err(SdesError::Syntax("key lifetime of zero packets"));
    }
    Ok(v)
}

fn mki(s: &str) -> Result<Mki, SdesError> {
    let (value, len) = s
        .split_once(':')
        .ok_or(SdesError::Syntax("MKI is not value:length"))?;
    let value: u64 = value
        .parse()
        .map_err(|_| SdesError::Syntax("MKI value is not a number"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| SdesError::Syntax("MKI length is not a number"))?;
    if !(1..=4).contains(&len) {
        return Err(SdesError::Refused(format!(
            "MKI length {len} not supported (1-4 octets)"
        )));
    }
    if len < 8 && value >> (8 * u32::from(len)) != 0 {
        return Err(SdesError::Syntax("MKI value does not fit its length"));
    }
    Ok(Mki {
        value: value as u32,
        len,
    })
}

/// Which part of an `a=crypto` value does not parse.
fn structure_error(value: &[u8]) -> SdesError {
    let mut f = value
        .split(u8::is_ascii_whitespace)
        .filter(|p| !p.is_empty());
    let tag_ok = f
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<u32>().ok())
        .is_some();
    SdesError::Syntax(match (tag_ok, f.next(), f.next()) {
        (false, ..) => "tag is not a 1-9 digit number",
        (_, None, _) => "no crypto-suite",
        (_, _, None) => "no key-params",
        _ => "key method is not inline",
    })
}

/// Parses the value of an `a=crypto` attribute.
pub fn parse(value: &[u8]) -> Result<CryptoAttr, SdesError> {
    // The structure (tag, suite, key-params, session-params) is the SDP
    // layer's; this adds what SRTP needs of each part.
    let c = Crypto::parse(value).ok_or_else(|| structure_error(value))?;
    if c.tag > 999_999_999 {
        return Err(SdesError::Syntax("tag is not a 1-9 digit number"));
    }
    let suite = Suite::from_name(c.suite)
        .ok_or_else(|| SdesError::UnknownSuite(String::from_utf8_lossy(c.suite).into_owned()))?;
    // RFC 4568 §9.1: several key-params may follow; the first is used.
    let key = c.keys.first().ok_or(SdesError::Syntax("no key-params"))?;
    let mut raw = [0u8; MAX_KEY + MAX_SALT + 3];
    let n = STANDARD
        .decode_slice(key.key_salt, &mut raw)
        .map_err(|_| SdesError::BadKey("key is not base64 of key || salt"))?;
    let master = MasterKey::from_concatenated(suite, &raw[..n]);
    raw.zeroize();
    let mut master = master.ok_or(SdesError::BadKey(
        "key || salt length does not fit the crypto-suite",
    ))?;
    let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).ok();
    if let Some(l) = key.lifetime {
        master.lifetime = lifetime(&text(l).unwrap_or_default())?;
    }
    if let Some((v, l)) = key.mki {
        master.mki = Some(mki(&format!(
            "{}:{}",
            text(v).unwrap_or_default(),
            text(l).unwrap_or_default()
        ))?);
    }
    let params: Vec<String> = c
        .session_params
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let fields = params.iter().map(String::as_str);
    let mut window_hint = None;
    for sp in fields {
        let (name, arg) = sp.split_once('=').unwrap_or((sp, ""));
        match name {
            "KDR" => {
                let n: u8 = arg
                    .parse()
                    .map_err(|_| SdesError::Syntax("KDR is not a number"))?;
                master.kdr_log2 = match n {
                    0 => None,
                    1..=24 => Some(n),
                    _ => return Err(SdesError::Syntax("KDR outside 0-24")),
                };
            }
            "UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" | "UNAUTHENTICATED_SRTP" => {
                return Err(SdesError::Refused(format!(
                    "{name} refused: rvoip only carries encrypted and authenticated SRTP"
                )));
            }
            "WSH" => {
                window_hint = Some(
                    arg.parse()
                        .map_err(|_| SdesError::Syntax("WSH is not a number"))?,
                );
            }
            // The order of FEC and SRTP does not matter without FEC.
            "FEC_ORDER" => {}
            _ => {
                return Err(SdesError::Refused(format!(
                    "session parameter {name} not supported"
                )));
            }
        }
    }
    Ok(CryptoAttr {
        tag: c.tag,
        suite,
        master,
        window_hint,
    })
}

/// The value of an `a=crypto` attribute for `tag`, `suite` and `master`.
/// The lifetime and MKI are written when they differ from the defaults.
pub fn format(tag: u32, master: &MasterKey, suite: Suite) -> String {
    let mut raw = [0u8; MAX_KEY + MAX_SALT];
    let n = master.concatenated(&mut raw);
    let mut out = format!("{tag} {} inline:", suite.name());
    STANDARD.encode_string(&raw[..n], &mut out);
    raw.zeroize();
    if master.lifetime != super::DEFAULT_LIFETIME || master.mki.is_some() {
        let lt = master.lifetime;
        if lt.is_power_of_two() {
            out.push_str(&format!("|2^{}", lt.trailing_zeros()));
        } else {
            out.push_str(&format!("|{lt}"));
        }
    }
    if let Some(m) = master.mki {
        out.push_str(&format!("|{}:{}", m.value, m.len));
    }
    if let Some(n) = master.kdr_log2 {
        out.push_str(&format!(" KDR={n}"));
    }
    out
}

/// A fresh random master key and salt for `suite`.
pub fn generate(suite: Suite, rng: &dyn Entropy) -> Option<MasterKey> {
    let mut raw = [0u8; MAX_KEY + MAX_SALT];
    let n = suite.master_key_len() + suite.master_salt_len();
    rng.fill(&mut raw[..n]).ok()?;
    let m = MasterKey::from_concatenated(suite, &raw[..n]);
    raw.zeroize();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_4568_example_and_writes_it_back() {
        // RFC 4568 §4 example key.
        let v =
            b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";
        let a = parse(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.tag, a.suite), (1, Suite::AesCm128HmacSha1_80));
        assert_eq!(a.master.lifetime, 1 << 20);
        assert_eq!(a.master.mki, Some(Mki { value: 1, len: 4 }));
        assert_eq!(a.master.key().len(), 16);
        assert_eq!(a.master.salt().len(), 14);
        assert_eq!(format(1, &a.master, a.suite).as_bytes(), &v[..]);
    }

    #[test]
    fn gcm_keys_are_16_or_32_octets_with_a_12_octet_salt() {
        let rng = crate::entropy::SystemEntropy::new();
        for suite in Suite::ALL {
            let k = generate(suite, &rng).unwrap_or_else(|| panic!("{suite:?}"));
            let line = format(7, &k, suite);
            let back = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back.suite, suite);
            assert_eq!(back.master.key(), k.key());
            assert_eq!(back.master.salt(), k.salt());
            assert_eq!(
                back.master.salt().len(),
                if suite.is_gcm() { 12 } else { 14 }
            );
        }
    }

    #[test]
    fn weakening_and_unknown_session_parameters_are_refused_with_a_reason() {
        let key = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        for (params, needle) in [
            ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP refused"),
            ("UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP refused"),
            ("UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP refused"),
            ("FEC_KEY=inline:x", "FEC_KEY not supported"),
        ] {
            let v = format!("1 AES_CM_128_HMAC_SHA1_80 {key} {params}");
            let e = parse(v.as_bytes()).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(needle)),
                "{v}: {e:?}"
            );
        }
        let ok = format!("1 AES_CM_128_HMAC_SHA1_80 {key} KDR=16 WSH=256 FEC_ORDER=FEC_SRTP");
        let a = parse(ok.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.master.kdr_log2, a.window_hint), (Some(16), Some(256)));
    }

    #[test]
    fn malformed_attributes_get_specific_errors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "tag"),
            (b"x AES_CM_128_HMAC_SHA1_80 inline:AAAA", "tag"),
            (
                b"1 AES_192_CM_HMAC_SHA1_80 inline:AAAA",
                "unsupported crypto-suite",
            ),
            (b"1 AES_CM_128_HMAC_SHA1_80", "no key-params"),
            (b"1 AES_CM_128_HMAC_SHA1_80 uri:x", "inline"),
            (b"1 AES_CM_128_HMAC_SHA1_80 inline:QUJD", "length"),
            (b"1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "base64"),
        ];
        for (v, needle) in cases {
            let e = parse(v).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(needle), "{:?}: {e}", String::from_utf8_lossy(v));
        }
        let mki_too_long =
            b"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:9";
        assert!(matches!(parse(mki_too_long), Err(SdesError::Refused(_))));
    }
}
