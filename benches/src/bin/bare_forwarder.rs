//! The floor of the relay benchmark: a bare UDP forwarder with just enough of
//! the ng protocol (ping, offer, answer, delete, list) for the same load
//! generator to drive it. One thread, epoll, recvmmsg/sendmmsg in batches of
//! 32; no RTP parsing, no statistics, no latching. Loopback only.
//!
//! usage: bare_forwarder NG_PORT PORT_MIN PORT_MAX
//!
//! A measurement tool, not part of the product: it panics on misuse; the
//! legs of a live call are reached through `live`, whose invariant is stated
//! there.
#![allow(unsafe_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const NG_TOKEN: u64 = u64::MAX;

struct Leg {
    sock: UdpSocket,
    port: u16,
    peer: Option<SocketAddrV4>,
    other: usize,
}

/// Leg `i` of a live call. Invariant: `calls` maps only pairs of open legs —
/// a delete removes the pair from `calls` and closes both legs together.
fn live(legs: &mut [Option<Leg>], i: usize) -> &mut Leg {
    legs[i].as_mut().expect("the legs of a live call are open")
}

fn field<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| l.strip_prefix(prefix))
}

/// The address an SDP asks media to be sent to.
fn sdp_addr(sdp: &str) -> Option<SocketAddrV4> {
    let ip: Ipv4Addr = field(sdp, "c=IN IP4 ")?.trim().parse().ok()?;
    let port: u16 = field(sdp, "m=audio ")?.split(' ').next()?.parse().ok()?;
    Some(SocketAddrV4::new(ip, port))
}

/// Pulls `key`'s byte-string value out of a flat bencoded dictionary.
fn bget<'a>(d: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let pat = format!("{}:{key}", key.len());
    let at = d.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let colon = d[at..].iter().position(|b| *b == b':')? + at;
    let len: usize = std::str::from_utf8(&d[at..colon]).ok()?.parse().ok()?;
    d.get(colon + 1..colon + 1 + len)
}

fn reply_sdp(ip: Ipv4Addr, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
}

fn epoll_add(ep: i32, fd: i32, token: u64) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid event struct, our descriptors.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
}

fn main() {
    let usage = "usage: bare_forwarder NG_PORT PORT_MIN PORT_MAX [ADDRESS]";
    let mut argv = std::env::args().skip(1);
    let mut number = || -> u16 { argv.next().expect(usage).parse().expect(usage) };
    let (ng_port, port_min, port_max) = (number(), number(), number());
    let ip: Ipv4Addr = std::env::args()
        .nth(4)
        .map_or(Ipv4Addr::LOCALHOST, |a| a.parse().expect(usage));
    let ng = UdpSocket::bind((ip, ng_port)).expect("ng socket");
    // SAFETY: no preconditions.
    let ep = unsafe { libc::epoll_create1(0) };
    epoll_add(ep, ng.as_raw_fd(), NG_TOKEN);
    let mut legs: Vec<Option<Leg>> = Vec::new();
    let mut calls: HashMap<Vec<u8>, (usize, usize)> = HashMap::new();
    let mut next_port = port_min;
    let mut open = |legs: &mut Vec<Option<Leg>>| -> usize {
        loop {
            assert!(next_port < port_max, "ports exhausted");
            let p = next_port;
            next_port += 2;
            if let Ok(sock) = UdpSocket::bind((ip, p))
                && sock.set_nonblocking(true).is_ok()
            {
                let i = legs.len();
                epoll_add(ep, sock.as_raw_fd(), i as u64);
                legs.push(Some(Leg {
                    sock,
                    port: p,
                    peer: None,
                    other: 0,
                }));
                return i;
            }
        }
    };
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut names: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut ngbuf = vec![0u8; 65536];
    loop {
        // SAFETY: zeroed epoll events are valid output storage.
        let mut events: [libc::epoll_event; 64] = unsafe { std::mem::zeroed() };
        // SAFETY: the array holds 64 events.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 64, 1000) };
        for ev in events.iter().take(n.max(0) as usize) {
            let token = ev.u64;
            if token == NG_TOKEN {
                let Ok((len, src)) = ng.recv_from(&mut ngbuf) else {
                    continue;
                };
                let msg = &ngbuf[..len];
                let Some(sp) = msg.iter().position(|b| *b == b' ') else {
                    continue;
                };
                let (cookie, body) = (&msg[..sp], &msg[sp + 1..]);
                let cmd = bget(body, "command").unwrap_or_default();
                let call = bget(body, "call-id").unwrap_or_default().to_vec();
                let sdp = bget(body, "sdp")
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default();
                let out = match cmd {
                    b"ping" => "d6:result4:ponge".to_string(),
                    b"offer" => {
                        let (a, b) = match calls.get(&call) {
                            Some(c) => *c,
                            None => {
                                let a = open(&mut legs);
                                let b = open(&mut legs);
                                live(&mut legs, a).other = b;
                                live(&mut legs, b).other = a;
                                calls.insert(call.clone(), (a, b));
                                (a, b)
                            }
                        };
                        live(&mut legs, a).peer = sdp_addr(&sdp);
                        let s = reply_sdp(ip, live(&mut legs, b).port);
                        format!("d6:result2:ok3:sdp{}:{s}e", s.len())
                    }
                    b"answer" => match calls.get(&call) {
                        Some(&(a, b)) => {
                            live(&mut legs, b).peer = sdp_addr(&sdp);
                            let s = reply_sdp(ip, live(&mut legs, a).port);
                            format!("d6:result2:ok3:sdp{}:{s}e", s.len())
                        }
                        None => "d6:result5:error12:error-reason15:Unknown call-ide".to_string(),
                    },
                    b"delete" => {
                        if let Some((a, b)) = calls.remove(&call) {
                            legs[a] = None;
                            legs[b] = None;
                        }
                        "d6:result2:oke".to_string()
                    }
                    b"list" => "d5:callsle6:result2:oke".to_string(),
                    _ => "d6:result5:error12:error-reason20:Unrecognized commande".to_string(),
                };
                let mut reply = cookie.to_vec();
                reply.push(b' ');
                reply.extend_from_slice(out.as_bytes());
                let _ = ng.send_to(&reply, src);
                continue;
            }
            let i = token as usize;
            let Some(Some(leg)) = legs.get(i) else {
                continue;
            };
            let (fd, other) = (leg.sock.as_raw_fd(), leg.other);
            // SAFETY: zeroed iovec/mmsghdr arrays are valid and filled below.
            let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for k in 0..BATCH {
                iov[k] = libc::iovec {
                    iov_base: bufs[k].as_mut_ptr().cast(),
                    iov_len: 2048,
                };
                msgs[k].msg_hdr.msg_iov = &mut iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the headers point at live buffers.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got <= 0 {
                continue;
            }
            let Some(Some(out)) = legs.get(other) else {
                continue;
            };
            let Some(peer) = out.peer else { continue };
            let name = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: peer.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(peer.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            for k in 0..got as usize {
                names[k] = name;
                iov[k].iov_len = msgs[k].msg_len as usize;
                msgs[k].msg_hdr.msg_name = (&mut names[k] as *mut libc::sockaddr_in).cast();
                msgs[k].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            }
            // SAFETY: the headers point at live buffers and names.
            unsafe { libc::sendmmsg(out.sock.as_raw_fd(), msgs.as_mut_ptr(), got as u32, 0) };
        }
    }
}
