//! Relaying packets in steady state allocates nothing, with either driver:
//! a counting global allocator sees zero allocations while 2,000 packets
//! cross the relay, plain or transcrypted between RTP and SRTP.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rvoip_dataplane::engine::media::{
    DriverKind, MediaEngine, MediaEngineConfig, MediaPlan, Polling,
};
use rvoip_dataplane::media::relay::{LegSrtp, PeerSpec, RelayConfig, Side};
use rvoip_dataplane::media::rtp::write_rtp_header;
use rvoip_dataplane::srtp::{SrtpContext, SrtpParams, Suite, sdes};

mod counting;
use counting::ALLOCS;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// B's SRTP contexts when leg B is SRTP: (protect, unprotect).
type Srtp = Option<(SrtpContext, SrtpContext)>;

fn relay_packets(
    a: &UdpSocket,
    b: &UdpSocket,
    to_a: SocketAddr,
    to_b: SocketAddr,
    packet: &mut [u8; 172],
    range: std::ops::Range<u16>,
    srtp: &mut Srtp,
) {
    let mut buf = [0u8; 2048];
    for seq in range {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        a.send_to(packet, to_a).expect("send");
        let mut got = b.recv_from(&mut buf).expect("relayed").0;
        if let Some((_, rx)) = srtp {
            got = rx.unprotect_rtp(&mut buf, got).expect("B decrypts");
        }
        assert_eq!(got, 172);
        buf[..172].copy_from_slice(packet);
        let len = match srtp {
            Some((tx, _)) => tx.protect_rtp(&mut buf, 172).expect("B encrypts"),
            None => 172,
        };
        b.send_to(&buf[..len], to_b).expect("send");
        let got = a.recv_from(&mut buf).expect("relayed").0;
        assert_eq!(got, 172);
    }
}

fn steady_state_allocations(driver: DriverKind, base: u16, srtp: Option<Suite>) -> u64 {
    let eng = MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: base,
        port_max: base + 99,
        cores: vec![],
        driver,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 64,
    })
    .expect("engine");
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let spec = |s: &UdpSocket| PeerSpec {
        rtp: s.local_addr().ok(),
        rtcp: None,
        rtcp_mux: true,
        clock_rate: 8000,
        feedback: false,
    };
    let mut plan = MediaPlan::default();
    plan.side_mut(Side::A).open_rtp = true;
    plan.side_mut(Side::A).peer = Some(spec(&a));
    plan.side_mut(Side::B).open_rtp = true;
    plan.side_mut(Side::B).peer = Some(spec(&b));
    let mut contexts: Srtp = None;
    if let Some(suite) = srtp {
        let key = sdes::generate(suite, &rvoip_dataplane::entropy::SeededEntropy::new(3)).unwrap();
        let params = SrtpParams::new(suite, key);
        plan.side_mut(Side::B).srtp = Some(LegSrtp {
            rx: Some(params.clone()),
            tx: Some(params.clone()),
        });
        contexts = Some((
            SrtpContext::new(&params).unwrap(),
            SrtpContext::new(&params).unwrap(),
        ));
    }
    let applied = eng.apply(0, None, vec![plan]).expect("session");
    let [pa, pb] = applied.ports[0];
    let (to_a, to_b) = (
        SocketAddr::new(LOCALHOST, pa.rtp),
        SocketAddr::new(LOCALHOST, pb.rtp),
    );
    let mut packet = [0u8; 172];
    let mut header = [0u8; 12];
    write_rtp_header(
        &mut header,
        false,
        0,
        0,
        0,
        rvoip_dataplane::media::rtp::Ssrc(42),
    );
    packet[..12].copy_from_slice(&header);
    // Warm up: first packets latch, lazy statics settle, buffers cycle once.
    relay_packets(&a, &b, to_a, to_b, &mut packet, 0..5000, &mut contexts);
    let before = ALLOCS.load(Ordering::Relaxed);
    relay_packets(&a, &b, to_a, to_b, &mut packet, 5000..6000, &mut contexts);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    drop(eng);
    allocs
}

/// One test for the whole file: the counter is process-wide (what is
/// measured are the media worker threads, not this one), so nothing else
/// may run in this test binary while a window is counted.
#[test]
fn relaying_and_transcrypting_allocate_nothing_in_steady_state() {
    assert_eq!(
        steady_state_allocations(DriverKind::IoUring, 50000, None),
        0,
        "io_uring driver"
    );
    assert_eq!(
        steady_state_allocations(DriverKind::Fallback, 50200, None),
        0,
        "fallback driver"
    );
    for (suite, base) in [
        (Suite::AesCm128HmacSha1_80, 50400),
        (Suite::AeadAes128Gcm, 50600),
    ] {
        assert_eq!(
            steady_state_allocations(DriverKind::IoUring, base, Some(suite)),
            0,
            "io_uring driver, {suite:?}"
        );
        assert_eq!(
            steady_state_allocations(DriverKind::Fallback, base + 100, Some(suite)),
            0,
            "fallback driver, {suite:?}"
        );
    }
}
