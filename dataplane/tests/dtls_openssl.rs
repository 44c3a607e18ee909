//! DTLS-SRTP against OpenSSL, an independent DTLS implementation: rvoip's
//! `DtlsLeg` in either role completes a handshake with `openssl s_server`
//! or `s_client` (DTLS 1.2, `use_srtp` SRTP_AES128_CM_SHA1_80, each side
//! presenting a certificate) over UDP on 127.0.0.1, checks OpenSSL's
//! certificate against its fingerprint, and its SRTP keys are exactly the
//! keying material OpenSSL exports (RFC 5764 §4.2).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvoip_dataplane::entropy::SystemEntropy;
use rvoip_dataplane::media::dtls::{DtlsIdentity, DtlsLeg, Fingerprint, Role, SrtpKeys};

fn tls_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/tls")
        .join(name)
}

/// The fingerprint of the test certificate, as OpenSSL computes it.
fn openssl_fingerprint() -> Fingerprint {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(tls_file("localhost-test-only.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().split('=').nth(1).unwrap();
    Fingerprint::parse(&format!("sha-256 {hex}")).unwrap()
}

/// Runs the leg on `sock` against `peer` until it has keys (10 s at most).
fn drive(leg: &mut DtlsLeg, sock: &UdpSocket, peer: Option<std::net::SocketAddr>) -> SrtpKeys {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut peer = peer;
    let mut out: Vec<Vec<u8>> = Vec::new();
    leg.on_timeout(Instant::now(), &mut |p| out.push(p.to_vec()))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(to) = peer {
            for p in out.drain(..) {
                sock.send_to(&p, to).unwrap();
            }
        }
        if let Some(k) = leg.keys() {
            return k.clone();
        }
        assert!(Instant::now() < deadline, "no DTLS keys: {leg:?}");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                peer = Some(from);
                leg.on_packet(&buf[..n], Instant::now(), &mut |p| out.push(p.to_vec()))
                    .unwrap();
            }
            Err(_) => leg
                .on_timeout(Instant::now(), &mut |p| out.push(p.to_vec()))
                .unwrap(),
        }
    }
}

/// The keying material OpenSSL printed, once it has.
fn exported(child: &mut Child) -> Vec<u8> {
    let mut stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(line) = text.lines().find(|l| l.contains("Keying material:")) {
                let _ = tx.send(line.split(':').nth(1).unwrap_or("").trim().to_string());
                return;
            }
        }
    });
    let hex = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("OpenSSL printed no keying material");
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn key(p: &rvoip_dataplane::srtp::SrtpParams) -> Vec<u8> {
    let mut b = [0u8; 46];
    let n = p.master.concatenated(&mut b);
    b[..n].to_vec()
}

/// RFC 5764 §4.2: client key, server key, client salt, server salt.
fn check(keys: &SrtpKeys, material: &[u8], role: Role) {
    assert_eq!(material.len(), 60);
    let client = [&material[..16], &material[32..46]].concat();
    let server = [&material[16..32], &material[46..60]].concat();
    let (ours, theirs) = match role {
        Role::Active => (client, server),
        Role::Passive => (server, client),
    };
    assert_eq!(key(&keys.outbound), ours);
    assert_eq!(key(&keys.inbound), theirs);
}

fn openssl(args: &[&str]) -> Child {
    Command::new("openssl")
        .args(args)
        .args(["-dtls1_2", "-use_srtp", "SRTP_AES128_CM_SHA1_80"])
        .args([
            "-keymatexport",
            "EXTRACTOR-dtls_srtp",
            "-keymatexportlen",
            "60",
        ])
        .arg("-cert")
        .arg(tls_file("localhost-test-only.crt"))
        .arg("-key")
        .arg(tls_file("localhost-test-only.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn rvoip_active_against_openssl_s_server_exports_openssls_keys() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = openssl(&[
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-verify",
        "1",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    let mut leg = DtlsLeg::new(
        &identity,
        Role::Active,
        openssl_fingerprint(),
        Instant::now(),
    )
    .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let keys = drive(&mut leg, &sock, Some(([127, 0, 0, 1], port).into()));
    let material = exported(&mut server);
    let _ = server.kill();
    let _ = server.wait();
    check(&keys, &material, Role::Active);
}

#[test]
fn rvoip_passive_against_openssl_s_client_exports_openssls_keys() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let identity = DtlsIdentity::generate(&SystemEntropy::new()).unwrap();
    let mut leg = DtlsLeg::new(
        &identity,
        Role::Passive,
        openssl_fingerprint(),
        Instant::now(),
    )
    .unwrap();
    let mut client = openssl(&["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    let keys = drive(&mut leg, &sock, None);
    let material = exported(&mut client);
    let _ = client.kill();
    let _ = client.wait();
    check(&keys, &material, Role::Passive);
}
