//! Opus (RFC 6716) through libopus, by the `opus` crate (0.4: maintained,
//! every encoder control rvoip needs — bitrate, complexity, in-band FEC,
//! DTX, expected loss — and encode/decode into caller buffers without
//! allocating; it builds the libopus release it pins, so every host runs
//! the same codec).
//!
//! RTP (RFC 7587): the clock is always 48 kHz and the SDP says
//! `opus/48000/2`, whatever the audio's rate; rvoip encodes and decodes
//! mono at the rate its other side needs (8, 12, 16, 24 or 48 kHz), which
//! libopus resamples internally, so an Opus ↔ G.711 call costs no separate
//! resampling.

use opus::{Application, Bitrate, Channels};

use crate::CodecError;

/// How an Opus encoder is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Target bit rate, bit/s (6000–510000).
    pub bitrate: i32,
    /// Encoder complexity, 0 (cheapest) to 10.
    pub complexity: i32,
    /// In-band forward error correction (RFC 7587 `useinbandfec`).
    pub fec: bool,
    /// Discontinuous transmission (RFC 7587 `usedtx`).
    pub dtx: bool,
    /// Loss the encoder expects, percent (tunes FEC).
    pub expected_loss: i32,
    /// What is encoded is known to be voice (a conference's mix): the
    /// encoder keeps to its speech modes instead of analysing each frame
    /// for music (`OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE)`).
    pub voice: bool,
}

impl Default for OpusSettings {
    /// 24 kbit/s, complexity 10 (libopus's own default, which rtpengine
    /// keeps through libavcodec), FEC on, DTX off.
    fn default() -> Self {
        OpusSettings {
            bitrate: 24_000,
            complexity: 10,
            fec: true,
            dtx: false,
            expected_loss: 5,
            voice: false,
        }
    }
}

fn err(e: opus::Error) -> CodecError {
    CodecError::Library(e.code() as i32)
}

/// The rates libopus encodes from and decodes to.
pub fn supported_rate(rate: u32) -> bool {
    matches!(rate, 8000 | 12_000 | 16_000 | 24_000 | 48_000)
}

/// An Opus encoder taking mono PCM at its rate.
#[derive(Debug)]
pub struct OpusEncoder {
    inner: opus::Encoder,
    rate: u32,
}

impl OpusEncoder {
    /// An encoder from `rate` Hz mono PCM.
    pub fn new(rate: u32, settings: &OpusSettings) -> Result<Self, CodecError> {
        if !supported_rate(rate) {
            return Err(CodecError::Rate(rate));
        }
        let mut inner = opus::Encoder::new(rate, Channels::Mono, Application::Voip).map_err(err)?;
        inner
            .set_bitrate(Bitrate::Bits(settings.bitrate))
            .map_err(err)?;
        inner.set_complexity(settings.complexity).map_err(err)?;
        inner.set_inband_fec(settings.fec).map_err(err)?;
        inner.set_dtx(settings.dtx).map_err(err)?;
        inner
            .set_packet_loss_perc(settings.expected_loss)
            .map_err(err)?;
        if settings.voice {
            inner.set_signal(opus::Signal::Voice).map_err(err)?;
        }
        Ok(OpusEncoder { inner, rate })
    }

    /// The PCM rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Encodes one frame (2.5–60 ms of PCM); returns the packet's length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        self.inner.encode(pcm, out).map_err(err)
    }
}

/// An Opus decoder giving mono PCM at its rate.
#[derive(Debug)]
pub struct OpusDecoder {
    inner: opus::Decoder,
    rate: u32,
}

impl OpusDecoder {
    /// A decoder to `rate` Hz mono PCM.
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        if !supported_rate(rate) {
            return Err(CodecError::Rate(rate));
        }
        Ok(OpusDecoder {
            inner: opus::Decoder::new(rate, Channels::Mono).map_err(err)?,
            rate,
        })
    }

    /// The PCM rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Decodes one packet; returns samples.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if packet.is_empty() {
            return Err(CodecError::Empty);
        }
        self.inner.decode(packet, out, false).map_err(err)
    }

    /// Conceals one lost frame of `out.len()` samples: from the next packet's
    /// FEC data when it is given (RFC 7587 §3.3), else libopus's own
    /// concealment.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Result<usize, CodecError> {
        match next {
            Some(p) if !p.is_empty() => self.inner.decode(p, out, true).map_err(err),
            _ => self.inner.decode(&[], out, false).map_err(err),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tone::{Tone, analyse};

    #[test]
    fn a_tone_survives_opus_at_every_rate_rvoip_uses() {
        for rate in [8000u32, 16_000, 48_000] {
            let mut enc = OpusEncoder::new(rate, &OpusSettings::default()).unwrap();
            let mut dec = OpusDecoder::new(rate).unwrap();
            let frame = rate as usize / 50;
            let mut tone = Tone::new(1000.0, 12_000.0, rate);
            let mut pcm = vec![0i16; frame];
            let mut packet = [0u8; 400];
            let mut out = Vec::new();
            let mut buf = vec![0i16; frame];
            for _ in 0..50 {
                tone.fill(&mut pcm);
                let n = enc.encode(&pcm, &mut packet).unwrap();
                let m = dec.decode(&packet[..n], &mut buf).unwrap();
                assert_eq!(m, frame);
                out.extend_from_slice(&buf);
            }
            let (f, snr) = analyse(&out[frame * 10..], rate);
            assert!((f - 1000.0).abs() < 2.0, "{rate}: {f} Hz");
            assert!(snr > 15.0, "{rate}: {snr} dB");
        }
    }

    #[test]
    fn the_same_packets_decode_as_libopus_called_directly() {
        let mut ours = OpusDecoder::new(16_000).unwrap();
        let mut direct = rvoip_codec_reference::OpusDecoder::new(16_000).unwrap();
        let mut enc = OpusEncoder::new(16_000, &OpusSettings::default()).unwrap();
        let mut tone = Tone::new(440.0, 8000.0, 16_000);
        let mut pcm = [0i16; 320];
        let mut packet = [0u8; 400];
        let (mut a, mut b) = ([0i16; 320], [0i16; 320]);
        for _ in 0..20 {
            tone.fill(&mut pcm);
            let n = enc.encode(&pcm, &mut packet).unwrap();
            ours.decode(&packet[..n], &mut a).unwrap();
            assert_eq!(direct.decode(&packet[..n], &mut b), 320);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_lost_frame_is_concealed_from_fec_or_by_libopus() {
        let mut enc = OpusEncoder::new(8000, &OpusSettings::default()).unwrap();
        let mut dec = OpusDecoder::new(8000).unwrap();
        let mut tone = Tone::new(600.0, 10_000.0, 8000);
        let mut pcm = [0i16; 160];
        let mut packet = [0u8; 400];
        let mut out = [0i16; 160];
        for _ in 0..10 {
            tone.fill(&mut pcm);
            let n = enc.encode(&pcm, &mut packet).unwrap();
            dec.decode(&packet[..n], &mut out).unwrap();
        }
        tone.fill(&mut pcm);
        let _lost = enc.encode(&pcm, &mut [0u8; 400]).unwrap();
        tone.fill(&mut pcm);
        let n = enc.encode(&pcm, &mut packet).unwrap();
        assert_eq!(dec.conceal(Some(&packet[..n]), &mut out).unwrap(), 160);
        let (f, _) = analyse(&out, 8000);
        assert!((f - 600.0).abs() < 20.0, "{f}");
        assert_eq!(dec.conceal(None, &mut out).unwrap(), 160);
        assert!(dec.decode(&[], &mut out).is_err());
    }
}
