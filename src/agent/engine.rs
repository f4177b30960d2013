//! The engine: owns every sync's runtime state, decides when passes run,
//! runs them, and is the only writer of status.
//!
//! Inputs arrive as [`Request`]s (file events, resync, plan, reload, ping,
//! shutdown) on one channel; the loop turns them into per-sync deadlines
//! (debounce), starts at most one pass per sync at a time (edits during a
//! pass queue exactly one follow-up), retries transient failures with
//! backoff, runs the drift check on its interval, and publishes a fresh
//! [`Status`] after every change. Nothing else mutates sync state.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent::status::{AgentStatus, Status, SyncStatusView};
use crate::agent::watch::{self as fswatch, Change, ChangeReceiver, DirWatcher};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::reconcile::plan::{DescribeReplicas, SecretState, TokenKey};
use crate::reconcile::report::{self, Report, StateCounts, SyncReport, SyncStatus};
use crate::reconcile::state::State;
use crate::reconcile::{self, Listing, Mode, PassResult, SyncJob};
use crate::source::ParsedFile;
use crate::source::files::FileView;
use crate::store::aws::AwsStore;
use crate::store::{Connection, ReplicaStatus, SecretStore, StoreError};

/// Longest wait between retries of a sync whose pass failed transiently.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// A burst of file events that never goes quiet (a log written next to the
/// source file) still gets a pass this many debounce periods after its
/// first event; otherwise every event would push the pass back forever.
pub const MAX_DEBOUNCE_PERIODS: u32 = 10;

/// While a pass runs, how often the engine asks its store whether calls are
/// being retried, to show the reason in status before the pass ends (a pass
/// whose calls time out can take minutes). No wake-ups when idle.
pub const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// Builds stores for connections; the engine caches one per connection.
pub trait StoreFactory: Send + Sync + 'static {
    /// The store type.
    type Store: SecretStore;
    /// Creates a store for `conn`.
    fn connect(
        &self,
        conn: &Connection,
    ) -> impl Future<Output = Result<Arc<Self::Store>, StoreError>> + Send;
}

/// Production factory: one [`AwsStore`] per connection, counting its
/// calls into `metrics` when set.
#[derive(Debug, Default, Clone)]
pub struct AwsStoreFactory {
    /// Where AWS calls are counted (`agent.metrics_listen` set).
    pub metrics: Option<Arc<Metrics>>,
}

impl StoreFactory for AwsStoreFactory {
    type Store = AwsStore;
    async fn connect(&self, conn: &Connection) -> Result<Arc<AwsStore>, StoreError> {
        AwsStore::connect_with_metrics(conn, self.metrics.clone())
            .await
            .map(Arc::new)
    }
}

/// Errors the engine returns to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No sync of that name in the running config.
    #[error("no sync named '{0}'")]
    UnknownSync(String),
    /// A reload was rejected; the old config keeps running.
    #[error("invalid config, old config kept:\n{0}")]
    InvalidConfig(String),
    /// The engine has stopped (shutdown in progress).
    #[error("the agent is shutting down")]
    Stopped,
    /// [`REQUEST_QUEUE`] requests are already waiting for the engine.
    #[error("the agent has too many requests queued; try again shortly")]
    Busy,
}

/// How many requests (socket commands, signals) may wait for the engine
/// loop. Bounded so a client sending `resync --no-wait` in a loop gets
/// `busy` instead of growing the agent's memory.
pub const REQUEST_QUEUE: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What callers can ask of the engine.
#[derive(Debug)]
pub enum Request {
    /// Paths that changed on disk (from the watcher).
    FilesChanged(Vec<PathBuf>),
    /// Re-read and reconcile now (all enabled syncs if `syncs` is empty);
    /// the reply comes when those passes finish.
    Resync {
        /// Sync names; empty = all enabled.
        syncs: Vec<String>,
        /// Lift the deletion guard for these passes.
        allow_deletes: bool,
        /// Where to send the reports (`None`: do not wait).
        reply: Option<Reply<Vec<SyncReport>>>,
    },
    /// Dry run now, without touching status.
    Plan {
        /// One sync, or all.
        sync: Option<String>,
        /// The plan.
        reply: Reply<Report>,
    },
    /// Re-read the config file.
    Reload {
        /// Ok, or the validation errors.
        reply: Option<Reply<()>>,
    },
    /// Liveness check for the systemd watchdog.
    Ping {
        /// Answered by the loop.
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle to a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<Arc<Status>>,
}

impl EngineHandle {
    /// Queues a request without waiting: [`EngineError::Busy`] when the
    /// queue is full, [`EngineError::Stopped`] once the engine is gone.
    pub fn send(&self, request: Request) -> Result<(), EngineError> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EngineError::Busy,
            mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
        })
    }

    /// The latest published status.
    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status.borrow())
    }

    /// A receiver that wakes on every status change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Status>> {
        self.status.clone()
    }

    /// Resync and wait for the passes.
    pub async fn resync(
        &self,
        syncs: Vec<String>,
        allow_deletes: bool,
    ) -> Result<Vec<SyncReport>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Resync {
            syncs,
            allow_deletes,
            reply: Some(reply),
        })?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Plan now.
    pub async fn plan(&self, sync: Option<String>) -> Result<Report, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Plan { sync, reply })?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Reload the config and wait for the verdict.
    pub async fn reload(&self) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Reload { reply: Some(reply) })?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Whether the engine loop answers within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.send(Request::Ping { reply }).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }
}

type Digests = Vec<(PathBuf, Option<[u8; 32]>)>;

/// How a file event relates to a sync (see `Engine::debounce_syncs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// On one of its source files (or the events were lost).
    Own,
    /// Elsewhere in a directory it watches.
    Nearby,
}

/// Runtime state of one sync.
struct Slot {
    job: SyncJob,
    auto_sync: bool,
    dirs: BTreeSet<PathBuf>,
    /// When the next pass should start.
    due: Option<Instant>,
    /// The next pass must run even if no file content changed.
    force: bool,
    /// The next pass was asked for explicitly (writes even without auto_sync).
    explicit: bool,
    allow_deletes: bool,
    running: bool,
    /// Waiting for the next pass to start.
    waiting: Vec<Reply<SyncReport>>,
    /// Waiting for the running pass.
    riding: Vec<Reply<SyncReport>>,
    digests: Option<Digests>,
    last_good: BTreeMap<PathBuf, ParsedFile>,
    failures: u32,
    /// First file event since the last pass started.
    burst_start: Option<Instant>,
    /// First file event not yet carried to AWS (propagation latency).
    event_at: Option<Instant>,
    /// When the running pass started, and the event it carries.
    pass_started: Option<Instant>,
    pass_event_at: Option<Instant>,
    /// The next pass describes every owned secret's replicas (first pass,
    /// drift timer, after a failed pass).
    describe_all: bool,
    /// Last known replicas per secret name, shown in status.
    replicas: BTreeMap<String, Vec<ReplicaStatus>>,
    view: SyncStatusView,
}

impl Slot {
    fn new(config: &Config, sync: &config::SyncConfig, key: TokenKey) -> Slot {
        let job = SyncJob::from_config(config, sync).with_token_key(key);
        let enabled = job.enabled;
        Slot {
            dirs: fswatch::dirs_for(&job.files),
            view: SyncStatusView {
                name: sync.name.clone(),
                enabled,
                auto_sync: sync.auto_sync,
                sync_status: if enabled {
                    SyncStatus::Pending
                } else {
                    SyncStatus::Disabled
                },
                last_sync_message: None,
                last_synced_at: None,
                import_status: None,
                last_import_message: None,
                last_imported_at: None,
                remove_status: None,
                last_remove_message: None,
                last_removed_at: None,
                region: job.region.clone(),
                mapping: sync.destination.mapping.as_str().to_string(),
                files: vec![],
                counts: StateCounts::default(),
                secrets: vec![],
            },
            job,
            auto_sync: sync.auto_sync,
            due: None,
            force: true,
            explicit: false,
            allow_deletes: false,
            running: false,
            waiting: vec![],
            riding: vec![],
            digests: None,
            last_good: BTreeMap::new(),
            failures: 0,
            burst_start: None,
            event_at: None,
            pass_started: None,
            pass_event_at: None,
            describe_all: true,
            replicas: BTreeMap::new(),
        }
    }

    /// Takes over the runtime memory of the slot this one replaces.
    fn inherit(&mut self, old: Slot) {
        // Known values are facts about AWS versions (keyed by name), still
        // true under a new config.
        self.job.known = old.job.known;
        self.digests = old.digests;
        self.last_good = old.last_good;
        self.running = old.running;
        self.event_at = old.event_at;
        self.pass_started = old.pass_started;
        self.pass_event_at = old.pass_event_at;
        self.replicas = old.replicas;
        self.riding = old.riding;
        self.waiting = old.waiting;
        self.view.last_synced_at = old.view.last_synced_at;
        self.view.secrets = old.view.secrets;
        self.view.counts = old.view.counts;
        self.view.files = old.view.files;
        if self.job.enabled {
            self.view.sync_status = old.view.sync_status;
            self.view.last_sync_message = old.view.last_sync_message;
        }
    }

    fn schedule(&mut self, at: Instant) {
        if self.job.enabled {
            self.due = Some(self.due.map_or(at, |d| d.min(at)));
        }
    }
}

/// What a pass task hands back to the loop.
struct PassDone {
    /// File contents unchanged and nothing forced: no pass was run.
    skipped: bool,
    files: Vec<FileView>,
    digests: Digests,
    result: Option<PassResult>,
    /// The store could not be created.
    setup_error: Option<StoreError>,
    mode: Mode,
}

/// The engine; build with [`Engine::new`], then [`Engine::run`].
pub struct Engine<F: StoreFactory> {
    factory: Arc<F>,
    config: Arc<Config>,
    slots: BTreeMap<String, Slot>,
    stores: BTreeMap<Connection, Arc<F::Store>>,
    state: State,
    /// What the state file holds now (saves are skipped when nothing
    /// changed: a pass that only wrote values changes no state).
    saved_state: Option<State>,
    status_tx: watch::Sender<Arc<Status>>,
    agent: AgentStatus,
    watcher: Option<DirWatcher>,
    inflight: JoinSet<(String, PassDone)>,
    /// Store and start time of every running pass that writes, for
    /// [`Engine::show_progress`].
    progress: BTreeMap<String, (Arc<F::Store>, std::time::Instant)>,
    next_progress: Option<Instant>,
    next_drift: Option<Instant>,
    rx: mpsc::Receiver<Request>,
    fs_rx: ChangeReceiver,
    state_warned: bool,
    /// Why the state file cannot be written (blocks imports).
    state_error: Option<String>,
    /// Why initial imports wait for an explicit resync (the state file was
    /// lost at start; see `SyncJob::import_held`).
    import_hold: Option<String>,
    token_key: TokenKey,
    metrics: Option<Arc<Metrics>>,
}

impl<F: StoreFactory> Engine<F> {
    /// Records passes, latencies, secret states and reloads into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self.publish();
        self
    }

    /// Builds an engine for a validated config. With `watch_files`, a
    /// directory watcher feeds file events (tests may send
    /// [`Request::FilesChanged`] themselves instead).
    pub fn new(
        config: Config,
        factory: F,
        watch_files: bool,
    ) -> Result<(Engine<F>, EngineHandle), notify::Error> {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let (fs_tx, fs_rx) = fswatch::change_feed(fswatch::EVENT_QUEUE);
        let watcher = if watch_files {
            Some(DirWatcher::new(fs_tx)?)
        } else {
            None
        };
        let now = report::now_rfc3339();
        let agent = AgentStatus {
            id: config.agent.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: now.clone(),
            config_path: config.path.display().to_string(),
            config_loaded_at: Some(now),
            config_error: None,
        };
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let mut state = State::load(&config.agent.state_dir);
        let import_hold = state.lost.take();
        let token_key = state.ensure_token_key();
        let mut engine = Engine {
            token_key,
            factory: Arc::new(factory),
            config: Arc::new(config),
            slots: BTreeMap::new(),
            stores: BTreeMap::new(),
            state,
            saved_state: None,
            status_tx,
            agent,
            watcher,
            inflight: JoinSet::new(),
            progress: BTreeMap::new(),
            next_progress: None,
            next_drift: None,
            rx,
            fs_rx,
            state_warned: false,
            state_error: None,
            metrics: None,
            import_hold,
        };
        let config = Arc::clone(&engine.config);
        // Persist a new token key before any write uses it.
        engine.save_state();
        engine.install_config(&config);
        Ok((
            engine,
            EngineHandle {
                tx,
                status: status_rx,
            },
        ))
    }

    /// Replaces slots from `config`, keeping runtime memory of syncs that
    /// stay; every enabled sync gets a pass now.
    fn install_config(&mut self, config: &Config) {
        let mut old = std::mem::take(&mut self.slots);
        let now = Instant::now();
        for sync in &config.syncs {
            let mut slot = Slot::new(config, sync, self.token_key);
            if let Some(prev) = old.remove(&sync.name) {
                slot.inherit(prev);
            }
            slot.force = true;
            slot.schedule(now);
            self.slots.insert(sync.name.clone(), slot);
        }
        for (name, slot) in old {
            for w in slot.waiting.into_iter().chain(slot.riding) {
                let _ = w.send(Err(EngineError::UnknownSync(name.clone())));
            }
        }
        self.next_drift = config.agent.reconcile_interval.map(|d| now + d);
        self.refresh_watches();
        self.publish();
    }

    fn refresh_watches(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut dirs = BTreeSet::new();
        for slot in self.slots.values_mut() {
            slot.dirs = fswatch::dirs_for(&slot.job.files);
            if slot.job.enabled {
                dirs.extend(slot.dirs.iter().cloned());
            }
        }
        if &dirs != watcher.watched() {
            for e in watcher.set_dirs(&dirs) {
                tracing::warn!(error = %e, "file watch not set; changes there are seen only by the drift check");
            }
        }
    }

    fn publish(&mut self) {
        let status = Status {
            agent: self.agent.clone(),
            syncs: self.slots.values().map(|s| s.view.clone()).collect(),
        };
        if let Some(m) = &self.metrics {
            m.observe_secrets(
                status
                    .syncs
                    .iter()
                    .map(|s| (s.name.as_str(), secret_counts(&s.counts))),
            );
        }
        self.status_tx.send_replace(Arc::new(status));
    }

    /// Runs until `shutdown` resolves, then drains in-flight passes for up
    /// to `agent.shutdown_timeout`.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.start_due_passes().await;
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = self.inflight.join_next(), if !self.inflight.is_empty() => match joined {
                    Ok((name, done)) => self.finish_pass(&name, done),
                    Err(e) => tracing::error!(error = %crate::logging::join_error_text(e), "pass task failed"),
                },
                request = self.rx.recv() => match request {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                Some(change) = self.fs_rx.next() => match change {
                    Change::Paths(paths) => self.files_changed(&paths),
                    Change::Unknown => self.all_files_changed(),
                },
                () = sleep_until_opt(wake) => self.on_timer(),
            }
        }
        self.drain().await;
    }

    async fn drain(&mut self) {
        let timeout = self.config.agent.shutdown_timeout;
        let running = self.inflight.len();
        if running > 0 {
            tracing::info!(running, ?timeout, "finishing in-flight passes before exit");
        }
        let deadline = Instant::now() + timeout;
        while !self.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, self.inflight.join_next()).await {
                Ok(Some(Ok((name, done)))) => self.finish_pass(&name, done),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        abandoned = self.inflight.len(),
                        "shutdown timeout reached; abandoning in-flight calls (idempotency tokens make their retry safe)"
                    );
                    self.inflight.abort_all();
                    break;
                }
            }
        }
        for slot in self.slots.values_mut() {
            for w in slot.waiting.drain(..).chain(slot.riding.drain(..)) {
                let _ = w.send(Err(EngineError::Stopped));
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| !s.running)
            .filter_map(|s| s.due)
            .chain(self.next_drift)
            .chain(self.next_progress)
            .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.next_progress.is_some_and(|p| p <= now) {
            self.show_progress();
            self.next_progress = (!self.progress.is_empty()).then(|| now + PROGRESS_TICK);
        }
        if let Some(drift) = self.next_drift.filter(|d| *d <= now) {
            tracing::debug!("drift check");
            for slot in self.slots.values_mut() {
                slot.force = true;
                slot.describe_all = true;
                slot.schedule(now);
            }
            self.next_drift = self
                .config
                .agent
                .reconcile_interval
                .map(|d| drift.max(now) + d);
        }
    }

    /// Puts the reason a running pass is slow into its sync's status: the
    /// latest failed attempt its store is retrying (throttling, 5xx, an
    /// attempt timeout), if that happened during this pass. The pass's own
    /// report replaces the message when it ends.
    fn show_progress(&mut self) {
        let mut changed = false;
        for (name, (store, started)) in &self.progress {
            let Some(note) = store.last_retry().filter(|n| n.at >= *started) else {
                continue;
            };
            let Some(slot) = self.slots.get_mut(name) else {
                continue;
            };
            let message = Some(format!("in progress; retrying AWS calls: {}", note.message));
            if slot.view.last_sync_message != message {
                slot.view.last_sync_message = message;
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    fn files_changed(&mut self, paths: &[PathBuf]) {
        self.debounce_syncs(|slot| {
            if paths
                .iter()
                .any(|p| fswatch::names_source_file(p, &slot.job.files))
            {
                Some(Event::Own)
            } else if paths
                .iter()
                .any(|p| fswatch::event_concerns(p, &slot.dirs, &slot.job.files))
            {
                Some(Event::Nearby)
            } else {
                None
            }
        });
    }

    /// File events were lost: every enabled sync re-reads its files (the
    /// content hashes keep unchanged ones from costing AWS calls).
    fn all_files_changed(&mut self) {
        tracing::warn!("file events were dropped (event storm); re-reading every sync's files");
        self.debounce_syncs(|_| Some(Event::Own));
    }

    /// Starts or extends the debounce of every enabled sync an event
    /// concerns: events on its own files push its quiet period back; other
    /// events in its directories (a Kubernetes `..data` swap, a neighbour's
    /// file) start one when none is pending but never extend it, so busy
    /// neighbours cannot delay a sync's pass.
    fn debounce_syncs(&mut self, concerns: impl Fn(&Slot) -> Option<Event>) {
        let now = Instant::now();
        let debounce = self.config.agent.debounce;
        let mut any = false;
        for slot in self.slots.values_mut() {
            if !slot.job.enabled {
                continue;
            }
            let Some(event) = concerns(slot) else {
                continue;
            };
            any = true;
            if event == Event::Nearby && slot.due.is_some() {
                continue;
            }
            // Quiet period: each event pushes the deadline back, up to
            // MAX_DEBOUNCE_PERIODS after the burst's first event.
            let start = *slot.burst_start.get_or_insert(now);
            slot.event_at.get_or_insert(now);
            let due = (now + debounce).min(start + debounce * MAX_DEBOUNCE_PERIODS);
            slot.due = Some(slot.due.map_or(due, |d| d.max(due)));
        }
        if any {
            self.refresh_watches();
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::FilesChanged(paths) => self.files_changed(&paths),
            Request::Ping { reply } => {
                let _ = reply.send(());
            }
            Request::Resync {
                syncs,
                allow_deletes,
                reply,
            } => self.resync(syncs, allow_deletes, reply),
            Request::Reload { reply } => {
                let result = self.reload();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Request::Plan { sync, reply } => self.plan(sync, reply).await,
        }
    }

    fn resync(
        &mut self,
        syncs: Vec<String>,
        allow_deletes: bool,
        reply: Option<Reply<Vec<SyncReport>>>,
    ) {
        let names: Vec<String> = if syncs.is_empty() {
            self.slots
                .iter()
                .filter(|(_, s)| s.job.enabled)
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            syncs
        };
        if let Some(unknown) = names.iter().find(|n| !self.slots.contains_key(*n)) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(EngineError::UnknownSync(unknown.clone())));
            }
            return;
        }
        let now = Instant::now();
        let mut receivers = Vec::new();
        for name in &names {
            let Some(slot) = self.slots.get_mut(name) else {
                continue;
            };
            slot.force = true;
            slot.explicit = true;
            slot.allow_deletes |= allow_deletes;
            slot.schedule(now);
            if reply.is_some() {
                let (tx, rx) = oneshot::channel();
                if slot.job.enabled {
                    slot.waiting.push(tx);
                } else {
                    let mut r = slot.job.disabled_report();
                    r.last_sync_message = Some("sync is disabled".into());
                    let _ = tx.send(Ok(r));
                }
                receivers.push(rx);
            }
        }
        if let Some(reply) = reply {
            tokio::spawn(async move {
                let mut reports = Vec::new();
                for rx in receivers {
                    match rx.await {
                        Ok(Ok(r)) => reports.push(r),
                        Ok(Err(e)) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                        Err(_) => {
                            let _ = reply.send(Err(EngineError::Stopped));
                            return;
                        }
                    }
                }
                let _ = reply.send(Ok(reports));
            });
        }
    }

    fn reload(&mut self) -> Result<(), EngineError> {
        let path = self.config.path.clone();
        match config::load_config(&path) {
            Ok(new) => {
                if new.agent.socket != self.config.agent.socket
                    || new.agent.log_format != self.config.agent.log_format
                    || new.agent.log_level != self.config.agent.log_level
                {
                    tracing::warn!(
                        "agent.socket / log_format / log_level changes take effect after a restart"
                    );
                }
                if new.agent.metrics_listen != self.config.agent.metrics_listen {
                    tracing::warn!("agent.metrics_listen changes take effect after a restart");
                }
                if let Some(m) = &self.metrics {
                    m.config_reload(true);
                }
                let new = Arc::new(new);
                self.install_config(&new);
                self.config = new;
                self.agent.config_loaded_at = Some(report::now_rfc3339());
                self.agent.config_error = None;
                tracing::info!(syncs = self.slots.len(), "config reloaded");
                self.publish();
                Ok(())
            }
            Err(errors) => {
                let text = errors.to_string();
                for line in text.lines() {
                    tracing::error!("{line}");
                }
                tracing::error!("reload rejected; the previous config keeps running");
                if let Some(m) = &self.metrics {
                    m.config_reload(false);
                }
                self.agent.config_error = Some(text.clone());
                self.publish();
                Err(EngineError::InvalidConfig(text))
            }
        }
    }

    async fn store_for(&mut self, conn: &Connection) -> Result<Arc<F::Store>, StoreError> {
        if let Some(s) = self.stores.get(conn) {
            return Ok(Arc::clone(s));
        }
        let store = self.factory.connect(conn).await?;
        self.stores.insert(conn.clone(), Arc::clone(&store));
        Ok(store)
    }

    async fn plan(&mut self, sync: Option<String>, reply: Reply<Report>) {
        let names: Vec<String> = match sync {
            Some(n) if !self.slots.contains_key(&n) => {
                let _ = reply.send(Err(EngineError::UnknownSync(n)));
                return;
            }
            Some(n) => vec![n],
            None => self.slots.keys().cloned().collect(),
        };
        let mut jobs = Vec::new();
        for name in names {
            let Some(slot) = self.slots.get(&name) else {
                continue;
            };
            let mut job = slot.job.clone();
            job.describe_replicas = DescribeReplicas::All;
            let last_good = slot.last_good.clone();
            let sync_state = self.state.syncs.get(&name).cloned().unwrap_or_default();
            let store = if job.enabled {
                Some(self.store_for(&job.connection.clone()).await)
            } else {
                None
            };
            jobs.push((job, last_good, sync_state, store));
        }
        tokio::spawn(async move {
            let mut syncs = Vec::new();
            for (job, last_good, sync_state, store) in jobs {
                let report = match store {
                    None => job.disabled_report(),
                    Some(Err(e)) => failed_report(&job, format!("cannot set up AWS client: {e}")),
                    Some(Ok(store)) => {
                        let files = read_files_blocking(job.clone()).await;
                        reconcile::run_pass_with_files(
                            store,
                            &job,
                            &files,
                            &last_good,
                            Mode::Plan,
                            false,
                            &sync_state,
                        )
                        .await
                        .report
                    }
                };
                syncs.push(report);
            }
            let _ = reply.send(Ok(Report { syncs }));
        });
    }

    async fn start_due_passes(&mut self) {
        let now = Instant::now();
        let ready: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.running && s.due.is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        let started = !ready.is_empty();
        for name in ready {
            let conn = match self.slots.get(&name) {
                Some(s) => s.job.connection.clone(),
                None => continue,
            };
            let store = self.store_for(&conn).await;
            let sync_state = self.state.syncs.get(&name).cloned().unwrap_or_default();
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            slot.due = None;
            slot.burst_start = None;
            slot.pass_started = Some(Instant::now());
            slot.pass_event_at = slot.event_at.take();
            slot.running = true;
            slot.riding = std::mem::take(&mut slot.waiting);
            let mode = if slot.auto_sync || slot.explicit {
                Mode::Apply
            } else {
                Mode::Plan
            };
            let force = std::mem::take(&mut slot.force) || !slot.riding.is_empty();
            let allow_deletes = std::mem::take(&mut slot.allow_deletes);
            let explicit = std::mem::take(&mut slot.explicit);
            if mode == Mode::Apply {
                slot.view.sync_status = SyncStatus::Running;
                if let Ok(store) = &store {
                    self.progress
                        .insert(name.clone(), (Arc::clone(store), std::time::Instant::now()));
                }
            }
            let mut job = slot.job.clone();
            job.state_unwritable = self.state_error.clone();
            let describe_all = std::mem::take(&mut slot.describe_all);
            if describe_all {
                job.describe_replicas = DescribeReplicas::All;
            }
            // Only a pass started by file events may skip the full listing.
            job.listing = if force || describe_all {
                Listing::Full
            } else {
                Listing::Changed
            };
            if !explicit {
                job.import_held = self.import_hold.clone();
            }
            let previous = slot.digests.clone();
            let last_good = slot.last_good.clone();
            let span = tracing::info_span!("pass", sync = %name);
            self.inflight.spawn(tracing::Instrument::instrument(
                async move {
                    let done = run_pass_task(
                        store,
                        job,
                        mode,
                        force,
                        allow_deletes,
                        previous,
                        last_good,
                        sync_state,
                    )
                    .await;
                    (name, done)
                },
                span,
            ));
        }
        if started {
            if !self.progress.is_empty() && self.next_progress.is_none() {
                self.next_progress = Some(now + PROGRESS_TICK);
            }
            // RUNNING is visible while the pass runs, not only after it.
            self.publish();
        }
    }

    fn finish_pass(&mut self, name: &str, done: PassDone) {
        self.progress.remove(name);
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        slot.running = false;
        let riders = std::mem::take(&mut slot.riding);
        let started = slot.pass_started.take();
        let event_at = slot.pass_event_at.take();
        if done.skipped {
            if slot.view.sync_status == SyncStatus::Running {
                slot.view.sync_status = SyncStatus::Synced;
            }
            tracing::debug!(sync = name, "file events without content change; no pass");
            self.publish();
            return;
        }
        let now = report::now_rfc3339();
        let mut done = done;
        // After an import wrote into a file, the files as re-read are the
        // truth; their digests make the agent's own write a no-op event.
        if let Some(after) = done.result.as_mut().and_then(|r| r.files_after.take()) {
            done.digests = after.iter().map(|f| (f.path.clone(), f.digest)).collect();
            done.files = after;
        }
        for f in &done.files {
            if let Ok(p) = &f.result {
                slot.last_good.insert(f.path.clone(), p.clone());
            }
        }
        slot.view.files = report::file_views(&done.files, &now);
        if let Some(import) = done.result.as_ref().and_then(|r| r.import.as_ref()) {
            slot.view.import_status = Some(import.status().into());
            slot.view.last_import_message = Some(import.message.clone());
            if import.ok && done.mode == Mode::Apply {
                slot.view.last_imported_at = Some(now.clone());
            }
        }
        let wrote = done
            .result
            .as_ref()
            .and_then(|r| r.applied.as_ref())
            .is_some_and(|a| a.outcomes.contains(&crate::reconcile::apply::Outcome::Ok));
        let (report, transient) = match (done.setup_error, done.result) {
            (Some(e), _) => (
                failed_report(&slot.job, format!("cannot set up AWS client: {e}")),
                true,
            ),
            (None, Some(result)) => {
                if let (Some(plan), Some(applied)) = (&result.plan, &result.applied) {
                    let entry = self.state.syncs.entry(name.to_string()).or_default();
                    reconcile::record_state(entry, plan, applied);
                    if result.report.sync_status == SyncStatus::Synced {
                        entry.initial_sync_done = true;
                    }
                }
                let mut secrets = match (&result.report.secrets, &result.plan) {
                    (Some(s), _) => s.clone(),
                    (None, Some(plan)) => planned_views(plan),
                    (None, None) => slot.view.secrets.clone(),
                };
                if let Some(plan) = &result.plan {
                    remember_replicas(&mut slot.replicas, plan, result.applied.as_ref());
                }
                for v in &mut secrets {
                    v.replicas = slot.replicas.get(&v.name).cloned().unwrap_or_default();
                }
                slot.view.secrets = secrets;
                (result.report, result.transient)
            }
            (None, None) => (
                failed_report(&slot.job, "pass produced no result".into()),
                false,
            ),
        };
        slot.view.sync_status = report.sync_status;
        slot.view.last_sync_message = report.last_sync_message.clone();
        slot.view.counts = StateCounts::of(&slot.view.secrets);
        if report.sync_status == SyncStatus::Synced && done.mode == Mode::Apply {
            slot.view.last_synced_at = Some(now);
        }
        if let Some(m) = &self.metrics {
            let finished = Instant::now();
            if let Some(started) = started {
                m.pass_finished(name, report.sync_status.as_str(), finished - started);
            }
            if report.sync_status == SyncStatus::Synced && done.mode == Mode::Apply {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                m.sync_succeeded(name, unix);
                if let Some(at) = event_at.filter(|_| wrote) {
                    m.propagated(name, finished - at);
                }
            }
        }
        if transient {
            // The edit has not reached AWS yet: the retry carries its time.
            if let Some(at) = event_at {
                slot.event_at = Some(slot.event_at.map_or(at, |e| e.min(at)));
            }
            slot.failures = slot.failures.saturating_add(1);
            slot.describe_all = true;
            let delay = backoff(slot.failures);
            slot.force = true;
            slot.schedule(Instant::now() + delay);
            slot.digests = None;
            tracing::warn!(sync = name, retry_in = ?delay, reason = report.last_sync_message.as_deref().unwrap_or(""), "pass incomplete; will retry");
        } else {
            slot.failures = 0;
            slot.digests = Some(done.digests);
        }
        tracing::info!(sync = name, "{}", report::summary_line(&report));
        for r in riders {
            let _ = r.send(Ok(report.clone()));
        }
        self.save_state();
        self.publish();
    }

    fn save_state(&mut self) {
        if self.saved_state.as_ref() == Some(&self.state) {
            return;
        }
        match self.state.save(&self.config.agent.state_dir) {
            Ok(()) => {
                self.state_warned = false;
                self.state_error = None;
                self.saved_state = Some(self.state.clone());
            }
            Err(e) => {
                if !self.state_warned {
                    tracing::warn!(error = %e, "state not saved; stale tags set by this agent may not be removed later, and imports are held back");
                    self.state_warned = true;
                }
                self.state_error = Some(e.to_string());
            }
        }
    }
}

/// Keeps the last known replicas per secret: described ones replace what
/// was known; successful adds show as `InProgress` (AWS's first status)
/// and removals drop regions until the next describe; deleted secrets go.
fn remember_replicas(
    known: &mut BTreeMap<String, Vec<ReplicaStatus>>,
    plan: &crate::reconcile::plan::Plan,
    applied: Option<&crate::reconcile::apply::Applied>,
) {
    for (name, replicas) in &plan.replicas {
        known.insert(name.clone(), replicas.clone());
    }
    let Some(applied) = applied else {
        return;
    };
    for a in applied.succeeded(plan) {
        let added: &[String] = match &a.op {
            crate::reconcile::plan::Op::Create(req) => &req.replica_regions,
            crate::reconcile::plan::Op::Replicate { add } => add,
            crate::reconcile::plan::Op::RemoveReplicas { regions } => {
                if let Some(list) = known.get_mut(&a.name) {
                    list.retain(|r| !regions.contains(&r.region));
                }
                continue;
            }
            crate::reconcile::plan::Op::Delete { .. } => {
                known.remove(&a.name);
                continue;
            }
            _ => continue,
        };
        let list = known.entry(a.name.clone()).or_default();
        for region in added {
            list.retain(|r| &r.region != region);
            list.push(ReplicaStatus {
                region: region.clone(),
                status: "InProgress".into(),
                message: Some(
                    "replication requested; status is read again at the next drift check".into(),
                ),
            });
        }
        list.sort();
    }
}

/// Per-secret views for a plan-only pass: secrets with pending calls show
/// PENDING, the rest keep what the plan expects.
fn planned_views(plan: &crate::reconcile::plan::Plan) -> Vec<report::SecretView> {
    let pending: BTreeSet<&str> = plan
        .actions
        .iter()
        .filter(|a| a.op != crate::reconcile::plan::Op::None)
        .map(|a| a.name.as_str())
        .collect();
    let mut secrets = plan.secrets.clone();
    for s in &mut secrets {
        if pending.contains(s.name.as_str()) && s.state != SecretState::Error {
            s.state = SecretState::Pending;
            s.message = Some("changes pending; auto_sync is off (run resync)".into());
        }
    }
    report::secret_views(&secrets, &report::now_rfc3339())
}

fn failed_report(job: &SyncJob, message: String) -> SyncReport {
    job.bare_report(SyncStatus::Pending, message)
}

/// Exponential backoff with ±20% jitter, capped.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(9)).min(MAX_RETRY_BACKOFF);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_files_blocking(job: SyncJob) -> Vec<FileView> {
    let files = job.files.clone();
    match tokio::task::spawn_blocking(move || job.read_files()).await {
        Ok(v) => v,
        Err(e) => {
            let e = crate::logging::join_error_text(e);
            files
                .iter()
                .map(|f| FileView {
                    path: Path::new(f).to_path_buf(),
                    result: Err(crate::source::files::FileError::Io(format!(
                        "reader task failed: {e}"
                    ))),
                    digest: None,
                })
                .collect()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pass_task<S: SecretStore>(
    store: Result<Arc<S>, StoreError>,
    job: SyncJob,
    mode: Mode,
    force: bool,
    allow_deletes: bool,
    previous: Option<Digests>,
    last_good: BTreeMap<PathBuf, ParsedFile>,
    sync_state: crate::reconcile::state::SyncState,
) -> PassDone {
    let files = read_files_blocking(job.clone()).await;
    let digests: Digests = files.iter().map(|f| (f.path.clone(), f.digest)).collect();
    if !force && previous.as_ref() == Some(&digests) {
        return PassDone {
            skipped: true,
            files,
            digests,
            result: None,
            setup_error: None,
            mode,
        };
    }
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            return PassDone {
                skipped: false,
                files,
                digests,
                result: None,
                setup_error: Some(e),
                mode,
            };
        }
    };
    let result = reconcile::run_pass_with_files(
        store,
        &job,
        &files,
        &last_good,
        mode,
        allow_deletes,
        &sync_state,
    )
    .await;
    PassDone {
        skipped: false,
        files,
        digests,
        result: Some(result),
        setup_error: None,
        mode,
    }
}

/// A sync's per-state counts as the plain numbers the metrics take.
fn secret_counts(c: &crate::reconcile::report::StateCounts) -> crate::metrics::SecretCounts {
    crate::metrics::SecretCounts {
        pending: c.pending,
        synced: c.synced,
        conflict: c.conflict,
        error: c.error,
        deleted: c.deleted,
        retained: c.retained,
    }
}

#[cfg(test)]
mod tests;
