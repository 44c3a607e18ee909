//! A SIP worker's HEP capture: every message it receives or sends (of the
//! sampled Call-IDs) as a HEP3 packet to the collector, gathered during a
//! pass of the worker's loop and sent with one `sendmmsg` at its end. HEP3
//! carries one packet per datagram, and on the kernel's side each datagram
//! costs far more than building it; so each run of a pass's consecutive
//! packets within a quarter of its longest is padded to that length (an
//! rvoip vendor chunk, [`hep::pad`], that collectors skip) and sent as one
//! segmented send (UDP GSO): fewer sends of equal datagrams, in the order
//! the messages passed. The packets' buffers are kept and reused: no
//! allocation per message once warm. Over TCP the packets of a pass are
//! one write to a non-blocking stream. A collector that does not keep up
//! loses packets (counted), never the worker's time.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use crate::engine::gso::{self, Group};
use crate::hep;
use crate::sip::Transport;

/// Where and what to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HepConfig {
    /// The collector.
    pub collector: SocketAddr,
    /// Over TCP (a stream of packets, written once per pass of the loop)
    /// instead of one UDP datagram per packet.
    pub tcp: bool,
    /// This node's capture agent id.
    pub agent: u32,
    /// Percent of Call-IDs captured (100: all).
    pub sample_pct: u8,
}

/// Packets gathered before a send is forced.
const BATCH: usize = 64;
/// Octets a TCP collector may fall behind before packets are dropped.
const TCP_BACKLOG: usize = 4 << 20;
/// How long after a failed connection the next is tried.
const RECONNECT: Duration = Duration::from_secs(5);
/// A TCP stream is written when this much waits, or this long after the
/// last write: few large writes, each message at most this late.
const TCP_WRITE_AT: usize = 32 << 10;
const TCP_WRITE_EVERY: Duration = Duration::from_millis(20);

/// The way packets leave.
#[derive(Debug)]
enum Out {
    /// One datagram each, gathered, grouped by length and sent with
    /// `sendmmsg`.
    Udp {
        sock: UdpSocket,
        /// The pass's packets (`used` of them; buffers kept).
        packets: Vec<Vec<u8>>,
        used: usize,
        /// Equal-length datagrams sent as one (buffers kept).
        groups: Vec<Group>,
        /// Whether the kernel takes segmented sends.
        gso: bool,
    },
    /// A stream: packets appended to `pending`, written without waiting.
    Tcp {
        stream: Option<TcpStream>,
        connected: bool,
        pending: Vec<u8>,
        retry_at: Instant,
        last_write: Instant,
    },
}

/// One worker's capture.
#[derive(Debug)]
pub(super) struct HepSink {
    out: Out,
    config: HepConfig,
    /// Packets the kernel took (UDP) or written to the stream (TCP).
    pub(super) sent: u64,
    /// Packets lost: refused by the kernel, too large, or the collector
    /// too far behind or unreachable.
    pub(super) dropped: u64,
}

/// Starts a non-blocking connection to `to`.
fn connect(to: SocketAddr) -> Option<TcpStream> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).ok()?;
    sock.set_nonblocking(true).ok()?;
    match sock.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(_) => return None,
    }
    Some(sock.into())
}

impl HepSink {
    pub(super) fn new(config: HepConfig) -> io::Result<HepSink> {
        let out = if config.tcp {
            Out::Tcp {
                stream: connect(config.collector),
                connected: false,
                pending: Vec::with_capacity(64 << 10),
                retry_at: Instant::now() + RECONNECT,
                last_write: Instant::now(),
            }
        } else {
            let any: SocketAddr = if config.collector.is_ipv6() {
                SocketAddr::from(([0u16; 8], 0))
            } else {
                SocketAddr::from(([0u8; 4], 0))
            };
            let sock = UdpSocket::bind(any)?;
            // Connected: the kernel keeps the route instead of looking it
            // up for every send.
            sock.connect(config.collector)?;
            sock.set_nonblocking(true)?;
            Out::Udp {
                sock,
                packets: Vec::with_capacity(BATCH),
                used: 0,
                groups: Vec::with_capacity(BATCH),
                gso: true,
            }
        };
        Ok(HepSink {
            out,
            config,
            sent: 0,
            dropped: 0,
        })
    }

    /// Captures `msg`, which went from `src` to `dst` over `transport`.
    pub(super) fn capture(
        &mut self,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        msg: &[u8],
    ) {
        let call_id = crate::sip::scan_call_id(msg);
        if !hep::sampled(call_id.unwrap_or_default(), self.config.sample_pct) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let meta = hep::Meta {
            src,
            dst,
            protocol: match transport {
                Transport::Udp => 17,
                _ => 6,
            },
            time: (now.as_secs() as u32, now.subsec_micros()),
            agent: self.config.agent,
            kind: hep::kind::SIP,
            correlation: call_id,
        };
        let full = match &self.out {
            Out::Udp { used, .. } => *used == BATCH,
            Out::Tcp { pending, .. } => pending.len() >= 1 << 20,
        };
        if full {
            self.flush();
        }
        let ok = match &mut self.out {
            Out::Udp { packets, used, .. } => {
                if *used == packets.len() {
                    packets.push(Vec::with_capacity(2048));
                }
                let ok = hep::write(&mut packets[*used], &meta, msg);
                if ok {
                    *used += 1;
                }
                ok
            }
            Out::Tcp { pending, .. } => {
                pending.len() < TCP_BACKLOG && hep::append(pending, &meta, msg)
            }
        };
        if !ok {
            self.dropped += 1;
        }
    }

    /// Sends what was gathered (TCP: once enough waits or enough time
    /// passed, as much as the socket takes now). UDP packets go at the end
    /// of each pass: waiting longer would group more, but the packets of
    /// the workers would then reach a collector out of the order they
    /// passed (a message received by one worker, its answer sent by
    /// another).
    pub(super) fn flush(&mut self) {
        if let Out::Tcp {
            pending,
            last_write,
            ..
        } = &self.out
            && pending.len() < TCP_WRITE_AT
            && last_write.elapsed() < TCP_WRITE_EVERY
        {
            return;
        }
        self.send_now();
    }

    /// Sends what was gathered, now.
    pub(super) fn send_now(&mut self) {
        match &mut self.out {
            Out::Udp {
                sock,
                packets,
                used,
                groups,
                gso,
                ..
            } => {
                if *used == 0 {
                    return;
                }
                let n = group(&mut packets[..*used], groups, *gso);
                let (sent, refused) =
                    crate::engine::mmsg::send_groups(sock.as_raw_fd(), &groups[..n]);
                if refused {
                    // Sent one by one this time; from now on never grouped.
                    *gso = false;
                }
                self.sent += sent as u64;
                self.dropped += (*used - sent.min(*used)) as u64;
                *used = 0;
            }
            Out::Tcp {
                stream,
                connected,
                pending,
                retry_at,
                last_write,
            } => {
                *last_write = Instant::now();
                if stream.is_none() && Instant::now() >= *retry_at {
                    *stream = connect(self.config.collector);
                    *retry_at = Instant::now() + RECONNECT;
                }
                let Some(s) = stream.as_mut() else {
                    // No collector: what waits is lost, counted.
                    self.dropped += packets_in(pending);
                    pending.clear();
                    return;
                };
                if !*connected {
                    match (s.peer_addr(), s.take_error()) {
                        (Ok(_), _) => *connected = true,
                        (Err(_), Ok(None)) => return, // still connecting
                        _ => {
                            *stream = None;
                            *retry_at = Instant::now() + RECONNECT;
                            return;
                        }
                    }
                }
                let mut written = 0;
                while written < pending.len() {
                    match s.write(&pending[written..]) {
                        Ok(0) => break,
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            *stream = None;
                            *connected = false;
                            *retry_at = Instant::now() + RECONNECT;
                            break;
                        }
                    }
                }
                // Whole packets written are counted; a packet cut by the
                // socket stays at the front, its rest written next time.
                self.sent += packets_in(&pending[..written]);
                pending.drain(..written);
            }
        }
    }
}

/// Puts `packets` into `groups` (buffers reused), in their order: a run
/// of consecutive packets that padding to the run's longest lengthens by
/// at most a quarter of it (each by nothing or at least a chunk header),
/// within what one segmented send may carry, is one group of equal
/// datagrams; without `gso`, one group each. Collectors that show packets
/// as they arrive see them in the order they passed. Returns the groups
/// used.
fn group(packets: &mut [Vec<u8>], groups: &mut Vec<Group>, gso: bool) -> usize {
    let mut used = 0;
    let mut start = 0;
    while start < packets.len() {
        let mut seg = packets[start].len();
        let mut shortest = seg;
        let mut end = start + 1;
        while gso && end < packets.len() && end - start < gso::MAX_SEGMENTS {
            let len = packets[end].len();
            let (s, m) = (seg.max(len), shortest.min(len));
            let fits = s <= gso::MAX_SEGMENT
                && m * 4 >= s * 3
                && (end + 1 - start) * s <= gso::MAX_BYTES
                && packets[start..=end].iter().all(|p| {
                    let add = s - p.len();
                    add == 0 || add >= hep::MIN_PADDING
                });
            if !fits {
                break;
            }
            (seg, shortest) = (s, m);
            end += 1;
        }
        if used == groups.len() {
            groups.push(Group {
                to: None,
                seg: 0,
                data: Vec::with_capacity(8192),
            });
        }
        let g = &mut groups[used];
        g.data.clear();
        g.seg = seg;
        for p in &mut packets[start..end] {
            // Checked above: every packet of the run pads to `seg`.
            let padded = end - start == 1 || hep::pad(p, seg);
            debug_assert!(padded);
            g.data.extend_from_slice(p);
        }
        used += 1;
        start = end;
    }
    used
}

/// Whole HEP3 packets at the start of `buf`.
fn packets_in(buf: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = 0;
    while let Some(h) = buf.get(at..at + 6) {
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len < 6 || at + len > buf.len() {
            break;
        }
        at += len;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_messages_reach_the_collector_as_hep3_with_their_addresses() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut sink = HepSink::new(HepConfig {
            collector: collector.local_addr().unwrap(),
            tcp: false,
            agent: 7,
            sample_pct: 100,
        })
        .unwrap();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.2:5090".parse().unwrap(),
        );
        for i in 0..100u32 {
            let msg = format!("OPTIONS sip:x SIP/2.0\r\nCall-ID: c{i}\r\n\r\n");
            sink.capture(Transport::Udp, a, b, msg.as_bytes());
        }
        sink.send_now();
        assert_eq!((sink.sent, sink.dropped), (100, 0));
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        for _ in 0..100u32 {
            let n = collector.recv(&mut buf).unwrap();
            let p = hep::read(&buf[..n]).unwrap();
            assert_eq!((p.meta.src, p.meta.dst, p.meta.agent), (a, b, 7));
            assert!(p.payload.starts_with(b"OPTIONS sip:x"));
            seen.push(String::from_utf8(p.meta.correlation.unwrap().to_vec()).unwrap());
        }
        seen.sort();
        let mut want: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn runs_of_similar_lengths_go_as_segmented_sends_in_their_order() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let meta = hep::Meta {
            src: to,
            dst: to,
            protocol: 17,
            time: (1, 2),
            agent: 3,
            kind: hep::kind::SIP,
            correlation: Some(b"id"),
        };
        // Message lengths as they passed: runs within a quarter, one
        // packet 3 octets short of the run's longest (too little to pad),
        // and one too long to segment.
        let lengths = [
            500, 480, 470, 503, 900, 880, 700, 690, 690, 300, 320, 310, 297, 1500, 400,
        ];
        let mut plain: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut m = vec![b'a' + i as u8; n];
                m[0] = i as u8;
                let mut p = Vec::new();
                assert!(hep::write(&mut p, &meta, &m));
                p
            })
            .collect();
        let overhead = plain[0].len() - lengths[0];
        let mut packets = plain.clone();
        let mut groups = Vec::new();
        let n = group(&mut packets, &mut groups, true);
        let sizes: Vec<usize> = groups[..n].iter().map(Group::count).collect();
        assert_eq!(
            sizes,
            [3, 1, 5, 4, 1, 1],
            "{:?}",
            &groups[..n].iter().map(|g| g.seg).collect::<Vec<_>>()
        );
        let mut back: Vec<Vec<u8>> = Vec::new();
        for g in &groups[..n] {
            assert!(g.data.len().is_multiple_of(g.seg));
            for d in g.datagrams() {
                assert_eq!(usize::from(u16::from_be_bytes([d[4], d[5]])), d.len());
                let p = hep::read(d).unwrap();
                // At most a quarter of a datagram is padding.
                let padding = d.len() - (p.payload.len() + overhead);
                assert!(padding * 4 <= d.len(), "{padding} of {}", d.len());
                back.push(p.payload.to_vec());
            }
        }
        let want: Vec<Vec<u8>> = plain
            .iter_mut()
            .map(|p| hep::read(p).unwrap().payload.to_vec())
            .collect();
        assert_eq!(back, want, "in the order they passed");
        // Without segmentation: one each, in their order, unpadded.
        let mut packets = plain.clone();
        let n = group(&mut packets, &mut groups, false);
        assert_eq!(n, plain.len());
        for (g, p) in groups.iter().zip(&plain) {
            assert_eq!(&g.data, p);
        }
    }

    #[test]
    fn over_tcp_the_packets_arrive_as_a_stream_and_a_missing_collector_costs_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let mut sink = HepSink::new(HepConfig {
            collector: to,
            tcp: true,
            agent: 9,
            sample_pct: 100,
        })
        .unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.2:5090".parse().unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        for i in 0..500u32 {
            let msg = format!("OPTIONS sip:x SIP/2.0\r\nCall-ID: t{i}\r\n\r\n");
            sink.capture(Transport::Tcp, a, b, msg.as_bytes());
            if i % 50 == 49 {
                sink.flush();
            }
        }
        while sink.sent < 500 && Instant::now() < deadline {
            sink.flush();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!((sink.sent, sink.dropped), (500, 0));
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        while packets_in(&all) < 500 {
            let n = std::io::Read::read(&mut conn, &mut buf).unwrap();
            assert!(n > 0);
            all.extend_from_slice(&buf[..n]);
        }
        let mut at = 0;
        for i in 0..500u32 {
            let len = usize::from(u16::from_be_bytes([all[at + 4], all[at + 5]]));
            let p = hep::read(&all[at..at + len]).unwrap();
            assert_eq!(p.meta.correlation, Some(format!("t{i}").as_bytes()));
            assert_eq!((p.meta.protocol, p.meta.agent), (6, 9));
            at += len;
        }
        // Nobody listening: packets are dropped and counted at once.
        drop(conn);
        drop(listener);
        let mut lost = HepSink::new(HepConfig {
            collector: to,
            tcp: true,
            agent: 9,
            sample_pct: 100,
        })
        .unwrap();
        let started = Instant::now();
        for _ in 0..10 {
            lost.capture(
                Transport::Udp,
                a,
                b,
                b"OPTIONS sip:x SIP/2.0\r\nCall-ID: z\r\n\r\n",
            );
            lost.flush();
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(lost.sent, 0);
    }
}
