//! Call detail records: one JSON line per call, written by a thread of its
//! own so the control plane never waits for the disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;

use serde::Serialize;

use super::media::MediaTotals;

/// One call's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cdr {
    /// Call-ID of the calling leg (as the caller sent it).
    pub a_call_id: String,
    /// Call-ID of the called leg (made by the SBC).
    pub b_call_id: String,
    /// Calling number or user.
    pub from: String,
    /// Called number, normalized.
    pub to: String,
    /// Source address of the caller.
    pub source: String,
    /// Realm the call came from.
    pub in_realm: String,
    /// Trunk it went to ("" when it was never routed).
    pub trunk: String,
    /// The peer that took the call (or the last one tried).
    pub peer: String,
    /// Peers tried.
    pub attempts: u32,
    /// INVITE received, Unix milliseconds.
    pub invite_ms: u64,
    /// Leg B's first ringing (18x), Unix milliseconds; none if it sent none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringing_ms: Option<u64>,
    /// Answered (200), Unix milliseconds; none for unanswered calls.
    pub answer_ms: Option<u64>,
    /// Ended, Unix milliseconds.
    pub end_ms: u64,
    /// Talk time in milliseconds.
    pub duration_ms: u64,
    /// Why it ended: `bye-caller`, `bye-callee`, `cancel`, `rejected`,
    /// `no-answer`, `session-timer`, `ack-timeout`, `refused`, `media-error`.
    pub end_reason: &'static str,
    /// Final status sent to the caller.
    pub a_status: u16,
    /// Final status received from the called side (0: none).
    pub b_status: u16,
    /// Relay totals.
    pub media: MediaTotals,
}

/// The CDR writer.
#[derive(Debug)]
pub struct CdrWriter {
    tx: Option<SyncSender<Cdr>>,
    thread: Option<JoinHandle<std::io::Result<u64>>>,
    /// Records dropped because the writer fell behind.
    pub dropped: u64,
    /// Where the records go.
    pub path: PathBuf,
}

impl CdrWriter {
    /// Opens (appends to) `path` and starts the writer thread.
    pub fn spawn(path: &Path) -> std::io::Result<CdrWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = sync_channel::<Cdr>(65_536);
        let thread = std::thread::Builder::new()
            .name("cdr".into())
            .spawn(move || write_loop(file, rx))?;
        Ok(CdrWriter {
            tx: Some(tx),
            thread: Some(thread),
            dropped: 0,
            path: path.to_path_buf(),
        })
    }

    /// A writer for another control-plane shard: its records go to the
    /// same thread and file (whole lines, in the order queued).
    pub fn share(&self) -> CdrWriter {
        CdrWriter {
            tx: self.tx.clone(),
            thread: None,
            dropped: 0,
            path: self.path.clone(),
        }
    }

    /// Queues a record; never blocks (a full queue drops and counts it).
    pub fn write(&mut self, cdr: Cdr) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(cdr) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped += 1;
            }
        }
    }

    /// Writes what is queued and stops the thread; returns records written.
    pub fn finish(&mut self) -> u64 {
        self.tx = None;
        if let Some(t) = &self.thread {
            // Sooner than its next drain.
            t.thread().unpark();
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(n))) => n,
            Some(Ok(Err(e))) => {
                tracing::error!(error = %e, path = %self.path.display(), "CDRs not written");
                0
            }
            _ => 0,
        }
    }
}

impl Drop for CdrWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// How long the writer sleeps between drains of the queue: a record reaches
/// the file within about this long, and the control plane never has to
/// wake the writer for each record (at 1000 calls a second that wake-up and
/// a write per record cost more than the record itself).
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

fn write_loop(file: std::fs::File, rx: Receiver<Cdr>) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut n = 0u64;
    loop {
        let open = loop {
            match rx.try_recv() {
                Ok(cdr) => {
                    serde_json::to_writer(&mut out, &cdr)?;
                    out.write_all(b"\n")?;
                    n += 1;
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        // Everything queued is out: hand it to the kernel.
        out.flush()?;
        if !open {
            return Ok(n);
        }
        std::thread::park_timeout(DRAIN_EVERY);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_are_json_lines_appended_to_the_file() {
        let dir = std::env::temp_dir().join(format!("rvoip-cdr-{}", std::process::id()));
        let path = dir.join("cdr.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut w = CdrWriter::spawn(&path).unwrap();
        for i in 0..3 {
            w.write(Cdr {
                a_call_id: format!("a{i}"),
                end_reason: "bye-caller",
                a_status: 200,
                ..Cdr::default()
            });
        }
        assert_eq!(w.finish(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["a_call_id"], "a2");
        assert_eq!(lines[0]["media"]["packets"], 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
