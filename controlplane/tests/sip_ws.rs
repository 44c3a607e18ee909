//! SIP over WebSocket (RFC 7118) into `config/sbc.toml` with a WS and a
//! WSS listener in the access realm and an Origin allow-list. The client
//! is tungstenite (an independent WebSocket implementation; over rustls for
//! WSS): a user registers over WSS with digest authentication and is
//! called by a SIPp UAC on the core side over its WebSocket connection; a
//! user over WS calls a SIPp UAS on the core side; a page of another
//! origin, a client without the `sip` subprotocol and one that breaks the
//! WebSocket framing are refused without harm.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::sipp::{sipp, uas};
use common::{appliance, free_tcp_port, free_udp_port, test_config, test_dir, tls_file};
use rvoip_controlplane::registrar::digest::answer_challenge;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const ORIGIN: &str = "https://phone.rvoip.test";

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A SIP user agent over a WebSocket, driven by hand.
struct WsPeer {
    ws: WebSocket<Box<dyn Stream>>,
    local: SocketAddr,
    /// The `.invalid` host of its Via and Contact (RFC 7118 §5.2).
    host: String,
    transport: &'static str,
}

/// The upgrade request of a page of `origin` offering `protocol`.
fn request(url: &str, origin: &str, protocol: &str) -> tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Origin", origin.parse().unwrap());
    h.insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    req
}

/// Connects to `port` (over TLS when `secure`) and upgrades.
fn connect(
    port: u16,
    secure: bool,
    origin: &str,
    protocol: &str,
) -> Result<WsPeer, tungstenite::Error> {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (stream, url): (Box<dyn Stream>, String) = if secure {
        let config =
            rvoip_dataplane::sip::tls::client_config(&tls_file("localhost-test-only.crt"), None)
                .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        (
            Box::new(rustls::StreamOwned::new(conn, sock)),
            format!("wss://localhost:{port}/sip"),
        )
    } else {
        (Box::new(sock), format!("ws://127.0.0.1:{port}/"))
    };
    let req = request(&url, origin, protocol);
    let (ws, response) = retry_handshake(tungstenite::client(req, stream))?;
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("sip")
    );
    Ok(WsPeer {
        ws,
        local,
        host: format!("{}.invalid", if secure { "wss-peer" } else { "ws-peer" }),
        transport: if secure { "WSS" } else { "WS" },
    })
}

type Handshake = Result<
    (
        WebSocket<Box<dyn Stream>>,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::HandshakeError<tungstenite::ClientHandshake<Box<dyn Stream>>>,
>;

/// Finishes a handshake interrupted by the socket's read timeout.
fn retry_handshake(
    mut r: Handshake,
) -> Result<
    (
        WebSocket<Box<dyn Stream>>,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::Error,
> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match r {
            Ok(x) => return Ok(x),
            Err(tungstenite::HandshakeError::Interrupted(mid)) => {
                assert!(Instant::now() < deadline, "handshake did not finish");
                r = mid.handshake();
            }
            Err(tungstenite::HandshakeError::Failure(e)) => return Err(e),
        }
    }
}

impl WsPeer {
    fn send(&mut self, msg: &str) {
        self.ws.send(Message::text(msg)).unwrap();
    }

    /// The next SIP message whose start line contains `what`, within 10 s
    /// (others before it are answered when they are requests rvoip expects
    /// an answer to, and skipped).
    fn wait_for(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "no {what} over {}",
                self.transport
            );
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let m = t.to_string();
                    if m.lines().next().unwrap_or("").contains(what) {
                        return m;
                    }
                }
                Ok(Message::Binary(b)) => {
                    let m = String::from_utf8(b.to_vec()).unwrap();
                    if m.lines().next().unwrap_or("").contains(what) {
                        return m;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A response to `req` with `status`, and `extra` lines (with CRLF).
    fn reply(&mut self, req: &str, status: &str, to_tag: Option<&str>, extra: &str, body: &str) {
        let mut r = format!("SIP/2.0 {status}\r\n");
        for l in req.lines() {
            if l.to_ascii_lowercase().starts_with("via:") {
                r.push_str(l);
                r.push_str("\r\n");
            }
        }
        for h in ["From", "Call-ID", "CSeq"] {
            r.push_str(&format!("{h}: {}\r\n", header(req, h)));
        }
        match to_tag {
            Some(t) if !header(req, "To").contains("tag=") => {
                r.push_str(&format!("To: {};tag={t}\r\n", header(req, "To")));
            }
            _ => r.push_str(&format!("To: {}\r\n", header(req, "To"))),
        }
        r.push_str(extra);
        r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&r);
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "Via: SIP/2.0/{} {};branch=z9hG4bK-{branch}",
            self.transport, self.host
        )
    }

    fn contact(&self, user: &str) -> String {
        format!(
            "Contact: <sip:{user}@{};transport={}>",
            self.host,
            self.transport.to_ascii_lowercase()
        )
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Registers `user` (password `password`) over `peer`, answering the
/// digest challenge.
fn register(peer: &mut WsPeer, user: &str, password: &str) {
    let (vias, contact) = (
        [1, 2].map(|n| peer.via(&format!("reg-{user}-{n}"))),
        peer.contact(user),
    );
    let req = |n: u32, auth: &str| {
        format!(
            "REGISTER sip:rvoip.test SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n\
From: <sip:{user}@rvoip.test>;tag=r{user}\r\nTo: <sip:{user}@rvoip.test>\r\n\
Call-ID: reg-{user}@ws\r\nCSeq: {n} REGISTER\r\n{}\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n",
            vias[n as usize - 1],
            contact,
        )
    };
    peer.send(&req(1, ""));
    let challenge = peer.wait_for("401");
    let auth = answer_challenge(
        header(&challenge, "WWW-Authenticate").as_bytes(),
        user,
        password,
        "REGISTER",
        "sip:rvoip.test",
        "c0ffee",
        1,
    )
    .unwrap();
    peer.send(&req(2, &format!("Authorization: {auth}\r\n")));
    let ok = peer.wait_for("200");
    assert!(header(&ok, "Contact").contains(&peer.host), "{ok}");
}

#[test]
fn browsers_over_ws_and_wss_register_call_and_are_called_over_their_connection() {
    let dir = test_dir("sip-ws");
    let (access, inner, core) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (ws, wss) = (free_tcp_port(), free_tcp_port());
    let mut r = common::sbc_ports(access, inner, core, 27800);
    r.push((
        "]\ndomains",
        format!(
            "    {{ address = \"127.0.0.1:{ws}\", transport = \"ws\", realm = \"access\" }},\n    \
{{ address = \"127.0.0.1:{wss}\", transport = \"wss\", realm = \"access\" }},\n]\n\
websocket_origins = [\"{ORIGIN}\"]\ndomains"
        ),
    ));
    r.push((
        "[capture]",
        format!(
            "[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n[capture]",
            tls_file("localhost-test-only.crt").display(),
            tls_file("localhost-test-only.key").display()
        ),
    ));
    let config = test_config("sbc.toml", &dir, &r);
    let _app = appliance(&dir, &config, access);
    let log = || std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default();

    // Refused: another origin (403), no sip subprotocol (400); broken
    // framing closes the connection. The appliance goes on.
    match connect(wss, true, "https://evil.example", "sip") {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("another origin was let in"),
    }
    match connect(ws, false, ORIGIN, "chat") {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        Err(tungstenite::Error::Protocol(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a client without the sip subprotocol was let in"),
    }
    {
        let mut raw = TcpStream::connect(("127.0.0.1", ws)).unwrap();
        raw.write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: sip\r\nOrigin: {ORIGIN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 1024];
        let n = raw.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        // An unmasked frame: a protocol error, the connection closed.
        raw.write_all(b"\x81\x05hello").unwrap();
        assert!(
            matches!(raw.read(&mut buf), Ok(0) | Err(_)),
            "kept after a protocol error"
        );
    }

    // Alice registers over WSS; a SIPp UAC on the core side calls her and
    // the INVITE reaches her over her WSS connection.
    let mut alice = connect(wss, true, ORIGIN, "sip").unwrap();
    register(&mut alice, "alice", "alicepw");
    let uac = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            sipp(
                &dir,
                "uac-alice",
                &[
                    &format!("127.0.0.1:{inner}"),
                    "-sn",
                    "uac",
                    "-s",
                    "alice",
                    "-m",
                    "1",
                    "-d",
                    "1000",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &free_udp_port().to_string(),
                    "-timeout",
                    "30s",
                ],
                Duration::from_secs(40),
            )
        })
    };
    let invite = alice.wait_for("INVITE");
    assert!(
        invite.starts_with("INVITE sip:alice@wss-peer.invalid"),
        "{invite}"
    );
    assert!(
        header(&invite, "Via").starts_with("SIP/2.0/WSS"),
        "{invite}"
    );
    assert!(
        header(&invite, "Contact").contains("transport=wss"),
        "{invite}"
    );
    let contact = alice.contact("alice");
    alice.reply(
        &invite,
        "200 OK",
        Some("alice-1"),
        &format!("{contact}\r\nContent-Type: application/sdp\r\n"),
        SDP,
    );
    alice.wait_for("ACK");
    let bye = alice.wait_for("BYE");
    alice.reply(&bye, "200 OK", None, "", "");
    let stats = uac.join().unwrap();
    assert_eq!((stats.successful, stats.failed), (1, 0), "{}", log());

    // Bob over plain WS calls a SIPp UAS on the core side, then hangs up.
    std::fs::create_dir_all(dir.join("uas")).unwrap();
    let _uas = uas(&dir.join("uas"), core, &["-sn", "uas"], &["-aa"]);
    let mut bob = connect(ws, false, ORIGIN, "sip").unwrap();
    let me = bob.local;
    let (via, contact) = (bob.via("inv-1"), bob.contact("bob"));
    bob.send(&format!(
        "INVITE sip:1000@rvoip.test SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n\
From: <sip:bob@rvoip.test>;tag=b1\r\nTo: <sip:1000@rvoip.test>\r\nCall-ID: ws-call@{me}\r\n\
CSeq: 1 INVITE\r\n{contact}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    ));
    let ok = bob.wait_for("200");
    assert!(header(&ok, "CSeq").contains("INVITE"), "{ok}");
    let to = header(&ok, "To").to_string();
    let target = header(&ok, "Contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    assert!(target.contains("transport=ws"), "{ok}");
    let ack_via = bob.via("inv-2");
    bob.send(&format!(
        "ACK {target} SIP/2.0\r\n{ack_via}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@rvoip.test>;tag=b1\r\n\
To: {to}\r\nCall-ID: ws-call@{me}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let bye_via = bob.via("bye-1");
    bob.send(&format!(
        "BYE {target} SIP/2.0\r\n{bye_via}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@rvoip.test>;tag=b1\r\n\
To: {to}\r\nCall-ID: ws-call@{me}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ));
    let ok = bob.wait_for("200");
    assert!(header(&ok, "CSeq").contains("BYE"), "{ok}");

    let cdrs = common::wait_cdrs(&dir, 2, Duration::from_secs(10), log);
    for c in &cdrs {
        assert_eq!(
            (c["a_status"].as_u64(), c["b_status"].as_u64()),
            (Some(200), Some(200)),
            "{c}"
        );
    }
    assert!(
        cdrs.iter()
            .any(|c| c["a_call_id"] == format!("ws-call@{me}").as_str()),
        "{cdrs:?}"
    );
}
