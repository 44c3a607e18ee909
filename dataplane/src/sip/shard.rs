//! Which control-plane shard owns a message: every message of a call
//! (same Call-ID, RFC 3261 §8.1.1.4) goes to the same shard, which holds
//! its transactions and dialogs. The SIP workers choose the shard with it;
//! a shard choosing the Call-ID of a request it starts (a B2BUA's other
//! leg, a probe) picks one that comes back to itself.

/// The shard of `call_id` among `shards` (FNV-1a over its octets; Call-IDs
/// compare octet by octet, §20.8). One shard, or none: shard 0.
pub fn shard_of(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in call_id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The high bits mix every octet; the low ones of FNV-1a less so.
    ((h >> 32) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_takes_everything_and_a_call_id_always_lands_on_the_same_shard() {
        assert_eq!(shard_of(b"anything@host", 1), 0);
        assert_eq!(shard_of(b"anything@host", 0), 0);
        for n in [2, 3, 4, 8] {
            let a = shard_of(b"a84b4c76e66710@pc33.atlanta.example.com", n);
            assert_eq!(a, shard_of(b"a84b4c76e66710@pc33.atlanta.example.com", n));
            assert!(a < n);
        }
    }

    #[test]
    fn call_ids_spread_evenly_over_the_shards() {
        for n in [2usize, 3, 4] {
            let mut counts = vec![0u32; n];
            for i in 0..10_000 {
                counts[shard_of(format!("{i}-1@127.0.0.1").as_bytes(), n)] += 1;
            }
            let fair = 10_000 / n as u32;
            for c in &counts {
                assert!(c.abs_diff(fair) < fair / 10, "{n} shards: {counts:?}");
            }
        }
    }
}
