//! Resampling between the rates calls use (8, 12, 16, 24, 48 kHz) by a
//! polyphase FIR: a Kaiser-windowed sinc low-pass designed once per rate
//! pair, applied to each output sample as one dot product over contiguous
//! memory (eight independent lanes, which the compiler turns into SIMD).
//! The filter cuts at 92 % of the lower Nyquist frequency and stops at it
//! with more than 70 dB of attenuation. Nothing allocates after `new`
//! for frames up to [`MAX_INPUT`] samples; longer inputs are taken in parts.

use crate::CodecError;

/// The longest input handled in one pass (60 ms at 48 kHz).
pub const MAX_INPUT: usize = 2880;

/// Zero crossings of the sinc on each side, in periods of the lower rate.
const HALF_ZEROS: usize = 8;

/// A resampler from one rate to another, with its history.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Upsampling factor L.
    up: usize,
    /// Downsampling factor M.
    down: usize,
    /// Taps per phase.
    taps: usize,
    /// Coefficients by phase, each phase's taps oldest first.
    coeffs: Vec<f32>,
    /// The last `taps - 1` inputs, then the current input.
    buf: Vec<f32>,
    /// Position of the next output in the upsampled stream, from `buf[0]`.
    t: usize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Modified Bessel function of the first kind, order 0 (for Kaiser).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..40 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz; both among 8000, 12000,
    /// 16000, 24000, 32000, 44100 and 48000 ... or any pair whose ratio
    /// reduces to factors of at most 12.
    pub fn new(from: u32, to: u32) -> Result<Resampler, CodecError> {
        if from == 0 || to == 0 {
            return Err(CodecError::Rate(from.min(to)));
        }
        let g = gcd(from, to);
        let (up, down) = ((to / g) as usize, (from / g) as usize);
        if up > 12 || down > 12 {
            return Err(CodecError::Rate(if up > 12 { to } else { from }));
        }
        let factor = up.max(down);
        // Prototype at the upsampled rate: cutoff as a fraction of it.
        let cutoff = 0.92 * 0.5 / factor as f64;
        let taps = 2 * HALF_ZEROS * factor / up + 1;
        let len = taps * up;
        let centre = (len - 1) as f64 / 2.0;
        let beta = 7.5;
        let norm = bessel_i0(beta);
        let mut proto = vec![0f64; len];
        for (i, c) in proto.iter_mut().enumerate() {
            let x = i as f64 - centre;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
            };
            let r = x / (centre + 1.0);
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / norm;
            *c = sinc * w;
        }
        // Unity gain at DC for the output: the prototype sums to 1/L per phase.
        let sum: f64 = proto.iter().sum();
        let gain = up as f64 / sum;
        // Phase p holds prototype taps p, p+L, p+2L, ... applied to the
        // newest input first; stored oldest first for a forward dot product.
        let mut coeffs = vec![0f32; taps * up];
        for p in 0..up {
            for j in 0..taps {
                let k = p + j * up;
                coeffs[p * taps + (taps - 1 - j)] = (proto[k] * gain) as f32;
            }
        }
        let mut buf = Vec::with_capacity(taps - 1 + MAX_INPUT);
        buf.resize(taps - 1, 0.0);
        Ok(Resampler {
            from,
            to,
            up,
            down,
            taps,
            coeffs,
            buf,
            t: (taps - 1) * up,
        })
    }

    /// The input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// The output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Outputs that `input` samples give (exact when frames are whole
    /// multiples of the rates' ratio, as 10 ms frames always are).
    pub fn output_len(&self, input: usize) -> usize {
        input * self.up / self.down
    }

    /// Resamples `input`, writing to `out`; returns the samples written
    /// (stops early if `out` is full, dropping the rest of this input's
    /// output).
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let mut written = 0;
        for part in input.chunks(MAX_INPUT) {
            written += self.process_part(part, &mut out[written..]);
        }
        written
    }

    fn process_part(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        self.buf.extend(input.iter().map(|&x| f32::from(x)));
        let mut n_out = 0;
        let taps = self.taps;
        loop {
            let n = self.t / self.up;
            if n >= self.buf.len() || n_out >= out.len() {
                break;
            }
            let p = self.t % self.up;
            let window = &self.buf[n + 1 - taps..=n];
            let coeffs = &self.coeffs[p * taps..(p + 1) * taps];
            out[n_out] = dot(window, coeffs).round().clamp(-32768.0, 32767.0) as i16;
            n_out += 1;
            self.t += self.down;
        }
        // Keep the last taps-1 inputs as history.
        let consumed = self.buf.len() - (taps - 1);
        self.buf.drain(..consumed);
        self.t = self.t.saturating_sub(consumed * self.up);
        n_out
    }
}

/// Dot product in eight independent lanes (vectorised by the compiler).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tone::{Tone, analyse, goertzel};

    #[test]
    fn a_tone_keeps_its_frequency_and_level_across_every_pair() {
        for (from, to) in [
            (8000, 16_000),
            (16_000, 8000),
            (8000, 48_000),
            (48_000, 8000),
            (16_000, 48_000),
            (48_000, 16_000),
        ] {
            let mut r = Resampler::new(from, to).unwrap();
            let mut tone = Tone::new(1000.0, 10_000.0, from);
            let frame_in = from as usize / 50;
            let frame_out = to as usize / 50;
            let mut pcm = vec![0i16; frame_in];
            let mut out = vec![0i16; frame_out];
            let mut all = Vec::new();
            for _ in 0..25 {
                tone.fill(&mut pcm);
                assert_eq!(r.process(&pcm, &mut out), frame_out, "{from}->{to}");
                all.extend_from_slice(&out);
            }
            let (f, snr) = analyse(&all[frame_out * 2..], to);
            assert!((f - 1000.0).abs() < 1.0, "{from}->{to}: {f}");
            assert!(snr > 50.0, "{from}->{to}: {snr} dB");
            let level = crate::tone::level_dbov(&all[frame_out * 2..]);
            let expected = 20.0 * (10_000.0f64 / 32767.0).log10();
            assert!((level - expected).abs() < 0.2, "{from}->{to}: {level}");
        }
    }

    #[test]
    fn what_the_lower_rate_cannot_carry_is_removed() {
        // 6 kHz at 48 kHz down to 8 kHz would alias to 2 kHz.
        let mut r = Resampler::new(48_000, 8000).unwrap();
        let mut tone = Tone::new(6000.0, 20_000.0, 48_000);
        let mut pcm = vec![0i16; 960];
        let mut out = vec![0i16; 160];
        let mut all = Vec::new();
        for _ in 0..25 {
            tone.fill(&mut pcm);
            r.process(&pcm, &mut out);
            all.extend_from_slice(&out);
        }
        let alias = goertzel(&all[320..], 2000.0, 8000);
        let n = (all.len() - 320) as f64;
        let amplitude = 2.0 * alias.sqrt() / n;
        assert!(
            amplitude < 20_000.0 * 10f64.powf(-70.0 / 20.0),
            "{amplitude}"
        );
    }

    #[test]
    fn rates_with_no_small_ratio_are_refused() {
        assert!(Resampler::new(8000, 44_100).is_err());
        assert!(Resampler::new(0, 8000).is_err());
    }
}
