//! Both socket engines carry the same load end to end: `rvoip-loadtest
//! both` (UAC and UAS in one process, each with its own sockets and loop)
//! with calls and RTP both ways, on io_uring and on recvmmsg/sendmmsg, with
//! and without a batch wait.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::free_port;

fn run(engine: &str, batch_wait_us: u32) -> serde_json::Value {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join(format!(
        "engines-{engine}-{batch_wait_us}-{}.json",
        std::process::id()
    ));
    let listen = format!("127.0.0.1:{}", free_port());
    let status = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args([
            "both", "--listen", &listen, "--rate", "200", "--calls", "300",
        ])
        .args(["--hold", "500ms", "--media", "--quiet", "--engine", engine])
        .args(["--batch-wait-us", &batch_wait_us.to_string()])
        .arg("--json")
        .arg(&json)
        .status()
        .expect("rvoip-loadtest runs");
    assert!(status.success(), "{engine}: exit {status:?}");
    let text = std::fs::read_to_string(&json).expect("report");
    serde_json::from_str(&text).expect("JSON")
}

fn check(engine: &str, batch_wait_us: u32) {
    let r = run(engine, batch_wait_us);
    assert_eq!(r["calls"]["attempted"], 300, "{engine}: {r}");
    assert_eq!(r["calls"]["completed"], 300, "{engine}: {r}");
    assert_eq!(r["calls"]["failed"], 0, "{engine}: {r}");
    let sent = r["rtp"]["sent"].as_u64().unwrap();
    let received = r["rtp"]["received"].as_u64().unwrap();
    // The UAC's side: 300 calls, 500 ms of RTP each, 50 per second.
    assert!(sent >= 300 * 24, "{engine}: {sent} sent");
    assert_eq!(r["rtp"]["lost"], 0, "{engine}: {r}");
    // Packets in flight when a call ends are not counted as received.
    assert!(
        received * 100 >= sent * 98,
        "{engine}: {received} of {sent}"
    );
}

#[test]
fn io_uring_carries_calls_and_media() {
    check("uring", 0);
}

#[test]
fn io_uring_with_a_batch_wait_carries_calls_and_media() {
    check("uring", 500);
}

#[test]
fn system_calls_carry_calls_and_media() {
    check("syscalls", 0);
}
