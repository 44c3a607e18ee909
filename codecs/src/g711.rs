//! G.711 (ITU-T G.711, 1988): µ-law and A-law companding of 16-bit linear
//! PCM, bit-exact with the ITU-T G.191 reference implementation on every
//! input (`tests::*` check the whole 16-bit range against G.191's test
//! data). Decoding is a 256-entry table; encoding a table indexed by the
//! input's top bits (µ-law keeps 14 bits, A-law 13), both built at compile
//! time: no branch per sample, no allocation.

/// µ-law code of a 16-bit sample.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    ULAW_ENCODE[(x as u16 >> 2) as usize]
}

/// The 16-bit sample a µ-law code stands for.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// A-law code of a 16-bit sample.
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    ALAW_ENCODE[(x as u16 >> 3) as usize]
}

/// The 16-bit sample an A-law code stands for.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Encodes `pcm` into `out` as µ-law (one code per sample; `out` as long
/// as `pcm` or the shorter of the two is done).
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(pcm) {
        *o = ulaw_encode(x);
    }
}

/// Decodes µ-law `codes` into `out`.
pub fn decode_ulaw(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = ulaw_decode(c);
    }
}

/// Encodes `pcm` into `out` as A-law.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(pcm) {
        *o = alaw_encode(x);
    }
}

/// Decodes A-law `codes` into `out`.
pub fn decode_alaw(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = alaw_decode(c);
    }
}

/// µ-law of a sample (G.711 Table 2a): the magnitude in 14 bits (the
/// one's complement of a negative sample), biased by 33, in eight
/// segments of sixteen steps; the code is sent inverted, its top bit set
/// for samples ≥ 0.
const fn ulaw_of(x: i16) -> u8 {
    let magnitude = if x < 0 { (!x) >> 2 } else { x >> 2 } as i32 + 33;
    let biased = if magnitude > 0x1fff {
        0x1fff
    } else {
        magnitude
    };
    // The segment: one more than the bit length of the biased magnitude
    // above its low six bits.
    let mut segment = 1;
    let mut rest = biased >> 6;
    while rest != 0 {
        segment += 1;
        rest >>= 1;
    }
    let step = (biased >> segment) & 0x0f;
    let code = ((8 - segment) << 4) | (0x0f - step);
    (if x >= 0 { code | 0x80 } else { code }) as u8
}

/// The sample of a µ-law code: the middle of its step, less the bias.
const fn ulaw_value(code: u8) -> i16 {
    let inverted = !code;
    let exponent = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0f) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    (if code < 0x80 { -magnitude } else { magnitude }) as i16
}

/// A-law of a sample (G.711 Table 1a): the magnitude in 13 bits (the one's
/// complement of a negative sample); the first segment linear, each
/// further one twice as coarse; the code's top bit set for samples ≥ 0 and
/// its even bits inverted on the line.
const fn alaw_of(x: i16) -> u8 {
    let mut magnitude = if x < 0 { (!x) >> 4 } else { x >> 4 } as i32;
    if magnitude > 15 {
        let mut exponent = 1;
        while magnitude > 16 + 15 {
            magnitude >>= 1;
            exponent += 1;
        }
        magnitude = magnitude - 16 + (exponent << 4);
    }
    let code = if x >= 0 { magnitude | 0x80 } else { magnitude };
    (code ^ 0x55) as u8
}

/// The sample of an A-law code: the middle of its step.
const fn alaw_value(code: u8) -> i16 {
    let plain = (code ^ 0x55) & 0x7f;
    let exponent = (plain >> 4) as i32;
    let mut mantissa = (plain & 0x0f) as i32;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 8;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    (if code > 0x7f { mantissa } else { -mantissa }) as i16
}

const ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = ulaw_value(c as u8);
        c += 1;
    }
    t
};

const ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = alaw_value(c as u8);
        c += 1;
    }
    t
};

/// µ-law codes by the sample's top 14 bits (as an unsigned index: the
/// low two bits never change the code).
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut t = [0u8; 1 << 14];
    let mut i = 0;
    while i < (1 << 14) {
        t[i] = ulaw_of((i << 2) as u16 as i16);
        i += 1;
    }
    t
};

/// A-law codes by the sample's top 13 bits.
static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut t = [0u8; 1 << 13];
    let mut i = 0;
    while i < (1 << 13) {
        t[i] = alaw_of((i << 3) as u16 as i16);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// A file of `../shared/conformance/g711` as 16-bit little-endian words.
    fn words(name: &str) -> Vec<u16> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/conformance/g711")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (../shared beside the repository)", path.display())
        });
        bytes
            .chunks_exact(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect()
    }

    #[test]
    fn every_sample_encodes_as_the_g191_reference_does() {
        let src = words("sweep.src");
        assert_eq!(src.len(), 65_536);
        for (file, encode) in [
            ("sweep-r.u", ulaw_encode as fn(i16) -> u8),
            ("sweep-r.a", alaw_encode),
        ] {
            let want = words(file);
            let wrong: Vec<(i16, u16, u8)> = src
                .iter()
                .zip(&want)
                .map(|(&x, &w)| (x as i16, w, encode(x as i16)))
                .filter(|(_, w, got)| *w != u16::from(*got))
                .take(5)
                .collect();
            assert!(
                wrong.is_empty(),
                "{file}: (sample, reference, ours) {wrong:?}"
            );
        }
    }

    #[test]
    fn every_code_decodes_as_the_g191_reference_does() {
        for (codes, decoded, decode) in [
            ("sweep-r.u", "sweep-r.reu", ulaw_decode as fn(u8) -> i16),
            ("sweep-r.a", "sweep-r.rea", alaw_decode),
        ] {
            let codes = words(codes);
            let want = words(decoded);
            let mut seen = [false; 256];
            for (&c, &w) in codes.iter().zip(&want) {
                let c = c as u8;
                seen[c as usize] = true;
                assert_eq!(decode(c) as u16, w, "{decoded}: code {c:#04x}");
            }
            // The ramp reaches every code but µ-law's negative zero (0x7f,
            // never produced by the encoder), which decodes as zero.
            assert!(seen.iter().filter(|s| !**s).count() <= 1);
        }
        assert_eq!(ulaw_decode(0x7f), 0);
    }

    #[test]
    fn frames_encode_and_decode_whole_without_allocating() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i * 409) % 65_536 - 32_768) as i16)
            .collect();
        let (mut u, mut a) = ([0u8; 160], [0u8; 160]);
        encode_ulaw(&pcm, &mut u);
        encode_alaw(&pcm, &mut a);
        let (mut du, mut da) = ([0i16; 160], [0i16; 160]);
        decode_ulaw(&u, &mut du);
        decode_alaw(&a, &mut da);
        for i in 0..160 {
            assert_eq!(u[i], ulaw_encode(pcm[i]));
            assert_eq!(da[i], alaw_decode(alaw_encode(pcm[i])));
            // Decoding then encoding again gives the same code.
            assert_eq!(ulaw_encode(du[i]), u[i]);
            assert_eq!(alaw_encode(da[i]), a[i]);
        }
    }
}
