//! SIP over TLS into `config/sbc.toml` with a TLS listener in the access
//! realm (`[tls]` with the test-only certificate of `config/tls/`):
//! OpenSSL's `s_client`, an independent TLS implementation, gets its
//! OPTIONS answered over TLS; a caller over TLS (rustls) makes a call to a
//! SIPp UAS on the UDP core, answered, acknowledged and ended, with the
//! BYE and its 200 crossing the TLS connection; plain SIP on the TLS port
//! is refused without a panic or an answer.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sipp::uas;
use common::{Spawned, appliance, free_tcp_port, free_udp_port, test_config, test_dir, tls_file};
use rvoip_dataplane::sip::Limits;
use rvoip_dataplane::sip::stream::StreamSession;
use rvoip_dataplane::sip::tls::{ServerName, TlsStream, client_config};

/// An SBC of `config/sbc.toml` with a TLS listener on `tls` too.
fn sbc(name: &str, tls: u16, media_base: u16) -> (PathBuf, u16, u16, Spawned) {
    let dir = test_dir(name);
    let files = (
        tls_file("localhost-test-only.crt"),
        tls_file("localhost-test-only.key"),
    );
    sbc_in(dir, tls, media_base, files, "")
}

/// [`sbc`] in `dir`, with the certificate and key `files`, and `sip`
/// lines added to `[sip]`.
fn sbc_in(
    dir: PathBuf,
    tls: u16,
    media_base: u16,
    (crt, key): (PathBuf, PathBuf),
    sip: &str,
) -> (PathBuf, u16, u16, Spawned) {
    let (access, core) = (free_udp_port(), free_udp_port());
    let mut r = common::sbc_ports(access, free_udp_port(), core, media_base);
    r.push((
        "]\ndomains",
        format!(
            "    {{ address = \"127.0.0.1:{tls}\", transport = \"tls\", realm = \"access\" }},\n]\n{sip}domains"
        ),
    ));
    r.push((
        "[capture]",
        format!(
            "[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n[capture]",
            crt.display(),
            key.display()
        ),
    ));
    let config = test_config("sbc.toml", &dir, &r);
    let app = appliance(&dir, &config, access);
    (dir, access, core, app)
}

/// A SIP user agent over TLS (rustls), driven by hand.
struct TlsPeer {
    sock: TcpStream,
    session: TlsStream,
}

impl TlsPeer {
    fn connect(port: u16) -> TlsPeer {
        Self::connect_trusting(port, &tls_file("localhost-test-only.crt"))
    }

    /// A peer that trusts the certificate in `ca`.
    fn connect_trusting(port: u16, ca: &Path) -> TlsPeer {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let config = client_config(ca, None).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        TlsPeer {
            sock,
            session: TlsStream::client(config, name, Limits::default()).unwrap(),
        }
    }

    fn flush(&mut self) {
        while !self.session.wire().is_empty() {
            let n = self.sock.write(self.session.wire()).unwrap();
            self.session.consumed(n);
        }
    }

    fn send(&mut self, msg: &str) {
        self.session.send(msg.as_bytes()).unwrap();
        self.flush();
    }

    /// The next message whose start line contains `what`, within 10 s
    /// (others are skipped and returned too).
    fn wait_for(&mut self, what: &str) -> (String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            while let Some(m) = self.session.poll_message().unwrap() {
                let m = String::from_utf8(m).unwrap();
                if m.lines().next().unwrap_or("").contains(what) {
                    return (m, seen);
                }
                seen.push(m);
            }
            assert!(
                Instant::now() < deadline,
                "no {what} over TLS; got {seen:#?}"
            );
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("the TLS connection closed; got {seen:#?}"),
                Ok(n) => {
                    self.session.on_bytes(&buf[..n]).unwrap();
                    self.flush();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Sends an OPTIONS and waits for its 200.
    fn ping(&mut self, tls: u16, n: u32) {
        let me = self.local();
        self.send(&format!(
            "OPTIONS sip:127.0.0.1:{tls};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS {me};branch=z9hG4bK-ping-{n};rport\r\nMax-Forwards: 70\r\n\
From: <sip:probe@rvoip.test>;tag=p{n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ping-{n}@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ));
        self.wait_for("200");
    }

    /// The certificate the server presented.
    fn server_certificate(&self) -> Vec<u8> {
        self.session.peer_certificates().unwrap()[0].to_vec()
    }
}

/// Whether the server closes `sock` within `within` (it reads end of
/// stream or a reset).
fn closed_within(sock: &mut TcpStream, within: Duration) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A self-signed certificate for localhost and 127.0.0.1 made by OpenSSL
/// into `dir` (`NAME.crt`, `NAME.key`).
fn make_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=critical,digitalSignature"])
        .args(["-addext", "extendedKeyUsage=serverAuth,clientAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl req failed");
    (crt, key)
}

#[test]
fn slow_silent_and_excess_connections_are_closed_and_a_renewed_certificate_is_served_without_dropping_any()
 {
    let tls = free_tcp_port();
    let dir = test_dir("tls-limits");
    let old = make_certificate(&dir, "old");
    let live = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&old.0, &live.0).unwrap();
    std::fs::copy(&old.1, &live.1).unwrap();
    let sip =
        "max_connections_per_source = 3\nhandshake_timeout_secs = 3\nconnection_idle_secs = 5\n";
    let (dir, _, _, _app) = sbc_in(dir, tls, 27700, live.clone(), sip);
    let log = || std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();

    // A connection that completes its handshake and keeps talking stays.
    let mut kept = TlsPeer::connect_trusting(tls, &old.0);
    kept.ping(tls, 1);
    assert_eq!(kept.server_certificate(), pem_der(&old.0));
    // Three more that never start TLS: one is refused at once (the source
    // holds 3), the other two are closed after the handshake timeout.
    let mut raw: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", tls)).unwrap())
        .collect();
    let started = Instant::now();
    let mut open = Vec::new();
    let mut refused = 0;
    for mut s in raw.drain(..) {
        if closed_within(&mut s, Duration::from_millis(500)) {
            refused += 1;
        } else {
            open.push(s);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "checks too slow to judge"
    );
    assert_eq!(
        refused,
        1,
        "connections refused at once over the limit\n{}",
        log()
    );
    for s in &mut open {
        assert!(
            closed_within(s, Duration::from_secs(6)),
            "a silent connection was kept\n{}",
            log()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before the handshake timeout"
    );
    // The renewed certificate is taken without a restart: new connections
    // get it, the one up keeps working.
    let new = make_certificate(&dir, "new");
    std::fs::copy(&new.1, dir.join("live.key.tmp")).unwrap();
    std::fs::copy(&new.0, dir.join("live.crt.tmp")).unwrap();
    std::fs::rename(dir.join("live.key.tmp"), &live.1).unwrap();
    std::fs::rename(dir.join("live.crt.tmp"), &live.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        kept.ping(tls, 2);
        let mut fresh = TlsPeer::connect_trusting(tls, &new.0);
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fresh.ping(tls, 3)));
        if served.is_ok() {
            assert_eq!(fresh.server_certificate(), pem_der(&new.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        log().contains("TLS certificate and key read again"),
        "{}",
        log()
    );
    // A connection silent past the idle timeout is closed.
    let mut idle = TlsPeer::connect_trusting(tls, &new.0);
    idle.ping(tls, 4);
    assert!(
        closed_within(&mut idle.sock, Duration::from_secs(8)),
        "an idle connection was kept\n{}",
        log()
    );
}

/// The DER of the certificate in a PEM file, as OpenSSL reads it.
fn pem_der(path: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

#[test]
fn openssl_s_client_gets_options_answered_over_tls() {
    let tls = free_tcp_port();
    let (dir, _, _, _app) = sbc("tls-openssl", tls, 27400);
    let options = format!(
        "OPTIONS sip:127.0.0.1:{tls};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-ossl-1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@rvoip.test>;tag=o1\r\nTo: <sip:127.0.0.1:{tls}>\r\n\
Call-ID: ossl-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let mut client = Spawned::spawn(
        Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .args(["-connect", &format!("127.0.0.1:{tls}")])
            .arg("-CAfile")
            .arg(tls_file("localhost-test-only.crt"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut stdin = client.0.stdin.take().unwrap();
    stdin.write_all(options.as_bytes()).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    drop(stdin);
    let mut out = String::new();
    let mut stdout = client.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let _ = client.terminate();
    let out = reader.join().unwrap();
    assert!(
        out.starts_with("SIP/2.0 200"),
        "s_client read {out:?}; log:\n{}",
        std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
    );
    assert!(out.contains("Call-ID: ossl-1@127.0.0.1"), "{out}");
    assert!(out.contains("SIP/2.0/TLS"), "{out}");
}

/// Makes call `n` from `peer` through the SBC listening for TLS on
/// `tls`: INVITE, its 200 (over TLS, with rvoip's Contact saying TLS), ACK.
/// Returns the To of the 200 and rvoip's Contact URI.
fn call(peer: &mut TlsPeer, tls: u16, n: u32) -> (String, String) {
    let me = peer.local();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    peer.send(&format!(
        "INVITE sip:1000@127.0.0.1:{tls};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS {me};branch=z9hG4bK-tls-{n}-1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:alice@rvoip.test>;tag=a{n}\r\nTo: <sip:1000@rvoip.test>\r\n\
Call-ID: tls-call-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:alice@{me};transport=tls>\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ));
    let (ok, _) = peer.wait_for("200");
    assert!(header(&ok, "CSeq").contains("INVITE"), "{ok}");
    assert!(header(&ok, "Via").starts_with("SIP/2.0/TLS"), "{ok}");
    let to = header(&ok, "To").to_string();
    let contact = header(&ok, "Contact").to_string();
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    assert!(
        target.contains("transport=tls"),
        "rvoip's Contact over TLS: {contact}"
    );
    peer.send(&format!(
        "ACK {target} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-tls-{n}-2;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@rvoip.test>;tag=a{n}\r\nTo: {to}\r\n\
Call-ID: tls-call-{n}@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ));
    (to, target)
}

#[test]
fn calls_over_tls_reach_the_udp_core_and_byes_cross_the_tls_connection_both_ways() {
    let tls = free_tcp_port();
    let (dir, _, core, _app) = sbc("tls-call", tls, 27500);
    std::fs::create_dir_all(dir.join("uas")).unwrap();
    let _uas = uas(&dir.join("uas"), core, &["-sn", "uas"], &["-aa"]);
    let mut peer = TlsPeer::connect(tls);
    let me = peer.local();
    // Call 1: the caller hangs up over TLS; rvoip answers over TLS.
    let (to, target) = call(&mut peer, tls, 1);
    std::thread::sleep(Duration::from_millis(500));
    peer.send(&format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-tls-1-3;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@rvoip.test>;tag=a1\r\nTo: {to}\r\n\
Call-ID: tls-call-1@127.0.0.1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ));
    let (ok, _) = peer.wait_for("200");
    assert!(header(&ok, "CSeq").contains("BYE"), "{ok}");
    // Call 2: the operator hangs up; rvoip's BYE reaches the caller over
    // its TLS connection, with rvoip's Via saying TLS.
    call(&mut peer, tls, 2);
    let config = dir.join("sbc.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(["ctl", "--config"])
        .arg(&config)
        .args(["hangup", "tls-call-2@127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (bye, _) = peer.wait_for("BYE");
    assert!(header(&bye, "Via").starts_with("SIP/2.0/TLS"), "{bye}");
    assert_eq!(header(&bye, "Call-ID"), "tls-call-2@127.0.0.1");
    let vias: Vec<&str> = bye
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
        .collect();
    let mut reply = format!("SIP/2.0 200 OK\r\n{}\r\n", vias.join("\r\n"));
    for h in ["From", "To", "Call-ID", "CSeq"] {
        reply.push_str(&format!("{h}: {}\r\n", header(&bye, h)));
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    peer.send(&reply);
    let log = || std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    let cdrs = common::wait_cdrs(&dir, 2, Duration::from_secs(10), log);
    for (n, reason) in [(1, "bye-caller"), (2, "hangup-operator")] {
        let c = cdrs
            .iter()
            .find(|c| c["a_call_id"] == format!("tls-call-{n}@127.0.0.1").as_str())
            .unwrap_or_else(|| panic!("no CDR of call {n}: {cdrs:?}"));
        assert_eq!(
            (c["a_status"].as_u64(), c["b_status"].as_u64()),
            (Some(200), Some(200)),
            "{c}"
        );
        assert_eq!(c["in_realm"], "access", "{c}");
        assert_eq!(c["end_reason"], reason, "{c}");
    }
    // Plain SIP on the TLS port: refused, nothing answered, no panic.
    let mut plain = TcpStream::connect(("127.0.0.1", tls)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    plain
        .write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("SIP/2.0"));
    // And the appliance still serves TLS.
    let mut again = TlsPeer::connect(tls);
    let me = again.local();
    again.send(&format!(
        "OPTIONS sip:127.0.0.1:{tls};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS {me};branch=z9hG4bK-tls-9;rport\r\nMax-Forwards: 70\r\n\
From: <sip:probe@rvoip.test>;tag=p1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tls-probe@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ));
    again.wait_for("200");
}
