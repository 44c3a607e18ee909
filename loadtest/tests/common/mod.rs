//! What the load generator's integration tests share.
// Each test file uses a part of this.
#![allow(dead_code, clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Media port ranges this crate's tests give relays inside the kernel's
/// ephemeral range (`transcode`: 46000–47199, `mediaserver`: 48000–48999).
/// A relay opens its ports as calls come, so a port handed out here from
/// inside them could be taken by a relay of a test running alongside
/// before its owner binds it.
const RELAY_RANGES: std::ops::Range<u16> = 46_000..49_000;

/// A UDP port on 127.0.0.1 that was free a moment ago, outside the relay
/// ranges of this crate's tests.
pub(crate) fn free_port() -> u16 {
    // Kept until one outside the ranges is found, so the kernel hands out
    // another each time.
    let mut held = Vec::new();
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("a free port: {e}"));
        let port = s
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("a free port: {e}"));
        if !RELAY_RANGES.contains(&port) {
            return port;
        }
        held.push(s);
    }
}

/// `text` with every `from` of `pairs` replaced by its `to` in one pass, so
/// a replacement is never itself replaced again (a port 50620 put in for
/// 5060 must not then be taken for 5062). The first pair matching at a
/// position wins.
pub(crate) fn substitute(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in pairs {
            if let Some(after) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Waits until something has bound UDP `port` (a peer just started is
/// ready to receive), for at most 30 s (a peer starting on a loaded host).
/// It looks in the kernel's socket table rather than trying to bind the
/// port itself, which could make the peer's own bind fail.
pub(crate) fn wait_udp_bound(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let suffix = format!(":{port:04X}");
    let bound = || {
        ["/proc/net/udp", "/proc/net/udp6"].iter().any(|t| {
            std::fs::read_to_string(t).is_ok_and(|table| {
                table.lines().skip(1).any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|local| local.ends_with(&suffix))
                })
            })
        })
    };
    while !bound() {
        assert!(Instant::now() < deadline, "nothing bound UDP port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child started in a process group of its own; dropping it stops the
/// whole group (TERM, then KILL after 5 s), so a peer that forks workers
/// (Kamailio) leaves none behind.
pub(crate) struct Group(pub(crate) std::process::Child);

impl Group {
    pub(crate) fn spawn(cmd: &mut std::process::Command) -> Group {
        use std::os::unix::process::CommandExt as _;
        Group(
            cmd.process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        )
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        use std::time::{Duration, Instant};
        let group = format!("-{}", self.0.id());
        let signal = |sig: &str| {
            let _ = std::process::Command::new("kill")
                .args([sig, "--", &group])
                .stderr(std::process::Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("-KILL");
        let _ = self.0.wait();
    }
}

/// A child process, and the SBC's ring directory in shared memory (RAM):
/// both gone when dropped.
pub(crate) struct Killed(pub(crate) Child, pub(crate) Option<PathBuf>);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && !matches!(self.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(rings) = &self.1 {
            let _ = std::fs::remove_dir_all(rings);
        }
    }
}

/// The `rvoip` binary of this build, built on demand (it belongs to
/// another package of the workspace).
pub(crate) fn rvoip_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_rvoip-loadtest")).with_file_name("rvoip");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "rvoip-controlplane", "--bin", "rvoip"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build").success());
    }
    path
}

/// Runs `config/sbc.toml` in `dir` with its listeners, trunk peers, media
/// ports and rings moved to `access`, `core_peer`, `media_base`… and the
/// `extra` replacements applied; returns once it answers OPTIONS.
pub(crate) fn run_sbc(
    dir: &Path,
    access: u16,
    core_peer: u16,
    media_base: u16,
    extra: &[(&str, String)],
) -> Killed {
    run_config("sbc.toml", dir, access, core_peer, media_base, extra)
}

/// Runs `config/<file>` (an SBC configuration) as [`run_sbc`] does.
pub(crate) fn run_config(
    file: &str,
    dir: &Path,
    access: u16,
    core_peer: u16,
    media_base: u16,
    extra: &[(&str, String)],
) -> Killed {
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(file),
    )
    .unwrap();
    let rings = format!("/dev/shm/rvoip-lt-sbc-{}-{media_base}", std::process::id());
    let pairs: Vec<(&str, String)> = [
        ("127.0.0.1:5060", format!("127.0.0.1:{access}")),
        ("127.0.0.1:5062", format!("127.0.0.1:{}", free_port())),
        ("127.0.0.1:5070", format!("127.0.0.1:{core_peer}")),
        ("127.0.0.1:5072", format!("127.0.0.1:{}", free_port())),
        ("127.0.0.1:2223", format!("127.0.0.1:{}", free_port())),
        ("port_min = 30000", format!("port_min = {media_base}")),
        (
            "port_max = 39999",
            format!("port_max = {}", media_base + 199),
        ),
        (
            "ring_dir = \"/dev/shm/rvoip\"",
            format!("ring_dir = \"{rings}\""),
        ),
        ("state_dir = \"../state\"", "state_dir = \"state\"".into()),
        ("127.0.0.1:9464", format!("127.0.0.1:{}", free_port())),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .collect();
    for (from, _) in &pairs {
        assert!(text.contains(from), "{file} has no {from:?}");
    }
    text = substitute(&text, &pairs);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/users.toml"),
        dir.join("users.toml"),
    )
    .unwrap();
    let config = dir.join(file);
    std::fs::write(&config, text).unwrap();
    let sbc = Killed(
        Command::new(rvoip_binary())
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rvoip.log")).unwrap())
            .spawn()
            .expect("rvoip"),
        Some(PathBuf::from(&rings)),
    );
    // Ready when it answers OPTIONS on the access side.
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        let msg = format!(
            "OPTIONS sip:127.0.0.1:{access} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-r{n}\r\n\
From: <sip:probe@rvoip.test>;tag=r\r\nTo: <sip:127.0.0.1>\r\nCall-ID: r{n}\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            sock.local_addr().unwrap()
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", access)).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 200")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SBC did not start: {}",
            std::fs::read_to_string(dir.join("rvoip.log")).unwrap_or_default()
        );
    }
    sbc
}

/// An rvoip-loadtest UAS with media on 127.0.0.1:`port`, stopped when
/// dropped.
pub(crate) fn media_uas(port: u16) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
            .args(["uas", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--media", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("rvoip-loadtest uas: {e}")),
        None,
    )
}

/// An agent's configuration for tests on simulated time: `calls` calls at
/// 10 a second, 2 s holds, media, on the given addresses.
pub(crate) fn agent_config(
    role: rvoip_loadtest::agent::AgentRole,
    sip: &str,
    rtp: &str,
    target: Option<&str>,
    calls: u64,
) -> rvoip_loadtest::agent::Config {
    let addr =
        |s: &str| -> std::net::SocketAddr { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
    rvoip_loadtest::agent::Config {
        role,
        target: target.map(addr),
        service: "service".into(),
        rate: 10.0,
        ramp_s: 0.0,
        calls,
        max_concurrent: 100,
        duration_ns: None,
        hold: rvoip_loadtest::agent::Hold {
            min_ms: 2000,
            max_ms: 2000,
        },
        media: true,
        sip_local: addr(sip),
        rtp_local: addr(rtp),
        run_id: 7,
        srtp: None,
        auth: None,
        domain: "rvoip.test".into(),
        expires: 600,
        codec: rvoip_codecs::Codec::Pcmu,
        answer_codec: rvoip_codecs::Codec::Pcmu,
        transcode: false,
        audio_check: 4,
        tone: false,
        opus_bitrate: None,
        listen: Default::default(),
        caller_tone: rvoip_loadtest::media::CALLER_TONE,
        dtmf: None,
        ng_service: None,
        rooms_of: 0,
        talkers: 0,
        webrtc: false,
    }
}

/// `rvoip-loadtest uac` with media from 127.0.0.2 to the SBC's access port,
/// with `args`; whether it passed, and its JSON report (`dir/<name>.json`).
pub(crate) fn media_uac(
    dir: &Path,
    access: u16,
    name: &str,
    args: &[&str],
) -> (bool, serde_json::Value) {
    let json = dir.join(format!("{name}.json"));
    let status = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["uac", "--target", &format!("127.0.0.1:{access}")])
        .args(["--listen", "127.0.0.2:0", "--media", "--quiet", "--json"])
        .arg(&json)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("rvoip-loadtest uac: {e}"));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    let report = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status.success(), report)
}

/// Runs `rvoip-loadtest media <args> --json <dir>/<name>.json` against
/// rvoip's ng relay started in this process on ports `base`..`base + 999`
/// (below the ephemeral range, so no socket of the test takes a relay
/// port); returns the JSON report and the exit status.
pub(crate) fn media_against_ng_relay(
    base: u16,
    name: &str,
    args: &[&str],
) -> (serde_json::Value, std::process::ExitStatus) {
    use rvoip_dataplane::engine::media::{DriverKind, MediaEngine, MediaEngineConfig, Polling};
    use rvoip_dataplane::engine::ng_udp::NgListener;
    use rvoip_dataplane::media::relay::RelayConfig;
    use rvoip_dataplane::ng::NgServer;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let engine = MediaEngine::start(&MediaEngineConfig {
        address: localhost,
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: base,
        port_max: base + 999,
        cores: vec![0, 1],
        driver: DriverKind::Auto,
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 4096,
    })
    .expect("media engine");
    let stop = Arc::new(AtomicBool::new(false));
    // WebRTC legs: the SDP names the engine's DTLS certificate.
    let fingerprint = engine.dtls_fingerprint();
    let mut server = NgServer::new(
        engine,
        localhost,
        Box::new(rvoip_dataplane::entropy::SystemEntropy::new()),
    );
    server.set_dtls_fingerprint(Some(fingerprint));
    let listener = NgListener::spawn("127.0.0.1:0".parse().unwrap(), server, Arc::clone(&stop))
        .expect("ng listener");
    let json = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{base}-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["media", "--ng", &listener.local.to_string(), "--quiet"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .status()
        .expect("rvoip-loadtest");
    stop.store(true, Ordering::Relaxed);
    listener.join();
    let r = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (r, status)
}
