//! Work a pass does off the engine loop (reading files, the pass itself) and helpers that turn its result into status.

#[allow(unused_imports)]
use super::*;

/// Keeps the last known replicas per secret: described ones replace what
/// was known; successful adds show as `InProgress` (AWS's first status)
/// and removals drop regions until the next describe; deleted secrets go.
pub(super) fn remember_replicas(
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
pub(super) fn planned_views(plan: &crate::reconcile::plan::Plan) -> Vec<report::SecretView> {
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

pub(super) fn failed_report(job: &SyncJob, message: String) -> SyncReport {
    job.bare_report(SyncStatus::Pending, message)
}

/// Exponential backoff with ±20% jitter, capped.
pub(super) fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(9)).min(MAX_RETRY_BACKOFF);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// Uniform in `[-1, 1]`: a drift check's jitter (see `schedule`).
pub(super) fn jitter_unit() -> f64 {
    fastrand::f64() * 2.0 - 1.0
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads `job`'s files on a blocking thread. `known`: the paths the sync
/// holds a last good view of (a glob match among them that turned into a
/// directory or FIFO is a file error, not gone).
pub(super) async fn read_files_blocking(job: SyncJob, known: BTreeSet<PathBuf>) -> Vec<FileView> {
    let files = job.files.clone();
    let read = move || {
        crate::source::files::read_sources_known(
            &job.files,
            job.format,
            job.expand,
            job.max_file_size,
            &known,
        )
    };
    match tokio::task::spawn_blocking(read).await {
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
                    stamp: None,
                })
                .collect()
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_pass_task<S: SecretStore>(
    store: Result<Arc<S>, StoreError>,
    job: SyncJob,
    mode: Mode,
    force: bool,
    allow_deletes: bool,
    previous: Option<Digests>,
    last_good: BTreeMap<PathBuf, ParsedFile>,
    sync_state: crate::reconcile::state::SyncState,
    settle_check: Option<SettleCheck>,
) -> PassDone {
    let files = read_files_blocking(job.clone(), last_good.keys().cloned().collect()).await;
    let digests: Digests = files.iter().map(|f| (f.path.clone(), f.digest)).collect();
    if !force && previous.as_ref() == Some(&digests) {
        return PassDone {
            skipped: true,
            files,
            digests,
            result: None,
            setup_error: None,
            mode,
            settle: None,
        };
    }
    if let Some(settle) =
        settle_check.and_then(|c| c.unsettled(&files, previous.as_ref(), &last_good))
    {
        return PassDone {
            skipped: false,
            files,
            digests,
            result: None,
            setup_error: None,
            mode,
            settle: Some(settle),
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
                settle: None,
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
        settle: None,
    }
}

/// Whether files just read are settled enough to act on (passes started
/// by events, drift and reloads; an explicit resync acts on what it reads).
pub(super) struct SettleCheck {
    /// The read that dropped keys last time, if one is waiting to be
    /// confirmed.
    pub(super) confirmed: Option<Stamps>,
}

impl SettleCheck {
    /// `Some` when the pass should wait another quiet period: a file
    /// changed while it was read, or keys that the previous pass's files
    /// had are gone (what a truncation part way through a rewrite looks
    /// like) and this exact read (same inodes, sizes and times) has not
    /// been seen a quiet period earlier.
    pub(super) fn unsettled(
        self,
        files: &[FileView],
        previous: Option<&Digests>,
        last_good: &BTreeMap<PathBuf, ParsedFile>,
    ) -> Option<Settle> {
        use crate::source::files::FileError;
        if files
            .iter()
            .any(|f| matches!(f.result, Err(FileError::Changing)))
        {
            return Some(Settle::Changing);
        }
        let previous = previous?;
        let keys = |views: &mut dyn Iterator<Item = &ParsedFile>| -> BTreeSet<String> {
            views
                .flat_map(|p| p.entries.iter().map(|e| e.key.clone()))
                .collect()
        };
        let before = keys(
            &mut previous
                .iter()
                .filter(|(_, digest)| digest.is_some())
                .filter_map(|(path, _)| last_good.get(path)),
        );
        let now = keys(
            &mut files
                .iter()
                .filter_map(|f| f.result.as_ref().ok().or_else(|| last_good.get(&f.path))),
        );
        if before.is_subset(&now) {
            return None;
        }
        let stamps: Stamps = files.iter().map(|f| (f.path.clone(), f.stamp)).collect();
        (self.confirmed.as_ref() != Some(&stamps)).then_some(Settle::Dropped(stamps))
    }
}

/// A sync's per-state counts as the plain numbers the metrics take.
pub(super) fn secret_counts(
    c: &crate::reconcile::report::StateCounts,
) -> crate::metrics::SecretCounts {
    crate::metrics::SecretCounts {
        pending: c.pending,
        synced: c.synced,
        conflict: c.conflict,
        error: c.error,
        deleted: c.deleted,
        retained: c.retained,
        skipped: c.skipped,
    }
}
