//! One sync's scheduling state: its job, pending events, retries, last report.

#[allow(unused_imports)]
use super::*;

/// How a file event relates to a sync (see `Engine::debounce_syncs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// On one of its source files (or the events were lost).
    Own,
    /// Elsewhere in a directory it watches.
    Nearby,
}

/// Runtime state of one sync.
pub(super) struct Slot {
    pub(super) job: SyncJob,
    pub(super) auto_sync: bool,
    pub(super) dirs: BTreeSet<PathBuf>,
    /// When the next pass should start.
    pub(super) due: Option<Instant>,
    /// The next pass must run even if no file content changed.
    pub(super) force: bool,
    /// The next pass was asked for explicitly (writes even without auto_sync).
    pub(super) explicit: bool,
    pub(super) allow_deletes: bool,
    pub(super) running: bool,
    /// Waiting for the next pass to start.
    pub(super) waiting: Vec<Reply<SyncReport>>,
    /// Waiting for the running pass.
    pub(super) riding: Vec<Reply<SyncReport>>,
    pub(super) digests: Option<Digests>,
    pub(super) last_good: BTreeMap<PathBuf, ParsedFile>,
    pub(super) failures: u32,
    /// A pass has ended without a transient failure since the agent
    /// started: a throttled retry before that is spread by full jitter.
    pub(super) settled_since_start: bool,
    /// `due` is the startup pass held back by `agent.start_jitter`: a file
    /// event replaces it with its own debounce instead of waiting longer.
    pub(super) startup_hold: bool,
    /// First file event since the last pass started.
    pub(super) burst_start: Option<Instant>,
    /// First file event not yet carried to AWS (propagation latency).
    pub(super) event_at: Option<Instant>,
    /// When the running pass started, and the event it carries.
    pub(super) pass_started: Option<Instant>,
    pub(super) pass_event_at: Option<Instant>,
    /// The next pass describes every owned secret's replicas (first pass,
    /// drift timer, after a failed pass).
    pub(super) describe_all: bool,
    /// Last known replicas per secret name, shown in status.
    pub(super) replicas: BTreeMap<String, Vec<ReplicaStatus>>,
    pub(super) view: SyncStatusView,
    /// Source files written and not closed since (a writer may be part way
    /// through), with the first such write: a due pass waits for them.
    pub(super) writers: BTreeMap<PathBuf, Instant>,
    /// Since when passes have been put off for files to settle (bounded
    /// by [`MAX_SETTLE_WAIT`]); `None` when the last pass ran.
    pub(super) settling_since: Option<Instant>,
    /// A read that dropped keys, to be confirmed by an identical read a
    /// quiet period later before anything is deleted.
    pub(super) unconfirmed: Option<Stamps>,
    /// What the running pass took from the slot, given back if it settles.
    pub(super) resume: Option<Resume>,
}

/// Per file, the stamp a read saw (`None`: it could not be read).
pub(super) type Stamps = Vec<(PathBuf, Option<crate::source::files::FileStamp>)>;

/// The flags a pass took when it started and the status before RUNNING.
pub(super) struct Resume {
    pub(super) force: bool,
    pub(super) allow_deletes: bool,
    pub(super) describe_all: bool,
    pub(super) status: SyncStatus,
}

/// Why a pass read its files and then did nothing: they had not settled.
#[derive(Debug)]
pub(super) enum Settle {
    /// A file changed while it was read.
    Changing,
    /// Keys disappeared from the files since the last pass; these stamps
    /// must read the same after another quiet period.
    Dropped(Stamps),
}

impl Slot {
    pub(super) fn new(
        config: &Config,
        sync: &config::SyncConfig,
        key: TokenKey,
        install_id: Option<String>,
    ) -> Slot {
        let job = SyncJob::from_config(config, sync)
            .with_token_key(key)
            .with_install_id(install_id);
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
            settled_since_start: false,
            startup_hold: false,
            burst_start: None,
            event_at: None,
            pass_started: None,
            pass_event_at: None,
            describe_all: true,
            replicas: BTreeMap::new(),
            writers: BTreeMap::new(),
            settling_since: None,
            unconfirmed: None,
            resume: None,
        }
    }

    /// Tracks writers of a source file: a write (`IN_MODIFY`) may be the
    /// first part of a longer one, and only the writer's close says it is
    /// done.
    pub(super) fn note_writer(&mut self, path: &Path, activity: fswatch::Activity, now: Instant) {
        match activity {
            fswatch::Activity::Written => {
                self.writers.entry(path.to_path_buf()).or_insert(now);
            }
            fswatch::Activity::Closed | fswatch::Activity::Gone => {
                self.writers.remove(path);
            }
            fswatch::Activity::Other => {}
        }
    }

    /// A due pass whose files are still open for writing waits another
    /// quiet period (returns `true` and moves `due`), up to
    /// [`MAX_SETTLE_WAIT`] after the first unfinished write; past that the
    /// writers are forgotten and the pass reads what is there.
    pub(super) fn hold_for_writers(&mut self, now: Instant, debounce: Duration) -> bool {
        let Some(first) = self.writers.values().min().copied() else {
            return false;
        };
        let limit = first + MAX_SETTLE_WAIT;
        if now >= limit {
            tracing::warn!(
                sync = %self.job.spec.sync_name,
                files = ?self.writers.keys().collect::<Vec<_>>(),
                "source file written but not closed for {MAX_SETTLE_WAIT:?}; reading it as it is"
            );
            self.writers.clear();
            return false;
        }
        self.due = Some((now + debounce).min(limit));
        true
    }

    /// Takes over the runtime memory of the slot this one replaces.
    pub(super) fn inherit(&mut self, old: Slot) {
        // Known values are facts about AWS versions (keyed by name), still
        // true under a new config.
        self.job.known = old.job.known;
        self.digests = old.digests;
        self.settled_since_start = old.settled_since_start;
        self.last_good = old.last_good;
        self.running = old.running;
        self.event_at = old.event_at;
        self.pass_started = old.pass_started;
        self.pass_event_at = old.pass_event_at;
        self.replicas = old.replicas;
        self.writers = old.writers;
        self.settling_since = old.settling_since;
        self.unconfirmed = old.unconfirmed;
        self.resume = old.resume;
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

    pub(super) fn schedule(&mut self, at: Instant) {
        if self.job.enabled {
            self.due = Some(self.due.map_or(at, |d| d.min(at)));
        }
    }
}

/// What a pass task hands back to the loop.
pub(super) struct PassDone {
    /// File contents unchanged and nothing forced: no pass was run.
    pub(super) skipped: bool,
    pub(super) files: Vec<FileView>,
    pub(super) digests: Digests,
    pub(super) result: Option<PassResult>,
    /// The store could not be created.
    pub(super) setup_error: Option<StoreError>,
    pub(super) mode: Mode,
    /// The files had not settled: nothing was planned or applied.
    pub(super) settle: Option<Settle>,
}
