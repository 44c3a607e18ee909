//! Media-only mode against rvoip's own ng relay, started in this process:
//! every call is offered, answered, carries RTP both ways through the relay
//! and is deleted; nothing is lost.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rvoip_dataplane::engine::media::{DriverKind, MediaEngine, MediaEngineConfig, Polling};
use rvoip_dataplane::engine::ng_udp::NgListener;
use rvoip_dataplane::media::relay::RelayConfig;
use rvoip_dataplane::ng::NgServer;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs the media mode with `extra` arguments against a relay started here
/// on ports `base`..`base + 999`; returns the JSON report and the exit status.
fn media_run(base: u16, extra: &[&str]) -> (serde_json::Value, std::process::ExitStatus) {
    let engine = MediaEngine::start(&MediaEngineConfig {
        address: LOCALHOST,
        // Below the ephemeral range, so no socket of the test takes a relay port.
        port_min: base,
        port_max: base + 999,
        cores: vec![0, 1],
        driver: DriverKind::Auto,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 4096,
    })
    .expect("media engine");
    let stop = Arc::new(AtomicBool::new(false));
    let listener = NgListener::spawn(
        "127.0.0.1:0".parse().unwrap(),
        NgServer::new(
            engine,
            LOCALHOST,
            Box::new(rvoip_dataplane::entropy::SystemEntropy::new()),
        ),
        Arc::clone(&stop),
    )
    .expect("ng listener");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join(format!("ng-media-{base}-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["media", "--ng", &listener.local.to_string()])
        .args(["--rate", "20", "--calls", "20", "--hold", "1s", "--quiet"])
        .args(extra)
        .arg("--json")
        .arg(&json)
        .status()
        .expect("rvoip-loadtest");
    stop.store(true, Ordering::Relaxed);
    listener.join();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (r, status)
}

fn check(r: &serde_json::Value, status: std::process::ExitStatus) {
    assert_eq!(r["calls"]["completed"], 20, "{r}");
    assert!(status.success(), "{status}");
    let (sent, received) = (
        r["rtp"]["sent"].as_u64().unwrap(),
        r["rtp"]["received"].as_u64().unwrap(),
    );
    // 20 calls × 2 legs × 50 packets/s × 1 s.
    assert!(sent >= 1900, "{r}");
    assert!(
        received + 20 >= sent,
        "the relay returned every packet but those in flight: {r}"
    );
    assert_eq!(r["rtp"]["lost"], 0, "{r}");
}

#[test]
fn media_mode_drives_the_ng_relay_end_to_end() {
    let (r, status) = media_run(21000, &[]);
    check(&r, status);
}

#[test]
fn srtp_media_is_transcrypted_by_the_relay_with_its_own_keys() {
    for (base, suite) in [
        (23000, "AES_CM_128_HMAC_SHA1_80"),
        (24000, "AEAD_AES_128_GCM"),
    ] {
        let (r, status) = media_run(base, &["--srtp", suite]);
        check(&r, status);
        assert_eq!(r["rtp"]["srtp_errors"], 0, "{suite}: {r}");
    }
}
