//! The media engine relays RTP between two peers on loopback with both I/O
//! drivers: every packet arrives once, in order, unchanged, at the right peer.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use rvoip_dataplane::engine::media::{
    DriverKind, MediaEngine, MediaEngineConfig, MediaPlan, Polling,
};
use rvoip_dataplane::media::relay::{PeerSpec, RelayConfig, Side};
use rvoip_dataplane::media::rtp::{parse_rtp, write_rtp_header};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engine(driver: DriverKind, base: u16) -> MediaEngine {
    MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        port_min: base,
        port_max: base + 199,
        cores: vec![],
        driver,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 1024,
    })
    .expect("engine starts")
}

fn packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut h = [0u8; 12];
    write_rtp_header(&mut h, false, 0, seq, u32::from(seq) * 160, ssrc);
    let mut p = h.to_vec();
    p.extend((0..160u16).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn peer(sock: &UdpSocket) -> PeerSpec {
    PeerSpec {
        rtp: sock.local_addr().ok(),
        rtcp: None,
        rtcp_mux: true,
        clock_rate: 8000,
    }
}

fn relay_both_ways(driver: DriverKind, base: u16) {
    let eng = engine(driver, base);
    let a = UdpSocket::bind("127.0.0.1:0").expect("a");
    let b = UdpSocket::bind("127.0.0.1:0").expect("b");
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
    }
    let mut plan = MediaPlan::default();
    plan.side_mut(Side::A).open_rtp = true;
    plan.side_mut(Side::A).peer = Some(peer(&a));
    plan.side_mut(Side::B).open_rtp = true;
    let applied = eng.apply(0, None, vec![plan]).expect("offer applied");
    let [pa, pb] = applied.ports[0];
    assert!(pa.rtp >= base && pb.rtp >= base && pa.rtp != pb.rtp);
    // The answer gives B's address.
    let mut answer = MediaPlan::default();
    answer.side_mut(Side::B).peer = Some(peer(&b));
    eng.apply(0, Some(applied.handle.session), vec![answer])
        .expect("answer applied");

    let to_a_port = SocketAddr::new(LOCALHOST, pa.rtp);
    let to_b_port = SocketAddr::new(LOCALHOST, pb.rtp);
    let mut buf = [0u8; 2048];
    for seq in 0..200u16 {
        a.send_to(&packet(seq, 0xaaaa), to_a_port).expect("send a");
        let (n, from) = b.recv_from(&mut buf).expect("b receives");
        assert_eq!(from, to_b_port, "B sees the relay's B-side port as source");
        assert_eq!(&buf[..n], &packet(seq, 0xaaaa)[..]);
        b.send_to(&packet(seq, 0xbbbb), to_b_port).expect("send b");
        let (n, from) = a.recv_from(&mut buf).expect("a receives");
        assert_eq!(from, to_a_port);
        let h = parse_rtp(&buf[..n]).expect("rtp");
        assert_eq!((h.seq, h.ssrc), (seq, 0xbbbb));
    }
    let s = eng.snapshot(applied.handle).expect("snapshot").session;
    assert_eq!(s.medias[0].leg(Side::A).rtp_in.packets, 200);
    assert_eq!(s.medias[0].leg(Side::B).rtp_in.packets, 200);
    assert_eq!(s.medias[0].leg(Side::A).rtp_in.lost(), 0);
    // Malformed packets are dropped and counted, not forwarded.
    a.send_to(&[0x40; 40], to_a_port).expect("send bad");
    a.send_to(&packet(200, 0xaaaa), to_a_port)
        .expect("send good");
    let (n, _) = b.recv_from(&mut buf).expect("b receives the good one");
    assert_eq!(parse_rtp(&buf[..n]).map(|h| h.seq), Ok(200));
    let removed = eng.remove(applied.handle).expect("removed").session;
    assert_eq!(removed.medias[0].leg(Side::A).rtp_in.errors, 1);
    assert!(eng.snapshot(applied.handle).is_err());
    // The ports are closed: nothing relays any more.
    a.send_to(&packet(201, 0xaaaa), to_a_port)
        .expect("send after delete");
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(b.recv_from(&mut buf).is_err());
}

#[test]
fn io_uring_driver_relays_both_ways() {
    relay_both_ways(DriverKind::IoUring, 41000);
}

#[test]
fn fallback_driver_relays_both_ways() {
    relay_both_ways(DriverKind::Fallback, 42000);
}
