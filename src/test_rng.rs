//! Deterministic pseudo-random input for the robustness ("fuzz") and
//! property tests: a tiny xorshift generator, so seeds reproduce failures
//! without a dependency, and the knobs for longer runs.
//!
//! CI runs every random-input loop with its default case count (together a
//! few seconds). For a longer run, set `SECRETSYNC_FUZZ_CASES` (cases per
//! loop) and `SECRETSYNC_FUZZ_SEED` (mixed into every loop's seed, so each
//! value explores different inputs), e.g.
//! `SECRETSYNC_FUZZ_CASES=200000 SECRETSYNC_FUZZ_SEED=$RANDOM cargo test --lib -- fuzz`.
//! A failure message prints the failing input; rerun with the same two
//! variables to reproduce it.

/// Xorshift64 generator; seed must be non-zero.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A generator for one test loop: `seed` mixed with
    /// `SECRETSYNC_FUZZ_SEED` when that is set (never zero).
    pub(crate) fn seeded(seed: u64) -> Rng {
        let extra = std::env::var("SECRETSYNC_FUZZ_SEED")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // Spread the extra seed over all bits before mixing it in.
        let mixed = seed ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Rng(if mixed == 0 {
            0x2545_f491_4f6c_dd1d
        } else {
            mixed
        })
    }

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

    /// `len` random bytes biased towards `syntax` and ASCII letters, with
    /// an occasional arbitrary byte (invalid UTF-8, NUL, control).
    pub(crate) fn bytes(&mut self, len: usize, syntax: &[u8]) -> Vec<u8> {
        (0..len)
            .map(|_| match self.below(4) {
                0 => self.next() as u8,
                1 if !syntax.is_empty() => syntax[self.below(syntax.len())],
                _ => b'A' + self.below(26) as u8,
            })
            .collect()
    }
}

/// Cases for one random-input loop: `default` (sized so that all loops
/// together stay within a few seconds of CI time) unless
/// `SECRETSYNC_FUZZ_CASES` asks for more or fewer.
pub(crate) fn cases(default: usize) -> usize {
    std::env::var("SECRETSYNC_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(default)
}
