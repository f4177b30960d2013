//! Deterministic pseudo-random input for the parsers' robustness and
//! property tests: a tiny xorshift generator, so seeds reproduce failures
//! without a dependency.

/// Xorshift64 generator; seed must be non-zero.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// Next raw value.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `items` (non-empty).
    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Up to `max` picks from `alphabet`, concatenated.
    pub(crate) fn text(&mut self, alphabet: &[&str], max: usize) -> String {
        (0..self.below(max + 1))
            .map(|_| self.pick(alphabet))
            .collect()
    }

    /// True about once in `one_in` calls.
    pub(crate) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}
