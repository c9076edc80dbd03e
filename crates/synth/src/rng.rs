//! Deterministic randomness: seed derivation, keyed hashing, a small-domain permutation
//! and the few samplers the generator needs (rand 0.8 ships no Poisson).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash step.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keyed hash of two words.
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b ^ 0x5851_F42D_4C95_7F2D))
}

/// FNV-1a of a tag, to derive independent sub-seeds from names.
fn tag_hash(tag: &str) -> u64 {
    tag.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A sub-key of the master seed for `tag` (pure function, used for keyed hashing).
pub fn subkey(seed: u64, tag: &str) -> u64 {
    mix(seed, tag_hash(tag))
}

/// An independent ChaCha stream for `tag`, derived from the master seed.
pub fn stream(seed: u64, tag: &str) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    let mut state = subkey(seed, tag);
    for chunk in bytes.chunks_exact_mut(8) {
        state = splitmix64(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    ChaCha8Rng::from_seed(bytes)
}

/// A pseudo-random permutation of `0..n` (4-round Feistel network over the next even
/// power of two, with cycle walking). Lets person `i` own a unique ID number, phone
/// number and home without any table in memory.
#[derive(Debug, Clone)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    mask: u64,
    keys: [u64; 4],
}

impl Permutation {
    pub fn new(n: u64, key: u64) -> Self {
        let n = n.max(4);
        let mut bits = 64 - (n - 1).leading_zeros();
        bits += bits & 1;
        let half_bits = bits / 2;
        let mut keys = [0u64; 4];
        let mut k = key;
        for slot in &mut keys {
            k = splitmix64(k);
            *slot = k;
        }
        Permutation {
            n,
            half_bits,
            mask: (1u64 << half_bits) - 1,
            keys,
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mut left = x >> self.half_bits;
        let mut right = x & self.mask;
        for key in self.keys {
            let f = splitmix64(right ^ key) & self.mask;
            let next = left ^ f;
            left = right;
            right = next;
        }
        (left << self.half_bits) | right
    }

    /// The image of `x` (which must be below `n`).
    pub fn apply(&self, x: u64) -> u64 {
        let mut v = x;
        loop {
            v = self.feistel(v);
            if v < self.n {
                return v;
            }
        }
    }
}

/// Poisson sample by Knuth's product method (fine for the small means used here).
pub fn poisson(rng: &mut impl Rng, lambda: f64) -> u32 {
    let limit = (-lambda).exp();
    let mut k = 0u32;
    let mut p: f64 = rng.r#gen();
    while p > limit {
        k += 1;
        p *= rng.r#gen::<f64>();
    }
    k
}

/// Index drawn with the given integer weights (at least one must be positive).
pub fn pick(rng: &mut impl Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    if total == 0 {
        return 0;
    }
    let mut r = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

/// Uniform draw in `0..1` from a keyed hash (for per-person attributes).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn permutation_is_a_bijection() {
        for n in [4u64, 5, 17, 1000, 4097] {
            let p = Permutation::new(n, 99);
            let images: HashSet<u64> = (0..n).map(|x| p.apply(x)).collect();
            assert_eq!(images.len() as u64, n);
            assert!(images.iter().all(|&v| v < n));
        }
    }

    #[test]
    fn poisson_mean_is_close() {
        let mut rng = stream(1, "poisson");
        let n = 20_000;
        let sum: u32 = (0..n).map(|_| poisson(&mut rng, 2.0)).sum();
        let mean = f64::from(sum) / f64::from(n);
        assert!((mean - 2.0).abs() < 0.05, "{mean}");
    }

    #[test]
    fn streams_differ_by_tag_and_seed() {
        let a: u64 = stream(1, "a").r#gen();
        let b: u64 = stream(1, "b").r#gen();
        let c: u64 = stream(2, "a").r#gen();
        let a2: u64 = stream(1, "a").r#gen();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, a2);
    }
}
