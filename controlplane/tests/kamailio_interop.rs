//! Interop with real peers: SIPp uac → Kamailio 5.6 (its `rtpengine` module
//! pointed at rvoip's ng listener) → SIPp uas with RTP echo. The call's SDP is
//! rewritten to rvoip's relay, the uac plays 236 G.711 packets from a pcap,
//! the uas echoes them, and a capture on the loopback interface counts what
//! each SIPp received from the relay.
//!
//! Needs `kamailio` and `sip-tester` (installed by `.ci/run`).

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};

// Kamailio forks workers: every peer runs in a process group of its own,
// stopped whole when dropped.
use common::{Spawned, free_udp_port};
use std::time::{Duration, Instant};

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed (the test command's .ci/run installs kamailio and sip-tester)"
    );
}

fn wait_for_options(port: u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let msg = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{n}\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n\
To: <sip:127.0.0.1:{port}>\r\nCall-ID: probe-{n}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 200")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kamailio did not come up on {port}"
        );
    }
}

/// Waits until rvoip's ng listener answers a ping: Kamailio's rtpengine
/// module pings it at start and leaves a silent relay disabled for a minute.
fn wait_for_ng(port: u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let msg = format!("p{n} d7:command4:pinge");
        sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 256];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && String::from_utf8_lossy(&buf[..len]).contains("pong")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rvoip's ng did not answer on {port}"
        );
    }
}

fn counter(log: &str, line_tag: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(line_tag))
        .unwrap_or_else(|| panic!("no '{line_tag}' in log:\n{log}"));
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    value.parse().unwrap()
}

#[test]
fn kamailio_and_sipp_call_through_rvoip_media() {
    require("kamailio");
    require("sipp");
    let dir = common::test_dir("kam");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (sip, ng, kport, uas, uas_media, uac, uac_media) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );

    // rvoip: the media relay under test.
    let cfg = common::test_config(
        "rvoip.toml",
        &dir,
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{sip}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{ng}")),
            ("port_min = 30000", "port_min = 52000".into()),
            ("port_max = 39999", "port_max = 52999".into()),
        ],
    );
    let mut rvoip = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(Stdio::piped()),
    );

    wait_for_ng(ng);
    // Kamailio with the rtpengine module talking to rvoip.
    let kcfg = std::fs::read_to_string(data.join("kamailio-rtpengine.cfg"))
        .unwrap()
        .replace("@KPORT@", &kport.to_string())
        .replace("@NGPORT@", &ng.to_string())
        .replace("@UASPORT@", &uas.to_string());
    let _kamailio = common::kamailio(&dir, &kcfg);
    wait_for_options(kport);

    // SIPp uas echoing RTP, then the uac playing audio.
    let _uas = Spawned::spawn(
        Command::new("sipp")
            .args([
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                &uas.to_string(),
                "-mi",
                "127.0.0.1",
                "-timeout",
                "60s",
            ])
            .args([
                "-mp",
                &uas_media.to_string(),
                "-rtp_echo",
                "-m",
                "1",
                "-nostdin",
                "-trace_msg",
                "-message_file",
            ])
            .arg(dir.join("uas_messages.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let cap = common::capture::Capture::start();
    let uac_status = Command::new("sipp")
        .args([&format!("127.0.0.1:{kport}"), "-sf"])
        .arg(data.join("uac_pcap.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &uac.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &uac_media.to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "40s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp uac");
    assert!(uac_status.success(), "the SIPp call failed: {uac_status:?}");

    // The uas saw an SDP pointing at rvoip's relay, not at the uac.
    let uas_log = std::fs::read_to_string(dir.join("uas_messages.log")).unwrap_or_default();
    let relay_port = uas_log
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("m=audio ")
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse::<u16>().ok())
        })
        .expect("the uas received an SDP");
    assert!(
        (52000..=52999).contains(&relay_port),
        "SDP points at rvoip's relay port range, got {relay_port}"
    );
    assert!(
        !uas_log.contains(&format!("m=audio {uac_media} ")),
        "the uac's own media port never reaches the uas"
    );

    // Each SIPp received the other's audio from rvoip's relay ports: the
    // uas the uac's 236 pcap packets, the uac their echo.
    let from_relay_to =
        |port: u16| cap.count(|d| (52000..=52999).contains(&d.src.port()) && d.dst.port() == port);
    let (at_uas, at_uac) = (from_relay_to(uas_media), from_relay_to(uac_media));
    eprintln!("kamailio interop: {at_uas} packets reached the uas, {at_uac} the uac");
    assert!(
        at_uas >= 230,
        "{at_uas} of the 236 pcap packets reached the uas"
    );
    assert!(at_uac >= 230, "{at_uac} of the 236 echoes reached the uac");

    // Kamailio drove the relay over ng.
    let _ = Command::new("kill")
        .args(["-TERM", &rvoip.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rvoip.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rvoip did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut log = String::new();
    rvoip
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let requests = counter(&log, "ng counters", "requests");
    let errors = counter(&log, "ng counters", "errors");
    eprintln!("kamailio interop: ng requests {requests}, errors {errors}, relay port {relay_port}");
    assert!(
        requests >= 3,
        "offer, answer and delete arrived over ng: {requests}\n{log}"
    );
    assert_eq!(errors, 0, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 440 Hz tone of `ms` at 16 kHz (the prompt), as a WAV file.
fn tone_wav(path: &Path, ms: u32) {
    let rate = 16_000;
    let n = (rate * ms / 1000) as usize;
    let mut pcm = vec![0i16; n];
    rvoip_codecs::tone::Tone::new(440.0, 12_000.0, rate).fill(&mut pcm);
    let mut f = rvoip_mixer::wav::header(rate, 1, (n * 2) as u32).to_vec();
    for s in pcm {
        f.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, f).unwrap();
}

/// Kamailio's rtpengine module functions drive rvoip's media server: on
/// the caller's ACK, `rtpengine_start_recording()` and
/// `rtpengine_play_media("from-tag=$ft file=…")`. The caller (SIPp playing
/// A-law audio, echoed back by the SIPp uas) hears the prompt (a 440 Hz
/// tone, judged from the packets the capture saw reach it), and the call is
/// recorded: a stereo 8 kHz WAV of the call's length with both sides in it.
#[test]
fn kamailio_drives_recording_and_play_media_over_its_rtpengine_module() {
    require("kamailio");
    require("sipp");
    let dir = common::test_dir("kam-ms");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (sip, ng, kport, uas, uas_media, uac, uac_media) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let recordings = dir.join("recordings");
    let cfg = common::test_config(
        "rvoip.toml",
        &dir,
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{sip}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{ng}")),
            ("port_min = 30000", "port_min = 53200".into()),
            ("port_max = 39999", "port_max = 53299".into()),
            (
                "dir = \"../recordings\"",
                format!("dir = \"{}\"", recordings.display()),
            ),
        ],
    );
    let _rvoip = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rvoip.log")).unwrap()),
    );
    wait_for_ng(ng);
    let prompt = dir.join("beep.wav");
    tone_wav(&prompt, 1000);
    let kcfg = std::fs::read_to_string(data.join("kamailio-mediaserver.cfg"))
        .unwrap()
        .replace("@KPORT@", &kport.to_string())
        .replace("@NGPORT@", &ng.to_string())
        .replace("@UASPORT@", &uas.to_string())
        .replace("@PROMPT@", prompt.to_str().unwrap());
    let _kamailio = common::kamailio(&dir, &kcfg);
    wait_for_options(kport);
    let _uas = Spawned::spawn(
        Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &uas.to_string()])
            .args([
                "-mi",
                "127.0.0.1",
                "-mp",
                &uas_media.to_string(),
                "-rtp_echo",
            ])
            .args(["-m", "1", "-nostdin", "-timeout", "60s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let cap = common::capture::Capture::start();
    let uac_status = Command::new("sipp")
        .args([&format!("127.0.0.1:{kport}"), "-sf"])
        .arg(data.join("uac_pcap.xml"))
        .args(["-i", "127.0.0.1", "-p", &uac.to_string()])
        .args(["-mi", "127.0.0.1", "-mp", &uac_media.to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "40s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp uac");
    assert!(uac_status.success(), "the SIPp call failed: {uac_status:?}");
    std::thread::sleep(Duration::from_millis(500));

    // The caller heard the prompt: 20 ms blocks from the relay to it in
    // which 440 Hz carries most of the power, about a second of them.
    let mut beeps = 0;
    for d in cap.all() {
        if !(53200..=53299).contains(&d.src.port()) || d.dst.port() != uac_media {
            continue;
        }
        let payload = d.head.get(12..).unwrap_or_default();
        let mut pcm = vec![0i16; payload.len()];
        rvoip_codecs::g711::decode_alaw(payload, &mut pcm);
        let power: f64 =
            pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len().max(1) as f64;
        let g = rvoip_codecs::tone::goertzel(&pcm, 440.0, 8000);
        let n = pcm.len().max(1) as f64;

        if power > 1e4 && 2.0 * g / (n * n) / power > 0.5 {
            beeps += 1;
        }
    }

    assert!(
        (40..=60).contains(&beeps),
        "the caller heard the 1 s prompt: {beeps} frames of it"
    );

    // The call was recorded: once the BYE's delete is answered, its WAV is
    // complete.
    let wav = std::fs::read_dir(&recordings)
        .unwrap_or_else(|e| panic!("{}: {e}", recordings.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wav"))
        .expect("a recording");
    let bytes = std::fs::read(&wav).unwrap();
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(&bytes[22..24], &2u16.to_le_bytes(), "stereo");
    assert_eq!(&bytes[24..28], &8000u32.to_le_bytes(), "8 kHz for G.711");
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let secs = left.len() as f64 / 8000.0;
    // The uac's 8 s pause after its ACK, less the moment before the
    // recording started.
    assert!((6.5..=9.0).contains(&secs), "the call's length: {secs} s");
    let (l, r) = (
        rvoip_codecs::tone::level_dbov(&left),
        rvoip_codecs::tone::level_dbov(&right),
    );
    assert!(l > -45.0, "the caller's audio on the left: {l} dBov");
    assert!(r > -45.0, "the echo on the right: {r} dBov");
    let meta = wav.with_extension("json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    assert_eq!(meta["codecs"][0], "PCMA/8000", "{meta}");
    let _ = std::fs::remove_dir_all(&dir);
}
