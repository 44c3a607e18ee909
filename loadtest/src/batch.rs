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

/// Buffers for one `recvmmsg`.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<u8>,
    size: usize,
    names: Vec<Storage>,
    lens: Vec<(usize, usize)>,
}

impl RecvBatch {
    /// Room for [`BATCH`] datagrams of up to `size` octets.
    pub fn new(size: usize) -> Self {
        RecvBatch {
            bufs: vec![0; size * BATCH],
            size,
            names: (0..BATCH).map(|_| sockaddr::zeroed()).collect(),
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
            self.lens
                .push((m.msg_len as usize, m.msg_hdr.msg_namelen as usize));
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last batch and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (len, name_len) = *self.lens.get(i)?;
        let src = sockaddr::read(sockaddr::bytes(&self.names[i], name_len))?;
        let start = i * self.size;
        Some((&self.bufs[start..start + len.min(self.size)], src))
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
