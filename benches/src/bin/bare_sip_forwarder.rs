//! The floor of the SIP proxy benchmark: a UDP forwarder that does no SIP at
//! all. One socket, one thread, blocking `recvmmsg` and `sendmmsg` in batches
//! of up to 32. A datagram from the UAS's port goes to the UAC's port, every
//! other datagram to the UAS; nothing is parsed or rewritten (SIPp's UAS
//! answers the address a request came from, so a call completes through it).
//! Its CPU per call is what the kernel's loopback UDP work for a call's
//! datagrams costs a proxy on this machine before any proxying is done.
//!
//! usage: bare_sip_forwarder LISTEN_PORT UAS_PORT UAC_PORT [LISTEN_ADDR PEER_ADDR]
//!
//! (default: both 127.0.0.1; the AF_XDP benchmark listens on 10.99.0.1 and
//! reaches SIPp on 10.99.0.2 inside its namespaces.)
//!
//! A measurement tool, not part of the product: it panics on misuse and runs
//! until it is killed.
#![allow(unsafe_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 32;

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bare_sip_forwarder LISTEN_PORT UAS_PORT UAC_PORT [LISTEN_ADDR PEER_ADDR]";
    let ports: Vec<u16> = args
        .iter()
        .take(3)
        .map(|a| a.parse().expect("port numbers"))
        .collect();
    let [listen, uas_port, uac_port] = ports[..] else {
        panic!("{usage}")
    };
    let addr = |i: usize| -> Ipv4Addr {
        args.get(i)
            .map_or(Ipv4Addr::LOCALHOST, |a| a.parse().expect("IPv4 addresses"))
    };
    let (local, peer) = (addr(3), addr(4));
    let sock = UdpSocket::bind((local, listen)).expect("bind");
    let fd = sock.as_raw_fd();
    let big: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid int option on our socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&big as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let mut uas = sockaddr(peer, uas_port);
    let mut uac = sockaddr(peer, uac_port);
    let mut bufs = vec![[0u8; 4096]; BATCH];
    // SAFETY: zeroed sockaddr_in values are valid output storage.
    let mut from: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: zeroed iovec/mmsghdr arrays are valid and filled below.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for k in 0..BATCH {
            iov[k] = libc::iovec {
                iov_base: bufs[k].as_mut_ptr().cast(),
                iov_len: bufs[k].len(),
            };
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_hdr.msg_name = (&mut from[k] as *mut libc::sockaddr_in).cast();
            msgs[k].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        // SAFETY: the headers point at live buffers and addresses.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got <= 0 {
            continue;
        }
        let got = got as usize;
        for k in 0..got {
            iov[k].iov_len = msgs[k].msg_len as usize;
            let to = if u16::from_be(from[k].sin_port) == uas_port {
                &mut uac
            } else {
                &mut uas
            };
            msgs[k].msg_hdr.msg_name = (to as *mut libc::sockaddr_in).cast();
        }
        // SAFETY: the first `got` headers point at live buffers and addresses.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), got as u32, 0) };
    }
}
