//! UDP segmentation offload for sends, and coalesced reads for receives:
//! used by the SIP workers and by rvoip-loadtest.
//!
//! The kernel's cost of a datagram is mostly per send: the route, the IP
//! and device layers, and on loopback the receiver's delivery, all once per
//! `sendmsg`. With `UDP_SEGMENT` (Linux 4.18) one send carries several
//! datagrams of one length to one address and the kernel cuts it into the
//! very same datagrams late in its path; a receiver with `UDP_GRO` gets
//! them back in one read with the segment length (or, without it, the
//! kernel splits them before they are queued, so any peer sees ordinary
//! datagrams).
//!
//! A turn's datagrams go into a [`Packer`]: a datagram joins an earlier
//! group of the same length and address, unless an earlier datagram of its
//! own flow (a call) is in a later group: a flow's datagrams leave in the
//! order they were queued, whatever happens to other flows'.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use rustc_hash::FxHashMap as HashMap;

/// Most datagrams in one send (the kernel takes up to 64 on every version
/// with UDP_SEGMENT).
pub const MAX_SEGMENTS: usize = 64;
/// Longer datagrams are sent one by one: a segment must fit the path's
/// MTU, which loopback's 64 KiB does not say for other interfaces.
pub const MAX_SEGMENT: usize = 1400;
/// At most this many octets in one send (an IP datagram's 64 KiB, less headers).
pub const MAX_BYTES: usize = 60_000;
/// Groups a datagram is matched against, from the newest back.
const LOOK_BACK: usize = 16;

/// Datagrams of one length to one address, end to end in `data`.
#[derive(Debug, Default)]
pub struct Group {
    /// Where they go.
    pub to: Option<SocketAddr>,
    /// The length of each (the segment size).
    pub seg: usize,
    /// The datagrams.
    pub data: Vec<u8>,
}

impl Group {
    /// How many datagrams.
    pub fn count(&self) -> usize {
        self.data.len().div_ceil(self.seg.max(1))
    }

    /// The datagrams one by one.
    pub fn datagrams(&self) -> std::slice::Chunks<'_, u8> {
        self.data.chunks(self.seg.max(1))
    }

    /// Whether a shorter datagram ended the group: nothing more may join.
    fn ended(&self) -> bool {
        !self.data.len().is_multiple_of(self.seg.max(1))
    }
}

/// One turn's datagrams, grouped for segmentation offload.
#[derive(Debug, Default)]
pub struct Packer {
    enabled: bool,
    groups: Vec<Group>,
    used: usize,
    /// The newest group holding each flow's datagrams this turn.
    last: HashMap<u64, usize>,
}

impl Packer {
    /// A packer that groups when `enabled`, else one datagram per group.
    pub fn new(enabled: bool) -> Self {
        Packer {
            enabled,
            ..Packer::default()
        }
    }

    /// Whether datagrams are grouped.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// From now on one datagram per group (the kernel refused a segmented send).
    pub fn disable(&mut self) {
        self.enabled = false;
    }

    /// Queues `data` to `to` as part of `flow`. It joins the newest group
    /// to `to` it may (after its flow's last datagram): one of its length,
    /// or else one of longer datagrams, which it then ends (the kernel lets
    /// a segmented send's last datagram be shorter than the others).
    pub fn push(&mut self, flow: u64, data: &[u8], to: SocketAddr) {
        let len = data.len();
        let floor = self.last.get(&flow).copied().unwrap_or(0);
        let mut into = None;
        if self.enabled && len > 0 && len <= MAX_SEGMENT {
            let lowest = floor.max(self.used.saturating_sub(LOOK_BACK));
            let mut ends = None;
            for i in (lowest..self.used).rev() {
                let g = &self.groups[i];
                if g.to != Some(to)
                    || g.seg > MAX_SEGMENT
                    || g.ended()
                    || len > g.seg
                    || g.data.len() + len > MAX_BYTES
                    || g.count() >= MAX_SEGMENTS
                {
                    continue;
                }
                if len == g.seg {
                    into = Some(i);
                    break;
                }
                ends.get_or_insert(i);
            }
            into = into.or(ends);
        }
        let i = into.unwrap_or_else(|| {
            if self.used == self.groups.len() {
                self.groups.push(Group::default());
            }
            let g = &mut self.groups[self.used];
            g.to = Some(to);
            g.seg = len;
            g.data.clear();
            self.used += 1;
            self.used - 1
        });
        self.groups[i].data.extend_from_slice(data);
        self.last.insert(flow, i);
    }

    /// The groups queued this turn, in the order they are to leave; a
    /// caller may take a group's buffer (leaving another in its place).
    pub fn groups(&mut self) -> &mut [Group] {
        &mut self.groups[..self.used]
    }

    /// Forgets the turn's groups (their buffers are kept for the next).
    pub fn clear(&mut self) {
        self.used = 0;
        self.last.clear();
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
}

fn set_udp_option(sock: &impl AsRawFd, opt: libc::c_int, val: libc::c_int) -> bool {
    super::set_int_option(sock.as_raw_fd(), libc::SOL_UDP, opt, val)
}

/// Whether `sock` can send segmented (the option exists; a segment size of
/// 0 keeps every send as it is unless a send asks).
pub fn can_segment(sock: &impl AsRawFd) -> bool {
    set_udp_option(sock, libc::UDP_SEGMENT, 0)
}

/// Asks the kernel to hand segmented arrivals over whole, with their
/// segment size (UDP_GRO); best effort. The reader must then split them
/// ([`split`]) and have room for 64 KiB in every receive buffer.
pub fn receive_coalesced(sock: &impl AsRawFd) -> bool {
    set_udp_option(sock, libc::UDP_GRO, 1)
}

/// A flow key for datagrams that need to keep their order per destination
/// only: the address itself.
pub fn address_flow(to: SocketAddr) -> u64 {
    match to {
        SocketAddr::V4(a) => (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()),
        SocketAddr::V6(a) => ((a.ip().to_bits() as u64) << 16) | u64::from(a.port()),
    }
}

/// A flow key for a call's datagrams: its Call-ID, hashed (the top bit
/// set, so no call shares a key with an address).
pub fn call_flow(call_id: &[u8]) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(call_id);
    h.finish() | 1 << 63
}

/// Whether a segmented send failed with `errno` because the kernel cannot
/// segment on that route (no checksum offload, a path MTU below the
/// segment size, no UDP_SEGMENT): the datagrams should go again one by one.
pub fn segmentation_refused(errno: i32) -> bool {
    matches!(
        errno,
        libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT | libc::EMSGSIZE
    )
}

/// Room for the control message of a segmented send.
pub const SEND_CONTROL: usize = 24;

/// Writes the UDP_SEGMENT control message for segments of `seg` octets
/// into `buf`; returns its length.
pub fn segment_control(buf: &mut [u64; SEND_CONTROL / 8], seg: usize) -> usize {
    let head = std::mem::size_of::<libc::cmsghdr>();
    let h = libc::cmsghdr {
        cmsg_len: (head + std::mem::size_of::<u16>()) as _,
        cmsg_level: libc::SOL_UDP,
        cmsg_type: libc::UDP_SEGMENT,
    };
    let bytes: &mut [u8; SEND_CONTROL] =
        // SAFETY: [u64; 3] and [u8; 24] have the same size; u8 has no alignment.
        unsafe { &mut *(buf as *mut [u64; SEND_CONTROL / 8]).cast::<[u8; SEND_CONTROL]>() };
    bytes.fill(0);
    // SAFETY: the header fits at the start of the 24 octets; written unaligned.
    unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<libc::cmsghdr>(), h) };
    bytes[head..head + 2].copy_from_slice(&(seg as u16).to_ne_bytes());
    SEND_CONTROL
}

/// The data of the first control message of `level` and `kind` in
/// `control` (as a received msghdr's control buffer holds them).
pub fn control_message(control: &[u8], level: libc::c_int, kind: libc::c_int) -> Option<&[u8]> {
    let head = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while control.len() >= at + head {
        // SAFETY: `head` octets are there; read unaligned.
        let h: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control[at..].as_ptr().cast()) };
        let len = h.cmsg_len as usize;
        if len < head || at + len > control.len() {
            return None;
        }
        if h.cmsg_level == level && h.cmsg_type == kind {
            return Some(&control[at + head..at + len]);
        }
        at += (len + 7) & !7;
    }
    None
}

/// The segment size of coalesced arrivals (UDP_GRO) in a read's control
/// messages, if the read was such.
pub fn segment_size(control: &[u8]) -> Option<usize> {
    let data = control_message(control, libc::SOL_UDP, libc::UDP_GRO)?;
    let v = i32::from_ne_bytes(data.get(..4)?.try_into().ok()?);
    usize::try_from(v).ok().filter(|&v| v > 0)
}

/// Room for the control message of a coalesced read (UDP_GRO).
pub const RECV_CONTROL: usize = 24;

/// Sends group `g` from `sock` now, in one `sendmsg` (with UDP_SEGMENT
/// when it holds several datagrams); returns the octets sent.
pub fn send_group(sock: &impl AsRawFd, g: &Group) -> std::io::Result<usize> {
    let Some(to) = g.to else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    let mut name = super::sockaddr::zeroed();
    let name_len = super::sockaddr::write(to, &mut name);
    let mut control = [0u64; SEND_CONTROL / 8];
    let mut iov = libc::iovec {
        iov_base: g.data.as_ptr().cast_mut().cast(),
        iov_len: g.data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; it is pointed at the live name,
    // iovec and control below.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = (&mut name as *mut super::sockaddr::Storage).cast();
    h.msg_namelen = name_len;
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if g.count() > 1 {
        let len = segment_control(&mut control, g.seg);
        h.msg_control = control.as_mut_ptr().cast();
        h.msg_controllen = len as _;
    }
    // SAFETY: as above; the kernel only reads the payload.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &h, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// The datagrams in one read: `data` cut at `seg` octets when the kernel
/// handed over coalesced arrivals (UDP_GRO), else `data` whole.
pub fn split(data: &[u8], seg: Option<usize>) -> std::slice::Chunks<'_, u8> {
    let size = seg.filter(|&s| s > 0).unwrap_or(data.len()).max(1);
    data.chunks(size)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use std::net::UdpSocket;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn sent(p: &mut Packer) -> Vec<(SocketAddr, Vec<Vec<u8>>)> {
        let out = p
            .groups()
            .iter()
            .map(|g| {
                (
                    g.to.expect("every group has its destination"),
                    g.datagrams().map(<[u8]>::to_vec).collect(),
                )
            })
            .collect();
        p.clear();
        out
    }

    #[test]
    fn datagrams_of_one_length_and_address_share_a_send_and_each_flow_keeps_its_order() {
        let mut p = Packer::new(true);
        // Call 1's 180 and 200, then call 2's: the 180s (4 octets) share a
        // send, the 200s (6 octets) another, after the 180s.
        p.push(1, b"r1__", addr(1));
        p.push(1, b"ok1___", addr(1));
        p.push(2, b"r2__", addr(1));
        p.push(2, b"ok2___", addr(1));
        // Another address: a send of its own. A shorter datagram to the
        // first address ends the 200s' send.
        p.push(3, b"r3__", addr(2));
        p.push(4, b"r4___", addr(1));
        // Flow 1 again: its datagram may not join the first group, which
        // would put it before its own 200, nor the ended one.
        p.push(1, b"x1__", addr(1));
        let got = sent(&mut p);
        let as_text = |g: &Vec<Vec<u8>>| {
            g.iter()
                .map(|d| String::from_utf8(d.clone()).expect("the test wrote ASCII"))
                .collect::<Vec<_>>()
        };
        let groups: Vec<(u16, Vec<String>)> =
            got.iter().map(|(a, g)| (a.port(), as_text(g))).collect();
        assert_eq!(
            groups,
            vec![
                (1, vec!["r1__".into(), "r2__".into()]),
                (1, vec!["ok1___".into(), "ok2___".into(), "r4___".into()]),
                (2, vec!["r3__".into()]),
                (1, vec!["x1__".into()]),
            ]
        );
        assert!(p.is_empty());
    }

    #[test]
    fn a_shorter_datagram_ends_a_send_of_longer_ones_and_a_same_length_one_is_preferred() {
        let mut p = Packer::new(true);
        p.push(1, &[1; 8], addr(1));
        p.push(2, &[2; 10], addr(1));
        p.push(3, &[3; 10], addr(1));
        // Eight octets: the group of its length, not the end of the newer one.
        p.push(4, &[4; 8], addr(1));
        // Six: ends the newest group it fits, the tens.
        p.push(5, &[5; 6], addr(1));
        // Ten again: the tens have ended, so a group of its own.
        p.push(6, &[6; 10], addr(1));
        // A datagram too long to segment goes alone, and nothing ends its send.
        p.push(7, &[7; MAX_SEGMENT + 1], addr(1));
        p.push(8, &[8; 5], addr(1));
        let got: Vec<Vec<Vec<u8>>> = sent(&mut p).into_iter().map(|(_, g)| g).collect();
        assert_eq!(
            got,
            vec![
                vec![vec![1; 8], vec![4; 8]],
                vec![vec![2; 10], vec![3; 10], vec![5; 6]],
                vec![vec![6; 10], vec![8; 5]],
                vec![vec![7; MAX_SEGMENT + 1]],
            ]
        );
    }

    #[test]
    fn a_send_holds_at_most_64_datagrams_and_long_ones_go_alone() {
        let mut p = Packer::new(true);
        for i in 0..130u64 {
            p.push(i, &[7; 100], addr(1));
        }
        p.push(500, &[1; MAX_SEGMENT + 1], addr(1));
        p.push(501, &[1; MAX_SEGMENT + 1], addr(1));
        let counts: Vec<usize> = p.groups().iter().map(Group::count).collect();
        assert_eq!(counts, vec![64, 64, 2, 1, 1]);
        p.clear();
        let mut off = Packer::new(false);
        off.push(1, b"a", addr(1));
        off.push(2, b"b", addr(1));
        assert_eq!(off.groups().len(), 2);
    }

    #[test]
    fn a_segmented_send_arrives_as_the_same_datagrams_whole_or_coalesced() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
        if !crate::engine::kernel_has(can_segment(&tx), "UDP_SEGMENT") {
            return;
        }
        for coalesce in [false, true] {
            let rx = UdpSocket::bind("127.0.0.1:0").expect("loopback has free ports");
            rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .expect("a nonzero timeout is valid");
            let gro = coalesce && crate::engine::kernel_has(receive_coalesced(&rx), "UDP_GRO");
            let mut p = Packer::new(true);
            let to = rx.local_addr().expect("a bound socket has an address");
            for i in 0..10u8 {
                p.push(u64::from(i), &[i; 300], to);
            }
            // A shorter last one rides along.
            p.push(10, &[10; 120], to);
            let g = &p.groups()[0];
            assert_eq!(g.count(), 11);
            let r = send_group(&tx, g).expect("loopback takes the send");
            assert_eq!(r, 3120, "one send of eleven datagrams");
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while got.len() < 11 {
                let n = rx.recv(&mut buf).expect("datagrams");
                // Without reading the segment size, a coalesced read is cut
                // at the known length here.
                got.extend(split(&buf[..n], gro.then_some(300)).map(<[u8]>::to_vec));
            }
            let mut want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 300]).collect();
            want.push(vec![10; 120]);
            assert_eq!(got, want, "coalesced read: {gro}");
        }
    }
}
