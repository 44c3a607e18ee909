//! Datagrams in batches: one `recvmmsg` takes up to [`BATCH`] datagrams, one
//! `sendmmsg` sends up to [`BATCH`], so the kernel is entered once per batch
//! rather than once per datagram.
#![allow(unsafe_code)]
// The I/O shell of the load generator: it reads the clock for the agent.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use rvoip_dataplane::engine::sockaddr::{self, Storage};

use rvoip_dataplane::engine::gso::{self, Group, segment_size};
use rvoip_dataplane::engine::set_int_option;

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// Room for the control messages asked for: the kernel's receive time and,
/// for coalesced arrivals, their segment size.
pub const CONTROL: usize = 64;

/// Asks the kernel to stamp each datagram with its arrival time
/// (SO_TIMESTAMPNS), so a datagram read late (a batch wait, a busy turn)
/// is still timed when it came. Best effort.
pub fn stamp_arrivals(sock: &UdpSocket) {
    set_int_option(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
}

/// Makes the kernel refuse `sock`'s segmented sends (no UDP checksums:
/// EINVAL), as a route without checksum offload would; for tests of the
/// fallback.
#[cfg(test)]
pub(crate) fn refuse_segmented_sends(sock: &UdpSocket) {
    assert!(set_int_option(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_NO_CHECK,
        1
    ));
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

/// One read of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// The payload: one datagram, or several coalesced ones.
    pub data: &'a [u8],
    /// Where it came from.
    pub src: SocketAddr,
    /// The kernel's receive time (realtime), if stamped.
    pub stamp: Option<u64>,
    /// The segment size when the read holds coalesced datagrams
    /// ([`gso::split`] cuts it).
    pub seg: Option<usize>,
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

    /// Read `i` of the last batch.
    pub fn get(&self, i: usize) -> Option<Read<'_>> {
        let (len, name_len, control_len) = *self.lens.get(i)?;
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
}

/// Sends `groups` with as few `sendmmsg` calls as it takes, several
/// datagrams of a group in one message with UDP_SEGMENT. A datagram the
/// kernel refuses is skipped (retransmission covers it); a segmented send
/// the kernel cannot do goes again one datagram at a time and returns
/// `true` (the caller stops grouping). Returns the datagrams sent and that.
pub fn send_groups(sock: &UdpSocket, groups: &[Group]) -> (usize, bool) {
    let mut sent = 0;
    let mut refused = false;
    for chunk in groups.chunks(BATCH) {
        let mut names: Vec<Storage> = chunk.iter().map(|_| sockaddr::zeroed()).collect();
        let mut controls = vec![[0u64; gso::SEND_CONTROL / 8]; chunk.len()];
        let mut iov: Vec<libc::iovec> = chunk
            .iter()
            .map(|g| libc::iovec {
                iov_base: g.data.as_ptr().cast_mut().cast(),
                iov_len: g.data.len(),
            })
            .collect();
        // SAFETY: as in recv; the kernel only reads the payloads.
        let mut hdrs: Vec<libc::mmsghdr> = chunk
            .iter()
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (i, (h, g)) in hdrs.iter_mut().zip(chunk).enumerate() {
            let to = g.to.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            h.msg_hdr.msg_namelen = sockaddr::write(to, &mut names[i]);
            h.msg_hdr.msg_name = (&mut names[i] as *mut Storage).cast();
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
            if g.count() > 1 {
                let len = gso::segment_control(&mut controls[i], g.seg);
                h.msg_hdr.msg_control = controls[i].as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = len as _;
            }
        }
        let mut done = 0;
        while done < hdrs.len() {
            // SAFETY: the headers point at names, iovecs, controls and
            // payloads alive here.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs[done..].as_mut_ptr(),
                    (hdrs.len() - done) as u32,
                    0,
                )
            };
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
            if g.count() > 1
                && gso::segmentation_refused(errno)
                && let Some(to) = g.to
            {
                refused = true;
                for d in g.datagrams() {
                    if sock.send_to(d, to).is_ok() {
                        sent += 1;
                    }
                }
            }
            done += 1;
        }
    }
    (sent, refused)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use rvoip_dataplane::engine::kernel_has;

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
        let Read {
            data,
            src,
            stamp,
            seg,
        } = batch.get(0).unwrap();
        assert_eq!(seg, None);
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

    #[test]
    fn grouped_sends_arrive_as_their_datagrams_and_a_refused_group_goes_singly() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let coalesced = kernel_has(gso::receive_coalesced(&rx), "UDP_GRO");
        let segmented = kernel_has(gso::can_segment(&tx), "UDP_SEGMENT");
        let to = rx.local_addr().unwrap();
        let mut p = gso::Packer::new(segmented);
        for i in 0..10u8 {
            p.push(u64::from(i), &[i; 300], to);
        }
        // Longer: a send of its own (a shorter one would end the group).
        p.push(99, &[99; 400], to);
        assert_eq!(send_groups(&tx, p.groups()), (11, false));
        p.clear();
        let mut batch = RecvBatch::new(65_536);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut reads = 0;
        for _ in 0..100 {
            let n = batch.recv(&rx).unwrap();
            reads += n;
            for i in 0..n {
                let Read { data, seg, .. } = batch.get(i).unwrap();
                if segmented && coalesced && data.len() == 3000 {
                    assert_eq!(seg, Some(300), "the kernel's segment size");
                }
                got.extend(gso::split(data, seg).map(<[u8]>::to_vec));
            }
            if got.len() == 11 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 300]).collect();
        want.push(vec![99; 400]);
        assert_eq!(got, want);
        if segmented && coalesced {
            assert_eq!(reads, 2, "ten datagrams in one read, and the one alone");
        }
        if !segmented {
            return;
        }
        // A socket without UDP checksums: the kernel refuses segmented sends.
        refuse_segmented_sends(&tx);
        for i in 0..5u8 {
            p.push(u64::from(i), &[i; 200], to);
        }
        assert_eq!(
            send_groups(&tx, p.groups()),
            (5, true),
            "sent singly, and told"
        );
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = batch.recv(&rx).unwrap();
            for i in 0..n {
                let Read { data, seg, .. } = batch.get(i).unwrap();
                assert_eq!((data.len(), seg), (200, None));
                got.push(data[0]);
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
