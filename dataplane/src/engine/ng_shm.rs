//! The media order service: one thread owns the media sessions (an
//! [`NgServer`]) and serves every source of orders, so no lock guards them
//! and none is held while a worker carries an order out:
//!
//! - the control plane's typed [`MediaOrder`](crate::media::orders::MediaOrder)s
//!   over a shared-memory channel (`media.ring` in the ring directory). A
//!   record is an order with its sender and number
//!   ([`crate::media::orders::record`]); its outcome goes back on the other
//!   ring with the same sender and number. An order sent again (its reply
//!   was slow) is answered from a cache, not carried out twice. The control
//!   plane never opens a socket to order media, and the relay's sessions
//!   live here, so they outlive a control-plane restart;
//! - when configured, the ng socket (Kamailio's and OpenSIPS' `rtpengine`
//!   modules), whose requests are carried out on the same sessions, so
//!   `list` and `query` see every call.
//!
//! The thread sleeps on one io_uring: a futex wait on the order ring and a
//! readiness poll on the ng socket; while orders keep coming it looks every
//! `poll` instead of being woken per order.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue};

use super::ng_udp::NgReport;
use super::uring::{self, submit_and_wait};
use crate::media::orders::{CallId, MediaOrder, Outcome, record};
use crate::media::plan::MediaControl;
use crate::media::services::MediaEvent;
use crate::ng::NgServer;
use crate::shm::{Channel, Direction};
use crate::xdp::link::{ServiceId, XdpLink};

/// Slot size of the order channel: a request with its SDP fits in one or a
/// few slots.
pub const ORDER_SLOT_SIZE: usize = 2048;
/// Slots per direction.
pub const ORDER_SLOTS: usize = 1024;
/// The worker number written in the order channel's header.
pub const ORDER_CHANNEL_ID: u32 = u32::MAX;

/// The order channel file in `dir` of control-plane shard 0.
pub fn orders_path(dir: &Path) -> PathBuf {
    dir.join("media.ring")
}

/// The order channel file in `dir` of control-plane shard `shard`.
pub fn shard_orders_path(dir: &Path, shard: usize) -> PathBuf {
    match shard {
        0 => orders_path(dir),
        s => dir.join(format!("media-shard{s}.ring")),
    }
}

/// Completions: the ng socket's readiness, the AF_XDP mailbox's wake-up,
/// an order ring's futex (`FUTEX` + its shard).
const NG: u64 = 2;
const XDP: u64 = 3;
const FUTEX: u64 = 16;

/// The ng socket's address on an AF_XDP link: its requests come from the
/// service's mailbox, its replies leave through it (too large ones, or to
/// a peer not resolved yet, through the kernel socket).
pub type NgXdp = (Arc<XdpLink>, ServiceId);

/// What the service reports when it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct NgServiceReport {
    /// ng protocol and relay counters.
    pub ng: NgReport,
    /// Orders from the control plane answered.
    pub orders: u64,
}

/// The running media order service.
#[derive(Debug)]
pub struct NgOrders {
    /// The ng socket's address, when it serves one.
    pub ng: Option<SocketAddr>,
    thread: JoinHandle<NgServiceReport>,
}

impl NgOrders {
    /// Creates the order channel of each of `shards` control-plane shards
    /// in `dir`, binds `ng` when given, and serves them all with `server`
    /// until `stop` is set. While orders keep coming the
    /// service looks for more every `poll` (the dataplane's batch window)
    /// instead of having each order wake it; zero: every order wakes it.
    /// With `xdp`, ng requests come on the AF_XDP link as well.
    pub fn spawn<M: MediaControl + Send + 'static>(
        dir: &Path,
        ng: Option<SocketAddr>,
        mut server: NgServer<M>,
        stop: Arc<AtomicBool>,
        poll: Duration,
        xdp: Option<NgXdp>,
        shards: usize,
    ) -> io::Result<NgOrders> {
        let socket = match ng {
            Some(addr) => {
                let s = UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Some(s)
            }
            None => None,
        };
        let local = socket.as_ref().map(UdpSocket::local_addr).transpose()?;
        let ring = IoUring::new(8 + shards.next_power_of_two() as u32)?;
        let channels = (0..shards.max(1))
            .map(|s| {
                Channel::create(
                    &shard_orders_path(dir, s),
                    ORDER_CHANNEL_ID,
                    ORDER_SLOT_SIZE,
                    ORDER_SLOTS,
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        let thread = std::thread::Builder::new()
            .name("ng-orders".into())
            .spawn(move || {
                let ng = socket.as_ref().zip(local).map(|(s, local)| NgSocket {
                    socket: s,
                    local,
                    xdp,
                });
                let orders = serve(&ring, &channels, ng, &mut server, &stop, poll);
                NgServiceReport {
                    ng: NgReport {
                        ng: server.counters(),
                        media: server.media().counters(),
                    },
                    orders,
                }
            })?;
        Ok(NgOrders { ng: local, thread })
    }

    /// Waits for the service to stop; returns its counters.
    pub fn join(self) -> NgServiceReport {
        self.thread.join().unwrap_or_default()
    }
}

/// The ng socket, and the AF_XDP link it is on, if any.
struct NgSocket<'a> {
    socket: &'a UdpSocket,
    /// Its address (what replies through the link come from).
    local: SocketAddr,
    xdp: Option<NgXdp>,
}

impl NgSocket<'_> {
    fn mailbox(&self) -> Option<&crate::xdp::link::Mailbox> {
        let (link, service) = self.xdp.as_ref()?;
        link.mailboxes(*service).first()
    }

    /// Sends a reply: through the link when it fits a frame and the peer
    /// is known, else through the kernel.
    fn reply(&self, from: SocketAddr, reply: &[u8], to: SocketAddr) -> bool {
        if let Some((link, _)) = &self.xdp
            && let Some(m) = self.mailbox()
            && !from.ip().is_unspecified()
            && reply.len() <= link.max_payload(to)
        {
            if link.neighbour(to.ip()).is_some() {
                if m.post(from, to, reply) {
                    return true;
                }
            } else {
                link.missed();
            }
        }
        // A lost reply is retransmitted by the client and answered from
        // the cache.
        let _ = self.socket.send_to(reply, to);
        false
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Answers every ng request waiting on the socket.
fn serve_ng<M: MediaControl>(ng: &NgSocket<'_>, server: &mut NgServer<M>, buf: &mut [u8]) {
    while let Ok((n, src)) = ng.socket.recv_from(buf) {
        if let Some(reply) = server.handle(&buf[..n], src, now_secs()) {
            ng.reply(ng.local, &reply, src);
        }
    }
}

/// Answers every ng request the link's owner left in the mailbox.
fn serve_mailbox<M: MediaControl>(ng: &NgSocket<'_>, server: &mut NgServer<M>) {
    let Some(m) = ng.mailbox() else { return };
    let mut posted = false;
    while let Some(reply) = m.take(|d| {
        server
            .handle(d.payload, d.peer, now_secs())
            .map(|reply| (d.local, d.peer, reply))
    }) {
        if let Some((local, peer, reply)) = reply {
            posted |= ng.reply(local, &reply, peer);
        }
    }
    if posted && let Some((link, _)) = &ng.xdp {
        link.wake_owner();
    }
}

#[allow(unsafe_code)]
fn serve<M: MediaControl>(
    ring: &IoUring,
    channels: &[Channel],
    socket: Option<NgSocket<'_>>,
    server: &mut NgServer<M>,
    stop: &AtomicBool,
    poll: Duration,
) -> u64 {
    let mut orders = crate::shm::consumers(channels, Direction::ToDataplane);
    let mut replies = crate::shm::producers(channels, Direction::ToControlPlane);
    let sleep_words = crate::shm::sleep_words(channels, Direction::ToDataplane);
    let mut answered = 0u64;
    let mut cache = ReplyCache::default();
    let mut owners = Owners::new(channels.len());
    let mut buf = vec![0u8; 65_536];
    // The order rings (a bit each) whose futex wait is armed.
    let mut futex_armed = 0u64;
    let (mut ng_armed, mut xdp_armed) = (false, false);
    // Whether the ng socket may hold requests: at first, and after each of
    // its readiness completions (no read is tried otherwise).
    let mut ng_ready = true;
    let mut last_order = Instant::now() - crate::shm::BUSY_SPELL;
    let mut last_expiry = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Calls whose media timed out are deleted about once a second.
        if last_expiry.elapsed() >= Duration::from_secs(1) {
            server.expire();
            last_expiry = Instant::now();
        }
        if orders.iter().any(|o| o.has_data()) {
            last_order = Instant::now();
        }
        let sharded = orders.len() > 1;
        for (shard, (orders, replies)) in orders.iter_mut().zip(replies.iter_mut()).enumerate() {
            while let Some(r) = orders.peek() {
                let now = now_secs();
                if let Some((sender, number, order)) = record::read_order(r.payload) {
                    let key = (sender, number);
                    if !cache.replies.contains_key(&key) {
                        let query = matches!(order, crate::media::orders::MediaOrder::Query { .. });
                        if sharded {
                            owners.note(shard, &order);
                        }
                        let done = server.execute(order, now);
                        let mut outcome = if query {
                            Outcome::of_query(done)
                        } else {
                            Outcome::of(done)
                        };
                        if sharded {
                            outcome = owners.share(shard, outcome);
                        }
                        let mut rec = Vec::new();
                        record::write_outcome(sender, number, &outcome, &mut rec);
                        cache.keep(key, rec);
                    }
                    if let Some(rec) = cache.replies.get(&key) {
                        // A full ring means the control plane is gone or stuck;
                        // it asks again (answered from the cache).
                        let _ = replies.push(r.kind, r.meta, rec);
                        answered += 1;
                    }
                }
                orders.advance();
            }
        }
        let mailbox = socket.as_ref().and_then(NgSocket::mailbox);
        if let Some(s) = &socket {
            if std::mem::take(&mut ng_ready) {
                serve_ng(s, server, &mut buf);
            }
            serve_mailbox(s, server);
            if !ng_armed {
                let e = uring::poll::readable(s.socket.as_raw_fd(), true, NG);
                // SAFETY: the socket outlives the ring's use of it (both
                // live until this function returns and the ring is dropped
                // after it).
                ng_armed = unsafe { ring.submission_shared().push(&e) }.is_ok();
            }
            if let Some(m) = mailbox
                && !xdp_armed
            {
                let e = uring::poll::readable(m.fd(), true, XDP);
                // SAFETY: the mailbox lives in the link, which outlives
                // this function and the ring.
                xdp_armed = unsafe { ring.submission_shared().push(&e) }.is_ok();
            }
        }
        // The control plane's pushes do not wake a service that looks by
        // itself while orders flow: a wake-up across cores costs the
        // control plane more than the order it pushes.
        let looking = !poll.is_zero() && last_order.elapsed() < crate::shm::BUSY_SPELL;
        for (s, orders) in orders.iter().enumerate().filter(|_| !looking) {
            if futex_armed & (1 << s) == 0 && orders.prepare_sleep() {
                let e = uring::futex::wait(sleep_words[s], 1, FUTEX + s as u64);
                // SAFETY: the sleep word lives in the channel mapping, which
                // outlives the ring's use of it.
                if unsafe { ring.submission_shared().push(&e) }.is_ok() {
                    futex_armed |= 1 << s;
                }
            }
        }
        // Asleep, it still looks at `stop` (and expiry) five times a second.
        let wait = if looking {
            poll
        } else {
            Duration::from_millis(200)
        };
        // A request in the mailbox meanwhile: no sleep.
        let wait = match mailbox {
            Some(m) if !m.prepare_sleep() => Duration::ZERO,
            _ => wait,
        };
        let ts = Timespec::from(wait);
        if submit_and_wait(ring, 1, &SubmitArgs::new().timespec(&ts)).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(m) = mailbox {
            m.woke();
        }
        // SAFETY: only this thread touches the completion queue.
        for c in unsafe { ring.completion_shared() } {
            match c.user_data() {
                f if f >= FUTEX => futex_armed &= !(1 << (f - FUTEX)),
                NG => {
                    ng_ready = true;
                    if !cqueue::more(c.flags()) {
                        ng_armed = false;
                    }
                }
                XDP => {
                    if let Some(m) = mailbox {
                        m.clear();
                    }
                    if !cqueue::more(c.flags()) {
                        xdp_armed = false;
                    }
                }
                _ => {}
            }
        }
    }
    answered
}

/// Which control-plane shard ordered each media call: the media plane
/// reports every call's events to whichever asks, and each shard is to be
/// told its own calls' only.
struct Owners {
    by_call: HashMap<Vec<u8>, usize>,
    /// Events taken from the media plane for a shard that has not asked
    /// since, by shard.
    waiting: Vec<Vec<(CallId, MediaEvent)>>,
}

impl Owners {
    /// Events kept per shard until it asks (the oldest go beyond).
    const WAITING: usize = 4096;

    fn new(shards: usize) -> Owners {
        Owners {
            by_call: HashMap::new(),
            waiting: vec![Vec::new(); shards.max(1)],
        }
    }

    /// Notes which shard `order`'s call belongs to.
    fn note(&mut self, shard: usize, order: &MediaOrder) {
        match order {
            MediaOrder::Offer { call_id, .. }
            | MediaOrder::Service { call_id, .. }
            | MediaOrder::Terminate { call_id, .. }
                if !self.by_call.contains_key(&call_id.0) =>
            {
                self.by_call.insert(call_id.0.clone(), shard);
            }
            MediaOrder::Delete { call_id, .. } => {
                self.by_call.remove(&call_id.0);
            }
            _ => {}
        }
    }

    /// The events of `outcome` that are `shard`'s, with those kept for it;
    /// the others kept for their shards. Other outcomes as they are.
    fn share(&mut self, shard: usize, outcome: Outcome) -> Outcome {
        let Outcome::Events(all) = outcome else {
            return outcome;
        };
        for (id, e) in all {
            let owner = self.by_call.get(&id.0).copied().unwrap_or(0);
            if let Some(w) = self.waiting.get_mut(owner) {
                if w.len() >= Self::WAITING {
                    w.remove(0);
                }
                w.push((id, e));
            }
        }
        Outcome::Events(
            self.waiting
                .get_mut(shard)
                .map(std::mem::take)
                .unwrap_or_default(),
        )
    }
}

/// Outcomes of the latest orders, for orders sent again.
#[derive(Default)]
struct ReplyCache {
    replies: HashMap<(u64, u64), Vec<u8>>,
    order: VecDeque<(u64, u64)>,
}

impl ReplyCache {
    /// Outcomes kept.
    const SIZE: usize = 4096;

    fn keep(&mut self, key: (u64, u64), rec: Vec<u8>) {
        if self.order.len() == Self::SIZE
            && let Some(old) = self.order.pop_front()
        {
            self.replies.remove(&old);
        }
        self.order.push_back(key);
        self.replies.insert(key, rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::orders::{SdpOptions, Tag};

    fn offer(id: &[u8]) -> MediaOrder {
        MediaOrder::Offer {
            call_id: CallId(id.to_vec()),
            from_tag: Tag(b"a".to_vec()),
            sdp: Vec::new(),
            options: SdpOptions::default(),
        }
    }

    fn digit(event: u8) -> MediaEvent {
        MediaEvent::Dtmf {
            side: 0,
            event,
            inband: false,
        }
    }

    #[test]
    fn each_shard_is_told_its_own_calls_events_whichever_asks_first() {
        let mut owners = Owners::new(2);
        owners.note(0, &offer(b"zero"));
        owners.note(1, &offer(b"one"));
        let all = Outcome::Events(vec![
            (CallId(b"one".to_vec()), digit(1)),
            (CallId(b"zero".to_vec()), digit(0)),
            (CallId(b"one".to_vec()), digit(2)),
        ]);
        // Shard 0 asks first and the media plane hands over everything.
        let Outcome::Events(mine) = owners.share(0, all) else {
            panic!("events")
        };
        assert_eq!(mine, vec![(CallId(b"zero".to_vec()), digit(0))]);
        // Shard 1's turn: the media plane has nothing new, its two wait.
        let Outcome::Events(mine) = owners.share(1, Outcome::Events(Vec::new())) else {
            panic!("events")
        };
        assert_eq!(
            mine,
            vec![
                (CallId(b"one".to_vec()), digit(1)),
                (CallId(b"one".to_vec()), digit(2))
            ]
        );
        let Outcome::Events(mine) = owners.share(1, Outcome::Events(Vec::new())) else {
            panic!("events")
        };
        assert!(mine.is_empty(), "told once");
    }
}
