//! rvoip as a stateful proxy and registrar between real SIPp peers
//! (`config/proxy.toml`): calls over UDP and TCP, REGISTER with MD5 digest
//! (SIPp) and SHA-256 digest (our own client), calls routed to a registered
//! contact across a restart, CANCEL before the answer, 5% induced loss, and
//! `kill -9` of the control plane during 100 open transactions.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::sipp::{control_plane_pid, scenario, sipp, sockets, uas};
use common::{Spawned, free_udp_port, test_config, test_dir};
use sha2::Digest as _;

/// rvoip running `config/proxy.toml` on ports of its own.
struct Proxy {
    app: Spawned,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Proxy {
    /// Starts rvoip with the next hop of the static route at `route_to`, and
    /// waits until its control plane answers.
    fn start(name: &str, route_to: u16) -> Proxy {
        Self::start_with(name, route_to, &[])
    }

    /// As `start`, with further replacements in the configuration.
    fn start_with(name: &str, route_to: u16, extra: &[(&str, String)]) -> Proxy {
        let dir = test_dir(name);
        let port = free_udp_port();
        let mut replacements = vec![
            ("127.0.0.1:5060", format!("127.0.0.1:{port}")),
            ("127.0.0.1:5070", format!("127.0.0.1:{route_to}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
        ];
        replacements.extend(extra.iter().cloned());
        let config = test_config("proxy.toml", &dir, &replacements);
        Self::launch(dir, port, config)
    }

    fn launch(dir: PathBuf, port: u16, config: PathBuf) -> Proxy {
        let log = dir.join("rvoip.log");
        let app = Spawned::spawn(
            Command::new(env!("CARGO_BIN_EXE_rvoip"))
                .args(["run", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file")),
        );
        let p = Proxy {
            app,
            port,
            dir,
            config,
            log,
        };
        p.wait_ready();
        p
    }

    /// Stops (SIGTERM) and starts again on the same configuration and state.
    fn restart(&mut self) {
        assert!(self.app.terminate().is_some_and(|s| s.success()));
        // The listeners of the old process are released asynchronously.
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} not released", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log = self.dir.join("rvoip-restarted.log");
        self.app = Spawned::spawn(
            Command::new(env!("CARGO_BIN_EXE_rvoip"))
                .args(["run", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&self.log).expect("log file")),
        );
        self.wait_ready();
    }

    /// OPTIONS to the proxy until it answers 200 (within 15 s).
    fn wait_ready(&self) {
        common::wait_options_ok(self.port, || self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn udp_calls_flow_through_the_proxy() {
    let uas_port = free_udp_port();
    let proxy = Proxy::start("sipp-udp", uas_port);
    let _uas = uas(&proxy.dir, uas_port, &["-sn", "uas"], &[]);
    let port = free_udp_port().to_string();
    let target = proxy.target();
    let s = sipp(
        &proxy.dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "200",
            "-r",
            "100",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed, s.exit), (200, 0, Some(0)), "{s:?}");
}

#[test]
fn calls_flow_through_the_stateless_proxy() {
    let uas_port = free_udp_port();
    let proxy = Proxy::start_with(
        "sipp-stateless",
        uas_port,
        &[("stateful = true", "stateful = false".into())],
    );
    let _uas = uas(&proxy.dir, uas_port, &["-sn", "uas"], &[]);
    let port = free_udp_port().to_string();
    let target = proxy.target();
    let s = sipp(
        &proxy.dir,
        "uac-stateless",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "100",
            "-r",
            "50",
            "-trace_msg",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed, s.exit), (100, 0, Some(0)), "{s:?}");
    // The built-in UAS sends no 100 Trying, and a stateless proxy makes none
    // (RFC 3261 §16.11): the UAC saw 180 and 200 only.
    let log = std::fs::read_dir(&proxy.dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("uac_") && n.ends_with("_messages.log"))
        })
        .expect("SIPp message trace");
    let trace = std::fs::read_to_string(log).unwrap();
    assert_eq!(trace.matches("\nSIP/2.0 180 Ringing").count(), 100);
    assert!(!trace.contains("SIP/2.0 100 "), "a 100 Trying came back");
}

#[test]
fn tcp_calls_flow_through_the_proxy() {
    let uas_port = free_udp_port();
    let proxy = Proxy::start("sipp-tcp", uas_port);
    let _uas = uas(&proxy.dir, uas_port, &["-sn", "uas"], &[]);
    let port = free_udp_port().to_string();
    let target = proxy.target();
    // One TCP connection from SIPp carries every call; the proxy reuses it
    // for the responses and forwards over UDP to the UAS.
    let s = sipp(
        &proxy.dir,
        "uac-tcp",
        &[
            "-sn",
            "uac",
            "-t",
            "t1",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "100",
            "-r",
            "50",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed, s.exit), (100, 0, Some(0)), "{s:?}");
}

#[test]
fn sipp_registers_with_md5_digest_and_a_wrong_password_fails() {
    let proxy = Proxy::start("sipp-reg", free_udp_port());
    let target = proxy.target();
    let register = scenario("register_digest.xml");
    let register = register.to_str().unwrap();
    let port = free_udp_port().to_string();
    let s = sipp(
        &proxy.dir,
        "register",
        &[
            "-sf",
            register,
            "-s",
            "alice",
            "-au",
            "alice",
            "-ap",
            "alicepw",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "300",
            "-r",
            "150",
        ],
        Duration::from_secs(60),
    );
    // Many challenges fall in the same millisecond at this rate: each still
    // gets a nonce of its own.
    assert_eq!((s.successful, s.failed, s.exit), (300, 0, Some(0)), "{s:?}");

    let port = free_udp_port().to_string();
    let s = sipp(
        &proxy.dir,
        "register-bad",
        &[
            "-sf",
            register,
            "-s",
            "alice",
            "-au",
            "alice",
            "-ap",
            "wrong",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "3",
            "-r",
            "10",
            "-recv_timeout",
            "2000",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed), (0, 3), "{s:?}");
}

/// One UDP request/response exchange.
fn exchange(sock: &UdpSocket, to: &str, msg: &str) -> String {
    sock.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = [0u8; 8192];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a response");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        // Skip provisional responses.
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

fn register_request(from: &str, contact: &str, cseq: u32, auth: Option<&str>) -> String {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-sha-{cseq}\r\n\
From: <sip:bob@rvoip.test>;tag=sha\r\nTo: <sip:bob@rvoip.test>\r\nCall-ID: sha256-client@{from}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: 3600\r\nMax-Forwards: 70\r\n{auth}\
Content-Length: 0\r\n\r\n"
    )
}

/// The parameters of the `WWW-Authenticate` challenge with `algorithm`.
fn challenge(response: &str, algorithm: &str) -> HashMap<String, String> {
    let line = response
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .find(|l| l.contains(&format!("algorithm={algorithm}")))
        .unwrap_or_else(|| panic!("no {algorithm} challenge in {response}"));
    let params = line.split_once("Digest ").expect("Digest challenge").1;
    params
        .split(',')
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

fn sha256_hex(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 7616 §3.4.1 with qop=auth, computed here independently of rvoip.
fn sha256_authorization(c: &HashMap<String, String>, uri: &str, nc: u32, cnonce: &str) -> String {
    let (realm, nonce) = (&c["realm"], &c["nonce"]);
    let ha1 = sha256_hex(&format!("bob:{realm}:bobpw"));
    let ha2 = sha256_hex(&format!("REGISTER:{uri}"));
    let response = sha256_hex(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"bob\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
response=\"{response}\", algorithm=SHA-256, qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\""
    )
}

#[test]
fn sha256_registration_routes_calls_to_the_contact_across_a_restart() {
    // The static route leads nowhere: calls to bob reach the UAS only
    // through the registration.
    let dead = free_udp_port();
    // SHA-256 is challenged only where the operator asks for it.
    let proxy = Proxy::start_with(
        "sipp-sha",
        dead,
        &[(
            "digest_algorithms = [\"MD5\"]",
            "digest_algorithms = [\"SHA-256\", \"MD5\"]".to_string(),
        )],
    );
    let uas_port = free_udp_port();
    let target = proxy.target();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap().to_string();
    let contact = format!("sip:bob@127.0.0.1:{uas_port}");
    let first = exchange(&sock, &target, &register_request(&me, &contact, 1, None));
    assert!(first.starts_with("SIP/2.0 401 "), "{first}");
    // Both algorithms are offered (RFC 8760 §2.4).
    challenge(&first, "MD5");
    let c = challenge(&first, "SHA-256");
    assert_eq!(c["realm"], "rvoip.test");

    let auth = sha256_authorization(&c, "sip:rvoip.test", 1, "0a4f113b");
    let ok = exchange(
        &sock,
        &target,
        &register_request(&me, &contact, 2, Some(&auth)),
    );
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(ok.contains(&format!("<{contact}>;expires=3600")), "{ok}");

    // The same nonce count again is a replay: challenged, not accepted.
    let replay = exchange(
        &sock,
        &target,
        &register_request(&me, &contact, 3, Some(&auth)),
    );
    assert!(replay.starts_with("SIP/2.0 401 "), "{replay}");
    // A wrong password is challenged again.
    let wrong = sha256_authorization(&c, "sip:rvoip.test", 2, "0a4f113b")
        .replace("response=\"", "response=\"0");
    let wrong = exchange(
        &sock,
        &target,
        &register_request(&me, &contact, 4, Some(&wrong)),
    );
    assert!(wrong.starts_with("SIP/2.0 401 "), "{wrong}");

    let _uas = uas(&proxy.dir, uas_port, &["-sn", "uas"], &[]);
    let call = |proxy: &Proxy, name: &str| {
        let port = free_udp_port().to_string();
        let target = proxy.target();
        sipp(
            &proxy.dir,
            name,
            &[
                "-sn",
                "uac",
                "-s",
                "bob",
                "-i",
                "127.0.0.1",
                "-p",
                &port,
                &target,
                "-m",
                "20",
                "-r",
                "20",
            ],
            Duration::from_secs(60),
        )
    };
    let s = call(&proxy, "call-bob");
    assert_eq!((s.successful, s.failed), (20, 0), "{s:?}");

    // The registration is in the location store: it outlives a restart.
    let mut proxy = proxy;
    proxy.restart();
    assert!(
        proxy.log_text().contains("registrations=1"),
        "{}",
        proxy.log_text()
    );
    let s = call(&proxy, "call-bob-after-restart");
    assert_eq!((s.successful, s.failed), (20, 0), "{s:?}");
}

#[test]
fn two_control_plane_shards_split_the_calls_and_share_the_registrar() {
    let dead = free_udp_port();
    let proxy = Proxy::start_with(
        "sipp-shards",
        dead,
        &[
            (
                "digest_algorithms = [\"MD5\"]",
                "digest_algorithms = [\"SHA-256\"]".to_string(),
            ),
            ("shards = 1", "shards = 2".to_string()),
        ],
    );
    let uas_port = free_udp_port();
    let target = proxy.target();
    // bob registers on the shard his REGISTER's Call-ID names...
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap().to_string();
    let contact = format!("sip:bob@127.0.0.1:{uas_port}");
    let first = exchange(&sock, &target, &register_request(&me, &contact, 1, None));
    let c = challenge(&first, "SHA-256");
    let auth = sha256_authorization(&c, "sip:rvoip.test", 1, "5d1e");
    let ok = exchange(
        &sock,
        &target,
        &register_request(&me, &contact, 2, Some(&auth)),
    );
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    // ... and calls to him, their Call-IDs spread over both shards, all
    // find the binding (the static route leads nowhere).
    let _uas = uas(&proxy.dir, uas_port, &["-sn", "uas"], &[]);
    let port = free_udp_port().to_string();
    let s = sipp(
        &proxy.dir,
        "call-bob",
        &[
            "-sn",
            "uac",
            "-s",
            "bob",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "200",
            "-r",
            "100",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed), (200, 0), "{s:?}");
    // A ctl request for every shard is answered once, merged.
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["ctl", "--config"])
        .arg(&proxy.config)
        .args(["reload", "--json"])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && reply.contains("\"ok\":true"),
        "{reply} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut proxy = proxy;
    assert!(proxy.app.terminate().is_some_and(|s| s.success()));
    let log = proxy.log_text();
    assert!(log.contains("shards=2"), "{log}");
    // Each shard carried a share of the 200 calls (INVITE, ACK, BYE each).
    for shard in [0, 1] {
        let requests = common::shard_requests(&log, shard);
        assert!(
            requests >= 150,
            "shard {shard} took {requests} of 600 requests"
        );
    }
}

#[test]
fn cancel_before_the_answer_ends_both_legs() {
    let uas_port = free_udp_port();
    let proxy = Proxy::start("sipp-cancel", uas_port);
    let uas_xml = scenario("uas_cancel.xml");
    let _uas = uas(
        &proxy.dir,
        uas_port,
        &["-sf", uas_xml.to_str().unwrap()],
        &[],
    );
    let port = free_udp_port().to_string();
    let target = proxy.target();
    let uac_xml = scenario("uac_cancel.xml");
    // uac_cancel expects 180, then 200 for its CANCEL, 487 for its INVITE;
    // uas_cancel only finishes when the proxy's ACK for its 487 arrives.
    let s = sipp(
        &proxy.dir,
        "cancel",
        &[
            "-sf",
            uac_xml.to_str().unwrap(),
            "-s",
            "bob",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "30",
            "-r",
            "30",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed, s.exit), (30, 0, Some(0)), "{s:?}");
}

/// A UDP shim between the proxy and the UAS that drops `percent` of what
/// the proxy sends (a seeded sequence, so a run is repeatable) and passes
/// the UAS's answers back to whoever sent to it last. Responses are not
/// dropped on this leg: SIPp as a UAS aborts a call when the proxy
/// retransmits an INVITE whose 180 and 200 were lost, which RFC 3261 does
/// not allow but is not what this test is about (the UAC's side drops both
/// ways). Returns its port and the (dropped, forwarded) counts.
fn lossy_shim(uas: u16, percent: u64) -> (u16, Arc<(AtomicU64, AtomicU64)>) {
    let front = UdpSocket::bind("127.0.0.1:0").expect("shim");
    let back = UdpSocket::bind("127.0.0.1:0").expect("shim");
    back.connect(("127.0.0.1", uas)).expect("shim connect");
    // The forwarding threads end after a quiet spell longer than any test.
    for s in [&front, &back] {
        s.set_read_timeout(Some(Duration::from_secs(150)))
            .expect("timeout");
    }
    let port = front.local_addr().expect("addr").port();
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let peer = Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
    let drop_it = move |state: &mut u64| {
        // xorshift64* from a fixed seed.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % 100 < percent
    };
    {
        let (front, back, counts, peer) = (
            front.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
            Arc::clone(&counts),
            Arc::clone(&peer),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                *peer.lock().expect("peer") = Some(from);
                if drop_it(&mut rng) {
                    counts.0.fetch_add(1, Ordering::Relaxed);
                } else if back.send(&buf[..n]).is_ok() {
                    counts.1.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    {
        let counts = Arc::clone(&counts);
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = back.recv(&mut buf) {
                let to = *peer.lock().expect("peer");
                if let Some(to) = to
                    && front.send_to(&buf[..n], to).is_ok()
                {
                    counts.1.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    (port, counts)
}

#[test]
fn calls_complete_under_five_percent_loss() {
    let uas_port = free_udp_port();
    // Proxy → UAS through a shim that drops 5%; UAC ↔ proxy lossy both ways
    // through SIPp's own -lost on the UAC (its sends and its receives).
    let (shim_port, shim) = lossy_shim(uas_port, 5);
    let proxy = Proxy::start("sipp-loss", shim_port);
    let uas_xml = scenario("uas_lossy.xml");
    let _uas = uas(
        &proxy.dir,
        uas_port,
        &["-sf", uas_xml.to_str().unwrap()],
        &[],
    );
    let port = free_udp_port().to_string();
    let target = proxy.target();
    // The proxy's transactions retransmit towards the UAS and absorb and
    // answer the UAC's retransmissions.
    let s = sipp(
        &proxy.dir,
        "uac-lossy",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            &target,
            "-m",
            "200",
            "-r",
            "50",
            "-lost",
            "5",
        ],
        Duration::from_secs(120),
    );
    let (dropped, forwarded) = (
        shim.0.load(Ordering::Relaxed),
        shim.1.load(Ordering::Relaxed),
    );
    assert_eq!(
        (s.successful, s.failed),
        (200, 0),
        "{s:?}, shim dropped {dropped} of {}",
        dropped + forwarded
    );
    assert!(
        s.retransmissions > 0 && dropped > 0,
        "loss caused no retransmission: {s:?}, shim dropped {dropped}"
    );
}

/// The control-plane child of `rvoip run` (`pid=` of the last "control
/// plane started" line).
#[test]
fn control_plane_kill_9_during_100_transactions_loses_no_call() {
    let uas_port = free_udp_port();
    let mut proxy = Proxy::start("sipp-kill", uas_port);
    let slow = scenario("uas_slow.xml");
    let uas_stats = proxy.dir.join("uas-slow.csv");
    let _uas = uas(
        &proxy.dir,
        uas_port,
        &["-sf", slow.to_str().unwrap()],
        &[
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
            uas_stats.to_str().unwrap(),
        ],
    );
    let dataplane = proxy.app.0.id();
    let before = sockets(dataplane);
    assert!(!before.is_empty());
    let old_cp = control_plane_pid(&proxy.log_text()).expect("control plane pid");

    // 100 calls within half a second; the UAS rings 4 s before answering, so
    // all 100 INVITE transactions are open when the control plane dies.
    let port = free_udp_port().to_string();
    let target = proxy.target();
    let dir = proxy.dir.clone();
    let uac = std::thread::spawn(move || {
        sipp(
            &dir,
            "uac-kill",
            &[
                "-sn",
                "uac",
                "-i",
                "127.0.0.1",
                "-p",
                &port,
                &target,
                "-m",
                "100",
                "-r",
                "200",
            ],
            Duration::from_secs(90),
        )
    });
    // Killed once the UAS has all 100 INVITEs (its statistics, written
    // each second), while it still rings: every transaction is open.
    let placed = Instant::now();
    let deadline = placed + Duration::from_secs(10);
    while common::sipp::stat(&uas_stats, "IncomingCall(C)") != Some(100) {
        assert!(Instant::now() < deadline, "the UAS did not get 100 INVITEs");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        placed.elapsed() < Duration::from_millis(3500),
        "the INVITEs took {:?} to arrive: answers may have begun (the UAS rings 4 s)",
        placed.elapsed()
    );
    let killed = Command::new("kill")
        .args(["-KILL", &old_cp.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // The supervisor starts a new control plane, which re-attaches.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = proxy.log_text();
        if control_plane_pid(&log).is_some_and(|p| p != old_cp)
            && log.matches("control plane attached").count() >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restarted control plane: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = uac.join().unwrap();
    assert_eq!((s.successful, s.failed, s.exit), (100, 0, Some(0)), "{s:?}");

    // The dataplane process never stopped and never closed a socket.
    assert!(proxy.app.0.try_wait().unwrap().is_none());
    let after = sockets(dataplane);
    assert!(
        before.is_subset(&after),
        "sockets closed: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    // And the new control plane keeps answering.
    proxy.wait_ready();
}
