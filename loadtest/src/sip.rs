//! The SIP messages of the load scenario, written as text, and the few
//! values read back from received messages (through the dataplane's
//! zero-copy message view).

use std::net::SocketAddr;
use std::sync::Arc;

use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};
use rvoip_dataplane::srtp::sdes::{self, CryptoAttr};

/// Parses one datagram; `None` when it is not SIP.
pub fn parse(buf: &[u8]) -> Option<SipMessage<'_>> {
    SipMessage::parse(buf, Framing::Datagram, &Limits::DEFAULT).ok()
}

/// Message text written into a byte buffer: pieces and numbers appended
/// without the formatting machinery (these messages are built per call, at
/// thousands of calls per second).
#[derive(Debug, Default)]
pub struct Text(pub Vec<u8>);

impl Text {
    /// An empty text with room for `n` octets.
    pub fn with_capacity(n: usize) -> Self {
        Text(Vec::with_capacity(n))
    }

    /// Appends `s`.
    pub fn s(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends raw octets.
    pub fn b(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// Appends `v` in decimal.
    pub fn n(&mut self, v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        self.0
            .extend_from_slice(rvoip_dataplane::text::decimal(v, &mut digits));
        self
    }

    /// Appends `v` in lower-case hexadecimal.
    pub fn x(&mut self, v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        self.0
            .extend_from_slice(rvoip_dataplane::text::hex(v, 1, &mut digits));
        self
    }

    /// The text as a string (it is only ever built from strings and digits).
    pub fn into_string(self) -> String {
        String::from_utf8(self.0).unwrap_or_default()
    }
}

/// This side's addresses as messages carry them, rendered once per run.
#[derive(Debug, Clone)]
pub struct Local {
    /// The SIP socket as host:port (Via, Contact, From).
    pub sip: Arc<str>,
    /// The RTP address's text for `o=` and `c=`.
    pub rtp_ip: Arc<str>,
    /// `IP4` or `IP6`.
    pub rtp_family: &'static str,
    /// The RTP port.
    pub rtp_port: u16,
}

impl Local {
    /// The text of `sip` and `rtp`.
    pub fn new(sip: SocketAddr, rtp: SocketAddr) -> Self {
        Local {
            sip: sip.to_string().into(),
            rtp_ip: rtp.ip().to_string().into(),
            rtp_family: if rtp.is_ipv4() { "IP4" } else { "IP6" },
            rtp_port: rtp.port(),
        }
    }
}

/// The codec a side writes into its SDP: payload type and `a=rtpmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpCodec {
    /// Payload type.
    pub pt: u8,
    /// The rtpmap value after the number (`PCMU/8000`, `opus/48000/2`).
    pub rtpmap: String,
    /// The codec.
    pub codec: rvoip_codecs::Codec,
    /// telephone-event at payload type 101 beside it.
    pub events: bool,
}

impl SdpCodec {
    /// `codec` at payload type `pt`.
    pub fn new(codec: rvoip_codecs::Codec, pt: u8) -> SdpCodec {
        let mut rtpmap = format!("{}/{}", codec.name(), codec.default_clock());
        if codec.sdp_channels() > 1 {
            rtpmap.push_str(&format!("/{}", codec.sdp_channels()));
        }
        SdpCodec {
            pt,
            rtpmap,
            codec,
            events: false,
        }
    }

    /// `codec` at its static payload type, else 96.
    pub fn default_for(codec: rvoip_codecs::Codec) -> SdpCodec {
        SdpCodec::new(codec, codec.static_pt().unwrap_or(96))
    }

    /// PCMU at 0, as the load's stamped packets are.
    pub fn pcmu() -> SdpCodec {
        SdpCodec::default_for(rvoip_codecs::Codec::Pcmu)
    }
}

/// The SDP offer or answer for one call: `codec`, 20 ms, media at the local
/// RTP address, the stream's SSRC announced (RFC 5576 `a=ssrc`), and with
/// `crypto` (an SDES `a=crypto` value) the RTP/SAVP profile.
pub fn sdp(
    session: u64,
    local: &Local,
    ssrc: u32,
    crypto: Option<&str>,
    codec: &SdpCodec,
) -> String {
    let (family, ip) = (local.rtp_family, &*local.rtp_ip);
    let profile = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut t = Text::with_capacity(320);
    t.s("v=0\r\no=- ")
        .n(session)
        .s(" 1 IN ")
        .s(family)
        .s(" ")
        .s(ip);
    t.s("\r\ns=-\r\nc=IN ")
        .s(family)
        .s(" ")
        .s(ip)
        .s("\r\nt=0 0\r\nm=audio ");
    t.n(u64::from(local.rtp_port)).s(" ").s(profile).s(" ");
    t.n(u64::from(codec.pt));
    if codec.events {
        t.s(" 101");
    }
    t.s("\r\na=rtpmap:")
        .n(u64::from(codec.pt))
        .s(" ")
        .s(&codec.rtpmap);
    if codec.events {
        t.s("\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16");
    }
    t.s("\r\na=ptime:20\r\na=sendrecv\r\na=ssrc:");
    t.n(u64::from(ssrc)).s(" cname:rvoip-loadtest\r\n");
    if let Some(c) = crypto {
        t.s("a=crypto:").s(c).s("\r\n");
    }
    t.into_string()
}

/// What the far end's SDP says about its media.
#[derive(Debug, Clone)]
pub struct RemoteMedia {
    /// Where to send RTP.
    pub to: SocketAddr,
    /// The SSRC it announces, if it does.
    pub ssrc: Option<u32>,
    /// Its usable `a=crypto` attributes, in order.
    pub crypto: Vec<CryptoAttr>,
    /// Its formats: payload type and the codec rvoip knows it as.
    pub formats: Vec<(u8, Option<rvoip_codecs::Codec>)>,
}

impl RemoteMedia {
    /// The payload type it gives `codec`.
    pub fn pt_of(&self, codec: rvoip_codecs::Codec) -> Option<u8> {
        self.formats
            .iter()
            .find(|(_, c)| *c == Some(codec))
            .map(|(pt, _)| *pt)
    }
}

/// Reads the first media section of an SDP body.
pub fn remote_media(body: &[u8]) -> Option<RemoteMedia> {
    let sdp = rvoip_dataplane::sdp::Sdp::parse(body).ok()?;
    let m = sdp.media.first()?;
    let addr = sdp.media_connection(0)?.address;
    if m.media.port == 0 {
        return None;
    }
    let mut ssrc = None;
    let mut crypto = Vec::new();
    for (name, value) in m.attributes() {
        let value = value.unwrap_or_default();
        if name.eq_ignore_ascii_case(b"ssrc") && ssrc.is_none() {
            ssrc = value
                .split(|b| *b == b' ')
                .next()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"crypto")
            && let Ok(c) = sdes::parse(value)
        {
            crypto.push(c);
        }
    }
    let formats = m
        .payload_types()
        .map(|pt| {
            let codec = match m.rtpmap(pt) {
                Some(r) => rvoip_codecs::Codec::from_name(r.encoding),
                None => rvoip_codecs::Codec::from_static_pt(pt),
            };
            (pt, codec)
        })
        .collect();
    Some(RemoteMedia {
        to: SocketAddr::new(addr, m.media.port),
        ssrc,
        crypto,
        formats,
    })
}

/// The identity of the UAC side of one call.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// From tag.
    pub from_tag: String,
    /// Request-URI of the INVITE (and of a non-2xx ACK).
    pub request_uri: Arc<str>,
    /// The UAC's own SIP address as host:port (Via, Contact).
    pub local: Arc<str>,
}

fn body_headers(m: &mut Text, body: &str) {
    if body.is_empty() {
        m.s("Content-Length: 0\r\n\r\n");
    } else {
        m.s("Content-Type: application/sdp\r\nContent-Length: ")
            .n(body.len() as u64)
            .s("\r\n\r\n")
            .s(body);
    }
}

/// The request line's end, Via, Max-Forwards, From, To, Call-ID and CSeq
/// common to every request of the UAC's dialog.
fn request_head(
    m: &mut Text,
    d: &Dialog,
    method: &str,
    uri: &str,
    branch: &str,
    to: &str,
    cseq: u32,
) {
    let local = &*d.local;
    m.s(method)
        .s(" ")
        .s(uri)
        .s(" SIP/2.0\r\nVia: SIP/2.0/UDP ")
        .s(local);
    m.s(";branch=")
        .s(branch)
        .s(";rport\r\nMax-Forwards: 70\r\nFrom: <sip:loadtest@");
    m.s(local).s(">;tag=").s(&d.from_tag).s("\r\nTo: ").s(to);
    m.s("\r\nCall-ID: ")
        .s(&d.call_id)
        .s("\r\nCSeq: ")
        .n(u64::from(cseq));
    m.s(" ").s(method).s("\r\n");
}

/// An INVITE with `sdp` as its offer (empty: no body), CSeq `cseq`, and an
/// (Proxy-)Authorization header when `auth` gives one.
pub fn invite(
    d: &Dialog,
    branch: &str,
    cseq: u32,
    auth: Option<(&str, &str)>,
    sdp: &str,
) -> Vec<u8> {
    let mut m = Text::with_capacity(512 + sdp.len());
    let to = {
        let mut t = Text::with_capacity(d.request_uri.len() + 2);
        t.s("<").s(&d.request_uri).s(">");
        t.into_string()
    };
    request_head(&mut m, d, "INVITE", &d.request_uri, branch, &to, cseq);
    m.s("Contact: <sip:loadtest@")
        .s(&d.local)
        .s(">\r\nUser-Agent: rvoip-loadtest\r\n");
    if let Some((name, value)) = auth {
        m.s(name).s(": ").s(value).s("\r\n");
    }
    body_headers(&mut m, sdp);
    m.0
}

/// An in-dialog request (ACK for a 2xx, BYE) with its own branch.
pub fn in_dialog(
    d: &Dialog,
    method: &str,
    cseq: u32,
    branch: &str,
    remote_target: &str,
    to: &str,
    route: &[String],
) -> Vec<u8> {
    let mut m = Text::with_capacity(512);
    request_head(&mut m, d, method, remote_target, branch, to, cseq);
    for r in route {
        m.s("Route: ").s(r).s("\r\n");
    }
    body_headers(&mut m, "");
    m.0
}

/// The ACK for a non-2xx final response: same branch as the INVITE, the
/// response's To (RFC 3261 §17.1.1.3).
pub fn ack_for_failure(d: &Dialog, branch: &str, cseq: u32, to: &str) -> Vec<u8> {
    let mut m = Text::with_capacity(400);
    request_head(&mut m, d, "ACK", &d.request_uri, branch, to, cseq);
    body_headers(&mut m, "");
    m.0
}

/// A REGISTER of `user@domain` for `contact`, with an Authorization header
/// when `auth` gives one.
#[allow(clippy::too_many_arguments)]
pub fn register(
    user: &str,
    domain: &str,
    local: SocketAddr,
    call_id: &str,
    tag: &str,
    branch: &str,
    cseq: u32,
    expires: u32,
    auth: Option<&str>,
) -> Vec<u8> {
    let mut m = Text::with_capacity(600);
    let local = local.to_string();
    m.s("REGISTER sip:")
        .s(domain)
        .s(" SIP/2.0\r\nVia: SIP/2.0/UDP ")
        .s(&local);
    m.s(";branch=")
        .s(branch)
        .s(";rport\r\nMax-Forwards: 70\r\nFrom: <sip:")
        .s(user);
    m.s("@")
        .s(domain)
        .s(">;tag=")
        .s(tag)
        .s("\r\nTo: <sip:")
        .s(user)
        .s("@")
        .s(domain);
    m.s(">\r\nCall-ID: ")
        .s(call_id)
        .s("\r\nCSeq: ")
        .n(u64::from(cseq));
    m.s(" REGISTER\r\nContact: <sip:")
        .s(user)
        .s("@")
        .s(&local)
        .s(">\r\nExpires: ");
    m.n(u64::from(expires))
        .s("\r\nUser-Agent: rvoip-loadtest\r\n");
    if let Some(a) = auth {
        m.s("Authorization: ").s(a).s("\r\n");
    }
    body_headers(&mut m, "");
    m.0
}

/// A response to `req`: its Via, From, Call-ID and CSeq copied, To with
/// `to_tag` added when it has none, Record-Route copied for dialog-creating
/// responses, a Contact at `contact` (host:port) and `sdp` when given.
pub fn response(
    req: &SipMessage<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact: Option<&str>,
    sdp: &str,
) -> Vec<u8> {
    let mut m = Text::with_capacity(512 + sdp.len());
    m.s("SIP/2.0 ")
        .n(u64::from(code))
        .s(" ")
        .s(reason)
        .s("\r\n");
    for f in req.headers() {
        let copy = match f.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
            HeaderName::RecordRoute => (101..300).contains(&code),
            _ => false,
        };
        if copy {
            m.s(f.name.as_str()).s(": ").b(f.value).s("\r\n");
        }
    }
    if let Some(to) = req.header(HeaderName::To) {
        m.s("To: ").b(to);
        if let Some(tag) = to_tag
            && !to.windows(4).any(|w| w == b"tag=")
        {
            m.s(";tag=").s(tag);
        }
        m.s("\r\n");
    }
    if let Some(c) = contact {
        m.s("Contact: <sip:loadtest@").s(c).s(">\r\n");
    }
    body_headers(&mut m, sdp);
    m.0
}

/// The route set of a dialog from the UAC's side: the Record-Route entries
/// of the 2xx, in reverse order (RFC 3261 §12.1.2).
pub fn route_set(resp: &SipMessage<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for line in resp.header_lines(HeaderName::RecordRoute) {
        out.extend(split_list(line));
    }
    out.reverse();
    out
}

/// Splits a header value at the commas outside `<>` and quotes.
fn split_list(v: &[u8]) -> Vec<String> {
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut start) = (0u32, false, 0usize);
    for (i, &b) in v.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth = depth.saturating_sub(1),
            b',' if !quoted && depth == 0 => {
                items.push(String::from_utf8_lossy(v[start..i].trim_ascii()).into_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(String::from_utf8_lossy(v[start..].trim_ascii()).into_owned());
    items.retain(|s| !s.is_empty());
    items
}

/// The URI of the first Contact (the dialog's remote target).
pub fn contact_uri(msg: &SipMessage<'_>) -> Option<String> {
    let v = msg.header(HeaderName::Contact)?;
    let s = String::from_utf8_lossy(v);
    let uri = match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s.split(';').next().unwrap_or_default().trim(),
    };
    Some(uri.to_owned())
}

/// A failure as the report names it: the status and its reason phrase
/// (`503 Service Unavailable`), so a refusal reads as what it is.
pub fn failure_reason(code: u16, msg: &SipMessage<'_>) -> String {
    let phrase = msg
        .reason_phrase()
        .map(|p| String::from_utf8_lossy(p).trim().to_owned())
        .unwrap_or_default();
    if phrase.is_empty() {
        code.to_string()
    } else {
        format!("{code} {phrase}")
    }
}

/// The raw To header value.
pub fn to_value(msg: &SipMessage<'_>) -> Option<String> {
    msg.header(HeaderName::To)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        let mut t = Text::default();
        t.n(0)
            .s(" ")
            .n(u64::MAX)
            .s(" ")
            .x(0)
            .s(" ")
            .x(0xdead_beef)
            .s(" ")
            .x(u64::MAX);
        assert_eq!(
            t.into_string(),
            format!("0 {} 0 deadbeef ffffffffffffffff", u64::MAX)
        );
    }

    #[test]
    fn record_routes_reverse_into_the_route_set() {
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1\r\n\
            Record-Route: <sip:p2.example;lr>, <sip:p1.example;lr;x=\"a,b\">\r\n\
            Record-Route: <sip:p0.example;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\n\
            Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:b@10.0.0.2:5070;transport=udp>\r\nContent-Length: 0\r\n\r\n";
        let m = parse(resp).unwrap_or_else(|| panic!("parses"));
        assert_eq!(
            route_set(&m),
            [
                "<sip:p0.example;lr>",
                "<sip:p1.example;lr;x=\"a,b\">",
                "<sip:p2.example;lr>"
            ]
        );
        assert_eq!(
            contact_uri(&m).as_deref(),
            Some("sip:b@10.0.0.2:5070;transport=udp")
        );
    }

    #[test]
    fn a_response_copies_the_transaction_headers_and_tags_the_to() {
        let d = Dialog {
            call_id: "1-2-lt".into(),
            from_tag: "ft".into(),
            request_uri: "sip:service@127.0.0.1:5060".into(),
            local: "127.0.0.1:5080".into(),
        };
        let addr: SocketAddr = "127.0.0.1:5080".parse().unwrap_or_else(|_| panic!());
        let local = Local::new(addr, addr);
        let key = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let offer = sdp(1, &local, 77, Some(key), &SdpCodec::pcmu());
        let inv = invite(&d, "z9hG4bK-1", 1, None, &offer);
        let req = parse(&inv).unwrap_or_else(|| panic!("INVITE parses"));
        let remote = remote_media(req.body()).unwrap_or_else(|| panic!("SDP"));
        assert_eq!(
            (remote.to, remote.ssrc, remote.crypto.len()),
            (addr, Some(77), 1)
        );
        assert!(offer.contains("RTP/SAVP"));
        let r = response(&req, 180, "Ringing", Some("tt"), Some(&d.local), "");
        let resp = parse(&r).unwrap_or_else(|| panic!("180 parses"));
        assert_eq!(resp.status_code(), Some(180));
        assert_eq!(resp.to().ok().and_then(|t| t.tag()), Some(&b"tt"[..]));
        assert_eq!(resp.call_id().ok(), Some(&b"1-2-lt"[..]));
        assert_eq!(
            resp.top_via().ok().and_then(|v| v.branch()),
            Some(&b"z9hG4bK-1"[..])
        );
    }
}
