//! One reconcile pass for one sync: read files → desired → read AWS →
//! plan → (apply). Shared by the one-shot commands and the agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::{self, Applied};
use crate::config::{Config, FormatSetting, InitialSync, Mapping, SyncConfig};
use crate::desired::{self, Desired, MappingKind, MappingSpec};
use crate::files::{self, FileView};
use crate::naming;
use crate::plan::{self, Actual, Plan, PlanOptions, SecretState};
use crate::report::{self, SyncReport, SyncStatus};
use crate::source::SourceFormat;
use crate::state::SyncState;
use crate::store::{Connection, SecretStore, StoreError};

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
    /// Set when the sync's initial-sync mode is not implemented yet.
    pub unsupported: Option<String>,
    /// `enabled` from the config.
    pub enabled: bool,
}

impl SyncJob {
    /// Sets the idempotency-token key (kept in `state_dir`).
    pub fn with_token_key(mut self, key: crate::plan::TokenKey) -> SyncJob {
        self.options.token_key = key;
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
        let unsupported = match sync.options.initial_sync {
            InitialSync::OverwriteDestination => None,
            InitialSync::ImportPrioritizeSource => {
                Some("initial_sync: import-prioritize-source is not supported yet".to_string())
            }
            InitialSync::ImportPrioritizeDestination => {
                Some("initial_sync: import-prioritize-destination is not supported yet".to_string())
            }
        };
        SyncJob {
            region: d.region.clone(),
            connection: Connection {
                region: d.region.clone(),
                profile: d.profile.clone(),
                role_arn: d.role_arn.clone(),
                external_id: d.external_id.clone(),
                endpoint_url: config.aws.endpoint_url.clone(),
                max_write_tps: config.aws.max_write_tps,
                max_read_tps: config.aws.max_read_tps,
                call_timeout: config.aws.call_timeout,
            },
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
                token_key: crate::plan::TokenKey::default(),
            },
            unsupported,
            enabled: sync.enabled,
            spec,
        }
    }
}

/// Reads what AWS holds for `desired`: owned secrets by tag, same-named
/// unowned ones by name, then values of those the planner compares.
pub async fn read_actual<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    adopt: bool,
) -> Result<Actual, StoreError> {
    let mut actual = Actual::default();
    for r in store.list_by_sync(&spec.sync_name).await? {
        actual.secrets.insert(r.name.clone(), r);
    }
    let unknown: Vec<String> = desired
        .claimed_names()
        .into_iter()
        .filter(|n| !actual.secrets.contains_key(*n))
        .map(str::to_string)
        .collect();
    if !unknown.is_empty() {
        for r in store.lookup_names(&unknown).await? {
            actual.secrets.insert(r.name.clone(), r);
        }
    }
    let to_read = plan::names_to_read(spec, desired, &actual.secrets, adopt);
    if !to_read.is_empty() {
        for (name, read) in store.get_values(&to_read).await? {
            let entry = match read {
                Ok(v) => Ok(v.value),
                Err(e) => Err(e.to_string()),
            };
            // Reads may come back by ARN; map them to names.
            let name = actual
                .secrets
                .values()
                .find(|r| r.arn == name)
                .map_or(name, |r| r.name.clone());
            actual.values.insert(name, entry);
        }
    }
    Ok(actual)
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
    };
    if let Some(why) = &job.unsupported {
        rep.sync_status = SyncStatus::Failed;
        rep.last_sync_message = Some(why.clone());
        return PassResult {
            report: rep,
            plan: None,
            applied: None,
            transient: false,
        };
    }
    let parsed: Vec<_> = files
        .iter()
        .filter_map(|f| f.result.as_ref().ok().or_else(|| last_good.get(&f.path)))
        .collect();
    let mut desired = desired::build_desired(&job.spec, &parsed);
    hold_back_shadowed(&mut desired, files, last_good);
    let mut opts = job.options.clone();
    opts.allow_deletes = allow_deletes;
    opts.deletes_blocked = blocked_reason(files);
    opts.managed_tags = state.managed_tags.clone();
    let actual = match read_actual(store.as_ref(), &job.spec, &desired, opts.adopt_existing).await {
        Ok(a) => a,
        Err(e) => {
            rep.sync_status = if e.is_transient() {
                SyncStatus::Pending
            } else {
                SyncStatus::Failed
            };
            rep.last_sync_message = Some(format!("cannot read AWS state: {e}"));
            return PassResult {
                report: rep,
                plan: None,
                applied: None,
                transient: e.is_transient(),
            };
        }
    };
    let plan = plan::plan(&job.spec, &desired, &actual, &opts);
    rep.counts = report::ActionCounts::of(&plan);
    let applied = match mode {
        Mode::Plan => None,
        Mode::Apply => {
            Some(apply::apply(Arc::clone(&store), &plan, apply::DEFAULT_CONCURRENCY).await)
        }
    };
    rep.actions = report::action_views(&plan, applied.as_ref());
    let secrets = applied.as_ref().map_or(&plan.secrets, |a| &a.secrets);
    let views = report::secret_views(secrets, &now);
    let transient = applied.as_ref().is_some_and(Applied::has_transient_failure);
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
    PassResult {
        report: rep,
        plan: Some(plan),
        applied,
        transient,
    }
}

/// Updates remembered tag ownership after an applied pass: tag keys set or
/// removed by a call that succeeded are recorded, even when a later step for
/// the same secret failed (the next pass sees those tags as already equal and
/// would never record them); deleted secrets are forgotten.
pub fn record_state(state: &mut SyncState, plan: &Plan, applied: &Applied) {
    let mut tags_by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (a, outcome) in plan.actions.iter().zip(&applied.outcomes) {
        if *outcome != apply::Outcome::Ok {
            continue;
        }
        if let plan::Op::Create(req) = &a.op {
            tags_by_name.insert(&a.name, req.tags.keys().cloned().collect());
        }
        if let plan::Op::Tag { set, .. } = &a.op {
            tags_by_name
                .entry(&a.name)
                .or_default()
                .extend(set.keys().cloned());
        }
    }
    for s in &applied.secrets {
        match s.state {
            SecretState::Deleted => {
                state.managed_tags.remove(&s.name);
            }
            _ => {
                if let Some(keys) = tags_by_name.get(s.name.as_str()) {
                    let entry = state.managed_tags.entry(s.name.clone()).or_default();
                    entry.extend(
                        keys.iter()
                            .filter(|k| !k.starts_with(naming::RESERVED_TAG_PREFIX))
                            .cloned(),
                    );
                }
                let removed: Vec<&String> = plan
                    .actions
                    .iter()
                    .zip(&applied.outcomes)
                    .filter(|(a, o)| a.name == s.name && **o == apply::Outcome::Ok)
                    .filter_map(|(a, _)| match &a.op {
                        plan::Op::Tag { remove, .. } => Some(remove),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if let Some(entry) = state.managed_tags.get_mut(&s.name) {
                    for r in removed {
                        entry.remove(r);
                    }
                }
            }
        }
    }
}
