//! What a peer actually received: a packet capture on the loopback
//! interface (an `AF_PACKET` socket, as tcpdump opens), counting the UDP
//! datagrams that arrived at the host, each once. Tests judge media
//! delivery by it rather than by rvoip's own counters.
#![allow(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One UDP datagram seen arriving: its source, destination, payload
/// length, and its first octets (an RTP header and a G.711 payload).
#[derive(Clone, Debug)]
pub struct Datagram {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub len: usize,
    pub head: Vec<u8>,
}

/// A running capture of every UDP datagram delivered on `lo`.
pub struct Capture {
    seen: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing; fails the test when the socket cannot be opened
    /// (it needs CAP_NET_RAW, which the test runs have as root).
    pub fn start() -> Capture {
        // SAFETY: plain socket calls on a descriptor this function owns;
        // the structures passed are initialised and of the size given.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from((libc::ETH_P_IP as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "packet capture needs CAP_NET_RAW: {}",
            std::io::Error::last_os_error()
        );
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert!(lo > 0, "no loopback interface");
        // SAFETY: a zeroed sockaddr_ll is a valid value; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = lo as i32;
        let rc = unsafe {
            libc::bind(
                fd,
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind to lo: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            // Room for a burst of media while the thread is off its core.
            let size: i32 = 8 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::from_ref(&size).cast(),
                4,
            );
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || read_until_stopped(fd, &seen, &stop))
        };
        Capture {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The datagrams seen so far that `matches` keeps.
    pub fn count(&self, matches: impl Fn(&Datagram) -> bool) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().filter(|d| matches(d)).count()
    }

    /// The datagrams seen so far.
    pub fn all(&self) -> Vec<Datagram> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_until_stopped(fd: i32, seen: &Mutex<Vec<Datagram>>, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: as in `start`; `from` and `buf` outlive the call.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::from_mut(&mut from).cast(),
                &mut from_len,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            continue;
        };
        // On loopback each packet passes twice: going out and coming in.
        if from.sll_pkttype != libc::PACKET_HOST {
            continue;
        }
        if let Some(d) = udp(&buf[..n]) {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(d);
        }
    }
    unsafe { libc::close(fd) };
}

/// The UDP datagram in an IPv4 packet, if it is one (and not a fragment).
fn udp(p: &[u8]) -> Option<Datagram> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if p.first()? >> 4 != 4 || p.get(9) != Some(&17) || p.len() < ihl + 8 {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let udp_len = usize::from(port(ihl + 4));
    Some(Datagram {
        src: SocketAddrV4::new(ip(12), port(ihl)),
        dst: SocketAddrV4::new(ip(16), port(ihl + 2)),
        len: udp_len.saturating_sub(8),
        head: p
            .get(ihl + 8..(ihl + udp_len).min(p.len()).min(ihl + 8 + 256))
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    })
}
