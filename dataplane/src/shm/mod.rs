//! The shared-memory channel between the dataplane and the control plane:
//! one file under `/dev/shm` per dataplane worker, holding two
//! single-producer single-consumer rings of fixed-size slots, one per
//! direction. See `docs/SHM.md` for the layout.
//!
//! - A record (a SIP message and its transport metadata) occupies one or more
//!   consecutive slots; a record that would cross the end of the ring is
//!   preceded by a padding record that fills the rest.
//! - The producer publishes by storing its tail with release order; a crashed
//!   producer's half-written record is never visible.
//! - Wake-ups cost nothing while the consumer is busy: the consumer announces
//!   that it is about to sleep in a futex word, and the producer only makes a
//!   `FUTEX_WAKE` system call when it finds that word set.
//! - A full ring refuses the record and counts it (`dropped`): SIP over UDP
//!   recovers by retransmission, and the producer never blocks.
//! - The control plane may die (`kill -9`) and attach again: the rings and
//!   their positions live in the file, which only the dataplane creates.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use memmap2::MmapMut;

/// "RVOIPSHM", little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RVOIPSHM");
/// Layout version; bumped on any incompatible change.
pub const VERSION: u32 = 1;
/// Bytes before the first slot: the file header and the two ring headers.
const HEADER_BYTES: usize = 4096;
/// Record header size in bytes.
pub const RECORD_HEADER: usize = 64;
/// Metadata bytes carried by each record.
pub const META_BYTES: usize = 48;
/// How long after its last record a consumer counts traffic as flowing:
/// meanwhile it looks at its ring once per batch window instead of having
/// each push wake it (a wake-up across cores costs the producer more than
/// the record it pushes); after it, the consumer sleeps until woken.
pub const BUSY_SPELL: std::time::Duration = std::time::Duration::from_millis(50);
const KIND_PAD: u16 = 0xffff;

/// The file header, at offset 0.
#[repr(C)]
struct FileHeader {
    magic: u64,
    version: u32,
    slot_size: u32,
    slot_count: u32,
    worker: u32,
    dataplane_pid: u32,
    controlplane_pid: AtomicU32,
    /// CLOCK_MONOTONIC milliseconds of the control plane's last heartbeat.
    controlplane_heartbeat_ms: AtomicU64,
    /// Times a control plane attached.
    attaches: AtomicU64,
}

/// A ring's control block (at 1024 and 2048); hot fields on their own cache lines.
#[repr(C, align(64))]
struct RingHeader {
    tail: AtomicU64,
    _pad0: [u64; 7],
    head: AtomicU64,
    _pad1: [u64; 7],
    /// Futex word: 1 while the consumer sleeps or is about to.
    sleeping: AtomicU32,
    _pad2: u32,
    /// Records refused because the ring was full.
    dropped: AtomicU64,
    /// Records published.
    records: AtomicU64,
}

/// Direction of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Dataplane → control plane: received messages.
    ToControlPlane,
    /// Control plane → dataplane: messages to send.
    ToDataplane,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToControlPlane => 0,
            Direction::ToDataplane => 1,
        }
    }
}

/// The per-record header as stored in the first slot of a record.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RecordHeader {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u64,
    meta: [u8; META_BYTES],
}

/// The ring was full; the record was dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A record as the consumer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Application-defined kind.
    pub kind: u16,
    /// Sequence number, one more than the previous record of the ring.
    pub seq: u64,
    /// Transport metadata.
    pub meta: &'a [u8; META_BYTES],
    /// The payload.
    pub payload: &'a [u8],
}

/// Ring occupancy and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records published so far.
    pub records: u64,
    /// Records refused because the ring was full.
    pub dropped: u64,
    /// Slots in use now.
    pub used_slots: u64,
}

/// Creates (or empties) the file at `path`, `len` octets of zeros, and maps
/// it shared; the file's directory is created if missing. Only the
/// dataplane creates its shared files; other processes map them through
/// the type that owns each layout.
pub(crate) fn create_mapped(path: &Path, len: usize) -> io::Result<MmapMut> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(len as u64)?;
    // SAFETY: the file is ours and sized above; other processes map it only
    // through the type that owns its layout and follows its protocol.
    unsafe { MmapMut::map_mut(&file) }
}

/// One mapped channel file.
#[derive(Debug)]
pub struct Channel {
    map: MmapMut,
    slot_size: usize,
    slot_count: usize,
}

fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a shared (not private) futex wait on a word inside the mapping;
    // the kernel only reads it. Spurious returns are handled by the caller.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: a shared futex wake on a word inside the mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        );
    }
}

impl Channel {
    /// Bytes a channel with this geometry takes.
    pub fn file_size(slot_size: usize, slot_count: usize) -> usize {
        HEADER_BYTES + 2 * slot_size * slot_count
    }

    /// Creates (or re-creates) the channel file for dataplane worker `worker`.
    /// Only the dataplane does this, once at start.
    pub fn create(
        path: &Path,
        worker: u32,
        slot_size: usize,
        slot_count: usize,
    ) -> io::Result<Channel> {
        if slot_size < RECORD_HEADER * 2 || !slot_size.is_power_of_two() || slot_count < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "slot size must be a power of two ≥ 128, count ≥ 4",
            ));
        }
        let map = create_mapped(path, Self::file_size(slot_size, slot_count))?;
        let mut ch = Channel {
            map,
            slot_size,
            slot_count,
        };
        let h = ch.map.as_mut_ptr() as *mut FileHeader;
        // SAFETY: the mapping starts with room for a FileHeader and no other
        // process reads it before the magic is set, last.
        unsafe {
            (*h).version = VERSION;
            (*h).slot_size = slot_size as u32;
            (*h).slot_count = slot_count as u32;
            (*h).worker = worker;
            (*h).dataplane_pid = std::process::id();
            fence(Ordering::SeqCst);
            (*h).magic = MAGIC;
        }
        ch.map.flush()?;
        Ok(ch)
    }

    /// Maps an existing channel file (the control plane attaching).
    pub fn open(path: &Path) -> io::Result<Channel> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < HEADER_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "channel file too small",
            ));
        }
        // SAFETY: as in create().
        let map = unsafe { MmapMut::map_mut(&file)? };
        // SAFETY: the mapping is at least HEADER_BYTES long and page-aligned.
        let h = unsafe { &*(map.as_ptr() as *const FileHeader) };
        if h.magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an rvoip channel (bad magic)",
            ));
        }
        if h.version != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("channel version {} is not {VERSION}", h.version),
            ));
        }
        let (slot_size, slot_count) = (h.slot_size as usize, h.slot_count as usize);
        if len != Self::file_size(slot_size, slot_count) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "channel file size does not match its header",
            ));
        }
        let ch = Channel {
            map,
            slot_size,
            slot_count,
        };
        ch.header().attaches.fetch_add(1, Ordering::Relaxed);
        Ok(ch)
    }

    fn header(&self) -> &FileHeader {
        // SAFETY: the mapping starts with a FileHeader (checked in open/create).
        unsafe { &*(self.map.as_ptr() as *const FileHeader) }
    }

    fn ring(&self, dir: Direction) -> &RingHeader {
        // SAFETY: ring headers sit at 1024 and 2048, inside the header page,
        // 64-byte aligned in a page-aligned mapping.
        unsafe { &*(self.map.as_ptr().add(1024 * (dir.index() + 1)) as *const RingHeader) }
    }

    fn slots(&self, dir: Direction) -> *mut u8 {
        // SAFETY: the slot areas follow the header page; the file size was checked.
        unsafe {
            self.map
                .as_ptr()
                .add(HEADER_BYTES + dir.index() * self.slot_size * self.slot_count)
                as *mut u8
        }
    }

    /// The dataplane worker this channel belongs to.
    pub fn worker(&self) -> u32 {
        self.header().worker
    }

    /// The producer of `dir`. Exactly one thread of one process may use it.
    pub fn producer(&self, dir: Direction) -> Producer<'_> {
        let tail = self.ring(dir).tail.load(Ordering::Acquire);
        Producer {
            ch: self,
            dir,
            tail,
            seq: self.ring(dir).records.load(Ordering::Relaxed),
        }
    }

    /// The consumer of `dir`. Exactly one thread of one process may use it.
    pub fn consumer(&self, dir: Direction) -> Consumer<'_> {
        let head = self.ring(dir).head.load(Ordering::Acquire);
        Consumer {
            ch: self,
            dir,
            head,
            pending: 0,
        }
    }

    /// Counters of a ring.
    pub fn stats(&self, dir: Direction) -> RingStats {
        let r = self.ring(dir);
        RingStats {
            records: r.records.load(Ordering::Relaxed),
            dropped: r.dropped.load(Ordering::Relaxed),
            used_slots: r
                .tail
                .load(Ordering::Acquire)
                .wrapping_sub(r.head.load(Ordering::Acquire)),
        }
    }

    /// Records a control-plane heartbeat (and its pid) now.
    pub fn heartbeat(&self) {
        let h = self.header();
        h.controlplane_pid
            .store(std::process::id(), Ordering::Relaxed);
        h.controlplane_heartbeat_ms
            .store(monotonic_ms(), Ordering::Release);
    }

    /// Whether a control plane beat within `max_age`.
    pub fn controlplane_alive(&self, max_age: Duration) -> bool {
        let last = self
            .header()
            .controlplane_heartbeat_ms
            .load(Ordering::Acquire);
        last != 0 && monotonic_ms().saturating_sub(last) <= max_age.as_millis() as u64
    }

    /// How many times a control plane attached.
    pub fn attaches(&self) -> u64 {
        self.header().attaches.load(Ordering::Relaxed)
    }

    /// The futex word the consumer of `dir` sleeps on (for an io_uring
    /// FUTEX_WAIT): 1 while it sleeps.
    pub fn sleep_word(&self, dir: Direction) -> &AtomicU32 {
        &self.ring(dir).sleeping
    }
}

/// The writing ends of one direction of several channels, in their order
/// (a SIP worker's channels to the control-plane shards, or a shard's to
/// the workers).
pub fn producers(channels: &[Channel], dir: Direction) -> Vec<Producer<'_>> {
    channels.iter().map(|c| c.producer(dir)).collect()
}

/// The reading ends of one direction of several channels, in their order.
pub fn consumers(channels: &[Channel], dir: Direction) -> Vec<Consumer<'_>> {
    channels.iter().map(|c| c.consumer(dir)).collect()
}

/// The futex words of one direction of several channels, for io_uring
/// futex waits (they live as long as the channels' mappings).
pub fn sleep_words(channels: &[Channel], dir: Direction) -> Vec<*const u32> {
    channels
        .iter()
        .map(|c| c.sleep_word(dir) as *const AtomicU32 as *const u32)
        .collect()
}

/// Writes records into one ring.
#[derive(Debug)]
pub struct Producer<'a> {
    ch: &'a Channel,
    dir: Direction,
    tail: u64,
    seq: u64,
}

impl Producer<'_> {
    fn slots_for(&self, len: usize) -> usize {
        (RECORD_HEADER + len).div_ceil(self.ch.slot_size)
    }

    /// Largest payload a record may carry.
    pub fn max_payload(&self) -> usize {
        self.ch.slot_count / 2 * self.ch.slot_size - RECORD_HEADER
    }

    fn write_header(&self, at: usize, h: RecordHeader) {
        // SAFETY: `at` is a slot index < slot_count; the slot is free (the
        // consumer's head is behind it) and only this producer writes it.
        unsafe {
            std::ptr::write_unaligned(
                self.ch.slots(self.dir).add(at * self.ch.slot_size) as *mut RecordHeader,
                h,
            )
        };
    }

    /// Publishes a record; refuses (and counts) it when the ring is full.
    pub fn push(&mut self, kind: u16, meta: &[u8; META_BYTES], payload: &[u8]) -> Result<(), Full> {
        let ring = self.ch.ring(self.dir);
        let count = self.ch.slot_count as u64;
        if payload.len() > self.max_payload() || kind == KIND_PAD {
            ring.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Full);
        }
        let need = self.slots_for(payload.len()) as u64;
        let pos = (self.tail % count) as usize;
        let to_end = count - pos as u64;
        let pad = if need > to_end { to_end } else { 0 };
        let head = ring.head.load(Ordering::Acquire);
        // A head beyond the tail is not this ring's (another process wrote
        // the file): refuse rather than compute nonsense.
        let used = (self.tail + pad + need).checked_sub(head);
        if used.is_none_or(|u| u > count) {
            ring.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Full);
        }
        let mut tail = self.tail;
        if pad > 0 {
            let len = (pad as usize * self.ch.slot_size - RECORD_HEADER) as u32;
            self.write_header(
                pos,
                RecordHeader {
                    len,
                    kind: KIND_PAD,
                    flags: 0,
                    seq: 0,
                    meta: [0; META_BYTES],
                },
            );
            tail += pad;
        }
        let at = (tail % count) as usize;
        self.seq += 1;
        self.write_header(
            at,
            RecordHeader {
                len: payload.len() as u32,
                kind,
                flags: 0,
                seq: self.seq,
                meta: *meta,
            },
        );
        // SAFETY: the record's slots [at, at + need) are inside the ring (no
        // wrap: padded above) and free; only this producer writes them.
        unsafe {
            let dst = self
                .ch
                .slots(self.dir)
                .add(at * self.ch.slot_size + RECORD_HEADER);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst, payload.len());
        }
        tail += need;
        self.tail = tail;
        ring.records.fetch_add(1, Ordering::Relaxed);
        ring.tail.store(tail, Ordering::Release);
        // Pairs with the consumer's fence between announcing sleep and
        // re-reading the tail: one of the two sees the other.
        fence(Ordering::SeqCst);
        if ring.sleeping.load(Ordering::Relaxed) != 0 {
            ring.sleeping.store(0, Ordering::Relaxed);
            futex_wake(&ring.sleeping);
        }
        Ok(())
    }
}

/// Reads records from one ring.
#[derive(Debug)]
pub struct Consumer<'a> {
    ch: &'a Channel,
    dir: Direction,
    head: u64,
    /// Slots of the record last returned by `peek`, released by `advance`.
    pending: u64,
}

impl<'a> Consumer<'a> {
    /// Whether a record is waiting.
    pub fn has_data(&self) -> bool {
        self.ch.ring(self.dir).tail.load(Ordering::Acquire) != self.head + self.pending
    }

    /// The next record, valid until [`Consumer::advance`]. Padding is skipped.
    pub fn peek(&mut self) -> Option<Record<'a>> {
        self.advance();
        let ring = self.ch.ring(self.dir);
        let count = self.ch.slot_count as u64;
        loop {
            let tail = ring.tail.load(Ordering::Acquire);
            if tail == self.head {
                return None;
            }
            let at = (self.head % count) as usize;
            // SAFETY: slot `at` holds a published record header (head < tail).
            let h: RecordHeader = unsafe {
                std::ptr::read_unaligned(
                    self.ch.slots(self.dir).add(at * self.ch.slot_size) as *const RecordHeader
                )
            };
            let need = (RECORD_HEADER + h.len as usize).div_ceil(self.ch.slot_size) as u64;
            if need == 0 || self.head + need > tail || at as u64 + need > count {
                // A corrupt record (a producer from another layout version
                // would be refused at open): skip to the tail rather than read
                // out of bounds.
                self.head = tail;
                ring.head.store(self.head, Ordering::Release);
                return None;
            }
            if h.kind == KIND_PAD {
                self.head += need;
                ring.head.store(self.head, Ordering::Release);
                continue;
            }
            // SAFETY: the record's slots are published and inside the ring;
            // the producer does not touch them until head passes them.
            let (meta, payload) = unsafe {
                let base = self.ch.slots(self.dir).add(at * self.ch.slot_size);
                let meta = &*(base.add(16) as *const [u8; META_BYTES]);
                let payload = std::slice::from_raw_parts(base.add(RECORD_HEADER), h.len as usize);
                (meta, payload)
            };
            self.pending = need;
            return Some(Record {
                kind: h.kind,
                seq: h.seq,
                meta,
                payload,
            });
        }
    }

    /// Releases the record returned by the last `peek` to the producer.
    pub fn advance(&mut self) {
        if self.pending > 0 {
            self.head += self.pending;
            self.pending = 0;
            self.ch
                .ring(self.dir)
                .head
                .store(self.head, Ordering::Release);
        }
    }

    /// Sleeps until a record arrives or `timeout` passes. Costs no system
    /// call when data is already there.
    pub fn wait(&self, timeout: Duration) {
        let ring = self.ch.ring(self.dir);
        if self.has_data() {
            return;
        }
        ring.sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !self.has_data() {
            futex_wait(&ring.sleeping, 1, timeout);
        }
        ring.sleeping.store(0, Ordering::Relaxed);
    }

    /// Announces that the consumer is about to sleep on [`Channel::sleep_word`]
    /// by other means (an io_uring FUTEX_WAIT); returns false when data is
    /// already there and it must not sleep.
    pub fn prepare_sleep(&self) -> bool {
        let ring = self.ch.ring(self.dir);
        ring.sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.has_data() {
            ring.sleeping.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Waits until any of `consumers` has a record, or `timeout` passes, with
/// one `futex_waitv` (Linux 5.16+) over their sleep words. Returns at once,
/// without a system call, when one already has data.
pub fn wait_any(consumers: &[&Consumer<'_>], timeout: Duration) {
    if consumers.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    if consumers.iter().any(|c| c.has_data()) {
        return;
    }
    for c in consumers {
        c.ch.ring(c.dir).sleeping.store(1, Ordering::Relaxed);
    }
    fence(Ordering::SeqCst);
    if !consumers.iter().any(|c| c.has_data()) {
        #[repr(C)]
        struct FutexWaitv {
            val: u64,
            uaddr: u64,
            flags: u32,
            reserved: u32,
        }
        const FUTEX_32: u32 = 2;
        let waiters: Vec<FutexWaitv> = consumers
            .iter()
            .map(|c| FutexWaitv {
                val: 1,
                uaddr: c.ch.ring(c.dir).sleeping.as_ptr() as u64,
                flags: FUTEX_32,
                reserved: 0,
            })
            .collect();
        let mut deadline = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut deadline) };
        let ns = deadline.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
        deadline.tv_sec += timeout.as_secs() as libc::time_t + (ns / 1_000_000_000) as libc::time_t;
        deadline.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
        // SAFETY: futex_waitv reads `waiters` (valid for its length) and the
        // absolute monotonic deadline; the words are in shared mappings.
        unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waiters.as_ptr(),
                waiters.len() as u32,
                0u32,
                &deadline as *const libc::timespec,
                libc::CLOCK_MONOTONIC,
            );
        }
    }
    for c in consumers {
        c.ch.ring(c.dir).sleeping.store(0, Ordering::Relaxed);
    }
}

/// Transport metadata of a SIP message in a ring record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipMeta {
    /// The transport it came on or goes over.
    pub transport: crate::sip::Transport,
    /// Listener address (received at, or to send from).
    pub local: std::net::SocketAddr,
    /// Peer address (sender, or destination).
    pub remote: std::net::SocketAddr,
    /// Stream connection id (0: none). The top byte is the owning worker.
    pub conn: u32,
}

fn put_addr(out: &mut [u8], a: std::net::SocketAddr) {
    let (fam, ip) = match a.ip() {
        std::net::IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
        std::net::IpAddr::V6(v6) => (6u8, v6.octets()),
    };
    out[0] = fam;
    out[1..17].copy_from_slice(&ip);
    out[17..19].copy_from_slice(&a.port().to_le_bytes());
}

fn get_addr(b: &[u8]) -> std::net::SocketAddr {
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[1..17]);
    let v6 = std::net::Ipv6Addr::from(ip);
    let port = u16::from_le_bytes([b[17], b[18]]);
    let ip = match (b[0], v6.to_ipv4_mapped()) {
        (4, Some(v4)) => std::net::IpAddr::V4(v4),
        _ => std::net::IpAddr::V6(v6),
    };
    std::net::SocketAddr::new(ip, port)
}

impl SipMeta {
    /// Encodes into a record's metadata.
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut m = [0u8; META_BYTES];
        m[0] = self.transport.code();
        m[4..8].copy_from_slice(&self.conn.to_le_bytes());
        put_addr(&mut m[8..27], self.local);
        put_addr(&mut m[27..46], self.remote);
        m
    }

    /// Decodes a record's metadata.
    pub fn decode(m: &[u8; META_BYTES]) -> SipMeta {
        SipMeta {
            // Records are rvoip's own; an unknown code reads as UDP.
            transport: crate::sip::Transport::from_code(m[0]).unwrap_or(crate::sip::Transport::Udp),
            conn: u32::from_le_bytes([m[4], m[5], m[6], m[7]]),
            local: get_addr(&m[8..27]),
            remote: get_addr(&m[27..46]),
        }
    }
}

pub mod load;
pub mod stats;

#[cfg(test)]
mod tests;

/// Takes the exclusive lock `name` in `dir` without waiting: one dataplane
/// per ring directory. The kernel releases it when the process dies.
pub fn lock_dir(dir: &Path, name: &str) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))?;
    // SAFETY: flock on a descriptor this function owns.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is used by another running dataplane (give each instance its own controlplane.ring_dir)",
                dir.display()
            ),
        ));
    }
    Ok(file)
}
