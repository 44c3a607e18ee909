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
    AuthPolicy, CoreConfig, CoreCounters, Inbound, Load, OverloadConfig, Route, SipCore,
};
use crate::ops::Ops;
use crate::ops::ctl::{Asked, Request};
use crate::ops::metrics::{Histograms, RingRow, SipTally, Snapshot, Way};
use crate::proxy::NextHop;
use crate::registrar::digest::Algorithm;
use crate::registrar::guard::GuardConfig;
use crate::registrar::location::LocationService;
use crate::registrar::{Registrar, RegistrarConfig, Users, UsersError};
use crate::sbc::cdr::CdrWriter;
use crate::sbc::journal::Journal;
use crate::sbc::media::ShmOrders;
use crate::sbc::policy::{Policy, PolicyError};
use crate::transaction::Millis;
use rvoip_dataplane::shm::load::LoadBoard;
use serde_json::{Value, json};

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
    /// The resolver cannot start (no usable name server configuration).
    Dns(String),
    /// The ops thread cannot start.
    Ops(String),
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
            StartError::Dns(e) => write!(f, "dns: {e}"),
            StartError::Ops(e) => write!(f, "ops: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The SIP core described by `config`.
pub fn core_from_config(config: &Config) -> Result<SipCore, StartError> {
    let mut cores = cores_from_config(config, 1)?;
    cores.pop().ok_or(StartError::Entropy)
}

/// The SIP cores of `shards` control-plane shards described by `config`:
/// each owns its transactions and dialogs; they share one registrar (the
/// location store) and one password-guessing guard, and hold the same
/// users and nonce key (a nonce one shard made is good at another).
pub fn cores_from_config(config: &Config, shards: usize) -> Result<Vec<SipCore>, StartError> {
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
    let routes = routes_from_config(config)?;
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
        routes,
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
        overload: overload_from_config(config),
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
        dns: config.dns.clone(),
        ..CoreConfig::default()
    };
    let entropy = SystemEntropy::new();
    let secret = nonce_secret(&state_dir, &entropy)?;
    let mut cores: Vec<SipCore> = Vec::with_capacity(shards.max(1));
    for _ in 0..shards.max(1) {
        let mut core = SipCore::new(
            core_config.clone(),
            registrar.clone(),
            users.clone(),
            &secret,
            &entropy,
        );
        if let Some(first) = cores.first() {
            core.share_guard(first);
        }
        cores.push(core);
    }
    Ok(cores)
}

/// The static routes of `[[proxy.routes]]`.
fn routes_from_config(config: &Config) -> Result<Vec<Route>, StartError> {
    let mut routes = Vec::new();
    for (i, r) in config.proxy.routes.iter().enumerate() {
        // The configuration's check made sure each route has one next hop.
        let target = match (&r.uri, r.target) {
            (Some(u), _) => NextHop::Name(
                crate::dns::SipName::parse(u)
                    .map_err(|e| StartError::Dns(format!("proxy.routes[{i}].uri {u}: {e}")))?,
            ),
            (None, Some(a)) => NextHop::Address(a),
            (None, None) => continue,
        };
        routes.push(Route {
            user_prefix: r.user_prefix.clone(),
            domain: r.domain.clone(),
            target,
            transport: r.transport,
        });
    }
    Ok(routes)
}

/// The limits of `[overload]`.
fn overload_from_config(config: &Config) -> OverloadConfig {
    OverloadConfig {
        enabled: config.overload.enabled,
        media_busy_permille: config.overload.media_busy_pct * 10,
        media_packets_per_sec: config.overload.media_packets_per_sec,
        sip_backlog: config.overload.sip_backlog,
        retry_after_secs: config.overload.retry_after_secs,
    }
}

/// Reads the configuration file again and applies what can change while
/// calls are up: realms, trunks, SBC routes, numbering and flood limits
/// (the policy), proxy routes, the users file, overload limits and the
/// log level. Anything else that differs refuses the whole reload, naming
/// it. Returns what was reloaded.
fn reload(current: &mut Config, core: &mut SipCore, hooks: &Hooks) -> Result<Vec<String>, String> {
    let new = Config::load(&current.source).map_err(|e| e.to_string())?;
    new.check_host().map_err(|e| e.to_string())?;
    let mut fixed = Vec::new();
    let mut differs = |name: &str, same: bool| {
        if !same {
            fixed.push(name.to_string());
        }
    };
    differs("node", new.node == current.node);
    differs("sip", new.sip == current.sip);
    differs("dataplane", new.dataplane == current.dataplane);
    differs("media", new.media == current.media);
    differs("ng", new.ng == current.ng);
    differs("controlplane", new.controlplane == current.controlplane);
    differs("metrics", new.metrics == current.metrics);
    differs("recording", new.recording == current.recording);
    differs("mediaserver", new.mediaserver == current.mediaserver);
    differs("dns", new.dns == current.dns);
    differs("capture", new.capture == current.capture);
    differs("tls", new.tls == current.tls);
    let (a, b) = (&new.registrar, &current.registrar);
    differs(
        "registrar (but users_file)",
        a.auth == b.auth
            && a.min_expires == b.min_expires
            && a.max_expires == b.max_expires
            && a.default_expires == b.default_expires
            && a.nonce_lifetime_secs == b.nonce_lifetime_secs
            && a.digest_algorithms == b.digest_algorithms
            && a.auth_failures_before_ban == b.auth_failures_before_ban
            && a.auth_failure_window_secs == b.auth_failure_window_secs
            && a.auth_ban_secs == b.auth_ban_secs,
    );
    let (a, b) = (&new.sbc, &current.sbc);
    differs(
        "sbc.cdr_file, session timer, refer or health interval",
        a.cdr_file == b.cdr_file
            && a.session_expires_secs == b.session_expires_secs
            && a.min_se_secs == b.min_se_secs
            && a.refer == b.refer
            && a.health_interval_secs == b.health_interval_secs,
    );
    let (a, b) = (&new.proxy, &current.proxy);
    differs(
        "proxy (but routes)",
        a.record_route == b.record_route
            && a.stateful == b.stateful
            && a.trusted_sources == b.trusted_sources,
    );
    if !fixed.is_empty() {
        return Err(format!(
            "cannot change while running (restart to change them): {}",
            fixed.join(", ")
        ));
    }
    let users = match &new.registrar.users_file {
        Some(f) => {
            Users::load(&new.resolve(f)).map_err(|e| format!("registrar.users_file: {e}"))?
        }
        None => Users::default(),
    };
    let routes = routes_from_config(&new).map_err(|e| e.to_string())?;
    let policy = if new.node.mode == Mode::B2bua {
        let mut p = Policy::from_config(&new).map_err(|e| format!("sbc: {e}"))?;
        p.seed(1);
        Some(p)
    } else {
        None
    };
    core.reload(users, routes, overload_from_config(&new), policy)?;
    let mut changed = vec!["users".to_string()];
    for (name, same) in [
        ("realms", new.realms == current.realms),
        ("trunks", new.trunks == current.trunks),
        ("sbc", new.sbc == current.sbc),
        ("proxy.routes", new.proxy.routes == current.proxy.routes),
        ("overload", new.overload == current.overload),
        ("log", new.log == current.log),
    ] {
        if !same {
            changed.push(name.to_string());
        }
    }
    if new.log != current.log
        && let Some(set) = &hooks.set_log_level
    {
        set(&new.log.level)?;
    }
    *current = new;
    Ok(changed)
}

/// ctl requests being carried out, and the drain.
#[derive(Debug, Default)]
struct Ctl {
    next: u64,
    /// `calls`/`call` requests waiting for the relay's figures: where the
    /// answer goes, and the Call-ID asked for (`call`).
    waiting: std::collections::HashMap<u64, (std::sync::mpsc::SyncSender<Value>, Option<String>)>,
    /// `capture` requests waiting for the relay: where the answer goes,
    /// and the answer so far.
    capturing: std::collections::HashMap<u64, (std::sync::mpsc::SyncSender<Value>, Value)>,
    /// Draining since (control-plane ms), until (none: until idle).
    drain: Option<(Millis, Option<Millis>)>,
    /// The drain finished (the appliance was told to stop).
    drained: bool,
}

impl Ctl {
    fn take(
        &mut self,
        asked: Asked,
        (now, unix): (Millis, u64),
        core: &mut SipCore,
        config: &mut Config,
        hooks: &Hooks,
        taps: &mut crate::ops::pcap::Taps,
    ) {
        let reply = |v: Value| {
            let _ = asked.reply.try_send(v);
        };
        let fail = |e: String| json!({"ok": false, "error": e});
        match asked.request {
            Request::Calls | Request::Call { .. } => {
                self.next += 1;
                let only = match &asked.request {
                    Request::Call { id } => Some(id.clone()),
                    _ => None,
                };
                if core.inspect(now, unix, self.next, only.as_deref()) {
                    self.waiting.insert(self.next, (asked.reply, only));
                } else {
                    reply(fail(
                        "only the B2BUA holds calls: this node is a proxy".into(),
                    ));
                }
            }
            Request::Capture { id, stop, seconds } => {
                let stem = rvoip_dataplane::engine::media::recorder::file_stem(&id);
                let file = config.pcap_dir().join(format!("{stem}.pcap"));
                // The file and its header first: the relay appends to it.
                if !stop
                    && let Err(e) = rvoip_dataplane::engine::media::capturer::open_for_append(&file)
                {
                    reply(fail(format!("{}: {e}", file.display())));
                    return;
                }
                self.next += 1;
                match core.capture(now, unix, self.next, &id, file.clone(), !stop) {
                    Err(e) => reply(fail(e)),
                    Ok(ids) => {
                        if stop {
                            taps.stop(&file);
                        } else if let Err(e) =
                            taps.start(&file, &ids, seconds.map(|s| now + s * 1000))
                        {
                            reply(fail(format!("{}: {e}", file.display())));
                            return;
                        }
                        let v = json!({"ok": true, "file": file, "call_ids": ids, "stopped": stop});
                        self.capturing.insert(self.next, (asked.reply, v));
                    }
                }
            }
            Request::Hangup { id } => reply(match core.hang_up(now, unix, &id) {
                Ok(()) => json!({"ok": true, "hung_up": id}),
                Err(e) => fail(e),
            }),
            Request::Drain { deadline_secs } => {
                core.set_draining(true);
                let until = deadline_secs.map(|s| now + s * 1000);
                self.drain = Some((now, until));
                tracing::warn!(calls = core.busy(), deadline_secs = ?deadline_secs, "draining: no new calls; stopping once the calls have ended");
                reply(
                    json!({"ok": true, "draining": true, "calls": core.busy(), "deadline_secs": deadline_secs}),
                );
            }
            Request::Reload => reply(match reload(config, core, hooks) {
                Ok(changed) => {
                    tracing::info!(reloaded = ?changed, "configuration reloaded");
                    json!({"ok": true, "reloaded": changed})
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reload refused");
                    fail(e)
                }
            }),
            Request::LogLevel { level } => reply(match &hooks.set_log_level {
                Some(set) => match set(&level) {
                    Ok(()) => {
                        tracing::info!(level = %level, "log level changed");
                        json!({"ok": true, "level": level})
                    }
                    Err(e) => fail(e),
                },
                None => fail("this process cannot change its log level".into()),
            }),
            Request::Counters => reply(fail("counters are answered by the ops thread".into())),
        }
    }

    /// The relay's answer to capture request `id`.
    fn captured(&mut self, id: u64, r: Result<(), String>) {
        let Some((tx, mut v)) = self.capturing.remove(&id) else {
            return;
        };
        match r {
            Ok(()) => v["media"] = json!(true),
            Err(e) => {
                v["media"] = json!(false);
                v["media_error"] = json!(e);
            }
        }
        let _ = tx.try_send(v);
    }

    /// The answer to inspection `id`.
    fn answer(&mut self, id: u64, views: Vec<crate::b2bua::ctl::CallView>) {
        let Some((tx, only)) = self.waiting.remove(&id) else {
            return;
        };
        let v = match only {
            None => json!({"ok": true, "calls": views}),
            Some(call) => match views.into_iter().next() {
                Some(v) => json!({"ok": true, "call": v}),
                None => json!({"ok": false, "error": format!("no call has the Call-ID {call}")}),
            },
        };
        let _ = tx.try_send(v);
    }

    /// Whether a drain has just finished: no call left, or its deadline
    /// passed (the calls still up are hung up first).
    fn drained(&mut self, core: &mut SipCore, now: Millis, unix: u64) -> bool {
        let Some((since, until)) = self.drain else {
            return false;
        };
        if self.drained {
            return false;
        }
        let late = until.is_some_and(|u| now >= u);
        if core.busy() > 0 && !late {
            return false;
        }
        if late {
            let n = core.hang_up_all(now, unix);
            tracing::warn!(
                hung_up = n,
                "drain deadline reached: the calls still up were ended"
            );
        }
        tracing::warn!(after_ms = now - since, "drained: stopping");
        self.drained = true;
        true
    }
}

/// Tells the supervising `rvoip run` to stop.
fn signal_supervisor(pid: u32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if r != 0 {
        tracing::error!(pid, error = %std::io::Error::last_os_error(), "cannot tell the supervisor to stop");
    }
}

/// What the process around the control plane lends it.
#[derive(Default)]
pub struct Hooks {
    /// Sets the log filter (`rvoip ctl log-level`, a reloaded `[log]`).
    pub set_log_level: Option<crate::ops::logging::SetLevel>,
    /// The supervising `rvoip run`, told to stop (SIGTERM) when a drain
    /// ends, so the whole appliance exits.
    pub supervisor: Option<u32>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("set_log_level", &self.set_log_level.is_some())
            .field("supervisor", &self.supervisor)
            .finish()
    }
}

/// The B2BUA of a `mode = "b2bua"` configuration: policy, media orders
/// over the dataplane's order channel, the dialog journal (established
/// calls come back from it) and the CDR writer.
pub fn b2bua_from_config(
    config: &Config,
    ring_dir: &Path,
) -> Result<(B2b, Option<CdrWriter>), StartError> {
    b2bua_shard_from_config(config, ring_dir, (0, 1), None)
}

/// The B2BUA of control-plane shard `shard.0` of `shard.1`: its own order
/// channel and dialog journal (`dialogs.journal` for shard 0,
/// `dialogs-shardS.journal` for the others), its policy counting in
/// `first`'s load (shard 0's policy: limits hold across the shards). The
/// CDR writer comes with shard 0 (the others share it).
pub fn b2bua_shard_from_config(
    config: &Config,
    ring_dir: &Path,
    (shard, shards): (usize, usize),
    first: Option<&Policy>,
) -> Result<(B2b, Option<CdrWriter>), StartError> {
    let mut policy = Policy::from_config(config).map_err(StartError::Policy)?;
    if let Some(first) = first {
        policy.share_load(first);
    }
    let entropy = SystemEntropy::new();
    let mut seed = [0u8; 8];
    entropy.fill(&mut seed).map_err(|_| StartError::Entropy)?;
    policy.seed(u64::from_le_bytes(seed));
    let orders = loop {
        let path = rvoip_dataplane::engine::ng_shm::shard_orders_path(ring_dir, shard);
        match ShmOrders::open_shard(ring_dir, shard, &entropy) {
            Ok(o) => break o,
            Err(e) if !path.exists() => {
                tracing::debug!(error = %e, "waiting for the media order channel");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(StartError::file(&path, e)),
        }
    };
    let state_dir = config.resolve(&config.node.state_dir);
    let path = state_dir.join(match shard {
        0 => "dialogs.journal".to_string(),
        s => format!("dialogs-shard{s}.journal"),
    });
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
    let mut b2b = b2b;
    b2b.set_shard(shard, shards);
    let writer = match &s.cdr_file {
        Some(_) if shard > 0 => None,
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

/// The channel files the dataplane made, by shard then worker; none until
/// every shard's are there.
fn ring_files(dir: &Path, shards: usize) -> Vec<Vec<PathBuf>> {
    let files: Vec<Vec<PathBuf>> = (0..shards)
        .map(|s| {
            (0..)
                .map(|i| rvoip_dataplane::engine::sip::shard_ring_path(dir, i, s))
                .take_while(|p| p.exists())
                .collect()
        })
        .collect();
    let workers = files.first().map_or(0, Vec::len);
    if workers == 0 || files.iter().any(|f| f.len() != workers) {
        return Vec::new();
    }
    files
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

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the shards share to act as one control plane: shards 1.. publish
/// their figures here for shard 0 to merge into the metrics, and say when
/// their drain has finished.
struct Board {
    snapshots: std::sync::Mutex<Vec<Option<Snapshot>>>,
    drained: Vec<AtomicBool>,
}

/// One control-plane shard: its core (the transactions and dialogs of the
/// calls whose Call-ID hashes to it), its resolver, and what it counts for
/// the metrics and ctl.
struct Shard {
    index: usize,
    core: SipCore,
    cdrs: Option<CdrWriter>,
    /// ctl requests for this shard (shard 0 routes them).
    inbox: std::sync::mpsc::Receiver<Asked>,
}

/// What every shard's loop reads.
struct Common<'a> {
    config: &'a Config,
    dir: &'a Path,
    stop: &'a AtomicBool,
    hooks: &'a Hooks,
    board: &'a Board,
    /// The shards' common clock: a time one shard gives (a ban's end, a
    /// nonce's age) means the same at another.
    start: Instant,
}

/// What only shard 0 does: the ops thread (metrics, ctl socket, call
/// reports), and routing ctl requests to the shards.
struct Front {
    ops: Ops,
    shards: Vec<std::sync::mpsc::SyncSender<Asked>>,
}

/// Runs the control plane until `stop` is set. Returns its counters.
pub fn run(
    config: &Config,
    stop: Arc<AtomicBool>,
    hooks: Hooks,
) -> Result<CoreCounters, StartError> {
    let dir = config.controlplane.ring_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| StartError::file(&dir, e))?;
    let Some(_lock) = lock(&dir, &stop) else {
        return Ok(CoreCounters::default());
    };
    let shards = config.controlplane.shards.max(1);
    let files = loop {
        let f = ring_files(&dir, shards);
        if !f.is_empty() {
            break f;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(CoreCounters::default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let channels: Vec<Vec<Channel>> = files
        .iter()
        .map(|shard| {
            shard
                .iter()
                .map(|p| Channel::open(p).map_err(|e| StartError::file(p, e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let cores = cores_from_config(config, shards)?;
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| std::sync::mpsc::sync_channel(64))
        .unzip();
    let mut states: Vec<Shard> = Vec::with_capacity(shards);
    for ((index, mut core), inbox) in cores.into_iter().enumerate().zip(inboxes) {
        let mut cdrs = None;
        if config.node.mode == Mode::B2bua {
            let first = states
                .first()
                .and_then(|s| s.core.b2bua())
                .map(|b| &b.policy);
            let (b2b, writer) = b2bua_shard_from_config(config, &dir, (index, shards), first)?;
            tracing::info!(
                recovered = b2b.calls(),
                trunks = b2b.policy.trunks.len(),
                shard = index,
                "B2BUA ready"
            );
            core.set_b2bua(b2b);
            // Shard 0's writer, shared by the others.
            cdrs = match states.first().and_then(|s| s.cdrs.as_ref()) {
                Some(w) => Some(w.share()),
                None => writer,
            };
        }
        states.push(Shard {
            index,
            core,
            cdrs,
            inbox,
        });
    }
    let listen = config.metrics.as_ref().map(|m| m.listen);
    let ops = Ops::start(listen, &dir).or_else(|e| {
        // Signalling matters more than its metrics: carry on without them.
        tracing::error!(error = %e, "cannot serve the metrics: running without them");
        Ops::start(None, &dir)
    });
    let mut ops = ops.map_err(|e| StartError::Ops(e.to_string()))?;
    if let Err(e) = ops.report_to(&config.capture) {
        tracing::error!(error = %e, "cannot send call quality reports");
    }
    if let Some(a) = ops.metrics {
        tracing::info!(address = %a, "metrics at http://{a}/metrics");
    }
    let board = Board {
        snapshots: std::sync::Mutex::new(vec![None; shards]),
        drained: (0..shards).map(|_| AtomicBool::new(false)).collect(),
    };
    let common = Common {
        config,
        dir: &dir,
        stop: &stop,
        hooks: &hooks,
        board: &board,
        start: Instant::now(),
    };
    tracing::info!(
        channels = channels.first().map_or(0, Vec::len),
        shards,
        registrations = states
            .first()
            .map_or(0, |s| s.core.registrar().location.lock().count()),
        "control plane attached"
    );
    // As its own unit (rvoip-controlplane.service): ready, and alive while
    // the loop runs.
    crate::ops::service::ready("control plane attached");
    let front = Front {
        ops,
        shards: senders,
    };
    let mut states = states.into_iter();
    let Some(first) = states.next() else {
        return Ok(CoreCounters::default());
    };
    let (counters, writers) = std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for (state, channels) in states.zip(&channels[1..]) {
            let common = &common;
            let name = format!("cp-shard-{}", state.index);
            match std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || serve(state, channels, common, None))
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a control-plane shard: stopping");
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        let (mut total, w) = serve(first, &channels[0], &common, Some(front));
        // Shard 0 stops on `stop`, as do the others.
        stop.store(true, Ordering::Relaxed);
        let mut writers = vec![w];
        for t in threads {
            if let Ok((c, w)) = t.join() {
                total.add_shard(&c);
                writers.push(w);
            }
        }
        (total, writers)
    });
    // Shard 0's writer last: its thread ends once every share is gone.
    let mut writers = writers.into_iter();
    let first = writers.next().flatten();
    let dropped: u64 = writers
        .flatten()
        .map(|mut w| {
            w.finish();
            w.dropped
        })
        .sum();
    if let Some(mut w) = first {
        let n = w.finish();
        let dropped = w.dropped + dropped;
        tracing::info!(written = n, dropped, path = %w.path.display(), "CDRs");
    }
    Ok(counters)
}

/// Routes a ctl request: one call's to the shard its Call-ID hashes to,
/// the rest to every shard with their answers merged.
fn route(asked: Asked, shards: &[std::sync::mpsc::SyncSender<Asked>]) {
    let one = |id: &str| rvoip_dataplane::sip::shard_of(id.as_bytes(), shards.len());
    let target = match &asked.request {
        Request::Call { id } | Request::Hangup { id } | Request::Capture { id, .. } => {
            Some(one(id))
        }
        Request::LogLevel { .. } | Request::Counters => Some(0),
        Request::Calls | Request::Drain { .. } | Request::Reload => None,
    };
    if let Some(s) = target.or((shards.len() == 1).then_some(0)) {
        if let Some(tx) = shards.get(s)
            && let Err(e) = tx.try_send(asked)
        {
            let asked = match e {
                std::sync::mpsc::TrySendError::Full(a)
                | std::sync::mpsc::TrySendError::Disconnected(a) => a,
            };
            let _ = asked
                .reply
                .try_send(json!({"ok": false, "error": "the control plane is busy: ask again"}));
        }
        return;
    }
    let mut answers = Vec::with_capacity(shards.len());
    for tx in shards {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let copy = Asked {
            request: asked.request.clone(),
            reply,
        };
        if tx.try_send(copy).is_ok() {
            answers.push(answer);
        }
    }
    let spawned = std::thread::Builder::new()
        .name("ctl-merge".into())
        .spawn(move || {
            // Within the client's wait for the answer.
            let wait = crate::ops::ctl::LOOP_TIMEOUT.saturating_sub(Duration::from_secs(1));
            let until = Instant::now() + wait;
            let values: Vec<Value> = answers
                .iter()
                .map(|a| {
                    a.recv_timeout(until.saturating_duration_since(Instant::now()))
                        .unwrap_or_else(|_| json!({"ok": false, "error": "a control-plane shard did not answer"}))
                })
                .collect();
            let _ = asked.reply.try_send(merge_answers(values));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot merge a ctl answer");
    }
}

/// The shards' answers to one request as one: the first refusal, else the
/// first answer with its `calls` joined (a list) or added up (a count).
fn merge_answers(values: Vec<Value>) -> Value {
    if let Some(refusal) = values.iter().find(|v| v["ok"] != json!(true)) {
        return refusal.clone();
    }
    let mut values = values.into_iter();
    let Some(mut merged) = values.next() else {
        return json!({"ok": false, "error": "no control-plane shard answered"});
    };
    for v in values {
        match (&mut merged["calls"], &v["calls"]) {
            (Value::Array(all), Value::Array(more)) => all.extend(more.iter().cloned()),
            (Value::Number(n), Value::Number(m)) => {
                *n = (n.as_u64().unwrap_or(0) + m.as_u64().unwrap_or(0)).into();
            }
            _ => {}
        }
    }
    merged
}

/// One shard's loop, until `stop`: its channels' messages through its
/// core, its timers, its media orders and name lookups, its ctl requests.
/// Shard 0 (with `front`) also serves the ops thread and publishes the
/// merged figures. Returns its counters and its CDR writer.
fn serve(
    shard: Shard,
    channels: &[Channel],
    common: &Common<'_>,
    mut front: Option<Front>,
) -> (CoreCounters, Option<CdrWriter>) {
    let Shard {
        index,
        mut core,
        mut cdrs,
        inbox,
    } = shard;
    let config = common.config;
    let (dir, stop, hooks, start) = (common.dir, common.stop, common.hooks, common.start);
    let mut current = config.clone();
    let resolver = match crate::dns::client::DnsClient::start(&config.dns) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(shard = index, error = %e, "cannot start the resolver: the control plane stops");
            stop.store(true, Ordering::Relaxed);
            return (core.counters(), cdrs);
        }
    };
    let mut sip_tally = SipTally::default();
    let mut histograms = Histograms::default();
    let mut last_snapshot = Instant::now() - Duration::from_secs(1);
    let mut watchdog = crate::ops::service::Watchdog::new();
    let mut consumers = rvoip_dataplane::shm::consumers(channels, Direction::ToControlPlane);
    let mut producers = rvoip_dataplane::shm::producers(channels, Direction::ToDataplane);
    let mut last_beat = Instant::now() - Duration::from_secs(1);
    let mut dropped = 0u64;
    let batch = Duration::from_micros(u64::from(config.controlplane.batch_wait_us));
    let mut last_traffic = Instant::now() - rvoip_dataplane::shm::BUSY_SPELL;
    let mut board: Option<LoadBoard> = None;
    let mut refused = vec![0u64; producers.len()];
    let mut ctl = Ctl::default();
    let mut taps = crate::ops::pcap::Taps::default();
    let mut stopping = false;
    while !stop.load(Ordering::Relaxed) {
        if front.is_some() {
            watchdog.pet();
        }
        if last_beat.elapsed() >= Duration::from_millis(100) {
            for c in channels {
                c.heartbeat();
            }
            last_beat = Instant::now();
            if board.is_none() {
                board = LoadBoard::open(dir).ok();
            }
        }
        let now = start.elapsed().as_millis() as u64;
        let unix = unix_ms();
        // What admission of new calls goes by: the media engine's load as
        // the dataplane last published it (older than 3 s counts as
        // unknown), and the messages still waiting for this shard.
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
                if r.payload.is_empty() {
                    // Not a message: the dataplane could not reach the peer.
                    core.on_unreachable(now, meta.transport, meta.remote);
                    c.advance();
                    continue;
                }
                sip_tally.count(Way::In, r.payload);
                if !taps.is_empty() {
                    let way = (meta.remote, meta.local);
                    taps.message(unix_ns(), meta.transport, way, r.payload);
                }
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
        while let Some(a) = resolver.try_answer() {
            core.on_dns(now, unix, a);
        }
        core.on_timer(now);
        if let Err(e) = core.flush(now) {
            tracing::error!(error = %e, "registrations not stored");
        }
        while let Some(cdr) = core.poll_cdr() {
            if !taps.is_empty() {
                taps.ended(&[&cdr.a_call_id, &cdr.b_call_id], now);
            }
            histograms.observe(&cdr);
            if let Some(f) = front.as_mut() {
                f.ops.report_call(&cdr, unix);
            }
            if let Some(w) = cdrs.as_mut() {
                w.write(cdr);
            }
        }
        while let Some(q) = core.poll_dns() {
            resolver.submit(q);
        }
        while let Some(out) = core.poll_outbound() {
            let n = producers.len();
            let ring = match (out.transport, out.conn) {
                // A stream connection lives in the worker that owns it.
                (t, Some(conn)) if t.reliable() && conn != 0 => (conn >> 24) as usize % n,
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
                refused[ring] += 1;
            } else {
                sip_tally.count(Way::Out, &out.bytes);
                if !taps.is_empty() {
                    let way = (out.local, out.dest);
                    taps.message(unix_ns(), out.transport, way, &out.bytes);
                }
            }
        }
        if let Some(f) = front.as_ref() {
            while let Some(asked) = f.ops.next_request() {
                route(asked, &f.shards);
            }
        }
        while let Ok(asked) = inbox.try_recv() {
            let now = start.elapsed().as_millis() as u64;
            let (core, config) = (&mut core, &mut current);
            ctl.take(asked, (now, unix_ms()), core, config, hooks, &mut taps);
        }
        while let Some((id, views)) = core.poll_inspection() {
            ctl.answer(id, views);
        }
        while let Some((id, r)) = core.poll_capture() {
            ctl.captured(id, r);
        }
        for (file, ids) in taps.tick(now) {
            // Its deadline (the call still up): the relay stops too.
            if let Some(id) = ids.first() {
                let _ = core.capture(now, unix, 0, id, file.clone(), false);
            }
            tracing::info!(file = %file.display(), "capture ended");
        }
        if ctl.drained(&mut core, start.elapsed().as_millis() as u64, unix_ms())
            && let Some(d) = common.board.drained.get(index)
        {
            d.store(true, Ordering::Relaxed);
        }
        if front.is_some()
            && !stopping
            && common
                .board
                .drained
                .iter()
                .all(|d| d.load(Ordering::Relaxed))
        {
            stopping = true;
            match hooks.supervisor {
                // The supervisor stops the whole appliance, this process
                // with it (SIGTERM).
                Some(pid) => signal_supervisor(pid),
                None => stop.store(true, Ordering::Relaxed),
            }
        }
        if last_snapshot.elapsed() >= Duration::from_secs(1) {
            last_snapshot = Instant::now();
            let mut snap = snapshot(
                config,
                &core,
                &sip_tally,
                &histograms,
                ring_rows(channels, &refused),
                start.elapsed(),
                index == 0,
            );
            let mut shared = common
                .board
                .snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match front.as_ref() {
                Some(f) => {
                    for other in shared.iter().skip(1).flatten() {
                        snap.merge(other);
                    }
                    drop(shared);
                    f.ops.publish(snap);
                }
                None => {
                    if let Some(slot) = shared.get_mut(index) {
                        *slot = Some(snap);
                    }
                }
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
            if core.media_pending() || core.dns_pending() {
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
                // Shard 0 looks at the ops thread's requests at least every
                // 100 ms, the others at theirs as often.
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
        let unix = unix_ms();
        core.poll_media(now, unix);
        while let Some(cdr) = core.poll_cdr() {
            if let Some(f) = front.as_mut() {
                f.ops.report_call(&cdr, unix);
            }
            if let Some(w) = cdrs.as_mut() {
                w.write(cdr);
            }
        }
    }
    if let Some(b) = core.b2bua() {
        let c = b.counters;
        let p = b.policy.counters;
        let d = core.dns_counters();
        tracing::info!(
            shard = index,
            queries = d.queries,
            hits = d.hits,
            failures = d.failures,
            busy = d.busy,
            "DNS counters"
        );
        tracing::info!(
            shard = index,
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
    if dropped > 0 {
        tracing::warn!(
            shard = index,
            dropped,
            "outbound messages dropped: rings to the dataplane were full"
        );
    }
    let c = core.counters();
    tracing::info!(
        shard = index,
        requests = c.requests,
        responses = c.responses,
        forwarded = c.forwarded,
        registrations = c.registrations,
        "control-plane shard stopped"
    );
    (c, cdrs)
}

/// The control plane's counters for the metrics, as of now.
fn snapshot(
    config: &Config,
    core: &SipCore,
    sip: &SipTally,
    histograms: &Histograms,
    rings: Vec<RingRow>,
    uptime: Duration,
    owns_shared: bool,
) -> Snapshot {
    let c = core.counters();
    // What the shards share (the guard, the registrar) is counted by
    // shard 0 alone.
    let shared = |v: u64| if owns_shared { v } else { 0 };
    let mut drops = vec![
        ("malformed", c.malformed),
        ("relay_denied", c.relay_denied),
        ("overload_refused", c.overload_refused),
        ("drain_refused", c.drain_refused),
        ("auth_refused", shared(c.auth_refused)),
        ("unresolved", c.unresolved),
        ("unroutable_responses", c.unroutable_responses),
    ];
    let mut calls = Vec::new();
    if let Some(b) = core.b2bua() {
        let p = b.policy.counters;
        drops.extend([
            ("acl_rejected", p.acl_rejected),
            ("banned", p.banned_drops),
            ("source_limited", p.source_limited),
            ("trunk_limited", p.trunk_limited),
            ("unrouted", p.unrouted),
            ("media_errors", b.counters.media_errors),
        ]);
        let name = |v: Option<&String>| v.cloned().unwrap_or_else(|| "none".into());
        for (realm, trunk, counts) in b.tally.rows() {
            if counts.started == 0 {
                continue;
            }
            calls.push((
                name(b.policy.realms.get(realm).map(|r| &r.name)),
                name(trunk.and_then(|t| b.policy.trunks.get(t)).map(|t| &t.name)),
                *counts,
            ));
        }
    }
    let d = core.dns_counters();
    Snapshot {
        node: config.node.name.clone(),
        sip: sip.clone(),
        calls,
        histograms: histograms.clone(),
        drops,
        rings,
        registrations: shared(core.registrar().location.lock().count() as u64),
        dns: vec![
            ("cache_hit", d.hits),
            ("query", d.queries),
            ("failure", d.failures),
            ("busy", d.busy),
        ],
        uptime_s: uptime.as_secs_f64(),
    }
}

/// How full a shard's channels are, by worker.
fn ring_rows(channels: &[Channel], refused: &[u64]) -> Vec<RingRow> {
    channels
        .iter()
        .zip(refused)
        .map(|(ch, r)| RingRow {
            to_control_plane: ch.stats(Direction::ToControlPlane).used_slots,
            to_dataplane: ch.stats(Direction::ToDataplane).used_slots,
            refused: *r,
        })
        .collect()
}

fn dest_ring(dest: SocketAddr, n: usize) -> usize {
    let h = match dest.ip() {
        std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => (u128::from(a) as u64) ^ ((u128::from(a) >> 64) as u64),
    };
    ((h ^ u64::from(dest.port())) % n.max(1) as u64) as usize
}
