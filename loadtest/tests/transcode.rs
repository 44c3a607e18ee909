//! Transcoded calls with real peers, judged on the audio each side hears
//! (the other side's tone, by frequency and SNR after decoding), never on
//! octets:
//! - over ng: rvoip-loadtest's media mode offers PCMU with
//!   `codec: {transcode: [opus]}` to rvoip's ng relay and answers opus;
//! - over ng with a WebRTC leg offering only Opus bridged to plain PCMU;
//! - through the SBC: rvoip-loadtest calls with PCMU through the `rvoip`
//!   binary on `config/sbc.toml`, whose core trunk is set to opus with
//!   `transcode = true`, to an rvoip-loadtest UAS that speaks only opus.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;
use common::{Killed, free_port, media_uac, run_sbc};

/// The tests of this file one at a time: each encodes and decodes Opus for
/// dozens of streams in real time, and on a 2-core host two at once starve
/// each other's relay of the CPU its 20 ms pacing needs (heard as gaps,
/// not as a fault of either).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn judged_clear(r: &serde_json::Value, streams: u64) {
    let judged = r["audio"]["streams_judged"].as_u64().unwrap();
    assert!(judged >= streams, "{r}");
    assert_eq!(r["audio"]["streams_clear"].as_u64().unwrap(), judged, "{r}");
}

#[test]
fn pcmu_and_opus_over_ng_each_hear_the_others_tone() {
    let _alone = alone();
    let (r, status) = common::media_against_ng_relay(
        46000,
        "ng-transcode",
        &[
            "--rate",
            "10",
            "--calls",
            "10",
            "--hold",
            "3s",
            "--codec",
            "PCMU",
            "--answer-codec",
            "opus",
            "--transcode",
            "--audio-check",
            "8",
        ],
    );
    assert!(status.success(), "{r}");
    assert_eq!(r["calls"]["completed"], 10, "{r}");
    // Both directions of the first calls: the PCMU leg hears 600 Hz, the
    // opus leg 1 kHz.
    judged_clear(&r, 8);
    let (sent, received) = (
        r["rtp"]["sent"].as_u64().unwrap(),
        r["rtp"]["received"].as_u64().unwrap(),
    );
    // The relay sends a frame for every frame it gets, paced.
    assert!(received as f64 >= sent as f64 * 0.97, "{r}");
}

#[test]
fn a_webrtc_leg_offering_only_opus_and_a_plain_pcmu_leg_hear_each_other() {
    let _alone = alone();
    // A browser's offer (UDP/TLS/RTP/SAVPF, ICE, DTLS, Opus only) bridged
    // to a plain RTP/AVP leg that answers PCMU: the relay terminates ICE
    // and DTLS-SRTP on one side and transcodes between the two.
    let (r, status) = common::media_against_ng_relay(
        47000,
        "ng-webrtc-transcode",
        &[
            "--rate",
            "10",
            "--calls",
            "10",
            "--hold",
            "3s",
            "--codec",
            "opus",
            "--answer-codec",
            "PCMU",
            "--transcode",
            "--webrtc",
            "--audio-check",
            "8",
        ],
    );
    assert!(status.success(), "{r}");
    assert_eq!(r["calls"]["completed"], 10, "{r}");
    assert_eq!(r["webrtc"]["keyed"], 10, "{r}");
    assert_eq!(r["rtp"]["srtp_errors"], 0, "{r}");
    // Both directions of the first calls: the WebRTC leg hears the PCMU
    // leg's 600 Hz, the PCMU leg the WebRTC leg's 1 kHz.
    judged_clear(&r, 8);
}

#[test]
fn a_pcmu_caller_and_an_opus_trunk_hear_each_other_through_the_sbc() {
    let _alone = alone();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sbc-transcode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (access, core_peer) = (free_port(), free_port());
    let _sbc = run_sbc(
        &dir,
        access,
        core_peer,
        47000,
        &[(
            "codecs = []\n",
            "codecs = [\"opus\"]\ntranscode = true\n".into(),
        )],
    );
    // The core side speaks opus only.
    let uas_json = dir.join("uas.json");
    let uas = Killed(
        Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
            .args(["uas", "--listen", &format!("127.0.0.1:{core_peer}")])
            .args([
                "--media",
                "--quiet",
                "--codec",
                "opus",
                "--audio-check",
                "8",
            ])
            .args(["--duration", "20s", "--json"])
            .arg(&uas_json)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        None,
    );
    common::wait_udp_bound(core_peer);
    let (passed, r) = media_uac(
        &dir,
        access,
        "uac",
        &[
            "--rate",
            "10",
            "--calls",
            "10",
            "--hold",
            "3s",
            "--codec",
            "PCMU",
            "--audio-check",
            "8",
        ],
    );
    assert!(passed, "{r}");
    assert_eq!(r["calls"]["completed"], 10, "{r}");
    // The caller hears the trunk's 600 Hz in PCMU.
    judged_clear(&r, 8);
    // The UAS hears the caller's 1 kHz in opus (it writes its report when
    // it stops; dropping waits for that).
    drop(uas);
    let u: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&uas_json).unwrap()).unwrap();
    judged_clear(&u, 8);
    let _ = std::fs::remove_dir_all(&dir);
}
