//! One AF_XDP socket on one queue of a link: its UMEM (huge pages when the
//! host has them), the fill and completion rings kept stocked without a
//! system call per packet, receive in batches, transmit in batches with a
//! wake-up only when the kernel asks for one. The rings are xdpilone's
//! (pure Rust, no libbpf): what it leaves to us is which frame is where.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroU32;
use std::ptr::NonNull;

use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

/// Size of one UMEM frame (a 1500-octet MTU frame with room to spare).
pub const FRAME: u32 = 2048;
/// Frames the kernel sends per wake-up of a socket in copy mode.
const COPY_TX_BUDGET: u32 = 32;

fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw())
}

/// How the socket moves frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The kernel copies (every driver, veth included).
    Copy,
    /// Frames are the NIC's DMA buffers (drivers with XSK pool support).
    ZeroCopy,
}

/// What the kernel counted for a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped (no room, or a frame too large).
    pub rx_dropped: u64,
    /// Dropped with the receive ring full.
    pub rx_ring_full: u64,
    /// Dropped with the fill ring empty.
    pub rx_fill_empty: u64,
    /// Invalid descriptors on either ring.
    pub invalid: u64,
}

/// An AF_XDP socket bound to (link, queue).
pub struct Xsk {
    // Field order is drop order: the rings and sockets before the memory.
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    user: xdpilone::User,
    _socket: Socket,
    _umem: Umem,
    area: memmap2::MmapMut,
    /// Frames free for transmit, by UMEM offset.
    free_tx: Vec<u64>,
    /// Frames handed to the transmit ring not yet committed.
    staged: u32,
    /// Transmitted frames not completed yet.
    in_flight: u32,
    /// Whether the UMEM sits on huge pages.
    pub huge_pages: bool,
    /// The mode the kernel accepted.
    pub mode: CopyMode,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("fd", &self.fd())
            .field("huge_pages", &self.huge_pages)
            .field("mode", &self.mode)
            .finish()
    }
}

// SAFETY: the socket's rings and memory are used by the one thread that
// owns the `Xsk`; moving it to that thread is all that happens.
unsafe impl Send for Xsk {}

/// Anonymous memory for `frames` frames, on huge pages if the host has
/// some to give.
fn area(frames: u32) -> io::Result<(memmap2::MmapMut, bool)> {
    let len = frames as usize * FRAME as usize;
    if let Ok(m) = memmap2::MmapOptions::new().len(len).huge(None).map_anon() {
        return Ok((m, true));
    }
    Ok((memmap2::MmapOptions::new().len(len).map_anon()?, false))
}

/// Hands `frames` to the fill ring, as many as it takes (all of them,
/// since it has room for every receive frame); returns how many.
fn give_back(device: &mut DeviceQueue, frames: &[u64]) -> usize {
    let mut done = 0;
    // The ring's idea of its free room may be stale: ask again until
    // every frame is in or it really has no room.
    while done < frames.len() {
        let mut fill = device.fill((frames.len() - done) as u32);
        let n = fill.insert(frames[done..].iter().copied()) as usize;
        fill.commit();
        if n == 0 {
            break;
        }
        done += n;
    }
    done
}

impl Xsk {
    /// A socket on queue `queue` of link `ifindex` with `frames` UMEM
    /// frames (half to receive into, half to send from).
    pub fn open(ifindex: u32, queue: u32, frames: u32, mode: CopyMode) -> io::Result<Xsk> {
        let frames = frames.next_power_of_two().max(64);
        let half = frames / 2;
        let (mut area, huge_pages) = area(frames)?;
        let len = area.len();
        let ptr = NonNull::new(area.as_mut_ptr()).ok_or_else(|| io::Error::other("no UMEM"))?;
        let slice = NonNull::slice_from_raw_parts(ptr, len);
        let config = UmemConfig {
            fill_size: half,
            complete_size: half,
            frame_size: FRAME,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is page aligned (mmap), `len` long, and is kept in
        // the returned `Xsk`, dropped after everything using it.
        let umem = unsafe { Umem::new(config, slice) }.map_err(errno)?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex).map_err(errno)?;
        info.set_queue(queue);
        let socket = Socket::with_shared(&info, &umem).map_err(errno)?;
        let mut device = umem.fq_cq(&socket).map_err(errno)?;
        let flags = SocketConfig::XDP_BIND_NEED_WAKEUP
            | match mode {
                CopyMode::Copy => SocketConfig::XDP_BIND_COPY,
                CopyMode::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
            };
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: NonZeroU32::new(half),
                    tx_size: NonZeroU32::new(half),
                    bind_flags: flags,
                },
            )
            .map_err(errno)?;
        let rx = user.map_rx().map_err(errno)?;
        let tx = user.map_tx().map_err(errno)?;
        umem.bind(&user).map_err(errno)?;
        // The first half receives: all of it to the fill ring.
        let rx_frames: Vec<u64> = (0..u64::from(half)).map(|i| i * u64::from(FRAME)).collect();
        if give_back(&mut device, &rx_frames) < rx_frames.len() {
            return Err(io::Error::other(
                "the fill ring took fewer frames than it holds",
            ));
        }
        let free_tx = (u64::from(half)..u64::from(frames))
            .map(|i| i * u64::from(FRAME))
            .collect();
        Ok(Xsk {
            rx,
            tx,
            device,
            user,
            _socket: socket,
            _umem: umem,
            area,
            free_tx,
            staged: 0,
            in_flight: 0,
            huge_pages,
            mode,
        })
    }

    /// The socket's descriptor (what goes into the XSK map).
    pub fn fd(&self) -> i32 {
        self.user.as_raw_fd()
    }

    /// Hands each received frame to `f` (up to `max`), then gives the
    /// frames back to the fill ring; returns how many were received.
    pub fn recv(&mut self, max: u32, mut f: impl FnMut(&[u8])) -> u32 {
        let mut n = 0;
        let mut read = self.rx.receive(max);
        let mut back: [u64; 64] = [0; 64];
        let mut held = 0;
        while let Some(d) = read.read() {
            let (at, len) = (d.addr as usize, d.len as usize);
            if let Some(frame) = self.area.get(at..at + len) {
                f(frame);
            }
            // The frame's base (the kernel may hand out an offset into it).
            back[held] = d.addr - d.addr % u64::from(FRAME);
            held += 1;
            n += 1;
            if held == back.len() {
                break;
            }
        }
        read.release();
        drop(read);
        give_back(&mut self.device, &back[..held]);
        if self.device.needs_wakeup() {
            self.device.wake();
        }
        n
    }

    /// A free transmit frame to write a frame of up to [`FRAME`] octets
    /// into; `None` when every one is in flight.
    pub fn frame(&mut self) -> Option<(u64, &mut [u8])> {
        self.complete();
        let at = *self.free_tx.last()?;
        let buf = self
            .area
            .get_mut(at as usize..(at + u64::from(FRAME)) as usize)?;
        Some((at, buf))
    }

    /// Queues the frame at `at` (from [`Xsk::frame`]), `len` octets long.
    pub fn send(&mut self, at: u64, len: u32) -> bool {
        if self.free_tx.last() != Some(&at) {
            return false;
        }
        let mut w = self.tx.transmit(1);
        let ok = w.insert_once(xdpilone::xdp::XdpDesc {
            addr: at,
            len,
            options: 0,
        });
        w.commit();
        drop(w);
        if ok {
            self.free_tx.pop();
            self.staged += 1;
        }
        ok
    }

    /// Tells the kernel about the frames queued since the last flush, if it
    /// needs telling.
    pub fn flush(&mut self) {
        if self.staged == 0 {
            return;
        }
        let staged = self.staged;
        self.in_flight += staged;
        self.staged = 0;
        if self.tx.needs_wakeup() {
            // In copy mode one wake-up sends at most 32 frames (the
            // kernel's budget per call): as many as the batch needs, or
            // the rest would wait for the next batch, and pile up.
            for _ in 0..staged.div_ceil(COPY_TX_BUDGET) {
                self.tx.wake();
            }
        }
    }

    /// Takes back the frames the kernel finished sending.
    fn complete(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let mut c = self.device.complete(self.in_flight);
        while let Some(addr) = c.read() {
            self.free_tx.push(addr - addr % u64::from(FRAME));
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        c.release();
    }

    /// The kernel's counts for the socket: frames dropped for want of room
    /// (receive ring full, fill ring empty) and invalid descriptors.
    pub fn statistics(&self) -> io::Result<XskStats> {
        let s = self.user.statistics_v2().map_err(errno)?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            rx_fill_empty: s.rx_fill_ring_empty_descs,
            invalid: s.rx_invalid_descs + s.tx_invalid_descs,
        })
    }

    /// Asks the kernel to let this socket's reader poll the queue's NAPI
    /// itself (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL` for `usecs`,
    /// `SO_BUSY_POLL_BUDGET` frames): with [`Xsk::busy_poll`] called while
    /// spinning, receive work happens on the worker's core, not in
    /// interrupts. Needs CAP_NET_ADMIN.
    pub fn prefer_busy_poll(&self, usecs: u32, budget: u32) -> io::Result<()> {
        const SO_PREFER_BUSY_POLL: libc::c_int = 69;
        const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
        for (opt, v) in [
            (SO_PREFER_BUSY_POLL, 1),
            (libc::SO_BUSY_POLL, usecs as libc::c_int),
            (SO_BUSY_POLL_BUDGET, budget as libc::c_int),
        ] {
            // SAFETY: an int option on our socket, from a live int.
            let r = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Whether `SO_PREFER_BUSY_POLL` is set on the socket.
    pub fn prefers_busy_poll(&self) -> bool {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads an int option into a live int of that length.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                69,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        r == 0 && v != 0
    }

    /// Polls the queue once from this thread (busy polling: a receive
    /// that takes nothing, and does not block).
    pub fn busy_poll(&self) {
        // SAFETY: a zero-length, non-blocking receive on our socket.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Frames in flight to the kernel (sent, not completed).
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
}
