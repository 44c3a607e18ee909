//! The SIP transport of the dataplane: one worker thread per configured
//! core, each with its own SO_REUSEPORT UDP and TCP sockets on every
//! listener address, its own shared-memory channel to the control plane, and
//! one io_uring used as the event loop: multishot receives from a
//! provided-buffer ring on the UDP sockets, sends as SendMsg entries submitted
//! with the next wait, readiness polls on TCP, and a FUTEX_WAIT on the channel
//! when it sleeps.
//!
//! Per message: the edge checks it (malformed → answered statelessly, or
//! dropped), the per-source rate limit applies, and a well-formed message
//! goes into the worker's ring with its transport metadata. Outbound messages
//! come back on the same ring and leave from the socket bound to their local
//! address (TCP: the connection they name, or a new one).
#![allow(unsafe_code)]

mod capture;
mod worker;

pub use capture::HepConfig;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sip::Limits;
use crate::sip::tls::Credentials;
use crate::sip::ws::WsPolicy;

pub use worker::SipWorkerReport;

pub use crate::sip::Transport;

/// SIP plane settings.
#[derive(Debug, Clone)]
pub struct SipPlaneConfig {
    /// Listeners.
    pub listeners: Vec<(Transport, SocketAddr)>,
    /// Cores to pin workers to; one worker each (empty: one unpinned worker).
    pub cores: Vec<usize>,
    /// Directory of the shared-memory channels.
    pub ring_dir: PathBuf,
    /// Control-plane shards: each worker has a channel to each, and hands
    /// a message to the one its Call-ID names ([`crate::sip::shard_of`]).
    pub shards: usize,
    /// Parser limits.
    pub limits: Limits,
    /// Messages per second accepted from one source address (0: no limit).
    pub rate_limit: u32,
    /// HEP capture of every message received and sent (none: off).
    pub hep: Option<HepConfig>,
    /// Ring slots (power of two) of 2 KiB each, per direction.
    pub ring_slots: usize,
    /// Once woken, a worker lets this many microseconds of traffic gather
    /// before it handles it (io_uring minimum wait; 0: handle at once).
    pub batch_wait_us: u32,
    /// io_uring, poll(2), or io_uring where the kernel allows it.
    pub driver: crate::engine::media::DriverKind,
    /// rvoip's TLS, for its listeners and the connections it opens
    /// (required when there is a TLS listener); its files are watched and
    /// read again when they change.
    pub tls: Option<Arc<Credentials>>,
    /// Limits on stream connections.
    pub streams: StreamLimits,
    /// Who may open SIP WebSocket connections.
    pub ws: WsPolicy,
    /// SIP over UDP on AF_XDP: the link and the SIP service on it (a
    /// mailbox per worker; its owner is the media worker); none: the
    /// kernel's UDP.
    pub xdp: Option<(Arc<crate::xdp::link::XdpLink>, crate::xdp::link::ServiceId)>,
}

/// Limits on stream connections (TCP, TLS, WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Connections one source address may hold open at once, across the
    /// workers (0: no limit).
    pub max_per_source: u32,
    /// How long a TLS handshake or WebSocket upgrade may take.
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent both ways (none: forever).
    pub idle_timeout: Option<Duration>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_per_source: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

/// How often the TLS files are looked at for a renewal.
const TLS_WATCH: Duration = Duration::from_secs(2);

/// Reads the TLS files again whenever they change, until `stop`: new
/// connections get the new certificate, connections up keep theirs.
fn watch_tls(credentials: Arc<Credentials>, stop: Arc<AtomicBool>) {
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
        if waited < TLS_WATCH {
            continue;
        }
        waited = Duration::ZERO;
        match credentials.reload_if_changed() {
            Ok(true) => {
                tracing::info!("TLS certificate and key read again: new connections use them")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "TLS files changed but are not usable: the previous certificate stays")
            }
        }
    }
}

/// The running SIP plane.
#[derive(Debug)]
pub struct SipPlane {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<SipWorkerReport>>,
    /// The thread watching the TLS files.
    watcher: Option<JoinHandle<()>>,
    /// Channel files to shard 0, one per worker.
    pub rings: Vec<PathBuf>,
    /// Each worker's counters as of its last second, for the metrics
    /// ([`crate::shm::stats::SIP_FIELDS`]).
    pub tallies: Vec<Arc<crate::shm::stats::Tally>>,
    /// Held while the plane runs: one dataplane per ring directory.
    _lock: std::fs::File,
}

/// The channel file of worker `i` to control-plane shard 0.
pub fn ring_path(dir: &std::path::Path, i: usize) -> PathBuf {
    dir.join(format!("sip-{i}.ring"))
}

/// The channel file of worker `i` to control-plane shard `shard`.
pub fn shard_ring_path(dir: &std::path::Path, i: usize, shard: usize) -> PathBuf {
    match shard {
        0 => ring_path(dir, i),
        s => dir.join(format!("sip-{i}-shard{s}.ring")),
    }
}

/// Most control-plane shards (a worker sleeps on each one's channel).
pub const MAX_SHARDS: usize = 32;

/// The worker and shard a channel file name belongs to.
fn ring_name(name: &str) -> Option<(usize, usize)> {
    let stem = name.strip_prefix("sip-")?.strip_suffix(".ring")?;
    match stem.split_once("-shard") {
        Some((w, s)) => Some((w.parse().ok()?, s.parse().ok()?)),
        None => Some((stem.parse().ok()?, 0)),
    }
}

impl SipPlane {
    /// Binds every listener in every worker and starts them. The channel
    /// files are (re)created here.
    pub fn start(config: &SipPlaneConfig) -> io::Result<SipPlane> {
        let n = config.cores.len().max(1);
        let shards = config.shards.clamp(1, MAX_SHARDS);
        let lock = crate::shm::lock_dir(&config.ring_dir, "dataplane.lock")?;
        // The workers share each port among themselves, and with nobody else.
        for (transport, addr) in &config.listeners {
            worker::check_free(*addr, transport.reliable())?;
        }
        // Remove channels of an earlier, larger configuration.
        if let Ok(entries) = std::fs::read_dir(&config.ring_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some((i, s)) = ring_name(&name)
                    && (i >= n || s >= shards)
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(n);
        let mut rings = Vec::with_capacity(n);
        let tallies: Vec<Arc<crate::shm::stats::Tally>> = (0..n).map(|_| Arc::default()).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let sources = Arc::new(worker::SourceCounts::new());
        let ws = Arc::new(config.ws.clone());
        for (i, tally) in tallies.iter().cloned().enumerate() {
            rings.push(ring_path(&config.ring_dir, i));
            let settings = worker::Settings {
                index: i,
                core: config.cores.get(i).copied(),
                listeners: config.listeners.clone(),
                rings: (0..shards)
                    .map(|s| shard_ring_path(&config.ring_dir, i, s))
                    .collect(),
                limits: config.limits,
                rate_limit: config.rate_limit,
                ring_slots: config.ring_slots,
                batch_wait_us: config.batch_wait_us,
                driver: config.driver,
                tally,
                hep: config.hep,
                tls: config.tls.clone(),
                streams: config.streams,
                ws: Arc::clone(&ws),
                sources: Arc::clone(&sources),
                xdp: config.xdp.clone(),
            };
            let (stop, ready) = (Arc::clone(&stop), ready_tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sip-{i}"))
                    .spawn(move || worker::run(settings, stop, ready))?,
            );
        }
        drop(ready_tx);
        let watcher = match &config.tls {
            Some(c) => {
                let (c, stop) = (Arc::clone(c), Arc::clone(&stop));
                Some(
                    std::thread::Builder::new()
                        .name("sip-tls-watch".into())
                        .spawn(move || watch_tls(c, stop))?,
                )
            }
            None => None,
        };
        let mut plane = SipPlane {
            stop,
            threads,
            watcher,
            rings,
            tallies,
            _lock: lock,
        };
        for _ in 0..n {
            match ready_rx.recv_timeout(std::time::Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    plane.shutdown();
                    return Err(e);
                }
                Err(_) => {
                    plane.shutdown();
                    return Err(io::Error::other("SIP worker did not start"));
                }
            }
        }
        Ok(plane)
    }

    /// Stops the workers; returns their reports.
    pub fn shutdown(&mut self) -> Vec<SipWorkerReport> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        self.threads
            .drain(..)
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

impl Drop for SipPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_files_name_their_worker_and_shard() {
        let dir = std::path::Path::new("/dev/shm/rvoip");
        for (i, s) in [(0, 0), (3, 0), (0, 1), (7, 31)] {
            let path = shard_ring_path(dir, i, s);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert_eq!(ring_name(name), Some((i, s)), "{name}");
        }
        assert_eq!(shard_ring_path(dir, 2, 0), ring_path(dir, 2));
        assert_eq!(ring_name("sip-x.ring"), None);
        assert_eq!(ring_name("dataplane.lock"), None);
    }
}
