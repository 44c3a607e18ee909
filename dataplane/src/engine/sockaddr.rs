//! Conversions between `SocketAddr` and the kernel's sockaddr structures.
#![allow(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Space for either address family.
pub type Storage = libc::sockaddr_storage;

/// An all-zero storage.
pub fn zeroed() -> Storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Writes `addr` into `out`; returns the length to pass to the kernel.
pub fn write(addr: SocketAddr, out: &mut Storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut Storage).cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut Storage).cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a socket address from raw sockaddr bytes (at least the family's size).
pub fn read(raw: &[u8]) -> Option<SocketAddr> {
    if raw.len() < 2 {
        return None;
    }
    let family = libc::sa_family_t::from_ne_bytes([raw[0], raw[1]]);
    match i32::from(family) {
        libc::AF_INET if raw.len() >= std::mem::size_of::<libc::sockaddr_in>() => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if raw.len() >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let flow = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[8..24]);
            let scope = u32::from_ne_bytes([raw[24], raw[25], raw[26], raw[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// The bytes of a storage, for [`read`].
pub fn bytes(s: &Storage, len: usize) -> &[u8] {
    let len = len.min(std::mem::size_of::<Storage>());
    // SAFETY: a sockaddr_storage is plain bytes of at least `len`.
    unsafe { std::slice::from_raw_parts((s as *const Storage).cast::<u8>(), len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for a in ["127.0.0.1:30000", "[2001:db8::1]:5004"] {
            let addr: SocketAddr = a.parse().unwrap_or_else(|e| panic!("{e}"));
            let mut s = zeroed();
            let len = write(addr, &mut s) as usize;
            assert_eq!(read(bytes(&s, len)), Some(addr));
        }
        assert_eq!(read(&[0, 0, 1]), None);
    }
}
