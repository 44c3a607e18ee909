//! rvoip-codecs: audio codecs and the sample-level tools around them.
//!
//! Owns: G.711 (SIMD), G.722, Opus (through audiopus), L16, resampling,
//! DTMF (RFC 4733), packet loss concealment, comfort noise.
//! Must not: do I/O or allocate per frame.
//!
//! Implemented: G.711 µ-law and A-law ([`g711`]), bit-exact with ITU-T
//! G.191. The rest is to come; see `docs/FEATURES.md`.

pub mod g711;
