//! `rvoip tune` on this host: `--check --json` judges every item the
//! interface names, agreeing with what the host says by other means;
//! `--plan --json` assigns online cores and gives a configuration fragment
//! the appliance accepts; `--apply --dry-run` prints commands without
//! changing anything.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::process::Command;

fn rvoip(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rvoip"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn online() -> Vec<u64> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    text.trim()
        .split(',')
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

#[test]
fn tune_check_json_judges_this_host_item_by_item() {
    let (code, out) = rvoip(&["tune", "--check", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let checks = v["checks"].as_array().unwrap();
    let get = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {out}"))
    };
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{c}");
        assert!(c["detail"].is_string() && c["fix"].is_string(), "{c}");
        assert!(
            status == "ok" || !c["fix"].as_str().unwrap().is_empty(),
            "no fix: {c}"
        );
    }
    let any_fail = checks.iter().any(|c| c["status"] == "fail");
    assert_eq!(code, if any_fail { 1 } else { 0 });
    for name in [
        "cpu",
        "smt",
        "numa",
        "isolcpus",
        "nohz_full",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.core.netdev_max_backlog",
        "net.core.busy_poll",
        "net.core.busy_read",
        "net.ipv4.udp_mem",
        "ulimit -n",
        "memlock",
        "transparent hugepages",
        "cpu governor",
        "c-states",
        "clocksource",
        "/dev/shm",
        "io_uring",
    ] {
        get(name);
    }
    // Each NIC with a device has its queues, interrupts, RPS/XPS, rings,
    // offloads and XDP judged.
    let nics: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("device/driver").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for n in &nics {
        for what in [
            "queues",
            "irq affinity",
            "rps/xps",
            "rings",
            "gro/gso",
            "xdp",
        ] {
            get(&format!("nic {n} {what}"));
        }
    }
    // The figures agree with the host.
    let cpus = online().len();
    assert!(
        get("cpu")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("({cpus} logical CPUs")),
        "{}",
        get("cpu")
    );
    let hard = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let hard = hard.trim();
    assert!(
        hard == "unlimited" || get("ulimit -n")["detail"].as_str().unwrap().contains(hard),
        "{} vs {hard}",
        get("ulimit -n")
    );
    let rmem = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap();
    assert!(
        get("net.core.rmem_max")["detail"]
            .as_str()
            .unwrap()
            .starts_with(rmem.trim())
    );
    let clock =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap();
    assert!(
        get("clocksource")["detail"]
            .as_str()
            .unwrap()
            .starts_with(clock.trim())
    );
}

#[test]
fn tune_plan_assigns_online_cores_and_its_fragment_is_a_valid_configuration() {
    let (code, out) = rvoip(&["tune", "--plan", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let p = &v["plan"];
    let cpus = online();
    let list = |k: &str| -> Vec<u64> {
        p[k].as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect()
    };
    let workers = list("workers");
    assert!(!workers.is_empty(), "{p}");
    for k in ["housekeeping", "control_plane", "workers", "irqs"] {
        assert!(list(k).iter().all(|c| cpus.contains(c)), "{k}: {p}");
    }
    if cpus.len() > 1 {
        // Workers never share a core with housekeeping.
        assert!(
            workers.iter().all(|w| !list("housekeeping").contains(w)),
            "{p}"
        );
        let cmdline = p["cmdline"].as_str().unwrap();
        assert!(
            cmdline.contains("isolcpus=") && cmdline.contains("nohz_full="),
            "{p}"
        );
    }
    // The fragment, put into the default configuration, is accepted.
    let dir = common::test_dir("tune-plan");
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rvoip.toml"),
    )
    .unwrap();
    let fragment = p["config"].as_str().unwrap();
    assert!(base.contains("\ncores = \"all\"\n"));
    let cores = fragment
        .lines()
        .find(|l| l.starts_with("cores = "))
        .unwrap();
    let text = base.replacen("\ncores = \"all\"\n", &format!("\n{cores}\n"), 1);
    let config = dir.join("rvoip.toml");
    std::fs::write(&config, text).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/users.toml"),
        dir.join("users.toml"),
    )
    .unwrap();
    let (code, out) = rvoip(&["config-check", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tune_apply_dry_run_prints_commands_and_changes_nothing() {
    let before = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog").unwrap();
    let (code, out) = rvoip(&["tune", "--apply", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    for line in out.lines() {
        assert!(
            line.starts_with("sysctl -w ")
                || line.starts_with("echo ")
                || line.starts_with('#')
                || line.starts_with("nothing to apply"),
            "{line}"
        );
    }
    assert!(out.contains("# not applied (needs a reboot): kernel command line"));
    let after = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog").unwrap();
    assert_eq!(before, after);
}
