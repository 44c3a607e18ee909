//! The relay as a WebRTC gateway over ng (real sockets): a browser-style
//! offer (UDP/TLS/RTP/SAVPF, ICE, DTLS fingerprint, `a=setup:actpass`,
//! rtcp-mux, BUNDLE) with `transport-protocol=RTP/AVP`, `ICE=remove` and
//! `rtcp-mux-demux` (rtpengine's dictionary form and Kamailio's flag
//! strings) reaches the answerer as plain RTP/AVP; the answer to the
//! browser carries rvoip's ICE-lite credentials, host candidate, DTLS
//! fingerprint, `a=setup:passive` and the offer's `a=mid`. The relay then
//! answers the browser's STUN checks (MESSAGE-INTEGRITY with its password,
//! FINGERPRINT, XOR-MAPPED-ADDRESS), completes DTLS with it, and RTP
//! crosses SRTP ↔ RTP both ways, every packet unchanged. The other way
//! round, a plain offer bridged to a WebRTC answerer: rvoip offers full ICE
//! and, controlling, checks and nominates the answerer's candidate.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::indexing_slicing
)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::entropy::SystemEntropy;
use rvoip_dataplane::media::dtls::{DtlsIdentity, DtlsLeg, Fingerprint, Role};
use rvoip_dataplane::media::ice::IceLite;
use rvoip_dataplane::ng::bencode::Value;
use rvoip_dataplane::srtp::SrtpContext;

fn browser_offer(sock: &UdpSocket, fingerprint: Fingerprint) -> Vec<u8> {
    let a = sock.local_addr().unwrap();
    format!(
        "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\nm=audio {port} UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 {ip}\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\na=candidate:1 1 udp 2122260223 {ip} {port} typ host\r\n\
a=ice-ufrag:{BROWSER_UFRAG}\r\na=ice-pwd:{BROWSER_PWD}\r\na=ice-options:trickle\r\n\
a=fingerprint:{fingerprint}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = a.ip(),
        port = a.port()
    )
    .into_bytes()
}

fn attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}")))
        .map(|v| v.trim_start_matches(':'))
}

/// A STUN Binding request from the browser: USERNAME `theirs:ours`,
/// USE-CANDIDATE, MESSAGE-INTEGRITY keyed with `pwd`, FINGERPRINT.
fn binding_request(user: &str, pwd: &str, txid: [u8; 12]) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&txid);
    let u = user.as_bytes();
    m.extend_from_slice(&0x0006u16.to_be_bytes());
    m.extend_from_slice(&(u.len() as u16).to_be_bytes());
    m.extend_from_slice(u);
    m.resize(m.len() + (4 - u.len() % 4) % 4, 0);
    m.extend_from_slice(&0x0025u16.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    let len = (m.len() - 20 + 24) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
    let mac = ring::hmac::sign(&key, &m);
    m.extend_from_slice(&0x0008u16.to_be_bytes());
    m.extend_from_slice(&20u16.to_be_bytes());
    m.extend_from_slice(mac.as_ref());
    let len = (m.len() - 20 + 8) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&m) ^ 0x5354_554e;
    m.extend_from_slice(&0x8028u16.to_be_bytes());
    m.extend_from_slice(&4u16.to_be_bytes());
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// Checks a Binding success response: same transaction, the browser's
/// address mapped, integrity with rvoip's password.
fn check_response(resp: &[u8], txid: [u8; 12], me: SocketAddr, pwd: &str) {
    assert_eq!(&resp[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(&resp[8..20], &txid);
    let mut at = 20;
    let (mut mapped, mut mac_ok) = (None, false);
    while at + 4 <= resp.len() {
        let t = u16::from_be_bytes([resp[at], resp[at + 1]]);
        let l = usize::from(u16::from_be_bytes([resp[at + 2], resp[at + 3]]));
        let v = &resp[at + 4..at + 4 + l];
        match t {
            0x0020 => {
                let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
                let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ 0x2112_a442;
                mapped = Some(SocketAddr::from((ip.to_be_bytes(), port)));
            }
            0x0008 => {
                let mut signed = resp[..at].to_vec();
                let len = (at - 20 + 24) as u16;
                signed[2..4].copy_from_slice(&len.to_be_bytes());
                let key =
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
                mac_ok = ring::hmac::verify(&key, &signed, v).is_ok();
            }
            _ => {}
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    assert_eq!(mapped, Some(me), "XOR-MAPPED-ADDRESS is the browser's");
    assert!(mac_ok, "MESSAGE-INTEGRITY with rvoip's ice-pwd");
}

fn gateway(driver: DriverKind, base: u16, kamailio_flags: bool) {
    let mut relay = Relay::start(driver, base);
    let (browser, plain) = (peer(), peer());
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    let offer_sdp = browser_offer(&browser, identity.fingerprint());
    let mut offer = vec![
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(b"webrtc-1")),
        ("from-tag", Value::Bytes(b"browser")),
        ("sdp", Value::Bytes(&offer_sdp)),
    ];
    if kamailio_flags {
        offer.push((
            "flags",
            Value::List(vec![
                Value::Bytes(b"transport-protocol=RTP/AVP"),
                Value::Bytes(b"ICE=remove"),
                Value::Bytes(b"rtcp-mux-demux"),
            ]),
        ));
    } else {
        offer.push(("transport-protocol", Value::Bytes(b"RTP/AVP")));
        offer.push(("ICE", Value::Bytes(b"remove")));
        offer.push(("rtcp-mux", Value::List(vec![Value::Bytes(b"demux")])));
    }
    let reply = relay.command(&offer);
    assert_eq!(
        get(&reply, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let (b_target, sdp) = target(&reply);
    let plain_sdp = String::from_utf8(sdp.to_bytes()).unwrap();
    assert!(
        plain_sdp.contains(&format!("m=audio {} RTP/AVP 111 0\r\n", b_target.port())),
        "{plain_sdp}"
    );
    for gone in [
        "ice-",
        "candidate",
        "fingerprint",
        "setup",
        "rtcp-mux",
        "group",
    ] {
        assert!(
            attr(&plain_sdp, gone).is_none(),
            "{gone} reached the plain side:\n{plain_sdp}"
        );
    }
    assert_eq!(
        attr(&plain_sdp, "rtcp"),
        Some(&*format!("{}", b_target.port() + 1))
    );
    // The plain side answers with PCMU, its RTCP on a port of its own.
    let plain_rtcp = peer();
    let answer_sdp = String::from_utf8(sdp_for(&plain, false))
        .unwrap()
        .replace("RTP/AVP 0 101", "RTP/AVP 0")
        + &format!("a=rtcp:{}\r\n", plain_rtcp.local_addr().unwrap().port());
    let reply = answer(&mut relay, "webrtc-1", ("browser", "plain"), &answer_sdp);
    let (a_target, sdp) = target(&reply);
    let answer = String::from_utf8(sdp.to_bytes()).unwrap();
    assert!(
        answer.contains(&format!("m=audio {} UDP/TLS/RTP/SAVPF", a_target.port())),
        "{answer}"
    );
    assert!(attr(&answer, "ice-lite").is_some(), "{answer}");
    assert_eq!(attr(&answer, "setup"), Some("passive"), "{answer}");
    assert_eq!(
        attr(&answer, "mid"),
        Some("0"),
        "the offer's mid echoed:\n{answer}"
    );
    assert!(attr(&answer, "rtcp-mux").is_some(), "{answer}");
    assert_eq!(attr(&answer, "group"), Some("BUNDLE 0"), "{answer}");
    let candidate = format!("1 1 UDP 2130706431 127.0.0.1 {} typ host", a_target.port());
    assert_eq!(
        attr(&answer, "candidate"),
        Some(candidate.as_str()),
        "{answer}"
    );
    assert!(
        !answer.contains(BROWSER_UFRAG) && !answer.contains("a=crypto"),
        "{answer}"
    );
    let (ufrag, pwd) = (
        attr(&answer, "ice-ufrag").unwrap(),
        attr(&answer, "ice-pwd").unwrap(),
    );
    assert!(ufrag.len() >= 4 && pwd.len() >= 22);
    let relay_fp = Fingerprint::parse(attr(&answer, "fingerprint").unwrap()).unwrap();

    // ICE: a check with the wrong password gets nothing; the right one an
    // answer signed with rvoip's password.
    let me = browser.local_addr().unwrap();
    let user = format!("{ufrag}:{BROWSER_UFRAG}");
    browser
        .send_to(
            &binding_request(&user, "wrongpasswordwrongpassword", [1; 12]),
            a_target,
        )
        .unwrap();
    browser
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        browser.recv_from(&mut buf).is_err(),
        "a check with the wrong password was answered"
    );
    browser
        .send_to(&binding_request(&user, pwd, [2; 12]), a_target)
        .unwrap();
    browser
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, from) = browser.recv_from(&mut buf).expect("STUN answer");
    assert_eq!(from, a_target);
    check_response(&buf[..n], [2; 12], me, pwd);

    // Plain RTP before DTLS is done never reaches the browser.
    plain.send_to(&packet(0, 0xb), b_target).unwrap();
    browser
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        browser.recv_from(&mut buf).is_err(),
        "media went to the browser before DTLS"
    );

    // DTLS: the browser is active; rvoip's certificate is the one its
    // fingerprint names; keys on both sides.
    let mut leg = DtlsLeg::new(&identity, Role::Active, relay_fp, Instant::now()).unwrap();
    let keys = dtls_client(&mut leg, &browser, a_target);
    let mut tx = SrtpContext::new(&keys.outbound).unwrap();
    let mut rx = SrtpContext::new(&keys.inbound).unwrap();
    browser
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for seq in 1..=50u16 {
        // Browser → relay (SRTP) → plain side (RTP, unchanged).
        let p = packet(seq, 0xa);
        let mut b = [0u8; 2048];
        b[..p.len()].copy_from_slice(&p);
        let n = tx.protect_rtp(&mut b, p.len()).unwrap();
        browser.send_to(&b[..n], a_target).unwrap();
        let (n, from) = plain.recv_from(&mut buf).expect("RTP at the plain side");
        assert_eq!(from, b_target);
        assert_eq!(
            &buf[..n],
            &p[..],
            "packet {seq} to the plain side unchanged"
        );
        // Plain side → relay (RTP) → browser (SRTP, decrypts to the same).
        let q = packet(seq, 0xb);
        plain.send_to(&q, b_target).unwrap();
        let (n, from) = loop {
            let (n, from) = browser.recv_from(&mut buf).expect("SRTP at the browser");
            // The relay's DTLS may retransmit its last flight: skip it.
            if (20..64).contains(&buf[0]) {
                continue;
            }
            break (n, from);
        };
        assert_eq!(from, a_target);
        let m = rx
            .unprotect_rtp(&mut buf, n)
            .expect("the browser's keys decrypt it");
        assert_eq!(&buf[..m], &q[..], "packet {seq} to the browser unchanged");
    }

    // RTCP: the browser's SRTCP compound of a receiver report and a
    // picture-loss indication (RFC 4585 feedback, which RTP/AVP has not)
    // reaches the plain side's RTCP port as the receiver report alone.
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 0xa];
    let pli = [0x81, 206, 0, 2, 0, 0, 0, 0xa, 0, 0, 0, 0xb];
    let compound = [&rr[..], &pli[..]].concat();
    let mut b = [0u8; 2048];
    b[..compound.len()].copy_from_slice(&compound);
    let n = tx.protect_rtcp(&mut b, compound.len()).unwrap();
    browser.send_to(&b[..n], a_target).unwrap();
    plain_rtcp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, from) = plain_rtcp
        .recv_from(&mut buf)
        .expect("RTCP at the plain side");
    assert_eq!(from.port(), b_target.port() + 1);
    assert_eq!(&buf[..n], &rr[..], "the report without the feedback");
}

#[test]
fn a_webrtc_offer_is_terminated_and_bridged_to_plain_rtp_io_uring() {
    gateway(DriverKind::IoUring, 58000, false);
}

#[test]
fn kamailio_flag_strings_do_the_same_with_the_fallback_driver() {
    gateway(DriverKind::Fallback, 58200, true);
}

#[test]
fn rvoip_offers_full_ice_to_a_webrtc_answerer_and_nominates_its_candidate() {
    let mut relay = Relay::start(DriverKind::Auto, 58400);
    let (plain, browser) = (peer(), peer());
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    // A plain RTP/AVP offer from the core, to a WebRTC side.
    let offer_sdp = String::from_utf8(sdp_for(&plain, false))
        .unwrap()
        .replace("RTP/AVP 0 101", "RTP/AVP 0");
    let reply = offer(
        &mut relay,
        "full-ice",
        "core",
        &offer_sdp,
        &[
            ("transport-protocol", Value::Bytes(b"UDP/TLS/RTP/SAVPF")),
            ("ICE", Value::Bytes(b"force")),
            ("rtcp-mux", Value::List(vec![Value::Bytes(b"offer")])),
        ],
    );
    let (b_target, sdp) = target(&reply);
    let offer = String::from_utf8(sdp.to_bytes()).unwrap();
    assert!(offer.contains("UDP/TLS/RTP/SAVPF"), "{offer}");
    assert!(
        attr(&offer, "ice-lite").is_none(),
        "a full agent where it offers:\n{offer}"
    );
    assert_eq!(attr(&offer, "setup"), Some("actpass"), "{offer}");
    let (ufrag, pwd) = (
        attr(&offer, "ice-ufrag").unwrap().to_owned(),
        attr(&offer, "ice-pwd").unwrap().to_owned(),
    );
    let relay_fp = Fingerprint::parse(attr(&offer, "fingerprint").unwrap()).unwrap();
    // The browser answers: its credentials, one host candidate, DTLS active.
    let me = browser.local_addr().unwrap();
    let answer_sdp = format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio {port} UDP/TLS/RTP/SAVPF 0\r\n\
c=IN IP4 127.0.0.1\r\na=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host\r\n\
a=candidate:2 1 udp 2122194687 browser-host.local 50000 typ host\r\n\
a=ice-ufrag:{BROWSER_UFRAG}\r\na=ice-pwd:{BROWSER_PWD}\r\na=fingerprint:{fp}\r\n\
a=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n",
        port = me.port(),
        fp = identity.fingerprint()
    );
    let reply = answer(&mut relay, "full-ice", ("core", "browser"), &answer_sdp);
    let (a_target, _) = target(&reply);
    // The relay checks the browser's candidate (controlling, nominating):
    // USERNAME browser:rvoip, keyed with the browser's password. The
    // browser's agent answers; media then goes to that pair.
    let mut agent = IceLite::new(BROWSER_UFRAG, BROWSER_PWD);
    let mut buf = [0u8; 2048];
    let (n, from) = browser.recv_from(&mut buf).expect("the relay's check");
    assert_eq!(from, b_target, "from the WebRTC side's relay port");
    let mut answer = Vec::new();
    let a = agent
        .on_stun(&buf[..n], from, 0, &mut answer)
        .expect("a check signed with the browser's password, for its ufrag");
    assert!(a.nominated, "USE-CANDIDATE");
    assert!(
        buf[..n].windows(ufrag.len()).any(|w| w == ufrag.as_bytes()),
        "USERNAME names rvoip's ufrag"
    );
    // The browser's own check (as a controlled agent) is answered too.
    browser.send_to(&answer, from).unwrap();
    let check = rvoip_dataplane::media::ice::binding_request(
        &format!("{ufrag}:{BROWSER_UFRAG}"),
        &pwd,
        [5; 12],
        3,
    );
    browser.send_to(&check, b_target).unwrap();
    let (n, _) = loop {
        let (n, f) = browser
            .recv_from(&mut buf)
            .expect("an answer to the browser's check");
        if buf[..2] == [0x01, 0x01] {
            break (n, f);
        }
    };
    assert_eq!(&buf[8..20], &[5; 12]);
    assert!(n > 20);
    // DTLS (the browser is the client), then RTP both ways.
    let mut leg = DtlsLeg::new(&identity, Role::Active, relay_fp, Instant::now()).unwrap();
    let keys = dtls_client(&mut leg, &browser, b_target);
    let mut tx = SrtpContext::new(&keys.outbound).unwrap();
    let mut rx = SrtpContext::new(&keys.inbound).unwrap();
    for seq in 1..=20u16 {
        let p = packet(seq, 0xa);
        plain.send_to(&p, a_target).unwrap();
        let m = loop {
            let (n, from) = browser.recv_from(&mut buf).expect("SRTP at the browser");
            if (20..64).contains(&buf[0]) || buf[0] < 4 {
                continue;
            }
            assert_eq!(from, b_target);
            break rx
                .unprotect_rtp(&mut buf, n)
                .expect("the browser's keys decrypt it");
        };
        assert_eq!(&buf[..m], &p[..], "packet {seq} to the browser unchanged");
        let q = packet(seq, 0xb);
        let mut b = [0u8; 2048];
        b[..q.len()].copy_from_slice(&q);
        let n = tx.protect_rtp(&mut b, q.len()).unwrap();
        browser.send_to(&b[..n], b_target).unwrap();
        let (n, _) = plain.recv_from(&mut buf).expect("RTP at the plain side");
        assert_eq!(
            &buf[..n],
            &q[..],
            "packet {seq} to the plain side unchanged"
        );
    }
}

/// An RTP packet of payload type `pt` and SSRC `ssrc`, with a one-byte
/// MID header extension (id 4) when `mid` is given.
fn rtp_with(pt: u8, seq: u16, ssrc: u32, mid: Option<&[u8]>) -> Vec<u8> {
    let mut p = packet(seq, ssrc);
    p[1] = pt;
    if let Some(mid) = mid {
        p[0] |= 0x10;
        let mut ext = vec![(4 << 4) | (mid.len() as u8 - 1)];
        ext.extend_from_slice(mid);
        ext.resize(ext.len().div_ceil(4) * 4, 0);
        let mut words = vec![0xBE, 0xDE];
        words.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
        words.extend_from_slice(&ext);
        p.splice(12..12, words);
    }
    p
}

/// The port of the `m=` line of `kind` in `sdp`.
fn port_of(sdp: &str, kind: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("m={kind} ")))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m={kind} in\n{sdp}"))
}

/// Receives what the relay sends the browser, skipping DTLS and STUN.
fn srtp_at_browser(browser: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    loop {
        let (n, from) = browser.recv_from(buf).expect("SRTP at the browser");
        if (20..64).contains(&buf[0]) || buf[0] < 4 {
            continue;
        }
        return (n, from);
    }
}

#[test]
fn a_bundled_audio_and_video_offer_shares_one_transport_demultiplexed_per_line() {
    let mut relay = Relay::start(DriverKind::Auto, 58600);
    let (browser, audio, video, video_rtcp) = (peer(), peer(), peer(), peer());
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    let me = browser.local_addr().unwrap();
    // A browser's offer: audio and video BUNDLEd on one port, the MID
    // header extension offered, the audio SSRC signalled, the video's not.
    let offer_sdp = bundled_browser_offer(me.port(), identity.fingerprint());
    let reply = offer(
        &mut relay,
        "bundle-1",
        "browser",
        &offer_sdp,
        &[
            ("transport-protocol", Value::Bytes(b"RTP/AVP")),
            ("ICE", Value::Bytes(b"remove")),
            ("rtcp-mux", Value::List(vec![Value::Bytes(b"demux")])),
        ],
    );
    // The plain side gets a port per line, no BUNDLE.
    let (_, sdp) = target(&reply);
    let plain_offer = String::from_utf8(sdp.to_bytes()).unwrap();
    let (b_audio, b_video) = (
        port_of(&plain_offer, "audio"),
        port_of(&plain_offer, "video"),
    );
    assert_ne!(b_audio, b_video, "{plain_offer}");
    assert!(attr(&plain_offer, "group").is_none(), "{plain_offer}");
    let b_audio = SocketAddr::from(([127, 0, 0, 1], b_audio));
    let b_video = SocketAddr::from(([127, 0, 0, 1], b_video));
    let answer_sdp = format!(
        "v=0\r\no=- 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {a} RTP/AVP 0\r\na=sendrecv\r\nm=video {v} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
a=rtcp:{vr}\r\na=sendrecv\r\n",
        a = audio.local_addr().unwrap().port(),
        v = video.local_addr().unwrap().port(),
        vr = video_rtcp.local_addr().unwrap().port(),
    );
    let reply = answer(&mut relay, "bundle-1", ("browser", "plain"), &answer_sdp);
    let (a_target, sdp) = target(&reply);
    let answer = String::from_utf8(sdp.to_bytes()).unwrap();
    // The browser's answer: both lines on one port, one group, one set of
    // ICE credentials, the candidate on the transport's line only.
    assert_eq!(port_of(&answer, "audio"), a_target.port(), "{answer}");
    assert_eq!(port_of(&answer, "video"), a_target.port(), "{answer}");
    assert_eq!(attr(&answer, "group"), Some("BUNDLE 0 1"), "{answer}");
    assert_eq!(answer.matches("a=candidate").count(), 1, "{answer}");
    let ufrags: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .collect();
    assert_eq!(ufrags.len(), 2, "{answer}");
    assert_eq!(ufrags[0], ufrags[1], "{answer}");
    assert_eq!(answer.matches("a=mid:").count(), 2, "{answer}");
    let (ufrag, pwd) = (
        attr(&answer, "ice-ufrag").unwrap(),
        attr(&answer, "ice-pwd").unwrap(),
    );
    let relay_fp = Fingerprint::parse(attr(&answer, "fingerprint").unwrap()).unwrap();

    // One ICE check, one DTLS handshake, for both lines.
    browser
        .send_to(
            &binding_request(&format!("{ufrag}:{BROWSER_UFRAG}"), pwd, [7; 12]),
            a_target,
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = browser.recv_from(&mut buf).expect("STUN answer");
    check_response(&buf[..n], [7; 12], me, pwd);
    let mut leg = DtlsLeg::new(&identity, Role::Active, relay_fp, Instant::now()).unwrap();
    let keys = dtls_client(&mut leg, &browser, a_target);
    let mut tx = SrtpContext::new(&keys.outbound).unwrap();
    let mut rx = SrtpContext::new(&keys.inbound).unwrap();
    let send = |tx: &mut SrtpContext, p: &[u8]| {
        let mut b = [0u8; 2048];
        b[..p.len()].copy_from_slice(p);
        let n = tx.protect_rtp(&mut b, p.len()).unwrap();
        browser.send_to(&b[..n], a_target).unwrap();
    };

    for seq in 1..=20u16 {
        // Audio by its signalled SSRC; video by its MID, then by its SSRC
        // (learned from the MID), and RTX by the payload type only video
        // has.
        let p = rtp_with(0, seq, 4369, None);
        send(&mut tx, &p);
        let (n, from) = audio.recv_from(&mut buf).expect("audio at the plain side");
        assert_eq!((from, &buf[..n]), (b_audio, &p[..]), "audio {seq}");
        let mid = (seq == 1).then_some(&b"1"[..]);
        let p = rtp_with(96, seq, 0x2222, mid);
        send(&mut tx, &p);
        let (n, from) = video.recv_from(&mut buf).expect("video at the plain side");
        assert_eq!((from, &buf[..n]), (b_video, &p[..]), "video {seq}");
        let p = rtp_with(97, seq, 0x3333, None);
        send(&mut tx, &p);
        let (n, _) = video.recv_from(&mut buf).expect("RTX at the plain side");
        assert_eq!(&buf[..n], &p[..], "rtx {seq}");

        // Both plain lines reach the browser on the one transport, SRTP
        // with the one set of keys.
        for (sock, ssrc, pt) in [(&audio, 0xa0, 0), (&video, 0xb0, 96)] {
            let q = rtp_with(pt, seq, ssrc, None);
            let to = if pt == 0 { b_audio } else { b_video };
            sock.send_to(&q, to).unwrap();
            let (n, from) = srtp_at_browser(&browser, &mut buf);
            assert_eq!(from, a_target);
            let m = rx.unprotect_rtp(&mut buf, n).expect("the browser's keys");
            assert_eq!(&buf[..m], &q[..], "line of {pt}, packet {seq}");
        }
    }
    // Nothing ties a payload type no line has and an unknown SSRC to a
    // line: it goes nowhere.
    send(&mut tx, &rtp_with(55, 1, 0x5555, None));
    for sock in [&audio, &video] {
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            sock.recv_from(&mut buf).is_err(),
            "an unbundled packet went through"
        );
    }
    // RTCP: the video sender's report goes to the video line's RTCP port;
    // a report from a receive-only SSRC about the stream the browser got
    // on the video line, too.
    let report = |sender: u32, about: u32| {
        let mut p = vec![0x81, 201, 0, 7];
        p.extend_from_slice(&sender.to_be_bytes());
        p.extend_from_slice(&about.to_be_bytes());
        p.extend_from_slice(&[0; 20]);
        p
    };
    for rr in [report(0x2222, 0xb0), report(1, 0xb0)] {
        let mut b = [0u8; 2048];
        b[..rr.len()].copy_from_slice(&rr);
        let n = tx.protect_rtcp(&mut b, rr.len()).unwrap();
        browser.send_to(&b[..n], a_target).unwrap();
        let (n, from) = video_rtcp
            .recv_from(&mut buf)
            .expect("RTCP at the video line's RTCP port");
        assert_eq!(from.port(), b_video.port() + 1);
        assert_eq!(&buf[..n], &rr[..]);
    }
}

#[test]
fn a_webrtc_answerer_that_bundles_rvoips_offer_gets_every_line_on_the_tagged_transport() {
    let mut relay = Relay::start(DriverKind::Auto, 58800);
    let (audio, video, browser) = (peer(), peer(), peer());
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    // A plain offer of audio and video from the core, to a WebRTC side.
    let offer_sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {a} RTP/AVP 0\r\na=sendrecv\r\nm=video {v} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
a=sendrecv\r\n",
        a = audio.local_addr().unwrap().port(),
        v = video.local_addr().unwrap().port(),
    );
    let reply = offer(
        &mut relay,
        "bundle-2",
        "core",
        &offer_sdp,
        &[
            ("transport-protocol", Value::Bytes(b"UDP/TLS/RTP/SAVPF")),
            ("ICE", Value::Bytes(b"force")),
        ],
    );
    // rvoip offers BUNDLE: a port per line (RFC 9143 §7.2.1), one group,
    // one set of credentials.
    let (b_target, sdp) = target(&reply);
    let offer = String::from_utf8(sdp.to_bytes()).unwrap();
    assert_eq!(attr(&offer, "group"), Some("BUNDLE 0 1"), "{offer}");
    let b_video = port_of(&offer, "video");
    assert_ne!(b_video, b_target.port(), "{offer}");
    let ufrags: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .collect();
    assert_eq!(ufrags, [ufrags[0]; 2], "{offer}");
    let (ufrag, pwd) = (
        attr(&offer, "ice-ufrag").unwrap().to_owned(),
        attr(&offer, "ice-pwd").unwrap().to_owned(),
    );
    let relay_fp = Fingerprint::parse(attr(&offer, "fingerprint").unwrap()).unwrap();
    // The browser accepts the bundle: both lines on its one port, the
    // group tagged by mid 0.
    let me = browser.local_addr().unwrap();
    let answer_sdp = format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\n\
a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host\r\n\
a=ice-ufrag:{BROWSER_UFRAG}\r\na=ice-pwd:{BROWSER_PWD}\r\na=fingerprint:{fp}\r\n\
a=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n\
m=video {port} UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\n\
a=ice-ufrag:{BROWSER_UFRAG}\r\na=ice-pwd:{BROWSER_PWD}\r\na=fingerprint:{fp}\r\n\
a=setup:active\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n",
        port = me.port(),
        fp = identity.fingerprint()
    );
    let reply = answer(&mut relay, "bundle-2", ("core", "browser"), &answer_sdp);
    let (a_audio, sdp) = target(&reply);
    let a_video = SocketAddr::from((
        [127, 0, 0, 1],
        port_of(&String::from_utf8(sdp.to_bytes()).unwrap(), "video"),
    ));
    // rvoip checks from the tagged line's port only, and answers the
    // browser's check there.
    let mut agent = IceLite::new(BROWSER_UFRAG, BROWSER_PWD);
    let mut buf = [0u8; 2048];
    let (n, from) = browser.recv_from(&mut buf).expect("the relay's check");
    assert_eq!(from, b_target, "checks come from the bundle's transport");
    let mut reply_check = Vec::new();
    agent
        .on_stun(&buf[..n], from, 0, &mut reply_check)
        .expect("a check keyed with the browser's password");
    browser.send_to(&reply_check, from).unwrap();
    let check = rvoip_dataplane::media::ice::binding_request(
        &format!("{ufrag}:{BROWSER_UFRAG}"),
        &pwd,
        [6; 12],
        3,
    );
    browser.send_to(&check, b_target).unwrap();
    let mut leg = DtlsLeg::new(&identity, Role::Active, relay_fp, Instant::now()).unwrap();
    let keys = dtls_client(&mut leg, &browser, b_target);
    let mut tx = SrtpContext::new(&keys.outbound).unwrap();
    let mut rx = SrtpContext::new(&keys.inbound).unwrap();
    for seq in 1..=20u16 {
        // Core → browser: both lines out of the transport's port.
        for (sock, to, pt) in [(&audio, a_audio, 0), (&video, a_video, 96)] {
            let q = rtp_with(pt, seq, 0xc0 + u32::from(pt), None);
            sock.send_to(&q, to).unwrap();
            let (n, from) = srtp_at_browser(&browser, &mut buf);
            assert_eq!(from, b_target, "line of {pt} from the transport");
            let m = rx.unprotect_rtp(&mut buf, n).expect("the browser's keys");
            assert_eq!(&buf[..m], &q[..]);
        }
        // Browser → core: told apart by payload type.
        for (sock, pt) in [(&audio, 0), (&video, 96)] {
            let p = rtp_with(pt, seq, 0xd0 + u32::from(pt), None);
            let mut b = [0u8; 2048];
            b[..p.len()].copy_from_slice(&p);
            let n = tx.protect_rtp(&mut b, p.len()).unwrap();
            browser.send_to(&b[..n], b_target).unwrap();
            let (n, _) = sock.recv_from(&mut buf).expect("RTP at the core");
            assert_eq!(&buf[..n], &p[..], "line of {pt}, packet {seq}");
        }
    }
}
