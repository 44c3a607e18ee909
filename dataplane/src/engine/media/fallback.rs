//! The fallback driver: nonblocking sockets in an epoll set, received with
//! recvmmsg and sent with sendmmsg in batches of up to [`BATCH`]
//! (`engine::mmsg`, the fallback I/O every loop without io_uring uses). Used when
//! io_uring is unavailable (old kernels, seccomp) and in tests. Each endpoint
//! costs a file descriptor.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::worker::{Clock, Driver, Wake, bind_udp};
use crate::engine::mmsg::RecvBatch;
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
    /// The batch's buffers: a forwarded packet leaves from the buffer it
    /// arrived in.
    batch: RecvBatch<BATCH>,
    /// Where the processing stage writes each packet it makes.
    tx: Box<[u8; 1600]>,
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
            batch: RecvBatch::new(BUF),
            tx: Box::new([0u8; 1600]),
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
        let n = self.batch.recv(sock.as_raw_fd()).unwrap_or(0);
        if n == 0 {
            return 0;
        }
        self.received += n as u64;
        let (now_ms, now_ns) = clock.now();
        // Decide every packet, then send the forwards in runs that share a socket.
        let unset = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut plan: [(EndpointId, usize, usize, SocketAddr); BATCH] = [(0, 0, 0, unset); BATCH];
        let mut planned = 0;
        for i in 0..n {
            let Some((src, buf, mut len)) = self.batch.get_mut(i) else {
                continue;
            };
            if let Action::Forward { via, to } =
                relay.on_datagram(now_ms, now_ns, ep, src, buf, &mut len)
            {
                plan[planned] = (via, i, len, to);
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
            let Some(Some(out)) = self.sockets.get(via as usize) else {
                self.send_errors += (end - start) as u64;
                start = end;
                continue;
            };
            let fd = out.as_raw_fd();
            let mut run: [(usize, usize, SocketAddr); BATCH] = [(0, 0, unset); BATCH];
            for (k, &(_, buf, len, to)) in plan[start..end].iter().enumerate() {
                run[k] = (buf, len, to);
            }
            let (sent, refused) = self.batch.send_from(fd, &run[..end - start]);
            self.sent += sent;
            self.send_errors += refused;
            start = end;
        }
        n
    }
}

impl FallbackDriver {
    /// Sends what the processing stage has due.
    fn transmit(&mut self, relay: &mut Relay, clock: &Clock) {
        if relay.next_due_ns().is_none() {
            return;
        }
        let now_ns = clock.now().1;
        while let Some(t) = relay.poll_transmit(now_ns, &mut self.tx[..]) {
            let Some(Some(sock)) = self.sockets.get(t.via as usize) else {
                self.send_errors += 1;
                continue;
            };
            if crate::engine::mmsg::send_to(sock.as_raw_fd(), &self.tx[..t.len], t.to) {
                self.sent += 1;
            } else {
                self.send_errors += 1;
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
        self.transmit(relay, clock);
        // The processing stage's next frame bounds the wait (rounded up).
        let timeout = match relay.next_due_ns() {
            Some(due) => timeout.min(Duration::from_nanos(
                due.saturating_sub(clock.now().1) + 999_999,
            )),
            None => timeout,
        };
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
        self.transmit(relay, clock);
        Ok(())
    }

    fn io_counters(&self) -> (u64, u64, u64) {
        (self.received, self.sent, self.send_errors)
    }
}
