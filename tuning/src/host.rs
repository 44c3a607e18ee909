//! `rvoip tune`: what the host is ([`Facts`], read from `/proc` and `/sys`
//! under a root that tests point at a tree of their own), whether it suits
//! the appliance ([`checks`]), which core should do what ([`plan`]) and
//! what to write where to get there ([`actions`]).
//!
//! Reading is the only I/O here; what cannot be read is `None` and judged
//! as unknown, never a panic. Running `ethtool` and probing io_uring are
//! the caller's (the `rvoip` binary's): their answers come in as facts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One logical CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// Its id.
    pub id: usize,
    /// The physical core's id within its package.
    pub core: usize,
    /// The package (socket).
    pub package: usize,
    /// Its NUMA node.
    pub node: usize,
    /// The logical CPUs of its physical core (itself included).
    pub siblings: Vec<usize>,
}

/// One network interface (loopback and virtual ones without a device
/// left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Its name.
    pub name: String,
    /// Its driver.
    pub driver: String,
    /// Receive and transmit queues.
    pub rx_queues: usize,
    /// Transmit queues.
    pub tx_queues: usize,
    /// Its interrupts and the CPUs each may run on.
    pub irqs: Vec<(u32, Vec<usize>)>,
    /// RPS CPU masks of its receive queues (hex, as the kernel writes).
    pub rps: Vec<String>,
    /// XPS CPU masks of its transmit queues.
    pub xps: Vec<String>,
    /// Receive ring: current and largest (from `ethtool -g`).
    pub rx_ring: Option<(u32, u32)>,
    /// Offloads (from `ethtool -k`): GRO, GSO.
    pub gro: Option<bool>,
    /// Generic segmentation offload.
    pub gso: Option<bool>,
}

/// What the host is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// CPU model name.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: Vec<Cpu>,
    /// `isolcpus` CPUs.
    pub isolated: Vec<usize>,
    /// `nohz_full` CPUs.
    pub nohz_full: Vec<usize>,
    /// The kernel command line.
    pub cmdline: String,
    /// Network interfaces.
    pub nics: Vec<Nic>,
    /// The sysctls rvoip cares about, as read.
    pub sysctls: BTreeMap<String, String>,
    /// Open files: soft and hard limit of the process that looked.
    pub nofile: Option<(u64, u64)>,
    /// Locked memory, octets (`u64::MAX`: unlimited).
    pub memlock: Option<(u64, u64)>,
    /// Transparent huge pages mode (`always`, `madvise`, `never`).
    pub thp: Option<String>,
    /// CPU frequency governor per CPU (none: no cpufreq, as in most VMs).
    pub governors: BTreeMap<usize, String>,
    /// Idle states of CPU 0: name, exit latency (µs), disabled.
    pub cstates: Vec<(String, u32, bool)>,
    /// The clock source.
    pub clocksource: Option<String>,
    /// Size of `/dev/shm`, octets.
    pub shm_bytes: Option<u64>,
    /// io_uring: usable, or why not.
    pub io_uring: Option<Result<(), String>>,
    /// `CONFIG_XDP_SOCKETS` of the running kernel.
    pub xdp_sockets: Option<bool>,
    /// Where it was read from (`/` on a real host).
    #[serde(skip)]
    pub root: PathBuf,
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path.trim_start_matches('/')))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A kernel CPU list (`0-3,8,10-11`).
pub fn cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    out.extend(a..=b.min(a + 4096));
                }
            }
            None => out.extend(part.trim().parse::<usize>().ok()),
        }
    }
    out
}

/// The CPU list of a hex mask as the kernel writes it (`00000000,0000000f`).
pub fn mask_cpus(mask: &str) -> Vec<usize> {
    let hex: String = mask.chars().filter(|c| *c != ',').collect();
    let mut out = Vec::new();
    for (i, c) in hex.chars().rev().enumerate() {
        if let Some(d) = c.to_digit(16) {
            out.extend((0..4).filter(|b| d & (1 << b) != 0).map(|b| i * 4 + b));
        }
    }
    out.sort_unstable();
    out
}

/// Writes CPUs as a kernel list (`0-3,8`).
pub fn write_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        while i + 1 < v.len() && v[i + 1] == v[i] + 1 {
            i += 1;
        }
        parts.push(if v[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", v[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// The sysctls read and set.
pub const SYSCTLS: &[&str] = &[
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.netdev_max_backlog",
    "net.core.busy_poll",
    "net.core.busy_read",
    "net.ipv4.udp_mem",
    "kernel.io_uring_disabled",
    "kernel.numa_balancing",
];

impl Facts {
    /// Reads what `/proc` and `/sys` under `root` say. `ethtool`, limits
    /// and io_uring are filled in by the caller.
    pub fn read(root: &Path) -> Facts {
        let mut f = Facts {
            root: root.to_path_buf(),
            ..Facts::default()
        };
        f.cpu_model = read(root, "/proc/cpuinfo")
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let nodes: Vec<(usize, Vec<usize>)> = (0..64)
            .filter_map(|n| {
                read(root, &format!("/sys/devices/system/node/node{n}/cpulist"))
                    .map(|l| (n, cpu_list(&l)))
            })
            .collect();
        for id in cpu_list(&read(root, "/sys/devices/system/cpu/online").unwrap_or_default()) {
            let t = |k: &str| {
                read(
                    root,
                    &format!("/sys/devices/system/cpu/cpu{id}/topology/{k}"),
                )
            };
            f.cpus.push(Cpu {
                id,
                core: t("core_id").and_then(|v| v.parse().ok()).unwrap_or(id),
                package: t("physical_package_id")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                node: nodes
                    .iter()
                    .find(|(_, c)| c.contains(&id))
                    .map_or(0, |(n, _)| *n),
                siblings: t("thread_siblings_list")
                    .map(|l| cpu_list(&l))
                    .unwrap_or_else(|| vec![id]),
            });
            if let Some(g) = read(
                root,
                &format!("/sys/devices/system/cpu/cpu{id}/cpufreq/scaling_governor"),
            ) {
                f.governors.insert(id, g);
            }
        }
        f.isolated = cpu_list(&read(root, "/sys/devices/system/cpu/isolated").unwrap_or_default());
        f.nohz_full =
            cpu_list(&read(root, "/sys/devices/system/cpu/nohz_full").unwrap_or_default());
        f.cmdline = read(root, "/proc/cmdline").unwrap_or_default();
        for k in SYSCTLS {
            if let Some(v) = read(root, &format!("/proc/sys/{}", k.replace('.', "/"))) {
                f.sysctls.insert(
                    (*k).to_string(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                );
            }
        }
        f.thp = read(root, "/sys/kernel/mm/transparent_hugepage/enabled").and_then(|t| {
            t.split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(['[', ']']).to_string())
        });
        f.cstates = (0..16)
            .map_while(|i| {
                let s = |k: &str| {
                    read(
                        root,
                        &format!("/sys/devices/system/cpu/cpu0/cpuidle/state{i}/{k}"),
                    )
                };
                Some((
                    s("name")?,
                    s("latency").and_then(|v| v.parse().ok()).unwrap_or(0),
                    s("disable").is_some_and(|v| v == "1"),
                ))
            })
            .collect();
        f.clocksource = read(
            root,
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        );
        let interrupts = read(root, "/proc/interrupts").unwrap_or_default();
        let mut names: Vec<String> = std::fs::read_dir(root.join("sys/class/net"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for name in names {
            let dev = root.join("sys/class/net").join(&name).join("device");
            let Ok(driver) = std::fs::read_link(dev.join("driver")) else {
                continue;
            };
            let driver = driver
                .file_name()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Interrupts named after the interface or its device
            // (`virtio2-input.0`, `eth0-TxRx-0`, `mlx5_comp0@pci:…`).
            let device = std::fs::read_link(&dev)
                .ok()
                .and_then(|p| p.file_name().map(|d| d.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let irqs = interrupts
                .lines()
                .filter_map(|l| {
                    let (n, rest) = l.trim_start().split_once(':')?;
                    let irq: u32 = n.parse().ok()?;
                    let label = rest.split_whitespace().last()?;
                    let ours = label.starts_with(&format!("{name}-"))
                        || label == name
                        || (!device.is_empty()
                            && (label.starts_with(&format!("{device}-input"))
                                || label.starts_with(&format!("{device}-output"))));
                    ours.then(|| {
                        let aff = read(root, &format!("/proc/irq/{irq}/smp_affinity_list"))
                            .map(|l| cpu_list(&l))
                            .unwrap_or_default();
                        (irq, aff)
                    })
                })
                .collect();
            let queues = |prefix: &str, file: &str| -> Vec<String> {
                let dir = root.join("sys/class/net").join(&name).join("queues");
                let mut q: Vec<String> = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.starts_with(prefix))
                            .collect()
                    })
                    .unwrap_or_default();
                q.sort();
                q.iter()
                    .map(|n| {
                        std::fs::read_to_string(dir.join(n).join(file))
                            .map(|s| s.trim().to_string())
                            .unwrap_or_default()
                    })
                    .collect()
            };
            let rps = queues("rx-", "rps_cpus");
            let xps = queues("tx-", "xps_cpus");
            f.nics.push(Nic {
                name,
                driver,
                rx_queues: rps.len(),
                tx_queues: xps.len(),
                irqs,
                rps,
                xps,
                rx_ring: None,
                gro: None,
                gso: None,
            });
        }
        f
    }

    /// Fills a NIC's ring and offloads from `ethtool -g` and `ethtool -k`.
    pub fn add_ethtool(&mut self, nic: &str, rings: &str, features: &str) {
        let Some(n) = self.nics.iter_mut().find(|n| n.name == nic) else {
            return;
        };
        let rx: Vec<u32> = rings
            .lines()
            .filter_map(|l| l.strip_prefix("RX:"))
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        if let [max, cur] = rx[..] {
            n.rx_ring = Some((cur, max));
        }
        let on = |key: &str| {
            features
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(|v| v.trim().starts_with("on"))
        };
        n.gro = on("generic-receive-offload:");
        n.gso = on("generic-segmentation-offload:");
    }

    /// Physical cores, each as the list of its logical CPUs, in order.
    pub fn cores(&self) -> Vec<Vec<usize>> {
        let mut seen: Vec<Vec<usize>> = Vec::new();
        for c in &self.cpus {
            let mut s = c.siblings.clone();
            s.retain(|id| self.cpus.iter().any(|c| c.id == *id));
            s.sort_unstable();
            if s.is_empty() {
                s.push(c.id);
            }
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        seen
    }

    fn sysctl(&self, k: &str) -> Option<u64> {
        self.sysctls.get(k)?.split_whitespace().next()?.parse().ok()
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, costs latency or capacity.
    Warn,
    /// Stops or impairs the appliance.
    Fail,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was looked at.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do (empty when ok).
    pub fix: String,
}

fn check(name: &str, status: Status, detail: String, fix: String) -> Check {
    Check {
        name: name.into(),
        status,
        detail,
        fix,
    }
}

/// Receive and send buffer the SIP workers ask for, octets.
const SOCKET_BUFFER: u64 = 4 << 20;

/// Judges the host for `workers` dataplane workers (0: as the plan has).
pub fn checks(f: &Facts) -> Vec<Check> {
    use Status::{Fail, Ok, Warn};
    let p = plan(f);
    let mut out = Vec::new();
    let cores = f.cores();
    out.push(check(
        "cpu",
        if f.cpus.is_empty() { Fail } else { Ok },
        format!(
            "{} ({} logical CPUs, {} physical cores, {} package(s))",
            if f.cpu_model.is_empty() {
                "unknown model"
            } else {
                &f.cpu_model
            },
            f.cpus.len(),
            cores.len(),
            f.cpus.iter().map(|c| c.package).max().map_or(0, |m| m + 1)
        ),
        String::new(),
    ));
    let smt = cores.iter().any(|c| c.len() > 1);
    out.push(if smt {
        check(
            "smt",
            Warn,
            "SMT siblings share a core: a worker's latency depends on its sibling".into(),
            format!(
                "pin one worker per physical core ({}); leave siblings to housekeeping, or turn SMT off (echo off > /sys/devices/system/cpu/smt/control)",
                write_list(&p.workers)
            ),
        )
    } else {
        check("smt", Ok, "one thread per core".into(), String::new())
    });
    let nodes = f.cpus.iter().map(|c| c.node).max().map_or(1, |m| m + 1);
    out.push(if nodes > 1 {
        check(
            "numa",
            Warn,
            format!("{nodes} NUMA nodes"),
            "keep the workers, their NIC and its interrupts on one node (lstopo shows where the NIC is)".into(),
        )
    } else {
        check("numa", Ok, "one NUMA node".into(), String::new())
    });
    let isolated_ok = p.workers.iter().all(|w| f.isolated.contains(w));
    out.push(if isolated_ok && !p.workers.is_empty() {
        check(
            "isolcpus",
            Ok,
            format!("workers' cores isolated: {}", write_list(&f.isolated)),
            String::new(),
        )
    } else {
        check(
            "isolcpus",
            Warn,
            format!(
                "isolated: {}",
                if f.isolated.is_empty() {
                    "none".into()
                } else {
                    write_list(&f.isolated)
                }
            ),
            format!("kernel command line: {}", p.cmdline),
        )
    });
    let nohz_ok = p.workers.iter().all(|w| f.nohz_full.contains(w));
    out.push(check(
        "nohz_full",
        if nohz_ok && !p.workers.is_empty() {
            Ok
        } else {
            Warn
        },
        format!(
            "nohz_full: {}",
            if f.nohz_full.is_empty() {
                "none".into()
            } else {
                write_list(&f.nohz_full)
            }
        ),
        if nohz_ok {
            String::new()
        } else {
            format!("kernel command line: {}", p.cmdline)
        },
    ));
    if f.nics.is_empty() {
        out.push(check(
            "nic",
            Warn,
            "no network device found".into(),
            "ip link: the interfaces rvoip serves".into(),
        ));
    }
    for n in &f.nics {
        let w = p.workers.len().max(1);
        out.push(check(
            &format!("nic {} queues", n.name),
            if n.rx_queues >= w { Ok } else { Warn },
            format!("{} ({}): {} rx / {} tx queues for {w} workers", n.name, n.driver, n.rx_queues, n.tx_queues),
            if n.rx_queues >= w {
                String::new()
            } else {
                format!("ethtool -L {} combined {w} (if the NIC has them); else spread receive work with RPS (see the rps check)", n.name)
            },
        ));
        let stray: Vec<u32> = n
            .irqs
            .iter()
            .filter(|(_, aff)| aff.iter().any(|c| p.workers.contains(c)))
            .map(|(i, _)| *i)
            .collect();
        out.push(check(
            &format!("nic {} irq affinity", n.name),
            if stray.is_empty() { Ok } else { Warn },
            format!(
                "{} interrupts; {} may run on worker cores",
                n.irqs.len(),
                stray.len()
            ),
            if stray.is_empty() {
                String::new()
            } else {
                format!(
                    "IRQs {} to {} (rvoip tune --apply)",
                    stray
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    write_list(&p.irqs)
                )
            },
        ));
        let rps_set = n.rps.iter().any(|m| !mask_cpus(m).is_empty());
        let needs_rps = n.rx_queues < w;
        out.push(check(
            &format!("nic {} rps/xps", n.name),
            if needs_rps && !rps_set { Warn } else { Ok },
            format!(
                "RPS {}; XPS {}",
                if rps_set { "on" } else { "off" },
                if n.xps.iter().any(|m| !mask_cpus(m).is_empty()) { "on" } else { "off" }
            ),
            if needs_rps && !rps_set {
                format!("fewer queues than workers: spread with RPS over the housekeeping cores ({}) (rvoip tune --apply)", write_list(&p.irqs))
            } else {
                String::new()
            },
        ));
        out.push(match n.rx_ring {
            Some((cur, max)) if cur < max => check(
                &format!("nic {} rings", n.name),
                Warn,
                format!("rx ring {cur} of {max}"),
                format!("ethtool -G {} rx {max}", n.name),
            ),
            Some((cur, max)) => check(
                &format!("nic {} rings", n.name),
                Ok,
                format!("rx ring {cur} of {max}"),
                String::new(),
            ),
            None => check(
                &format!("nic {} rings", n.name),
                Warn,
                "unknown (ethtool not installed or not supported)".into(),
                "apt install ethtool".into(),
            ),
        });
        out.push(check(
            &format!("nic {} gro/gso", n.name),
            Ok,
            format!(
                "GRO {}, GSO {} (rvoip's SIP workers batch with UDP_GRO/UDP_SEGMENT either way)",
                on_off(n.gro),
                on_off(n.gso)
            ),
            String::new(),
        ));
        let native = XDP_DRIVERS.contains(&n.driver.as_str());
        out.push(check(
            &format!("nic {} xdp", n.name),
            if native && f.xdp_sockets != Some(false) {
                Ok
            } else {
                Warn
            },
            format!(
                "driver {}: {} XDP; kernel AF_XDP sockets: {}",
                n.driver,
                if native {
                    "native"
                } else {
                    "generic (slow) only"
                },
                match f.xdp_sockets {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                }
            ),
            if native {
                String::new()
            } else {
                "a NIC whose driver has native XDP for the kernel-bypass path".into()
            },
        ));
    }
    for (k, min) in [
        ("net.core.rmem_max", SOCKET_BUFFER),
        ("net.core.wmem_max", SOCKET_BUFFER),
        ("net.core.netdev_max_backlog", 10_000),
    ] {
        out.push(match f.sysctl(k) {
            Some(v) if v >= min => check(k, Ok, v.to_string(), String::new()),
            Some(v) => check(
                k,
                Warn,
                format!("{v} (below {min})"),
                format!(
                    "sysctl -w {k}={}",
                    min * if k.ends_with("backlog") { 1 } else { 4 }
                ),
            ),
            None => check(k, Warn, "unknown".into(), format!("sysctl {k}")),
        });
    }
    for k in ["net.core.busy_poll", "net.core.busy_read"] {
        out.push(check(
            k,
            Ok,
            format!(
                "{} (µs; 50 suits [dataplane] polling = \"adaptive\", 0 interrupt mode)",
                f.sysctl(k).map_or("unknown".into(), |v| v.to_string())
            ),
            String::new(),
        ));
    }
    out.push(check(
        "net.ipv4.udp_mem",
        Ok,
        f.sysctls
            .get("net.ipv4.udp_mem")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        String::new(),
    ));
    out.push(match f.nofile {
        Some((_, hard)) if hard >= 65_536 => {
            check("ulimit -n", Ok, format!("hard limit {hard}"), String::new())
        }
        Some((_, hard)) if hard >= 20_000 => check(
            "ulimit -n",
            Warn,
            format!(
                "hard limit {hard}: about {} calls on the fallback driver (two descriptors each)",
                hard / 2
            ),
            "LimitNOFILE=1048576 in the unit (deploy/systemd), or /etc/security/limits.conf".into(),
        ),
        Some((_, hard)) => check(
            "ulimit -n",
            Fail,
            format!("hard limit {hard}: too few for 10,000 calls"),
            "LimitNOFILE=1048576 in the unit (deploy/systemd)".into(),
        ),
        None => check("ulimit -n", Warn, "unknown".into(), "ulimit -Hn".into()),
    });
    out.push(match f.memlock {
        Some((_, hard)) if hard == u64::MAX || hard >= 64 << 20 => {
            check("memlock", Ok, limit(hard), String::new())
        }
        Some((_, hard)) => check(
            "memlock",
            Warn,
            format!(
                "{}: io_uring rings and AF_XDP buffers are locked memory",
                limit(hard)
            ),
            "LimitMEMLOCK=infinity in the unit (deploy/systemd)".into(),
        ),
        None => check("memlock", Warn, "unknown".into(), "ulimit -Hl".into()),
    });
    out.push(match f.thp.as_deref() {
        Some("always") => check(
            "transparent hugepages",
            Warn,
            "always: compaction stalls reach the workers".into(),
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (rvoip tune --apply)"
                .into(),
        ),
        Some(m) => check("transparent hugepages", Ok, m.into(), String::new()),
        None => check(
            "transparent hugepages",
            Ok,
            "not available".into(),
            String::new(),
        ),
    });
    let slow: Vec<usize> = f
        .governors
        .iter()
        .filter(|(_, g)| *g != "performance")
        .map(|(c, _)| *c)
        .collect();
    out.push(if f.governors.is_empty() {
        check("cpu governor", Ok, "no cpufreq (frequency set by the host or firmware)".into(), String::new())
    } else if slow.is_empty() {
        check("cpu governor", Ok, "performance".into(), String::new())
    } else {
        check(
            "cpu governor",
            Warn,
            format!("not performance on {}", write_list(&slow)),
            "echo performance > /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor (rvoip tune --apply)".into(),
        )
    });
    let deep: Vec<&(String, u32, bool)> = f
        .cstates
        .iter()
        .filter(|(_, lat, off)| *lat > 10 && !off)
        .collect();
    out.push(if deep.is_empty() {
        check(
            "c-states",
            Ok,
            if f.cstates.is_empty() { "no cpuidle states".into() } else { "no deep state enabled".into() },
            String::new(),
        )
    } else {
        check(
            "c-states",
            Warn,
            format!(
                "deep states enabled: {}",
                deep.iter().map(|(n, l, _)| format!("{n} ({l} µs)")).collect::<Vec<_>>().join(", ")
            ),
            "cpupower idle-set -D 10, or processor.max_cstate=1 intel_idle.max_cstate=1 on the kernel command line".into(),
        )
    });
    out.push(match f.clocksource.as_deref() {
        Some(c @ ("tsc" | "kvm-clock" | "arch_sys_counter")) => {
            check("clocksource", Ok, c.into(), String::new())
        }
        Some(c) => check(
            "clocksource",
            Warn,
            format!("{c}: reading the clock is a system call"),
            "tsc=reliable on the kernel command line if the TSC is stable".into(),
        ),
        None => check(
            "clocksource",
            Warn,
            "unknown".into(),
            "cat /sys/devices/system/clocksource/clocksource0/current_clocksource".into(),
        ),
    });
    out.push(match f.shm_bytes {
        Some(b) if b >= 256 << 20 => {
            check("/dev/shm", Ok, format!("{} MiB", b >> 20), String::new())
        }
        Some(b) => check(
            "/dev/shm",
            Warn,
            format!("{} MiB: the rings need up to 64 MiB per worker", b >> 20),
            "mount -o remount,size=1G /dev/shm".into(),
        ),
        None => check(
            "/dev/shm",
            Fail,
            "missing: the rings live there".into(),
            "mount -t tmpfs tmpfs /dev/shm".into(),
        ),
    });
    out.push(match (&f.io_uring, f.sysctl("kernel.io_uring_disabled")) {
        (Some(Result::Ok(())), _) => check("io_uring", Ok, "available".into(), String::new()),
        (Some(Err(e)), d) => check(
            "io_uring",
            Warn,
            format!("refused ({e}): the relay and SIP workers fall back to recvmmsg/poll"),
            if d.is_some_and(|d| d > 0) {
                "sysctl -w kernel.io_uring_disabled=0".into()
            } else {
                "a kernel with io_uring (5.19 or later), not blocked by seccomp".into()
            },
        ),
        (None, _) => check(
            "io_uring",
            Warn,
            "not probed".into(),
            "rvoip tune --check on the host probes it".into(),
        ),
    });
    out
}

fn on_off(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        format!("{} KiB", v >> 10)
    }
}

/// Drivers with native XDP in the mainline kernel.
const XDP_DRIVERS: &[&str] = &[
    "mlx5_core",
    "mlx4_en",
    "i40e",
    "ice",
    "ixgbe",
    "igb",
    "igc",
    "ixgbevf",
    "bnxt_en",
    "qede",
    "nfp",
    "ena",
    "virtio_net",
    "veth",
    "tun",
    "sfc",
    "enetc",
    "stmmac",
    "mvneta",
    "mvpp2",
];

/// Which core does what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Housekeeping: the system, timers, the kernel's work.
    pub housekeeping: Vec<usize>,
    /// The control plane.
    pub control_plane: Vec<usize>,
    /// One dataplane worker each.
    pub workers: Vec<usize>,
    /// NIC interrupts (and RPS where queues are fewer than workers).
    pub irqs: Vec<usize>,
    /// The kernel command line that isolates the workers' cores.
    pub cmdline: String,
    /// The configuration fragment.
    pub config: String,
    /// The systemd drop-in keeping everything but the workers off their
    /// cores.
    pub systemd: String,
}

/// The per-core assignment of this host: the first physical core for
/// housekeeping and NIC interrupts (with the control plane on up to four
/// cores; its own core beyond), one worker on each other physical core
/// (its first thread; SMT siblings stay idle for them). A one-core host
/// runs everything on it.
pub fn plan(f: &Facts) -> Plan {
    let cores = f.cores();
    let first = cores.first().cloned().unwrap_or_else(|| vec![0]);
    let (housekeeping, control_plane, workers): (Vec<usize>, Vec<usize>, Vec<usize>) =
        match cores.len() {
            0 | 1 => (first.clone(), first.clone(), vec![first[0]]),
            2..=4 => (
                first.clone(),
                first.clone(),
                cores[1..].iter().map(|c| c[0]).collect(),
            ),
            _ => (
                first.clone(),
                cores[1].clone(),
                cores[2..].iter().map(|c| c[0]).collect(),
            ),
        };
    let isolate = if cores.len() > 1 {
        write_list(&workers)
    } else {
        String::new()
    };
    let cmdline = if isolate.is_empty() {
        "(one core: nothing to isolate)".into()
    } else {
        format!(
            "isolcpus=managed_irq,domain,{isolate} nohz_full={isolate} rcu_nocbs={isolate} irqaffinity={}",
            write_list(&housekeeping)
        )
    };
    let config = format!(
        "[dataplane]\n# One worker per core below; the control plane and the system on {}.\ncores = [{}]\n",
        write_list(&control_plane),
        workers
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut others = housekeeping.clone();
    others.extend(&control_plane);
    let systemd = format!(
        "# /etc/systemd/system/rvoip.service.d/cpus.conf\n[Service]\n# The workers pin themselves to their cores; every other thread stays here.\nCPUAffinity={}\n",
        write_list(&others).replace(',', " ")
    );
    Plan {
        irqs: housekeeping.clone(),
        housekeeping,
        control_plane,
        workers,
        cmdline,
        config,
        systemd,
    }
}

/// A write that tunes the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// The file.
    pub path: PathBuf,
    /// What goes in.
    pub value: String,
    /// Why.
    pub why: String,
}

impl Action {
    /// The shell command that does it.
    pub fn command(&self) -> String {
        let p = self.path.to_string_lossy();
        match p.strip_prefix("/proc/sys/") {
            Some(k) => format!("sysctl -w {}=\"{}\"", k.replace('/', "."), self.value),
            None => format!("echo {} > {p}", self.value),
        }
    }
}

/// What `--apply` writes: sysctls below their need, NIC interrupts and RPS
/// onto the housekeeping cores, the performance governor, THP off
/// `always`. The kernel command line is printed, not written.
pub fn actions(f: &Facts) -> Vec<Action> {
    let p = plan(f);
    let mut out = Vec::new();
    let mut sysctl = |k: &str, v: String, why: &str| {
        out.push(Action {
            path: PathBuf::from(format!("/proc/sys/{}", k.replace('.', "/"))),
            value: v,
            why: why.into(),
        });
    };
    for k in ["net.core.rmem_max", "net.core.wmem_max"] {
        if f.sysctl(k).is_none_or(|v| v < SOCKET_BUFFER) {
            sysctl(
                k,
                (SOCKET_BUFFER * 4).to_string(),
                "room for the SIP workers' 4 MiB socket buffers",
            );
        }
    }
    if f.sysctl("net.core.netdev_max_backlog")
        .is_none_or(|v| v < 10_000)
    {
        sysctl(
            "net.core.netdev_max_backlog",
            "10000".into(),
            "bursts of media are queued, not dropped",
        );
    }
    let irqs = write_list(&p.irqs);
    let mask = {
        let bits: u64 = p.irqs.iter().filter(|c| **c < 64).map(|c| 1u64 << c).sum();
        format!("{bits:x}")
    };
    for n in &f.nics {
        for (irq, aff) in &n.irqs {
            if *aff != p.irqs {
                out.push(Action {
                    path: PathBuf::from(format!("/proc/irq/{irq}/smp_affinity_list")),
                    value: irqs.clone(),
                    why: format!("{} interrupts off the workers' cores", n.name),
                });
            }
        }
        if n.rx_queues < p.workers.len() {
            for (q, m) in n.rps.iter().enumerate() {
                if mask_cpus(m) != p.irqs {
                    out.push(Action {
                        path: PathBuf::from(format!("/sys/class/net/{}/queues/rx-{q}/rps_cpus", n.name)),
                        value: mask.clone(),
                        why: format!("{}: receive work of a queue shared by several workers on the housekeeping cores", n.name),
                    });
                }
            }
        }
    }
    for (cpu, g) in &f.governors {
        if g != "performance" {
            out.push(Action {
                path: PathBuf::from(format!(
                    "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
                )),
                value: "performance".into(),
                why: "no frequency ramp-up delay under bursts".into(),
            });
        }
    }
    if f.thp.as_deref() == Some("always") {
        out.push(Action {
            path: PathBuf::from("/sys/kernel/mm/transparent_hugepage/enabled"),
            value: "madvise".into(),
            why: "no compaction stalls in the workers".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host tree: 4 logical CPUs on 2 cores (SMT), one NIC with two
    /// interrupts on CPU 1 and one queue, THP always, no cpufreq.
    fn host() -> PathBuf {
        let root = std::env::temp_dir().join(format!("rvoip-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = |p: &str, v: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap_or(&root)).unwrap_or_default();
            std::fs::write(p, v).unwrap_or_default();
        };
        w(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU 9000\n",
        );
        w("sys/devices/system/cpu/online", "0-3\n");
        for (cpu, core, sib) in [(0, 0, "0,2"), (1, 1, "1,3"), (2, 0, "0,2"), (3, 1, "1,3")] {
            w(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/core_id"),
                &core.to_string(),
            );
            w(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"),
                "0",
            );
            w(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"),
                sib,
            );
        }
        w("sys/devices/system/node/node0/cpulist", "0-3");
        w("sys/devices/system/cpu/isolated", "\n");
        w(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        );
        w("proc/sys/net/core/rmem_max", "212992\n");
        w("proc/sys/net/core/wmem_max", "16777216\n");
        w("proc/sys/net/core/netdev_max_backlog", "1000\n");
        w(
            "proc/interrupts",
            "           CPU0       CPU1\n 38:   0   21191   PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n 39:   14381   0   PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n 40:  5  5  IO-APIC  timer\n",
        );
        w("proc/irq/38/smp_affinity_list", "1\n");
        w("proc/irq/39/smp_affinity_list", "0\n");
        w(
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            "tsc\n",
        );
        w("devices/virtio2/placeholder", "");
        w("drivers/virtio_net/placeholder", "");
        w("sys/class/net/eth0/queues/rx-0/rps_cpus", "0\n");
        w("sys/class/net/eth0/queues/tx-0/xps_cpus", "0\n");
        let dev = root.join("sys/class/net/eth0/device");
        let _ = std::os::unix::fs::symlink(root.join("devices/virtio2"), &dev);
        let _ = std::os::unix::fs::symlink(
            root.join("drivers/virtio_net"),
            root.join("devices/virtio2/driver"),
        );
        root
    }

    #[test]
    fn lists_and_masks_read_and_write_as_the_kernel_writes_them() {
        assert_eq!(cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(cpu_list(""), Vec::<usize>::new());
        assert_eq!(mask_cpus("00000000,0000000f"), vec![0, 1, 2, 3]);
        assert_eq!(mask_cpus("0"), Vec::<usize>::new());
        assert_eq!(mask_cpus("100000001"), vec![0, 32]);
        assert_eq!(write_list(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
    }

    #[test]
    fn a_host_tree_reads_as_its_facts_and_gets_its_checks_plan_and_actions() {
        let root = host();
        let mut f = Facts::read(&root);
        // What the binary fills in.
        f.nofile = Some((1024, 20_000));
        f.memlock = Some((8 << 20, 8 << 20));
        f.shm_bytes = Some(64 << 20);
        f.io_uring = Some(Err("Operation not permitted".into()));
        f.add_ethtool("eth0", "Pre-set maximums:\nRX:\t\t4096\nTX:\t\t4096\nCurrent hardware settings:\nRX:\t\t256\nTX:\t\t256\n", "generic-segmentation-offload: on\ngeneric-receive-offload: off [fixed]\n");
        assert_eq!(f.nics[0].rx_ring, Some((256, 4096)));
        assert_eq!((f.nics[0].gro, f.nics[0].gso), (Some(false), Some(true)));
        assert_eq!(f.cpu_model, "Test CPU 9000");
        assert_eq!(f.cores(), vec![vec![0, 2], vec![1, 3]]);
        assert_eq!(f.nics.len(), 1);
        let n = &f.nics[0];
        assert_eq!((n.name.as_str(), n.driver.as_str()), ("eth0", "virtio_net"));
        assert_eq!(n.irqs, vec![(38, vec![1]), (39, vec![0])]);
        assert_eq!((n.rx_queues, n.tx_queues), (1, 1));
        assert_eq!(f.thp.as_deref(), Some("always"));
        // Two cores: housekeeping and control plane on the first, a worker
        // on the second's first thread.
        let p = plan(&f);
        assert_eq!(
            (p.housekeeping.clone(), p.workers.clone()),
            (vec![0, 2], vec![1])
        );
        assert!(p.config.contains("cores = [1]"), "{}", p.config);
        assert!(
            p.cmdline
                .contains("isolcpus=managed_irq,domain,1 nohz_full=1"),
            "{}",
            p.cmdline
        );
        assert!(p.systemd.contains("CPUAffinity=0 2"), "{}", p.systemd);
        let c = checks(&f);
        let status = |name: &str| c.iter().find(|x| x.name == name).map(|x| x.status);
        assert_eq!(status("smt"), Some(Status::Warn));
        assert_eq!(status("isolcpus"), Some(Status::Warn));
        assert_eq!(status("nic eth0 irq affinity"), Some(Status::Warn));
        assert_eq!(status("net.core.rmem_max"), Some(Status::Warn));
        assert_eq!(status("net.core.wmem_max"), Some(Status::Ok));
        assert_eq!(status("transparent hugepages"), Some(Status::Warn));
        assert_eq!(status("clocksource"), Some(Status::Ok));
        assert_eq!(status("nic eth0 xdp"), Some(Status::Ok));
        assert_eq!(status("nic eth0 rings"), Some(Status::Warn));
        assert_eq!(status("ulimit -n"), Some(Status::Warn));
        assert_eq!(status("memlock"), Some(Status::Warn));
        assert_eq!(status("/dev/shm"), Some(Status::Warn));
        assert_eq!(status("io_uring"), Some(Status::Warn));
        assert!(
            c.iter()
                .all(|x| x.status == Status::Ok || !x.fix.is_empty()),
            "{c:?}"
        );
        let a = actions(&f);
        let cmds: Vec<String> = a.iter().map(Action::command).collect();
        assert!(
            cmds.contains(&"sysctl -w net.core.rmem_max=\"16777216\"".to_string()),
            "{cmds:?}"
        );
        assert!(!cmds.iter().any(|c| c.contains("wmem_max")), "{cmds:?}");
        assert!(cmds.contains(&"sysctl -w net.core.netdev_max_backlog=\"10000\"".to_string()));
        assert!(
            cmds.contains(&"echo 0,2 > /proc/irq/38/smp_affinity_list".to_string()),
            "{cmds:?}"
        );
        assert!(
            cmds.contains(&"echo 0,2 > /proc/irq/39/smp_affinity_list".to_string()),
            "{cmds:?}"
        );
        // One queue for one worker: no RPS needed.
        assert!(!cmds.iter().any(|c| c.contains("rps_cpus")), "{cmds:?}");
        assert!(
            cmds.contains(
                &"echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".to_string()
            )
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn plans_for_one_and_many_cores() {
        let facts = |n: usize| Facts {
            cpus: (0..n)
                .map(|id| Cpu {
                    id,
                    core: id,
                    package: 0,
                    node: 0,
                    siblings: vec![id],
                })
                .collect(),
            ..Facts::default()
        };
        let one = plan(&facts(1));
        assert_eq!(
            (one.workers.clone(), one.control_plane.clone()),
            (vec![0], vec![0])
        );
        let eight = plan(&facts(8));
        assert_eq!(eight.housekeeping, vec![0]);
        assert_eq!(eight.control_plane, vec![1]);
        assert_eq!(eight.workers, vec![2, 3, 4, 5, 6, 7]);
    }
}
