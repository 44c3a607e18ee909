//! `rvoip run` as an operator starts it: it binds its SIP listeners, starts
//! and attaches its control plane, answers on the wire, stops cleanly on
//! SIGTERM, and refuses a bad configuration. `rvoip dataplane` alone answers
//! 503 until a control plane attaches.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spawned, free_udp_port, test_config, test_dir};

fn options(port: u16, call_id: &str, cseq_method: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id};rport\r\n\
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

fn client() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    sock
}

/// Asks until the answer starts with `status`, within 15 s.
fn ask_until(sock: &UdpSocket, port: u16, msg: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(r) = ask(sock, port, msg)
            && r.starts_with(status)
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no {status} from rvoip");
    }
}

fn start(role: &str, name: &str) -> (Spawned, u16, std::path::PathBuf) {
    let port = free_udp_port();
    let (app, dir) = start_at(role, name, port, &[]);
    (app, port, dir)
}

/// `rvoip ROLE` on `config/rvoip.toml` in a directory of its own, its SIP
/// listener on `port`, with `env` set; its stderr piped.
fn start_at(
    role: &str,
    name: &str,
    port: u16,
    env: &[(&str, &str)],
) -> (Spawned, std::path::PathBuf) {
    let dir = test_dir(name);
    let cfg = test_config(
        "rvoip.toml",
        &dir,
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{port}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
        ],
    );
    let app = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .arg(role)
            .arg("--config")
            .arg(&cfg)
            .envs(env.iter().copied())
            .stderr(Stdio::piped()),
    );
    (app, dir)
}

/// Its exit status, waiting at most `limit`.
fn exit_within(app: &mut Spawned, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = app.0.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What it wrote to its stderr (once it has exited).
fn log_of(app: &mut Spawned) -> String {
    let mut log = String::new();
    if let Some(mut err) = app.0.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    log
}

#[test]
fn run_answers_on_the_wire_and_stops_on_sigterm() {
    let (mut app, port, dir) = start("run", "run");
    let sock = client();
    // The control plane attaches and answers OPTIONS for this element.
    let reply = ask_until(
        &sock,
        port,
        &options(port, "run-1", "OPTIONS"),
        "SIP/2.0 200 OK\r\n",
    );
    assert!(
        reply.contains("\r\nCall-ID: run-1\r\n")
            && reply.contains("branch=z9hG4bK-run-1")
            && reply.contains("\r\nAllow: ")
    );
    assert!(
        reply.contains(";received=127.0.0.1") && reply.contains(";rport="),
        "RFC 3581 fix-up: {reply}"
    );
    // A malformed request is answered by the dataplane's edge.
    let reply =
        ask(&sock, port, &options(port, "run-2", "INVITE")).expect("answer to a malformed request");
    assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"), "{reply}");
    assert_eq!(
        ask(&sock, port, "\x00\x01 not sip at all"),
        None,
        "garbage is dropped"
    );

    let status = app.terminate().expect("rvoip stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = log_of(&mut app);
    assert!(
        log.contains("SIP listening") && log.contains("control plane attached"),
        "{log}"
    );
    assert!(
        log.contains("malformed_requests=1") && log.contains("unparsable=1"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dataplane_without_control_plane_answers_503() {
    let (mut app, port, dir) = start("dataplane", "dponly");
    let sock = client();
    let reply = ask_until(
        &sock,
        port,
        &options(port, "dp-1", "OPTIONS"),
        "SIP/2.0 503 Service Unavailable\r\n",
    );
    assert!(reply.contains("\r\nRetry-After: 5\r\n"), "{reply}");
    assert!(app.terminate().is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_configuration_stops_the_start_with_file_line_and_key() {
    let dir = test_dir("badcfg");
    let cfg = test_config(
        "rvoip.toml",
        &dir,
        &[(
            "timeout_secs = 60",
            "timeout_secs = 60\ntimeout_sec = 5".into(),
        )],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("timeout_sec "))
        .map(|n| n + 1)
        .unwrap_or(0);
    assert!(
        err.contains(&format!(
            "rvoip.toml:{line}: media.timeout_sec: unknown field `timeout_sec`"
        )),
        "{err}"
    );

    let cfg = test_config(
        "rvoip.toml",
        &dir,
        &[("port_max = 39999", "port_max = 20000".into())],
    );
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

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[test]
fn sighup_is_ignored_and_a_killed_supervisor_leaves_no_control_plane_behind() {
    let (mut app, port, dir) = start("run", "hup");
    let sock = client();
    ask_until(
        &sock,
        port,
        &options(port, "hup-1", "OPTIONS"),
        "SIP/2.0 200 OK\r\n",
    );
    let supervisor = app.0.id();
    let control_plane = children(supervisor);
    assert_eq!(
        control_plane.len(),
        1,
        "one control-plane child: {control_plane:?}"
    );
    let control_plane = control_plane[0];

    // SIGHUP to the appliance alone, then to its whole process group (what
    // a closed terminal does): both processes stay and answer.
    send_signal(supervisor, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    send_signal_group(supervisor, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        app.0.try_wait().expect("wait").is_none(),
        "rvoip run survived SIGHUP"
    );
    assert!(alive(control_plane), "the control plane survived SIGHUP");
    ask_until(
        &sock,
        port,
        &options(port, "hup-2", "OPTIONS"),
        "SIP/2.0 200 OK\r\n",
    );

    // The supervisor killed outright: its control plane goes too, so the
    // next start can attach.
    send_signal(supervisor, libc::SIGKILL);
    let _ = app.0.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(control_plane) {
        assert!(
            Instant::now() < deadline,
            "control plane {control_plane} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = log_of(&mut app);
    assert!(log.contains("SIGHUP received"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(unsafe_code)]
fn send_signal_group(leader: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the process group of a process this test started.
    unsafe {
        libc::kill(-(leader as libc::pid_t), signal);
    }
}

#[test]
fn a_second_instance_on_an_address_already_served_stops_with_a_clear_error() {
    let (mut first, port, dir) = start("run", "first");
    let sock = client();
    ask_until(
        &sock,
        port,
        &options(port, "dup-1", "OPTIONS"),
        "SIP/2.0 200 OK\r\n",
    );
    // Another instance: its own directory and rings, the same SIP address.
    let (mut second, dir2) = start_at("run", "second", port, &[]);
    let status = exit_within(&mut second, Duration::from_secs(10));
    assert!(!status.success(), "second instance started");
    let err = log_of(&mut second);
    assert!(
        err.contains(&format!("127.0.0.1:{port} (udp) is already served")),
        "{err}"
    );
    // The first still has all of its traffic.
    for i in 0..20 {
        ask_until(
            &sock,
            port,
            &options(port, &format!("dup-after-{i}"), "OPTIONS"),
            "SIP/2.0 200 OK\r\n",
        );
    }
    assert!(first.terminate().is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

/// Shutdown signals the control plane itself: with no `kill` program to be
/// found (an empty PATH) the control plane still stops cleanly, in well
/// under the 5 s after which it would be killed outright.
#[test]
fn shutdown_stops_the_control_plane_without_any_external_program() {
    let port = free_udp_port();
    let (mut app, dir) = start_at("run", "nopath", port, &[("PATH", "")]);
    let sock = client();
    ask_until(
        &sock,
        port,
        &options(port, "nopath-1", "OPTIONS"),
        "SIP/2.0 200 OK\r\n",
    );
    send_signal(app.0.id(), libc::SIGTERM);
    let started = Instant::now();
    let status = exit_within(&mut app, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let log = log_of(&mut app);
    // The control plane's own clean exit logs its counters.
    assert!(log.contains("control plane counters"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
