//! Debian's baresip 1.0 (libre 1.1), a softphone nobody here wrote,
//! registers with digest authentication and calls another baresip through
//! `config/proxy.toml` and `config/sbc.toml`, unmodified but for their ports.
//! Both phones must hear each other: each receives the other's RTP
//! (through the relay, on the SBC).

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spawned, free_tcp_port, free_udp_port, test_config, test_dir, tls_file};

/// An 8 kHz mono 16-bit WAV of a 440 Hz tone, what a phone sends.
fn tone_wav(path: &Path, seconds: u32) {
    let samples = 8000 * seconds;
    let mut data = Vec::with_capacity(44 + samples as usize * 2);
    data.extend_from_slice(b"RIFF");
    data.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    data.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, 8000, 16000, 0x0010_0002] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(b"data");
    data.extend_from_slice(&(samples * 2).to_le_bytes());
    for i in 0..samples {
        let s =
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin()) as i16;
        data.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, data).expect("tone file");
}

/// A baresip phone registered as `user` through rvoip at `proxy_port`.
struct Phone {
    app: Spawned,
    log: PathBuf,
}

impl Phone {
    fn start(dir: &Path, user: &str, proxy_port: u16, answer: bool, args: &[&str]) -> Phone {
        let home = dir.join(user);
        std::fs::create_dir_all(&home).expect("phone dir");
        let tone = dir.join("tone.wav");
        if !tone.exists() {
            tone_wav(&tone, 30);
        }
        let port = free_udp_port();
        std::fs::write(
            home.join("config"),
            format!(
                "poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_trans_def udp\n\
audio_player aubridge,{user}\naudio_source aufile,{}\naudio_alert aubridge,{user}\n\
module_path /usr/lib/baresip/modules\nmodule account.so\nmodule g711.so\nmodule aufile.so\n\
module aubridge.so\nmodule menu.so\n",
                tone.display()
            ),
        )
        .expect("config");
        let answermode = if answer { ";answermode=auto" } else { "" };
        std::fs::write(
            home.join("accounts"),
            format!(
                "<sip:{user}@rvoip.test>;auth_pass={user}pw;outbound=\"sip:127.0.0.1:{proxy_port}\";regint=600{answermode}\n"
            ),
        )
        .expect("accounts");
        let log = home.join("baresip.log");
        let app = Spawned::spawn(
            Command::new("baresip")
                .arg("-f")
                .arg(&home)
                // Loopback only: the phone's SDP and media stay on 127.0.0.1.
                .args(["-n", "127.0.0.1"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("log"))
                .stderr(Stdio::null()),
        );
        Phone { app, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` (within `secs`).
    fn wait_for(&self, text: &str, secs: u64, rvoip_log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} from baresip:\n{}\n--- rvoip:\n{}",
                self.log(),
                std::fs::read_to_string(rvoip_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts rvoip on `config` (its SIP port rewritten), alice and bob, and has
/// alice call bob for a few seconds.
fn call_through(base: &str, name: &str, extra: &[(&str, String)]) {
    if Command::new("baresip").arg("-h").output().is_err() {
        panic!("baresip is not installed (apt-get install baresip)");
    }
    let dir = test_dir(name);
    let port = free_udp_port();
    let mut replacements = vec![
        ("127.0.0.1:5060", format!("127.0.0.1:{port}")),
        ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
    ];
    replacements.extend(extra.iter().cloned());
    let config = test_config(base, &dir, &replacements);
    let rvoip_log = dir.join("rvoip.log");
    let mut app = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&rvoip_log).expect("log")),
    );
    common::wait_options_ok(port, || {
        std::fs::read_to_string(&rvoip_log).unwrap_or_default()
    });
    let bob = Phone::start(&dir, "bob", port, true, &["-t", "20"]);
    // Registered with MD5 digest: one challenge, answered.
    bob.wait_for("bob@rvoip.test: {0/UDP/v4} 200 OK", 10, &rvoip_log);
    let mut alice = Phone::start(
        &dir,
        "alice",
        port,
        false,
        &["-t", "8", "-e", "/dial sip:bob@rvoip.test"],
    );
    alice.wait_for("alice@rvoip.test: {0/UDP/v4} 200 OK", 10, &rvoip_log);
    alice.wait_for("Call established: sip:bob@rvoip.test", 10, &rvoip_log);
    // The SBC hides alice's address behind its own: bob sees her user only.
    bob.wait_for("Call established: sip:alice@", 5, &rvoip_log);
    // Each phone receives the other's RTP (from the relay, on the SBC).
    alice.wait_for("incoming rtp for 'audio' established", 10, &rvoip_log);
    bob.wait_for("incoming rtp for 'audio' established", 5, &rvoip_log);
    let deadline = Instant::now() + Duration::from_secs(15);
    while alice.app.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "alice did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.wait_for("Call with sip:bob@rvoip.test terminated", 2, &rvoip_log);
    assert!(app.terminate().is_some_and(|s| s.success()));
    let log = std::fs::read_to_string(&rvoip_log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn baresip_registers_and_calls_through_the_proxy_config() {
    call_through(
        "proxy.toml",
        "baresip-proxy",
        &[("127.0.0.1:5070", format!("127.0.0.1:{}", free_udp_port()))],
    );
}

#[test]
fn baresip_registers_and_calls_through_the_sbc_config() {
    call_through(
        "sbc.toml",
        "baresip-sbc",
        &[
            ("127.0.0.1:5062", format!("127.0.0.1:{}", free_udp_port())),
            ("127.0.0.1:5070", format!("127.0.0.1:{}", free_udp_port())),
            ("127.0.0.1:5072", format!("127.0.0.1:{}", free_udp_port())),
        ],
    );
}

/// baresip as a WebRTC-style endpoint through `config/webrtc.toml`: SIP over
/// TLS (checking rvoip's certificate), media offered as DTLS-SRTP with full
/// ICE (its `dtls_srtp` and `ice` modules; its DTLS certificate is RSA,
/// libre/OpenSSL). rvoip terminates both as an ICE-lite agent and bridges
/// to plain RTP on the core trunk, whose SIPp UAS echoes the RTP: baresip
/// receives its own tone back over SRTP.
#[test]
fn baresip_with_dtls_srtp_and_ice_calls_through_the_webrtc_config() {
    let dir = test_dir("baresip-webrtc");
    let (tls, core, uas_port, uas_media) = (
        free_tcp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let (crt, key) = (
        tls_file("localhost-test-only.crt"),
        tls_file("localhost-test-only.key"),
    );
    let r = vec![
        ("127.0.0.1:5061", format!("127.0.0.1:{tls}")),
        ("127.0.0.1:8443", format!("127.0.0.1:{}", free_tcp_port())),
        ("127.0.0.1:8080", format!("127.0.0.1:{}", free_tcp_port())),
        ("127.0.0.1:5062", format!("127.0.0.1:{core}")),
        ("127.0.0.1:5070", format!("127.0.0.1:{uas_port}")),
        ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
        ("port_min = 30000", "port_min = 27800".to_string()),
        ("port_max = 39999", "port_max = 27899".to_string()),
        ("tls/localhost-test-only.crt", crt.display().to_string()),
        ("tls/localhost-test-only.key", key.display().to_string()),
    ];
    let config = test_config("webrtc.toml", &dir, &r);
    let _app = common::appliance(&dir, &config, core);
    let rvoip_log = dir.join("rvoip.log");
    std::fs::create_dir_all(dir.join("uas")).unwrap();
    let _uas = common::sipp::uas(
        &dir.join("uas"),
        uas_port,
        &[
            "-sf",
            common::sipp::scenario("uas_reinvite.xml").to_str().unwrap(),
        ],
        &[
            "-aa",
            "-rtp_echo",
            "-mi",
            "127.0.0.1",
            "-mp",
            &uas_media.to_string(),
        ],
    );
    let home = dir.join("alice");
    std::fs::create_dir_all(&home).unwrap();
    let tone = dir.join("tone.wav");
    tone_wav(&tone, 30);
    std::fs::write(
        home.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{}\nsip_cafile {}\nrtcp_mux yes\n\
audio_player aubridge,alice\naudio_source aufile,{}\naudio_alert aubridge,alice\n\
module_path /usr/lib/baresip/modules\nmodule ice.so\nmodule dtls_srtp.so\nmodule g711.so\n\
module aufile.so\nmodule aubridge.so\nmodule menu.so\nmodule account.so\n",
            free_tcp_port(),
            crt.display(),
            tone.display()
        ),
    )
    .unwrap();
    std::fs::write(
        home.join("accounts"),
        format!(
            "<sip:alice@rvoip.test;transport=tls>;auth_pass=alicepw;\
outbound=\"sip:127.0.0.1:{tls};transport=tls\";regint=600;mediaenc=dtls_srtp;medianat=ice\n"
        ),
    )
    .unwrap();
    let log = home.join("baresip.log");
    let mut alice = Phone {
        app: Spawned::spawn(
            Command::new("baresip")
                .arg("-f")
                .arg(&home)
                .args([
                    "-n",
                    "127.0.0.1",
                    "-t",
                    "10",
                    "-e",
                    "/dial sip:1000@rvoip.test",
                ])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::null()),
        ),
        log,
    };
    alice.wait_for("alice@rvoip.test: {0/TLS/v4} 200 OK", 10, &rvoip_log);
    alice.wait_for("Call established: sip:1000@rvoip.test", 15, &rvoip_log);
    // DTLS-SRTP with rvoip's certificate, then rvoip's echo of its own tone.
    alice.wait_for("incoming rtp for 'audio' established", 10, &rvoip_log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alice.app.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "baresip did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ICE completed with rvoip's ICE-lite agent, and DTLS-SRTP made the
    // media secure before any was sent (wait_secure).
    let text = alice.log();
    for line in [
        "Using media encryption 'dtls_srtp'",
        "Using medianat 'ice'",
        "connectivity check is complete",
        "verified sha-256 fingerprint OK",
        "DTLS-SRTP complete",
    ] {
        assert!(text.contains(line), "no {line:?}:\n{text}");
    }
    for refused in ["ICE not supported by peer", "not found"] {
        assert!(!text.contains(refused), "{refused:?}:\n{text}");
    }
    let cdrs = common::wait_cdrs(&dir, 1, Duration::from_secs(10), || {
        std::fs::read_to_string(&rvoip_log).unwrap_or_default()
    });
    common::assert_answered_with_media(&cdrs[0]);
}
