//! One link on AF_XDP, shared by the threads that serve UDP on it.
//!
//! A queue of a link takes one AF_XDP socket, and the media worker owns
//! them all (it relays in place, and media is most of the traffic). The
//! other services on the link, the SIP workers and the ng service, get
//! their datagrams from it through a [`Mailbox`] each: the media worker
//! copies a datagram for a SIP or ng address into the mailbox of the
//! thread that serves it and sends what they post as frames it builds.
//! A thread is woken (an eventfd) only when it said it would sleep, so
//! under load a datagram costs a copy and no system call.
//!
//! What does not fit a frame, or goes to a peer whose Ethernet address is
//! not known yet, the service sends on its own kernel socket, as IP
//! fragments arrive on it: the kernel keeps serving what AF_XDP cannot.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crossbeam_queue::ArrayQueue;

use super::frame::Mac;
use super::{Steering, XdpMode, bpf};
use crate::engine::wake::Wake;

/// Largest payload a mailbox carries (a frame's, less its headers).
pub const PAYLOAD: usize = super::xsk::FRAME as usize - 14 - 40 - 8;
/// Datagrams a mailbox holds each way.
const DEPTH: usize = 1024;
/// Neighbour entries shared before the table is started again.
const NEIGHBOURS: usize = 4096;

/// One datagram between a service and the link's owner, as the receiver
/// sees it.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// rvoip's address.
    pub local: SocketAddr,
    /// The peer's.
    pub peer: SocketAddr,
    /// What it carries.
    pub payload: &'a [u8],
}

/// A datagram waiting in a lane: where its payload is.
#[derive(Debug, Clone, Copy)]
struct Note {
    local: SocketAddr,
    peer: SocketAddr,
    slot: u16,
    len: u16,
}

/// One direction of a mailbox: payload slots, handed from writer to
/// reader by their numbers (a datagram is copied once in, read in place).
struct Lane {
    /// `DEPTH` slots of `PAYLOAD` octets.
    slots: Box<[UnsafeCell<u8>]>,
    free: ArrayQueue<u16>,
    ready: ArrayQueue<Note>,
}

// SAFETY: a slot is written only by the thread that took its number from
// `free` and read only by the thread that took it from `ready`; the
// queues' release/acquire order the accesses. Nothing else touches them.
unsafe impl Sync for Lane {}

impl Lane {
    fn new() -> Lane {
        // Zeroed memory, not touched until a slot is used.
        let bytes = vec![0u8; DEPTH * PAYLOAD].into_boxed_slice();
        // SAFETY: UnsafeCell<u8> has u8's layout (repr(transparent)).
        let slots = unsafe { Box::from_raw(Box::into_raw(bytes) as *mut [UnsafeCell<u8>]) };
        let free = ArrayQueue::new(DEPTH);
        for i in 0..DEPTH as u16 {
            let _ = free.push(i);
        }
        Lane {
            slots,
            free,
            ready: ArrayQueue::new(DEPTH),
        }
    }

    fn slot(&self, i: u16) -> *mut u8 {
        // In bounds: `i` < DEPTH, from `free` or `ready`.
        self.slots
            .as_ptr()
            .cast::<u8>()
            .cast_mut()
            .wrapping_add(usize::from(i) * PAYLOAD)
    }

    /// Copies a datagram in; false when it is too large or the lane full.
    fn push(&self, local: SocketAddr, peer: SocketAddr, payload: &[u8]) -> bool {
        if payload.len() > PAYLOAD {
            return false;
        }
        let Some(slot) = self.free.pop() else {
            return false;
        };
        // SAFETY: the slot is this thread's until its number goes on
        // `ready`; it holds PAYLOAD octets.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), self.slot(slot), payload.len()) };
        let note = Note {
            local,
            peer,
            slot,
            len: payload.len() as u16,
        };
        // Never full: there are as many notes as slots.
        self.ready.push(note).is_ok()
    }

    /// Hands the next datagram to `f`, then frees its slot.
    fn pop<R>(&self, f: impl FnOnce(Datagram<'_>) -> R) -> Option<R> {
        let n = self.ready.pop()?;
        // SAFETY: the slot is this thread's until its number goes back on
        // `free`, after `f`; `len` octets of it were written.
        let payload = unsafe { std::slice::from_raw_parts(self.slot(n.slot), usize::from(n.len)) };
        let r = f(Datagram {
            local: n.local,
            peer: n.peer,
            payload,
        });
        let _ = self.free.push(n.slot);
        Some(r)
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    fn len(&self) -> usize {
        self.ready.len()
    }
}

/// A thread's sleep, announced before it sleeps so that whoever gives it
/// work wakes it, and only then.
struct Sleeper {
    fd: Wake,
    asleep: AtomicBool,
}

impl Sleeper {
    fn new() -> io::Result<Sleeper> {
        Ok(Sleeper {
            fd: Wake::new()?,
            asleep: AtomicBool::new(false),
        })
    }

    /// Announces a sleep; false when `pending` says there is work after all.
    fn prepare(&self, pending: impl Fn() -> bool) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if pending() {
            self.asleep.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// After work was queued: wakes the thread if it sleeps.
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.fd.notify();
        }
    }

    fn woke(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }
}

/// The datagrams of one service thread, both ways.
pub struct Mailbox {
    inbound: Lane,
    outbound: Lane,
    sleeper: Sleeper,
    /// Datagrams lost with the inbound queue full.
    pub inbound_full: AtomicU64,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("inbound", &self.inbound.len())
            .field("outbound", &self.outbound.len())
            .finish()
    }
}

impl Mailbox {
    /// An empty mailbox (a service thread's, or a media worker's for the
    /// frames other workers hand it).
    pub fn new() -> io::Result<Mailbox> {
        Ok(Mailbox {
            inbound: Lane::new(),
            outbound: Lane::new(),
            sleeper: Sleeper::new()?,
            inbound_full: AtomicU64::new(0),
        })
    }

    /// The descriptor the service waits on (readable when woken).
    pub fn fd(&self) -> RawFd {
        self.sleeper.fd.raw()
    }

    /// The service: hands the next datagram received for it to `f`; none
    /// when there is none.
    pub fn take<R>(&self, f: impl FnOnce(Datagram<'_>) -> R) -> Option<R> {
        self.inbound.pop(f)
    }

    /// The service: about to sleep on [`Mailbox::fd`]; false when a
    /// datagram came meanwhile (do not sleep).
    pub fn prepare_sleep(&self) -> bool {
        self.sleeper.prepare(|| !self.inbound.is_empty())
    }

    /// The service: awake again (its wake-up read or not).
    pub fn woke(&self) {
        self.sleeper.woke();
    }

    /// The service: reads its wake-up off the descriptor (a poll(2) loop;
    /// an io_uring loop reads it with a request).
    pub fn clear(&self) {
        self.sleeper.fd.drain();
        self.sleeper.woke();
    }

    /// The service: queues `payload` from `local` to `peer` for the link's
    /// owner; false (nothing queued) when it is too large or the queue is
    /// full. The owner is woken by [`XdpLink::wake_owner`] after a batch.
    pub fn post(&self, local: SocketAddr, peer: SocketAddr, payload: &[u8]) -> bool {
        self.outbound.push(local, peer, payload)
    }

    /// The owner (or another media worker): hands a received datagram to
    /// the mailbox's thread (woken by [`Mailbox::wake`] after the batch);
    /// false when its queue is full (counted) or the datagram too large.
    pub fn deliver(&self, local: SocketAddr, peer: SocketAddr, payload: &[u8]) -> bool {
        let ok = self.inbound.push(local, peer, payload);
        if !ok {
            self.inbound_full.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The owner: wakes the service if it sleeps.
    pub fn wake(&self) {
        self.sleeper.wake();
    }

    /// The owner: hands the next datagram the service posted to `f`.
    pub fn collect<R>(&self, f: impl FnOnce(Datagram<'_>) -> R) -> Option<R> {
        self.outbound.pop(f)
    }
}

/// A service on the link: the addresses it serves, a mailbox per thread.
struct Service {
    addrs: Vec<SocketAddr>,
    boxes: Vec<Mailbox>,
}

/// A link on AF_XDP: rvoip's program on it, what is known of it and its
/// peers, the services whose datagrams the owner of its sockets carries.
pub struct XdpLink {
    /// The link.
    pub ifindex: u32,
    /// Its Ethernet address.
    pub mac: Mac,
    /// Its receive queues in use.
    pub queues: u32,
    /// Largest UDP payload a frame of the link carries, per family.
    mtu: u32,
    /// rvoip's program on the link.
    pub steering: Steering,
    services: Vec<Service>,
    owner: Sleeper,
    /// Peers' (and routers') Ethernet addresses, as the owner learns them.
    neighbours: RwLock<HashMap<IpAddr, Mac, rustc_hash::FxBuildHasher>>,
    /// A service sent through the kernel: the owner reads the kernel's
    /// neighbour table.
    missed: AtomicBool,
}

impl std::fmt::Debug for XdpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpLink")
            .field("ifindex", &self.ifindex)
            .field("queues", &self.queues)
            .field("services", &self.services.len())
            .finish()
    }
}

/// A service's place on a link: which of the link's services, and the
/// thread's mailbox among its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceId(pub usize);

impl XdpLink {
    /// Attaches rvoip's program to link `ifindex` (replacing a stale one)
    /// and steers the addresses of `services` (each: its UDP addresses and
    /// threads) to it; each thread gets a mailbox.
    pub fn open(ifindex: u32, services: &[(Vec<SocketAddr>, usize)]) -> io::Result<XdpLink> {
        let info = bpf::link_info(ifindex)?;
        let steering = Steering::attach(ifindex, XdpMode::Native)?;
        let mut list = Vec::with_capacity(services.len());
        for (addrs, threads) in services {
            for a in addrs {
                steering.steer(*a)?;
            }
            list.push(Service {
                addrs: addrs.clone(),
                boxes: (0..(*threads).max(1))
                    .map(|_| Mailbox::new())
                    .collect::<io::Result<_>>()?,
            });
        }
        let neighbours = bpf::neighbours(ifindex)
            .map(|n| n.into_iter().collect())
            .unwrap_or_default();
        Ok(XdpLink {
            ifindex,
            mac: info.mac,
            queues: info.queues,
            mtu: info.mtu,
            steering,
            services: list,
            owner: Sleeper::new()?,
            neighbours: RwLock::new(neighbours),
            missed: AtomicBool::new(false),
        })
    }

    /// The mailboxes of service `id`, one per thread.
    pub fn mailboxes(&self, id: ServiceId) -> &[Mailbox] {
        self.services.get(id.0).map_or(&[], |s| &s.boxes)
    }

    /// Largest UDP payload sent to `peer` in one frame.
    pub fn max_payload(&self, peer: SocketAddr) -> usize {
        let headers = if peer.is_ipv4() { 28 } else { 48 };
        (self.mtu as usize).saturating_sub(headers).min(PAYLOAD)
    }

    /// The owner: the mailbox of the thread that serves datagrams from
    /// `peer` to `local` (a peer stays with one thread), if any service has
    /// `local`.
    pub fn route(&self, local: SocketAddr, peer: SocketAddr) -> Option<&Mailbox> {
        let s = self.services.iter().find(|s| s.addrs.contains(&local))?;
        let h = match peer.ip() {
            IpAddr::V4(ip) => u64::from(ip.to_bits()),
            IpAddr::V6(ip) => ip.to_bits() as u64,
        } ^ u64::from(peer.port());
        s.boxes
            .get((h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % s.boxes.len())
    }

    /// The owner: hands a datagram received for a service to its thread;
    /// the mailbox it went to, none when no service has `local` (or its
    /// queue is full). The thread is woken by [`Mailbox::wake`] after the
    /// batch.
    pub fn deliver(&self, local: SocketAddr, peer: SocketAddr, payload: &[u8]) -> Option<&Mailbox> {
        self.route(local, peer)
            .filter(|m| m.deliver(local, peer, payload))
    }

    /// The owner: every mailbox, to wake and to collect from.
    pub fn all_mailboxes(&self) -> impl Iterator<Item = &Mailbox> {
        self.services.iter().flat_map(|s| s.boxes.iter())
    }

    /// The owner's wake-up descriptor.
    pub fn owner_fd(&self) -> RawFd {
        self.owner.fd.raw()
    }

    /// The owner: about to sleep; false when a service posted meanwhile.
    pub fn owner_prepare_sleep(&self) -> bool {
        self.owner
            .prepare(|| self.all_mailboxes().any(|m| !m.outbound.is_empty()))
    }

    /// The owner: awake again; its wake-up read.
    pub fn owner_woke(&self) {
        self.owner.fd.drain();
        self.owner.woke();
    }

    /// A service: its posted datagrams are queued; wakes the owner if it
    /// sleeps.
    pub fn wake_owner(&self) {
        self.owner.wake();
    }

    /// `ip`'s Ethernet address, when known. A service that finds none sends
    /// through the kernel and calls [`XdpLink::missed`].
    pub fn neighbour(&self, ip: IpAddr) -> Option<Mac> {
        self.neighbours.read().ok()?.get(&ip).copied()
    }

    /// A service sent to an unknown peer through the kernel: the kernel's
    /// neighbour table has it soon.
    pub fn missed(&self) {
        self.missed.store(true, Ordering::Relaxed);
    }

    /// The owner: whether a service missed a neighbour since the last
    /// call.
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::Relaxed)
    }

    /// The owner: shares what it learned of a neighbour (only changes take
    /// the lock for writing).
    pub fn learn(&self, ip: IpAddr, mac: Mac) {
        if self.neighbour(ip) == Some(mac) {
            return;
        }
        if let Ok(mut n) = self.neighbours.write() {
            if n.len() >= NEIGHBOURS {
                n.clear();
            }
            n.insert(ip, mac);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    const A: &str = "10.99.0.1:5060";
    const B: &str = "10.99.0.2:5080";

    #[test]
    fn a_sleeping_service_is_woken_by_a_datagram_and_a_busy_one_is_not() {
        let m = Mailbox::new().unwrap();
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        // Busy (no sleep announced): a datagram costs no wake-up.
        assert!(m.deliver(a, b, b"INVITE"));
        m.wake();
        assert!(!readable(m.fd()));
        // Work waiting: no sleep.
        assert!(!m.prepare_sleep());
        let d = m.take(|d| (d.local, d.peer, d.payload.to_vec())).unwrap();
        assert_eq!(d, (a, b, b"INVITE".to_vec()));
        // Asleep: the next datagram wakes it, once.
        assert!(m.prepare_sleep());
        assert!(m.deliver(a, b, b"ACK"));
        m.wake();
        assert!(readable(m.fd()));
        m.clear();
        assert!(!readable(m.fd()));
        assert_eq!(m.take(|d| d.payload.to_vec()).unwrap(), b"ACK");
        assert!(m.take(|_| ()).is_none());
    }

    #[test]
    fn what_does_not_fit_is_refused_and_a_full_queue_counted() {
        let m = Mailbox::new().unwrap();
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        assert!(!m.post(a, b, &[0u8; PAYLOAD + 1]));
        assert!(m.post(a, b, &[7u8; PAYLOAD]));
        assert_eq!(
            m.collect(|d| d.payload.to_vec()).unwrap(),
            vec![7u8; PAYLOAD]
        );
        for _ in 0..DEPTH {
            assert!(m.deliver(a, b, b"x"));
        }
        assert!(!m.deliver(a, b, b"x"));
        assert_eq!(m.inbound_full.load(Ordering::Relaxed), 1);
    }
}
