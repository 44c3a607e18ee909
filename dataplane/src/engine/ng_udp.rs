//! A stand-alone ng control listener: one thread, one UDP socket, requests
//! handled in order by the [`NgServer`](crate::ng::NgServer) it owns. (The
//! appliance serves its ng socket from the media order service,
//! [`super::ng_shm`], on the same sessions as the control plane's orders.)

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::media::plan::MediaControl;
use crate::media::relay::RelayCounters;
use crate::ng::{NgCounters, NgServer};

/// What the listener reports when it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct NgReport {
    /// Protocol counters.
    pub ng: NgCounters,
    /// Relay counters of the media plane it controlled.
    pub media: RelayCounters,
}

/// A running ng listener.
#[derive(Debug)]
pub struct NgListener {
    /// The bound address.
    pub local: SocketAddr,
    thread: JoinHandle<NgReport>,
}

impl NgListener {
    /// Binds `addr` and serves ng requests with `server` until `stop` is set.
    pub fn spawn<M: MediaControl + Send + 'static>(
        addr: SocketAddr,
        mut server: NgServer<M>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<NgListener> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let local = socket.local_addr()?;
        let thread = std::thread::Builder::new()
            .name("ng".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut last_expiry = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // Calls whose media timed out are deleted about once a second.
                    if last_expiry.elapsed() >= Duration::from_secs(1) {
                        server.expire();
                        last_expiry = Instant::now();
                    }
                    let (n, src) = match socket.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(_) => continue,
                    };
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let reply = server.handle(&buf[..n], src, now);
                    if let Some(reply) = reply {
                        // A lost reply is retransmitted by the client and answered from the cache.
                        let _ = socket.send_to(&reply, src);
                    }
                }
                NgReport {
                    ng: server.counters(),
                    media: server.media().counters(),
                }
            })?;
        Ok(NgListener { local, thread })
    }

    /// Waits for the listener to stop; returns its counters.
    pub fn join(self) -> NgReport {
        self.thread.join().unwrap_or_default()
    }
}
