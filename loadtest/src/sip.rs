//! The SIP messages of the load scenario, written as text, and the few
//! values read back from received messages (through the dataplane's
//! zero-copy message view).

use std::fmt::Write as _;
use std::net::SocketAddr;

use rvoip_dataplane::sip::{Framing, HeaderName, Limits, SipMessage};
use rvoip_dataplane::srtp::sdes::{self, CryptoAttr};

/// Parses one datagram; `None` when it is not SIP.
pub fn parse(buf: &[u8]) -> Option<SipMessage<'_>> {
    SipMessage::parse(buf, Framing::Datagram, &Limits::DEFAULT).ok()
}

/// The SDP offer or answer for one call: PCMU, 20 ms, media at `rtp`, the
/// stream's SSRC announced (RFC 5576 `a=ssrc`), and with `crypto` (an SDES
/// `a=crypto` value) the RTP/SAVP profile.
pub fn sdp(session: u64, rtp: SocketAddr, ssrc: u32, crypto: Option<&str>) -> String {
    let ip = rtp.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let profile = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut s = format!(
        "v=0\r\no=- {session} 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} {profile} 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n\
         a=ssrc:{ssrc} cname:rvoip-loadtest\r\n",
        port = rtp.port()
    );
    if let Some(c) = crypto {
        let _ = write!(s, "a=crypto:{c}\r\n");
    }
    s
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
    Some(RemoteMedia {
        to: SocketAddr::new(addr, m.media.port),
        ssrc,
        crypto,
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
    pub request_uri: String,
    /// The UAC's own address (Via, Contact).
    pub local: SocketAddr,
}

fn body_headers(out: &mut String, body: &str) {
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        let _ = write!(
            out,
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

/// An INVITE with `sdp` as its offer (empty: no body).
/// An INVITE with `sdp` as its offer (empty: no body), CSeq `cseq`, and an
/// (Proxy-)Authorization header when `auth` gives one.
pub fn invite(
    d: &Dialog,
    branch: &str,
    cseq: u32,
    auth: Option<(&str, &str)>,
    sdp: &str,
) -> Vec<u8> {
    let mut m = String::with_capacity(512 + sdp.len());
    let _ = write!(
        m,
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:loadtest@{local}>;tag={tag}\r\nTo: <{uri}>\r\n\
         Call-ID: {cid}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:loadtest@{local}>\r\n\
         User-Agent: rvoip-loadtest\r\n",
        uri = d.request_uri,
        local = d.local,
        tag = d.from_tag,
        cid = d.call_id,
    );
    if let Some((name, value)) = auth {
        let _ = write!(m, "{name}: {value}\r\n");
    }
    body_headers(&mut m, sdp);
    m.into_bytes()
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
    let mut m = String::with_capacity(512);
    let _ = write!(
        m,
        "{method} {remote_target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:loadtest@{local}>;tag={tag}\r\nTo: {to}\r\n\
         Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
        local = d.local,
        tag = d.from_tag,
        cid = d.call_id,
    );
    for r in route {
        let _ = write!(m, "Route: {r}\r\n");
    }
    body_headers(&mut m, "");
    m.into_bytes()
}

/// The ACK for a non-2xx final response: same branch as the INVITE, the
/// response's To (RFC 3261 §17.1.1.3).
pub fn ack_for_failure(d: &Dialog, branch: &str, cseq: u32, to: &str) -> Vec<u8> {
    let mut m = String::with_capacity(400);
    let _ = write!(
        m,
        "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:loadtest@{local}>;tag={tag}\r\nTo: {to}\r\n\
         Call-ID: {cid}\r\nCSeq: {cseq} ACK\r\n",
        uri = d.request_uri,
        local = d.local,
        tag = d.from_tag,
        cid = d.call_id,
    );
    body_headers(&mut m, "");
    m.into_bytes()
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
    let mut m = String::with_capacity(600);
    let _ = write!(
        m,
        "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag={tag}\r\nTo: <sip:{user}@{domain}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\n\
         Expires: {expires}\r\nUser-Agent: rvoip-loadtest\r\n"
    );
    if let Some(a) = auth {
        let _ = write!(m, "Authorization: {a}\r\n");
    }
    body_headers(&mut m, "");
    m.into_bytes()
}

/// A response to `req`: its Via, From, Call-ID and CSeq copied, To with
/// `to_tag` added when it has none, Record-Route copied for dialog-creating
/// responses, `contact` and `sdp` when given.
pub fn response(
    req: &SipMessage<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact: Option<SocketAddr>,
    sdp: &str,
) -> Vec<u8> {
    let mut m = String::with_capacity(512 + sdp.len());
    let _ = write!(m, "SIP/2.0 {code} {reason}\r\n");
    for f in req.headers() {
        let copy = match f.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
            HeaderName::RecordRoute => (101..300).contains(&code),
            _ => false,
        };
        if copy {
            let _ = write!(
                m,
                "{}: {}\r\n",
                f.name.as_str(),
                String::from_utf8_lossy(f.value)
            );
        }
    }
    if let Some(to) = req.header(HeaderName::To) {
        let to = String::from_utf8_lossy(to);
        match to_tag {
            Some(tag) if !to.contains("tag=") => {
                let _ = write!(m, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(m, "To: {to}\r\n");
            }
        }
    }
    if let Some(c) = contact {
        let _ = write!(m, "Contact: <sip:loadtest@{c}>\r\n");
    }
    body_headers(&mut m, sdp);
    m.into_bytes()
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

/// The raw To header value.
pub fn to_value(msg: &SipMessage<'_>) -> Option<String> {
    msg.header(HeaderName::To)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            local: "127.0.0.1:5080".parse().unwrap_or_else(|_| panic!()),
        };
        let key = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let offer = sdp(1, d.local, 77, Some(key));
        let inv = invite(&d, "z9hG4bK-1", 1, None, &offer);
        let req = parse(&inv).unwrap_or_else(|| panic!("INVITE parses"));
        let remote = remote_media(req.body()).unwrap_or_else(|| panic!("SDP"));
        assert_eq!(
            (remote.to, remote.ssrc, remote.crypto.len()),
            (d.local, Some(77), 1)
        );
        assert!(offer.contains("RTP/SAVP"));
        let r = response(&req, 180, "Ringing", Some("tt"), Some(d.local), "");
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
