//! Randomness for protocol cores, given to them rather than taken: a core's
//! behaviour is then a function of its inputs (time, bytes, and this), and a
//! test or a simulation can hand it a seeded source. The I/O shells make the
//! one [`SystemEntropy`] the cores of a process draw keys, nonces and tags
//! from; nothing else reads the system's randomness (clippy's
//! `disallowed-methods` holds the rest of the workspace to that).

use std::cell::Cell;

/// The system had no randomness to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no randomness available from the system")
    }
}

impl std::error::Error for Unavailable {}

/// A source of random octets.
pub trait Entropy: Send + std::fmt::Debug {
    /// Fills `out` with random octets.
    fn fill(&self, out: &mut [u8]) -> Result<(), Unavailable>;
}

/// The operating system's randomness (getrandom), fit for keys.
#[derive(Debug)]
pub struct SystemEntropy(ring::rand::SystemRandom);

impl SystemEntropy {
    /// The system's randomness.
    #[allow(clippy::disallowed_methods)] // the one place it is taken
    pub fn new() -> SystemEntropy {
        SystemEntropy(ring::rand::SystemRandom::new())
    }
}

impl Default for SystemEntropy {
    fn default() -> Self {
        SystemEntropy::new()
    }
}

impl Entropy for SystemEntropy {
    fn fill(&self, out: &mut [u8]) -> Result<(), Unavailable> {
        ring::rand::SecureRandom::fill(&self.0, out).map_err(|_| Unavailable)
    }
}

/// A reproducible sequence from a seed (SplitMix64), for tests and
/// simulations; never for keys that protect anything.
#[derive(Debug)]
pub struct SeededEntropy(Cell<u64>);

impl SeededEntropy {
    /// The sequence of `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy(Cell::new(seed))
    }

    fn next(&self) -> u64 {
        let s = self.0.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, out: &mut [u8]) -> Result<(), Unavailable> {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_octets_and_another_seed_others() {
        let (a, b, c) = (
            SeededEntropy::new(7),
            SeededEntropy::new(7),
            SeededEntropy::new(8),
        );
        let (mut x, mut y, mut z) = ([0u8; 21], [0u8; 21], [0u8; 21]);
        for (e, out) in [(&a, &mut x), (&b, &mut y), (&c, &mut z)] {
            assert_eq!(e.fill(out), Ok(()));
        }
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!(x.iter().any(|b| *b != 0));
    }

    #[test]
    fn the_system_gives_different_octets_each_time() {
        let s = SystemEntropy::new();
        let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
        assert_eq!(s.fill(&mut x), Ok(()));
        assert_eq!(s.fill(&mut y), Ok(()));
        assert_ne!(x, y);
    }
}
