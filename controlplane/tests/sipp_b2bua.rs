//! rvoip as the SBC (`config/sbc.toml`, B2BUA mode) between real SIPp
//! peers: calls with RTP anchored on the relay, topology hiding checked on
//! the bytes each side receives, failover from a dead primary, a flooding
//! source banned while another source's calls complete, and `kill -9` of the
//! control plane with established calls that keep their media and still end
//! on BYE.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::capture::Capture;
use common::sipp::{control_plane_pid, scenario, sipp, sockets, uas};
use common::{Spawned, free_udp_port, test_config, test_dir};

/// rvoip running `config/sbc.toml` on ports of its own.
struct Sbc {
    app: Spawned,
    access: u16,
    ng: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Sbc {
    /// Starts the SBC with the core trunk's peers at `primary` and
    /// `secondary`, its media on 100 ports from `media_base`, and further
    /// replacements in the configuration.
    fn start(
        name: &str,
        primary: u16,
        secondary: u16,
        media_base: u16,
        extra: &[(&str, String)],
    ) -> Sbc {
        let dir = test_dir(name);
        let access = free_udp_port();
        let ng = free_udp_port();
        let mut replacements = vec![
            ("127.0.0.1:5060", format!("127.0.0.1:{access}")),
            ("127.0.0.1:5062", format!("127.0.0.1:{}", free_udp_port())),
            ("127.0.0.1:5070", format!("127.0.0.1:{primary}")),
            ("127.0.0.1:5072", format!("127.0.0.1:{secondary}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{ng}")),
            ("port_min = 30000", format!("port_min = {media_base}")),
            (
                "port_max = 39999",
                format!("port_max = {}", media_base + 99),
            ),
        ];
        replacements.extend(extra.iter().cloned());
        let config = test_config("sbc.toml", &dir, &replacements);
        let log = dir.join("rvoip.log");
        let app = Spawned::spawn(
            Command::new(env!("CARGO_BIN_EXE_rvoip"))
                .args(["run", "--config"])
                .arg(&config)
                .current_dir(&dir)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file")),
        );
        let s = Sbc {
            app,
            access,
            ng,
            dir,
            log,
        };
        s.wait_ready();
        s
    }

    /// OPTIONS to the access listener until the B2BUA answers 200.
    fn wait_ready(&self) {
        common::wait_options_ok(self.access, || self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.access)
    }

    /// The CDRs written so far.
    fn cdrs(&self) -> Vec<serde_json::Value> {
        common::cdrs(&self.dir)
    }

    /// Waits until `n` CDRs are written.
    fn wait_cdrs(&self, n: usize) -> Vec<serde_json::Value> {
        common::wait_cdrs(&self.dir, n, Duration::from_secs(10), || self.log_text())
    }

    /// The relay's calls, by the ng `list` command.
    fn relay_calls(&self) -> usize {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // A fresh cookie each time: the relay answers a repeated one from
        // its cache.
        let cookie = format!("list-{:?}", Instant::now());
        sock.send_to(
            format!("{} d7:command4:liste", cookie.replace(' ', "")).as_bytes(),
            ("127.0.0.1", self.ng),
        )
        .unwrap();
        let mut buf = [0u8; 65536];
        let (n, _) = sock.recv_from(&mut buf).expect("ng reply");
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(reply.contains("6:result2:ok"), "{reply}");
        reply.matches(":b2b-").count()
    }
}

impl Drop for Sbc {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A SIPp UAS echoing RTP, in `dir`, tracing every message it handles.
fn echo_uas(dir: &Path, port: u16) -> Spawned {
    std::fs::create_dir_all(dir).unwrap();
    let mp = free_udp_port().to_string();
    uas(
        dir,
        port,
        &["-sn", "uas"],
        &["-rtp_echo", "-mp", &mp, "-trace_msg"],
    )
}

/// SIPp UAC arguments on loopback address `ip` playing G.711 audio.
fn pcap_uac_args(ip: &str, target: &str, calls: u32, rate: u32) -> Vec<String> {
    vec![
        "-sf".into(),
        scenario("uac_pcap.xml").to_string_lossy().into_owned(),
        "-i".into(),
        ip.into(),
        "-p".into(),
        free_udp_port().to_string(),
        "-mi".into(),
        ip.into(),
        "-mp".into(),
        free_udp_port().to_string(),
        target.into(),
        "-m".into(),
        calls.to_string(),
        "-r".into(),
        rate.to_string(),
        "-trace_msg".into(),
    ]
}

/// SIPp's built-in uac from 127.0.0.2 through `sbc`: `calls` calls at
/// `rate` per second, with `extra` arguments (transport).
fn builtin_uac(
    sbc: &Sbc,
    name: &str,
    calls: u32,
    rate: u32,
    extra: &[&str],
) -> common::sipp::Stats {
    let port = free_udp_port().to_string();
    let (target, calls, rate) = (sbc.target(), calls.to_string(), rate.to_string());
    let mut args = vec!["-sn", "uac", "-i", "127.0.0.2", "-p", &port, &target];
    args.extend(["-m", &calls, "-r", &rate]);
    args.extend(extra);
    sipp(&sbc.dir, name, &args, Duration::from_secs(90))
}

/// The pcap's G.711 packets per call (`uac_pcap.xml`), and how many of them
/// each receiving peer must get for a call to count as delivered.
const PCAP_PACKETS: usize = 236;
const DELIVERED: usize = PCAP_PACKETS * 97 / 100;

/// RTP packets the relay's ports (`media_base` and its 99 successors)
/// delivered to the caller on 127.0.0.2 and to the called side on
/// 127.0.0.1, as the capture saw them arrive.
fn delivered(cap: &Capture, media_base: u16) -> (usize, usize) {
    let to = |ip: [u8; 4]| {
        cap.count(|d| {
            d.src.ip().octets() == [127, 0, 0, 1]
                && (media_base..media_base + 100).contains(&d.src.port())
                && d.dst.ip().octets() == ip
                && d.len >= 160
        })
    };
    (to([127, 0, 0, 2]), to([127, 0, 0, 1]))
}

fn run_uac(dir: &Path, name: &str, args: &[String], limit: Duration) -> common::sipp::Stats {
    std::fs::create_dir_all(dir).unwrap();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    sipp(dir, name, &refs, limit)
}

/// Everything SIPp logged as received in `dir` (its `-trace_msg` files).
fn received(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with("_messages.log") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for block in text.split("-----------------------------------------------") {
            if block.contains("message received") {
                all.push_str(block);
            }
        }
    }
    all
}

#[test]
fn calls_with_rtp_flow_through_the_relay_and_each_side_sees_only_the_sbc() {
    let uas_port = free_udp_port();
    let sbc = Sbc::start("b2bua-media", uas_port, free_udp_port(), 25000, &[]);
    let uas_dir = sbc.dir.join("uas");
    let _uas = echo_uas(&uas_dir, uas_port);
    let uac_dir = sbc.dir.join("uac");
    let args = pcap_uac_args("127.0.0.2", &sbc.target(), 5, 5);
    let uac_port = args[5].clone();
    let cap = Capture::start();
    let s = run_uac(&uac_dir, "uac-media", &args, Duration::from_secs(60));
    assert_eq!((s.successful, s.failed, s.exit), (5, 0, Some(0)), "{s:?}");

    // Media went through the relay, both ways, for every call: the called
    // side received the caller's audio from the relay's ports, and the
    // caller received the echo from them.
    let (to_caller, to_called) = delivered(&cap, 25000);
    eprintln!("delivered: {to_called} to the called side, {to_caller} to the caller");
    assert!(
        to_called >= 5 * DELIVERED,
        "{to_called} packets reached the UAS"
    );
    assert!(
        to_caller >= 5 * DELIVERED,
        "{to_caller} packets reached the UAC"
    );
    let cdrs = sbc.wait_cdrs(5);
    assert_eq!(cdrs.len(), 5);
    for c in &cdrs {
        assert_eq!(c["end_reason"], "bye-caller", "{c}");
        assert_eq!(c["a_status"], 200, "{c}");
        assert_eq!(c["source"], "127.0.0.2", "{c}");
        assert_eq!(c["peer"], format!("127.0.0.1:{uas_port}"), "{c}");
        assert_ne!(c["a_call_id"], c["b_call_id"], "{c}");
        // The pcap's packets from the caller and as many echoed back.
        let packets = c["media"]["packets"].as_u64().unwrap();
        assert!(packets >= 460, "{c}");
        assert!(c["answer_ms"].as_u64().unwrap() >= c["invite_ms"].as_u64().unwrap());
        assert!(c["duration_ms"].as_u64().unwrap() >= 7_000, "{c}");
    }
    assert_eq!(sbc.relay_calls(), 0, "the relay still holds calls");

    // Topology hiding: the called side received nothing of the caller's
    // addresses, port, Call-IDs or tags ...
    let at_uas = received(&uas_dir);
    assert!(at_uas.matches("INVITE sip:").count() >= 5, "{at_uas}");
    assert!(!at_uas.contains("127.0.0.2"), "{at_uas}");
    assert!(!at_uas.contains(&format!(":{uac_port}")), "{at_uas}");
    for c in &cdrs {
        let a_call_id = c["a_call_id"].as_str().unwrap();
        assert!(!at_uas.contains(a_call_id), "{a_call_id} reached the UAS");
    }
    let uac_log = received(&uac_dir);
    for line in uac_log.lines().filter(|l| l.starts_with("From:")) {
        let tag = line.split("tag=").nth(1).unwrap();
        assert!(!at_uas.contains(tag), "caller tag {tag} reached the UAS");
    }
    // ... and the caller nothing of the called side's.
    assert!(uac_log.contains("SIP/2.0 200 OK"), "{uac_log}");
    assert!(!uac_log.contains(&format!(":{uas_port}")), "{uac_log}");
    for c in &cdrs {
        let b_call_id = c["b_call_id"].as_str().unwrap();
        assert!(!uac_log.contains(b_call_id), "{b_call_id} reached the UAC");
    }
    for line in at_uas.lines().filter(|l| l.starts_with("To:")) {
        if let Some(tag) = line.split("tag=").nth(1) {
            assert!(!uac_log.contains(tag), "callee tag {tag} reached the UAC");
        }
    }
    for h in ["Via:", "Record-Route:", "Contact:"] {
        for line in uac_log.lines().filter(|l| l.starts_with(h)) {
            assert!(!line.contains(&uas_port.to_string()), "{line}");
        }
    }
}

#[test]
fn calls_fail_over_to_the_secondary_when_the_primary_is_down() {
    // The primary's port has nobody behind it.
    let dead = free_udp_port();
    let secondary = free_udp_port();
    let sbc = Sbc::start(
        "b2bua-failover",
        dead,
        secondary,
        25100,
        &[
            (
                "invite_timeout_secs = 3.0",
                "invite_timeout_secs = 1.0".into(),
            ),
            (
                "health_interval_secs = 5.0",
                "health_interval_secs = 1.0".into(),
            ),
        ],
    );
    let _uas = uas(&sbc.dir, secondary, &["-sn", "uas"], &[]);
    let s = builtin_uac(&sbc, "uac-failover", 20, 5, &[]);
    assert_eq!((s.successful, s.failed, s.exit), (20, 0, Some(0)), "{s:?}");
    let cdrs = sbc.wait_cdrs(20);
    let secondary = format!("127.0.0.1:{secondary}");
    assert!(
        cdrs.iter().all(|c| c["peer"] == secondary.as_str()),
        "{cdrs:?}"
    );
    // The first call tried the primary first; once the health checks (or
    // that timeout) marked it down, calls went straight to the secondary.
    assert_eq!(cdrs[0]["attempts"], 2, "{}", cdrs[0]);
    assert!(cdrs.last().is_some_and(|c| c["attempts"] == 1), "{cdrs:?}");
    assert!(sbc.log_text().contains("trunk peer is down"));
}

#[test]
fn a_flooding_source_is_banned_while_another_sources_calls_complete() {
    let uas_port = free_udp_port();
    let sbc = Sbc::start(
        "b2bua-flood",
        uas_port,
        free_udp_port(),
        25200,
        &[
            ("requests_per_sec = 200", "requests_per_sec = 20".into()),
            ("cps_per_source = 0", "cps_per_source = 20".into()),
        ],
    );
    let _uas = uas(&sbc.dir, uas_port, &["-sn", "uas"], &[]);
    let target = sbc.target();
    // 127.0.0.3 sends 200 calls per second: ten times the allowed rate.
    let flood_port = free_udp_port().to_string();
    let _flood = Spawned::spawn(
        Command::new("sipp")
            .args(["-sn", "uac", "-i", "127.0.0.3", "-p", &flood_port, &target])
            .args(["-m", "3000", "-r", "200", "-timeout", "20s", "-nostdin"])
            .current_dir(&sbc.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Once the flood is under way (its source banned) ...
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sbc
        .log_text()
        .contains("flood: source banned source=127.0.0.3")
    {
        assert!(Instant::now() < deadline, "no ban: {}", sbc.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... 127.0.0.2 makes 200 calls at 10 per second.
    let s = builtin_uac(&sbc, "uac-legit", 200, 10, &[]);
    // ≥ 99.9 % of 200 is all of them.
    assert_eq!((s.successful, s.failed, s.exit), (200, 0, Some(0)), "{s:?}");
    // The CDR writer drains its queue every 50 ms.
    let legit_of =
        |cdrs: &[serde_json::Value]| cdrs.iter().filter(|c| c["source"] == "127.0.0.2").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut cdrs = sbc.cdrs();
    while legit_of(&cdrs) < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        cdrs = sbc.cdrs();
    }
    let legit = legit_of(&cdrs);
    let flood = cdrs.iter().filter(|c| c["source"] == "127.0.0.3").count();
    assert_eq!(legit, 200);
    // The flooder got at most its first second's calls before the ban.
    assert!(flood <= 40, "{flood} flood calls were taken");
    drop(_flood);
    let mut sbc = sbc;
    assert!(sbc.app.terminate().is_some_and(|s| s.success()));
    let log = sbc.log_text();
    assert!(
        log.contains("flood: source banned source=127.0.0.3"),
        "{log}"
    );
    assert!(!log.contains("source banned source=127.0.0.2"), "{log}");
}

#[test]
fn two_control_plane_shards_carry_calls_with_media_under_one_trunk_limit() {
    let uas_port = free_udp_port();
    let sbc = Sbc::start(
        "b2bua-shards",
        uas_port,
        free_udp_port(),
        25500,
        &[
            ("[controlplane]", "[controlplane]\nshards = 2".into()),
            ("max_calls = 0", "max_calls = 3".into()),
        ],
    );
    let uas_dir = sbc.dir.join("uas");
    let _uas = echo_uas(&uas_dir, uas_port);
    // Three calls with RTP, up together: the trunk's limit.
    let args = pcap_uac_args("127.0.0.2", &sbc.target(), 3, 3);
    let cap = Capture::start();
    let s = run_uac(
        &sbc.dir.join("uac"),
        "uac-media",
        &args,
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed, s.exit), (3, 0, Some(0)), "{s:?}");
    let (to_caller, to_called) = delivered(&cap, 25500);
    assert!(
        to_called >= 3 * DELIVERED,
        "{to_called} packets reached the UAS"
    );
    assert!(
        to_caller >= 3 * DELIVERED,
        "{to_caller} packets reached the UAC"
    );
    // Each call's other leg has a Call-ID that comes back to its shard.
    let cdrs = sbc.wait_cdrs(3);
    for c in &cdrs {
        let shard = |k: &str| rvoip_dataplane::sip::shard_of(c[k].as_str().unwrap().as_bytes(), 2);
        assert_eq!(shard("a_call_id"), shard("b_call_id"), "{c}");
    }
    // Ten calls of 3 s at once: the limit of 3 holds across both shards
    // (their Call-IDs land on either), the rest get 503.
    let s = builtin_uac(&sbc, "uac-limit", 10, 20, &["-d", "3000"]);
    assert_eq!((s.successful, s.failed), (3, 7), "{s:?}");
    assert_eq!(sbc.relay_calls(), 0, "the relay still holds calls");

    let mut sbc = sbc;
    assert!(sbc.app.terminate().is_some_and(|s| s.success()));
    let log = sbc.log_text();
    assert!(log.contains("shards=2"), "{log}");
    for shard in [0, 1] {
        assert!(
            common::shard_requests(&log, shard) > 0,
            "shard {shard} took no request: {log}"
        );
    }
}

#[test]
fn kill_9_of_the_control_plane_keeps_established_calls_and_their_media() {
    let uas_port = free_udp_port();
    let sbc = Sbc::start("b2bua-kill", uas_port, free_udp_port(), 25300, &[]);
    let _uas = echo_uas(&sbc.dir.join("uas"), uas_port);
    let dataplane = sbc.app.0.id();
    let before = sockets(dataplane);
    let old_cp = control_plane_pid(&sbc.log_text()).expect("control plane pid");

    // Ten calls with audio, each up for 8 s before the caller's BYE.
    let cap = Capture::start();
    let args = pcap_uac_args("127.0.0.2", &sbc.target(), 10, 10);
    let dir = sbc.dir.join("uac");
    let uac = std::thread::spawn(move || run_uac(&dir, "uac-kill", &args, Duration::from_secs(60)));
    // Once all ten are answered and the called side hears each of them,
    // kill the control plane.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let flows: BTreeSet<u16> = cap
            .all()
            .iter()
            .filter(|d| (25300..25400).contains(&d.src.port()) && d.dst.ip().octets()[3] == 1)
            .map(|d| d.src.port())
            .collect();
        if flows.len() == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} calls with audio at the called side",
            flows.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sbc.relay_calls(), 10);
    let killed = Command::new("kill")
        .args(["-KILL", &old_cp.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = sbc.log_text();
        if control_plane_pid(&log).is_some_and(|p| p != old_cp)
            && log.contains("B2BUA ready recovered=10")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovered control plane: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The BYEs reach the restarted control plane, which ends both legs.
    let s = uac.join().unwrap();
    assert_eq!((s.successful, s.failed, s.exit), (10, 0, Some(0)), "{s:?}");
    let cdrs = sbc.wait_cdrs(10);
    for c in &cdrs {
        assert_eq!(c["end_reason"], "bye-caller", "{c}");
    }
    // No audio lost while the control plane was away, in either direction,
    // as each peer received it.
    let (to_caller, to_called) = delivered(&cap, 25300);
    eprintln!("delivered: {to_called} to the called side, {to_caller} to the caller");
    assert!(
        to_called >= 10 * DELIVERED,
        "{to_called} packets reached the UAS"
    );
    assert!(
        to_caller >= 10 * DELIVERED,
        "{to_caller} packets reached the UAC"
    );
    // The relay is free, and the dataplane never closed a socket.
    assert_eq!(sbc.relay_calls(), 0);
    assert!(before.is_subset(&sockets(dataplane)));
}

#[test]
fn tcp_callers_reach_the_udp_core() {
    let uas_port = free_udp_port();
    let sbc = Sbc::start("b2bua-tcp", uas_port, free_udp_port(), 25900, &[]);
    let _uas = uas(&sbc.dir, uas_port, &["-sn", "uas"], &[]);
    let s = builtin_uac(&sbc, "uac-tcp", 20, 10, &["-t", "t1"]);
    assert_eq!((s.successful, s.failed, s.exit), (20, 0, Some(0)), "{s:?}");
    let cdrs = sbc.wait_cdrs(20);
    assert!(
        cdrs.iter().all(|c| c["end_reason"] == "bye-caller"),
        "{cdrs:?}"
    );
}
