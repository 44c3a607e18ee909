//! Media orders from the control plane: typed
//! [`MediaOrder`](crate::media::orders::MediaOrder)s over a
//! shared-memory channel (`media.ring` in the ring directory), carried out
//! by the same media sessions as the UDP ng listener's. The control plane
//! never opens a socket to order media, and the relay's sessions live here,
//! so they outlive a control-plane restart.
//!
//! A record is an order with its sender and number
//! ([`crate::media::orders::record`]); its outcome goes back on the other
//! ring with the same sender and number. An order sent again (its reply was
//! slow) is answered from a cache, not carried out twice.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::{HashMap, VecDeque};

use crate::media::orders::{Outcome, record};
use crate::media::plan::MediaControl;
use crate::ng::NgServer;
use crate::shm::{Channel, Direction};

/// Slot size of the order channel: a request with its SDP fits in one or a
/// few slots.
pub const ORDER_SLOT_SIZE: usize = 2048;
/// Slots per direction.
pub const ORDER_SLOTS: usize = 1024;
/// The worker number written in the order channel's header.
pub const ORDER_CHANNEL_ID: u32 = u32::MAX;

/// The order channel file in `dir`.
pub fn orders_path(dir: &Path) -> PathBuf {
    dir.join("media.ring")
}

/// A running order server.
#[derive(Debug)]
pub struct NgOrders {
    thread: JoinHandle<u64>,
}

impl NgOrders {
    /// Creates the order channel in `dir` and serves it with `server` until
    /// `stop` is set. While orders keep coming the server looks for more
    /// every `poll` (the dataplane's batch window) instead of having each
    /// order wake it; zero: every order wakes it.
    pub fn spawn<M: MediaControl + Send + 'static>(
        dir: &Path,
        server: Arc<Mutex<NgServer<M>>>,
        stop: Arc<AtomicBool>,
        poll: Duration,
    ) -> io::Result<NgOrders> {
        let channel = Channel::create(
            &orders_path(dir),
            ORDER_CHANNEL_ID,
            ORDER_SLOT_SIZE,
            ORDER_SLOTS,
        )?;
        let thread = std::thread::Builder::new()
            .name("ng-orders".into())
            .spawn(move || serve(&channel, &server, &stop, poll))?;
        Ok(NgOrders { thread })
    }

    /// Waits for the server to stop; returns how many orders it answered.
    pub fn join(self) -> u64 {
        self.thread.join().unwrap_or_default()
    }
}

fn serve<M: MediaControl>(
    channel: &Channel,
    server: &Mutex<NgServer<M>>,
    stop: &AtomicBool,
    poll: Duration,
) -> u64 {
    let mut orders = channel.consumer(Direction::ToDataplane);
    let mut replies = channel.producer(Direction::ToControlPlane);
    let mut answered = 0u64;
    let mut cache = ReplyCache::default();
    let mut last_order = Instant::now() - crate::shm::BUSY_SPELL;
    while !stop.load(Ordering::Relaxed) {
        if !poll.is_zero() && last_order.elapsed() < crate::shm::BUSY_SPELL {
            // The control plane's pushes do not wake a server that looks
            // by itself: a wake-up across cores costs the control plane
            // more than the order it pushes.
            if !orders.has_data() {
                std::thread::sleep(poll);
            }
        } else {
            orders.wait(Duration::from_millis(100));
        }
        if orders.has_data() {
            last_order = Instant::now();
        }
        while let Some(r) = orders.peek() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Some((sender, number, order)) = record::read_order(r.payload) {
                let key = (sender, number);
                if !cache.replies.contains_key(&key) {
                    let outcome = Outcome::of(super::ng_udp::lock(server).execute(order, now));
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
    answered
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
