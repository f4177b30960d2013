//! Client-side call pacing: an async token bucket that slows down when AWS
//! throttles.
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
//! **Congestion control.** The configured rate is a ceiling for one host; a
//! fleet shares the account's quota, and no host knows how many others there
//! are. So every attempt's outcome is fed back ([`Pacer::throttled`],
//! [`Pacer::succeeded`]): a throttled attempt halves this pacer's rate (once
//! per congestion event: the throttles of calls already in flight are the
//! same event; down to one call per [`MAX_INTERVAL`]) and takes its burst
//! away, and calls queued at the old rate queue again at the new one. Each
//! successful attempt shortens the interval by 1/[`RECOVERY_STEPS`], up to
//! the configured rate. The increase is proportional to a host's own rate
//! and the decrease to its own share, so hosts sharing a quota settle near
//! it whatever their number, while a lone host that meets one stray
//! throttle is back at full rate after ~90 calls (seconds).
//! The AWS SDK's own "adaptive" retry mode was not taken: its rate floor is
//! 0.5 calls/s per client, so 100 hosts already fill a 50-TPS quota at the
//! floor. [`Pacer::throttled`] also says whether the throttled call is
//! worth retrying at once: only when the congestion event began at full
//! rate (one stray throttle); a pacer that was already backing off fails
//! the call so the engine's pass-level backoff (with full jitter) spreads
//! the hosts out instead of each retrying into the same full bucket.
//!
//! A pacer from [`Pacer::for_rate`] starts with an empty bucket: the first
//! call goes at once, the next ones one interval apart, so a thousand hosts
//! that start together send one call each, not one burst each, before the
//! first throttle can slow them. Idle time refills the burst.
//!
//! Time comes from `tokio::time`, so tests under `tokio::time::pause` run in
//! virtual time.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The slowest a throttled pacer gets: one call per minute. 1,000 hosts at
/// this floor send 17 calls/s, a third of the write quota.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Each successful attempt shortens a throttled pacer's interval by
/// 1/RECOVERY_STEPS: one halving is won back in ~90 calls, slowly enough
/// that a fleet settling near its quota does not overshoot it often.
pub const RECOVERY_STEPS: u32 = 128;

/// An async token bucket: at most `burst` calls at once, then `rate_per_sec`
/// calls per second on average. In any window of length `t` at most
/// `rate_per_sec × t + burst` acquisitions complete. Throttling feedback
/// lowers the rate below that (see the module docs).
#[derive(Debug)]
pub struct Pacer {
    /// Time between two slots at the configured rate; zero means "not
    /// paced" (and no congestion control either: the operator opted out).
    base: Duration,
    /// Configured burst (at least 1).
    burst: u32,
    /// Whether the first use finds the bucket empty rather than full.
    start_empty: bool,
    state: Mutex<State>,
}

/// What the pacer's lock guards.
#[derive(Debug)]
struct State {
    /// Theoretical arrival time: when the bucket would next be empty if
    /// nobody called again. `None` until the first call.
    tat: Option<Instant>,
    /// The interval in force: `base`, or longer after throttling.
    interval: Duration,
    /// When the interval was last lengthened: throttles of calls sent
    /// before then belong to the same congestion event and do not lengthen
    /// it again.
    slowed_at: Option<Instant>,
    /// Counts slow-downs: a waiter whose slot was reserved at the old rate
    /// takes a new one (calls queued before a throttle must not go out at
    /// the rate that caused it).
    epoch: u64,
    /// Whether the current congestion event began at full rate: a stray
    /// throttle, whose calls are worth an immediate retry.
    event_was_full: bool,
}

impl State {
    /// How far ahead of "now" reservations may already be spent: the
    /// burst, at full rate only (a slowed pacer sends one call at a time).
    fn tolerance(&self, base: Duration, burst: u32) -> Duration {
        if self.interval <= base {
            base * burst.saturating_sub(1)
        } else {
            Duration::ZERO
        }
    }
}

impl Pacer {
    /// A pacer allowing `rate_per_sec` calls per second with bursts of up to
    /// `burst` calls, starting with a full bucket. `rate_per_sec == 0`
    /// disables pacing (every `acquire` returns at once) so a caller can opt
    /// out without a separate code path; `burst == 0` is treated as 1 (a
    /// bucket must hold at least one token).
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let base = if rate_per_sec == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / rate_per_sec
        };
        Self {
            base,
            burst: burst.max(1),
            start_empty: false,
            state: Mutex::new(State {
                tat: None,
                interval: base,
                slowed_at: None,
                epoch: 0,
                event_was_full: true,
            }),
        }
    }

    /// A pacer for `rate_per_sec` with the burst every store uses
    /// ([`burst_for`]), starting with an empty bucket (see the module docs):
    /// the AWS store and the in-memory store (when it stands in for AWS in
    /// benchmarks) pace identically.
    pub fn for_rate(rate_per_sec: u32) -> Self {
        Self {
            start_empty: true,
            ..Self::new(rate_per_sec, burst_for(rate_per_sec))
        }
    }

    /// Waits until this caller may send one call. Callers are served in the
    /// order they called; cancelling (dropping) a waiting `acquire` gives its
    /// slot back when no later caller has reserved one after it.
    pub async fn acquire(&self) {
        if self.base.is_zero() {
            return;
        }
        loop {
            let reservation = self.reserve(Instant::now());
            if reservation.send_at <= Instant::now() {
                return;
            }
            let mut guard = Refund {
                pacer: self,
                reserved: Some(reservation),
            };
            tokio::time::sleep_until(reservation.send_at).await;
            guard.reserved = None;
            if self.lock().epoch == reservation.epoch {
                return;
            }
            // Slowed down while waiting: queue again at the new rate.
        }
    }

    /// Reports a throttled attempt sent at `sent_at`: halves the rate (down
    /// to one call per [`MAX_INTERVAL`]; once per congestion event: not for
    /// calls sent before the last decrease), drops the burst and
    /// moves the next free slot one new interval past now. Returns whether
    /// an immediate retry is reasonable: only if this congestion event
    /// began at full rate (a stray throttle), not once the pacer was
    /// already backing off.
    pub fn throttled(&self, sent_at: Instant) -> bool {
        if self.base.is_zero() {
            return true;
        }
        let now = Instant::now();
        let mut st = self.lock();
        // One decrease per congestion event: calls already in flight when
        // the rate was halved come back throttled too, and halving again
        // for each of them would overshoot far below the fair share.
        let same_event = st.slowed_at.is_some_and(|at| sent_at < at);
        if !same_event {
            st.event_was_full = st.interval <= self.base;
            st.interval = (st.interval * 2).clamp(self.base, MAX_INTERVAL.max(self.base));
            st.slowed_at = Some(now);
            st.epoch += 1;
        }
        let next = now + st.interval;
        st.tat = Some(st.tat.map_or(next, |t| t.max(next)));
        st.event_was_full
    }

    /// What the last [`Pacer::throttled`] answered: whether a throttled
    /// call is worth an immediate retry (for a caller that learns of the
    /// throttle in one place and decides about the retry in another).
    pub fn retry_worthwhile(&self) -> bool {
        self.base.is_zero() || self.lock().event_was_full
    }

    /// Reports a successful attempt: wins back 1/[`RECOVERY_STEPS`] of the
    /// interval, up to the configured rate.
    pub fn succeeded(&self) {
        if self.base.is_zero() {
            return;
        }
        let mut st = self.lock();
        if st.interval > self.base {
            let step = st.interval / RECOVERY_STEPS;
            st.interval = st.interval.saturating_sub(step).max(self.base);
        }
    }

    /// The rate in force, in calls per second (0 when not paced): the
    /// configured one, or less while backing off from throttling.
    #[cfg(test)]
    pub fn current_rate(&self) -> f64 {
        let st = self.lock();
        if st.interval.is_zero() {
            0.0
        } else {
            1.0 / st.interval.as_secs_f64()
        }
    }

    /// Reserves the next slot at or after `now` and returns when it starts.
    fn reserve(&self, now: Instant) -> Reservation {
        let mut st = self.lock();
        let tolerance = st.tolerance(self.base, self.burst);
        let base = match st.tat {
            Some(t) if t > now => t,
            Some(_) => now,
            // An empty bucket at first use: as if `burst` calls had just
            // been sent, so this one goes now and the next one interval later.
            None if self.start_empty => now + tolerance,
            None => now,
        };
        let new_tat = base + st.interval;
        st.tat = Some(new_tat);
        // The slot may start `tolerance` before `base`: that is the burst.
        let send_at = base.checked_sub(tolerance).unwrap_or(now).max(now);
        Reservation {
            send_at,
            tat: new_tat,
            interval: st.interval,
            epoch: st.epoch,
        }
    }

    /// Locks the state; a poisoned lock still holds valid instants and
    /// durations (the critical sections cannot panic half-way), so
    /// poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
#[derive(Clone, Copy)]
struct Reservation {
    /// When the caller may send.
    send_at: Instant,
    /// The theoretical arrival time right after this reservation.
    tat: Instant,
    /// The interval the reservation advanced the arrival time by.
    interval: Duration,
    /// The pacer's slow-down count when the slot was reserved.
    epoch: u64,
}

/// Gives a reserved slot back if `acquire` is cancelled while sleeping.
struct Refund<'a> {
    pacer: &'a Pacer,
    /// `Some` while the reservation is outstanding.
    reserved: Option<Reservation>,
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        let Some(reserved) = self.reserved else {
            return;
        };
        let mut st = self.pacer.lock();
        // Only the newest reservation can be returned without handing a
        // slot that is already promised to a later waiter to someone else.
        if st.tat == Some(reserved.tat) {
            st.tat = reserved.tat.checked_sub(reserved.interval);
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

    #[tokio::test(start_paused = true)]
    async fn for_rate_starts_empty_then_refills_while_idle() {
        let pacer = Arc::new(Pacer::for_rate(20));
        let times = run(Arc::clone(&pacer), 3).await;
        // One call at once, then one per 50 ms: no burst at first use.
        assert_eq!(
            times,
            vec![
                Duration::ZERO,
                Duration::from_millis(50),
                Duration::from_millis(100)
            ]
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let times = run(pacer, 10).await;
        assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_slows_the_rate_down_to_the_floor() {
        let pacer = Pacer::new(20, 10);
        assert_eq!(pacer.current_rate(), 20.0);
        // The first throttle at full rate halves the rate and is worth a
        // retry (a stray throttle).
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(pacer.throttled(sent));
        assert!(pacer.retry_worthwhile());
        assert_eq!(pacer.current_rate(), 10.0);
        // Throttles of calls sent before that decrease: the same congestion
        // event, with the same verdict.
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(pacer.throttled(sent));
        assert!(pacer.throttled(sent));
        assert_eq!(pacer.current_rate(), 10.0);
        // One interval later, a throttle is a new event: halved again, and
        // no longer worth a retry (the pacer was backing off already).
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!pacer.throttled(Instant::now()));
        assert!(!pacer.retry_worthwhile());
        assert_eq!(pacer.current_rate(), 5.0);
        for _ in 0..30 {
            tokio::time::advance(MAX_INTERVAL).await;
            assert!(!pacer.throttled(Instant::now()));
        }
        assert_eq!(pacer.current_rate(), 1.0 / MAX_INTERVAL.as_secs_f64());
    }

    /// Calls queued at the full rate before a throttle do not go out at
    /// that rate: they queue again at the new one.
    #[tokio::test(start_paused = true)]
    async fn waiters_queued_before_a_throttle_take_new_slots() {
        let pacer = Arc::new(Pacer::for_rate(20));
        let start = Instant::now();
        let waiters = {
            let p = Arc::clone(&pacer);
            tokio::spawn(async move { run(p, 5).await })
        };
        // Slots at 0, 50, ..., 200 ms are reserved; a throttle at 10 ms.
        tokio::time::sleep(Duration::from_millis(10)).await;
        pacer.throttled(Instant::now());
        let times = waiters.await.expect("waiters");
        // The first went at once; the other four at the new 100 ms spacing,
        // the first of them one new interval after the throttle.
        assert_eq!(times[0], Duration::ZERO);
        for pair in times[1..].windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{times:?}");
        }
        assert!(times[1] >= Duration::from_millis(110), "{times:?}");
        assert!(Instant::now() - start >= Duration::from_millis(410));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_pacer_sends_one_call_per_new_interval() {
        let pacer = Arc::new(Pacer::new(10, 5));
        pacer.throttled(Instant::now());
        let start = Instant::now();
        let times = run(pacer, 3).await;
        // 5/s, no burst, and the first slot one interval after the throttle.
        let expected: Vec<Duration> = [200, 400, 600]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(times, expected, "from {start:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_win_the_rate_back_up_to_the_configured_one() {
        let pacer = Pacer::new(20, 10);
        pacer.throttled(Instant::now());
        let mut steps = 0;
        while pacer.current_rate() < 20.0 {
            pacer.succeeded();
            steps += 1;
            assert!(steps < 1_000, "never recovered");
        }
        // One halving is won back in about ln 2 × RECOVERY_STEPS calls.
        assert!((80..=100).contains(&steps), "{steps}");
        pacer.succeeded();
        assert_eq!(pacer.current_rate(), 20.0);
        // Back at full rate: the next throttle is a stray one again.
        assert!(pacer.throttled(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_pacer_ignores_feedback() {
        let pacer = Pacer::new(0, 0);
        assert!(pacer.throttled(Instant::now()));
        assert!(pacer.throttled(Instant::now()));
        pacer.succeeded();
        assert_eq!(pacer.current_rate(), 0.0);
        let times = run(Arc::new(pacer), 10).await;
        assert!(times.iter().all(|t| t.is_zero()));
    }

    /// A shared quota (token bucket) in virtual time, as AWS keeps one per
    /// account.
    struct Quota {
        tokens: f64,
        per_second: f64,
        burst: f64,
        at: Instant,
    }

    impl Quota {
        fn take(&mut self) -> bool {
            let now = Instant::now();
            let refill = (now - self.at).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// The property the congestion control exists for: many hosts, each
    /// pacing at its own full rate, share one quota; they settle near the
    /// quota with few throttled attempts, whatever their number.
    #[tokio::test(start_paused = true)]
    async fn a_fleet_of_pacers_settles_under_a_shared_quota() {
        const HOSTS: usize = 200;
        const RUN: Duration = Duration::from_secs(600);
        let quota = Arc::new(Mutex::new(Quota {
            tokens: 50.0,
            per_second: 50.0,
            burst: 50.0,
            at: Instant::now(),
        }));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..HOSTS {
            let quota = Arc::clone(&quota);
            tasks.push(tokio::spawn(async move {
                let pacer = Pacer::for_rate(20);
                let (mut ok, mut throttled) = (0u64, 0u64);
                while Instant::now() - start < RUN {
                    pacer.acquire().await;
                    let sent = Instant::now();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let granted = quota.lock().expect("quota").take();
                    if granted {
                        ok += 1;
                        pacer.succeeded();
                    } else {
                        throttled += 1;
                        pacer.throttled(sent);
                    }
                }
                (ok, throttled)
            }));
        }
        let (mut ok, mut throttled) = (0, 0);
        for t in tasks {
            let (o, th) = t.await.expect("host");
            ok += o;
            throttled += th;
        }
        let fraction = throttled as f64 / (ok + throttled) as f64;
        let throughput = ok as f64 / RUN.as_secs_f64();
        // Without feedback: 4,000 calls/s offered against 50, 99 % of them
        // throttled. With it ~9 %, most of it while 200 hosts come down from
        // 20 calls/s each to their share (the engine's own figures, with
        // passes that end, are in examples/fleet_bench.rs).
        assert!(fraction < 0.12, "{:.1} % throttled", fraction * 100.0);
        assert!(throughput > 0.8 * 50.0, "{throughput:.1} calls/s");
    }
}
