//! The metrics endpoint of `config/sbc.toml` with real peers: SIPp calls
//! with G.711 audio through the SBC, a real Prometheus server (Debian
//! `prometheus`) scraping rvoip every second, and `promtool check metrics`
//! judging the exposition.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sipp::{scenario, sipp, uas};
use common::{Spawned, appliance, free_udp_port, test_config, test_dir};

/// `GET path` from 127.0.0.1:`port`: the status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body_at = text.find("\r\n\r\n")? + 4;
    let body = &text[body_at..];
    // A chunked body is put back together.
    if text[..body_at]
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some(eol) = rest.find("\r\n") {
            let size = usize::from_str_radix(rest[..eol].trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.push_str(rest.get(eol + 2..eol + 2 + size)?);
            rest = rest.get(eol + 4 + size..)?;
        }
        return Some((status, out));
    }
    Some((status, body.to_string()))
}

/// The value of the sample `line_start` (name and labels as written).
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `promtool check metrics` on `text`: its exit status and what it
/// said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian prometheus) is installed by .ci/run");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A Prometheus server in `dir` scraping 127.0.0.1:`target` every second;
/// its own API on 127.0.0.1:`port`.
fn prometheus(dir: &Path, target: u16, port: u16) -> Spawned {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
scrape_configs:\n  - job_name: rvoip\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    Spawned::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap()),
    )
}

/// `text` as a URL query value.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value Prometheus gives for an instant `query` (a single number),
/// once it has one.
fn prometheus_value(port: u16, query: &str) -> Option<f64> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", escape(query)))?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_calls_messages_and_media_and_promtool_accepts_them() {
    let dir = test_dir("ops-metrics");
    let (access, core, metrics, prom) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let mut ports = common::sbc_ports(access, free_udp_port(), core, 26600);
    ports.push(("127.0.0.1:9464", format!("127.0.0.1:{metrics}")));
    let config = test_config("sbc.toml", &dir, &ports);
    let _sbc = appliance(&dir, &config, access);
    let _prometheus = prometheus(&dir, metrics, prom);
    let uas_dir = dir.join("uas");
    std::fs::create_dir_all(&uas_dir).unwrap();
    let mp = free_udp_port().to_string();
    let _uas = uas(&uas_dir, core, &["-sn", "uas"], &["-rtp_echo", "-mp", &mp]);
    // Three calls, each with 4.7 s of G.711 audio played both ways.
    let (uac_port, uac_media) = (free_udp_port().to_string(), free_udp_port().to_string());
    let pcap = scenario("uac_pcap.xml");
    let target = format!("127.0.0.1:{access}");
    let s = sipp(
        &dir,
        "uac",
        &[
            "-sf",
            pcap.to_str().unwrap(),
            "-i",
            "127.0.0.2",
            "-p",
            &uac_port,
            "-mi",
            "127.0.0.2",
            "-mp",
            &uac_media,
            &target,
            "-m",
            "3",
            "-r",
            "3",
        ],
        Duration::from_secs(60),
    );
    assert_eq!((s.successful, s.failed), (3, 0), "{s:?}");
    common::wait_cdrs(&dir, 3, Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
    });

    // What the endpoint shows, once the control plane's next snapshot and
    // the workers' next second are in.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (status, text) = http_get(metrics, "/metrics").expect("the metrics endpoint answers");
        assert_eq!(status, 200);
        let media = sample(&text, "rvoip_media_packets_total{worker=\"0\"} ").unwrap_or(0.0)
            + sample(&text, "rvoip_media_packets_total{worker=\"1\"} ").unwrap_or(0.0);
        if sample(&text, "rvoip_call_mos_count ") == Some(3.0) && media > 0.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the calls:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (ok, said) = promtool(&text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    let l = "{realm=\"access\",trunk=\"core\"} ";
    assert_eq!(
        sample(&text, &format!("rvoip_calls_started_total{l}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("rvoip_calls_answered_total{l}")),
        Some(3.0)
    );
    assert_eq!(sample(&text, &format!("rvoip_calls_active{l}")), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "rvoip_sip_requests_total{direction=\"in\",method=\"INVITE\"} "
        ),
        Some(3.0)
    );
    // The caller's INVITEs went on to the core: three out too.
    assert_eq!(
        sample(
            &text,
            "rvoip_sip_requests_total{direction=\"out\",method=\"INVITE\"} "
        ),
        Some(3.0)
    );
    assert!(
        sample(
            &text,
            "rvoip_sip_responses_total{direction=\"out\",status=\"200\"} "
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "rvoip_call_setup_seconds_count "), Some(3.0));
    // Clean loopback audio: the top MOS buckets only.
    assert_eq!(
        sample(&text, "rvoip_call_mos_bucket{le=\"4\"} "),
        Some(0.0),
        "{text}"
    );
    for family in [
        "rvoip_drops_total",
        "rvoip_srtp_failures_total",
        "rvoip_webrtc_events_total",
        "rvoip_worker_busy_ratio",
        "rvoip_ring_depth",
        "rvoip_ring_refusals_total",
        "rvoip_media_bytes_total",
        "rvoip_call_post_dial_delay_seconds",
        "rvoip_call_loss_ratio",
        "rvoip_call_jitter_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    assert!(text.contains("rvoip_worker_busy_ratio{kind=\"sip\",worker=\"0\"}"));
    assert!(text.contains("rvoip_worker_busy_ratio{kind=\"media\",worker=\"0\"}"));

    // Prometheus scraped it and holds the same figures.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = prometheus_value(prom, "up{job=\"rvoip\"}");
        let answered = prometheus_value(prom, "sum(rvoip_calls_answered_total)");
        let packets = prometheus_value(prom, "sum(rvoip_media_packets_total)");
        if up == Some(1.0) && answered == Some(3.0) && packets.is_some_and(|p| p > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has up={up:?} answered={answered:?} packets={packets:?}: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every query of the Grafana dashboard in deploy/ is valid PromQL that
    // Prometheus answers, over metrics rvoip serves.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/rvoip.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(|e| e.replace("$instance", ".*")))
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in &exprs {
        let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", escape(e))).unwrap();
        assert_eq!(status, 200, "{e}: {body}");
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("rvoip_"))
        {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "the dashboard asks for {name}, which rvoip does not serve"
            );
        }
    }
    // Anything but GET /metrics is turned away.
    assert_eq!(http_get(metrics, "/").map(|r| r.0), Some(404));
}

#[test]
fn a_metrics_port_taken_by_another_program_leaves_the_appliance_running_without_metrics() {
    let dir = test_dir("ops-metrics-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let access = free_udp_port();
    let mut ports = common::sbc_ports(access, free_udp_port(), free_udp_port(), 26500);
    ports.push(("127.0.0.1:9464", format!("127.0.0.1:{port}")));
    let config = test_config("sbc.toml", &dir, &ports);
    // It starts and answers SIP ...
    let _sbc = appliance(&dir, &config, access);
    let log = std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    assert!(log.contains("cannot serve the metrics"), "{log}");
    // ... and its control socket answers.
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["ctl", "--config"])
        .arg(&config)
        .args(["counters", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}
