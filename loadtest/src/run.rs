//! The I/O around an [`Agent`]: one SIP socket and one RTP socket (every
//! call's media shares it; streams are told apart by SSRC), non-blocking,
//! a `poll` wait bounded by the next timer, a progress line each second.

use std::io::{self, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::agent::{Agent, Config};
use crate::batch::{self, BATCH, RecvBatch};
use crate::media::PACKET;
use crate::report::Report;

/// Sockets bound for a run.
#[derive(Debug)]
pub struct Sockets {
    /// SIP.
    pub sip: UdpSocket,
    /// RTP.
    pub rtp: UdpSocket,
}

impl Sockets {
    /// Binds SIP on `sip` and RTP on an ephemeral port of the same address.
    pub fn bind(sip: SocketAddr) -> io::Result<Sockets> {
        let s = UdpSocket::bind(sip)?;
        let r = UdpSocket::bind(SocketAddr::new(sip.ip(), 0))?;
        for sock in [&s, &r] {
            sock.set_nonblocking(true)?;
            grow_buffers(sock);
        }
        Ok(Sockets { sip: s, rtp: r })
    }
}

/// 4 MB socket buffers, so bursts of thousands of calls are not dropped by
/// the kernel (best effort: capped by net.core.*mem_max).
#[allow(unsafe_code)]
fn grow_buffers(sock: &UdpSocket) {
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads one c_int from a valid pointer.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Waits until one of the sockets is readable or `timeout_ms` passes;
/// returns which are readable (SIP, RTP).
#[allow(unsafe_code)]
fn wait(socks: &Sockets, timeout_ms: i32) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: socks.sip.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: socks.rtp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: fds is a valid array of two pollfd for the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if n < 0 {
        // EINTR (a signal): look at both.
        return (true, true);
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the host,
/// so a packet's send stamp and its arrival time compare across processes.
#[allow(unsafe_code)]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An RTP datagram waiting for `sendmmsg`: a G.711 packet and room for the
/// largest SRTP trailer.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    buf: [u8; PACKET + 64],
    len: usize,
}

impl Datagram {
    fn copy(pkt: &[u8]) -> Option<Datagram> {
        let mut d = Datagram {
            buf: [0; PACKET + 64],
            len: pkt.len(),
        };
        d.buf.get_mut(..pkt.len())?.copy_from_slice(pkt);
        Some(d)
    }
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The figures.
    pub report: Report,
    /// Seconds from start to the end.
    pub elapsed_s: f64,
}

/// How the loop runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A progress line each second on stderr.
    pub progress: bool,
    /// After a wake-up that found few datagrams, wait this long for more
    /// before handling them (fewer wake-ups under load; arrivals are then
    /// timed up to this much late). 0: none.
    pub batch_wait_us: u64,
}

/// Runs `cfg` on `socks` until the UAC's calls are done, the duration is
/// over (UAS), or `stop` is set.
pub fn run(
    cfg: Config,
    socks: &Sockets,
    stop: &Arc<AtomicBool>,
    opts: Options,
) -> io::Result<Outcome> {
    let progress = opts.progress;
    let start = monotonic_ns();
    let now = monotonic_ns;
    let duration = cfg.duration_ns.map(|d| start + d);
    let uas = cfg.role == crate::agent::Role::Uas;
    let mut agent = Agent::new(cfg, now());
    let mut sip_in = RecvBatch::new(65_536 / 16);
    let mut rtp_in = RecvBatch::new(512);
    let mut rtp_out: Vec<(Datagram, SocketAddr)> = Vec::new();
    let mut sip_out: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
    let mut ready = (true, true);
    let mut next_second = start + 1_000_000_000;
    let mut ended_ns = None;
    loop {
        let t = now();
        agent.tick(t);
        // Receive what is there, a batch per system call (bounded, so timers
        // and sends keep up).
        let mut handled = 0;
        for _ in 0..8 {
            if !ready.0 {
                break;
            }
            let n = sip_in.recv(&socks.sip)?;
            let t = now();
            for i in 0..n {
                if let Some((msg, src)) = sip_in.get(i) {
                    agent.on_sip(t, msg, src);
                }
            }
            handled += n;
            if n < BATCH {
                break;
            }
        }
        for _ in 0..32 {
            if !ready.1 {
                break;
            }
            let n = rtp_in.recv(&socks.rtp).unwrap_or(0);
            let t = now();
            for i in 0..n {
                if let Some((pkt, _)) = rtp_in.get(i) {
                    agent.on_rtp(t, pkt);
                }
            }
            handled += n;
            if n < BATCH {
                break;
            }
        }
        let t = now();
        rtp_out.clear();
        agent.media_due(t, |pkt, to| match Datagram::copy(pkt) {
            Some(d) => {
                rtp_out.push((d, to));
                true
            }
            None => false,
        });
        batch::send_all(&socks.rtp, &rtp_out);
        sip_out.clear();
        sip_out.extend(agent.take_out());
        // A refused or lost send is what retransmission is for.
        batch::send_all(&socks.sip, &sip_out);
        if t >= next_second {
            next_second += 1_000_000_000;
            agent.fold_streams(t, false);
            let r = &agent.report;
            let p99 = if r.invite_to_200.is_empty() {
                0.0
            } else {
                r.invite_to_200.value_at_quantile(0.99) as f64 / 1000.0
            };
            let secs = (t - start) as f64 / 1e9;
            let line = (
                secs,
                r.attempted,
                agent.active(),
                r.completed,
                r.failed,
                r.rtp_received,
                p99,
            );
            let prev = agent.report.timeline.last().copied();
            agent.report.timeline.push(line);
            if progress {
                let (cps, pps) = prev.map_or((line.1 as f64, line.5 as f64), |p| {
                    (
                        (line.1 - p.1) as f64 / (secs - p.0),
                        (line.5 - p.5) as f64 / (secs - p.0),
                    )
                });
                let lost = agent.report.rtp_lost + agent.live_loss();
                let expected = agent.report.rtp_received + lost;
                let loss = if expected == 0 {
                    0.0
                } else {
                    100.0 * lost as f64 / expected as f64
                };
                let _ = writeln!(
                    io::stderr(),
                    "[{secs:6.1}s] attempted {} active {} completed {} failed {} | {cps:.0} cps | rtp {pps:.0} pps rx, loss {loss:.2} % | p99 INVITE->200 {p99:.2} ms",
                    line.1,
                    line.2,
                    line.3,
                    line.4
                );
            }
        }
        let t = now();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if uas && duration.is_some_and(|d| t >= d) {
            break;
        }
        if agent.finished(t) {
            // Let the last packets in flight arrive before the count.
            let end = *ended_ns.get_or_insert(t + 200_000_000);
            if t >= end {
                break;
            }
        }
        // Sleep until the next deadline, rounded up to poll's millisecond
        // (a timer fires at most 1 ms late; nothing spins).
        let ahead = agent.next_deadline(t).saturating_sub(t);
        if opts.batch_wait_us > 0 && handled < BATCH / 4 && ahead > opts.batch_wait_us * 1000 {
            std::thread::sleep(std::time::Duration::from_micros(opts.batch_wait_us));
        }
        let timeout = if ahead == 0 {
            0
        } else {
            ahead.div_ceil(1_000_000).min(5) as i32
        };
        ready = wait(socks, timeout);
    }
    let t = now();
    agent.fold_streams(t, true);
    Ok(Outcome {
        report: agent.report,
        elapsed_s: (t - start) as f64 / 1e9,
    })
}
