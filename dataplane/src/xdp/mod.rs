//! The AF_XDP fast path: rvoip's own XDP program steering only its UDP
//! (SIP, media, ng addresses and ports) into AF_XDP sockets, one per queue
//! of the link, and everything else on to the kernel ([`Steering`]); the
//! sockets ([`xsk::Xsk`]); the Ethernet/IP/UDP headers rvoip reads and
//! writes itself ([`frame`]).
//!
//! The program is attached by rtnetlink, replacing whatever program the
//! link has (a stale one left by a killed rvoip: its sockets are gone, so
//! it passed everything to the kernel meanwhile), and detached when the
//! [`Steering`] drops.

pub mod bpf;
pub mod frame;
pub mod link;
pub mod program;
pub mod testbed;
pub mod xsk;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

pub use bpf::XdpMode;
use program::PortKey;

/// Most addresses and ports steered at once (SIP, ng, and a media range of
/// up to 10,000 pairs per address).
pub const MAX_PORTS: u32 = 65_536;
/// Most queues of a link.
pub const MAX_QUEUES: u32 = 64;

/// The program's name, as `ip link` and `bpftool` show it.
pub const PROGRAM_NAME: &str = "rvoip_steer";

/// rvoip's XDP program on a link, with its maps.
#[derive(Debug)]
pub struct Steering {
    ifindex: u32,
    mode: XdpMode,
    ports: OwnedFd,
    xsks: OwnedFd,
    _prog: OwnedFd,
}

impl Steering {
    /// Loads the program and attaches it to link `ifindex` in `mode`; it
    /// steers nothing until [`Steering::steer`] names an address and a
    /// queue has a socket.
    pub fn attach(ifindex: u32, mode: XdpMode) -> io::Result<Steering> {
        let ports = bpf::map_create(bpf::MAP_HASH, 20, 4, MAX_PORTS, "rvoip_ports")?;
        let xsks = bpf::map_create(bpf::MAP_XSKMAP, 4, 4, MAX_QUEUES, "rvoip_xsks")?;
        let insns = program::steering(
            std::os::fd::AsRawFd::as_raw_fd(&ports),
            std::os::fd::AsRawFd::as_raw_fd(&xsks),
        );
        let prog = bpf::prog_load(&insns, PROGRAM_NAME)?;
        bpf::attach(ifindex, &prog, mode)?;
        Ok(Steering {
            ifindex,
            mode,
            ports,
            xsks,
            _prog: prog,
        })
    }

    /// Steers UDP to `addr` into the sockets.
    pub fn steer(&self, addr: SocketAddr) -> io::Result<()> {
        bpf::map_update(&self.ports, &PortKey::of(addr).bytes(), &1u32.to_ne_bytes())
    }

    /// Leaves UDP to `addr` to the kernel again.
    pub fn release(&self, addr: SocketAddr) -> io::Result<()> {
        bpf::map_delete(&self.ports, &PortKey::of(addr).bytes())
    }

    /// Makes `socket` the one that takes what queue `queue` receives.
    pub fn bind_queue(&self, queue: u32, socket: &xsk::Xsk) -> io::Result<()> {
        bpf::map_update(&self.xsks, &queue.to_ne_bytes(), &socket.fd().to_ne_bytes())
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        let _ = bpf::detach(self.ifindex, self.mode);
    }
}
