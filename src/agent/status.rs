//! The agent's status document (the `status` reply of the control
//! protocol). Only the engine builds and publishes it, through a
//! `tokio::sync::watch` channel; readers (socket, CLI, metrics) clone the
//! latest snapshot.

use serde::Serialize;

use crate::reconcile::report::{FileStatusView, SecretView, StateCounts, SyncStatus};

/// Agent-level block.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AgentStatus {
    /// `agent.id`.
    pub id: String,
    /// Binary version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// When the agent started (RFC 3339).
    pub started_at: String,
    /// Config file in use.
    pub config_path: String,
    /// When the config in use was loaded.
    pub config_loaded_at: Option<String>,
    /// Errors of the last rejected reload (the old config keeps running).
    pub config_error: Option<String>,
    /// Why the last save of `state_dir` failed (read-only, full), or null
    /// when state is being persisted; while set, imports are held back and
    /// tag bookkeeping survives only in memory.
    pub state_error: Option<String>,
}

/// One sync's status.
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatusView {
    /// Sync name.
    pub name: String,
    /// `enabled`.
    pub enabled: bool,
    /// `auto_sync`.
    pub auto_sync: bool,
    /// Overall status.
    pub sync_status: SyncStatus,
    /// Why it is not SYNCED.
    pub last_sync_message: Option<String>,
    /// Last pass that ended SYNCED.
    pub last_synced_at: Option<String>,
    /// Import status (initial-sync import modes).
    pub import_status: Option<String>,
    /// Import message.
    pub last_import_message: Option<String>,
    /// Last import.
    pub last_imported_at: Option<String>,
    /// Remove ("unsync") status.
    pub remove_status: Option<String>,
    /// Remove message.
    pub last_remove_message: Option<String>,
    /// Last remove.
    pub last_removed_at: Option<String>,
    /// Destination region.
    pub region: String,
    /// `one-to-one` or `many-to-one`.
    pub mapping: String,
    /// Source files.
    pub files: Vec<FileStatusView>,
    /// Per-state tallies.
    pub counts: StateCounts,
    /// Per-secret state.
    pub secrets: Vec<SecretView>,
}

/// The whole status document.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    /// Agent block.
    pub agent: AgentStatus,
    /// One entry per configured sync.
    pub syncs: Vec<SyncStatusView>,
}
