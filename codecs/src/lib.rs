//! rvoip-codecs: audio codecs and the sample-level tools around them.
//!
//! Owns: G.711 (SIMD), G.722, Opus (through audiopus), L16, resampling,
//! DTMF (RFC 4733), packet loss concealment, comfort noise.
//! Must not: do I/O or allocate per frame.
//!
//! Nothing is implemented yet; see `docs/FEATURES.md`.
