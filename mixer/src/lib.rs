//! rvoip-mixer: media processing above single frames.
//!
//! Owns: conference mixing (SIMD), the jitter buffer, transcoding pipelines,
//! playback and recording, VAD and AGC.
//! Must not: do I/O.
//!
//! Nothing is implemented yet; see `docs/FEATURES.md`.
