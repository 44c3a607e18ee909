//! Comfort noise (RFC 3389) decoded: a CN payload's noise level and
//! reflection coefficients become noise of that level and spectrum,
//! played until speech resumes, so that a transcoded call's silence
//! sounds like the talker's room rather than a dead line.
//!
//! RFC 3389 §3: octet 0 is the level in −dBov (0–127); each further octet
//! is a reflection coefficient of an all-pole model, k = (N − 127) / 128.
//! Noise is white (a fixed-seed generator), shaped by the lattice
//! synthesis filter of those coefficients and scaled so that its level is
//! the one sent, with the filter's gain (1 / Π(1 − k²)) taken out.

/// The model order rvoip keeps (RFC 3389 allows any; G.711 Appendix II
/// sends up to 10).
pub const MAX_ORDER: usize = 12;

/// Why a CN payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnError {
    /// No level octet.
    Empty,
    /// The level's top bit is set (RFC 3389 §3.1: it is 0–127).
    Level(u8),
}

/// One CN payload, read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CnParams {
    /// Noise level, dBov (0 or below).
    pub level_dbov: f32,
    /// Reflection coefficients in use.
    pub order: usize,
    /// The coefficients (first `order` used).
    pub k: [f32; MAX_ORDER],
}

impl CnParams {
    /// Reads a CN payload; coefficients past [`MAX_ORDER`] are ignored.
    pub fn parse(payload: &[u8]) -> Result<CnParams, CnError> {
        let (&level, rest) = payload.split_first().ok_or(CnError::Empty)?;
        if level > 127 {
            return Err(CnError::Level(level));
        }
        let mut k = [0f32; MAX_ORDER];
        let order = rest.len().min(MAX_ORDER);
        for (d, &n) in k.iter_mut().zip(rest) {
            // A coefficient of magnitude 1 would make the filter unstable.
            *d = ((f32::from(n) - 127.0) / 128.0).clamp(-0.995, 0.995);
        }
        Ok(CnParams {
            level_dbov: -f32::from(level),
            order,
            k,
        })
    }
}

/// A comfort noise generator for one stream.
#[derive(Debug, Clone)]
pub struct ComfortNoise {
    params: Option<CnParams>,
    /// Amplitude of the white excitation.
    excitation: f32,
    /// Lattice state (backward errors).
    state: [f32; MAX_ORDER + 1],
    seed: u32,
}

impl Default for ComfortNoise {
    fn default() -> Self {
        Self::new()
    }
}

impl ComfortNoise {
    /// A generator that is silent until it gets a CN payload.
    pub fn new() -> ComfortNoise {
        ComfortNoise {
            params: None,
            excitation: 0.0,
            state: [0.0; MAX_ORDER + 1],
            seed: 0x2545_f491,
        }
    }

    /// Takes a CN payload: the noise from now on has its level and shape.
    pub fn update(&mut self, payload: &[u8]) -> Result<(), CnError> {
        let p = CnParams::parse(payload)?;
        // RMS of the output wanted: 0 dBov is a full-scale sine's RMS.
        let rms = 32767.0 / std::f32::consts::SQRT_2 * 10f32.powf(p.level_dbov / 20.0);
        let residual: f32 = p.k[..p.order].iter().map(|k| 1.0 - k * k).product();
        // Uniform noise in [-a, a] has RMS a/√3.
        self.excitation = rms * residual.sqrt() * 3f32.sqrt();
        self.params = Some(p);
        Ok(())
    }

    /// The parameters in force, if a CN payload came.
    pub fn params(&self) -> Option<&CnParams> {
        self.params.as_ref()
    }

    /// Fills `out` with noise (silence before any CN payload).
    pub fn fill(&mut self, out: &mut [i16]) {
        let Some(p) = self.params else {
            out.fill(0);
            return;
        };
        let order = p.order;
        for s in out.iter_mut() {
            self.seed = self
                .seed
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let white =
                ((self.seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * self.excitation;
            // All-pole lattice synthesis.
            let mut f = white;
            for i in (0..order).rev() {
                f -= p.k[i] * self.state[i];
                self.state[i + 1] = self.state[i] + p.k[i] * f;
            }
            self.state[0] = f;
            *s = f.round().clamp(-32768.0, 32767.0) as i16;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tone::level_dbov;

    #[test]
    fn the_noise_has_the_level_the_payload_sends() {
        for (payload, level) in [
            (&[40u8][..], -40.0),
            (&[30, 127, 127][..], -30.0),
            (&[50, 200, 90, 140][..], -50.0),
        ] {
            let mut cn = ComfortNoise::new();
            cn.update(payload).unwrap();
            let mut out = vec![0i16; 16_000];
            cn.fill(&mut out);
            let got = level_dbov(&out[2000..]);
            assert!((got - level).abs() < 1.5, "{payload:?}: {got} dBov");
        }
    }

    #[test]
    fn a_shaped_model_colours_the_noise() {
        // k1 near -1: a strong low-pass (neighbouring samples alike).
        let mut cn = ComfortNoise::new();
        cn.update(&[30, 10]).unwrap();
        let mut out = vec![0i16; 8000];
        cn.fill(&mut out);
        let (mut r0, mut r1) = (0f64, 0f64);
        for w in out.windows(2) {
            r0 += f64::from(w[0]) * f64::from(w[0]);
            r1 += f64::from(w[0]) * f64::from(w[1]);
        }
        assert!(r1 / r0 > 0.5, "{}", r1 / r0);
    }

    #[test]
    fn bad_payloads_are_refused_and_silence_comes_before_any() {
        assert_eq!(CnParams::parse(&[]), Err(CnError::Empty));
        assert_eq!(CnParams::parse(&[200]), Err(CnError::Level(200)));
        let mut cn = ComfortNoise::new();
        let mut out = [1i16; 80];
        cn.fill(&mut out);
        assert!(out.iter().all(|&s| s == 0));
    }
}
