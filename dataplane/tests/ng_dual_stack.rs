//! The relay between address families over ng (real sockets): a relay on
//! 127.0.0.1 and ::1 gives an IPv6 caller its IPv6 address and an IPv4
//! callee its IPv4 one when the offer asks (`address family: IP4`, or
//! Kamailio's `direction: [ipv6, ipv4]`), and RTP crosses both ways,
//! every packet once and unchanged, with both drivers.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::ng::bencode::Value;

fn v6_peer() -> UdpSocket {
    let s = UdpSocket::bind("[::1]:0").expect("IPv6 peer");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Offer from the IPv6 side with `ask` (the family of the other side),
/// answer from the IPv4 side; returns where each side sends.
fn bridge(
    relay: &mut Relay,
    call: &str,
    ask: (&str, Value<'_>),
    a: &UdpSocket,
    b: &UdpSocket,
) -> (SocketAddr, SocketAddr) {
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(b"v6")),
        ("sdp", Value::Bytes(&sdp_for(a, false))),
        ask,
    ]);
    assert_eq!(
        get(&offer, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&offer)
    );
    let (b_target, sdp) = target(&offer);
    assert_eq!(
        b_target.ip().to_string(),
        "127.0.0.1",
        "the IPv4 side gets the IPv4 address"
    );
    assert!(String::from_utf8_lossy(&sdp.to_bytes()).contains("c=IN IP4 127.0.0.1\r\n"));
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(b"v6")),
        ("to-tag", Value::Bytes(b"v4")),
        ("sdp", Value::Bytes(&sdp_for(b, false))),
    ]);
    assert_eq!(get(&answer, "result"), Value::Bytes(b"ok"));
    let (a_target, sdp) = target(&answer);
    assert_eq!(
        a_target.ip().to_string(),
        "::1",
        "the IPv6 side keeps the IPv6 address"
    );
    assert!(String::from_utf8_lossy(&sdp.to_bytes()).contains("c=IN IP6 ::1\r\n"));
    (a_target, b_target)
}

fn rtp_crosses_between_families(driver: DriverKind, base: u16) {
    let mut relay = Relay::start_dual(driver, base);
    let asks = [
        ("address family", Value::Bytes(b"IP4")),
        (
            "direction",
            Value::List(vec![Value::Bytes(b"ipv6"), Value::Bytes(b"ipv4")]),
        ),
    ];
    for (n, ask) in asks.into_iter().enumerate() {
        let (a, b) = (v6_peer(), peer());
        let call = format!("dual-{n}");
        let (a_target, b_target) = bridge(&mut relay, &call, ask, &a, &b);
        both_ways(&a, a_target, &b, b_target, 50);
        let del = relay.command(&[
            ("command", Value::Bytes(b"delete")),
            ("call-id", Value::Bytes(call.as_bytes())),
            ("from-tag", Value::Bytes(b"v6")),
        ]);
        assert_eq!(get(&del, "result"), Value::Bytes(b"ok"));
    }
    // Without a family asked for, the other side gets the offerer's.
    let a = v6_peer();
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"v6-only")),
        ("from-tag", Value::Bytes(b"x")),
        ("sdp", Value::Bytes(&sdp_for(&a, false))),
    ]);
    assert_eq!(target(&offer).0.ip().to_string(), "::1");
    // A family rvoip does not have is refused with its name.
    let bad = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"bad")),
        ("from-tag", Value::Bytes(b"x")),
        ("sdp", Value::Bytes(&sdp_for(&a, false))),
        ("address family", Value::Bytes(b"IP5")),
    ]);
    assert_eq!(get(&bad, "result"), Value::Bytes(b"error"));
    assert!(String::from_utf8_lossy(&bad).contains("Invalid address family: IP5"));
}

#[test]
fn rtp_crosses_between_ipv6_and_ipv4_io_uring() {
    rtp_crosses_between_families(DriverKind::IoUring, 57000);
}

#[test]
fn rtp_crosses_between_ipv6_and_ipv4_fallback() {
    rtp_crosses_between_families(DriverKind::Fallback, 58000);
}
