//! The load generator's sockets on io_uring (io-uring 0.7, the dataplane's
//! provided-buffer rings): one ring per run loop, SINGLE_ISSUER and
//! DEFER_TASKRUN, so datagrams arriving while the loop works do not wake it.
//!
//! - **Receiving**: one multishot RecvMsg per socket (SIP, RTP), each
//!   drawing from its own provided-buffer ring; nothing is re-armed per
//!   datagram, and a ring that ran dry is re-armed on the next wait (the
//!   datagrams wait in the socket's buffer meanwhile).
//! - **Sending**: a turn's datagrams are grouped ([`gso::Packer`]); a
//!   group of several leaves in one SendMsg with UDP_SEGMENT, a single one
//!   in a Send with its destination (sendto), each from a reused send slot
//!   (address, header and the payload's buffer) that returns to the free
//!   list when the send completes. A kernel that refuses a segmented send
//!   gets that group again one datagram at a time, and no more groups.
//! - **Coalesced arrivals** (UDP_GRO on the SIP socket): a read holding
//!   several datagrams is cut at the segment size the kernel reports.
//! - **Waiting**: one `io_uring_enter` per loop turn submits every queued
//!   send and waits for the first completion or the next timer; with a batch
//!   wait, for up to that long to gather more (IORING_FEAT_MIN_TIMEOUT).
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::squeue::Entry;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode};
use rvoip_dataplane::engine::uring::recv::RecvHeader;
use rvoip_dataplane::engine::uring::send::SendSlots;
use rvoip_dataplane::engine::uring::{self, BufRing, Target, submit_and_wait};

use crate::batch::{CONTROL, arrival_ns};
use rvoip_dataplane::engine::gso::segment_size;
use rvoip_dataplane::engine::gso::{self, Packer};

/// Which socket a datagram came in on or goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The SIP socket.
    Sip = 0,
    /// The RTP socket.
    Rtp = 1,
}

/// SIP receive buffers: the recvmsg header, the source, the control
/// messages, and up to 64 KiB of coalesced messages (the memory is touched
/// only as far as arrivals fill it).
const SIP_BUFFERS: u16 = 1024;
const SIP_BUF_SIZE: usize = 65_536 + 256;
/// RTP receive buffers: the header, the source, and an SRTP packet or a
/// DTLS flight's datagram (WebRTC legs: up to an MTU of 1200 octets and
/// more from peers that cut flights larger).
const RTP_BUFFERS: u16 = 8192;
const RTP_BUF_SIZE: usize = 1536 + 256;
const SQ_ENTRIES: u32 = 2048;

const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;

/// The state of one send in flight (what the kernel reads is in its
/// [`SendSlots`] slot; the data's heap buffer stays put while the vector
/// of slots grows).
struct SendSlot {
    data: Vec<u8>,
    /// Segment size when several datagrams share the send, else 0.
    seg: usize,
    sock: Socket,
    to: Option<SocketAddr>,
}

/// Whether this kernel has what [`UringIo`] needs (multishot RecvMsg,
/// Send, provided-buffer rings, DEFER_TASKRUN).
pub fn probe() -> io::Result<()> {
    uring::probe(&[
        opcode::RecvMsgMulti::CODE,
        opcode::Send::CODE,
        opcode::SendMsg::CODE,
    ])
}

/// A run loop's two sockets on one ring.
pub struct UringIo {
    // Field order matters: the ring (and its registrations) goes before the
    // buffer memory it refers to.
    ring: IoUring,
    bufs: [BufRing; 2],
    recv_hdr: RecvHeader,
    armed: [bool; 2],
    slots: Vec<SendSlot>,
    sends: SendSlots,
    free: Vec<u32>,
    min_wait: bool,
    returned: [bool; 2],
    /// The turn's datagrams per socket, grouped.
    out: [Packer; 2],
    /// Sends the kernel refused (retransmission covers SIP; RTP counts as lost).
    pub send_errors: u64,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("slots", &self.slots.len())
            .field("free", &self.free.len())
            .field("min_wait", &self.min_wait)
            .field("send_errors", &self.send_errors)
            .finish()
    }
}

impl UringIo {
    /// A ring for `sip` and `rtp` (registered as fixed files 0 and 1; the
    /// sockets must outlive the ring); sends are grouped when the kernel
    /// can segment and `segment` asks for it.
    pub fn new(sip: &UdpSocket, rtp: &UdpSocket, segment: bool) -> io::Result<Self> {
        let ring = uring::new_ring(SQ_ENTRIES, SQ_ENTRIES * 8)?;
        let min_wait = ring.params().is_feature_min_timeout();
        ring.submitter()
            .register_files(&[sip.as_raw_fd(), rtp.as_raw_fd()])?;
        let mut sip_bufs = BufRing::new(SIP_BUFFERS, SIP_BUF_SIZE)?;
        sip_bufs.register(&ring, Socket::Sip as u16 + 1)?;
        let mut rtp_bufs = BufRing::new(RTP_BUFFERS, RTP_BUF_SIZE)?;
        rtp_bufs.register(&ring, Socket::Rtp as u16 + 1)?;
        let recv_hdr = RecvHeader::new(CONTROL);
        Ok(UringIo {
            ring,
            bufs: [sip_bufs, rtp_bufs],
            recv_hdr,
            armed: [false; 2],
            slots: Vec::new(),
            sends: SendSlots::new(0),
            free: Vec::new(),
            min_wait,
            returned: [false; 2],
            out: [
                Packer::new(segment && gso::can_segment(sip)),
                Packer::new(segment && gso::can_segment(rtp)),
            ],
            send_errors: 0,
        })
    }

    /// Queues an SQE, submitting first when the queue is full.
    fn push(&mut self, e: &Entry) {
        // SAFETY: every entry points at memory this struct owns for the
        // request's lifetime (send slots and data, recv_hdr, the buffer
        // rings).
        unsafe { uring::push(&mut self.ring, e) };
    }

    fn slot(&mut self) -> u32 {
        if let Some(i) = self.free.pop() {
            return i;
        }
        self.slots.push(SendSlot {
            data: Vec::new(),
            seg: 0,
            sock: Socket::Sip,
            to: None,
        });
        self.sends.grow_to(self.slots.len());
        (self.slots.len() - 1) as u32
    }

    /// Queues the send of slot `i`'s data: one datagram, or segments of
    /// `seg` octets.
    fn queue_slot(&mut self, i: u32, sock: Socket, to: SocketAddr, seg: usize) {
        let s = &mut self.slots[i as usize];
        s.sock = sock;
        s.to = Some(to);
        s.seg = seg;
        let (data, len) = (s.data.as_ptr(), s.data.len());
        let user_data = (KIND_SEND << KIND_SHIFT) | u64::from(i);
        let target = Target::Fixed(sock as u32);
        // SAFETY: the data stays in slot `i`, untouched, and the slot stays
        // off the free list until the completion is reaped.
        let e = unsafe {
            if seg == 0 {
                // A send with its address (sendto), not a SendMsg: no
                // msghdr to import for a lone datagram.
                self.sends
                    .send_to(i as usize, target, data, len, to, user_data)
            } else {
                self.sends
                    .entry(i as usize, target, data, len, to, seg, user_data)
            }
        };
        self.push(&e);
    }

    /// Queues `data` to `to` (it leaves with the next wait), as part of
    /// `flow`: a flow's datagrams leave in the order queued.
    pub fn send(&mut self, sock: Socket, flow: u64, data: &[u8], to: SocketAddr) {
        self.out[sock as usize].push(flow, data, to);
    }

    /// Whether sends are grouped on `sock`.
    pub fn segments(&self, sock: Socket) -> bool {
        self.out[sock as usize].enabled()
    }

    /// Turns the turn's groups into send requests.
    fn flush(&mut self) {
        for sock in [Socket::Sip, Socket::Rtp] {
            let k = sock as usize;
            if self.out[k].is_empty() {
                continue;
            }
            let mut out = std::mem::take(&mut self.out[k]);
            for g in out.groups() {
                let Some(to) = g.to else { continue };
                let seg = if g.count() > 1 { g.seg } else { 0 };
                let i = self.slot();
                // The group's buffer goes to the slot, the slot's to the group.
                std::mem::swap(&mut self.slots[i as usize].data, &mut g.data);
                self.queue_slot(i, sock, to, seg);
            }
            out.clear();
            self.out[k] = out;
        }
    }

    /// Submits queued sends and waits until a completion is there or
    /// `timeout` passes; with `batch_wait_us`, waits up to that long for
    /// more before returning.
    pub fn wait(&mut self, timeout: Duration, batch_wait_us: u64) -> io::Result<()> {
        self.flush();
        for sock in [Socket::Sip, Socket::Rtp] {
            if !self.armed[sock as usize] {
                let group = sock as u16 + 1;
                let e = self.recv_hdr.entry(
                    Target::Fixed(sock as u32),
                    group,
                    (KIND_RECV << KIND_SHIFT) | sock as u64,
                );
                self.push(&e);
                self.armed[sock as usize] = true;
            }
        }
        let ts = Timespec::from(timeout);
        let (want, args) = if batch_wait_us > 0 && self.min_wait && !timeout.is_zero() {
            let us = batch_wait_us.min(timeout.as_micros() as u64) as u32;
            (256, SubmitArgs::new().timespec(&ts).min_wait_usec(us))
        } else {
            // A zero timeout still asks for one completion: deferred task
            // work (the receives) runs only in an enter that waits.
            (1, SubmitArgs::new().timespec(&ts))
        };
        submit_and_wait(&self.ring, want, &args)
    }

    /// A send in slot `i` failed with `errno`: a segmented send the kernel
    /// cannot do (no offload on the route, a small MTU) goes again one
    /// datagram at a time, and the socket's sends are no longer grouped;
    /// anything else is counted (SIP retransmits; RTP counts it lost).
    fn refused(&mut self, i: usize, errno: i32) {
        let s = &mut self.slots[i];
        let (sock, seg, to) = (s.sock, s.seg, s.to);
        let segmented_refused = gso::segmentation_refused(errno);
        match to {
            Some(to) if seg > 0 && segmented_refused => {
                let data = std::mem::take(&mut s.data);
                let out = &mut self.out[sock as usize];
                out.disable();
                for d in data.chunks(seg) {
                    out.push(0, d, to);
                }
            }
            _ => {
                let n = if seg > 0 {
                    s.data.len().div_ceil(seg)
                } else {
                    1
                };
                self.send_errors += n as u64;
            }
        }
    }

    /// Hands every datagram received so far to `on` (socket, payload,
    /// source, the kernel's receive time if stamped) and frees finished
    /// sends; returns how many datagrams.
    pub fn drain(&mut self, mut on: impl FnMut(Socket, &[u8], SocketAddr, Option<u64>)) -> usize {
        let mut n = 0;
        loop {
            let next = self
                .ring
                .completion()
                .next()
                .map(|c| (c.user_data(), c.result(), c.flags()));
            let Some((data, res, flags)) = next else {
                break;
            };
            match data >> KIND_SHIFT {
                KIND_SEND => {
                    let i = (data & 0xffff_ffff) as usize;
                    if res < 0 {
                        self.refused(i, -res);
                    }
                    self.free.push(i as u32);
                }
                KIND_RECV => {
                    let sock = if data & 1 == 0 {
                        Socket::Sip
                    } else {
                        Socket::Rtp
                    };
                    let k = sock as usize;
                    if !cqueue::more(flags) {
                        // Out of buffers (or an error): re-armed on the next wait.
                        self.armed[k] = false;
                    }
                    let Some(bid) = cqueue::buffer_select(flags) else {
                        continue;
                    };
                    if res > 0 {
                        let buf = self.bufs[k].buffer(bid, res as usize);
                        if let Some(m) = self.recv_hdr.datagram(buf).filter(|m| !m.truncated) {
                            let at = arrival_ns(m.control);
                            for d in gso::split(m.payload, segment_size(m.control)) {
                                on(sock, d, m.source, at);
                                n += 1;
                            }
                        }
                    }
                    self.bufs[k].push(bid);
                    self.returned[k] = true;
                }
                _ => {}
            }
        }
        for k in 0..2 {
            if self.returned[k] {
                self.bufs[k].publish();
                self.returned[k] = false;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use rvoip_dataplane::engine::kernel_has;
    use std::collections::HashSet;

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        crate::batch::stamp_arrivals(&s);
        s
    }

    #[test]
    fn more_datagrams_than_buffers_all_arrive_once_and_in_full() {
        if !kernel_has(probe().is_ok(), "io_uring with provided-buffer rings") {
            return;
        }
        let (sip, rtp) = (socket(), socket());
        let mut io = UringIo::new(&sip, &rtp, true).expect("ring");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        let to = sip.local_addr().unwrap();
        // More datagrams than the SIP ring has buffers, in waves small
        // enough for a default socket buffer, none read in between: the
        // multishot receive runs dry and must be re-armed for the rest. (An
        // enter takes a few dozen datagrams per socket: a wave is read before
        // the next is sent.)
        let n = usize::from(SIP_BUFFERS) + 176;
        for wave in 0..n.div_ceil(100) {
            for i in wave * 100..((wave + 1) * 100).min(n) {
                peer.send_to(format!("message {i:06}").as_bytes(), to)
                    .unwrap();
            }
            for _ in 0..4 {
                io.wait(Duration::ZERO, 0).unwrap();
            }
        }
        // Enter without reading until every buffer is taken and the
        // receive has ended.
        let mut ran_dry = false;
        for _ in 0..100 {
            io.wait(Duration::from_millis(1), 0).unwrap();
            // Every buffer's completion, and the one that ends the receive.
            ran_dry = io.ring.completion().len() > usize::from(SIP_BUFFERS);
            if ran_dry {
                break;
            }
        }
        assert!(ran_dry, "the receive ran out of buffers");
        let mut seen = HashSet::new();
        let from = peer.local_addr().unwrap();
        for _ in 0..200 {
            io.drain(|sock, data, src, stamp| {
                assert_eq!((sock, src, data.len()), (Socket::Sip, from, 14));
                assert!(stamp.is_some(), "the kernel's arrival time");
                assert!(seen.insert(data.to_vec()), "a datagram came twice");
            });
            if seen.len() == n {
                break;
            }
            io.wait(Duration::from_millis(5), 0).unwrap();
        }
        assert_eq!(seen.len(), n);
        // And sends: each queued datagram leaves once, to its address (the
        // RTP ones in two segmented sends where the kernel can).
        for i in 0..100u8 {
            io.send(Socket::Rtp, u64::from(i), &[i; 172], from);
        }
        io.send(Socket::Sip, 0, b"OPTIONS", from);
        io.wait(Duration::ZERO, 0).unwrap();
        io.drain(|_, _, _, _| {});
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        while got.len() < 101 {
            let (len, src) = peer.recv_from(&mut buf).expect("sent datagram");
            got.push((buf[..len].to_vec(), src));
        }
        assert_eq!(io.send_errors, 0);
        let rtp_from = rtp.local_addr().unwrap();
        let sip_from = sip.local_addr().unwrap();
        assert!(got.iter().any(|(d, s)| d == b"OPTIONS" && *s == sip_from));
        let mut firsts: Vec<u8> = got
            .iter()
            .filter(|(d, s)| d.len() == 172 && *s == rtp_from)
            .map(|(d, _)| d[0])
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..100).collect::<Vec<u8>>());
    }

    #[test]
    fn segmented_sends_arrive_cut_into_their_datagrams_in_order() {
        if !kernel_has(probe().is_ok(), "io_uring with provided-buffer rings") {
            return;
        }
        let (a_sip, a_rtp, b_sip, b_rtp) = (socket(), socket(), socket(), socket());
        if !kernel_has(gso::can_segment(&a_sip), "UDP_SEGMENT")
            || !kernel_has(gso::receive_coalesced(&b_sip), "UDP_GRO")
        {
            return;
        }
        let mut a = UringIo::new(&a_sip, &a_rtp, true).expect("ring");
        let mut b = UringIo::new(&b_sip, &b_rtp, true).expect("ring");
        let to = b_sip.local_addr().unwrap();
        // Two calls' messages, each call's in order, of two lengths.
        let msgs: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; if i % 2 == 0 { 700 } else { 450 }])
            .collect();
        for (i, m) in msgs.iter().enumerate() {
            a.send(Socket::Sip, i as u64 % 2, m, to);
        }
        a.wait(Duration::ZERO, 0).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        for _ in 0..200 {
            b.wait(Duration::from_millis(5), 0).unwrap();
            b.drain(|sock, data, src, _| {
                assert_eq!((sock, src), (Socket::Sip, a_sip.local_addr().unwrap()));
                got.push(data.to_vec());
            });
            a.drain(|_, _, _, _| {});
            if got.len() >= msgs.len() {
                break;
            }
        }
        assert_eq!(a.send_errors, 0);
        assert!(a.segments(Socket::Sip));
        // Every message whole and once; each flow's in the order queued.
        assert_eq!(got.len(), msgs.len());
        for flow in 0..2u8 {
            let sent: Vec<&Vec<u8>> = msgs.iter().filter(|m| m[0] % 2 == flow).collect();
            let arrived: Vec<&Vec<u8>> = got.iter().filter(|m| m[0] % 2 == flow).collect();
            assert_eq!(sent, arrived);
        }
    }

    #[test]
    fn a_segmented_send_the_kernel_refuses_goes_again_one_datagram_at_a_time() {
        if !kernel_has(probe().is_ok(), "io_uring with provided-buffer rings") {
            return;
        }
        let (sip, rtp) = (socket(), socket());
        if !kernel_has(gso::can_segment(&sip), "UDP_SEGMENT") {
            return;
        }
        // Without UDP checksums the kernel refuses segmented sends (EINVAL)
        // and takes single datagrams.
        crate::batch::refuse_segmented_sends(&sip);
        let mut io = UringIo::new(&sip, &rtp, true).expect("ring");
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = peer.local_addr().unwrap();
        for i in 0..20u8 {
            io.send(Socket::Sip, u64::from(i), &[i; 300], to);
        }
        for _ in 0..4 {
            io.wait(Duration::from_millis(1), 0).unwrap();
            io.drain(|_, _, _, _| {});
        }
        assert!(!io.segments(Socket::Sip), "grouping turned off");
        assert_eq!(io.send_errors, 0);
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while got.len() < 20 {
            let n = peer
                .recv(&mut buf)
                .expect("every datagram, sent again singly");
            assert_eq!(n, 300);
            got.push(buf[0]);
        }
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
    }
}
