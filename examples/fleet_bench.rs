//! Fleet benchmark: many agents on one AWS account.
//!
//! AWS quotas are per account and Region; every agent paces only its own
//! calls. This runs N real engines (`agent::engine::Engine`, the code of
//! `secretsync run`, one per simulated host with its own config, state
//! directory and `.env` of K keys) in one process against one in-memory
//! account that behaves like AWS for throughput:
//! - 20 ms latency per call;
//! - account-wide quotas answered with `ThrottlingException`: one 50-TPS
//!   bucket for all writes, one 100-TPS bucket for all reads (stricter than
//!   AWS, which has higher limits for `DescribeSecret`);
//! - per agent, the AWS store's own client-side pacing (`max_read_tps`,
//!   `max_write_tps`) with its congestion control (a throttled attempt
//!   slows the agent's pacer, see `store::pacing`), and the SDK's retries
//!   of throttled calls (standard mode: up to 5 attempts, full-jitter
//!   backoff from 1 s up to 20 s; none once the pacer is backing off).
//!
//! Scenarios, in order on one account: the fleet's first install, a restart
//! of every agent at once (a deploy), a rollout that changes one key on
//! every host within 60 s, and one hour of drift checks. Each is reported
//! against its quota-bound minimum. The first install and the restart run
//! again on a fresh account with the settings docs/fleet.md recommends
//! for a fleet: `agent.start_jitter` sized by the quota arithmetic and
//! each host paced at a tenth of the quotas ("fleet pacing": 5 writes/s,
//! 10 reads/s; `--write-tps` / `--read-tps` change it).
//!
//! Virtual time (tokio's paused clock): an hour of a 1,000-host fleet takes
//! seconds of CPU. Run: `cargo run --release --example fleet_bench --
//! [--quick] [--agents N] [--keys K] [--jittered-only] [--seed S]`
//! (`scripts/bench.sh` does). Prints Markdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretsync::agent::engine::{Engine, EngineHandle, Request};
use secretsync::config::load_config;
use secretsync::reconcile::report::SyncStatus;
use secretsync::store::memory::{MemoryStore, Quota, WRITE_OPS};
use secretsync::store::{Connection, StoreError, StoreFactory};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// AWS-like latency per call.
const LATENCY: Duration = Duration::from_millis(20);
/// The account's write quota (AWS: 50 TPS per group of write operations).
const WRITE_QUOTA: Quota = Quota {
    per_second: 50,
    burst: 50,
};
/// The account's read quota (AWS: 100 TPS for `BatchGetSecretValue` and
/// `ListSecrets`).
const READ_QUOTA: Quota = Quota {
    per_second: 100,
    burst: 100,
};
/// Rollout: every host gets its edit within this window.
const ROLLOUT_WINDOW: Duration = Duration::from_secs(60);
/// The drift scenario's length.
const DRIFT_RUN: Duration = Duration::from_secs(3600);
/// `reconcile_interval` of every agent.
const INTERVAL: Duration = Duration::from_secs(600);
/// A scenario that has not converged after this is reported as such.
const GIVE_UP: Duration = Duration::from_secs(6 * 3600);

/// Per-host pacing docs/fleet.md recommends on a fleet (writes, reads): a
/// tenth of each quota, so that the hosts busy at one moment are many small
/// senders, not two or three large ones.
const FLEET_TPS: (u32, u32) = (5, 10);

/// Goals (issue 16).
const CONVERGE_GOAL: f64 = 2.0;
const THROTTLED_GOAL: f64 = 0.05;
const STARVATION_GOAL: f64 = 3.0;

struct Args {
    agents: usize,
    keys: usize,
    /// Run only the scenarios with `start_jitter` (for tuning).
    jittered_only: bool,
    /// `aws.max_write_tps` / `max_read_tps` of the jittered scenarios' hosts
    /// (default: [`FLEET_TPS`]).
    tps: (u32, u32),
    /// Seed of the random start times, jitter and retries: the same seed
    /// gives the same run (everything runs on one thread).
    seed: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        agents: 1000,
        keys: 50,
        jittered_only: false,
        tps: FLEET_TPS,
        seed: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--quick" => a.agents = 200,
            "--agents" => a.agents = number(),
            "--keys" => a.keys = number(),
            "--jittered-only" => a.jittered_only = true,
            "--seed" => a.seed = Some(number() as u64),
            "--write-tps" => {
                a.tps.0 = u32::try_from(number()).expect("--write-tps fits u32");
            }
            "--read-tps" => {
                a.tps.1 = u32::try_from(number()).expect("--read-tps fits u32");
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Each agent gets its own client of the account: own pacers, own retries.
struct ClientFactory {
    account: Arc<MemoryStore>,
    client: Mutex<Option<Arc<MemoryStore>>>,
}

impl StoreFactory for ClientFactory {
    type Store = MemoryStore;
    async fn connect(&self, conn: &Connection) -> Result<Arc<MemoryStore>, StoreError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let client = slot.get_or_insert_with(|| {
            let c = self.account.client();
            c.set_pacing(conn.max_read_tps, conn.max_write_tps);
            c.set_sdk_retries(true);
            Arc::new(c)
        });
        Ok(Arc::clone(client))
    }
}

/// One simulated host's files.
struct Host {
    dir: PathBuf,
    env: PathBuf,
}

impl Host {
    fn new(
        root: &Path,
        i: usize,
        keys: usize,
        start_jitter: Duration,
        tps: Option<(u32, u32)>,
    ) -> Host {
        let dir = root.join(format!("host-{i:04}"));
        std::fs::create_dir_all(&dir).expect("host dir");
        let env = dir.join("app.env");
        write_env(&env, keys, None);
        let yaml = format!(
            "agent:\n  id: host-{i:04}\n  state_dir: {d}/state\n  socket: {d}/ctl.sock\n  \
             reconcile_interval: {interval}s\n  start_jitter: {jitter}ms\n\
             aws:\n  region: us-east-1\n{tps}\
             syncs:\n  - name: app\n    source:\n      files: [{env}]\n    destination:\n      \
             key_schema: \"host-{i:04}/{{{{secretKey}}}}\"\n",
            d = dir.display(),
            env = env.display(),
            interval = INTERVAL.as_secs(),
            jitter = start_jitter.as_millis(),
            tps = tps.map_or(String::new(), |(w, r)| format!(
                "  max_write_tps: {w}\n  max_read_tps: {r}\n"
            )),
        );
        std::fs::write(dir.join("agent.yaml"), yaml).expect("config");
        Host { dir, env }
    }
}

/// `keys` keys; key `changed` (if any) gets a new value.
fn write_env(path: &Path, keys: usize, changed: Option<usize>) {
    let text: String = (0..keys)
        .map(|k| {
            let generation = u8::from(changed == Some(k));
            format!("KEY_{k:03}=value-{generation}-{k:03}-abcdefghij\n")
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write env");
    std::fs::rename(&tmp, path).expect("rename env");
}

/// A running agent.
struct Agent {
    handle: EngineHandle,
    client: Arc<ClientFactory>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Shares the factory so the benchmark can read the agent's own counts.
struct SharedFactory(Arc<ClientFactory>);

impl StoreFactory for SharedFactory {
    type Store = MemoryStore;
    async fn connect(&self, conn: &Connection) -> Result<Arc<MemoryStore>, StoreError> {
        self.0.connect(conn).await
    }
}

fn start_agent(host: &Host, account: &Arc<MemoryStore>) -> Agent {
    let config = load_config(&host.dir.join("agent.yaml")).expect("valid config");
    let client = Arc::new(ClientFactory {
        account: Arc::clone(account),
        client: Mutex::new(None),
    });
    let (engine, handle) =
        Engine::new(config, SharedFactory(Arc::clone(&client)), false).expect("engine");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = stopped.await;
    }));
    Agent {
        handle,
        client,
        stop,
        task,
    }
}

async fn stop_all(agents: Vec<Agent>) {
    for a in agents {
        let _ = a.stop.send(());
        let _ = a.task.await;
    }
}

/// Waits until every agent's sync is SYNCED; each agent's time from `t0`
/// (`None`: not within [`GIVE_UP`]).
async fn times_to_synced(agents: &[Agent], t0: Instant) -> Vec<Option<Duration>> {
    let mut set = JoinSet::new();
    for (i, a) in agents.iter().enumerate() {
        let mut rx = a.handle.subscribe();
        set.spawn(async move {
            let deadline = t0 + GIVE_UP;
            loop {
                let synced = {
                    let s = rx.borrow_and_update();
                    !s.syncs.is_empty()
                        && s.syncs.iter().all(|v| v.sync_status == SyncStatus::Synced)
                };
                if synced {
                    return (i, Some(t0.elapsed()));
                }
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    return (i, None);
                }
            }
        });
    }
    let mut out = vec![None; agents.len()];
    while let Some(Ok((i, t))) = set.join_next().await {
        out[i] = t;
    }
    out
}

/// One scenario's figures.
struct Row {
    scenario: String,
    converge: Option<Duration>,
    minimum: Duration,
    peak_reads: u64,
    peak_writes: u64,
    calls: u64,
    throttled: u64,
    /// Max / median of the agents' own times (None when not measured).
    starvation: Option<f64>,
    per_agent_hour: Option<f64>,
}

impl Row {
    fn cells(&self) -> String {
        let secs = |d: Duration| format!("{:.0} s", d.as_secs_f64());
        let (converge, ratio, ok_converge) = match self.converge {
            Some(c) => {
                let r = c.as_secs_f64() / self.minimum.as_secs_f64().max(1e-9);
                (secs(c), format!("{r:.2}×"), r <= CONVERGE_GOAL)
            }
            None => ("not within 6 h".into(), "—".into(), false),
        };
        let throttled = self.throttled as f64 / (self.calls.max(1)) as f64;
        let starvation = self.starvation.map_or("—".into(), |s| format!("{s:.2}"));
        let ok = ok_converge
            && throttled < THROTTLED_GOAL
            && self.starvation.is_none_or(|s| s <= STARVATION_GOAL);
        format!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {:.1} % | {} | {} | {} |",
            self.scenario,
            converge,
            secs(self.minimum),
            ratio,
            self.peak_reads,
            READ_QUOTA.per_second,
            self.peak_writes,
            WRITE_QUOTA.per_second,
            throttled * 100.0,
            starvation,
            self.per_agent_hour
                .map_or("—".into(), |c| format!("{c:.1}")),
            if ok { "met" } else { "**missed**" },
        )
    }
}

/// Calls and throttles since `t0`, and the busiest second of each kind.
fn traffic(account: &MemoryStore, t0: Instant, until: Instant) -> (u64, u64, u64) {
    let mut reads: BTreeMap<u64, u64> = BTreeMap::new();
    let mut writes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut calls = 0;
    for (op, at) in account.call_times() {
        if at < t0 || at > until {
            continue;
        }
        calls += 1;
        let second = at.duration_since(t0).as_secs();
        let bucket = if WRITE_OPS.contains(&op) {
            &mut writes
        } else {
            &mut reads
        };
        *bucket.entry(second).or_default() += 1;
    }
    let peak = |m: &BTreeMap<u64, u64>| m.values().copied().max().unwrap_or(0);
    (calls, peak(&reads), peak(&writes))
}

fn starvation(times: &[Duration]) -> Option<f64> {
    let mut t: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    if t.is_empty() {
        return None;
    }
    t.sort_by(f64::total_cmp);
    let median = t[t.len() / 2].max(1e-3);
    Some(t[t.len() - 1] / median)
}

fn new_account() -> Arc<MemoryStore> {
    let account = Arc::new(MemoryStore::new());
    account.set_latency(LATENCY);
    account.set_write_quota(Some(WRITE_QUOTA));
    account.set_read_quota(Some(READ_QUOTA));
    account.record_call_times(true);
    account
}

/// Starts every agent at once and waits for all to be SYNCED.
async fn start_fleet(
    name: &str,
    hosts: &[Host],
    account: &Arc<MemoryStore>,
    minimum: Duration,
) -> (Vec<Agent>, Row) {
    let t0 = Instant::now();
    let throttled0 = account.throttled();
    let agents: Vec<Agent> = hosts.iter().map(|h| start_agent(h, account)).collect();
    let times = times_to_synced(&agents, t0).await;
    let done: Vec<Duration> = times.iter().flatten().copied().collect();
    let converge = (done.len() == times.len())
        .then(|| done.iter().max().copied())
        .flatten();
    let (calls, peak_reads, peak_writes) = traffic(account, t0, Instant::now());
    let row = Row {
        scenario: name.into(),
        converge,
        minimum,
        peak_reads,
        peak_writes,
        calls,
        throttled: account.throttled() - throttled0,
        starvation: starvation(&done),
        per_agent_hour: None,
    };
    (agents, row)
}

/// Changes one key on every host, each at a random time within the
/// window, and waits for every new value to be in the account.
async fn rollout(hosts: &[Host], agents: &[Agent], account: &Arc<MemoryStore>, keys: usize) -> Row {
    let t0 = Instant::now();
    let throttled0 = account.throttled();
    let changed = keys / 2;
    let mut offsets: Vec<(Duration, usize)> = (0..hosts.len())
        .map(|i| (ROLLOUT_WINDOW.mul_f64(fastrand::f64()), i))
        .collect();
    offsets.sort();
    let name = |i: usize| format!("host-{i:04}/KEY_{changed:03}");
    let want = format!("value-1-{changed:03}-abcdefghij");
    let mut edited_at = vec![None; hosts.len()];
    let mut landed: Vec<Option<Duration>> = vec![None; hosts.len()];
    let mut next = offsets.into_iter().peekable();
    let tick = Duration::from_millis(100);
    while landed.iter().any(Option::is_none) && t0.elapsed() < GIVE_UP {
        while let Some((_, i)) = next.next_if(|(at, _)| t0 + *at <= Instant::now()) {
            write_env(&hosts[i].env, keys, Some(changed));
            let _ = agents[i]
                .handle
                .send(Request::FilesChanged(vec![hosts[i].env.clone()]));
            edited_at[i] = Some(Instant::now());
        }
        for (i, slot) in landed.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(at) = edited_at[i] else { continue };
            let holds = account
                .get(&name(i))
                .and_then(|(_, v)| v)
                .is_some_and(|v| v.expose() == want);
            if holds {
                *slot = Some(at.elapsed());
            }
        }
        tokio::time::sleep(tick).await;
    }
    let converge = landed.iter().all(Option::is_some).then(|| t0.elapsed());
    let own: Vec<Duration> = landed.iter().flatten().copied().collect();
    let (calls, peak_reads, peak_writes) = traffic(account, t0, Instant::now());
    let writes_bound =
        Duration::from_secs_f64(hosts.len() as f64 / f64::from(WRITE_QUOTA.per_second));
    Row {
        scenario: format!(
            "rollout: one key on every host within {} s",
            ROLLOUT_WINDOW.as_secs()
        ),
        converge,
        minimum: ROLLOUT_WINDOW.max(writes_bound),
        peak_reads,
        peak_writes,
        calls,
        throttled: account.throttled() - throttled0,
        // Propagation after each host's own edit: the debounce is the floor.
        starvation: starvation(&own),
        per_agent_hour: None,
    }
}

/// An hour of nothing but drift checks.
async fn drift_hour(agents: &[Agent], account: &Arc<MemoryStore>) -> Row {
    // Steady state: the first check comes one to two intervals after
    // start, so the measured hour starts one interval later.
    tokio::time::sleep(INTERVAL).await;
    let t0 = Instant::now();
    let throttled0 = account.throttled();
    let before: Vec<u64> = agents.iter().map(agent_calls).collect();
    tokio::time::sleep(DRIFT_RUN).await;
    let per_agent: Vec<u64> = agents
        .iter()
        .zip(before)
        .map(|(a, b)| agent_calls(a) - b)
        .collect();
    let (calls, peak_reads, peak_writes) = traffic(account, t0, Instant::now());
    Row {
        scenario: format!(
            "1 h of drift checks (every {} min)",
            INTERVAL.as_secs() / 60
        ),
        converge: None,
        minimum: Duration::ZERO,
        peak_reads,
        peak_writes,
        calls,
        throttled: account.throttled() - throttled0,
        starvation: None,
        per_agent_hour: Some(per_agent.iter().sum::<u64>() as f64 / per_agent.len().max(1) as f64),
    }
}

fn agent_calls(a: &Agent) -> u64 {
    a.client
        .client
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(0, |c| c.client_calls().0)
}

fn drift_row(row: &Row) -> String {
    let throttled = row.throttled as f64 / row.calls.max(1) as f64;
    format!(
        "| {} | — | — | — | {} / {} | {} / {} | {:.1} % | — | {:.1} | {} |",
        row.scenario,
        row.peak_reads,
        READ_QUOTA.per_second,
        row.peak_writes,
        WRITE_QUOTA.per_second,
        throttled * 100.0,
        row.per_agent_hour.unwrap_or(0.0),
        if throttled < THROTTLED_GOAL {
            "met"
        } else {
            "**missed**"
        },
    )
}

async fn run(a: &Args) -> Vec<String> {
    let n = a.agents as f64;
    let k = a.keys as f64;
    let reads_at_start = 1.0 + (k / 20.0).ceil();
    let install_min = Duration::from_secs_f64(n * k / f64::from(WRITE_QUOTA.per_second));
    let restart_min =
        Duration::from_secs_f64(n * reads_at_start / f64::from(READ_QUOTA.per_second));
    let mut rows = vec![];

    if !a.jittered_only {
        // Default settings: everything at once.
        let root = tempfile::tempdir().expect("tempdir");
        let hosts: Vec<Host> = (0..a.agents)
            .map(|i| Host::new(root.path(), i, a.keys, Duration::ZERO, None))
            .collect();
        let account = new_account();
        let (agents, row) = start_fleet(
            "first install, all hosts at once",
            &hosts,
            &account,
            install_min,
        )
        .await;
        rows.push(row.cells());
        stop_all(agents).await;
        let (agents, row) = start_fleet(
            "restart of every agent at once",
            &hosts,
            &account,
            restart_min,
        )
        .await;
        rows.push(row.cells());
        rows.push(rollout(&hosts, &agents, &account, a.keys).await.cells());
        rows.push(drift_row(&drift_hour(&agents, &account).await));
        stop_all(agents).await;
        drop(hosts);
        drop(root);
    }

    // The fleet settings docs/fleet.md recommends: start_jitter sized by
    // the quota arithmetic (1.5 × the fleet's writes or reads over the
    // quota, so that random starts leave headroom and the pacers absorb the
    // rest) and each host paced at a tenth of the quotas (FLEET_TPS).
    for (label, jitter, first_install) in [
        (
            "first install, `start_jitter` = 1.5·N·K/50, fleet pacing",
            install_min * 3 / 2,
            true,
        ),
        (
            "restart, `start_jitter` = 1.5·N·reads/100, fleet pacing",
            restart_min * 3 / 2,
            false,
        ),
    ] {
        let root = tempfile::tempdir().expect("tempdir");
        let hosts: Vec<Host> = (0..a.agents)
            .map(|i| Host::new(root.path(), i, a.keys, jitter, Some(a.tps)))
            .collect();
        let account = new_account();
        let (agents, row) = start_fleet(label, &hosts, &account, install_min).await;
        if first_install {
            rows.push(row.cells());
            stop_all(agents).await;
        } else {
            stop_all(agents).await;
            let (agents, row) = start_fleet(label, &hosts, &account, restart_min).await;
            rows.push(row.cells());
            stop_all(agents).await;
        }
    }
    rows
}

fn main() {
    let a = args();
    if let Some(seed) = a.seed {
        fastrand::seed(seed);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let cpu = std::time::Instant::now();
    let rows = rt.block_on(run(&a));
    println!(
        "### Fleet simulation: {} agents × {} keys on one account ({} ms latency, {}/{} TPS read/write quotas)\n",
        a.agents,
        a.keys,
        LATENCY.as_millis(),
        READ_QUOTA.per_second,
        WRITE_QUOTA.per_second
    );
    println!(
        "| scenario | converged after | quota-bound minimum | ratio (goal ≤ {CONVERGE_GOAL}×) | peak reads/s | peak writes/s | throttled calls (goal < {:.0} %) | max / median per agent (goal ≤ {STARVATION_GOAL}) | calls per agent per hour | goals |",
        THROTTLED_GOAL * 100.0
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nVirtual time; the whole run took {:.1} s of wall-clock time here.",
        cpu.elapsed().as_secs_f64()
    );
}
