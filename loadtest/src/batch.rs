//! Datagrams in batches: one `recvmmsg` takes up to [`BATCH`] datagrams, one
//! `sendmmsg` sends up to [`BATCH`], so the kernel is entered once per batch
//! rather than once per datagram; the batches are the dataplane's fallback
//! I/O (`engine::mmsg`), and the clocks that time arrivals are the load
//! generator's.
#![allow(unsafe_code)]
// The I/O shell of the load generator: it reads the clock for the agent.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use rvoip_dataplane::engine::mmsg;
pub use rvoip_dataplane::engine::mmsg::{CONTROL, Read, arrival_ns};
use rvoip_dataplane::engine::set_int_option;

/// Buffers for one `recvmmsg` of up to [`BATCH`] datagrams (the
/// dataplane's fallback I/O, `engine::mmsg`).
pub type RecvBatch = mmsg::RecvBatch<BATCH>;

/// Sends `groups` out of `sock` in as few `sendmmsg` calls as it takes
/// (`engine::mmsg::send_groups`): the datagrams sent, and whether the
/// kernel refused segmented sends (the caller stops grouping).
pub fn send_groups(
    sock: &UdpSocket,
    groups: &[rvoip_dataplane::engine::gso::Group],
) -> (usize, bool) {
    mmsg::send_groups(sock.as_raw_fd(), groups)
}

/// Datagrams per system call.
pub const BATCH: usize = 64;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use rvoip_dataplane::engine::gso;
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
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 1);
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
            let n = batch.recv(rx.as_raw_fd()).unwrap();
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
            let n = batch.recv(rx.as_raw_fd()).unwrap();
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
