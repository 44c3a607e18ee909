//! rvoip-dataplane: the wire formats and the per-core packet engine.
//!
//! Owns: the SIP message view, writer and modify-and-forward, and SIP over
//! stream transports as sans-IO sessions ([`sip`]), the SIP edge that judges each datagram before the control plane sees it
//! ([`edge`]), SDP ([`sdp`]), RTP/RTCP, the media relay, the typed media
//! orders and the sessions that carry them out ([`media`]), SRTP/SRTCP and
//! SDES ([`srtp`]), the rtpengine ng protocol as an adapter onto those
//! orders ([`ng`]), the
//! I/O engine: one io_uring driver every loop builds on, per-core SIP
//! workers (io_uring or poll(2)) and media workers (io_uring or
//! recvmmsg/sendmmsg) ([`engine`]), the shared-memory channels and the load
//! board shared with the control plane ([`shm`]), the timer wheel
//! ([`wheel`]), the randomness protocol cores are given ([`entropy`]).
//!
//! Must not: know about dialogs, routing or policy (the control plane decides
//! those); block or allocate per packet on the packet path; panic on any input.
//! Protocol code here is sans-IO: bytes in, bytes out, the time and the
//! randomness given; I/O and the clock live in [`engine`] alone.

pub mod edge;
pub mod engine;
pub mod entropy;
pub mod hep;
pub mod log_budget;
pub mod media;
pub mod ng;
pub mod pcap;
pub mod sdp;
pub mod shm;
pub mod sip;
pub mod srtp;
pub mod text;
pub mod wheel;
pub mod xdp;
