//! The io_uring driver (io-uring 0.7): one ring per worker, created on the
//! worker's thread with SINGLE_ISSUER and DEFER_TASKRUN.
//!
//! - **Endpoints are direct descriptors.** A socket is created and bound with
//!   ordinary calls, installed in the ring's fixed-file table
//!   (`register_files_update`) and its descriptor closed at once: the socket
//!   lives on in the table, outside the process's descriptor table. Each ring's
//!   table holds up to `RLIMIT_NOFILE` sockets, so two workers hold 20,000
//!   media endpoints with a descriptor limit of 20,000 and room to spare.
//! - **Receiving** is one multishot RecvMsg per endpoint drawing from a
//!   provided-buffer ring: the kernel fills a buffer per datagram and reports
//!   its id; no receive is re-armed per packet.
//! - **Sending** is zero-copy within the process: a forwarded packet is sent
//!   straight from the buffer it arrived in (SendMsg on the fixed file), and
//!   the buffer returns to the ring when the send completes. Each buffer id
//!   has its own msghdr/iovec/sockaddr slot, so nothing is allocated per packet.
//! - **Waiting** is one `io_uring_enter` per batch: submit the sends, run the
//!   deferred task work, wait for at least one completion or the timeout.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::squeue::Entry;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode};

use super::Polling;
use super::worker::{Clock, Driver, Wake, bind_udp};
use crate::engine::uring::recv::RecvHeader;
use crate::engine::uring::send::SendSlots;
use crate::engine::uring::{self, BufRing, Target, submit_and_wait};
use crate::media::relay::{Action, EndpointId, Relay};

/// Provided buffers per ring (a power of two, at most 32768).
const BUFFERS: u16 = 4096;
/// Size of each buffer: the recvmsg header, the source address, and a datagram.
const BUF_SIZE: usize = 2048;
/// Buffer group id.
const BGID: u16 = 1;
/// Submission queue size; completions get four times as many slots.
const SQ_ENTRIES: u32 = 4096;

const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
const KIND_TX: u64 = 5;

/// Buffers for packets the processing stage makes (a transcoded call's
/// frames): each stays untouched until its send completes.
const TX_BUFFERS: usize = 512;
/// Size of each: a datagram and room for an SRTP tag.
const TX_SIZE: usize = 1600;

fn recv_data(ep: EndpointId, generation: u32) -> u64 {
    (KIND_RECV << KIND_SHIFT) | (u64::from(generation & 0x00ff_ffff) << 32) | u64::from(ep)
}

/// Checks that this kernel gives the driver what it needs.
pub(super) fn probe() -> io::Result<()> {
    uring::probe(&[
        opcode::RecvMsgMulti::CODE,
        opcode::SendMsg::CODE,
        opcode::PollAdd::CODE,
        opcode::AsyncCancel::CODE,
    ])
}

#[derive(Debug, Clone, Copy, Default)]
struct EndpointState {
    open: bool,
    generation: u32,
}

pub(super) struct UringDriver {
    // Field order matters: the ring is dropped (and its registrations with it)
    // before the buffer memory it refers to.
    ring: IoUring,
    bufs: BufRing,
    /// A send slot per buffer: a forwarded packet leaves from the buffer
    /// it arrived in.
    sends: SendSlots,
    recv_hdr: RecvHeader,
    /// The processing stage's send buffers, their send slots and the free ones.
    tx_bufs: Box<[u8]>,
    tx_sends: SendSlots,
    tx_free: Vec<u16>,
    endpoints: Vec<EndpointState>,
    free_slots: Vec<u32>,
    rearm: Vec<EndpointId>,
    wake_fd: i32,
    wake_armed: bool,
    polling: Polling,
    /// Whether the kernel supports a minimum wait (IORING_FEAT_MIN_TIMEOUT).
    min_wait: bool,
    last_packet: Instant,
    returned: bool,
    received: u64,
    sent: u64,
    send_errors: u64,
}

impl UringDriver {
    pub(super) fn new(max_endpoints: u32, wake: &Wake, polling: Polling) -> io::Result<Self> {
        let ring = uring::new_ring(SQ_ENTRIES, SQ_ENTRIES * 4)?;
        let min_wait = ring.params().is_feature_min_timeout();
        let capacity = max_endpoints.max(16);
        ring.submitter().register_files_sparse(capacity)?;
        let mut bufs = BufRing::new(BUFFERS, BUF_SIZE)?;
        bufs.register(&ring, BGID)?;
        let sends = SendSlots::new(usize::from(BUFFERS));
        let recv_hdr = RecvHeader::new(0);
        Ok(UringDriver {
            ring,
            bufs,
            sends,
            recv_hdr,
            tx_bufs: vec![0u8; TX_BUFFERS * TX_SIZE].into_boxed_slice(),
            tx_sends: SendSlots::new(TX_BUFFERS),
            tx_free: (0..TX_BUFFERS as u16).rev().collect(),
            endpoints: vec![EndpointState::default(); capacity as usize],
            free_slots: (0..capacity).rev().collect(),
            rearm: Vec::new(),
            wake_fd: wake.raw(),
            wake_armed: false,
            polling,
            min_wait,
            last_packet: Instant::now(),
            returned: false,
            received: 0,
            sent: 0,
            send_errors: 0,
        })
    }

    /// Queues an SQE, submitting first when the queue is full.
    fn push(&mut self, e: Entry) {
        // SAFETY: every entry queued by this driver points at memory it
        // owns for the request's lifetime (buffers, send slots, recv_hdr).
        unsafe { uring::push(&mut self.ring, &e) };
    }

    fn arm_recv(&mut self, ep: EndpointId) {
        let generation = self.endpoints[ep as usize].generation;
        let e = self
            .recv_hdr
            .entry(Target::Fixed(ep), BGID, recv_data(ep, generation));
        self.push(e);
    }

    fn give_back(&mut self, bid: u16) {
        self.bufs.push(bid);
        self.returned = true;
    }

    /// Handles every completion now in the queue; returns how many.
    fn reap(&mut self, relay: &mut Relay, clock: &Clock) -> usize {
        let before = self.received;
        let mut handled = 0;
        let (mut now_ms, mut now_ns) = clock.now();
        loop {
            let batch: Option<(u64, i32, u32)> = self
                .ring
                .completion()
                .next()
                .map(|c| (c.user_data(), c.result(), c.flags()));
            let Some((data, res, flags)) = batch else {
                break;
            };
            handled += 1;
            if handled % 64 == 0 {
                (now_ms, now_ns) = clock.now();
            }
            match data >> KIND_SHIFT {
                KIND_RECV => self.on_recv(relay, data, res, flags, now_ms, now_ns),
                KIND_SEND => {
                    let bid = (data & 0xffff) as u16;
                    if res < 0 {
                        self.send_errors += 1;
                    } else {
                        self.sent += 1;
                    }
                    self.give_back(bid);
                }
                KIND_TX => {
                    if res < 0 {
                        self.send_errors += 1;
                    } else {
                        self.sent += 1;
                    }
                    self.tx_free.push((data & 0xffff) as u16);
                }
                KIND_WAKE if !cqueue::more(flags) => {
                    self.wake_armed = false;
                }
                _ => {}
            }
        }
        if self.returned {
            self.bufs.publish();
            self.returned = false;
        }
        if self.received != before {
            // Busy-polling and wake-up coalescing depend on whether traffic flows.
            self.last_packet = Instant::now();
        }
        handled
    }

    fn on_recv(
        &mut self,
        relay: &mut Relay,
        data: u64,
        res: i32,
        flags: u32,
        now_ms: u64,
        now_ns: u64,
    ) {
        let ep = (data & 0xffff_ffff) as EndpointId;
        let generation = ((data >> 32) & 0x00ff_ffff) as u32;
        let state = self.endpoints.get(ep as usize).copied().unwrap_or_default();
        let current = state.open && (state.generation & 0x00ff_ffff) == generation;
        let bid = cqueue::buffer_select(flags);
        if current && !cqueue::more(flags) && res != -libc::ECANCELED {
            // The multishot receive ended (buffers ran out, or an error): re-arm
            // after this batch has returned its buffers.
            self.rearm.push(ep);
        }
        let Some(bid) = bid else { return };
        if res <= 0 || !current {
            self.give_back(bid);
            return;
        }
        self.received += 1;
        let buf = self.bufs.buffer(bid, res as usize);
        let Some(d) = self.recv_hdr.datagram(buf).filter(|d| !d.truncated) else {
            self.give_back(bid);
            return;
        };
        let (src, offset, mut len) = (d.source, d.offset, d.payload.len());
        // The packet is transformed in place (SRTP); the rest of the buffer
        // is room for a tag.
        let region = &mut self.bufs.buffer_mut(bid)[offset..];
        let ptr = region.as_mut_ptr();
        match relay.on_datagram(now_ms, now_ns, ep, src, region, &mut len) {
            Action::Forward { via, to }
                if self.endpoints.get(via as usize).is_some_and(|s| s.open) =>
            {
                let data = (KIND_SEND << KIND_SHIFT) | u64::from(bid);
                // SAFETY: buffer `bid` is this driver's until the send
                // completes (it goes back to the ring then), and so is its
                // slot (one per buffer).
                let e = unsafe {
                    self.sends
                        .entry(usize::from(bid), Target::Fixed(via), ptr, len, to, 0, data)
                };
                self.push(e);
            }
            _ => self.give_back(bid),
        }
    }

    /// Sends what the processing stage has due, each packet from a buffer
    /// of its own; returns how many.
    fn transmit(&mut self, relay: &mut Relay, clock: &Clock) -> usize {
        if relay.next_due_ns().is_none() {
            return 0;
        }
        let now_ns = clock.now().1;
        let mut n = 0;
        while let Some(&i) = self.tx_free.last() {
            let at = usize::from(i) * TX_SIZE;
            let buf = &mut self.tx_bufs[at..at + TX_SIZE];
            let ptr = buf.as_ptr();
            let Some(t) = relay.poll_transmit(now_ns, buf) else {
                break;
            };
            if !self.endpoints.get(t.via as usize).is_some_and(|s| s.open) {
                continue;
            }
            self.tx_free.pop();
            let data = (KIND_TX << KIND_SHIFT) | u64::from(i);
            // SAFETY: buffer `i` and its slot are this driver's until the
            // send completes (it goes back to `tx_free` then).
            let e = unsafe {
                self.tx_sends.entry(
                    usize::from(i),
                    Target::Fixed(t.via),
                    ptr,
                    t.len,
                    t.to,
                    0,
                    data,
                )
            };
            self.push(e);
            n += 1;
        }
        n
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let spin = match self.polling {
            Polling::Adaptive(window) if self.last_packet.elapsed() < window => Some(window),
            _ => None,
        };
        if let Some(window) = spin {
            // Busy-poll: enter with a zero timeout until something completes
            // or the window since the last packet has passed.
            let zero = Timespec::new();
            let args = SubmitArgs::new().timespec(&zero);
            while self.last_packet.elapsed() < window {
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err(e),
                }
                if !self.ring.completion().is_empty() {
                    return Ok(());
                }
            }
        }
        let ts = Timespec::from(timeout);
        // Coalescing wake-ups pays only while packets flow; an idle worker
        // wakes at the first event, so a control order (a new call's
        // ports) is not held back by the batch window.
        let flowing = self.last_packet.elapsed() < FLOWING;
        let (want, args) = match self.polling {
            Polling::Interrupt { batch_wait_us }
                if batch_wait_us > 0 && self.min_wait && flowing =>
            {
                (
                    64,
                    SubmitArgs::new().timespec(&ts).min_wait_usec(batch_wait_us),
                )
            }
            _ => (1, SubmitArgs::new().timespec(&ts)),
        };
        submit_and_wait(&self.ring, want, &args)
    }
}

/// Packets seen within this long mean traffic is flowing.
const FLOWING: Duration = Duration::from_millis(20);

impl Driver for UringDriver {
    fn open(&mut self, addr: SocketAddr) -> io::Result<EndpointId> {
        let Some(slot) = self.free_slots.pop() else {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        };
        let sock = match bind_udp(addr) {
            Ok(s) => s,
            Err(e) => {
                self.free_slots.push(slot);
                return Err(e);
            }
        };
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(slot, &[sock.as_raw_fd()])
        {
            self.free_slots.push(slot);
            return Err(e);
        }
        // The table holds its own reference: the descriptor is closed here.
        drop(sock);
        let st = &mut self.endpoints[slot as usize];
        st.open = true;
        st.generation = st.generation.wrapping_add(1);
        self.arm_recv(slot);
        Ok(slot)
    }

    fn close(&mut self, ep: EndpointId) {
        let Some(st) = self.endpoints.get_mut(ep as usize) else {
            return;
        };
        if !st.open {
            return;
        }
        st.open = false;
        let data = recv_data(ep, st.generation);
        self.push(uring::cancel::request(data, KIND_CANCEL << KIND_SHIFT));
        // Removing the socket from the table closes it once the cancelled
        // receive has let go of it.
        let _ = self.ring.submitter().register_files_update(ep, &[-1]);
        self.free_slots.push(ep);
    }

    fn poll(&mut self, relay: &mut Relay, clock: &Clock, timeout: Duration) -> io::Result<()> {
        if !self.wake_armed {
            let e = uring::poll::readable(self.wake_fd, true, KIND_WAKE << KIND_SHIFT);
            self.push(e);
            self.wake_armed = true;
        }
        let rearm = std::mem::take(&mut self.rearm);
        for ep in &rearm {
            if self.endpoints.get(*ep as usize).is_some_and(|s| s.open) {
                self.arm_recv(*ep);
            }
        }
        self.rearm = rearm;
        self.rearm.clear();
        // The processing stage's next frame bounds the wait.
        let timeout = match relay.next_due_ns() {
            Some(due) => {
                let now = clock.now().1;
                timeout.min(Duration::from_nanos(due.saturating_sub(now)))
            }
            None => timeout,
        };
        if self.ring.completion().is_empty() && self.transmit(relay, clock) == 0 {
            self.wait(timeout)?;
        }
        // Drain completions; the sends they queue go out with the next enter,
        // which we make right away so forwarding does not wait for the next batch.
        for _ in 0..8 {
            let made = self.transmit(relay, clock);
            if self.reap(relay, clock) + made == 0 {
                break;
            }
            match self
                .ring
                .submitter()
                .submit_with_args(0, &SubmitArgs::new())
            {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn io_counters(&self) -> (u64, u64, u64) {
        (self.received, self.sent, self.send_errors)
    }
}
