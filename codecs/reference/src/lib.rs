//! rvoip-codec-reference: other implementations of the codecs rvoip carries,
//! called directly, so that tests can compare rvoip's output with theirs on
//! the same input and benchmarks can time both side by side. spandsp (G.722,
//! G.711), libopus (through opusic-sys, the library `rvoip-codecs` links) and
//! bcg729 (G.729A; GPL-3, which is why this crate is for tests and
//! benchmarks only and never linked into the appliance).
//!
//! Owns: the FFI declarations and one safe type per codec state.
//! Must not: be a dependency of anything the appliance ships.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::ptr::NonNull;

unsafe extern "C" {
    fn g722_encode_init(s: *mut u8, rate: c_int, options: c_int) -> *mut u8;
    fn g722_encode_free(s: *mut u8) -> c_int;
    fn g722_encode(s: *mut u8, out: *mut u8, amp: *const i16, len: c_int) -> c_int;
    fn g722_decode_init(s: *mut u8, rate: c_int, options: c_int) -> *mut u8;
    fn g722_decode_free(s: *mut u8) -> c_int;
    fn g722_decode(s: *mut u8, amp: *mut i16, data: *const u8, len: c_int) -> c_int;
    fn g711_init(s: *mut u8, mode: c_int) -> *mut u8;
    fn g711_free(s: *mut u8) -> c_int;
    fn g711_encode(s: *mut u8, out: *mut u8, amp: *const i16, len: c_int) -> c_int;
    fn g711_decode(s: *mut u8, amp: *mut i16, data: *const u8, len: c_int) -> c_int;
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

/// spandsp's G.722 encoder at 64 kbit/s, 16 kHz input.
#[derive(Debug)]
pub struct SpandspG722Encoder(NonNull<u8>);

impl SpandspG722Encoder {
    /// A new encoder; `None` if spandsp could not allocate one.
    pub fn new() -> Option<Self> {
        // SAFETY: a null state asks spandsp to allocate one; 64000 and no
        // options are valid arguments.
        NonNull::new(unsafe { g722_encode_init(std::ptr::null_mut(), 64000, 0) }).map(Self)
    }
    /// Encodes `pcm` into `out` (one octet per two samples); returns octets.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let len = pcm.len().min(out.len() * 2);
        // SAFETY: the state is live; `out` has room for len/2 octets and
        // `pcm` holds `len` samples.
        let n = unsafe {
            g722_encode(
                self.0.as_ptr(),
                out.as_mut_ptr(),
                pcm.as_ptr(),
                len as c_int,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for SpandspG722Encoder {
    fn drop(&mut self) {
        // SAFETY: made by g722_encode_init with a null state, freed once.
        unsafe { g722_encode_free(self.0.as_ptr()) };
    }
}

/// spandsp's G.722 decoder at 64 kbit/s, 16 kHz output.
#[derive(Debug)]
pub struct SpandspG722Decoder(NonNull<u8>);

impl SpandspG722Decoder {
    /// A new decoder; `None` if spandsp could not allocate one.
    pub fn new() -> Option<Self> {
        // SAFETY: as for the encoder.
        NonNull::new(unsafe { g722_decode_init(std::ptr::null_mut(), 64000, 0) }).map(Self)
    }
    /// Decodes `codes` into `out` (two samples per octet); returns samples.
    pub fn decode(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let len = codes.len().min(out.len() / 2);
        // SAFETY: the state is live; `out` has room for 2·len samples.
        let n = unsafe {
            g722_decode(
                self.0.as_ptr(),
                out.as_mut_ptr(),
                codes.as_ptr(),
                len as c_int,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for SpandspG722Decoder {
    fn drop(&mut self) {
        // SAFETY: made by g722_decode_init with a null state, freed once.
        unsafe { g722_decode_free(self.0.as_ptr()) };
    }
}

/// spandsp's G.711 (its state-based frame functions).
#[derive(Debug)]
pub struct SpandspG711(NonNull<u8>);

impl SpandspG711 {
    /// µ-law (`ulaw`) or A-law.
    pub fn new(ulaw: bool) -> Option<Self> {
        // SAFETY: a null state asks spandsp to allocate one; mode 1 is
        // µ-law, 0 A-law.
        NonNull::new(unsafe { g711_init(std::ptr::null_mut(), c_int::from(ulaw)) }).map(Self)
    }
    /// Encodes `pcm` into `out`; returns octets.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let len = pcm.len().min(out.len());
        // SAFETY: the state is live; both buffers hold `len` elements.
        let n = unsafe {
            g711_encode(
                self.0.as_ptr(),
                out.as_mut_ptr(),
                pcm.as_ptr(),
                len as c_int,
            )
        };
        n.max(0) as usize
    }
    /// Decodes `codes` into `out`; returns samples.
    pub fn decode(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let len = codes.len().min(out.len());
        // SAFETY: the state is live; both buffers hold `len` elements.
        let n = unsafe {
            g711_decode(
                self.0.as_ptr(),
                out.as_mut_ptr(),
                codes.as_ptr(),
                len as c_int,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for SpandspG711 {
    fn drop(&mut self) {
        // SAFETY: made by g711_init with a null state, freed once.
        unsafe { g711_free(self.0.as_ptr()) };
    }
}

/// libopus's encoder, called directly.
#[derive(Debug)]
pub struct OpusEncoder(NonNull<opusic_sys::OpusEncoder>);

impl OpusEncoder {
    /// A VoIP encoder at `rate` Hz, one channel, with `bitrate` bit/s and
    /// `complexity` (0–10); `None` if libopus refuses.
    pub fn new(rate: i32, bitrate: i32, complexity: i32) -> Option<Self> {
        let mut err = 0;
        // SAFETY: valid arguments; the error is checked.
        let p = unsafe {
            opusic_sys::opus_encoder_create(rate, 1, opusic_sys::OPUS_APPLICATION_VOIP, &mut err)
        };
        let e = NonNull::new(p).filter(|_| err == opusic_sys::OPUS_OK)?;
        // SAFETY: the encoder is live; these requests take one int.
        unsafe {
            opusic_sys::opus_encoder_ctl(e.as_ptr(), opusic_sys::OPUS_SET_BITRATE_REQUEST, bitrate);
            opusic_sys::opus_encoder_ctl(
                e.as_ptr(),
                opusic_sys::OPUS_SET_COMPLEXITY_REQUEST,
                complexity,
            );
        }
        Some(Self(e))
    }
    /// Encodes one frame; returns octets or a negative libopus error.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> i32 {
        // SAFETY: the encoder is live; lengths are the slices'.
        unsafe {
            opusic_sys::opus_encode(
                self.0.as_ptr(),
                pcm.as_ptr(),
                pcm.len() as c_int,
                out.as_mut_ptr(),
                out.len() as i32,
            )
        }
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: made by opus_encoder_create, destroyed once.
        unsafe { opusic_sys::opus_encoder_destroy(self.0.as_ptr()) };
    }
}

/// libopus's decoder, called directly.
#[derive(Debug)]
pub struct OpusDecoder(NonNull<opusic_sys::OpusDecoder>);

impl OpusDecoder {
    /// A decoder to `rate` Hz, one channel.
    pub fn new(rate: i32) -> Option<Self> {
        let mut err = 0;
        // SAFETY: valid arguments; the error is checked.
        let p = unsafe { opusic_sys::opus_decoder_create(rate, 1, &mut err) };
        NonNull::new(p)
            .filter(|_| err == opusic_sys::OPUS_OK)
            .map(Self)
    }
    /// Decodes one packet; returns samples or a negative libopus error.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> i32 {
        // SAFETY: the decoder is live; lengths are the slices'.
        unsafe {
            opusic_sys::opus_decode(
                self.0.as_ptr(),
                packet.as_ptr(),
                packet.len() as i32,
                out.as_mut_ptr(),
                out.len() as c_int,
                0,
            )
        }
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        // SAFETY: made by opus_decoder_create, destroyed once.
        unsafe { opusic_sys::opus_decoder_destroy(self.0.as_ptr()) };
    }
}

/// bcg729's G.729A encoder.
#[derive(Debug)]
pub struct Bcg729Encoder(NonNull<u8>);

impl Bcg729Encoder {
    /// A new encoder without VAD.
    pub fn new() -> Option<Self> {
        // SAFETY: no preconditions.
        NonNull::new(unsafe { initBcg729EncoderChannel(0) }).map(Self)
    }
    /// Encodes one 10 ms frame (80 samples) into 10 octets.
    pub fn encode(&mut self, pcm: &[i16; 80], out: &mut [u8; 10]) -> usize {
        let mut len = 0u8;
        // SAFETY: the state is live; 80 samples in, at most 10 octets out.
        unsafe { bcg729Encoder(self.0.as_ptr(), pcm.as_ptr(), out.as_mut_ptr(), &mut len) };
        usize::from(len)
    }
}

impl Drop for Bcg729Encoder {
    fn drop(&mut self) {
        // SAFETY: made by initBcg729EncoderChannel, closed once.
        unsafe { closeBcg729EncoderChannel(self.0.as_ptr()) };
    }
}

/// bcg729's G.729A decoder.
#[derive(Debug)]
pub struct Bcg729Decoder(NonNull<u8>);

impl Bcg729Decoder {
    /// A new decoder.
    pub fn new() -> Option<Self> {
        // SAFETY: no preconditions.
        NonNull::new(unsafe { initBcg729DecoderChannel() }).map(Self)
    }
    /// Decodes one 10-octet frame into 80 samples.
    pub fn decode(&mut self, bits: &[u8; 10], out: &mut [i16; 80]) {
        // SAFETY: the state is live; 10 octets in, 80 samples out.
        unsafe {
            bcg729Decoder(
                self.0.as_ptr(),
                bits.as_ptr(),
                10,
                0,
                0,
                0,
                out.as_mut_ptr(),
            )
        };
    }
}

impl Drop for Bcg729Decoder {
    fn drop(&mut self) {
        // SAFETY: made by initBcg729DecoderChannel, closed once.
        unsafe { closeBcg729DecoderChannel(self.0.as_ptr()) };
    }
}
