//! The dataplane's counters, published for the metrics endpoint: each
//! worker keeps its counters in a [`Tally`] of its own (one writer, its
//! own cache lines, plain stores: no lock, no shared line, no
//! read-modify-write), and the dataplane's main loop copies every tally
//! into `stats` in the ring directory ten times a second. The control
//! plane, which serves `/metrics`, reads that file when it is scraped and
//! sums or labels the slots there.
//!
//! Layout (little-endian, 32 KiB): magic `RVOIPSTA`, version (u32),
//! padding, the Unix time of the last copy (ms), then [`SLOTS`] slots of
//! 512 octets: the slot's kind (0: unused, [`Kind`]), its worker index and
//! [`VALUES`] counters, named per kind by [`SIP_FIELDS`] and
//! [`MEDIA_FIELDS`].

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

const MAGIC: u64 = u64::from_le_bytes(*b"RVOIPSTA");
const VERSION: u32 = 1;
/// Counters per slot.
pub const VALUES: usize = 62;
/// Slots in the file.
pub const SLOTS: usize = 63;
const HEADER_BYTES: usize = 64;
const SLOT_BYTES: usize = 512;
const FILE_BYTES: usize = HEADER_BYTES + SLOTS * SLOT_BYTES;

/// The counters of a SIP worker, in slot order.
pub const SIP_FIELDS: &[&str] = &[
    "received",
    "unparsable",
    "malformed_requests",
    "malformed_responses",
    "unavailable",
    "delivered",
    "dropped",
    "rate_limited",
    "ring_full",
    "sent",
    "send_errors",
    "tcp_accepted",
    "tcp_connected",
    "tcp_connect_failed",
    "tcp_stalled",
    "oversized",
    "hep_sent",
    "hep_dropped",
    "tls_refused",
    "conn_refused",
    "conn_expired",
    "busy_permille",
];

/// The counters of a media worker, in slot order.
pub const MEDIA_FIELDS: &[&str] = &[
    "forwarded",
    "forwarded_bytes",
    "unknown_endpoint",
    "malformed",
    "wrong_source",
    "no_destination",
    "timeouts",
    "srtp_unprotected",
    "srtp_protected",
    "srtp_truncated",
    "srtp_malformed",
    "srtp_auth_failed",
    "srtp_replayed",
    "srtp_too_old",
    "srtp_unknown_mki",
    "srtp_key_expired",
    "srtp_no_room",
    "transcoded_in",
    "transcoded_out",
    "recorded",
    "record_dropped",
    "captured",
    "capture_dropped",
    "stun_answered",
    "stun_refused",
    "dtls_keyed",
    "dtls_failed",
    "webrtc_unkeyed",
    "rtcp_feedback_terminated",
    "ice_nominated",
    "bundle_unrouted",
    "busy_permille",
];

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SIP worker ([`SIP_FIELDS`]).
    Sip = 1,
    /// A media worker ([`MEDIA_FIELDS`]).
    Media = 2,
}

impl Kind {
    /// Its counters' names.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Sip => SIP_FIELDS,
            Kind::Media => MEDIA_FIELDS,
        }
    }

    fn of(v: u64) -> Option<Kind> {
        match v {
            1 => Some(Kind::Sip),
            2 => Some(Kind::Media),
            _ => None,
        }
    }
}

/// One worker's counters: written by that worker only, read by anyone.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Tally {
    values: [AtomicU64; VALUES],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Tally {
    /// Stores `values` (the first [`VALUES`] of them); by the owner only.
    pub fn store(&self, values: &[u64]) {
        for (slot, v) in self.values.iter().zip(values) {
            slot.store(*v, Ordering::Relaxed);
        }
    }

    /// The values last stored.
    pub fn load(&self) -> [u64; VALUES] {
        std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed))
    }
}

/// One slot as read: its kind, worker index and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// What it holds.
    pub kind: Kind,
    /// The worker's index among those of its kind.
    pub worker: u32,
    /// Its counters, named by `kind.fields()`.
    pub values: Vec<u64>,
}

impl Slot {
    /// The counter named `field`, 0 if the kind has none.
    pub fn get(&self, field: &str) -> u64 {
        self.kind
            .fields()
            .iter()
            .position(|f| *f == field)
            .and_then(|i| self.values.get(i).copied())
            .unwrap_or(0)
    }
}

/// The mapped `stats` file.
#[derive(Debug)]
pub struct StatsBoard {
    map: MmapMut,
}

impl StatsBoard {
    /// Creates (or resets) `dir/stats`, for the dataplane.
    pub fn create(dir: &Path) -> io::Result<StatsBoard> {
        let mut map = super::create_mapped(&dir.join("stats"), FILE_BYTES)?;
        map.fill(0);
        map[..8].copy_from_slice(&MAGIC.to_le_bytes());
        map[8..12].copy_from_slice(&VERSION.to_le_bytes());
        Ok(StatsBoard { map })
    }

    /// Opens `dir/stats` as the dataplane created it, for the control plane.
    pub fn open(dir: &Path) -> io::Result<StatsBoard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("stats"))?;
        if file.metadata()?.len() < FILE_BYTES as u64 {
            return Err(io::Error::other("stats file is too short"));
        }
        // SAFETY: a shared mapping of a file only rvoip writes, of the
        // length just checked; every access goes through atomics.
        #[allow(unsafe_code)]
        let map = unsafe { MmapMut::map_mut(&file)? };
        let magic = u64::from_le_bytes(map[..8].try_into().unwrap_or_default());
        let version = u32::from_le_bytes(map[8..12].try_into().unwrap_or_default());
        if magic != MAGIC || version != VERSION {
            return Err(io::Error::other("stats file has another layout"));
        }
        Ok(StatsBoard { map })
    }

    /// The file's words from octet `at` (8-aligned) on.
    fn words(&self, at: usize, n: usize) -> &[AtomicU64] {
        debug_assert!(at.is_multiple_of(8) && at + n * 8 <= FILE_BYTES);
        // SAFETY: the map is FILE_BYTES long and page-aligned; `at` is a
        // multiple of 8 and the n words end inside it (every caller passes
        // constants of this layout); AtomicU64 is valid for any bits.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(at) as *const AtomicU64, n)
        }
    }

    /// Copies worker `worker`'s tally of `kind` into slot `slot` (ignored
    /// past the last slot).
    pub fn publish(&self, slot: usize, kind: Kind, worker: u32, tally: &Tally) {
        if slot >= SLOTS {
            return;
        }
        let w = self.words(HEADER_BYTES + slot * SLOT_BYTES, 2 + VALUES);
        for (dst, v) in w[2..].iter().zip(tally.load()) {
            dst.store(v, Ordering::Relaxed);
        }
        w[1].store(u64::from(worker), Ordering::Relaxed);
        w[0].store(kind as u64, Ordering::Release);
    }

    /// Marks the copy done at `unix_ms`.
    pub fn stamp(&self, unix_ms: u64) {
        self.words(16, 1)[0].store(unix_ms, Ordering::Release);
    }

    /// When the last copy was made (Unix ms; 0 before the first).
    pub fn updated_unix_ms(&self) -> u64 {
        self.words(16, 1)[0].load(Ordering::Acquire)
    }

    /// Every slot in use.
    pub fn read(&self) -> Vec<Slot> {
        (0..SLOTS)
            .filter_map(|i| {
                let w = self.words(HEADER_BYTES + i * SLOT_BYTES, 2 + VALUES);
                let kind = Kind::of(w[0].load(Ordering::Acquire))?;
                Some(Slot {
                    kind,
                    worker: w[1].load(Ordering::Relaxed) as u32,
                    values: w[2..2 + kind.fields().len()]
                        .iter()
                        .map(|v| v.load(Ordering::Relaxed))
                        .collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_workers_tally_the_control_plane_reads_by_name() {
        const { assert!((2 + VALUES) * 8 <= SLOT_BYTES) };
        assert!(SIP_FIELDS.len() <= VALUES && MEDIA_FIELDS.len() <= VALUES);
        let dir = std::env::temp_dir().join(format!("rvoip-stats-{}", std::process::id()));
        let writer = StatsBoard::create(&dir).unwrap_or_else(|e| panic!("{e}"));
        let reader = StatsBoard::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(reader.read().is_empty());
        assert_eq!(reader.updated_unix_ms(), 0);
        let (sip, media) = (Tally::default(), Tally::default());
        let mut v = vec![0u64; SIP_FIELDS.len()];
        v[0] = 1234;
        v[8] = 7;
        sip.store(&v);
        let mut m = vec![0u64; MEDIA_FIELDS.len()];
        m[0] = 99;
        m[1] = 17_028;
        media.store(&m);
        writer.publish(0, Kind::Sip, 0, &sip);
        writer.publish(1, Kind::Media, 1, &media);
        writer.publish(SLOTS, Kind::Media, 9, &media);
        writer.stamp(1_800_000_000_000);
        let slots = reader.read();
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0].get("received"), 1234);
        assert_eq!(slots[0].get("ring_full"), 7);
        assert_eq!((slots[1].kind, slots[1].worker), (Kind::Media, 1));
        assert_eq!(slots[1].get("forwarded_bytes"), 17_028);
        assert_eq!(slots[1].get("no_such_counter"), 0);
        assert_eq!(reader.updated_unix_ms(), 1_800_000_000_000);
        // A file of another layout is refused, not misread.
        std::fs::write(dir.join("stats"), vec![0u8; FILE_BYTES]).unwrap_or_default();
        assert!(StatsBoard::open(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
