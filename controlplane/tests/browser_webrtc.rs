//! A real browser through `config/webrtc.toml`: headless Chromium (Debian
//! `chromium`, fake microphone) runs a page using JsSIP (from npm, bundled
//! by `tests/browser/jssip.sh`), registers alice over WSS with digest
//! authentication, calls a SIPp UAS on the core trunk that echoes the RTP
//! it receives, and is called by a SIPp UAC on the core side that plays
//! G.711 from a pcap. Media is WebRTC on the browser's side (ICE-lite,
//! DTLS-SRTP, rtcp-mux, terminated by the relay) and plain RTP on the
//! core's. The page reports what WebRTC's `getStats()` says it received;
//! the relay's CDRs say what it received from each side.
//!
//! Needs `chromium`, `npm` (JsSIP and esbuild from the npm registry) and
//! `sip-tester`; `.ci/run` installs them.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::sipp::{scenario, sipp, uas};
use common::{
    Spawned, appliance, assert_answered_with_media, free_tcp_port, free_udp_port, test_config,
    test_dir, tls_file,
};

/// The JsSIP bundle, built once per target directory (and once per run:
/// the tests side by side wait for the one build).
fn jssip() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/jssip.sh");
            let status = Command::new("sh").arg(script).arg(&out).status().unwrap();
            assert!(
                status.success(),
                "building the JsSIP bundle failed (npm reachable?)"
            );
            out.join("jssip.js")
        })
        .clone()
}

/// One step the page reported: its name and JSON data.
type Report = (String, serde_json::Value);

/// Serves the page and the bundle; forwards the page's reports.
fn serve(listener: TcpListener, page: String, bundle: Vec<u8>, reports: mpsc::Sender<Report>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let (kind, body): (&str, Vec<u8>) = if path.starts_with("/phone.html") {
            ("text/html", page.clone().into_bytes())
        } else if path == "/jssip.js" {
            ("text/javascript", bundle.clone())
        } else if let Some(query) = path.strip_prefix("/report?") {
            let mut step = String::new();
            let mut data = serde_json::Value::Null;
            for kv in query.split('&') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let v = percent_decode(v);
                match k {
                    "step" => step = v,
                    "data" => data = serde_json::from_str(&v).unwrap_or(serde_json::Value::Null),
                    _ => {}
                }
            }
            if reports.send((step, data)).is_err() {
                return;
            }
            ("text/plain", b"ok".to_vec())
        } else {
            ("text/plain", Vec::new())
        };
        let _ = conn.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let _ = conn.write_all(&body);
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the page to report `step` (failing on an error it reports).
fn expect(
    reports: &mpsc::Receiver<Report>,
    step: &str,
    within: Duration,
    log: &dyn Fn() -> String,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok((s, data)) if s == step => return data,
            Ok((s, data)) if s.contains("failed") || s == "error" => {
                panic!("the page reported {s}: {data}\n{}", log())
            }
            Ok(_) => {}
            Err(_) => panic!(
                "the page did not report {step} within {within:?}\n{}",
                log()
            ),
        }
    }
}

/// The appliance on `config/webrtc.toml`, a SIPp UAS on its core trunk
/// (echoing RTP) run with `scenario_args`, and headless Chromium on the
/// page with `query` added.
struct Rig {
    dir: PathBuf,
    reports: mpsc::Receiver<Report>,
    /// The core side's SIP port of the appliance.
    core: u16,
    /// The appliance's metrics port.
    metrics: u16,
    _app: Spawned,
    _uas: Spawned,
    _chromium: Spawned,
}

impl Rig {
    /// `media`: the relay's port range (tests run side by side).
    fn start(name: &str, media: (u16, u16), scenario_args: &[&str], query: &str) -> Rig {
        for tool in ["chromium", "sipp", "npm"] {
            assert!(
                Command::new("which")
                    .arg(tool)
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{tool} is not installed (.ci/run installs it)"
            );
        }
        let bundle = std::fs::read(jssip()).unwrap();
        let dir = test_dir(name);
        let (tls, wss, ws, core, uas_port, uas_media) = (
            free_tcp_port(),
            free_tcp_port(),
            free_tcp_port(),
            free_udp_port(),
            free_udp_port(),
            free_udp_port(),
        );
        let metrics = free_tcp_port();
        let r = vec![
            ("127.0.0.1:5061", format!("127.0.0.1:{tls}")),
            ("127.0.0.1:8443", format!("127.0.0.1:{wss}")),
            ("127.0.0.1:8080", format!("127.0.0.1:{ws}")),
            ("127.0.0.1:5062", format!("127.0.0.1:{core}")),
            ("127.0.0.1:5070", format!("127.0.0.1:{uas_port}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
            ("127.0.0.1:9464", format!("127.0.0.1:{metrics}")),
            ("port_min = 30000", format!("port_min = {}", media.0)),
            ("port_max = 39999", format!("port_max = {}", media.1)),
            (
                "tls/localhost-test-only.crt",
                tls_file("localhost-test-only.crt").display().to_string(),
            ),
            (
                "tls/localhost-test-only.key",
                tls_file("localhost-test-only.key").display().to_string(),
            ),
        ];
        let config = test_config("webrtc.toml", &dir, &r);
        let app = appliance(&dir, &config, core);

        // The core trunk: a SIPp UAS that answers and echoes RTP.
        std::fs::create_dir_all(dir.join("uas")).unwrap();
        let uas = uas(
            &dir.join("uas"),
            uas_port,
            scenario_args,
            &[
                "-aa",
                "-rtp_echo",
                "-mi",
                "127.0.0.1",
                "-mp",
                &uas_media.to_string(),
            ],
        );

        // The page, served by this test.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let http = listener.local_addr().unwrap().port();
        let page = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/phone.html"),
        )
        .unwrap();
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || serve(listener, page, bundle, tx));
        let url = format!(
            "http://127.0.0.1:{http}/phone.html?wss=wss://127.0.0.1:{wss}/ws&user=alice&password=alicepw&call=1000{query}"
        );
        let chromium = Spawned::spawn(
            Command::new("chromium")
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    "--ignore-certificate-errors",
                    "--autoplay-policy=no-user-gesture-required",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.join("chromium").display()
                ))
                .arg(&url)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("chromium.log")).unwrap()),
        );
        Rig {
            dir,
            reports,
            core,
            metrics,
            _app: app,
            _uas: uas,
            _chromium: chromium,
        }
    }

    /// What the appliance logged, for failure messages.
    fn log(&self) -> String {
        format!(
            "rvoip log:\n{}",
            std::fs::read_to_string(self.dir.join("rvoip.log")).unwrap_or_default()
        )
    }
}

#[test]
fn chromium_with_jssip_registers_over_wss_calls_and_is_called_with_webrtc_media() {
    let rig = Rig::start("browser", (27900, 27999), &["-sn", "uas"], "");
    let (dir, reports, core, metrics) = (&rig.dir, &rig.reports, rig.core, rig.metrics);
    let log = || rig.log();

    // Registered over WSS; the outgoing call to the core is answered and
    // the browser hears its own audio echoed back through the relay.
    expect(reports, "registered", Duration::from_secs(30), &log);
    expect(reports, "outgoing-confirmed", Duration::from_secs(15), &log);
    let out = expect(reports, "outgoing-stats", Duration::from_secs(15), &log);
    let packets = out["packets"].as_u64().unwrap_or(0);
    let sent = out["sent"].as_u64().unwrap_or(0);
    assert!(
        sent > 100,
        "the browser sent {sent} packets: {out}\n{}",
        log()
    );
    assert!(
        packets > 100,
        "the browser received {packets} packets of the echo: {out}\n{}",
        log()
    );
    eprintln!("outgoing call, as the page saw it: {out}");
    // The fake microphone's beep, echoed by the core, is what the caller
    // hears (RMS of the played-out track, and WebRTC's own energy).
    assert!(
        out["heard"].as_f64().unwrap_or(0.0) > 0.05,
        "silence came back: {out}"
    );
    assert!(
        out["energy"].as_f64().unwrap_or(0.0) > 0.0,
        "silence came back: {out}"
    );
    expect(reports, "outgoing-ended", Duration::from_secs(10), &log);

    // Called from the core side: the UAC plays G.711 A-law, then hangs up.
    let uac = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            sipp(
                &dir,
                "uac-to-alice",
                &[
                    &format!("127.0.0.1:{core}"),
                    "-sf",
                    scenario("uac_pcap_user.xml").to_str().unwrap(),
                    "-s",
                    "alice",
                    "-m",
                    "1",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &free_udp_port().to_string(),
                    "-mi",
                    "127.0.0.1",
                    "-mp",
                    &free_udp_port().to_string(),
                    "-timeout",
                    "40s",
                ],
                Duration::from_secs(50),
            )
        })
    };
    expect(reports, "incoming", Duration::from_secs(15), &log);
    let inc = expect(reports, "incoming-stats", Duration::from_secs(15), &log);
    let packets = inc["packets"].as_u64().unwrap_or(0);
    assert!(
        packets > 50,
        "the browser received {packets} packets from the core: {inc}\n{}",
        log()
    );
    eprintln!("incoming call, as the page saw it: {inc}");
    assert!(
        inc["heard"].as_f64().unwrap_or(0.0) > 0.05,
        "silence from the core: {inc}"
    );
    assert!(
        inc["energy"].as_f64().unwrap_or(0.0) > 0.0,
        "silence from the core: {inc}"
    );
    let ended = expect(reports, "incoming-ended", Duration::from_secs(20), &log);
    assert_eq!(ended["originator"], "remote", "{ended}");
    let stats = uac.join().unwrap();
    assert_eq!((stats.successful, stats.failed), (1, 0), "{}", log());

    // Called, rvoip offered full ICE to the browser and, controlling,
    // nominated the pair its check got answered on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nominated = scrape(metrics)
            .lines()
            .find(|l| l.starts_with("rvoip_webrtc_events_total{event=\"ice_nominated\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if nominated >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pair nominated by rvoip's checks\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The relay received media from both sides of both calls.
    let cdrs = common::wait_cdrs(dir, 2, Duration::from_secs(10), log);
    for c in &cdrs {
        assert_answered_with_media(c);
    }
}

/// The text of `/metrics` on 127.0.0.1:`port` (empty when unreachable).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// What one of the core's media sockets echoed: packets per payload type.
type Echoed = std::collections::BTreeMap<u8, u64>;

/// Echoes every RTP packet `sock` receives to its sender until `stop` (at
/// most a minute), counting them by payload type (RTCP is not echoed).
fn echo(sock: std::net::UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Echoed> {
    std::thread::spawn(move || {
        let mut seen = Echoed::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 || (192..=223).contains(&buf[1]) {
                continue;
            }
            *seen.entry(buf[1] & 0x7f).or_default() += 1;
            let _ = sock.send_to(&buf[..n], from);
        }
        seen
    })
}

#[test]
fn chromium_bundles_audio_and_video_on_one_transport_through_the_relay() {
    // The core's media: one socket per line, each echoing what it gets.
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (audio, video) = (bind(), bind());
    let keys = [
        ("audio_port", audio.local_addr().unwrap().port()),
        ("video_port", video.local_addr().unwrap().port()),
    ]
    .map(|(k, p)| (k, p.to_string()));
    let uas_av = scenario("uas_av.xml");
    let rig = Rig::start(
        "browser-av",
        (27200, 27299),
        &[
            "-sf",
            uas_av.to_str().unwrap(),
            "-key",
            keys[0].0,
            &keys[0].1,
            "-key",
            keys[1].0,
            &keys[1].1,
        ],
        "&video=1",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (audio, video) = (echo(audio, stop.clone()), echo(video, stop.clone()));
    let log = || rig.log();
    expect(&rig.reports, "registered", Duration::from_secs(30), &log);
    expect(
        &rig.reports,
        "video-confirmed",
        Duration::from_secs(15),
        &log,
    );
    let av = expect(&rig.reports, "video-stats", Duration::from_secs(15), &log);
    eprintln!("audio and video call, as the page saw it: {av}");
    // rvoip accepted the browser's bundle: one transport carries both.
    assert_eq!(av["bundle"], "a=group:BUNDLE 0 1", "{av}");
    assert_eq!(av["transports"], 1, "{av}");
    // The relay told the lines apart on the one transport: the core's
    // audio socket got PCMU only, its video socket VP8 only; and both
    // echoes came back to the browser on the one transport.
    for (what, n) in [
        ("audio sent", "sent"),
        ("audio received", "packets"),
        ("video sent", "videoSent"),
        ("video received", "videoPackets"),
    ] {
        let n = av[n].as_u64().unwrap_or(0);
        assert!(n > 50, "{what}: {n} packets: {av}\n{}", log());
    }
    assert!(
        av["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "no video frame decoded: {av}"
    );
    assert!(
        av["heard"].as_f64().unwrap_or(0.0) > 0.05,
        "silence came back: {av}"
    );
    expect(&rig.reports, "video-ended", Duration::from_secs(10), &log);
    let cdrs = common::wait_cdrs(&rig.dir, 1, Duration::from_secs(10), log);
    assert_answered_with_media(&cdrs[0]);
    drop(rig);
    stop.store(true, Ordering::Relaxed);
    let (audio, video) = (audio.join().unwrap(), video.join().unwrap());
    eprintln!("the core's audio socket got {audio:?}, its video socket {video:?}");
    assert!(
        audio.keys().eq([&0]) && audio[&0] > 50,
        "PCMU alone on the audio line: {audio:?}"
    );
    assert!(
        !video.is_empty() && video.keys().all(|pt| *pt >= 96) && video.values().sum::<u64>() > 50,
        "VP8 alone on the video line: {video:?}"
    );
}
