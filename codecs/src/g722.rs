//! G.722 (ITU-T G.722, 2012) at 64 kbit/s: 16 kHz linear PCM split by a
//! 24-tap quadrature mirror filter into a lower and a higher sub-band, each
//! coded by backward-adaptive ADPCM (6 bits low, 2 bits high), one octet per
//! pair of input samples. The block names in the comments (QUANTL, INVQAL,
//! LOGSCL, ...) are the standard's; the arithmetic is its 16-bit fixed
//! point, so the output is bit-exact with the standard's reference (checked
//! against spandsp on the same input, `tests::*`).
//!
//! Samples in and out are 16-bit; the RTP clock is 8000 Hz although the
//! audio is sampled at 16 kHz (RFC 3551 §4.5.2). Nothing here allocates.

/// QMF coefficients (G.722 Table 11), half of the symmetric 24 taps.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Decision levels of the 6-bit lower sub-band quantizer (Table 14), ×8.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];
/// Codes of the quantizer's intervals for a negative difference.
const ILN: [i32; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
/// Codes of the quantizer's intervals for a positive difference.
const ILP: [i32; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// Logarithmic scale factor multipliers, lower sub-band (Table 15).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// 4-bit code to WL index.
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse logarithm table (Table 16).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// 4-bit inverse quantizer outputs (Table 17).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// 6-bit inverse quantizer outputs (Table 18).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// 2-bit higher sub-band inverse quantizer outputs (Table 20).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// Higher sub-band codes for a negative / positive difference.
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];
/// Logarithmic scale factor multipliers, higher sub-band (Table 21).
const WH: [i32; 3] = [0, -214, 798];
/// 2-bit code to WH index.
const RH2: [usize; 4] = [2, 1, 2, 1];

/// A value limited to 16 bits, as the standard's arithmetic is.
#[inline]
fn sat(x: i32) -> i32 {
    x.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// The adaptive predictor of one sub-band (the standard's block 4).
#[derive(Debug, Clone, Default)]
struct Band {
    /// Predicted signal.
    s: i32,
    /// Pole-section prediction.
    sp: i32,
    /// Zero-section prediction.
    sz: i32,
    /// Reconstructed signals, now and the two before.
    r: [i32; 3],
    /// Pole coefficients.
    a: [i32; 3],
    /// Partially reconstructed signals.
    p: [i32; 3],
    /// Quantized differences, now and the six before.
    d: [i32; 7],
    /// Zero coefficients.
    b: [i32; 7],
    /// Log scale factor.
    nb: i32,
    /// Scale factor.
    det: i32,
}

impl Band {
    fn new(det: i32) -> Band {
        Band {
            det,
            ..Band::default()
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: the scale factor after a code whose
    /// multiplier is `w`; `limit` and `shift` differ by band.
    #[inline]
    fn adapt_scale(&mut self, w: i32, limit: i32, shift: i32) {
        self.nb = (((self.nb * 127) >> 7) + w).clamp(0, limit);
        let mantissa = ILB[((self.nb >> 6) & 31) as usize];
        let exponent = shift - (self.nb >> 11);
        let wd = if exponent < 0 {
            mantissa << -exponent
        } else {
            mantissa >> exponent
        };
        self.det = wd << 2;
    }

    /// Block 4 for quantized difference `d`: reconstruct, adapt the pole
    /// (UPPOL2, UPPOL1) and zero (UPZERO) coefficients, shift the delay
    /// lines and predict the next sample (FILTEP, FILTEZ, PREDIC).
    fn update(&mut self, d: i32) {
        // d[0] is now; d[1..] the six before.
        self.d[0] = d;
        // RECONS and PARREC.
        let r0 = sat(self.s + d);
        let p0 = sat(self.sz + d);
        // UPPOL2: the second pole coefficient.
        let sg0 = p0 >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
        let mut a2 = (wd2 >> 7) + if sg0 == sg2 { 128 } else { -128 };
        a2 += (self.a[2] * 32512) >> 15;
        let a2 = a2.clamp(-12288, 12288);
        // UPPOL1: the first, bounded by the second.
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let a1 = sat(wd1 + ((self.a[1] * 32640) >> 15));
        let bound = sat(15360 - a2);
        let a1 = a1.clamp(-bound, bound);
        // UPZERO: the six zero coefficients, by sign agreement.
        let step = if d == 0 { 0 } else { 128 };
        let sgd = d >> 15;
        let mut b = [0i32; 7];
        for (i, bi) in b.iter_mut().enumerate().skip(1) {
            let wd = if self.d[i] >> 15 == sgd { step } else { -step };
            *bi = sat(wd + ((self.b[i] * 32640) >> 15));
        }
        // DELAYA: shift the delay lines.
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
        }
        self.b = b;
        self.r = [r0, r0, self.r[1]];
        self.p = [p0, p0, self.p[1]];
        self.a = [0, a1, a2];
        // FILTEP: the pole section on the two last reconstructed values.
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);
        // FILTEZ: the zero section on the six last differences.
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);
        // PREDIC.
        self.s = sat(self.sp + self.sz);
    }
}

/// The QMF's delay line: 24 samples.
#[derive(Debug, Clone, Default)]
struct Qmf {
    x: [i32; 24],
}

impl Qmf {
    /// Shifts in two samples; returns the two filter sums (even, odd taps).
    #[inline]
    fn push(&mut self, first: i32, second: i32) -> (i32, i32) {
        self.x.copy_within(2.., 0);
        self.x[22] = first;
        self.x[23] = second;
        let mut odd = 0;
        let mut even = 0;
        for i in 0..12 {
            odd += self.x[2 * i] * QMF[i];
            even += self.x[2 * i + 1] * QMF[11 - i];
        }
        (even, odd)
    }
}

/// A G.722 encoder at 64 kbit/s.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    /// An encoder in the standard's reset state.
    pub fn new() -> Self {
        G722Encoder {
            qmf: Qmf::default(),
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Encodes one pair of 16 kHz samples into one octet.
    #[inline]
    pub fn encode_pair(&mut self, first: i16, second: i16) -> u8 {
        let (even, odd) = self.qmf.push(i32::from(first), i32::from(second));
        let xlow = (even + odd) >> 14;
        let xhigh = (even - odd) >> 14;

        // Lower sub-band. SUBTRA, QUANTL.
        let el = sat(xlow - self.low.s);
        let magnitude = if el >= 0 { el } else { -(el + 1) };
        let mut i = 1;
        while i < 30 && magnitude >= (Q6[i] * self.low.det) >> 12 {
            i += 1;
        }
        let ilow = if el < 0 { ILN[i] } else { ILP[i] };
        // INVQAL: the 4-bit difference the decoder's predictor also sees.
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.update(dlow);

        // Higher sub-band. SUBTRA, QUANTH.
        let eh = sat(xhigh - self.high.s);
        let magnitude = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if magnitude >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        // INVQAH.
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        self.high.adapt_scale(WH[RH2[ihigh as usize]], 22528, 10);
        self.high.update(dhigh);

        ((ihigh << 6) | ilow) as u8
    }

    /// Encodes 16 kHz `pcm` (an even number of samples) into `out`, one
    /// octet per pair; returns the octets written (limited by `out`).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut n = 0;
        for (o, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            *o = self.encode_pair(pair[0], pair[1]);
            n += 1;
        }
        n
    }
}

/// A G.722 decoder at 64 kbit/s.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A decoder in the standard's reset state.
    pub fn new() -> Self {
        G722Decoder {
            qmf: Qmf::default(),
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes one octet into two 16 kHz samples.
    #[inline]
    pub fn decode_octet(&mut self, code: u8) -> (i16, i16) {
        let ilow = usize::from(code & 0x3f);
        let ihigh = usize::from(code >> 6);

        // Lower sub-band. INVQBL, RECONS, LIMIT: the 6-bit output.
        let wd = (self.low.det * QM6[ilow]) >> 15;
        let rlow = (self.low.s + wd).clamp(-16384, 16383);
        // INVQAL: the 4-bit difference drives the predictor.
        let ril = ilow >> 2;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.update(dlow);

        // Higher sub-band. INVQAH, RECONS, LIMIT.
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.adapt_scale(WH[RH2[ihigh]], 22528, 10);
        self.high.update(dhigh);

        // Receive QMF.
        let (first, second) = self.qmf.push(rlow + rhigh, rlow - rhigh);
        (sat(first >> 11) as i16, sat(second >> 11) as i16)
    }

    /// Decodes `codes` into `out` (two samples per octet); returns the
    /// samples written (limited by `out`).
    pub fn decode(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let mut n = 0;
        for (pair, &c) in out.chunks_exact_mut(2).zip(codes) {
            let (a, b) = self.decode_octet(c);
            pair[0] = a;
            pair[1] = b;
            n += 2;
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rvoip_codec_reference::{SpandspG722Decoder, SpandspG722Encoder};

    /// Ten seconds at 16 kHz of what a codec meets: a sweep from 50 Hz to
    /// 7.9 kHz, two-tone chords, noise at several levels, full-scale square
    /// waves and silence, from a fixed seed.
    fn program() -> Vec<i16> {
        let rate = 16_000.0f64;
        let mut out = Vec::with_capacity(160_000);
        let mut seed = 0x1234_5678u32;
        let mut noise = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 16) as i16
        };
        let mut phase = 0.0f64;
        for n in 0..48_000 {
            let f = 50.0 * (7900.0f64 / 50.0).powf(n as f64 / 48_000.0);
            phase += 2.0 * std::f64::consts::PI * f / rate;
            out.push((phase.sin() * 30_000.0) as i16);
        }
        for n in 0..32_000 {
            let t = n as f64 / rate;
            let v = (2.0 * std::f64::consts::PI * 697.0 * t).sin() * 9000.0
                + (2.0 * std::f64::consts::PI * 1477.0 * t).sin() * 9000.0;
            out.push(v as i16);
        }
        for level in [1i32, 16, 256, 4096, 32768] {
            for _ in 0..8_000 {
                out.push((i32::from(noise()) * level / 32768) as i16);
            }
        }
        for n in 0..24_000 {
            out.push(if (n / 40) % 2 == 0 {
                i16::MAX
            } else {
                i16::MIN
            });
        }
        out.resize(160_000, 0);
        out
    }

    #[test]
    fn encodes_as_spandsp_does_octet_for_octet() {
        let pcm = program();
        let mut ours = G722Encoder::new();
        let mut theirs = SpandspG722Encoder::new().unwrap();
        let mut a = [0u8; 160];
        let mut b = [0u8; 160];
        for (i, frame) in pcm.chunks(320).enumerate() {
            let na = ours.encode(frame, &mut a);
            let nb = theirs.encode(frame, &mut b);
            assert_eq!(na, nb);
            assert_eq!(a[..na], b[..nb], "frame {i} differs");
        }
    }

    #[test]
    fn decodes_as_spandsp_does_sample_for_sample_below_full_scale() {
        // Every code in every context: the encoded program, then every
        // octet value in a fixed shuffled order.
        let pcm = program();
        let mut enc = SpandspG722Encoder::new().unwrap();
        let mut codes = vec![0u8; pcm.len() / 2];
        enc.encode(&pcm, &mut codes);
        let mut seed = 7u32;
        for _ in 0..64 {
            for c in 0..=255u8 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                codes.push(c ^ (seed >> 24) as u8);
            }
        }
        let mut ours = G722Decoder::new();
        let mut theirs = SpandspG722Decoder::new().unwrap();
        let mut a = [0i16; 320];
        let mut b = [0i16; 320];
        let (mut wrapped, mut total) = (0, 0);
        for (i, frame) in codes.chunks(160).enumerate() {
            let na = ours.decode(frame, &mut a);
            let nb = theirs.decode(frame, &mut b);
            assert_eq!(na, nb);
            for k in 0..na {
                if a[k] == b[k] {
                    continue;
                }
                // spandsp casts the QMF's output to 16 bits where the
                // standard limits it: past full scale its sample wraps
                // to the other sign, ours stays at the rail.
                let rail = a[k] == i16::MAX || a[k] == i16::MIN;
                assert!(
                    rail && (a[k] > 0) != (b[k] > 0),
                    "frame {i} sample {k}: {} vs {}",
                    a[k],
                    b[k]
                );
                wrapped += 1;
            }
            total += na;
        }
        // Most of the input is the shuffled codes, which drive it past
        // full scale often; every other sample is equal.
        assert!(wrapped * 20 < total, "{wrapped} of {total} past full scale");
    }

    #[test]
    fn a_tone_comes_back_as_the_same_tone() {
        let mut enc = G722Encoder::new();
        let mut dec = G722Decoder::new();
        let pcm: Vec<i16> = (0..16_000)
            .map(|n| {
                ((2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 16_000.0).sin() * 16_000.0)
                    as i16
            })
            .collect();
        let mut codes = vec![0u8; 8000];
        enc.encode(&pcm, &mut codes);
        let mut back = vec![0i16; 16_000];
        dec.decode(&codes, &mut back);
        let (f, snr) = crate::tone::analyse(&back[1600..], 16_000);
        assert!((f - 1000.0).abs() < 5.0, "{f} Hz");
        assert!(snr > 30.0, "{snr} dB");
    }
}
