//! 10,000 relayed calls (20,000 media endpoints) held at once by one `rvoip
//! run` process on this host, whose descriptor limit is 20,000: the endpoints
//! live in io_uring's fixed-file tables, not in the process's descriptor
//! table. Every call relays a packet each way to the right peer. The peers,
//! like SIPp's rtp_echo, use one address:port for all calls.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvoip_dataplane::ng::bencode::{Value, decode, encode};
use rvoip_dataplane::sdp::Sdp;

mod common;

const CALLS: usize = 10_000;

struct Appliance(Child);

impl Drop for Appliance {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use common::free_udp_port;

fn ng(
    client: &UdpSocket,
    server: SocketAddr,
    cookie: usize,
    entries: &[(&str, Value<'_>)],
) -> Vec<u8> {
    let dict = Value::Dict(
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.clone()))
            .collect(),
    );
    let mut msg = format!("k{cookie} ").into_bytes();
    encode(&dict, &mut msg);
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        client.send_to(&msg, server).expect("send");
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            let prefix = format!("k{cookie} ");
            assert!(buf[..n].starts_with(prefix.as_bytes()));
            return buf[prefix.len()..n].to_vec();
        }
    }
    panic!("no ng reply for cookie {cookie}");
}

fn sdp_port(reply: &[u8]) -> u16 {
    let (v, _) = decode(reply).expect("bencode");
    assert_eq!(
        v.get("result").and_then(Value::as_str),
        Some("ok"),
        "{}",
        String::from_utf8_lossy(reply)
    );
    let sdp = Sdp::parse(v.get("sdp").and_then(Value::as_bytes).expect("sdp")).expect("sdp parses");
    sdp.media[0].media.port
}

fn offer_sdp(port: u16) -> Vec<u8> {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtcp-mux\r\na=sendrecv\r\n").into_bytes()
}

fn packet(call: u32, direction: u8) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[8..12].copy_from_slice(&call.to_be_bytes());
    p[12] = direction;
    p[13..17].copy_from_slice(&call.to_be_bytes());
    p
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

#[test]
fn ten_thousand_calls_relay_at_once() {
    let dir = common::test_dir("10k");
    let (sip, ngp) = (free_udp_port(), free_udp_port());
    let cfg = common::test_config(
        "rvoip.toml",
        &dir,
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{sip}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{ngp}")),
            ("port_min = 30000", "port_min = 10000".into()),
            ("port_max = 39999", "port_max = 59999".into()),
            ("io = \"auto\"", "io = \"io-uring\"".into()),
        ],
    );
    let child = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .expect("rvoip");
    let app = Appliance(child);
    let pid = app.0.id();

    let server: SocketAddr = format!("127.0.0.1:{ngp}").parse().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut m = b"ping d7:command4:pinge".to_vec();
        client.send_to(&m, server).unwrap();
        m.resize(256, 0);
        if client.recv_from(&mut m).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "rvoip did not start");
    }

    // One socket for every caller, one for every callee.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let (a_port, b_port) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let started = Instant::now();
    let mut targets = Vec::with_capacity(CALLS);
    for call in 0..CALLS {
        let id = format!("call-{call}");
        let offer = ng(
            &client,
            server,
            2 * call,
            &[
                ("command", Value::Bytes(b"offer")),
                ("call-id", Value::Bytes(id.as_bytes())),
                ("from-tag", Value::Bytes(b"a")),
                ("sdp", Value::Bytes(&offer_sdp(a_port))),
            ],
        );
        let to_b = sdp_port(&offer);
        let answer = ng(
            &client,
            server,
            2 * call + 1,
            &[
                ("command", Value::Bytes(b"answer")),
                ("call-id", Value::Bytes(id.as_bytes())),
                ("from-tag", Value::Bytes(b"a")),
                ("to-tag", Value::Bytes(b"b")),
                ("sdp", Value::Bytes(&offer_sdp(b_port))),
            ],
        );
        let to_a = sdp_port(&answer);
        targets.push((to_a, to_b));
    }
    let setup = started.elapsed();
    // Every relay port is distinct: 20,000 endpoints.
    let mut ports: Vec<u16> = targets.iter().flat_map(|(x, y)| [*x, *y]).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 2 * CALLS);
    let fds = open_fds(pid);
    assert!(
        fds < 1000,
        "the endpoints are not in the descriptor table: {fds} descriptors open"
    );

    // Relay one packet per call each way, in chunks small enough for the
    // receiving sockets' buffers; check each arrives at the right peer from
    // the right relay port.
    let mut buf = [0u8; 2048];
    for chunk in (0..CALLS).collect::<Vec<_>>().chunks(200) {
        for (sender, dir_byte, receiver) in [(&a, 1u8, &b), (&b, 2u8, &a)] {
            for &call in chunk {
                let (to_a, to_b) = targets[call];
                let dst = if dir_byte == 1 { to_a } else { to_b };
                sender
                    .send_to(&packet(call as u32, dir_byte), ("127.0.0.1", dst))
                    .unwrap();
            }
            let mut seen = vec![false; chunk.len()];
            for _ in chunk {
                let (n, src) = receiver.recv_from(&mut buf).expect("relayed packet");
                assert_eq!(n, 172);
                assert_eq!(buf[12], dir_byte);
                let call = u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]) as usize;
                let (to_a, to_b) = targets[call];
                assert_eq!(
                    src.port(),
                    if dir_byte == 1 { to_b } else { to_a },
                    "call {call} sent from its own relay port"
                );
                let k = chunk
                    .iter()
                    .position(|c| *c == call)
                    .expect("call in this chunk");
                assert!(!seen[k], "call {call} delivered twice");
                seen[k] = true;
            }
        }
    }
    assert!(open_fds(pid) < 1000);
    eprintln!("10k calls: set up in {setup:?}, {fds} descriptors in the relay process");
    let del = ng(
        &client,
        server,
        3 * CALLS,
        &[
            ("command", Value::Bytes(b"delete")),
            ("call-id", Value::Bytes(b"call-0")),
            ("from-tag", Value::Bytes(b"a")),
        ],
    );
    assert!(String::from_utf8_lossy(&del).contains("6:result2:ok"));
    // Stop politely, then wait until the kernel has released the relay's
    // ports (io_uring tears a ring's file table down after the process exits),
    // so tests that run next find the range free.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    drop(app);
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in ports.iter().step_by(97) {
        while UdpSocket::bind(("127.0.0.1", *port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "relay port {port} still bound a minute after exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
