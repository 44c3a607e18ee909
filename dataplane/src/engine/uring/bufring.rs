//! io_uring helpers shared by the engine's rings (and the load generator's):
//! a provided-buffer ring for multishot receives (a page-aligned ring of
//! buffer descriptors the kernel draws from, and the slab the buffers live
//! in; buffers go back to the kernel with `push` + `publish`), and the
//! submit-and-wait every loop makes.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::{BufRingEntry, SubmitArgs};

/// Checks that this kernel gives a ring what the engine's loops need:
/// SINGLE_ISSUER + DEFER_TASKRUN, the `opcodes`, provided-buffer rings and
/// sparse file tables (both 5.19). Runs on a thread of its own: tearing a
/// ring down can leave task work that interrupts the owning thread's next
/// blocking call with EINTR.
pub fn probe(opcodes: &'static [u8]) -> io::Result<()> {
    std::thread::spawn(move || -> io::Result<()> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if let Some(code) = opcodes.iter().find(|c| !probe.is_supported(**c)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring opcode {code} not supported"),
            ));
        }
        ring.submitter().register_files_sparse(1)?;
        let mut bufs = BufRing::new(8, 64)?;
        bufs.register(&ring, 1)?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("io_uring probe failed")))
}

/// Submits what is queued and waits for `want` completions as `args` say.
/// The wait's ordinary ends (its timeout, a signal, a full completion
/// queue) are not errors: the caller reaps what is there and goes on.
pub fn submit_and_wait(ring: &IoUring, want: usize, args: &SubmitArgs<'_, '_>) -> io::Result<()> {
    match ring.submitter().submit_with_args(want, args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A provided-buffer ring and the memory behind it.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_len: usize,
    slab: Box<[u8]>,
    entries: u16,
    buf_size: usize,
    tail: u16,
}

impl BufRing {
    /// A ring of `entries` buffers (a power of two) of `buf_size` octets each,
    /// all handed to the kernel.
    pub fn new(entries: u16, buf_size: usize) -> io::Result<Self> {
        let ring_len = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; the result is checked. mmap
        // memory is page-aligned, as the kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            ring: ptr.cast(),
            ring_len,
            slab: vec![0u8; usize::from(entries) * buf_size].into_boxed_slice(),
            entries,
            buf_size,
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Registers the ring with `ring` as buffer group `group`.
    pub fn register(&mut self, ring: &IoUring, group: u16) -> io::Result<()> {
        // SAFETY: the mapping lives as long as self; owners drop the ring
        // before the buffers (field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(self.ring as u64, self.entries, group, 0)
        }
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    pub fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries, inside the mapping; bid < entries so the
        // address is inside the slab, which is never resized.
        unsafe {
            let e = &mut *self.ring.add(idx);
            e.set_addr(self.slab.as_ptr().add(usize::from(bid) * self.buf_size) as u64);
            e.set_len(self.buf_size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed buffers visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: the tail field lives inside the first entry of the mapping
        // and is only written by us; the kernel reads it with acquire order.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.cast_const()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` octets of buffer `bid`.
    pub fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.buf_size;
        &self.slab[start..start + len.min(self.buf_size)]
    }

    /// The whole of buffer `bid`, writable: the caller holds it (a completion
    /// handed it over and it has not been pushed back), so the kernel does not
    /// touch it.
    pub fn buffer_mut(&mut self, bid: u16) -> &mut [u8] {
        let start = usize::from(bid) * self.buf_size;
        &mut self.slab[start..start + self.buf_size]
    }
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("buf_size", &self.buf_size)
            .finish()
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in new().
        unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
    }
}
