//! rvoip's XDP program and an AF_XDP socket on the test topology (as
//! root): namespace `rvx` holding veth `rvx0` (10.99.0.1/24), its peer
//! `rvx1` (10.99.0.2/24) in namespace `rvxpeer`, made here and removed
//! after. UDP to the steered address reaches the AF_XDP socket and never
//! the kernel's UDP stack (`/proc/net/snmp` of `rvx` does not grow); a
//! frame rvoip builds goes back out through it; UDP to another port still
//! gets the kernel's port unreachable; ping and TCP are still the
//! kernel's. The program shows on the link while attached and not after;
//! one left behind (as by a killed rvoip) is replaced by the next.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use rvoip_dataplane::xdp::frame;
use rvoip_dataplane::xdp::testbed::{self, Topology, link_shows_xdp};
use rvoip_dataplane::xdp::xsk::{CopyMode, Xsk};
use rvoip_dataplane::xdp::{Steering, XdpMode, bpf};

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        testbed::enter(ns).unwrap();
        f()
    })
}

/// UDP datagrams the kernel of this thread's namespace received: those
/// delivered, to no port, and in error.
fn kernel_udp_in() -> u64 {
    testbed::kernel_udp(&["InDatagrams", "NoPorts", "InErrors"])
}

/// UDP datagrams the kernel of this thread's namespace sent.
fn kernel_udp_out() -> u64 {
    testbed::kernel_udp(&["OutDatagrams"])
}

const RVOIP: &str = "10.99.0.1:40000";

/// The topology's names are fixed: one test at a time uses it.
static TOPOLOGY: Mutex<()> = Mutex::new(());

#[test]
fn udp_to_rvoip_is_taken_by_af_xdp_and_the_rest_stays_with_the_kernel() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    let (to_peer, from_rvx) = mpsc::channel::<&'static str>();
    let (to_rvx, from_peer) = mpsc::channel::<SocketAddr>();

    // rvoip's side: the program on rvx0, a socket on queue 0.
    let rvx = in_ns("rvx", move || {
        let ifindex = bpf::ifindex("rvx0").unwrap();
        let steering = Steering::attach(ifindex, XdpMode::Native).unwrap();
        let mut xsk = Xsk::open(ifindex, 0, 256, CopyMode::Copy).unwrap();
        steering.bind_queue(0, &xsk).unwrap();
        steering.steer(RVOIP.parse().unwrap()).unwrap();
        assert!(bpf::attached(ifindex).unwrap().is_some());
        assert!(link_shows_xdp(), "ip link shows the program");
        let tcp = TcpListener::bind("10.99.0.1:5060").unwrap();
        let udp_before = kernel_udp_in();
        to_peer.send("ready").unwrap();

        // Ten datagrams from the peer, each in the socket, checked.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut peer = None;
        while got.len() < 10 && Instant::now() < deadline {
            xsk.recv(64, |f| {
                if let Ok(u) = frame::parse(f)
                    && u.dst == RVOIP.parse().unwrap()
                {
                    got.push(f[u.payload.clone()].to_vec());
                    peer = Some((u.src, u.macs));
                }
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("hello {i}").into_bytes()).collect();
        assert_eq!(
            got,
            expected,
            "the datagrams, in order, in the AF_XDP socket ({:?}; the kernel's UDP in grew by {}; \
             rvx0's counters: {})",
            xsk.statistics(),
            kernel_udp_in() - udp_before,
            String::from_utf8_lossy(
                &Command::new("ethtool")
                    .args(["-S", "rvx0"])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
        );
        assert_eq!(
            kernel_udp_in(),
            udp_before,
            "the kernel's UDP stack never saw them"
        );
        // A reply rvoip builds itself goes back out through the socket.
        let (peer, (peer_mac, my_mac)) = peer.unwrap();
        let (at, buf) = xsk.frame().unwrap();
        let h = frame::headers_len(peer);
        buf[h..h + 5].copy_from_slice(b"reply");
        let n = frame::build(buf, (my_mac, peer_mac), RVOIP.parse().unwrap(), peer, 5, 1).unwrap();
        assert!(xsk.send(at, n as u32));
        xsk.flush();
        to_peer.send("replied").unwrap();
        // TCP is still the kernel's.
        tcp.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let from = loop {
            match tcp.accept() {
                Ok((_conn, from)) => break from,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no TCP connection from the peer: {e}"),
            }
        };
        assert_eq!(from.ip().to_string(), "10.99.0.2");
        from_peer.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(xsk);
        drop(steering);
        assert_eq!(bpf::attached(ifindex).unwrap(), None, "detached on drop");
        assert!(!link_shows_xdp());

        // A program left behind (as by rvoip killed with -9) is replaced.
        let stale = Steering::attach(ifindex, XdpMode::Native).unwrap();
        let stale_id = bpf::attached(ifindex).unwrap().unwrap();
        std::mem::forget(stale);
        let fresh = Steering::attach(ifindex, XdpMode::Native).unwrap();
        let fresh_id = bpf::attached(ifindex).unwrap().unwrap();
        assert_ne!(stale_id, fresh_id, "the stale program was replaced");
        drop(fresh);
        assert_eq!(bpf::attached(ifindex).unwrap(), None);
    });

    // The peer: UDP to rvoip's port, to another port, ping and TCP.
    let peer = in_ns("rvxpeer", move || {
        from_rvx.recv_timeout(Duration::from_secs(10)).unwrap();
        let sock = UdpSocket::bind("10.99.0.2:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for i in 0..10 {
            sock.send_to(format!("hello {i}").as_bytes(), RVOIP)
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            from_rvx.recv_timeout(Duration::from_secs(10)).unwrap(),
            "replied"
        );
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).expect("rvoip's reply");
        assert_eq!((&buf[..n], from), (&b"reply"[..], RVOIP.parse().unwrap()));
        // Another port: the kernel answers with port unreachable.
        let other = UdpSocket::bind("10.99.0.2:0").unwrap();
        other.connect("10.99.0.1:40001").unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        other.send(b"nobody").unwrap();
        let e = other
            .recv(&mut buf)
            .expect_err("no answer but an ICMP error");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        // Ping and TCP.
        let ping = Command::new("ping")
            .args(["-c", "1", "-W", "2", "10.99.0.1"])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "ping 10.99.0.1 answered by the kernel"
        );
        let _tcp =
            TcpStream::connect_timeout(&"10.99.0.1:5060".parse().unwrap(), Duration::from_secs(3))
                .expect("TCP to 10.99.0.1:5060");
        to_rvx.send("10.99.0.2:0".parse().unwrap()).unwrap();
    });
    peer.join().unwrap();
    rvx.join().unwrap();
}

#[test]
fn the_media_relay_on_af_xdp_relays_both_ways_without_the_kernels_udp() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.99.0.2:41000".parse().unwrap(),
        "10.99.0.2:41001".parse().unwrap(),
    );
    let (to_peer, ports) = mpsc::channel::<(u16, u16)>();
    let (done, from_peer) = mpsc::channel::<()>();
    let rvx = in_ns("rvx", move || {
        let eng = testbed::af_xdp_engine(vec![]).unwrap();
        assert_eq!(eng.driver(), "af_xdp");
        assert!(link_shows_xdp());
        let applied = eng.apply(0, None, vec![testbed::relay_plan(a, b)]).unwrap();
        let [pa, pb] = applied.ports[0];
        let (udp_in, udp_out) = (kernel_udp_in(), kernel_udp_out());
        to_peer.send((pa.rtp, pb.rtp)).unwrap();
        from_peer.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            (kernel_udp_in(), kernel_udp_out()),
            (udp_in, udp_out),
            "relayed packets never went through the kernel's UDP stack, in or out"
        );
        let c = eng.counters();
        assert!(c.forwarded >= 400, "{c:?}");
        drop(eng);
        assert!(!link_shows_xdp(), "the program goes with the engine");
    });
    let peer = in_ns("rvxpeer", move || {
        let (sa, sb) = (UdpSocket::bind(a).unwrap(), UdpSocket::bind(b).unwrap());
        for s in [&sa, &sb] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let (pa, pb) = ports.recv_timeout(Duration::from_secs(10)).unwrap();
        let (ra, rb): (SocketAddr, SocketAddr) = (
            format!("10.99.0.1:{pa}").parse().unwrap(),
            format!("10.99.0.1:{pb}").parse().unwrap(),
        );
        testbed::rtp_both_ways((&sa, &sb), (ra, rb), 200).unwrap();
        done.send(()).unwrap();
    });
    peer.join().unwrap();
    rvx.join().unwrap();
}

/// The RTP frames XDP redirected on each receive queue of `rvx0`.
fn redirected_per_queue() -> Vec<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", "rvx", "ethtool", "-S", "rvx0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..2)
        .map(|q| {
            let key = format!("rx_queue_{q}_xdp_redirect:");
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn on_a_link_with_two_queues_two_workers_relay_each_others_frames() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    testbed::set_channels(2).expect("two channels on rvx0 and rvx1");
    let calls: u16 = 8;
    let (to_peer, ports) = mpsc::channel::<Vec<(u16, u16)>>();
    let (done, from_peer) = mpsc::channel::<()>();
    let rvx = in_ns("rvx", move || {
        let mut eng = testbed::af_xdp_engine(vec![0, 1]).unwrap();
        assert_eq!(eng.workers(), 2, "a media worker per queue");
        let peer = |port| SocketAddr::from(([10, 99, 0, 2], port));
        let mut relay_ports = Vec::new();
        for c in 0..calls {
            // The calls alternate between the workers.
            let plan = testbed::relay_plan(peer(43000 + 2 * c), peer(43001 + 2 * c));
            let [pa, pb] = eng
                .apply(usize::from(c % 2), None, vec![plan])
                .unwrap()
                .ports[0];
            relay_ports.push((pa.rtp, pb.rtp));
        }
        to_peer.send(relay_ports).unwrap();
        from_peer.recv_timeout(Duration::from_secs(30)).unwrap();
        let c = eng.counters();
        assert!(c.forwarded >= u64::from(calls) * 40, "{c:?}");
        let reports = eng.stop();
        assert_eq!(reports.len(), 2);
        for (w, r) in reports.iter().enumerate() {
            assert!(
                r.relay.forwarded >= u64::from(calls / 2) * 40,
                "worker {w}: {r:?}"
            );
        }
        // Flows hash onto either queue whoever owns their ports: frames
        // were taken by one worker and relayed by the other.
        let handed: u64 = reports.iter().map(|r| r.handed_over).sum();
        assert!(handed > 0, "{reports:?}");
    });
    let peer = in_ns("rvxpeer", move || {
        let relay_ports = ports.recv_timeout(Duration::from_secs(10)).unwrap();
        for (c, (pa, pb)) in relay_ports.into_iter().enumerate() {
            let c = c as u16;
            let a = UdpSocket::bind(("10.99.0.2", 43000 + 2 * c)).unwrap();
            let b = UdpSocket::bind(("10.99.0.2", 43001 + 2 * c)).unwrap();
            for s in [&a, &b] {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            }
            let relay = (
                SocketAddr::from(([10, 99, 0, 1], pa)),
                SocketAddr::from(([10, 99, 0, 1], pb)),
            );
            testbed::rtp_both_ways((&a, &b), relay, 20).unwrap_or_else(|e| panic!("call {c}: {e}"));
        }
        done.send(()).unwrap();
    });
    peer.join().unwrap();
    rvx.join().unwrap();
    let per_queue = redirected_per_queue();
    assert!(
        per_queue.iter().all(|n| *n > 0),
        "frames arrived on both queues and were all relayed: {per_queue:?}"
    );
}

#[test]
fn a_socket_that_prefers_busy_polling_takes_frames_while_its_thread_spins() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    let (to_peer, from_rvx) = mpsc::channel::<()>();
    let rvx = in_ns("rvx", move || {
        let ifindex = bpf::ifindex("rvx0").unwrap();
        let steering = Steering::attach(ifindex, XdpMode::Native).unwrap();
        let mut xsk = Xsk::open(ifindex, 0, 256, CopyMode::Copy).unwrap();
        assert!(!xsk.prefers_busy_poll());
        xsk.prefer_busy_poll(20, 64).unwrap();
        assert!(xsk.prefers_busy_poll(), "SO_PREFER_BUSY_POLL set");
        steering.bind_queue(0, &xsk).unwrap();
        steering.steer(RVOIP.parse().unwrap()).unwrap();
        to_peer.send(()).unwrap();
        // Spinning, never sleeping in poll(2): each frame is taken by a
        // busy poll of the queue or found in the ring.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < 50 && Instant::now() < deadline {
            xsk.busy_poll();
            xsk.recv(64, |f| {
                if frame::parse(f).is_ok_and(|u| u.dst == RVOIP.parse().unwrap()) {
                    got += 1;
                }
            });
        }
        got
    });
    let peer = in_ns("rvxpeer", move || {
        from_rvx.recv().unwrap();
        let s = UdpSocket::bind("10.99.0.2:0").unwrap();
        for i in 0..50 {
            s.send_to(format!("spin {i}").as_bytes(), RVOIP).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    peer.join().unwrap();
    assert_eq!(rvx.join().unwrap(), 50, "every frame taken while spinning");
}
