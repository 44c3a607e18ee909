//! Building the requests and header values a proxy originates: Via values,
//! branches, ACK for a non-2xx response, CANCEL.

use std::net::{IpAddr, SocketAddr};

use rvoip_dataplane::sip::{HeaderName, MessageWriter, Method, SipMessage};

use crate::element::Transport;

/// A branch that depends only on its inputs: a restarted control plane
/// forwards a retransmitted request with the same branch, so the next hop sees
/// a retransmission, not a new transaction (RFC 3261 §16.11).
pub(crate) fn branch(parts: &[&[u8]]) -> String {
    let (h, g) = digest(parts);
    let mut s = String::with_capacity(42);
    s.push_str("z9hG4bK-rv");
    push_hex(&mut s, h, 16);
    push_hex(&mut s, g, 8);
    s
}

/// Two 64-bit hashes of `parts` (each part ends with a zero octet, so the
/// split between parts counts).
pub(crate) fn digest(parts: &[&[u8]]) -> (u64, u64) {
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
    (h, g)
}

/// Appends `v` in lower-case hexadecimal, zero-padded to `width` digits.
pub(crate) fn push_hex(s: &mut String, v: u64, width: usize) {
    let mut digits = [0u8; 20];
    for d in rvoip_dataplane::text::hex(v, width, &mut digits) {
        s.push(char::from(*d));
    }
}

/// Appends `addr` as `SocketAddr`'s `Display` writes it (`a.b.c.d:port`,
/// `[v6]:port`), IPv4 without the formatting machinery: every forwarded
/// request carries the proxy's address in its Via and Record-Route.
pub(crate) fn put_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            put_ip(out, IpAddr::V4(*a.ip()));
            out.push(b':');
            put_number(out, u64::from(a.port()));
        }
        SocketAddr::V6(_) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{addr}"));
        }
    }
}

/// Appends `ip` as `IpAddr`'s `Display` writes it.
pub(crate) fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                put_number(out, u64::from(o));
            }
        }
        IpAddr::V6(_) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{ip}"));
        }
    }
}

/// One piece of a [`text`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece<'a> {
    Str(&'a str),
    Addr(SocketAddr),
    Ip(IpAddr),
    Number(u64),
}

/// The pieces end to end, addresses and numbers written as their `Display`
/// writes them but without the formatting machinery: a B2BUA call builds
/// several such values (contacts, URIs, Call-IDs) for each leg.
pub(crate) fn text(pieces: &[Piece<'_>]) -> String {
    let mut out = String::with_capacity(64);
    push_text(&mut out, pieces);
    out
}

/// Appends the pieces to `s`, as [`text`] writes them.
pub(crate) fn push_text(s: &mut String, pieces: &[Piece<'_>]) {
    let mut out = std::mem::take(s).into_bytes();
    for p in pieces {
        match *p {
            Piece::Str(s) => out.extend_from_slice(s.as_bytes()),
            Piece::Addr(a) => put_socket_addr(&mut out, a),
            Piece::Ip(ip) => put_ip(&mut out, ip),
            Piece::Number(n) => put_number(&mut out, n),
        }
    }
    // Every piece is UTF-8 (str, ASCII digits and addresses).
    *s = String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// Appends `v` in decimal.
pub(crate) fn put_number(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(rvoip_dataplane::text::decimal(v, &mut digits));
}

/// A To tag for responses this element generates, stable across retransmissions.
pub(crate) fn to_tag(parts: &[&[u8]]) -> String {
    let b = branch(parts);
    b[b.len() - 12..].to_string()
}

/// Appends `SIP/2.0/UDP host:port;branch=...;rport`.
pub(crate) fn put_via(out: &mut Vec<u8>, transport: Transport, local: SocketAddr, branch: &str) {
    out.extend_from_slice(b"SIP/2.0/");
    out.extend_from_slice(transport.token().as_bytes());
    out.push(b' ');
    put_socket_addr(out, local);
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(branch.as_bytes());
    out.extend_from_slice(b";rport");
}

/// `SIP/2.0/UDP host:port;branch=...;rport`
pub(crate) fn via_value(transport: Transport, local: SocketAddr, branch: &str) -> Vec<u8> {
    // "SIP/2.0/" + transport + ' ' + the longest socket address
    // ("[ipv6]:port", 47) + ";branch=" + branch + ";rport".
    let mut v = Vec::with_capacity(8 + 4 + 1 + 47 + 8 + branch.len() + 6);
    put_via(&mut v, transport, local, branch);
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
    w.header_number(HeaderName::CSeq, u64::from(cseq.seq), b"ACK");
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
    w.header_number(HeaderName::CSeq, u64::from(cseq.seq), b"CANCEL");
    w.finish(b"");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_branches_read_as_the_formatter_writes_them() {
        for a in [
            "127.0.0.1:5060",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:80",
            "[::1]:5060",
            "[2001:db8::7]:5070",
        ] {
            let addr: SocketAddr = a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
            let mut s = Vec::new();
            put_socket_addr(&mut s, addr);
            assert_eq!(s, addr.to_string().as_bytes());
            let mut s = Vec::new();
            put_ip(&mut s, addr.ip());
            assert_eq!(s, addr.ip().to_string().as_bytes());
            assert_eq!(
                text(&[
                    Piece::Str("<sip:"),
                    Piece::Str("alice"),
                    Piece::Str("@"),
                    Piece::Ip(addr.ip()),
                    Piece::Str(">;n="),
                    Piece::Number(u64::from(addr.port())),
                    Piece::Str(" "),
                    Piece::Addr(addr),
                ]),
                format!("<sip:alice@{}>;n={} {addr}", addr.ip(), addr.port())
            );
        }
        for (v, w) in [
            (0u64, 16),
            (0xabc, 8),
            (u64::MAX, 8),
            (0x0001_2345_6789, 8),
            (7, 16),
        ] {
            let mut s = String::new();
            push_hex(&mut s, v, w);
            assert_eq!(s, format!("{v:0w$x}"));
        }
        let b = branch(&[b"z9hG4bK1", b"call"]);
        assert!(b.starts_with("z9hG4bK-rv") && b.len() >= 34, "{b}");
        assert_eq!(b, branch(&[b"z9hG4bK1", b"call"]));
        assert_ne!(b, branch(&[b"z9hG4bK1", b"call2"]));
        assert_eq!(
            via_value(
                Transport::Udp,
                "127.0.0.1:5060".parse().unwrap_or_else(|e| panic!("{e}")),
                "z9hG4bKx"
            ),
            b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport"
        );
    }
}
