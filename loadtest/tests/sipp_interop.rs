//! rvoip-loadtest against other SIP implementations: SIPp (Debian
//! `sip-tester`) as UAS (with RTP echoed back), as UAC, and as a digest
//! registrar; and through Kamailio 5.6 as a transaction-stateful,
//! record-routing proxy. Small, bounded runs.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    unsafe_code
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::free_port;

fn dir(name: &str) -> PathBuf {
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn report(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON report")
}

#[test]
fn the_uac_calls_sipp_and_measures_the_echoed_rtp() {
    let d = dir("lt-uac-sipp");
    let port = free_port();
    let _uas = Killed(
        Command::new("sipp")
            .args([
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-rtp_echo",
                "-nostdin",
            ])
            .current_dir(&d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (install sip-tester)"),
    );
    common::wait_udp_bound(port);
    let json = d.join("report.json");
    let mut uac = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["uac", "--target", &format!("127.0.0.1:{port}")])
        .args([
            "--rate", "20", "--calls", "40", "--hold", "1s", "--media", "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::null())
        .spawn()
        .expect("rvoip-loadtest");
    let code = wait_exit(&mut uac, Duration::from_secs(60));
    assert_eq!(code, Some(0), "rvoip-loadtest uac exit status");
    let r = report(&json);
    assert_eq!(r["calls"]["attempted"], 40, "{r}");
    assert_eq!(r["calls"]["completed"], 40, "{r}");
    assert_eq!(r["calls"]["failed"], 0, "{r}");
    assert!(
        r["latency_ms"]["invite_to_200"]["p50"].as_f64() > Some(0.0),
        "{r}"
    );
    // SIPp echoes every packet back: about 50 per second per call for 1 s.
    let (sent, received) = (
        r["rtp"]["sent"].as_u64().unwrap(),
        r["rtp"]["received"].as_u64().unwrap(),
    );
    assert!(sent >= 40 * 45, "{r}");
    assert!(
        received >= sent * 9 / 10,
        "most echoed packets came back: {r}"
    );
    assert!(r["mos"].as_f64() > Some(4.0), "{r}");
}

#[test]
fn sipp_calls_the_uas() {
    let d = dir("lt-uas-sipp");
    let port = free_port();
    let json = d.join("report.json");
    let uas = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args([
            "uas",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--quiet",
            "--duration",
            "60s",
        ])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::null())
        .spawn()
        .expect("rvoip-loadtest");
    let mut uas = Killed(uas);
    common::wait_udp_bound(port);
    let mut sipp = Command::new("sipp")
        .args([
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-m", "30", "-r", "15", "-nostdin", "-timeout", "50s"])
        .current_dir(&d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    assert_eq!(
        wait_exit(&mut sipp, Duration::from_secs(60)),
        Some(0),
        "every SIPp call succeeded"
    );
    // SIGTERM: the UAS stops and writes its report.
    // SAFETY: kill() on our own child's pid.
    unsafe { libc::kill(uas.0.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut uas.0, Duration::from_secs(10)), Some(0));
    let r = report(&json);
    assert_eq!(r["calls"]["attempted"], 30, "{r}");
    assert_eq!(r["calls"]["completed"], 30, "{r}");
}

#[test]
fn registrations_answer_a_sipp_digest_challenge() {
    let d = dir("lt-register-sipp");
    let port = free_port();
    let scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/registrar_digest.xml");
    let _registrar = Killed(
        Command::new("sipp")
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
            .current_dir(&d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp"),
    );
    common::wait_udp_bound(port);
    let run = |password: &str, json: &PathBuf| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
            .args(["register", "--target", &format!("127.0.0.1:{port}")])
            .args(["--user", "alice", "--password", password])
            .args(["--rate", "50", "--calls", "50", "--quiet"])
            .arg("--json")
            .arg(json)
            .stderr(Stdio::null())
            .spawn()
            .expect("rvoip-loadtest");
        wait_exit(&mut c, Duration::from_secs(60))
    };
    let good = d.join("good.json");
    assert_eq!(run("alicepw", &good), Some(0));
    let r = report(&good);
    assert_eq!(r["calls"]["completed"], 50, "{r}");
    // SIPp checked every response and answered 200: a wrong password gets 403.
    let bad = d.join("bad.json");
    assert_eq!(run("nope", &bad), Some(1));
    let r = report(&bad);
    assert_eq!(r["failures_by_reason"]["403 Forbidden"], 50, "{r}");
}

/// Kamailio (the anchor's stateful configuration, no media module) carries
/// the signalling only: the SDP passes through it unchanged, so the media
/// flows directly between the tool's two legs, and each leg's report counts
/// what it received. Media through rvoip's relay driven by Kamailio is
/// `controlplane/tests/kamailio_interop.rs`.
#[test]
fn calls_signalled_through_kamailio_complete_with_media_between_the_legs() {
    let d = dir("lt-kamailio");
    let (kport, uas_port) = (free_port(), free_port());
    // The anchor's stateful configuration (tm, rr), on ports of this test.
    let anchor = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/anchors/kamailio-stateful.cfg");
    let cfg = common::substitute(
        &std::fs::read_to_string(&anchor).unwrap_or_else(|e| panic!("{}: {e}", anchor.display())),
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{kport}")),
            ("127.0.0.1:5070", format!("127.0.0.1:{uas_port}")),
        ],
    );
    std::fs::write(d.join("kamailio.cfg"), cfg).unwrap();
    // Kamailio forks its workers: the whole group goes at the end.
    let _kamailio = common::Group::spawn(
        Command::new("kamailio")
            .arg("-f")
            .arg(d.join("kamailio.cfg"))
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-w"])
            .arg(&d)
            .arg("-Y")
            .arg(&d)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    common::wait_udp_bound(kport);
    let json = d.join("report.json");
    let mut both = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["both", "--listen", &format!("127.0.0.1:{uas_port}")])
        .args(["--target", &format!("127.0.0.1:{kport}")])
        .args([
            "--rate", "50", "--calls", "100", "--hold", "1s", "--media", "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::null())
        .spawn()
        .expect("rvoip-loadtest");
    assert_eq!(wait_exit(&mut both, Duration::from_secs(60)), Some(0));
    let r = report(&json);
    assert_eq!(r["calls"]["completed"], 100, "{r}");
    assert_eq!(r["rtp"]["lost"], 0, "{r}");
    assert!(r["rtp"]["received"].as_u64() > Some(4500), "{r}");
}
