//! Multishot `recvmsg` on a datagram socket: one request keeps receiving
//! into buffers drawn from a provided-buffer group, each completion naming
//! its buffer; [`RecvHeader::datagram`] reads the source address, payload
//! and control data (a coalesced read's segment size) out of it.

use std::net::SocketAddr;

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{Fd, Fixed, RecvMsgOut};

use super::Target;
use crate::engine::sockaddr;

/// The header a multishot receive reads its name and control lengths
/// from; it must outlive every receive armed with it (boxed: it never
/// moves).
pub struct RecvHeader(Box<libc::msghdr>);

impl std::fmt::Debug for RecvHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvHeader")
            .field("controllen", &self.0.msg_controllen)
            .finish()
    }
}

/// A datagram as a receive completion's buffer holds it.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Who sent it.
    pub source: SocketAddr,
    /// Where the payload starts in the buffer.
    pub offset: usize,
    /// The payload.
    pub payload: &'a [u8],
    /// The control messages that came with it.
    pub control: &'a [u8],
    /// The datagram was larger than the buffer: `payload` is its start.
    pub truncated: bool,
}

impl RecvHeader {
    /// A header with room for an IPv6 source and `control` octets of
    /// control messages.
    pub fn new(control: usize) -> Self {
        // SAFETY: a zeroed msghdr is valid; a multishot receive reads only
        // its name and control lengths.
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        hdr.msg_controllen = control as _;
        RecvHeader(hdr)
    }

    /// A multishot receive on `target` drawing buffers from `group`.
    pub fn entry(&self, target: Target, group: u16, user_data: u64) -> Entry {
        match target {
            Target::Fixed(i) => opcode::RecvMsgMulti::new(Fixed(i), &*self.0, group).build(),
            Target::Fd(fd) => opcode::RecvMsgMulti::new(Fd(fd), &*self.0, group).build(),
        }
        .user_data(user_data)
    }

    /// The datagram in `buf` (a completion's buffer, as long as its
    /// result); `None` when it is malformed or from an address family that
    /// is not IP.
    pub fn datagram<'a>(&self, buf: &'a [u8]) -> Option<Datagram<'a>> {
        let msg = RecvMsgOut::parse(buf, &self.0).ok()?;
        let source = sockaddr::read(msg.name_data())?;
        // The parts are slices of `buf`: taken again from it by position,
        // so they live as long as the buffer rather than the parse.
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + part.len()
        };
        let (payload, control) = (at(msg.payload_data()), at(msg.control_data()));
        Some(Datagram {
            source,
            offset: payload.start,
            payload: buf.get(payload)?,
            control: buf.get(control)?,
            truncated: msg.is_payload_truncated(),
        })
    }
}
