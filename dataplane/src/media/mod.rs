//! Media: RTP/RTCP wire formats, per-stream statistics, and the relay state
//! machine. Sans-IO: the engine feeds packets in and sends what comes out.

pub mod bundle;
pub mod codecs;
pub mod dtls;
pub mod ice;
pub mod keying;
pub mod orders;
pub mod plan;
pub mod prompt;
pub mod relay;
pub mod rtp;
pub mod services;
pub mod sessions;
pub mod stats;
pub mod transcode;
pub mod webrtc;

#[cfg(test)]
mod tests;
