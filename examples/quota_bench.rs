//! Quota benchmark: how close a large initial sync gets to the configured
//! write rate against an AWS-like store, and what the engine costs per
//! secret when the network costs nothing.
//!
//! moto (Python) tops out at a few hundred calls per second, far from AWS's
//! behaviour, so this drives the real reconcile pass
//! (`reconcile::run_pass`, the code `secretsync sync` and the agent run)
//! against the in-memory store set up to behave like AWS for throughput:
//! - 20 ms latency on every call (page, batch or write);
//! - AWS-style quotas, answered with `ThrottlingException` beyond them: one
//!   50-TPS bucket shared by *all* write operations (stricter than AWS, which
//!   has separate 50-TPS buckets per group of operations) and a 100-TPS
//!   bucket for reads (`ListSecrets`, `BatchGetSecretValue`);
//! - the AWS store's own client-side pacing: the memory store takes a token
//!   per call from the same `Pacer` (same burst rule) that `AwsStore` uses,
//!   because pacing lives in the AWS store, not in the engine, and a memory
//!   store without it would measure nothing.
//!
//! The sync is built from a real `agent.yaml` by `SyncJob::from_config`, so
//! `max_write_tps` / `max_read_tps` reach the store exactly as configured.
//! Paced runs use tokio's paused clock (virtual time: exact and fast; CPU time
//! is not counted there, which is what the overhead measurement and the
//! optional real-time run cover).
//!
//! Run: `cargo run --release --example quota_bench -- [--quick]`
//! (`scripts/bench.sh` does). Prints Markdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secretsync::config::parse_config;
use secretsync::reconcile::plan::TokenKey;
use secretsync::reconcile::report::SyncStatus;
use secretsync::reconcile::state::SyncState;
use secretsync::reconcile::{self, Mode, SyncJob};
use secretsync::store::memory::{MemoryStore, Quota, WRITE_OPS};

#[path = "../benches/support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu;

/// AWS-like latency per call.
const LATENCY: Duration = Duration::from_millis(20);
/// The write quota the store enforces (AWS: 50 TPS per write group).
const WRITE_QUOTA: Quota = Quota {
    per_second: 50,
    burst: 50,
};
/// The read quota the store enforces (AWS: 100 TPS for BatchGetSecretValue).
const READ_QUOTA: Quota = Quota {
    per_second: 100,
    burst: 100,
};
/// Goal: sustained write rate ≥ 90% of `max_write_tps`.
const TPS_GOAL: f64 = 0.90;
/// Goal: engine overhead ≤ 50 µs per secret.
const OVERHEAD_GOAL_US: f64 = 50.0;

struct Args {
    keys: usize,
    rates: Vec<u32>,
    real_keys: usize,
    real_rate: u32,
    overhead_keys: usize,
    repeats: usize,
}

fn args() -> Args {
    let quick = std::env::args().any(|a| a == "--quick");
    if quick {
        Args {
            keys: 5_000,
            rates: vec![20, 45, 50],
            real_keys: 0,
            real_rate: 50,
            overhead_keys: 5_000,
            repeats: 3,
        }
    } else {
        Args {
            keys: 5_000,
            rates: vec![20, 45, 50],
            real_keys: 2_000,
            real_rate: 50,
            overhead_keys: 5_000,
            repeats: 7,
        }
    }
}

/// A sync of `keys` keys in `dir`, built from agent.yaml text as the agent
/// builds it.
fn job(dir: &Path, keys: usize, max_write_tps: u32) -> SyncJob {
    let env = dir.join("app.env");
    write_env(&env, keys, &[]);
    let yaml = format!(
        "agent:\n  id: bench\n  state_dir: {d}/state\n  socket: {d}/ctl.sock\n\
         aws:\n  region: us-east-1\n  max_write_tps: {max_write_tps}\n\
         syncs:\n  - name: bench\n    source:\n      files: [{env}]\n    destination:\n      key_schema: \"bench/{{{{secretKey}}}}\"\n",
        d = dir.display(),
        env = env.display(),
    );
    let config = parse_config(&dir.join("agent.yaml"), &yaml, &|_| None)
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    SyncJob::from_config(&config, &config.syncs[0]).with_token_key(TokenKey([7; 32]))
}

/// `keys` keys; those in `changed` get a different value.
fn write_env(path: &Path, keys: usize, changed: &[usize]) {
    let text: String = (0..keys)
        .map(|i| {
            let generation = u8::from(changed.binary_search(&i).is_ok());
            format!("KEY_{i:05}=value-{generation}-{i:05}-abcdefghij\n")
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write env");
    std::fs::rename(&tmp, path).expect("rename env");
}

/// A store that behaves like AWS for throughput, paced as `job` says.
fn aws_like_store(job: &SyncJob) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    store.set_latency(LATENCY);
    store.set_pacing(job.connection.max_read_tps, job.connection.max_write_tps);
    store.set_write_quota(Some(WRITE_QUOTA));
    store.set_read_quota(Some(READ_QUOTA));
    store.record_call_times(true);
    store
}

struct Paced {
    rate: u32,
    keys: usize,
    clock: &'static str,
    total: Duration,
    reads: usize,
    writes: usize,
    write_phase: Duration,
    max_in_one_second: usize,
    throttled: u64,
}

impl Paced {
    fn whole_pass_tps(&self) -> f64 {
        self.writes as f64 / self.total.as_secs_f64()
    }
    fn write_phase_tps(&self) -> f64 {
        (self.writes.saturating_sub(1)) as f64 / self.write_phase.as_secs_f64()
    }
}

/// One initial sync of `keys` keys at `rate` writes/s; `paused` = virtual time.
fn paced_run(dir: &Path, keys: usize, rate: u32, paused: bool) -> Paced {
    let job = job(dir, keys, rate);
    let store = aws_like_store(&job);
    let rt = if paused {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("runtime");
    let (pass, total) = rt.block_on(async {
        let start = tokio::time::Instant::now();
        let pass = reconcile::run_pass(
            Arc::clone(&store),
            &job,
            Mode::Apply,
            false,
            &SyncState::default(),
        )
        .await;
        (pass, start.elapsed())
    });
    assert_eq!(
        pass.report.sync_status,
        SyncStatus::Synced,
        "initial sync at {rate}/s did not finish: {:?}",
        pass.report.last_sync_message
    );
    assert_eq!(store.names().len(), keys, "every key created");
    let times = store.call_times();
    let writes: Vec<tokio::time::Instant> = times
        .iter()
        .filter(|(op, _)| WRITE_OPS.contains(op))
        .map(|(_, t)| *t)
        .collect();
    // Most writes sent within any one second (sliding window).
    let mut max_in_one_second = 0;
    let mut lo = 0;
    for hi in 0..writes.len() {
        while writes[hi] - writes[lo] >= Duration::from_secs(1) {
            lo += 1;
        }
        max_in_one_second = max_in_one_second.max(hi - lo + 1);
    }
    Paced {
        rate,
        keys,
        clock: if paused { "virtual" } else { "real" },
        total,
        reads: times.len() - writes.len(),
        writes: writes.len(),
        write_phase: match (writes.first(), writes.last()) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        },
        max_in_one_second,
        throttled: store.throttled(),
    }
}

/// One overhead sample: CPU per secret of the whole pass, and of the same
/// store calls made directly (what the store itself costs).
struct Sample {
    pass: f64,
    store: f64,
}

/// The calls a pass makes for `scenario`, made directly on a store in the
/// same state, so their CPU cost (the fake AWS's own work) can be taken off
/// the pass's.
async fn store_only(store: &MemoryStore, names: &[String], scenario: usize, keys: usize) {
    use secretsync::secret::SecretValue;
    use secretsync::store::{CreateSecret, SecretStore};
    let _ = store
        .list_owned(
            "bench",
            "bench",
            secretsync::store::OwnerFilter::Sync,
            usize::MAX,
        )
        .await;
    match scenario {
        0 => {
            let _ = store
                .list_by_prefix_capped("bench/", names.len() / 20)
                .await;
            for (i, name) in names.iter().enumerate() {
                let _ = store
                    .create_secret(&CreateSecret {
                        name: format!("{name}-direct"),
                        value: SecretValue::new(format!("value-{i}")),
                        tags: BTreeMap::new(),
                        kms_key_id: None,
                        description: None,
                        token: format!("{i:0>40}"),
                        replica_regions: vec![],
                    })
                    .await;
            }
        }
        _ => {
            let _ = store.get_values(names).await;
            if scenario == 2 {
                for (i, name) in names.iter().enumerate().step_by(10).take(keys / 10) {
                    let _ = store
                        .put_value(
                            name,
                            &SecretValue::new(format!("direct-{i}")),
                            &format!("d{i:0>40}"),
                        )
                        .await;
                }
            }
        }
    }
}

/// Median CPU time per secret (µs) of an initial, a no-op and a 10%-change
/// pass over `keys` keys with a zero-latency, unpaced store, and of the same
/// store calls made directly; the difference is the engine's own cost
/// (files, desired, plan, apply bookkeeping, report, state).
fn overhead(dir: &Path, keys: usize, repeats: usize) -> Vec<(&'static str, Sample)> {
    const SCENARIOS: [&str; 3] = [
        "initial (all created)",
        "no-op (all unchanged)",
        "10% changed",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); SCENARIOS.len()];
    let names: Vec<String> = (0..keys).map(|i| format!("bench/KEY_{i:05}")).collect();
    let per_us = |d: Duration| d.as_secs_f64() * 1e6 / keys as f64;
    for _ in 0..repeats {
        let job = job(dir, keys, 20);
        let store = Arc::new(MemoryStore::new());
        let mut state = SyncState::default();
        let env = PathBuf::from(&job.files[0]);
        let tenth: Vec<usize> = (0..keys).step_by(10).collect();
        for (i, name) in SCENARIOS.iter().enumerate() {
            if i == 2 {
                write_env(&env, keys, &tenth);
            }
            // The store's cost for the same calls, on a copy in the same state.
            let twin = MemoryStore::new();
            for n in store.names() {
                if let Some((meta, value)) = store.get(&n) {
                    twin.insert(meta, value);
                }
            }
            let t = thread_cpu();
            rt.block_on(store_only(&twin, &names, i, keys));
            let store_cpu = thread_cpu() - t;
            let t = thread_cpu();
            let pass = rt.block_on(reconcile::run_pass(
                Arc::clone(&store),
                &job,
                Mode::Apply,
                false,
                &state,
            ));
            if let (Some(plan), Some(applied)) = (&pass.plan, &pass.applied) {
                reconcile::record_state(&mut state, plan, applied);
            }
            state.initial_sync_done = true;
            let pass_cpu = thread_cpu() - t;
            assert_eq!(pass.report.sync_status, SyncStatus::Synced, "{name}");
            samples[i].push((per_us(pass_cpu), per_us(store_cpu)));
        }
    }
    SCENARIOS
        .iter()
        .zip(samples)
        .map(|(name, mut v)| {
            v.sort_by(|a, b| (a.0 - a.1).total_cmp(&(b.0 - b.1)));
            let (pass, store) = v[v.len() / 2];
            (*name, Sample { pass, store })
        })
        .collect()
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut runs = Vec::new();
    for &rate in &args.rates {
        runs.push(paced_run(dir.path(), args.keys, rate, true));
    }
    if args.real_keys > 0 {
        runs.push(paced_run(dir.path(), args.real_keys, args.real_rate, false));
    }
    println!(
        "Initial sync through the real reconcile pass against the in-memory store with \
         {} ms latency per call, a {}-TPS write quota (one bucket for all writes, burst {}) and a \
         {}-TPS read quota; the store paces exactly as the AWS store does (`max_read_tps` 50, \
         burst = half a second of calls). Goal: whole-pass write rate ≥ {:.0}% of `max_write_tps`, \
         0 throttles.\n",
        LATENCY.as_millis(),
        WRITE_QUOTA.per_second,
        WRITE_QUOTA.burst,
        READ_QUOTA.per_second,
        TPS_GOAL * 100.0
    );
    println!(
        "| `max_write_tps` | keys | clock | pass time | reads | writes | write rate, whole pass (÷ configured) | write rate, write phase | most writes in any 1 s | throttled | met |"
    );
    println!("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|");
    for r in &runs {
        let ratio = r.whole_pass_tps() / f64::from(r.rate);
        println!(
            "| {} | {} | {} | {:.1} s | {} | {} | {:.1}/s ({:.1}%) | {:.1}/s | {} | {} | {} |",
            r.rate,
            r.keys,
            r.clock,
            r.total.as_secs_f64(),
            r.reads,
            r.writes,
            r.whole_pass_tps(),
            ratio * 100.0,
            r.write_phase_tps(),
            r.max_in_one_second,
            r.throttled,
            yes(ratio >= TPS_GOAL && r.throttled == 0),
        );
    }
    let over = overhead(dir.path(), args.overhead_keys, args.repeats);
    println!(
        "\nEngine overhead per secret, {} keys, zero latency, no pacing: CPU time of the whole pass \
         (read files, desired, read the store, plan, apply, report, state) minus the CPU time of the \
         same store calls made directly (the fake AWS's own work, standing in for the network), \
         median of {} runs. Goal ≤ {OVERHEAD_GOAL_US} µs.\n",
        args.overhead_keys, args.repeats
    );
    println!(
        "| pass | engine per secret | whole pass per secret | of which the store itself | met |\n|---|--:|--:|--:|---|"
    );
    for (name, s) in &over {
        let engine = s.pass - s.store;
        println!(
            "| {name} | {engine:.1} µs | {:.1} µs | {:.1} µs | {} |",
            s.pass,
            s.store,
            yes(engine <= OVERHEAD_GOAL_US)
        );
    }
}
