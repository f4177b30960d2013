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

use crate::agent::schedule::{self, DriftSchedule};
use crate::agent::status::{AgentStatus, Status, SyncStatusView};
use crate::agent::watch::{
    self as fswatch, Activity, Change, ChangeReceiver, DirWatcher, LogThrottle,
};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::reconcile::plan::{DescribeReplicas, SecretState, TokenKey};
use crate::reconcile::report::{self, Report, StateCounts, SyncReport, SyncStatus};
use crate::reconcile::state::State;
use crate::reconcile::{self, Listing, Mode, PassResult, SyncJob};
use crate::source::ParsedFile;
use crate::source::files::FileView;
pub use crate::store::StoreFactory;
pub use crate::store::aws::AwsStoreFactory;
use crate::store::{Connection, ReplicaStatus, SecretStore, StoreError};

mod handle;
mod passes;
mod slot;
mod tasks;
#[allow(unused_imports)]
pub use handle::*;
#[allow(unused_imports)]
use slot::*;
#[allow(unused_imports)]
use tasks::*;

/// Longest wait between retries of a sync whose pass failed transiently.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// A burst of file events that never goes quiet (a log written next to the
/// source file) still gets a pass this many debounce periods after its
/// first event; otherwise every event would push the pass back forever.
pub const MAX_DEBOUNCE_PERIODS: u32 = 10;

/// The longest a due pass waits for its files to settle: for a writer that
/// wrote a source file and has not closed it yet (no `IN_CLOSE_WRITE`), for
/// a file that changes while it is read, and for a read that drops keys to
/// be confirmed by a second read a quiet period later. Past it the files
/// are read and applied as they are (the deletion guard still applies), so
/// a file held open for writing forever cannot stop a sync.
pub const MAX_SETTLE_WAIT: Duration = Duration::from_secs(30);

/// While a pass runs, how often the engine asks its store whether calls are
/// being retried, to show the reason in status before the pass ends (a pass
/// whose calls time out can take minutes). No wake-ups when idle.
pub const PROGRESS_TICK: Duration = Duration::from_secs(1);

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
    /// When the engine started: the drift schedule's anchor.
    started: Instant,
    /// The next drift check: its index in the schedule and when it runs.
    next_drift: Option<(u64, Instant)>,
    /// The startup passes are not scheduled yet (`agent.start_jitter`
    /// applies to them only, not to reloads).
    starting: bool,
    rx: mpsc::Receiver<Request>,
    fs_rx: ChangeReceiver,
    state_warned: bool,
    /// Why the state file cannot be written (blocks imports).
    state_error: Option<String>,
    /// Why initial imports wait for an explicit resync (the state file was
    /// lost at start; see `SyncJob::import_held`).
    import_hold: Option<String>,
    token_key: TokenKey,
    /// This install's id (`state_dir/install-id`), or `None` when it cannot
    /// be kept.
    install_id: Option<String>,
    metrics: Option<Arc<Metrics>>,
    /// Keeps an event storm from logging one warning per lost batch.
    dropped_log: LogThrottle,
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
            state_error: None,
        };
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let mut state = State::load(&config.agent.state_dir);
        let import_hold = state.lost.take();
        let token_key = state.ensure_token_key();
        let install_id = crate::reconcile::state::install_id(&config.agent.state_dir, true);
        let mut engine = Engine {
            token_key,
            install_id,
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
            started: Instant::now(),
            next_drift: None,
            starting: true,
            rx,
            fs_rx,
            state_warned: false,
            state_error: None,
            metrics: None,
            import_hold,
            dropped_log: LogThrottle::new(fswatch::DROPPED_LOG_EVERY),
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
        // A fleet restarted at once spreads its startup reads (file events
        // still run a pass at once: `schedule` keeps the earliest time).
        let first_pass = if std::mem::take(&mut self.starting) {
            let delay = schedule::start_delay(config.agent.start_jitter, fastrand::f64());
            if !delay.is_zero() {
                tracing::info!(delay = ?delay, "startup pass waits agent.start_jitter's random delay");
            }
            now + delay
        } else {
            now
        };
        for sync in &config.syncs {
            let mut slot = Slot::new(config, sync, self.token_key, self.install_id.clone());
            if let Some(prev) = old.remove(&sync.name) {
                slot.inherit(prev);
            }
            slot.force = true;
            slot.schedule(first_pass);
            slot.startup_hold = first_pass > now;
            self.slots.insert(sync.name.clone(), slot);
        }
        for (name, slot) in old {
            for w in slot.waiting.into_iter().chain(slot.riding) {
                let _ = w.send(Err(EngineError::UnknownSync(name.clone())));
            }
        }
        // A reload keeps the schedule's anchor: reloading a fleet together
        // must not line its drift checks up again.
        let drift = self.drift_schedule(&config.agent.id);
        self.next_drift = config.agent.reconcile_interval.map(|interval| {
            let k = drift.index_after(now, interval);
            (k, drift.at(k, interval, jitter_unit()))
        });
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
        self.agent.state_error = self.state_error.clone();
        let status = Status {
            agent: self.agent.clone(),
            syncs: self.slots.values().map(|s| s.view.clone()).collect(),
        };
        if let Some(m) = &self.metrics {
            m.state_persisted(self.state_error.is_none());
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
                    Change::Files(event) => self.files_changed(&event.paths, event.activity),
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
            .chain(self.next_drift.map(|(_, at)| at))
            .chain(self.next_progress)
            .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.next_progress.is_some_and(|p| p <= now) {
            self.show_progress();
            self.next_progress = (!self.progress.is_empty()).then(|| now + PROGRESS_TICK);
        }
        if let Some((fired, _)) = self.next_drift.filter(|(_, at)| *at <= now) {
            tracing::debug!("drift check");
            for slot in self.slots.values_mut() {
                slot.force = true;
                slot.describe_all = true;
                slot.schedule(now);
            }
            let drift = self.drift_schedule(&self.config.agent.id);
            self.next_drift = self.config.agent.reconcile_interval.map(|interval| {
                let k = drift.next(fired, now, interval);
                (k, drift.at(k, interval, jitter_unit()))
            });
        }
    }

    /// Drift checks spread over the interval by this agent's stable phase
    /// (docs/fleet.md), anchored at the engine's start.
    fn drift_schedule(&self, agent_id: &str) -> DriftSchedule {
        let phase = schedule::drift_phase(agent_id, self.install_id.as_deref());
        DriftSchedule::new(self.started, phase)
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

    fn files_changed(&mut self, paths: &[PathBuf], activity: Activity) {
        let now = Instant::now();
        for slot in self.slots.values_mut().filter(|s| s.job.enabled) {
            for path in paths {
                if fswatch::names_source_file(path, &slot.job.files) {
                    slot.note_writer(path, activity, now);
                }
            }
        }
        self.debounce_syncs(activity.may_move_dirs(), |slot| {
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
        if let Some(left_out) = self.dropped_log.hit(Instant::now()) {
            tracing::warn!(
                left_out,
                "file events were dropped (event storm); re-reading every sync's files (logged at most once per {:?}; left_out counts the times since the last line)",
                fswatch::DROPPED_LOG_EVERY
            );
        }
        self.debounce_syncs(true, |_| Some(Event::Own));
    }

    /// Starts or extends the debounce of every enabled sync an event
    /// concerns: events on its own files push its quiet period back; other
    /// events in its directories (a Kubernetes `..data` swap, a neighbour's
    /// file) start one when none is pending but never extend it, so busy
    /// neighbours cannot delay a sync's pass.
    /// `refresh`: the events may have moved the watched directories.
    fn debounce_syncs(&mut self, refresh: bool, concerns: impl Fn(&Slot) -> Option<Event>) {
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
            // A startup pass held back by `agent.start_jitter` gives way to
            // the edit's own debounce.
            if std::mem::take(&mut slot.startup_hold) {
                slot.due = None;
            }
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
        if any && refresh {
            self.refresh_watches();
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::FilesChanged(paths) => self.files_changed(&paths, Activity::Other),
            Request::FileEvent(event) => self.files_changed(&event.paths, event.activity),
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
                        let known = last_good.keys().cloned().collect();
                        let files = read_files_blocking(job.clone(), known).await;
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
}

#[cfg(test)]
mod tests;
