//! G.729 Annex A through Debian's bcg729 (`libbcg729-dev`), behind the
//! `g729` cargo feature. bcg729 is GPL-3: a binary built with this feature
//! is GPL-3 as a whole (see README). 10 ms frames of 80 samples at 8 kHz
//! become 10 octets; SID frames (2 octets, Annex B) decode as comfort
//! noise and a lost frame is concealed by bcg729's own erasure handling.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use crate::CodecError;

unsafe extern "C" {
    fn initBcg729EncoderChannel(vad: u8) -> *mut u8;
    fn closeBcg729EncoderChannel(s: *mut u8);
    fn bcg729Encoder(s: *mut u8, input: *const i16, out: *mut u8, len: *mut u8);
    fn initBcg729DecoderChannel() -> *mut u8;
    fn closeBcg729DecoderChannel(s: *mut u8);
    fn bcg729Decoder(
        s: *mut u8,
        bits: *const u8,
        len: u8,
        erasure: u8,
        sid: u8,
        rfc3389: u8,
        out: *mut i16,
    );
}

/// Samples per G.729 frame.
pub const FRAME: usize = 80;

/// A G.729A encoder (no VAD).
#[derive(Debug)]
pub struct G729Encoder(NonNull<u8>);

// SAFETY: the channel is plain memory owned by this value and used by one
// thread at a time.
unsafe impl Send for G729Encoder {}

impl G729Encoder {
    /// A new encoder.
    pub fn new() -> Result<Self, CodecError> {
        // SAFETY: no preconditions; null is checked.
        NonNull::new(unsafe { initBcg729EncoderChannel(0) })
            .map(Self)
            .ok_or(CodecError::Library(-1))
    }

    /// Encodes whole 10 ms frames of `pcm` (a multiple of 80 samples).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if !pcm.len().is_multiple_of(FRAME) {
            return Err(CodecError::FrameLength(pcm.len()));
        }
        if out.len() < pcm.len() / 8 {
            return Err(CodecError::OutputTooSmall);
        }
        let mut n = 0;
        for frame in pcm.chunks_exact(FRAME) {
            let mut len = 0u8;
            // SAFETY: the channel is live; 80 samples in, room for 10 octets.
            unsafe {
                bcg729Encoder(
                    self.0.as_ptr(),
                    frame.as_ptr(),
                    out[n..].as_mut_ptr(),
                    &mut len,
                )
            };
            n += usize::from(len);
        }
        Ok(n)
    }
}

impl Drop for G729Encoder {
    fn drop(&mut self) {
        // SAFETY: made by initBcg729EncoderChannel, closed once.
        unsafe { closeBcg729EncoderChannel(self.0.as_ptr()) };
    }
}

/// A G.729A decoder.
#[derive(Debug)]
pub struct G729Decoder(NonNull<u8>);

// SAFETY: as for the encoder.
unsafe impl Send for G729Decoder {}

impl G729Decoder {
    /// A new decoder.
    pub fn new() -> Result<Self, CodecError> {
        // SAFETY: no preconditions; null is checked.
        NonNull::new(unsafe { initBcg729DecoderChannel() })
            .map(Self)
            .ok_or(CodecError::Library(-1))
    }

    /// Decodes a payload of 10-octet frames, optionally ending with a
    /// 2-octet SID frame (RFC 3551 §4.5.6); returns samples.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let frames = payload.len() / 10;
        let sid = payload.len() % 10;
        if sid != 0 && sid != 2 {
            return Err(CodecError::FrameLength(payload.len()));
        }
        let total = (frames + usize::from(sid == 2)) * FRAME;
        if out.len() < total {
            return Err(CodecError::OutputTooSmall);
        }
        let mut at = 0;
        for chunk in payload.chunks(10) {
            let is_sid = u8::from(chunk.len() == 2);
            // SAFETY: the channel is live; `chunk` holds its length in
            // octets and `out[at..]` room for 80 samples.
            unsafe {
                bcg729Decoder(
                    self.0.as_ptr(),
                    chunk.as_ptr(),
                    chunk.len() as u8,
                    0,
                    is_sid,
                    0,
                    out[at..].as_mut_ptr(),
                )
            };
            at += FRAME;
        }
        Ok(at)
    }

    /// Conceals lost frames filling `out` (whole 10 ms frames).
    pub fn conceal(&mut self, out: &mut [i16]) -> usize {
        let mut at = 0;
        let none = [0u8; 10];
        while at + FRAME <= out.len() {
            // SAFETY: the channel is live; erasure with a 10-octet dummy
            // frame, 80 samples out.
            unsafe {
                bcg729Decoder(
                    self.0.as_ptr(),
                    none.as_ptr(),
                    10,
                    1,
                    0,
                    0,
                    out[at..].as_mut_ptr(),
                )
            };
            at += FRAME;
        }
        at
    }
}

impl Drop for G729Decoder {
    fn drop(&mut self) {
        // SAFETY: made by initBcg729DecoderChannel, closed once.
        unsafe { closeBcg729DecoderChannel(self.0.as_ptr()) };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tone::{Tone, analyse};

    #[test]
    fn a_tone_survives_g729() {
        let mut enc = G729Encoder::new().unwrap();
        let mut dec = G729Decoder::new().unwrap();
        let mut tone = Tone::new(800.0, 8000.0, 8000);
        let mut pcm = [0i16; 160];
        let mut bits = [0u8; 20];
        let mut out = [0i16; 160];
        let mut all = Vec::new();
        for _ in 0..50 {
            tone.fill(&mut pcm);
            assert_eq!(enc.encode(&pcm, &mut bits).unwrap(), 20);
            assert_eq!(dec.decode(&bits, &mut out).unwrap(), 160);
            all.extend_from_slice(&out);
        }
        let (f, snr) = analyse(&all[1600..], 8000);
        assert!((f - 800.0).abs() < 3.0, "{f}");
        assert!(snr > 10.0, "{snr}");
        assert!(dec.decode(&[0u8; 7], &mut out).is_err());
    }
}
