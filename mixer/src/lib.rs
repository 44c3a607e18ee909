//! rvoip-mixer: media processing above single frames.
//!
//! Owns: conference mixing ([`mix`]: total minus own, saturated, voice
//! activity so that only talkers cost a mix, gains, mute, deaf, AGC) on
//! kernels compiled for AVX2 and the baseline and chosen at run time
//! ([`kernel`]); voice activity and gain ([`vad`]); WAV reading, writing
//! and any-ratio resampling for prompts and recordings ([`wav`]); the
//! two-sided timeline of a recording ([`record`]).
//! Must not: do I/O, or allocate per frame once a room is set up.

pub mod kernel;
pub mod mix;
pub mod record;
pub mod vad;
pub mod wav;

pub use mix::{Heard, MemberId, MemberSettings, Mixer};
