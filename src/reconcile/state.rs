//! Agent state kept in `state_dir`: which syncs finished their initial sync
//! and which tag keys the agent set on each secret (so tags it no longer
//! configures can be removed without touching tags set by others).
//!
//! Every save writes `state.json` and then the same content to
//! `state.json.bak`, each atomically. A `state.json` that exists but cannot
//! be parsed (disk trouble, a hand edit) is copied to `state.json.corrupt`
//! for inspection and the backup is used instead: otherwise a sync with an
//! `import-prioritize-*` initial sync would import again and could
//! overwrite file edits with older AWS values.
//!
//! Losing both is never fatal: the agent then only stops removing stale
//! tags it set earlier, and treats every sync as not yet initially synced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reconcile::plan::TokenKey;
use crate::source::writeback::WriteBackError;

/// File name inside `state_dir`.
pub const STATE_FILE: &str = "state.json";
/// Copy of [`STATE_FILE`] written after it; read only when it is unreadable.
pub const BACKUP_FILE: &str = "state.json.bak";
/// This install's id ([`install_id`]), kept apart from [`STATE_FILE`] so that
/// a corrupt or lost state file does not make the agent a stranger to the
/// secrets it wrote.
pub const INSTALL_ID_FILE: &str = "install-id";
/// Where an unreadable [`STATE_FILE`] is copied before it is replaced.
pub const CORRUPT_FILE: &str = "state.json.corrupt";

/// Remembered facts about one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The first pass finished (initial-sync behaviour done).
    #[serde(default)]
    pub initial_sync_done: bool,
    /// Tag keys this agent set, per secret name (ownership tags excluded).
    #[serde(default)]
    pub managed_tags: BTreeMap<String, BTreeSet<String>>,
    /// Replica regions this agent set up (or found configured), per secret
    /// name; a secret without an entry has untracked replicas.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub managed_replicas: BTreeMap<String, BTreeSet<String>>,
    /// Recent deletions and owned counts, so the deletion guard holds over
    /// a rolling window ([`GUARD_WINDOW_SECS`]) and not just one pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard_window: Vec<GuardMark>,
}

/// How long deletions count against the deletion guard: one hour.
pub const GUARD_WINDOW_SECS: u64 = 3600;

/// One pass's contribution to the guard's rolling window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardMark {
    /// Unix time of the pass, in seconds.
    pub at: u64,
    /// Live secrets the sync owned before the pass.
    pub owned: usize,
    /// Secrets the pass scheduled for deletion.
    pub deleted: usize,
    /// Secrets the pass restored (a deletion that was undone no longer
    /// counts against the guard).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restored: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl SyncState {
    /// Deletions in the window ending at `now`, and the most secrets owned
    /// in it.
    pub fn guard_totals(&self, now: u64) -> (usize, usize) {
        let recent = self
            .guard_window
            .iter()
            .filter(|m| now.saturating_sub(m.at) < GUARD_WINDOW_SECS);
        let (deleted, restored, peak) = recent.fold((0, 0, 0), |(d, r, peak), m| {
            (d + m.deleted, r + m.restored, peak.max(m.owned))
        });
        (deleted.saturating_sub(restored), peak)
    }

    /// Records a pass: drops marks older than the window, starts the window
    /// afresh after deletions an operator confirmed, and adds a mark when
    /// the pass deleted something or owned more than the window's peak (so
    /// a quiet pass does not rewrite the state file).
    pub fn record_guard(
        &mut self,
        now: u64,
        owned: usize,
        deleted: usize,
        restored: usize,
        confirmed: bool,
    ) {
        self.guard_window
            .retain(|m| now.saturating_sub(m.at) < GUARD_WINDOW_SECS);
        if confirmed && deleted > 0 {
            self.guard_window.clear();
            self.guard_window.push(GuardMark {
                at: now,
                owned: owned.saturating_sub(deleted),
                deleted: 0,
                restored: 0,
            });
            return;
        }
        let (_, peak) = self.guard_totals(now);
        if deleted > 0 || restored > 0 || owned > peak {
            self.guard_window.push(GuardMark {
                at: now,
                owned,
                deleted,
                restored,
            });
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Per-sync state by sync name.
    #[serde(default)]
    pub syncs: BTreeMap<String, SyncState>,
    /// Hex key for idempotency tokens (see [`TokenKey`]); created on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    /// Set by [`State::load`] when a state file existed but neither it nor
    /// its backup could be used: which initial syncs already ran is unknown.
    #[serde(skip)]
    pub lost: Option<String>,
}

/// Why the state could not be saved.
#[derive(Debug, thiserror::Error)]
#[error("cannot write state file {path}: {source}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// The IO error.
    pub source: std::io::Error,
}

impl State {
    /// The idempotency-token key, created from the OS random source when
    /// absent or unreadable. Callers save the state so it persists.
    pub fn ensure_token_key(&mut self) -> TokenKey {
        if let Some(key) = self.token_key.as_deref().and_then(parse_key) {
            return key;
        }
        let bytes = random_bytes();
        self.token_key = Some(hex(&bytes));
        TokenKey(bytes)
    }

    /// Loads `dir/state.json`; a missing file gives the empty state. One
    /// that cannot be read or parsed is logged (and, if corrupt, copied to
    /// [`CORRUPT_FILE`]); then the backup is used, else the empty state.
    pub fn load(dir: &Path) -> State {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => return state,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "state file is corrupt; trying its backup");
                    if let Err(e) = write_atomic(dir, CORRUPT_FILE, &bytes) {
                        tracing::warn!(error = %e, "cannot keep a copy of the corrupt state file");
                    }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return State::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read state file; trying its backup");
            }
        }
        let backup = dir.join(BACKUP_FILE);
        let read = std::fs::read(&backup).map_err(|e| e.to_string());
        match read.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
            Ok(state) => {
                tracing::warn!(path = %backup.display(), "state recovered from the backup");
                state
            }
            Err(e) => {
                tracing::warn!(path = %backup.display(), error = %e, "state backup unusable too; starting from an empty state (initial imports wait for an explicit resync)");
                State {
                    lost: Some(format!(
                        "{} and its backup are unreadable, so whether the initial import already ran is unknown",
                        path.display()
                    )),
                    ..State::default()
                }
            }
        }
    }

    /// Writes `state.json`, then the same to `state.json.bak`, each
    /// atomically. Mode 0600: tag keys are not secret, but nobody else
    /// needs them.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(&State {
            version: 1,
            ..self.clone()
        })
        .map_err(|e| StateError {
            path: dir.join(STATE_FILE),
            source: std::io::Error::other(e),
        })?;
        write_atomic(dir, STATE_FILE, &body)?;
        write_atomic(dir, BACKUP_FILE, &body)
    }
}

/// Temp file in the same directory, fsync, rename over `name`, fsync the
/// directory: a crash leaves the old file or the new one, never a mix.
/// Writes `dir/name` through the one atomic write (temp file removed on any
/// failure, mode 0600 for a new file, the existing mode kept otherwise).
fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> Result<(), StateError> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir).map_err(|source| StateError {
        path: path.clone(),
        source,
    })?;
    match crate::source::writeback::write_atomic(&path, body, false) {
        Ok(_) => Ok(()),
        Err(WriteBackError::Io { path, source }) => Err(StateError { path, source }),
        Err(other) => Err(StateError {
            path,
            source: std::io::Error::other(other.to_string()),
        }),
    }
}

/// 32 bytes from the OS random source. Never falls back to a predictable
/// value silently: without `/dev/urandom` it mixes time and pid, and says so.
fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        tracing::warn!(error = %e, "cannot read /dev/urandom; random id derived from time and pid");
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes = Sha256::digest(seed.as_bytes()).into();
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This install's id: 16 hex characters kept in `dir/install-id`, written
/// as a tag with every secret the agent creates so that two hosts sharing an
/// `agent.id` never overwrite or delete each other's secrets. Created on
/// first use when `create`; a plan (`create: false`) on a fresh install gets
/// a throwaway id, as a first sync would. `None` when the id cannot be kept
/// (the state dir cannot be written): the collision check is then off,
/// since the next run would otherwise look like another install.
pub fn install_id(dir: &Path, create: bool) -> Option<String> {
    let path = dir.join(INSTALL_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(id.to_ascii_lowercase());
        }
        tracing::warn!(path = %path.display(), "install id file is not 16 hex characters; making a new id");
    }
    let id = hex(&random_bytes()[..8]);
    if !create {
        return Some(id);
    }
    match write_atomic(dir, INSTALL_ID_FILE, format!("{id}\n").as_bytes()) {
        Ok(()) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep an install id; the check for other installs sharing this agent.id is off");
            None
        }
    }
}

fn parse_key(hex: &str) -> Option<TokenKey> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TokenKey(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_id_is_kept_apart_from_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        // A plan on a fresh install creates nothing.
        assert!(install_id(dir.path(), false).is_some());
        assert!(!dir.path().join(INSTALL_ID_FILE).exists());
        let id = install_id(dir.path(), true).expect("kept");
        assert_eq!(id.len(), 16);
        assert_eq!(install_id(dir.path(), true).as_deref(), Some(id.as_str()));
        assert_eq!(install_id(dir.path(), false).as_deref(), Some(id.as_str()));
        // Losing state.json does not change it.
        std::fs::write(dir.path().join(STATE_FILE), b"{").unwrap();
        let _ = State::load(dir.path());
        assert_eq!(install_id(dir.path(), true).as_deref(), Some(id.as_str()));
        // A damaged id file is replaced by a new, valid one.
        std::fs::write(dir.path().join(INSTALL_ID_FILE), b"junk").unwrap();
        let new = install_id(dir.path(), true).expect("new id");
        assert_ne!(new, id);
        assert_eq!(new.len(), 16);
        // A state dir that cannot be written turns the check off.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(install_id(&file, true), None);
    }

    #[test]
    fn round_trip_and_recover_from_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()), State::default());
        let mut s = State::default();
        s.syncs
            .entry("app".into())
            .or_default()
            .managed_tags
            .insert("n".into(), BTreeSet::from(["team".into()]));
        s.save(dir.path()).unwrap();
        let loaded = State::load(dir.path());
        assert_eq!(loaded.syncs, s.syncs);
        let mut keyed = State::default();
        let key = keyed.ensure_token_key();
        assert_ne!(key, TokenKey::default());
        assert_eq!(keyed.ensure_token_key(), key, "stable once created");
        keyed.save(dir.path()).unwrap();
        assert_eq!(
            State::load(dir.path()).ensure_token_key(),
            key,
            "survives a restart"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(STATE_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(State::default().ensure_token_key(), key, "random per agent");
        // A corrupt state.json: the backup (same content) is used, and the
        // corrupt bytes are kept aside.
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert_eq!(State::load(dir.path()).ensure_token_key(), key);
        assert_eq!(
            std::fs::read(dir.path().join(CORRUPT_FILE)).unwrap(),
            b"{not json"
        );
        // Both unusable: the empty state, marked lost.
        std::fs::write(dir.path().join(BACKUP_FILE), b"").unwrap();
        let lost = State::load(dir.path());
        assert!(lost.lost.is_some());
        assert_eq!(State { lost: None, ..lost }, State::default());
        // A missing state.json is a fresh start even with a backup present
        // (deleting it is how an operator resets the agent's memory).
        keyed.save(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(State::load(dir.path()), State::default());
    }
}
