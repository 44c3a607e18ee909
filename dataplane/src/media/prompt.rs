//! Prompts: audio the media server plays into calls, decoded and encoded
//! once per codec and kept, so that playing a prompt to a thousand calls
//! costs a thousand packet copies, not a thousand encoders.
//!
//! A [`Prompt`] is a file's audio as 20 ms payloads in one codec; the
//! [`PromptCache`] (owned by the media sessions, off the packet path)
//! reads each WAV file once, resamples it to each codec's rate once, and
//! encodes it once per codec. DTMF digits played in-band towards a side
//! without telephone-event are prompts too: the digit's tone pair,
//! encoded once per codec, duration and level.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rvoip_codecs::dtmf::DtmfTone;
use rvoip_codecs::{Codec, CodecError, Encoder, Format};
use rvoip_mixer::wav;

use super::transcode::LegCodec;

/// Frame length of prompts, ms.
pub const PROMPT_FRAME_MS: u32 = 20;

/// A prompt encoded in one codec: 20 ms payloads, in order.
#[derive(Debug)]
pub struct Prompt {
    /// The codec and clock the payloads are in.
    pub codec: Codec,
    /// RTP clock.
    pub clock: u32,
    /// RTP timestamp units per payload.
    pub units: u32,
    /// All payloads back to back.
    data: Vec<u8>,
    /// End offset of each payload in `data`.
    ends: Vec<u32>,
}

impl Prompt {
    /// Payloads.
    pub fn frames(&self) -> usize {
        self.ends.len()
    }

    /// Payload `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(start, |e| *e as usize);
        &self.data[start..end]
    }

    /// How long it plays, ms.
    pub fn duration_ms(&self) -> u64 {
        self.frames() as u64 * u64::from(PROMPT_FRAME_MS)
    }

    /// Encodes `pcm` (at `rate` Hz) for `leg`'s codec.
    pub fn encode(pcm: &[i16], rate: u32, leg: &LegCodec) -> Result<Prompt, CodecError> {
        let codec = leg.format.codec;
        let pcm_rate = codec.pcm_rate(leg.format.clock, 48_000);
        let mut encoder = Encoder::new(codec, pcm_rate, &leg.opus)?;
        encoder.set_octet_align(leg.octet_align);
        let pcm = wav::resample(pcm, rate, pcm_rate);
        let frame = (pcm_rate * PROMPT_FRAME_MS / 1000) as usize;
        let mut data = Vec::with_capacity(pcm.len());
        let mut ends = Vec::with_capacity(pcm.len() / frame.max(1) + 1);
        let mut buf = vec![0u8; 4000];
        let mut block = vec![0i16; frame];
        for chunk in pcm.chunks(frame) {
            block[..chunk.len()].copy_from_slice(chunk);
            block[chunk.len()..].fill(0);
            let n = encoder.encode(&block, &mut buf)?;
            data.extend_from_slice(&buf[..n]);
            ends.push(data.len() as u32);
        }
        Ok(Prompt {
            codec,
            clock: leg.format.clock,
            units: Format::rtp_units(&leg.format, frame, pcm_rate),
            data,
            ends,
        })
    }
}

/// Why a prompt could not be played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    /// The file could not be read.
    Io(String),
    /// Not a WAV file rvoip reads.
    Wav(String),
    /// The codec could not encode it.
    Codec(String),
}

impl std::fmt::Display for PromptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromptError::Io(e) => write!(f, "prompt file: {e}"),
            PromptError::Wav(e) => write!(f, "prompt file: {e}"),
            PromptError::Codec(e) => write!(f, "prompt encoding: {e}"),
        }
    }
}

/// The key of an encoded prompt: its source and how it is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    File(PathBuf),
    /// Event, duration ms, volume.
    Digit(u8, u32, u8),
}

/// Prompts read and encoded so far. Owned by the media sessions.
#[derive(Debug, Default)]
pub struct PromptCache {
    /// Relative prompt paths are taken from here.
    base: PathBuf,
    /// Decoded files: mono PCM and its rate.
    files: HashMap<PathBuf, Arc<(Vec<i16>, u32)>>,
    encoded: HashMap<(Source, Codec, u32, bool, i32), Arc<Prompt>>,
}

/// Largest prompt file read (about 6 minutes of 48 kHz stereo).
const MAX_FILE: u64 = 64 << 20;

/// Most encoded prompts kept before the cache starts over.
const MAX_ENCODED: usize = 1024;

impl PromptCache {
    /// A cache that reads relative paths from `base`.
    pub fn new(base: PathBuf) -> PromptCache {
        PromptCache {
            base,
            ..PromptCache::default()
        }
    }

    /// Where relative paths are read from.
    pub fn base(&self) -> &Path {
        &self.base
    }

    fn key(source: Source, leg: &LegCodec) -> (Source, Codec, u32, bool, i32) {
        (
            source,
            leg.format.codec,
            leg.format.clock,
            leg.octet_align,
            leg.opus.bitrate,
        )
    }

    fn keep(&mut self, key: (Source, Codec, u32, bool, i32), p: Prompt) -> Arc<Prompt> {
        if self.encoded.len() >= MAX_ENCODED {
            self.encoded.clear();
        }
        let p = Arc::new(p);
        self.encoded.insert(key, Arc::clone(&p));
        p
    }

    /// `file` encoded for `leg`, read and encoded on first use.
    pub fn file(&mut self, file: &Path, leg: &LegCodec) -> Result<Arc<Prompt>, PromptError> {
        let path = if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.base.join(file)
        };
        let key = Self::key(Source::File(path.clone()), leg);
        if let Some(p) = self.encoded.get(&key) {
            return Ok(Arc::clone(p));
        }
        let audio = match self.files.get(&path) {
            Some(a) => Arc::clone(a),
            None => {
                // A regular file of a sane size: an ng client naming
                // /dev/zero or a huge file gets an error, not an endless read.
                let meta = std::fs::metadata(&path)
                    .map_err(|e| PromptError::Io(format!("{}: {e}", path.display())))?;
                if !meta.is_file() || meta.len() > MAX_FILE {
                    return Err(PromptError::Io(format!(
                        "{}: not a regular file of at most {} MB",
                        path.display(),
                        MAX_FILE >> 20
                    )));
                }
                let bytes = std::fs::read(&path)
                    .map_err(|e| PromptError::Io(format!("{}: {e}", path.display())))?;
                let a = wav::read(&bytes)
                    .map_err(|e| PromptError::Wav(format!("{}: {e}", path.display())))?;
                let a = Arc::new((a.samples, a.rate));
                if self.files.len() >= MAX_ENCODED {
                    self.files.clear();
                }
                self.files.insert(path.clone(), Arc::clone(&a));
                a
            }
        };
        let p = Prompt::encode(&audio.0, audio.1, leg)
            .map_err(|e| PromptError::Codec(e.to_string()))?;
        Ok(self.keep(key, p))
    }

    /// DTMF `event` as its tone pair for `duration_ms` at `volume` (−dBm0),
    /// encoded for `leg`.
    pub fn digit(
        &mut self,
        event: u8,
        duration_ms: u32,
        volume: u8,
        leg: &LegCodec,
    ) -> Result<Arc<Prompt>, PromptError> {
        let key = Self::key(Source::Digit(event, duration_ms, volume), leg);
        if let Some(p) = self.encoded.get(&key) {
            return Ok(Arc::clone(p));
        }
        let rate = 8000;
        let mut tone = DtmfTone::new(event, volume, rate)
            .ok_or_else(|| PromptError::Codec(format!("no DTMF event {event}")))?;
        let n = (rate * duration_ms.clamp(40, 5000) / 1000) as usize;
        let mut pcm = vec![0i16; n];
        tone.fill(&mut pcm);
        let p = Prompt::encode(&pcm, rate, leg).map_err(|e| PromptError::Codec(e.to_string()))?;
        Ok(self.keep(key, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::Ssrc;
    use rvoip_codecs::tone::{Tone, analyse};

    #[test]
    fn a_prompt_is_the_same_tone_in_every_codec_at_its_rate() {
        let mut pcm = vec![0i16; 16_000];
        Tone::new(440.0, 12_000.0, 16_000).fill(&mut pcm);
        for (codec, pt) in [
            (Codec::Pcma, 8),
            (Codec::Pcmu, 0),
            (Codec::G722, 9),
            (Codec::Opus, 111),
        ] {
            let leg = LegCodec::new(Format::new(codec, pt), Ssrc(1));
            let p = Prompt::encode(&pcm, 16_000, &leg).unwrap();
            assert_eq!(p.frames(), 50, "{codec:?}: one second in 20 ms frames");
            let rate = codec.pcm_rate(leg.format.clock, 48_000);
            let mut dec = rvoip_codecs::Decoder::new(codec, rate).unwrap();
            let mut heard = Vec::new();
            let mut out = vec![0i16; 5760];
            for i in 0..p.frames() {
                let n = dec.decode(p.frame(i), &mut out).unwrap();
                heard.extend_from_slice(&out[..n]);
            }
            let (freq, snr) = analyse(&heard[heard.len() / 4..], rate);
            assert!(
                (freq - 440.0).abs() < 3.0 && snr > 20.0,
                "{codec:?}: {freq} Hz, {snr} dB"
            );
        }
    }
}
