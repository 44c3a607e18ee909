//! Running SIPp from the tests: scenarios, a bounded run with its final
//! statistics, a background UAS, and the control-plane process of a running
//! appliance.
#![allow(clippy::disallowed_methods)] // tests read the clock

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Spawned;

/// SIPp scenarios of this suite.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The final cumulative counters of a SIPp run, from its `-stf` file.
#[derive(Debug)]
pub struct Stats {
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    pub exit: Option<i32>,
}

/// Runs SIPp to completion (at most `limit`) in `dir`; `-stf` statistics
/// are read back.
pub fn sipp(dir: &Path, name: &str, args: &[&str], limit: Duration) -> Stats {
    sipp_in(None, dir, name, args, limit)
}

/// [`sipp`] inside network namespace `netns` (as root), when given.
pub fn sipp_in(
    netns: Option<&str>,
    dir: &Path,
    name: &str,
    args: &[&str],
    limit: Duration,
) -> Stats {
    let stf = dir.join(format!("{name}.csv"));
    let _ = std::fs::remove_file(&stf);
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sipp"]);
            c
        }
        None => Command::new("sipp"),
    };
    let mut child = Spawned::spawn(
        command
            .args(args)
            .args(["-nostdin", "-trace_err", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stf)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sipp {name} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&stf).unwrap_or_else(|e| panic!("{}: {e}", stf.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("stf header").split(';').collect();
    let last: Vec<&str> = lines.last().expect("stf row").split(';').collect();
    let row: HashMap<&str, &str> = header.into_iter().zip(last).collect();
    let num = |k: &str| -> u64 {
        row.get(k)
            .unwrap_or_else(|| panic!("no column {k}"))
            .trim()
            .parse()
            .unwrap()
    };
    Stats {
        successful: num("SuccessfulCall(C)"),
        failed: num("FailedCall(C)"),
        retransmissions: num("Retransmissions(C)"),
        exit: status.code(),
    }
}

/// A counter of SIPp's `-stf` statistics file as last written (once a
/// second with `-fd 1`), e.g. `IncomingCall(C)`.
pub fn stat(stf: &Path, column: &str) -> Option<u64> {
    let text = std::fs::read_to_string(stf).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.last()?.split(';').collect();
    let at = header.iter().position(|h| *h == column)?;
    last.get(at)?.trim().parse().ok()
}

/// A SIPp UAS running in the background, once it listens on `port`.
pub fn uas(dir: &Path, port: u16, scenario_args: &[&str], extra: &[&str]) -> Spawned {
    let uas = Spawned::spawn(
        Command::new("sipp")
            .args(scenario_args)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    super::wait_udp_bound(port);
    uas
}

/// The pid of the newest control plane the appliance log names.
pub fn control_plane_pid(log: &str) -> Option<u32> {
    log.lines()
        .rfind(|l| l.contains("control plane started"))?
        .split("pid=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The sockets a process holds open (inode numbers).
pub fn sockets(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with("socket:"))
        .collect()
}
