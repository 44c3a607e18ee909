//! The SIP workers' UDP path against real sockets, with this test as the
//! control plane on the shared-memory channel: messages the control plane
//! queues leave whole and in order (several of one length to one
//! destination in one segmented send where the kernel can), and a peer's
//! segmented send reaches the control plane as its separate messages; a
//! worker busy with traffic takes what is queued without being woken.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "common/no_uring.rs"]
mod no_uring;
use no_uring::{NO_URING_CHILD, io_uring_usable, refuse_io_uring, run_alone};

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rvoip_dataplane::engine::gso::{self, Packer};
use rvoip_dataplane::engine::kernel_has;
use rvoip_dataplane::engine::media::DriverKind;
use rvoip_dataplane::engine::sip::{SipPlane, SipPlaneConfig, Transport};
use rvoip_dataplane::shm::{Channel, Direction, META_BYTES, SipMeta};
use rvoip_dataplane::sip::Limits;

/// A ring directory of this test's own, removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rvoip-sip-plane-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("/dev/shm is writable");
        Dir(d)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .expect("loopback has free ports")
        .local_addr()
        .expect("a bound socket has an address")
}

/// A one-worker SIP plane on `listeners`, its channels in `dir`.
fn start(
    dir: &Dir,
    listeners: Vec<(Transport, SocketAddr)>,
    batch_wait_us: u32,
    driver: DriverKind,
) -> SipPlane {
    SipPlane::start(&SipPlaneConfig {
        shards: 1,
        listeners,
        cores: Vec::new(),
        ring_dir: dir.path().to_path_buf(),
        limits: Limits::DEFAULT,
        rate_limit: 0,
        hep: None,
        ring_slots: 1024,
        batch_wait_us,
        driver,
        tls: None,
        streams: Default::default(),
        ws: Default::default(),
        xdp: None,
    })
    .expect("SIP plane")
}

/// A one-worker SIP plane on a UDP listener of its own, and its channel
/// with this test attached as the control plane.
fn plane(name: &str, batch_wait_us: u32) -> (Dir, SipPlane, Channel, SocketAddr) {
    let dir = Dir::new(name);
    let listen = free_udp();
    let plane = start(
        &dir,
        vec![(Transport::Udp, listen)],
        batch_wait_us,
        DriverKind::IoUring,
    );
    let channel = Channel::open(&plane.rings[0]).expect("the plane created its ring");
    channel.heartbeat();
    (dir, plane, channel, listen)
}

/// The channel metadata of a UDP message from the listener to `peer`.
fn udp_meta(listen: SocketAddr, peer: &UdpSocket) -> [u8; META_BYTES] {
    SipMeta {
        transport: Transport::Udp,
        local: listen,
        remote: peer.local_addr().expect("a bound socket has an address"),
        conn: 0,
    }
    .encode()
}

/// An OPTIONS request of a fixed length: `n` is written in six digits.
fn options(n: u32) -> Vec<u8> {
    in_call(n, n)
}

/// Request `n` (six digits) of call `call` (six digits): all of one length.
fn in_call(call: u32, n: u32) -> Vec<u8> {
    format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{n:06}\r\n\
         From: <sip:test@127.0.0.1>;tag={call:06}\r\n\
         To: <sip:probe@127.0.0.1>\r\n\
         Call-ID: {call:06}@test\r\n\
         CSeq: {n:06} OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn queued_messages_leave_whole_and_in_order_for_each_call() {
    // Once woken the worker waits 20 ms for more: the messages queued
    // meanwhile leave in the same pass.
    let (_dir, mut plane, channel, listen) = plane("out", 20_000);
    let mut to_dataplane = channel.producer(Direction::ToDataplane);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
    peer.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("a nonzero timeout is valid");
    // Fifty calls, each a request and then a longer one (as a 180 and its
    // 200 follow each other), all to one destination: the shorter ones of
    // all calls share a send, the longer ones another, and each call's
    // order holds.
    let mut sent = Vec::new();
    for call in 0..50u32 {
        sent.push(in_call(call, 2 * call));
        let mut longer = in_call(call, 2 * call + 1);
        longer.extend_from_slice(b"x"); // a body-less extra octet is still one datagram
        sent.push(longer);
    }
    let meta = udp_meta(listen, &peer);
    for m in &sent {
        to_dataplane
            .push(0, &meta, m)
            .expect("the ring has room for the test's messages");
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < sent.len() {
        let (n, src) = peer.recv_from(&mut buf).expect("every message");
        assert_eq!(src, listen, "sent from the listener");
        got.push(buf[..n].to_vec());
    }
    let call_of = |m: &Vec<u8>| {
        rvoip_dataplane::sip::scan_call_id(m)
            .expect("the test's requests have a Call-ID")
            .to_vec()
    };
    for call in 0..50u32 {
        let id = format!("{call:06}@test").into_bytes();
        let of = |all: &[Vec<u8>]| {
            all.iter()
                .filter(|m| call_of(m) == id)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            of(&got),
            of(&sent),
            "call {call}: whole, once, in the order queued"
        );
    }
    let reports = plane.shutdown();
    assert_eq!(reports[0].sent, 100);
    assert_eq!(reports[0].send_errors, 0);
    // Grouping is certain when the worker could wait for the rest of the
    // queue (a kernel with io_uring's minimum wait) and segment.
    let min_wait = io_uring::IoUring::new(8).is_ok_and(|r| r.params().is_feature_min_timeout());
    if kernel_has(gso::can_segment(&peer), "UDP_SEGMENT")
        && kernel_has(
            min_wait,
            "io_uring's minimum wait (IORING_FEAT_MIN_TIMEOUT)",
        )
    {
        assert!(
            reports[0].sent_grouped > 0,
            "runs of one length shared sends"
        );
        // Two sends when the worker took the whole queue in one pass (a
        // hundred if one destination's datagrams kept their order).
        assert!(
            reports[0].udp_sends <= 4,
            "{} sends for 100 messages",
            reports[0].udp_sends
        );
    }
}

#[test]
fn a_peers_segmented_send_reaches_the_control_plane_as_its_messages() {
    let (_dir, mut plane, channel, listen) = plane("in", 0);
    let mut from_dataplane = channel.consumer(Direction::ToControlPlane);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
    let msgs: Vec<Vec<u8>> = (0..10).map(options).collect();
    let segmented = kernel_has(gso::can_segment(&peer), "UDP_SEGMENT");
    if segmented {
        // Ten requests in one segmented send, as rvoip-loadtest sends them.
        let mut p = Packer::new(true);
        for (i, m) in msgs.iter().enumerate() {
            p.push(i as u64, m, listen);
        }
        let g = &p.groups()[0];
        assert_eq!(g.count(), 10);
        let r = gso::send_group(&peer, g).expect("one segmented send");
        assert_eq!(r, g.data.len());
    } else {
        for m in &msgs {
            peer.send_to(m, listen).expect("loopback takes the send");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    while got.len() < msgs.len() && Instant::now() < deadline {
        channel.heartbeat();
        while let Some(r) = from_dataplane.peek() {
            let meta = SipMeta::decode(r.meta);
            assert_eq!(
                meta.remote,
                peer.local_addr().expect("a bound socket has an address")
            );
            got.push(r.payload.to_vec());
            from_dataplane.advance();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(got, msgs, "each request on its own, in order");
    let reports = plane.shutdown();
    assert_eq!(reports[0].oversized, 0);
    if segmented {
        assert_eq!(reports[0].received_grouped, 10, "one coalesced read");
    }
}

#[test]
fn a_worker_busy_with_traffic_sends_what_is_queued_without_being_woken() {
    let (_dir, mut plane, channel, listen) = plane("poll", 1000);
    let mut from_dataplane = channel.consumer(Direction::ToControlPlane);
    let mut to_dataplane = channel.producer(Direction::ToDataplane);
    let sleep_word = channel.sleep_word(Direction::ToDataplane);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
    peer.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("a nonzero timeout is valid");
    let meta = udp_meta(listen, &peer);
    let mut buf = vec![0u8; 65_536];
    // The peer's request reaches the control plane: traffic is flowing.
    let mut inbound = |n: u32| {
        peer.send_to(&options(n), listen)
            .expect("loopback takes the send");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            channel.heartbeat();
            if from_dataplane.peek().is_some() {
                from_dataplane.advance();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "request {n} reached the control plane"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let mut answer = |n: u32, peer: &UdpSocket| {
        to_dataplane
            .push(0, &meta, &options(n))
            .expect("the ring has room");
        let (len, src) = peer.recv_from(&mut buf).expect("the queued message leaves");
        assert_eq!((&buf[..len], src), (&options(n)[..], listen));
    };
    inbound(1);
    // The first push may find the futex the idle worker armed (and wake it).
    answer(1, &peer);
    // While traffic flows the worker does not announce sleep: pushes make no
    // system call, and what they queue still leaves.
    let mut unannounced = false;
    for n in 2..20 {
        inbound(n);
        if sleep_word.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            unannounced = true;
            answer(n, &peer);
            break;
        }
    }
    assert!(unannounced, "a busy worker sleeps without arming its futex");
    // Idle again, it sleeps on the futex word, and the next push wakes it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sleep_word.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "an idle worker arms its futex");
        std::thread::sleep(Duration::from_millis(10));
    }
    answer(100, &peer);
    let reports = plane.shutdown();
    assert_eq!(reports[0].send_errors, 0);
}

/// A request of about 1,400 octets (a padding header), `n` in six digits.
fn large(n: u32) -> Vec<u8> {
    let mut m = options(n);
    let at = m.len() - 2;
    let pad = format!("X-Pad: {}\r\n", "p".repeat(1_200));
    m.splice(at..at, pad.into_bytes());
    m
}

/// Waits until a request the peer sends to `listen` reaches the control
/// plane; how long that took.
fn request_reaches_the_control_plane(channel: &Channel, listen: SocketAddr, n: u32) -> Duration {
    let mut from_dataplane = channel.consumer(Direction::ToControlPlane);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
    let sent = Instant::now();
    peer.send_to(&options(n), listen)
        .expect("loopback takes the send");
    loop {
        channel.heartbeat();
        while let Some(r) = from_dataplane.peek() {
            let mine = r.payload == options(n).as_slice();
            from_dataplane.advance();
            if mine {
                return sent.elapsed();
            }
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "request {n} never reached the control plane"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A TCP peer that stops reading never holds the worker up: what is queued
/// for it waits in the connection (no blocking write) and leaves, whole and
/// in order, as the peer reads again; meanwhile the worker serves its other
/// traffic at once; a peer that leaves 1 MiB unsent has its connection
/// closed.
#[test]
fn a_tcp_peer_that_stops_reading_never_holds_up_the_worker() {
    let (_dir, mut plane, channel, listen) = plane("tcp-stall", 0);
    let peer = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
    let meta = SipMeta {
        transport: Transport::Tcp,
        local: listen,
        remote: peer.local_addr().expect("a bound socket has an address"),
        conn: 0,
    }
    .encode();
    let mut to_dataplane = channel.producer(Direction::ToDataplane);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut push = |range: std::ops::Range<u32>, slowest: &mut Duration| {
        for n in range {
            while to_dataplane.push(0, &meta, &large(n)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the worker took messages up to {n} only in 60 s"
                );
                channel.heartbeat();
                std::thread::sleep(Duration::from_micros(200));
            }
            // Meanwhile another peer's requests get through at once.
            if n % 500 == 0 {
                *slowest = (*slowest).max(request_reaches_the_control_plane(&channel, listen, n));
            }
        }
    };
    // ≈ 1.2 MB while the peer does not read: more than its socket buffers
    // take, less than the 1 MiB the worker holds besides.
    let first = 860u32;
    push(0..first, &mut slowest);
    slowest = slowest.max(request_reaches_the_control_plane(&channel, listen, 999_998));
    // The peer reads: every message arrives, whole and in order, as its
    // window opens again.
    let (mut stream, _) = peer.accept().expect("the worker connected");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a nonzero timeout is valid");
    let expected: Vec<u8> = (0..first).flat_map(large).collect();
    let mut got = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut stream, &mut got).expect("all of it arrives");
    assert!(got == expected, "whole messages, in order");
    // It stops reading again, and ≈ 17 MB more are queued for it.
    push(first..first + 12_000, &mut slowest);
    slowest = slowest.max(request_reaches_the_control_plane(&channel, listen, 999_999));
    eprintln!("slowest request while the peer did not read: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "the worker was held up {slowest:?}"
    );
    let reports = plane.shutdown();
    assert!(reports[0].tcp_write_waits >= 1, "{:?}", reports[0]);
    assert!(reports[0].tcp_stalled >= 1, "{:?}", reports[0]);
    assert!(reports[0].tcp_connected >= 1, "{:?}", reports[0]);
    drop(stream);
}

/// A connect that is never answered (the peer's accept queue is full, so
/// its SYNs are dropped) does not hold the worker up, and is given up after
/// 2 s.
#[test]
fn a_connect_nobody_answers_never_holds_up_the_worker() {
    let (_dir, mut plane, channel, listen) = plane("tcp-connect", 0);
    // A listener that never accepts: once its queue is full, connects to it
    // hang.
    let full = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
    let addr = full.local_addr().expect("a bound socket has an address");
    let mut queued = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => queued.push(s),
            Err(_) => break,
        }
        assert!(queued.len() < 5_000, "the accept queue never filled");
    }
    let meta = SipMeta {
        transport: Transport::Tcp,
        local: listen,
        remote: addr,
        conn: 0,
    }
    .encode();
    let mut to_dataplane = channel.producer(Direction::ToDataplane);
    to_dataplane
        .push(0, &meta, &options(1))
        .expect("the ring has room");
    let connecting = Instant::now();
    let took = request_reaches_the_control_plane(&channel, listen, 2);
    eprintln!("a request while the connect hung: {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "the worker was held up {took:?}"
    );
    // Given up after its 2 s.
    while connecting.elapsed() < Duration::from_millis(3_000) {
        std::thread::sleep(Duration::from_millis(50));
        channel.heartbeat();
    }
    let reports = plane.shutdown();
    assert_eq!(reports[0].tcp_connect_failed, 1, "{:?}", reports[0]);
    assert_eq!(reports[0].tcp_connected, 0, "{:?}", reports[0]);
    drop(queued);
}

/// The next record from the dataplane whose payload is `want`: its meta.
fn next_record(channel: &Channel, want: &[u8]) -> SipMeta {
    let mut from_dataplane = channel.consumer(Direction::ToControlPlane);
    let started = Instant::now();
    loop {
        channel.heartbeat();
        while let Some(r) = from_dataplane.peek() {
            let found = (r.payload == want).then(|| SipMeta::decode(r.meta));
            from_dataplane.advance();
            if let Some(meta) = found {
                return meta;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the message never reached the control plane"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Where io_uring is not to be had, the SIP workers run on poll(2) and
/// plain calls: UDP and TCP messages reach the control plane, what it
/// queues leaves on UDP, on the connection a request came on, and on a new
/// connection the worker opens; the worker reports that it ran the
/// fallback.
#[test]
fn the_poll_fallback_carries_udp_and_tcp_both_ways() {
    use std::io::{Read, Write};
    let dir = Dir::new("fallback");
    let udp_listen = free_udp();
    let tcp_listen = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("loopback has free ports")
        .local_addr()
        .expect("a bound socket has an address");
    let listeners = vec![(Transport::Udp, udp_listen), (Transport::Tcp, tcp_listen)];
    let mut plane = start(&dir, listeners, 0, DriverKind::Fallback);
    let channel = Channel::open(&plane.rings[0]).expect("the plane created its ring");
    channel.heartbeat();
    let mut to_dataplane = channel.producer(Direction::ToDataplane);
    // UDP in, then out.
    request_reaches_the_control_plane(&channel, udp_listen, 1);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
    peer.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("a nonzero timeout is valid");
    to_dataplane
        .push(0, &udp_meta(udp_listen, &peer), &options(2))
        .expect("room");
    let mut buf = vec![0u8; 4096];
    let (n, src) = peer.recv_from(&mut buf).expect("the queued message");
    assert_eq!((&buf[..n], src), (options(2).as_slice(), udp_listen));
    // TCP in, and the answer back on that connection.
    let mut caller = std::net::TcpStream::connect(tcp_listen).expect("the worker accepts");
    caller
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("a nonzero timeout is valid");
    caller.write_all(&options(3)).expect("written");
    let meta = next_record(&channel, &options(3));
    assert_eq!(meta.transport, Transport::Tcp);
    assert_ne!(meta.conn, 0, "a connection id to answer on");
    to_dataplane
        .push(0, &meta.encode(), &options(4))
        .expect("room");
    let mut got = vec![0u8; options(4).len()];
    caller
        .read_exact(&mut got)
        .expect("the answer on the same connection");
    assert_eq!(got, options(4));
    // TCP out to a peer with no connection yet: the worker connects.
    let callee = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
    let out = SipMeta {
        transport: Transport::Tcp,
        local: tcp_listen,
        remote: callee.local_addr().expect("a bound socket has an address"),
        conn: 0,
    };
    to_dataplane
        .push(0, &out.encode(), &options(5))
        .expect("room");
    let (mut s, _) = callee.accept().expect("the worker connected");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("a nonzero timeout is valid");
    let mut got = vec![0u8; options(5).len()];
    s.read_exact(&mut got)
        .expect("the message on the new connection");
    assert_eq!(got, options(5));
    let reports = plane.shutdown();
    assert!(reports[0].fallback, "{:?}", reports[0]);
    assert_eq!(reports[0].tcp_connected, 1, "{:?}", reports[0]);
}

/// `auto` takes io_uring where the kernel gives it and poll(2) where
/// io_uring is refused; either carries SIP. The refusal is real: the test
/// runs itself again in a child process under a seccomp filter.
#[test]
fn auto_takes_io_uring_or_falls_back_to_poll_where_it_is_refused() {
    let auto_plane = |name: &str| {
        let dir = Dir::new(name);
        let listen = free_udp();
        let plane = start(&dir, vec![(Transport::Udp, listen)], 0, DriverKind::Auto);
        let channel = Channel::open(&plane.rings[0]).expect("the plane created its ring");
        channel.heartbeat();
        request_reaches_the_control_plane(&channel, listen, 7);
        (dir, plane)
    };
    if std::env::var_os(NO_URING_CHILD).is_some() {
        refuse_io_uring();
        assert!(!io_uring_usable(), "the filter refuses io_uring");
        let (_dir, mut plane) = auto_plane("auto-refused");
        let fallback = plane.shutdown()[0].fallback;
        println!("auto chose {}", if fallback { "poll" } else { "io_uring" });
        return;
    }
    if kernel_has(io_uring_usable(), "io_uring") {
        let (_dir, mut plane) = auto_plane("auto");
        assert!(
            !plane.shutdown()[0].fallback,
            "io_uring where the kernel gives it"
        );
    }
    let stdout = run_alone(
        "auto_takes_io_uring_or_falls_back_to_poll_where_it_is_refused",
        NO_URING_CHILD,
    );
    assert!(stdout.contains("auto chose poll"), "{stdout}");
}
