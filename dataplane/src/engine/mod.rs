//! The I/O engine: the one place in the dataplane that owns sockets.
//!
//! - [`uring`]: the io_uring driver every loop here (and the load
//!   generator) builds its requests from, a file per operation;
//! - [`media`]: per-core media workers (io_uring, or the recvmmsg fallback);
//! - [`sip`]: per-core SIP transport workers (io_uring, or the poll(2)
//!   fallback) and their shared-memory channels to the control plane;
//! - [`ng_shm`]: the media order service (order channel and ng socket);
//! - [`ng_udp`]: a stand-alone ng listener for tests and tools.
//!
//! The engine is the dataplane's I/O shell: it alone reads the clock, and
//! passes the time to the protocol code it drives.
#![allow(clippy::disallowed_methods)]

pub mod gso;
pub mod media;
pub mod mmsg;
pub mod ng_shm;
pub mod ng_udp;
pub mod sip;
pub mod sockaddr;
pub mod uring;
pub(crate) mod wake;

/// For tests that need a kernel feature (io_uring, UDP_SEGMENT, UDP_GRO):
/// whether to go on. Where the feature is missing the test fails and names
/// it, so a host that lacks what CI expects never passes by skipping
/// silently; a host known to lack it sets
/// `RVOIP_SKIP_MISSING_KERNEL_FEATURES=1`, and the test then says on stderr
/// that it was skipped.
#[doc(hidden)]
#[allow(clippy::panic)] // the verdict of a test: what it needs is missing
pub fn kernel_has(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("RVOIP_SKIP_MISSING_KERNEL_FEATURES").is_some() {
        eprintln!("SKIPPED: this kernel has no {what}");
        return false;
    }
    panic!(
        "this kernel has no {what}, which this test needs \
         (RVOIP_SKIP_MISSING_KERNEL_FEATURES=1 skips it on such a host)"
    );
}

/// Sets the integer socket option `level`/`opt` of `fd` to `val`; whether
/// the kernel took it.
#[allow(unsafe_code)]
pub fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> bool {
    // SAFETY: setsockopt reads one c_int from a valid pointer.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}
