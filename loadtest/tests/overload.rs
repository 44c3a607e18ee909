//! Admission by measured load, end to end: the SBC of `config/sbc.toml`
//! with a limit on the packets its relay forwards refuses new calls with
//! 503 and Retry-After while the call already up keeps all of its media,
//! and takes calls again once the load is gone.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

mod common;
use common::{free_port, media_uac as uac, media_uas, run_sbc};

#[test]
fn past_its_load_limit_the_sbc_refuses_new_calls_and_keeps_the_call_up() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sbc-overload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (access, core_peer) = (free_port(), free_port());
    // One call relays 2 × 50 packets a second; the limit is below that.
    let _sbc = run_sbc(
        &dir,
        access,
        core_peer,
        25800,
        &[(
            "media_packets_per_sec = 0",
            "media_packets_per_sec = 60".into(),
        )],
    );
    let _uas = media_uas(core_peer);
    common::wait_udp_bound(core_peer);
    // The call that is up for 8 s.
    let first = {
        let dir = dir.clone();
        std::thread::spawn(move || uac(&dir, access, "first", &["--calls", "1", "--hold", "8s"]))
    };
    // Once its media has flowed for a few seconds, new calls are refused.
    std::thread::sleep(Duration::from_secs(3));
    let (_, shed) = uac(
        &dir,
        access,
        "shed",
        &[
            "--calls",
            "4",
            "--rate",
            "4",
            "--hold",
            "1s",
            "--max-fail-pct",
            "100",
        ],
    );
    assert_eq!(shed["calls"]["completed"], 0, "{shed}");
    assert_eq!(
        shed["failures_by_reason"]["503 Service Unavailable"], 4,
        "{shed}"
    );
    let (ok, first) = first.join().unwrap();
    assert!(ok, "{first}");
    assert_eq!(first["calls"]["completed"], 1, "{first}");
    assert_eq!(
        first["rtp"]["lost"], 0,
        "the call up keeps its media: {first}"
    );
    assert!(first["rtp"]["received"].as_u64().unwrap() >= 380, "{first}");
    // Its media gone, the load falls and calls are taken again.
    std::thread::sleep(Duration::from_secs(2));
    let (ok, again) = uac(
        &dir,
        access,
        "again",
        &["--calls", "2", "--rate", "2", "--hold", "1s"],
    );
    assert!(ok, "{again}");
    assert_eq!(again["calls"]["completed"], 2, "{again}");
    drop(_sbc);
    let log = std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    assert!(log.contains("refusing new calls"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
