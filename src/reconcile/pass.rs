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

/// Reads what AWS holds for `desired`: owned secrets by tag, same-named
/// unowned ones by name, values of those the planner compares, and the
/// replicas of those `scope` asks for (see [`plan::names_to_describe`]).
pub async fn read_actual<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    opts: &PlanOptions,
    scope: DescribeReplicas,
    known: &KnownValues,
    listing: Listing,
) -> Result<Actual, StoreError> {
    let adopt = opts.adopt_existing;
    let key = &opts.token_key;
    let changed = match listing {
        Listing::Changed => read_changed(store, spec, desired, known, opts).await?,
        Listing::Full => None,
    };
    let mut actual = match changed {
        Some(actual) => actual,
        None => read_listing(store, spec, desired, known).await?,
    };
    let mut to_read = plan::names_to_read(spec, desired, &actual.secrets, adopt);
    // A current version whose value we wrote or read needs no read: AWS
    // never changes an existing version's value. Many-to-one secrets that
    // differ are still read (the planner's key guard needs their JSON).
    let by_name: BTreeMap<&str, &desired::DesiredSecret> = desired
        .secrets
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    to_read.retain(|name| {
        let Some(d) = by_name.get(name.as_str()) else {
            return true;
        };
        let version = actual
            .secrets
            .get(name)
            .and_then(|r| r.current_version.as_deref());
        match known.compare(key, name, version, &d.value) {
            Knowledge::Holds => {
                actual
                    .values
                    .insert(name.clone(), Ok(Some(d.value.clone())));
                false
            }
            Knowledge::Differs if d.json_keys.is_none() => {
                actual.known_different.insert(name.clone());
                false
            }
            Knowledge::Differs | Knowledge::Unknown => true,
        }
    });
    if !to_read.is_empty() {
        for (name, read) in store.get_values(&to_read).await? {
            // Reads may come back by ARN; map them to names.
            let name = actual
                .secrets
                .values()
                .find(|r| r.arn == name)
                .map_or(name, |r| r.name.clone());
            let entry = match read {
                Ok(v) => {
                    if let (Some(version), Some(value)) = (&v.version_id, &v.value) {
                        known.record(key, &name, version, value);
                    }
                    Ok(v.value)
                }
                Err(e) => Err(e.to_string()),
            };
            actual.values.insert(name, entry);
        }
    }
    for name in plan::names_to_describe(spec, desired, &actual.secrets, opts, scope) {
        match store.describe_replicas(&name).await {
            Ok(replicas) => {
                actual.replicas.insert(name, replicas);
            }
            // Gone since the listing: the next pass sees that.
            Err(StoreError::NotFound { .. }) => {}
            // Replicas stay unknown (nothing is planned for them) and the
            // value sync goes on. The rest are not asked this pass: a
            // missing permission or an outage would fail them all alike.
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "cannot read replication status; replicas are left as they are this pass");
                break;
            }
        }
    }
    Ok(actual)
}

/// The full listing: owned secrets by tag, same-named others by name.
async fn read_listing<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    known: &KnownValues,
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
    known.set_listing(&actual.secrets);
    Ok(actual)
}

/// The narrow read of [`Listing::Changed`]: `None` when a full listing is
/// needed (no trusted listing, names differ, anything not plainly ours, or
/// a re-checked secret is no longer ours and live).
async fn read_changed<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    known: &KnownValues,
    opts: &PlanOptions,
) -> Result<Option<Actual>, StoreError> {
    let key = &opts.token_key;
    // Replica changes are planned from DescribeSecret answers, not from
    // the listing: syncs with replicas always list in full.
    if !spec.replica_regions.is_empty() {
        return Ok(None);
    }
    let Some(cached) = known.listing() else {
        return Ok(None);
    };
    let owned = |r: &RemoteSecret| matches!(plan::ownership(spec, r), plan::Ownership::Ours);
    let live = |r: &RemoteSecret| owned(r) && !r.pending_deletion;
    let wanted: std::collections::BTreeSet<&str> =
        desired.secrets.iter().map(|d| d.name.as_str()).collect();
    // Every desired name is a live secret of ours in the listing, and every
    // live secret of ours there is desired: nothing to create, restore,
    // delete or check for conflicts. Ours already scheduled for deletion
    // may stay (they need nothing).
    let same_names = desired.errors.is_empty()
        && cached.values().all(|r| {
            if wanted.contains(r.name.as_str()) {
                live(r)
            } else {
                owned(r) && r.pending_deletion
            }
        })
        && wanted.iter().all(|n| cached.contains_key(*n));
    if !same_names {
        return Ok(None);
    }
    let mut actual = Actual::default();
    for r in cached
        .values()
        .filter(|r| !wanted.contains(r.name.as_str()))
    {
        actual.secrets.insert(r.name.clone(), r.clone());
    }
    for d in &desired.secrets {
        let Some(r) = cached.get(&d.name) else {
            return Ok(None);
        };
        // Tags as the listing showed them, with none of ours to remove: the
        // planner will not touch this secret's tags either.
        let tags_settled = d.tags.iter().all(|(k, v)| r.tags.get(k) == Some(v))
            && opts
                .managed_tags
                .get(&d.name)
                .is_none_or(|ours| ours.iter().all(|k| d.tags.contains_key(k)));
        if tags_settled && known.holds(key, &d.name, r.current_version.as_deref(), &d.value) {
            actual.secrets.insert(d.name.clone(), r.clone());
            continue;
        }
        // About to be written: ownership and version from AWS, now.
        match store.describe_secret(&d.name).await? {
            Some(fresh) if live(&fresh) => {
                actual.secrets.insert(d.name.clone(), fresh);
            }
            _ => {
                known.drop_listing();
                return Ok(None);
            }
        }
    }
    Ok(Some(actual))
}

/// After an apply, remembers the values AWS now holds for this sync's
/// secrets (written, or found equal) and forgets everything else.
fn remember_applied(
    known: &KnownValues,
    key: &TokenKey,
    desired: &Desired,
    plan: &Plan,
    applied: &Applied,
) {
    // The listing stays true only through our own successful value writes.
    let only_value_writes = plan
        .actions
        .iter()
        .zip(&applied.outcomes)
        .all(|(a, o)| a.kind == plan::ActionKind::Update && matches!(o, apply::Outcome::Ok));
    if only_value_writes {
        for s in &applied.secrets {
            if let (SecretState::Synced, Some(version)) = (s.state, s.version_id.as_deref()) {
                known.listing_wrote(&s.name, version);
            }
        }
    } else {
        known.drop_listing();
    }
    let values: BTreeMap<&str, &SecretValue> = desired
        .secrets
        .iter()
        .map(|d| (d.name.as_str(), &d.value))
        .collect();
    known.retain(|name| values.contains_key(name));
    for s in &applied.secrets {
        match (
            s.state,
            s.version_id.as_deref(),
            values.get(s.name.as_str()),
        ) {
            (SecretState::Synced, Some(version), Some(value)) => {
                known.record(key, &s.name, version, value);
            }
            _ => known.forget(&s.name),
        }
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
    /// Outcome of the initial-sync import, when one ran.
    pub import: Option<ImportOutcome>,
    /// The files as re-read after an import wrote into them (the agent
    /// keeps their digests, so its own write does not trigger a pass).
    pub files_after: Option<Vec<FileView>>,
}

/// Outcome of an import step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Whether the import (and its write-back) succeeded.
    pub ok: bool,
    /// Summary or reason (never values).
    pub message: String,
}

impl ImportOutcome {
    /// `SYNCED` or `FAILED`, as `import_status` spells it.
    pub fn status(&self) -> &'static str {
        if self.ok { "SYNCED" } else { "FAILED" }
    }

    /// Copies the outcome into a report's import fields.
    fn record(&self, rep: &mut SyncReport) {
        rep.import_status = Some(self.status().to_string());
        rep.last_import_message = Some(self.message.clone());
    }
}

/// Why an import could not run.
enum ImportFailure {
    /// AWS could not be read: retry later.
    Store(StoreError),
    /// Scope or write-back problem: nothing is written anywhere.
    Invalid(String),
}

/// Finds the sync's in-scope secrets in AWS (owned, or adoptable when
/// `adopt_existing`), reads their values into `actual`, and returns the
/// import decision against the local view.
async fn prepare_import<S: SecretStore>(
    store: &S,
    job: &SyncJob,
    mode: ImportMode,
    local: &BTreeMap<String, crate::secret::SecretValue>,
    actual: &mut Actual,
) -> Result<import::ImportPlan, ImportFailure> {
    let spec = &job.spec;
    let adopt = job.options.adopt_existing;
    let in_scope = |r: &crate::store::RemoteSecret| {
        !r.pending_deletion
            && match plan::ownership(spec, r) {
                plan::Ownership::Ours => true,
                plan::Ownership::Unowned => adopt,
                plan::Ownership::Foreign(_) => false,
            }
    };
    let mut names: Vec<String> = Vec::new();
    match spec.mapping {
        MappingKind::OneToOne => {
            let prefix = import::name_prefix(spec);
            if adopt && !prefix.is_empty() {
                for r in store
                    .list_by_prefix(&prefix)
                    .await
                    .map_err(ImportFailure::Store)?
                {
                    actual.secrets.entry(r.name.clone()).or_insert(r);
                }
            }
            names.extend(
                actual
                    .secrets
                    .values()
                    .filter(|r| in_scope(r) && import::key_for_name(spec, &r.name).is_some())
                    .map(|r| r.name.clone()),
            );
        }
        MappingKind::ManyToOne => {
            let name = spec.secret_name.clone().unwrap_or_default();
            if actual.secrets.get(&name).is_some_and(in_scope) {
                names.push(name);
            }
        }
    }
    let unread: Vec<String> = names
        .iter()
        .filter(|n| !actual.values.contains_key(*n))
        .cloned()
        .collect();
    if !unread.is_empty() {
        for (name, read) in store
            .get_values(&unread)
            .await
            .map_err(ImportFailure::Store)?
        {
            actual
                .values
                .insert(name, read.map(|v| v.value).map_err(|e| e.to_string()));
        }
    }
    let mut candidates = Vec::new();
    for name in names {
        let value = match actual.values.get(&name) {
            Some(Ok(Some(v))) => v.clone(),
            Some(Ok(None)) => continue,
            Some(Err(e)) => return Err(ImportFailure::Invalid(format!("cannot read {name}: {e}"))),
            None => continue,
        };
        match spec.mapping {
            MappingKind::OneToOne => {
                if let Some(key) = import::key_for_name(spec, &name) {
                    candidates.push(import::Candidate { key, name, value });
                }
            }
            MappingKind::ManyToOne => candidates.extend(
                import::json_candidates(spec, &name, &value).map_err(ImportFailure::Invalid)?,
            ),
        }
    }
    Ok(import::plan_import(mode, local, candidates))
}

/// Writes the import into the sync's first file (created if absent),
/// atomically and keeping its other lines and mode.
fn write_import(job: &SyncJob, plan: &import::ImportPlan) -> Result<std::path::PathBuf, String> {
    let first = job
        .files
        .first()
        .ok_or("the sync has no source file to import into")?;
    // Config validation refuses a glob as the first file of an importing sync.
    let path = std::path::Path::new(first);
    let format = job
        .format
        .or_else(|| SourceFormat::from_path(path))
        .ok_or_else(|| format!("{first}: cannot tell the format; set source.format"))?;
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| format!("{first}: not UTF-8"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{first}: cannot read: {e}")),
    };
    let edits: Vec<Edit> = plan
        .sets
        .iter()
        .map(|(c, _)| Edit::Set {
            key: c.key.clone(),
            value: c.value.clone(),
        })
        .collect();
    let new_text = writeback::apply_checked(&text, format, &edits, job.expand)
        .map_err(|e| format!("{first}: {e}"))?;
    let outcome = writeback::write_atomic(path, new_text.as_bytes(), false)
        .map_err(|e| format!("{first}: {e}"))?;
    for note in &outcome.notes {
        tracing::warn!(file = first, "{note}");
    }
    Ok(outcome.written_path)
}

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
    hold_back_shadowed(&mut desired, files, last_good);
    let mut opts = job.options.clone();
    opts.allow_deletes = allow_deletes;
    opts.deletes_blocked = blocked_reason(files);
    opts.managed_tags = state.managed_tags.clone();
    opts.managed_replicas = state.managed_replicas.clone();
    let fail_early =
        |mut rep: SyncReport, status, message, transient, import: Option<ImportOutcome>| {
            rep.sync_status = status;
            rep.last_sync_message = Some(message);
            if let Some(outcome) = &import {
                outcome.record(&mut rep);
            }
            PassResult {
                report: rep,
                plan: None,
                applied: None,
                transient,
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
            return fail_early(rep, status, msg, e.is_transient(), None);
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
            return fail_early(rep, SyncStatus::Failed, msg, false, Some(outcome));
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
            return fail_early(rep, SyncStatus::Failed, msg, false, Some(outcome));
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
                    return fail_early(rep, status, msg, e.is_transient(), None);
                }
                Err(ImportFailure::Invalid(msg)) => {
                    let outcome = ImportOutcome {
                        ok: false,
                        message: msg.clone(),
                    };
                    let msg = format!("import failed, nothing written: {msg}");
                    return fail_early(rep, SyncStatus::Failed, msg, false, Some(outcome));
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
                        return fail_early(rep, SyncStatus::Failed, msg, false, Some(outcome));
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
        import: import_outcome,
        files_after,
    }
}

/// Updates remembered tag ownership after an applied pass: tag keys set or
/// removed by a call that succeeded are recorded, even when a later step for
/// the same secret failed (the next pass sees those tags as already equal and
/// would never record them); deleted secrets are forgotten.
pub fn record_state(state: &mut SyncState, plan: &Plan, applied: &Applied) {
    let mut tags_by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in applied.succeeded(plan) {
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
    record_replicas(state, plan, applied);
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
                let removed: Vec<&String> = applied
                    .succeeded(plan)
                    .filter(|a| a.name == s.name)
                    .filter_map(|a| match &a.op {
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

/// Updates remembered replica regions after an applied pass: what a
/// describe showed as ours, then each call that succeeded (a create with
/// replicas, an add, a removal); deleted secrets are forgotten.
fn record_replicas(state: &mut SyncState, plan: &Plan, applied: &Applied) {
    for (name, ours) in &plan.replica_tracking {
        state.managed_replicas.insert(name.clone(), ours.clone());
    }
    for a in applied.succeeded(plan) {
        match &a.op {
            plan::Op::Create(req) => {
                state.managed_replicas.insert(
                    a.name.clone(),
                    req.replica_regions.iter().cloned().collect(),
                );
            }
            plan::Op::Replicate { add } => {
                state
                    .managed_replicas
                    .entry(a.name.clone())
                    .or_default()
                    .extend(add.iter().cloned());
            }
            plan::Op::RemoveReplicas { regions } => {
                if let Some(entry) = state.managed_replicas.get_mut(&a.name) {
                    entry.retain(|r| !regions.contains(r));
                }
            }
            plan::Op::Delete { .. } => {
                state.managed_replicas.remove(&a.name);
            }
            _ => {}
        }
    }
}
