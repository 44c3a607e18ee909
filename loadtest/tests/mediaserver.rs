//! The media server of `config/mediaserver.toml` with real peers
//! (rvoip-loadtest callers, each its own process), judged on what each
//! caller hears, decoded:
//! - three callers in one conference room each hear the other two and not
//!   themselves;
//! - a caller of the IVR hears its prompt, presses 1 (RFC 4733, then
//!   in-band) and from then on hears, and is heard by, the caller already
//!   in room conf-1;
//! - the echo test returns the caller's own tone;
//! - a call the core refuses with 486 hears the announcement, then gets
//!   486.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

mod common;
use common::{Killed, free_port, media_uac, run_config};

/// The media server in `dir` on `access`, media from `media_base`, its
/// prompts from the repository; the core trunk at `core`.
fn media_server(dir: &Path, access: u16, core: u16, media_base: u16) -> Killed {
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts");
    run_config(
        "mediaserver.toml",
        dir,
        access,
        core,
        media_base,
        &[
            (
                "prompt_dir = \"../prompts\"",
                format!("prompt_dir = \"{}\"", prompts.display()),
            ),
            (
                "dir = \"../recordings\"",
                format!("dir = \"{}\"", dir.join("recordings").display()),
            ),
            ("record_rooms = false", "record_rooms = true".into()),
        ],
    )
}

fn test_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ms-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The caller judged its one stream clear.
fn heard_clearly(name: &str, passed: bool, r: &serde_json::Value) {
    assert!(passed, "{name}: {r}");
    assert_eq!(r["calls"]["completed"], 1, "{name}: {r}");
    assert_eq!(r["audio"]["streams_judged"], 1, "{name}: {r}");
    assert_eq!(r["audio"]["streams_clear"], 1, "{name}: {r}");
}

#[test]
fn three_conference_callers_each_hear_the_other_two_and_not_themselves() {
    let dir = test_dir("conf");
    let access = free_port();
    let _ms = media_server(&dir, access, free_port(), 48000);
    let tones = [400, 700, 1100];
    let callers: Vec<_> = tones
        .iter()
        .map(|&t| {
            let dir = dir.clone();
            thread::spawn(move || {
                let others: Vec<String> = tones
                    .iter()
                    .filter(|&&o| o != t)
                    .map(u32::to_string)
                    .collect();
                let own = t.to_string();
                let r = media_uac(
                    &dir,
                    access,
                    &format!("p{t}"),
                    &[
                        "--service",
                        "conf-5",
                        "--calls",
                        "1",
                        "--hold",
                        "4s",
                        "--tone",
                        &own,
                        "--expect",
                        &others.join(","),
                        "--absent",
                        &own,
                        "--judge-after",
                        "1s",
                    ],
                );
                (t, r)
            })
        })
        .collect();
    for c in callers {
        let (t, (passed, r)) = c.join().unwrap();
        heard_clearly(&format!("{t} Hz caller"), passed, &r);
    }
    // The room was recorded while it had members: one mono 16 kHz file
    // with every talker in it, complete once the last one left.
    let recordings = dir.join("recordings");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let meta = loop {
        let found = std::fs::read_dir(&recordings).ok().and_then(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("room-conf-5-"))
                    && p.extension().is_some_and(|x| x == "json")
            })
        });
        let done = found.as_ref().and_then(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
            v["stop"].is_number().then_some((p.clone(), v))
        });
        if let Some(d) = done {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completed room recording in {}",
            recordings.display()
        );
        thread::sleep(std::time::Duration::from_millis(100));
    };
    let wav = std::fs::read(meta.0.with_extension("wav")).unwrap();
    let audio = rvoip_mixer::wav::read(&wav).unwrap();
    assert_eq!((audio.channels, audio.rate), (1, 16_000), "mono, 16 kHz");
    let secs = audio.samples.len() as f64 / 16_000.0;
    assert!((3.5..=5.5).contains(&secs), "the room's 4 s: {secs}");
    let middle = &audio.samples[16_000..32_000];
    for f in [400.0, 700.0, 1100.0] {
        let g = rvoip_codecs::tone::goertzel(middle, f, 16_000);
        let amplitude = 2.0 * g.sqrt() / middle.len() as f64;
        assert!(
            amplitude > 3000.0,
            "{f} Hz in the room's recording: {amplitude}"
        );
    }
    assert_eq!(meta.1["room"], "conf-5");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A caller already in conf-1 (700 Hz), and an IVR caller (1 kHz) that
/// sends `1` 2 s after its answer with `extra`; each judges the 3.5 s
/// after its first 3 (the member's window falls within the IVR caller's
/// time in the room, and the IVR caller's within the member's).
fn ivr_into_the_conference(name: &str, media_base: u16, extra: &[&str]) {
    let dir = test_dir(name);
    let access = free_port();
    let _ms = media_server(&dir, access, free_port(), media_base);
    let d = dir.clone();
    let member = thread::spawn(move || {
        media_uac(
            &d,
            access,
            "member",
            &[
                "--service",
                "conf-1",
                "--calls",
                "1",
                "--hold",
                "8s",
                "--tone",
                "700",
                "--expect",
                "1000",
                "--absent",
                "700",
                "--judge-after",
                "3s",
            ],
        )
    });
    thread::sleep(std::time::Duration::from_millis(500));
    let mut args = vec![
        "--service",
        "ivr",
        "--calls",
        "1",
        "--hold",
        "6s",
        "--tone",
        "1000",
        "--dtmf",
        "1@2s",
        "--expect",
        "700",
        "--absent",
        "1000",
        "--judge-after",
        "3s",
    ];
    args.extend_from_slice(extra);
    let (passed, r) = media_uac(&dir, access, "ivr", &args);
    // Before the digit it heard the prompt (speech, well above silence).
    let prompt = r["audio"]["before_judged_dbov"].as_f64().unwrap();
    assert!(
        prompt > -40.0,
        "the IVR prompt was heard: {prompt} dBov; {r}"
    );
    heard_clearly("IVR caller, in conf-1 after its digit", passed, &r);
    let (passed, r) = member.join().unwrap();
    heard_clearly("conf-1 member, hearing the IVR caller", passed, &r);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_ivr_caller_pressing_1_as_rfc_4733_events_joins_conf_1() {
    ivr_into_the_conference("ivr-events", 48200, &[]);
}

#[test]
fn an_ivr_caller_pressing_1_in_band_joins_conf_1() {
    ivr_into_the_conference("ivr-inband", 48800, &["--dtmf-inband"]);
}

#[test]
fn the_echo_test_returns_the_callers_own_voice() {
    let dir = test_dir("echo");
    let access = free_port();
    let _ms = media_server(&dir, access, free_port(), 48400);
    let (passed, r) = media_uac(
        &dir,
        access,
        "echo",
        &[
            "--service",
            "echo",
            "--calls",
            "1",
            "--hold",
            "3s",
            "--tone",
            "900",
            "--expect",
            "900",
        ],
    );
    heard_clearly("echo caller", passed, &r);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_core_gives_the_caller_the_announcement_then_486() {
    let dir = test_dir("announce");
    let (access, core) = (free_port(), free_port());
    let _ms = media_server(&dir, access, core, 48600);
    // The core answers every call 486 (SIPp's uas scenario, made busy).
    let scenario = dir.join("busy.xml");
    std::fs::write(
        &scenario,
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]busy[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"#,
    )
    .unwrap();
    let _core = Killed(
        Command::new("sipp")
            .args(["-sf"])
            .arg(&scenario)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &core.to_string(),
                "-m",
                "1",
                "-nostdin",
            ])
            .args(["-timeout", "30s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (sip-tester) is installed by .ci/run"),
        None,
    );
    common::wait_udp_bound(core);
    let (passed, r) = media_uac(
        &dir,
        access,
        "busy",
        &[
            "--service",
            "5551234",
            "--calls",
            "1",
            "--hold",
            "1s",
            "--tone",
            "1000",
            "--judge-after",
            "10s",
            "--max-fail-pct",
            "100",
        ],
    );
    let _ = passed;
    // The call failed (486), after the caller heard the announcement as
    // early media.
    assert_eq!(r["calls"]["failed"], 1, "{r}");
    assert_eq!(r["calls"]["completed"], 0, "{r}");
    let heard = r["audio"]["before_judged_dbov"].as_f64().unwrap_or(-120.0);
    assert!(
        heard > -40.0,
        "the announcement was heard: {heard} dBov; {r}"
    );
    let status = &r["failures_by_reason"];
    assert!(
        status.to_string().contains("486"),
        "486 reached the caller: {r}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
