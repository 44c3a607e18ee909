//! `rvoip ctl` against `config/sbc.toml` running with real peers (SIPp
//! callers playing G.711 audio, a SIPp UAS echoing it): live calls with
//! their media so far, an operator's hang-up, a reload with calls up (a
//! trunk moved to another peer: new calls go there, the calls up stay), a
//! reload refused for what cannot change live, the log level changed at
//! run time (JSON lines), and a drain with calls up (none dropped, new
//! calls and OPTIONS refused, the appliance gone once they ended).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::sipp::{Stats, scenario, sipp, uas};
use common::{Spawned, appliance, free_udp_port, test_config, test_dir};
use serde_json::Value;

/// An SBC of `config/sbc.toml` in its own directory.
struct Sbc {
    dir: PathBuf,
    config: PathBuf,
    access: u16,
    core: u16,
    app: Spawned,
}

impl Sbc {
    fn start(name: &str, media_base: u16, extra: &[(&str, String)]) -> Sbc {
        let dir = test_dir(name);
        let (access, core) = (free_udp_port(), free_udp_port());
        let mut replacements = common::sbc_ports(access, free_udp_port(), core, media_base);
        replacements.extend(extra.iter().cloned());
        let config = test_config("sbc.toml", &dir, &replacements);
        let app = appliance(&dir, &config, access);
        Sbc {
            dir,
            config,
            access,
            core,
            app,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rvoip.log")).unwrap_or_default()
    }

    /// `rvoip ctl --config … ARGS --json`: exit status and answer.
    fn ctl(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .arg("ctl")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "ctl {args:?}: {e}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    /// A SIPp caller from `ip` playing the G.711 pcap in `calls` calls.
    fn callers(&self, ip: &str, name: &str, calls: u32) -> thread::JoinHandle<Stats> {
        let (dir, target) = (self.dir.clone(), format!("127.0.0.1:{}", self.access));
        let (ip, name) = (ip.to_string(), name.to_string());
        thread::spawn(move || {
            let (port, media) = (free_udp_port().to_string(), free_udp_port().to_string());
            let pcap = scenario("uac_pcap.xml");
            let n = calls.to_string();
            sipp(
                &dir,
                &name,
                &[
                    "-sf",
                    pcap.to_str().unwrap(),
                    "-i",
                    &ip,
                    "-p",
                    &port,
                    "-mi",
                    &ip,
                    "-mp",
                    &media,
                    &target,
                    "-m",
                    &n,
                    "-r",
                    &n,
                ],
                Duration::from_secs(60),
            )
        })
    }

    /// Waits until `n` calls are up, as ctl shows them.
    fn wait_calls_up(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, v) = self.ctl(&["calls"]);
            assert_eq!(status, 0, "{v}");
            let calls = v["calls"].as_array().cloned().unwrap_or_default();
            if calls.iter().filter(|c| c["state"] == "up").count() >= n {
                return calls;
            }
            assert!(Instant::now() < deadline, "{n} calls never up: {v}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A SIPp UAS echoing RTP on 127.0.0.1:`port`, in `dir`.
fn echo_uas(dir: &Path, port: u16) -> Spawned {
    std::fs::create_dir_all(dir).unwrap();
    let mp = free_udp_port().to_string();
    uas(dir, port, &["-sn", "uas"], &["-rtp_echo", "-mp", &mp])
}

#[test]
fn ctl_lists_live_calls_with_their_media_and_hangs_one_up() {
    let sbc = Sbc::start("ctl-calls", 26700, &[]);
    let _uas = echo_uas(&sbc.dir.join("uas"), sbc.core);
    let callers = sbc.callers("127.0.0.2", "uac", 2);
    sbc.wait_calls_up(2);
    // Audio both ways: more than half a second's worth of packets from
    // each side of each call (on a loaded host the callers' audio may
    // start late, so this waits for it rather than for a fixed time).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (status, v) = loop {
        let (status, v) = sbc.ctl(&["calls"]);
        let flowing = v["calls"].as_array().is_some_and(|calls| {
            calls.len() == 2
                && calls.iter().all(|c| {
                    c["packets_from_a"].as_u64().unwrap_or(0) > 25
                        && c["packets_from_b"].as_u64().unwrap_or(0) > 25
                })
        });
        if flowing || std::time::Instant::now() >= deadline {
            break (status, v);
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 0, "{v}");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{v}");
    for c in calls {
        assert_eq!(c["realm"], "access", "{c}");
        assert_eq!(c["trunk"], "core", "{c}");
        assert_eq!(c["peer"], format!("127.0.0.1:{}", sbc.core), "{c}");
        assert_eq!(c["state"], "up", "{c}");
        assert!(
            c["a_call_id"].as_str().unwrap().ends_with("@127.0.0.2"),
            "{c}"
        );
        assert!(!c["b_call_id"].as_str().unwrap().is_empty(), "{c}");
        assert_ne!(c["a_call_id"], c["b_call_id"]);
        assert!(c["start_ms"].as_u64().unwrap() > 1_700_000_000_000, "{c}");
        // SIPp's pcap is A-law; its UAS answers μ-law.
        assert_eq!(c["codecs"][0], "PCMA/8000", "{c}");
        assert_eq!(c["codecs"][1], "PCMU/8000", "{c}");
        // 20 ms packets: more than 25 in a second each way.
        assert!(c["packets_from_a"].as_u64().unwrap() > 25, "{c}");
        assert!(c["packets_from_b"].as_u64().unwrap() > 25, "{c}");
    }
    // One call, by the called leg's Call-ID.
    let b_id = calls[0]["b_call_id"].as_str().unwrap().to_string();
    let (status, one) = sbc.ctl(&["call", &b_id]);
    assert_eq!(status, 0, "{one}");
    assert_eq!(one["call"]["a_call_id"], calls[0]["a_call_id"]);
    let (status, none) = sbc.ctl(&["call", "no-such-call"]);
    assert_eq!(status, 1);
    assert!(
        none["error"].as_str().unwrap().contains("no-such-call"),
        "{none}"
    );
    // The operator ends the first call: BYE to both sides.
    let a_id = calls[0]["a_call_id"].as_str().unwrap().to_string();
    let (status, hung) = sbc.ctl(&["hangup", &a_id]);
    assert_eq!(status, 0, "{hung}");
    let s = callers.join().unwrap();
    // The caller whose call was ended got a BYE it did not expect; the
    // other call ran to its end.
    assert_eq!((s.successful, s.failed), (1, 1), "{s:?}");
    let cdrs = common::wait_cdrs(&sbc.dir, 2, Duration::from_secs(10), || sbc.log());
    let ended = cdrs
        .iter()
        .find(|c| c["a_call_id"] == a_id.as_str())
        .unwrap();
    assert_eq!(ended["end_reason"], "hangup-operator", "{ended}");
    let (status, v) = sbc.ctl(&["calls"]);
    assert_eq!((status, v["calls"].as_array().map(Vec::len)), (0, Some(0)));
}

#[test]
fn ctl_capture_writes_both_legs_sip_and_rtp_of_one_call_to_a_pcap() {
    let sbc = Sbc::start("ctl-capture", 27100, &[]);
    let _uas = echo_uas(&sbc.dir.join("uas"), sbc.core);
    let callers = sbc.callers("127.0.0.2", "uac", 1);
    let calls = sbc.wait_calls_up(1);
    let (a_id, b_id) = (
        calls[0]["a_call_id"].as_str().unwrap().to_string(),
        calls[0]["b_call_id"].as_str().unwrap().to_string(),
    );
    let (status, none) = sbc.ctl(&["capture", "no-such-call"]);
    assert_eq!(status, 1, "{none}");
    let (status, v) = sbc.ctl(&["capture", &b_id]);
    assert_eq!(status, 0, "{v}");
    assert_eq!(v["media"], true, "{v}");
    assert_eq!(v["call_ids"], serde_json::json!([a_id, b_id]), "{v}");
    let pcap = PathBuf::from(v["file"].as_str().unwrap());
    assert!(pcap.starts_with(sbc.dir.join("state/captures")), "{v}");
    // The call runs to its end (the caller's BYE); the capture ends a
    // moment after it.
    let s = callers.join().unwrap();
    assert_eq!((s.successful, s.failed), (1, 0), "{s:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sbc.log().contains("capture ended") {
        assert!(Instant::now() < deadline, "the capture never ended");
        thread::sleep(Duration::from_millis(100));
    }
    let (access, core) = (sbc.access.to_string(), sbc.core.to_string());
    let (text, rows) = common::tshark_fields(
        &pcap,
        &[
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ],
        &[
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "sip.Method",
            "sip.Status-Code",
            "sip.Call-ID",
            "rtp.p_type",
            "ip.checksum.status",
            "udp.checksum.status",
        ],
    );
    // Checksums as the kernel writes them, on every record.
    assert!(
        rows.iter().all(|r| r[8] == "1" && r[9] == "1"),
        "a bad checksum: {text}"
    );
    // Both legs' BYE and its 200, each from and to the right addresses.
    let sip = |method: &str, status: &str, id: &str, from_port: &str| {
        rows.iter()
            .filter(|r| r[4] == method && r[5] == status && r[6] == id && r[1] == from_port)
            .count()
    };
    assert_eq!(sip("BYE", "", &a_id, ""), 0);
    let caller_port = rows
        .iter()
        .find(|r| r[4] == "BYE" && r[6] == a_id)
        .map(|r| r[1].to_string())
        .unwrap_or_else(|| panic!("no BYE of the caller's leg: {text}"));
    assert_eq!(sip("BYE", "", &a_id, &caller_port), 1, "{text}");
    assert_eq!(sip("", "200", &a_id, &access), 1, "{text}");
    let core_listener = rows
        .iter()
        .find(|r| r[4] == "BYE" && r[6] == b_id)
        .map(|r| r[1].to_string())
        .unwrap_or_else(|| panic!("no BYE of the called leg: {text}"));
    assert!(
        rows.iter()
            .any(|r| r[4] == "BYE" && r[6] == b_id && r[3] == core),
        "{text}"
    );
    assert_eq!(sip("", "200", &b_id, &core), 1, "{text}");
    assert_ne!(core_listener, access);
    // RTP each way on each leg: caller -> relay -> UAS (echoed) -> relay
    // -> caller, 20 ms packets for seconds.
    let media = |r: &&Vec<String>| (27_100..27_300).contains(&r[1].parse::<u32>().unwrap_or(0));
    let to_media = |r: &&Vec<String>| (27_100..27_300).contains(&r[3].parse::<u32>().unwrap_or(0));
    let rtp: Vec<&Vec<String>> = rows.iter().filter(|r| !r[7].is_empty()).collect();
    let from_caller = rtp
        .iter()
        .filter(|r| r[0] == "127.0.0.2" && to_media(r))
        .count();
    let to_caller = rtp
        .iter()
        .filter(|r| r[2] == "127.0.0.2" && media(r))
        .count();
    let to_uas = rtp
        .iter()
        .filter(|r| r[2] == "127.0.0.1" && media(r))
        .count();
    let from_uas = rtp
        .iter()
        .filter(|r| r[0] == "127.0.0.1" && !media(r) && to_media(r))
        .count();
    for (what, n) in [
        ("caller to relay", from_caller),
        ("relay to UAS", to_uas),
        ("UAS to relay", from_uas),
        ("relay to caller", to_caller),
    ] {
        assert!(n > 100, "{what}: {n} RTP packets\n{text}");
    }
}

#[test]
fn a_reload_with_calls_up_moves_a_trunk_and_refuses_what_cannot_change_live() {
    let sbc = Sbc::start(
        "ctl-reload",
        26800,
        &[(
            "level = \"info\"",
            "level = \"info\"\nformat = \"json\"".into(),
        )],
    );
    let _uas = echo_uas(&sbc.dir.join("uas"), sbc.core);
    let callers = sbc.callers("127.0.0.2", "uac-before", 2);
    sbc.wait_calls_up(2);
    // The trunk's first peer moves to another UAS.
    let moved = free_udp_port();
    let _uas2 = echo_uas(&sbc.dir.join("uas2"), moved);
    let text = std::fs::read_to_string(&sbc.config).unwrap();
    let old_peer = format!("127.0.0.1:{}", sbc.core);
    assert!(text.contains(&old_peer));
    std::fs::write(
        &sbc.config,
        text.replace(&old_peer, &format!("127.0.0.1:{moved}")),
    )
    .unwrap();
    let (status, v) = sbc.ctl(&["reload"]);
    assert_eq!(status, 0, "{v}");
    assert!(
        v["reloaded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "trunks"),
        "{v}"
    );
    // A new call goes to the moved peer ...
    let after = sbc.callers("127.0.0.3", "uac-after", 1).join().unwrap();
    assert_eq!((after.successful, after.failed), (1, 0), "{after:?}");
    // ... and the calls that were up ran to their end.
    let before = callers.join().unwrap();
    assert_eq!((before.successful, before.failed), (2, 0), "{before:?}");
    let cdrs = common::wait_cdrs(&sbc.dir, 3, Duration::from_secs(10), || sbc.log());
    let peers: Vec<(&str, &str)> = cdrs
        .iter()
        .map(|c| (c["source"].as_str().unwrap(), c["peer"].as_str().unwrap()))
        .collect();
    let moved_peer = format!("127.0.0.1:{moved}");
    assert!(
        peers.contains(&("127.0.0.3", moved_peer.as_str())),
        "{peers:?}"
    );
    assert_eq!(
        peers.iter().filter(|p| p.1 == old_peer.as_str()).count(),
        2,
        "{peers:?}"
    );
    assert!(
        cdrs.iter().all(|c| c["end_reason"] == "bye-caller"),
        "{cdrs:?}"
    );
    // What the dataplane has bound cannot change live: refused, named,
    // and nothing else changed.
    let text = std::fs::read_to_string(&sbc.config).unwrap();
    let access = format!("\"127.0.0.1:{}\"", sbc.access);
    assert!(text.contains(&access));
    std::fs::write(
        &sbc.config,
        text.replacen(&access, &format!("\"127.0.0.1:{}\"", free_udp_port()), 1),
    )
    .unwrap();
    let (status, v) = sbc.ctl(&["reload"]);
    assert_eq!(status, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("sip") && e.contains("restart"), "{e}");
    // The log level changes at run time: a call's debug lines appear,
    // as JSON, with its Call-ID.
    std::fs::write(&sbc.config, text).unwrap();
    let (status, v) = sbc.ctl(&["log-level", "info,rvoip_controlplane::b2bua=debug"]);
    assert_eq!(status, 0, "{v}");
    let s = sbc.callers("127.0.0.3", "uac-debug", 1).join().unwrap();
    assert_eq!(s.successful, 1, "{s:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = sbc
            .log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
            .collect();
        let admitted = lines.iter().find(|l| {
            l["message"] == "call admitted"
                && l["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("127.0.0.3"))
        });
        if let Some(l) = admitted {
            assert_eq!(l["level"], "DEBUG", "{l}");
            assert!(
                l["call_id"]
                    .as_str()
                    .is_some_and(|c| c.ends_with("@127.0.0.3")),
                "{l}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no debug line for the call: {}",
            sbc.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_drain_with_calls_up_drops_none_refuses_new_ones_and_then_stops() {
    let mut sbc = Sbc::start("ctl-drain", 26900, &[]);
    let _uas = echo_uas(&sbc.dir.join("uas"), sbc.core);
    let callers = sbc.callers("127.0.0.2", "uac", 2);
    sbc.wait_calls_up(2);
    let (status, v) = sbc.ctl(&["drain"]);
    assert_eq!(status, 0, "{v}");
    assert_eq!(v["calls"], 2, "{v}");
    // A new call is refused with 503 while the calls up go on.
    let refused = sipp(
        &sbc.dir,
        "uac-new",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.3",
            "-p",
            &free_udp_port().to_string(),
            &format!("127.0.0.1:{}", sbc.access),
            "-m",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert_eq!((refused.successful, refused.failed), (0, 1), "{refused:?}");
    assert!(sbc.log().contains("draining: this node takes no new calls"));
    let s = callers.join().unwrap();
    assert_eq!((s.successful, s.failed), (2, 0), "{s:?}");
    // Once they ended the whole appliance stops by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = sbc.app.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still running: {}", sbc.log());
        thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", sbc.log());
    let cdrs = common::cdrs(&sbc.dir);
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    assert!(
        cdrs.iter().all(|c| c["end_reason"] == "bye-caller"),
        "{cdrs:?}"
    );
    // Nothing answers on the control socket any more.
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["ctl", "--config"])
        .arg(&sbc.config)
        .arg("calls")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(69));
}
