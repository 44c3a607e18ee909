//! A SIP worker's HEP capture: every message it receives or sends (of the
//! sampled Call-IDs) as a HEP3 packet to the collector, gathered during a
//! pass of the worker's loop and sent with one `sendmmsg` at its end. HEP3
//! carries one packet per datagram, and on the kernel's side each datagram
//! costs far more than building it; so the packets of a pass are sorted by
//! length and those within a quarter of each other padded to one length
//! (an rvoip vendor chunk, [`hep::pad`], that collectors skip) and sent as
//! one segmented send (UDP GSO): a few sends of equal datagrams instead of
//! one send each. The packets' buffers are kept and reused: no allocation
//! per message once warm. Over TCP the packets of a pass are one write to
//! a non-blocking stream. A collector that does not keep up loses packets
//! (counted), never the worker's time.

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
        order: Vec<usize>,
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
            sock.set_nonblocking(true)?;
            Out::Udp {
                sock,
                packets: Vec::with_capacity(BATCH),
                used: 0,
                groups: Vec::with_capacity(BATCH),
                order: Vec::with_capacity(BATCH),
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
                Transport::Tcp => 6,
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
    /// passed, as much as the socket takes now).
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
                order,
                gso,
            } => {
                if *used == 0 {
                    return;
                }
                let n = group(
                    &mut packets[..*used],
                    groups,
                    order,
                    *gso,
                    self.config.collector,
                );
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

/// Puts `packets` into `groups` (buffers reused), longest first, each
/// joining the group before it when padding it to that group's length
/// adds at most a quarter (and at least a chunk header), within what one
/// segmented send may carry; without `gso`, one group each in their order.
/// Returns the groups used.
fn group(
    packets: &mut [Vec<u8>],
    groups: &mut Vec<Group>,
    order: &mut Vec<usize>,
    gso: bool,
    to: SocketAddr,
) -> usize {
    order.clear();
    order.extend(0..packets.len());
    if gso {
        order.sort_unstable_by_key(|&i| std::cmp::Reverse(packets[i].len()));
    }
    let mut used = 0;
    for &i in order.iter() {
        let p = &mut packets[i];
        if gso && used > 0 {
            let g = &mut groups[used - 1];
            let add = g.seg - p.len().min(g.seg);
            let fits = g.seg <= gso::MAX_SEGMENT
                && g.count() < gso::MAX_SEGMENTS
                && g.data.len() + g.seg <= gso::MAX_BYTES
                && add * 4 <= g.seg;
            if fits && hep::pad(p, g.seg) {
                g.data.extend_from_slice(p);
                continue;
            }
        }
        if used == groups.len() {
            groups.push(Group {
                to: Some(to),
                seg: 0,
                data: Vec::with_capacity(8192),
            });
        }
        let g = &mut groups[used];
        g.to = Some(to);
        g.data.clear();
        g.data.extend_from_slice(p);
        g.seg = p.len();
        used += 1;
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
        sink.flush();
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
    fn a_pass_of_messages_of_many_lengths_goes_as_few_segmented_sends() {
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
        // 40 messages of 300 to 1100 octets, and one too long to group.
        let mut plain: Vec<Vec<u8>> = (0..40)
            .map(|i| vec![b'x'; 300 + (i * 211) % 800])
            .chain([vec![b'y'; 1500]])
            .map(|m| {
                let mut p = Vec::new();
                assert!(hep::write(&mut p, &meta, &m));
                p
            })
            .collect();
        let overhead = plain[0].len() - hep::read(&plain[0]).unwrap().payload.len();
        let mut packets = plain.clone();
        let (mut groups, mut order) = (Vec::new(), Vec::new());
        let n = group(&mut packets, &mut groups, &mut order, true, to);
        assert!(n <= 8, "{n} groups");
        let mut back: Vec<Vec<u8>> = Vec::new();
        for g in &groups[..n] {
            assert!(g.data.len().is_multiple_of(g.seg));
            for d in g.datagrams() {
                assert_eq!(usize::from(u16::from_be_bytes([d[4], d[5]])), d.len());
                let p = hep::read(d).unwrap();
                back.push(p.payload.to_vec());
                // At most a quarter of a datagram is padding.
                let padding = d.len() - (p.payload.len() + overhead);
                assert!(padding * 4 <= d.len(), "{padding} of {}", d.len());
            }
        }
        let mut want: Vec<Vec<u8>> = plain
            .iter_mut()
            .map(|p| hep::read(p).unwrap().payload.to_vec())
            .collect();
        want.sort();
        back.sort();
        assert_eq!(back, want);
        // Without segmentation: one each, in their order, unpadded.
        let mut packets = plain.clone();
        let n = group(&mut packets, &mut groups, &mut order, false, to);
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
