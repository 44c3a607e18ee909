//! The SBC with SRTP on the access realm and RTP on the core realm
//! (`config/sbc.toml` with `media = "srtp"` for access): rvoip-loadtest
//! calls with SDES-keyed SRTP through rvoip to an rvoip-loadtest UAS that
//! speaks plain RTP; the relay transcrypts both ways and every packet
//! arrives.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::free_port;

/// A child process, and the SBC's ring directory in shared memory (RAM):
/// both gone when dropped.
struct Killed(Child, Option<PathBuf>);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && !matches!(self.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(rings) = &self.1 {
            let _ = std::fs::remove_dir_all(rings);
        }
    }
}

/// The `rvoip` binary of this build, built on demand (it belongs to
/// another package of the workspace).
fn rvoip_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_rvoip-loadtest")).with_file_name("rvoip");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "rvoip-controlplane", "--bin", "rvoip"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build").success());
    }
    path
}

fn run_sbc(dir: &Path, access: u16, core_peer: u16, media_base: u16) -> Killed {
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sbc.toml"))
            .unwrap();
    let rings = format!("/dev/shm/rvoip-lt-sbc-{}-{media_base}", std::process::id());
    for (from, to) in [
        ("127.0.0.1:5060", format!("127.0.0.1:{access}")),
        ("127.0.0.1:5062", format!("127.0.0.1:{}", free_port())),
        ("127.0.0.1:5070", format!("127.0.0.1:{core_peer}")),
        ("127.0.0.1:5072", format!("127.0.0.1:{}", free_port())),
        ("127.0.0.1:2223", format!("127.0.0.1:{}", free_port())),
        ("port_min = 30000", format!("port_min = {media_base}")),
        (
            "port_max = 39999",
            format!("port_max = {}", media_base + 199),
        ),
        (
            "ring_dir = \"/dev/shm/rvoip\"",
            format!("ring_dir = \"{rings}\""),
        ),
        ("state_dir = \"../state\"", "state_dir = \"state\"".into()),
        // SRTP towards callers, RTP towards the core.
        ("media = \"rtp\"\n# New", "media = \"srtp\"\n# New".into()),
    ] {
        assert!(text.contains(from), "sbc.toml has no {from:?}");
        text = text.replace(from, &to);
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/users.toml"),
        dir.join("users.toml"),
    )
    .unwrap();
    let config = dir.join("sbc.toml");
    std::fs::write(&config, text).unwrap();
    let sbc = Killed(
        Command::new(rvoip_binary())
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rvoip.log")).unwrap())
            .spawn()
            .expect("rvoip"),
        Some(PathBuf::from(&rings)),
    );
    // Ready when it answers OPTIONS on the access side.
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        let msg = format!(
            "OPTIONS sip:127.0.0.1:{access} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-r{n}\r\n\
From: <sip:probe@rvoip.test>;tag=r\r\nTo: <sip:127.0.0.1>\r\nCall-ID: r{n}\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            sock.local_addr().unwrap()
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", access)).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 200")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SBC did not start: {}",
            std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
        );
    }
    sbc
}

fn srtp_to_rtp(suite: &str, media_base: u16) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sbc-srtp-{suite}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (access, core_peer) = (free_port(), free_port());
    let _sbc = run_sbc(&dir, access, core_peer, media_base);
    // The core side: a UAS that speaks plain RTP only.
    let _uas = Killed(
        Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
            .args(["uas", "--listen", &format!("127.0.0.1:{core_peer}")])
            .args(["--media", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        None,
    );
    std::thread::sleep(Duration::from_millis(300));
    let json = dir.join("uac.json");
    let status = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["uac", "--target", &format!("127.0.0.1:{access}")])
        .args(["--listen", "127.0.0.2:0", "--rate", "20", "--calls", "20"])
        .args([
            "--hold", "2s", "--media", "--srtp", suite, "--quiet", "--json",
        ])
        .arg(&json)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(status.success(), "{r}");
    assert_eq!(r["calls"]["completed"], 20, "{r}");
    assert_eq!(r["rtp"]["lost"], 0, "{r}");
    assert_eq!(r["rtp"]["srtp_errors"], 0, "{r}");
    // Media the relay forwards before the caller has the answer's keys is
    // not read as plain RTP (it once showed as an hour of jitter).
    assert!(r["jitter_ms"]["max"].as_f64().unwrap() < 100.0, "{r}");
    assert!(
        r["latency_ms"]["rtp_transit"]["max"].as_f64().unwrap() < 1000.0,
        "{r}"
    );
    // 2 s of 50 packets a second each way, echoed by the UAS.
    assert!(r["rtp"]["received"].as_u64().unwrap() >= 20 * 95, "{r}");
    drop(_sbc);
    let cdrs = std::fs::read_to_string(dir.join("cdr.jsonl")).unwrap();
    assert_eq!(cdrs.lines().count(), 20);
    for l in cdrs.lines() {
        let c: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(c["media"]["errors"], 0, "{c}");
        assert!(c["media"]["packets"].as_u64().unwrap() >= 190, "{c}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn srtp_callers_reach_an_rtp_core_aes_cm() {
    srtp_to_rtp("AES_CM_128_HMAC_SHA1_80", 25400);
}

#[test]
fn srtp_callers_reach_an_rtp_core_gcm() {
    srtp_to_rtp("AEAD_AES_128_GCM", 25600);
}
