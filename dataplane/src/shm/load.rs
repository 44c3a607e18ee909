//! The dataplane's load, published for the control plane's call admission:
//! one small file, `load` in the ring directory, that the dataplane
//! rewrites ten times a second and the control plane reads when it decides
//! whether to take a new call. Only the dataplane creates it; a control
//! plane that restarts finds it as it was.
//!
//! Layout (little-endian, 64 octets): magic `RVOIPLOD`, version (u32),
//! padding, then atomics: the Unix time of the last update (ms), the
//! busiest media worker's demand for a core over its last second (the time
//! it ran or waited to run, permille), the
//! number of media workers, and the packets relayed per second.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapMut;

const MAGIC: u64 = u64::from_le_bytes(*b"RVOIPLOD");
const VERSION: u32 = 1;
const FILE_BYTES: usize = 4096;

#[repr(C)]
struct Board {
    magic: u64,
    version: u32,
    _pad: u32,
    updated_unix_ms: AtomicU64,
    media_busy_permille: AtomicU32,
    media_workers: AtomicU32,
    media_packets_per_sec: AtomicU64,
}

/// The media engine's load over its last second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaLoad {
    /// Demand for a core of the busiest media worker thread (time it ran or
    /// waited to run per second of wall time), in permille.
    pub busy_permille: u32,
    /// Media workers.
    pub workers: u32,
    /// Packets relayed per second, all workers.
    pub packets_per_sec: u64,
}

/// The mapped load file.
#[derive(Debug)]
pub struct LoadBoard {
    map: MmapMut,
}

impl LoadBoard {
    /// Creates (or resets) `dir/load`, for the dataplane.
    pub fn create(dir: &Path) -> io::Result<LoadBoard> {
        let map = super::create_mapped(&dir.join("load"), FILE_BYTES)?;
        let mut board = LoadBoard { map };
        board.map[..8].copy_from_slice(&MAGIC.to_le_bytes());
        board.map[8..12].copy_from_slice(&VERSION.to_le_bytes());
        board.board().updated_unix_ms.store(0, Ordering::Release);
        Ok(board)
    }

    /// Opens `dir/load` as the dataplane created it, for the control plane.
    pub fn open(dir: &Path) -> io::Result<LoadBoard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("load"))?;
        if file.metadata()?.len() < FILE_BYTES as u64 {
            return Err(io::Error::other("load file is too short"));
        }
        // SAFETY: as in `create`; the length was checked.
        #[allow(unsafe_code)]
        let map = unsafe { MmapMut::map_mut(&file)? };
        let board = LoadBoard { map };
        let magic = u64::from_le_bytes(board.map[..8].try_into().unwrap_or_default());
        let version = u32::from_le_bytes(board.map[8..12].try_into().unwrap_or_default());
        if magic != MAGIC || version != VERSION {
            return Err(io::Error::other("load file has another layout"));
        }
        Ok(board)
    }

    fn board(&self) -> &Board {
        // SAFETY: the map is FILE_BYTES long, page-aligned (so aligned for
        // `Board`), and `Board` is plain integers and atomics, valid for any
        // bit pattern.
        #[allow(unsafe_code)]
        unsafe {
            &*(self.map.as_ptr() as *const Board)
        }
    }

    /// Publishes `load` as of `unix_ms`.
    pub fn publish(&self, load: MediaLoad, unix_ms: u64) {
        let b = self.board();
        b.media_busy_permille
            .store(load.busy_permille, Ordering::Relaxed);
        b.media_workers.store(load.workers, Ordering::Relaxed);
        b.media_packets_per_sec
            .store(load.packets_per_sec, Ordering::Relaxed);
        b.updated_unix_ms.store(unix_ms, Ordering::Release);
    }

    /// The last load published and when (Unix ms); `None` before the first.
    pub fn read(&self) -> Option<(MediaLoad, u64)> {
        let b = self.board();
        let at = b.updated_unix_ms.load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        Some((
            MediaLoad {
                busy_permille: b.media_busy_permille.load(Ordering::Relaxed),
                workers: b.media_workers.load(Ordering::Relaxed),
                packets_per_sec: b.media_packets_per_sec.load(Ordering::Relaxed),
            },
            at,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_dataplane_publishes_the_control_plane_reads() {
        let dir = std::env::temp_dir().join(format!("rvoip-load-{}", std::process::id()));
        let writer = LoadBoard::create(&dir).unwrap_or_else(|e| panic!("{e}"));
        let reader = LoadBoard::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.read(), None, "nothing published yet");
        let load = MediaLoad {
            busy_permille: 873,
            workers: 2,
            packets_per_sec: 51_000,
        };
        writer.publish(load, 1_800_000_000_000);
        assert_eq!(reader.read(), Some((load, 1_800_000_000_000)));
        std::fs::write(dir.join("load"), b"short").unwrap_or_default();
        assert!(LoadBoard::open(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
