//! The dialog journal: established calls written as they are answered and
//! erased as they end, one JSON line per change, so a control plane killed
//! with `kill -9` finds its calls again. The changes of one batch of
//! messages go out in one `write(2)` ([`Journal::flush`], before the batch's
//! responses are sent); once it returns they are in the kernel and survive
//! the process.
//! Opening the journal replays it and rewrites it with the live calls only.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(serde::Serialize, serde::Deserialize)]
enum Entry<T> {
    #[serde(rename = "put")]
    Put(u64, T),
    #[serde(rename = "del")]
    Del(u64),
}

/// An append-only journal of records keyed by id.
#[derive(Debug)]
pub struct Journal {
    file: Option<std::fs::File>,
    /// Changes not written yet.
    buf: Vec<u8>,
    path: PathBuf,
    live: usize,
    written: usize,
    /// Writes that failed (the call goes on, it is just not recoverable).
    pub errors: u64,
}

impl Journal {
    /// A journal that keeps nothing (tests, or no state directory).
    pub fn disabled() -> Journal {
        Journal {
            file: None,
            buf: Vec::new(),
            path: PathBuf::new(),
            live: 0,
            written: 0,
            errors: 0,
        }
    }

    /// Opens `path`, returning the live records it holds; a torn last line
    /// (a write cut by a crash) is ignored.
    pub fn open<T: Serialize + DeserializeOwned>(
        path: &Path,
    ) -> std::io::Result<(Journal, Vec<(u64, T)>)> {
        let mut live: BTreeMap<u64, T> = BTreeMap::new();
        if let Ok(f) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Entry<T>>(&line) {
                    Ok(Entry::Put(id, t)) => {
                        live.insert(id, t);
                    }
                    Ok(Entry::Del(id)) => {
                        live.remove(&id);
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Compact: the live records only, then swap the file in.
        let tmp = path.with_extension("tmp");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for (id, t) in &live {
                serde_json::to_writer(&mut out, &Entry::Put(*id, t))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        let n = live.len();
        Ok((
            Journal {
                file: Some(file),
                buf: Vec::new(),
                path: path.to_path_buf(),
                live: n,
                written: n,
                errors: 0,
            },
            live.into_iter().collect(),
        ))
    }

    fn append<T: Serialize>(&mut self, e: &Entry<T>) {
        if self.file.is_none() {
            return;
        }
        if serde_json::to_writer(&mut self.buf, e).is_err() {
            self.errors += 1;
            return;
        }
        self.buf.push(b'\n');
        self.written += 1;
    }

    /// Writes the changes recorded since the last flush, in one write.
    pub fn flush(&mut self) {
        let Some(f) = &mut self.file else { return };
        if self.buf.is_empty() {
            return;
        }
        if f.write_all(&self.buf).is_err() {
            self.errors += 1;
        }
        self.buf.clear();
    }

    /// Records (or replaces) `id`.
    pub fn put<T: Serialize>(&mut self, id: u64, t: &T) {
        self.live += 1;
        self.append(&Entry::Put(id, t));
    }

    /// Erases `id`.
    pub fn remove(&mut self, id: u64) {
        self.live = self.live.saturating_sub(1);
        self.append::<()>(&Entry::Del(id));
    }

    /// Lines in the file now.
    pub fn lines(&self) -> usize {
        self.written
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn live_records_survive_a_reopen_and_the_file_is_compacted() {
        let dir = std::env::temp_dir().join(format!("rvoip-journal-{}", std::process::id()));
        let path = dir.join("dialogs.journal");
        let _ = std::fs::remove_file(&path);
        let (mut j, live) = Journal::open::<String>(&path).unwrap();
        assert!(live.is_empty());
        j.put(1, &"one".to_string());
        j.put(2, &"two".to_string());
        j.remove(1);
        j.put(3, &"three".to_string());
        drop(j);
        // A write torn by a crash.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"put\":[4,\"fo")
            .unwrap();
        let (j, live) = Journal::open::<String>(&path).unwrap();
        assert_eq!(live, vec![(2, "two".to_string()), (3, "three".to_string())]);
        assert_eq!(j.lines(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
