//! One reconcile pass for one sync: read files → desired → read AWS →
//! plan → (apply). Shared by the one-shot commands and the agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{AwsSettings, Config, FormatSetting, InitialSync, Mapping, SyncConfig};
use crate::naming;
use crate::reconcile::apply::{self, Applied};
use crate::reconcile::desired::{self, Desired, MappingKind, MappingSpec};
use crate::reconcile::import::{self, ImportMode};
use crate::reconcile::known::{Knowledge, KnownValues};
use crate::reconcile::plan::{
    self, Actual, DescribeReplicas, Plan, PlanOptions, SecretState, TokenKey,
};
use crate::reconcile::report::{self, SyncReport, SyncStatus};
use crate::reconcile::state::SyncState;
use crate::secret::SecretValue;
use crate::source::SourceFormat;
use crate::source::files::{self, FileView};
use crate::source::writeback::{self, Edit};
use crate::store::{Connection, RemoteSecret, SecretStore, StoreError};

mod actual;
mod import_step;
mod kms;
mod record;
#[allow(unused_imports)]
pub use actual::*;
#[allow(unused_imports)]
pub use import_step::*;
pub use kms::{KmsWrites, kms_facts};
#[allow(unused_imports)]
pub use record::*;

/// Everything a pass needs about one sync, resolved from the config once.
#[derive(Debug, Clone)]
pub struct SyncJob {
    /// Mapping rules.
    pub spec: MappingSpec,
    /// Destination region.
    pub region: String,
    /// How to reach the destination.
    pub connection: Connection,
    /// Source file patterns.
    pub files: Vec<String>,
    /// Source format; `None` = by extension.
    pub format: Option<SourceFormat>,
    /// `${VAR}` expansion.
    pub expand: bool,
    /// Largest source file read.
    pub max_file_size: u64,
    /// Base planner options (per-pass flags are set by the caller).
    pub options: PlanOptions,
    /// Initial-sync import mode, if any (applies until the first pass
    /// succeeds).
    pub import: Option<ImportMode>,
    /// Why `state_dir` cannot be written, when it cannot. An import must
    /// not run then: without a record that it ran, the next pass would
    /// import again and could overwrite local edits with AWS values.
    pub state_unwritable: Option<String>,
    /// Why an initial import must wait for an explicit resync: the state
    /// file was lost, so the import may already have run, and running it
    /// again could overwrite file edits with older AWS values. The engine
    /// sets it for passes nobody asked for explicitly.
    pub import_held: Option<String>,
    /// `enabled` from the config.
    pub enabled: bool,
    /// Which secrets' replicas this pass describes (set per pass by the
    /// caller; `Untracked` by default).
    pub describe_replicas: DescribeReplicas,
    /// Values seen in AWS by earlier passes of this sync (runtime memory,
    /// shared by clones; see [`KnownValues`]).
    pub known: KnownValues,
    /// How much of AWS this pass lists (set per pass by the caller).
    pub listing: Listing,
    /// KMS key writes of earlier passes of this sync (runtime memory,
    /// shared by clones; see [`KmsWrites`]).
    pub kms_writes: KmsWrites,
}

/// How much of AWS a pass lists before planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listing {
    /// The sync's every secret (`ListSecrets` by tag, one page per 100):
    /// one-shot commands, the first pass, drift checks, resyncs.
    #[default]
    Full,
    /// A pass started by a file event: when the desired names are exactly
    /// those of the last full listing (nothing to create, delete or
    /// re-check for conflicts), only the secrets whose value changed are
    /// described again (`DescribeSecret`), the rest come from that
    /// listing; otherwise a full listing.
    Changed,
}

impl SyncJob {
    /// The report of a sync that is in the config with `enabled: false`.
    pub fn disabled_report(&self) -> SyncReport {
        self.bare_report(SyncStatus::Disabled, "enabled: false".into())
    }

    /// Sets the idempotency-token key (kept in `state_dir`).
    pub fn with_token_key(mut self, key: crate::reconcile::plan::TokenKey) -> SyncJob {
        self.options.token_key = key;
        self
    }

    /// Sets this install's id (see [`crate::reconcile::state::install_id`]).
    pub fn with_install_id(mut self, id: Option<String>) -> SyncJob {
        self.options.install_id = id;
        self
    }

    /// Reads and parses the sync's source files (the only IO before planning).
    pub fn read_files(&self) -> Vec<FileView> {
        files::read_sources(&self.files, self.format, self.expand, self.max_file_size)
    }

    /// Resolves one sync of a validated config.
    pub fn from_config(config: &Config, sync: &SyncConfig) -> SyncJob {
        let d = &sync.destination;
        let patterns = |globs: &[String]| -> Vec<glob::Pattern> {
            // Globs were compiled once during config validation.
            globs
                .iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .collect()
        };
        let spec = MappingSpec {
            sync_name: sync.name.clone(),
            agent_id: config.agent.id.clone(),
            environment: sync.source.environment.clone(),
            mapping: match d.mapping {
                Mapping::OneToOne => MappingKind::OneToOne,
                Mapping::ManyToOne => MappingKind::ManyToOne,
            },
            key_schema: d.key_schema.clone(),
            secret_name: d.secret_name.clone(),
            include: patterns(&sync.source.include),
            exclude: patterns(&sync.source.exclude),
            tags: d.tags.clone(),
            metadata_as_tags: d.sync_metadata_as_tags,
            kms_key_id: d.kms_key_id.clone(),
            description: d.description.clone(),
            replica_regions: d.replica_regions.clone(),
        };
        let import = match sync.options.initial_sync {
            InitialSync::OverwriteDestination => None,
            InitialSync::ImportPrioritizeSource => Some(ImportMode::PrioritizeSource),
            InitialSync::ImportPrioritizeDestination => Some(ImportMode::PrioritizeDestination),
        };
        SyncJob {
            known: KnownValues::default(),
            kms_writes: KmsWrites::default(),
            listing: Listing::Full,
            region: d.region.clone(),
            connection: aws_connection(
                &config.aws,
                d.region.clone(),
                d.profile.clone(),
                d.role_arn.clone(),
                d.external_id.clone(),
            ),
            files: sync.source.files.clone(),
            format: match sync.source.format {
                FormatSetting::Auto => None,
                FormatSetting::Env => Some(SourceFormat::Env),
                FormatSetting::Yaml => Some(SourceFormat::Yaml),
            },
            expand: sync.source.expand,
            max_file_size: config.agent.max_file_size,
            options: PlanOptions {
                adopt_existing: d.adopt_existing,
                disable_deletion: sync.options.disable_secret_deletion,
                max_delete_fraction: sync.options.max_delete_fraction,
                allow_deletes: false,
                recovery_window_days: d.recovery_window_days,
                deletes_blocked: None,
                managed_tags: BTreeMap::new(),
                managed_replicas: BTreeMap::new(),
                token_key: crate::reconcile::plan::TokenKey::default(),
                install_id: None,
                window_deleted: 0,
                window_owned_peak: 0,
                take_over: false,
                kms: Default::default(),
            },
            import,
            state_unwritable: None,
            import_held: None,
            enabled: sync.enabled,
            describe_replicas: DescribeReplicas::Untracked,
            spec,
        }
    }
}

/// A connection to `region` with the given credentials and the `aws:`
/// endpoint, pacing and timeout settings (shared by every destination).
pub fn aws_connection(
    aws: &AwsSettings,
    region: String,
    profile: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
) -> Connection {
    Connection {
        region,
        profile,
        role_arn,
        external_id,
        endpoint_url: aws.endpoint_url.clone(),
        max_write_tps: aws.max_write_tps,
        max_read_tps: aws.max_read_tps,
        call_timeout: aws.call_timeout,
    }
}

impl SyncJob {
    /// A report for this sync that carries only a status and message (no
    /// pass ran: disabled, or the AWS client could not be set up).
    pub fn bare_report(&self, status: SyncStatus, message: String) -> SyncReport {
        SyncReport {
            name: self.spec.sync_name.clone(),
            region: self.region.clone(),
            sync_status: status,
            last_sync_message: Some(message),
            files: vec![],
            actions: vec![],
            counts: Default::default(),
            secrets: None,
            import_status: None,
            last_import_message: None,
        }
    }
}

/// Whether a pass only plans or also writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dry run.
    Plan,
    /// Make the calls.
    Apply,
}

/// Everything one pass produced.
#[derive(Debug)]
pub struct PassResult {
    /// The report (JSON/human output, status).
    pub report: SyncReport,
    /// The plan, for callers that update state.
    pub plan: Option<Plan>,
    /// Apply outcomes.
    pub applied: Option<Applied>,
    /// The pass could not reach AWS (or was throttled): retry later.
    pub transient: bool,
    /// Among the transient failures, AWS answered with throttling (the
    /// agent spreads a throttled first pass with full jitter).
    pub throttled: bool,
    /// Outcome of the initial-sync import, when one ran.
    pub import: Option<ImportOutcome>,
    /// The files as re-read after an import wrote into them (the agent
    /// keeps their digests, so its own write does not trigger a pass).
    pub files_after: Option<Vec<FileView>>,
}

/// Outcome of an import step.
fn merged_local(
    spec: &MappingSpec,
    parsed: &[&crate::source::ParsedFile],
) -> BTreeMap<String, crate::secret::SecretValue> {
    let mut local = BTreeMap::new();
    for file in parsed {
        for e in &file.entries {
            if spec.key_selected(&e.key) {
                local.insert(e.key.clone(), e.value.clone());
            }
        }
    }
    local
}

fn blocked_reason(files: &[FileView]) -> Option<String> {
    let bad: Vec<String> = files
        .iter()
        .filter(|f| f.result.is_err())
        .map(|f| f.path.display().to_string())
        .collect();
    (!bad.is_empty()).then(|| format!("source file(s) missing or unreadable: {}", bad.join(", ")))
}

/// A file that exists but cannot be read or parsed is not applied (SPEC §4),
/// and its content is unknown here. Keys that only files listed before it
/// define may be overridden by it, so writing them would roll those secrets
/// back to the earlier file's value: they are held back as per-key errors
/// (which also keeps them from deletion) until the file reads again. A
/// missing file (or a glob matching nothing) holds nothing back.
fn hold_back_shadowed(
    desired: &mut Desired,
    files: &[FileView],
    last_good: &BTreeMap<std::path::PathBuf, crate::source::ParsedFile>,
) {
    // A failing file whose last good view the agent still has is not
    // unknown: that view stands in for it.
    fn view<'a>(
        f: &'a FileView,
        last_good: &'a BTreeMap<std::path::PathBuf, crate::source::ParsedFile>,
    ) -> Option<&'a crate::source::ParsedFile> {
        f.result.as_ref().ok().or_else(|| last_good.get(&f.path))
    }
    let Some(last_bad) = files.iter().rposition(|f| {
        view(f, last_good).is_none()
            && matches!(&f.result, Err(e) if !matches!(e, files::FileError::Missing(_)))
    }) else {
        return;
    };
    let keys = |views: &[FileView]| -> std::collections::BTreeSet<String> {
        views
            .iter()
            .filter_map(|f| view(f, last_good))
            .flat_map(|p| p.entries.iter().map(|e| e.key.clone()))
            .collect()
    };
    let later = keys(&files[last_bad + 1..]);
    let shadowed: std::collections::BTreeSet<String> = keys(&files[..last_bad])
        .difference(&later)
        .cloned()
        .collect();
    let why = format!(
        "not written while {} cannot be read: it may override this value",
        files[last_bad].path.display()
    );
    let (held, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut desired.secrets)
        .into_iter()
        .partition(|d| match (&d.key, &d.json_keys) {
            (Some(k), _) => shadowed.contains(k),
            (None, Some(json)) => json.iter().any(|k| shadowed.contains(k)),
            (None, None) => false,
        });
    desired.secrets = kept;
    desired
        .errors
        .extend(held.into_iter().map(|d| desired::DesiredError {
            key: d.key,
            name: Some(d.name),
            message: why.clone(),
        }));
}

/// Runs one pass for `job`.
pub async fn run_pass<S: SecretStore>(
    store: Arc<S>,
    job: &SyncJob,
    mode: Mode,
    allow_deletes: bool,
    state: &SyncState,
) -> PassResult {
    let files = job.read_files();
    run_pass_with_files(
        store,
        job,
        &files,
        &BTreeMap::new(),
        mode,
        allow_deletes,
        state,
    )
    .await
}

/// Runs one pass on files already read. `last_good` supplies, per path, the
/// last view that parsed, used in place of a file that now fails (the
/// agent keeps syncing what it knew; deletions stay blocked while any file
/// fails).
pub async fn run_pass_with_files<S: SecretStore>(
    store: Arc<S>,
    job: &SyncJob,
    files: &[FileView],
    last_good: &BTreeMap<std::path::PathBuf, crate::source::ParsedFile>,
    mode: Mode,
    allow_deletes: bool,
    state: &SyncState,
) -> PassResult {
    let now = report::now_rfc3339();
    let mut rep = SyncReport {
        name: job.spec.sync_name.clone(),
        region: job.region.clone(),
        sync_status: SyncStatus::Pending,
        last_sync_message: None,
        files: report::file_views(files, &now),
        actions: vec![],
        counts: Default::default(),
        secrets: None,
        import_status: None,
        last_import_message: None,
    };
    let parsed: Vec<_> = files
        .iter()
        .filter_map(|f| f.result.as_ref().ok().or_else(|| last_good.get(&f.path)))
        .collect();
    let mut desired = desired::build_desired(&job.spec, &parsed);
    locate_key_errors(&mut desired, files, last_good);
    hold_back_shadowed(&mut desired, files, last_good);
    let mut opts = job.options.clone();
    opts.allow_deletes = allow_deletes;
    opts.deletes_blocked = blocked_reason(files);
    opts.managed_tags = state.managed_tags.clone();
    opts.managed_replicas = state.managed_replicas.clone();
    (opts.window_deleted, opts.window_owned_peak) =
        state.guard_totals(crate::reconcile::state::unix_now());
    let fail_early = |mut rep: SyncReport,
                      status,
                      message,
                      cause: Option<&StoreError>,
                      import: Option<ImportOutcome>| {
        rep.sync_status = status;
        rep.last_sync_message = Some(message);
        if let Some(outcome) = &import {
            outcome.record(&mut rep);
        }
        PassResult {
            report: rep,
            plan: None,
            applied: None,
            transient: cause.is_some_and(StoreError::is_transient),
            throttled: cause.is_some_and(StoreError::is_throttled),
            import,
            files_after: None,
        }
    };
    // An initial-sync import compares AWS values with the files: it reads
    // them all rather than rely on what earlier passes saw.
    let import_due = job.import.is_some() && !state.initial_sync_done;
    let fresh = KnownValues::default();
    let known = if import_due { &fresh } else { &job.known };
    let mut actual = match read_actual(
        store.as_ref(),
        &job.spec,
        &desired,
        &opts,
        job.describe_replicas,
        known,
        if import_due {
            Listing::Full
        } else {
            job.listing
        },
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let status = if e.is_transient() {
                SyncStatus::Pending
            } else {
                SyncStatus::Failed
            };
            let msg = format!("cannot read AWS state: {e}");
            return fail_early(rep, status, msg, Some(&e), None);
        }
    };
    // Initial-sync import: bring in-scope AWS secrets into the first file
    // before the push, so files and AWS agree at the end of this pass.
    let mut import_outcome = None;
    let mut import_actions = Vec::new();
    let mut files_after: Option<Vec<FileView>> = None;
    if let Some(import_mode) = job.import.filter(|_| !state.initial_sync_done) {
        if let (Mode::Apply, Some(why)) = (mode, &job.state_unwritable) {
            let outcome = ImportOutcome {
                ok: false,
                message: format!(
                    "the import needs a writable state_dir to remember that it ran: {why}"
                ),
            };
            let msg = format!("import failed, nothing written: {}", outcome.message);
            return fail_early(rep, SyncStatus::Failed, msg, None, Some(outcome));
        }
        if let (Mode::Apply, Some(why)) = (mode, &job.import_held) {
            let outcome = ImportOutcome {
                ok: false,
                message: format!(
                    "the initial import is held back: {why}; run `secretsync resync {}` to import now",
                    job.spec.sync_name
                ),
            };
            let msg = format!("nothing written: {}", outcome.message);
            return fail_early(rep, SyncStatus::Failed, msg, None, Some(outcome));
        }
        let local = merged_local(&job.spec, &parsed);
        let decision =
            match prepare_import(store.as_ref(), job, import_mode, &local, &mut actual).await {
                Ok(d) => d,
                Err(ImportFailure::Store(e)) => {
                    let msg = format!("cannot read AWS state for the import: {e}");
                    let status = if e.is_transient() {
                        SyncStatus::Pending
                    } else {
                        SyncStatus::Failed
                    };
                    return fail_early(rep, status, msg, Some(&e), None);
                }
                Err(ImportFailure::Invalid(msg)) => {
                    let outcome = ImportOutcome {
                        ok: false,
                        message: msg.clone(),
                    };
                    let msg = format!("import failed, nothing written: {msg}");
                    return fail_early(rep, SyncStatus::Failed, msg, None, Some(outcome));
                }
            };
        import_actions = decision
            .sets
            .iter()
            .map(|(c, reason)| plan::Action {
                kind: plan::ActionKind::Import,
                key: Some(c.key.clone()),
                name: c.name.clone(),
                reason: (*reason).to_string(),
                op: plan::Op::None,
            })
            .collect();
        if !decision.sets.is_empty() {
            match mode {
                Mode::Plan => {
                    // Show the push as it will be once the import is written.
                    let synthetic = crate::source::ParsedFile {
                        entries: decision
                            .sets
                            .iter()
                            .map(|(c, _)| crate::source::SourceEntry {
                                key: c.key.clone(),
                                value: c.value.clone(),
                                metadata: BTreeMap::new(),
                                line: 0,
                                column: 0,
                                end_line: 0,
                            })
                            .collect(),
                    };
                    let mut with_import = parsed.clone();
                    with_import.push(&synthetic);
                    desired = desired::build_desired(&job.spec, &with_import);
                    hold_back_shadowed(&mut desired, files, last_good);
                }
                Mode::Apply => {
                    if let Err(msg) = write_import(job, &decision) {
                        let outcome = ImportOutcome {
                            ok: false,
                            message: msg.clone(),
                        };
                        let msg = format!("import failed, nothing written: {msg}");
                        return fail_early(rep, SyncStatus::Failed, msg, None, Some(outcome));
                    }
                    let reread = job.read_files();
                    let parsed_after: Vec<_> = reread
                        .iter()
                        .filter_map(|f| f.result.as_ref().ok().or_else(|| last_good.get(&f.path)))
                        .collect();
                    desired = desired::build_desired(&job.spec, &parsed_after);
                    hold_back_shadowed(&mut desired, &reread, last_good);
                    opts.deletes_blocked = blocked_reason(&reread);
                    rep.files = report::file_views(&reread, &now);
                    files_after = Some(reread);
                }
            }
        }
        import_outcome = Some(ImportOutcome {
            ok: true,
            message: decision.summary(),
        });
    }
    let files: &[FileView] = files_after.as_deref().unwrap_or(files);
    opts.kms = kms_facts(
        store.as_ref(),
        &job.spec,
        &desired,
        &actual,
        opts.adopt_existing,
        &job.kms_writes,
    )
    .await;
    let mut plan = plan::plan(&job.spec, &desired, &actual, &opts);
    if !import_actions.is_empty() {
        import_actions.append(&mut plan.actions);
        plan.actions = import_actions;
    }
    rep.counts = report::ActionCounts::of(&plan);
    let applied = match mode {
        Mode::Plan => None,
        Mode::Apply => {
            let applied = apply::apply(Arc::clone(&store), &plan, apply::DEFAULT_CONCURRENCY).await;
            remember_applied(&job.known, &opts.token_key, &desired, &plan, &applied);
            job.kms_writes.record(&plan, &applied);
            Some(applied)
        }
    };
    rep.actions = report::action_views(&plan, applied.as_ref());
    let secrets = applied.as_ref().map_or(&plan.secrets, |a| &a.secrets);
    let mut views = report::secret_views(secrets, &now);
    for v in &mut views {
        if let Some(r) = plan.replicas.get(&v.name) {
            v.replicas = r.clone();
        }
    }
    let transient = applied.as_ref().is_some_and(Applied::has_transient_failure);
    let throttled = applied.as_ref().is_some_and(Applied::was_throttled);
    let mut problems: Vec<String> = vec![];
    if let Some(g) = &plan.guard_tripped {
        problems.push(g.clone());
    }
    problems.extend(files.iter().filter_map(FileView::error_line));
    let bad = views
        .iter()
        .filter(|s| matches!(s.state, SecretState::Error | SecretState::Conflict))
        .count();
    if bad > 0 {
        problems.push(format!("{bad} secret(s) in ERROR or CONFLICT"));
    }
    rep.sync_status = if transient {
        SyncStatus::Pending
    } else if problems.is_empty() {
        if mode == Mode::Plan && plan.has_changes() {
            SyncStatus::Pending
        } else {
            SyncStatus::Synced
        }
    } else {
        SyncStatus::Failed
    };
    if transient {
        problems.insert(0, "AWS unavailable or throttling; will retry".into());
    }
    rep.last_sync_message = (!problems.is_empty()).then(|| problems.join("; "));
    if mode == Mode::Apply {
        rep.secrets = Some(views);
    }
    if let Some(outcome) = &import_outcome {
        outcome.record(&mut rep);
    }
    PassResult {
        report: rep,
        plan: Some(plan),
        applied,
        transient,
        throttled,
        import: import_outcome,
        files_after,
    }
}

/// Prefixes each per-key error with where the key is written
/// (`PATH:LINE:COL`, of the last file that holds it: the one that wins), so
/// an operator can go straight to the line.
fn locate_key_errors(
    desired: &mut desired::Desired,
    files: &[FileView],
    last_good: &BTreeMap<std::path::PathBuf, crate::source::ParsedFile>,
) {
    for error in &mut desired.errors {
        let Some(key) = &error.key else {
            continue;
        };
        let found = files.iter().rev().find_map(|f| {
            let parsed = f.result.as_ref().ok().or_else(|| last_good.get(&f.path))?;
            let entry = parsed.entries.iter().rev().find(|e| &e.key == key)?;
            Some((&f.path, entry.line, entry.column))
        });
        if let Some((path, line, column)) = found {
            error.message = format!("{}:{line}:{column}: {}", path.display(), error.message);
        }
    }
}
