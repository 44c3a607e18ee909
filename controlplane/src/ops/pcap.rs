//! The SIP half of `rvoip ctl capture`: every message of a captured call's
//! legs that the control plane receives or sends is appended to the call's
//! pcap file, the media plane appending the call's RTP to the same file.
//! A capture ends [`LINGER`] after its call (the last responses and
//! retransmissions still go in), at its deadline, or when stopped.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rvoip_dataplane::engine::media::capturer::open_for_append;
use rvoip_dataplane::pcap::{self, Proto, Wire};
use rvoip_dataplane::sip::Transport;

use crate::transaction::Millis;

/// How long a capture goes on after its call ended.
pub const LINGER: Millis = 2_000;

/// One call's capture.
#[derive(Debug)]
struct Tap {
    path: PathBuf,
    /// Its legs' Call-IDs.
    ids: Vec<Vec<u8>>,
    file: File,
    buf: Vec<u8>,
    /// Octets sent so far each way of a TCP connection (its sequence
    /// numbers).
    seq: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Ends then (control-plane ms).
    until: Option<Millis>,
}

/// The captures running.
#[derive(Debug, Default)]
pub struct Taps {
    taps: Vec<Tap>,
}

impl Taps {
    /// Whether none is running (what the message path checks first).
    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    /// Starts capturing the messages of Call-IDs `ids` into `path` (made
    /// with its header when absent), until `until` when given. A capture
    /// of the same file already running takes the new deadline.
    pub fn start(
        &mut self,
        path: &Path,
        ids: &[String],
        until: Option<Millis>,
    ) -> std::io::Result<()> {
        if let Some(t) = self.taps.iter_mut().find(|t| t.path == path) {
            t.until = until;
            return Ok(());
        }
        let file = open_for_append(path)?;
        self.taps.push(Tap {
            path: path.to_path_buf(),
            ids: ids.iter().map(|i| i.as_bytes().to_vec()).collect(),
            file,
            buf: Vec::new(),
            seq: HashMap::new(),
            until,
        });
        Ok(())
    }

    /// A message received (`src` the peer) or sent (`dst` the peer) at
    /// `unix_ns`: recorded when its Call-ID is captured.
    pub fn message(
        &mut self,
        unix_ns: u64,
        transport: Transport,
        (src, dst): (SocketAddr, SocketAddr),
        bytes: &[u8],
    ) {
        let Some(id) = rvoip_dataplane::sip::scan_call_id(bytes) else {
            return;
        };
        for t in &mut self.taps {
            if !t.ids.iter().any(|i| i.as_slice() == id) {
                continue;
            }
            let proto = match transport {
                Transport::Udp => Proto::Udp,
                _ => {
                    let ack = t.seq.get(&(dst, src)).copied().unwrap_or(0);
                    let seq = t.seq.entry((src, dst)).or_insert(0);
                    let p = Proto::Tcp { seq: *seq, ack };
                    *seq = seq.wrapping_add(bytes.len() as u32);
                    p
                }
            };
            pcap::append(
                &mut t.buf,
                unix_ns,
                &Wire { src, dst, proto },
                bytes,
                bytes.len(),
            );
        }
    }

    /// The call with one of `ids` ended at `now`: its capture ends
    /// [`LINGER`] later (or at its own deadline, when sooner).
    pub fn ended(&mut self, ids: &[&str], now: Millis) {
        for t in &mut self.taps {
            if t.ids
                .iter()
                .any(|i| ids.iter().any(|e| e.as_bytes() == i.as_slice()))
            {
                let end = now + LINGER;
                t.until = Some(t.until.map_or(end, |u| u.min(end)));
            }
        }
    }

    /// Ends the capture written to `path` now.
    pub fn stop(&mut self, path: &Path) {
        for t in &mut self.taps {
            if t.path == path {
                t.until = Some(0);
            }
        }
    }

    /// Writes what was recorded; ends the captures whose time is up and
    /// returns their files and Call-IDs.
    pub fn tick(&mut self, now: Millis) -> Vec<(PathBuf, Vec<String>)> {
        let mut ended = Vec::new();
        self.taps.retain_mut(|t| {
            if !t.buf.is_empty() {
                if let Err(e) = t.file.write_all(&t.buf) {
                    tracing::warn!(file = %t.path.display(), error = %e, "capture not written");
                }
                t.buf.clear();
            }
            let done = t.until.is_some_and(|u| now >= u);
            if done {
                let ids = t
                    .ids
                    .iter()
                    .map(|i| String::from_utf8_lossy(i).into_owned());
                ended.push((t.path.clone(), ids.collect()));
            }
            !done
        });
        ended
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn only_the_captured_calls_messages_go_in_and_the_capture_ends_after_its_call() {
        let dir = std::env::temp_dir().join(format!("rvoip-taps-{}", std::process::id()));
        let path = dir.join("a.pcap");
        let _ = std::fs::remove_dir_all(&dir);
        let mut taps = Taps::default();
        assert!(taps.is_empty());
        taps.start(&path, &["a@x".into(), "b@y".into()], None)
            .unwrap();
        let (p1, p2): (SocketAddr, SocketAddr) = (
            "127.0.0.2:5060".parse().unwrap(),
            "127.0.0.1:5060".parse().unwrap(),
        );
        let msg = |id: &str| format!("BYE sip:x SIP/2.0\r\nCall-ID: {id}\r\n\r\n").into_bytes();
        taps.message(1, Transport::Udp, (p1, p2), &msg("a@x"));
        taps.message(2, Transport::Udp, (p1, p2), &msg("other@z"));
        taps.message(3, Transport::Tcp, (p2, p1), &msg("b@y"));
        taps.message(4, Transport::Tcp, (p2, p1), &msg("b@y"));
        assert!(taps.tick(10).is_empty());
        let file = std::fs::read(&path).unwrap();
        let records = |f: &[u8]| {
            let mut at = 24;
            let mut lens = Vec::new();
            while at < f.len() {
                let cap = u32::from_ne_bytes(f[at + 8..at + 12].try_into().unwrap()) as usize;
                lens.push((f[at + 16] >> 4, f[at + 16 + 9], cap));
                at += 16 + cap;
            }
            lens
        };
        let n = msg("a@x").len();
        assert_eq!(
            records(&file),
            vec![(4, 17, 28 + n), (4, 6, 40 + n), (4, 6, 40 + n)]
        );
        // The second TCP segment follows the first.
        let second = 24 + (16 + 28 + n) + (16 + 40 + n) + 16;
        let seq = u32::from_be_bytes(file[second + 24..second + 28].try_into().unwrap());
        assert_eq!(seq as usize, n);
        taps.ended(&["b@y"], 100);
        assert!(taps.tick(100 + LINGER - 1).is_empty());
        let ids = vec!["a@x".to_string(), "b@y".to_string()];
        assert_eq!(taps.tick(100 + LINGER), vec![(path.clone(), ids)]);
        assert!(taps.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
