//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::PathBuf;

/// `../shared/conformance` beside the repository, or `RVOIP_CONFORMANCE_DIR`.
/// Missing data fails the test: conformance is never skipped silently.
pub fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("RVOIP_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        });
    assert!(
        dir.join("rfc4475/manifest.tsv").is_file(),
        "conformance data not found at {}",
        dir.display()
    );
    dir
}

/// One manifest row, by column name.
pub type Row = HashMap<String, String>;

/// Reads a manifest.tsv.
pub fn manifest(set: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(conformance_dir().join(set).join("manifest.tsv"))
        .expect("manifest readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header row").split('\t').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split('\t').map(str::to_string))
                .collect()
        })
        .collect()
}

/// The bytes of a conformance file.
pub fn read(set: &str, file: &str) -> Vec<u8> {
    std::fs::read(conformance_dir().join(set).join(file)).expect("conformance file readable")
}

/// The wire form of an RFC 5118 archive message, by the one transformation the
/// conformance README documents: LF to CRLF, a closing empty line where it is
/// missing, and Content-Length set to the CRLF body length.
pub fn rfc5118_wire(raw: &[u8]) -> Vec<u8> {
    assert!(
        !raw.contains(&b'\r'),
        "RFC 5118 archive files have bare LF line ends"
    );
    let text = String::from_utf8(raw.to_vec()).expect("RFC 5118 files are text");
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h.to_string(), b.to_string()),
        None => (text.trim_end_matches('\n').to_string(), String::new()),
    };
    let body = body.replace('\n', "\r\n");
    let head: Vec<String> = head
        .split('\n')
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") && !body.is_empty() {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{}", head.join("\r\n"), body).into_bytes()
}

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free UDP port on loopback (bound and released; free for TCP too), never one this test
/// process was given before: the kernel may hand a released port out
/// again at once, and two listeners of one configuration must differ.
pub fn free_udp_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("ephemeral port");
        // Free for TCP too: the configurations listen on both at one port.
        let tcp_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if tcp_free && !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until something has bound UDP `port` (a peer just started is
/// ready to receive), for at most 30 s (a peer starting on a loaded host).
/// It looks in the kernel's socket table rather than trying to bind the
/// port itself, which could make the peer's own bind fail.
pub fn wait_udp_bound(port: u16) {
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

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvoip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// `text` with every `from` of `pairs` replaced by its `to` in one pass, so
/// a replacement is never itself replaced again (a port 50620 put in for
/// 5060 must not then be taken for 5062). The first pair matching at a
/// position wins.
pub fn substitute(text: &str, pairs: &[(&str, String)]) -> String {
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

/// What puts `config/sbc.toml` (or a configuration of its layout) on the
/// ports of one test: the access listener on `access`, the core listener
/// on `inner`, the trunk's first peer on `core` (its second on a free port),
/// ng on a free port and the media range `media_base` and its 99
/// successors. More replacements can follow.
pub fn sbc_ports(
    access: u16,
    inner: u16,
    core: u16,
    media_base: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("127.0.0.1:5060", format!("127.0.0.1:{access}")),
        ("127.0.0.1:5062", format!("127.0.0.1:{inner}")),
        ("127.0.0.1:5070", format!("127.0.0.1:{core}")),
        ("127.0.0.1:5072", format!("127.0.0.1:{}", free_udp_port())),
        ("127.0.0.1:2223", format!("127.0.0.1:{}", free_udp_port())),
        ("port_min = 30000", format!("port_min = {media_base}")),
        (
            "port_max = 39999",
            format!("port_max = {}", media_base + 99),
        ),
    ]
}

/// `config/<base>` rewritten for a test: the replacements applied, and its
/// own shared-memory ring directory and state directory, so tests running at
/// the same time do not meet. Returns the path of the written file.
pub fn test_config(base: &str, dir: &Path, replacements: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(base),
    )
    .expect("config file");
    for (from, _) in replacements {
        assert!(text.contains(from), "{base} has no {from:?}");
    }
    text = substitute(&text, replacements);
    sweep_rings("rvoip-test-");
    remove_own_rings_at_exit();
    let rings = format!(
        "/dev/shm/rvoip-test-{}-{}",
        std::process::id(),
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    );
    text = text.replace(
        "ring_dir = \"/dev/shm/rvoip\"",
        &format!("ring_dir = \"{rings}\""),
    );
    text = text.replace("state_dir = \"../state\"", "state_dir = \"state\"");
    // Its own metrics port: appliances of tests running at once do not meet.
    text = text.replace("127.0.0.1:9464", &format!("127.0.0.1:{}", free_udp_port()));
    // Files named relative to the original (users file) stay reachable.
    let users = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/users.toml");
    if users.exists() {
        let _ = std::fs::copy(&users, dir.join("users.toml"));
    }
    let path = dir.join(base);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Removes the ring directories `/dev/shm/<prefix><pid>-...` of test
/// processes that are gone (shared memory is RAM: what a run leaves there
/// would pile up run after run).
pub fn sweep_rings(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(prefix)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// This process's ring directories, removed when it exits (after its tests).
extern "C" fn remove_own_rings() {
    let own = format!("rvoip-test-{}-", std::process::id());
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&own) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Registers [`remove_own_rings`] to run at exit, once per process.
#[allow(unsafe_code)]
fn remove_own_rings_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: atexit takes a plain extern "C" function that touches only
    // the file system.
    ONCE.call_once(|| unsafe {
        libc::atexit(remove_own_rings);
    });
}

/// A child process in a process group of its own; dropping it stops the
/// group (SIGTERM, then SIGKILL after 5 s).
pub struct Spawned(pub Child);

impl Spawned {
    /// Spawns `cmd` in its own process group.
    pub fn spawn(cmd: &mut Command) -> Spawned {
        Spawned(
            cmd.process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        )
    }

    /// Sends SIGTERM to the group and waits (up to 10 s) for the leader.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}
pub mod capture;
pub mod sipp;

/// What tshark reads in `pcap`: its text and a row of `fields` per packet
/// (`options` come first: decode-as rules, preferences).
#[allow(dead_code)]
pub fn tshark_fields(pcap: &Path, options: &[&str], fields: &[&str]) -> (String, Vec<Vec<String>>) {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(options);
    cmd.args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark is installed by .ci/run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = text
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
    (text, rows)
}

/// Sends OPTIONS to 127.0.0.1:`port` until a 200 comes back, for at most
/// 15 s; `log` says why when it does not.
pub fn wait_options_ok(port: u16, log: impl Fn() -> String) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        let msg = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-ready-{n}\r\n\
From: <sip:probe@rvoip.test>;tag=r\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ready-{n}\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            sock.local_addr().expect("local address")
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", port))
            .expect("send OPTIONS");
        let mut buf = [0u8; 4096];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 200 ")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rvoip did not answer OPTIONS: {}",
            log()
        );
    }
}

/// `rvoip run --config CONFIG` in `dir` (its log in `dir/rvoip.log`), once
/// it answers OPTIONS on 127.0.0.1:`port`.
pub fn appliance(dir: &Path, config: &Path, port: u16) -> Spawned {
    let log = dir.join("rvoip.log");
    let app = Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_rvoip"))
            .args(["run", "--config"])
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    wait_options_ok(port, || std::fs::read_to_string(&log).unwrap_or_default());
    app
}

/// The CDRs an SBC running in `dir` has written so far.
pub fn cdrs(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits up to `within` until `n` CDRs are written in `dir`; `log` says
/// why when they are not.
pub fn wait_cdrs(
    dir: &Path,
    n: usize,
    within: Duration,
    log: impl Fn() -> String,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let c = cdrs(dir);
        if c.len() >= n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{} CDRs of {n}: {}",
            c.len(),
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A file of `config/tls/` (the test-only certificate and key).
pub fn tls_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/tls")
        .join(name)
}

/// A CDR of a call answered on both legs with media through the relay from
/// both sides (more than 50 packets each).
pub fn assert_answered_with_media(c: &serde_json::Value) {
    assert_eq!(
        (c["a_status"].as_u64(), c["b_status"].as_u64()),
        (Some(200), Some(200)),
        "{c}"
    );
    let (from_a, from_b) = (
        c["media"]["from_a"].as_u64().unwrap_or(0),
        c["media"]["from_b"].as_u64().unwrap_or(0),
    );
    assert!(from_a > 50 && from_b > 50, "media through the relay: {c}");
}

/// Kamailio 5.6 in the foreground on `cfg` (written by the test), its
/// working and runtime directory `dir`, its log in `dir/kamailio.log`.
#[allow(dead_code)]
pub fn kamailio(dir: &Path, cfg: &str) -> Spawned {
    std::fs::write(dir.join("kamailio.cfg"), cfg).unwrap();
    Spawned::spawn(
        Command::new("kamailio")
            .arg("-f")
            .arg(dir.join("kamailio.cfg"))
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-w"])
            .arg(dir)
            .arg("-Y")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap()),
    )
}

/// The requests control-plane shard `shard` handled, from the line it logs
/// when it stops (`control-plane shard stopped shard=N requests=M ...`).
#[allow(dead_code)]
pub fn shard_requests(log: &str, shard: usize) -> u64 {
    let tag = format!("shard={shard} ");
    let line = log
        .lines()
        .find(|l| l.contains("control-plane shard stopped") && l.contains(&tag))
        .unwrap_or_else(|| panic!("no shard {shard} in {log}"));
    line.split("requests=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}
