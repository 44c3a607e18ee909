//! Tones: a phase-continuous sine generator (test calls, DTMF, the load
//! generator's audio) and the analysis that judges audio after a codec or a
//! call: its dominant frequency and its signal-to-noise ratio. Judging the
//! tone a listener hears, never the octets, is how every transcoding test
//! here decides.

/// A sine generator: `fill` continues where the last call stopped.
#[derive(Debug, Clone, Copy)]
pub struct Tone {
    /// Phase advance per sample, radians.
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl Tone {
    /// A tone of `freq` Hz at `rate` samples per second, peak `amplitude`
    /// (of 32767).
    pub fn new(freq: f64, amplitude: f64, rate: u32) -> Tone {
        Tone {
            step: 2.0 * std::f64::consts::PI * freq / f64::from(rate.max(1)),
            phase: 0.0,
            amplitude,
        }
    }

    /// The next sample.
    #[inline]
    pub fn next_sample(&mut self) -> f64 {
        let v = self.phase.sin() * self.amplitude;
        self.phase += self.step;
        if self.phase > 2.0 * std::f64::consts::PI {
            self.phase -= 2.0 * std::f64::consts::PI;
        }
        v
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for o in out {
            *o = self.next_sample().clamp(-32768.0, 32767.0) as i16;
        }
    }

    /// Adds the next samples to `out`, saturating.
    pub fn add_to(&mut self, out: &mut [i16]) {
        for o in out {
            *o = (f64::from(*o) + self.next_sample()).clamp(-32768.0, 32767.0) as i16;
        }
    }
}

/// Power of `pcm` at `freq` Hz (Goertzel), as the squared magnitude of the
/// correlation with a complex sinusoid, normalised so that a sine of peak A
/// gives A²/4 · N².
pub fn goertzel(pcm: &[i16], freq: f64, rate: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate.max(1));
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The dominant frequency of `pcm` (Hz, to about 0.1 Hz) and the ratio of
/// that sine's power to the power of everything else (dB). Silence gives
/// (0, -inf).
pub fn analyse(pcm: &[i16], rate: u32) -> (f64, f64) {
    let n = pcm.len() as f64;
    if pcm.is_empty() {
        return (0.0, f64::NEG_INFINITY);
    }
    let nyquist = f64::from(rate) / 2.0;
    let mut best = (0.0, 0.0);
    let mut f = 20.0;
    while f < nyquist - 20.0 {
        let p = goertzel(pcm, f, rate);
        if p > best.1 {
            best = (f, p);
        }
        f += 10.0;
    }
    for step in [1.0, 0.1] {
        let centre = best.0;
        let mut f = centre - 10.0 * step;
        while f <= centre + 10.0 * step {
            let p = goertzel(pcm, f, rate);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
    }
    let total: f64 = pcm
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        / n;
    // A sine of peak A has power A²/2 and a Goertzel power of A²N²/4.
    let tone = 2.0 * best.1 / (n * n);
    let rest = (total - tone).max(total * 1e-12).max(1e-9);
    if total <= 0.0 {
        return (0.0, f64::NEG_INFINITY);
    }
    (best.0, 10.0 * (tone / rest).log10())
}

/// The share of `pcm`'s 100 ms blocks in which `freq` (within 1 %) is
/// the dominant tone at `min_snr` dB or better: how much of a call a
/// listener hears the tone clearly, whatever a moment of loss or a
/// scheduling stall did to the rest.
pub fn coverage(pcm: &[i16], rate: u32, freq: f64, min_snr: f64) -> f64 {
    let block = (rate / 10).max(1) as usize;
    let blocks = pcm.len() / block;
    if blocks == 0 {
        return 0.0;
    }
    let good = pcm
        .chunks_exact(block)
        .filter(|b| {
            let (f, snr) = analyse(b, rate);
            (f - freq).abs() <= freq / 100.0 && snr >= min_snr
        })
        .count();
    good as f64 / blocks as f64
}

/// Root-mean-square level of `pcm` in dB relative to a full-scale sine
/// (dBov as RFC 3389 uses it: 0 for a full-scale sine).
pub fn level_dbov(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return f64::NEG_INFINITY;
    }
    let power = pcm
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        / pcm.len() as f64;
    let full = 32767.0f64 * 32767.0 / 2.0;
    10.0 * (power / full).max(1e-20).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_tone_is_found_at_its_frequency_with_a_clean_snr() {
        for (freq, rate) in [(440.0, 8000), (1000.0, 16_000), (3150.0, 48_000)] {
            let mut t = Tone::new(freq, 10_000.0, rate);
            let mut pcm = vec![0i16; rate as usize / 2];
            t.fill(&mut pcm);
            let (f, snr) = analyse(&pcm, rate);
            assert!((f - freq).abs() < 1.0, "{f} for {freq}");
            assert!(snr > 40.0, "{snr} dB");
        }
    }

    #[test]
    fn noise_has_a_poor_snr() {
        let mut seed = 1u32;
        let pcm: Vec<i16> = (0..8000)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 18) as i16 - 8192
            })
            .collect();
        let (_, snr) = analyse(&pcm, 8000);
        assert!(snr < 0.0, "{snr}");
    }
}
