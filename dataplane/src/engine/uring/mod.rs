//! The io_uring driver every loop of the process runs on: the media
//! workers, the SIP workers, the media order service and the load
//! generator. One file per operation, each building the submission its
//! loop pushes and reading the completion it reaps:
//!
//! - [`bufring`]: provided-buffer rings for multishot receives, the kernel
//!   probe and the submit-and-wait every loop makes;
//! - [`recv`]: multishot `recvmsg` on a datagram socket and the datagram
//!   (source, payload, control) read out of a completion's buffer;
//! - [`send`]: `sendmsg` slots (header, iovec, address and segmentation
//!   control that stay put while the kernel holds them);
//! - [`poll`]: readiness (`POLLIN`, `POLLOUT`) and its removal;
//! - [`futex`]: a wait on a shared-memory word (the rings to the control
//!   plane);
//! - [`cancel`]: cancelling a request by its user data.
//!
//! [`new_ring`] makes a ring the way every loop wants it (one issuer,
//! deferred task work) and [`push`] queues a request, submitting first
//! when the queue is full. The loops keep their policies (what to arm,
//! when to wait, how to batch); the fallback loops that run where io_uring
//! is refused (the media workers' `recvmmsg` loop) use none of this.
#![allow(unsafe_code)]

pub mod bufring;
pub mod cancel;
pub mod futex;
pub mod poll;
pub mod recv;
pub mod send;

use std::io;
use std::os::fd::RawFd;

use io_uring::IoUring;
use io_uring::squeue::Entry;

pub use bufring::{BufRing, probe, submit_and_wait};

/// A ring of `sq` submission and `cq` completion entries, for one thread
/// that alone submits (SINGLE_ISSUER) and reaps in its own enters
/// (DEFER_TASKRUN).
pub fn new_ring(sq: u32, cq: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq)
        .build(sq)
}

/// Queues `e`, submitting what is queued first when the submission queue
/// is full.
///
/// # Safety
///
/// Whatever `e` points at (buffers, headers, addresses) must stay valid
/// and in place until its completion is reaped.
pub unsafe fn push(ring: &mut IoUring, e: &Entry) {
    loop {
        // SAFETY: the caller keeps what `e` points at alive (above).
        if unsafe { ring.submission().push(e) }.is_ok() {
            return;
        }
        if ring.submit().is_err() {
            std::thread::yield_now();
        }
    }
}

/// The socket a request works on: an index into the ring's registered
/// files, or a plain descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A registered (direct) descriptor.
    Fixed(u32),
    /// A plain descriptor.
    Fd(RawFd),
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use io_uring::cqueue;
    use io_uring::types::{SubmitArgs, Timespec};

    use super::recv::RecvHeader;
    use super::send::SendSlots;
    use super::*;

    #[test]
    fn datagrams_sent_from_slots_come_back_through_one_multishot_receive() {
        if !crate::engine::kernel_has(probe(&[]).is_ok(), "io_uring") {
            return;
        }
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut ring = new_ring(64, 256).expect("ring");
        let mut bufs = BufRing::new(16, 2048).expect("buffers");
        bufs.register(&ring, 3).expect("register");
        let hdr = RecvHeader::new(0);
        // SAFETY: the header and buffers outlive the ring's use of them.
        unsafe { push(&mut ring, &hdr.entry(Target::Fd(rx.as_raw_fd()), 3, 7)) };
        // Slots in a second chunk too: growing never moves the first.
        let mut slots = SendSlots::new(1);
        slots.grow_to(300);
        let payloads: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        for (n, (p, slot)) in payloads.iter().zip([0usize, 299, 5]).enumerate() {
            // SAFETY: the payloads and slots live until the sends complete.
            let e = unsafe {
                if n == 2 {
                    slots.send_to(slot, Target::Fd(tx.as_raw_fd()), p.as_ptr(), p.len(), to, 9)
                } else {
                    slots.entry(
                        slot,
                        Target::Fd(tx.as_raw_fd()),
                        p.as_ptr(),
                        p.len(),
                        to,
                        0,
                        9,
                    )
                }
            };
            unsafe { push(&mut ring, &e) };
        }
        let mut got = Vec::new();
        let mut sent = 0;
        for _ in 0..50 {
            let ts = Timespec::from(Duration::from_millis(20));
            submit_and_wait(&ring, 1, &SubmitArgs::new().timespec(&ts)).expect("wait");
            let done: Vec<(u64, i32, u32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (data, res, flags) in done {
                if data == 9 {
                    assert!(res > 0, "send failed: {res}");
                    sent += 1;
                    continue;
                }
                let bid = cqueue::buffer_select(flags).expect("a buffer");
                let d = hdr
                    .datagram(bufs.buffer(bid, res as usize))
                    .expect("a datagram");
                assert_eq!(d.source, tx.local_addr().expect("addr"));
                assert!(!d.truncated);
                got.push(d.payload.to_vec());
                bufs.push(bid);
                bufs.publish();
            }
            if got.len() == 3 && sent == 3 {
                break;
            }
        }
        assert_eq!(sent, 3);
        assert_eq!(got, payloads);
    }
}
