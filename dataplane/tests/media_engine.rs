//! The media engine relays RTP between two peers on loopback with both I/O
//! drivers: every packet arrives once, in order, unchanged, at the right peer.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

#[path = "common/no_uring.rs"]
mod no_uring;
use no_uring::{NO_URING_CHILD, io_uring_usable, refuse_io_uring, run_alone};

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use rvoip_dataplane::engine::kernel_has;
use rvoip_dataplane::engine::media::{
    DriverKind, MediaEngine, MediaEngineConfig, MediaHandle, MediaPlan, Polling,
};
use rvoip_dataplane::media::relay::{PeerSpec, RelayConfig, Side};
use rvoip_dataplane::media::rtp::{parse_rtp, write_rtp_header};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engine(driver: DriverKind, base: u16) -> MediaEngine {
    engine_on(driver, base, vec![])
}

/// An engine whose workers are pinned to `cores` (one worker each).
fn engine_on(driver: DriverKind, base: u16, cores: Vec<usize>) -> MediaEngine {
    MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: base,
        port_max: base + 199,
        cores,
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
    write_rtp_header(
        &mut h,
        false,
        0,
        seq,
        u32::from(seq) * 160,
        rvoip_dataplane::media::rtp::Ssrc(ssrc),
    );
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
        feedback: false,
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

/// A datagram, the receive started again when a signal interrupts it
/// (EINTR: another test's thread or child may raise one).
fn recv(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match sock.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Sends packets `seqs` each way through the relay's ports `pa` (A's) and
/// `pb` (B's): each arrives once, unchanged, from the relay's other port.
fn exchange(a: &UdpSocket, b: &UdpSocket, pa: u16, pb: u16, seqs: std::ops::Range<u16>) {
    let to_a_port = SocketAddr::new(LOCALHOST, pa);
    let to_b_port = SocketAddr::new(LOCALHOST, pb);
    let mut buf = [0u8; 2048];
    for seq in seqs {
        a.send_to(&packet(seq, 0xaaaa), to_a_port).expect("send a");
        let (n, from) = recv(b, &mut buf).expect("b receives");
        assert_eq!(from, to_b_port, "B sees the relay's B-side port as source");
        assert_eq!(&buf[..n], &packet(seq, 0xaaaa)[..]);
        b.send_to(&packet(seq, 0xbbbb), to_b_port).expect("send b");
        let (n, from) = recv(a, &mut buf).expect("a receives");
        assert_eq!(from, to_a_port);
        let h = parse_rtp(&buf[..n]).expect("rtp");
        assert_eq!(
            (h.seq, h.ssrc),
            (seq, rvoip_dataplane::media::rtp::Ssrc(0xbbbb))
        );
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
    let (n, _) = recv(&b, &mut buf).expect("b receives the good one");
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
    // A quiet second on the worker's millisecond clock: up to a
    // millisecond less on this finer one.
    assert!(
        first_ended.elapsed() >= Duration::from_millis(999),
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
        address_v6: None,
        extra_addresses: Vec::new(),
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

/// The CPUs each thread of this process named `name` may run on, as the
/// kernel lists them (`Cpus_allowed_list`).
fn cpus_of_threads(name: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

#[test]
fn each_worker_runs_only_on_its_configured_core() {
    let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let eng = engine_on(DriverKind::Auto, 41600, vec![last]);
    // (Other tests in this process may run unpinned engines of their own.)
    let cpus = cpus_of_threads("media-0");
    assert!(
        cpus.contains(&last.to_string()),
        "media-0 pinned to core {last}: {cpus:?}"
    );
    let (a, b) = peers();
    let (_, pa, pb) = call(&eng, &a, &b);
    exchange(&a, &b, pa, pb, 0..20);
}

/// The inodes of the UDP sockets bound on 127.0.0.1 to `ports` on this host
/// (`/proc/net/udp`), and of the sockets this process holds descriptors for.
fn udp_sockets_on(ports: &[u16]) -> (Vec<u64>, Vec<u64>) {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let bound: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            (ip == "0100007F" && ports.contains(&port)).then(|| f.get(9)?.parse().ok())?
        })
        .collect();
    let held = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_string_lossy();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    (bound, held)
}

/// The io_uring driver opens its relay sockets as direct descriptors: they
/// are bound on the host but none is in the process's descriptor table. The
/// fallback holds a descriptor for each.
#[test]
fn io_uring_relay_sockets_are_direct_descriptors_and_the_fallbacks_are_not() {
    if !kernel_has(io_uring_usable(), "io_uring") {
        return;
    }
    for (driver, base, in_table) in [
        (DriverKind::IoUring, 41800, false),
        (DriverKind::Fallback, 42800, true),
    ] {
        let eng = engine(driver, base);
        let (a, b) = peers();
        let calls: Vec<_> = (0..5).map(|_| call(&eng, &a, &b)).collect();
        let (_, pa, pb) = calls[4];
        exchange(&a, &b, pa, pb, 0..5);
        // The ports the relay gave these calls: bound by it alone.
        let ports: Vec<u16> = calls.iter().flat_map(|c| [c.1, c.2]).collect();
        let (bound, held) = udp_sockets_on(&ports);
        assert_eq!(bound.len(), 10, "{driver:?}: relay sockets bound");
        let in_fd_table = bound.iter().filter(|i| held.contains(i)).count();
        if in_table {
            assert_eq!(in_fd_table, bound.len(), "{driver:?}");
        } else {
            assert_eq!(in_fd_table, 0, "{driver:?}: relay sockets in the fd table");
        }
    }
}

/// `auto` takes io_uring where the kernel gives it, and the recvmmsg
/// driver where io_uring is refused; either relays. The refusal is real: the
/// test runs itself again in a child process under a seccomp filter.
#[test]
fn auto_takes_io_uring_or_falls_back_where_it_is_refused() {
    if std::env::var_os(NO_URING_CHILD).is_some() {
        refuse_io_uring();
        assert!(!io_uring_usable(), "the filter refuses io_uring");
        let eng = engine(DriverKind::Auto, 43600);
        let (a, b) = peers();
        let (_, pa, pb) = call(&eng, &a, &b);
        exchange(&a, &b, pa, pb, 0..50);
        println!("auto chose {}", eng.driver());
        return;
    }
    if kernel_has(io_uring_usable(), "io_uring") {
        let eng = engine(DriverKind::Auto, 43400);
        assert_eq!(eng.driver(), "io_uring");
        let (a, b) = peers();
        let (_, pa, pb) = call(&eng, &a, &b);
        exchange(&a, &b, pa, pb, 0..50);
    }
    let stdout = run_alone(
        "auto_takes_io_uring_or_falls_back_where_it_is_refused",
        NO_URING_CHILD,
    );
    assert!(stdout.contains("auto chose recvmmsg/sendmmsg"), "{stdout}");
}

/// CPU time (user + system, in clock ticks) of this process's thread named
/// `name`.
fn cpu_ticks_of_thread(name: &str) -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    let found: Vec<u64> = tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let rest = stat.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split(' ').collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .collect();
    assert_eq!(found.len(), 1, "one thread named {name}");
    found[0]
}

/// Median time for a packet sent every 5 ms to come through the relay.
fn median_transit(a: &UdpSocket, b: &UdpSocket, pa: u16, packets: u16) -> Duration {
    let mut buf = [0u8; 2048];
    let mut transit: Vec<Duration> = (0..packets)
        .map(|seq| {
            let sent = std::time::Instant::now();
            a.send_to(&packet(seq, 0xaaaa), SocketAddr::new(LOCALHOST, pa))
                .expect("send");
            recv(b, &mut buf).expect("relayed");
            let t = sent.elapsed();
            std::thread::sleep(Duration::from_millis(5));
            t
        })
        .collect();
    transit.sort_unstable();
    transit[transit.len() / 2]
}

const POLLING_CHILD: &str = "RVOIP_TEST_POLLING";

/// The polling knobs do what they say, seen from outside the worker:
/// `Adaptive` keeps the worker on its core for its window after traffic and
/// then lets it sleep; `batch_wait_us` holds packets back for up to its
/// window while traffic flows. (Run in a process of its own, so the worker
/// thread and its CPU time are unambiguous.)
#[test]
fn polling_knobs_busy_poll_after_traffic_and_coalesce_wakeups() {
    if std::env::var_os(POLLING_CHILD).is_none() {
        run_alone(
            "polling_knobs_busy_poll_after_traffic_and_coalesce_wakeups",
            POLLING_CHILD,
        );
        return;
    }
    let with = |polling: Polling, base: u16| {
        let eng = MediaEngine::start(&MediaEngineConfig {
            address: LOCALHOST,
            address_v6: None,
            extra_addresses: Vec::new(),
            port_min: base,
            port_max: base + 199,
            cores: vec![],
            driver: DriverKind::Auto,
            polling,
            relay: RelayConfig::default(),
            fill_calls: 0,
            max_endpoints_per_worker: 1024,
        })
        .expect("engine starts");
        let (a, b) = peers();
        let (_, pa, pb) = call(&eng, &a, &b);
        (eng, a, b, pa, pb)
    };
    // Clock ticks of CPU the worker takes in `ms` milliseconds (100 a second).
    let cpu_in = |ms: u64| {
        let before = cpu_ticks_of_thread("media-0");
        std::thread::sleep(Duration::from_millis(ms));
        cpu_ticks_of_thread("media-0") - before
    };

    // Busy-polling for 1.5 s after traffic, then asleep.
    {
        let (_eng, a, b, pa, pb) = with(Polling::Adaptive(Duration::from_millis(1500)), 44400);
        exchange(&a, &b, pa, pb, 0..10);
        let busy = cpu_in(500);
        std::thread::sleep(Duration::from_millis(1200));
        let asleep = cpu_in(500);
        eprintln!("adaptive: {busy} ticks in the 0.5 s after traffic, {asleep} once it ended");
        assert!(
            busy >= 15,
            "busy-polling takes at least 30 % of a core: {busy} ticks"
        );
        assert!(asleep <= 2, "asleep after the window: {asleep} ticks");
    }
    // Interrupt mode: asleep as soon as traffic stops.
    {
        let (_eng, a, b, pa, pb) = with(Polling::Interrupt { batch_wait_us: 0 }, 44600);
        exchange(&a, &b, pa, pb, 0..10);
        let idle = cpu_in(500);
        eprintln!("interrupt: {idle} ticks in the 0.5 s after traffic");
        assert!(idle <= 2, "asleep: {idle} ticks");
    }
    // A 20 ms batch window holds each packet back while packets flow.
    let min_wait = io_uring::IoUring::new(8).is_ok_and(|r| r.params().is_feature_min_timeout());
    if kernel_has(min_wait, "io_uring minimum wait (6.12+)") {
        let (eng, a, b, pa, _) = with(Polling::Interrupt { batch_wait_us: 0 }, 44800);
        let at_once = median_transit(&a, &b, pa, 100);
        drop(eng);
        let (_eng, a, b, pa, _) = with(
            Polling::Interrupt {
                batch_wait_us: 20_000,
            },
            45000,
        );
        let held = median_transit(&a, &b, pa, 100);
        eprintln!("median transit: {at_once:?} at once, {held:?} with a 20 ms window");
        assert!(held >= Duration::from_millis(3), "{held:?}");
        assert!(held > at_once * 4, "{held:?} against {at_once:?}");
    }
}

/// A port of the range held by another process while the rest of the
/// range is parked by calls that just ended: a new call takes a parked
/// pair rather than failing on the held port again and again.
fn a_held_port_does_not_refuse_a_call_when_parked_pairs_remain(driver: DriverKind, base: u16) {
    // Three pairs, one worker; the first pair's RTP port is taken.
    let _holder = UdpSocket::bind((LOCALHOST, base)).expect("hold the first port");
    let eng = MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: base,
        port_max: base + 5,
        cores: vec![0],
        driver,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 1024,
    })
    .expect("engine starts");
    let plan = || {
        let mut plan = MediaPlan::default();
        plan.side_mut(Side::A).open_rtp = true;
        plan.side_mut(Side::B).open_rtp = true;
        vec![plan]
    };
    // The first call skips the held pair and takes the other two.
    let first = eng.apply(0, None, plan()).expect("the first call");
    eng.remove(first.handle).expect("removed");
    // Its pairs are parked, not yet quiet; the only closed port is held.
    // The next call gets the parked pairs at once.
    for n in 0..3 {
        let c = eng
            .apply(0, None, plan())
            .unwrap_or_else(|e| panic!("call {n} refused: {e}"));
        let ports: Vec<u16> = c.ports[0].iter().map(|p| p.rtp).collect();
        assert!(!ports.contains(&base), "{ports:?}");
        eng.remove(c.handle).expect("removed");
    }
}

#[test]
fn io_uring_driver_skips_a_held_port_for_parked_pairs() {
    a_held_port_does_not_refuse_a_call_when_parked_pairs_remain(DriverKind::IoUring, 64000);
}

#[test]
fn fallback_driver_skips_a_held_port_for_parked_pairs() {
    a_held_port_does_not_refuse_a_call_when_parked_pairs_remain(DriverKind::Fallback, 64100);
}
