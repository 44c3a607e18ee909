//! Datagrams in batches: one `recvmmsg` takes up to [`BATCH`] datagrams, one
//! `sendmmsg` sends up to [`BATCH`], so the kernel is entered once per batch
//! rather than once per datagram.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use rvoip_dataplane::engine::sockaddr::{self, Storage};

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// Room for the one control message asked for: the kernel's receive time.
pub const CONTROL: usize = 32;

/// Asks the kernel to stamp each datagram with its arrival time
/// (SO_TIMESTAMPNS), so a datagram read late (a batch wait, a busy turn)
/// is still timed when it came. Best effort.
pub fn stamp_arrivals(sock: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a valid pointer.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The arrival time in `control` (SCM_TIMESTAMPNS, CLOCK_REALTIME
/// nanoseconds), if there is one.
pub fn arrival_ns(control: &[u8]) -> Option<u64> {
    let head = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while control.len() >= at + head {
        // SAFETY: `head` octets are there; read unaligned.
        let h: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control[at..].as_ptr().cast()) };
        let len = h.cmsg_len as usize;
        if len < head || at + len > control.len() {
            return None;
        }
        if h.cmsg_level == libc::SOL_SOCKET
            && h.cmsg_type == libc::SCM_TIMESTAMPNS
            && len >= head + std::mem::size_of::<libc::timespec>()
        {
            // SAFETY: a timespec's octets follow the header, as checked.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(control[at + head..].as_ptr().cast()) };
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
        at += (len + 7) & !7;
    }
    None
}

/// Converts kernel receive times (CLOCK_REALTIME) to this process's
/// monotonic clock: the offset between the two, read once per batch.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    offset: i128,
    now: u64,
}

impl Clocks {
    /// Both clocks now.
    pub fn read() -> Self {
        // The realtime clock read between two monotonic reads; read again
        // when something (preemption) came between them, so the offset is
        // good to a few microseconds.
        let mut best = None;
        for _ in 0..4 {
            let before = crate::run::monotonic_ns();
            let real = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            let after = crate::run::monotonic_ns();
            let spread = after.saturating_sub(before);
            let mid = i128::from(before) + i128::from(spread / 2);
            let c = (
                spread,
                Clocks {
                    offset: real - mid,
                    now: after,
                },
            );
            if best.as_ref().is_none_or(|b: &(u64, Clocks)| c.0 < b.0) {
                best = Some(c);
            }
            if spread < 20_000 {
                break;
            }
        }
        best.map_or(
            Clocks {
                offset: 0,
                now: crate::run::monotonic_ns(),
            },
            |b| b.1,
        )
    }

    /// The monotonic time of a datagram stamped `stamp` (realtime), never
    /// later than when the batch was read; the read time without a stamp.
    pub fn arrival(&self, stamp: Option<u64>) -> u64 {
        match stamp {
            Some(real) => {
                let mono = i128::from(real) - self.offset;
                (mono.max(0) as u64).min(self.now)
            }
            None => self.now,
        }
    }
}

/// Buffers for one `recvmmsg`.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<u8>,
    size: usize,
    names: Vec<Storage>,
    controls: Vec<[u8; CONTROL]>,
    lens: Vec<(usize, usize, usize)>,
}

impl RecvBatch {
    /// Room for [`BATCH`] datagrams of up to `size` octets.
    pub fn new(size: usize) -> Self {
        RecvBatch {
            bufs: vec![0; size * BATCH],
            size,
            names: (0..BATCH).map(|_| sockaddr::zeroed()).collect(),
            controls: vec![[0; CONTROL]; BATCH],
            lens: Vec::with_capacity(BATCH),
        }
    }

    /// Receives what is waiting (up to [`BATCH`]) without blocking; returns
    /// how many. `WouldBlock` is 0.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> = self
            .bufs
            .chunks_mut(self.size)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdrs are valid; each is pointed at one iovec and
        // one name below, all alive for the call.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut self.names[i] as *mut Storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<Storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CONTROL as _;
        }
        // SAFETY: the headers point at live buffers owned by self and iov.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        self.lens.clear();
        for m in msgs.iter().take(n as usize) {
            self.lens.push((
                m.msg_len as usize,
                m.msg_hdr.msg_namelen as usize,
                m.msg_hdr.msg_controllen as _,
            ));
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last batch, its source, and the kernel's
    /// receive time (realtime) if stamped.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, Option<u64>)> {
        let (len, name_len, control_len) = *self.lens.get(i)?;
        let src = sockaddr::read(sockaddr::bytes(&self.names[i], name_len))?;
        let start = i * self.size;
        let stamp = arrival_ns(&self.controls[i][..control_len.min(CONTROL)]);
        Some((&self.bufs[start..start + len.min(self.size)], src, stamp))
    }
}

/// Sends `msgs` with as few `sendmmsg` calls as it takes; a datagram the
/// kernel refuses is skipped (retransmission covers it). Returns how many
/// were sent.
pub fn send_all<B: AsRef<[u8]>>(sock: &UdpSocket, msgs: &[(B, SocketAddr)]) -> usize {
    let mut sent = 0;
    for chunk in msgs.chunks(BATCH) {
        let mut names: Vec<Storage> = chunk.iter().map(|_| sockaddr::zeroed()).collect();
        let mut iov: Vec<libc::iovec> = chunk
            .iter()
            .map(|(b, _)| libc::iovec {
                iov_base: b.as_ref().as_ptr().cast_mut().cast(),
                iov_len: b.as_ref().len(),
            })
            .collect();
        // SAFETY: as in recv; the kernel only reads the payloads.
        let mut hdrs: Vec<libc::mmsghdr> = chunk
            .iter()
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (i, (h, (_, to))) in hdrs.iter_mut().zip(chunk).enumerate() {
            h.msg_hdr.msg_namelen = sockaddr::write(*to, &mut names[i]);
            h.msg_hdr.msg_name = (&mut names[i] as *mut Storage).cast();
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < hdrs.len() {
            // SAFETY: the headers point at names, iovecs and payloads alive here.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs[done..].as_mut_ptr(),
                    (hdrs.len() - done) as u32,
                    0,
                )
            };
            if r <= 0 {
                done += 1;
            } else {
                done += r as usize;
                sent += r as usize;
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;

    #[test]
    fn datagrams_carry_the_kernels_arrival_time() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        stamp_arrivals(&rx);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel turns receive stamping on for the host a moment after
        // the first socket asks (deferred work); until then a datagram is
        // stamped when read. Let that moment pass.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = Clocks::read();
        tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut batch = RecvBatch::new(64);
        assert_eq!(batch.recv(&rx).unwrap(), 1);
        let read = Clocks::read();
        let (data, src, stamp) = batch.get(0).unwrap();
        assert_eq!((data, src), (&b"one"[..], tx.local_addr().unwrap()));
        // Timed when it came, not when it was read 30 ms later.
        let at = read.arrival(stamp);
        assert!(stamp.is_some());
        // (A millisecond of slack: the two clocks are read apart.)
        assert!(
            at + 1_000_000 >= before.arrival(None),
            "stamped before it was sent"
        );
        assert!(at + 20_000_000 < read.arrival(None), "stamped when read");
    }
}
