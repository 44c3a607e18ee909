//! Numbers written as ASCII digits without the formatting machinery, for
//! the hot paths that put lengths, ports and counters into messages.

/// `v` in decimal, in the tail of `buf`: the digits written.
pub fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    // u64::MAX has 20 decimal digits.
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_as_the_formatter_writes_them() {
        for v in [0u64, 7, 9, 10, 99, 100, 65_535, 1_000_000_007, u64::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(v, &mut buf), v.to_string().as_bytes());
        }
    }
}
