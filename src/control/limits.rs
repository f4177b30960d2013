//! Fair shares of the control socket: connection slots per uid, with a
//! reserve for root and the agent's user, and a per-uid rate for `plan`.
//!
//! Both are pure bookkeeping behind a mutex that is never held across an
//! `.await`, so the server can consult them on every accept and request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many clients may be connected at once, and who may take which slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Clients in all.
    pub total: usize,
    /// Clients of one unprivileged uid.
    pub per_uid: usize,
    /// Slots that only privileged uids (root, the agent's uid) may take, so
    /// that other users together can never starve them.
    pub reserved: usize,
}

/// Why a connection gets no slot; the text goes into the `busy` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every slot open to this peer is taken.
    #[error("too many clients (at most {0} at once); try again")]
    Full(usize),
    /// This uid holds its share already.
    #[error(
        "too many clients for uid {uid} (at most {per_uid} per user); close some and try again"
    )]
    PerUid {
        /// The peer's uid.
        uid: u32,
        /// Its share.
        per_uid: usize,
    },
}

/// Connected clients, counted the way the limits need them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    total: usize,
    unprivileged: usize,
    per_uid: HashMap<u32, usize>,
}

/// The admission decision. Privileged peers may take any free slot and have
/// no per-uid share (root starving itself is root's business); the others
/// share `total - reserved` slots, at most `per_uid` each.
fn admit(counts: &Counts, limits: &SlotLimits, uid: u32, privileged: bool) -> Result<(), Refusal> {
    if counts.total >= limits.total {
        return Err(Refusal::Full(limits.total));
    }
    if privileged {
        return Ok(());
    }
    if counts.per_uid.get(&uid).copied().unwrap_or(0) >= limits.per_uid {
        return Err(Refusal::PerUid {
            uid,
            per_uid: limits.per_uid,
        });
    }
    if counts.unprivileged >= limits.total.saturating_sub(limits.reserved) {
        return Err(Refusal::Full(limits.total));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The counters stay consistent even if a holder panicked: every update
    // is a single field change.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared slot table of one server.
#[derive(Debug)]
pub struct Slots {
    limits: SlotLimits,
    counts: Mutex<Counts>,
}

impl Slots {
    /// An empty table.
    pub fn new(limits: SlotLimits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for `uid`, released when the returned guard drops.
    pub fn acquire(self: &Arc<Slots>, uid: u32, privileged: bool) -> Result<Slot, Refusal> {
        let mut c = lock(&self.counts);
        admit(&c, &self.limits, uid, privileged)?;
        c.total += 1;
        if !privileged {
            c.unprivileged += 1;
            *c.per_uid.entry(uid).or_insert(0) += 1;
        }
        Ok(Slot {
            slots: Arc::clone(self),
            uid,
            privileged,
        })
    }
}

/// One connected client's slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
    privileged: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.slots.counts);
        c.total = c.total.saturating_sub(1);
        if !self.privileged {
            c.unprivileged = c.unprivileged.saturating_sub(1);
            if let Some(n) = c.per_uid.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_uid.remove(&self.uid);
                }
            }
        }
    }
}

/// A token-bucket rate: `burst` at once, then one more every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bucket size.
    pub burst: u32,
    /// Time to earn one token.
    pub every: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: &Rate, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64()
            / rate.every.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + earned).min(f64::from(rate.burst));
        self.at = now;
    }
}

/// Buckets kept before full (idle) ones are forgotten; a full bucket is the
/// same as no bucket, so forgetting one changes no answer.
const MAX_BUCKETS: usize = 1024;

/// Per-uid token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<u32, Bucket>>,
}

impl RateLimiter {
    /// Every uid starts with a full bucket.
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token for `uid` at `now`, or says how long until one is due.
    pub fn take(&self, uid: u32, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&uid) {
            buckets.retain(|_, b| {
                b.refill(&rate, now);
                b.tokens < f64::from(rate.burst)
            });
        }
        let bucket = buckets.entry(uid).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        });
        bucket.refill(&rate, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(rate.every.mul_f64(1.0 - bucket.tokens))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SlotLimits = SlotLimits {
        total: 64,
        per_uid: 8,
        reserved: 8,
    };

    fn counts(total: usize, unprivileged: usize, per_uid: &[(u32, usize)]) -> Counts {
        Counts {
            total,
            unprivileged,
            per_uid: per_uid.iter().copied().collect(),
        }
    }

    #[test]
    fn admission_table() {
        let full = Err(Refusal::Full(64));
        let share = |uid| Err(Refusal::PerUid { uid, per_uid: 8 });
        // (connected, uid, privileged, expected)
        let cases: Vec<(Counts, u32, bool, Result<(), Refusal>)> = vec![
            (counts(0, 0, &[]), 1000, false, Ok(())),
            (counts(7, 7, &[(1000, 7)]), 1000, false, Ok(())),
            (counts(8, 8, &[(1000, 8)]), 1000, false, share(1000)),
            (counts(8, 8, &[(1000, 8)]), 1001, false, Ok(())),
            // The unprivileged pool is 56: the reserve stays free for root.
            (counts(56, 56, &[(1001, 1)]), 1001, false, full.clone()),
            (counts(56, 56, &[]), 0, true, Ok(())),
            (counts(63, 56, &[]), 0, true, Ok(())),
            (counts(64, 56, &[]), 0, true, full.clone()),
            // Privileged clients have no per-uid share, but count in total.
            (counts(60, 0, &[]), 0, true, Ok(())),
            (counts(60, 0, &[]), 1000, false, Ok(())),
            (counts(64, 0, &[]), 1000, false, full.clone()),
            // A full share is reported before a full pool.
            (counts(56, 56, &[(1000, 8)]), 1000, false, share(1000)),
        ];
        for (i, (c, uid, privileged, want)) in cases.into_iter().enumerate() {
            assert_eq!(admit(&c, &LIMITS, uid, privileged), want, "case {i}");
        }
    }

    #[test]
    fn slots_are_released_on_drop() {
        let slots = Slots::new(SlotLimits {
            total: 4,
            per_uid: 2,
            reserved: 1,
        });
        let a = slots.acquire(1000, false).unwrap();
        let b = slots.acquire(1000, false).unwrap();
        assert!(matches!(
            slots.acquire(1000, false),
            Err(Refusal::PerUid { uid: 1000, .. })
        ));
        let c = slots.acquire(1001, false).unwrap();
        assert_eq!(slots.acquire(1002, false).unwrap_err(), Refusal::Full(4));
        let root = slots.acquire(0, true).unwrap();
        assert_eq!(slots.acquire(0, true).unwrap_err(), Refusal::Full(4));
        drop(a);
        let _a = slots.acquire(1000, false).unwrap();
        drop((b, c, root));
        assert_eq!(
            *lock(&slots.counts),
            counts(1, 1, &[(1000, 1)]),
            "counts after the drops"
        );
    }

    #[test]
    fn token_bucket_table() {
        let rate = Rate {
            burst: 2,
            every: Duration::from_secs(2),
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let limiter = RateLimiter::new(rate);
        // (uid, at ms, expected: Ok or the wait in ms)
        let cases: &[(u32, u64, Result<(), u64>)] = &[
            (1000, 0, Ok(())),
            (1000, 10, Ok(())),
            (1000, 20, Err(1980)),
            (1001, 20, Ok(())),
            (1000, 1020, Err(980)),
            (1000, 2020, Ok(())),
            (1000, 2030, Err(1970)),
            // Idle for long: the bucket holds at most `burst`.
            (1000, 60_000, Ok(())),
            (1000, 60_000, Ok(())),
            (1000, 60_000, Err(2000)),
        ];
        for (i, &(uid, at, want)) in cases.iter().enumerate() {
            let got = limiter.take(uid, ms(at)).map_err(|d| d.as_millis() as u64);
            // Float refill: allow a millisecond of rounding.
            let ok = match (got, want) {
                (Ok(()), Ok(())) => true,
                (Err(g), Err(w)) => g.abs_diff(w) <= 1,
                _ => false,
            };
            assert!(ok, "case {i}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn many_uids_do_not_grow_the_bucket_table_without_bound() {
        let limiter = RateLimiter::new(Rate {
            burst: 1,
            every: Duration::from_millis(10),
        });
        let t0 = Instant::now();
        for uid in 0..10 * MAX_BUCKETS as u32 {
            // Each uid's bucket is full again 10 ms after its use.
            let now = t0 + Duration::from_millis(u64::from(uid) * 20);
            assert!(limiter.take(uid, now).is_ok());
        }
        assert!(lock(&limiter.buckets).len() <= MAX_BUCKETS);
    }
}
