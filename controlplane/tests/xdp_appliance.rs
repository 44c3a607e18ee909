//! The appliance on `config/xdp.toml` in namespace `rvx` of the AF_XDP
//! test topology (as root; made and removed here): rvoip's XDP program is
//! on `rvx0` while it runs; ng, SIP over UDP and a call's media from
//! `rvxpeer` are served on AF_XDP without the kernel's UDP stack of `rvx`
//! seeing them; SIP over TCP, ping, and UDP to a port rvoip does not serve
//! (ICMP port unreachable) are the kernel's; SIPp's calls cross the proxy
//! on AF_XDP; the program goes at SIGTERM; after `kill -9` it stays,
//! passing everything to the kernel, until the next start replaces it.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::sipp::sipp_in;
use common::{Spawned, test_config, test_dir};
use rvoip_dataplane::ng::bencode::{Value, decode, encode};
use rvoip_dataplane::xdp::testbed::{self, Topology, link_shows_xdp};

/// The tests make the same namespaces: one at a time.
static TOPOLOGY: Mutex<()> = Mutex::new(());

/// `config/xdp.toml` for a test, with a ring directory of its own.
fn xdp_config(dir: &Path) -> std::path::PathBuf {
    let rings = format!("/dev/shm/rvoip-test-{}-xdp", std::process::id());
    test_config(
        "xdp.toml",
        dir,
        &[(
            "ring_dir = \"/dev/shm/rvoip-xdp\"",
            format!("ring_dir = \"{rings}\""),
        )],
    )
}

/// `rvoip run --config CONFIG` inside namespace `rvx`, once the program is
/// on the link and ng answers from `rvxpeer`.
fn start(dir: &Path, config: &Path) -> Spawned {
    let app = Spawned::spawn(
        Command::new("ip")
            .args(["netns", "exec", testbed::RVX, env!("CARGO_BIN_EXE_rvoip")])
            .args(["run", "--config"])
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rvoip.log")).unwrap()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(link_shows_xdp() && ng_ping()) {
        assert!(
            Instant::now() < deadline,
            "rvoip did not come up on AF_XDP:\n{}",
            std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    app
}

/// One ng command to 10.99.0.1:2223 from `rvxpeer`; the reply's dictionary
/// as (key, value) text pairs.
fn ng(entries: Vec<(&'static str, Vec<u8>)>) -> Option<Vec<(String, Vec<u8>)>> {
    std::thread::spawn(move || {
        testbed::enter(testbed::PEER).ok()?;
        let sock = UdpSocket::bind("10.99.0.2:0").ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let dict = Value::Dict(
            entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), Value::Bytes(v.as_slice())))
                .collect(),
        );
        let mut msg = b"cookie1 ".to_vec();
        encode(&dict, &mut msg);
        sock.send_to(&msg, "10.99.0.1:2223").ok()?;
        let mut buf = [0u8; 8192];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let body = buf[..n].splitn(2, |b| *b == b' ').nth(1)?;
        let (Value::Dict(d), _) = decode(body).ok()? else {
            return None;
        };
        Some(
            d.iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        v.as_bytes().unwrap_or_default().to_vec(),
                    )
                })
                .collect(),
        )
    })
    .join()
    .ok()
    .flatten()
}

fn ng_ping() -> bool {
    ng(vec![("command", b"ping".to_vec())])
        .is_some_and(|r| r.iter().any(|(k, v)| k == "result" && v == b"pong"))
}

/// The relay port an ng reply's SDP gives.
fn port(reply: &[(String, Vec<u8>)]) -> u16 {
    let sdp = reply
        .iter()
        .find(|(k, _)| k == "sdp")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no sdp in {reply:?}"));
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {sdp}"))
}

fn sdp(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 1 IN IP4 10.99.0.2\r\ns=-\r\nc=IN IP4 10.99.0.2\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// `rvx`'s kernel UDP counters, read inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelUdp {
    /// Datagrams delivered to a socket (or in error).
    received: u64,
    /// Datagrams for a port nobody serves (answered with ICMP).
    no_port: u64,
    sent: u64,
}

fn rvx_udp() -> KernelUdp {
    std::thread::spawn(|| {
        testbed::enter(testbed::RVX).unwrap();
        KernelUdp {
            received: testbed::kernel_udp(&["InDatagrams", "InErrors"]),
            no_port: testbed::kernel_udp(&["NoPorts"]),
            sent: testbed::kernel_udp(&["OutDatagrams"]),
        }
    })
    .join()
    .unwrap()
}

/// An OPTIONS to rvoip on 10.99.0.1:5060 from `me` over `transport`
/// ("UDP" or "TCP"), its branch and Call-ID made of `tag`.
fn options(me: SocketAddr, transport: &str, tag: &str) -> String {
    format!(
        "OPTIONS sip:10.99.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/{transport} {me};branch=z9hG4bK-{tag}\r\n\
Max-Forwards: 70\r\nFrom: <sip:t@10.99.0.2>;tag=x\r\nTo: <sip:10.99.0.1>\r\n\
Call-ID: xdp-{tag}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn the_appliance_serves_sip_ng_and_media_on_af_xdp_and_leaves_the_rest_to_the_kernel() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    let dir = test_dir("xdp-appliance");
    let config = xdp_config(&dir);
    let mut app = start(&dir, &config);
    let before = rvx_udp();

    // A call's media over ng: 10.99.0.2:41000 (A) and :41001 (B).
    let offer = ng(vec![
        ("command", b"offer".to_vec()),
        ("call-id", b"xdp-1".to_vec()),
        ("from-tag", b"a".to_vec()),
        ("sdp", sdp(41000)),
    ])
    .expect("ng offer answered");
    let to_b = port(&offer);
    let answer = ng(vec![
        ("command", b"answer".to_vec()),
        ("call-id", b"xdp-1".to_vec()),
        ("from-tag", b"a".to_vec()),
        ("to-tag", b"b".to_vec()),
        ("sdp", sdp(41001)),
    ])
    .expect("ng answer answered");
    let to_a = port(&answer);
    let peer = std::thread::spawn(move || {
        testbed::enter(testbed::PEER).unwrap();
        let (a, b) = (
            UdpSocket::bind("10.99.0.2:41000").unwrap(),
            UdpSocket::bind("10.99.0.2:41001").unwrap(),
        );
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        let (ra, rb): (SocketAddr, SocketAddr) = (
            format!("10.99.0.1:{to_a}").parse().unwrap(),
            format!("10.99.0.1:{to_b}").parse().unwrap(),
        );
        testbed::rtp_both_ways((&a, &b), (ra, rb), 100).unwrap();
        // SIP over UDP, on AF_XDP.
        let mut buf = [0u8; 2048];
        let sip = UdpSocket::bind("10.99.0.2:0").unwrap();
        sip.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let me = sip.local_addr().unwrap();
        sip.send_to(options(me, "UDP", "udp1").as_bytes(), "10.99.0.1:5060")
            .unwrap();
        let (n, _) = sip.recv_from(&mut buf).expect("an answer to OPTIONS");
        assert!(
            buf[..n].starts_with(b"SIP/2.0 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        // The kernel's: SIP over TCP, ping, UDP to a port nobody serves.
        let mut tcp =
            TcpStream::connect_timeout(&"10.99.0.1:5060".parse().unwrap(), Duration::from_secs(3))
                .expect("SIP over TCP");
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let me = tcp.local_addr().unwrap();
        tcp.write_all(options(me, "TCP", "tcp1").as_bytes())
            .unwrap();
        let n = tcp.read(&mut buf).expect("an answer to OPTIONS over TCP");
        assert!(
            buf[..n].starts_with(b"SIP/2.0 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        let ping = Command::new("ping")
            .args(["-c", "1", "-W", "2", "10.99.0.1"])
            .output()
            .unwrap();
        assert!(ping.status.success(), "ping 10.99.0.1");
        let closed = UdpSocket::bind("10.99.0.2:0").unwrap();
        closed.connect("10.99.0.1:5999").unwrap();
        closed
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        closed.send(b"anyone?").unwrap();
        let refused = closed.recv(&mut buf).expect_err("nobody answers on 5999");
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "ICMP port unreachable from rvx's kernel"
        );
    });
    peer.join().unwrap();
    let after = rvx_udp();
    // ng, 200 relayed packets, OPTIONS: none through rvx's UDP stack; the
    // probe to port 5999 is the kernel's.
    assert_eq!(
        (after.received, after.sent),
        (before.received, before.sent),
        "rvx's kernel UDP counters grew ({before:?} to {after:?}): rvoip's traffic went through them"
    );
    assert_eq!(after.no_port, before.no_port + 1, "the probe to 5999");

    // SIGTERM: the program goes.
    app.terminate().expect("rvoip stops on SIGTERM");
    assert!(!link_shows_xdp(), "the program detached at stop");

    // kill -9: the program stays (passing everything to the kernel), and
    // the next start replaces it.
    let app = start(&dir, &config);
    let pid = app.0.id().to_string();
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    drop(app);
    assert!(link_shows_xdp(), "a killed rvoip leaves its program");
    assert!(
        ng(vec![("command", b"ping".to_vec())]).is_none(),
        "nobody answers ng"
    );
    let mut app = start(&dir, &config);
    assert!(ng_ping());
    app.terminate().expect("rvoip stops on SIGTERM");
    assert!(!link_shows_xdp());
}

#[test]
fn on_two_queues_ng_and_sip_are_answered_whichever_queue_they_land_on() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    testbed::set_channels(2).expect("two channels on rvx0 and rvx1");
    let dir = test_dir("xdp-two-queues");
    let config = xdp_config(&dir);
    let mut app = start(&dir, &config);
    // Each from a port of its own: the flows hash onto both queues, and
    // the worker taking a request is often not the link's owner, which
    // sends the answer.
    for i in 0..40 {
        assert!(ng_ping(), "ng ping {i} unanswered");
    }
    let sip = std::thread::spawn(|| {
        testbed::enter(testbed::PEER).unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..40 {
            let sock = UdpSocket::bind("10.99.0.2:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let me = sock.local_addr().unwrap();
            sock.send_to(
                options(me, "UDP", &format!("q{i}")).as_bytes(),
                "10.99.0.1:5060",
            )
            .unwrap();
            let (n, _) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("OPTIONS {i} unanswered: {e}"));
            assert!(
                buf[..n].starts_with(b"SIP/2.0 200"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    });
    sip.join().unwrap();
    app.terminate().expect("rvoip stops on SIGTERM");
    let log = std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    assert!(log.contains("driver=\"af_xdp\" workers=2"), "{log}");
    // Both workers took requests for the services off their queue.
    for worker in ["worker=0", "worker=1"] {
        let closed = log
            .lines()
            .find(|l| l.contains("AF_XDP socket closed") && l.contains(worker))
            .unwrap_or_else(|| panic!("no {worker} in {log}"));
        assert!(!closed.contains(" posted=0 "), "{closed}");
        assert!(closed.contains(" send_errors=0 "), "{closed}");
    }
}

/// Waits until something in `rvxpeer` holds UDP port `port` of 10.99.0.2.
fn wait_peer_bound(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::thread::spawn(move || {
        testbed::enter(testbed::PEER).unwrap();
        UdpSocket::bind(("10.99.0.2", port)).is_ok()
    })
    .join()
    .unwrap()
    {
        assert!(Instant::now() < deadline, "nothing bound 10.99.0.2:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sipp_calls_cross_the_proxy_on_af_xdp() {
    let _one = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let _topology = Topology::up().unwrap();
    let dir = test_dir("xdp-proxy");
    let config = xdp_config(&dir);
    let mut app = start(&dir, &config);
    // SIPp's UAS where the proxy routes, 10.99.0.2:5070; its UAC on 5080.
    let _uas = Spawned::spawn(
        Command::new("ip")
            .args(["netns", "exec", testbed::PEER, "sipp", "-sn", "uas"])
            .args(["-i", "10.99.0.2", "-p", "5070", "-nostdin"])
            .args(["-timeout", "60"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_peer_bound(5070);
    let before = rvx_udp();
    let stats = sipp_in(
        Some(testbed::PEER),
        &dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            "10.99.0.2",
            "-p",
            "5080",
            "10.99.0.1:5060",
            "-s",
            "1000",
            "-m",
            "300",
            "-r",
            "100",
            "-l",
            "300",
            "-timeout",
            "40",
        ],
        Duration::from_secs(60),
    );
    let after = rvx_udp();
    assert_eq!(
        (stats.successful, stats.failed),
        (300, 0),
        "SIPp's calls through the proxy: {stats:?}\n{}",
        std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
    );
    // 300 calls are 4,200 datagrams through the proxy, none of them
    // through rvx's UDP stack.
    assert_eq!(
        (after.received, after.sent),
        (before.received, before.sent),
        "rvx's kernel UDP counters grew ({before:?} to {after:?}): SIP went through them"
    );
    app.terminate().expect("rvoip stops on SIGTERM");
    let log = std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    let closed = log
        .lines()
        .find(|l| l.contains("AF_XDP socket closed"))
        .unwrap_or_default();
    let field = |name: &str| {
        closed
            .split(&format!(" {name}="))
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(
        field("posted").is_some_and(|p| p >= 300 * 6) && field("mailbox_full") == Some(0),
        "the AF_XDP worker handed the SIP workers every message, none lost: {closed}"
    );
}
