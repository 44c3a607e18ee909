//! The few bpf(2) and rtnetlink calls the AF_XDP path needs, made
//! directly: create the two maps, load the steering program (with the
//! verifier's log on refusal), and attach it to a link, query and detach
//! it. No libbpf: the program is rvoip's own listing
//! ([`super::program`]), not an object file to relocate.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::program::Insn;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;

/// `BPF_MAP_TYPE_HASH`.
pub const MAP_HASH: u32 = 1;
/// `BPF_MAP_TYPE_XSKMAP`.
pub const MAP_XSKMAP: u32 = 17;
const PROG_TYPE_XDP: u32 = 6;

/// `union bpf_attr`, as far as these calls use it.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(&mut self, at: usize, name: &str) -> &mut Self {
        let n = name.len().min(15);
        self.0[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new map.
pub fn map_create(
    kind: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, kind)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, max_entries)
        .name(28, name);
    owned(bpf(BPF_MAP_CREATE, &mut a)?)
}

/// Sets `key` to `value` in a map.
pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Removes `key` from a map.
pub fn map_delete(map: &OwnedFd, key: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32).u64(8, key.as_ptr() as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// Loads an XDP program named `name`; a refusal carries the verifier's log.
pub fn prog_load(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = Attr::new();
    a.u32(0, PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, code.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .name(48, name);
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => owned(fd),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(io::Error::new(
                e.kind(),
                format!(
                    "the kernel refused the XDP program: {e}\n{}",
                    String::from_utf8_lossy(&log[..end])
                ),
            ))
        }
    }
}

/// How a program is attached to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`; veth has it).
    Native,
    /// Generic XDP, after the driver (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Native => 1 << 2,
            XdpMode::Generic => 1 << 1,
        }
    }
}

const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
const RTM_GETNEIGH: u16 = 30;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;

/// A route netlink request for link `ifindex`, of `kind`, with `attrs`.
fn link_message(kind: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 16 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change.
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(attrs);
    m
}

/// An rtattr of `kind` holding `value` (padded to 4).
fn rtattr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(4 + value.len() + 3);
    a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(a.len().div_ceil(4) * 4, 0);
    a
}

/// Sends a route netlink request and returns the replies' octets (an
/// error reply becomes an `Err`).
fn netlink(request: &[u8]) -> io::Result<Vec<u8>> {
    netlink_until(request, false)
}

/// As [`netlink`]; with `dump`, every part of a multi-part answer until
/// `NLMSG_DONE`.
fn netlink_until(request: &[u8], dump: bool) -> io::Result<Vec<u8>> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `request` is valid for its length.
    let n = unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = &buf[..n as usize];
        let mut at = 0;
        let mut done = false;
        while at + 16 <= got.len() {
            let len = u32::from_ne_bytes([got[at], got[at + 1], got[at + 2], got[at + 3]]) as usize;
            let kind = u16::from_ne_bytes([got[at + 4], got[at + 5]]);
            if len < 16 || at + len > got.len() {
                break;
            }
            if kind == NLMSG_DONE {
                return Ok(out);
            }
            if kind == NLMSG_ERROR && len >= 20 {
                let code =
                    i32::from_ne_bytes([got[at + 16], got[at + 17], got[at + 18], got[at + 19]]);
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                done = true;
            } else {
                out.extend_from_slice(&got[at..at + len]);
                done = !dump;
            }
            at += len.div_ceil(4) * 4;
        }
        if done {
            return Ok(out);
        }
    }
}

/// Attaches `prog` to link `ifindex` in `mode`, replacing whatever program
/// is there (a stale one left by a killed rvoip included).
pub fn attach(ifindex: u32, prog: &OwnedFd, mode: XdpMode) -> io::Result<()> {
    set_xdp(ifindex, prog.as_raw_fd(), mode)
}

/// Detaches the program of link `ifindex` attached in `mode`.
pub fn detach(ifindex: u32, mode: XdpMode) -> io::Result<()> {
    set_xdp(ifindex, -1, mode)
}

fn set_xdp(ifindex: u32, fd: i32, mode: XdpMode) -> io::Result<()> {
    let mut nested = rtattr(IFLA_XDP_FD, &fd.to_ne_bytes());
    nested.extend(rtattr(IFLA_XDP_FLAGS, &mode.flags().to_ne_bytes()));
    let attrs = rtattr(IFLA_XDP | NLA_F_NESTED, &nested);
    netlink(&link_message(
        RTM_SETLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        ifindex,
        &attrs,
    ))
    .map(|_| ())
}

/// The attributes of link `ifindex` (type, value), from RTM_GETLINK.
fn link_attrs(ifindex: u32) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let reply = netlink(&link_message(RTM_GETLINK, NLM_F_REQUEST, ifindex, &[]))?;
    Ok(attrs(reply.get(32..).unwrap_or_default()))
}

/// The rtattrs in `b`: (type without the nested flag, value).
fn attrs(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let len = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
        let kind = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & !NLA_F_NESTED;
        if len < 4 || at + len > b.len() {
            break;
        }
        out.push((kind, b[at + 4..at + len].to_vec()));
        at += len.div_ceil(4) * 4;
    }
    out
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// The id of the XDP program attached to link `ifindex`, if any.
pub fn attached(ifindex: u32) -> io::Result<Option<u32>> {
    Ok(link_attrs(ifindex)?
        .into_iter()
        .find(|(k, _)| *k == IFLA_XDP)
        .and_then(|(_, v)| {
            attrs(&v)
                .into_iter()
                .find(|(k, _)| *k == IFLA_XDP_PROG_ID)
                .and_then(|(_, id)| u32_of(&id))
        })
        .filter(|id| *id != 0))
}

/// What rvoip needs to know of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its Ethernet address.
    pub mac: [u8; 6],
    /// Receive queues in use.
    pub queues: u32,
    /// Largest IP packet it sends.
    pub mtu: u32,
}

/// Link `ifindex`'s Ethernet address, receive queues in use and MTU.
pub fn link_info(ifindex: u32) -> io::Result<LinkInfo> {
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    let a = link_attrs(ifindex)?;
    let mac = a
        .iter()
        .find(|(k, v)| *k == IFLA_ADDRESS && v.len() == 6)
        .and_then(|(_, v)| v.as_slice().try_into().ok())
        .ok_or_else(|| io::Error::other("the link has no Ethernet address"))?;
    let name = a
        .iter()
        .find(|(k, _)| *k == IFLA_IFNAME)
        .map(|(_, v)| v.split(|b| *b == 0).next().unwrap_or_default().to_vec())
        .unwrap_or_default();
    let mtu = a
        .iter()
        .find(|(k, _)| *k == IFLA_MTU)
        .and_then(|(_, v)| u32_of(v))
        .unwrap_or(1500);
    Ok(LinkInfo {
        mac,
        queues: rx_queues(&name).unwrap_or(1).max(1),
        mtu,
    })
}

/// The receive queues link `name` uses (ethtool's channels: RX plus
/// combined), which may be fewer than it could have.
fn rx_queues(name: &[u8]) -> io::Result<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, then the maximums and counts of RX,
    // TX, other and combined channels.
    let mut channels = [0u32; 9];
    channels[0] = ETHTOOL_GCHANNELS;
    let mut ifr = [0u8; 40];
    let n = name.len().min(15);
    ifr[..n].copy_from_slice(&name[..n]);
    ifr[16..24].copy_from_slice(&(channels.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: plain socket(2); owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifr` is a struct ifreq whose data points at `channels`, both
    // alive across the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, ifr.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(channels[5] + channels[8])
}

/// The index of the link named `name`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}"),
        ))
    } else {
        Ok(i)
    }
}

/// The neighbours the kernel knows on link `ifindex` (address, MAC),
/// those it has resolved (not incomplete or failed).
pub fn neighbours(ifindex: u32) -> io::Result<Vec<(std::net::IpAddr, [u8; 6])>> {
    const NUD_INCOMPLETE: u16 = 0x01;
    const NUD_FAILED: u16 = 0x20;
    const NDA_DST: u16 = 1;
    const NDA_LLADDR: u16 = 2;
    // nlmsghdr + struct ndmsg (family, pads, ifindex, state, flags, type).
    let mut m = Vec::with_capacity(28);
    m.extend_from_slice(&28u32.to_ne_bytes());
    m.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&0i32.to_ne_bytes());
    m.extend_from_slice(&[0; 4]);
    let reply = netlink_until(&m, true)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 28 <= reply.len() {
        let len = u32_of(&reply[at..]).unwrap_or(0) as usize;
        if len < 28 || at + len > reply.len() {
            break;
        }
        let msg = &reply[at..at + len];
        let index = u32_of(&msg[20..]).unwrap_or(0);
        let state = u16::from_ne_bytes([msg[24], msg[25]]);
        if index == ifindex && state & (NUD_INCOMPLETE | NUD_FAILED) == 0 {
            let a = attrs(&msg[28..]);
            let ip = a
                .iter()
                .find(|(k, _)| *k == NDA_DST)
                .and_then(|(_, v)| match v.len() {
                    4 => Some(std::net::IpAddr::from(
                        <[u8; 4]>::try_from(v.as_slice()).ok()?,
                    )),
                    16 => Some(std::net::IpAddr::from(
                        <[u8; 16]>::try_from(v.as_slice()).ok()?,
                    )),
                    _ => None,
                });
            let mac = a
                .iter()
                .find(|(k, v)| *k == NDA_LLADDR && v.len() == 6)
                .and_then(|(_, v)| <[u8; 6]>::try_from(v.as_slice()).ok());
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.push((ip, mac));
            }
        }
        at += len.div_ceil(4) * 4;
    }
    Ok(out)
}
