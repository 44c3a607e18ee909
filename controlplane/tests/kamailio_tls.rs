//! Kamailio over mutual TLS as a trunk peer of the SBC (`config/sbc.toml`
//! with the core trunk's peer `transport = "tls"`, TLS listeners in both
//! realms, `[tls] client_ca` set): rvoip opens the TLS connection to
//! Kamailio presenting its certificate, which Kamailio's OpenSSL requires
//! and verifies; Kamailio sends calls to rvoip over TLS presenting its
//! own, which rvoip requires and verifies. SIPp calls both ways complete.
//!
//! Needs `kamailio` with `kamailio-tls-modules` and `sip-tester`
//! (installed by `.ci/run`).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sipp::{sipp, uas};
use common::{appliance, free_tcp_port, free_udp_port, test_config, test_dir, tls_file};
use rvoip_dataplane::sip::Limits;
use rvoip_dataplane::sip::stream::StreamSession;
use rvoip_dataplane::sip::tls::{ServerName, TlsStream, client_config};

/// Waits until something accepts TCP connections on `port`.
fn wait_tcp(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kamailio_is_a_mutual_tls_trunk_peer_both_ways() {
    for tool in ["kamailio", "sipp"] {
        assert!(
            Command::new("which")
                .arg(tool)
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is not installed (.ci/run installs it)"
        );
    }
    let dir = test_dir("kam-tls");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (access, core, uas_port, kudp) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let (access_tls, core_tls, ktls) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let (crt, key) = (
        tls_file("localhost-test-only.crt"),
        tls_file("localhost-test-only.key"),
    );

    // Kamailio: TLS both ways with certificates required and verified.
    let domains = std::fs::read_to_string(data.join("kamailio-tls-domains.cfg"))
        .unwrap()
        .replace("@CRT@", &crt.display().to_string())
        .replace("@KEY@", &key.display().to_string());
    std::fs::write(dir.join("tls.cfg"), domains).unwrap();
    let kcfg = std::fs::read_to_string(data.join("kamailio-tls.cfg"))
        .unwrap()
        .replace("@KUDP@", &kudp.to_string())
        .replace("@KTLS@", &ktls.to_string())
        .replace("@RVOIPTLS@", &access_tls.to_string())
        .replace("@UASPORT@", &uas_port.to_string())
        .replace("@TLSCFG@", &dir.join("tls.cfg").display().to_string());
    let _kamailio = common::kamailio(&dir, &kcfg);
    wait_tcp(ktls, "kamailio");

    // rvoip: the core trunk's peer is Kamailio over TLS; TLS listeners in
    // both realms; clients over TLS must present a certificate.
    let mut r = common::sbc_ports(access, free_udp_port(), core, 27600);
    r.insert(
        0,
        (
            "{ address = \"127.0.0.1:5070\", priority = 1 }",
            format!("{{ address = \"127.0.0.1:{ktls}\", priority = 1, transport = \"tls\" }}"),
        ),
    );
    r.insert(
        0,
        (
            "    { address = \"127.0.0.1:5072\", priority = 2 },\n",
            String::new(),
        ),
    );
    r.push((
        "]\ndomains",
        format!(
            "    {{ address = \"127.0.0.1:{access_tls}\", transport = \"tls\", realm = \"access\" }},\n    \
{{ address = \"127.0.0.1:{core_tls}\", transport = \"tls\", realm = \"core\" }},\n]\ndomains"
        ),
    ));
    r.push((
        "[capture]",
        format!(
            "[tls]\ncertificate = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n[capture]",
            crt.display(),
            key.display(),
            crt.display()
        ),
    ));
    let config = test_config("sbc.toml", &dir, &r);
    let _app = appliance(&dir, &config, access);
    wait_tcp(access_tls, "rvoip");
    let log = || {
        format!(
            "rvoip:\n{}\nkamailio:\n{}",
            std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default()
        )
    };

    // A client over TLS without a certificate is refused by rvoip.
    let mut bare = TcpStream::connect(("127.0.0.1", access_tls)).unwrap();
    bare.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let config_no_cert = client_config(&crt, None).unwrap();
    let mut session = TlsStream::client(
        config_no_cert,
        ServerName::try_from("localhost").unwrap(),
        Limits::default(),
    )
    .unwrap();
    session
        .send(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let refused = (|| {
        let mut buf = [0u8; 8192];
        for _ in 0..20 {
            use std::io::Write;
            if !session.wire().is_empty() {
                let n = bare.write(session.wire()).ok()?;
                session.consumed(n);
            }
            match bare.read(&mut buf) {
                Ok(0) | Err(_) => return Some(true),
                Ok(n) => {
                    if session.on_bytes(&buf[..n]).is_err() {
                        return Some(true);
                    }
                    if let Ok(Some(m)) = session.poll_message() {
                        panic!(
                            "answered without a client certificate: {:?}",
                            String::from_utf8_lossy(&m)
                        );
                    }
                }
            }
        }
        Some(false)
    })();
    assert_eq!(
        refused,
        Some(true),
        "a client without a certificate was served"
    );

    std::fs::create_dir_all(dir.join("uas")).unwrap();
    let _uas = uas(&dir.join("uas"), uas_port, &["-sn", "uas"], &["-aa"]);
    // A SIPp UAC's call to `number` through `to`, 500 ms long.
    let call = |name: &str, to: u16, number: &str| {
        sipp(
            &dir,
            name,
            &[
                &format!("127.0.0.1:{to}"),
                "-sn",
                "uac",
                "-s",
                number,
                "-m",
                "1",
                "-d",
                "500",
                "-i",
                "127.0.0.1",
                "-p",
                &free_udp_port().to_string(),
                "-timeout",
                "30s",
            ],
            Duration::from_secs(40),
        )
    };
    // Call 1: SIPp → rvoip (UDP) → Kamailio (TLS, rvoip the client) → UAS.
    let one = call("uac-rvoip", access, "1000");
    assert_eq!((one.successful, one.failed), (1, 0), "{}", log());
    // Call 2: SIPp → Kamailio (UDP) → rvoip (TLS, Kamailio the client,
    // its certificate verified) → Kamailio (TLS) → UAS.
    let two = call("uac-kamailio", kudp, "2000");
    assert_eq!((two.successful, two.failed), (1, 0), "{}", log());
    let cdrs = common::wait_cdrs(&dir, 2, Duration::from_secs(10), log);
    for c in &cdrs {
        assert_eq!(
            (c["a_status"].as_u64(), c["b_status"].as_u64()),
            (Some(200), Some(200)),
            "{c}"
        );
        assert_eq!(c["trunk"], "core", "{c}");
        assert_eq!(c["end_reason"], "bye-caller", "{c}");
    }
    // Kamailio saw both INVITEs and both BYEs from rvoip over TLS.
    let klog = std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default();
    for m in ["INVITE", "BYE"] {
        let n = klog
            .lines()
            .filter(|l| l.contains(&format!("from rvoip over TLS: {m}")))
            .count();
        assert!(n >= 2, "{m} from rvoip over TLS seen {n} times:\n{}", log());
    }
}
