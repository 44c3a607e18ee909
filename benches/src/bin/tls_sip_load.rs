//! SIP-over-TLS load for the TLS benchmark (benches/sip/tls_compare.sh):
//! the same load against any proxy that takes SIP over TLS.
//!
//! `calls`: CONNECTIONS long-lived TLS connections to the proxy, each
//! carrying its share of RATE calls per second, one after another: INVITE
//! (an SDP offer), its final response, ACK and BYE along the route set
//! the proxy record-routed, BYE's 200; CALLS in all.
//! `handshakes`: CONNECTIONS clients, each in a loop for SECONDS: a new TCP
//! connection, a full TLS handshake (no session resumption), OPTIONS to the
//! proxy and its 200, close.
//!
//! usage: tls_sip_load calls      TARGET CONNECTIONS RATE CALLS
//!        tls_sip_load handshakes TARGET CONNECTIONS SECONDS
//! env:   TLS_CA (PEM, default config/tls/localhost-test-only.crt),
//!        TLS_NAME (server name, default localhost)
//!
//! Prints one line of key=value figures. A measurement tool, not part of
//! the product: it stops at the first broken connection of a client, counts
//! what failed, and is bounded by its arguments. Loopback only.
#![allow(clippy::disallowed_methods)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Figures shared by the clients.
#[derive(Default)]
struct Counts {
    done: AtomicU64,
    failed: AtomicU64,
    /// Sum of call (or handshake) times, µs.
    total_us: AtomicU64,
    max_us: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tls_sip_load calls TARGET CONNECTIONS RATE CALLS | handshakes TARGET CONNECTIONS SECONDS";
    let (Some(mode), Some(target), Some(conns)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(target), Ok(conns)) = (target.parse::<SocketAddr>(), conns.parse::<u64>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let number = |i: usize| args.get(i).and_then(|v| v.parse::<f64>().ok());
    let config = match client_config() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("tls_sip_load: {e}");
            std::process::exit(2);
        }
    };
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let clients: Vec<_> = match (mode.as_str(), number(4), number(5)) {
        ("calls", Some(rate), Some(calls)) if rate > 0.0 && conns > 0 => (0..conns)
            .map(|i| {
                let (config, counts) = (Arc::clone(&config), Arc::clone(&counts));
                // Client i places calls i, i + conns, … at their due times.
                let share = (calls as u64 + conns - 1 - i) / conns;
                let gap = Duration::from_secs_f64(conns as f64 / rate);
                let first = Duration::from_secs_f64(i as f64 / rate);
                std::thread::spawn(move || {
                    calls_client(target, &config, &counts, i, share, start + first, gap)
                })
            })
            .collect(),
        ("handshakes", Some(secs), _) if conns > 0 => (0..conns)
            .map(|_| {
                let (config, counts) = (Arc::clone(&config), Arc::clone(&counts));
                let until = start + Duration::from_secs_f64(secs);
                std::thread::spawn(move || handshakes_client(target, &config, &counts, until))
            })
            .collect(),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    for c in clients {
        let _ = c.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = counts.done.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let mean_ms = counts.total_us.load(Ordering::Relaxed) as f64 / done.max(1) as f64 / 1000.0;
    println!(
        "mode={mode} connections={conns} done={done} failed={failed} elapsed_s={elapsed:.2} \
         per_s={:.1} mean_ms={mean_ms:.3} max_ms={:.3}",
        done as f64 / elapsed,
        counts.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
}

/// TLS 1.2 and 1.3, the test CA trusted, no session resumption (every
/// handshake is a full one).
fn client_config() -> Result<ClientConfig, String> {
    let ca = std::env::var("TLS_CA").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/tls/localhost-test-only.crt"
        )
        .to_owned()
    });
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    // ring, as the appliance's TLS uses it (rustls marks it deprecated for
    // lacking post-quantum key exchange; X25519 is negotiated).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn connect(target: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Tls> {
    let name = std::env::var("TLS_NAME").unwrap_or_else(|_| "localhost".into());
    let name = ServerName::try_from(name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect(target)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// A SIP message read off a stream.
struct Message {
    head: String,
}

impl Message {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .filter(|_| self.head.starts_with("SIP/2.0 "))
            .unwrap_or(0)
    }

    /// Values of header `name` (long or compact form), in order.
    fn headers<'a>(&'a self, name: &'a str, compact: &'a str) -> impl Iterator<Item = &'a str> {
        self.head.split("\r\n").skip(1).filter_map(move |l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact)).then(|| v.trim())
        })
    }

    fn cseq_method(&self) -> &str {
        self.headers("CSeq", "CSeq")
            .next()
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap_or("")
    }
}

/// Reads one SIP message (skipping RFC 5626 keep-alive CRLFs) from `s`,
/// keeping what follows it in `buf`.
fn read_message(s: &mut Tls, buf: &mut Vec<u8>) -> io::Result<Message> {
    let mut chunk = [0u8; 16_384];
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let m = Message { head };
            let body: usize = m
                .headers("Content-Length", "l")
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + body {
                buf.drain(..end + 4 + body);
                return Ok(m);
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The entries of Record-Route headers, in order.
fn route_entries<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        let (mut depth, mut from) = (0i32, 0);
        for (i, c) in v.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(v[from..i].trim().to_owned());
                    from = i + 1;
                }
                _ => {}
            }
        }
        out.push(v[from..].trim().to_owned());
    }
    out
}

fn record(counts: &Counts, since: Instant) {
    let us = since.elapsed().as_micros() as u64;
    counts.done.fetch_add(1, Ordering::Relaxed);
    counts.total_us.fetch_add(us, Ordering::Relaxed);
    counts.max_us.fetch_max(us, Ordering::Relaxed);
}

fn calls_client(
    target: SocketAddr,
    config: &Arc<ClientConfig>,
    counts: &Counts,
    client: u64,
    calls: u64,
    first: Instant,
    gap: Duration,
) {
    let mut s = match connect(target, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("client {client}: {e}");
            counts.failed.fetch_add(calls, Ordering::Relaxed);
            return;
        }
    };
    let local = s
        .sock
        .local_addr()
        .map_or_else(|_| "127.0.0.1:9".to_owned(), |a| a.to_string());
    let mut buf = Vec::with_capacity(32_768);
    for k in 0..calls {
        let due = first + gap * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        match call(&mut s, &mut buf, target, &local, client, k) {
            Ok(true) => record(counts, t),
            Ok(false) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("client {client}: {e}");
                counts.failed.fetch_add(calls - k, Ordering::Relaxed);
                return;
            }
        }
    }
    s.conn.send_close_notify();
    let _ = s.flush();
}

/// One call on `s`; false when it was not answered 200 or its BYE was refused.
fn call(
    s: &mut Tls,
    buf: &mut Vec<u8>,
    target: SocketAddr,
    local: &str,
    client: u64,
    k: u64,
) -> io::Result<bool> {
    let id = format!("{k}x{client}x{}", std::process::id());
    let cid = format!("{id}@tls-load");
    let tag = format!("t{client}x{k}");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let uri = format!("sip:service@{target};transport=tls");
    let invite = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{id}-i;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag={tag}\r\nTo: <sip:service@{target}>\r\n\
         Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{local};transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(invite.as_bytes())?;
    let answer = loop {
        let m = read_message(s, buf)?;
        if m.status() >= 200 && m.cseq_method() == "INVITE" {
            break m;
        }
    };
    if answer.status() >= 300 {
        // The proxy acknowledges a failure hop by hop; nothing more to send.
        return Ok(false);
    }
    let to = answer.headers("To", "t").next().unwrap_or("").to_owned();
    let contact = answer
        .headers("Contact", "m")
        .next()
        .and_then(|c| Some(c[c.find('<')? + 1..c.find('>')?].to_owned()))
        .unwrap_or_else(|| uri.clone());
    let mut routes = route_entries(answer.headers("Record-Route", "Record-Route"));
    routes.reverse();
    let route = if routes.is_empty() {
        String::new()
    } else {
        format!("Route: {}\r\n", routes.join(", "))
    };
    let in_dialog = |method: &str, seq: u32, branch: &str| {
        format!(
            "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{id}-{branch};rport\r\n\
             {route}Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag={tag}\r\nTo: {to}\r\n\
             Call-ID: {cid}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    s.write_all(in_dialog("ACK", 1, "a").as_bytes())?;
    s.write_all(in_dialog("BYE", 2, "b").as_bytes())?;
    loop {
        let m = read_message(s, buf)?;
        if m.status() >= 200 && m.cseq_method() == "BYE" {
            return Ok(m.status() < 300);
        }
    }
}

fn handshakes_client(
    target: SocketAddr,
    config: &Arc<ClientConfig>,
    counts: &Counts,
    until: Instant,
) {
    let mut n = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        let r = (|| -> io::Result<bool> {
            let mut s = connect(target, config)?;
            let local = s.sock.local_addr()?;
            let options = format!(
                "OPTIONS sip:{target};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-h{n}-{};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=h{n}\r\nTo: <sip:{target}>\r\n\
                 Call-ID: h{n}-{local}@tls-load\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                std::process::id()
            );
            s.write_all(options.as_bytes())?;
            let mut buf = Vec::new();
            let m = read_message(&mut s, &mut buf)?;
            s.conn.send_close_notify();
            let _ = s.flush();
            Ok(m.status() == 200)
        })();
        n += 1;
        match r {
            Ok(true) => record(counts, t),
            Ok(false) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("handshake: {e}");
                }
            }
        }
    }
}
