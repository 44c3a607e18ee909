//! Numbers written as ASCII digits without the formatting machinery, for
//! the hot paths that put lengths, ports and counters into messages.

/// `v` in decimal, in the tail of `buf`: the digits written.
pub fn decimal(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    in_radix::<10>(v, 1, buf)
}

/// `v` in lower-case hexadecimal, zero-padded to at least `width` digits
/// (at most 20), in the tail of `buf`.
pub fn hex(v: u64, width: usize, buf: &mut [u8; 20]) -> &[u8] {
    in_radix::<16>(v, width, buf)
}

/// `v` in radix `R` (2 to 16), zero-padded to `width` digits (at most 20).
/// The radix is a constant, so each digit costs a multiplication rather
/// than a division.
fn in_radix<const R: u64>(mut v: u64, width: usize, buf: &mut [u8; 20]) -> &[u8] {
    // u64::MAX has 20 decimal digits, fewer in any larger radix.
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v % R) as usize];
        v /= R;
        if v == 0 {
            break;
        }
    }
    let start = buf.len() - width.min(buf.len());
    while i > start {
        i -= 1;
        buf[i] = b'0';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_the_formatter_writes_them() {
        for v in [0u64, 7, 9, 10, 99, 100, 65_535, 1_000_000_007, u64::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(v, &mut buf), v.to_string().as_bytes());
            for w in [0, 1, 8, 16, 20] {
                assert_eq!(hex(v, w, &mut buf), format!("{v:0w$x}").as_bytes());
            }
        }
    }
}
