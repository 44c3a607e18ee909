//! The ng protocol end to end: a client drives offer/answer over UDP, peers
//! send RTP through the relay, and every packet arrives in order, unchanged,
//! at the right peer. Also latching, RTCP demultiplexing, re-offers, and the
//! error replies rtpengine gives.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::media::relay::RelayConfig;
use rvoip_dataplane::media::rtp::parse_rtp;
use rvoip_dataplane::ng::bencode::{Value, encode};

mod common;

use common::*;

fn offer_answer(
    relay: &mut Relay,
    call: &str,
    a: &UdpSocket,
    b: &UdpSocket,
) -> (SocketAddr, SocketAddr) {
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(a, false))),
        ("ICE", Value::Bytes(b"remove")),
        (
            "replace",
            Value::List(vec![
                Value::Bytes(b"origin"),
                Value::Bytes(b"session-connection"),
            ]),
        ),
        ("label", Value::Bytes(b"caller")),
    ]);
    assert_eq!(
        get(&offer, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&offer)
    );
    let (b_target, sdp) = target(&offer);
    assert_eq!(b_target.ip(), LOCALHOST);
    assert!(sdp.media[0].candidates().next().is_none(), "ICE removed");
    assert_eq!(
        sdp.origin().map(|o| o.address.to_vec()),
        Some(b"127.0.0.1".to_vec())
    );
    assert_eq!(
        sdp.media[0].rtcp().map(|r| r.port),
        Some(b_target.port() + 1)
    );
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("to-tag", Value::Bytes(b"tag-b")),
        ("sdp", Value::Bytes(&sdp_for(b, false))),
    ]);
    assert_eq!(get(&answer, "result"), Value::Bytes(b"ok"));
    let (a_target, _) = target(&answer);
    assert_ne!(a_target, b_target);
    (a_target, b_target)
}

fn every_packet_arrives(driver: DriverKind, base: u16) {
    let mut relay = Relay::start(driver, base);
    let (a, b) = (peer(), peer());
    let (a_target, b_target) = offer_answer(&mut relay, "call-1", &a, &b);
    both_ways(&a, a_target, &b, b_target, 100);
    let mut buf = [0u8; 2048];
    let q = relay.command(&[
        ("command", Value::Bytes(b"query")),
        ("call-id", Value::Bytes(b"call-1")),
    ]);
    let totals = get(&q, "totals");
    assert_eq!(
        totals
            .get("RTP")
            .and_then(|r| r.get("packets"))
            .and_then(Value::as_int),
        Some(200)
    );
    let tags = get(&q, "tags");
    assert_eq!(
        tags.get("tag-a")
            .and_then(|t| t.get("label"))
            .and_then(Value::as_str),
        Some("caller")
    );
    let list = relay.command(&[("command", Value::Bytes(b"list"))]);
    assert_eq!(
        get(&list, "calls"),
        Value::List(vec![Value::Bytes(b"call-1")])
    );
    // The control plane's delete: the totals without the per-tag detail.
    let del = relay.command(&[
        ("command", Value::Bytes(b"delete")),
        ("call-id", Value::Bytes(b"call-1")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("flags", Value::List(vec![Value::Bytes(b"totals-only")])),
    ]);
    assert_eq!(get(&del, "result"), Value::Bytes(b"ok"));
    assert_eq!(
        get(&del, "totals")
            .get("RTP")
            .and_then(|r| r.get("packets"))
            .and_then(Value::as_int),
        Some(200),
        "the delete reply carries the totals"
    );
    let (reply, _) = rvoip_dataplane::ng::bencode::decode(&del).expect("bencode reply");
    assert!(
        reply.get("tags").is_none(),
        "totals-only leaves the per-tag report out: {}",
        String::from_utf8_lossy(&del)
    );
    let q = relay.command(&[
        ("command", Value::Bytes(b"query")),
        ("call-id", Value::Bytes(b"call-1")),
    ]);
    assert_eq!(get(&q, "error-reason"), Value::Bytes(b"Unknown call-id"));
    // The relay ports are closed after delete.
    a.send_to(&packet(100, 0xa), a_target).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(b.recv_from(&mut buf).is_err());
}

#[test]
fn every_packet_arrives_io_uring() {
    every_packet_arrives(DriverKind::IoUring, 43000);
}

#[test]
fn every_packet_arrives_fallback() {
    every_packet_arrives(DriverKind::Fallback, 44000);
}

#[test]
fn latches_to_a_peer_sending_from_another_port() {
    let mut relay = Relay::start(DriverKind::Auto, 45000);
    let (a, b_advertised, b_real) = (peer(), peer(), peer());
    let (a_target, b_target) = offer_answer(&mut relay, "nat", &a, &b_advertised);
    let mut buf = [0u8; 2048];
    // B is behind a NAT: it sends from another port than its SDP gave.
    b_real.send_to(&packet(1, 0xb), b_target).unwrap();
    let (n, _) = a.recv_from(&mut buf).expect("A hears B");
    assert_eq!(&buf[..n], &packet(1, 0xb)[..]);
    // A's media now goes to where B really is, not to the advertised port.
    a.send_to(&packet(1, 0xa), a_target).unwrap();
    let (n, src) = b_real.recv_from(&mut buf).expect("B's real port hears A");
    assert_eq!((&buf[..n], src), (&packet(1, 0xa)[..], b_target));
    b_advertised
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        b_advertised.recv_from(&mut buf).is_err(),
        "nothing goes to the advertised port"
    );
    let q = relay.command(&[
        ("command", Value::Bytes(b"query")),
        ("call-id", Value::Bytes(b"nat")),
    ]);
    let stream = get(&q, "tags");
    let endpoint = stream
        .get("tag-b")
        .and_then(|t| t.get("medias"))
        .and_then(Value::as_list)
        .and_then(|m| m[0].get("streams").cloned());
    let Some(Value::List(streams)) = endpoint else {
        panic!("streams")
    };
    let port = streams[0]
        .get("endpoint")
        .and_then(|e| e.get("port"))
        .and_then(Value::as_int);
    assert_eq!(
        port,
        Some(i64::from(b_real.local_addr().unwrap().port())),
        "query shows the latched address"
    );
}

#[test]
fn rtcp_mux_offer_is_demultiplexed_for_a_plain_answerer() {
    let mut relay = Relay::start(DriverKind::Auto, 46000);
    let a = peer();
    // B receives RTP on one socket and RTCP on the next port.
    let (b, b_rtcp) = loop {
        let b = peer();
        let port = b.local_addr().unwrap().port();
        if let Ok(r) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            break (b, r);
        }
    };
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"mux")),
        ("from-tag", Value::Bytes(b"ta")),
        ("sdp", Value::Bytes(&sdp_for(&a, true))),
        ("rtcp-mux", Value::List(vec![Value::Bytes(b"demux")])),
    ]);
    let (b_target, sdp) = target(&offer);
    assert!(
        !sdp.media[0].rtcp_mux(),
        "demux: the offer to B does not multiplex"
    );
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(b"mux")),
        ("from-tag", Value::Bytes(b"ta")),
        ("to-tag", Value::Bytes(b"tb")),
        ("sdp", Value::Bytes(&sdp_for(&b, false))),
    ]);
    let (a_target, sdp) = target(&answer);
    assert!(sdp.media[0].rtcp_mux(), "A offered mux and gets it");
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 0xa];
    a.send_to(&rr, a_target).unwrap();
    let mut buf = [0u8; 64];
    let (n, src) = b_rtcp
        .recv_from(&mut buf)
        .expect("B's RTCP port gets A's muxed RTCP");
    assert_eq!(&buf[..n], &rr);
    assert_eq!(src.port(), b_target.port() + 1);
    b_rtcp
        .send_to(&rr, SocketAddr::new(b_target.ip(), b_target.port() + 1))
        .unwrap();
    let (n, src) = a.recv_from(&mut buf).expect("A gets B's RTCP multiplexed");
    assert_eq!((&buf[..n], src), (&rr[..], a_target));
}

#[test]
fn re_offer_keeps_the_ports_and_moves_the_media() {
    let mut relay = Relay::start(DriverKind::Auto, 47000);
    let (a, b, b2) = (peer(), peer(), peer());
    let (a_target, b_target) = offer_answer(&mut relay, "reinvite", &a, &b);
    // B re-INVITEs from a new address: an offer from tag-b, answered by tag-a.
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"reinvite")),
        ("from-tag", Value::Bytes(b"tag-b")),
        ("to-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&b2, false))),
    ]);
    let (a_again, _) = target(&offer);
    assert_eq!(a_again, a_target, "A keeps its relay port");
    let answer = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(b"reinvite")),
        ("from-tag", Value::Bytes(b"tag-b")),
        ("to-tag", Value::Bytes(b"tag-a")),
        ("sdp", Value::Bytes(&sdp_for(&a, false))),
    ]);
    let (b_again, _) = target(&answer);
    assert_eq!(b_again, b_target, "B keeps its relay port");
    let mut buf = [0u8; 2048];
    a.send_to(&packet(5, 0xa), a_target).unwrap();
    let (n, _) = b2
        .recv_from(&mut buf)
        .expect("B's new address gets A's media");
    assert_eq!(parse_rtp(&buf[..n]).map(|h| h.seq), Ok(5));
}

#[test]
fn errors_are_answered_as_rtpengine_answers_them() {
    let mut relay = Relay::start(DriverKind::Auto, 48000);
    let pong = relay.raw(b"d7:command4:pinge");
    assert_eq!(get(&pong, "result"), Value::Bytes(b"pong"));
    let bad = relay.raw(b"dxxxx");
    assert_eq!(
        get(&bad, "error-reason"),
        Value::Bytes(b"Could not decode bencode dictionary")
    );
    let not_dict = relay.raw(b"l4:pinge");
    assert_eq!(
        get(&not_dict, "error-reason"),
        Value::Bytes(b"Invalid NG data format")
    );
    let unknown = relay.raw(b"d7:command5:boguse");
    assert_eq!(
        get(&unknown, "error-reason"),
        Value::Bytes(b"Unrecognized command")
    );
    let no_command = relay.raw(b"d3:foo3:bare");
    assert_eq!(
        get(&no_command, "error-reason"),
        Value::Bytes(b"Dictionary contains no key \"command\"")
    );
    let q = relay.command(&[
        ("command", Value::Bytes(b"query")),
        ("call-id", Value::Bytes(b"none")),
    ]);
    assert_eq!(get(&q, "error-reason"), Value::Bytes(b"Unknown call-id"));
    let ans = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(b"none")),
        ("from-tag", Value::Bytes(b"a")),
        ("to-tag", Value::Bytes(b"b")),
        ("sdp", Value::Bytes(b"v=0\r\n")),
    ]);
    assert_eq!(get(&ans, "error-reason"), Value::Bytes(b"Unknown call-id"));
    let del = relay.command(&[
        ("command", Value::Bytes(b"delete")),
        ("call-id", Value::Bytes(b"none")),
        ("from-tag", Value::Bytes(b"a")),
    ]);
    assert_eq!(
        get(&del, "warning"),
        Value::Bytes(b"Call-ID not found or tags didn't match")
    );
    let no_sdp = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"x")),
        ("from-tag", Value::Bytes(b"a")),
    ]);
    assert_eq!(
        get(&no_sdp, "error-reason"),
        Value::Bytes(b"No SDP body in message")
    );
    let garbage = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"x")),
        ("from-tag", Value::Bytes(b"a")),
        ("sdp", Value::Bytes(b"garbage")),
    ]);
    assert_eq!(
        get(&garbage, "error-reason"),
        Value::Bytes(b"Failed to parse SDP")
    );
    // A datagram without a cookie is ignored; the server keeps answering.
    relay.client.send_to(b"nocookie", relay.ng).unwrap();
    let pong = relay.raw(b"d7:command4:pinge");
    assert_eq!(get(&pong, "result"), Value::Bytes(b"pong"));
}

#[test]
fn a_retransmitted_offer_is_answered_from_the_cache() {
    let relay = Relay::start(DriverKind::Auto, 49000);
    let a = peer();
    let sdp = sdp_for(&a, false);
    let body = {
        let dict = Value::Dict(vec![
            (&b"command"[..], Value::Bytes(b"offer")),
            (b"call-id", Value::Bytes(b"retx")),
            (b"from-tag", Value::Bytes(b"t")),
            (b"sdp", Value::Bytes(&sdp)),
        ]);
        let mut body = b"same ".to_vec();
        encode(&dict, &mut body);
        body
    };
    let mut replies = Vec::new();
    for _ in 0..2 {
        relay.client.send_to(&body, relay.ng).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = relay.client.recv_from(&mut buf).unwrap();
        replies.push(buf[..n].to_vec());
    }
    assert_eq!(
        replies[0], replies[1],
        "same ports, not a second allocation"
    );
}

#[test]
fn another_client_reusing_a_cookie_gets_its_own_answer() {
    // Two proxies (or one restarted, counting its cookies from 1 again)
    // send offers for different calls under the same cookie: each is a
    // new request with ports of its own, not the other's cached reply.
    let mut relay = Relay::start(DriverKind::Auto, 49200);
    let a = peer();
    let sdp = sdp_for(&a, false);
    let offer = |call: &'static [u8]| {
        let dict = Value::Dict(vec![
            (&b"command"[..], Value::Bytes(b"offer")),
            (b"call-id", Value::Bytes(call)),
            (b"from-tag", Value::Bytes(b"t")),
            (b"sdp", Value::Bytes(&sdp)),
        ]);
        let mut body = b"1 ".to_vec();
        encode(&dict, &mut body);
        body
    };
    let mut ports = Vec::new();
    for (client, call) in [
        (UdpSocket::bind("127.0.0.1:0").unwrap(), &b"first"[..]),
        (UdpSocket::bind("127.0.0.1:0").unwrap(), &b"second"[..]),
    ] {
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send_to(&offer(call), relay.ng).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        let port = reply
            .split("m=audio ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no media in {reply}"))
            .to_owned();
        ports.push(port);
    }
    assert_ne!(ports[0], ports[1], "the second call got the first's reply");
    let list = relay.command(&[("command", Value::Bytes(b"list"))]);
    assert_eq!(
        get(&list, "calls"),
        Value::List(vec![Value::Bytes(b"first"), Value::Bytes(b"second")]),
        "both calls exist"
    );
}

#[test]
fn calls_without_media_are_deleted_after_the_media_timeout() {
    let config = RelayConfig {
        media_timeout_ms: 2_000,
        ..RelayConfig::default()
    };
    let mut relay = Relay::start_with(DriverKind::Auto, 63000, config);
    let (a, b) = (peer(), peer());
    let (a_target, b_target) = offer_answer(&mut relay, "silent", &a, &b);
    let (busy_a, busy_b) = (peer(), peer());
    let (busy_target, _) = offer_answer(&mut relay, "talking", &busy_a, &busy_b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    loop {
        // The other call keeps talking; only the silent one may go.
        seq += 1;
        busy_a.send_to(&packet(seq, 0xc), busy_target).unwrap();
        let list = relay.command(&[("command", Value::Bytes(b"list"))]);
        if get(&list, "calls") == Value::List(vec![Value::Bytes(b"talking")]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the silent call was not deleted: {}",
            String::from_utf8_lossy(&list)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let q = relay.command(&[
        ("command", Value::Bytes(b"query")),
        ("call-id", Value::Bytes(b"silent")),
    ]);
    assert_eq!(get(&q, "error-reason"), Value::Bytes(b"Unknown call-id"));
    // Its ports are closed.
    let mut buf = [0u8; 2048];
    a.send_to(&packet(1, 0xa), a_target).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(b.recv_from(&mut buf).is_err());
    let _ = b_target;
}

#[test]
fn an_rtcp_port_held_by_another_process_moves_the_leg_to_a_free_pair() {
    let mut relay = Relay::start(DriverKind::Auto, 22000);
    // Someone else holds the RTCP port of the first pairs of the range.
    let squatters: Vec<UdpSocket> = (0..8)
        .filter_map(|i| UdpSocket::bind(("127.0.0.1", 22001 + 2 * i)).ok())
        .collect();
    assert_eq!(squatters.len(), 8);
    let a = peer();
    let offer = relay.command(&[
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"squat")),
        ("from-tag", Value::Bytes(b"ta")),
        ("sdp", Value::Bytes(&sdp_for(&a, false))),
    ]);
    assert_eq!(
        get(&offer, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&offer)
    );
    let (b_target, sdp) = target(&offer);
    assert!(
        b_target.port() >= 22016,
        "a pair above the held ones: {b_target}"
    );
    assert_eq!(
        sdp.media[0].rtcp().map(|r| r.port),
        Some(b_target.port() + 1)
    );
}

/// The media server's ng commands are read and their call and party
/// checked; what cannot be done is named: a prompt file that is not there,
/// recording on a relay without a recording directory.
#[test]
fn media_service_commands_are_checked_and_failures_named() {
    let mut relay = Relay::start(DriverKind::Auto, 51000);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    offer_answer(&mut relay, "svc", &a, &b);
    let play = |relay: &mut Relay, call: &[u8], tag: &[u8]| {
        relay.command(&[
            ("command", Value::Bytes(b"play media")),
            ("call-id", Value::Bytes(call)),
            ("from-tag", Value::Bytes(tag)),
            ("file", Value::Bytes(b"welcome.wav")),
        ])
    };
    let r = play(&mut relay, b"nocall", b"tag-a");
    assert_eq!(get(&r, "error-reason"), Value::Bytes(b"Unknown call-id"));
    let r = play(&mut relay, b"svc", b"tag-x");
    assert_eq!(get(&r, "error-reason"), Value::Bytes(b"Unknown tag"));
    let r = play(&mut relay, b"svc", b"tag-a");
    let Value::Bytes(reason) = get(&r, "error-reason") else {
        panic!("a reason")
    };
    let reason = String::from_utf8_lossy(reason);
    assert!(
        reason.starts_with("prompt file: ") && reason.contains("welcome.wav"),
        "{reason}"
    );
    let r = relay.command(&[
        ("command", Value::Bytes(b"play DTMF")),
        ("call-id", Value::Bytes(b"svc")),
        ("from-tag", Value::Bytes(b"tag-a")),
        ("code", Value::Bytes(b"Z")),
    ]);
    assert_eq!(get(&r, "error-reason"), Value::Bytes(b"Invalid DTMF code"));
    let r = relay.command(&[
        ("command", Value::Bytes(b"start recording")),
        ("call-id", Value::Bytes(b"svc")),
    ]);
    assert_eq!(
        get(&r, "error-reason"),
        Value::Bytes(b"Unsupported command: start recording ([recording] dir not set)")
    );
    // The call is untouched by the refusals.
    let q = relay.command(&[
        ("command", Value::Bytes(b"query")),
        ("call-id", Value::Bytes(b"svc")),
    ]);
    assert_eq!(get(&q, "result"), Value::Bytes(b"ok"));
}
