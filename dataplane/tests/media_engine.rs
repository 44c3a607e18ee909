//! The media engine relays RTP between two peers on loopback with both I/O
//! drivers: every packet arrives once, in order, unchanged, at the right peer.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use rvoip_dataplane::engine::media::{
    DriverKind, MediaEngine, MediaEngineConfig, MediaHandle, MediaPlan, Polling,
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

fn peers() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").expect("a");
    let b = UdpSocket::bind("127.0.0.1:0").expect("b");
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
    }
    (a, b)
}

/// Sets up a call from `a` to `b` on worker 0 (offer, then answer); returns
/// it and the relay's ports towards A and towards B.
fn call(eng: &MediaEngine, a: &UdpSocket, b: &UdpSocket) -> (MediaHandle, u16, u16) {
    let mut plan = MediaPlan::default();
    plan.side_mut(Side::A).open_rtp = true;
    plan.side_mut(Side::A).peer = Some(peer(a));
    plan.side_mut(Side::B).open_rtp = true;
    let applied = eng.apply(0, None, vec![plan]).expect("offer applied");
    let [pa, pb] = applied.ports[0];
    // The answer gives B's address.
    let mut answer = MediaPlan::default();
    answer.side_mut(Side::B).peer = Some(peer(b));
    eng.apply(0, Some(applied.handle.session), vec![answer])
        .expect("answer applied");
    (applied.handle, pa.rtp, pb.rtp)
}

/// Sends packets `seqs` each way through the relay's ports `pa` (A's) and
/// `pb` (B's): each arrives once, unchanged, from the relay's other port.
fn exchange(a: &UdpSocket, b: &UdpSocket, pa: u16, pb: u16, seqs: std::ops::Range<u16>) {
    let to_a_port = SocketAddr::new(LOCALHOST, pa);
    let to_b_port = SocketAddr::new(LOCALHOST, pb);
    let mut buf = [0u8; 2048];
    for seq in seqs {
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
}

fn relay_both_ways(driver: DriverKind, base: u16) {
    let eng = engine(driver, base);
    let (a, b) = peers();
    let (handle, pa, pb) = call(&eng, &a, &b);
    assert!(pa >= base && pb >= base && pa != pb);
    let to_a_port = SocketAddr::new(LOCALHOST, pa);
    let mut buf = [0u8; 2048];
    exchange(&a, &b, pa, pb, 0..200);
    let s = eng.snapshot(handle).expect("snapshot").session;
    assert_eq!(s.medias[0].leg(Side::A).rtp_in.packets, 200);
    assert_eq!(s.medias[0].leg(Side::B).rtp_in.packets, 200);
    assert_eq!(s.medias[0].leg(Side::A).rtp_in.lost(), 0);
    // Malformed packets are dropped and counted, not forwarded.
    a.send_to(&[0x40; 40], to_a_port).expect("send bad");
    a.send_to(&packet(200, 0xaaaa), to_a_port)
        .expect("send good");
    let (n, _) = b.recv_from(&mut buf).expect("b receives the good one");
    assert_eq!(parse_rtp(&buf[..n]).map(|h| h.seq), Ok(200));
    let removed = eng.remove(handle).expect("removed").session;
    assert_eq!(removed.medias[0].leg(Side::A).rtp_in.errors, 1);
    assert!(eng.snapshot(handle).is_err());
    // The call is gone: nothing relays any more.
    a.send_to(&packet(201, 0xaaaa), to_a_port)
        .expect("send after delete");
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(b.recv_from(&mut buf).is_err());
}

/// A finished call's ports stay open for later calls: late packets to them
/// are dropped and counted, the next call within a second gets other ports,
/// and a call after that quiet second gets them and relays through them.
fn ports_of_a_finished_call_serve_a_later_one(driver: DriverKind, base: u16) {
    let eng = engine(driver, base);
    let (a, b) = peers();
    let (first, pa, pb) = call(&eng, &a, &b);
    exchange(&a, &b, pa, pb, 0..10);
    eng.remove(first).expect("removed");
    let first_ended = std::time::Instant::now();
    a.send_to(&packet(10, 0xaaaa), SocketAddr::new(LOCALHOST, pa))
        .expect("late packet");
    let counted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        eng.counters().unknown_endpoint == 1
    });
    assert!(counted, "the late packet is counted as for no call");
    let (second, qa, qb) = call(&eng, &a, &b);
    assert!(
        ![pa, pb].contains(&qa) && ![pa, pb].contains(&qb),
        "a call right after gets other ports: {pa} {pb} / {qa} {qb}"
    );
    exchange(&a, &b, qa, qb, 0..10);
    eng.remove(second).expect("removed");
    // New calls until one gets the first call's ports: not before its
    // quiet second, and soon after it.
    let mut was = [pa, pb];
    was.sort_unstable();
    let (third, ra, rb) = loop {
        let (c, ra, rb) = call(&eng, &a, &b);
        let mut now = [ra, rb];
        now.sort_unstable();
        if now == was {
            break (c, ra, rb);
        }
        eng.remove(c).expect("removed");
        assert!(
            first_ended.elapsed() < Duration::from_secs(3),
            "the first call's ports never served again"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        first_ended.elapsed() >= Duration::from_millis(1000),
        "the first call's ports served again after only {:?}",
        first_ended.elapsed()
    );
    exchange(&a, &b, ra, rb, 0..50);
    let s = eng.remove(third).expect("removed").session;
    assert_eq!(s.medias[0].leg(Side::A).rtp_in.packets, 50);
    assert_eq!(eng.counters().unknown_endpoint, 1);
}

#[test]
fn io_uring_driver_relays_both_ways() {
    relay_both_ways(DriverKind::IoUring, 41000);
}

#[test]
fn fallback_driver_relays_both_ways() {
    relay_both_ways(DriverKind::Fallback, 42000);
}

#[test]
fn io_uring_driver_gives_a_finished_calls_ports_to_a_later_call() {
    ports_of_a_finished_call_serve_a_later_one(DriverKind::IoUring, 41400);
}

#[test]
fn fallback_driver_gives_a_finished_calls_ports_to_a_later_call() {
    ports_of_a_finished_call_serve_a_later_one(DriverKind::Fallback, 42400);
}

/// Calls fill 90 % of a small port range split over two workers without a
/// refusal, though calls go to the first worker until it holds
/// `fill_calls`: placement moves on once a worker's own pairs are spent.
fn a_small_range_fills_to_90_percent(driver: DriverKind, base: u16) {
    let eng = MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        port_min: base,
        // 40 pairs: 20 per worker.
        port_max: base + 79,
        cores: vec![0, 1],
        driver,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 1000,
        max_endpoints_per_worker: 1024,
    })
    .expect("engine starts");
    assert_eq!(eng.workers(), 2);
    let mut per_worker = [0usize; 2];
    let mut handles = Vec::new();
    // 18 calls of two pairs: 36 of 40 pairs.
    for n in 0..18 {
        let mut plan = MediaPlan::default();
        plan.side_mut(Side::A).open_rtp = true;
        plan.side_mut(Side::B).open_rtp = true;
        let w = eng.place();
        let applied = eng
            .apply(w, None, vec![plan])
            .unwrap_or_else(|e| panic!("call {n} on worker {w} refused: {e}"));
        per_worker[w] += 1;
        handles.push(applied.handle);
    }
    assert_eq!(
        per_worker,
        [10, 8],
        "the first worker full, then the second"
    );
    for h in handles {
        eng.remove(h).expect("removed");
    }
}

#[test]
fn io_uring_driver_places_calls_where_ports_are_free() {
    a_small_range_fills_to_90_percent(DriverKind::IoUring, 43000);
}

#[test]
fn fallback_driver_places_calls_where_ports_are_free() {
    a_small_range_fills_to_90_percent(DriverKind::Fallback, 43200);
}
