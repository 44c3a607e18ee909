//! The mixing kernels: the loops every conference frame runs, written once
//! and compiled twice — for AVX2 and for the baseline — with the variant
//! chosen once at run time. Both are the same integer arithmetic, so their
//! results are identical octet for octet; only the speed differs.
#![allow(unsafe_code)]

/// Which kernel variant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Baseline x86-64 (SSE2) or any other target.
    Scalar,
    /// AVX2, when the CPU has it.
    Avx2,
}

impl Kernel {
    /// The fastest variant this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }
}

/// Gain in Q12: 4096 is unity.
pub const UNITY: i32 = 4096;

#[inline(always)]
fn accumulate_body(sum: &mut [i32], input: &[i16], gain: i32) {
    if gain == UNITY {
        for (s, &x) in sum.iter_mut().zip(input) {
            *s += i32::from(x);
        }
    } else {
        for (s, &x) in sum.iter_mut().zip(input) {
            *s += (i32::from(x) * gain) >> 12;
        }
    }
}

#[inline(always)]
fn scaled_body(out: &mut [i32], input: &[i16], gain: i32) {
    for (o, &x) in out.iter_mut().zip(input) {
        *o = (i32::from(x) * gain) >> 12;
    }
}

#[inline(always)]
fn minus_body(out: &mut [i16], sum: &[i32], own: &[i32], gain: i32) {
    if gain == UNITY {
        for ((o, &s), &m) in out.iter_mut().zip(sum).zip(own) {
            *o = (s - m).clamp(-32768, 32767) as i16;
        }
    } else {
        for ((o, &s), &m) in out.iter_mut().zip(sum).zip(own) {
            // The listener's own gain (volume) on what it hears.
            let v = ((s - m) as i64 * i64::from(gain)) >> 12;
            *o = v.clamp(-32768, 32767) as i16;
        }
    }
}

#[inline(always)]
fn saturate_body(out: &mut [i16], sum: &[i32], gain: i32) {
    if gain == UNITY {
        for (o, &s) in out.iter_mut().zip(sum) {
            *o = s.clamp(-32768, 32767) as i16;
        }
    } else {
        for (o, &s) in out.iter_mut().zip(sum) {
            let v = (s as i64 * i64::from(gain)) >> 12;
            *o = v.clamp(-32768, 32767) as i16;
        }
    }
}

#[inline(always)]
fn energy_body(input: &[i16]) -> u64 {
    // Eight lanes of 32-bit squares summed per block: vectorises, and a
    // block of eight squares (≤ 2^33) never overflows its u64 lane.
    let mut acc = [0u64; 8];
    let mut chunks = input.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            let v = i64::from(x);
            *a += (v * v) as u64;
        }
    }
    let mut total: u64 = acc.iter().sum();
    for &x in chunks.remainder() {
        let v = i64::from(x);
        total += (v * v) as u64;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2")]
    pub(super) fn accumulate(sum: &mut [i32], input: &[i16], gain: i32) {
        super::accumulate_body(sum, input, gain)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn scaled(out: &mut [i32], input: &[i16], gain: i32) {
        super::scaled_body(out, input, gain)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn minus(out: &mut [i16], sum: &[i32], own: &[i32], gain: i32) {
        super::minus_body(out, sum, own, gain)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn saturate(out: &mut [i16], sum: &[i32], gain: i32) {
        super::saturate_body(out, sum, gain)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn energy(input: &[i16]) -> u64 {
        super::energy_body(input)
    }
}

impl Kernel {
    /// `sum[i] += input[i] * gain` (Q12).
    pub fn accumulate(self, sum: &mut [i32], input: &[i16], gain: i32) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only made by `detect` after the CPU reported AVX2.
            Kernel::Avx2 => unsafe { avx2::accumulate(sum, input, gain) },
            _ => accumulate_body(sum, input, gain),
        }
    }

    /// `out[i] = input[i] * gain` (Q12), widened.
    pub fn scaled(self, out: &mut [i32], input: &[i16], gain: i32) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `accumulate`.
            Kernel::Avx2 => unsafe { avx2::scaled(out, input, gain) },
            _ => scaled_body(out, input, gain),
        }
    }

    /// `out[i] = saturate((sum[i] - own[i]) * gain)`: what one talker hears.
    pub fn minus(self, out: &mut [i16], sum: &[i32], own: &[i32], gain: i32) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `accumulate`.
            Kernel::Avx2 => unsafe { avx2::minus(out, sum, own, gain) },
            _ => minus_body(out, sum, own, gain),
        }
    }

    /// `out[i] = saturate(sum[i] * gain)`: what every non-talker hears.
    pub fn saturate(self, out: &mut [i16], sum: &[i32], gain: i32) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `accumulate`.
            Kernel::Avx2 => unsafe { avx2::saturate(out, sum, gain) },
            _ => saturate_body(out, sum, gain),
        }
    }

    /// Sum of squares of `input`.
    pub fn energy(self, input: &[i16]) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `accumulate`.
            Kernel::Avx2 => unsafe { avx2::energy(input) },
            _ => energy_body(input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<i16> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 16) as i16
            })
            .collect()
    }

    #[test]
    fn avx2_and_scalar_kernels_give_identical_results() {
        let kernels = [Kernel::Scalar, Kernel::detect()];
        let a = noise(963, 1);
        let b = noise(963, 2);
        let mut outs = Vec::new();
        for k in kernels {
            let mut sum = vec![0i32; a.len()];
            k.accumulate(&mut sum, &a, UNITY);
            k.accumulate(&mut sum, &b, 5000);
            let mut own = vec![0i32; a.len()];
            k.scaled(&mut own, &b, 5000);
            let mut heard = vec![0i16; a.len()];
            k.minus(&mut heard, &sum, &own, 3000);
            let mut common = vec![0i16; a.len()];
            k.saturate(&mut common, &sum, UNITY);
            outs.push((sum, heard, common, k.energy(&a)));
        }
        assert_eq!(outs[0], outs[1]);
        // Total minus own is the other talker, at the listener's gain.
        let expect: Vec<i16> = a
            .iter()
            .map(|&x| ((i64::from(x) * 3000) >> 12) as i16)
            .collect();
        assert_eq!(outs[0].1, expect);
    }
}
