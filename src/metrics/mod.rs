//! Operational metrics in the Prometheus text format.
//!
//! One [`Metrics`] per agent. The engine records passes, latencies, secret
//! states and reloads; the AWS store's SDK interceptor records calls,
//! throttles and retries. [`server`] serves [`Metrics::render`] at
//! `GET /metrics` when `agent.metrics_listen` is set. Labels are sync names,
//! operation names, states and outcome classes only: never secret names
//! (unbounded, and they can be sensitive) and never values.

pub mod server;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Secret states as they appear in the `state` label (and in status).
const STATES: [&str; 7] = [
    "PENDING", "SYNCED", "CONFLICT", "ERROR", "DELETED", "RETAINED", "SKIPPED",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabel {
    sync: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    sync: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    sync: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Buckets for pass duration and propagation latency: 5 ms … ~82 s,
/// doubling (a pass against AWS takes tens of ms; an outage, minutes).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// How many of a sync's secrets are in each state; plain numbers, so the
/// metrics know nothing of the status or report models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretCounts {
    /// Waiting for a pass.
    pub pending: usize,
    /// In step with the files.
    pub synced: usize,
    /// Left untouched: owned by someone else.
    pub conflict: usize,
    /// Failed on their own.
    pub error: usize,
    /// Scheduled for deletion by the agent.
    pub deleted: usize,
    /// Kept although their key left the files.
    pub retained: usize,
    /// Skipped on purpose (one-to-one keys with an empty value).
    pub skipped: usize,
}

/// The agent's metrics: cheap to update from any task (atomics and a
/// read-mostly lock per family), rendered on scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    passes: Family<PassLabels, Counter>,
    pass_duration: HistogramFamily<SyncLabel>,
    propagation: HistogramFamily<SyncLabel>,
    aws_calls: Family<CallLabels, Counter>,
    throttles: Family<OpLabel, Counter>,
    retries: Family<OpLabel, Counter>,
    secrets: Family<StateLabels, Gauge>,
    last_success: Family<SyncLabel, Gauge<f64, AtomicU64>>,
    reloads: Family<OutcomeLabel, Counter>,
    reload_ok: Gauge,
    rotation_conflicts: Family<SyncLabel, Counter>,
    identity_collisions: Family<SyncLabel, Counter>,
    state_persisted: Gauge,
    /// Syncs with series, so series of syncs removed from the config go too.
    known_syncs: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `secretsync_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("secretsync");
        let passes = Family::<PassLabels, Counter>::default();
        registry.register(
            "passes",
            "Reconcile passes finished, by sync and resulting sync_status",
            passes.clone(),
        );
        let pass_duration: HistogramFamily<SyncLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "pass_duration_seconds",
            "Duration of reconcile passes (read files, read AWS, plan, apply)",
            pass_duration.clone(),
        );
        let propagation: HistogramFamily<SyncLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "propagation_seconds",
            "From the first file event of a burst to the end of the pass that wrote it to AWS",
            propagation.clone(),
        );
        let aws_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "AWS API calls (retries included once), by operation and final outcome",
            aws_calls.clone(),
        );
        let throttles = Family::<OpLabel, Counter>::default();
        registry.register(
            "aws_throttles",
            "AWS attempts answered with a throttling error",
            throttles.clone(),
        );
        let retries = Family::<OpLabel, Counter>::default();
        registry.register(
            "aws_retries",
            "AWS attempts that were retries of an earlier attempt",
            retries.clone(),
        );
        let secrets = Family::<StateLabels, Gauge>::default();
        registry.register(
            "secrets",
            "Secrets per sync and state, as in the status document",
            secrets.clone(),
        );
        let last_success = Family::<SyncLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last pass that ended SYNCED and applied, per sync",
            last_success.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or reload), by outcome",
            reloads.clone(),
        );
        let reload_ok = Gauge::default();
        reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), 0 if it was rejected",
            reload_ok.clone(),
        );
        let rotation_conflicts = Family::<SyncLabel, Counter>::default();
        registry.register(
            "rotation_conflicts",
            "Secrets a pass left untouched because AWS rotation is enabled on them (counted every pass while it lasts)",
            rotation_conflicts.clone(),
        );
        let identity_collisions = Family::<SyncLabel, Counter>::default();
        registry.register(
            "identity_collisions",
            "Secrets a pass left untouched because another install sharing this agent.id and sync wrote them (counted every pass while it lasts)",
            identity_collisions.clone(),
        );
        let state_persisted = Gauge::default();
        registry.register(
            "state_persisted",
            "1 while state_dir saves succeed, 0 when the last save failed (read-only or full)",
            state_persisted.clone(),
        );
        Metrics {
            rotation_conflicts,
            identity_collisions,
            state_persisted,
            registry,
            passes,
            pass_duration,
            propagation,
            aws_calls,
            throttles,
            retries,
            secrets,
            last_success,
            reloads,
            reload_ok,
            known_syncs: Mutex::new(BTreeSet::new()),
        }
    }

    /// A pass of `sync` finished with `status` (e.g. `SYNCED`) after `took`.
    pub fn pass_finished(&self, sync: &str, status: &str, took: Duration) {
        self.passes
            .get_or_create(&PassLabels {
                sync: sync.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.pass_duration
            .get_or_create(&SyncLabel {
                sync: sync.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A file change of `sync` reached AWS `latency` after its first event.
    pub fn propagated(&self, sync: &str, latency: Duration) {
        self.propagation
            .get_or_create(&SyncLabel {
                sync: sync.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// `sync` ended a pass SYNCED at `unix_seconds`.
    pub fn sync_succeeded(&self, sync: &str, unix_seconds: f64) {
        self.last_success
            .get_or_create(&SyncLabel {
                sync: sync.to_owned(),
            })
            .set(unix_seconds);
    }

    /// One AWS API call ended with `outcome` (`ok`, `throttled`, …).
    pub fn aws_call(&self, operation: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&CallLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One attempt of `operation` was throttled.
    pub fn aws_throttled(&self, operation: &str) {
        self.throttles
            .get_or_create(&OpLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// One attempt of `operation` was a retry.
    pub fn aws_retried(&self, operation: &str) {
        self.retries
            .get_or_create(&OpLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// A pass of `sync` left `n` secrets untouched because AWS rotation is
    /// turned on for them (CONFLICT, or kept instead of deleted). A counter,
    /// so `increase()` over any window shows a rotation fight the agent is
    /// declining; no series until the first one.
    pub fn rotation_conflicts(&self, sync: &str, n: usize) {
        if n == 0 {
            return;
        }
        self.rotation_conflicts
            .get_or_create(&SyncLabel {
                sync: sync.to_owned(),
            })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A pass of `sync` left `n` secrets alone because another install with
    /// the same identity wrote them (two hosts sharing an `agent.id`).
    pub fn identity_collisions(&self, sync: &str, n: usize) {
        if n == 0 {
            return;
        }
        self.identity_collisions
            .get_or_create(&SyncLabel {
                sync: sync.to_owned(),
            })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Whether the last save of `state_dir` succeeded.
    pub fn state_persisted(&self, ok: bool) {
        self.state_persisted.set(i64::from(ok));
    }

    /// A config reload succeeded or was rejected.
    pub fn config_reload(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.reload_ok.set(i64::from(ok));
    }

    /// Sets the per-state secret gauges, one entry per configured sync, and
    /// drops the series of syncs that are no longer listed.
    pub fn observe_secrets<'a>(&self, syncs: impl IntoIterator<Item = (&'a str, SecretCounts)>) {
        let syncs: Vec<(&str, SecretCounts)> = syncs.into_iter().collect();
        let now: BTreeSet<String> = syncs.iter().map(|(name, _)| (*name).to_owned()).collect();
        // A poisoned lock only means another thread panicked mid-update; the
        // set is still a valid set of names.
        let mut known = self
            .known_syncs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in known.difference(&now) {
            for state in STATES {
                self.secrets.remove(&StateLabels {
                    sync: gone.clone(),
                    state: state.to_owned(),
                });
            }
            let label = SyncLabel { sync: gone.clone() };
            self.last_success.remove(&label);
            self.rotation_conflicts.remove(&label);
            self.identity_collisions.remove(&label);
        }
        for (name, c) in &syncs {
            let values = [
                c.pending, c.synced, c.conflict, c.error, c.deleted, c.retained, c.skipped,
            ];
            for (state, n) in STATES.iter().zip(values) {
                self.secrets
                    .get_or_create(&StateLabels {
                        sync: (*name).to_owned(),
                        state: (*state).to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        *known = now;
    }

    /// The whole exposition, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a
        // bug in a metric, and an empty scrape is the safe answer then.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "cannot encode metrics");
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests;
