//! Fallback SIP/UDP driver: a blocking socket per listener, each in its own
//! thread, running the [`SipEdge`](crate::edge::SipEdge) on every datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::edge::{EdgeAction, EdgeCounters, SipEdge};
use crate::sip::Limits;

/// A running listener.
#[derive(Debug)]
pub struct SipUdpListener {
    /// The bound address (the real port when 0 was asked for).
    pub local: SocketAddr,
    thread: JoinHandle<EdgeCounters>,
}

impl SipUdpListener {
    /// Binds `addr` and serves it until `stop` is set.
    pub fn spawn(
        addr: SocketAddr,
        limits: Limits,
        stop: Arc<AtomicBool>,
    ) -> io::Result<SipUdpListener> {
        let socket = UdpSocket::bind(addr)?;
        // Wake up regularly to notice `stop`; the blocking driver is not on a
        // hot path, the per-core engine is.
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let local = socket.local_addr()?;
        let thread = std::thread::Builder::new()
            .name(format!("sip-udp-{local}"))
            .spawn(move || {
                let mut edge = SipEdge::new(limits);
                let mut buf = vec![0u8; 65_536];
                let mut out = Vec::with_capacity(2048);
                while !stop.load(Ordering::Relaxed) {
                    let (n, src) = match socket.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) =>
                        {
                            continue;
                        }
                        Err(_) => continue,
                    };
                    if edge.on_datagram(&buf[..n], &mut out) == EdgeAction::Reply {
                        // A failed send is the same as a lost datagram: the peer retransmits.
                        let _ = socket.send_to(&out, src);
                    }
                }
                edge.counters()
            })?;
        Ok(SipUdpListener { local, thread })
    }

    /// Waits for the listener to stop and returns its counters.
    pub fn join(self) -> EdgeCounters {
        self.thread.join().unwrap_or_default()
    }
}
