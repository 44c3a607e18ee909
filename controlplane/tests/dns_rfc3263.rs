//! RFC 3263 with a real name server — dnsmasq on loopback, started by each
//! test with the records it writes — and real SIPp peers.
//!
//! rvoip as the SBC of `config/dns.toml`, whose core trunk is a name
//! (`sip:trunk.rvoip.test`) published by a real name server — dnsmasq on
//! loopback, started by each test with the records it writes — and served
//! by real SIPp peers: RFC 3263 resolution (NAPTR → SRV → A), failover
//! within a call to the next SRV target, the failed target avoided for
//! `avoid_secs` and taken back after it, weighted SRV spreading calls, a
//! TTL change re-routing without a restart, an unresolvable name answered
//! with 503 at once, and an IPv6 caller reaching the IPv4 core with media
//! both ways. rvoip as the proxy of `config/proxy.toml` forwarding to a
//! Request-URI or Route that is a name, failing over to the next server
//! when the first answers 503 and avoiding it afterwards.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sipp::{scenario, sipp, uas};
use common::{Spawned, free_udp_port, test_config, test_dir};

/// A dnsmasq answering for `rvoip.test` on 127.0.0.1:`port` from the
/// records given, with `ttl` on every answer; names under `rvoip.test` it
/// has no record for are NXDOMAIN, nothing is forwarded anywhere.
fn dnsmasq(dir: &Path, port: u16, ttl: u32, records: &[String]) -> Spawned {
    let conf = dir.join("dnsmasq.conf");
    let mut text = format!(
        "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
         local=/rvoip.test/\nlocal-ttl={ttl}\n"
    );
    for r in records {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&conf, text).unwrap();
    let d = Spawned::spawn(
        Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dnsmasq.log")).unwrap()),
    );
    common::wait_udp_bound(port);
    d
}

/// The records of the trunk: NAPTR → `_sip._udp` SRV → one A record per
/// server, each server `(port, priority, weight)` on 127.0.0.1.
fn trunk_records(servers: &[(u16, u16, u16)]) -> Vec<String> {
    let mut r = vec![
        "naptr-record=trunk.rvoip.test,10,10,S,SIP+D2U,,_sip._udp.trunk.rvoip.test".to_string(),
    ];
    for (i, (port, priority, weight)) in servers.iter().enumerate() {
        r.push(format!(
            "srv-host=_sip._udp.trunk.rvoip.test,s{i}.trunk.rvoip.test,{port},{priority},{weight}"
        ));
        r.push(format!("host-record=s{i}.trunk.rvoip.test,127.0.0.1"));
    }
    r
}

/// rvoip running `config/dns.toml` on ports of its own, asking the name
/// server on `dns_port`.
struct Sbc {
    _app: Spawned,
    access: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Sbc {
    fn start(dir: &Path, dns_port: u16, media_base: u16, extra: &[(&str, String)]) -> Sbc {
        let access = free_udp_port();
        let mut replacements = vec![
            ("127.0.0.1:5060", format!("127.0.0.1:{access}")),
            ("[::1]:5060", format!("[::1]:{access}")),
            ("127.0.0.1:5062", format!("127.0.0.1:{}", free_udp_port())),
            ("127.0.0.1:5353", format!("127.0.0.1:{dns_port}")),
            ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
            ("port_min = 30000", format!("port_min = {media_base}")),
            (
                "port_max = 39999",
                format!("port_max = {}", media_base + 99),
            ),
        ];
        replacements.extend(extra.iter().cloned());
        let config = test_config("dns.toml", dir, &replacements);
        Sbc {
            _app: common::appliance(dir, &config, access),
            access,
            dir: dir.to_path_buf(),
            log: dir.join("rvoip.log"),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cdrs(&self) -> Vec<serde_json::Value> {
        common::cdrs(&self.dir)
    }

    fn wait_cdrs(&self, n: usize) -> Vec<serde_json::Value> {
        common::wait_cdrs(&self.dir, n, Duration::from_secs(20), || self.log_text())
    }

    /// `calls` calls from SIPp's built-in uac on 127.0.0.2 at `rate` per
    /// second; all must complete. Returns their CDRs.
    fn calls(&self, name: &str, calls: u32, rate: u32) -> Vec<serde_json::Value> {
        let before = self.cdrs().len();
        let port = free_udp_port().to_string();
        let target = format!("127.0.0.1:{}", self.access);
        let (n, r) = (calls.to_string(), rate.to_string());
        let args = [
            "-sn",
            "uac",
            "-i",
            "127.0.0.2",
            "-p",
            &port,
            &target,
            "-m",
            &n,
            "-r",
            &r,
        ];
        let s = sipp(&self.dir, name, &args, Duration::from_secs(120));
        assert_eq!(
            (s.successful, s.failed),
            (u64::from(calls), 0),
            "{name}: {s:?}\n{}",
            self.log_text()
        );
        self.wait_cdrs(before + calls as usize)[before..].to_vec()
    }
}

fn peer(c: &serde_json::Value) -> String {
    c["peer"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_trunk_in_dns_fails_over_within_the_call_and_returns_after_the_avoid_time() {
    let dir = test_dir("dns-failover");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let dns_port = free_udp_port();
    // SRV priority 10 first, 20 second.
    let _dns = dnsmasq(
        &dir,
        dns_port,
        60,
        &trunk_records(&[(p1, 10, 1), (p2, 20, 1)]),
    );
    let sbc = Sbc::start(
        &dir,
        dns_port,
        26000,
        &[
            ("avoid_secs = 10", "avoid_secs = 4".into()),
            (
                "invite_timeout_secs = 3.0",
                "invite_timeout_secs = 1.0".into(),
            ),
            // Only the avoid time brings the first server back here.
            ("health_checks = true", "health_checks = false".into()),
        ],
    );
    let (first, second) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let mut uas1 = uas(&dir, p1, &["-sn", "uas"], &[]);
    let _uas2 = uas(&dir, p2, &["-sn", "uas"], &[]);

    let c = sbc.calls("uac-1", 1, 1);
    assert_eq!(
        (peer(&c[0]), c[0]["attempts"].as_u64()),
        (first.clone(), Some(1)),
        "{c:?}"
    );

    // The first server stops answering: the same call goes on to the
    // second after the INVITE timeout.
    uas1.terminate();
    drop(uas1);
    let c = sbc.calls("uac-2", 1, 1);
    let failed_at = Instant::now();
    assert_eq!(
        (peer(&c[0]), c[0]["attempts"].as_u64()),
        (second.clone(), Some(2)),
        "{c:?}"
    );
    assert!(sbc.log_text().contains("trunk peer is down"));

    // Avoided: the next call goes straight to the second server.
    let c = sbc.calls("uac-3", 1, 1);
    assert_eq!(
        (peer(&c[0]), c[0]["attempts"].as_u64()),
        (second.clone(), Some(1)),
        "{c:?}"
    );

    // Back, and the avoid time over: the first server again.
    let _uas1 = uas(&dir, p1, &["-sn", "uas"], &[]);
    let wait = Duration::from_millis(4_500).saturating_sub(failed_at.elapsed());
    std::thread::sleep(wait);
    let c = sbc.calls("uac-4", 1, 1);
    assert_eq!(
        (peer(&c[0]), c[0]["attempts"].as_u64()),
        (first, Some(1)),
        "{c:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weighted_srv_spreads_calls_and_health_checks_probe_every_server() {
    let dir = test_dir("dns-weights");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let dns_port = free_udp_port();
    // One priority, weights 1 and 3.
    let _dns = dnsmasq(
        &dir,
        dns_port,
        60,
        &trunk_records(&[(p1, 10, 1), (p2, 10, 3)]),
    );
    let sbc = Sbc::start(
        &dir,
        dns_port,
        26100,
        &[(
            "health_interval_secs = 5.0",
            "health_interval_secs = 1.0".into(),
        )],
    );
    let (d1, d2) = (dir.join("uas1"), dir.join("uas2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let _uas1 = uas(&d1, p1, &["-sn", "uas"], &["-trace_msg"]);
    let _uas2 = uas(&d2, p2, &["-sn", "uas"], &["-trace_msg"]);
    let cdrs = sbc.calls("uac-w", 200, 100);
    let to_second = cdrs
        .iter()
        .filter(|c| peer(c) == format!("127.0.0.1:{p2}"))
        .count();
    let to_first = cdrs
        .iter()
        .filter(|c| peer(c) == format!("127.0.0.1:{p1}"))
        .count();
    eprintln!("weights 1:3 → {to_first}:{to_second}");
    assert_eq!(to_first + to_second, 200);
    let share = to_second as f64 / 200.0;
    assert!((0.65..=0.85).contains(&share), "weight 3 of 4 took {share}");
    // Both resolved servers are probed with OPTIONS.
    std::thread::sleep(Duration::from_millis(1500));
    for (d, p) in [(&d1, p1), (&d2, p2)] {
        let msgs = messages(d);
        assert!(
            msgs.contains(&format!("OPTIONS sip:127.0.0.1:{p}")),
            "no health check reached {p}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_dns_answer_reroutes_calls_when_its_ttl_expires() {
    let dir = test_dir("dns-ttl");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let dns_port = free_udp_port();
    let mut dns = dnsmasq(&dir, dns_port, 2, &trunk_records(&[(p1, 10, 1)]));
    let sbc = Sbc::start(
        &dir,
        dns_port,
        26200,
        &[(
            "health_interval_secs = 5.0",
            "health_interval_secs = 1.0".into(),
        )],
    );
    let _uas1 = uas(&dir, p1, &["-sn", "uas"], &[]);
    let _uas2 = uas(&dir, p2, &["-sn", "uas"], &[]);
    let c = sbc.calls("uac-before", 2, 10);
    assert!(
        c.iter().all(|c| peer(c) == format!("127.0.0.1:{p1}")),
        "{c:?}"
    );
    // The zone now publishes only the other server; rvoip is not touched.
    dns.terminate();
    drop(dns);
    let _dns = dnsmasq(&dir, dns_port, 2, &trunk_records(&[(p2, 10, 1)]));
    std::thread::sleep(Duration::from_secs(4));
    let c = sbc.calls("uac-after", 3, 10);
    assert!(
        c.iter().all(|c| peer(c) == format!("127.0.0.1:{p2}")),
        "{c:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unresolvable_trunk_name_gives_the_caller_503_at_once() {
    let dir = test_dir("dns-nxdomain");
    let dns_port = free_udp_port();
    let _dns = dnsmasq(&dir, dns_port, 60, &trunk_records(&[(5070, 10, 1)]));
    let sbc = Sbc::start(
        &dir,
        dns_port,
        26300,
        &[("sip:trunk.rvoip.test", "sip:nowhere.rvoip.test".into())],
    );
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap();
    for n in 0..2 {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            me.port() + 2
        );
        let invite = format!(
            "INVITE sip:+15551234@rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-nx{n}\r\n\
             From: <sip:alice@rvoip.test>;tag=nx{n}\r\nTo: <sip:+15551234@rvoip.test>\r\n\
             Call-ID: nx{n}@127.0.0.2\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let sent = Instant::now();
        sock.send_to(invite.as_bytes(), ("127.0.0.1", sbc.access))
            .unwrap();
        let mut buf = [0u8; 4096];
        let status = loop {
            let (len, _) = sock.recv_from(&mut buf).expect("a final response");
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let code: u16 = text[8..11].parse().unwrap();
            if code >= 200 {
                break code;
            }
        };
        let took = sent.elapsed();
        eprintln!("call {n}: {status} after {took:?}");
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    assert!(
        sbc.log_text().contains("SIP name not resolved"),
        "{}",
        sbc.log_text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Everything SIPp logged in `dir` (its `-trace_msg` files).
fn messages(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with("_messages.log") {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

/// Reads `Name: value` from a SIP message.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l[name.len()..].starts_with(':')
        })
        .map(|l| l[name.len() + 1..].trim())
}

#[test]
fn an_ipv6_caller_reaches_an_ipv4_core_with_media_both_ways_through_the_relay() {
    dual_stack_call("dns-dual-stack", 26400, &[], "127.0.0.1");
}

/// The core realm with a relay address of its own (`media_address`): the
/// core is given 127.0.0.3, the IPv6 caller ::1, and media crosses.
#[test]
fn a_realm_with_its_own_media_address_gives_its_side_that_address() {
    let own = (
        "name = \"core\"\nallow = [\"127.0.0.1/32\"]",
        "name = \"core\"\nallow = [\"127.0.0.1/32\"]\nmedia_address = \"127.0.0.3\"".to_string(),
    );
    dual_stack_call("dns-realm-address", 26500, &[own], "127.0.0.3");
}

/// An IPv6 caller on [::1] calls the IPv4 core (SIPp echoing its RTP)
/// through `config/dns.toml` with `extra`; the core must be offered the
/// relay at `core_ip`.
fn dual_stack_call(name: &str, media_base: u16, extra: &[(&str, String)], core_ip: &str) {
    let dir = test_dir(name);
    let uas_port = free_udp_port();
    let dns_port = free_udp_port();
    let _dns = dnsmasq(&dir, dns_port, 60, &trunk_records(&[(uas_port, 10, 1)]));
    let sbc = Sbc::start(&dir, dns_port, media_base, extra);
    // The core: SIPp on IPv4, echoing the RTP it receives.
    let uas_dir = dir.join("uas");
    std::fs::create_dir_all(&uas_dir).unwrap();
    let mp = free_udp_port().to_string();
    let _uas = uas(
        &uas_dir,
        uas_port,
        &["-sn", "uas"],
        &["-rtp_echo", "-mp", &mp, "-trace_msg"],
    );

    // The caller: SIP and RTP on [::1].
    let sip = UdpSocket::bind("[::1]:0").unwrap();
    let rtp = UdpSocket::bind("[::1]:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let me = sip.local_addr().unwrap();
    let sbc_addr = format!("[::1]:{}", sbc.access);
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        rtp.local_addr().unwrap().port()
    );
    let invite = format!(
        "INVITE sip:+15551234@rvoip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-v6i\r\n\
         From: <sip:alice@rvoip.test>;tag=v6\r\nTo: <sip:+15551234@rvoip.test>\r\n\
         Call-ID: v6@[::1]\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sip.send_to(invite.as_bytes(), &sbc_addr).unwrap();
    let mut buf = vec![0u8; 65536];
    let ok = loop {
        let (n, _) = sip.recv_from(&mut buf).expect("a response to the INVITE");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text[8..11].parse().unwrap();
        if code >= 200 {
            assert_eq!(code, 200, "{text}\n{}", sbc.log_text());
            break text;
        }
    };
    // The caller is given the relay's IPv6 address.
    assert!(ok.contains("c=IN IP6 ::1\r\n"), "{ok}");
    let relay_port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port");
    let to = header(&ok, "To").unwrap().to_owned();
    let contact = header(&ok, "Contact").unwrap();
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let ack = format!(
        "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-v6a\r\n\
         From: <sip:alice@rvoip.test>;tag=v6\r\nTo: {to}\r\nCall-ID: v6@[::1]\r\nCSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(ack.as_bytes(), &sbc_addr).unwrap();

    // 100 frames of PCMU from the IPv6 caller; the IPv4 core echoes them;
    // the caller counts what comes back.
    let relay = format!("[::1]:{relay_port}");
    let mut echoed = 0;
    for seq in 0u16..100 {
        let mut pkt = vec![0x80, 0x00];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pkt.extend_from_slice(&0x7600_0006u32.to_be_bytes());
        pkt.extend(std::iter::repeat_n(0xd5, 160));
        rtp.send_to(&pkt, &relay).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        while let Ok((n, from)) = {
            rtp.set_nonblocking(true).unwrap();
            rtp.recv_from(&mut buf)
        } {
            if n == 172 && from.to_string() == relay && buf[8..12] == 0x7600_0006u32.to_be_bytes() {
                echoed += 1;
            }
        }
        rtp.set_nonblocking(false).unwrap();
    }
    while let Ok((n, _)) = rtp.recv_from(&mut buf) {
        if n == 172 {
            echoed += 1;
        }
    }
    eprintln!("echoed back over IPv6: {echoed} of 100");
    assert!(
        echoed >= 95,
        "{echoed} of 100 frames came back\n{}",
        sbc.log_text()
    );

    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-v6b\r\n\
         From: <sip:alice@rvoip.test>;tag=v6\r\nTo: {to}\r\nCall-ID: v6@[::1]\r\nCSeq: 2 BYE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(bye.as_bytes(), &sbc_addr).unwrap();
    let cdr = &sbc.wait_cdrs(1)[0];
    assert_eq!(cdr["peer"], format!("127.0.0.1:{uas_port}"), "{cdr}");
    assert_eq!(cdr["source"], "::1", "{cdr}");
    // The core was offered the relay's IPv4 address.
    let at_uas = messages(&uas_dir);
    assert!(
        at_uas.contains(&format!("c=IN IP4 {core_ip}\r\n")),
        "{at_uas}"
    );
    assert!(!at_uas.contains("IP6"), "{at_uas}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// rvoip as the proxy of `config/proxy.toml` resolving through the name
/// server on `dns_port`, with `extra` replacements; returns its port.
fn proxy(dir: &Path, dns_port: u16, extra: &[(&str, String)]) -> (Spawned, u16) {
    let port = free_udp_port();
    let mut replacements = vec![
        ("127.0.0.1:5060", format!("127.0.0.1:{port}")),
        ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
        (
            "[registrar]",
            format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\navoid_secs = 30\n\n[registrar]"),
        ),
    ];
    replacements.extend(extra.iter().cloned());
    let config = test_config("proxy.toml", dir, &replacements);
    (common::appliance(dir, &config, port), port)
}

/// The proxy without its static route, trusting loopback: requests go
/// where their Request-URI or Route names.
fn resolving_proxy(dir: &Path, dns_port: u16) -> (Spawned, u16) {
    proxy(
        dir,
        dns_port,
        &[
            (
                "[[proxy.routes]]\ntarget = \"127.0.0.1:5070\"",
                String::new(),
            ),
            (
                "trusted_sources = []",
                "trusted_sources = [\"127.0.0.0/8\"]".into(),
            ),
        ],
    )
}

#[test]
fn the_proxy_resolves_request_uris_and_routes_and_fails_over_past_a_503() {
    let dir = test_dir("dns-proxy");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let dns_port = free_udp_port();
    let _dns = dnsmasq(
        &dir,
        dns_port,
        60,
        &trunk_records(&[(p1, 10, 1), (p2, 20, 1)]),
    );
    let (_app, port) = resolving_proxy(&dir, dns_port);
    // The first server is out of service (503), the second answers.
    let (d1, d2) = (dir.join("uas1"), dir.join("uas2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let sf503 = scenario("uas_503.xml");
    let _uas1 = uas(&d1, p1, &["-sf", sf503.to_str().unwrap()], &["-trace_msg"]);
    let _uas2 = uas(&d2, p2, &["-sn", "uas"], &["-trace_msg"]);
    let target = format!("127.0.0.1:{port}");
    for (name, calls) in [("uac_name.xml", "3"), ("uac_route.xml", "2")] {
        let s = svc_caller(&dir, name, name, &target, calls, Duration::from_secs(60));
        assert_eq!(
            (s.successful, s.failed),
            (calls.parse().unwrap(), 0),
            "{name}: {s:?}"
        );
    }
    // The first call met the 503 and went on to the second server within
    // its transaction; the first server was avoided after that.
    let at1 = messages(&d1);
    let at2 = messages(&d2);
    assert_eq!(at1.matches("INVITE sip:svc@").count(), 1, "{at1}");
    assert_eq!(at2.matches("INVITE sip:svc@").count(), 5, "{at2}");
    // The Request-URI kept its name; the Route naming the server was used
    // to reach it and stayed for it to pop (loose routing).
    assert!(
        at2.contains("INVITE sip:svc@trunk.rvoip.test SIP/2.0"),
        "{at2}"
    );
    assert!(at2.contains("Route: <sip:trunk.rvoip.test;lr>"), "{at2}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_proxy_leaves_a_tcp_server_that_refuses_the_connection_at_once() {
    let dir = test_dir("dns-unreachable");
    let dead = free_udp_port(); // nothing listens on TCP there either
    let p2 = free_udp_port();
    let dns_port = free_udp_port();
    // NAPTR: TCP first (refused), then UDP.
    let records = vec![
        "naptr-record=trunk.rvoip.test,10,10,S,SIP+D2T,,_sip._tcp.trunk.rvoip.test".to_string(),
        "naptr-record=trunk.rvoip.test,20,10,S,SIP+D2U,,_sip._udp.trunk.rvoip.test".to_string(),
        format!("srv-host=_sip._tcp.trunk.rvoip.test,t.trunk.rvoip.test,{dead},10,1"),
        format!("srv-host=_sip._udp.trunk.rvoip.test,u.trunk.rvoip.test,{p2},10,1"),
        "host-record=t.trunk.rvoip.test,127.0.0.1".to_string(),
        "host-record=u.trunk.rvoip.test,127.0.0.1".to_string(),
    ];
    let _dns = dnsmasq(&dir, dns_port, 60, &records);
    let (mut app, port) = resolving_proxy(&dir, dns_port);
    let _uas = uas(&dir, p2, &["-sn", "uas"], &[]);
    let target = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let s = svc_caller(
        &dir,
        "uac-unreachable",
        "uac_name.xml",
        &target,
        "1",
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    eprintln!("call through a refused TCP server took {took:?}");
    assert_eq!((s.successful, s.failed), (1, 0), "{s:?}");
    // Without the transport error the branch would wait for Timer B (32 s).
    assert!(took < Duration::from_secs(5), "{took:?}");
    app.terminate();
    let log = std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();
    assert!(log.contains("tcp_connect_failed=1"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_proxy_reaches_its_outbound_proxy_by_name() {
    let dir = test_dir("dns-outbound");
    let p = free_udp_port();
    let dns_port = free_udp_port();
    let _dns = dnsmasq(&dir, dns_port, 60, &trunk_records(&[(p, 10, 1)]));
    // config/proxy.toml with its static route to a name.
    let route = (
        "target = \"127.0.0.1:5070\"",
        "uri = \"sip:trunk.rvoip.test\"".to_string(),
    );
    let (_app, port) = proxy(&dir, dns_port, &[route]);
    let uas_dir = dir.join("uas");
    std::fs::create_dir_all(&uas_dir).unwrap();
    let _uas = uas(&uas_dir, p, &["-sn", "uas"], &["-trace_msg"]);
    // SIPp's built-in uac calls sip:service@<the proxy>: the static route
    // takes it to whatever trunk.rvoip.test resolves to.
    let uac_port = free_udp_port().to_string();
    let target = format!("127.0.0.1:{port}");
    let args = [
        "-sn",
        "uac",
        "-i",
        "127.0.0.2",
        "-p",
        &uac_port,
        &target,
        "-m",
        "3",
        "-r",
        "5",
    ];
    let s = sipp(&dir, "uac-outbound", &args, Duration::from_secs(60));
    assert_eq!((s.successful, s.failed), (3, 0), "{s:?}");
    assert_eq!(messages(&uas_dir).matches("INVITE sip:service@").count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIPp from 127.0.0.2 calling `sip:svc@…` through `target` with scenario
/// `scenario`, `calls` calls at 5 per second; run `name`, bounded by
/// `limit`.
fn svc_caller(
    dir: &Path,
    name: &str,
    scenario_file: &str,
    target: &str,
    calls: &str,
    limit: Duration,
) -> common::sipp::Stats {
    let sf = scenario(scenario_file);
    let uac_port = free_udp_port().to_string();
    let args = [
        "-sf",
        sf.to_str().unwrap(),
        "-i",
        "127.0.0.2",
        "-p",
        &uac_port,
        target,
        "-s",
        "svc",
        "-m",
        calls,
        "-r",
        "5",
    ];
    sipp(dir, name, &args, limit)
}
