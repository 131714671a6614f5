//! The run's one source of choices: a small, fast generator (SplitMix64) seeded from the run's
//! seed, split into independent streams so that, say, the fault schedule does not shift when
//! a client draws one more number.

/// A deterministic generator.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    /// An independent stream for `purpose` (a client number, the fault schedule...).
    pub fn split(&self, purpose: u64) -> SimRng {
        let mut mixed = SimRng::new(self.state ^ purpose.wrapping_mul(0xA24B_AED4_963E_E407));
        SimRng::new(mixed.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn uuid(&mut self) -> uuid::Uuid {
        let high = self.next_u64() as u128;
        let low = self.next_u64() as u128;
        uuid::Builder::from_random_bytes(((high << 64) | low).to_be_bytes()).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_splits_differ() {
        let a: Vec<u64> = (0..4).map(|_| SimRng::new(1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let root = SimRng::new(1);
        assert_ne!(root.split(1).next_u64(), root.split(2).next_u64());
        let mut rng = SimRng::new(3);
        assert!((0..1000).all(|_| (5..=9).contains(&rng.between(5, 9))));
    }
}
