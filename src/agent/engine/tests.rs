//! Engine tests on the in-memory store with a paused clock: debounce,
//! coalescing, follow-up passes, retries, drift, resync, reload.

use super::*;
use crate::secret::SecretValue;
use crate::store::memory::MemoryStore;

struct MemFactory(Arc<MemoryStore>);

impl StoreFactory for MemFactory {
    type Store = MemoryStore;
    async fn connect(&self, _conn: &Connection) -> Result<Arc<MemoryStore>, StoreError> {
        Ok(Arc::clone(&self.0))
    }
}

struct Harness {
    dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    handle: EngineHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn config_text(dir: &Path, extra_sync: &str, agent_extra: &str) -> String {
    let agent_extra = if agent_extra.is_empty() {
        "  reconcile_interval: 0\n"
    } else {
        agent_extra
    };
    format!(
        "agent:\n  id: t1\n  state_dir: {d}/state\n  debounce: 500ms\n{agent_extra}aws:\n  region: us-east-1\n  max_write_tps: 1000\n  max_read_tps: 1000\nsyncs:\n  - name: app\n    source:\n      files: [{d}/app.env]\n{extra_sync}",
        d = dir.display()
    )
}

impl Harness {
    async fn start(env: &str, extra_sync: &str, agent_extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.env"), env).unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, config_text(dir.path(), extra_sync, agent_extra)).unwrap();
        let config = config::load_config(&path).unwrap();
        let store = Arc::new(MemoryStore::new());
        let (engine, handle) = Engine::new(config, MemFactory(Arc::clone(&store)), false).unwrap();
        Harness::launch(dir, store, engine, handle)
    }

    /// [`Harness::start`], then waits for the first pass to end SYNCED.
    async fn start_synced(env: &str, extra_sync: &str, agent_extra: &str) -> Harness {
        let h = Harness::start(env, extra_sync, agent_extra).await;
        assert!(
            h.wait_status(SyncStatus::Synced, Duration::from_secs(10))
                .await
        );
        h
    }

    /// Runs an engine the test built itself (seeded store, metrics...).
    fn launch(
        dir: tempfile::TempDir,
        store: Arc<MemoryStore>,
        engine: Engine<MemFactory>,
        handle: EngineHandle,
    ) -> Harness {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(engine.run(async move {
            let _ = stopped.await;
        }));
        Harness {
            dir,
            store,
            handle,
            stop: Some(stop),
            task,
        }
    }

    fn write(&self, env: &str) {
        std::fs::write(self.dir.path().join("app.env"), env).unwrap();
    }

    fn touch(&self) {
        let path = self.dir.path().join("app.env");
        self.handle
            .send(Request::FilesChanged(vec![path]))
            .expect("engine takes the event");
    }

    fn value(&self, name: &str) -> Option<String> {
        self.store
            .get(name)
            .and_then(|(_, v)| v.map(|v| v.expose().to_string()))
    }

    fn writes(&self) -> u64 {
        self.store.write_calls()
    }

    fn status(&self) -> Arc<Status> {
        self.handle.status()
    }

    /// Waits (virtual time) until the sync reaches `want` or `limit` passes.
    async fn wait_status(&self, want: SyncStatus, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut rx = self.handle.subscribe();
        loop {
            if self.status().syncs.first().map(|s| s.sync_status) == Some(want) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

async fn settle() {
    // Let the loop and spawned passes run; blocking file reads finish in
    // real time, so yield a few times around virtual sleeps.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn initial_pass_then_burst_makes_one_write() {
    let h = Harness::start_synced("A=1\nB=1\n", "", "").await;
    assert_eq!(h.value("A").as_deref(), Some("1"));
    let before = h.writes();
    for i in 0..20 {
        h.write(&format!("A={i}\nB=1\n"));
        h.touch();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.write("A=final\nB=1\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("final"));
    assert_eq!(h.writes() - before, 1, "calls: {:?}", h.store.calls());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unchanged_content_triggers_nothing() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    h.store.reset_calls();
    h.write("A=1\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert!(
        h.store.calls().values().all(|n| *n == 0),
        "{:?}",
        h.store.calls()
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn edits_during_a_pass_queue_exactly_one_follow_up() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    h.store.set_latency(Duration::from_secs(3));
    h.write("A=2\n");
    h.touch();
    tokio::time::sleep(Duration::from_millis(700)).await; // pass starts, now slow
    for i in 3..8 {
        h.write(&format!("A={i}\n"));
        h.touch();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("7"));
    let puts = h.store.calls().get("PutSecretValue").copied().unwrap_or(0);
    assert_eq!(
        puts,
        2,
        "one pass in flight + one follow-up: {:?}",
        h.store.calls()
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn outage_keeps_pending_and_converges_without_events() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    h.store.fail_all(StoreError::Unavailable {
        op: "ListSecrets",
        message: "connection refused".into(),
    });
    h.write("A=2\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let s = h.status();
    assert_eq!(s.syncs[0].sync_status, SyncStatus::Pending);
    assert!(
        s.syncs[0]
            .last_sync_message
            .as_deref()
            .unwrap_or("")
            .contains("unavailable"),
        "{:?}",
        s.syncs[0].last_sync_message
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.store.heal();
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(600))
            .await
    );
    assert_eq!(h.value("A").as_deref(), Some("2"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn resync_waits_for_its_pass_and_unknown_is_an_error() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    h.write("A=9\n");
    let reports = h.handle.resync(vec![], false).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].sync_status, SyncStatus::Synced);
    assert_eq!(h.value("A").as_deref(), Some("9"));
    assert_eq!(
        h.handle
            .resync(vec!["nope".into()], false)
            .await
            .unwrap_err(),
        EngineError::UnknownSync("nope".into())
    );
    h.stop().await;
}

/// The first drift check after start, by the agent's stable phase:
/// start + (1 + phase) × interval, within the ±5 % jitter.
fn first_drift_window(h: &Harness, t0: Instant, interval: Duration) -> (Instant, Instant) {
    let install = std::fs::read_to_string(h.dir.path().join("state/install-id")).unwrap();
    let phase = schedule::drift_phase("t1", Some(install.trim()));
    let at = |slots: f64| t0 + interval.mul_f64(slots);
    (
        at(1.0 + phase - schedule::DRIFT_JITTER),
        at(1.0 + phase + schedule::DRIFT_JITTER),
    )
}

fn change_behind_our_back(h: &Harness) {
    let (mut meta, _) = h.store.get("A").unwrap();
    // Someone else writes a new version (AWS never changes an existing
    // version's value, so the new value comes with a new version id).
    meta.current_version = None;
    h.store
        .insert(meta, Some(SecretValue::new("changed-behind-our-back")));
}

#[tokio::test(start_paused = true)]
async fn drift_is_repaired_at_the_agents_phase_of_the_interval() {
    let interval = Duration::from_secs(60);
    let t0 = Instant::now();
    let h = Harness::start_synced("A=1\n", "", "  reconcile_interval: 1m\n").await;
    let (earliest, latest) = first_drift_window(&h, t0, interval);
    change_behind_our_back(&h);
    tokio::time::sleep_until(earliest - Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("changed-behind-our-back"));
    tokio::time::sleep_until(latest + Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("1"));
    h.stop().await;
}

/// Over a long run the agent checks once per interval, not less (the
/// phase moves the checks, it does not stretch them).
#[tokio::test(start_paused = true)]
async fn drift_checks_run_once_per_interval() {
    use crate::store::memory::OP_LIST;
    let h = Harness::start_synced("A=1\n", "", "  reconcile_interval: 1m\n").await;
    tokio::time::sleep(Duration::from_secs(150)).await;
    h.store.reset_calls();
    tokio::time::sleep(Duration::from_secs(600)).await;
    settle().await;
    let lists = h.store.calls().get(OP_LIST).copied().unwrap_or(0);
    assert!((9..=11).contains(&lists), "{lists} checks in 10 intervals");
    h.stop().await;
}

/// A reload (a config rollout reaches every host at once) keeps the drift
/// schedule: the check does not move to reload + interval.
#[tokio::test(start_paused = true)]
async fn reload_keeps_the_drift_schedule() {
    let interval = Duration::from_secs(60);
    let t0 = Instant::now();
    let h = Harness::start_synced("A=1\n", "", "  reconcile_interval: 1m\n").await;
    let (earliest, latest) = first_drift_window(&h, t0, interval);
    tokio::time::sleep_until(earliest - Duration::from_secs(2)).await;
    h.handle.reload().await.unwrap();
    change_behind_our_back(&h);
    tokio::time::sleep_until(latest + Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("1"), "checked on schedule");
    h.stop().await;
}

/// A startup pass AWS throttles is retried after a full-jitter delay in
/// [0, 30 s), not in the ±20 % band around 2 s of the usual backoff, so a
/// fleet restarted together does not come back in lockstep.
#[tokio::test(start_paused = true)]
async fn throttled_startup_retries_with_full_jitter() {
    use crate::store::memory::OP_LIST;
    let mut delays = vec![];
    for seed in 1..=8u64 {
        fastrand::seed(seed);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.env"), "A=1\n").unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, config_text(dir.path(), "", "")).unwrap();
        let config = config::load_config(&path).unwrap();
        let store = Arc::new(MemoryStore::new());
        store.record_call_times(true);
        let throttled = StoreError::Throttled {
            op: OP_LIST,
            message: "Rate exceeded".into(),
        };
        store.fail_next(OP_LIST, throttled, 1);
        let (engine, handle) = Engine::new(config, MemFactory(Arc::clone(&store)), false).unwrap();
        let h = Harness::launch(dir, store, engine, handle);
        assert!(
            h.wait_status(SyncStatus::Synced, Duration::from_secs(60))
                .await
        );
        let lists: Vec<Instant> = h
            .store
            .call_times()
            .into_iter()
            .filter(|(op, _)| *op == OP_LIST)
            .map(|(_, at)| at)
            .collect();
        delays.push(lists[1] - lists[0]);
        h.stop().await;
    }
    let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    assert!(*max < schedule::FIRST_PASS_WINDOW, "{delays:?}");
    assert!(*max - *min > Duration::from_secs(10), "spread: {delays:?}");
}

/// `agent.start_jitter` delays the startup pass by a random time within
/// it; a file event in the meantime runs the pass at once.
#[tokio::test(start_paused = true)]
async fn start_jitter_delays_the_startup_pass_but_not_an_edit() {
    fastrand::seed(7);
    let h = Harness::start("A=1\n", "", "  reconcile_interval: 0\n  start_jitter: 1h\n").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(h.store.calls().values().sum::<u64>(), 0, "still waiting");
    assert_eq!(h.status().syncs[0].sync_status, SyncStatus::Pending);
    h.write("A=2\n");
    h.touch();
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(10))
            .await
    );
    assert_eq!(h.value("A").as_deref(), Some("2"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn auto_sync_off_plans_until_resync() {
    let h = Harness::start("A=1\n", "    auto_sync: false\n", "").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.writes(), 0);
    let s = h.status();
    assert_eq!(s.syncs[0].sync_status, SyncStatus::Pending);
    assert_eq!(s.syncs[0].secrets[0].state, SecretState::Pending);
    h.handle.resync(vec!["app".into()], false).await.unwrap();
    assert_eq!(h.value("A").as_deref(), Some("1"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_valid_adds_sync_and_invalid_keeps_old() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    let path = h.dir.path().join("agent.yaml");
    std::fs::write(&path, "agent: [not, a, map]\n").unwrap();
    let err = h.handle.reload().await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidConfig(_)));
    assert!(h.status().agent.config_error.is_some());
    assert_eq!(h.status().syncs.len(), 1);
    std::fs::write(h.dir.path().join("b.env"), "B=2\n").unwrap();
    let extra = format!(
        "  - name: two\n    source:\n      files: [{}/b.env]\n    destination:\n      key_schema: \"two/{{{{secretKey}}}}\"\n",
        h.dir.path().display()
    );
    let text = config_text(h.dir.path(), "", "") + &extra;
    std::fs::write(&path, text).unwrap();
    h.handle.reload().await.unwrap();
    assert!(h.status().agent.config_error.is_none());
    h.handle.resync(vec![], false).await.unwrap();
    assert_eq!(h.value("two/B").as_deref(), Some("2"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn parse_error_keeps_last_good_view_and_deletes_nothing() {
    let h = Harness::start_synced("A=1\nB=2\n", "", "").await;
    h.write("A=1\nB=\"unterminated\n");
    let reports = h.handle.resync(vec![], true).await.unwrap();
    assert_eq!(reports[0].sync_status, SyncStatus::Failed);
    let (meta, _) = h.store.get("B").unwrap();
    assert!(!meta.pending_deletion);
    assert_eq!(h.value("B").as_deref(), Some("2"));
    let s = h.status();
    assert_eq!(s.syncs[0].files[0].status, "error");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_stays_failed_on_events_that_change_no_content() {
    let h = Harness::start_synced("A=1\nB=2\n", "", "").await;
    h.write("A=1\nB=\"unterminated\n");
    let reports = h.handle.resync(vec![], true).await.unwrap();
    assert_eq!(reports[0].sync_status, SyncStatus::Failed);
    assert_eq!(
        h.status().syncs[0].sync_status,
        SyncStatus::Failed,
        "right after resync"
    );
    // Events whose content did not change (the same bytes, a touch, a new
    // directory beside the file) run no pass and must not flip the status.
    for _ in 0..3 {
        h.touch();
        std::fs::create_dir_all(h.dir.path().join("newdir")).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(h.status().syncs[0].sync_status, SyncStatus::Failed);
    }
    h.stop().await;
}

#[test]
fn backoff_grows_and_is_capped() {
    assert!(backoff(1) >= Duration::from_millis(1600) && backoff(1) <= Duration::from_millis(2400));
    assert!(backoff(30) <= MAX_RETRY_BACKOFF.mul_f64(1.2));
}

#[tokio::test(start_paused = true)]
async fn versions_are_keyed_with_the_persisted_token_key() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    let mut state = State::load(&h.dir.path().join("state"));
    assert!(
        state.token_key.is_some(),
        "key saved before the first write"
    );
    let key = state.ensure_token_key();
    let want = crate::reconcile::plan::request_token(&key, "A", &SecretValue::new("1"), None);
    assert_eq!(h.store.versions("A"), vec![want.clone()]);
    let unkeyed = crate::reconcile::plan::request_token(
        &TokenKey::default(),
        "A",
        &SecretValue::new("1"),
        None,
    );
    assert_ne!(want, unkeyed);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn syncs_sharing_a_file_each_react_once() {
    let second = "  - name: two\n    source:\n      files: [APP]\n    destination:\n      key_schema: \"two/{{secretKey}}\"\n";
    // The harness writes app.env into its own dir; point the second sync at it.
    let h = Harness::start("A=1\n", "", "").await;
    let path = h.dir.path().join("agent.yaml");
    let app = h.dir.path().join("app.env");
    let text =
        config_text(h.dir.path(), "", "") + &second.replace("APP", &app.display().to_string());
    std::fs::write(&path, text).unwrap();
    h.handle.reload().await.unwrap();
    h.handle.resync(vec![], false).await.unwrap();
    assert_eq!(h.value("two/A").as_deref(), Some("1"));
    h.store.reset_calls();
    h.write("A=2\n");
    for _ in 0..5 {
        h.touch();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("2"));
    assert_eq!(h.value("two/A").as_deref(), Some("2"));
    let calls = h.store.calls();
    assert_eq!(calls.get("PutSecretValue").copied(), Some(2), "{calls:?}");
    // One pass each: an event pass re-checks the secret it writes
    // (DescribeSecret) instead of listing the sync.
    assert_eq!(
        calls.get("DescribeSecret").copied(),
        Some(2),
        "one pass each: {calls:?}"
    );
    assert_eq!(calls.get("ListSecrets"), None, "{calls:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn import_write_back_does_not_trigger_a_second_pass() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.env"), "A=1\n").unwrap();
    let path = dir.path().join("agent.yaml");
    let extra = "    options:\n      initial_sync: import-prioritize-source\n";
    std::fs::write(&path, config_text(dir.path(), extra, "")).unwrap();
    let config = config::load_config(&path).unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut owned = crate::store::RemoteSecret {
        name: "B".into(),
        current_version: Some("v0".into()),
        ..Default::default()
    };
    owned.tags.insert("secretsync:agent".into(), "t1".into());
    owned.tags.insert("secretsync:sync".into(), "app".into());
    store.insert(owned, Some(SecretValue::new("from-aws")));
    let (engine, handle) = Engine::new(config, MemFactory(Arc::clone(&store)), false).unwrap();
    let h = Harness::launch(dir, store, engine, handle);
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(10))
            .await
    );
    let text = std::fs::read_to_string(h.dir.path().join("app.env")).unwrap();
    assert!(
        text.starts_with("A=1\n") && text.contains("B=from-aws"),
        "{text}"
    );
    let s = h.status();
    assert_eq!(s.syncs[0].import_status.as_deref(), Some("SYNCED"));
    assert!(s.syncs[0].last_imported_at.is_some());
    // The watcher reports the agent's own write: content hash equal, no pass.
    h.store.reset_calls();
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert!(
        h.store.calls().values().all(|n| *n == 0),
        "{:?}",
        h.store.calls()
    );
    h.stop().await;
}

/// Hands out one memory store and remembers every connection asked for.
struct CountingFactory {
    store: Arc<MemoryStore>,
    asked: Arc<std::sync::Mutex<Vec<Connection>>>,
}

impl StoreFactory for CountingFactory {
    type Store = MemoryStore;
    async fn connect(&self, conn: &Connection) -> Result<Arc<MemoryStore>, StoreError> {
        self.asked.lock().unwrap().push(conn.clone());
        Ok(Arc::clone(&self.store))
    }
}

#[tokio::test(start_paused = true)]
async fn syncs_share_one_store_per_distinct_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let sync = |name: &str, extra: &str| {
        std::fs::write(dir.path().join(format!("{name}.env")), "K=1\n").unwrap();
        format!(
            "  - name: {name}\n    source:\n      files: [{d}/{name}.env]\n    destination:\n      key_schema: \"{name}/{{{{secretKey}}}}\"\n{extra}"
        )
    };
    let text = format!(
        "agent:\n  id: t1\n  state_dir: {d}/state\n  reconcile_interval: 0\naws:\n  region: us-east-1\nsyncs:\n{}{}{}{}{}",
        sync("a", ""),
        sync("b", ""),
        sync(
            "c",
            "      role_arn: arn:aws:iam::123456789012:role/deploy\n      external_id: ext-1\n"
        ),
        sync(
            "c2",
            "      role_arn: arn:aws:iam::123456789012:role/deploy\n      external_id: ext-1\n"
        ),
        sync("d", "      region: eu-west-1\n"),
    );
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    let config = config::load_config(&path).unwrap();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let factory = CountingFactory {
        store: Arc::new(MemoryStore::new()),
        asked: Arc::clone(&asked),
    };
    let (engine, handle) = Engine::new(config, factory, false).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = stopped.await;
    }));
    let reports = handle.resync(vec![], false).await.expect("resync");
    assert_eq!(reports.len(), 5);
    assert!(
        reports.iter().all(|r| r.sync_status == SyncStatus::Synced),
        "{reports:?}"
    );
    // A second round reuses the stores.
    handle.resync(vec![], false).await.expect("resync");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked.len(),
        3,
        "one client per distinct connection: {asked:#?}"
    );
    let distinct: BTreeSet<&Connection> = asked.iter().collect();
    assert_eq!(distinct.len(), 3);
    assert!(asked.iter().any(|c| c.role_arn.is_some()
        && c.external_id.as_deref() == Some("ext-1")
        && c.region == "us-east-1"));
    assert!(
        asked
            .iter()
            .any(|c| c.region == "eu-west-1" && c.role_arn.is_none())
    );
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::test(start_paused = true)]
async fn metrics_record_passes_states_and_propagation() {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.env"), "A=1\nB=2\n").unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, config_text(dir.path(), "", "")).unwrap();
    let config = config::load_config(&path).unwrap();
    let store = Arc::new(MemoryStore::new());
    let (engine, handle) = Engine::new(config, MemFactory(Arc::clone(&store)), false).unwrap();
    let engine = engine.with_metrics(Arc::clone(&metrics));
    let h = Harness::launch(dir, store, engine, handle);
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(10))
            .await
    );
    h.write("A=changed\nB=2\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("changed"));
    let text = metrics.render();
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(
        has("secretsync_passes_total{sync=\"app\",status=\"SYNCED\"} 2"),
        "{text}"
    );
    assert!(
        has("secretsync_secrets{sync=\"app\",state=\"SYNCED\"} 2"),
        "{text}"
    );
    assert!(
        has("secretsync_propagation_seconds_count{sync=\"app\"} 1"),
        "{text}"
    );
    // Debounce (500 ms, virtual) is part of the propagation latency.
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("secretsync_propagation_seconds_sum{sync=\"app\"} "))
        .and_then(|v| v.parse().ok())
        .expect("sum");
    assert!((0.5..2.0).contains(&sum), "{sum}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replicas_follow_the_config_and_status_shows_them() {
    let h = Harness::start(
        "A=1\n",
        "    destination:\n      replica_regions: [eu-west-1]\n",
        "",
    )
    .await;
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(10))
            .await
    );
    assert_eq!(h.store.replica_regions("A"), ["eu-west-1"]);
    let replicas = &h.status().syncs[0].secrets[0].replicas;
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0].status, "InProgress");
    // Reload with another region: the first pass after the reload describes
    // (InSync from the store) and swaps the region.
    let path = h.dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        config_text(
            h.dir.path(),
            "    destination:\n      replica_regions: [eu-central-1]\n",
            "",
        ),
    )
    .unwrap();
    h.store.reset_calls();
    h.handle.reload().await.expect("reload");
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(h.store.replica_regions("A"), ["eu-central-1"]);
    let calls = h.store.calls();
    assert_eq!(calls.get("ReplicateSecretToRegions"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("RemoveRegionsFromReplication"),
        Some(&1),
        "{calls:?}"
    );
    assert_eq!(calls.get("DescribeSecret"), Some(&1), "{calls:?}");
    // An edit describes nothing.
    h.store.reset_calls();
    h.write("A=2\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("2"));
    assert_eq!(
        h.store.calls().get("DescribeSecret").copied().unwrap_or(0),
        0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_full_request_queue_answers_busy_and_a_stopped_engine_stopped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.env"), "A=1\n").unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, config_text(dir.path(), "", "")).unwrap();
    let config = config::load_config(&path).unwrap();
    let store = Arc::new(MemoryStore::new());
    // The engine is built but not run, so nothing drains its queue.
    let (engine, handle) = Engine::new(config, MemFactory(store), false).unwrap();
    let ping = || {
        let (reply, _rx) = oneshot::channel();
        handle.send(Request::Ping { reply })
    };
    for _ in 0..REQUEST_QUEUE {
        ping().expect("room in the queue");
    }
    assert!(matches!(ping(), Err(EngineError::Busy)));
    drop(engine);
    assert!(matches!(ping(), Err(EngineError::Stopped)));
}

#[tokio::test(start_paused = true)]
async fn a_slow_pass_shows_running_then_the_retry_reason() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    // A note from before the pass is not this pass's reason.
    h.store.set_retry_note("AWS answered HTTP 503");
    std::thread::sleep(Duration::from_millis(2));
    h.store.set_latency(Duration::from_secs(20));
    h.write("A=2\n");
    h.touch();
    // RUNNING is published when the pass starts, without a reason yet.
    assert!(
        h.wait_status(SyncStatus::Running, Duration::from_secs(2))
            .await
    );
    tokio::time::sleep(PROGRESS_TICK * 3).await;
    settle().await;
    assert_eq!(h.status().syncs[0].last_sync_message, None);

    h.store.set_retry_note("an attempt timed out after 2s");
    tokio::time::sleep(PROGRESS_TICK * 2).await;
    settle().await;
    let view = h.status().syncs[0].clone();
    assert_eq!(view.sync_status, SyncStatus::Running);
    assert_eq!(
        view.last_sync_message.as_deref(),
        Some("in progress; retrying AWS calls: an attempt timed out after 2s")
    );

    // The pass's own report replaces it.
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(120))
            .await
    );
    assert_eq!(h.status().syncs[0].last_sync_message, None);
    assert_eq!(h.value("A").as_deref(), Some("2"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pass_that_changes_no_state_does_not_rewrite_the_state_file() {
    use std::os::unix::fs::MetadataExt;
    let h = Harness::start_synced("A=1\n", "", "").await;
    let state_file = h.dir.path().join("state/state.json");
    let inode = || std::fs::metadata(&state_file).unwrap().ino();
    let before = inode();
    // A value edit: one write to AWS, nothing new to remember.
    h.write("A=2\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("2"));
    assert_eq!(inode(), before, "state.json was rewritten (atomic rename)");
    // A new key brings new managed tags: saved.
    h.write("A=2\nB=1\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("B").as_deref(), Some("1"));
    assert_ne!(inode(), before, "new state was not saved");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn events_on_other_files_in_the_directory_do_not_postpone_a_pending_pass() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    h.write("A=2\n");
    h.touch();
    // A neighbour's file in the same directory, 400 ms into the 500 ms
    // quiet period: it must not push the pass back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.handle
        .send(Request::FilesChanged(vec![h.dir.path().join("other.env")]))
        .expect("engine takes the event");
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("2"));
    h.stop().await;
}

/// Engine-level file events with their kinds, as the watcher sends them.
impl Harness {
    fn event(&self, activity: fswatch::Activity) {
        let path = self.dir.path().join("app.env");
        self.handle
            .send(Request::FileEvent(fswatch::FileEvent {
                activity,
                paths: vec![path],
            }))
            .expect("engine takes the event");
    }

    fn deletes(&self) -> u64 {
        self.store
            .calls()
            .get(crate::store::memory::OP_DELETE)
            .copied()
            .unwrap_or(0)
    }
}

/// A writer slower than the debounce (`{ head -c N; sleep 1.5; tail; } >
/// app.env`): the half-written file is on disk, written and not closed,
/// for three quiet periods. No pass reads it; the close brings one pass
/// with the final content.
#[tokio::test(start_paused = true)]
async fn a_file_written_and_not_closed_is_not_read_until_the_writer_closes_it() {
    use fswatch::Activity::{Closed, Written};
    let h = Harness::start_synced("A=1\nB=old-value\nC=3\n", "", "").await;
    let writes = h.writes();
    // Truncated and half rewritten: B cut short, C not yet there.
    h.write("A=1\nB=new-va");
    h.event(Written);
    h.event(Written);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    settle().await;
    assert_eq!(h.value("B").as_deref(), Some("old-value"));
    assert_eq!(h.writes(), writes, "a pass acted on the half-written file");
    h.write("A=1\nB=new-value\nC=3\n");
    h.event(Written);
    h.event(Closed);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    settle().await;
    assert_eq!(h.value("B").as_deref(), Some("new-value"));
    assert_eq!(h.value("C").as_deref(), Some("3"));
    assert_eq!(h.writes(), writes + 1);
    assert_eq!(h.deletes(), 0);
    assert_eq!(h.store.versions("B").len(), 2, "a cut value was written");
    h.stop().await;
}

/// A writer that never closes holds the pass back only up to
/// MAX_SETTLE_WAIT; then the file is read as it is.
#[tokio::test(start_paused = true)]
async fn a_writer_that_never_closes_delays_the_pass_at_most_max_settle_wait() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    h.write("A=2\n");
    h.event(fswatch::Activity::Written);
    tokio::time::sleep(MAX_SETTLE_WAIT - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.value("A").as_deref(), Some("2"));
    h.stop().await;
}

/// A truncate-and-rewrite caught between its steps (the file closed with
/// only its first line): the read that drops keys waits a quiet period to
/// be confirmed; the rewrite completes in that time and nothing is deleted.
#[tokio::test(start_paused = true)]
async fn keys_dropped_by_a_rewrite_in_progress_are_not_deleted() {
    use fswatch::Activity::Closed;
    let h = Harness::start_synced("A=1\nB=2\nC=3\n", "", "").await;
    // One key short: a single deletion, which the deletion guard allows.
    h.write("A=1\nB=2\n");
    h.event(Closed);
    // The pass after the quiet period reads two keys and waits.
    tokio::time::sleep(Duration::from_millis(600)).await;
    settle().await;
    assert_eq!(h.deletes(), 0);
    h.write("A=1\nB=2\nC=3\n");
    h.event(Closed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle().await;
    assert_eq!(h.deletes(), 0, "{:?}", h.store.calls());
    for k in ["A", "B", "C"] {
        assert!(!h.store.get(k).unwrap().0.pending_deletion, "{k}");
    }
    h.stop().await;
}

/// A key really removed is deleted once an identical read a quiet period
/// later confirms it.
#[tokio::test(start_paused = true)]
async fn a_removed_key_is_deleted_after_a_confirming_read() {
    let h = Harness::start_synced("A=1\nB=2\nC=3\n", "", "").await;
    h.write("A=1\nB=2\n");
    h.event(fswatch::Activity::Closed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    settle().await;
    assert_eq!(h.deletes(), 0, "deleted on the first read");
    tokio::time::sleep(Duration::from_millis(600)).await;
    settle().await;
    assert_eq!(h.deletes(), 1);
    assert!(h.store.get("C").unwrap().0.pending_deletion);
    assert!(
        h.wait_status(SyncStatus::Synced, Duration::from_secs(2))
            .await
    );
    h.stop().await;
}

/// A table of the settle rule on already-read files.
#[test]
fn settle_check_table() {
    use crate::source::files::{FileError, FileView};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.env");
    let read = |text: &str| {
        std::fs::write(&p, text).unwrap();
        crate::source::files::read_one(&p, None, false, 1024)
    };
    let abc = read("A=1\nB=2\nC=3\n");
    let last_good = BTreeMap::from([(p.clone(), abc.result.clone().unwrap())]);
    let previous: Digests = vec![(p.clone(), abc.digest)];
    let a = read("A=1\n");
    let abcd = read("A=1\nB=2\nC=3\nD=4\n");
    let changing = FileView {
        path: p.clone(),
        result: Err(FileError::Changing),
        digest: None,
        stamp: None,
    };
    let broken = FileView {
        path: p.clone(),
        result: Err(FileError::Empty),
        digest: None,
        stamp: None,
    };
    let stamps_a: Stamps = vec![(p.clone(), a.stamp)];
    let check = |files: &[FileView], confirmed: Option<Stamps>| {
        SettleCheck { confirmed }
            .unsettled(files, Some(&previous), &last_good)
            .map(|s| match s {
                Settle::Changing => "changing",
                Settle::Dropped(_) => "dropped",
            })
    };
    type Case<'a> = (&'a str, Vec<FileView>, Option<Stamps>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "changing while read",
            vec![changing],
            None,
            Some("changing"),
        ),
        (
            "keys dropped, first read",
            vec![a.clone()],
            None,
            Some("dropped"),
        ),
        (
            "keys dropped, confirmed",
            vec![a.clone()],
            Some(stamps_a),
            None,
        ),
        (
            "keys dropped, another read confirmed",
            vec![a.clone()],
            Some(vec![(p.clone(), abcd.stamp)]),
            Some("dropped"),
        ),
        ("keys added", vec![abcd.clone()], None, None),
        ("unchanged", vec![abc.clone()], None, None),
        (
            "file error keeps the last good view",
            vec![broken],
            None,
            None,
        ),
    ];
    for (what, files, confirmed, want) in cases {
        assert_eq!(check(&files, confirmed), want, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_state_dir_that_cannot_be_written_shows_in_status() {
    let h = Harness::start_synced("A=1\n", "", "").await;
    assert_eq!(h.status().agent.state_error, None);
    // The state dir becomes something no save can write into.
    let state = h.dir.path().join("state");
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, "not a directory").unwrap();
    // A new key brings new state (managed tags), so a save is attempted.
    h.write("A=1\nB=2\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let err = h.status().agent.state_error.clone();
    assert!(err.is_some(), "status must say state is not persisted");
    // No temp file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Once it can be written again, the error clears.
    std::fs::remove_file(&state).unwrap();
    h.write("A=1\nB=2\nC=3\n");
    h.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(h.status().agent.state_error, None);
    h.stop().await;
}
