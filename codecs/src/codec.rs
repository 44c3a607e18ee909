//! The one codec and payload-type registry: what each codec is called in
//! SDP, its RTP clock and static payload type (RFC 3551), the PCM rate it
//! codes at, and an encoder and decoder for each that the media stage
//! drives without knowing which codec it has.

use crate::CodecError;
use crate::g711;
use crate::g722::{G722Decoder, G722Encoder};
use crate::opus::{OpusDecoder, OpusEncoder, OpusSettings};
use crate::plc::Concealer;

/// A codec rvoip knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s.
    G722,
    /// Opus (RFC 7587).
    Opus,
    /// 16-bit linear PCM, network byte order (RFC 3551 §4.5.11).
    L16,
    /// G.729 Annex A (transcoded only with the `g729` feature).
    G729,
    /// AMR narrowband (transcoded only with the `amr` feature).
    Amr,
    /// AMR wideband (transcoded only with the `amr` feature).
    AmrWb,
    /// RFC 4733 telephone events.
    TelephoneEvent,
    /// RFC 3389 comfort noise.
    Cn,
}

impl Codec {
    /// Every codec, in the order rvoip prefers them when it adds one.
    pub const ALL: [Codec; 10] = [
        Codec::Opus,
        Codec::G722,
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G729,
        Codec::AmrWb,
        Codec::Amr,
        Codec::L16,
        Codec::TelephoneEvent,
        Codec::Cn,
    ];

    /// The encoding name as SDP writes it (RFC 3551, RFC 7587, RFC 4733).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
            Codec::L16 => "L16",
            Codec::G729 => "G729",
            Codec::Amr => "AMR",
            Codec::AmrWb => "AMR-WB",
            Codec::TelephoneEvent => "telephone-event",
            Codec::Cn => "CN",
        }
    }

    /// The codec an encoding name stands for (case-insensitive, as SDP's
    /// names are: RFC 4855 §3).
    pub fn from_name(name: &[u8]) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The static payload type (RFC 3551 Table 4), if it has one.
    pub fn static_pt(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Cn => Some(13),
            Codec::G729 => Some(18),
            _ => None,
        }
    }

    /// The codec of a static payload type.
    pub fn from_static_pt(pt: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.static_pt() == Some(pt))
    }

    /// The RTP clock rate an `a=rtpmap` names by default.
    pub fn default_clock(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::AmrWb => 16_000,
            _ => 8000,
        }
    }

    /// Channels SDP names (RFC 7587: opus is always `/2`).
    pub fn sdp_channels(self) -> u8 {
        match self {
            Codec::Opus => 2,
            _ => 1,
        }
    }

    /// The `a=fmtp` parameters rvoip writes when it adds the codec.
    pub fn default_fmtp(self) -> Option<&'static str> {
        match self {
            Codec::Opus => Some("useinbandfec=1"),
            Codec::Amr | Codec::AmrWb => Some("octet-align=1"),
            Codec::TelephoneEvent => Some("0-16"),
            _ => None,
        }
    }

    /// Whether it carries audio (not events or comfort noise).
    pub fn is_audio(self) -> bool {
        !matches!(self, Codec::TelephoneEvent | Codec::Cn)
    }

    /// Whether this build can decode and encode it.
    pub fn transcodable(self) -> bool {
        match self {
            Codec::G729 => cfg!(feature = "g729"),
            Codec::Amr | Codec::AmrWb => cfg!(feature = "amr"),
            c => c.is_audio(),
        }
    }

    /// The PCM rate the codec works at, for a stream at RTP clock `clock`;
    /// Opus (any of 8–48 kHz) takes `opus_rate`.
    pub fn pcm_rate(self, clock: u32, opus_rate: u32) -> u32 {
        match self {
            Codec::G722 | Codec::AmrWb => 16_000,
            Codec::Opus => opus_rate,
            Codec::L16 => clock,
            _ => 8000,
        }
    }
}

/// The RTP clock rate of a static payload type (RFC 3551 Tables 4 and 5),
/// for any media a relay meets, codec rvoip knows or not.
pub fn static_clock(pt: u8) -> Option<u32> {
    match pt {
        0..=9 | 12 | 13 | 15 | 18 => Some(8000),
        10 | 11 => Some(44_100),
        14 | 25 | 26 | 28 | 31..=34 => Some(90_000),
        16 => Some(11_025),
        17 => Some(22_050),
        _ => None,
    }
}

/// The encoding name of a static payload type (RFC 3551 Tables 4 and 5).
pub fn static_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 | 16 | 17 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 => "CN",
        14 => "MPA",
        15 => "G728",
        18 => "G729",
        25 => "CelB",
        26 => "JPEG",
        28 => "nv",
        31 => "H261",
        32 => "MPV",
        33 => "MP2T",
        34 => "H263",
        _ => return None,
    })
}

/// A payload format as SDP maps it: a codec at a payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    /// The codec.
    pub codec: Codec,
    /// The payload type.
    pub pt: u8,
    /// The RTP clock rate.
    pub clock: u32,
    /// Channels, as SDP names them.
    pub channels: u8,
}

impl Format {
    /// The codec at its static payload type or at `pt`.
    pub fn new(codec: Codec, pt: u8) -> Format {
        Format {
            codec,
            pt,
            clock: codec.default_clock(),
            channels: codec.sdp_channels(),
        }
    }

    /// RTP timestamp units per PCM sample at `pcm_rate` (G.722's 8000 Hz
    /// clock runs at half its 16 kHz audio, RFC 3551 §4.5.2).
    pub fn rtp_units(&self, pcm_samples: usize, pcm_rate: u32) -> u32 {
        (pcm_samples as u64 * u64::from(self.clock) / u64::from(pcm_rate.max(1))) as u32
    }
}

/// An encoder for any codec rvoip transcodes.
#[derive(Debug)]
pub enum Encoder {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722.
    G722(Box<G722Encoder>),
    /// Opus.
    Opus(OpusEncoder),
    /// L16 at its rate.
    L16(u32),
    /// G.729A.
    #[cfg(feature = "g729")]
    G729(crate::g729::G729Encoder),
    /// AMR or AMR-WB.
    #[cfg(feature = "amr")]
    Amr(crate::amr::AmrEncoder),
}

impl Encoder {
    /// For AMR: octet-aligned payloads (`octet-align=1`); nothing for
    /// other codecs.
    pub fn set_octet_align(&mut self, on: bool) {
        #[cfg(feature = "amr")]
        if let Encoder::Amr(e) = self {
            e.set_octet_align(on);
        }
        let _ = on;
    }

    /// An encoder for `codec` taking PCM at `pcm_rate` (fixed by the codec
    /// except for Opus and L16).
    pub fn new(codec: Codec, pcm_rate: u32, opus: &OpusSettings) -> Result<Encoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Encoder::Pcmu,
            Codec::Pcma => Encoder::Pcma,
            Codec::G722 => Encoder::G722(Box::default()),
            Codec::Opus => Encoder::Opus(OpusEncoder::new(pcm_rate, opus)?),
            Codec::L16 => Encoder::L16(pcm_rate),
            #[cfg(feature = "g729")]
            Codec::G729 => Encoder::G729(crate::g729::G729Encoder::new()?),
            #[cfg(feature = "amr")]
            Codec::Amr | Codec::AmrWb => {
                Encoder::Amr(crate::amr::AmrEncoder::new(codec == Codec::AmrWb)?)
            }
            c => return Err(CodecError::Unsupported(c)),
        })
    }

    /// The PCM rate it takes.
    pub fn pcm_rate(&self) -> u32 {
        match self {
            Encoder::Pcmu | Encoder::Pcma => 8000,
            Encoder::G722(_) => 16_000,
            Encoder::Opus(e) => e.rate(),
            Encoder::L16(rate) => *rate,
            #[cfg(feature = "g729")]
            Encoder::G729(_) => 8000,
            #[cfg(feature = "amr")]
            Encoder::Amr(e) => e.frame() as u32 * 50,
        }
    }

    /// Encodes one frame of PCM; returns the payload's length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self {
            Encoder::Pcmu => {
                let out = out.get_mut(..pcm.len()).ok_or(CodecError::OutputTooSmall)?;
                g711::encode_ulaw(pcm, out);
                Ok(pcm.len())
            }
            Encoder::Pcma => {
                let out = out.get_mut(..pcm.len()).ok_or(CodecError::OutputTooSmall)?;
                g711::encode_alaw(pcm, out);
                Ok(pcm.len())
            }
            Encoder::G722(e) => {
                if out.len() < pcm.len() / 2 {
                    return Err(CodecError::OutputTooSmall);
                }
                Ok(e.encode(pcm, out))
            }
            Encoder::Opus(e) => e.encode(pcm, out),
            Encoder::L16(_) => {
                let out = out
                    .get_mut(..pcm.len() * 2)
                    .ok_or(CodecError::OutputTooSmall)?;
                for (o, s) in out.chunks_exact_mut(2).zip(pcm) {
                    o.copy_from_slice(&s.to_be_bytes());
                }
                Ok(pcm.len() * 2)
            }
            #[cfg(feature = "g729")]
            Encoder::G729(e) => e.encode(pcm, out),
            #[cfg(feature = "amr")]
            Encoder::Amr(e) => e.encode(pcm, out),
        }
    }
}

/// A decoder for any codec rvoip transcodes, with its loss concealment.
#[derive(Debug)]
pub enum Decoder {
    /// G.711 µ-law.
    Pcmu(Box<Concealer>),
    /// G.711 A-law.
    Pcma(Box<Concealer>),
    /// G.722.
    G722(Box<(G722Decoder, Concealer)>),
    /// Opus.
    Opus(OpusDecoder),
    /// L16 at its rate.
    L16(Box<Concealer>),
    /// G.729A.
    #[cfg(feature = "g729")]
    G729(crate::g729::G729Decoder),
    /// AMR or AMR-WB.
    #[cfg(feature = "amr")]
    Amr(crate::amr::AmrDecoder),
}

impl Decoder {
    /// For AMR: octet-aligned payloads (`octet-align=1`); nothing for
    /// other codecs.
    pub fn set_octet_align(&mut self, on: bool) {
        #[cfg(feature = "amr")]
        if let Decoder::Amr(d) = self {
            d.set_octet_align(on);
        }
        let _ = on;
    }

    /// A decoder for `codec` giving PCM at `pcm_rate`.
    pub fn new(codec: Codec, pcm_rate: u32) -> Result<Decoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu(Box::new(Concealer::new(8000))),
            Codec::Pcma => Decoder::Pcma(Box::new(Concealer::new(8000))),
            Codec::G722 => Decoder::G722(Box::new((G722Decoder::new(), Concealer::new(16_000)))),
            Codec::Opus => Decoder::Opus(OpusDecoder::new(pcm_rate)?),
            Codec::L16 => Decoder::L16(Box::new(Concealer::new(pcm_rate))),
            #[cfg(feature = "g729")]
            Codec::G729 => Decoder::G729(crate::g729::G729Decoder::new()?),
            #[cfg(feature = "amr")]
            Codec::Amr | Codec::AmrWb => {
                Decoder::Amr(crate::amr::AmrDecoder::new(codec == Codec::AmrWb)?)
            }
            c => return Err(CodecError::Unsupported(c)),
        })
    }

    /// The PCM rate it gives.
    pub fn pcm_rate(&self) -> u32 {
        match self {
            Decoder::Pcmu(_) | Decoder::Pcma(_) => 8000,
            Decoder::G722(_) => 16_000,
            Decoder::Opus(d) => d.rate(),
            Decoder::L16(c) => c.rate(),
            #[cfg(feature = "g729")]
            Decoder::G729(_) => 8000,
            #[cfg(feature = "amr")]
            Decoder::Amr(d) => d.frame() as u32 * 50,
        }
    }

    /// Decodes one payload into `out`; returns samples.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::Empty);
        }
        match self {
            Decoder::Pcmu(plc) => {
                let out = out
                    .get_mut(..payload.len())
                    .ok_or(CodecError::OutputTooSmall)?;
                g711::decode_ulaw(payload, out);
                plc.good(out);
                Ok(payload.len())
            }
            Decoder::Pcma(plc) => {
                let out = out
                    .get_mut(..payload.len())
                    .ok_or(CodecError::OutputTooSmall)?;
                g711::decode_alaw(payload, out);
                plc.good(out);
                Ok(payload.len())
            }
            Decoder::G722(b) => {
                let n = payload.len() * 2;
                let out = out.get_mut(..n).ok_or(CodecError::OutputTooSmall)?;
                b.0.decode(payload, out);
                b.1.good(out);
                Ok(n)
            }
            Decoder::Opus(d) => d.decode(payload, out),
            Decoder::L16(plc) => {
                let n = payload.len() / 2;
                if !payload.len().is_multiple_of(2) {
                    return Err(CodecError::FrameLength(payload.len()));
                }
                let out = out.get_mut(..n).ok_or(CodecError::OutputTooSmall)?;
                for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
                    *o = i16::from_be_bytes([b[0], b[1]]);
                }
                plc.good(out);
                Ok(n)
            }
            #[cfg(feature = "g729")]
            Decoder::G729(d) => d.decode(payload, out),
            #[cfg(feature = "amr")]
            Decoder::Amr(d) => d.decode(payload, out),
        }
    }

    /// Fills `out` for a lost frame: Opus from the next packet's FEC when
    /// `next` is given, else each codec's concealment.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> usize {
        match self {
            Decoder::Pcmu(plc) | Decoder::Pcma(plc) | Decoder::L16(plc) => plc.conceal(out),
            Decoder::G722(b) => b.1.conceal(out),
            Decoder::Opus(d) => match d.conceal(next, out) {
                Ok(n) => return n,
                Err(_) => out.fill(0),
            },
            #[cfg(feature = "g729")]
            Decoder::G729(d) => return d.conceal(out),
            #[cfg(feature = "amr")]
            Decoder::Amr(d) => return d.conceal(out),
        }
        out.len()
    }

    /// Tells the concealment that comfort noise filled `out`, so a later
    /// loss repeats noise rather than the speech before it.
    pub fn heard(&mut self, out: &mut [i16]) {
        match self {
            Decoder::Pcmu(plc) | Decoder::Pcma(plc) | Decoder::L16(plc) => plc.good(out),
            Decoder::G722(b) => b.1.good(out),
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tone::{Tone, analyse};

    #[test]
    fn names_and_static_types_map_both_ways() {
        assert_eq!(Codec::from_name(b"pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name(b"OPUS"), Some(Codec::Opus));
        assert_eq!(
            Codec::from_name(b"Telephone-Event"),
            Some(Codec::TelephoneEvent)
        );
        assert_eq!(Codec::from_name(b"GSM"), None);
        assert_eq!(static_name(3), Some("GSM"));
        assert_eq!(
            (static_clock(9), static_clock(10), static_clock(96)),
            (Some(8000), Some(44_100), None)
        );
        for c in Codec::ALL {
            if let Some(pt) = c.static_pt() {
                assert_eq!(Codec::from_static_pt(pt), Some(c));
            }
        }
        let g722 = Format::new(Codec::G722, 9);
        assert_eq!(g722.rtp_units(320, 16_000), 160);
        assert_eq!(Format::new(Codec::Opus, 96).rtp_units(160, 8000), 960);
    }

    /// Every pair of codecs this build transcodes carries a tone from one
    /// to the other at its frequency with a usable SNR.
    #[test]
    fn every_codec_carries_a_tone_through_encode_and_decode() {
        let opus = OpusSettings::default();
        for codec in Codec::ALL.into_iter().filter(|c| c.transcodable()) {
            let rate = codec.pcm_rate(16_000, 16_000);
            let mut enc = Encoder::new(codec, rate, &opus).unwrap();
            let mut dec = Decoder::new(codec, rate).unwrap();
            let frame = rate as usize / 50;
            let mut tone = Tone::new(1000.0, 10_000.0, rate);
            let mut pcm = vec![0i16; frame];
            let mut payload = [0u8; 1500];
            let mut out = vec![0i16; frame];
            let mut all = Vec::new();
            for _ in 0..25 {
                tone.fill(&mut pcm);
                let n = enc.encode(&pcm, &mut payload).unwrap();
                assert_eq!(
                    dec.decode(&payload[..n], &mut out).unwrap(),
                    frame,
                    "{codec:?}"
                );
                all.extend_from_slice(&out);
            }
            let (f, snr) = analyse(&all[frame * 5..], rate);
            assert!((f - 1000.0).abs() < 3.0, "{codec:?}: {f}");
            assert!(snr > 15.0, "{codec:?}: {snr}");
        }
    }
}
