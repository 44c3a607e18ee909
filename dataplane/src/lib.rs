//! rvoip-dataplane: the wire formats and the per-core packet engine.
//!
//! Owns: the SIP message view and writer ([`sip`]), SDP ([`sdp`]), buffer
//! pools ([`pool`]); later the io_uring engine, RTP/RTCP/SRTP, the media relay
//! and the shared-memory channel to the control plane.
//!
//! Must not: know about dialogs, routing or policy (the control plane decides
//! those); block or allocate per packet on the packet path; panic on any input.
//! Protocol code here is sans-IO: bytes in, bytes out.

pub mod edge;
pub mod engine;
pub mod log_budget;
pub mod media;
pub mod ng;
pub mod pool;
pub mod sdp;
pub mod shm;
pub mod sip;
pub mod srtp;
pub mod text;
pub mod wheel;
