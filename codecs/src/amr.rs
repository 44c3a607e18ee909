//! AMR (narrowband, 8 kHz) and AMR-WB (16 kHz) through Debian's
//! opencore-amr (`libopencore-amrnb-dev`, `libopencore-amrwb-dev`: encoder
//! and decoder, decoder) and vo-amrwbenc (`libvo-amrwbenc-dev`: AMR-WB
//! encoder), all Apache-2.0, behind the `amr` cargo feature.
//!
//! RTP payloads per RFC 4867: a codec mode request (CMR), a table of
//! contents (one entry per 20 ms frame: F, FT, Q), then the frames' speech
//! bits, either each frame octet-aligned (`octet-align=1` in the fmtp) or
//! all bits packed (bandwidth-efficient, the default). The libraries speak
//! the storage format (RFC 4867 §5: one ToC octet, then the frame's bits
//! octet-padded), which this module converts to and from.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::ptr::NonNull;

use crate::CodecError;

unsafe extern "C" {
    fn Encoder_Interface_init(dtx: c_int) -> *mut u8;
    fn Encoder_Interface_exit(s: *mut u8);
    fn Encoder_Interface_Encode(
        s: *mut u8,
        mode: c_int,
        speech: *const i16,
        out: *mut u8,
        force_speech: c_int,
    ) -> c_int;
    fn Decoder_Interface_init() -> *mut u8;
    fn Decoder_Interface_exit(s: *mut u8);
    fn Decoder_Interface_Decode(s: *mut u8, input: *const u8, out: *mut i16, bfi: c_int);
    fn E_IF_init() -> *mut u8;
    fn E_IF_exit(s: *mut u8);
    fn E_IF_encode(s: *mut u8, mode: c_int, speech: *const i16, out: *mut u8, dtx: c_int) -> c_int;
    fn D_IF_init() -> *mut u8;
    fn D_IF_exit(s: *mut u8);
    fn D_IF_decode(s: *mut u8, bits: *const u8, synth: *mut i16, bfi: c_int);
}

/// Speech bits per frame type, AMR (FT 0–7 modes, 8 SID).
const NB_BITS: [u16; 9] = [95, 103, 118, 134, 148, 159, 204, 244, 39];
/// Speech bits per frame type, AMR-WB (FT 0–8 modes, 9 SID).
const WB_BITS: [u16; 10] = [132, 177, 253, 285, 317, 365, 397, 461, 477, 40];
/// The frame type of "no data" (RFC 4867 §4.3.2).
const NO_DATA: u8 = 15;
/// The most frames one payload may carry here (400 ms).
const MAX_FRAMES: usize = 20;

/// Bits of frame type `ft`; `None` for a type the variant does not have.
fn frame_bits(wide: bool, ft: u8) -> Option<u16> {
    if ft == NO_DATA {
        return Some(0);
    }
    let table: &[u16] = if wide { &WB_BITS } else { &NB_BITS };
    table.get(usize::from(ft)).copied()
}

/// Reads bits MSB first.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}

/// Writes bits MSB first.
struct BitWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl BitWriter<'_> {
    fn write(&mut self, v: u32, n: usize) -> Result<(), CodecError> {
        for i in (0..n).rev() {
            let byte = self
                .out
                .get_mut(self.pos / 8)
                .ok_or(CodecError::OutputTooSmall)?;
            if self.pos.is_multiple_of(8) {
                *byte = 0;
            }
            *byte |= (((v >> i) & 1) as u8) << (7 - self.pos % 8);
            self.pos += 1;
        }
        Ok(())
    }
    fn octets(&self) -> usize {
        self.pos.div_ceil(8)
    }
}

/// An AMR or AMR-WB encoder producing RFC 4867 payloads.
#[derive(Debug)]
pub struct AmrEncoder {
    wide: bool,
    state: NonNull<u8>,
    mode: u8,
    octet_align: bool,
}

// SAFETY: the state is plain memory owned by this value, used by one
// thread at a time.
unsafe impl Send for AmrEncoder {}

impl AmrEncoder {
    /// An encoder for AMR-WB (`wide`) or AMR at its highest mode (12.2 or
    /// 23.85 kbit/s), bandwidth-efficient until told otherwise.
    pub fn new(wide: bool) -> Result<AmrEncoder, CodecError> {
        // SAFETY: no preconditions; null is checked.
        let state = unsafe {
            if wide {
                E_IF_init()
            } else {
                Encoder_Interface_init(0)
            }
        };
        Ok(AmrEncoder {
            wide,
            state: NonNull::new(state).ok_or(CodecError::Library(-1))?,
            mode: if wide { 8 } else { 7 },
            octet_align: false,
        })
    }

    /// Octet-aligned payloads (`octet-align=1`) or bandwidth-efficient.
    pub fn set_octet_align(&mut self, on: bool) {
        self.octet_align = on;
    }

    /// The mode (frame type) encoded, 0–7 (AMR) or 0–8 (AMR-WB).
    pub fn set_mode(&mut self, mode: u8) {
        self.mode = mode.min(if self.wide { 8 } else { 7 });
    }

    /// Samples per 20 ms frame.
    pub fn frame(&self) -> usize {
        if self.wide { 320 } else { 160 }
    }

    /// Encodes whole 20 ms frames of `pcm` into one payload.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let n = self.frame();
        if pcm.is_empty() || !pcm.len().is_multiple_of(n) || pcm.len() / n > MAX_FRAMES {
            return Err(CodecError::FrameLength(pcm.len()));
        }
        // Storage frames from the library, then packed.
        let mut frames = [[0u8; 64]; MAX_FRAMES];
        let count = pcm.len() / n;
        for (f, chunk) in frames.iter_mut().zip(pcm.chunks_exact(n)) {
            // SAFETY: the state is live; `chunk` holds a whole frame and
            // `f` room for the largest storage frame (61 octets).
            unsafe {
                if self.wide {
                    E_IF_encode(
                        self.state.as_ptr(),
                        c_int::from(self.mode),
                        chunk.as_ptr(),
                        f.as_mut_ptr(),
                        0,
                    )
                } else {
                    Encoder_Interface_Encode(
                        self.state.as_ptr(),
                        c_int::from(self.mode),
                        chunk.as_ptr(),
                        f.as_mut_ptr(),
                        0,
                    )
                }
            };
        }
        let mut w = BitWriter { out, pos: 0 };
        // CMR 15: no mode request.
        if self.octet_align {
            w.write(0xf0, 8)?;
        } else {
            w.write(0xf, 4)?;
        }
        for (i, f) in frames[..count].iter().enumerate() {
            let ft = (f[0] >> 3) & 0x0f;
            let q = (f[0] >> 2) & 1;
            let more = u32::from(i + 1 < count);
            let toc = (more << 5) | (u32::from(ft) << 1) | u32::from(q);
            if self.octet_align {
                w.write(toc << 2, 8)?;
            } else {
                w.write(toc, 6)?;
            }
        }
        for f in &frames[..count] {
            let ft = (f[0] >> 3) & 0x0f;
            let bits = usize::from(frame_bits(self.wide, ft).unwrap_or(0));
            let mut r = BitReader {
                data: &f[1..],
                pos: 0,
            };
            for _ in 0..bits {
                let b = r.read(1).ok_or(CodecError::Library(-2))?;
                w.write(b, 1)?;
            }
            if self.octet_align {
                let pad = (8 - w.pos % 8) % 8;
                w.write(0, pad)?;
            }
        }
        Ok(w.octets())
    }
}

impl Drop for AmrEncoder {
    fn drop(&mut self) {
        // SAFETY: made by the matching init, freed once.
        unsafe {
            if self.wide {
                E_IF_exit(self.state.as_ptr());
            } else {
                Encoder_Interface_exit(self.state.as_ptr());
            }
        }
    }
}

/// An AMR or AMR-WB decoder reading RFC 4867 payloads.
#[derive(Debug)]
pub struct AmrDecoder {
    wide: bool,
    state: NonNull<u8>,
    octet_align: bool,
}

// SAFETY: as for the encoder.
unsafe impl Send for AmrDecoder {}

impl AmrDecoder {
    /// A decoder for AMR-WB (`wide`) or AMR, bandwidth-efficient until
    /// told otherwise.
    pub fn new(wide: bool) -> Result<AmrDecoder, CodecError> {
        // SAFETY: no preconditions; null is checked.
        let state = unsafe {
            if wide {
                D_IF_init()
            } else {
                Decoder_Interface_init()
            }
        };
        Ok(AmrDecoder {
            wide,
            state: NonNull::new(state).ok_or(CodecError::Library(-1))?,
            octet_align: false,
        })
    }

    /// Octet-aligned payloads (`octet-align=1`) or bandwidth-efficient.
    pub fn set_octet_align(&mut self, on: bool) {
        self.octet_align = on;
    }

    /// Samples per 20 ms frame.
    pub fn frame(&self) -> usize {
        if self.wide { 320 } else { 160 }
    }

    fn decode_storage(&mut self, storage: &[u8], out: &mut [i16], bfi: bool) {
        // SAFETY: the state is live; `storage` holds a whole storage frame
        // (the library reads no more than its frame type says) and `out`
        // room for one 20 ms frame (checked by the callers).
        unsafe {
            if self.wide {
                D_IF_decode(
                    self.state.as_ptr(),
                    storage.as_ptr(),
                    out.as_mut_ptr(),
                    c_int::from(bfi),
                );
            } else {
                Decoder_Interface_Decode(
                    self.state.as_ptr(),
                    storage.as_ptr(),
                    out.as_mut_ptr(),
                    c_int::from(bfi),
                );
            }
        }
    }

    /// Decodes a payload (one or more frames); returns samples.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let mut r = BitReader {
            data: payload,
            pos: 0,
        };
        let bad = CodecError::FrameLength(payload.len());
        if self.octet_align {
            r.read(8).ok_or(bad)?;
        } else {
            r.read(4).ok_or(bad)?;
        }
        let mut tocs = [(0u8, 0u8); MAX_FRAMES];
        let mut count = 0;
        loop {
            let toc = if self.octet_align {
                r.read(8).ok_or(bad)? >> 2
            } else {
                r.read(6).ok_or(bad)?
            };
            if count == MAX_FRAMES {
                return Err(bad);
            }
            let ft = ((toc >> 1) & 0x0f) as u8;
            frame_bits(self.wide, ft).ok_or(bad)?;
            tocs[count] = (ft, (toc & 1) as u8);
            count += 1;
            if toc & 0x20 == 0 {
                break;
            }
        }
        let n = self.frame();
        if out.len() < count * n {
            return Err(CodecError::OutputTooSmall);
        }
        for (i, &(ft, q)) in tocs[..count].iter().enumerate() {
            let bits = usize::from(frame_bits(self.wide, ft).unwrap_or(0));
            let mut storage = [0u8; 64];
            storage[0] = (ft << 3) | (q << 2);
            let mut w = BitWriter {
                out: &mut storage[1..],
                pos: 0,
            };
            for _ in 0..bits {
                let b = r.read(1).ok_or(bad)?;
                w.write(b, 1)?;
            }
            if self.octet_align {
                let pad = (8 - r.pos % 8) % 8;
                r.read(pad).ok_or(bad)?;
            }
            self.decode_storage(&storage, &mut out[i * n..(i + 1) * n], q == 0);
        }
        Ok(count * n)
    }

    /// Conceals one lost 20 ms frame (the decoder's own erasure handling).
    pub fn conceal(&mut self, out: &mut [i16]) -> usize {
        let n = self.frame();
        let mut at = 0;
        while at + n <= out.len() {
            let storage = [NO_DATA << 3; 64];
            self.decode_storage(&storage, &mut out[at..at + n], true);
            at += n;
        }
        at
    }
}

impl Drop for AmrDecoder {
    fn drop(&mut self) {
        // SAFETY: made by the matching init, freed once.
        unsafe {
            if self.wide {
                D_IF_exit(self.state.as_ptr());
            } else {
                Decoder_Interface_exit(self.state.as_ptr());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tone::{Tone, analyse};

    fn round_trip(wide: bool, octet_align: bool, frames_per_packet: usize) -> (f64, f64) {
        let rate = if wide { 16_000 } else { 8000 };
        let mut enc = AmrEncoder::new(wide).unwrap();
        let mut dec = AmrDecoder::new(wide).unwrap();
        enc.set_octet_align(octet_align);
        dec.set_octet_align(octet_align);
        let n = enc.frame() * frames_per_packet;
        let mut tone = Tone::new(700.0, 9000.0, rate);
        let mut pcm = vec![0i16; n];
        let mut payload = [0u8; 1500];
        let mut out = vec![0i16; n];
        let mut all = Vec::new();
        for _ in 0..50 / frames_per_packet {
            tone.fill(&mut pcm);
            let len = enc.encode(&pcm, &mut payload).unwrap();
            assert_eq!(dec.decode(&payload[..len], &mut out).unwrap(), n);
            all.extend_from_slice(&out);
        }
        analyse(&all[rate as usize / 5..], rate)
    }

    #[test]
    fn a_tone_survives_amr_and_amr_wb_in_both_packings() {
        for wide in [false, true] {
            for octet_align in [false, true] {
                for frames in [1, 2] {
                    let (f, snr) = round_trip(wide, octet_align, frames);
                    assert!(
                        (f - 700.0).abs() < 3.0,
                        "{wide} {octet_align} {frames}: {f}"
                    );
                    assert!(snr > 10.0, "{wide} {octet_align} {frames}: {snr}");
                }
            }
        }
    }

    #[test]
    fn payload_sizes_are_rfc_4867s() {
        // AMR 12.2: 244 bits; bandwidth-efficient 4 + 6 + 244 = 254 bits
        // = 32 octets; octet-aligned 1 + 1 + 31 = 33.
        let mut enc = AmrEncoder::new(false).unwrap();
        let pcm = [0i16; 160];
        let mut out = [0u8; 100];
        assert_eq!(enc.encode(&pcm, &mut out).unwrap(), 32);
        enc.set_octet_align(true);
        assert_eq!(enc.encode(&pcm, &mut out).unwrap(), 33);
        assert_eq!(out[0], 0xf0, "no mode request");
        // AMR-WB 23.85: 477 bits; 4 + 6 + 477 = 487 bits = 61 octets.
        let mut enc = AmrEncoder::new(true).unwrap();
        assert_eq!(enc.encode(&[0i16; 320], &mut out).unwrap(), 61);
    }

    #[test]
    fn bad_payloads_are_refused() {
        let mut dec = AmrDecoder::new(false).unwrap();
        let mut out = [0i16; 3200];
        assert!(dec.decode(&[], &mut out).is_err());
        assert!(dec.decode(&[0xf4], &mut out).is_err(), "truncated frame");
        // Frame type 12 is reserved in AMR.
        assert!(dec.decode(&[0xf6, 0x00], &mut out).is_err());
        assert_eq!(dec.conceal(&mut out[..160]), 160);
    }
}
