//! The media engine: one worker thread per configured core, each with its
//! own sockets, buffers, relay state and I/O driver (io_uring, or the
//! recvmmsg/sendmmsg fallback). The control side talks to workers only
//! through per-worker command queues and an eventfd wake-up.

mod afxdp;
pub mod capturer;
mod fallback;
mod ports;
pub mod recorder;

mod uring;
mod worker;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::media::relay::{RelayConfig, RelayCounters, SessionId};
use crate::media::services::{MediaEvent, ServiceOp};

pub use worker::WorkerReport;

/// Which I/O driver runs the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring when the kernel allows it, else the fallback (logged).
    Auto,
    /// io_uring only.
    IoUring,
    /// recvmmsg/sendmmsg with epoll.
    Fallback,
    /// AF_XDP sockets on the queues of link `ifindex`, rvoip's XDP program
    /// steering the media endpoints to them (one media worker, a socket
    /// per queue in use); never chosen by `Auto`.
    AfXdp {
        /// The link.
        ifindex: u32,
    },
}

/// How a worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polling {
    /// Sleep in the kernel until something arrives. With `batch_wait_us` > 0
    /// (io_uring, kernel 6.12+), a wake-up waits up to that long for more
    /// completions before handling them: fewer wake-ups and system calls per
    /// packet, for at most that much added delay.
    Interrupt {
        /// Coalescing window in microseconds; 0 handles each wake-up at once.
        batch_wait_us: u32,
    },
    /// After traffic, keep polling for this long before sleeping: no wake-up
    /// latency, at the price of a busy core.
    Adaptive(Duration),
}

/// Media engine settings.
#[derive(Debug, Clone)]
pub struct MediaEngineConfig {
    /// Address the relay binds.
    pub address: IpAddr,
    /// The relay's IPv6 address, when it bridges families: legs whose plan
    /// asks for IPv6 are opened there (same port range).
    pub address_v6: Option<IpAddr>,
    /// Further addresses endpoints may be opened on (realms' own), asked
    /// for by address in an order.
    pub extra_addresses: Vec<IpAddr>,
    /// First port of the range.
    pub port_min: u16,
    /// Last port of the range.
    pub port_max: u16,
    /// Cores to pin workers to; one worker each. Empty: one unpinned worker.
    pub cores: Vec<usize>,
    /// Driver.
    pub driver: DriverKind,
    /// Wait policy.
    pub polling: Polling,
    /// Relay policy.
    pub relay: RelayConfig,
    /// Most endpoints (sockets) one worker holds.
    pub max_endpoints_per_worker: u32,
    /// Calls a worker takes before new calls spread to the least loaded
    /// worker; 0 spreads from the first call.
    pub fill_calls: usize,
}

pub use crate::media::plan::{
    Applied, LegPorts, MediaControl, MediaError, MediaHandle, MediaPlan, RecordStep,
    SessionSnapshot, SidePlan,
};

type Reply<T> = mpsc::SyncSender<Result<T, MediaError>>;

/// An order to a worker.
#[derive(Debug)]
pub(crate) enum Command {
    Apply {
        session: Option<SessionId>,
        medias: Vec<MediaPlan>,
        reply: Reply<(SessionId, Vec<[LegPorts; 2]>)>,
    },
    Snapshot {
        session: SessionId,
        reply: Reply<SessionSnapshot>,
    },
    Remove {
        session: SessionId,
        reply: Reply<SessionSnapshot>,
    },
    Counters {
        reply: Reply<RelayCounters>,
    },
    TakeTimedOut {
        reply: Reply<Vec<SessionId>>,
    },
    Service {
        session: SessionId,
        media: usize,
        op: ServiceOp,
        reply: Reply<()>,
    },
    Stop,
}

struct WorkerHandle {
    /// Calls placed on the worker and not yet removed.
    calls: AtomicUsize,
    /// Port pairs the worker can still give out (it publishes them).
    free_pairs: Arc<AtomicUsize>,
    /// The worker's load over its last second (it publishes it).
    load: Arc<worker::WorkerLoad>,
    queue: Arc<ArrayQueue<Command>>,
    wake: Arc<worker::Wake>,
    thread: Option<JoinHandle<WorkerReport>>,
}

/// The running media engine.
pub struct MediaEngine {
    workers: Vec<WorkerHandle>,
    fill_calls: usize,
    driver: &'static str,
    /// Events the workers report: (worker, session, event).
    events: Arc<ArrayQueue<(usize, SessionId, MediaEvent)>>,
    recorder: recorder::Recorder,
    capturer: capturer::Capturer,
    /// The fingerprint of the DTLS certificate the workers present.
    dtls_fingerprint: crate::media::dtls::Fingerprint,
}

impl fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MediaEngine({} workers, {})",
            self.workers.len(),
            self.driver
        )
    }
}

/// Reads the media workers' load (see [`MediaEngine::load_probe`]).
#[derive(Debug, Clone)]
pub struct LoadProbe {
    workers: Vec<Arc<worker::WorkerLoad>>,
}

pub(crate) use worker::thread_demand_ns;

/// Whether this kernel (and the seccomp policy around this process) gives
/// the media workers' io_uring driver what it needs.
pub fn io_uring_available() -> io::Result<()> {
    uring::probe()
}

impl LoadProbe {
    /// Each worker's counters as of its last second, for the metrics
    /// ([`crate::shm::stats::MEDIA_FIELDS`]).
    pub fn tallies(&self) -> impl Iterator<Item = &crate::shm::stats::Tally> {
        self.workers.iter().map(|w| &w.tally)
    }

    /// The load over each worker's last second: the busiest worker's CPU
    /// share (one busy core is a limit, whatever the others do) and the
    /// packets relayed by all.
    pub fn sample(&self) -> crate::shm::load::MediaLoad {
        crate::shm::load::MediaLoad {
            busy_permille: self
                .workers
                .iter()
                .map(|w| w.busy_permille.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0),
            workers: self.workers.len() as u32,
            packets_per_sec: self
                .workers
                .iter()
                .map(|w| w.packets_per_sec.load(Ordering::Relaxed))
                .sum(),
        }
    }
}

/// Port pairs an audio call takes on its worker: one per side.
const PAIRS_PER_CALL: usize = 2;

/// How long the control side waits for a worker's answer.
const ORDER_TIMEOUT: Duration = Duration::from_secs(5);

/// Raises the soft open-files limit to the hard one: the fallback driver needs
/// a descriptor per endpoint, and io_uring's fixed-file table is capped by it.
pub fn raise_nofile_limit() -> u64 {
    worker::raise_nofile_limit()
}

impl MediaEngine {
    /// Starts one worker per configured core.
    /// The fingerprint of the DTLS certificate WebRTC legs present (what
    /// SDP towards them says).
    pub fn dtls_fingerprint(&self) -> crate::media::dtls::Fingerprint {
        self.dtls_fingerprint
    }

    pub fn start(config: &MediaEngineConfig) -> io::Result<MediaEngine> {
        Self::start_on_link(config, None)
    }

    /// [`MediaEngine::start`], on AF_XDP with `link` (made with the other
    /// services on it) rather than a link of its own.
    pub fn start_on_link(
        config: &MediaEngineConfig,
        link: Option<Arc<crate::xdp::link::XdpLink>>,
    ) -> io::Result<MediaEngine> {
        let limit = raise_nofile_limit();
        let mut n = config.cores.len().max(1);
        let use_uring = match config.driver {
            DriverKind::Fallback | DriverKind::AfXdp { .. } => false,
            DriverKind::IoUring => {
                uring::probe()?;
                true
            }
            DriverKind::Auto => uring::probe().is_ok(),
        };
        // AF_XDP: rvoip's program on the link; a media worker per receive
        // queue at most (queue q is worker q % n's). A frame lands on the
        // queue the link's hashing picks; the worker that takes it hands
        // it to the worker owning its endpoint (by port) when that is
        // another.
        let xdp = match config.driver {
            DriverKind::AfXdp { ifindex } => {
                let link = match link {
                    Some(l) if l.ifindex == ifindex => l,
                    _ => Arc::new(crate::xdp::link::XdpLink::open(ifindex, &[])?),
                };
                let queues = link.queues.max(1) as usize;
                if n > queues {
                    tracing::info!(
                        queues,
                        cores = n,
                        "AF_XDP: one media worker per receive queue of the link"
                    );
                    n = queues;
                }
                let handoff = (0..n)
                    .map(|_| crate::xdp::link::Mailbox::new())
                    .collect::<io::Result<Vec<_>>>()?;
                Some((link, Arc::new(handoff)))
            }
            _ => None,
        };
        let mut workers = Vec::with_capacity(n);
        let events = Arc::new(ArrayQueue::new(4096));
        let recorder = recorder::Recorder::start()?;
        let capturer = capturer::Capturer::start(config.address)?;
        // rvoip's DTLS certificate for WebRTC legs: made once per process,
        // presented by every worker.
        let dtls =
            crate::media::dtls::DtlsIdentity::generate(&crate::entropy::SystemEntropy::new())
                .map_err(io::Error::other)?;
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        for i in 0..n {
            let queue = Arc::new(ArrayQueue::new(1024));
            let wake = Arc::new(worker::Wake::new()?);
            let load = Arc::new(worker::WorkerLoad::default());
            let free_pairs = Arc::new(AtomicUsize::new(
                ports::PortPool::new(config.port_min, config.port_max, i, n).available(),
            ));
            let settings = worker::WorkerSettings {
                index: i,
                workers: n,
                core: config.cores.get(i).copied(),
                address: config.address,
                address_v6: config.address_v6,
                extra_addresses: config.extra_addresses.clone(),
                port_min: config.port_min,
                port_max: config.port_max,
                polling: config.polling,
                relay: config.relay,
                max_endpoints: config
                    .max_endpoints_per_worker
                    .min(limit.min(u64::from(u32::MAX)) as u32),
                use_uring,
                xdp: xdp.as_ref().map(|(link, handoff)| afxdp::XdpWorker {
                    link: Arc::clone(link),
                    index: i,
                    queues: (0..link.queues.max(1))
                        .filter(|q| *q as usize % n == i)
                        .collect(),
                    handoff: Arc::clone(handoff),
                    ports: (config.port_min, config.port_max),
                }),
                free_pairs: Arc::clone(&free_pairs),
                load: Arc::clone(&load),
                events: Arc::clone(&events),
                rec_sink: recorder.queue(),
                cap_sink: capturer.queue(),
                dtls: dtls.clone(),
            };
            let (q, w, ready) = (Arc::clone(&queue), Arc::clone(&wake), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || worker::run(settings, q, w, ready))?;
            workers.push(WorkerHandle {
                calls: AtomicUsize::new(0),
                free_pairs,
                load,
                queue,
                wake,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        let mut engine = MediaEngine {
            workers,
            fill_calls: config.fill_calls,
            driver: if xdp.is_some() {
                "af_xdp"
            } else if use_uring {
                "io_uring"
            } else {
                "recvmmsg/sendmmsg"
            },
            events,
            recorder,
            capturer,
            dtls_fingerprint: dtls.fingerprint(),
        };
        for _ in 0..n {
            match ready_rx.recv_timeout(ORDER_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    engine.stop();
                    return Err(e);
                }
                Err(_) => {
                    engine.stop();
                    return Err(io::Error::other("media worker did not start"));
                }
            }
        }
        Ok(engine)
    }

    /// The driver in use.
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// A handle that reads the workers' load, usable after the engine has
    /// been handed to its owner.
    pub fn load_probe(&self) -> LoadProbe {
        LoadProbe {
            workers: self.workers.iter().map(|w| Arc::clone(&w.load)).collect(),
        }
    }

    /// The worker a new call goes to, among those with port pairs for it
    /// (each worker owns its own slice of the port range, since it owns the
    /// sockets). Workers are filled in order up to `fill_calls` calls each,
    /// then calls go to the least loaded: a worker's wake-ups carry more
    /// packets the busier it is, so concentrating light load costs less CPU
    /// per packet, while heavy load still spreads over every core. When no
    /// worker has pairs for a whole call, the one with the most gets it.
    pub fn place(&self) -> usize {
        let has_room = |w: &WorkerHandle| w.free_pairs.load(Ordering::Relaxed) >= PAIRS_PER_CALL;
        let load = |w: &WorkerHandle| w.calls.load(Ordering::Relaxed);
        if self.fill_calls > 0
            && let Some(i) = self
                .workers
                .iter()
                .position(|w| has_room(w) && load(w) < self.fill_calls)
        {
            return i;
        }
        let least_loaded = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| has_room(w))
            .min_by_key(|(_, w)| load(w))
            .map(|(i, _)| i);
        least_loaded.unwrap_or_else(|| {
            self.workers
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| w.free_pairs.load(Ordering::Relaxed))
                .map_or(0, |(i, _)| i)
        })
    }

    fn order<T>(
        &self,
        worker: usize,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, MediaError> {
        let w = self.workers.get(worker).ok_or(MediaError::WorkerGone)?;
        let (tx, rx) = mpsc::sync_channel(1);
        w.queue.push(make(tx)).map_err(|_| MediaError::WorkerGone)?;
        w.wake.notify();
        rx.recv_timeout(ORDER_TIMEOUT)
            .map_err(|_| MediaError::WorkerGone)?
    }

    /// Creates (`handle` None, on worker `worker`) or updates a session.
    pub fn apply(
        &self,
        worker: usize,
        session: Option<SessionId>,
        medias: Vec<MediaPlan>,
    ) -> Result<Applied, MediaError> {
        let new = session.is_none();
        let (session, ports) = self.order(worker, |reply| Command::Apply {
            session,
            medias,
            reply,
        })?;
        if new && let Some(w) = self.workers.get(worker) {
            w.calls.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Applied {
            handle: MediaHandle { worker, session },
            ports,
        })
    }

    /// A copy of a session's state and statistics.
    pub fn snapshot(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        self.order(h.worker, |reply| Command::Snapshot {
            session: h.session,
            reply,
        })
    }

    /// Removes a session, closing its endpoints; returns its final state.
    pub fn remove(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        let r = self.order(h.worker, |reply| Command::Remove {
            session: h.session,
            reply,
        });
        if r.is_ok()
            && let Some(w) = self.workers.get(h.worker)
        {
            w.calls.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }

    /// Relay counters summed over the workers.
    pub fn counters(&self) -> RelayCounters {
        let mut total = RelayCounters::default();
        for i in 0..self.workers.len() {
            if let Ok(c) = self.order(i, |reply| Command::Counters { reply }) {
                total.add(&c);
            }
        }
        total
    }

    /// Sessions whose media timed out since the last call, on every worker.
    pub fn take_timed_out(&self) -> Vec<MediaHandle> {
        let mut out = Vec::new();
        for worker in 0..self.workers.len() {
            if let Ok(ids) = self.order(worker, |reply| Command::TakeTimedOut { reply }) {
                out.extend(
                    ids.into_iter()
                        .map(|session| MediaHandle { worker, session }),
                );
            }
        }
        out
    }

    /// Carries out a media service on media `media` of a session.
    pub fn service(&self, h: MediaHandle, media: usize, op: ServiceOp) -> Result<(), MediaError> {
        self.order(h.worker, |reply| Command::Service {
            session: h.session,
            media,
            op,
            reply,
        })
    }

    /// Events the workers reported since the last call.
    pub fn take_events(&self) -> Vec<(MediaHandle, MediaEvent)> {
        let mut out = Vec::new();
        while let Some((worker, session, e)) = self.events.pop() {
            out.push((MediaHandle { worker, session }, e));
        }
        out
    }

    /// Stops every worker; returns their reports.
    pub fn stop(&mut self) -> Vec<WorkerReport> {
        for w in &self.workers {
            // A full queue means the worker is stuck; the join below then waits for it.
            let _ = w.queue.push(Command::Stop);
            w.wake.notify();
        }
        self.workers
            .iter_mut()
            .filter_map(|w| w.thread.take())
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl MediaControl for MediaEngine {
    fn place(&self) -> usize {
        MediaEngine::place(self)
    }
    fn workers(&self) -> usize {
        self.workers.len()
    }
    fn apply(
        &self,
        worker: usize,
        session: Option<u32>,
        medias: Vec<MediaPlan>,
    ) -> Result<Applied, MediaError> {
        MediaEngine::apply(self, worker, session, medias)
    }
    fn snapshot(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        MediaEngine::snapshot(self, h)
    }
    fn remove(&self, h: MediaHandle) -> Result<SessionSnapshot, MediaError> {
        MediaEngine::remove(self, h)
    }
    fn counters(&self) -> RelayCounters {
        MediaEngine::counters(self)
    }
    fn take_timed_out(&self) -> Vec<MediaHandle> {
        MediaEngine::take_timed_out(self)
    }
    fn service(&self, h: MediaHandle, media: usize, op: ServiceOp) -> Result<(), MediaError> {
        MediaEngine::service(self, h, media, op)
    }
    fn take_events(&self) -> Vec<(MediaHandle, MediaEvent)> {
        MediaEngine::take_events(self)
    }
    fn record(&self, step: RecordStep) -> Result<(), MediaError> {
        let r = match step {
            RecordStep::Start(spec) => self.recorder.start_recording(*spec),
            RecordStep::Pause(id) => {
                self.recorder.pause(id);
                Ok(())
            }
            RecordStep::Stop(id) => self.recorder.stop(id),
        };
        r.map_err(MediaError::Service)
    }
    fn capture(&self, step: capturer::CaptureStep) -> Result<(), MediaError> {
        self.capturer.step(step).map_err(MediaError::Service)
    }
}
