//! SDP (RFC 8866) parse, write and rewrite.
//!
//! A description is kept as its lines, in order, with the media sections split
//! out and each `m=` line parsed. Typed views ([`Sdp::origin`],
//! [`MediaSection::rtpmaps`], [`MediaSection::crypto`], ...) parse a line when
//! asked; the rewrite methods change only the lines they own, so attributes
//! rvoip does not know are written back exactly as they came.
//!
//! Parsing borrows the input; only rewritten lines own their text.

mod attr;

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;

pub use attr::{Crypto, Direction, Fmtp, IceCandidate, Rtcp, RtpMap};

/// Why a description was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError {
    /// 1-based line number, 0 for the description as a whole.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "SDP: {}", self.reason)
        } else {
            write!(f, "SDP line {}: {}", self.line, self.reason)
        }
    }
}

impl std::error::Error for SdpError {}

/// Limits on a description's size, checked while parsing.
#[derive(Debug, Clone, Copy)]
pub struct SdpLimits {
    /// Most lines in one description.
    pub max_lines: usize,
    /// Most media sections.
    pub max_media: usize,
    /// Most formats on one `m=` line.
    pub max_formats: usize,
}

impl Default for SdpLimits {
    fn default() -> Self {
        SdpLimits {
            max_lines: 512,
            max_media: 16,
            max_formats: 64,
        }
    }
}

/// One `<type>=<value>` line.
#[derive(Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The type letter (`a`, `c`, `b`, ...).
    pub kind: u8,
    /// The text after `=`.
    pub value: Cow<'a, [u8]>,
}

impl fmt::Debug for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}",
            self.kind as char,
            String::from_utf8_lossy(&self.value)
        )
    }
}

impl<'a> Line<'a> {
    fn owned(kind: u8, value: Vec<u8>) -> Line<'a> {
        Line {
            kind,
            value: Cow::Owned(value),
        }
    }

    /// For an `a=` line, its name and optional value.
    pub fn attribute(&self) -> Option<(&[u8], Option<&[u8]>)> {
        if self.kind != b'a' {
            return None;
        }
        let v: &[u8] = &self.value;
        Some(match memchr::memchr(b':', v) {
            Some(c) => (&v[..c], Some(&v[c + 1..])),
            None => (v, None),
        })
    }

    fn is_attribute(&self, name: &str) -> bool {
        self.attribute()
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The `c=` line: `IN IP4 192.0.2.1` (multicast TTL and counts kept as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The address.
    pub address: IpAddr,
    /// Anything after the address (`/127` for multicast), as written.
    pub suffix: String,
}

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Username (`-` when none).
    pub username: &'a [u8],
    /// Session id.
    pub session_id: &'a [u8],
    /// Session version; it must grow with every changed offer (RFC 3264 §8).
    pub session_version: u64,
    /// Network type, `IN`.
    pub net_type: &'a [u8],
    /// Address type, `IP4` or `IP6`.
    pub addr_type: &'a [u8],
    /// The unicast address (or host name) as written.
    pub address: &'a [u8],
}

/// A parsed `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine<'a> {
    /// `audio`, `video`, `application`, ...
    pub kind: Cow<'a, [u8]>,
    /// Transport port; 0 rejects the stream (RFC 3264 §6).
    pub port: u16,
    /// `/<number of ports>` when written.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: Cow<'a, [u8]>,
    /// Formats: RTP payload types for RTP profiles.
    pub formats: Vec<Cow<'a, [u8]>>,
}

impl MediaLine<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"m=");
        out.extend_from_slice(&self.kind);
        let _ = write!(out, " {}", self.port);
        if let Some(n) = self.port_count {
            let _ = write!(out, "/{n}");
        }
        out.push(b' ');
        out.extend_from_slice(&self.proto);
        for f in &self.formats {
            out.push(b' ');
            out.extend_from_slice(f);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Whether the formats are RTP payload types (an RTP profile).
    pub fn is_rtp(&self) -> bool {
        self.proto
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"RTP"))
    }
}

/// One media section: its `m=` line and the lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection<'a> {
    /// The media line.
    pub media: MediaLine<'a>,
    /// The section's other lines, in order.
    pub lines: Vec<Line<'a>>,
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    /// Session-level lines, `v=` first, in order.
    pub session: Vec<Line<'a>>,
    /// Media sections in order.
    pub media: Vec<MediaSection<'a>>,
}

fn parse_u16(v: &[u8]) -> Option<u16> {
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = v.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}

fn parse_media_line<'a>(v: &'a [u8], limits: &SdpLimits) -> Result<MediaLine<'a>, &'static str> {
    let mut parts = v.split(|b| *b == b' ').filter(|p| !p.is_empty());
    let kind = parts.next().ok_or("m= line without a media type")?;
    let port_text = parts.next().ok_or("m= line without a port")?;
    let (port, port_count) = match memchr::memchr(b'/', port_text) {
        Some(s) => (
            parse_u16(&port_text[..s]).ok_or("m= port is not a number up to 65535")?,
            Some(parse_u16(&port_text[s + 1..]).ok_or("m= port count is not a number")?),
        ),
        None => (
            parse_u16(port_text).ok_or("m= port is not a number up to 65535")?,
            None,
        ),
    };
    let proto = parts.next().ok_or("m= line without a transport protocol")?;
    let mut formats = Vec::new();
    for f in parts {
        if formats.len() == limits.max_formats {
            return Err("too many formats on an m= line");
        }
        formats.push(Cow::Borrowed(f));
    }
    if formats.is_empty() {
        return Err("m= line without formats");
    }
    Ok(MediaLine {
        kind: Cow::Borrowed(kind),
        port,
        port_count,
        proto: Cow::Borrowed(proto),
        formats,
    })
}

/// Parses the value of a `c=` line.
pub fn parse_connection(v: &[u8]) -> Option<Connection> {
    let text = std::str::from_utf8(v).ok()?;
    let mut parts = text.split(' ').filter(|p| !p.is_empty());
    if parts.next()? != "IN" {
        return None;
    }
    let addr_type = parts.next()?;
    let addr_text = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (addr, suffix) = match addr_text.find('/') {
        Some(s) => (&addr_text[..s], &addr_text[s..]),
        None => (addr_text, ""),
    };
    let address: IpAddr = addr.parse().ok()?;
    match (addr_type, address) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(Connection {
            address,
            suffix: suffix.to_owned(),
        }),
        _ => None,
    }
}

fn connection_line_value(c: &Connection) -> Vec<u8> {
    let kind = if c.address.is_ipv4() { "IP4" } else { "IP6" };
    format!("IN {kind} {}{}", c.address, c.suffix).into_bytes()
}

impl<'a> Sdp<'a> {
    /// Parses a description. Lines may end in CRLF or a bare LF (RFC 8866 §5).
    pub fn parse(text: &'a [u8]) -> Result<Sdp<'a>, SdpError> {
        Sdp::parse_with(text, &SdpLimits::default())
    }

    /// Parses with explicit limits.
    pub fn parse_with(text: &'a [u8], limits: &SdpLimits) -> Result<Sdp<'a>, SdpError> {
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        let mut count = 0usize;
        for (n, raw) in text.split(|b| *b == b'\n').enumerate() {
            let line_no = n + 1;
            let err = |reason| SdpError {
                line: line_no,
                reason,
            };
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.is_empty() {
                continue;
            }
            count += 1;
            if count > limits.max_lines {
                return Err(err("too many lines"));
            }
            if raw.len() < 2 || raw[1] != b'=' || !raw[0].is_ascii_lowercase() {
                return Err(err("not a <type>=<value> line"));
            }
            if raw.iter().any(|b| *b == 0 || *b == b'\r') {
                return Err(err("NUL or CR inside a line"));
            }
            let (kind, value) = (raw[0], &raw[2..]);
            if count == 1 {
                if kind != b'v' || value != b"0" {
                    return Err(err("the first line must be v=0"));
                }
            } else if kind == b'v' {
                return Err(err("v= may appear only once, first"));
            }
            match kind {
                b'm' => {
                    if sdp.media.len() == limits.max_media {
                        return Err(err("too many media sections"));
                    }
                    let media = parse_media_line(value, limits).map_err(err)?;
                    sdp.media.push(MediaSection {
                        media,
                        lines: Vec::new(),
                    });
                }
                b'c' if parse_connection(value).is_none() => {
                    return Err(err("c= is not 'IN IP4|IP6 <address>'"));
                }
                b'o' if !sdp.media.is_empty() => return Err(err("o= inside a media section")),
                _ => {}
            }
            if kind != b'm' {
                let line = Line {
                    kind,
                    value: Cow::Borrowed(value),
                };
                match sdp.media.last_mut() {
                    Some(m) => m.lines.push(line),
                    None => sdp.session.push(line),
                }
            }
        }
        if sdp.session.is_empty() {
            return Err(SdpError {
                line: 0,
                reason: "empty description",
            });
        }
        match sdp.session.iter().find(|l| l.kind == b'o') {
            None => {
                return Err(SdpError {
                    line: 0,
                    reason: "no o= line",
                });
            }
            Some(o) if parse_origin(&o.value).is_none() => {
                return Err(SdpError {
                    line: 0,
                    reason: "o= is not '<user> <id> <version> IN <type> <address>'",
                });
            }
            _ => {}
        }
        // RFC 8866 §5.7: every media section needs a connection address, at
        // session or media level (port-zero sections excepted in practice).
        let session_c = sdp.session.iter().any(|l| l.kind == b'c');
        if !session_c
            && sdp
                .media
                .iter()
                .any(|m| m.media.port != 0 && !m.lines.iter().any(|l| l.kind == b'c'))
        {
            return Err(SdpError {
                line: 0,
                reason: "a media section has no c= line and there is no session c=",
            });
        }
        Ok(sdp)
    }

    /// Writes the description with CRLF line ends.
    pub fn write(&self, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, l: &Line<'_>| {
            out.push(l.kind);
            out.push(b'=');
            out.extend_from_slice(&l.value);
            out.extend_from_slice(b"\r\n");
        };
        for l in &self.session {
            line(out, l);
        }
        for m in &self.media {
            m.media.write(out);
            for l in &m.lines {
                line(out, l);
            }
        }
    }

    /// The description as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write(&mut out);
        out
    }

    /// The `o=` line.
    pub fn origin(&self) -> Option<Origin<'_>> {
        self.session
            .iter()
            .find(|l| l.kind == b'o')
            .and_then(|l| parse_origin(&l.value))
    }

    /// The `s=` text.
    pub fn session_name(&self) -> Option<&[u8]> {
        self.session
            .iter()
            .find(|l| l.kind == b's')
            .map(|l| &l.value[..])
    }

    /// The session-level `c=`.
    pub fn connection(&self) -> Option<Connection> {
        self.session
            .iter()
            .find(|l| l.kind == b'c')
            .and_then(|l| parse_connection(&l.value))
    }

    /// The session-level attributes.
    pub fn attributes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.session.iter().filter_map(Line::attribute)
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        self.attributes().find_map(|(n, _)| Direction::from_name(n))
    }

    /// The connection address that applies to media section `index`: its own
    /// `c=`, else the session's.
    pub fn media_connection(&self, index: usize) -> Option<Connection> {
        self.media
            .get(index)
            .and_then(MediaSection::connection)
            .or_else(|| self.connection())
    }

    /// Points every connection line (session and media) and the origin
    /// address at `addr`: what an SBC does so media flows through its relay
    /// and the other side's addresses are hidden.
    pub fn set_connection_address(&mut self, addr: IpAddr) {
        let rewrite = |lines: &mut Vec<Line<'a>>| {
            for l in lines.iter_mut().filter(|l| l.kind == b'c') {
                if let Some(mut c) = parse_connection(&l.value) {
                    c.address = addr;
                    *l = Line::owned(b'c', connection_line_value(&c));
                }
            }
        };
        rewrite(&mut self.session);
        for m in &mut self.media {
            rewrite(&mut m.lines);
        }
        self.set_origin_address(addr);
    }

    /// Points the session-level `c=`, if any, at `addr`.
    pub fn set_session_connection(&mut self, addr: IpAddr) {
        for l in self.session.iter_mut().filter(|l| l.kind == b'c') {
            if let Some(mut c) = parse_connection(&l.value) {
                c.address = addr;
                *l = Line::owned(b'c', connection_line_value(&c));
            }
        }
    }

    /// Rewrites the address of `o=`.
    pub fn set_origin_address(&mut self, addr: IpAddr) {
        if let Some(l) = self.session.iter_mut().find(|l| l.kind == b'o')
            && let Some(o) = parse_origin(&l.value)
        {
            let kind = if addr.is_ipv4() { "IP4" } else { "IP6" };
            let mut v = Vec::with_capacity(64);
            v.extend_from_slice(o.username);
            v.push(b' ');
            v.extend_from_slice(o.session_id);
            let _ = write!(v, " {} IN {kind} {addr}", o.session_version);
            *l = Line::owned(b'o', v);
        }
    }

    /// Sets the session version of `o=` (RFC 3264 §8: increment on change).
    pub fn set_session_version(&mut self, version: u64) {
        if let Some(l) = self.session.iter_mut().find(|l| l.kind == b'o')
            && let Some(o) = parse_origin(&l.value)
        {
            let mut v = Vec::with_capacity(64);
            for (i, part) in [o.username, o.session_id].iter().enumerate() {
                if i > 0 {
                    v.push(b' ');
                }
                v.extend_from_slice(part);
            }
            let _ = write!(v, " {version} ");
            v.extend_from_slice(o.net_type);
            v.push(b' ');
            v.extend_from_slice(o.addr_type);
            v.push(b' ');
            v.extend_from_slice(o.address);
            *l = Line::owned(b'o', v);
        }
    }

    /// Removes session-level attributes named `name`.
    pub fn remove_attribute(&mut self, name: &str) {
        self.session.retain(|l| !l.is_attribute(name));
    }

    /// Appends a session-level `a=name[:value]`.
    pub fn add_attribute(&mut self, name: &str, value: Option<&[u8]>) {
        let mut v = name.as_bytes().to_vec();
        if let Some(value) = value {
            v.push(b':');
            v.extend_from_slice(value);
        }
        self.session.push(Line::owned(b'a', v));
    }

    /// Removes all ICE attributes (RFC 8839) at every level: what `ICE=remove`
    /// asks of a relay that does not do ICE itself.
    pub fn remove_ice(&mut self) {
        for name in ICE_SESSION_ATTRIBUTES {
            self.remove_attribute(name);
        }
        for m in &mut self.media {
            for name in ICE_MEDIA_ATTRIBUTES {
                m.remove_attribute(name);
            }
        }
    }
}

const ICE_SESSION_ATTRIBUTES: &[&str] = &[
    "ice-lite",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-pacing",
];
const ICE_MEDIA_ATTRIBUTES: &[&str] = &[
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

fn parse_origin(v: &[u8]) -> Option<Origin<'_>> {
    let mut parts = v.split(|b| *b == b' ').filter(|p| !p.is_empty());
    let username = parts.next()?;
    let session_id = parts.next()?;
    let version_text = parts.next()?;
    let session_version = std::str::from_utf8(version_text).ok()?.parse().ok()?;
    let net_type = parts.next()?;
    let addr_type = parts.next()?;
    let address = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Origin {
        username,
        session_id,
        session_version,
        net_type,
        addr_type,
        address,
    })
}

impl<'a> MediaSection<'a> {
    /// The section's attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.lines.iter().filter_map(Line::attribute)
    }

    /// The value of the first attribute named `name`: `Some(None)` for a flag.
    pub fn attribute(&self, name: &str) -> Option<Option<&[u8]>> {
        self.attributes()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The media-level `c=`.
    pub fn connection(&self) -> Option<Connection> {
        self.lines
            .iter()
            .find(|l| l.kind == b'c')
            .and_then(|l| parse_connection(&l.value))
    }

    /// Every `a=rtpmap`.
    pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap<'_>> {
        self.attributes()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"rtpmap"))
            .filter_map(|(_, v)| RtpMap::parse(v?))
    }

    /// The `a=rtpmap` for payload type `pt`.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap<'_>> {
        self.rtpmaps().find(|m| m.payload_type == pt)
    }

    /// The `a=fmtp` for payload type `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<Fmtp<'_>> {
        self.attributes()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"fmtp"))
            .filter_map(|(_, v)| Fmtp::parse(v?))
            .find(|f| f.payload_type == pt)
    }

    /// `a=ptime` in milliseconds.
    pub fn ptime(&self) -> Option<u32> {
        let v = self.attribute("ptime")??;
        std::str::from_utf8(v).ok()?.trim().parse().ok()
    }

    /// The direction attribute of the section, if written.
    pub fn direction(&self) -> Option<Direction> {
        self.attributes().find_map(|(n, _)| Direction::from_name(n))
    }

    /// `a=rtcp` (RFC 3605).
    pub fn rtcp(&self) -> Option<Rtcp> {
        Rtcp::parse(self.attribute("rtcp")??)
    }

    /// Whether `a=rtcp-mux` is present (RFC 5761).
    pub fn rtcp_mux(&self) -> bool {
        self.attribute("rtcp-mux").is_some()
    }

    /// Every `a=crypto` (RFC 4568) that parses.
    pub fn crypto(&self) -> impl Iterator<Item = Crypto<'_>> {
        self.attributes()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"crypto"))
            .filter_map(|(_, v)| Crypto::parse(v?))
    }

    /// `a=ice-ufrag` and `a=ice-pwd` of the section.
    pub fn ice_credentials(&self) -> Option<(&[u8], &[u8])> {
        Some((self.attribute("ice-ufrag")??, self.attribute("ice-pwd")??))
    }

    /// Every `a=candidate` (RFC 8839) that parses.
    pub fn candidates(&self) -> impl Iterator<Item = IceCandidate<'_>> {
        self.attributes()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"candidate"))
            .filter_map(|(_, v)| IceCandidate::parse(v?))
    }

    /// Payload types of an RTP section, in preference order (unparsable formats skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.media
            .formats
            .iter()
            .filter_map(|f| std::str::from_utf8(f).ok()?.parse().ok())
    }

    /// Sets the port of the `m=` line.
    pub fn set_port(&mut self, port: u16) {
        self.media.port = port;
    }

    /// Sets or adds the media-level `c=`.
    pub fn set_connection(&mut self, addr: IpAddr) {
        let c = Connection {
            address: addr,
            suffix: String::new(),
        };
        let line = Line::owned(b'c', connection_line_value(&c));
        match self.lines.iter_mut().find(|l| l.kind == b'c') {
            Some(l) => *l = line,
            None => {
                // c= goes before b= and a= lines (RFC 8866 §5 ordering).
                let at = self
                    .lines
                    .iter()
                    .position(|l| !matches!(l.kind, b'i'))
                    .unwrap_or(self.lines.len());
                self.lines.insert(at, line);
            }
        }
    }

    /// Sets the transport protocol of the `m=` line (`RTP/AVP` ↔ `RTP/SAVP`).
    pub fn set_proto(&mut self, proto: &str) {
        self.media.proto = Cow::Owned(proto.as_bytes().to_vec());
    }

    /// Keeps only the payload types for which `keep` is true, in their
    /// order, removing the rtpmap, fmtp and rtcp-fb lines of the others.
    /// Returns how many formats remain.
    pub fn retain_formats(
        &mut self,
        mut keep: impl FnMut(u8, Option<&RtpMap<'_>>) -> bool,
    ) -> usize {
        let dropped: Vec<u8> = self
            .payload_types()
            .filter(|pt| !keep(*pt, self.rtpmap(*pt).as_ref()))
            .collect();
        self.media.formats.retain(|f| {
            let pt = std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.parse::<u8>().ok());
            !pt.is_some_and(|pt| dropped.contains(&pt))
        });
        self.lines.retain(|l| match l.attribute() {
            Some((n, Some(v))) if attr::is_payload_attribute(n) => {
                attr::leading_payload_type(v).is_none_or(|pt| !dropped.contains(&pt))
            }
            _ => true,
        });
        self.media.formats.len()
    }

    /// Appends payload type `pt` to the `m=` line with its `a=rtpmap`
    /// (`rtpmap` is what follows the number: `opus/48000/2`) and, when
    /// given, its `a=fmtp`.
    pub fn add_format(&mut self, pt: u8, rtpmap: &[u8], fmtp: Option<&[u8]>) {
        let number = pt.to_string();
        self.media
            .formats
            .push(Cow::Owned(number.as_bytes().to_vec()));
        self.add_attribute("rtpmap", Some(&[number.as_bytes(), b" ", rtpmap].concat()));
        if let Some(f) = fmtp {
            self.add_attribute("fmtp", Some(&[number.as_bytes(), b" ", f].concat()));
        }
    }

    /// Reorders the formats so the payload types in `preferred` come first,
    /// in that order; the others keep their relative order after them.
    pub fn prefer_formats(&mut self, preferred: &[u8]) {
        let rank = |f: &Cow<'_, [u8]>| {
            let pt = std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.parse::<u8>().ok());
            pt.and_then(|pt| preferred.iter().position(|p| *p == pt))
                .unwrap_or(preferred.len())
        };
        self.media.formats.sort_by_key(rank);
    }

    /// Sets the direction attribute, replacing any existing one.
    pub fn set_direction(&mut self, dir: Direction) {
        self.lines.retain(|l| {
            l.attribute()
                .is_none_or(|(n, _)| Direction::from_name(n).is_none())
        });
        self.lines
            .push(Line::owned(b'a', dir.as_str().as_bytes().to_vec()));
    }

    /// Removes every attribute named `name`.
    pub fn remove_attribute(&mut self, name: &str) {
        self.lines.retain(|l| !l.is_attribute(name));
    }

    /// Appends `a=name[:value]`.
    pub fn add_attribute(&mut self, name: &str, value: Option<&[u8]>) {
        let mut v = name.as_bytes().to_vec();
        if let Some(value) = value {
            v.push(b':');
            v.extend_from_slice(value);
        }
        self.lines.push(Line::owned(b'a', v));
    }

    /// Replaces every attribute named `name` with one `a=name[:value]`.
    pub fn set_attribute(&mut self, name: &str, value: Option<&[u8]>) {
        self.remove_attribute(name);
        self.add_attribute(name, value);
    }
}

#[cfg(test)]
mod tests;
