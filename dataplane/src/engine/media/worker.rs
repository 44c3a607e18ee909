//! One media worker: its relay state, its port pool, its driver, and the loop
//! that ties them together.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::ports::{Pair, Parked, Pools, PortPool};
use super::{Command, LegPorts, MediaError, MediaPlan, Polling, SessionSnapshot};
use crate::media::relay::{Component, EndpointId, Relay, RelayConfig, RelayCounters, Side};

/// A worker's clock: milliseconds and nanoseconds since the worker started,
/// read once per batch of packets (a vDSO call, never a system call).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    start: Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }
    /// (milliseconds, nanoseconds) now.
    pub(super) fn now(&self) -> (u64, u64) {
        let ns = self.start.elapsed().as_nanos() as u64;
        (ns / 1_000_000, ns)
    }
}

/// The I/O half of a worker. Implementations own every socket of the worker.
pub(super) trait Driver {
    /// Opens a UDP socket bound to `addr`.
    fn open(&mut self, addr: SocketAddr) -> io::Result<EndpointId>;
    /// Closes an endpoint.
    fn close(&mut self, ep: EndpointId);
    /// Waits at most `timeout` for packets or a wake-up and hands every packet
    /// to `relay`, sending what it returns.
    fn poll(&mut self, relay: &mut Relay, clock: &Clock, timeout: Duration) -> io::Result<()>;
    /// Datagrams received and sent, and send errors.
    fn io_counters(&self) -> (u64, u64, u64);
    /// Datagrams taken for another worker's endpoint and handed to it.
    fn handed_over(&self) -> u64 {
        0
    }
}

pub(crate) use crate::engine::wake::Wake;

pub(super) fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Opens a UDP socket bound to `addr`, as a plain descriptor.
pub(super) fn bind_udp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let std_socket = std::net::UdpSocket::bind(addr)?;
    Ok(OwnedFd::from(std_socket))
}

pub(super) struct WorkerSettings {
    /// rvoip's DTLS certificate, for WebRTC legs.
    pub(super) dtls: crate::media::dtls::DtlsIdentity,
    pub(super) index: usize,
    pub(super) workers: usize,
    pub(super) core: Option<usize>,
    pub(super) address: IpAddr,
    pub(super) address_v6: Option<IpAddr>,
    /// Further addresses endpoints may be opened on (the realms').
    pub(super) extra_addresses: Vec<IpAddr>,
    pub(super) port_min: u16,
    pub(super) port_max: u16,
    pub(super) polling: Polling,
    pub(super) relay: RelayConfig,
    pub(super) max_endpoints: u32,
    pub(super) use_uring: bool,
    /// The worker's queue on AF_XDP, when the engine runs on it.
    pub(super) xdp: Option<super::afxdp::XdpWorker>,
    /// Pairs this worker can still give out, published for call placement.
    pub(super) free_pairs: Arc<AtomicUsize>,
    /// This worker's load over its last second, published for admission.
    pub(super) load: Arc<WorkerLoad>,
    /// Where it reports media events: (worker, session, event).
    pub(super) events: Arc<ArrayQueue<(usize, u32, crate::media::services::MediaEvent)>>,
    /// Where recorded calls' packets go.
    pub(super) rec_sink: Arc<ArrayQueue<crate::media::services::RecPacket>>,
    /// Where captured calls' packets go.
    pub(super) cap_sink: Arc<ArrayQueue<crate::pcap::CapPacket>>,
}

/// A worker's load over its last second.
#[derive(Debug, Default)]
pub(super) struct WorkerLoad {
    /// Demand of the worker thread for a core (ran or waited to run) per
    /// wall time, permille.
    pub(super) busy_permille: AtomicU32,
    /// Packets relayed per second.
    pub(super) packets_per_sec: AtomicU64,
    /// The relay's counters as of the last second, for the metrics.
    pub(super) tally: crate::shm::stats::Tally,
}

/// Measures a worker thread's demand for a core and its relayed packets
/// between two looks. Demand is the time the thread ran plus the time it was
/// runnable but waited for a core (the kernel's schedstat): a worker that
/// other processes crowd off its core is as overloaded as one that is busy
/// by itself, and either way its packets wait. How the driver waits
/// (io_uring, epoll, busy polling) does not matter.
struct LoadMeter {
    wall: Instant,
    demand_ns: u64,
    forwarded: u64,
    /// Demand smoothed over the last seconds (each second weighs half):
    /// a one-second burst is not an overload, a sustained level is.
    smoothed_permille: u64,
}

impl LoadMeter {
    fn start() -> Self {
        LoadMeter {
            wall: Instant::now(),
            demand_ns: thread_demand_ns(),
            forwarded: 0,
            smoothed_permille: 0,
        }
    }

    fn measure(&mut self, out: &WorkerLoad, counters: &crate::media::relay::RelayCounters) {
        let forwarded = counters.forwarded;
        let wall_ns = self.wall.elapsed().as_nanos().max(1) as u64;
        let demand = thread_demand_ns();
        let busy = (demand.saturating_sub(self.demand_ns).saturating_mul(1000) / wall_ns).min(1000);
        let smoothed = (self.smoothed_permille + busy) / 2;
        let packets = forwarded.saturating_sub(self.forwarded);
        out.busy_permille.store(smoothed as u32, Ordering::Relaxed);
        out.packets_per_sec.store(
            packets.saturating_mul(1_000_000_000) / wall_ns,
            Ordering::Relaxed,
        );
        out.tally.store(&counters.values(smoothed as u32));
        *self = LoadMeter {
            wall: Instant::now(),
            demand_ns: demand,
            forwarded,
            smoothed_permille: smoothed,
        };
    }
}

/// Time this thread has run and waited to run, in nanoseconds: the first two
/// fields of `/proc/thread-self/schedstat`; its CPU time alone where the
/// kernel keeps no scheduler statistics.
pub(crate) fn thread_demand_ns() -> u64 {
    let mut buf = [0u8; 96];
    let n = std::fs::File::open("/proc/thread-self/schedstat")
        .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
        .unwrap_or(0);
    let mut fields = buf[..n]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .map(|f| {
            std::str::from_utf8(f)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
        });
    match (fields.next().flatten(), fields.next().flatten()) {
        (Some(run), Some(wait)) => run.saturating_add(wait),
        _ => thread_cpu_ns(),
    }
}

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// What a worker reports when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Relay counters.
    pub relay: RelayCounters,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Send errors.
    pub send_errors: u64,
    /// Datagrams it took for another worker and handed over (AF_XDP).
    pub handed_over: u64,
}

pub(super) fn run(
    settings: WorkerSettings,
    queue: Arc<ArrayQueue<Command>>,
    wake: Arc<Wake>,
    ready: mpsc::Sender<io::Result<()>>,
) -> WorkerReport {
    if let Some(core) = settings.core {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    let driver: io::Result<Box<dyn Driver>> = if let Some(xdp) = settings.xdp.clone() {
        super::afxdp::AfXdpDriver::new(xdp, &wake, settings.polling)
            .map(|d| Box::new(d) as Box<dyn Driver>)
    } else if settings.use_uring {
        super::uring::UringDriver::new(settings.max_endpoints, &wake, settings.polling)
            .map(|d| Box::new(d) as Box<dyn Driver>)
    } else {
        super::fallback::FallbackDriver::new(&wake).map(|d| Box::new(d) as Box<dyn Driver>)
    };
    let mut driver = match driver {
        Ok(d) => {
            let _ = ready.send(Ok(()));
            d
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return WorkerReport::default();
        }
    };
    drop(ready);
    let clock = Clock::new();
    let mut relay = Relay::new(settings.relay, 0);
    relay.set_dtls(settings.dtls.clone(), clock.start);
    relay.set_record_sink(Arc::clone(&settings.rec_sink));
    // The Unix time of this worker's time 0, for the captures' timestamps.
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    relay.set_capture_sink(
        Arc::clone(&settings.cap_sink),
        unix_ns.saturating_sub(clock.now().1),
    );
    let mut ports = Pools::new(
        settings.port_min,
        settings.port_max,
        settings.index,
        settings.workers,
    );
    let mut last_tick = 0u64;
    let mut meter = LoadMeter::start();
    loop {
        if let Err(e) = driver.poll(&mut relay, &clock, Duration::from_millis(250)) {
            // A driver error is not fatal to the calls: count and continue.
            if e.kind() != io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        wake.drain();
        let mut stop = false;
        while let Some(cmd) = queue.pop() {
            stop |= handle(
                cmd,
                &mut relay,
                &mut ports,
                driver.as_mut(),
                &settings,
                &clock,
            );
        }
        relay.take_events(|id, e| {
            // A full queue (nobody reading events) loses the oldest news only.
            let _ = settings.events.push((settings.index, id, e));
        });
        let (now_ms, _) = clock.now();
        if now_ms >= last_tick + 1000 {
            relay.tick(now_ms);
            for i in 0..ports.len() {
                while let Some(pool) = ports.nth(i)
                    && let Some(p) = pool.unpark_idle(now_ms)
                {
                    close_parked(pool, driver.as_mut(), p);
                }
            }
            meter.measure(&settings.load, &relay.counters());
            last_tick = now_ms;
        }
        if stop {
            break;
        }
    }
    let (received, sent, send_errors) = driver.io_counters();
    let handed_over = driver.handed_over();
    WorkerReport {
        relay: relay.counters(),
        received,
        sent,
        send_errors,
        handed_over,
    }
}

/// Opens one endpoint on `port` of the relay's IPv4 address, or of
/// `local` (one of its other addresses), and binds it in the relay.
fn open_endpoint(
    driver: &mut dyn Driver,
    relay: &mut Relay,
    settings: &WorkerSettings,
    (local, port): (Option<IpAddr>, u16),
    at: (u32, usize, Side, Component),
) -> Result<EndpointId, MediaError> {
    let address = local.unwrap_or(settings.address);
    let ep = driver.open(SocketAddr::new(address, port)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
            MediaError::NoEndpoints
        } else {
            MediaError::Io(format!("{}: {e}", SocketAddr::new(address, port)))
        }
    })?;
    relay.bind_endpoint(ep, at.0, at.1, at.2, at.3);
    Ok(ep)
}

fn apply(
    relay: &mut Relay,
    ports: &mut Pools,
    driver: &mut dyn Driver,
    settings: &WorkerSettings,
    clock: &Clock,
    session: Option<u32>,
    medias: &[MediaPlan],
) -> Result<(u32, Vec<[LegPorts; 2]>), MediaError> {
    let (now_ms, _) = clock.now();
    let id = match session {
        Some(id) => {
            let s = relay.session_mut(id).ok_or(MediaError::UnknownSession)?;
            if s.medias.len() < medias.len() {
                s.medias.resize(medias.len(), Default::default());
            }
            id
        }
        None => relay.create_session(now_ms, medias.len()),
    };
    let result = apply_plans(relay, ports, driver, settings, now_ms, id, medias);
    if result.is_err() && session.is_none() {
        // Do not leave a half-built new session behind.
        release(relay, ports, driver, id, now_ms);
    }
    result.map(|ports| (id, ports))
}

/// Removes a session: parks its pairs for later calls.
fn release(
    relay: &mut Relay,
    ports: &mut Pools,
    driver: &mut dyn Driver,
    id: u32,
    now_ms: u64,
) -> Option<crate::media::relay::Session> {
    let snapshot = relay.session(id).cloned()?;
    // The endpoints it returns are the legs' own, read below.
    relay.remove_session(id);
    for pair in &snapshot.medias {
        for leg in &pair.legs {
            match (leg.rtp_ep, leg.local_port) {
                (Some(rtp), port) if port != 0 => ports.of(leg.local_ip).park(Parked {
                    port,
                    rtp,
                    rtcp: leg.rtcp_ep,
                    since_ms: now_ms,
                }),
                _ => {
                    for ep in [leg.rtp_ep, leg.rtcp_ep].into_iter().flatten() {
                        driver.close(ep);
                    }
                    if leg.local_port != 0 {
                        ports.of(leg.local_ip).put(leg.local_port);
                    }
                }
            }
        }
    }
    Some(snapshot)
}

/// Closes a parked pair and returns its port to the pool.
fn close_parked(ports: &mut PortPool, driver: &mut dyn Driver, p: Parked) {
    driver.close(p.rtp);
    if let Some(ep) = p.rtcp {
        driver.close(ep);
    }
    ports.put(p.port);
}

/// Gives one leg (session, media, side) its RTP endpoint, and its RTCP one
/// if `want_rtcp`, from a parked pair or from newly opened sockets; returns
/// the RTP port. `local`: on that relay address (none: the IPv4 one).
#[allow(clippy::too_many_arguments)]
fn take_pair(
    relay: &mut Relay,
    ports: &mut PortPool,
    driver: &mut dyn Driver,
    settings: &WorkerSettings,
    now_ms: u64,
    want_rtcp: bool,
    local: Option<IpAddr>,
    (id, m, side): (u32, usize, Side),
) -> Result<u16, MediaError> {
    // Try further pairs: another process may hold a port of the range, the
    // RTP one or the RTCP one above it. A port that failed is set aside
    // until this leg has one, so the next try is another closed port or,
    // when none is left, a parked pair (not the same held port again).
    let mut held = Vec::new();
    let result = 'attempt: {
        let mut last_err = MediaError::NoPorts;
        for _ in 0..64 {
            let Some(pair) = ports.take(now_ms) else {
                break;
            };
            let (port, rtp) = match pair {
                Pair::Open(p) => {
                    relay.bind_endpoint(p.rtp, id, m, side, Component::Rtp);
                    match (want_rtcp, p.rtcp) {
                        (true, Some(ep)) => {
                            relay.bind_endpoint(ep, id, m, side, Component::Rtcp);
                            break 'attempt Ok(p.port);
                        }
                        (false, Some(ep)) => {
                            driver.close(ep);
                            break 'attempt Ok(p.port);
                        }
                        (false, None) => break 'attempt Ok(p.port),
                        (true, None) => (p.port, Ok(p.rtp)),
                    }
                }
                Pair::Closed(port) => (
                    port,
                    open_endpoint(
                        driver,
                        relay,
                        settings,
                        (local, port),
                        (id, m, side, Component::Rtp),
                    ),
                ),
            };
            let result = match rtp {
                Ok(ep) if want_rtcp => {
                    let at = (id, m, side, Component::Rtcp);
                    match open_endpoint(driver, relay, settings, (local, port + 1), at) {
                        Ok(_) => Ok(port),
                        Err(e) => {
                            relay.unbind_endpoint(ep);
                            driver.close(ep);
                            Err(e)
                        }
                    }
                }
                Ok(_) => Ok(port),
                Err(e) => Err(e),
            };
            match result {
                Ok(port) => break 'attempt Ok(port),
                Err(e @ MediaError::NoEndpoints) => {
                    ports.put(port);
                    // The endpoint table is full: make room by closing a parked pair.
                    match ports.unpark_oldest() {
                        Some(p) => close_parked(ports, driver, p),
                        None => break 'attempt Err(e),
                    }
                }
                Err(e) => {
                    held.push(port);
                    last_err = e;
                }
            }
        }
        Err(last_err)
    };
    for port in held {
        // Back at the end of the pool: it may be free later.
        ports.put(port);
    }
    result
}

fn apply_plans(
    relay: &mut Relay,
    ports: &mut Pools,
    driver: &mut dyn Driver,
    settings: &WorkerSettings,
    now_ms: u64,
    id: u32,
    medias: &[MediaPlan],
) -> Result<Vec<[LegPorts; 2]>, MediaError> {
    let mut out = Vec::with_capacity(medias.len());
    for (m, plan) in medias.iter().enumerate() {
        let mut pair_ports = [LegPorts::default(); 2];
        for (i, side) in [Side::A, Side::B].into_iter().enumerate() {
            let sp = &plan.sides[i];
            let leg = relay
                .session(id)
                .and_then(|s| s.medias.get(m))
                .map(|p| p.leg(side).clone())
                .unwrap_or_default();
            let mut port = leg.local_port;
            let want_rtcp = sp.open_rtcp && leg.rtcp_ep.is_none();
            let mut rtcp_opened = false;
            // A leg keeps the address it was opened on.
            let mut local = leg.local_ip;
            if sp.open_rtp && leg.rtp_ep.is_none() {
                local = match sp.local {
                    None => None,
                    Some(a) if a == settings.address => None,
                    Some(a)
                        if settings.address_v6 == Some(a)
                            || settings.extra_addresses.contains(&a) =>
                    {
                        Some(a)
                    }
                    Some(a) => {
                        return Err(MediaError::Io(format!(
                            "{a} is not a media address of the relay"
                        )));
                    }
                };
                port = take_pair(
                    relay,
                    ports.of(local),
                    driver,
                    settings,
                    now_ms,
                    want_rtcp,
                    local,
                    (id, m, side),
                )?;
                rtcp_opened = want_rtcp;
                if let Some(l) = relay
                    .session_mut(id)
                    .and_then(|s| s.medias.get_mut(m))
                    .map(|p| p.leg_mut(side))
                {
                    l.local_port = port;
                    l.local_ip = local;
                }
            }
            let mut rtcp = leg.rtcp_ep.map(|_| port + 1);
            if rtcp_opened {
                rtcp = Some(port + 1);
            } else if want_rtcp && port != 0 {
                open_endpoint(
                    driver,
                    relay,
                    settings,
                    (local, port + 1),
                    (id, m, side, Component::Rtcp),
                )?;
                rtcp = Some(port + 1);
            }
            if let Some(peer) = sp.peer {
                relay.set_peer(id, m, side, peer);
            }
            if let Some(w) = &sp.webrtc
                && !relay.set_webrtc(id, m, side, w, now_ms)
            {
                return Err(MediaError::Service(
                    "WebRTC leg without a DTLS certificate".into(),
                ));
            }
            if let Some(line) = &sp.bundle
                && !relay.set_bundle(id, m, side, line)
            {
                return Err(MediaError::Service(format!(
                    "BUNDLE transport line {} does not exist",
                    line.transport
                )));
            }
            if let Some(srtp) = &sp.srtp
                && !relay.set_crypto(id, m, side, srtp)
            {
                return Err(MediaError::BadKey);
            }
            pair_ports[i] = LegPorts { rtp: port, rtcp };
        }
        if let Some(legs) = plan.transcode {
            relay
                .set_transcode(id, m, legs)
                .map_err(|e| MediaError::Codec(e.to_string()))?;
        }
        out.push(pair_ports);
    }
    Ok(out)
}

/// Runs one command; returns true for Stop.
fn handle(
    cmd: Command,
    relay: &mut Relay,
    ports: &mut Pools,
    driver: &mut dyn Driver,
    settings: &WorkerSettings,
    clock: &Clock,
) -> bool {
    match cmd {
        Command::Apply {
            session,
            medias,
            reply,
        } => {
            let r = apply(relay, ports, driver, settings, clock, session, &medias);
            // Published before the reply, so the next placement sees it.
            settings
                .free_pairs
                .store(ports.available(), Ordering::Relaxed);
            let _ = reply.send(r);
        }
        Command::Snapshot { session, reply } => {
            let now_ms = clock.now().0;
            let snap = relay
                .session(session)
                .cloned()
                .map(|session| SessionSnapshot { session, now_ms });
            let _ = reply.send(snap.ok_or(MediaError::UnknownSession));
        }
        Command::Remove { session, reply } => {
            let now_ms = clock.now().0;
            let snap = release(relay, ports, driver, session, now_ms)
                .map(|session| SessionSnapshot { session, now_ms });
            settings
                .free_pairs
                .store(ports.available(), Ordering::Relaxed);
            let _ = reply.send(snap.ok_or(MediaError::UnknownSession));
        }
        Command::Counters { reply } => {
            let _ = reply.send(Ok(relay.counters()));
        }
        Command::TakeTimedOut { reply } => {
            let _ = reply.send(Ok(relay.take_timed_out()));
        }
        Command::Service {
            session,
            media,
            op,
            reply,
        } => {
            let (_, now_ns) = clock.now();
            let r = relay
                .service(session, media, op, now_ns)
                .map_err(MediaError::Service);
            let _ = reply.send(r);
        }
        Command::Stop => return true,
    }
    false
}
