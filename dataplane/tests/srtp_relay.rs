//! SRTP through the relay, end to end over ng and real sockets: one SRTP leg
//! and one RTP leg (both ways), SRTP on both legs with different keys, and
//! RTP → SRTP with a single suite forced. The SRTP endpoints are libsrtp2
//! (through the oracle), so rvoip is checked against an independent
//! implementation; tampered and replayed packets never come out.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;

use common::libsrtp::Oracle;
use common::*;
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::ng::bencode::Value;
use rvoip_dataplane::sdp::Sdp;
use rvoip_dataplane::srtp::{MasterKey, Suite, sdes};

/// An SDP for `sock` with `proto` and the given `a=crypto` values.
fn sdp_with(sock: &UdpSocket, proto: &str, crypto: &[String]) -> Vec<u8> {
    let a = sock.local_addr().unwrap();
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n",
        ip = a.ip(),
        port = a.port()
    );
    for c in crypto {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s.push_str("a=rtcp-mux\r\na=sendrecv\r\n");
    s.into_bytes()
}

/// The `a=crypto` attributes of the first media section, parsed.
fn cryptos(sdp: &Sdp<'_>) -> Vec<sdes::CryptoAttr> {
    sdp.media[0]
        .attributes()
        .filter(|(n, _)| *n == b"crypto")
        .map(|(_, v)| sdes::parse(v.unwrap()).expect("rvoip writes valid a=crypto"))
        .collect()
}

fn key_line(tag: u32, suite: Suite, key: &MasterKey) -> String {
    sdes::format(tag, key, suite)
}

fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a packet");
    buf[..n].to_vec()
}

fn ok(reply: &[u8]) {
    assert_eq!(
        get(reply, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(reply)
    );
}

fn offer(relay: &mut Relay, call: &str, sdp: &[u8], extra: &[(&str, Value<'_>)]) -> Vec<u8> {
    let mut e = vec![
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(b"ta")),
        ("sdp", Value::Bytes(sdp)),
    ];
    e.extend(extra.iter().cloned());
    let r = relay.command(&e);
    ok(&r);
    r
}

fn answer(relay: &mut Relay, call: &str, sdp: &[u8]) -> Vec<u8> {
    let r = relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(b"ta")),
        ("to-tag", Value::Bytes(b"tb")),
        ("sdp", Value::Bytes(sdp)),
    ]);
    ok(&r);
    r
}

fn sdp_text(reply: &[u8]) -> String {
    let Value::Bytes(s) = get(reply, "sdp") else {
        panic!("sdp")
    };
    String::from_utf8_lossy(s).into_owned()
}

#[test]
fn an_srtp_leg_and_an_rtp_leg_transcrypt_both_ways() {
    let mut relay = Relay::start(DriverKind::Auto, 59000);
    let (a, b) = (peer(), peer());
    let rng = rvoip_dataplane::entropy::SeededEntropy::new(3);
    let suite = Suite::AesCm128HmacSha1_80;
    let a_key = sdes::generate(suite, &rng).unwrap();
    let a_line = key_line(3, suite, &a_key);
    // A offers SRTP with an unknown suite first (skipped) and ours; B is plain.
    let o = offer(
        &mut relay,
        "srtp-rtp",
        &sdp_with(
            &a,
            "RTP/SAVP",
            &[
                "1 AES_192_CM_HMAC_SHA1_80 inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw".into(),
                a_line.clone(),
            ],
        ),
        &[("transport-protocol", Value::Bytes(b"RTP/AVP"))],
    );
    let to_b = sdp_text(&o);
    let (b_target, sdp) = target(&o);
    assert_eq!(&*sdp.media[0].media.proto, b"RTP/AVP", "{to_b}");
    assert!(
        !to_b.contains("crypto"),
        "no key material reaches B:\n{to_b}"
    );
    let r = answer(&mut relay, "srtp-rtp", &sdp_with(&b, "RTP/AVP", &[]));
    let (a_target, sdp) = target(&r);
    assert_eq!(&*sdp.media[0].media.proto, b"RTP/SAVP");
    let ours = cryptos(&sdp);
    assert_eq!(ours.len(), 1, "{}", sdp_text(&r));
    assert_eq!(
        (ours[0].tag, ours[0].suite),
        (3, suite),
        "answer echoes A's tag"
    );
    assert!(
        !sdp_text(&r).contains(a_line.split(' ').nth(2).unwrap()),
        "A's key is not echoed"
    );
    let mut a_tx = Oracle::start(suite, &a_key, None);
    let mut a_rx = Oracle::start(suite, &ours[0].master, None);
    // A → B: SRTP in, RTP out.
    for seq in 1..=50u16 {
        let plain = packet(seq, 0xaaaa);
        a.send_to(&a_tx.call("p", &plain).unwrap(), a_target)
            .unwrap();
        assert_eq!(recv(&b), plain, "B gets A's packet {seq} decrypted");
    }
    // B → A: RTP in, SRTP out, which libsrtp2 verifies with rvoip's key.
    for seq in 1..=50u16 {
        let plain = packet(seq, 0xbbbb);
        b.send_to(&plain, b_target).unwrap();
        let srtp = recv(&a);
        assert_eq!(srtp.len(), plain.len() + 10);
        assert_eq!(a_rx.call("u", &srtp), Ok(plain), "packet {seq}");
    }
    // Tampered and replayed packets from A are dropped; the next good one passes.
    let good = a_tx.call("p", &packet(51, 0xaaaa)).unwrap();
    let mut bad = a_tx.call("p", &packet(52, 0xaaaa)).unwrap();
    bad[20] ^= 1;
    a.send_to(&bad, a_target).unwrap();
    a.send_to(&good, a_target).unwrap();
    assert_eq!(recv(&b), packet(51, 0xaaaa));
    a.send_to(&good, a_target).unwrap();
    let next = a_tx.call("p", &packet(53, 0xaaaa)).unwrap();
    a.send_to(&next, a_target).unwrap();
    assert_eq!(
        recv(&b),
        packet(53, 0xaaaa),
        "the replay of 51 was not forwarded"
    );
    // Plain RTP sent to the SRTP leg fails authentication and is dropped too.
    a.send_to(&packet(54, 0xaaaa), a_target).unwrap();
    let next = a_tx.call("p", &packet(55, 0xaaaa)).unwrap();
    a.send_to(&next, a_target).unwrap();
    assert_eq!(recv(&b), packet(55, 0xaaaa));
    // RTCP (muxed) from A is SRTCP, delivered to B as RTCP.
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0xaa, 0xaa];
    a.send_to(&a_tx.call("pc", &rr).unwrap(), a_target).unwrap();
    assert_eq!(recv(&b), rr);
    // And B's RTCP reaches A as SRTCP.
    b.send_to(&rr, b_target).unwrap();
    assert_eq!(a_rx.call("uc", &recv(&a)), Ok(rr.to_vec()));
}

#[test]
fn srtp_on_both_legs_is_reencrypted_with_each_legs_own_keys() {
    let mut relay = Relay::start(DriverKind::Auto, 60000);
    let (a, b) = (peer(), peer());
    let rng = rvoip_dataplane::entropy::SeededEntropy::new(3);
    let a_suite = Suite::AeadAes128Gcm;
    let a_key = sdes::generate(a_suite, &rng).unwrap();
    let o = offer(
        &mut relay,
        "srtp-srtp",
        &sdp_with(&a, "RTP/SAVP", &[key_line(1, a_suite, &a_key)]),
        &[],
    );
    let (b_target, sdp) = target(&o);
    assert_eq!(&*sdp.media[0].media.proto, b"RTP/SAVP");
    let offered = cryptos(&sdp);
    assert_eq!(offered.len(), 6, "every suite but AES-f8 offered to B");
    assert!(offered.iter().all(|c| c.suite != Suite::F8128HmacSha1_80));
    assert!(
        offered
            .iter()
            .all(|c| c.master.concatenated(&mut [0; 46]) > 0)
    );
    // B picks AES_256_CM_HMAC_SHA1_32 and sends with its own key.
    let pick = offered
        .iter()
        .find(|c| c.suite == Suite::AesCm256HmacSha1_32)
        .expect("offered");
    let b_key = sdes::generate(pick.suite, &rng).unwrap();
    let r = answer(
        &mut relay,
        "srtp-srtp",
        &sdp_with(&b, "RTP/SAVP", &[key_line(pick.tag, pick.suite, &b_key)]),
    );
    let (a_target, sdp) = target(&r);
    let to_a = cryptos(&sdp);
    assert_eq!((to_a.len(), to_a[0].suite), (1, a_suite));
    let mut a_tx = Oracle::start(a_suite, &a_key, None);
    let mut a_rx = Oracle::start(a_suite, &to_a[0].master, None);
    let mut b_tx = Oracle::start(pick.suite, &b_key, None);
    let mut b_rx = Oracle::start(pick.suite, &pick.master, None);
    for seq in 65_500..=65_535u16 {
        let plain = packet(seq, 0xaaaa);
        let sent = a_tx.call("p", &plain).unwrap();
        a.send_to(&sent, a_target).unwrap();
        let got = recv(&b);
        assert_ne!(got, sent, "re-encrypted");
        assert_eq!(got.len(), plain.len() + 4, "B's suite has a 32-bit tag");
        assert_eq!(b_rx.call("u", &got), Ok(plain));
        let plain = packet(seq, 0xbbbb);
        b.send_to(&b_tx.call("p", &plain).unwrap(), b_target)
            .unwrap();
        let got = recv(&a);
        assert_eq!(got.len(), plain.len() + 16, "A's suite is GCM");
        assert_eq!(a_rx.call("u", &got), Ok(plain));
    }
}

#[test]
fn rtp_to_srtp_with_one_forced_suite() {
    let mut relay = Relay::start(DriverKind::Fallback, 61000);
    let (a, b) = (peer(), peer());
    let rng = rvoip_dataplane::entropy::SeededEntropy::new(3);
    let o = offer(
        &mut relay,
        "rtp-srtp",
        &sdp_with(&a, "RTP/AVP", &[]),
        &[
            ("transport-protocol", Value::Bytes(b"RTP/SAVP")),
            (
                "flags",
                Value::List(vec![Value::Bytes(b"SDES-only-AEAD_AES_256_GCM")]),
            ),
        ],
    );
    let (b_target, sdp) = target(&o);
    let offered = cryptos(&sdp);
    assert_eq!(offered.len(), 1);
    assert_eq!(
        (offered[0].tag, offered[0].suite),
        (1, Suite::AeadAes256Gcm)
    );
    let b_key = sdes::generate(Suite::AeadAes256Gcm, &rng).unwrap();
    let r = answer(
        &mut relay,
        "rtp-srtp",
        &sdp_with(&b, "RTP/SAVP", &[key_line(1, Suite::AeadAes256Gcm, &b_key)]),
    );
    let (a_target, sdp) = target(&r);
    assert_eq!(&*sdp.media[0].media.proto, b"RTP/AVP");
    assert!(cryptos(&sdp).is_empty());
    let mut b_tx = Oracle::start(Suite::AeadAes256Gcm, &b_key, None);
    let mut b_rx = Oracle::start(Suite::AeadAes256Gcm, &offered[0].master, None);
    for seq in 1..=30u16 {
        let plain = packet(seq, 0xaaaa);
        a.send_to(&plain, a_target).unwrap();
        assert_eq!(b_rx.call("u", &recv(&b)), Ok(plain));
        let plain = packet(seq, 0xbbbb);
        b.send_to(&b_tx.call("p", &plain).unwrap(), b_target)
            .unwrap();
        assert_eq!(recv(&a), plain);
    }
}

#[test]
fn unusable_crypto_offers_are_refused_with_the_reason() {
    let mut relay = Relay::start(DriverKind::Auto, 62000);
    let a = peer();
    type Case<'a> = (&'a [String], &'a [(&'a str, Value<'a>)], &'a str);
    let cases: [Case<'_>; 3] = [
        (
            &["1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP".into()],
            &[],
            "UNENCRYPTED_SRTP refused",
        ),
        (&[], &[], "no a=crypto line"),
        (
            &["1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR".into()],
            &[("flags", Value::List(vec![Value::Bytes(b"SDES-no-AES_CM_128_HMAC_SHA1_80")]))],
            "excluded by the SDES flags",
        ),
    ];
    for (i, (lines, extra, reason)) in cases.iter().enumerate() {
        let mut e = vec![
            ("command", Value::Bytes(b"offer")),
            ("from-tag", Value::Bytes(b"ta")),
        ];
        let call = format!("bad-{i}");
        let sdp = sdp_with(&a, "RTP/SAVP", lines);
        e.push(("call-id", Value::Bytes(call.as_bytes())));
        e.push(("sdp", Value::Bytes(&sdp)));
        e.extend(extra.iter().cloned());
        let r = relay.command(&e);
        assert_eq!(get(&r, "result"), Value::Bytes(b"error"));
        let Value::Bytes(why) = get(&r, "error-reason") else {
            panic!()
        };
        assert!(
            String::from_utf8_lossy(why).contains(reason),
            "{}",
            String::from_utf8_lossy(why)
        );
    }
}
