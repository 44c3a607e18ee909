//! The SBC with SRTP on the access realm and RTP on the core realm
//! (`config/sbc.toml` with `media = "srtp"` for access): rvoip-loadtest
//! calls with SDES-keyed SRTP through rvoip to an rvoip-loadtest UAS that
//! speaks plain RTP; the relay transcrypts both ways and every packet
//! arrives.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::PathBuf;

mod common;
use common::{free_port, media_uac, media_uas, run_sbc};

fn srtp_to_rtp(suite: &str, media_base: u16) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sbc-srtp-{suite}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (access, core_peer) = (free_port(), free_port());
    // SRTP towards callers, RTP towards the core.
    let _sbc = run_sbc(
        &dir,
        access,
        core_peer,
        media_base,
        &[("media = \"rtp\"\n# New", "media = \"srtp\"\n# New".into())],
    );
    // The core side: a UAS that speaks plain RTP only.
    let _uas = media_uas(core_peer);
    common::wait_udp_bound(core_peer);
    let (passed, r) = media_uac(
        &dir,
        access,
        "uac",
        &[
            "--rate", "20", "--calls", "20", "--hold", "2s", "--srtp", suite,
        ],
    );
    assert!(passed, "{r}");
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
