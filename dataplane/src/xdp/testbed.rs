//! The AF_XDP test topology, for tests and benchmarks (as root):
//! network namespace `rvx` holding veth `rvx0` with 10.99.0.1/24, its peer
//! `rvx1` with 10.99.0.2/24 in namespace `rvxpeer`, both links and both
//! loopbacks up. Made by [`Topology::up`], removed when it drops; traffic
//! stays inside the two namespaces.
#![allow(unsafe_code)]

use std::io;
use std::process::Command;

/// rvoip's side of the topology.
pub const RVX: &str = "rvx";
/// The peers' side.
pub const PEER: &str = "rvxpeer";
/// rvoip's address.
pub const RVX_ADDR: &str = "10.99.0.1";
/// The peers' address.
pub const PEER_ADDR: &str = "10.99.0.2";

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The topology; removed when dropped.
#[derive(Debug)]
pub struct Topology(());

impl Topology {
    /// Makes the topology (one an interrupted run left goes first).
    pub fn up() -> io::Result<Topology> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the AF_XDP topology needs root (network namespaces, XDP)",
            ));
        }
        remove();
        ip(&["netns", "add", RVX])?;
        let t = Topology(());
        ip(&["netns", "add", PEER])?;
        ip(&[
            "-n", RVX, "link", "add", "rvx0", "type", "veth", "peer", "name", "rvx1", "netns", PEER,
        ])?;
        ip(&["-n", RVX, "addr", "add", "10.99.0.1/24", "dev", "rvx0"])?;
        ip(&["-n", PEER, "addr", "add", "10.99.0.2/24", "dev", "rvx1"])?;
        for (ns, dev) in [(RVX, "rvx0"), (PEER, "rvx1"), (RVX, "lo"), (PEER, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(t)
    }
}

/// Gives `rvx0` and `rvx1` `n` channels each (receive and transmit
/// queues: a frame lands on the queue its flow hashes to).
pub fn set_channels(n: u32) -> io::Result<()> {
    let n = n.to_string();
    for (ns, dev) in [(RVX, "rvx0"), (PEER, "rvx1")] {
        let ok = Command::new("ip")
            .args([
                "netns", "exec", ns, "ethtool", "-L", dev, "rx", &n, "tx", &n,
            ])
            .status()?
            .success();
        if !ok {
            return Err(io::Error::other(format!("ethtool -L {dev} rx {n} tx {n}")));
        }
    }
    Ok(())
}

fn remove() {
    for ns in [RVX, PEER] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        remove();
    }
}

/// Moves the calling thread into network namespace `ns` (its sockets, and
/// the processes it starts, live there from then on).
pub fn enter(ns: &str) -> io::Result<()> {
    let path = std::ffi::CString::new(format!("/var/run/netns/{ns}"))
        .map_err(|_| io::Error::other("namespace name"))?;
    // SAFETY: open(2) of a NUL-terminated path; the descriptor is closed
    // below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setns(2) on this thread with a namespace descriptor we own.
    let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    let e = io::Error::last_os_error();
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if r != 0 { Err(e) } else { Ok(()) }
}

/// The sum of the named `Udp:` counters of `/proc/net/snmp` of the calling
/// thread's namespace (`InDatagrams`, `NoPorts`, `OutDatagrams`, ...).
pub fn kernel_udp(fields: &[&str]) -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter(|(n, _)| fields.contains(n))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Whether `ip -n rvx link show rvx0` shows an XDP program.
pub fn link_shows_xdp() -> bool {
    Command::new("ip")
        .args(["-n", RVX, "link", "show", "rvx0"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
}

/// Sends `count` RTP packets (PCMU, 160 octets) from socket `a` to the
/// relay at `ra`, each to arrive at `b` from `rb` unchanged, and one back
/// from `b` to `rb` for each, to arrive at `a` from `ra`; the first
/// difference is the error.
pub fn rtp_both_ways(
    (a, b): (&std::net::UdpSocket, &std::net::UdpSocket),
    (ra, rb): (std::net::SocketAddr, std::net::SocketAddr),
    count: u16,
) -> Result<(), String> {
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend((0..160u16).map(|i| (i as u8) ^ (seq as u8)));
        for (from, to, via, back) in [(a, b, ra, rb), (b, a, rb, ra)] {
            from.send_to(&p, via)
                .map_err(|e| format!("send {seq}: {e}"))?;
            let (n, src) = to
                .recv_from(&mut buf)
                .map_err(|e| format!("packet {seq} to {via} not relayed: {e}"))?;
            if (src, &buf[..n]) != (back, &p[..]) {
                return Err(format!(
                    "packet {seq} to {via} came from {src} as {n} octets"
                ));
            }
            p[11] ^= 0x01;
        }
    }
    Ok(())
}

/// The media engine on AF_XDP on `rvx0` (the calling thread in `rvx`),
/// relay address 10.99.0.1, ports 30000-30099, as many workers as `cores`
/// asks and the link allows.
pub fn af_xdp_engine(cores: Vec<usize>) -> io::Result<crate::engine::media::MediaEngine> {
    use crate::engine::media::{DriverKind, MediaEngine, MediaEngineConfig, Polling};
    let ifindex = super::bpf::ifindex("rvx0")?;
    MediaEngine::start(&MediaEngineConfig {
        address: std::net::IpAddr::from([10, 99, 0, 1]),
        address_v6: None,
        extra_addresses: Vec::new(),
        port_min: 30000,
        port_max: 30099,
        cores,
        driver: DriverKind::AfXdp { ifindex },
        polling: Polling::Interrupt { batch_wait_us: 0 },
        relay: crate::media::relay::RelayConfig::default(),
        fill_calls: 0,
        max_endpoints_per_worker: 64,
    })
}

/// A plain PCMU call's media line between peers `a` and `b` (RTCP
/// multiplexed): both legs opened, both peers known.
pub fn relay_plan(
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
) -> crate::media::plan::MediaPlan {
    use crate::media::relay::{PeerSpec, Side};
    let spec = |addr| PeerSpec {
        rtp: Some(addr),
        rtcp: None,
        rtcp_mux: true,
        clock_rate: 8000,
        feedback: false,
    };
    let mut plan = crate::media::plan::MediaPlan::default();
    for (side, peer) in [(Side::A, a), (Side::B, b)] {
        plan.side_mut(side).open_rtp = true;
        plan.side_mut(side).peer = Some(spec(peer));
    }
    plan
}
