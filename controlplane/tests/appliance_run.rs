//! `rvoip run` as an operator starts it: it binds its SIP listener, answers on
//! the wire, stops cleanly on SIGTERM, and refuses a bad configuration.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}

fn config_text(sip_port: u16) -> String {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rvoip.toml"))
            .expect("config/rvoip.toml");
    base.replace("127.0.0.1:5060", &format!("127.0.0.1:{sip_port}"))
        .replace("127.0.0.1:2223", "127.0.0.1:2299")
}

struct Appliance(Child);

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn options(call_id: &str, cseq_method: &str) -> String {
    format!(
        "OPTIONS sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id};rport\r\n\
From: <sip:probe@rvoip.test>;tag=p1\r\nTo: <sip:rvoip.test>\r\nCall-ID: {call_id}\r\nCSeq: 7 {cseq_method}\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn ask(sock: &UdpSocket, port: u16, msg: &str) -> Option<String> {
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn run_answers_on_the_wire_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("rvoip-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let port = free_udp_port();
    let cfg = dir.join("rvoip.toml");
    std::fs::write(&cfg, config_text(port)).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .expect("rvoip starts");
    let mut app = Appliance(child);

    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        if let Some(r) = ask(&sock, port, &options("run-1", "OPTIONS")) {
            break r;
        }
        assert!(Instant::now() < deadline, "no answer from rvoip run");
    };
    assert!(
        reply.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{reply}"
    );
    assert!(
        reply.contains("\r\nCall-ID: run-1\r\n")
            && reply.contains("branch=z9hG4bK-run-1")
            && reply.contains("\r\nRetry-After: 5\r\n")
    );

    let reply =
        ask(&sock, port, &options("run-2", "INVITE")).expect("answer to a malformed request");
    assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("\r\nCSeq: 7 INVITE\r\n"));

    assert_eq!(
        ask(&sock, port, "\x00\x01 not sip at all"),
        None,
        "garbage is dropped"
    );

    let pid = app.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = app.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "rvoip did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    if let Some(mut err) = app.0.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut log);
    }
    assert!(log.contains("SIP/UDP listening"), "{log}");
    assert!(
        log.contains("unavailable=1")
            && log.contains("malformed_requests=1")
            && log.contains("unparsable=1"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_configuration_stops_the_start_with_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("rvoip-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        config_text(5999).replace("timeout_secs = 60", "timeout_secs = 60\ntimeout_sec = 5"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = config_text(5999)
        .lines()
        .position(|l| l.starts_with("timeout_secs"))
        .map(|n| n + 2)
        .unwrap_or(0);
    assert!(
        err.contains(&format!(
            "bad.toml:{line}: media.timeout_sec: unknown field `timeout_sec`"
        )),
        "{err}"
    );

    std::fs::write(
        &cfg,
        config_text(5999).replace("port_max = 39999", "port_max = 20000"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("media.port_min: must be below media.port_max")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
