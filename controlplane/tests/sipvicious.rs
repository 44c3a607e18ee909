//! A password guesser nobody here wrote, sipvicious' `svcrack`, against
//! `config/proxy.toml`: its source is refused after 20 failed attempts, so
//! it never reaches the right password at the end of its list, while the
//! user's own phone, from another address, still registers.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Spawned, free_udp_port, test_config, test_dir};
use rvoip_controlplane::registrar::digest::answer_challenge;

/// A REGISTER for alice from `sock`, with `auth` (an Authorization line or
/// ""), and the status of the answer and its challenge, if any.
fn register(sock: &UdpSocket, port: u16, cseq: u32, auth: &str) -> (u16, Option<String>) {
    let local = sock.local_addr().unwrap();
    let msg = format!(
        "REGISTER sip:rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-phone-{cseq};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@rvoip.test>;tag=phone\r\nTo: <sip:alice@rvoip.test>\r\n\
Call-ID: phone@{local}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@{local}>\r\nExpires: 600\r\n\
{auth}Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text[8..11].parse().unwrap();
    let challenge = text
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .map(str::to_owned);
    (status, challenge)
}

/// Registers alice with her password from `sock`: the status of the second
/// REGISTER (the first is challenged).
fn phone_registers(sock: &UdpSocket, port: u16) -> u16 {
    let (status, challenge) = register(sock, port, 1, "");
    if status != 401 {
        return status;
    }
    let value = answer_challenge(
        challenge.unwrap().as_bytes(),
        "alice",
        "alicepw",
        "REGISTER",
        "sip:rvoip.test",
        "0a4f113b",
        1,
    )
    .unwrap();
    register(sock, port, 2, &format!("Authorization: {value}\r\n")).0
}

#[test]
fn svcrack_is_stopped_before_it_finds_the_password() {
    let dir = test_dir("svcrack");
    let port = free_udp_port();
    let config = test_config(
        "proxy.toml",
        &dir,
        &[
            ("127.0.0.1:5060", format!("127.0.0.1:{port}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
        ],
    );
    let log = dir.join("rvoip.log");
    let mut app = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    common::wait_options_ok(port, || std::fs::read_to_string(&log).unwrap_or_default());
    // 200 wrong passwords, then the right one.
    let words: String = (0..200)
        .map(|i| format!("guess{i}\n"))
        .chain(["alicepw\n".to_string()])
        .collect();
    std::fs::write(dir.join("words.txt"), words).unwrap();
    // svcrack keeps asking once refused; 15 s is far longer than it needs
    // for 201 guesses at its pace when nothing stops it.
    let out = Command::new("timeout")
        .args(["15", "svcrack", "-u", "alice", "-d"])
        .arg(dir.join("words.txt"))
        .args([
            "--domain",
            "rvoip.test",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("svcrack (apt-get install sipvicious)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("alicepw"),
        "svcrack found the password:\n{said}"
    );

    // The guesser's address is refused even with the right password ...
    let guesser = UdpSocket::bind("127.0.0.1:0").unwrap();
    guesser
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(register(&guesser, port, 1, "").0, 403);
    // ... the user's phone, elsewhere, registers.
    let phone = UdpSocket::bind("127.0.0.2:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(phone_registers(&phone, port), 200);

    assert!(app.terminate().is_some_and(|s| s.success()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("source banned after failed digest attempts source=127.0.0.1 user=\"alice\""),
        "{text}"
    );
    assert!(
        text.contains("auth_bans=1") && text.contains("registrations=1"),
        "{text}"
    );
    let failures: u64 = text
        .split("auth_failures=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(failures, 20, "guesses counted until the ban: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
