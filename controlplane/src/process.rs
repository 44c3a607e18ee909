//! The control-plane process: attaches to the dataplane's shared-memory
//! channels, runs the SIP core over them, and survives being killed and
//! restarted (`kill -9`): everything it needs is in the channel files, the
//! location store and the configuration.
//!
//! An I/O shell: it reads the clock and the system's randomness and hands
//! them to the protocol cores as inputs.
#![allow(clippy::disallowed_methods)]

use rvoip_dataplane::entropy::{Entropy, SystemEntropy};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rvoip_dataplane::shm::{Channel, Direction, SipMeta, wait_any};
use rvoip_dataplane::sip::Limits;
use rvoip_tuning::Config;
use rvoip_tuning::config::{AuthMode, DigestAlgorithm, Mode};
use rvoip_tuning::sbc::ReferMode;

use crate::b2bua::{B2b, B2bConfig, SavedCall};
use crate::element::{
    AuthPolicy, CoreConfig, CoreCounters, Inbound, Load, OverloadConfig, Route, SipCore, Transport,
};
use crate::registrar::digest::Algorithm;
use crate::registrar::guard::GuardConfig;
use crate::registrar::location::LocationService;
use crate::registrar::{Registrar, RegistrarConfig, Users, UsersError};
use crate::sbc::cdr::CdrWriter;
use crate::sbc::journal::Journal;
use crate::sbc::media::ShmOrders;
use crate::sbc::policy::{Policy, PolicyError};
use rvoip_dataplane::shm::load::LoadBoard;

/// Why the control plane cannot start.
#[derive(Debug)]
pub enum StartError {
    /// A file or directory it needs cannot be opened, read or written.
    File(PathBuf, Box<dyn std::error::Error + Send + Sync>),
    /// The users file is not valid.
    Users(UsersError),
    /// The SBC configuration gives no policy.
    Policy(PolicyError),
    /// The system gave no randomness for the nonce key.
    Entropy,
}

impl StartError {
    fn file(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StartError {
        StartError::File(path.to_path_buf(), e.into())
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::File(p, e) => write!(f, "{}: {e}", p.display()),
            StartError::Users(e) => write!(f, "registrar.users_file: {e}"),
            StartError::Policy(e) => write!(f, "sbc: {e}"),
            StartError::Entropy => f.write_str("no randomness for the nonce key"),
        }
    }
}

impl std::error::Error for StartError {}

/// The SIP core described by `config`.
pub fn core_from_config(config: &Config) -> Result<SipCore, StartError> {
    let state_dir = config.resolve(&config.node.state_dir);
    let location_path = state_dir.join("location.redb");
    let location = LocationService::open(&location_path)
        .map_err(|e| StartError::file(&location_path, e.to_string()))?;
    let r = &config.registrar;
    let registrar = Registrar::new(
        RegistrarConfig {
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            default_expires: r.default_expires,
            host_aliases: config
                .sip
                .listen
                .iter()
                .map(|l| match l.address.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                })
                .collect(),
            domain: config.sip.domains.first().cloned(),
        },
        location,
    );
    let users = match &r.users_file {
        Some(f) => Users::load(&config.resolve(f)).map_err(StartError::Users)?,
        None => Users::default(),
    };
    let core_config = CoreConfig {
        domains: config.sip.domains.clone(),
        listeners: config
            .sip
            .listen
            .iter()
            .map(|l| (l.transport, l.address))
            .collect(),
        trusted_sources: config
            .proxy
            .trusted_sources
            .iter()
            .filter_map(|n| crate::sbc::policy::Net::parse(n))
            .collect(),
        routes: config
            .proxy
            .routes
            .iter()
            .map(|r| Route {
                user_prefix: r.user_prefix.clone(),
                domain: r.domain.clone(),
                target: r.target,
                transport: r.transport,
            })
            .collect(),
        record_route: config.proxy.record_route,
        stateful: config.proxy.stateful,
        auth: match r.auth {
            AuthMode::Off => AuthPolicy::Off,
            AuthMode::Register => AuthPolicy::Register,
            AuthMode::RegisterAndInvite => AuthPolicy::RegisterAndInvite,
        },
        nonce_lifetime_ms: u64::from(r.nonce_lifetime_secs) * 1000,
        digest_algorithms: r
            .digest_algorithms
            .iter()
            .map(|a| match a {
                DigestAlgorithm::Md5 => Algorithm::Md5,
                DigestAlgorithm::Sha256 => Algorithm::Sha256,
            })
            .collect(),
        overload: OverloadConfig {
            enabled: config.overload.enabled,
            media_busy_permille: config.overload.media_busy_pct * 10,
            media_packets_per_sec: config.overload.media_packets_per_sec,
            sip_backlog: config.overload.sip_backlog,
            retry_after_secs: config.overload.retry_after_secs,
        },
        auth_guard: GuardConfig {
            failures_before_ban: r.auth_failures_before_ban,
            window_ms: u64::from(r.auth_failure_window_secs) * 1000,
            ban_ms: u64::from(r.auth_ban_secs) * 1000,
        },
        limits: Limits {
            max_message_size: config.sip.max_message_size,
            max_line_length: config.sip.max_line_length,
            max_headers: config.sip.max_headers,
            ..Limits::default()
        },
        edge_checked: true,
        ..CoreConfig::default()
    };
    let entropy = SystemEntropy::new();
    let secret = nonce_secret(&state_dir, &entropy)?;
    Ok(SipCore::new(
        core_config,
        registrar,
        users,
        &secret,
        &entropy,
    ))
}

/// The B2BUA of a `mode = "b2bua"` configuration: policy, media orders
/// over the dataplane's order channel, the dialog journal (established
/// calls come back from it) and the CDR writer.
pub fn b2bua_from_config(
    config: &Config,
    ring_dir: &Path,
) -> Result<(B2b, Option<CdrWriter>), StartError> {
    let policy = Policy::from_config(config).map_err(StartError::Policy)?;
    let entropy = SystemEntropy::new();
    let orders = loop {
        match ShmOrders::open(ring_dir, &entropy) {
            Ok(o) => break o,
            Err(e) if !rvoip_dataplane::engine::ng_shm::orders_path(ring_dir).exists() => {
                tracing::debug!(error = %e, "waiting for the media order channel");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                let path = rvoip_dataplane::engine::ng_shm::orders_path(ring_dir);
                return Err(StartError::file(&path, e));
            }
        }
    };
    let state_dir = config.resolve(&config.node.state_dir);
    let path = state_dir.join("dialogs.journal");
    let (journal, saved) =
        Journal::open::<SavedCall>(&path).map_err(|e| StartError::file(&path, e.to_string()))?;
    let s = &config.sbc;
    let b2b = B2b::new(
        policy,
        B2bConfig {
            session_expires: s.session_expires_secs,
            min_se: s.min_se_secs,
            reject_refer: s.refer == ReferMode::Reject,
            health_interval_ms: (s.health_interval_secs * 1000.0) as u64,
            media_server: crate::b2bua::MediaServer {
                config: config.mediaserver.clone(),
                // Absolute: the relay reads the files, from its own
                // working directory.
                prompt_dir: std::path::absolute(config.resolve(&config.mediaserver.prompt_dir))
                    .unwrap_or_else(|_| config.resolve(&config.mediaserver.prompt_dir)),
            },
        },
        Box::new(orders),
        journal,
        saved,
        &entropy,
    );
    let writer = match &s.cdr_file {
        Some(p) => {
            let p = config.resolve(p);
            Some(CdrWriter::spawn(&p).map_err(|e| StartError::file(&p, e.to_string()))?)
        }
        None => None,
    };
    Ok((b2b, writer))
}

/// The nonce key, kept in the state directory so nonces survive a restart.
fn nonce_secret(state_dir: &Path, entropy: &dyn Entropy) -> Result<Vec<u8>, StartError> {
    let path = state_dir.join("nonce.key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() == 32
    {
        return Ok(k);
    }
    let mut key = vec![0u8; 32];
    entropy.fill(&mut key).map_err(|_| StartError::Entropy)?;
    std::fs::create_dir_all(state_dir).map_err(|e| StartError::file(state_dir, e))?;
    std::fs::write(&path, &key).map_err(|e| StartError::file(&path, e))?;
    Ok(key)
}

/// The channel files the dataplane made, in worker order.
fn ring_files(dir: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|i| rvoip_dataplane::engine::sip::ring_path(dir, i))
        .take_while(|p| p.exists())
        .collect()
}

/// Holds the control-plane lock: one control plane per ring directory. The
/// kernel drops the lock when the process dies, `kill -9` included.
struct Lock {
    _file: std::fs::File,
}

fn lock(dir: &Path, stop: &AtomicBool) -> Option<Lock> {
    let path = dir.join("controlplane.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()?;
    while !stop.load(Ordering::Relaxed) {
        #[allow(unsafe_code)]
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Some(Lock { _file: file });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the control plane until `stop` is set. Returns its counters.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<CoreCounters, StartError> {
    let dir = config.controlplane.ring_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| StartError::file(&dir, e))?;
    let Some(_lock) = lock(&dir, &stop) else {
        return Ok(CoreCounters::default());
    };
    let files = loop {
        let f = ring_files(&dir);
        if !f.is_empty() {
            break f;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(CoreCounters::default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let channels: Vec<Channel> = files
        .iter()
        .map(|p| Channel::open(p).map_err(|e| StartError::file(p, e)))
        .collect::<Result<_, _>>()?;
    let mut core = core_from_config(config)?;
    let mut cdrs = None;
    if config.node.mode == Mode::B2bua {
        let (b2b, writer) = b2bua_from_config(config, &dir)?;
        tracing::info!(
            recovered = b2b.calls(),
            trunks = b2b.policy.trunks.len(),
            "B2BUA ready"
        );
        core.set_b2bua(b2b);
        cdrs = writer;
    }
    tracing::info!(
        channels = channels.len(),
        registrations = core.registrar().location.count(),
        "control plane attached"
    );
    let mut consumers: Vec<_> = channels
        .iter()
        .map(|c| c.consumer(Direction::ToControlPlane))
        .collect();
    let mut producers: Vec<_> = channels
        .iter()
        .map(|c| c.producer(Direction::ToDataplane))
        .collect();
    let start = Instant::now();
    let mut last_beat = Instant::now() - Duration::from_secs(1);
    let mut dropped = 0u64;
    let batch = Duration::from_micros(u64::from(config.controlplane.batch_wait_us));
    let mut last_traffic = Instant::now() - rvoip_dataplane::shm::BUSY_SPELL;
    let mut board: Option<LoadBoard> = None;
    while !stop.load(Ordering::Relaxed) {
        if last_beat.elapsed() >= Duration::from_millis(100) {
            for c in &channels {
                c.heartbeat();
            }
            last_beat = Instant::now();
            if board.is_none() {
                board = LoadBoard::open(&dir).ok();
            }
        }
        let now = start.elapsed().as_millis() as u64;
        let unix = unix_ms();
        // What admission of new calls goes by: the media engine's load as
        // the dataplane last published it (older than 3 s counts as
        // unknown), and the messages still waiting for this process.
        core.set_load(Load {
            media: board
                .as_ref()
                .and_then(LoadBoard::read)
                .filter(|(_, at)| unix.saturating_sub(*at) <= 3_000)
                .map(|(m, _)| m),
            sip_backlog: channels
                .iter()
                .map(|c| c.stats(Direction::ToControlPlane).used_slots)
                .sum::<u64>()
                .min(u64::from(u32::MAX)) as u32,
        });
        let mut handled = 0;
        for c in consumers.iter_mut() {
            while let Some(r) = c.peek() {
                let meta = SipMeta::decode(r.meta);
                let inb = Inbound {
                    bytes: r.payload,
                    transport: meta.transport,
                    local: meta.local,
                    remote: meta.remote,
                    conn: meta.conn,
                };
                core.on_message(now, unix, inb);
                c.advance();
                handled += 1;
                if handled >= 1024 {
                    break;
                }
            }
        }
        core.poll_media(now, unix);
        core.on_timer(now);
        if let Err(e) = core.flush(now) {
            tracing::error!(error = %e, "registrations not stored");
        }
        while let Some(cdr) = core.poll_cdr() {
            if let Some(w) = cdrs.as_mut() {
                w.write(cdr);
            }
        }
        while let Some(out) = core.poll_outbound() {
            let n = producers.len();
            let ring = match (out.transport, out.conn) {
                // A stream connection lives in the worker that owns it.
                (Transport::Tcp, Some(conn)) if conn != 0 => (conn >> 24) as usize % n,
                _ => dest_ring(out.dest, n),
            };
            let meta = SipMeta {
                transport: out.transport,
                local: out.local,
                remote: out.dest,
                conn: out.conn.unwrap_or(0),
            };
            if producers[ring].push(0, &meta.encode(), &out.bytes).is_err() {
                dropped += 1;
            }
        }
        if handled > 0 {
            last_traffic = Instant::now();
        } else {
            let now = start.elapsed().as_millis() as u64;
            let wait = core
                .next_deadline()
                .map_or(100, |d| d.saturating_sub(now))
                .clamp(1, 100);
            if core.media_pending() {
                // Replies to media orders come on the order channel: look
                // again shortly.
                std::thread::sleep(
                    batch.clamp(Duration::from_micros(50), Duration::from_micros(500)),
                );
            } else if !batch.is_zero() && last_traffic.elapsed() < rvoip_dataplane::shm::BUSY_SPELL
            {
                // Traffic is flowing: look again after one batch window
                // rather than have every message wake us.
                std::thread::sleep(batch.min(Duration::from_millis(wait)));
            } else {
                let refs: Vec<_> = consumers.iter().collect();
                wait_any(&refs, Duration::from_millis(wait));
            }
        }
    }
    // Calls that ended just now wait for the relay's totals before their
    // records are written: give the replies a moment.
    let until = Instant::now() + Duration::from_millis(500);
    while core.media_pending() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
        let now = start.elapsed().as_millis() as u64;
        core.poll_media(now, unix_ms());
        while let Some(cdr) = core.poll_cdr() {
            if let Some(w) = cdrs.as_mut() {
                w.write(cdr);
            }
        }
    }
    if let Some(b) = core.b2bua() {
        let c = b.counters;
        let p = b.policy.counters;
        tracing::info!(
            calls = c.calls,
            answered = c.answered,
            ended = c.ended,
            failovers = c.failovers,
            media_errors = c.media_errors,
            session_expired = c.session_expired,
            recovered = c.recovered,
            acl_rejected = p.acl_rejected,
            banned_drops = p.banned_drops,
            bans = p.bans,
            source_limited = p.source_limited,
            trunk_limited = p.trunk_limited,
            unrouted = p.unrouted,
            "B2BUA counters"
        );
    }
    if let Some(mut w) = cdrs {
        let n = w.finish();
        tracing::info!(written = n, dropped = w.dropped, path = %w.path.display(), "CDRs");
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "outbound messages dropped: rings to the dataplane were full"
        );
    }
    Ok(core.counters())
}

fn dest_ring(dest: SocketAddr, n: usize) -> usize {
    let h = match dest.ip() {
        std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => (u128::from(a) as u64) ^ ((u128::from(a) >> 64) as u64),
    };
    ((h ^ u64::from(dest.port())) % n.max(1) as u64) as usize
}
