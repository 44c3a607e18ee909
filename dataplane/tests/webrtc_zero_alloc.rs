//! A WebRTC call in steady state allocates nothing per packet: after ICE
//! and DTLS, a counting global allocator sees zero allocations while a
//! browser-like peer and two plain RTP peers exchange 4,000 packets
//! through the relay: audio and video BUNDLEd on one SRTP transport on the
//! browser's side, told apart per packet, plain RTP on the other.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::indexing_slicing
)]

mod common;
mod counting;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::*;
use counting::ALLOCS;
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::entropy::SystemEntropy;
use rvoip_dataplane::media::dtls::{DtlsIdentity, DtlsLeg, Fingerprint, Role};
use rvoip_dataplane::ng::bencode::Value;
use rvoip_dataplane::sdp::Sdp;
use rvoip_dataplane::srtp::SrtpContext;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}:")))
        .unwrap_or_else(|| panic!("no a={name} in\n{sdp}"))
}

/// The relay's address of the `m=` line `i` of an SDP reply.
fn line(sdp: &Sdp<'_>, i: usize) -> SocketAddr {
    SocketAddr::new(
        sdp.media_connection(i).expect("c=").address,
        sdp.media[i].media.port,
    )
}

/// The peers of the call and what they need to talk through the relay.
struct Call {
    browser: UdpSocket,
    plain: [UdpSocket; 2],
    /// The browser's relay address, the plain lines' relay addresses.
    to_browser_side: SocketAddr,
    to_plain: [SocketAddr; 2],
    tx: SrtpContext,
    rx: SrtpContext,
}

/// Browser → relay → plain and back, `range` rounds on both lines; no
/// allocation on this thread either.
fn exchange(c: &mut Call, range: std::ops::Range<u16>) {
    let mut packet = [0u8; 172];
    let mut buf = [0u8; 2048];
    for seq in range {
        for (line, pt) in [(0, 0u8), (1, 96)] {
            packet[..12].copy_from_slice(&[0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, line as u8]);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            buf[..172].copy_from_slice(&packet);
            let n = c.tx.protect_rtp(&mut buf, 172).expect("protect");
            c.browser.send_to(&buf[..n], c.to_browser_side).unwrap();
            let (n, _) = c.plain[line]
                .recv_from(&mut buf)
                .expect("at the plain side");
            assert_eq!(&buf[..n], &packet[..], "line {line}, packet {seq}");
            packet[11] = 0x80 | line as u8;
            c.plain[line].send_to(&packet, c.to_plain[line]).unwrap();
            let n = loop {
                let (n, _) = c.browser.recv_from(&mut buf).expect("at the browser");
                if (128..192).contains(&buf[0]) {
                    break n;
                }
            };
            let n = c.rx.unprotect_rtp(&mut buf, n).expect("unprotect");
            assert_eq!(&buf[..n], &packet[..], "line {line} back, packet {seq}");
        }
    }
}

fn setup(relay: &mut Relay) -> Call {
    let (browser, audio, video) = (peer(), peer(), peer());
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    let offer_sdp =
        bundled_browser_offer(browser.local_addr().unwrap().port(), identity.fingerprint());
    let reply = offer(
        relay,
        "alloc-1",
        "browser",
        &offer_sdp,
        &[
            ("transport-protocol", Value::Bytes(b"RTP/AVP")),
            ("ICE", Value::Bytes(b"remove")),
        ],
    );
    let (_, sdp) = target(&reply);
    let to_plain = [line(&sdp, 0), line(&sdp, 1)];
    let answer_sdp = format!(
        "v=0\r\no=- 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {a} RTP/AVP 0\r\na=rtcp-mux\r\na=sendrecv\r\nm=video {v} RTP/AVP 96\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-mux\r\na=sendrecv\r\n",
        a = audio.local_addr().unwrap().port(),
        v = video.local_addr().unwrap().port(),
    );
    let reply = answer(relay, "alloc-1", ("browser", "plain"), &answer_sdp);
    let (to_browser_side, sdp) = target(&reply);
    let text = String::from_utf8(sdp.to_bytes()).unwrap();
    assert_eq!(line(&sdp, 1), to_browser_side, "bundled:\n{text}");
    let (ufrag, pwd) = (attr(&text, "ice-ufrag"), attr(&text, "ice-pwd"));
    let check = rvoip_dataplane::media::ice::binding_request(
        &format!("{ufrag}:{BROWSER_UFRAG}"),
        pwd,
        [9; 12],
        1,
    );
    browser.send_to(&check, to_browser_side).unwrap();
    let mut buf = [0u8; 2048];
    let (_, from) = browser.recv_from(&mut buf).expect("STUN answer");
    assert_eq!(from, to_browser_side);
    let fp = Fingerprint::parse(attr(&text, "fingerprint")).unwrap();
    let mut leg = DtlsLeg::new(&identity, Role::Active, fp, Instant::now()).unwrap();
    let keys = dtls_client(&mut leg, &browser, to_browser_side);
    Call {
        browser,
        plain: [audio, video],
        to_browser_side,
        to_plain,
        tx: SrtpContext::new(&keys.outbound).unwrap(),
        rx: SrtpContext::new(&keys.inbound).unwrap(),
    }
}

/// One test for the whole file: the counter is process-wide.
#[test]
fn a_bundled_webrtc_call_allocates_nothing_per_packet_after_the_handshake() {
    let mut relay = Relay::start(DriverKind::Auto, 59000);
    let mut call = setup(&mut relay);
    // Warm up: latches, SSRCs tied to lines, buffers cycled.
    exchange(&mut call, 0..1000);
    let before = ALLOCS.load(Ordering::Relaxed);
    exchange(&mut call, 1000..2000);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "allocations while 4,000 packets crossed");
}
