//! The I/O engine: the one place in the dataplane that owns sockets.
//!
//! Today it holds the fallback SIP driver (blocking sockets, one thread per
//! listener); the per-core io_uring engine replaces it on the packet path.

pub mod media;
pub mod ng_udp;
pub mod sip_udp;
