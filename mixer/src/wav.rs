//! WAV (RIFF) audio: prompts read from any common PCM or float WAV, and
//! recordings written as 16-bit PCM. Bytes in, bytes out: the callers read
//! and write the files.

use std::fmt;

/// Why a WAV file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WavError {
    /// Not a RIFF/WAVE file.
    NotWave,
    /// A chunk runs past the end of the file.
    Truncated,
    /// No `fmt ` chunk before the data.
    NoFormat,
    /// No `data` chunk.
    NoData,
    /// An encoding other than PCM (8/16/24/32-bit) or 32/64-bit float.
    Encoding {
        /// The format tag.
        tag: u16,
        /// Bits per sample.
        bits: u16,
    },
    /// A rate outside 4 kHz … 192 kHz, or no channels.
    Shape {
        /// Sample rate.
        rate: u32,
        /// Channels.
        channels: u16,
    },
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::NotWave => f.write_str("not a RIFF/WAVE file"),
            WavError::Truncated => f.write_str("WAV chunk runs past the end of the file"),
            WavError::NoFormat => f.write_str("WAV file without a fmt chunk"),
            WavError::NoData => f.write_str("WAV file without a data chunk"),
            WavError::Encoding { tag, bits } => {
                write!(f, "WAV encoding {tag} with {bits} bits is not PCM or float")
            }
            WavError::Shape { rate, channels } => {
                write!(
                    f,
                    "WAV with {channels} channels at {rate} Hz is not playable"
                )
            }
        }
    }
}

impl std::error::Error for WavError {}

/// Audio read from a WAV file, mixed down to mono.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// Sample rate.
    pub rate: u32,
    /// Channels in the file.
    pub channels: u16,
    /// Mono samples (channels averaged).
    pub samples: Vec<i16>,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

const PCM: u16 = 1;
const FLOAT: u16 = 3;
const EXTENSIBLE: u16 = 0xfffe;

/// Reads a WAV file's audio: PCM 8 (unsigned), 16, 24 or 32 bits, or IEEE
/// float 32/64 bits, any channel count (mixed down), 4–192 kHz. A data
/// chunk longer than the file (a recording cut short) is read to the end.
pub fn read(bytes: &[u8]) -> Result<Audio, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWave);
    }
    let mut at = 12usize;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4).ok_or(WavError::Truncated)? as usize;
        let body_start = at + 8;
        if id == b"fmt " {
            let body = bytes
                .get(body_start..body_start.saturating_add(size))
                .ok_or(WavError::Truncated)?;
            let mut tag = u16_at(body, 0).ok_or(WavError::Truncated)?;
            let channels = u16_at(body, 2).ok_or(WavError::Truncated)?;
            let rate = u32_at(body, 4).ok_or(WavError::Truncated)?;
            let bits = u16_at(body, 14).ok_or(WavError::Truncated)?;
            if tag == EXTENSIBLE {
                // The sub-format GUID starts with the format tag.
                tag = u16_at(body, 24).ok_or(WavError::Truncated)?;
            }
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or(WavError::NoFormat)?;
            let end = body_start.saturating_add(size).min(bytes.len());
            return decode(&bytes[body_start..end], tag, channels, rate, bits);
        }
        // Chunks are padded to even lengths.
        at = body_start.saturating_add(size).saturating_add(size & 1);
    }
    Err(if format.is_none() {
        WavError::NoFormat
    } else {
        WavError::NoData
    })
}

fn decode(data: &[u8], tag: u16, channels: u16, rate: u32, bits: u16) -> Result<Audio, WavError> {
    if channels == 0 || !(4000..=192_000).contains(&rate) {
        return Err(WavError::Shape { rate, channels });
    }
    let width = match (tag, bits) {
        (PCM, 8) => 1,
        (PCM, 16) => 2,
        (PCM, 24) => 3,
        (PCM, 32) | (FLOAT, 32) => 4,
        (FLOAT, 64) => 8,
        _ => return Err(WavError::Encoding { tag, bits }),
    };
    let sample = |b: &[u8]| -> f64 {
        match (tag, width) {
            (PCM, 1) => (f64::from(b[0]) - 128.0) / 128.0,
            (PCM, 2) => f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            (PCM, 3) => f64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) / 8_388_608.0,
            (PCM, 4) => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0,
            (_, 4) => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    };
    let frame = width * usize::from(channels);
    let samples = data
        .chunks_exact(frame)
        .map(|f| {
            let sum: f64 = f.chunks_exact(width).map(sample).sum();
            let v = sum / f64::from(channels);
            let v = if v.is_finite() { v } else { 0.0 };
            (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    Ok(Audio {
        rate,
        channels,
        samples,
    })
}

/// The 44-octet header of a 16-bit PCM WAV with `channels` channels at
/// `rate` Hz holding `data_len` octets of samples.
pub fn header(rate: u32, channels: u16, data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let block = channels * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&PCM.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Resamples `input` from `from` Hz to `to` Hz with a windowed-sinc
/// filter of any ratio (44.1 kHz prompts to 8 kHz calls, …). For prompts,
/// once per file: quality over speed, it allocates.
pub fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    // Cut below the lower Nyquist frequency.
    let cutoff = ratio.min(1.0) * 0.92;
    let half = 24.0 / cutoff.min(1.0);
    let half_taps = half.ceil() as i64;
    let out_len = ((input.len() as f64) * ratio).floor() as usize;
    let bessel_i0 = |x: f64| {
        let mut sum = 1.0;
        let mut term = 1.0;
        for k in 1..30 {
            term *= (x / (2.0 * f64::from(k))).powi(2);
            sum += term;
        }
        sum
    };
    let beta = 8.0;
    let norm = bessel_i0(beta);
    (0..out_len)
        .map(|j| {
            let centre = j as f64 / ratio;
            let first = (centre.floor() as i64 - half_taps).max(0);
            let last = (centre.floor() as i64 + half_taps).min(input.len() as i64 - 1);
            let mut acc = 0.0;
            for i in first..=last {
                let t = i as f64 - centre;
                let x = t * cutoff;
                let sinc = if x.abs() < 1e-12 {
                    1.0
                } else {
                    (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                };
                let w = t / half;
                let window = if w.abs() >= 1.0 {
                    0.0
                } else {
                    bessel_i0(beta * (1.0 - w * w).sqrt()) / norm
                };
                acc += f64::from(input[i as usize]) * sinc * window * cutoff;
            }
            acc.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvoip_codecs::tone::{Tone, analyse};

    fn file(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data.len() as u32 + 10).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        // A chunk before fmt that readers must skip (odd length: padded).
        v.extend_from_slice(b"LIST");
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        let block = u32::from(channels) * u32::from(bits / 8);
        v.extend_from_slice(&(rate * block).to_le_bytes());
        v.extend_from_slice(&(block as u16).to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn pcm_and_float_files_of_any_common_shape_read_as_the_same_mono_tone() {
        let rate = 44100;
        let mut tone = Tone::new(440.0, 10000.0, rate);
        let mut pcm = vec![0i16; 4410];
        tone.fill(&mut pcm);
        let s16: Vec<u8> = pcm.iter().flat_map(|x| x.to_le_bytes()).collect();
        let stereo: Vec<u8> = pcm
            .iter()
            .flat_map(|x| [x.to_le_bytes(), x.to_le_bytes()])
            .flatten()
            .collect();
        let s24: Vec<u8> = pcm
            .iter()
            .flat_map(|&x| {
                let v = i32::from(x) << 8;
                [v as u8, (v >> 8) as u8, (v >> 16) as u8]
            })
            .collect();
        let f32s: Vec<u8> = pcm
            .iter()
            .flat_map(|&x| (f32::from(x) / 32768.0).to_le_bytes())
            .collect();
        let u8s: Vec<u8> = pcm.iter().map(|&x| ((x >> 8) + 128) as u8).collect();
        for (name, f, exact) in [
            ("16-bit", file(PCM, 1, rate, 16, &s16), true),
            ("stereo", file(PCM, 2, rate, 16, &stereo), true),
            ("24-bit", file(PCM, 1, rate, 24, &s24), true),
            ("float", file(FLOAT, 1, rate, 32, &f32s), true),
            ("8-bit", file(PCM, 1, rate, 8, &u8s), false),
        ] {
            let a = read(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(a.rate, rate);
            assert_eq!(a.samples.len(), pcm.len(), "{name}");
            if exact {
                assert_eq!(a.samples, pcm, "{name}");
            }
            let (freq, snr) = analyse(&a.samples, rate);
            assert!(
                (freq - 440.0).abs() < 5.0 && snr > 20.0,
                "{name}: {freq} Hz {snr} dB"
            );
        }
    }

    #[test]
    fn broken_files_give_errors_not_panics() {
        assert_eq!(read(b"RIFX....WAVE"), Err(WavError::NotWave));
        assert_eq!(read(b""), Err(WavError::NotWave));
        let good = file(PCM, 1, 8000, 16, &[1, 2, 3, 4]);
        for cut in 12..good.len() {
            let _ = read(&good[..cut]);
        }
        assert_eq!(
            read(&file(2, 1, 8000, 4, &[0; 8])),
            Err(WavError::Encoding { tag: 2, bits: 4 })
        );
        assert!(matches!(
            read(&file(PCM, 0, 8000, 16, &[0; 8])),
            Err(WavError::Shape { .. })
        ));
        let mut no_data = file(PCM, 1, 8000, 16, &[]);
        no_data.truncate(no_data.len() - 8);
        assert_eq!(read(&no_data), Err(WavError::NoData));
    }

    #[test]
    fn a_written_header_reads_back_and_resampling_keeps_the_tone() {
        let mut tone = Tone::new(1000.0, 8000.0, 44100);
        let mut pcm = vec![0i16; 44100];
        tone.fill(&mut pcm);
        let down = resample(&pcm, 44100, 8000);
        assert_eq!(down.len(), 8000);
        let (freq, snr) = analyse(&down[800..], 8000);
        assert!(
            (freq - 1000.0).abs() < 3.0 && snr > 30.0,
            "{freq} Hz {snr} dB"
        );
        let mut f = header(8000, 1, (down.len() * 2) as u32).to_vec();
        f.extend(down.iter().flat_map(|x| x.to_le_bytes()));
        let a = read(&f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.samples, down);
    }
}
