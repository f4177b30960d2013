//! Output models for `plan`, `sync` (and later `status`): the JSON shapes of
//! the contract and their human-readable tables. Built from plans and apply
//! outcomes, which carry no values, so nothing here can print one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::reconcile::outcome::{Applied, Outcome};
use crate::reconcile::plan::{ActionKind, Plan, SecretPlan, SecretState};
use crate::source::files::FileView;

/// Sync-level status, as in the status contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SyncStatus {
    /// Waiting for a pass (or for AWS to come back).
    Pending,
    /// A pass is running.
    Running,
    /// Last pass succeeded for every secret.
    Synced,
    /// Last pass left errors, conflicts, a tripped guard or bad files.
    Failed,
    /// `enabled: false`.
    Disabled,
}

impl SyncStatus {
    /// The contract's spelling (`SYNCED`, …), for human output.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Pending => "PENDING",
            SyncStatus::Running => "RUNNING",
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Failed => "FAILED",
            SyncStatus::Disabled => "DISABLED",
        }
    }
}

/// Counts of actions by kind, plus unchanged secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionCounts {
    /// Secrets to create.
    pub create: usize,
    /// Values to write.
    pub update: usize,
    /// Tag changes.
    pub tag: usize,
    /// KMS key changes.
    pub kms: usize,
    /// Description changes.
    pub describe: usize,
    /// Replica region changes.
    pub replicate: usize,
    /// Deletions.
    pub delete: usize,
    /// Restores.
    pub restore: usize,
    /// Imports into files.
    pub import: usize,
    /// Conflicts (left untouched).
    pub conflict: usize,
    /// Errors.
    pub error: usize,
    /// Keys skipped on purpose (empty values).
    pub skip: usize,
    /// Desired secrets needing no call.
    pub unchanged: usize,
}

impl ActionCounts {
    /// Counts a plan's actions.
    pub fn of(plan: &Plan) -> Self {
        Self {
            create: plan.count(ActionKind::Create),
            update: plan.count(ActionKind::Update),
            tag: plan.count(ActionKind::Tag),
            kms: plan.count(ActionKind::Kms),
            describe: plan.count(ActionKind::Describe),
            replicate: plan.count(ActionKind::Replicate),
            delete: plan.count(ActionKind::Delete),
            restore: plan.count(ActionKind::Restore),
            import: plan.count(ActionKind::Import),
            conflict: plan.count(ActionKind::Conflict),
            error: plan.count(ActionKind::Error),
            skip: plan.count(ActionKind::Skip),
            unchanged: plan.unchanged,
        }
    }
}

/// One action in `plan --json` / `sync --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    /// Kind.
    pub action: ActionKind,
    /// Source key (null for many-to-one and orphans).
    pub key: Option<String>,
    /// Secret name.
    pub name: String,
    /// Why.
    pub reason: String,
    /// `sync` only: "ok", "skipped" or the error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Per-secret status (`secrets[]` of the status contract).
#[derive(Debug, Clone, Serialize)]
pub struct SecretView {
    /// Source key.
    pub key: Option<String>,
    /// Secret name.
    pub name: String,
    /// State.
    pub state: SecretState,
    /// Why, for non-SYNCED states.
    pub message: Option<String>,
    /// RFC 3339 time of the last successful sync of this secret.
    pub last_synced_at: Option<String>,
    /// Current version id, when known.
    pub version_id: Option<String>,
    /// Replica regions and their status (`DescribeSecret`, refreshed on the
    /// drift timer); omitted when the secret has none known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<crate::store::ReplicaStatus>,
}

/// Per-file status (`files[]` of the status contract).
#[derive(Debug, Clone, Serialize)]
pub struct FileStatusView {
    /// Path.
    pub path: String,
    /// "ok" or "error".
    pub status: &'static str,
    /// `PATH:LINE:COL: message`, never a value.
    pub error: Option<String>,
    /// Number of keys read.
    pub keys: usize,
    /// When the file was read.
    pub read_at: Option<String>,
}

/// Per-secret state tallies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateCounts {
    /// Secrets accounted for.
    pub secrets: usize,
    /// In step.
    pub synced: usize,
    /// Waiting.
    pub pending: usize,
    /// Owned by someone else.
    pub conflict: usize,
    /// Failed.
    pub error: usize,
    /// Deleted.
    pub deleted: usize,
    /// Kept although not in the source.
    pub retained: usize,
    /// Skipped on purpose (empty values).
    pub skipped: usize,
}

impl StateCounts {
    /// Tallies secret states.
    pub fn of(secrets: &[SecretView]) -> Self {
        let mut c = Self {
            secrets: secrets.len(),
            ..Self::default()
        };
        for s in secrets {
            match s.state {
                SecretState::Synced => c.synced += 1,
                SecretState::Pending => c.pending += 1,
                SecretState::Conflict => c.conflict += 1,
                SecretState::Error => c.error += 1,
                SecretState::Deleted => c.deleted += 1,
                SecretState::Retained => c.retained += 1,
                SecretState::Skipped => c.skipped += 1,
            }
        }
        c
    }
}

/// One sync in `plan --json` / `sync --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Sync name.
    pub name: String,
    /// Destination region.
    pub region: String,
    /// Status after this pass (`plan`: what the plan implies).
    pub sync_status: SyncStatus,
    /// Why the sync failed, or null.
    pub last_sync_message: Option<String>,
    /// Source files.
    pub files: Vec<FileStatusView>,
    /// Actions.
    pub actions: Vec<ActionView>,
    /// Action counts.
    pub counts: ActionCounts,
    /// `sync` only: per-secret results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretView>>,
    /// Initial-sync import status (`SYNCED`/`FAILED`), when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_status: Option<String>,
    /// Import summary or failure reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_import_message: Option<String>,
}

/// Top-level `plan --json` / `sync --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per sync.
    pub syncs: Vec<SyncReport>,
}

/// Current time in RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// File status rows from file views.
pub fn file_views(files: &[FileView], read_at: &str) -> Vec<FileStatusView> {
    files
        .iter()
        .map(|f| FileStatusView {
            path: f.path.display().to_string(),
            status: if f.result.is_ok() { "ok" } else { "error" },
            error: f.error_line(),
            keys: f.result.as_ref().map_or(0, |p| p.entries.len()),
            read_at: Some(read_at.to_string()),
        })
        .collect()
}

/// Action rows, with outcomes when the plan was applied.
pub fn action_views(plan: &Plan, applied: Option<&Applied>) -> Vec<ActionView> {
    plan.actions
        .iter()
        .enumerate()
        .map(|(i, a)| ActionView {
            action: a.kind,
            key: a.key.clone(),
            name: a.name.clone(),
            reason: a.reason.clone(),
            outcome: applied.and_then(|ap| match &ap.outcomes[i] {
                Outcome::NotRun => None,
                Outcome::Ok => Some("ok".into()),
                Outcome::Skipped => Some("skipped: an earlier step for this secret failed".into()),
                Outcome::Failed(e) => Some(e.to_string()),
            }),
        })
        .collect()
}

/// Secret rows; `synced_at` stamps those that ended SYNCED.
pub fn secret_views(secrets: &[SecretPlan], synced_at: &str) -> Vec<SecretView> {
    secrets
        .iter()
        .map(|s| SecretView {
            key: s.key.clone(),
            name: s.name.clone(),
            state: s.state,
            message: s.message.clone(),
            last_synced_at: (s.state == SecretState::Synced).then(|| synced_at.to_string()),
            version_id: s.version_id.clone(),
            replicas: Vec::new(),
        })
        .collect()
}

/// Human table for `plan` and `sync`.
pub fn render_human(report: &Report, applied: bool) -> String {
    let mut out = String::new();
    for s in &report.syncs {
        let c = &s.counts;
        let _ = writeln!(
            out,
            "sync {} ({}) — {}: {} create, {} update, {} tag, {} kms/description, {} replicate, {} delete, {} restore, {} conflict, {} error, {} skip, {} unchanged",
            s.name,
            s.region,
            s.sync_status.as_str(),
            c.create,
            c.update,
            c.tag,
            c.kms + c.describe,
            c.replicate,
            c.delete,
            c.restore,
            c.conflict,
            c.error,
            c.skip,
            c.unchanged
        );
        if let Some(msg) = &s.last_sync_message {
            let _ = writeln!(out, "  ! {msg}");
        }
        for f in s.files.iter().filter_map(|f| f.error.as_ref()) {
            let _ = writeln!(out, "  ! {f}");
        }
        let width = s.actions.iter().map(|a| a.name.len()).max().unwrap_or(0);
        for a in &s.actions {
            let kind = serde_json::to_value(a.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = write!(out, "  {kind:<9} {:<width$}  {}", a.name, a.reason);
            if applied {
                if let Some(o) = &a.outcome {
                    let _ = write!(out, "  [{o}]");
                }
            }
            out.push('\n');
        }
    }
    if report.syncs.is_empty() {
        out.push_str("no syncs selected\n");
    }
    out
}

/// Groups per-action counts by sync for logging.
pub fn summary_line(s: &SyncReport) -> String {
    let c = &s.counts;
    let mut parts = BTreeMap::new();
    for (k, v) in [
        ("create", c.create),
        ("update", c.update),
        ("tag", c.tag),
        ("kms", c.kms),
        ("describe", c.describe),
        ("replicate", c.replicate),
        ("delete", c.delete),
        ("restore", c.restore),
        ("conflict", c.conflict),
        ("error", c.error),
        ("skip", c.skip),
        ("unchanged", c.unchanged),
    ] {
        if v > 0 {
            parts.insert(k, v);
        }
    }
    let parts: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} {} {}", s.name, s.sync_status.as_str(), parts.join(" "))
}
