//! Operations: what an operator sees and does while the appliance runs,
//! served by one `ops` thread of the control plane, off the message path.
//! - `GET /metrics` on `[metrics] listen` (Prometheus text exposition):
//!   the control plane's last [`metrics::Snapshot`] and the dataplane's
//!   `stats` file, read when scraped.
//!
//! - `rvoip ctl` on `ctl.sock` in the ring directory ([`ctl`]): counters
//!   from the same snapshot, the rest asked of the loop, which takes the
//!   requests between messages ([`Ops::next_request`]).
//!
//! The control plane's loop never waits for these threads: it hands over a
//! snapshot once a second ([`Ops::publish`]).

pub mod ctl;
pub mod logging;
pub mod metrics;
pub mod pcap;
pub mod service;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rvoip_dataplane::shm::stats::StatsBoard;

use metrics::Snapshot;

/// What the loop and the ops thread share.
#[derive(Debug, Default)]
struct Shared {
    snapshot: Mutex<Option<Snapshot>>,
}

/// The ops threads and their endpoints.
#[derive(Debug)]
pub struct Ops {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    inbox: ctl::Inbox,
    /// Where `/metrics` is served, when it is.
    pub metrics: Option<SocketAddr>,
    /// The control socket.
    pub ctl: std::path::PathBuf,
    /// Where the calls' quality reports go (HEP), when they do.
    hep: Option<HepReports>,
}

/// Quality reports of ended calls to a HEP collector.
#[derive(Debug)]
struct HepReports {
    sock: std::net::UdpSocket,
    collector: SocketAddr,
    agent: u32,
    sample_pct: u8,
    buf: Vec<u8>,
    sent: u64,
}

/// Why the ops endpoints cannot start.
#[derive(Debug)]
pub struct OpsError(pub String);

impl std::fmt::Display for OpsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpsError {}

impl Ops {
    /// Serves `/metrics` on `metrics` (none: no endpoint) and the control
    /// socket in `ring_dir`, reading the dataplane's counters there.
    pub fn start(metrics: Option<SocketAddr>, ring_dir: &Path) -> Result<Ops, OpsError> {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        // Everything that can fail is bound before any thread starts: a
        // failed start leaves nothing running behind.
        let server = match metrics {
            Some(a) => Some(
                tiny_http::Server::http(a)
                    .map_err(|e| OpsError(format!("metrics.listen {a}: {e}")))?,
            ),
            None => None,
        };
        let path = ctl::socket_path(ring_dir);
        let listener =
            ctl::bind(&path).map_err(|e| OpsError(format!("{}: {e}", path.display())))?;
        let (to_loop, inbox) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            let dir = ring_dir.to_path_buf();
            threads.push(
                std::thread::Builder::new()
                    .name("ctl".into())
                    .spawn(move || {
                        let mut board = None;
                        let counters = move || -> serde_json::Value {
                            if board.is_none() {
                                board = StatsBoard::open(&dir).ok();
                            }
                            let slots = board.as_ref().map(StatsBoard::read).unwrap_or_default();
                            let snap = shared
                                .snapshot
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner);
                            metrics::counters_json(snap.as_ref(), &slots)
                        };
                        let mut counters = counters;
                        ctl::serve(&listener, &to_loop, &mut counters, &stop);
                    })
                    .map_err(|e| OpsError(format!("ctl thread: {e}")))?,
            );
        }
        let bound = server
            .as_ref()
            .and_then(|s| s.server_addr().to_ip())
            .or(metrics);
        if let Some(server) = server {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            let dir = ring_dir.to_path_buf();
            threads.push(
                std::thread::Builder::new()
                    .name("ops".into())
                    .spawn(move || serve(&server, &shared, &dir, &stop))
                    .map_err(|e| OpsError(format!("ops thread: {e}")))?,
            );
        }
        Ok(Ops {
            shared,
            stop,
            threads,
            inbox: ctl::Inbox(inbox),
            metrics: bound,
            ctl: path,
            hep: None,
        })
    }

    /// Sends each ended call's quality report to the HEP collector of
    /// `[capture]`, when there is one.
    pub fn report_to(&mut self, capture: &rvoip_tuning::config::Capture) -> Result<(), OpsError> {
        let Some(collector) = capture.hep else {
            self.hep = None;
            return Ok(());
        };
        let any = if collector.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let sock = std::net::UdpSocket::bind(any)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| OpsError(format!("capture.hep {collector}: {e}")))?;
        self.hep = Some(HepReports {
            sock,
            collector,
            agent: capture.hep_agent_id,
            sample_pct: capture.hep_sample_pct,
            buf: Vec::with_capacity(1024),
            sent: 0,
        });
        Ok(())
    }

    /// Sends the quality report of an ended call (HEP type 0x22, JSON,
    /// correlated by the caller's Call-ID), if reports go anywhere; `unix_ms`
    /// is now.
    pub fn report_call(&mut self, cdr: &crate::sbc::cdr::Cdr, unix_ms: u64) {
        let Some(h) = self.hep.as_mut() else {
            return;
        };
        if !rvoip_dataplane::hep::sampled(cdr.a_call_id.as_bytes(), h.sample_pct) {
            return;
        }
        let m = &cdr.media;
        let loss = if m.expected > 0 {
            m.lost as f64 / m.expected as f64
        } else {
            0.0
        };
        let jitter = m.jitter_us as f64 / 1e6;
        let report = serde_json::json!({
            "type": "call-end",
            "call_id": cdr.a_call_id,
            "b_call_id": cdr.b_call_id,
            "realm": cdr.in_realm,
            "trunk": cdr.trunk,
            "peer": cdr.peer,
            "end_reason": cdr.end_reason,
            "status": cdr.a_status,
            "duration_ms": cdr.duration_ms,
            "packets": m.packets,
            "packets_from_a": m.from_a,
            "packets_from_b": m.from_b,
            "expected": m.expected,
            "lost": m.lost,
            "loss_ratio": loss,
            "jitter_ms": jitter * 1000.0,
            "mos": if m.expected > 0 { Some(metrics::mos(loss, jitter)) } else { None },
        });
        let payload = report.to_string();
        let src = cdr.source.parse::<std::net::IpAddr>().map_or_else(
            |_| SocketAddr::from(([0, 0, 0, 0], 0)),
            |ip| SocketAddr::new(ip, 0),
        );
        let dst = cdr
            .peer
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let meta = rvoip_dataplane::hep::Meta {
            src,
            dst,
            protocol: 17,
            time: ((unix_ms / 1000) as u32, (unix_ms % 1000 * 1000) as u32),
            agent: h.agent,
            kind: rvoip_dataplane::hep::kind::QOS_REPORT,
            correlation: Some(cdr.a_call_id.as_bytes()),
        };
        if rvoip_dataplane::hep::write(&mut h.buf, &meta, payload.as_bytes())
            && h.sock.send_to(&h.buf, h.collector).is_ok()
        {
            h.sent += 1;
        }
    }

    /// The next ctl request for the loop, if one is waiting.
    pub fn next_request(&self) -> Option<ctl::Asked> {
        self.inbox.next()
    }

    /// Hands over the control plane's counters as of now.
    pub fn publish(&self, snapshot: Snapshot) {
        *self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.ctl);
    }
}

/// The body of `/metrics`.
fn exposition(shared: &Shared, board: &mut Option<StatsBoard>, dir: &Path) -> String {
    if board.is_none() {
        *board = StatsBoard::open(dir).ok();
    }
    let slots = board.as_ref().map(StatsBoard::read).unwrap_or_default();
    let families = {
        let snap = shared
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        metrics::families(snap.as_ref(), &slots)
    };
    metrics::encode(&families).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

fn serve(server: &tiny_http::Server, shared: &Shared, dir: &Path, stop: &AtomicBool) {
    let mut board = None;
    while !stop.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or_default();
        let response = match (request.method(), path) {
            (tiny_http::Method::Get, "/metrics") => {
                let body = exposition(shared, &mut board, dir);
                let mut r = tiny_http::Response::from_string(body);
                if let Ok(h) = "Content-Type: text/plain; version=0.0.4; charset=utf-8"
                    .parse::<tiny_http::Header>()
                {
                    r.add_header(h);
                }
                r
            }
            (tiny_http::Method::Get, _) => {
                tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                    .with_status_code(404)
            }
            _ => tiny_http::Response::from_string("only GET\n").with_status_code(405),
        };
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "metrics client went away");
        }
    }
}
