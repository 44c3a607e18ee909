//! The systemd units in `deploy/systemd/`: `systemd-analyze verify` finds
//! nothing to say about them, `systemd-analyze security` rates the
//! appliance's hardening, and `rvoip run` speaks `Type=notify` as the
//! units expect: READY=1 once serving, WATCHDOG=1 within `WatchdogSec`,
//! STOPPING=1 when told to stop.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spawned, free_udp_port, test_config, test_dir};

const UNITS: [&str; 3] = [
    "rvoip.service",
    "rvoip-dataplane.service",
    "rvoip-controlplane.service",
];

#[test]
fn the_units_verify_cleanly_and_the_appliance_is_hardened() {
    let dir = test_dir("units");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    // As installed, with this build's binary where the package puts it.
    for u in UNITS {
        let text = std::fs::read_to_string(source.join(u)).unwrap();
        assert!(
            text.contains("Type=notify") && text.contains("WatchdogSec="),
            "{u}"
        );
        assert!(
            text.contains("LimitNOFILE=") && text.contains("LimitMEMLOCK="),
            "{u}"
        );
        assert!(
            text.contains("NoNewPrivileges=yes") && text.contains("ProtectSystem=strict"),
            "{u}"
        );
        std::fs::write(
            dir.join(u),
            text.replace("/usr/bin/rvoip", env!("CARGO_BIN_EXE_rvoip")),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| format!("./{u}")))
        .current_dir(&dir)
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    // Exposure at most 3.0 of 10 ("OK" or better).
    let out = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "--threshold=30",
            "./rvoip.service",
        ])
        .current_dir(&dir)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The next notification within `within`.
fn next(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn rvoip_run_says_ready_pets_the_watchdog_and_says_stopping() {
    let dir = test_dir("notify");
    let port = free_udp_port();
    let config = test_config(
        "rvoip.toml",
        &dir,
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{port}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
            ("port_min = 30000", "port_min = 27100".into()),
            ("port_max = 39999", "port_max = 27199".into()),
        ],
    );
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut app = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(&dir)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "1000000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rvoip.log")).unwrap()),
    );
    let log = || std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    let ready =
        next(&sock, Duration::from_secs(15)).unwrap_or_else(|| panic!("no READY: {}", log()));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // It answers by then.
    common::wait_options_ok(port, log);
    // The watchdog at half its 1 s interval: several in 3 s, nothing else
    // from the control plane child (only the main process speaks).
    let start = Instant::now();
    let mut pets = 0;
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(m) = next(&sock, Duration::from_millis(700)) {
            assert_eq!(m.trim(), "WATCHDOG=1", "{m}");
            pets += 1;
        }
    }
    assert!(
        (4..=8).contains(&pets),
        "{pets} watchdog notifications in 3 s"
    );
    Command::new("kill")
        .args(["-TERM", &app.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        stopping =
            next(&sock, Duration::from_millis(500)).is_some_and(|m| m.contains("STOPPING=1"));
    }
    assert!(stopping, "no STOPPING: {}", log());
    let status = app.terminate().expect("rvoip stops");
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
