//! Helpers shared by the integration tests: an ng relay on loopback with a
//! client, SDP and RTP builders, and the libsrtp2 oracle.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

pub mod libsrtp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rvoip_dataplane::engine::media::{DriverKind, MediaEngine, MediaEngineConfig, Polling};
use rvoip_dataplane::engine::ng_udp::NgListener;
use rvoip_dataplane::media::relay::RelayConfig;
use rvoip_dataplane::media::rtp::write_rtp_header;
use rvoip_dataplane::ng::NgServer;
use rvoip_dataplane::ng::bencode::{Value, decode, encode};
use rvoip_dataplane::sdp::Sdp;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub struct Relay {
    pub ng: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub listener: Option<NgListener>,
    pub client: UdpSocket,
    pub cookie: u32,
}

impl Relay {
    pub fn start(driver: DriverKind, base: u16) -> Relay {
        Relay::start_with(driver, base, RelayConfig::default())
    }

    pub fn start_with(driver: DriverKind, base: u16, relay: RelayConfig) -> Relay {
        Relay::start_configured(driver, base, relay, None)
    }

    /// A relay that records into `recordings`.
    pub fn start_configured(
        driver: DriverKind,
        base: u16,
        relay: RelayConfig,
        recordings: Option<std::path::PathBuf>,
    ) -> Relay {
        Relay::start_full(driver, base, relay, recordings, None)
    }

    /// A relay on 127.0.0.1 and ::1, bridging the families.
    pub fn start_dual(driver: DriverKind, base: u16) -> Relay {
        let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        Relay::start_full(driver, base, RelayConfig::default(), None, Some(v6))
    }

    fn start_full(
        driver: DriverKind,
        base: u16,
        relay: RelayConfig,
        recordings: Option<std::path::PathBuf>,
        address_v6: Option<IpAddr>,
    ) -> Relay {
        let engine = MediaEngine::start(&MediaEngineConfig {
            address: LOCALHOST,
            address_v6,
            extra_addresses: Vec::new(),
            port_min: base,
            port_max: base + 999,
            cores: vec![0, 1],
            driver,
            polling: Polling::Interrupt { batch_wait_us: 0 },
            relay,
            fill_calls: 0,
            max_endpoints_per_worker: 4096,
        })
        .expect("engine");
        let stop = Arc::new(AtomicBool::new(false));
        let fingerprint = engine.dtls_fingerprint();
        let mut server = NgServer::new(
            engine,
            LOCALHOST,
            Box::new(rvoip_dataplane::entropy::SystemEntropy::new()),
        );
        server.set_recording_dir(recordings);
        server.set_advertised_v6(address_v6);
        server.set_dtls_fingerprint(Some(fingerprint));
        let listener = NgListener::spawn("127.0.0.1:0".parse().unwrap(), server, Arc::clone(&stop))
            .expect("ng");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Relay {
            ng: listener.local,
            stop,
            listener: Some(listener),
            client,
            cookie: 0,
        }
    }

    /// Sends one raw request body; returns the reply body (cookie checked).
    pub fn raw(&mut self, body: &[u8]) -> Vec<u8> {
        self.cookie += 1;
        let cookie = format!("c{}", self.cookie);
        let mut msg = format!("{cookie} ").into_bytes();
        msg.extend_from_slice(body);
        self.client.send_to(&msg, self.ng).expect("send");
        let mut buf = vec![0u8; 65536];
        // A signal (another test's child) may interrupt the wait: wait again.
        let (n, _) = loop {
            match self.client.recv_from(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r.expect("ng reply"),
            }
        };
        let reply = &buf[..n];
        assert!(
            reply.starts_with(format!("{cookie} ").as_bytes()),
            "{}",
            String::from_utf8_lossy(reply)
        );
        reply[cookie.len() + 1..].to_vec()
    }

    pub fn command(&mut self, entries: &[(&str, Value<'_>)]) -> Vec<u8> {
        let dict = Value::Dict(
            entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.clone()))
                .collect(),
        );
        let mut body = Vec::new();
        encode(&dict, &mut body);
        self.raw(&body)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(l) = self.listener.take() {
            l.join();
        }
    }
}

pub fn get<'a>(reply: &'a [u8], key: &str) -> Value<'a> {
    let (v, _) = decode(reply).expect("bencode reply");
    v.get(key)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in {}", String::from_utf8_lossy(reply)))
}

pub fn sdp_for(sock: &UdpSocket, mux: bool) -> Vec<u8> {
    let a = sock.local_addr().unwrap();
    let mux = if mux { "a=rtcp-mux\r\n" } else { "" };
    let kind = if a.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 1 1 IN {kind} {ip}\r\ns=-\r\nc=IN {kind} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ice-ufrag:abcd\r\na=candidate:1 1 UDP 1 {ip} {port} typ host\r\n{mux}a=sendrecv\r\n",
        ip = a.ip(),
        port = a.port()
    )
    .into_bytes()
}

/// The relay address an SDP reply points at.
pub fn target(reply: &[u8]) -> (SocketAddr, Sdp<'_>) {
    let Value::Bytes(sdp) = get(reply, "sdp") else {
        panic!("sdp is a string")
    };
    let sdp = Sdp::parse(sdp).expect("reply SDP parses");
    let addr = SocketAddr::new(
        sdp.media_connection(0).expect("c=").address,
        sdp.media[0].media.port,
    );
    (addr, sdp)
}

pub fn packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut h = [0u8; 12];
    write_rtp_header(
        &mut h,
        false,
        0,
        seq,
        u32::from(seq) * 160,
        rvoip_dataplane::media::rtp::Ssrc(ssrc),
    );
    let mut p = h.to_vec();
    p.extend((0..160u16).map(|i| (i as u8).wrapping_mul(seq as u8)));
    p
}

/// `n` packets from `a` to the relay at `a_target` (SSRC 0xa) and from `b`
/// to `b_target` (SSRC 0xb): each side receives the other's, every one
/// once, in order, unchanged, from the relay port its SDP gave.
pub fn both_ways(a: &UdpSocket, a_target: SocketAddr, b: &UdpSocket, b_target: SocketAddr, n: u16) {
    let mut buf = [0u8; 2048];
    for seq in 0..n {
        a.send_to(&packet(seq, 0xa), a_target).unwrap();
        b.send_to(&packet(seq, 0xb), b_target).unwrap();
    }
    for (sock, from, ssrc) in [(b, b_target, 0xa), (a, a_target, 0xb)] {
        for seq in 0..n {
            let (len, src) = sock.recv_from(&mut buf).expect("packet arrives");
            assert_eq!(src, from, "sent from the relay port the SDP gave");
            assert_eq!(
                &buf[..len],
                &packet(seq, ssrc)[..],
                "packet {seq} in order and unchanged"
            );
        }
    }
}

pub fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("peer");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// The ICE credentials of the browser-like WebRTC peer of the tests.
pub const BROWSER_UFRAG: &str = "brws";
pub const BROWSER_PWD: &str = "browserpasswordbrowser12";

/// A browser's offer of audio and video BUNDLEd on `port` of 127.0.0.1
/// (as Chromium writes it, trimmed): DTLS `fingerprint`, `a=setup:actpass`,
/// rtcp-mux, the MID header extension (id 4) offered, the audio SSRC 4369
/// signalled, the video's not; Opus and PCMU, VP8 and its RTX.
pub fn bundled_browser_offer(
    port: u16,
    fingerprint: rvoip_dataplane::media::dtls::Fingerprint,
) -> String {
    format!(
        "v=0\r\no=- 4612 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=msid-semantic: WMS\r\nm=audio {port} UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 127.0.0.1\r\n\
a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host\r\n\
a=ice-ufrag:{BROWSER_UFRAG}\r\na=ice-pwd:{BROWSER_PWD}\r\na=fingerprint:{fingerprint}\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n\
a=ssrc:4369 cname:browser\r\n\
m=video {port} UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 127.0.0.1\r\n\
a=ice-ufrag:{BROWSER_UFRAG}\r\na=ice-pwd:{BROWSER_PWD}\r\na=fingerprint:{fingerprint}\r\n\
a=setup:actpass\r\na=mid:1\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n"
    )
}

/// Runs the browser's side of DTLS (active) against the relay port.
pub fn dtls_client(
    leg: &mut rvoip_dataplane::media::dtls::DtlsLeg,
    sock: &UdpSocket,
    relay: SocketAddr,
) -> rvoip_dataplane::media::dtls::SrtpKeys {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out: Vec<Vec<u8>> = Vec::new();
    leg.on_timeout(Instant::now(), &mut |p| out.push(p.to_vec()))
        .unwrap();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        for p in out.drain(..) {
            sock.send_to(&p, relay).unwrap();
        }
        if let Some(k) = leg.keys() {
            return k.clone();
        }
        assert!(
            Instant::now() < deadline,
            "DTLS with the relay did not finish"
        );
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, relay);
                leg.on_packet(&buf[..n], Instant::now(), &mut |p| out.push(p.to_vec()))
                    .unwrap();
            }
            Err(_) => leg
                .on_timeout(Instant::now(), &mut |p| out.push(p.to_vec()))
                .unwrap(),
        }
    }
}

/// The ng offer of `call` from `from_tag` with `sdp` and further `flags`;
/// checked ok.
pub fn offer(
    relay: &mut Relay,
    call: &str,
    from_tag: &str,
    sdp: &str,
    flags: &[(&str, Value<'_>)],
) -> Vec<u8> {
    let mut entries = vec![
        ("command", Value::Bytes(b"offer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(from_tag.as_bytes())),
        ("sdp", Value::Bytes(sdp.as_bytes())),
    ];
    entries.extend(flags.iter().cloned());
    ok(relay.command(&entries))
}

/// The ng answer of `call` (from-tag, to-tag) with `sdp`; checked ok.
pub fn answer(relay: &mut Relay, call: &str, (from, to): (&str, &str), sdp: &str) -> Vec<u8> {
    ok(relay.command(&[
        ("command", Value::Bytes(b"answer")),
        ("call-id", Value::Bytes(call.as_bytes())),
        ("from-tag", Value::Bytes(from.as_bytes())),
        ("to-tag", Value::Bytes(to.as_bytes())),
        ("sdp", Value::Bytes(sdp.as_bytes())),
    ]))
}

/// An ng reply, checked to say `result: ok`.
fn ok(reply: Vec<u8>) -> Vec<u8> {
    assert_eq!(
        get(&reply, "result"),
        Value::Bytes(b"ok"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    reply
}
