//! Reliability under AWS faults and crashes (issue #8, items 1 and 2; SPEC §5
//! rules 2, 3 and 8): the real `secretsync run` against a private moto behind
//! the fault-injecting proxy ([`support::FaultProxy`]).
//!
//! * throttling of ~30% of all calls during a 500-secret initial sync;
//! * every PutSecretValue hanging for 30 s (attempt timeouts, status reason,
//!   a responsive socket);
//! * a 60 s outage with edits during it (the latest edit wins);
//! * kill -9 at seeded points of a pass, ten times, then restart;
//! * a corrupt state file at start.
//!
//! Each test bounds its own runtime; the whole target runs in about two
//! minutes on the 2-core CI machine (see the README's reliability table).

mod agent_support;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_support::{Agent, AgentOpts, CANARY, Conn, DEBOUNCE, World, eventually, sync_entry};
use serde_json::json;
use support::{Fault, WRITE_OPS, op};

/// `.env` text with keys `K000..K{n-1}` = `{tag}-{i}` and the canary.
fn env_text(n: usize, tag: &str) -> String {
    let mut s = String::with_capacity(n * 16);
    for i in 0..n {
        s.push_str(&format!("K{i:03}={tag}-{i}\n"));
    }
    s.push_str(&format!("TOKEN={CANARY}\n"));
    s
}

/// Every value of sync `sync` in moto (straight, not through the proxy),
/// read with BatchGetSecretValue by id list, 20 at a time.
fn values(w: &World, names: &[String]) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    w.rt.block_on(async {
        for chunk in names.chunks(20) {
            let resp = w
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(chunk.to_vec()))
                .send()
                .await
                .expect("BatchGetSecretValue on moto");
            for v in resp.secret_values() {
                out.insert(v.name().unwrap_or("?").to_string(), v.secret_string.clone());
            }
        }
    });
    for n in names {
        out.entry(n.clone()).or_insert(None);
    }
    out
}

/// Names of `0..n` keys of sync `sync` (see [`env_text`]).
fn key_names(sync: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{sync}/K{i:03}")).collect()
}

/// Asserts every `K{i}` of `sync` holds `{tag}-{i}` in moto, and TOKEN the canary.
fn assert_values(w: &World, sync: &str, n: usize, tag: &str) {
    let names = key_names(sync, n);
    let got = values(w, &names);
    let wrong: Vec<&String> = names
        .iter()
        .enumerate()
        .filter(|(i, name)| got[*name].as_deref() != Some(&format!("{tag}-{i}")[..]))
        .map(|(_, name)| name)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} secrets do not hold their {tag} value, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(w.value(&format!("{sync}/TOKEN")).as_deref(), Some(CANARY));
}

/// Waits (up to `limit`) until sync `name` is SYNCED after a pass.
fn wait_synced_within(w: &World, agent: &Agent, name: &str, limit: Duration) -> serde_json::Value {
    eventually(
        &format!("sync {name} SYNCED"),
        limit,
        || {
            let s = w.sync_status(name);
            (s["sync_status"] == "SYNCED" && !s["last_synced_at"].is_null()).then_some(s)
        },
        || {
            let s = w.sync_status(name);
            let bad: Vec<&serde_json::Value> = s["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["state"] != "SYNCED")
                .collect();
            format!(
                "{}\nnot synced: {bad:?}\nproxy: {:?}\nagent stderr tail:\n{}",
                s["last_sync_message"],
                w.proxy.calls(),
                agent.stderr_tail()
            )
        },
    )
}

/// Fresh start for the same world: wipes moto, the agent's state dir and
/// the proxy's counters and rules.
fn reset_world(w: &World) {
    w.proxy.clear_faults();
    w.moto.reset();
    let _ = std::fs::remove_dir_all(w.agent_path("state"));
    w.proxy.reset_counts();
}

/// Time a test step took, printed so `--nocapture` runs show the figures
/// recorded in the README.
fn note(what: &str, took: Duration) {
    eprintln!("[faults_e2e] {what}: {:.1} s", took.as_secs_f64());
}

/// 500 secrets, initial sync, with the agent's pacing set far above AWS's
/// quota (`max_write_tps: 1000` against 50 `CreateSecret`/s enforced by the
/// proxy, as AWS enforces it per account): the agent must find the quota
/// from the throttles (its pacer halves its rate on a throttle and wins it
/// back per success) instead of retrying into it.
///
/// Budget, measured against a fault-free initial sync of the same files in
/// the same test: `total requests <= 1.5 × fault-free + throttled`, where
/// "throttled" is the number of requests the proxy answered with
/// ThrottlingException. Each of those costs at most one extra request (its
/// retry, by the SDK or by the engine's next pass). Throttled requests stay
/// a small share: without congestion control, sending at 1,000/s into a
/// 50/s quota throttles most attempts. Also: every value right, one version
/// per secret, converged within a bound.
///
/// (A fault that throttles a fixed share of requests whatever the rate is
/// not how AWS quotas behave, and it now drives the agent to its slowest
/// pace, one call a minute: see docs/fleet.md, section 5.)
#[test]
fn over_the_quota_during_500_secret_initial_sync_the_agent_slows_to_it() {
    const N: usize = 500;
    const LIMIT: Duration = Duration::from_secs(120);
    let w = World::new();
    let file = w.write("app/app.env", &env_text(N, "v"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);

    // Fault-free baseline.
    let t = Instant::now();
    let agent = Agent::start(&w);
    let s = wait_synced_within(&w, &agent, "app", LIMIT);
    assert_eq!(s["counts"]["synced"], N + 1, "{}", s["counts"]);
    w.wait_quiet(DEBOUNCE * 3);
    let baseline = w.proxy.total();
    let baseline_calls = w.proxy.calls();
    note("500-secret initial sync, no faults", t.elapsed());
    agent.stop();
    // One CreateSecret per secret, plus SDK retries of attempts that moto
    // answered later than call_timeout (2 s) on a loaded machine: the
    // baseline is measured under the same load as the faulted run.
    let creates = baseline_calls.get("CreateSecret").copied().unwrap_or(0);
    assert!(creates > N as u64, "{baseline_calls:?}");

    // Same files, same empty AWS, AWS's quotas enforced.
    reset_world(&w);
    w.proxy.enforce_aws_quotas();
    let t = Instant::now();
    let agent = Agent::start(&w);
    let s = wait_synced_within(&w, &agent, "app", LIMIT);
    let took = t.elapsed();
    note("500-secret initial sync at 1,000/s into a 50/s quota", took);
    assert_eq!(s["counts"]["synced"], N + 1, "{}", s["counts"]);
    w.wait_quiet(DEBOUNCE * 3);
    let total = w.proxy.total();
    let throttled = w.proxy.quota_throttles();
    let calls = w.proxy.calls();
    eprintln!(
        "[faults_e2e] fault-free requests {baseline} {baseline_calls:?}; \
         throttled run {total} requests, {throttled} throttled: {calls:?}"
    );
    // One line per pass (and per retry decision) of the engine, for the record.
    for line in agent
        .stderr()
        .lines()
        .filter(|l| l.contains("secretsync::agent::engine"))
    {
        eprintln!(
            "[faults_e2e]   {}",
            &line[line.find("secretsync::agent::engine").unwrap_or(0)..]
        );
    }
    let share = throttled as f64 / total as f64;
    assert!(
        throttled > 0,
        "the quota never throttled: the test no longer exercises anything"
    );
    assert!(
        share < 0.10,
        "the proxy throttled {throttled} of {total} requests: the agent did not slow down"
    );
    // 500 creates at 50/s take 10 s. A lone host configured far above the
    // quota overshoots: a one-second quota window throttles every call it
    // sends in that second, and each throttle halves its rate, down to about
    // one call a second, won back 1/128 per success. Measured 67 s; the
    // bound is LIMIT (wait_synced_within).
    let budget = baseline * 3 / 2 + throttled;
    assert!(
        total <= budget,
        "{total} requests > 1.5 × {baseline} (fault-free) + {throttled} (throttled): {calls:?}"
    );

    w.proxy.clear_faults();
    assert_values(&w, "app", N, "v");
    for name in key_names("app", N) {
        assert_eq!(
            w.versions(&name),
            1,
            "{name}: a retried CreateSecret made a second version"
        );
    }
    assert_eq!(w.versions("app/TOKEN"), 1);
    assert_eq!(calls.get("DeleteSecret"), None, "{calls:?}");
    agent.stop();
}

/// Every PutSecretValue hangs for 30 s (call_timeout is 2 s in the test
/// config): the attempts time out and are retried, status answers at once
/// and says why the sync is not done, and the edit arrives after the hang.
#[test]
fn hung_put_secret_value_times_out_status_says_why_and_converges() {
    const HANG: Duration = Duration::from_secs(30);
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=one\nB=bee\nTOKEN={CANARY}\n"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    w.proxy.reset_counts();

    w.proxy.inject(Fault::Hang {
        op: op("PutSecretValue"),
    });
    let hang_start = Instant::now();
    std::fs::write(&file, format!("A=two\nB=bee\nTOKEN={CANARY}\n")).unwrap();

    // The first attempt times out after call_timeout (2 s) and is retried.
    assert!(
        w.proxy
            .wait_for_count_blocking("PutSecretValue", 2, Duration::from_secs(10)),
        "no retry of the hung PutSecretValue: {:?}",
        w.proxy.calls()
    );
    let first_retry = hang_start.elapsed();
    assert!(
        first_retry < Duration::from_secs(8),
        "the first retry came {first_retry:?} after the edit; call_timeout is 2 s"
    );

    // During the hang the socket answers promptly, and status carries a
    // reason that names the timeout.
    let mut conn = Conn::open(&w.socket());
    let mut slowest = Duration::ZERO;
    let mut reason: Option<String> = None;
    let mut polls = 0;
    while hang_start.elapsed() < HANG - Duration::from_secs(2) {
        let t = Instant::now();
        let reply = conn.call(&json!({"id": polls, "cmd": "status", "sync": "app"}));
        slowest = slowest.max(t.elapsed());
        polls += 1;
        assert_eq!(reply["ok"], true, "{reply}");
        let s = &reply["result"]["syncs"][0];
        assert_ne!(
            s["sync_status"],
            "SYNCED",
            "synced while every write hangs: {s}\n{:?}\n{}",
            w.proxy.calls(),
            agent.stderr_tail()
        );
        let texts = std::iter::once(&s["last_sync_message"]).chain(
            s["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| &x["message"]),
        );
        for t in texts.filter_map(|v| v.as_str()) {
            if t.to_lowercase().contains("timed out") || t.to_lowercase().contains("timeout") {
                reason.get_or_insert_with(|| t.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("[faults_e2e] {polls} status calls during the hang, slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a status call took {slowest:?} while AWS hung"
    );
    let reason = reason.unwrap_or_else(|| {
        panic!(
            "status never said the sync waits on timed-out calls; last: {}",
            w.sync_status("app")
        )
    });
    eprintln!("[faults_e2e] status reason during the hang: {reason}");
    assert!(!reason.contains(CANARY));
    let puts_during_hang = w.proxy.count("PutSecretValue");
    assert!(puts_during_hang >= 3, "{:?}", w.proxy.calls());

    std::thread::sleep(HANG.saturating_sub(hang_start.elapsed()));
    w.proxy.clear_faults();
    let t = Instant::now();
    wait_synced_within(&w, &agent, "app", Duration::from_secs(45));
    note("convergence after the 30 s hang ended", t.elapsed());
    assert_eq!(w.value("app/A").as_deref(), Some("two"));
    assert_eq!(w.versions("app/A"), 2, "one version per distinct value");
    assert_eq!(w.versions("app/B"), 1);
    let s = w.sync_status("app");
    assert!(
        s["last_sync_message"].is_null(),
        "stale reason after recovery: {s}"
    );
    agent.stop();
}

/// A 60 s outage (every connection dropped) with two edits during it: after
/// recovery AWS holds the last edit, and no version written after it holds
/// an older value.
#[test]
fn outage_60s_with_edits_latest_value_wins() {
    const OUTAGE: Duration = Duration::from_secs(60);
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=v1\nB=bee\nTOKEN={CANARY}\n"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let mut agent = Agent::start(&w);
    wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    w.proxy.reset_counts();

    w.proxy.inject(Fault::Outage);
    let start = Instant::now();
    std::fs::write(&file, format!("A=v2\nB=bee\nTOKEN={CANARY}\n")).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        w.proxy.total() > 0,
        "the agent never tried AWS during the outage"
    );
    std::fs::write(&file, format!("A=v3\nB=bee\nTOKEN={CANARY}\n")).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    let s = w.sync_status("app");
    assert_ne!(s["sync_status"], "SYNCED", "{s}");
    assert!(agent.alive(), "the agent died during the outage");
    std::thread::sleep(OUTAGE.saturating_sub(start.elapsed()));
    let during = w.proxy.total();
    w.proxy.clear_faults();

    // The engine's retry backoff after ~4 failed passes is 16 s (±20%).
    let t = Instant::now();
    eventually(
        "A=v3 in AWS after the outage",
        Duration::from_secs(60),
        || (w.value("app/A").as_deref() == Some("v3")).then_some(()),
        || format!("{} {:?}", w.sync_status("app"), w.proxy.calls()),
    );
    wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    note("convergence after the 60 s outage", t.elapsed());
    w.wait_quiet(DEBOUNCE * 3);
    eprintln!("[faults_e2e] {during} requests dropped during the outage");

    // Every version of A with its value and staging labels (moto gives no
    // reliable creation order, the labels carry it): v3 is AWSCURRENT and
    // held by exactly one version, so no older value was written after it
    // (a v2 landing later would be current, and a v3 rewritten after it
    // would be a second v3 version); AWSPREVIOUS is v1 or v2.
    let history = w.rt.block_on(async {
        let resp = w
            .client
            .list_secret_version_ids()
            .secret_id("app/A")
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for v in resp.versions() {
            let value = w
                .client
                .get_secret_value()
                .secret_id("app/A")
                .version_id(v.version_id().unwrap_or(""))
                .send()
                .await
                .unwrap()
                .secret_string
                .unwrap_or_default();
            out.push((value, v.version_stages().to_vec()));
        }
        out.sort();
        out
    });
    let values: Vec<&str> = history.iter().map(|(v, _)| v.as_str()).collect();
    assert!(
        values == ["v1", "v3"] || values == ["v1", "v2", "v3"],
        "versions of app/A: {history:?}"
    );
    let labelled = |label: &str| -> Vec<&str> {
        history
            .iter()
            .filter(|(_, stages)| stages.iter().any(|s| s == label))
            .map(|(v, _)| v.as_str())
            .collect()
    };
    assert_eq!(labelled("AWSCURRENT"), ["v3"], "{history:?}");
    let previous = labelled("AWSPREVIOUS");
    assert!(previous == ["v1"] || previous == ["v2"], "{history:?}");
    assert_eq!(w.versions("app/B"), 1);
    assert_eq!(w.proxy.count("DeleteSecret"), 0);
    agent.stop();
}

/// Crash runs: 10 in CI; `SECRETSYNC_CRASH_RUNS=200` (about 15 minutes)
/// is the longer soak, same seeds extended (`scripts/test.sh --test
/// faults_e2e kill_9`).
fn crash_runs() -> u64 {
    std::env::var("SECRETSYNC_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Polls until the proxy has seen `n` write requests, at most `limit`.
fn wait_for_writes(w: &World, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while w.proxy.writes() < n {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// A tiny seeded generator for the crash points (xorshift64).
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Asserts the state dir holds a parseable state.json and its backup with
/// the same content, and no leftovers (temp files, corrupt copies).
fn assert_state_dir_clean(w: &World, agent: &Agent) {
    let dir = w.agent_path("state");
    let text = std::fs::read_to_string(dir.join("state.json")).expect("state.json exists");
    let state: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("state.json is corrupt ({e}):\n{text}"));
    assert!(
        state["syncs"]["app"]["initial_sync_done"] == true,
        "{state}"
    );
    let backup = std::fs::read_to_string(dir.join("state.json.bak")).expect("backup exists");
    assert_eq!(backup, text, "the backup differs from state.json");
    let stray: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n != "state.json" && n != "state.json.bak" && n != "install-id")
        })
        .collect();
    assert!(
        stray.is_empty(),
        "left in the state dir: {stray:?}\n{}",
        agent.stderr_tail()
    );
}

/// kill -9 at ten seeded points of a pass ([`crash_runs`] for a longer
/// soak), then restart: converges, one version per distinct value, nothing
/// deleted that the files still hold, and the state dir is intact. Even runs kill the initial sync (creates),
/// odd runs an update pass that also removes three keys (their deletions
/// are expected there, and nothing else). The kill comes after exactly K
/// delivered writes (K seeded, 1..50): the proxy hangs every later write
/// and the agent is killed once one is hanging. The delivered writes are
/// held 0–300 ms (seeded) by "AWS" and applied even though the agent died
/// meanwhile, so they land while the restarted agent reads and writes.
#[test]
fn kill_9_at_ten_seeded_points_then_restart_converges() {
    const N: usize = 60;
    let w = World::new();
    let file = w.write("app/app.env", &env_text(N, "v1"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let started = Instant::now();
    for run in 0..crash_runs() {
        let t = Instant::now();
        let mut rng = Rng::new(run + 1);
        reset_world(&w);
        std::fs::write(&file, env_text(N, "v1")).unwrap();
        let update = run % 2 == 1;
        let mut agent = Agent::start(&w);
        // Update runs remove K000, K001 (deleted early in the pass, so the
        // killed agent's deletes are often among the held writes) and one
        // seeded key.
        let removed: Vec<usize> = if update {
            vec![0, 1, 2 + rng.below(N as u64 - 2) as usize]
        } else {
            vec![]
        };
        let tag = if update { "v2" } else { "v1" };
        if update {
            wait_synced_within(&w, &agent, "app", Duration::from_secs(20));
            w.wait_quiet(DEBOUNCE * 3);
            w.proxy.reset_counts();
        }
        let text = env_text(N, tag)
            .lines()
            .filter(|l| !removed.iter().any(|i| l.starts_with(&format!("K{i:03}="))))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        let hold = Duration::from_millis(rng.below(300));
        for write_op in ["CreateSecret", "PutSecretValue", "DeleteSecret"] {
            w.proxy.inject(Fault::DelayDetached {
                op: op(write_op),
                delay: hold,
            });
        }
        // Exactly `kill_after` writes get through; the next one hangs, and
        // the agent dies while it (and any others sent at once) is unanswered.
        let kill_after = 1 + rng.below(N as u64 - 10);
        w.proxy.inject(Fault::HangWritesAfter { after: kill_after });
        if update {
            std::fs::write(&file, &text).unwrap();
        }
        assert!(
            wait_for_writes(&w, kill_after + 1, Duration::from_secs(20)),
            "run {run}: only {} writes, wanted {}: {:?}",
            w.proxy.writes(),
            kill_after + 1,
            w.proxy.calls()
        );
        agent.kill9();
        let at_kill = w.proxy.writes();

        // Restart; the killed agent's held writes may still land.
        w.proxy.clear_faults();
        let agent = Agent::start(&w);
        let s = wait_synced_within(&w, &agent, "app", Duration::from_secs(30));
        std::thread::sleep(hold + Duration::from_millis(100));
        w.wait_quiet(DEBOUNCE * 3);
        assert_eq!(
            s["counts"]["synced"],
            N - removed.len() + 1,
            "run {run}: {}",
            s["counts"]
        );
        let names = key_names("app", N);
        let got = values(&w, &names);
        for (i, name) in names.iter().enumerate() {
            if removed.contains(&i) {
                assert!(
                    w.pending_deletion(name),
                    "run {run}: {name} left the file but is not scheduled for deletion"
                );
                continue;
            }
            assert_eq!(
                got[name].as_deref(),
                Some(&format!("{tag}-{i}")[..]),
                "run {run}: {name} holds the wrong value"
            );
            let want = if update { 2 } else { 1 };
            assert_eq!(
                w.versions(name),
                want,
                "run {run} (kill after {kill_after} writes): {name} has a duplicate version"
            );
            assert!(!w.pending_deletion(name), "run {run}: {name} deleted");
        }
        assert_eq!(w.value("app/TOKEN").as_deref(), Some(CANARY));
        assert!(!w.pending_deletion("app/TOKEN"));
        let deleted: Vec<String> = w
            .proxy
            .bodies("DeleteSecret")
            .iter()
            .map(|b| b["SecretId"].as_str().unwrap_or("?").to_string())
            .collect();
        let wrongly: Vec<&String> = deleted
            .iter()
            .filter(|id| !removed.iter().any(|i| **id == names[*i]))
            .collect();
        assert!(wrongly.is_empty(), "run {run}: deleted {wrongly:?}");
        assert_state_dir_clean(&w, &agent);
        agent.stop();
        eprintln!(
            "[faults_e2e] crash run {run}: {} pass, killed after {kill_after} delivered writes ({at_kill} sent), hold {hold:?}, {:.1} s",
            if update { "update" } else { "initial" },
            t.elapsed().as_secs_f64()
        );
    }
    note(&format!("{} kill -9 runs", crash_runs()), started.elapsed());
}

/// A truncated state.json at start (disk trouble, a hand edit): the agent
/// starts, does not crash-loop, recovers the state from its backup (keeping
/// the corrupt bytes aside), and makes no write for secrets that are
/// already right. With the backup damaged too it starts from an empty
/// state, still without writes (overwrite-destination) and without dying.
#[test]
fn corrupt_state_file_at_start_is_recovered() {
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=one\nB=bee\nTOKEN={CANARY}\n"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    agent.stop();
    let state = w.agent_path("state/state.json");
    let backup = w.agent_path("state/state.json.bak");
    let good = std::fs::read(&state).unwrap();

    for both in [false, true] {
        std::fs::write(&state, &good[..good.len() / 2]).unwrap();
        if both {
            std::fs::write(&backup, b"").unwrap();
        }
        w.proxy.reset_counts();
        let mut agent = Agent::start(&w);
        wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
        w.wait_quiet(DEBOUNCE * 3);
        assert!(agent.alive());
        let writes: u64 = WRITE_OPS.iter().map(|o| w.proxy.count(o)).sum();
        assert_eq!(writes, 0, "both={both}: {:?}", w.proxy.calls());
        let log = agent.stderr();
        assert!(log.contains("state file is corrupt"), "both={both}");
        assert_eq!(
            log.contains("state recovered from the backup"),
            !both,
            "both={both}"
        );
        let reread: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state).unwrap())
                .expect("state.json valid again");
        assert_eq!(
            reread["syncs"]["app"]["initial_sync_done"], true,
            "{reread}"
        );
        assert_eq!(
            std::fs::read(&backup).unwrap(),
            std::fs::read(&state).unwrap()
        );
        assert_eq!(
            std::fs::read(w.agent_path("state/state.json.corrupt")).unwrap(),
            &good[..good.len() / 2],
            "the corrupt bytes are kept for inspection"
        );
        agent.stop();
    }
}

/// With `import-prioritize-destination`, a corrupt state.json must not make
/// the agent run the initial import again: that would overwrite an edit
/// made to the file while the agent was down with the older AWS value.
#[test]
fn corrupt_state_file_does_not_rerun_the_initial_import() {
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=one\nB=bee\nTOKEN={CANARY}\n"));
    let options = "    options:\n      initial_sync: import-prioritize-destination\n";
    w.config(
        &AgentOpts::default(),
        &[sync_entry("app", &[&file], options)],
    );
    let agent = Agent::start(&w);
    wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    agent.stop();

    // While the agent is down: the file is edited, and state.json damaged.
    let edited = format!("A=edited\nB=bee\nTOKEN={CANARY}\n");
    std::fs::write(&file, &edited).unwrap();
    let state = w.agent_path("state/state.json");
    let text = std::fs::read(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 3]).unwrap();

    let agent = Agent::start(&w);
    let s = wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    w.wait_quiet(DEBOUNCE * 3);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        edited,
        "the file was rewritten by a second import: {s}"
    );
    assert_eq!(w.value("app/A").as_deref(), Some("edited"));
    assert!(
        agent.stderr().contains("corrupt"),
        "the agent must say the state file was corrupt"
    );
    let reread: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).expect("valid again");
    assert_eq!(
        reread["syncs"]["app"]["initial_sync_done"], true,
        "{reread}"
    );
    agent.stop();

    // Both state.json and its backup unusable: the import waits for an
    // explicit resync (FAILED, nothing written, the file untouched) ...
    let edited2 = format!("A=edited-again\nB=bee\nTOKEN={CANARY}\n");
    std::fs::write(&file, &edited2).unwrap();
    std::fs::write(&state, b"{").unwrap();
    std::fs::write(w.agent_path("state/state.json.bak"), b"").unwrap();
    w.proxy.reset_counts();
    let agent = Agent::start(&w);
    let s = w.wait_pass_done("app");
    w.wait_quiet(DEBOUNCE * 3);
    assert_eq!(s["sync_status"], "FAILED", "{s}");
    let message = s["last_sync_message"].as_str().unwrap_or("");
    assert!(message.contains("resync app"), "{s}");
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited2);
    assert_eq!(w.value("app/A").as_deref(), Some("edited"));
    // ... and the operator's resync runs it as configured (AWS wins).
    let sock = w.socket();
    let out = w.cli(&["resync", "--socket", sock.to_str().unwrap(), "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    let s = wait_synced_within(&w, &agent, "app", Duration::from_secs(10));
    assert_eq!(s["import_status"], "SYNCED", "{s}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited);
    agent.stop();
}
