//! Client-side call pacing: an async token bucket.
//!
//! AWS Secrets Manager enforces per-account request quotas (50 TPS for the
//! write APIs in most regions). Retrying after `ThrottlingException` works, but
//! every throttled attempt is wasted time and eats into quota shared with other
//! tools in the same account. A [`Pacer`] keeps our own calls under a configured
//! rate *before* they are sent, so a large reconcile pass (say 500 new secrets)
//! spreads out instead of tripping the quota.
//!
//! The bucket is implemented as GCRA ("virtual scheduling"): the only state is
//! the theoretical arrival time of the next call. `acquire` reserves the next
//! free slot under a short-lived mutex and then sleeps until that slot, so
//! - waiters are served in the order they called `acquire` (fair),
//! - there is no busy loop and nothing wakes up while the pacer is idle,
//! - the cost per call is one uncontended lock and at most one timer.
//!
//! Time comes from `tokio::time`, so tests under `tokio::time::pause` run in
//! virtual time.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// An async token bucket: at most `burst` calls at once, then `rate_per_sec`
/// calls per second on average. In any window of length `t` at most
/// `rate_per_sec × t + burst` acquisitions complete.
#[derive(Debug)]
pub struct Pacer {
    /// Time between two slots (1 / rate); zero means "not paced".
    interval: Duration,
    /// How far ahead of "now" reservations may already be spent:
    /// `(burst - 1) × interval`.
    tolerance: Duration,
    /// Theoretical arrival time: when the bucket would next be empty if
    /// nobody called again. `None` until the first call.
    tat: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer allowing `rate_per_sec` calls per second with bursts of up to
    /// `burst` calls. `rate_per_sec == 0` disables pacing (every `acquire`
    /// returns at once) so a caller can opt out without a separate code path;
    /// `burst == 0` is treated as 1 (a bucket must hold at least one token).
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let interval = if rate_per_sec == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / rate_per_sec
        };
        let tolerance = interval * burst.max(1).saturating_sub(1);
        Self {
            interval,
            tolerance,
            tat: Mutex::new(None),
        }
    }

    /// A pacer for `rate_per_sec` with the burst every store uses
    /// ([`burst_for`]): the AWS store and the in-memory store (when it
    /// stands in for AWS in benchmarks) pace identically.
    pub fn for_rate(rate_per_sec: u32) -> Self {
        Self::new(rate_per_sec, burst_for(rate_per_sec))
    }

    /// Waits until this caller may send one call. Callers are served in the
    /// order they called; cancelling (dropping) a waiting `acquire` gives its
    /// slot back when no later caller has reserved one after it.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let reservation = self.reserve(Instant::now());
        if reservation.send_at <= Instant::now() {
            return;
        }
        let mut guard = Refund {
            pacer: self,
            reserved_tat: Some(reservation.tat),
        };
        tokio::time::sleep_until(reservation.send_at).await;
        guard.reserved_tat = None;
    }

    /// Reserves the next slot at or after `now` and returns when it starts.
    fn reserve(&self, now: Instant) -> Reservation {
        let mut tat = self.lock();
        let base = match *tat {
            Some(t) if t > now => t,
            _ => now,
        };
        let new_tat = base + self.interval;
        *tat = Some(new_tat);
        // The slot may start `tolerance` before `base`: that is the burst.
        let send_at = base.checked_sub(self.tolerance).unwrap_or(now).max(now);
        Reservation {
            send_at,
            tat: new_tat,
        }
    }

    /// Locks the state; a poisoned lock still holds a valid `Instant` (the
    /// critical section cannot panic half-way), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Option<Instant>> {
        self.tat.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Burst allowance for a pacer: half a second's worth of calls, so a pass
/// can start a few calls at once while no one-second window ever sees more
/// than 1.5 × the configured rate (30 for the default 20 writes/s, well under
/// AWS's 50 TPS quota).
pub fn burst_for(rate: u32) -> u32 {
    rate.div_ceil(2).max(1)
}

/// A reserved slot.
struct Reservation {
    /// When the caller may send.
    send_at: Instant,
    /// The theoretical arrival time right after this reservation.
    tat: Instant,
}

/// Gives a reserved slot back if `acquire` is cancelled while sleeping.
struct Refund<'a> {
    pacer: &'a Pacer,
    /// `Some` while the reservation is outstanding.
    reserved_tat: Option<Instant>,
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        let Some(reserved) = self.reserved_tat else {
            return;
        };
        let mut tat = self.pacer.lock();
        // Only the newest reservation can be returned without handing a
        // slot that is already promised to a later waiter to someone else.
        if *tat == Some(reserved) {
            *tat = reserved.checked_sub(self.pacer.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs `n` concurrent acquires and returns their completion times
    /// relative to the start, sorted.
    async fn run(pacer: Arc<Pacer>, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let p = Arc::clone(&pacer);
            tasks.push(tokio::spawn(async move {
                p.acquire().await;
                Instant::now() - start
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out.sort();
        out
    }

    /// Checks `count(window) <= rate * len + burst` for every window spanned
    /// by two completion times.
    fn assert_windows(times: &[Duration], rate: u32, burst: u32) {
        for (i, a) in times.iter().enumerate() {
            for (j, b) in times.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let allowed = f64::from(rate) * (*b - *a).as_secs_f64() + f64::from(burst);
                assert!(
                    count <= allowed + 1e-9,
                    "{count} calls in {:?}, allowed {allowed}",
                    *b - *a
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hundred_at_twenty_per_second_take_four_seconds() {
        let pacer = Arc::new(Pacer::new(20, 20));
        let times = run(pacer, 100).await;
        let last = *times.last().expect("100 times");
        // 20 go at once, the other 80 at 20/s: the last at 4 s.
        assert!(
            last >= Duration::from_millis(3_950) && last <= Duration::from_millis(4_050),
            "{last:?}"
        );
        assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 20);
        assert_windows(&times, 20, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_one_is_strictly_spaced() {
        let pacer = Arc::new(Pacer::new(10, 1));
        let times = run(pacer, 11).await;
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(100) * i as u32);
        }
        assert_windows(&times, 10, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_callers_respect_the_rate() {
        let pacer = Pacer::new(50, 5);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..200 {
            pacer.acquire().await;
            times.push(Instant::now() - start);
        }
        assert_windows(&times, 50, 5);
        let last = *times.last().expect("times");
        // (200 - 5) slots at 20 ms each.
        assert_eq!(last, Duration::from_millis(20 * 195));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_up_to_burst_only() {
        let pacer = Arc::new(Pacer::new(10, 3));
        let _ = run(Arc::clone(&pacer), 3).await;
        // A long idle period refills the bucket, but to `burst`, not beyond.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let times = run(pacer, 6).await;
        assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 3);
        assert_eq!(times[5], Duration::from_millis(300));
        assert_windows(&times, 10, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_returns_its_slot() {
        let pacer = Pacer::new(1, 1);
        pacer.acquire().await; // uses the burst
        let start = Instant::now();
        // Gives up after 100 ms, long before its slot at 1 s.
        let waited = tokio::time::timeout(Duration::from_millis(100), pacer.acquire()).await;
        assert!(waited.is_err());
        // The slot at 1 s is free again: the next caller gets it.
        pacer.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[test]
    fn burst_is_half_a_second_of_calls() {
        assert_eq!(burst_for(20), 10);
        assert_eq!(burst_for(45), 23);
        assert_eq!(burst_for(1), 1);
        assert_eq!(burst_for(0), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_disables_pacing() {
        let pacer = Arc::new(Pacer::new(0, 0));
        let times = run(pacer, 1_000).await;
        assert!(times.iter().all(|t| t.is_zero()));
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_order() {
        let pacer = Arc::new(Pacer::new(10, 1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let p = Arc::clone(&pacer);
            let o = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                p.acquire().await;
                o.lock().expect("lock").push(i);
            }));
            // Make the arrival order deterministic.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().expect("lock"), (0..10).collect::<Vec<_>>());
    }
}
