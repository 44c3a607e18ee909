//! The system libsrtp2 through `srtp/shim.c` (built by `build.rs` when
//! pkg-config finds it), for side-by-side SRTP timings. FFI is the only
//! unsafe code in this crate.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int, c_uchar, c_void};

unsafe extern "C" {
    fn rvoip_bench_srtp_create(
        suite: *const c_char,
        key: *const c_uchar,
        outbound: c_int,
    ) -> *mut c_void;
    fn rvoip_bench_srtp_protect(s: *mut c_void, pkt: *mut c_uchar, len: *mut c_int) -> c_int;
    fn rvoip_bench_srtp_unprotect(s: *mut c_void, pkt: *mut c_uchar, len: *mut c_int) -> c_int;
}

/// One libsrtp2 session (any SSRC), outbound (protect) or inbound.
#[derive(Debug)]
pub struct Session(*mut c_void);

impl Session {
    /// A session for the SDES suite name and key || salt; panics if libsrtp2
    /// refuses it (a benchmark has nothing to measure then).
    pub fn new(suite: &str, key_salt: &[u8], outbound: bool) -> Session {
        let name = CString::new(suite).unwrap_or_default();
        // SAFETY: libsrtp copies the key into its own context before returning;
        // the name is NUL-terminated and alive for the call.
        let s = unsafe {
            rvoip_bench_srtp_create(name.as_ptr(), key_salt.as_ptr(), c_int::from(outbound))
        };
        assert!(!s.is_null(), "libsrtp2 refused {suite}");
        Session(s)
    }

    /// Protects `buf[..len]` in place; returns the new length.
    pub fn protect(&mut self, buf: &mut [u8; 2048], len: usize) -> usize {
        let mut l = len as c_int;
        // SAFETY: buf has 2048 octets, more than len + SRTP_MAX_TRAILER_LEN.
        unsafe { rvoip_bench_srtp_protect(self.0, buf.as_mut_ptr(), &mut l) };
        l as usize
    }

    /// Unprotects `buf[..len]` in place; returns libsrtp's status (0 = ok).
    pub fn unprotect(&mut self, buf: &mut [u8; 2048], len: usize) -> i32 {
        let mut l = len as c_int;
        // SAFETY: as above; libsrtp only shortens the packet.
        unsafe { rvoip_bench_srtp_unprotect(self.0, buf.as_mut_ptr(), &mut l) }
    }
}
