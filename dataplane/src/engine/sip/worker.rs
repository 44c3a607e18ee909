//! One SIP worker: its sockets, its channel, its event loop.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue};

use super::{StreamLimits, Transport};
use crate::edge::{EdgeAction, EdgeCounters, SipEdge};
use crate::engine::gso::{self, Packer};
use crate::engine::media::DriverKind;
use crate::engine::mmsg;
use crate::engine::sockaddr::{self, Storage};
use crate::engine::uring::recv::RecvHeader;
use crate::engine::uring::send::SendSlots;
use crate::engine::uring::{self, BufRing, Target, submit_and_wait};
use crate::log_budget::LogBudget;
use crate::shm::{Channel, Direction, SipMeta};
use crate::sip::Limits;
use crate::sip::stream::{PlainStream, StreamError, StreamSession};
use crate::sip::tls::{Credentials, TlsStream};
use crate::sip::ws::{WsPolicy, WsStream};
use crate::xdp::link::{Mailbox, ServiceId, XdpLink};

const KIND_SHIFT: u32 = 56;
const UDP: u64 = 1;
const LISTEN: u64 = 2;
const CONN: u64 = 3;
const FUTEX: u64 = 4;
const SEND: u64 = 5;
/// A connection became writable (its connect finished, or its send buffer
/// drained): one-shot.
const CONN_OUT: u64 = 6;
/// The link's owner put datagrams in the worker's AF_XDP mailbox.
const XDP: u64 = 7;
/// How long a connect may take before the connection is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Buffer group of the UDP receive buffers.
const BGID: u16 = 7;
/// UDP send slots per worker; beyond them a send is a plain sendto.
const SEND_SLOTS: usize = 1024;

/// Slot size of the SIP channels: 2 KiB holds a typical INVITE in one slot.
pub(super) const SLOT_SIZE: usize = 2048;

pub(super) struct Settings {
    pub(super) index: usize,
    pub(super) core: Option<usize>,
    pub(super) listeners: Vec<(Transport, SocketAddr)>,
    /// Its channel to each control-plane shard, in shard order.
    pub(super) rings: Vec<PathBuf>,
    pub(super) limits: Limits,
    pub(super) rate_limit: u32,
    pub(super) ring_slots: usize,
    pub(super) batch_wait_us: u32,
    pub(super) driver: DriverKind,
    /// Where the worker publishes its counters once a second.
    pub(super) tally: Arc<crate::shm::stats::Tally>,
    /// HEP capture, when on.
    pub(super) hep: Option<super::HepConfig>,
    /// rvoip's TLS, when it has any.
    pub(super) tls: Option<Arc<Credentials>>,
    /// Limits on stream connections.
    pub(super) streams: StreamLimits,
    /// Who may open WebSocket connections.
    pub(super) ws: Arc<WsPolicy>,
    /// Connections held per source address, shared by the workers.
    pub(super) sources: Arc<SourceCounts>,
    /// SIP over UDP on AF_XDP: the link and the SIP service on it (this
    /// worker's mailbox is number `index`).
    pub(super) xdp: Option<(Arc<XdpLink>, ServiceId)>,
}

/// A worker's UDP on AF_XDP: datagrams come from its mailbox on the link
/// and leave through it, unless too large or to a peer not resolved yet.
struct SipXdp {
    link: Arc<XdpLink>,
    service: ServiceId,
    mailbox: usize,
    /// The mailbox's descriptor is polled (io_uring loop).
    armed: bool,
    /// Datagrams were posted this pass: the owner is to be woken.
    posted: bool,
}

impl SipXdp {
    fn mailbox(&self) -> Option<&Mailbox> {
        self.link.mailboxes(self.service).get(self.mailbox)
    }
}

/// Buckets of [`SourceCounts`]: addresses sharing one count each other's
/// connections (a limit reached early, never late).
const SOURCE_BUCKETS: usize = 4096;

/// Connections open per source address, counted across the workers (a
/// source's connections are spread over them by the kernel's port hash).
#[derive(Debug)]
pub(super) struct SourceCounts(Box<[AtomicU32]>);

impl SourceCounts {
    pub(super) fn new() -> SourceCounts {
        SourceCounts((0..SOURCE_BUCKETS).map(|_| AtomicU32::new(0)).collect())
    }

    fn bucket(ip: IpAddr) -> usize {
        let bits = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize % SOURCE_BUCKETS
    }

    /// Counts a connection from `ip` if fewer than `max` are open (0: no
    /// limit); the bucket to give back when it closes.
    fn take(&self, ip: IpAddr, max: u32) -> Option<usize> {
        let b = Self::bucket(ip);
        let n = self.0[b].fetch_add(1, Ordering::Relaxed);
        if max > 0 && n >= max {
            self.0[b].fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(b)
    }

    fn give_back(&self, bucket: usize) {
        self.0[bucket].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a worker reports when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipWorkerReport {
    /// Edge counters (received, malformed, answered 503, delivered, ...).
    pub edge: EdgeCounters,
    /// Messages dropped by the per-source rate limit.
    pub rate_limited: u64,
    /// Messages dropped because the ring to the control plane was full.
    pub ring_full: u64,
    /// Messages sent.
    pub sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TCP connections opened towards peers.
    pub tcp_connected: u64,
    /// Connects that failed or took longer than 2 s.
    pub tcp_connect_failed: u64,
    /// Connections closed because their peer stopped reading (1 MiB unsent).
    pub tcp_stalled: u64,
    /// Times a connection's socket took less than it was given and the rest
    /// waited for it to become writable.
    pub tcp_write_waits: u64,
    /// UDP datagrams larger than the largest message allowed (dropped).
    pub oversized: u64,
    /// Messages (of `sent`) that left in a send carrying several of one
    /// length to one destination (UDP_SEGMENT).
    pub sent_grouped: u64,
    /// Messages that arrived in a read holding several (a peer's
    /// segmented send, UDP_GRO).
    pub received_grouped: u64,
    /// UDP send operations that succeeded (a segmented send is one, however
    /// many messages it carries): `sent` over this is the messages per send.
    pub udp_sends: u64,
    /// HEP packets the kernel took towards the collector.
    pub hep_sent: u64,
    /// HEP packets lost (collector not keeping up, message too large).
    pub hep_dropped: u64,
    /// TLS connections closed on a TLS failure (handshake refused, record
    /// that does not decrypt, no TLS settings).
    pub tls_refused: u64,
    /// Connections refused because their source held as many as allowed.
    pub conn_refused: u64,
    /// Connections closed because their handshake took too long or they
    /// stayed silent past the idle timeout.
    pub conn_expired: u64,
    /// The worker ran the poll(2) fallback (io_uring refused or not asked for).
    pub fallback: bool,
}

impl SipWorkerReport {
    /// The counters a worker publishes, in the order of
    /// [`crate::shm::stats::SIP_FIELDS`] (its load last).
    pub fn values(&self, busy_permille: u32) -> [u64; 22] {
        let e = &self.edge;
        [
            e.received,
            e.unparsable,
            e.malformed_requests,
            e.malformed_responses,
            e.unavailable,
            e.delivered,
            e.dropped,
            self.rate_limited,
            self.ring_full,
            self.sent,
            self.send_errors,
            self.tcp_accepted,
            self.tcp_connected,
            self.tcp_connect_failed,
            self.tcp_stalled,
            self.oversized,
            self.hep_sent,
            self.hep_dropped,
            self.tls_refused,
            self.conn_refused,
            self.conn_expired,
            u64::from(busy_permille),
        ]
    }
}

/// A worker's demand for its core between two publications.
struct Busy {
    wall: Instant,
    demand_ns: u64,
}

impl Busy {
    fn start() -> Busy {
        Busy {
            wall: Instant::now(),
            demand_ns: crate::engine::media::thread_demand_ns(),
        }
    }

    /// Permille of a core the thread wanted since the last call.
    fn sample(&mut self) -> u32 {
        let now = Busy::start();
        let wall = now.wall.duration_since(self.wall).as_nanos().max(1) as u64;
        let busy = now
            .demand_ns
            .saturating_sub(self.demand_ns)
            .saturating_mul(1000)
            / wall;
        *self = now;
        busy.min(1000) as u32
    }
}

/// How often a worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Receive and send buffer of each SIP UDP socket.
const UDP_BUFFER_BYTES: libc::c_int = 4 << 20;

fn reuseport_socket(addr: SocketAddr, stream: bool) -> io::Result<OwnedFd> {
    sip_socket(addr, stream, true)
}

/// Fails when anything on this host already serves `addr`: a socket bound
/// without SO_REUSEPORT cannot join another's port, so this finds another
/// rvoip (which would otherwise share the port through SO_REUSEPORT and take
/// part of the traffic) as well as any other program. A listening TCP port
/// is found; a TCP port held only by connections in TIME_WAIT is not.
pub(super) fn check_free(addr: SocketAddr, stream: bool) -> io::Result<()> {
    match sip_socket(addr, stream, false) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr} ({}) is already served by another process (another rvoip with its own ring directory, or another program)",
                if stream { "tcp" } else { "udp" }
            ),
        )),
        Err(e) => Err(io::Error::new(e.kind(), format!("{addr}: {e}"))),
    }
}

/// A bound socket for `addr`; `share` lets this instance's workers bind the
/// same address (SO_REUSEPORT) and sizes UDP buffers for SIP bursts.
fn sip_socket(addr: SocketAddr, stream: bool, share: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let kind = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain socket creation; checked.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if share {
        for opt in [libc::SO_REUSEPORT, libc::SO_REUSEADDR] {
            crate::engine::set_int_option(fd, libc::SOL_SOCKET, opt, 1);
        }
    } else if stream {
        // TIME_WAIT connections of an earlier run do not count as in use.
        crate::engine::set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    }
    if !stream && share {
        // Bursts of SIP over UDP overflow the default buffers long before a
        // worker is busy. The forced variants pass net.core.[rw]mem_max when
        // the process may (CAP_NET_ADMIN); otherwise the kernel caps the size.
        let size: libc::c_int = UDP_BUFFER_BYTES;
        for (forced, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            for opt in [forced, plain] {
                if crate::engine::set_int_option(fd, libc::SOL_SOCKET, opt, size) {
                    break;
                }
            }
        }
    }
    let mut storage = sockaddr::zeroed();
    let len = sockaddr::write(addr, &mut storage);
    // SAFETY: storage holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const Storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen on our bound stream socket.
    if stream && share && unsafe { libc::listen(fd, 1024) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

struct Conn {
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    /// TCP or TLS.
    transport: Transport,
    /// What the connection's octets mean: SIP on TCP, or on TLS.
    session: Box<dyn StreamSession>,
    /// When the connect was started, while it is in progress.
    connecting: Option<Instant>,
    /// Whether a writability poll is armed.
    want_write: bool,
    /// When it was opened or accepted.
    opened: Instant,
    /// When octets last went either way.
    active: Instant,
    /// Its source's count, for a connection a listener accepted.
    source: Option<usize>,
}

impl Conn {
    fn new(
        stream: TcpStream,
        (local, remote): (SocketAddr, SocketAddr),
        transport: Transport,
        session: Box<dyn StreamSession>,
    ) -> Conn {
        Conn {
            stream,
            local,
            remote,
            transport,
            session,
            connecting: None,
            want_write: false,
            opened: Instant::now(),
            active: Instant::now(),
            source: None,
        }
    }
}

/// Starts a connect to `dest` on a non-blocking socket; the connection is
/// usable once the socket is writable.
#[allow(unsafe_code)]
fn connect_nonblocking(dest: SocketAddr) -> io::Result<TcpStream> {
    let family = if dest.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a fresh socket, owned by the TcpStream made from it.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket this function just made and nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // SIP over a stream is request and answer: a message written in pieces
    // (a TLS flight, a WebSocket frame) must not wait for the peer's
    // delayed ACK (Nagle's algorithm would hold it up to 40 ms).
    stream.set_nodelay(true)?;
    let mut name = sockaddr::zeroed();
    let len = sockaddr::write(dest, &mut name);
    // SAFETY: connect on our socket with a valid sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, (&name as *const Storage).cast(), len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Token bucket per source address.
struct RateLimiter {
    rate: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let burst = self.rate * 2.0;
        let (tokens, last) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn purge(&mut self, now: Instant) {
        self.buckets
            .retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(60));
    }
}

struct Worker {
    index: usize,
    /// The ring, or none for the fallback (poll(2) and plain calls).
    ring: Option<IoUring>,
    udp: Vec<(OwnedFd, SocketAddr)>,
    listeners: Vec<(OwnedFd, SocketAddr)>,
    /// Each listener's transport (TCP or TLS).
    listener_transports: Vec<Transport>,
    /// rvoip's TLS.
    tls: Option<Arc<Credentials>>,
    streams: StreamLimits,
    ws: Arc<WsPolicy>,
    sources: Arc<SourceCounts>,
    conns: HashMap<u32, Conn>,
    /// Connections whose connect is in progress (of `conns`).
    connecting: usize,
    /// Peers a message could not be delivered to (a connect refused or
    /// timed out, a connection that failed while writing): told to the
    /// control plane (an empty record), whose transactions to them fail
    /// at once (RFC 3261 §17.1.4).
    unreachable: Vec<(SocketAddr, SocketAddr, Transport)>,
    next_conn: u32,
    edge: SipEdge,
    /// Lines about refused requests: a few a second, whatever arrives.
    refusal_log: LogBudget,
    started: Instant,
    limiter: RateLimiter,
    limits: Limits,
    report: SipWorkerReport,
    /// Where the counters are published, and the load measured for it.
    tally: Arc<crate::shm::stats::Tally>,
    busy: Busy,
    last_publish: Instant,
    /// HEP capture of what this worker receives and sends.
    hep: Option<super::capture::HepSink>,
    /// The channels (by shard, a bit each) whose futex wait is armed.
    futex_armed: u64,
    out: Vec<u8>,
    udp_io: UdpIo,
    /// Whether the kernel supports a minimum wait (IORING_FEAT_MIN_TIMEOUT).
    min_wait: bool,
    batch_wait_us: u32,
    /// UDP on AF_XDP, when the link is.
    xdp: Option<SipXdp>,
}

/// A UDP send in flight: the message (or several of one length, cut by the
/// kernel: UDP_SEGMENT); what the kernel reads is in its [`SendSlots`] slot.
#[derive(Debug, Clone, Copy, Default)]
struct SendMeta {
    /// The segment size when the send holds several messages, else 0.
    seg: usize,
    /// The socket (index into the worker's UDP sockets) and destination.
    sock: usize,
    dest: Option<SocketAddr>,
}

/// The io_uring side of the UDP sockets. Field order: `recv_hdr`, the send
/// slots and their data outlive every request that points at them, and the
/// buffer ring is unregistered with the ring (dropped first, in Worker).
struct UdpIo {
    /// Receive buffers (io_uring only).
    bufs: Option<BufRing>,
    recv_hdr: RecvHeader,
    sends: SendSlots,
    meta: Vec<SendMeta>,
    send_data: Vec<Vec<u8>>,
    free_sends: Vec<u16>,
    /// Sockets whose multishot receive ended and must be re-armed.
    rearm: Vec<usize>,
    returned: bool,
    /// The pass's outgoing datagrams per UDP socket, grouped for
    /// segmentation offload (each destination's in the order queued).
    out: Vec<Packer>,
}

impl UdpIo {
    fn new(
        ring: Option<&IoUring>,
        max_message: usize,
        udp: &[(OwnedFd, SocketAddr)],
    ) -> io::Result<UdpIo> {
        // Each buffer holds the recvmsg header, the source address and one
        // datagram of the largest size allowed; the slab is zero-allocated,
        // so pages no datagram reached are never resident.
        let buf_size = (max_message.min(65_535) + 256).next_power_of_two();
        // Coalesced arrivals (a peer's segmented sends, up to 64 KiB in one
        // read) only where a buffer holds that much.
        if buf_size >= 65_536 + 256 {
            for (fd, _) in udp {
                gso::receive_coalesced(fd);
            }
        }
        let bufs = match ring {
            Some(ring) => {
                let count = ((32usize << 20) / buf_size).clamp(64, 4096) as u16;
                let mut bufs = BufRing::new(count, buf_size)?;
                bufs.register(ring, BGID)?;
                Some(bufs)
            }
            None => None,
        };
        // Room for the segment size of a coalesced read, on every socket
        // whichever took the option.
        let recv_hdr = RecvHeader::new(gso::RECV_CONTROL);
        let sends = SendSlots::new(SEND_SLOTS);
        Ok(UdpIo {
            bufs,
            recv_hdr,
            sends,
            meta: vec![SendMeta::default(); SEND_SLOTS],
            send_data: (0..SEND_SLOTS).map(|_| Vec::new()).collect(),
            free_sends: (0..SEND_SLOTS as u16).rev().collect(),
            rearm: Vec::new(),
            returned: false,
            out: udp
                .iter()
                .map(|(fd, _)| Packer::new(gso::can_segment(fd)))
                .collect(),
        })
    }

    fn give_back(&mut self, bid: u16) {
        if let Some(b) = self.bufs.as_mut() {
            b.push(bid);
            self.returned = true;
        }
    }
}

impl Worker {
    /// Sends the HEP packets gathered.
    fn flush_hep(&mut self) {
        if let Some(h) = self.hep.as_mut() {
            h.flush();
            self.report.hep_sent = h.sent;
            self.report.hep_dropped = h.dropped;
        }
    }

    /// Publishes the counters and load, once a second.
    fn publish(&mut self) {
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.last_publish = Instant::now();
            let busy = self.busy.sample();
            self.tally.store(&self.report_now().values(busy));
        }
    }

    /// The counters so far.
    fn report_now(&self) -> SipWorkerReport {
        SipWorkerReport {
            edge: self.edge.counters(),
            ..self.report
        }
    }

    fn push(&mut self, e: io_uring::squeue::Entry) {
        // SAFETY: every entry refers to descriptors, buffers and futex words
        // that outlive the request (sockets and send data are owned by self,
        // the channel by run()).
        if let Some(ring) = self.ring.as_mut() {
            unsafe { uring::push(ring, &e) };
        }
    }

    fn poll(&mut self, fd: RawFd, kind: u64, id: u64) {
        self.push(uring::poll::readable(fd, true, (kind << KIND_SHIFT) | id));
    }

    /// Arms one writability poll for connection `id`, unless one is armed.
    fn poll_writable(&mut self, id: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.want_write {
            return;
        }
        c.want_write = true;
        let e = uring::poll::writable(
            c.stream.as_raw_fd(),
            (CONN_OUT << KIND_SHIFT) | u64::from(id),
        );
        self.push(e);
    }

    /// Connection `id` is writable: its connect has finished (or failed),
    /// or its socket has room again.
    fn on_writable(&mut self, id: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.want_write = false;
        if c.connecting.is_some() {
            if !matches!(c.stream.take_error(), Ok(None)) || c.stream.peer_addr().is_err() {
                self.report.tcp_connect_failed += 1;
                self.fail_conn(id);
                return;
            }
            c.connecting = None;
            self.connecting -= 1;
            if let Ok(l) = c.stream.local_addr() {
                c.local = l;
            }
            self.report.tcp_connected += 1;
        }
        self.write_conn(id);
    }

    /// Writes what connection `id` holds, as far as its socket takes it;
    /// the rest waits for the socket to become writable.
    fn write_conn(&mut self, id: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.connecting.is_some() || c.want_write {
            return;
        }
        while !c.session.wire().is_empty() {
            match c.stream.write(c.session.wire()) {
                Ok(0) => break,
                Ok(n) => {
                    c.session.consumed(n);
                    c.active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.report.send_errors += 1;
                    self.fail_conn(id);
                    return;
                }
            }
        }
        if !c.session.wire().is_empty() {
            self.report.tcp_write_waits += 1;
            self.poll_writable(id);
        }
    }

    /// Gives up connects that have taken longer than [`CONNECT_TIMEOUT`].
    fn expire_connects(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.connecting
                    .is_some_and(|t| now.duration_since(t) > CONNECT_TIMEOUT)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.report.tcp_connect_failed += 1;
            self.fail_conn(id);
        }
    }

    /// Closes connection `id` on a transport error: its peer is reported
    /// unreachable.
    fn fail_conn(&mut self, id: u32) {
        if let Some(c) = self.conns.get(&id) {
            self.unreachable.push((c.local, c.remote, c.transport));
        }
        self.close_conn(id);
    }

    /// Tells the control plane which peers could not be reached: a record
    /// with no message, from the local address, to the peer, over its
    /// transport.
    fn report_unreachable(&mut self, producers: &mut [crate::shm::Producer<'_>]) {
        for (local, remote, transport) in std::mem::take(&mut self.unreachable) {
            let meta = SipMeta {
                transport,
                local,
                remote,
                conn: 0,
            };
            // Whichever shard's transactions went to that peer.
            for p in producers.iter_mut() {
                if p.push(0, &meta.encode(), &[]).is_err() {
                    self.report.ring_full += 1;
                }
            }
        }
    }

    /// Queues a UDP datagram from `local` (or a socket of the same family)
    /// to `dest`; it leaves with the pass's other sends ([`Worker::flush_udp`]).
    fn send_udp(&mut self, local: SocketAddr, dest: SocketAddr, bytes: &[u8]) {
        if let Some(h) = self.hep.as_mut() {
            h.capture(Transport::Udp, local, dest, bytes);
        }
        let sock = self.udp.iter().position(|(_, a)| *a == local).or(self
            .udp
            .iter()
            .position(|(_, a)| a.is_ipv4() == dest.is_ipv4()));
        let Some(sock) = sock else {
            self.report.send_errors += 1;
            return;
        };
        if self.post_xdp(self.udp[sock].1, dest, bytes) {
            return;
        }
        // A call's datagrams keep their order (a message without a Call-ID
        // keeps its order with every datagram to its destination that has
        // none); those of one length to one destination share a send.
        let flow = match crate::sip::scan_call_id(bytes) {
            Some(id) => gso::call_flow(id),
            None => gso::address_flow(dest),
        };
        self.udp_io.out[sock].push(flow, bytes, dest);
    }

    /// Posts a datagram to the AF_XDP link's owner when the worker is on
    /// one, it fits a frame and the peer's Ethernet address is known; false
    /// when it is to go through the kernel instead.
    fn post_xdp(&mut self, local: SocketAddr, dest: SocketAddr, bytes: &[u8]) -> bool {
        let Some(x) = self.xdp.as_mut() else {
            return false;
        };
        if local.ip().is_unspecified() || bytes.len() > x.link.max_payload(dest) {
            return false;
        }
        if x.link.neighbour(dest.ip()).is_none() {
            x.link.missed();
            return false;
        }
        let Some(m) = x.link.mailboxes(x.service).get(x.mailbox) else {
            return false;
        };
        if !m.post(local, dest, bytes) {
            return false;
        }
        x.posted = true;
        self.report.sent += 1;
        true
    }

    /// Wakes the link's owner for what the pass posted.
    fn wake_xdp_owner(&mut self) {
        if let Some(x) = self.xdp.as_mut()
            && std::mem::take(&mut x.posted)
        {
            x.link.wake_owner();
        }
    }

    /// Hands on what the link's owner left in the worker's mailbox.
    fn drain_xdp(&mut self, producers: &mut [crate::shm::Producer<'_>]) -> usize {
        let Some(link) = self.xdp.as_ref().map(|x| Arc::clone(&x.link)) else {
            return 0;
        };
        let Some(x) = self.xdp.as_ref() else {
            return 0;
        };
        let Some(m) = link.mailboxes(x.service).get(x.mailbox) else {
            return 0;
        };
        let mut n = 0;
        while m
            .take(|d| {
                if d.payload.len() > self.limits.max_message_size {
                    self.report.oversized += 1;
                    return;
                }
                let meta = SipMeta {
                    transport: Transport::Udp,
                    local: d.local,
                    remote: d.peer,
                    conn: 0,
                };
                self.inbound(producers, d.payload, meta, None);
            })
            .is_some()
        {
            n += 1;
        }
        n
    }

    /// Turns the pass's queued datagrams into send requests: a group of
    /// several of one length to one destination is one segmented send.
    fn flush_udp(&mut self) {
        if self.ring.is_none() {
            self.flush_udp_fallback();
            return;
        }
        for sock in 0..self.udp_io.out.len() {
            if self.udp_io.out[sock].is_empty() {
                continue;
            }
            let mut out = std::mem::take(&mut self.udp_io.out[sock]);
            let fd = self.udp[sock].0.as_raw_fd();
            for g in out.groups() {
                let Some(dest) = g.to else { continue };
                let seg = if g.count() > 1 { g.seg } else { 0 };
                let Some(id) = self.udp_io.free_sends.pop() else {
                    // Every slot in flight: sent now, one by one.
                    for d in g.datagrams() {
                        self.send_now(fd, dest, d);
                    }
                    continue;
                };
                let i = usize::from(id);
                let data = &mut self.udp_io.send_data[i];
                // The group's buffer goes to the slot, the slot's to the group.
                std::mem::swap(data, &mut g.data);
                let (ptr, len) = (data.as_ptr(), data.len());
                self.udp_io.meta[i] = SendMeta {
                    seg,
                    sock,
                    dest: Some(dest),
                };
                let user_data = (SEND << KIND_SHIFT) | u64::from(id);
                // SAFETY: the data stays in `send_data[i]`, untouched, and
                // slot `i` stays off the free list until the completion.
                let e = unsafe {
                    self.udp_io
                        .sends
                        .entry(i, Target::Fd(fd), ptr, len, dest, seg, user_data)
                };
                self.push(e);
            }
            out.clear();
            self.udp_io.out[sock] = out;
        }
    }

    /// The fallback's sends: each socket's groups in as few `sendmmsg`
    /// calls as it takes (`engine::mmsg`), several datagrams of one length
    /// to one destination in one message where the kernel segments.
    fn flush_udp_fallback(&mut self) {
        for sock in 0..self.udp_io.out.len() {
            if self.udp_io.out[sock].is_empty() {
                continue;
            }
            let fd = self.udp[sock].0.as_raw_fd();
            let out = &mut self.udp_io.out[sock];
            let groups = out.groups();
            let queued: usize = groups.iter().map(|g| g.count()).sum();
            let grouped: usize = groups
                .iter()
                .filter(|g| g.count() > 1)
                .map(|g| g.count())
                .sum();
            let messages = groups.len();
            let (sent, refused) = mmsg::send_groups(fd, groups);
            if refused {
                out.disable();
            } else {
                self.report.sent_grouped += grouped as u64;
            }
            out.clear();
            self.report.sent += sent as u64;
            self.report.udp_sends += messages as u64;
            self.report.send_errors += queued.saturating_sub(sent) as u64;
        }
    }

    /// A send request completed with `res`: counted per datagram. A
    /// segmented send the kernel cannot do (no checksum offload on the
    /// route, say) goes again one datagram at a time, and that socket's
    /// sends are no longer grouped.
    fn on_sent(&mut self, id: usize, res: i32) {
        let SendMeta { seg, sock, dest } = self.udp_io.meta[id];
        let data = &self.udp_io.send_data[id];
        let count = if seg > 0 { data.len().div_ceil(seg) } else { 1 } as u64;
        match dest {
            Some(dest) if res < 0 && seg > 0 && gso::segmentation_refused(-res) => {
                let out = &mut self.udp_io.out[sock];
                out.disable();
                for d in data.chunks(seg) {
                    out.push(0, d, dest);
                }
            }
            _ if res < 0 => self.report.send_errors += count,
            _ => {
                self.report.sent += count;
                self.report.udp_sends += 1;
                if seg > 0 {
                    self.report.sent_grouped += count;
                }
            }
        }
        self.udp_io.free_sends.push(id as u16);
    }

    fn send_now(&mut self, fd: RawFd, dest: SocketAddr, bytes: &[u8]) {
        let mut name = sockaddr::zeroed();
        let len = sockaddr::write(dest, &mut name);
        // SAFETY: sending a valid buffer to a valid sockaddr.
        let r = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&name as *const Storage).cast(),
                len,
            )
        };
        if r < 0 {
            self.report.send_errors += 1;
        } else {
            self.report.sent += 1;
            self.report.udp_sends += 1;
        }
    }

    fn send_tcp(&mut self, meta: SipMeta, bytes: &[u8]) {
        let SipMeta {
            transport,
            local,
            remote: dest,
            conn,
        } = meta;
        if let Some(h) = self.hep.as_mut() {
            h.capture(transport, local, dest, bytes);
        }
        let id = if conn != 0 && self.conns.contains_key(&conn) {
            conn
        } else if let Some((id, _)) = self
            .conns
            .iter()
            .find(|(_, c)| c.remote == dest && c.transport == transport)
        {
            // Reuse a connection to the same peer (RFC 3261 §18.1.1).
            *id
        } else {
            let Some(session) = self.client_session(transport, bytes, dest) else {
                // No TLS settings to open a TLS connection with, or a
                // WebSocket peer whose connection is gone.
                if transport == Transport::Tls {
                    self.report.tls_refused += 1;
                }
                self.report.send_errors += 1;
                self.unreachable.push((local, dest, transport));
                return;
            };
            // The connect is started, not waited for: the message waits in
            // the connection until the socket is writable.
            match connect_nonblocking(dest) {
                Ok(stream) => {
                    let id = self.new_conn_id();
                    let fd = stream.as_raw_fd();
                    let mut c = Conn::new(stream, (local, dest), transport, session);
                    c.connecting = Some(Instant::now());
                    self.conns.insert(id, c);
                    self.connecting += 1;
                    self.poll(fd, CONN, u64::from(id));
                    self.poll_writable(id);
                    id
                }
                Err(_) => {
                    self.report.tcp_connect_failed += 1;
                    self.report.send_errors += 1;
                    self.unreachable.push((local, dest, transport));
                    return;
                }
            }
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.session.send(bytes).is_err() {
            // The peer has not read for a long while: nothing will reach it.
            self.report.tcp_stalled += 1;
            self.report.send_errors += 1;
            self.fail_conn(id);
            return;
        }
        self.report.sent += 1;
        self.write_conn(id);
    }

    fn new_conn_id(&mut self) -> u32 {
        self.next_conn = (self.next_conn + 1) & 0x00ff_ffff;
        if self.next_conn == 0 {
            self.next_conn = 1;
        }
        ((self.index as u32) << 24) | self.next_conn
    }

    /// Logs a request the edge refused, within the log budget.
    fn log_refusal(&mut self, e: crate::sip::SipError, data: &[u8], source: SocketAddr) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if let Some(suppressed) = self.refusal_log.take(now_ms) {
            let call_id = crate::sip::scan_call_id(data).unwrap_or_default();
            tracing::info!(
                %source,
                call_id = %String::from_utf8_lossy(call_id),
                status = e.status(),
                reason = %e,
                suppressed,
                "SIP request refused"
            );
        }
    }

    /// Judges one message and hands it to the control plane.
    fn inbound(
        &mut self,
        producers: &mut [crate::shm::Producer<'_>],
        data: &[u8],
        meta: SipMeta,
        reply_tcp: Option<u32>,
    ) {
        if let Some(h) = self.hep.as_mut() {
            h.capture(meta.transport, meta.remote, meta.local, data);
        }
        if !self.limiter.allow(meta.remote.ip(), Instant::now()) {
            self.report.rate_limited += 1;
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        match self.edge.on_datagram(data, &mut out) {
            EdgeAction::Reply => {
                if let Some(e) = self.edge.last_refusal() {
                    self.log_refusal(e, data, meta.remote);
                }
                match reply_tcp {
                    Some(conn) => self.send_tcp(SipMeta { conn, ..meta }, &out),
                    None => self.send_udp(meta.local, meta.remote, &out),
                }
            }
            EdgeAction::Deliver { shard } => {
                let pushed = producers
                    .get_mut(shard)
                    .is_some_and(|p| p.push(0, &meta.encode(), data).is_ok());
                if !pushed {
                    self.report.ring_full += 1;
                }
            }
            EdgeAction::Drop => {}
        }
        self.out = out;
    }

    /// One completion of a socket's multishot receive.
    fn on_recv(
        &mut self,
        producers: &mut [crate::shm::Producer<'_>],
        i: usize,
        res: i32,
        flags: u32,
    ) {
        if !cqueue::more(flags) {
            self.udp_io.rearm.push(i);
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let Some(&(_, local)) = self.udp.get(i) else {
            self.udp_io.give_back(bid);
            return;
        };
        if res <= 0 {
            self.udp_io.give_back(bid);
            return;
        }
        let Some(bufs) = self.udp_io.bufs.as_ref() else {
            return;
        };
        let buf = bufs.buffer(bid, res as usize);
        let Some(d) = self.udp_io.recv_hdr.datagram(buf) else {
            self.udp_io.give_back(bid);
            return;
        };
        if d.truncated {
            self.report.oversized += 1;
            self.udp_io.give_back(bid);
            return;
        }
        let (remote, payload) = (d.source, d.payload);
        let seg = gso::segment_size(d.control);
        // SAFETY: buffer `bid` is ours until it is given back below: the
        // kernel only fills buffers published in the ring, and nothing in
        // inbound() touches the receive buffers.
        let payload = unsafe { std::slice::from_raw_parts(payload.as_ptr(), payload.len()) };
        let meta = SipMeta {
            transport: Transport::Udp,
            local,
            remote,
            conn: 0,
        };
        // One datagram, or a peer's segmented send handed over whole.
        for d in gso::split(payload, seg) {
            if seg.is_some() {
                self.report.received_grouped += 1;
            }
            self.inbound(producers, d, meta, None);
        }
        self.udp_io.give_back(bid);
    }

    /// Reads what UDP socket `i` holds (the fallback loop), a batch per
    /// `recvmmsg`, each datagram handled as a multishot receive's would be.
    fn recv_udp(
        &mut self,
        producers: &mut [crate::shm::Producer<'_>],
        i: usize,
        batch: &mut mmsg::RecvBatch<FALLBACK_BATCH>,
    ) {
        let Some((fd, local)) = self.udp.get(i).map(|(fd, a)| (fd.as_raw_fd(), *a)) else {
            return;
        };
        let max = self.limits.max_message_size;
        for _ in 0..8 {
            let n = batch.recv(fd).unwrap_or(0);
            for j in 0..n {
                let Some(r) = batch.get(j) else {
                    continue;
                };
                if r.data.len() > max && r.seg.is_none() {
                    self.report.oversized += 1;
                    continue;
                }
                let meta = SipMeta {
                    transport: Transport::Udp,
                    local,
                    remote: r.src,
                    conn: 0,
                };
                for d in gso::split(r.data, r.seg) {
                    if r.seg.is_some() {
                        self.report.received_grouped += 1;
                    }
                    self.inbound(producers, d, meta, None);
                }
            }
            if n < FALLBACK_BATCH {
                return;
            }
        }
    }

    fn arm_recv(&mut self, i: usize) {
        let fd = self.udp[i].0.as_raw_fd();
        let e = self
            .udp_io
            .recv_hdr
            .entry(Target::Fd(fd), BGID, (UDP << KIND_SHIFT) | i as u64);
        self.push(e);
    }

    fn accept(&mut self, i: usize) {
        let (fd, local) = (self.listeners[i].0.as_raw_fd(), self.listeners[i].1);
        let transport = self
            .listener_transports
            .get(i)
            .copied()
            .unwrap_or(Transport::Tcp);
        loop {
            let mut name = sockaddr::zeroed();
            let mut len = std::mem::size_of::<Storage>() as libc::socklen_t;
            // SAFETY: accept4 on our listening socket into valid storage.
            let cfd = unsafe {
                libc::accept4(
                    fd,
                    (&mut name as *mut Storage).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if cfd < 0 {
                return;
            }
            // SAFETY: a fresh connected socket we own.
            let stream = unsafe { TcpStream::from_raw_fd(cfd) };
            // No Nagle: see `connect_nonblocking`.
            let _ = stream.set_nodelay(true);
            let Some(remote) = sockaddr::read(sockaddr::bytes(&name, len as usize)) else {
                continue;
            };
            let Some(source) = self.sources.take(remote.ip(), self.streams.max_per_source) else {
                self.report.conn_refused += 1;
                continue;
            };
            let Some(session) = self.new_session(transport) else {
                self.sources.give_back(source);
                self.report.tls_refused += 1;
                continue;
            };
            let id = self.new_conn_id();
            let mut conn = Conn::new(stream, (local, remote), transport, session);
            conn.source = Some(source);
            self.conns.insert(id, conn);
            self.report.tcp_accepted += 1;
            self.poll(cfd, CONN, u64::from(id));
        }
    }

    /// The session of a connection a listener of `transport` accepted.
    fn new_session(&self, transport: Transport) -> Option<Box<dyn StreamSession>> {
        let ws = || Box::new(WsStream::server(Arc::clone(&self.ws), self.limits));
        match transport {
            Transport::Tls => {
                let config = self.tls.as_ref()?.server()?;
                Some(Box::new(TlsStream::server(config, self.limits).ok()?))
            }
            Transport::Wss => {
                let config = self.tls.as_ref()?.server()?;
                Some(Box::new(TlsStream::server_over(config, ws()).ok()?))
            }
            Transport::Ws => Some(ws()),
            Transport::Udp | Transport::Tcp => Some(Box::new(PlainStream::new(self.limits))),
        }
    }

    /// The session of a connection rvoip opens to `dest` over `transport`
    /// to send `first`: over TLS, the peer's certificate must carry the
    /// name `first` was routed by (RFC 5922), and rvoip presents its own.
    fn client_session(
        &self,
        transport: Transport,
        first: &[u8],
        dest: SocketAddr,
    ) -> Option<Box<dyn StreamSession>> {
        match transport {
            Transport::Tls => {
                let config = self.tls.as_ref()?.client()?;
                let name = crate::sip::tls::peer_name(first, dest, &self.limits);
                Some(Box::new(TlsStream::client(config, name, self.limits).ok()?))
            }
            // A WebSocket peer (a browser) is reached over the connection
            // it opened, or not at all.
            Transport::Ws | Transport::Wss => None,
            Transport::Udp | Transport::Tcp => Some(Box::new(PlainStream::new(self.limits))),
        }
    }

    /// Closes connections whose handshake has taken longer than allowed
    /// (a slow or silent client holds nothing for long) and connections
    /// silent past the idle timeout.
    fn expire_streams(&mut self, now: Instant) {
        let StreamLimits {
            handshake_timeout,
            idle_timeout,
            ..
        } = self.streams;
        let late: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.connecting.is_none()
                    && ((!c.session.established()
                        && now.duration_since(c.opened) > handshake_timeout)
                        || idle_timeout.is_some_and(|t| now.duration_since(c.active) > t))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.report.conn_expired += 1;
            self.close_conn(id);
        }
    }

    fn read_conn(&mut self, producers: &mut [crate::shm::Producer<'_>], id: u32) {
        let mut closed = false;
        let mut frames = Vec::new();
        if let Some(c) = self.conns.get_mut(&id) {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.active = Instant::now();
                        if let Err(e) = c.session.on_bytes(&chunk[..n]) {
                            if matches!(e, StreamError::Tls(_)) {
                                self.report.tls_refused += 1;
                            }
                            closed = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            loop {
                match c.session.poll_message() {
                    Ok(Some(m)) => frames.push(m),
                    Ok(None) => break,
                    Err(_) => {
                        // Framing lost or a message too large: the stream
                        // cannot be resynchronized (RFC 4475 §3.1.2.3).
                        closed = true;
                        break;
                    }
                }
            }
        }
        let meta_of = |c: &Conn| SipMeta {
            transport: c.transport,
            local: c.local,
            remote: c.remote,
            conn: id,
        };
        if let Some(meta) = self.conns.get(&id).map(meta_of) {
            for f in frames {
                self.inbound(producers, &f, meta, Some(id));
            }
        }
        if closed {
            self.close_conn(id);
        } else if self
            .conns
            .get(&id)
            .is_some_and(|c| !c.session.wire().is_empty())
        {
            // What reading made for the peer (a TLS handshake's answer).
            self.write_conn(id);
        }
    }

    /// Closes a connection and cancels its readiness polls.
    fn close_conn(&mut self, id: u32) {
        if let Some(c) = self.conns.remove(&id) {
            if c.connecting.is_some() {
                self.connecting -= 1;
            }
            if let Some(b) = c.source {
                self.sources.give_back(b);
            }
            self.push(uring::poll::remove((CONN << KIND_SHIFT) | u64::from(id), 0));
            if c.want_write {
                self.push(uring::poll::remove(
                    (CONN_OUT << KIND_SHIFT) | u64::from(id),
                    0,
                ));
            }
        }
    }

    /// Sends what the control plane's shards queued; returns how many
    /// records.
    fn drain_outbound(&mut self, consumers: &mut [crate::shm::Consumer<'_>]) -> usize {
        let mut n = 0;
        for consumer in consumers {
            for _ in 0..1024 {
                let Some(r) = consumer.peek() else { break };
                n += 1;
                let meta = SipMeta::decode(r.meta);
                if meta.transport.reliable() {
                    self.send_tcp(meta, r.payload);
                } else {
                    self.send_udp(meta.local, meta.remote, r.payload);
                }
                consumer.advance();
            }
        }
        n
    }
}

pub(super) fn run(
    settings: Settings,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) -> SipWorkerReport {
    if let Some(core) = settings.core {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    let setup = (|| -> io::Result<(Vec<Channel>, Worker)> {
        let channels = settings
            .rings
            .iter()
            .map(|path| {
                Channel::create(
                    path,
                    settings.index as u32,
                    SLOT_SIZE,
                    settings.ring_slots.max(64).next_power_of_two(),
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        let ring = match settings.driver {
            DriverKind::Fallback => None,
            DriverKind::IoUring => Some(new_sip_ring()?),
            // SIP on AF_XDP is not built yet: its workers stay on the
            // kernel path as `auto` would put them.
            DriverKind::Auto | DriverKind::AfXdp { .. } => match new_sip_ring() {
                Ok(r) => Some(r),
                Err(e) => {
                    if settings.index == 0 {
                        tracing::warn!(error = %e, "io_uring refused: the SIP workers use poll(2)");
                    }
                    None
                }
            },
        };
        let min_wait = ring
            .as_ref()
            .is_some_and(|r| r.params().is_feature_min_timeout());
        let mut udp = Vec::new();
        let mut listeners = Vec::new();
        let mut listener_transports = Vec::new();
        for (t, addr) in &settings.listeners {
            if t.reliable() {
                listeners.push((reuseport_socket(*addr, true)?, *addr));
                listener_transports.push(*t);
            } else {
                udp.push((reuseport_socket(*addr, false)?, *addr));
            }
        }
        let udp_io = UdpIo::new(ring.as_ref(), settings.limits.max_message_size, &udp)?;
        let w = Worker {
            index: settings.index,
            ring,
            udp,
            listeners,
            listener_transports,
            tls: settings.tls.clone(),
            streams: settings.streams,
            ws: Arc::clone(&settings.ws),
            sources: Arc::clone(&settings.sources),
            conns: HashMap::new(),
            connecting: 0,
            unreachable: Vec::new(),
            next_conn: 0,
            edge: {
                let mut edge = SipEdge::new(settings.limits);
                edge.set_shards(channels.len());
                edge
            },
            refusal_log: LogBudget::default(),
            started: Instant::now(),
            limiter: RateLimiter {
                rate: f64::from(settings.rate_limit),
                buckets: HashMap::new(),
            },
            limits: settings.limits,
            report: SipWorkerReport::default(),
            tally: Arc::clone(&settings.tally),
            hep: settings.hep.map(super::capture::HepSink::new).transpose()?,
            busy: Busy::start(),
            last_publish: Instant::now(),
            futex_armed: 0,
            out: Vec::with_capacity(2048),
            udp_io,
            min_wait,
            batch_wait_us: settings.batch_wait_us,
            xdp: settings.xdp.clone().map(|(link, service)| SipXdp {
                link,
                service,
                mailbox: settings.index,
                armed: false,
                posted: false,
            }),
        };
        Ok((channels, w))
    })();
    let (channels, mut w) = match setup {
        Ok(x) => {
            let _ = ready.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return SipWorkerReport::default();
        }
    };
    drop(ready);
    if w.ring.is_some() {
        run_uring(&mut w, &channels, &stop);
    } else {
        run_fallback(&mut w, &channels, &stop);
    }
    let mut r = w.report;
    r.edge = w.edge.counters();
    r.fallback = w.ring.is_none();
    r
}

/// Whether the control plane is attached: every shard's heartbeat is
/// recent (they live and die together, in one process).
fn attached(channels: &[Channel]) -> bool {
    channels
        .iter()
        .all(|c| c.controlplane_alive(Duration::from_secs(2)))
}

/// A ring for a SIP worker, with what its loop needs of the kernel.
fn new_sip_ring() -> io::Result<IoUring> {
    uring::probe(&[
        io_uring::opcode::RecvMsgMulti::CODE,
        io_uring::opcode::SendMsg::CODE,
        io_uring::opcode::PollAdd::CODE,
        io_uring::opcode::PollRemove::CODE,
        io_uring::opcode::FutexWait::CODE,
    ])?;
    uring::new_ring(2048, 8192)
}

/// The io_uring loop: multishot receives, polls for listeners and
/// connections, sends submitted, and a futex wait on the channel.
fn run_uring(w: &mut Worker, channels: &[Channel], stop: &AtomicBool) {
    let mut producers = crate::shm::producers(channels, Direction::ToControlPlane);
    let mut consumers = crate::shm::consumers(channels, Direction::ToDataplane);
    for i in 0..w.udp.len() {
        w.arm_recv(i);
    }
    for i in 0..w.listeners.len() {
        let fd = w.listeners[i].0.as_raw_fd();
        w.poll(fd, LISTEN, i as u64);
    }
    let sleep_words = crate::shm::sleep_words(channels, Direction::ToDataplane);
    let mut last_purge = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_traffic = Instant::now() - crate::shm::BUSY_SPELL;
    // One wait's completions, taken off the ring before they are handled.
    let mut events: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        if w.drain_outbound(&mut consumers) + w.drain_xdp(&mut producers) > 0 {
            last_traffic = Instant::now();
        }
        w.flush_udp();
        w.wake_xdp_owner();
        w.flush_hep();
        if let Some(fd) = w
            .xdp
            .as_ref()
            .filter(|x| !x.armed)
            .and_then(|x| x.mailbox())
            .map(Mailbox::fd)
        {
            w.poll(fd, XDP, 0);
            if let Some(x) = w.xdp.as_mut() {
                x.armed = true;
            }
        }
        // While traffic flows the worker wakes at least once per batch
        // window anyway: it looks at the channel then instead of having the
        // control plane's pushes wake it (a cross-core wake-up costs the
        // control plane more than the records it pushes).
        let polling = w.batch_wait_us > 0 && last_traffic.elapsed() < crate::shm::BUSY_SPELL;
        if !polling {
            for (s, consumer) in consumers.iter().enumerate() {
                if w.futex_armed & (1 << s) == 0 && consumer.prepare_sleep() {
                    // Sleep on the channel too: the shard's push wakes us.
                    let e = uring::futex::wait(sleep_words[s], 1, (FUTEX << KIND_SHIFT) | s as u64);
                    w.push(e);
                    w.futex_armed |= 1 << s;
                }
            }
        }
        // Asleep, the worker is woken by the link's owner for a datagram in
        // its mailbox; looking by itself while busy, it is not.
        let xdp_waiting = !polling
            && w.xdp
                .as_ref()
                .and_then(SipXdp::mailbox)
                .is_some_and(|m| !m.prepare_sleep());
        let ts = Timespec::from(if xdp_waiting {
            Duration::ZERO
        } else if polling {
            Duration::from_micros(u64::from(w.batch_wait_us))
        } else {
            Duration::from_millis(200)
        });
        // Submits the queued sends and waits; with a minimum wait, traffic
        // that arrives within it is handled in the same pass.
        let (want, args) = if w.min_wait && w.batch_wait_us > 0 {
            (
                64,
                SubmitArgs::new()
                    .timespec(&ts)
                    .min_wait_usec(w.batch_wait_us),
            )
        } else {
            (1, SubmitArgs::new().timespec(&ts))
        };
        let Some(ring) = w.ring.as_ref() else {
            return;
        };
        if submit_and_wait(ring, want, &args).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(m) = w.xdp.as_ref().and_then(SipXdp::mailbox) {
            m.woke();
        }
        // Judged after the wait: a control plane may have attached (or
        // died) while the worker slept.
        w.edge.set_control_plane_attached(attached(channels));
        events.clear();
        if let Some(ring) = w.ring.as_mut() {
            events.extend(
                ring.completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
        }
        if events.iter().any(|e| e.0 >> KIND_SHIFT != FUTEX) {
            last_traffic = Instant::now();
        }
        for &(data, res, flags) in &events {
            let id = data & ((1 << KIND_SHIFT) - 1);
            match data >> KIND_SHIFT {
                UDP => w.on_recv(&mut producers, id as usize, res, flags),
                SEND => w.on_sent(id as usize, res),
                LISTEN => {
                    w.accept(id as usize);
                    if !cqueue::more(flags) {
                        let fd = w.listeners[id as usize].0.as_raw_fd();
                        w.poll(fd, LISTEN, id);
                    }
                }
                CONN => {
                    w.read_conn(&mut producers, id as u32);
                    if !cqueue::more(flags)
                        && let Some(c) = w.conns.get(&(id as u32))
                    {
                        let fd = c.stream.as_raw_fd();
                        w.poll(fd, CONN, id);
                    }
                }
                CONN_OUT => w.on_writable(id as u32),
                FUTEX => w.futex_armed &= !(1 << id),
                XDP => {
                    if let Some(x) = w.xdp.as_mut() {
                        if let Some(m) = x.mailbox() {
                            m.clear();
                        }
                        if !cqueue::more(flags) {
                            x.armed = false;
                        }
                    }
                }
                _ => {}
            }
        }
        if w.udp_io.returned {
            if let Some(b) = w.udp_io.bufs.as_mut() {
                b.publish();
            }
            w.udp_io.returned = false;
        }
        for i in std::mem::take(&mut w.udp_io.rearm) {
            w.arm_recv(i);
        }
        if w.connecting > 0 {
            w.expire_connects(Instant::now());
        }
        w.report_unreachable(&mut producers);
        w.flush_hep();
        w.publish();
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            w.expire_streams(Instant::now());
            last_sweep = Instant::now();
        }
        if last_purge.elapsed() > Duration::from_secs(10) {
            w.limiter.purge(Instant::now());
            last_purge = Instant::now();
        }
    }
}

/// How long the fallback loop waits in poll(2): it cannot sleep on the
/// channel's futex and its sockets at once, so it looks at the channel at
/// least this often (a message from the control plane waits at most this
/// long; an idle worker wakes a thousand times a second).
const FALLBACK_TICK_MS: i32 = 1;

/// Datagrams per `recvmmsg` of the fallback loop.
const FALLBACK_BATCH: usize = 32;

/// The loop where io_uring is refused: poll(2) over the UDP sockets, the
/// listeners and the connections, plain non-blocking calls, and the channel
/// looked at every [`FALLBACK_TICK_MS`].
fn run_fallback(w: &mut Worker, channels: &[Channel], stop: &AtomicBool) {
    let mut producers = crate::shm::producers(channels, Direction::ToControlPlane);
    let mut consumers = crate::shm::consumers(channels, Direction::ToDataplane);
    let mut last_purge = Instant::now();
    let mut last_sweep = Instant::now();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut conn_ids: Vec<u32> = Vec::new();
    // One octet more than a message may have: a longer datagram is seen
    // as oversized.
    let mut batch = mmsg::RecvBatch::<FALLBACK_BATCH>::new(w.limits.max_message_size + 1);
    while !stop.load(Ordering::Relaxed) {
        w.drain_outbound(&mut consumers);
        w.drain_xdp(&mut producers);
        w.flush_udp();
        w.wake_xdp_owner();
        w.flush_hep();
        fds.clear();
        conn_ids.clear();
        let pollin = |fd: RawFd, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        for (fd, _) in w.udp.iter().chain(w.listeners.iter()) {
            fds.push(pollin(fd.as_raw_fd(), libc::POLLIN));
        }
        for (id, c) in &w.conns {
            let mut events = libc::POLLIN;
            if c.want_write || c.connecting.is_some() {
                events |= libc::POLLOUT;
            }
            fds.push(pollin(c.stream.as_raw_fd(), events));
            conn_ids.push(*id);
        }
        // The AF_XDP mailbox last, after every index the loop below reads.
        let mailbox = w.xdp.as_ref().and_then(SipXdp::mailbox);
        let tick = match mailbox {
            Some(m) => {
                fds.push(pollin(m.fd(), libc::POLLIN));
                if m.prepare_sleep() {
                    FALLBACK_TICK_MS
                } else {
                    0
                }
            }
            None => FALLBACK_TICK_MS,
        };
        // SAFETY: `fds` is a valid array of pollfd of that length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, tick) };
        if let Some(m) = mailbox {
            if fds.pop().is_some_and(|p| p.revents != 0) {
                m.clear();
            } else {
                m.woke();
            }
        }
        w.edge.set_control_plane_attached(attached(channels));
        if n > 0 {
            let (udp, listeners) = (w.udp.len(), w.listeners.len());
            for (k, p) in fds.iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                if k < udp {
                    w.recv_udp(&mut producers, k, &mut batch);
                } else if k < udp + listeners {
                    w.accept(k - udp);
                } else {
                    let id = conn_ids[k - udp - listeners];
                    if p.revents & libc::POLLOUT != 0 {
                        w.on_writable(id);
                    }
                    if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                        w.read_conn(&mut producers, id);
                    }
                }
            }
        }
        if w.connecting > 0 {
            w.expire_connects(Instant::now());
        }
        w.report_unreachable(&mut producers);
        w.flush_hep();
        w.publish();
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            w.expire_streams(Instant::now());
            last_sweep = Instant::now();
        }
        if last_purge.elapsed() > Duration::from_secs(10) {
            w.limiter.purge(Instant::now());
            last_purge = Instant::now();
        }
    }
}
