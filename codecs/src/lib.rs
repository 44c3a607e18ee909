//! rvoip-codecs: audio codecs and the sample-level tools around them.
//!
//! Owns: the codec and payload-type registry and a codec-blind encoder and
//! decoder ([`codec`]); G.711 ([`g711`]), G.722 ([`g722`]), Opus through
//! libopus ([`opus`]), L16, G.729A through bcg729 with the `g729` feature
//! ([`g729`]), AMR and AMR-WB through opencore-amr and vo-amrwbenc with
//! the `amr` feature ([`amr`]); resampling ([`resample`]), packet loss concealment
//! ([`plc`]), comfort noise ([`cng`]), DTMF events and tones ([`dtmf`]),
//! tone generation and analysis ([`tone`]).
//! Must not: do I/O, or allocate per frame once an encoder, decoder or
//! resampler is made.

#[cfg(feature = "amr")]
pub mod amr;
pub mod cng;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod g722;
#[cfg(feature = "g729")]
pub mod g729;
pub mod opus;
pub mod plc;
pub mod resample;
pub mod tone;

pub use codec::{Codec, Decoder, Encoder, Format, static_clock, static_name};

/// Why a codec could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// A PCM rate the codec does not run at.
    Rate(u32),
    /// The codec library refused (its error code).
    Library(i32),
    /// An empty payload.
    Empty,
    /// This build does not transcode the codec.
    Unsupported(Codec),
    /// The output buffer is too small for the frame.
    OutputTooSmall,
    /// A frame or payload of a length the codec does not take.
    FrameLength(usize),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Rate(r) => write!(f, "unsupported sample rate {r} Hz"),
            CodecError::Library(e) => write!(f, "codec library error {e}"),
            CodecError::Empty => f.write_str("empty payload"),
            CodecError::Unsupported(c) => write!(f, "{} is not transcoded by this build", c.name()),
            CodecError::OutputTooSmall => f.write_str("output buffer too small"),
            CodecError::FrameLength(n) => write!(f, "frame of {n} does not fit the codec"),
        }
    }
}

impl std::error::Error for CodecError {}
