//! When the agent's own timers fire, chosen so that a fleet sharing one
//! account does not fire them together (docs/fleet.md).
//!
//! AWS quotas are per account and Region, while each agent paces only its
//! own calls. Agents restarted by one deploy would otherwise run their drift
//! checks at the same second every interval, and retry a throttled startup
//! in lockstep. Pure functions: the caller passes the random numbers, so the
//! rules are tested with tables and the fleet benchmark
//! (`examples/fleet_bench.rs`) drives the same code.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Each drift check moves by up to this fraction of the interval, either way.
pub const DRIFT_JITTER: f64 = 0.05;

/// Window of the first full-jitter retry of a throttled startup pass; it
/// doubles per failure up to [`FIRST_PASS_WINDOW_MAX`].
pub const FIRST_PASS_WINDOW: Duration = Duration::from_secs(30);

/// Largest window of a throttled startup pass's retry.
pub const FIRST_PASS_WINDOW_MAX: Duration = Duration::from_secs(300);

/// A stable number in `[0, 1)` for this agent: its drift checks' place in
/// the interval. From the install id as well as `agent.id`, so hosts
/// cloned with the same id still spread out.
pub fn drift_phase(agent_id: &str, install_id: Option<&str>) -> f64 {
    let mut h = Sha256::new();
    h.update(b"secretsync drift phase\0");
    h.update(agent_id.as_bytes());
    h.update(b"\0");
    h.update(install_id.unwrap_or("").as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable, and strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Drift checks at `start + (k + phase) × interval` for k = 1, 2, …, each
/// moved by at most [`DRIFT_JITTER`] of the interval (not cumulative, so
/// the fleet's spread does not wander). The start stays across reloads.
#[derive(Debug, Clone, Copy)]
pub struct DriftSchedule {
    start: Instant,
    phase: f64,
}

impl DriftSchedule {
    /// A schedule anchored at the agent's start; `phase` from [`drift_phase`].
    pub fn new(start: Instant, phase: f64) -> Self {
        Self {
            start,
            phase: phase.clamp(0.0, 1.0),
        }
    }

    /// The first check whose unjittered time is after `now` (at least 1).
    pub fn index_after(&self, now: Instant, interval: Duration) -> u64 {
        if interval.is_zero() {
            return 1;
        }
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let position = elapsed / interval.as_secs_f64() - self.phase;
        // Saturating float-to-int cast: negative positions give 0.
        (position.floor() as u64).saturating_add(1).max(1)
    }

    /// When check `k` runs; `jitter` in `[-1, 1]` scales [`DRIFT_JITTER`].
    pub fn at(&self, k: u64, interval: Duration, jitter: f64) -> Instant {
        let slots = k as f64 + self.phase + jitter.clamp(-1.0, 1.0) * DRIFT_JITTER;
        self.start + interval.mul_f64(slots.max(0.0))
    }

    /// The next check after check `fired` ran at `now`: the following one,
    /// or a later one if the agent fell behind (a suspended host).
    pub fn next(&self, fired: u64, now: Instant, interval: Duration) -> u64 {
        (fired + 1).max(self.index_after(now, interval))
    }
}

/// Retry delay of a startup pass AWS throttled: "full jitter", uniform in
/// `[0, W)` with W = [`FIRST_PASS_WINDOW`] × 2^(failures − 1), capped. A
/// fleet restarted together then comes back spread over W instead of in
/// the ±20 % band of the usual backoff. `unit` is uniform in `[0, 1)`.
pub fn first_pass_retry(failures: u32, unit: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let window = FIRST_PASS_WINDOW
        .saturating_mul(1u32 << doublings)
        .min(FIRST_PASS_WINDOW_MAX);
    window.mul_f64(unit.clamp(0.0, 1.0))
}

/// How long the startup pass waits under `agent.start_jitter`.
pub fn start_delay(start_jitter: Duration, unit: f64) -> Duration {
    start_jitter.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn phase_is_stable_spread_and_depends_on_both_ids() {
        let a = drift_phase("web-01", Some("i-1"));
        assert_eq!(a, drift_phase("web-01", Some("i-1")));
        assert_ne!(a, drift_phase("web-01", Some("i-2")), "cloned agent.id");
        assert_ne!(a, drift_phase("web-02", Some("i-1")));
        assert_ne!(drift_phase("ab", Some("c")), drift_phase("a", Some("bc")));
        // 1,000 hosts fill ten equal bins within ±40 %.
        let mut bins = [0u32; 10];
        for i in 0..1000 {
            let p = drift_phase(&format!("web-{i:04}"), None);
            assert!((0.0..1.0).contains(&p), "{p}");
            bins[(p * 10.0) as usize] += 1;
        }
        assert!(bins.iter().all(|b| (60..=140).contains(b)), "{bins:?}");
    }

    #[test]
    fn index_after_table() {
        let start = Instant::now();
        let s = DriftSchedule::new(start, 0.25);
        // (elapsed, expected index): check k is due at (k + 0.25) minutes.
        let cases = [
            (0.0, 1),
            (1.0, 1),
            (1.24, 1),
            (1.25, 2), // check 1 is due exactly now: the next one is 2
            (1.26, 2),
            (5.3, 6),
        ];
        for (minutes, want) in cases {
            let now = start + MIN.mul_f64(minutes);
            assert_eq!(s.index_after(now, MIN), want, "at {minutes} min");
            assert!(s.at(want, MIN, 0.0) > now);
        }
        assert_eq!(s.index_after(start, Duration::ZERO), 1);
    }

    #[test]
    fn checks_keep_their_slot_and_jitter_stays_in_band() {
        let start = Instant::now();
        let s = DriftSchedule::new(start, 0.5);
        assert_eq!(s.at(1, MIN, 0.0), start + Duration::from_secs(90));
        assert_eq!(s.at(3, MIN, 1.0), start + Duration::from_secs(213));
        assert_eq!(s.at(3, MIN, -1.0), start + Duration::from_secs(207));
        assert_eq!(s.at(3, MIN, 7.0), s.at(3, MIN, 1.0), "clamped");
        // After a check fired early (negative jitter) the next is k + 1,
        // never the same check again.
        let fired_at = s.at(3, MIN, -1.0);
        assert_eq!(s.next(3, fired_at, MIN), 4);
        // A host suspended for ten minutes skips the missed checks.
        assert_eq!(s.next(3, start + MIN * 13, MIN), 13);
    }

    #[test]
    fn first_pass_retry_is_full_jitter_over_a_doubling_window() {
        let cases = [
            (1, 0.0, 0),
            (1, 0.5, 15),
            (1, 0.999, 29),
            (2, 0.5, 30),
            (3, 0.5, 60),
            (4, 0.5, 120),
            (5, 0.5, 150), // capped at 300 s
            (40, 0.5, 150),
            (0, 0.5, 15),
        ];
        for (failures, unit, secs) in cases {
            assert_eq!(
                first_pass_retry(failures, unit).as_secs(),
                secs,
                "failures {failures}, unit {unit}"
            );
        }
    }

    #[test]
    fn start_delay_is_a_fraction_of_the_setting() {
        assert_eq!(start_delay(Duration::ZERO, 0.7), Duration::ZERO);
        assert_eq!(start_delay(MIN, 0.5), Duration::from_secs(30));
        assert_eq!(start_delay(MIN, 2.0), MIN);
    }
}
