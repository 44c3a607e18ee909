//! The fallback's datagram I/O, for every loop that runs without io_uring
//! (the media workers' fallback driver, the SIP workers' poll(2) loop, the
//! load generator's batched loop): one `recvmmsg` takes up to `N`
//! datagrams into a [`RecvBatch`]'s buffers, with their sources and
//! control messages (the kernel's receive time, a coalesced read's segment
//! size); one `sendmmsg` sends what the loop has to send, from those
//! buffers ([`RecvBatch::send_from`], a relay forwarding in place) or from
//! groups of datagrams ([`send_groups`], several of one length in one
//! message with UDP_SEGMENT). Nothing here allocates per datagram.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::engine::gso::{self, Group, segment_size};
use crate::engine::sockaddr::{self, Storage};

/// Room for the control messages a receive may carry: the kernel's
/// receive time and, for coalesced arrivals, their segment size.
pub const CONTROL: usize = 64;

/// One datagram (or coalesced run) of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// The payload: one datagram, or several coalesced ones.
    pub data: &'a [u8],
    /// Where it came from.
    pub src: SocketAddr,
    /// The kernel's receive time (realtime nanoseconds), if stamped.
    pub stamp: Option<u64>,
    /// The segment size when the read holds coalesced datagrams
    /// ([`gso::split`] cuts it).
    pub seg: Option<usize>,
}

/// The arrival time in `control` (SCM_TIMESTAMPNS, CLOCK_REALTIME
/// nanoseconds), if there is one.
pub fn arrival_ns(control: &[u8]) -> Option<u64> {
    let data = gso::control_message(control, libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)?;
    if data.len() < std::mem::size_of::<libc::timespec>() {
        return None;
    }
    // SAFETY: a timespec's octets are there, as checked; read unaligned.
    let ts: libc::timespec = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Buffers for `recvmmsg` of up to `N` datagrams of up to `size` octets,
/// allocated once.
#[derive(Debug)]
pub struct RecvBatch<const N: usize> {
    bufs: Box<[u8]>,
    size: usize,
    names: Box<[Storage]>,
    controls: Box<[[u8; CONTROL]]>,
    /// Per datagram of the last receive: length, name length, control length.
    lens: [(usize, usize, usize); N],
    count: usize,
    /// Destinations of [`RecvBatch::send_from`].
    out_names: Box<[Storage]>,
}

impl<const N: usize> RecvBatch<N> {
    /// Room for `N` datagrams of up to `size` octets each.
    pub fn new(size: usize) -> Self {
        RecvBatch {
            bufs: vec![0; size * N].into_boxed_slice(),
            size,
            names: (0..N).map(|_| sockaddr::zeroed()).collect(),
            controls: vec![[0; CONTROL]; N].into_boxed_slice(),
            lens: [(0, 0, 0); N],
            count: 0,
            out_names: (0..N).map(|_| sockaddr::zeroed()).collect(),
        }
    }

    /// Receives what `fd` holds (up to `N`) without blocking; returns how
    /// many. Nothing waiting (or an ICMP refusal reported) is 0.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: zeroed iovecs and mmsghdrs are valid; each is pointed at
        // one buffer, one name and one control area of self below, all
        // alive for the call.
        let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
        for (i, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
            *v = libc::iovec {
                iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            };
            m.msg_hdr.msg_name = (&mut self.names[i] as *mut Storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<Storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CONTROL as _;
        }
        // SAFETY: the headers point at live memory owned by self and iov.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                N as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.count = 0;
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        for (l, m) in self.lens.iter_mut().zip(msgs.iter()).take(n as usize) {
            *l = (
                m.msg_len as usize,
                m.msg_hdr.msg_namelen as usize,
                m.msg_hdr.msg_controllen as _,
            );
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// Datagram `i` of the last receive.
    pub fn get(&self, i: usize) -> Option<Read<'_>> {
        if i >= self.count {
            return None;
        }
        let (len, name_len, control_len) = self.lens[i];
        let src = sockaddr::read(sockaddr::bytes(&self.names[i], name_len))?;
        let start = i * self.size;
        let control = &self.controls[i][..control_len.min(CONTROL)];
        Some(Read {
            data: &self.bufs[start..start + len.min(self.size)],
            src,
            stamp: arrival_ns(control),
            seg: segment_size(control),
        })
    }

    /// Datagram `i` of the last receive, in its whole buffer (the datagram
    /// is its first `len` octets; the rest is room to grow it in place):
    /// its source, the buffer and `len`.
    pub fn get_mut(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize)> {
        if i >= self.count {
            return None;
        }
        let (len, name_len, _) = self.lens[i];
        let src = sockaddr::read(sockaddr::bytes(&self.names[i], name_len))?;
        let start = i * self.size;
        Some((
            src,
            &mut self.bufs[start..start + self.size],
            len.min(self.size),
        ))
    }

    /// Sends from this batch's own buffers out of `fd`: each of `sends` is
    /// (buffer, length, destination). A datagram the kernel refuses (an
    /// ICMP error, say) is skipped. Returns (sent, refused).
    pub fn send_from(&mut self, fd: RawFd, sends: &[(usize, usize, SocketAddr)]) -> (u64, u64) {
        let n = sends.len().min(N);
        // SAFETY: as in recv; the kernel only reads the payloads.
        let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
        for (k, &(buf, len, to)) in sends.iter().take(n).enumerate() {
            iov[k] = libc::iovec {
                iov_base: self.bufs[buf * self.size..].as_mut_ptr().cast(),
                iov_len: len.min(self.size),
            };
            let name_len = sockaddr::write(to, &mut self.out_names[k]);
            msgs[k].msg_hdr.msg_name = (&mut self.out_names[k] as *mut Storage).cast();
            msgs[k].msg_hdr.msg_namelen = name_len;
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        let (mut done, mut sent, mut refused) = (0, 0, 0);
        while done < n {
            // SAFETY: the headers point at buffers and names alive here.
            let r = unsafe { libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if r <= 0 {
                refused += 1;
                done += 1;
            } else {
                done += r as usize;
                sent += r as u64;
            }
        }
        (sent, refused + (sends.len() - n) as u64)
    }
}

/// Sends `groups` out of `fd` with as few `sendmmsg` calls as it takes,
/// several datagrams of a group in one message with UDP_SEGMENT. A
/// datagram the kernel refuses is skipped (retransmission covers SIP); a
/// segmented send the kernel cannot do goes again one datagram at a time
/// and returns `true` (the caller stops grouping). Returns the datagrams
/// sent and that.
pub fn send_groups(fd: RawFd, groups: &[Group]) -> (usize, bool) {
    const CHUNK: usize = 64;
    let mut sent = 0;
    let mut refused = false;
    let mut names: [Storage; CHUNK] = [sockaddr::zeroed(); CHUNK];
    let mut controls = [[0u64; gso::SEND_CONTROL / 8]; CHUNK];
    for chunk in groups.chunks(CHUNK) {
        // SAFETY: zeroed iovecs and mmsghdrs are valid; filled below.
        let mut iov: [libc::iovec; CHUNK] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { std::mem::zeroed() };
        for (i, g) in chunk.iter().enumerate() {
            iov[i] = libc::iovec {
                iov_base: g.data.as_ptr().cast_mut().cast(),
                iov_len: g.data.len(),
            };
            let h = &mut hdrs[i].msg_hdr;
            // No address: the socket's peer (a connected socket).
            if let Some(to) = g.to {
                h.msg_namelen = sockaddr::write(to, &mut names[i]);
                h.msg_name = (&mut names[i] as *mut Storage).cast();
            }
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            if g.count() > 1 {
                let len = gso::segment_control(&mut controls[i], g.seg);
                h.msg_control = controls[i].as_mut_ptr().cast();
                h.msg_controllen = len as _;
            }
        }
        let n = chunk.len();
        let mut done = 0;
        while done < n {
            // SAFETY: the headers point at names, iovecs, controls and
            // payloads alive here.
            let r = unsafe { libc::sendmmsg(fd, hdrs[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if r > 0 {
                for g in &chunk[done..done + r as usize] {
                    sent += g.count();
                }
                done += r as usize;
                continue;
            }
            // The message at `done` was refused.
            let g = &chunk[done];
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if g.count() > 1 && gso::segmentation_refused(errno) {
                refused = true;
                for d in g.datagrams() {
                    if send_one(fd, d, g.to) {
                        sent += 1;
                    }
                }
            }
            done += 1;
        }
    }
    (sent, refused)
}

/// One datagram to `to`, or to the socket's peer; whether the kernel took
/// it.
fn send_one(fd: RawFd, data: &[u8], to: Option<SocketAddr>) -> bool {
    match to {
        Some(to) => send_to(fd, data, to),
        // SAFETY: a valid buffer of `data.len()` octets.
        None => unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), 0) >= 0 },
    }
}

/// One datagram to `to`; whether the kernel took it.
pub fn send_to(fd: RawFd, data: &[u8], to: SocketAddr) -> bool {
    let mut name = sockaddr::zeroed();
    let len = sockaddr::write(to, &mut name);
    // SAFETY: a valid buffer and a valid address of `len` octets.
    let r = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            0,
            (&name as *const Storage).cast(),
            len,
        )
    };
    r >= 0
}
