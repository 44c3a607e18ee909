//! `sendmsg` (and `send` with an address for a lone datagram): a slot per
//! send in flight holding the header, iovec, destination and segmentation
//! control (UDP_SEGMENT) the kernel reads until the completion. The slots
//! of a [`SendSlots`] never move: they live in chunks allocated once, and
//! more slots are more chunks.

use std::net::SocketAddr;

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{Fd, Fixed};

use super::Target;
use crate::engine::gso;
use crate::engine::sockaddr::{self, Storage};

/// One send's state.
#[repr(C)]
struct Slot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: Storage,
    control: [u64; gso::SEND_CONTROL / 8],
}

/// Slots per chunk (a power of two).
const CHUNK: usize = 256;

/// Send slots.
pub struct SendSlots {
    chunks: Vec<Box<[Slot]>>,
    len: usize,
}

impl std::fmt::Debug for SendSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSlots").field("len", &self.len).finish()
    }
}

fn chunk() -> Box<[Slot]> {
    let mut slots: Box<[Slot]> = (0..CHUNK)
        .map(|_| Slot {
            // SAFETY: msghdr is plain data; zero is valid.
            hdr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            name: sockaddr::zeroed(),
            control: [0; gso::SEND_CONTROL / 8],
        })
        .collect();
    for s in slots.iter_mut() {
        // The boxed slice never moves, so these self-references hold.
        s.hdr.msg_name = (&mut s.name as *mut Storage).cast();
        s.hdr.msg_iov = &mut s.iov;
        s.hdr.msg_iovlen = 1;
    }
    slots
}

impl SendSlots {
    /// `len` slots.
    pub fn new(len: usize) -> Self {
        let mut s = SendSlots {
            chunks: Vec::new(),
            len: 0,
        };
        s.grow_to(len);
        s
    }

    /// At least `len` slots; those there stay where they are.
    pub fn grow_to(&mut self, len: usize) {
        while self.chunks.len() * CHUNK < len {
            self.chunks.push(chunk());
        }
        self.len = self.len.max(len);
    }

    /// How many slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&mut self, i: usize) -> &mut Slot {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    /// Fills slot `i` to send the `len` octets at `data` to `to` (in
    /// segments of `seg` octets when `seg > 0`) and returns the request.
    ///
    /// # Safety
    ///
    /// The `len` octets at `data` must stay valid and unchanged until the
    /// request's completion is reaped, and slot `i` must not be filled
    /// again before then.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn entry(
        &mut self,
        i: usize,
        target: Target,
        data: *const u8,
        len: usize,
        to: SocketAddr,
        seg: usize,
        user_data: u64,
    ) -> Entry {
        let s = self.slot(i);
        s.iov.iov_base = data.cast_mut().cast();
        s.iov.iov_len = len;
        s.hdr.msg_namelen = sockaddr::write(to, &mut s.name);
        if seg > 0 {
            let n = gso::segment_control(&mut s.control, seg);
            s.hdr.msg_control = s.control.as_mut_ptr().cast();
            s.hdr.msg_controllen = n as _;
        } else {
            s.hdr.msg_control = std::ptr::null_mut();
            s.hdr.msg_controllen = 0;
        }
        match target {
            Target::Fixed(f) => opcode::SendMsg::new(Fixed(f), &s.hdr).build(),
            Target::Fd(fd) => opcode::SendMsg::new(Fd(fd), &s.hdr).build(),
        }
        .user_data(user_data)
    }

    /// Fills slot `i` to send the `len` octets at `data` to `to` with a
    /// plain `send` (a lone datagram: no header for the kernel to import)
    /// and returns the request.
    ///
    /// # Safety
    ///
    /// As for [`SendSlots::entry`].
    pub unsafe fn send_to(
        &mut self,
        i: usize,
        target: Target,
        data: *const u8,
        len: usize,
        to: SocketAddr,
        user_data: u64,
    ) -> Entry {
        let s = self.slot(i);
        let name_len = sockaddr::write(to, &mut s.name);
        let name = (&s.name as *const Storage).cast();
        match target {
            Target::Fixed(f) => opcode::Send::new(Fixed(f), data, len as u32)
                .dest_addr(name)
                .dest_addr_len(name_len)
                .build(),
            Target::Fd(fd) => opcode::Send::new(Fd(fd), data, len as u32)
                .dest_addr(name)
                .dest_addr_len(name_len)
                .build(),
        }
        .user_data(user_data)
    }
}
