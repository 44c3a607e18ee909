//! The I/O engine: the one place in the dataplane that owns sockets.
//!
//! - [`media`]: per-core media workers (io_uring, or the recvmmsg fallback);
//! - [`sip`]: per-core SIP transport workers and their shared-memory
//!   channels to the control plane;
//! - [`ng_udp`]: the ng control listener.

pub mod bufring;
pub mod gso;
pub mod media;
pub mod ng_shm;
pub mod ng_udp;
pub mod sip;
pub mod sockaddr;

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
