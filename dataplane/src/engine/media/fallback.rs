//! The fallback driver: nonblocking sockets in an epoll set, received with
//! recvmmsg and sent with sendmmsg in batches of up to [`BATCH`]. Used when
//! io_uring is unavailable (old kernels, seccomp) and in tests. Each endpoint
//! costs a file descriptor.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::worker::{Clock, Driver, Wake, bind_udp};
use crate::engine::sockaddr::{self, Storage};
use crate::media::relay::{Action, EndpointId, Relay};

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
/// Largest datagram relayed.
const BUF: usize = 2048;
/// epoll data value of the wake-up eventfd.
const WAKE_TOKEN: u64 = u64::MAX;

pub(super) struct FallbackDriver {
    epoll: OwnedFd,
    sockets: Vec<Option<OwnedFd>>,
    free: Vec<EndpointId>,
    bufs: Box<[[u8; BUF]; BATCH]>,
    names: Box<[Storage; BATCH]>,
    out_names: Box<[Storage; BATCH]>,
    received: u64,
    sent: u64,
    send_errors: u64,
}

impl FallbackDriver {
    pub(super) fn new(wake: &Wake) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let d = FallbackDriver {
            epoll,
            sockets: Vec::new(),
            free: Vec::new(),
            bufs: Box::new([[0; BUF]; BATCH]),
            names: Box::new([sockaddr::zeroed(); BATCH]),
            out_names: Box::new([sockaddr::zeroed(); BATCH]),
            received: 0,
            sent: 0,
            send_errors: 0,
        };
        d.watch(wake.raw(), WAKE_TOKEN)?;
        Ok(d)
    }

    fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event; fds are ours.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one batch from endpoint `ep` and relays it. Returns how many
    /// datagrams were read.
    fn drain_one(&mut self, ep: EndpointId, relay: &mut Relay, clock: &Clock) -> usize {
        let Some(Some(sock)) = self.sockets.get(ep as usize) else {
            return 0;
        };
        let fd = sock.as_raw_fd();
        // SAFETY: zeroed iovec/mmsghdr arrays are valid; they are filled below.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: BUF,
            };
            msgs[i].msg_hdr.msg_name = (&mut self.names[i] as *mut Storage).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<Storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points at live buffers owned by self for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        self.received += n as u64;
        let (now_ms, now_ns) = clock.now();
        // Decide every packet, then send the forwards in runs that share a socket.
        let mut plan: [(EndpointId, usize, usize); BATCH] = [(0, 0, 0); BATCH];
        let mut planned = 0;
        for (i, msg) in msgs.iter().enumerate().take(n) {
            let len = msg.msg_len as usize;
            let Some(src) = sockaddr::read(sockaddr::bytes(
                &self.names[i],
                msg.msg_hdr.msg_namelen as usize,
            )) else {
                continue;
            };
            let mut len = len;
            if let Action::Forward { via, to } =
                relay.on_datagram(now_ms, now_ns, ep, src, &mut self.bufs[i][..], &mut len)
            {
                let name_len = sockaddr::write(to, &mut self.out_names[planned]) as usize;
                plan[planned] = (via, i, len | (name_len << 16));
                planned += 1;
            }
        }
        let mut start = 0;
        while start < planned {
            let via = plan[start].0;
            let mut end = start + 1;
            while end < planned && plan[end].0 == via {
                end += 1;
            }
            self.send_run(via, &plan[start..end], start, &mut iov);
            start = end;
        }
        n
    }

    fn send_run(
        &mut self,
        via: EndpointId,
        run: &[(EndpointId, usize, usize)],
        first: usize,
        iov: &mut [libc::iovec; BATCH],
    ) {
        let Some(Some(sock)) = self.sockets.get(via as usize) else {
            self.send_errors += run.len() as u64;
            return;
        };
        // SAFETY: zeroed mmsghdrs are valid; filled below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (k, &(_, buf, packed)) in run.iter().enumerate() {
            let (len, name_len) = (packed & 0xffff, packed >> 16);
            iov[k] = libc::iovec {
                iov_base: self.bufs[buf].as_mut_ptr().cast(),
                iov_len: len,
            };
            msgs[k].msg_hdr.msg_name = (&mut self.out_names[first + k] as *mut Storage).cast();
            msgs[k].msg_hdr.msg_namelen = name_len as libc::socklen_t;
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < run.len() {
            // SAFETY: the mmsghdrs point at buffers and names alive for the call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (run.len() - done) as u32,
                    0,
                )
            };
            if r <= 0 {
                // The packet at `done` failed (e.g. ECONNREFUSED from an ICMP); skip it.
                self.send_errors += 1;
                done += 1;
            } else {
                done += r as usize;
                self.sent += r as u64;
            }
        }
    }
}

impl Driver for FallbackDriver {
    fn open(&mut self, addr: SocketAddr) -> io::Result<EndpointId> {
        let sock = bind_udp(addr)?;
        let fd = sock.as_raw_fd();
        // SAFETY: F_SETFL on our descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        let ep = match self.free.pop() {
            Some(ep) => ep,
            None => {
                self.sockets.push(None);
                (self.sockets.len() - 1) as EndpointId
            }
        };
        self.watch(fd, u64::from(ep))?;
        self.sockets[ep as usize] = Some(sock);
        Ok(ep)
    }

    fn close(&mut self, ep: EndpointId) {
        if let Some(slot) = self.sockets.get_mut(ep as usize)
            && slot.take().is_some()
        {
            // Closing the descriptor removes it from the epoll set.
            self.free.push(ep);
        }
    }

    fn poll(&mut self, relay: &mut Relay, clock: &Clock, timeout: Duration) -> io::Result<()> {
        // SAFETY: zeroed epoll_events are valid output storage.
        let mut events: [libc::epoll_event; 64] = unsafe { std::mem::zeroed() };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: events is valid for 64 entries.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for ev in events.iter().take(n as usize) {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                continue;
            }
            // Level-triggered: read until a short batch; epoll reports the rest.
            for _ in 0..8 {
                if self.drain_one(token as EndpointId, relay, clock) < BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    fn io_counters(&self) -> (u64, u64, u64) {
        (self.received, self.sent, self.send_errors)
    }
}
