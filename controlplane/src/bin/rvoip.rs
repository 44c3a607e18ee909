//! The `rvoip` command: the appliance and its tools.
// A binary is an I/O shell: it reads the clock for the cores it drives.
#![allow(clippy::disallowed_methods)]

use rvoip_controlplane::ops::ctl::Request;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use rvoip_controlplane::admission::Role;
use rvoip_controlplane::lint::{FramingChoice, LintOptions, json_line, judge, text_line};
use rvoip_dataplane::engine::media::{DriverKind, MediaEngine, MediaEngineConfig, Polling};
use rvoip_dataplane::engine::ng_shm::NgOrders;
use rvoip_dataplane::engine::sip::{HepConfig, SipPlane, SipPlaneConfig, StreamLimits};
use rvoip_dataplane::media::relay::{LatchMode, RelayConfig};
use rvoip_dataplane::ng::NgServer;
use rvoip_dataplane::shm::load::LoadBoard;
use rvoip_dataplane::shm::stats::{Kind, StatsBoard};
use rvoip_dataplane::sip::Limits;
use rvoip_tuning::Config;
use rvoip_tuning::config::{Cores, IoDriver, Latch};

// mimalloc: the control plane allocates per transaction and per message;
// glibc malloc's chunk coalescing showed as the largest single cost under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration error (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit status for a role that is not available yet (sysexits EX_UNAVAILABLE).
#[allow(dead_code)]
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser, Debug)]
#[command(
    name = "rvoip",
    version,
    about = "Carrier-grade SIP/RTP appliance: SBC, proxy, B2BUA, registrar, media relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance: the dataplane, supervising the control plane.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run only the dataplane role (for systemd units).
    Dataplane {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run only the control-plane role (for systemd units).
    Controlplane {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print what it sets up.
    ConfigCheck {
        /// Configuration file.
        config: PathBuf,
    },
    /// SIP tools.
    Sip {
        #[command(subcommand)]
        command: SipCommand,
    },
    /// Talk to the running appliance over its control socket.
    Ctl {
        /// Configuration file of the running appliance.
        #[arg(long, short, default_value = "config/rvoip.toml")]
        config: PathBuf,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Request,
    },
    /// Host checks and per-core plans (docs/TUNING.md).
    Tune {
        /// Check the host: each item with its status and the fix.
        #[arg(long)]
        check: bool,
        /// The per-core assignment and its configuration fragment.
        #[arg(long)]
        plan: bool,
        /// Apply sysctls, interrupt affinity, RPS, governor and THP.
        #[arg(long)]
        apply: bool,
        /// With --apply: print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SipCommand {
    /// Parse SIP messages from files and say whether they are well-formed and
    /// what rvoip would answer. Exit status 1 when any file is invalid.
    Lint {
        /// One JSON object per line: {"file","verdict","status","reason"}.
        #[arg(long)]
        json: bool,
        /// Whose answer is reported.
        #[arg(long, value_enum, default_value_t = RoleArg::Sbc)]
        role: RoleArg,
        /// How file bytes are framed.
        #[arg(long, value_enum, default_value_t = FramingArg::Auto)]
        framing: FramingArg,
        /// Take parser limits from this configuration file's `[sip]` section.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Largest message in octets.
        #[arg(long)]
        max_message_size: Option<usize>,
        /// Longest header line in octets.
        #[arg(long)]
        max_line_length: Option<usize>,
        /// Most header fields.
        #[arg(long)]
        max_headers: Option<usize>,
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    /// B2BUA/SBC: UAS of the incoming leg, registrar, forwarder.
    Sbc,
    /// Proxy: forwards, reads no bodies.
    Proxy,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FramingArg {
    /// CRLF files are datagrams, LF-only files are text.
    Auto,
    /// A UDP datagram.
    Datagram,
    /// A TCP stream frame.
    Stream,
    /// Text (bare LF allowed, body is the rest of the file).
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config, true),
        Command::Dataplane { config } => run(&config, false),
        Command::Controlplane { config } => run_controlplane(&config),
        Command::ConfigCheck { config } => match load(&config) {
            Err(code) => code,
            Ok(c) => {
                // A closed stdout (`| head`) is not an error of the check.
                let mut text = format!("{}: ok\n  mode: {:?}\n", config.display(), c.node.mode);
                for l in &c.sip.listen {
                    text.push_str(&format!(
                        "  sip listener: {:?} {}\n",
                        l.transport, l.address
                    ));
                }
                text.push_str(&format!(
                    "  media: {} ports {}-{}\n",
                    c.media.address, c.media.port_min, c.media.port_max
                ));
                if let Some(ng) = &c.ng {
                    text.push_str(&format!("  ng: {}\n", ng.listen));
                }
                if let Some(m) = &c.metrics {
                    text.push_str(&format!("  metrics: http://{}/metrics\n", m.listen));
                }
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
                ExitCode::SUCCESS
            }
        },
        Command::Sip {
            command:
                SipCommand::Lint {
                    json,
                    role,
                    framing,
                    config,
                    max_message_size,
                    max_line_length,
                    max_headers,
                    files,
                },
        } => {
            let mut limits = Limits::default();
            if let Some(path) = config {
                match load(&path) {
                    Ok(c) => {
                        limits.max_message_size = c.sip.max_message_size;
                        limits.max_line_length = c.sip.max_line_length;
                        limits.max_headers = c.sip.max_headers;
                    }
                    Err(code) => return code,
                }
            }
            limits.max_message_size = max_message_size.unwrap_or(limits.max_message_size);
            limits.max_line_length = max_line_length.unwrap_or(limits.max_line_length);
            limits.max_headers = max_headers.unwrap_or(limits.max_headers);
            let opts = LintOptions {
                role: match role {
                    RoleArg::Sbc => Role::Sbc,
                    RoleArg::Proxy => Role::Proxy,
                },
                framing: match framing {
                    FramingArg::Auto => FramingChoice::Auto,
                    FramingArg::Datagram => FramingChoice::Datagram,
                    FramingArg::Stream => FramingChoice::Stream,
                    FramingArg::Text => FramingChoice::Text,
                },
                limits,
                ..LintOptions::default()
            };
            lint(&files, json, &opts)
        }
        Command::Ctl {
            config,
            json,
            command,
        } => ctl(&config, command, json),
        Command::Tune {
            check,
            plan,
            apply,
            dry_run,
            json,
        } => tune(check, plan, apply, dry_run, json),
    }
}

/// What this host is, as `rvoip tune` reads it: `/proc` and `/sys`, then
/// what only a program can tell (limits, /dev/shm, io_uring and AF_XDP
/// probes, `ethtool`).
fn host_facts() -> rvoip_tuning::host::Facts {
    let mut f = rvoip_tuning::host::Facts::read(Path::new("/"));
    let limit = |r| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit we own.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::getrlimit(r, &mut l) } == 0;
        ok.then_some((l.rlim_cur, l.rlim_max))
    };
    f.nofile = limit(libc::RLIMIT_NOFILE);
    f.memlock = limit(libc::RLIMIT_MEMLOCK);
    // SAFETY: statvfs writes one struct we own; the path is a C string.
    #[allow(unsafe_code)]
    {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) } == 0 {
            f.shm_bytes = Some(st.f_blocks.saturating_mul(st.f_frsize));
        }
        // AF_XDP: a socket of the family can be made (root) or the kernel
        // says it has no such family.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
            f.xdp_sockets = Some(true);
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAFNOSUPPORT) {
            f.xdp_sockets = Some(false);
        }
    }
    f.io_uring =
        Some(rvoip_dataplane::engine::media::io_uring_available().map_err(|e| e.to_string()));
    let names: Vec<String> = f.nics.iter().map(|n| n.name.clone()).collect();
    for n in names {
        let run = |flag: &str| {
            std::process::Command::new("ethtool")
                .args([flag, &n])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        if let (Some(g), Some(k)) = (run("-g"), run("-k")) {
            f.add_ethtool(&n, &g, &k);
        }
    }
    f
}

/// `rvoip tune`.
fn tune(check: bool, plan: bool, apply: bool, dry_run: bool, json: bool) -> ExitCode {
    use rvoip_tuning::host::{self, Status};
    let f = host_facts();
    let mut out = String::new();
    let mut code = ExitCode::SUCCESS;
    if !(check || plan || apply) {
        eprintln!("rvoip tune: say --check, --plan or --apply [--dry-run]");
        return ExitCode::from(2);
    }
    if check {
        let checks = host::checks(&f);
        if checks.iter().any(|c| c.status == Status::Fail) {
            code = ExitCode::FAILURE;
        }
        if json {
            out.push_str(&serde_json::json!({ "checks": checks }).to_string());
            out.push('\n');
        } else {
            for c in &checks {
                let status = match c.status {
                    Status::Ok => "ok",
                    Status::Warn => "WARN",
                    Status::Fail => "FAIL",
                };
                out.push_str(&format!("{status:<4}  {:<28} {}\n", c.name, c.detail));
                if !c.fix.is_empty() {
                    out.push_str(&format!("      {:<28} fix: {}\n", "", c.fix));
                }
            }
        }
    }
    if plan {
        let p = host::plan(&f);
        if json {
            out.push_str(&serde_json::json!({ "plan": p }).to_string());
            out.push('\n');
        } else {
            out.push_str(&format!(
                "housekeeping: {}\ncontrol plane: {}\ndataplane workers: {}\nNIC interrupts: {}\nkernel command line: {}\n\n{}\n{}",
                host::write_list(&p.housekeeping),
                host::write_list(&p.control_plane),
                host::write_list(&p.workers),
                host::write_list(&p.irqs),
                p.cmdline,
                p.config,
                p.systemd
            ));
        }
    }
    if apply {
        let actions = host::actions(&f);
        if actions.is_empty() {
            out.push_str("nothing to apply: the host is as the plan wants it\n");
        }
        for a in &actions {
            if dry_run {
                out.push_str(&format!("{}    # {}\n", a.command(), a.why));
            } else {
                match std::fs::write(&a.path, &a.value) {
                    Ok(()) => out.push_str(&format!("done: {}\n", a.command())),
                    Err(e) => {
                        code = ExitCode::FAILURE;
                        out.push_str(&format!("FAILED: {} ({e})\n", a.command()));
                    }
                }
            }
        }
        out.push_str(&format!(
            "# not applied (needs a reboot): kernel command line {}\n",
            host::plan(&f).cmdline
        ));
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    code
}

/// Where the control plane finds the supervising `rvoip run`'s process id.
const SUPERVISOR_ENV: &str = "RVOIP_SUPERVISOR_PID";

/// `rvoip ctl`: one request to the running appliance of `config`, its
/// answer printed (JSON with `--json`, else readable lines). Exit status 1
/// when the appliance refused, 69 when it cannot be reached.
fn ctl(config: &Path, request: Request, json: bool) -> ExitCode {
    let config = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = rvoip_controlplane::ops::ctl::socket_path(&config.controlplane.ring_dir);
    let answer = match rvoip_controlplane::ops::ctl::ask(&path, &request, Duration::from_secs(15)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rvoip ctl: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let ok = answer["ok"].as_bool() == Some(true);
    let text = if json {
        format!("{answer}\n")
    } else {
        readable(&request, &answer)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// An answer as lines for a person.
fn readable(request: &Request, a: &serde_json::Value) -> String {
    if a["ok"].as_bool() != Some(true) {
        return format!("error: {}\n", a["error"].as_str().unwrap_or("?"));
    }
    let call_line = |c: &serde_json::Value| {
        format!(
            "{}  {} -> {}  realm {} trunk {} peer {}  {}  codecs A {} B {}  packets from A {} from B {} lost {}\n",
            c["a_call_id"].as_str().unwrap_or(""),
            c["from"].as_str().unwrap_or(""),
            c["to"].as_str().unwrap_or(""),
            c["realm"].as_str().unwrap_or(""),
            c["trunk"].as_str().unwrap_or("-"),
            c["peer"].as_str().unwrap_or("-"),
            c["state"].as_str().unwrap_or(""),
            c["codecs"][0].as_str().unwrap_or("-"),
            c["codecs"][1].as_str().unwrap_or("-"),
            c["packets_from_a"],
            c["packets_from_b"],
            c["lost"],
        )
    };
    match request {
        Request::Calls => {
            let calls = a["calls"].as_array().cloned().unwrap_or_default();
            let mut out = format!("{} calls\n", calls.len());
            for c in &calls {
                out.push_str(&call_line(c));
            }
            out
        }
        Request::Call { .. } => {
            let c = &a["call"];
            format!(
                "{}leg B {}\nstarted {} answered {}\n",
                call_line(c),
                c["b_call_id"].as_str().unwrap_or("-"),
                c["start_ms"],
                c["answer_ms"]
            )
        }
        Request::Capture { stop: false, .. } => format!(
            "capturing {} to {} (media: {})\n",
            a["call_ids"]
                .as_array()
                .map(|ids| ids
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "))
                .unwrap_or_default(),
            a["file"].as_str().unwrap_or(""),
            match a["media_error"].as_str() {
                Some(e) => format!("not captured: {e}"),
                None => "yes".into(),
            }
        ),
        _ => match serde_json::to_string_pretty(a) {
            Ok(t) => format!("{t}\n"),
            Err(_) => format!("{a}\n"),
        },
    }
}

fn lint(files: &[PathBuf], json: bool, opts: &LintOptions) -> ExitCode {
    let mut any_invalid = false;
    let mut io_error = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in files {
        let name = path.display().to_string();
        let line = match std::fs::read(path) {
            Ok(bytes) => {
                let j = judge(&bytes, opts);
                any_invalid |= !j.valid;
                if json {
                    json_line(&name, &j)
                } else {
                    text_line(&name, &j)
                }
            }
            Err(e) => {
                io_error = true;
                let j = rvoip_controlplane::lint::Judgement {
                    valid: false,
                    status: None,
                    reason: format!("cannot read file: {e}"),
                };
                if json {
                    json_line(&name, &j)
                } else {
                    text_line(&name, &j)
                }
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(2);
        }
    }
    if io_error {
        ExitCode::from(2)
    } else if any_invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads, validates and checks a configuration against this host, with
/// every file it names: the same for `config-check` and every start, so a
/// file that passes the check does not stop the appliance later.
fn load(path: &Path) -> Result<Config, ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("rvoip: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    };
    let config = Config::load(path).map_err(|e| fail(&e))?;
    config.check_host().map_err(|e| fail(&e))?;
    if let Some(f) = &config.registrar.users_file {
        rvoip_controlplane::registrar::Users::load(&config.resolve(f))
            .map_err(|e| fail(&format!("{}: registrar.users_file: {e}", path.display())))?;
    }
    Ok(config)
}

/// Starts logging as `[log]` says; the way to change the level later.
fn init_logging(
    log: &rvoip_tuning::config::Log,
) -> Option<rvoip_controlplane::ops::logging::SetLevel> {
    rvoip_controlplane::ops::logging::init(log)
}

/// Flags the signals set: SIGTERM and SIGINT stop the process; SIGHUP is
/// noted (configuration reload is not available yet) and otherwise
/// ignored, so a closed terminal or a stray `kill -HUP` does not take the
/// appliance down.
struct Signals {
    stop: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

impl Signals {
    /// Logs and clears a SIGHUP received since the last look.
    fn note_hangup(&self) {
        if self.hangup.swap(false, Ordering::Relaxed) {
            tracing::warn!("SIGHUP received: configuration reload is not available; ignored");
        }
    }
}

fn install_signals() -> Result<Signals, ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGHUP, &hangup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            tracing::error!(error = %e, "cannot install signal handler");
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(Signals { stop, hangup })
}

/// Sends `signal` to process `pid` (a child this process started).
#[allow(unsafe_code)]
fn signal_child(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, still
    // unreaped (the caller holds its `Child`), so the id is not reused.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Makes the control-plane child die with the supervisor: the kernel sends
/// it SIGTERM when the thread that started it ends, whichever way the
/// supervisor goes (SIGKILL, a crash), so no control plane is left holding
/// the rings and their lock.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("supervisor is gone"));
            }
            Ok(())
        });
    }
}

/// The online cores a `dataplane.cores` setting names.
fn worker_cores(config: &Config, path: &Path) -> Result<Vec<usize>, ExitCode> {
    let online: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    match &config.dataplane.cores {
        Cores::Named(_) => Ok(online),
        Cores::List(l) => {
            if let Some(bad) = l.iter().find(|c| !online.contains(c)) {
                eprintln!(
                    "rvoip: configuration error: {}: dataplane.cores: core {bad} does not exist on this host (online: {online:?})",
                    path.display()
                );
                return Err(ExitCode::from(EXIT_CONFIG));
            }
            Ok(l.clone())
        }
    }
}

/// Keeps a control-plane child process running: restarted when it dies.
struct Supervisor {
    child: Arc<std::sync::Mutex<Option<std::process::Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(config_path: &Path, stop: Arc<AtomicBool>) -> Supervisor {
        let child = Arc::new(std::sync::Mutex::new(None::<std::process::Child>));
        let slot = Arc::clone(&child);
        let path = config_path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(200);
                while !stop.load(Ordering::Relaxed) {
                    let exe = std::env::current_exe().unwrap_or_else(|_| "rvoip".into());
                    let mut cmd = std::process::Command::new(exe);
                    cmd.arg("controlplane").arg("--config").arg(&path).stdin(std::process::Stdio::null());
                    // A drain's end stops the whole appliance through us.
                    cmd.env(SUPERVISOR_ENV, std::process::id().to_string());
                    // Only this process speaks to systemd.
                    cmd.env_remove("NOTIFY_SOCKET");
                    die_with_parent(&mut cmd);
                    let spawned = cmd.spawn();
                    let pid = match spawned {
                        Ok(c) => {
                            let pid = c.id();
                            if let Ok(mut g) = slot.lock() {
                                *g = Some(c);
                            }
                            tracing::info!(pid, "control plane started");
                            pid
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start the control plane");
                            std::thread::sleep(backoff);
                            continue;
                        }
                    };
                    let started = Instant::now();
                    let status = loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let done = slot.lock().ok().and_then(|mut g| g.as_mut().and_then(|c| c.try_wait().ok().flatten()));
                        if let Some(s) = done {
                            break s;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    backoff = if started.elapsed() > Duration::from_secs(10) { Duration::from_millis(200) } else { (backoff * 2).min(Duration::from_secs(5)) };
                    tracing::error!(pid, %status, restart_in = ?backoff, "control plane exited; restarting");
                    std::thread::sleep(backoff);
                }
            })
            .ok();
        Supervisor { child, thread }
    }

    fn stop(mut self) {
        if let Ok(mut g) = self.child.lock()
            && let Some(mut c) = g.take()
        {
            signal_child(c.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(path: &Path, supervise: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config.log);
    tracing::info!(node = %config.node.name, mode = ?config.node.mode, config = %path.display(), "rvoip starting");
    let signals = match install_signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let stop = Arc::clone(&signals.stop);
    let cores = match worker_cores(&config, path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // rvoip's TLS (its listeners' chain and key, the CAs it trusts),
    // read before anything starts.
    let tls = match &config.tls {
        Some(t) => {
            let paths = rvoip_dataplane::sip::tls::TlsPaths {
                certificate: config.resolve(&t.certificate),
                key: config.resolve(&t.key),
                client_ca: t.client_ca.as_ref().map(|c| config.resolve(c)),
                peer_ca: config.resolve(&t.peer_ca()),
            };
            match rvoip_dataplane::sip::tls::Credentials::load(paths) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    eprintln!("rvoip: configuration error: {}: tls: {e}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        None => None,
    };
    let driver = match driver_kind(&config.dataplane) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "rvoip: configuration error: {}: dataplane.interface: {e}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // AF_XDP: rvoip's program on the link, steering SIP over UDP, ng and
    // (as calls open them) media ports to the media worker's sockets; the
    // SIP workers and the ng service get theirs through mailboxes.
    let xdp_link = match driver {
        DriverKind::AfXdp { ifindex } => {
            let sip_udp: Vec<std::net::SocketAddr> = config
                .sip
                .listen
                .iter()
                .filter(|l| {
                    l.transport == rvoip_dataplane::sip::Transport::Udp
                        && !l.address.ip().is_unspecified()
                })
                .map(|l| l.address)
                .collect();
            let ng: Vec<std::net::SocketAddr> = config
                .ng
                .iter()
                .map(|n| n.listen)
                .filter(|a| !a.ip().is_unspecified())
                .collect();
            let services = [(sip_udp, cores.len().max(1)), (ng, 1)];
            match rvoip_dataplane::xdp::link::XdpLink::open(ifindex, &services) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    tracing::error!(
                        interface = config.dataplane.interface.as_deref().unwrap_or(""),
                        error = %e,
                        "cannot put rvoip's XDP program on the link (AF_XDP needs root, or CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW)"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let sip_config = SipPlaneConfig {
        xdp: xdp_link.as_ref().map(|l| (Arc::clone(l), XDP_SIP)),
        listeners: config
            .sip
            .listen
            .iter()
            .map(|l| (l.transport, l.address))
            .collect(),
        cores: cores.clone(),
        ring_dir: config.controlplane.ring_dir.clone(),
        shards: config.controlplane.shards,
        limits: Limits {
            max_message_size: config.sip.max_message_size,
            max_line_length: config.sip.max_line_length,
            max_headers: config.sip.max_headers,
            ..Limits::default()
        },
        rate_limit: config.sip.rate_limit,
        hep: config.capture.hep.map(|collector| HepConfig {
            collector,
            tcp: config.capture.hep_transport == rvoip_tuning::config::HepTransport::Tcp,
            agent: config.capture.hep_agent_id,
            sample_pct: config.capture.hep_sample_pct.min(100),
        }),
        ring_slots: config.controlplane.ring_slots,
        batch_wait_us: config.dataplane.sip_batch_wait_us(),
        driver,
        tls,
        streams: StreamLimits {
            max_per_source: config.sip.max_connections_per_source,
            handshake_timeout: Duration::from_secs(u64::from(
                config.sip.handshake_timeout_secs.max(1),
            )),
            idle_timeout: (config.sip.connection_idle_secs > 0)
                .then(|| Duration::from_secs(u64::from(config.sip.connection_idle_secs))),
        },
        ws: rvoip_dataplane::sip::ws::WsPolicy {
            origins: config.sip.websocket_origins.clone(),
        },
    };
    let mut sip = match SipPlane::start(&sip_config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the SIP transport");
            return ExitCode::FAILURE;
        }
    };
    for l in &config.sip.listen {
        tracing::info!(address = %l.address, transport = ?l.transport, workers = cores.len().max(1), "SIP listening");
    }
    let supervisor = if supervise {
        Some(Supervisor::start(path, Arc::clone(&stop)))
    } else {
        tracing::info!(rings = %config.controlplane.ring_dir.display(), "dataplane only: waiting for a control plane to attach");
        None
    };
    let media = match start_media(&config, path, xdp_link.clone()) {
        Ok(m) => m,
        Err(code) => {
            stop.store(true, Ordering::Relaxed);
            if let Some(s) = supervisor {
                s.stop();
            }
            return code;
        }
    };
    let advertised = config
        .media
        .advertised_address
        .unwrap_or(config.media.address);
    // The media workers' load, published for the control plane's
    // admission of new calls ([overload]).
    let load_probe = media.load_probe();
    let dtls_fingerprint = media.dtls_fingerprint();
    let load_board = match LoadBoard::create(&config.controlplane.ring_dir) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "cannot publish the media load: admission by media load is off");
            None
        }
    };
    // One thread owns the media sessions and serves the control plane's
    // order channel (B2BUA) and, when configured, the ng socket.
    let mut server = NgServer::new(
        media,
        advertised,
        Box::new(rvoip_dataplane::entropy::SystemEntropy::new()),
    );
    server.set_advertised_v6(config.media.address_v6);
    server.set_dtls_fingerprint(Some(dtls_fingerprint));
    let o = config.media.opus;
    server.set_opus(rvoip_codecs::opus::OpusSettings {
        bitrate: o.bitrate as i32,
        complexity: i32::from(o.complexity),
        fec: o.fec,
        dtx: o.dtx,
        expected_loss: i32::from(o.expected_loss_pct),
        voice: false,
    });
    let absolute = |p: std::path::PathBuf| std::path::absolute(&p).unwrap_or(p);
    server.set_prompt_dir(absolute(config.resolve(&config.mediaserver.prompt_dir)));
    server.set_media_server_opus_complexity(config.mediaserver.opus_complexity);
    server.set_record_rooms(config.mediaserver.record_rooms);
    server.set_recording_dir(
        config
            .recording
            .dir
            .as_ref()
            .map(|d| absolute(config.resolve(d))),
    );
    let ng_addr = config.ng.as_ref().map(|n| n.listen);
    let orders = match NgOrders::spawn(
        &config.controlplane.ring_dir,
        ng_addr,
        server,
        Arc::clone(&stop),
        std::time::Duration::from_micros(u64::from(config.dataplane.batch_wait_us)),
        xdp_link.as_ref().map(|l| (Arc::clone(l), XDP_NG)),
        config.controlplane.shards,
    ) {
        Ok(o) => o,
        Err(e) => {
            match ng_addr {
                Some(a) => {
                    tracing::error!(address = %a, error = %e, "cannot create the media order channel or bind the ng listener")
                }
                None => tracing::error!(error = %e, "cannot create the media order channel"),
            }
            stop.store(true, Ordering::Relaxed);
            if let Some(s) = supervisor {
                s.stop();
            }
            return ExitCode::FAILURE;
        }
    };
    match orders.ng {
        Some(a) => tracing::info!(address = %a, "ng control listening"),
        None => tracing::info!("no [ng] section: media is ordered by the control plane only"),
    }
    // Every worker's counters, published for the control plane's metrics
    // endpoint.
    let stats_board = match StatsBoard::create(&config.controlplane.ring_dir) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "cannot publish the dataplane's counters: metrics show the control plane only");
            None
        }
    };
    let mut last_load_line = 0u64;
    // Under systemd (Type=notify): ready now, and alive while this loop
    // runs (WatchdogSec).
    rvoip_controlplane::ops::service::ready("SIP, media and ng listening");
    let mut watchdog = rvoip_controlplane::ops::service::Watchdog::new();
    while !stop.load(Ordering::Relaxed) {
        signals.note_hangup();
        watchdog.pet();
        if let Some(b) = &stats_board {
            let sip_workers = sip.tallies.iter().map(|t| (Kind::Sip, &**t));
            let media_workers = load_probe.tallies().map(|t| (Kind::Media, t));
            let mut index = [0u32; 2];
            for (slot, (kind, tally)) in sip_workers.chain(media_workers).enumerate() {
                let i = &mut index[kind as usize - 1];
                b.publish(slot, kind, *i, tally);
                *i += 1;
            }
            b.stamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            );
        }
        if let Some(b) = &load_board {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let load = load_probe.sample();
            b.publish(load, unix);
            if unix / 1000 != last_load_line {
                last_load_line = unix / 1000;
                tracing::debug!(
                    busy_pct = load.busy_permille / 10,
                    packets_per_sec = load.packets_per_sec,
                    "media load"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("shutting down");
    rvoip_controlplane::ops::service::stopping();
    if let Some(s) = supervisor {
        s.stop();
    }
    let report = orders.join();
    let r = report.ng;
    tracing::info!(
        requests = r.ng.requests,
        errors = r.ng.errors,
        retransmissions = r.ng.retransmissions,
        control_plane_orders = report.orders,
        dropped = r.ng.dropped,
        media_timeouts = r.ng.media_timeouts,
        "ng counters"
    );
    tracing::info!(
        forwarded = r.media.forwarded,
        malformed = r.media.malformed,
        wrong_source = r.media.wrong_source,
        no_destination = r.media.no_destination,
        unknown_endpoint = r.media.unknown_endpoint,
        timeouts = r.media.timeouts,
        transcoded_in = r.media.transcoded_in,
        transcoded_out = r.media.transcoded_out,
        "media counters"
    );
    let sv = r.media.services;
    if sv != Default::default() {
        tracing::info!(
            prompt_frames = sv.prompt_frames,
            terminal_frames = sv.terminal_frames,
            terminated_in = sv.terminated_in,
            blocked = sv.blocked,
            silenced = sv.silenced,
            replaced = sv.replaced,
            recorded = sv.recorded,
            record_dropped = sv.record_dropped,
            captured = sv.captured,
            capture_dropped = sv.capture_dropped,
            room_frames = sv.room_frames,
            room_sent = sv.room_sent,
            room_shared = sv.room_shared,
            "media server counters"
        );
    }
    let st = r.media.stage;
    if r.media.transcoded_in + r.media.transcoded_out > 0 {
        tracing::info!(
            decoded = st.decoded,
            encoded = st.encoded,
            concealed = st.concealed,
            comfort_noise = st.comfort_noise,
            late = st.late,
            dropped = st.dropped,
            codec_errors = st.codec_errors,
            underruns = st.underruns,
            shrunk = st.shrunk,
            events_sent = st.events_sent,
            digits_detected = st.digits_detected,
            digits_played = st.digits_played,
            rtcp_rewritten = st.rtcp_rewritten,
            rtcp_ended = st.rtcp_ended,
            "transcoding counters"
        );
    }
    let mut total = rvoip_dataplane::engine::sip::SipWorkerReport::default();
    for r in sip.shutdown() {
        total.edge.received += r.edge.received;
        total.edge.unparsable += r.edge.unparsable;
        total.edge.malformed_requests += r.edge.malformed_requests;
        total.edge.malformed_responses += r.edge.malformed_responses;
        total.edge.unavailable += r.edge.unavailable;
        total.edge.delivered += r.edge.delivered;
        total.edge.dropped += r.edge.dropped;
        total.rate_limited += r.rate_limited;
        total.ring_full += r.ring_full;
        total.sent += r.sent;
        total.send_errors += r.send_errors;
        total.tcp_accepted += r.tcp_accepted;
        total.tcp_connected += r.tcp_connected;
        total.tcp_connect_failed += r.tcp_connect_failed;
        total.tcp_stalled += r.tcp_stalled;
        total.tcp_write_waits += r.tcp_write_waits;
        total.sent_grouped += r.sent_grouped;
        total.received_grouped += r.received_grouped;
        total.udp_sends += r.udp_sends;
        total.hep_sent += r.hep_sent;
        total.hep_dropped += r.hep_dropped;
    }
    let c = total.edge;
    tracing::info!(
        received = c.received,
        unparsable = c.unparsable,
        malformed_requests = c.malformed_requests,
        malformed_responses = c.malformed_responses,
        unavailable = c.unavailable,
        delivered = c.delivered,
        dropped = c.dropped,
        rate_limited = total.rate_limited,
        ring_full = total.ring_full,
        sent = total.sent,
        send_errors = total.send_errors,
        tcp_accepted = total.tcp_accepted,
        tcp_connected = total.tcp_connected,
        tcp_connect_failed = total.tcp_connect_failed,
        tcp_stalled = total.tcp_stalled,
        tcp_write_waits = total.tcp_write_waits,
        sent_grouped = total.sent_grouped,
        received_grouped = total.received_grouped,
        udp_sends = total.udp_sends,
        hep_sent = total.hep_sent,
        hep_dropped = total.hep_dropped,
        "SIP counters"
    );
    ExitCode::SUCCESS
}

fn run_controlplane(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let set_log_level = init_logging(&config.log);
    // SIGHUP (a closed terminal reaches the whole process group) is
    // ignored here; the supervisor logs it.
    let signals = match install_signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let hooks = rvoip_controlplane::process::Hooks {
        set_log_level,
        supervisor: std::env::var(SUPERVISOR_ENV)
            .ok()
            .and_then(|p| p.parse().ok()),
    };
    match rvoip_controlplane::process::run(&config, signals.stop, hooks) {
        Ok(c) => {
            tracing::info!(
                requests = c.requests,
                responses = c.responses,
                forwarded = c.forwarded,
                generated = c.generated,
                retransmissions = c.retransmissions,
                registrations = c.registrations,
                challenges = c.challenges,
                auth_failures = c.auth_failures,
                auth_bans = c.auth_bans,
                auth_refused = c.auth_refused,
                relay_denied = c.relay_denied,
                overload_refused = c.overload_refused,
                malformed = c.malformed,
                "control plane counters"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "control plane failed");
            ExitCode::FAILURE
        }
    }
}

/// The SIP service (its UDP listeners, a mailbox per worker) and the ng
/// service on an AF_XDP link, in the order the link was opened with.
const XDP_SIP: rvoip_dataplane::xdp::link::ServiceId = rvoip_dataplane::xdp::link::ServiceId(0);
const XDP_NG: rvoip_dataplane::xdp::link::ServiceId = rvoip_dataplane::xdp::link::ServiceId(1);

/// The engine's driver choice for the configured one (AF_XDP's link by
/// index; an unknown link is a configuration error).
fn driver_kind(d: &rvoip_tuning::config::Dataplane) -> std::io::Result<DriverKind> {
    Ok(match d.io {
        IoDriver::Auto => DriverKind::Auto,
        IoDriver::IoUring => DriverKind::IoUring,
        IoDriver::Fallback => DriverKind::Fallback,
        IoDriver::AfXdp => DriverKind::AfXdp {
            ifindex: rvoip_dataplane::xdp::bpf::ifindex(d.interface.as_deref().unwrap_or(""))?,
        },
    })
}

/// Starts the media engine from the configuration; a core that does not exist
/// is a configuration error.
fn start_media(
    config: &Config,
    path: &Path,
    xdp_link: Option<Arc<rvoip_dataplane::xdp::link::XdpLink>>,
) -> Result<MediaEngine, ExitCode> {
    let cores = worker_cores(config, path)?;
    let driver = driver_kind(&config.dataplane).map_err(|e| {
        eprintln!(
            "rvoip: configuration error: {}: dataplane.interface: {e}",
            path.display()
        );
        ExitCode::from(EXIT_CONFIG)
    })?;
    let engine_config = MediaEngineConfig {
        address: config.media.address,
        address_v6: config.media.address_v6,
        extra_addresses: config
            .media_addresses()
            .into_iter()
            .filter(|a| *a != config.media.address && Some(*a) != config.media.address_v6)
            .collect(),
        port_min: config.media.port_min,
        port_max: config.media.port_max,
        cores,
        driver,
        polling: match config.dataplane.polling {
            rvoip_tuning::config::Polling::Interrupt => Polling::Interrupt {
                batch_wait_us: config.dataplane.batch_wait_us,
            },
            rvoip_tuning::config::Polling::Adaptive => {
                Polling::Adaptive(Duration::from_micros(200))
            }
        },
        relay: RelayConfig {
            latch: match config.media.latch {
                Latch::Learning => LatchMode::Learning,
                Latch::Strict => LatchMode::Strict,
            },
            media_timeout_ms: u64::from(config.media.timeout_secs) * 1000,
            ..RelayConfig::default()
        },
        max_endpoints_per_worker: 65_536,
        fill_calls: config.dataplane.fill_calls,
    };
    match MediaEngine::start_on_link(&engine_config, xdp_link) {
        Ok(engine) => {
            if engine.driver() != "io_uring" && config.dataplane.io == IoDriver::Auto {
                tracing::warn!(
                    "io_uring is not available here: the media relay uses the recvmmsg/sendmmsg fallback (one descriptor per endpoint)"
                );
            }
            tracing::info!(
                driver = engine.driver(),
                workers = engine.workers(),
                address = %config.media.address,
                ports = %format!("{}-{}", config.media.port_min, config.media.port_max),
                "media relay running"
            );
            Ok(engine)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the media relay");
            Err(ExitCode::FAILURE)
        }
    }
}
