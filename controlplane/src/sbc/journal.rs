//! The dialog journal: established calls written as they are answered and
//! erased as they end, so a control plane killed with `kill -9` finds its
//! calls again.
//!
//! The file is mapped shared into the control plane's memory: a record
//! stored in the map is in the kernel's page cache at once and outlives the
//! process, with no system call per change. Layout (little-endian):
//!
//! - a 64-octet file header: magic `RVJRNL01`, then the slot size (u32);
//! - slots of [`SLOT`] octets. A record takes a run of consecutive slots and
//!   starts with a 32-octet header: payload length (u32, 0 = free), CRC-32
//!   (of the sequence, id and payload), run length in slots (u32), a spare
//!   u32, sequence number (u64), record id (u64); then its JSON.
//!
//! A record is written run length first, then payload, then CRC, sequence
//! and id, and its length last, so one cut short by `kill -9` reads as free;
//! the CRC catches pages the kernel wrote back only in part when the host
//! itself went down. Ending a call zeroes the length and keeps the run
//! length, so a reader steps from run to run and never reads an old
//! payload as a header. Freed runs are reused by records of the same run
//! length; the file grows (doubling) to the peak of calls up at once.
//!
//! Opening the journal reads the live records (the highest sequence number
//! of an id wins, should a replacement have been cut short) and rewrites
//! the file with those alone. A journal of the earlier JSON-lines format
//! (one `{"put":[id,record]}` or `{"del":id}` per line) is read the same way.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, compiler_fence};

use memmap2::MmapMut;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

const MAGIC: &[u8; 8] = b"RVJRNL01";
const FILE_HEADER: usize = 64;
/// Slot size: a call's record (≈ 1 KB of JSON) takes a run of a few.
pub const SLOT: usize = 256;
const RECORD_HEADER: usize = 32;
/// Slots of a new file (1 MiB).
const INITIAL_SLOTS: usize = 4096;
/// Largest record kept: a call with an absurd route set is not journaled.
const MAX_RECORD: usize = 64 * 1024;

/// An append-free journal of records keyed by id, in a shared file mapping.
#[derive(Debug)]
pub struct Journal {
    store: Option<Store>,
    path: PathBuf,
    /// Serialization buffer, reused.
    scratch: Vec<u8>,
    /// Where each live record is: first slot and run length.
    at: FxHashMap<u64, (u32, u32)>,
    /// Freed runs, by run length.
    free: Vec<Vec<u32>>,
    /// The first slot never used.
    end: u32,
    seq: u64,
    /// Records not kept (serialization failed, too large, the file could
    /// not grow): the call goes on, it is just not recoverable.
    pub errors: u64,
}

#[derive(Debug)]
struct Store {
    file: File,
    map: MmapMut,
    slots: u32,
}

impl Store {
    fn create(path: &Path, slots: usize) -> std::io::Result<Store> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len((FILE_HEADER + slots * SLOT) as u64)?;
        let mut store = Store {
            map: map(&file)?,
            file,
            slots: slots as u32,
        };
        store.map[..8].copy_from_slice(MAGIC);
        store.map[8..12].copy_from_slice(&(SLOT as u32).to_le_bytes());
        Ok(store)
    }

    /// Doubles the file until `slots` fit.
    fn grow(&mut self, slots: u32) -> std::io::Result<()> {
        let mut n = (self.slots as usize).max(INITIAL_SLOTS);
        while n < slots as usize {
            n *= 2;
        }
        self.file.set_len((FILE_HEADER + n * SLOT) as u64)?;
        self.map = map(&self.file)?;
        self.slots = n as u32;
        Ok(())
    }
}

fn map(file: &File) -> std::io::Result<MmapMut> {
    #[allow(unsafe_code)]
    // SAFETY: the journal file is the control plane's own (one control plane
    // per state directory, under its lock); nothing else resizes it while it
    // is mapped, and the map is only read and written as plain octets.
    unsafe {
        MmapMut::map_mut(file)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn crc(seq: u64, id: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&id.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn slots_for(len: usize) -> u32 {
    (RECORD_HEADER + len).div_ceil(SLOT) as u32
}

/// The live records of a mapped journal: id → (sequence, payload).
fn read_slots(file: &[u8]) -> BTreeMap<u64, (u64, Vec<u8>)> {
    let mut live = BTreeMap::new();
    if file.len() < FILE_HEADER {
        return live;
    }
    let slot = u32_at(file, 8) as usize;
    if slot < RECORD_HEADER {
        return live;
    }
    let slots = (file.len() - FILE_HEADER) / slot;
    let mut i = 0usize;
    while i < slots {
        let base = FILE_HEADER + i * slot;
        let len = u32_at(file, base) as usize;
        let run = u32_at(file, base + 8) as usize;
        let fits = run >= 1
            && i + run <= slots
            && run
                .checked_mul(slot)
                .is_some_and(|room| RECORD_HEADER + len <= room);
        if !fits {
            // Never written (zeros), or not a header: the next slot.
            i += 1;
            continue;
        }
        if len > 0 {
            let seq = u64_at(file, base + 16);
            let id = u64_at(file, base + 24);
            let payload = &file[base + RECORD_HEADER..base + RECORD_HEADER + len];
            if crc(seq, id, payload) == u32_at(file, base + 4)
                && live.get(&id).is_none_or(|(s, _)| *s < seq)
            {
                live.insert(id, (seq, payload.to_vec()));
            }
        }
        i += run;
    }
    live
}

/// The live records of a journal in the earlier JSON-lines format.
fn read_lines(text: &[u8]) -> BTreeMap<u64, (u64, Vec<u8>)> {
    let mut live = BTreeMap::new();
    for line in text.lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(id) = v.get("del").and_then(serde_json::Value::as_u64) {
            live.remove(&id);
        } else if let Some([id, record]) =
            v.get("put").and_then(|p| p.as_array()).map(Vec::as_slice)
            && let Some(id) = id.as_u64()
        {
            live.insert(id, (0, record.to_string().into_bytes()));
        }
    }
    live
}

impl Journal {
    /// A journal that keeps nothing (tests, or no state directory).
    pub fn disabled() -> Journal {
        Journal {
            store: None,
            path: PathBuf::new(),
            scratch: Vec::new(),
            at: FxHashMap::default(),
            free: Vec::new(),
            end: 0,
            seq: 0,
            errors: 0,
        }
    }

    /// Opens `path`, returning the live records it holds (in id order), and
    /// rewrites it with those alone. Records that no longer read as `T` are
    /// dropped.
    pub fn open<T: Serialize + DeserializeOwned>(
        path: &Path,
    ) -> std::io::Result<(Journal, Vec<(u64, T)>)> {
        let old = match std::fs::read(path) {
            Ok(b) if b.starts_with(MAGIC) => read_slots(&b),
            Ok(b) => read_lines(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        let live: Vec<(u64, T)> = old
            .into_iter()
            .filter_map(|(id, (_, p))| Some((id, serde_json::from_slice(&p).ok()?)))
            .collect();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Compact: the live records into a new file, then swap it in (the
        // mapping follows the file).
        let tmp = path.with_extension("tmp");
        let mut j = Journal::disabled();
        j.store = Some(Store::create(&tmp, INITIAL_SLOTS)?);
        j.path = path.to_path_buf();
        for (id, t) in &live {
            j.put(*id, t);
        }
        if let Some(s) = &j.store {
            s.map.flush()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok((j, live))
    }

    /// Records (or replaces) `id`.
    pub fn put<T: Serialize>(&mut self, id: u64, t: &T) {
        if self.store.is_none() {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if serde_json::to_writer(&mut scratch, t).is_err()
            || scratch.is_empty()
            || scratch.len() > MAX_RECORD
        {
            self.errors += 1;
        } else {
            match self.write(id, &scratch) {
                Some(run) => {
                    if let Some((start, n)) = self.at.insert(id, run) {
                        self.release(start, n);
                    }
                }
                None => self.errors += 1,
            }
        }
        self.scratch = scratch;
    }

    /// Erases `id`.
    pub fn remove(&mut self, id: u64) {
        if let Some((start, n)) = self.at.remove(&id) {
            self.release(start, n);
        }
    }

    /// Writes one record into a free run; `None` when the file cannot grow.
    fn write(&mut self, id: u64, payload: &[u8]) -> Option<(u32, u32)> {
        let n = slots_for(payload.len());
        let reused = self.free.get_mut(n as usize).and_then(Vec::pop);
        let store = self.store.as_mut()?;
        let start = match reused {
            Some(s) => s,
            None => {
                let end = self.end.checked_add(n)?;
                if end > store.slots {
                    store.grow(end).ok()?;
                }
                self.end = end;
                end - n
            }
        };
        self.seq += 1;
        let base = FILE_HEADER + start as usize * SLOT;
        let m = &mut store.map[base..base + n as usize * SLOT];
        m[8..12].copy_from_slice(&n.to_le_bytes());
        m[RECORD_HEADER..RECORD_HEADER + payload.len()].copy_from_slice(payload);
        m[4..8].copy_from_slice(&crc(self.seq, id, payload).to_le_bytes());
        m[16..24].copy_from_slice(&self.seq.to_le_bytes());
        m[24..32].copy_from_slice(&id.to_le_bytes());
        // Everything above is in the map before the length makes it live.
        compiler_fence(Ordering::Release);
        m[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        Some((start, n))
    }

    /// Frees a run: its length goes to zero, its run length stays.
    fn release(&mut self, start: u32, n: u32) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let base = FILE_HEADER + start as usize * SLOT;
        store.map[base..base + 4].fill(0);
        if self.free.len() <= n as usize {
            self.free.resize_with(n as usize + 1, Vec::new);
        }
        self.free[n as usize].push(start);
    }

    /// Records live now.
    pub fn live(&self) -> usize {
        self.at.len()
    }

    /// The file's size in octets (0 when disabled).
    pub fn file_size(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.map.len())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Nothing is lost without this (the page cache has every record);
        // a clean stop starts the write-back to disk.
        let _ = self.map.flush_async();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Opens the journal at `path` (in the test's own temporary directory,
    /// which the test can always write).
    fn open(path: &Path) -> (Journal, Vec<(u64, String)>) {
        Journal::open::<String>(path).expect("a journal in the test's directory opens")
    }

    const WRITABLE: &str = "the test's temporary directory is writable";

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvoip-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn live_records_survive_a_reopen_and_the_file_is_compacted() {
        let dir = dir("reopen");
        let path = dir.join("dialogs.journal");
        let (mut j, live) = open(&path);
        assert!(live.is_empty());
        j.put(1, &"one".to_string());
        j.put(2, &"two".to_string());
        j.remove(1);
        j.put(3, &"three".repeat(200));
        j.put(2, &"two again".to_string());
        // No drop, no flush: the process ends here as if killed.
        std::mem::forget(j);
        let (j, live) = open(&path);
        assert_eq!(
            live,
            vec![(2, "two again".to_string()), (3, "three".repeat(200))]
        );
        assert_eq!(j.live(), 2);
        drop(j);
        let (_, live) = open(&path);
        assert_eq!(live.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn freed_runs_are_reused_and_the_file_stops_growing() {
        let dir = dir("reuse");
        let path = dir.join("dialogs.journal");
        let (mut j, _) = open(&path);
        let record = "x".repeat(900);
        // 20,000 calls, at most 2,000 up at once.
        for id in 0..20_000u64 {
            j.put(id, &record);
            if id >= 2_000 {
                j.remove(id - 2_000);
            }
        }
        assert_eq!(j.live(), 2_000);
        let per_record = slots_for(record.len() + 2) as usize * SLOT;
        assert!(
            j.file_size() <= FILE_HEADER + 2 * (2_001 * per_record).max(INITIAL_SLOTS * SLOT),
            "{} octets for 2,000 live records",
            j.file_size()
        );
        std::mem::forget(j);
        let (_, live) = open(&path);
        assert_eq!(live.len(), 2_000);
        assert_eq!(live.first().map(|(id, _)| *id), Some(18_000));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_cut_short_or_damaged_is_not_read_back() {
        let dir = dir("torn");
        let path = dir.join("dialogs.journal");
        let (mut j, _) = open(&path);
        j.put(1, &"kept".to_string());
        j.put(2, &"damaged".to_string());
        let (start, _) = j.at[&2];
        std::mem::forget(j);
        // One octet of record 2's payload changes on disk.
        let mut bytes = std::fs::read(&path).expect(WRITABLE);
        let at = FILE_HEADER + start as usize * SLOT + RECORD_HEADER + 3;
        bytes[at] ^= 0x20;
        // And a record whose length never got written: only its run length
        // and payload are there.
        let cut = FILE_HEADER + 10 * SLOT;
        bytes[cut + 8..cut + 12].copy_from_slice(&1u32.to_le_bytes());
        bytes[cut + RECORD_HEADER..cut + RECORD_HEADER + 6].copy_from_slice(b"\"cut\"\n");
        std::fs::write(&path, &bytes).expect(WRITABLE);
        let (_, live) = open(&path);
        assert_eq!(live, vec![(1, "kept".to_string())]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_of_any_shape_open_without_a_panic() {
        let dir = dir("shapes");
        let path = dir.join("dialogs.journal");
        std::fs::create_dir_all(&dir).expect(WRITABLE);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(SLOT as u32).to_le_bytes());
        header.resize(FILE_HEADER, 0);
        // Truncated headers, absurd slot sizes and run lengths.
        let mut shapes: Vec<Vec<u8>> = vec![
            MAGIC.to_vec(),
            [MAGIC.as_slice(), &[1, 0]].concat(),
            [MAGIC.as_slice(), &u32::MAX.to_le_bytes()].concat(),
        ];
        let mut huge_run = header.clone();
        huge_run.extend_from_slice(&100u32.to_le_bytes());
        huge_run.extend_from_slice(&[0; 4]);
        huge_run.extend_from_slice(&u32::MAX.to_le_bytes());
        huge_run.resize(FILE_HEADER + 4 * SLOT, 0xff);
        shapes.push(huge_run);
        // And noise after a valid header (xorshift, fixed seed).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..200 {
            let mut f = header.clone();
            for _ in 0..(n * 37) % 3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                f.push(x as u8);
            }
            shapes.push(f);
        }
        for f in shapes {
            std::fs::write(&path, &f).expect(WRITABLE);
            let (mut j, _) = open(&path);
            j.put(7, &"after".to_string());
            drop(j);
            let (_, live) = open(&path);
            assert!(live.contains(&(7, "after".to_string())));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_journal_of_json_lines_is_read_and_rewritten() {
        let dir = dir("lines");
        let path = dir.join("dialogs.journal");
        std::fs::create_dir_all(&dir).expect(WRITABLE);
        let mut f = File::create(&path).expect(WRITABLE);
        f.write_all(b"{\"put\":[1,\"one\"]}\n{\"put\":[2,\"two\"]}\n{\"del\":1}\n{\"put\":[4,\"fo")
            .expect(WRITABLE);
        drop(f);
        let (j, live) = open(&path);
        assert_eq!(live, vec![(2, "two".to_string())]);
        drop(j);
        assert!(std::fs::read(&path).expect(WRITABLE).starts_with(MAGIC));
        let (_, live) = open(&path);
        assert_eq!(live, vec![(2, "two".to_string())]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
