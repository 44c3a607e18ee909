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
