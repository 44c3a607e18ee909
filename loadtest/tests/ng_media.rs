//! Media-only mode against rvoip's own ng relay, started in this process:
//! every call is offered, answered, carries RTP both ways through the relay
//! and is deleted; nothing is lost.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

/// Runs the media mode with `extra` arguments against a relay started here
/// on ports `base`..`base + 999`; returns the JSON report and the exit status.
fn media_run(base: u16, extra: &[&str]) -> (serde_json::Value, std::process::ExitStatus) {
    let mut args = vec!["--rate", "20", "--calls", "20", "--hold", "1s"];
    args.extend_from_slice(extra);
    common::media_against_ng_relay(base, "ng-media", &args)
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

#[test]
fn webrtc_legs_are_keyed_by_ice_and_dtls_and_their_srtp_crosses_the_relay() {
    // Leg A as a browser offers it (ICE, DTLS-SRTP, rtcp-mux, SAVPF), leg
    // B plain RTP/AVP: every leg is keyed by its own handshake, and its
    // SRTP reaches leg B as RTP and back.
    let (r, status) = media_run(25000, &["--webrtc"]);
    check(&r, status);
    assert_eq!(r["webrtc"]["keyed"], 20, "{r}");
    assert_eq!(r["rtp"]["srtp_errors"], 0, "{r}");
    assert!(
        r["webrtc"]["answer_to_keys_ms"]["p99"].as_f64().unwrap() < 1000.0,
        "no handshake waited for a retransmission: {r}"
    );
}
