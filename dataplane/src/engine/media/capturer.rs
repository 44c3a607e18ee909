//! The capture writer: one thread that appends the packets workers copy
//! for captured calls (`rvoip ctl capture`) to their pcap files, off the
//! packet path. A worker pushes a copy onto a bounded queue and never waits
//! (a full queue is counted). Records are written whole, gathered for at
//! most [`FLUSH`], to a file opened for appending: the control plane
//! appends the same call's SIP to it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::pcap::{self, CapPacket, Proto, Wire};

/// Packets waiting for the writer, all workers.
const QUEUE: usize = 2048;
/// Records wait at most this long before they are written.
const FLUSH: Duration = Duration::from_millis(20);
/// A capture's buffer is written once it holds this much.
const FLUSH_BYTES: usize = 64 * 1024;

/// What the writer is asked.
#[derive(Debug)]
pub enum CaptureStep {
    /// Capture `id` appends to `file` (made, with its header, when absent).
    Start {
        /// The capture.
        id: u32,
        /// Its pcap file.
        file: PathBuf,
    },
    /// Capture `id` ends: what is queued for it is written first.
    Stop(u32),
}

enum Control {
    Step(CaptureStep, mpsc::SyncSender<Result<(), String>>),
    Shutdown,
}

/// The running writer.
#[derive(Debug)]
pub struct Capturer {
    queue: Arc<ArrayQueue<CapPacket>>,
    control: mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl Capturer {
    /// Starts the writer; `relay_v4` is written for endpoints on "the
    /// relay's IPv4 address".
    pub fn start(relay_v4: IpAddr) -> io::Result<Capturer> {
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let (tx, rx) = mpsc::channel();
        let q = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || run(&q, &rx, relay_v4))?;
        Ok(Capturer {
            queue,
            control: tx,
            thread: Some(thread),
        })
    }

    /// The queue workers copy packets onto.
    pub fn queue(&self) -> Arc<ArrayQueue<CapPacket>> {
        Arc::clone(&self.queue)
    }

    /// Carries out `step`; returns once the file is open, or written and
    /// closed.
    pub fn step(&self, step: CaptureStep) -> Result<(), String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control
            .send(Control::Step(step, tx))
            .map_err(|_| "capture writer stopped".to_owned())?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| "capture writer not answering".to_owned())?
    }
}

impl Drop for Capturer {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens `path` for appending; a new or empty file gets the pcap header.
pub fn open_for_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    if f.metadata()?.len() == 0 {
        f.write_all(&pcap::file_header())?;
    }
    Ok(f)
}

struct Open {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    since: Option<Instant>,
}

impl Open {
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            tracing::warn!(file = %self.path.display(), error = %e, "capture not written");
        }
        self.buf.clear();
        self.since = None;
    }
}

fn run(queue: &ArrayQueue<CapPacket>, control: &mpsc::Receiver<Control>, v4: IpAddr) {
    let mut open: HashMap<u32, Open> = HashMap::new();
    let mut lost = 0u64;
    loop {
        let wait = if queue.is_empty() {
            Duration::from_millis(5)
        } else {
            Duration::ZERO
        };
        match control.recv_timeout(wait) {
            Ok(Control::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Control::Step(step, reply)) => {
                // What was queued before the step belongs before it.
                drain(queue, &mut open, v4, &mut lost);
                let r = match step {
                    CaptureStep::Start { id, file } => match open_for_append(&file) {
                        Ok(f) => {
                            open.entry(id).or_insert(Open {
                                file: f,
                                path: file,
                                buf: Vec::new(),
                                since: None,
                            });
                            Ok(())
                        }
                        Err(e) => Err(format!("{}: {e}", file.display())),
                    },
                    CaptureStep::Stop(id) => {
                        if let Some(mut o) = open.remove(&id) {
                            o.flush();
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        drain(queue, &mut open, v4, &mut lost);
        for o in open.values_mut() {
            if o.buf.len() >= FLUSH_BYTES || o.since.is_some_and(|t| t.elapsed() >= FLUSH) {
                o.flush();
            }
        }
    }
    drain(queue, &mut open, v4, &mut lost);
    for o in open.values_mut() {
        o.flush();
    }
    if lost > 0 {
        tracing::debug!(packets = lost, "captured packets of captures already ended");
    }
}

/// Turns what is queued into records of their captures.
fn drain(queue: &ArrayQueue<CapPacket>, open: &mut HashMap<u32, Open>, v4: IpAddr, lost: &mut u64) {
    while let Some(p) = queue.pop() {
        let Some(o) = open.get_mut(&p.capture) else {
            *lost += 1;
            continue;
        };
        let wire = Wire {
            src: pcap::or_default(p.src, v4),
            dst: pcap::or_default(p.dst, v4),
            proto: Proto::Udp,
        };
        let n = usize::from(p.len).min(p.data.len());
        pcap::append(
            &mut o.buf,
            p.unix_ns,
            &wire,
            &p.data[..n],
            usize::from(p.orig_len),
        );
        o.since.get_or_insert_with(Instant::now);
    }
}
