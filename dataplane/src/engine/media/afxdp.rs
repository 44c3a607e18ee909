//! The AF_XDP driver: the worker's packets come from its AF_XDP sockets,
//! one per receive queue of the link it takes (queue `q` is worker
//! `q % workers`'s), where rvoip's XDP program steers UDP to the relay's
//! endpoints (`crate::xdp`), and leave as frames rvoip builds (Ethernet,
//! IP, UDP, checksums) on the first of them, without the kernel's UDP
//! stack. A frame lands on the queue the link's hashing picks: one for an
//! endpoint of another worker is handed to that worker's mailbox (copied
//! once) and relayed there. Each endpoint still binds a kernel UDP socket: it keeps the
//! port rvoip's on the host, and it is the way out to a peer whose
//! Ethernet address is not known yet (the kernel resolves it; the
//! neighbour table is read again on the next miss). Peers' addresses are
//! learned from the frames they send.
//!
//! The workers carry the datagrams of the link's other services too (SIP
//! workers, the ng service): what arrives for their addresses goes to
//! their mailboxes, and worker 0 (the link's owner) sends what they post
//! as frames (`crate::xdp::link`).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::Polling;
use super::worker::{Clock, Driver, Wake, bind_udp};
use crate::media::relay::{Action, EndpointId, Relay};
use crate::xdp::bpf;
use crate::xdp::frame::{self, Mac};
use crate::xdp::link::{Mailbox, XdpLink};
use crate::xdp::xsk::{CopyMode, FRAME, Xsk};

/// Frames received per batch.
const BATCH: usize = 64;
/// Largest payload relayed.
const BUF: usize = 2048;
/// UMEM frames per worker socket.
const FRAMES: u32 = 4096;
/// Neighbour entries kept before the table is started again.
const NEIGHBOURS: usize = 4096;
/// How long one busy poll of a queue may spin in the kernel.
const BUSY_POLL_US: u32 = 20;
/// Frames within this long mean traffic is flowing.
const FLOWING: Duration = Duration::from_millis(20);

/// What a worker on AF_XDP is given: the link (rvoip's program on it, the
/// services whose datagrams it carries), its queues, and the other
/// workers' mailboxes.
#[derive(Debug, Clone)]
pub(super) struct XdpWorker {
    pub(super) link: Arc<XdpLink>,
    /// This worker's number; worker 0 owns the link (sends what the
    /// services post).
    pub(super) index: usize,
    /// The link's receive queues this worker's sockets take.
    pub(super) queues: Vec<u32>,
    /// Each media worker's mailbox for the frames others take for it.
    pub(super) handoff: Arc<Vec<Mailbox>>,
    /// The relay's ports, `[lo, hi]`: whose each port is.
    pub(super) ports: (u16, u16),
}

impl XdpWorker {
    fn owner(&self) -> bool {
        self.index == 0
    }

    fn inbox(&self) -> Option<&Mailbox> {
        self.handoff.get(self.index)
    }
}

struct Endpoint {
    addr: SocketAddr,
    /// The kernel socket: the port held, and the way out to an unresolved
    /// peer.
    socket: OwnedFd,
}

/// The sending half: the socket, what rvoip's frames need.
struct Out {
    xsk: Xsk,
    /// The link: the Ethernet addresses the other workers learned.
    link: Arc<XdpLink>,
    mac: Mac,
    endpoints: Vec<Option<Endpoint>>,
    /// Ethernet addresses of peers (and next hops), learned from their
    /// frames and from the kernel's neighbour table.
    neighbours: HashMap<IpAddr, Mac, rustc_hash::FxBuildHasher>,
    /// A peer was sent to through the kernel: read the neighbour table.
    missed: bool,
    /// IPv4 identification of the next frame.
    ip_id: u16,
    sent: u64,
    send_errors: u64,
}

impl Out {
    /// Sends `payload` from endpoint `via` to `to`: a frame on the socket
    /// when `to`'s Ethernet address is known, else through the kernel.
    fn send(&mut self, via: EndpointId, to: SocketAddr, payload: &[u8]) {
        let Some((from, fd)) = self
            .endpoints
            .get(via as usize)
            .and_then(Option::as_ref)
            .map(|ep| (ep.addr, ep.socket.as_raw_fd()))
        else {
            self.send_errors += 1;
            return;
        };
        let Some(mac) = self.mac_of(to.ip()) else {
            self.missed = true;
            if crate::engine::mmsg::send_to(fd, payload, to) {
                self.sent += 1;
            } else {
                self.send_errors += 1;
            }
            return;
        };
        self.send_frame(from, (to, mac), payload);
    }

    /// `ip`'s Ethernet address: as this worker learned it, else as another
    /// worker did (the frames of a peer may come on another's queue).
    fn mac_of(&mut self, ip: IpAddr) -> Option<Mac> {
        if let Some(&mac) = self.neighbours.get(&ip) {
            return Some(mac);
        }
        let mac = self.link.neighbour(ip)?;
        if self.neighbours.len() >= NEIGHBOURS {
            self.neighbours.clear();
        }
        self.neighbours.insert(ip, mac);
        Some(mac)
    }

    /// Sends `payload` from `from` to `to` at Ethernet address `mac` in a
    /// frame on the socket.
    fn send_frame(&mut self, from: SocketAddr, (to, mac): (SocketAddr, Mac), payload: &[u8]) {
        let h = frame::headers_len(from);
        if h + payload.len() > FRAME as usize {
            self.send_errors += 1;
            return;
        }
        let Some((at, buf)) = self.xsk.frame() else {
            self.send_errors += 1;
            return;
        };
        buf[h..h + payload.len()].copy_from_slice(payload);
        let id = self.ip_id;
        self.ip_id = self.ip_id.wrapping_add(1);
        match frame::build(buf, (self.mac, mac), from, to, payload.len(), id) {
            Some(n) if self.xsk.send(at, n as u32) => self.sent += 1,
            _ => self.send_errors += 1,
        }
    }

    /// Sends what the link's services posted; a peer whose Ethernet
    /// address went from the table meanwhile is counted lost (the
    /// service's retransmission goes through the kernel).
    fn send_posted(&mut self, link: &XdpLink) -> bool {
        let mut any = false;
        for m in link.all_mailboxes() {
            while m
                .collect(|d| match self.mac_of(d.peer.ip()) {
                    Some(mac) => self.send_frame(d.local, (d.peer, mac), d.payload),
                    None => self.send_errors += 1,
                })
                .is_some()
            {
                any = true;
            }
        }
        any
    }

    /// Takes in what the kernel's neighbour table knows of the link, and
    /// shares it with the link's services.
    fn read_neighbours(&mut self, link: &XdpLink) {
        self.missed = false;
        if let Ok(n) = bpf::neighbours(link.ifindex) {
            if self.neighbours.len() + n.len() > NEIGHBOURS {
                self.neighbours.clear();
            }
            for (ip, mac) in n {
                self.neighbours.insert(ip, mac);
                link.learn(ip, mac);
            }
        }
    }
}

/// A socket on queue `queue` of the link: zero-copy where the driver has
/// it, else copy mode (veth, and drivers without an XSK pool).
fn open_socket(link: &XdpLink, queue: u32) -> io::Result<Xsk> {
    Xsk::open(link.ifindex, queue, FRAMES, CopyMode::ZeroCopy)
        .or_else(|_| Xsk::open(link.ifindex, queue, FRAMES, CopyMode::Copy))
}

pub(super) struct AfXdpDriver {
    xdp: XdpWorker,
    out: Out,
    /// The sockets of the other queues (receive only).
    others: Vec<Xsk>,
    /// What `poll` waits on: every socket, then the wake-up.
    fds: Vec<libc::pollfd>,
    free: Vec<EndpointId>,
    by_addr: HashMap<SocketAddr, EndpointId, rustc_hash::FxBuildHasher>,
    /// The received batch: (endpoint, source, length), payloads in `bufs`.
    batch: Vec<(EndpointId, SocketAddr, usize)>,
    bufs: Box<[[u8; BUF]; BATCH]>,
    /// Where the relay writes each packet it makes.
    tx: Box<[u8; 1600]>,
    /// When the neighbour table was last read, worker milliseconds.
    neighbours_read_ms: u64,
    received: u64,
    /// Datagrams handed to the link's services.
    posted: u64,
    /// Frames handed to the worker owning their endpoint.
    handed: u64,
    polling: Polling,
    /// When a frame last came or went, worker nanoseconds.
    last_traffic_ns: u64,
}

impl AfXdpDriver {
    pub(super) fn new(xdp: XdpWorker, wake: &Wake, polling: Polling) -> io::Result<Self> {
        let link = &xdp.link;
        let (&first, rest) = xdp
            .queues
            .split_first()
            .ok_or_else(|| io::Error::other("an AF_XDP media worker without a queue"))?;
        let xsk = open_socket(link, first)?;
        link.steering.bind_queue(first, &xsk)?;
        let mut others = Vec::new();
        for &q in rest {
            let s = open_socket(link, q)?;
            link.steering.bind_queue(q, &s)?;
            others.push(s);
        }
        tracing::info!(
            worker = xdp.index,
            queues = ?xdp.queues,
            mode = ?xsk.mode,
            huge_pages = xsk.huge_pages,
            "AF_XDP sockets open"
        );
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // The inbox last (after the link owner's wake-up, worker 0's).
        let fds = std::iter::once(xsk.fd())
            .chain(others.iter().map(Xsk::fd))
            .chain([wake.raw()])
            .chain(xdp.owner().then(|| link.owner_fd()))
            .chain(xdp.inbox().map(Mailbox::fd))
            .map(pollfd)
            .collect();
        let mut out = Out {
            xsk,
            link: Arc::clone(link),
            mac: link.mac,
            endpoints: Vec::new(),
            neighbours: HashMap::default(),
            missed: false,
            ip_id: 1,
            sent: 0,
            send_errors: 0,
        };
        out.read_neighbours(link);
        // Adaptive polling spins on the rings after traffic: the queue's
        // NAPI is polled from the spin too, where the link allows it.
        if let Polling::Adaptive(_) = polling {
            for s in std::iter::once(&out.xsk).chain(others.iter()) {
                if let Err(e) = s.prefer_busy_poll(BUSY_POLL_US, BATCH as u32) {
                    tracing::warn!(error = %e, "AF_XDP: busy polling refused; the worker spins on its rings only");
                    break;
                }
            }
        }
        Ok(AfXdpDriver {
            xdp,
            out,
            others,
            fds,
            free: Vec::new(),
            by_addr: HashMap::default(),
            batch: Vec::with_capacity(BATCH),
            bufs: Box::new([[0u8; BUF]; BATCH]),
            tx: Box::new([0u8; 1600]),
            neighbours_read_ms: 0,
            received: 0,
            posted: 0,
            handed: 0,
            polling,
            last_traffic_ns: 0,
        })
    }

    /// Takes the frames the sockets have, up to a batch, into `bufs`, then
    /// those other workers handed over; a datagram for a service of the
    /// link goes to its mailbox, one for another worker's endpoint to
    /// that worker's.
    fn receive(&mut self) -> usize {
        self.batch.clear();
        let (batch, bufs, by_addr) = (&mut self.batch, &mut self.bufs, &self.by_addr);
        let link = &*self.xdp.link;
        let (me, handoff, (lo, hi)) = (self.xdp.index, &*self.xdp.handoff, self.xdp.ports);
        // The workers handed frames (a bit each): to wake after the batch.
        let mut handed_to = 0u64;
        let mut handed = 0u64;
        let Out {
            xsk, neighbours, ..
        } = &mut self.out;
        let mut posted = 0u64;
        // The mailboxes given datagrams (by address): the threads to wake.
        let mut touched: [Option<&crate::xdp::link::Mailbox>; 4] = [None; 4];
        let mut overflow = false;
        for sock in std::iter::once(xsk).chain(self.others.iter_mut()) {
            let room = (BATCH - batch.len()) as u32;
            if room == 0 {
                break;
            }
            sock.recv(room, |f| {
                let Ok(u) = frame::parse(f) else { return };
                // The sender's frame says where it (or its router) is.
                if neighbours.get(&u.src.ip()) != Some(&u.macs.0) {
                    if neighbours.len() >= NEIGHBOURS {
                        neighbours.clear();
                    }
                    neighbours.insert(u.src.ip(), u.macs.0);
                    link.learn(u.src.ip(), u.macs.0);
                }
                let payload = &f[u.payload.clone()];
                let Some(&ep) = by_addr.get(&u.dst) else {
                    let owner = super::ports::owner(lo, hi, u.dst.port(), handoff.len())
                        .filter(|w| *w != me);
                    if let Some(w) = owner {
                        // Another worker's endpoint (or none open: it drops
                        // it as its own socket would).
                        if handoff
                            .get(w)
                            .is_some_and(|m| m.deliver(u.dst, u.src, payload))
                        {
                            handed += 1;
                            handed_to |= 1 << (w % 64);
                        }
                        return;
                    }
                    if let Some(m) = link.deliver(u.dst, u.src, payload) {
                        posted += 1;
                        if !touched.iter().flatten().any(|t| std::ptr::eq(*t, m)) {
                            match touched.iter_mut().find(|t| t.is_none()) {
                                Some(slot) => *slot = Some(m),
                                None => overflow = true,
                            }
                        }
                    }
                    return;
                };
                let Some(buf) = bufs.get_mut(batch.len()) else {
                    return;
                };
                let n = payload.len().min(BUF);
                buf[..n].copy_from_slice(&payload[..n]);
                batch.push((ep, u.src, n));
            });
        }
        self.posted += posted;
        self.handed += handed;
        for (w, m) in handoff.iter().enumerate() {
            if handed_to & (1 << (w % 64)) != 0 {
                m.wake();
            }
        }
        // What the other workers took off their queues for this one.
        if let Some(inbox) = handoff.get(me) {
            while batch.len() < BATCH
                && inbox
                    .take(|d| {
                        let (Some(&ep), Some(buf)) =
                            (by_addr.get(&d.local), bufs.get_mut(batch.len()))
                        else {
                            return;
                        };
                        let n = d.payload.len().min(BUF);
                        buf[..n].copy_from_slice(&d.payload[..n]);
                        batch.push((ep, d.peer, n));
                    })
                    .is_some()
            {}
        }
        if overflow {
            link.all_mailboxes()
                .for_each(crate::xdp::link::Mailbox::wake);
        } else {
            touched.iter().flatten().for_each(|m| m.wake());
        }
        self.received += self.batch.len() as u64;
        self.batch.len()
    }

    /// About to sleep: announced to the services (worker 0, the link's
    /// owner) and to the other workers; false when work came meanwhile.
    fn prepare_sleep(&self) -> bool {
        let owner = self.xdp.owner();
        if owner && !self.xdp.link.owner_prepare_sleep() {
            return false;
        }
        if let Some(inbox) = self.xdp.inbox()
            && !inbox.prepare_sleep()
        {
            if owner {
                self.xdp.link.owner_woke();
            }
            return false;
        }
        true
    }

    /// Awake again: the wake-ups read.
    fn woke(&self) {
        if self.xdp.owner() {
            self.xdp.link.owner_woke();
        }
        if let Some(inbox) = self.xdp.inbox() {
            inbox.clear();
        }
    }

    /// Relays the received batch.
    fn relay_batch(&mut self, relay: &mut Relay, clock: &Clock) {
        let (now_ms, now_ns) = clock.now();
        for (i, &(ep, src, len)) in self.batch.iter().enumerate() {
            let mut len = len;
            let buf = &mut self.bufs[i];
            if let Action::Forward { via, to } =
                relay.on_datagram(now_ms, now_ns, ep, src, buf, &mut len)
            {
                self.out.send(via, to, &buf[..len]);
            }
        }
    }

    /// Sends what the relay has due (the stage's packets, STUN, DTLS).
    fn transmit(&mut self, relay: &mut Relay, clock: &Clock) {
        let now_ns = clock.now().1;
        while let Some(t) = relay.poll_transmit(now_ns, &mut self.tx[..]) {
            self.out.send(t.via, t.to, &self.tx[..t.len]);
        }
    }
}

impl Driver for AfXdpDriver {
    fn open(&mut self, addr: SocketAddr) -> io::Result<EndpointId> {
        let socket = bind_udp(addr)?;
        // SAFETY: F_SETFL on our descriptor.
        unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        self.xdp.link.steering.steer(addr)?;
        let ep = match self.free.pop() {
            Some(ep) => ep,
            None => {
                self.out.endpoints.push(None);
                (self.out.endpoints.len() - 1) as EndpointId
            }
        };
        self.out.endpoints[ep as usize] = Some(Endpoint { addr, socket });
        self.by_addr.insert(addr, ep);
        Ok(ep)
    }

    fn close(&mut self, ep: EndpointId) {
        if let Some(slot) = self.out.endpoints.get_mut(ep as usize)
            && let Some(e) = slot.take()
        {
            let _ = self.xdp.link.steering.release(e.addr);
            self.by_addr.remove(&e.addr);
            self.free.push(ep);
        }
    }

    fn poll(&mut self, relay: &mut Relay, clock: &Clock, timeout: Duration) -> io::Result<()> {
        self.transmit(relay, clock);
        if self.xdp.owner() && self.out.send_posted(&self.xdp.link) {
            self.last_traffic_ns = clock.now().1;
        }
        self.out.xsk.flush();
        let timeout = match relay.next_due_ns() {
            Some(due) => timeout.min(Duration::from_nanos(
                due.saturating_sub(clock.now().1) + 999_999,
            )),
            None => timeout,
        };
        if self.receive() == 0 {
            // While frames flow the worker looks at its rings once per
            // batch window (or keeps polling them) instead of being woken
            // by each frame, and the link's services post without waking
            // it; idle, it sleeps until a frame, an order or a post.
            let since = clock.now().1.saturating_sub(self.last_traffic_ns);
            match self.polling {
                Polling::Adaptive(window) if since < window.as_nanos() as u64 => {
                    for s in std::iter::once(&self.out.xsk).chain(self.others.iter()) {
                        s.busy_poll();
                    }
                }
                Polling::Interrupt { batch_wait_us }
                    if batch_wait_us > 0 && since < FLOWING.as_nanos() as u64 =>
                {
                    std::thread::sleep(
                        Duration::from_micros(u64::from(batch_wait_us)).min(timeout),
                    );
                }
                _ if self.prepare_sleep() => {
                    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                    // SAFETY: `fds` is valid for its length.
                    let n = unsafe {
                        libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms)
                    };
                    self.woke();
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                _ => {}
            }
            self.receive();
        }
        if !self.batch.is_empty() {
            self.last_traffic_ns = clock.now().1;
        }
        // Several batches while they come full.
        for _ in 0..8 {
            if self.batch.is_empty() {
                break;
            }
            self.relay_batch(relay, clock);
            self.out.xsk.flush();
            if self.batch.len() < BATCH || self.receive() == 0 {
                break;
            }
        }
        self.transmit(relay, clock);
        if self.xdp.owner() && self.out.send_posted(&self.xdp.link) {
            self.last_traffic_ns = clock.now().1;
        }
        self.out.xsk.flush();
        // A peer sent to through the kernel: its address is in the
        // neighbour table by now, or soon (read at most every 100 ms).
        let now_ms = clock.now().0;
        if self.xdp.link.take_missed() {
            self.out.missed = true;
        }
        if self.out.missed && now_ms.saturating_sub(self.neighbours_read_ms) >= 100 {
            self.neighbours_read_ms = now_ms;
            self.out.read_neighbours(&self.xdp.link);
        }
        Ok(())
    }

    fn io_counters(&self) -> (u64, u64, u64) {
        (self.received, self.out.sent, self.out.send_errors)
    }

    fn handed_over(&self) -> u64 {
        self.handed
    }
}

impl Drop for AfXdpDriver {
    fn drop(&mut self) {
        // Datagrams for the link's services lost with a mailbox full.
        let mailbox_full: u64 = self
            .xdp
            .link
            .all_mailboxes()
            .map(|m| m.inbound_full.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let handed_in_full = self.xdp.inbox().map_or(0, |m| {
            m.inbound_full.load(std::sync::atomic::Ordering::Relaxed)
        });
        for (queue, sock) in std::iter::once(&self.out.xsk)
            .chain(self.others.iter())
            .enumerate()
        {
            let Ok(s) = sock.statistics() else { continue };
            tracing::info!(
                worker = self.xdp.index,
                queue = self.xdp.queues.get(queue).copied().unwrap_or(0),
                received = self.received,
                posted = self.posted,
                handed = self.handed,
                mailbox_full,
                handed_in_full,
                sent = self.out.sent,
                send_errors = self.out.send_errors,
                rx_dropped = s.rx_dropped,
                rx_ring_full = s.rx_ring_full,
                rx_fill_empty = s.rx_fill_empty,
                invalid = s.invalid,
                "AF_XDP socket closed"
            );
        }
    }
}
