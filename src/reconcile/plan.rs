//! The planner: desired state vs actual state → the smallest set of calls.
//!
//! Pure and synchronous; every safety rule of the reconcile contract
//! (ownership, no-op writes, idempotency tokens, deletion rules and guard,
//! tag ownership) lives here so it can be proven with table tests.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::naming;
use crate::reconcile::desired::{Desired, DesiredSecret, MappingSpec};
use crate::secret::SecretValue;
use crate::store::{AWS_MANAGED_KMS_ALIAS, CreateSecret, KeyIdentity, RemoteSecret, ReplicaStatus};

/// What AWS holds for the sync: metadata for every relevant secret, and the
/// current value of those the planner must compare.
#[derive(Debug, Clone, Default)]
pub struct Actual {
    /// Secrets by name: owned by this sync plus same-named ones found by lookup.
    pub secrets: BTreeMap<String, RemoteSecret>,
    /// Current values by name (`Ok(None)`: binary secret; `Err`: unreadable).
    pub values: BTreeMap<String, Result<Option<SecretValue>, String>>,
    /// One-to-one names whose current AWS version is known (from an earlier
    /// pass) to hold a value other than the desired one, so they were not
    /// read: the planner writes them without comparing.
    pub known_different: BTreeSet<String>,
    /// Replicas by name, for the secrets described this pass (`ListSecrets`
    /// does not report them); absent = not known this pass.
    pub replicas: BTreeMap<String, Vec<ReplicaStatus>>,
}

/// Knobs of one pass.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Take over same-named secrets without ownership tags.
    pub adopt_existing: bool,
    /// Never delete; orphans become RETAINED.
    pub disable_deletion: bool,
    /// Deletion guard threshold (share of owned secrets).
    pub max_delete_fraction: f64,
    /// Lift the guard for this pass.
    pub allow_deletes: bool,
    /// Recovery window for deletions; 0 forces.
    pub recovery_window_days: u8,
    /// Why deletions are impossible this pass (a source file is missing or
    /// does not parse); `None` when the sources are complete.
    pub deletes_blocked: Option<String>,
    /// Tag keys this agent set earlier, per secret name (from the state dir).
    pub managed_tags: BTreeMap<String, BTreeSet<String>>,
    /// Replica regions this agent set up, per secret name (from the state
    /// dir); an absent entry means the agent does not track that secret's
    /// replicas yet (it is then described before replicas are planned).
    pub managed_replicas: BTreeMap<String, BTreeSet<String>>,
    /// Key for idempotency tokens (from the state dir).
    pub token_key: TokenKey,
    /// This install's id (`state_dir/install-id`), written as a tag with
    /// every create and checked before every write or delete; `None` turns
    /// the install check off (pure planner tests).
    pub install_id: Option<String>,
    /// Secrets of this sync deleted within the guard's rolling window, and
    /// the most it owned in that window (from the state dir).
    pub window_deleted: usize,
    /// See [`PlanOptions::window_deleted`].
    pub window_owned_peak: usize,
    /// Take over secrets another install with the same identity wrote
    /// (`sync --take-over`, after a reinstall of the same host).
    pub take_over: bool,
    /// What the pass learnt about KMS keys before planning (the planner
    /// itself makes no call).
    pub kms: KmsFacts,
}

/// KMS key identities for [`kms_matches`], gathered by the pass before
/// planning (see [`kms_spellings_to_resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmsFacts {
    /// Keys KMS resolved, by the spelling asked (the configured key, and
    /// aliases AWS reports); a spelling missing here could not be resolved.
    pub identities: BTreeMap<String, KeyIdentity>,
    /// Secrets whose key this agent set to a configured key it could not
    /// resolve, with what AWS reported afterwards: `(configured, reported)`
    /// counts as equal from then on, so an unresolvable spelling is written
    /// once, not on every pass.
    pub accepted: BTreeMap<String, (String, Option<String>)>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            adopt_existing: false,
            disable_deletion: false,
            max_delete_fraction: 0.5,
            allow_deletes: false,
            recovery_window_days: 7,
            deletes_blocked: None,
            managed_tags: BTreeMap::new(),
            managed_replicas: BTreeMap::new(),
            token_key: TokenKey::default(),
            install_id: None,
            window_deleted: 0,
            window_owned_peak: 0,
            take_over: false,
            kms: KmsFacts::default(),
        }
    }
}

/// The kind of an action, as printed by `plan` and `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Create a secret.
    Create,
    /// Write a new value.
    Update,
    /// Set or remove tags.
    Tag,
    /// Re-encrypt with another KMS key.
    Kms,
    /// Change the description.
    Describe,
    /// Add or remove replica regions.
    Replicate,
    /// Schedule deletion.
    Delete,
    /// Cancel a scheduled deletion.
    Restore,
    /// Import from AWS into the files (initial sync import modes).
    Import,
    /// Left untouched: owned by someone else.
    Conflict,
    /// Cannot be synced (invalid name, oversize value, unreadable value).
    Error,
    /// Nothing sent on purpose (one-to-one key with an empty value).
    Skip,
}

/// The store call an action makes; `None` for report-only actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Report only (conflict, error).
    None,
    /// `CreateSecret`.
    Create(Box<CreateSecret>),
    /// `PutSecretValue`.
    PutValue {
        /// New value.
        value: SecretValue,
        /// Idempotency token.
        token: String,
    },
    /// `TagResource` and/or `UntagResource`.
    Tag {
        /// Tags to add or overwrite.
        set: BTreeMap<String, String>,
        /// Tag keys to remove.
        remove: Vec<String>,
    },
    /// `UpdateSecret` without a value.
    UpdateMetadata {
        /// New KMS key.
        kms_key_id: Option<String>,
        /// New description.
        description: Option<String>,
    },
    /// `ReplicateSecretToRegions`.
    Replicate {
        /// Regions to add.
        add: Vec<String>,
    },
    /// `RemoveRegionsFromReplication`.
    RemoveReplicas {
        /// Regions to remove.
        regions: Vec<String>,
    },
    /// `DeleteSecret`.
    Delete {
        /// Recovery window; 0 forces.
        recovery_window_days: u8,
    },
    /// `RestoreSecret`.
    Restore,
}

/// One planned step for one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// What kind of step.
    pub kind: ActionKind,
    /// Source key, if any.
    pub key: Option<String>,
    /// Secret name.
    pub name: String,
    /// Why, for humans (never a value).
    pub reason: String,
    /// The call to make.
    pub op: Op,
}

/// Per-secret state, as in the status contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SecretState {
    /// Not yet in step.
    Pending,
    /// AWS matches the files.
    Synced,
    /// Same-named secret owned by someone else; left untouched.
    Conflict,
    /// Cannot be synced.
    Error,
    /// Deleted (scheduled) because its key left the source.
    Deleted,
    /// Not in the source but kept (deletion disabled, guarded or blocked).
    Retained,
    /// In the source with an empty value: nothing sent, nothing deleted.
    Skipped,
}

/// Expected state of one secret once the plan's actions succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPlan {
    /// Source key, if any.
    pub key: Option<String>,
    /// Secret name.
    pub name: String,
    /// State after a successful apply.
    pub state: SecretState,
    /// Explanation for CONFLICT/ERROR/RETAINED.
    pub message: Option<String>,
    /// Current version if no write is planned.
    pub version_id: Option<String>,
}

/// A full plan for one sync.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Steps, grouped by secret in execution order (restore before update
    /// before tag).
    pub actions: Vec<Action>,
    /// Every secret the sync accounts for, with its expected state.
    pub secrets: Vec<SecretPlan>,
    /// Set when the deletion guard held back deletions.
    pub guard_tripped: Option<String>,
    /// Secrets left alone because another install with the same identity
    /// wrote them (counted into a metric).
    pub collisions: usize,
    /// Live secrets the sync owned when the plan was made (guard window).
    pub owned_live: usize,
    /// Deletions were confirmed (`--allow-deletes`): the guard's window
    /// starts afresh.
    pub deletes_confirmed: bool,
    /// Desired secrets that need no call.
    pub unchanged: usize,
    /// Replicas of the secrets described this pass, for status.
    pub replicas: BTreeMap<String, Vec<ReplicaStatus>>,
    /// Replica regions the agent counts as its own for each described
    /// secret (present and configured, or present and set up by it before);
    /// recorded into the state before the outcomes of this plan's calls.
    pub replica_tracking: BTreeMap<String, BTreeSet<String>>,
    /// Secrets left untouched because AWS rotation is turned on for them
    /// (CONFLICT, or RETAINED instead of deleted), for the metric.
    pub rotation_conflicts: usize,
}

impl Plan {
    /// Number of actions of one kind.
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }

    /// Whether applying would change anything in AWS.
    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(|a| a.op != Op::None)
    }
}

/// Key for idempotency tokens. Tokens become AWS version ids, which anyone
/// allowed to describe a secret can read; keying them keeps a short value
/// (a PIN) from being recovered by hashing guesses. The agent keeps its key
/// in `state_dir`, so tokens survive restarts (a retried call after a crash
/// still maps to the same version).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenKey(pub [u8; 32]);

impl TokenKey {
    /// An HMAC-SHA256 under this key, with `domain` fed first so that
    /// digests made for different purposes never coincide.
    pub fn mac(&self, domain: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(domain);
        mac
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// Idempotency token: HMAC-SHA256 under `key` of the secret name, the
/// version it replaces and the value, so a retried call maps to the same
/// version while returning to an earlier value (v1 → v2 → v1) still
/// writes. 64 hex chars (AWS accepts 32–64).
pub fn request_token(
    key: &TokenKey,
    name: &str,
    value: &SecretValue,
    replaces: Option<&str>,
) -> String {
    let mut mac = key.mac(b"secretsync/v1\0");
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac.update(replaces.unwrap_or("").as_bytes());
    mac.update(b"\0");
    mac.update(value.expose().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who owns a remote secret, from its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Both ownership tags carry our agent id and sync name.
    Ours,
    /// No ownership tags at all.
    Unowned,
    /// Some other agent or sync (or a half-tagged secret).
    Foreign(String),
}

/// Classifies a remote secret's owner relative to `spec`.
pub fn ownership(spec: &MappingSpec, secret: &RemoteSecret) -> Ownership {
    ownership_of(&spec.agent_id, &spec.sync_name, &secret.tags)
}

/// The one ownership rule (used by the planner and by `remove`): a secret
/// is ours when both ownership tags carry this agent id and sync name.
pub fn ownership_of(
    agent_id: &str,
    sync_name: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> Ownership {
    let agent = tags.get(naming::TAG_AGENT);
    let sync = tags.get(naming::TAG_SYNC);
    match (agent, sync) {
        (None, None) => Ownership::Unowned,
        (Some(a), Some(s)) if a == agent_id && s == sync_name => Ownership::Ours,
        (a, s) => Ownership::Foreign(format!(
            "owned by agent '{}' sync '{}'",
            a.map_or("?", String::as_str),
            s.map_or("?", String::as_str)
        )),
    }
}

/// The CONFLICT message of a secret with AWS rotation turned on.
pub const ROTATION_CONFLICT: &str = "rotation enabled: AWS owns this value";

/// Whether two spellings name the same key by their text alone: equal, or
/// one is the other's ARN (`alias/x` and `arn:…:alias/x`; a key id and
/// `arn:…:key/ID`).
fn kms_spelled_alike(configured: &str, reported: &str) -> bool {
    if configured == reported {
        return true;
    }
    let tail = |s: &str| s.rsplit(':').next().unwrap_or(s).to_string();
    let ct = tail(configured);
    let rt = tail(reported);
    ct == rt || rt.ends_with(&format!("/{ct}")) || reported.ends_with(&format!("/{configured}"))
}

/// The key id a spelling names without asking KMS: a key ARN or a bare key
/// id names itself; an alias only through `identities`.
fn kms_key_id<'a>(
    spelling: &'a str,
    identities: &'a BTreeMap<String, KeyIdentity>,
) -> Option<&'a str> {
    if let Some(identity) = identities.get(spelling) {
        return Some(&identity.key_id);
    }
    if let Some((_, id)) = spelling.rsplit_once(":key/") {
        return Some(id);
    }
    (!spelling.starts_with("alias/") && !spelling.starts_with("arn:")).then_some(spelling)
}

/// Whether the configured KMS key is the one AWS reports for `secret`
/// (`None`: omitted, which means the AWS-managed `aws/secretsmanager`).
/// Same spelling (or its ARN) → equal; else both resolved to key ids →
/// equal when the ids are; else equal only when this agent wrote the key
/// while it could not be resolved and AWS still reports what it reported
/// after that write ([`KmsFacts::accepted`]).
pub fn kms_matches(secret: &str, configured: &str, remote: Option<&str>, facts: &KmsFacts) -> bool {
    let reported = remote.unwrap_or(AWS_MANAGED_KMS_ALIAS);
    if kms_spelled_alike(configured, reported) {
        return true;
    }
    if let (Some(want), Some(have)) = (
        kms_key_id(configured, &facts.identities),
        kms_key_id(reported, &facts.identities),
    ) {
        return want == have;
    }
    facts
        .accepted
        .get(secret)
        .is_some_and(|(key, seen)| key == configured && seen.as_deref() == remote)
}

/// The key spellings the pass should resolve (`resolve_kms_key`) before
/// planning: for every desired secret whose KMS key the planner compares
/// and whose reported key is not spelt like the configured one, the
/// configured key and the reported one (the AWS-managed alias when AWS
/// omits it) unless they name a key id by themselves. Empty when no key
/// is configured or every spelling agrees: then no KMS call is made.
pub fn kms_spellings_to_resolve(
    spec: &MappingSpec,
    desired: &Desired,
    secrets: &BTreeMap<String, RemoteSecret>,
    adopt_existing: bool,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(configured) = &spec.kms_key_id else {
        return out;
    };
    let none = BTreeMap::new();
    for r in desired.secrets.iter().filter_map(|d| secrets.get(&d.name)) {
        let compared = !r.rotation_enabled
            && match ownership(spec, r) {
                Ownership::Ours => true,
                Ownership::Unowned => adopt_existing,
                Ownership::Foreign(_) => false,
            };
        let reported = r.kms_key_id.as_deref().unwrap_or(AWS_MANAGED_KMS_ALIAS);
        if !compared || kms_spelled_alike(configured, reported) {
            continue;
        }
        for spelling in [configured.as_str(), reported] {
            if kms_key_id(spelling, &none).is_none() {
                out.insert(spelling.to_owned());
            }
        }
    }
    out
}

/// Values equal for this mapping: exact for one-to-one, semantic JSON for
/// many-to-one (key order and whitespace in AWS do not cause a write).
fn values_equal(desired: &DesiredSecret, remote: &SecretValue) -> bool {
    if desired.json_keys.is_none() {
        return desired.value == *remote;
    }
    let want: Result<serde_json::Value, _> = serde_json::from_str(desired.value.expose());
    let have: Result<serde_json::Value, _> = serde_json::from_str(remote.expose());
    matches!((want, have), (Ok(w), Ok(h)) if w == h)
}

/// Keys of a remote JSON object, if it is one.
fn remote_json_keys(remote: &SecretValue) -> Option<BTreeSet<String>> {
    match serde_json::from_str::<serde_json::Value>(remote.expose()) {
        Ok(serde_json::Value::Object(map)) => Some(map.keys().cloned().collect()),
        _ => None,
    }
}

struct Planner<'a> {
    spec: &'a MappingSpec,
    opts: &'a PlanOptions,
    plan: Plan,
}

impl Planner<'_> {
    fn push(&mut self, kind: ActionKind, d_key: Option<&str>, name: &str, reason: String, op: Op) {
        self.plan.actions.push(Action {
            kind,
            key: d_key.map(str::to_string),
            name: name.to_string(),
            reason,
            op,
        });
    }

    fn secret(
        &mut self,
        key: Option<&str>,
        name: &str,
        state: SecretState,
        message: Option<String>,
        version: Option<String>,
    ) {
        self.plan.secrets.push(SecretPlan {
            key: key.map(str::to_string),
            name: name.to_string(),
            state,
            message,
            version_id: version,
        });
    }

    fn report_only(&mut self, kind: ActionKind, key: Option<&str>, name: &str, message: String) {
        let state = if kind == ActionKind::Conflict {
            SecretState::Conflict
        } else {
            SecretState::Error
        };
        self.push(kind, key, name, message.clone(), Op::None);
        self.secret(key, name, state, Some(message), None);
    }

    /// An update of `d`'s value over `r`'s current version.
    fn put_value(&mut self, d: &DesiredSecret, r: &RemoteSecret, reason: &str) {
        let token = request_token(
            &self.opts.token_key,
            &d.name,
            &d.value,
            r.current_version.as_deref(),
        );
        let op = Op::PutValue {
            value: d.value.clone(),
            token,
        };
        self.push(
            ActionKind::Update,
            d.key.as_deref(),
            &d.name,
            reason.into(),
            op,
        );
    }

    /// The tags a new secret for `d` gets: its own plus, when the install
    /// check is on, this install's id.
    fn create_tags(&self, d: &DesiredSecret) -> BTreeMap<String, String> {
        let mut tags = d.tags.clone();
        if let Some(id) = &self.opts.install_id {
            tags.insert(naming::TAG_INSTALL.to_string(), id.clone());
        }
        tags
    }

    /// Why `r` (owned by our agent id and sync) must not be touched: it was
    /// written by another install that shares this identity.
    fn other_install(&self, r: &RemoteSecret) -> Option<String> {
        let mine = self.opts.install_id.as_deref()?;
        let theirs = r.tags.get(naming::TAG_INSTALL)?;
        (theirs != mine && !self.opts.take_over).then(|| {
            format!(
                "identity collision: written by another install (install id {theirs}) with the \
                 same agent.id '{}' and sync '{}'; two hosts share this identity. Give each host \
                 its own agent.id, or run `secretsync sync --take-over` on the host that should \
                 own it",
                self.spec.agent_id, self.spec.sync_name
            )
        })
    }

    fn create(&mut self, d: &DesiredSecret) {
        let token = request_token(&self.opts.token_key, &d.name, &d.value, None);
        let req = CreateSecret {
            name: d.name.clone(),
            value: d.value.clone(),
            tags: self.create_tags(d),
            kms_key_id: self.spec.kms_key_id.clone(),
            description: Some(self.spec.effective_description()),
            token,
            replica_regions: self.spec.replica_regions.clone(),
        };
        self.push(
            ActionKind::Create,
            d.key.as_deref(),
            &d.name,
            "not in AWS".into(),
            Op::Create(Box::new(req)),
        );
        self.secret(d.key.as_deref(), &d.name, SecretState::Synced, None, None);
    }

    fn existing(&mut self, d: &DesiredSecret, r: &RemoteSecret, actual: &Actual) {
        let key = d.key.as_deref();
        let adopting = match ownership(self.spec, r) {
            Ownership::Ours => {
                if let Some(msg) = self.other_install(r) {
                    self.plan.collisions += 1;
                    return self.report_only(ActionKind::Conflict, key, &d.name, msg);
                }
                false
            }
            Ownership::Unowned if self.opts.adopt_existing => true,
            Ownership::Unowned => {
                let msg = "exists in AWS without secretsync ownership tags; set adopt_existing: true to take it over".to_string();
                return self.report_only(ActionKind::Conflict, key, &d.name, msg);
            }
            Ownership::Foreign(who) => {
                return self.report_only(
                    ActionKind::Conflict,
                    key,
                    &d.name,
                    format!("exists in AWS, {who}"),
                );
            }
        };
        // A rotation function writes this value: reverting it on every
        // drift check would fight the rotation forever. No value, tag, KMS
        // or restore call is made (chamber refuses to write these too).
        if r.rotation_enabled {
            self.plan.rotation_conflicts += 1;
            return self.report_only(ActionKind::Conflict, key, &d.name, ROTATION_CONFLICT.into());
        }
        let mut wrote_value = false;
        if r.pending_deletion {
            self.push(
                ActionKind::Restore,
                key,
                &d.name,
                "key is back in the source; secret was scheduled for deletion".into(),
                Op::Restore,
            );
            // The value of a secret pending deletion cannot be read: write it.
            self.put_value(d, r, "restored; value rewritten");
            wrote_value = true;
        } else if d.json_keys.is_none() && actual.known_different.contains(&d.name) {
            self.put_value(d, r, "value differs");
            wrote_value = true;
        } else {
            match actual.values.get(&d.name) {
                Some(Ok(Some(v))) if values_equal(d, v) => {}
                Some(Err(e)) => {
                    return self.report_only(
                        ActionKind::Error,
                        key,
                        &d.name,
                        format!("cannot read current value: {e}"),
                    );
                }
                Some(Ok(remote)) => {
                    if let (Some(want), Some(rv)) = (&d.json_keys, remote) {
                        if let Some(msg) = self.many_to_one_guard(want, rv) {
                            return self.report_only(ActionKind::Error, key, &d.name, msg);
                        }
                    }
                    let reason = if remote.is_some() {
                        "value differs"
                    } else {
                        "AWS holds a binary value"
                    };
                    self.put_value(d, r, reason);
                    wrote_value = true;
                }
                None => {
                    return self.report_only(
                        ActionKind::Error,
                        key,
                        &d.name,
                        "current value was not read".into(),
                    );
                }
            }
        }
        self.tags(d, r, adopting, wrote_value);
        self.metadata(d, r);
        self.replicas(d, actual);
        let version = if wrote_value {
            None
        } else {
            r.current_version.clone()
        };
        let message = adopting.then(|| "adopted existing secret".to_string());
        self.secret(key, &d.name, SecretState::Synced, message, version);
    }

    /// A many-to-one write that would drop keys is a deletion in disguise.
    fn many_to_one_guard(&self, want: &BTreeSet<String>, remote: &SecretValue) -> Option<String> {
        let have = remote_json_keys(remote)?;
        let dropped = have.difference(want).count();
        if dropped == 0 {
            return None;
        }
        if let Some(why) = &self.opts.deletes_blocked {
            return Some(format!(
                "not written: it would drop {dropped} keys while {why}"
            ));
        }
        let limit = self.opts.max_delete_fraction * have.len() as f64;
        if !self.opts.allow_deletes && dropped > 1 && dropped as f64 > limit {
            return Some(format!(
                "deletion guard: the write would drop {dropped} of {} keys (max_delete_fraction {}); run with --allow-deletes to confirm",
                have.len(),
                self.opts.max_delete_fraction
            ));
        }
        None
    }

    /// Tag changes for an existing secret. The install tag is set with any
    /// other change to the secret (or when another install's id is being
    /// taken over), never on its own: a secret in step written before
    /// install ids existed costs no call, so an agent starting on secrets
    /// already in step still writes nothing.
    fn tags(&mut self, d: &DesiredSecret, r: &RemoteSecret, adopting: bool, wrote_value: bool) {
        let mut set: BTreeMap<String, String> = d
            .tags
            .iter()
            .filter(|(k, v)| r.tags.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(id) = &self.opts.install_id {
            let theirs = r.tags.get(naming::TAG_INSTALL);
            let changing = wrote_value || !set.is_empty() || theirs.is_some();
            if changing && theirs != Some(id) {
                set.insert(naming::TAG_INSTALL.to_string(), id.clone());
            }
        }
        let remove: Vec<String> = self
            .opts
            .managed_tags
            .get(&d.name)
            .map(|prev| {
                prev.iter()
                    .filter(|k| !d.tags.contains_key(*k) && r.tags.contains_key(*k))
                    .filter(|k| !k.starts_with(naming::RESERVED_TAG_PREFIX))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if set.is_empty() && remove.is_empty() {
            return;
        }
        let reason = if adopting {
            "adopt: add ownership tags".to_string()
        } else {
            let mut parts = vec![];
            if !set.is_empty() {
                parts.push(format!(
                    "set {}",
                    set.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if !remove.is_empty() {
                parts.push(format!("remove {}", remove.join(", ")));
            }
            format!("tags differ: {}", parts.join("; "))
        };
        self.push(
            ActionKind::Tag,
            d.key.as_deref(),
            &d.name,
            reason,
            Op::Tag { set, remove },
        );
    }

    fn metadata(&mut self, d: &DesiredSecret, r: &RemoteSecret) {
        if let Some(kms) = &self.spec.kms_key_id {
            if !kms_matches(&d.name, kms, r.kms_key_id.as_deref(), &self.opts.kms) {
                self.push(
                    ActionKind::Kms,
                    d.key.as_deref(),
                    &d.name,
                    format!("KMS key differs (want {kms})"),
                    Op::UpdateMetadata {
                        kms_key_id: Some(kms.clone()),
                        description: None,
                    },
                );
            }
        }
        let description = self.spec.effective_description();
        if r.description.as_deref() != Some(description.as_str()) {
            self.push(
                ActionKind::Describe,
                d.key.as_deref(),
                &d.name,
                "description differs".into(),
                Op::UpdateMetadata {
                    kms_key_id: None,
                    description: Some(description),
                },
            );
        }
    }

    /// Replica regions present on `name`: described this pass, else the
    /// ones the agent set up; `None` when neither is known.
    fn present_replicas(&self, name: &str, actual: &Actual) -> Option<BTreeSet<String>> {
        match actual.replicas.get(name) {
            Some(known) => Some(known.iter().map(|r| r.region.clone()).collect()),
            None => self.opts.managed_replicas.get(name).cloned(),
        }
    }

    /// Adds configured replica regions that are missing; removes regions
    /// this agent set up that are no longer configured. Replicas someone
    /// else added are left alone, like their tags.
    fn replicas(&mut self, d: &DesiredSecret, actual: &Actual) {
        let want: BTreeSet<String> = self.spec.replica_regions.iter().cloned().collect();
        let managed = self
            .opts
            .managed_replicas
            .get(&d.name)
            .cloned()
            .unwrap_or_default();
        let Some(present) = self.present_replicas(&d.name, actual) else {
            // Not described and never tracked: nothing is known, so nothing
            // is planned (the reader describes such secrets when replicas
            // are configured; a failed describe lands here).
            return;
        };
        if actual.replicas.contains_key(&d.name) {
            let ours: BTreeSet<String> = present
                .iter()
                .filter(|r| want.contains(*r) || managed.contains(*r))
                .cloned()
                .collect();
            self.plan.replica_tracking.insert(d.name.clone(), ours);
        }
        let add: Vec<String> = want.difference(&present).cloned().collect();
        let remove: Vec<String> = managed
            .difference(&want)
            .filter(|r| present.contains(*r))
            .cloned()
            .collect();
        if !add.is_empty() {
            self.push(
                ActionKind::Replicate,
                d.key.as_deref(),
                &d.name,
                format!("add replica region(s) {}", add.join(", ")),
                Op::Replicate { add },
            );
        }
        if !remove.is_empty() {
            self.push(
                ActionKind::Replicate,
                d.key.as_deref(),
                &d.name,
                format!(
                    "remove replica region(s) {} (no longer configured)",
                    remove.join(", ")
                ),
                Op::RemoveReplicas { regions: remove },
            );
        }
    }

    fn deletions(&mut self, desired: &Desired, actual: &Actual) {
        let claimed = desired.claimed_names();
        let owned: Vec<&RemoteSecret> = actual
            .secrets
            .values()
            .filter(|r| ownership(self.spec, r) == Ownership::Ours)
            .collect();
        let live_owned = owned.iter().filter(|r| !r.pending_deletion).count();
        self.plan.owned_live = live_owned;
        self.plan.deletes_confirmed = self.opts.allow_deletes;
        let mut orphans = vec![];
        for r in &owned {
            if claimed.contains(r.name.as_str()) {
                continue;
            }
            if !r.pending_deletion
                && let Some(msg) = self.other_install(r)
            {
                self.plan.collisions += 1;
                self.report_only(ActionKind::Conflict, None, &r.name, msg);
                continue;
            }
            if r.rotation_enabled && !r.pending_deletion {
                // Something depends on a rotated value: never deleted by
                // the agent, whatever the files say.
                self.plan.rotation_conflicts += 1;
                self.secret(
                    None,
                    &r.name,
                    SecretState::Retained,
                    Some(format!(
                        "not in the source, but not deleted: {ROTATION_CONFLICT}"
                    )),
                    None,
                );
                continue;
            }
            if r.pending_deletion {
                self.secret(
                    None,
                    &r.name,
                    SecretState::Deleted,
                    Some("scheduled for deletion".into()),
                    None,
                );
            } else {
                orphans.push(r.name.clone());
            }
        }
        let retain_reason = if self.opts.disable_deletion {
            Some("not in the source; disable_secret_deletion keeps it".to_string())
        } else if let Some(why) = &self.opts.deletes_blocked {
            Some(format!(
                "not in the source, but deletion is skipped while {why}"
            ))
        } else {
            let n = orphans.len();
            let fraction = self.opts.max_delete_fraction;
            let limit = fraction * live_owned as f64;
            // Over the rolling window: what was deleted lately plus this
            // pass, against the most the sync owned in the window, so steps
            // of small deletions cannot walk past the guard.
            let recent = self.opts.window_deleted;
            let peak = self.opts.window_owned_peak.max(live_owned);
            let window_total = recent + n;
            let window_limit = fraction * peak as f64;
            if self.opts.allow_deletes || n == 0 {
                None
            } else if n > 1 && n as f64 > limit {
                let msg = format!(
                    "deletion guard: this pass would delete {n} of {live_owned} owned secrets (max_delete_fraction {fraction}); nothing deleted; run with --allow-deletes to confirm"
                );
                self.plan.guard_tripped = Some(msg.clone());
                Some(msg)
            } else if recent > 0 && window_total > 1 && window_total as f64 > window_limit {
                let msg = format!(
                    "deletion guard: this pass would delete {n}, after {recent} deleted in the last hour, of at most {peak} owned secrets (max_delete_fraction {fraction}); nothing deleted; run with --allow-deletes to confirm"
                );
                self.plan.guard_tripped = Some(msg.clone());
                Some(msg)
            } else {
                None
            }
        };
        for name in orphans {
            match &retain_reason {
                Some(msg) => {
                    self.secret(None, &name, SecretState::Retained, Some(msg.clone()), None)
                }
                None => {
                    let days = self.opts.recovery_window_days;
                    let reason = if days == 0 {
                        "not in the source; force delete (recovery_window_days: 0)".to_string()
                    } else {
                        format!("not in the source; recoverable for {days} days")
                    };
                    // AWS refuses to delete a secret that still has replicas.
                    let replicas = self.present_replicas(&name, actual).unwrap_or_default();
                    if !replicas.is_empty() {
                        let regions: Vec<String> = replicas.into_iter().collect();
                        self.push(
                            ActionKind::Replicate,
                            None,
                            &name,
                            format!(
                                "remove replica region(s) {} before deletion",
                                regions.join(", ")
                            ),
                            Op::RemoveReplicas { regions },
                        );
                    }
                    self.push(
                        ActionKind::Delete,
                        None,
                        &name,
                        reason,
                        Op::Delete {
                            recovery_window_days: days,
                        },
                    );
                    self.secret(None, &name, SecretState::Deleted, None, None);
                }
            }
        }
    }
}

/// Plans one pass for one sync.
pub fn plan(spec: &MappingSpec, desired: &Desired, actual: &Actual, opts: &PlanOptions) -> Plan {
    let mut p = Planner {
        spec,
        opts,
        plan: Plan::default(),
    };
    for e in &desired.errors {
        let name = e
            .name
            .clone()
            .unwrap_or_else(|| e.key.clone().unwrap_or_default());
        p.report_only(
            ActionKind::Error,
            e.key.as_deref(),
            &name,
            e.message.clone(),
        );
    }
    for d in &desired.secrets {
        let before = p.plan.actions.len();
        match actual.secrets.get(&d.name) {
            None => p.create(d),
            Some(r) => p.existing(d, r, actual),
        }
        if p.plan.actions.len() == before {
            p.plan.unchanged += 1;
        }
    }
    for s in &desired.skipped {
        let message = "empty value: AWS cannot store an empty SecretString; nothing sent, \
                       an existing secret is left as it is"
            .to_string();
        p.push(
            ActionKind::Skip,
            Some(&s.key),
            &s.name,
            message.clone(),
            Op::None,
        );
        p.secret(
            Some(&s.key),
            &s.name,
            SecretState::Skipped,
            Some(message),
            None,
        );
    }
    p.deletions(desired, actual);
    p.plan.replicas = actual.replicas.clone();
    p.plan
}

/// Which secrets' replicas to describe this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescribeReplicas {
    /// Every owned (or adoptable desired) secret: the drift timer, the
    /// first pass after start or reload, one-shot `plan` / `sync`.
    All,
    /// Only those whose replicas the agent does not track yet.
    Untracked,
}

/// Names whose replicas a pass must describe: none while the sync neither
/// configures replicas nor tracks any; else owned (or adoptable desired)
/// secrets not pending deletion, all or only the untracked ones.
pub fn names_to_describe(
    spec: &MappingSpec,
    desired: &Desired,
    secrets: &BTreeMap<String, RemoteSecret>,
    opts: &PlanOptions,
    scope: DescribeReplicas,
) -> Vec<String> {
    let tracks_any = opts.managed_replicas.values().any(|r| !r.is_empty());
    if spec.replica_regions.is_empty() && !tracks_any {
        return Vec::new();
    }
    let claimed = desired.claimed_names();
    secrets
        .values()
        .filter(|r| !r.pending_deletion)
        .filter(|r| match ownership(spec, r) {
            Ownership::Ours => true,
            Ownership::Unowned => opts.adopt_existing && claimed.contains(r.name.as_str()),
            Ownership::Foreign(_) => false,
        })
        .filter(|r| scope == DescribeReplicas::All || !opts.managed_replicas.contains_key(&r.name))
        .map(|r| r.name.clone())
        .collect()
}

/// Names whose values the planner needs: desired secrets that exist, are not
/// pending deletion, and are ours or adoptable. Anything else is not read.
pub fn names_to_read(
    spec: &MappingSpec,
    desired: &Desired,
    secrets: &BTreeMap<String, RemoteSecret>,
    adopt_existing: bool,
) -> Vec<String> {
    desired
        .secrets
        .iter()
        .filter_map(|d| secrets.get(&d.name))
        .filter(|r| !r.pending_deletion)
        .filter(|r| match ownership(spec, r) {
            Ownership::Ours => true,
            Ownership::Unowned => adopt_existing,
            Ownership::Foreign(_) => false,
        })
        .map(|r| r.name.clone())
        .collect()
}

#[cfg(test)]
mod tests;
