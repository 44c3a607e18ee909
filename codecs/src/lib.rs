//! rvoip-codecs: audio codecs and the sample-level tools around them.
//!
//! Owns: G.711 ([`g711`]), G.722 ([`g722`]), tones and their analysis
//! ([`tone`]).
//! Must not: do I/O or allocate per frame.

pub mod g711;
pub mod g722;
pub mod tone;
