//! Building the requests and header values a proxy originates: Via values,
//! branches, ACK for a non-2xx response, CANCEL.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rvoip_dataplane::sip::{HeaderName, MessageWriter, Method, SipMessage};

use super::Transport;

/// A branch that depends only on its inputs: a restarted control plane
/// forwards a retransmitted request with the same branch, so the next hop sees
/// a retransmission, not a new transaction (RFC 3261 §16.11).
pub(crate) fn branch(parts: &[&[u8]]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut g = 0x9e37_79b9_7f4a_7c15u64;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0u8)) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            g = (g ^ u64::from(*b))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(5);
        }
    }
    format!("z9hG4bK-rv{h:016x}{g:08x}")
}

/// A To tag for responses this element generates, stable across retransmissions.
pub(crate) fn to_tag(parts: &[&[u8]]) -> String {
    let b = branch(parts);
    b[b.len() - 12..].to_string()
}

/// `SIP/2.0/UDP host:port;branch=...;rport`
pub(crate) fn via_value(transport: Transport, local: SocketAddr, branch: &str) -> String {
    let mut v = String::with_capacity(80);
    let _ = write!(
        v,
        "SIP/2.0/{} {};branch={branch};rport",
        transport.token(),
        local
    );
    v
}

/// The ACK for a non-2xx final `response` to `invite` (RFC 3261 §17.1.1.3):
/// Request-URI, Call-ID, From, CSeq number and Route of the INVITE, the To of
/// the response, the INVITE's top Via only.
pub(crate) fn ack_for(invite: &SipMessage<'_>, response: &SipMessage<'_>) -> Option<Vec<u8>> {
    let uri = invite.request_uri_bytes()?;
    let cseq = invite.cseq().ok()?;
    let mut out = Vec::with_capacity(512);
    let mut w = MessageWriter::request(&mut out, Method::Ack, uri);
    w.header(HeaderName::Via, invite.header(HeaderName::Via)?);
    for r in invite.header_lines(HeaderName::Route) {
        w.header(HeaderName::Route, r);
    }
    w.header(HeaderName::MaxForwards, b"70");
    w.header(HeaderName::From, invite.header(HeaderName::From)?);
    w.header(HeaderName::To, response.header(HeaderName::To)?);
    w.header(HeaderName::CallId, invite.header(HeaderName::CallId)?);
    w.header_fmt(HeaderName::CSeq, format_args!("{} ACK", cseq.seq));
    w.finish(b"");
    Some(out)
}

/// The CANCEL for a forwarded `invite` (RFC 3261 §9.1).
pub(crate) fn cancel_for(invite: &SipMessage<'_>) -> Option<Vec<u8>> {
    let uri = invite.request_uri_bytes()?;
    let cseq = invite.cseq().ok()?;
    let mut out = Vec::with_capacity(512);
    let mut w = MessageWriter::request(&mut out, Method::Cancel, uri);
    w.header(HeaderName::Via, invite.header(HeaderName::Via)?);
    for r in invite.header_lines(HeaderName::Route) {
        w.header(HeaderName::Route, r);
    }
    w.header(HeaderName::MaxForwards, b"70");
    w.header(HeaderName::From, invite.header(HeaderName::From)?);
    w.header(HeaderName::To, invite.header(HeaderName::To)?);
    w.header(HeaderName::CallId, invite.header(HeaderName::CallId)?);
    w.header_fmt(HeaderName::CSeq, format_args!("{} CANCEL", cseq.seq));
    w.finish(b"");
    Some(out)
}
