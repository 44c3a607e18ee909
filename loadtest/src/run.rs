//! The I/O around an [`Agent`]: one SIP socket and one RTP socket (every
//! call's media shares it; streams are told apart by SSRC), non-blocking,
//! a `poll` wait bounded by the next timer, a progress line each second.

use std::io::{self, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::agent::{Agent, Config};
use crate::batch::{self, BATCH, Clocks, RecvBatch};
use crate::report::Report;
use crate::uring::{self, Socket, UringIo};
use rvoip_dataplane::engine::gso::{self, Packer};
use rvoip_dataplane::engine::set_int_option;

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
            batch::stamp_arrivals(sock);
        }
        // Both engines read SIP into 64 KiB buffers, so a peer's segmented
        // sends may arrive whole (fewer reads); RTP's buffers are small.
        gso::receive_coalesced(&s);
        Ok(Sockets { sip: s, rtp: r })
    }
}

/// 4 MB socket buffers, so bursts of thousands of calls are not dropped by
/// the kernel (best effort: capped by net.core.*mem_max).
fn grow_buffers(sock: &UdpSocket) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        set_int_option(sock.as_raw_fd(), libc::SOL_SOCKET, opt, 4 << 20);
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

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The figures.
    pub report: Report,
    /// Seconds from start to the end.
    pub elapsed_s: f64,
}

/// Which socket engine a run uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// io_uring when the kernel has what it needs, else `Syscalls`.
    #[default]
    Auto,
    /// io_uring (multishot receives, batched sends, one enter per turn).
    Uring,
    /// `recvmmsg`/`sendmmsg` and `poll`.
    Syscalls,
}

/// How the loop runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A progress line each second on stderr.
    pub progress: bool,
    /// After a wake-up that found few datagrams, wait this long for more
    /// before handling them (fewer wake-ups under load; arrivals keep the
    /// kernel's receive time, so the figures do not move). 0: none.
    pub batch_wait_us: u64,
    /// The socket engine.
    pub engine: Engine,
    /// Datagrams of one length to one address leave in one send
    /// (UDP_SEGMENT) when the kernel can.
    pub segment: bool,
}

/// What a received datagram is handed to: its socket, payload, source and
/// when it arrived (the kernel's stamp, or the read time without one).
type OnDatagram<'a> = dyn FnMut(Socket, &[u8], SocketAddr, u64) + 'a;

/// The socket side of the loop: datagrams in, datagrams out, the wait.
trait Io {
    /// Hands what has been received to `on` (socket, payload, source, when
    /// it arrived); returns how many.
    fn drain(&mut self, on: &mut OnDatagram<'_>) -> io::Result<usize>;
    /// Queues a copy of `data`, part of `flow` (a flow's datagrams leave
    /// in the order queued).
    fn send(&mut self, sock: Socket, flow: u64, data: &[u8], to: SocketAddr);
    /// Sends what is queued and waits for datagrams or the timeout; `busy`
    /// when the last turn found a full batch.
    fn wait(&mut self, timeout: Duration, batch_wait_us: u64, busy: bool) -> io::Result<()>;
}

impl Io for UringIo {
    fn drain(&mut self, on: &mut OnDatagram<'_>) -> io::Result<usize> {
        let clocks = Clocks::read();
        Ok(UringIo::drain(self, |sock, data, src, stamp| {
            on(sock, data, src, clocks.arrival(stamp))
        }))
    }

    fn send(&mut self, sock: Socket, flow: u64, data: &[u8], to: SocketAddr) {
        UringIo::send(self, sock, flow, data, to);
    }

    fn wait(&mut self, timeout: Duration, batch_wait_us: u64, _busy: bool) -> io::Result<()> {
        UringIo::wait(self, timeout, batch_wait_us)
    }
}

/// `recvmmsg`, `sendmmsg` and `poll`: for kernels without io_uring.
struct SyscallIo<'a> {
    socks: &'a Sockets,
    sip_in: RecvBatch,
    rtp_in: RecvBatch,
    /// The turn's datagrams per socket (SIP, RTP), grouped.
    out: [Packer; 2],
    ready: (bool, bool),
}

impl SyscallIo<'_> {
    fn recv(
        batch: &mut RecvBatch,
        sock: &UdpSocket,
        which: Socket,
        turns: usize,
        on: &mut OnDatagram<'_>,
    ) -> io::Result<usize> {
        let mut handled = 0;
        for _ in 0..turns {
            let n = batch.recv(sock.as_raw_fd())?;
            let clocks = Clocks::read();
            for i in 0..n {
                if let Some(r) = batch.get(i) {
                    for msg in gso::split(r.data, r.seg) {
                        on(which, msg, r.src, clocks.arrival(r.stamp));
                    }
                }
            }
            handled += n;
            if n < BATCH {
                break;
            }
        }
        Ok(handled)
    }
}

impl Io for SyscallIo<'_> {
    fn drain(&mut self, on: &mut OnDatagram<'_>) -> io::Result<usize> {
        // A batch per system call, bounded, so timers and sends keep up.
        let mut n = 0;
        if self.ready.0 {
            n += Self::recv(&mut self.sip_in, &self.socks.sip, Socket::Sip, 8, on)?;
        }
        if self.ready.1 {
            n += Self::recv(&mut self.rtp_in, &self.socks.rtp, Socket::Rtp, 32, on).unwrap_or(0);
        }
        Ok(n)
    }

    fn send(&mut self, sock: Socket, flow: u64, data: &[u8], to: SocketAddr) {
        self.out[sock as usize].push(flow, data, to);
    }

    fn wait(&mut self, timeout: Duration, batch_wait_us: u64, busy: bool) -> io::Result<()> {
        // A refused or lost send is what retransmission is for.
        for (k, sock) in [&self.socks.sip, &self.socks.rtp].into_iter().enumerate() {
            let out = &mut self.out[k];
            if !out.is_empty() {
                let (_, refused) = batch::send_groups(sock, out.groups());
                out.clear();
                if refused {
                    out.disable();
                }
            }
        }
        if batch_wait_us > 0 && !busy && timeout > Duration::from_micros(batch_wait_us) {
            std::thread::sleep(Duration::from_micros(batch_wait_us));
        }
        // Rounded up to poll's millisecond: a timer fires at most 1 ms late.
        let ms = if timeout.is_zero() {
            0
        } else {
            timeout.as_nanos().div_ceil(1_000_000) as i32
        };
        self.ready = wait(self.socks, ms);
        Ok(())
    }
}

/// Runs `cfg` on `socks` until the UAC's calls are done, the duration is
/// over (UAS), or `stop` is set.
pub fn run(
    cfg: Config,
    socks: &Sockets,
    stop: &Arc<AtomicBool>,
    opts: Options,
) -> io::Result<Outcome> {
    let uring = match opts.engine {
        Engine::Syscalls => None,
        Engine::Uring => {
            Some(uring::probe().and_then(|()| UringIo::new(&socks.sip, &socks.rtp, opts.segment))?)
        }
        Engine::Auto => uring::probe()
            .and_then(|()| UringIo::new(&socks.sip, &socks.rtp, opts.segment))
            .ok(),
    };
    match uring {
        Some(mut io) => drive(cfg, &mut io, stop, opts),
        None => {
            let mut io = SyscallIo {
                socks,
                // Room for coalesced arrivals (UDP_GRO) on SIP.
                sip_in: RecvBatch::new(65_536),
                // An SRTP packet, or a DTLS flight's datagram.
                rtp_in: RecvBatch::new(1536),
                out: [
                    Packer::new(opts.segment && gso::can_segment(&socks.sip)),
                    Packer::new(opts.segment && gso::can_segment(&socks.rtp)),
                ],
                ready: (true, true),
            };
            drive(cfg, &mut io, stop, opts)
        }
    }
}

fn drive(
    cfg: Config,
    io: &mut dyn Io,
    stop: &Arc<AtomicBool>,
    opts: Options,
) -> io::Result<Outcome> {
    let progress = opts.progress;
    let start = monotonic_ns();
    let now = monotonic_ns;
    let duration = cfg.duration_ns.map(|d| start + d);
    let uas = cfg.role == crate::agent::AgentRole::Uas;
    let mut agent = Agent::new(
        cfg,
        now(),
        Box::new(rvoip_dataplane::entropy::SystemEntropy::new()),
    );
    // DTLS timers (WebRTC legs) run on instants: this one is `start`.
    #[allow(clippy::disallowed_methods)]
    agent.set_clock(std::time::Instant::now(), start);
    let mut next_second = start + 1_000_000_000;
    let mut ended_ns = None;
    loop {
        let t = now();
        agent.tick(t);
        let handled = io.drain(&mut |sock, data, src, t| match sock {
            Socket::Sip => agent.on_sip(t, data, src),
            Socket::Rtp => agent.on_rtp(t, data, src),
        })?;
        let t = now();
        agent.media_due(t, |pkt, to| {
            // A stream's packets all go to one address: the address is the flow.
            io.send(Socket::Rtp, gso::address_flow(to), pkt, to);
            true
        });
        for (flow, data, to) in agent.take_out() {
            io.send(Socket::Sip, flow, &data, to);
        }
        for (data, to) in agent.take_rtp_out() {
            io.send(Socket::Rtp, gso::address_flow(to), &data, to);
        }
        if t >= next_second {
            next_second += 1_000_000_000;
            agent.fold_streams(t, false);
            let secs = (t - start) as f64 / 1e9;
            let prev = agent.report.timeline.last().copied();
            let (active, live_lost) = (agent.active(), agent.live_loss());
            let line = agent.report.close_second(secs, active, live_lost);
            if progress {
                let prev = prev.unwrap_or_default();
                let dt = (line.t_s - prev.t_s).max(1e-3);
                let cps = (line.attempted - prev.attempted) as f64 / dt;
                let pps = line.rtp_received.saturating_sub(prev.rtp_received) as f64 / dt;
                let expected = line.rtp_received + line.rtp_lost;
                let loss = if expected == 0 {
                    0.0
                } else {
                    100.0 * line.rtp_lost as f64 / expected as f64
                };
                let _ = writeln!(
                    io::stderr(),
                    "[{secs:6.1}s] attempted {} active {} completed {} failed {} | {cps:.0} cps | rtp {pps:.0} pps rx, loss {loss:.2} % | this second's INVITE->200 p99 {} ms",
                    line.attempted,
                    line.active,
                    line.completed,
                    line.failed,
                    if line.setup_p99_ms.is_nan() {
                        "-".to_owned()
                    } else {
                        format!("{:.2}", line.setup_p99_ms)
                    }
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
        // Sleep until the next deadline (nothing spins), 5 ms at most so a
        // stop is seen.
        let ahead = agent.next_deadline(t).saturating_sub(t).min(5_000_000);
        io.wait(
            Duration::from_nanos(ahead),
            opts.batch_wait_us,
            handled >= BATCH,
        )?;
    }
    let t = now();
    agent.finish(t);
    Ok(Outcome {
        report: agent.report,
        elapsed_s: (t - start) as f64 / 1e9,
    })
}
