//! In-memory [`SecretStore`] that behaves like AWS Secrets Manager where the
//! engine's correctness depends on it (and where the moto emulator does not):
//! name uniqueness, `ClientRequestToken` idempotency, refusal of writes to
//! secrets scheduled for deletion, AWS's size and tag limits, prefix-matching
//! list filters and per-page / per-batch call counts.
//!
//! Engine tests use it to assert *which* calls a pass makes ([`MemoryStore::calls`]),
//! to inject throttling and outages ([`MemoryStore::fail_next`],
//! [`MemoryStore::fail_all`]) and, with [`MemoryStore::set_latency`] under
//! `tokio::time::pause`, to benchmark pacing and concurrency in virtual time.
//!
//! For benchmarks that stand in for AWS ([`MemoryStore::set_pacing`],
//! [`MemoryStore::set_write_quota`], [`MemoryStore::set_read_quota`]) it also
//! paces its calls exactly as the AWS store does (same [`Pacer`], one token
//! per page / batch / write, taken before the call) and enforces AWS-style
//! per-second quotas, answering `ThrottlingException` beyond them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::aws::{INITIAL_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF};
use super::kms::KmsCache;
use super::pacing::Pacer;
use super::{
    AWS_MANAGED_KMS_ALIAS, BATCH_GET_MAX, CreateSecret, KeyIdentity, LIST_PAGE_MAX,
    NAME_FILTER_MAX, Owned, OwnerFilter, RemoteSecret, RemoteValue, ReplicaStatus, RetryNote,
    SecretStore, StoreError, ValueRead, WriteResult,
};
use crate::naming::{
    MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS, MAX_VALUE_BYTES, TAG_AGENT, TAG_SYNC,
    validate_secret_name,
};
use crate::secret::SecretValue;

/// `CreateSecret`.
pub const OP_CREATE: &str = "CreateSecret";
/// `PutSecretValue`.
pub const OP_PUT: &str = "PutSecretValue";
/// `TagResource`.
pub const OP_TAG: &str = "TagResource";
/// `UntagResource`.
pub const OP_UNTAG: &str = "UntagResource";
/// `UpdateSecret`.
pub const OP_UPDATE: &str = "UpdateSecret";
/// `DeleteSecret`.
pub const OP_DELETE: &str = "DeleteSecret";
/// `RestoreSecret`.
pub const OP_RESTORE: &str = "RestoreSecret";
/// `ListSecrets` (one per page).
pub const OP_LIST: &str = "ListSecrets";
/// `BatchGetSecretValue` (one per ≤ 20 ids).
pub const OP_BATCH_GET: &str = "BatchGetSecretValue";
/// `DescribeSecret`.
pub const OP_DESCRIBE: &str = "DescribeSecret";
/// `ReplicateSecretToRegions`.
pub const OP_REPLICATE: &str = "ReplicateSecretToRegions";
/// `RemoveRegionsFromReplication`.
pub const OP_REMOVE_REPLICAS: &str = "RemoveRegionsFromReplication";
/// KMS `DescribeKey` (what [`SecretStore::resolve_kms_key`] asks; cached
/// per store like the AWS store's).
pub const OP_DESCRIBE_KEY: &str = "kms:DescribeKey";

/// Operations that change AWS state, as counted by [`MemoryStore::write_calls`].
pub const WRITE_OPS: [&str; 9] = [
    OP_CREATE,
    OP_PUT,
    OP_TAG,
    OP_UNTAG,
    OP_UPDATE,
    OP_DELETE,
    OP_RESTORE,
    OP_REPLICATE,
    OP_REMOVE_REPLICAS,
];
/// Every operation the store can be asked to count or fail.
pub const ALL_OPS: [&str; 13] = [
    OP_CREATE,
    OP_PUT,
    OP_TAG,
    OP_UNTAG,
    OP_UPDATE,
    OP_DELETE,
    OP_RESTORE,
    OP_LIST,
    OP_BATCH_GET,
    OP_DESCRIBE,
    OP_REPLICATE,
    OP_REMOVE_REPLICAS,
    OP_DESCRIBE_KEY,
];
/// The region this store stands for (replicas must be elsewhere).
pub const REGION: &str = "us-east-1";

/// AWS's limit on a secret description.
const MAX_DESCRIPTION_LEN: usize = 2_048;
/// AWS's limit on a KMS key id/ARN/alias.
const MAX_KMS_KEY_LEN: usize = 2_048;
/// AWS's bounds for `ClientRequestToken`.
const TOKEN_LEN: std::ops::RangeInclusive<usize> = 32..=64;
/// Account and region used in generated ARNs.
const ARN_PREFIX: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";

/// AWS's wording, so tests and status output read like the real thing.
const MSG_MARKED_FOR_DELETION: &str =
    "You can't perform this operation on the secret because it was marked for deletion.";
const MSG_CREATE_SCHEDULED: &str = "You can't create this secret because a secret with this name is already scheduled for deletion.";

/// An in-memory Secrets Manager for engine tests and benchmarks.
///
/// Every method that stands for an AWS call counts it, waits the injected
/// latency, then fails if an outage or an injected fault says so, and only
/// then acts, as a real request would: a call AWS rejects is still a call.
/// The lock is never held across an `.await`.
///
/// One `MemoryStore` is one account and Region. [`MemoryStore::client`]
/// gives more handles on the same account, each with its own client-side
/// pacing and retries, as separate agents (hosts) of a fleet would have:
/// the quotas and the secrets are shared, the pacers are not.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// `DescribeKey` answers, cached like the AWS store's.
    kms_cache: KmsCache,
    /// Client-side pacing as the AWS store does it; `None` = not paced.
    pacing: Mutex<Option<Arc<Pacing>>>,
    /// Retry throttled calls as the AWS SDK's standard mode does.
    sdk_retries: std::sync::atomic::AtomicBool,
    /// What this handle sent and how many of those AWS throttled.
    sent: std::sync::atomic::AtomicU64,
    throttled_here: std::sync::atomic::AtomicU64,
}

/// Account and region of generated KMS key ARNs.
const KMS_ARN_PREFIX: &str = "arn:aws:kms:us-east-1:123456789012:";
/// Key id of the AWS-managed `aws/secretsmanager` key in this store.
const AWS_MANAGED_KEY_ID: &str = "aaaaaaaa-0000-4000-8000-5ec2e75aaaaa";

#[derive(Debug, Default)]
struct Inner {
    secrets: BTreeMap<String, Entry>,
    calls: BTreeMap<&'static str, u64>,
    faults: Vec<Fault>,
    outage: Option<StoreError>,
    latency: Duration,
    retry_note: Option<RetryNote>,
    write_quota: Option<Bucket>,
    read_quota: Option<Bucket>,
    /// Calls answered with `ThrottlingException` by a quota.
    throttled: u64,
    /// When each call was sent, if [`MemoryStore::record_call_times`] is on.
    call_log: Option<Vec<(&'static str, Instant)>>,
    /// Customer managed KMS keys: key id → aliases.
    kms_keys: BTreeMap<String, Vec<String>>,
    /// `DescribeKey` answers `AccessDeniedException`.
    describe_key_denied: bool,
    /// Secrets report their KMS key as the key ARN, whatever spelling set it.
    kms_reported_as_arn: bool,
}

/// The AWS store's two pacers, reads and writes.
#[derive(Debug)]
struct Pacing {
    reads: Pacer,
    writes: Pacer,
}

/// A server-side request quota, as AWS enforces per account and region: a
/// token bucket refilled at `per_second` that holds at most `burst` tokens
/// (AWS does not publish its bucket size; one second's worth is the usual
/// model). A call that finds the bucket empty is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Sustained calls per second.
    pub per_second: u32,
    /// Calls that may arrive at once after an idle period.
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    quota: Quota,
    tokens: f64,
    refilled_at: Option<Instant>,
}

impl Bucket {
    fn new(quota: Quota) -> Self {
        Self {
            quota,
            tokens: f64::from(quota.burst),
            refilled_at: None,
        }
    }

    /// Takes one token at `now`; false when the call must be throttled.
    fn take(&mut self, now: Instant) -> bool {
        if let Some(then) = self.refilled_at {
            let refill = now.duration_since(then).as_secs_f64() * f64::from(self.quota.per_second);
            self.tokens = (self.tokens + refill).min(f64::from(self.quota.burst));
        }
        self.refilled_at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Metadata; `current_version` is kept in step with `versions`.
    meta: RemoteSecret,
    /// Every version ever written, oldest first.
    versions: Vec<Version>,
    /// Replica regions, as `DescribeSecret` reports them.
    replicas: Vec<ReplicaStatus>,
}

#[derive(Debug)]
struct Version {
    id: String,
    value: SecretValue,
}

#[derive(Debug)]
struct Fault {
    op: &'static str,
    err: StoreError,
    remaining: u32,
}

impl Entry {
    fn current_value(&self) -> Option<&SecretValue> {
        let current = self.meta.current_version.as_deref()?;
        self.versions
            .iter()
            .find(|v| v.id == current)
            .map(|v| &v.value)
    }
}

impl MemoryStore {
    /// An empty store with no faults and no latency.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls made so far, per AWS operation name (pages and batches counted
    /// as AWS bills them: one `ListSecrets` per page of up to 100 results,
    /// one `BatchGetSecretValue` per 20 ids). Failed calls count too.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    /// Sum of the write operations in [`WRITE_OPS`]: "saving a file unchanged
    /// makes zero write calls" is asserted with this.
    pub fn write_calls(&self) -> u64 {
        let inner = self.lock();
        WRITE_OPS.iter().filter_map(|op| inner.calls.get(op)).sum()
    }

    /// Forgets the call counts (secrets and faults stay).
    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next `times` calls of `op` fail with `err` (its `op` field
    /// is rewritten to `op`). Faults queue: several for the same operation
    /// are used in the order they were added.
    ///
    /// # Panics
    /// If `op` is not one of [`ALL_OPS`]: a misspelt operation would make the
    /// fault silently never fire, hiding a broken test.
    pub fn fail_next(&self, op: &'static str, err: StoreError, times: u32) {
        assert!(
            ALL_OPS.contains(&op),
            "unknown operation {op:?}; expected one of {ALL_OPS:?}"
        );
        if times > 0 {
            self.lock().faults.push(Fault {
                op,
                err,
                remaining: times,
            });
        }
    }

    /// Simulates an outage: every call fails with `err` until [`Self::heal`].
    pub fn fail_all(&self, err: StoreError) {
        self.lock().outage = Some(err);
    }

    /// Ends an outage and drops pending injected faults.
    pub fn heal(&self) {
        let mut inner = self.lock();
        inner.outage = None;
        inner.faults.clear();
    }

    /// Delay added to every call (per page / per batch), via
    /// `tokio::time::sleep`, so it runs in virtual time under
    /// `tokio::time::pause`.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// What [`SecretStore::last_retry`] reports from now on (stamped with
    /// the current real time): this store does not retry, so tests say
    /// when an AWS client would be retrying.
    pub fn set_retry_note(&self, message: &str) {
        self.lock().retry_note = Some(RetryNote {
            at: std::time::Instant::now(),
            message: message.to_string(),
        });
    }

    /// Paces calls as [`super::aws::AwsStore`] does for the same settings:
    /// one token per call (per page / batch) from a read or a write
    /// [`Pacer`] built by [`Pacer::for_rate`], taken before the call. A rate
    /// of 0 leaves that kind unpaced. Benchmarks use this so the in-memory
    /// store is paced like AWS would be; tests leave it off.
    pub fn set_pacing(&self, max_read_tps: u32, max_write_tps: u32) {
        *self.pacing.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(Pacing {
            reads: Pacer::for_rate(max_read_tps),
            writes: Pacer::for_rate(max_write_tps),
        }));
    }

    /// Another client of the same account (secrets, quotas, faults and call
    /// counts shared), with no pacing or retries of its own until set:
    /// one agent of a fleet.
    pub fn client(&self) -> MemoryStore {
        MemoryStore {
            inner: Arc::clone(&self.inner),
            ..MemoryStore::default()
        }
    }

    /// Retries throttled calls on this handle as the AWS store's SDK client
    /// does (standard mode: up to [`MAX_ATTEMPTS`] attempts, full-jitter
    /// exponential backoff from [`INITIAL_BACKOFF`], capped at
    /// [`MAX_BACKOFF`]), so a fleet benchmark sees the retries AWS would.
    /// Without it a throttled call fails at once, as tests expect.
    pub fn set_sdk_retries(&self, on: bool) {
        self.sdk_retries
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Attempts this handle sent (retries included), and how many of them
    /// a quota throttled.
    pub fn client_calls(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.sent.load(Relaxed), self.throttled_here.load(Relaxed))
    }

    /// Enforces a quota shared by all write operations ([`WRITE_OPS`]),
    /// like AWS's 50-TPS write quotas (stricter: AWS keeps separate buckets
    /// per group of operations). `None` removes it.
    pub fn set_write_quota(&self, quota: Option<Quota>) {
        self.lock().write_quota = quota.map(Bucket::new);
    }

    /// Enforces a quota shared by the read operations (`ListSecrets`,
    /// `BatchGetSecretValue`; AWS: 100 TPS for `BatchGetSecretValue`).
    pub fn set_read_quota(&self, quota: Option<Quota>) {
        self.lock().read_quota = quota.map(Bucket::new);
    }

    /// Calls answered with a throttling error by a quota so far.
    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    /// Starts (or stops and clears) recording when each call is sent.
    pub fn record_call_times(&self, on: bool) {
        self.lock().call_log = on.then(Vec::new);
    }

    /// The recorded calls, in the order they were sent (after pacing).
    pub fn call_times(&self) -> Vec<(&'static str, Instant)> {
        self.lock().call_log.clone().unwrap_or_default()
    }

    /// Creates a customer managed KMS key named by `alias` (`alias/…`)
    /// and returns its identity. Not counted as a call.
    pub fn add_kms_key(&self, alias: &str) -> KeyIdentity {
        let key_id = make_uuid();
        self.lock()
            .kms_keys
            .insert(key_id.clone(), vec![alias.to_owned()]);
        KeyIdentity {
            arn: format!("{KMS_ARN_PREFIX}key/{key_id}"),
            key_id,
        }
    }

    /// Makes `DescribeKey` answer `AccessDeniedException` (the credentials
    /// lack `kms:DescribeKey`), or stops it.
    pub fn deny_describe_key(&self, denied: bool) {
        self.lock().describe_key_denied = denied;
    }

    /// With `on`, a secret's KMS key is reported as the key ARN whatever
    /// spelling (alias, key id) set it, as AWS may do; the AWS-managed key
    /// is still omitted.
    pub fn report_kms_as_key_arn(&self, on: bool) {
        self.lock().kms_reported_as_arn = on;
    }

    /// Turns AWS rotation on or off for a secret, as `RotateSecret` /
    /// `CancelRotateSecret` by someone else would (not counted). Returns
    /// whether the secret exists.
    pub fn set_rotation_enabled(&self, name: &str, on: bool) -> bool {
        match self.lock().secrets.get_mut(name) {
            Some(e) => {
                e.meta.rotation_enabled = on;
                true
            }
            None => false,
        }
    }

    /// Seeds (or replaces) a secret directly, without counting a call.
    /// An empty `arn` is generated. With a value, one version is created whose
    /// id is `secret.current_version` (or a generated one); without a value
    /// the secret has no versions and `current_version` is cleared, like a
    /// secret created without `SecretString`.
    pub fn insert(&self, mut secret: RemoteSecret, value: Option<SecretValue>) {
        if secret.arn.is_empty() {
            secret.arn = make_arn(&secret.name);
        }
        let versions = match value {
            Some(value) => {
                let id = secret.current_version.clone().unwrap_or_else(make_uuid);
                secret.current_version = Some(id.clone());
                vec![Version { id, value }]
            }
            None => {
                secret.current_version = None;
                Vec::new()
            }
        };
        self.lock().secrets.insert(
            secret.name.clone(),
            Entry {
                meta: secret,
                versions,
                replicas: Vec::new(),
            },
        );
    }

    /// Sets a secret's replicas as if someone else changed them (not
    /// counted). Returns whether the secret exists.
    pub fn set_replicas(&self, name: &str, replicas: Vec<ReplicaStatus>) -> bool {
        match self.lock().secrets.get_mut(name) {
            Some(e) => {
                e.replicas = replicas;
                true
            }
            None => false,
        }
    }

    /// A secret's replica regions, sorted (not counted).
    pub fn replica_regions(&self, name: &str) -> Vec<String> {
        self.lock()
            .secrets
            .get(name)
            .map(|e| e.replicas.iter().map(|r| r.region.clone()).collect())
            .unwrap_or_default()
    }

    /// A secret's metadata and current value, without counting a call.
    pub fn get(&self, name: &str) -> Option<(RemoteSecret, Option<SecretValue>)> {
        let inner = self.lock();
        let entry = inner.secrets.get(name)?;
        Some((entry.meta.clone(), entry.current_value().cloned()))
    }

    /// Version ids of a secret, oldest first (empty if unknown): proves that a
    /// retried write made no second version.
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.lock()
            .secrets
            .get(name)
            .map(|e| e.versions.iter().map(|v| v.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Removes a secret outright, as if someone else force-deleted it.
    /// Returns whether it existed. Not counted as a call.
    pub fn remove(&self, name: &str) -> bool {
        self.lock().secrets.remove(name).is_some()
    }

    /// Names of all secrets, pending deletion included.
    pub fn names(&self) -> Vec<String> {
        self.lock().secrets.keys().cloned().collect()
    }

    /// Locks the state. Every critical section leaves it consistent before
    /// anything can panic, so a poisoned lock is safe to keep using.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One simulated AWS call as the AWS store makes it: paced once (the
    /// pacer is taken before the SDK call, not per attempt), then attempts,
    /// each outcome fed back to the pacer, a throttled one retried like the
    /// SDK when [`Self::set_sdk_retries`] is on and the pacer still calls a
    /// retry reasonable (as in the agent's AWS store, whose attempt
    /// observer forbids it otherwise).
    async fn call(&self, op: &'static str) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let attempts = if self.sdk_retries.load(Relaxed) {
            MAX_ATTEMPTS
        } else {
            1
        };
        let pacing = self
            .pacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let pacer = pacing.as_ref().map(|p| {
            if WRITE_OPS.contains(&op) {
                &p.writes
            } else {
                &p.reads
            }
        });
        if let Some(p) = pacer {
            p.acquire().await;
        }
        let mut attempt = 1;
        loop {
            self.sent.fetch_add(1, Relaxed);
            let sent_at = Instant::now();
            match self.attempt(op).await {
                Err(e @ StoreError::Throttled { .. }) => {
                    self.throttled_here.fetch_add(1, Relaxed);
                    let retry_ok = pacer.is_none_or(|p| p.throttled(sent_at));
                    if attempt >= attempts || !retry_ok {
                        return Err(e);
                    }
                    // The SDK's standard backoff: uniform in [0, 1) times
                    // the doubling base, capped.
                    let base = INITIAL_BACKOFF
                        .checked_mul(1u32 << (attempt - 1).min(16))
                        .unwrap_or(MAX_BACKOFF);
                    tokio::time::sleep(base.mul_f64(fastrand::f64()).min(MAX_BACKOFF)).await;
                    attempt += 1;
                }
                other => {
                    if other.is_ok() {
                        if let Some(p) = pacer {
                            p.succeeded();
                        }
                    }
                    return other;
                }
            }
        }
    }

    /// One attempt: count, wait, then maybe fail.
    async fn attempt(&self, op: &'static str) -> Result<(), StoreError> {
        let is_write = WRITE_OPS.contains(&op);
        let latency = {
            let mut inner = self.lock();
            *inner.calls.entry(op).or_default() += 1;
            if let Some(log) = &mut inner.call_log {
                log.push((op, Instant::now()));
            }
            inner.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut inner = self.lock();
        if let Some(err) = &inner.outage {
            return Err(with_op(err.clone(), op));
        }
        let now = Instant::now();
        let bucket = if is_write {
            inner.write_quota.as_mut()
        } else {
            inner.read_quota.as_mut()
        };
        if bucket.is_some_and(|b| !b.take(now)) {
            inner.throttled += 1;
            return Err(StoreError::Throttled {
                op,
                message: "ThrottlingException: Rate exceeded".into(),
            });
        }
        if let Some(pos) = inner.faults.iter().position(|f| f.op == op) {
            let fault = &mut inner.faults[pos];
            fault.remaining -= 1;
            let err = with_op(fault.err.clone(), op);
            if fault.remaining == 0 {
                inner.faults.remove(pos);
            }
            return Err(err);
        }
        Ok(())
    }

    /// Pages through the secrets matching `server` (AWS's coarse, prefix
    /// filter), one counted `ListSecrets` call per page, and keeps those
    /// matching `exact` (our client-side filter).
    async fn list_paged(
        &self,
        server: impl Fn(&RemoteSecret) -> bool,
        exact: impl Fn(&RemoteSecret) -> bool,
    ) -> Result<Vec<RemoteSecret>, StoreError> {
        // usize::MAX pages: the listing always ends.
        Ok(self
            .list_pages(server, exact, usize::MAX)
            .await?
            .unwrap_or_default()
            .0)
    }

    /// [`Self::list_paged`] stopped after `max_pages` pages, with the
    /// number of entries the pages carried; `None` when more remained.
    async fn list_pages(
        &self,
        server: impl Fn(&RemoteSecret) -> bool,
        exact: impl Fn(&RemoteSecret) -> bool,
        max_pages: usize,
    ) -> Result<Option<(Vec<RemoteSecret>, usize)>, StoreError> {
        let page_size = usize::try_from(LIST_PAGE_MAX).unwrap_or(100);
        let mut out = Vec::new();
        let mut scanned = 0;
        let mut page = 0usize;
        loop {
            if page >= max_pages {
                return Ok(None);
            }
            self.call(OP_LIST).await?;
            let inner = self.lock();
            let matching: Vec<&Entry> =
                inner.secrets.values().filter(|e| server(&e.meta)).collect();
            let start = page * page_size;
            scanned += matching.len().saturating_sub(start).min(page_size);
            out.extend(
                matching
                    .iter()
                    .skip(start)
                    .take(page_size)
                    .filter(|e| exact(&e.meta))
                    .map(|e| e.meta.clone()),
            );
            if start + page_size >= matching.len() {
                return Ok(Some((out, scanned)));
            }
            page += 1;
        }
    }
}

/// Rewrites the operation an injected error names.
fn with_op(err: StoreError, op: &'static str) -> StoreError {
    match err {
        StoreError::Throttled { message, .. } => StoreError::Throttled { op, message },
        StoreError::Unavailable { message, .. } => StoreError::Unavailable { op, message },
        StoreError::NotFound { .. } => StoreError::NotFound { op },
        StoreError::AlreadyExists { message, .. } => StoreError::AlreadyExists { op, message },
        StoreError::AccessDenied { message, .. } => StoreError::AccessDenied { op, message },
        StoreError::Rejected { message, .. } => StoreError::Rejected { op, message },
        StoreError::Config(message) => StoreError::Config(message),
    }
}

/// Shorthand for [`StoreError::Rejected`].
fn rejected(op: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Rejected {
        op,
        message: message.into(),
    }
}

/// An ARN shaped like AWS's: name plus a hyphen and 6 random characters.
fn make_arn(name: &str) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(6)
        .collect();
    format!("{ARN_PREFIX}{name}-{suffix}")
}

/// A random UUID-shaped version id for seeded secrets.
fn make_uuid() -> String {
    let hex = |n: usize| -> String {
        std::iter::repeat_with(|| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .take(n)
            .collect()
    };
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

/// AWS's parameter checks for a value, in AWS's order of concern.
fn check_value(op: &'static str, value: &SecretValue) -> Result<(), StoreError> {
    // The service model gives SecretString a minimum length of 1; moto
    // accepts "" (and then holds a secret with no readable version).
    if value.is_empty() {
        return Err(rejected(
            op,
            "ValidationException: SecretString has length 0, the minimum is 1".to_string(),
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(rejected(
            op,
            format!(
                "ValidationException: SecretString is {} bytes, the limit is {MAX_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// AWS's length rule for `ClientRequestToken`.
fn check_token(op: &'static str, token: &str) -> Result<(), StoreError> {
    if !TOKEN_LEN.contains(&token.len()) {
        return Err(rejected(
            op,
            format!(
                "ValidationException: ClientRequestToken must be 32 to 64 characters, got {}",
                token.len()
            ),
        ));
    }
    Ok(())
}

/// AWS's secret name rules (shared with config validation).
fn check_name(op: &'static str, name: &str) -> Result<(), StoreError> {
    validate_secret_name(name).map_err(|m| rejected(op, format!("ValidationException: {m}")))
}

/// AWS's tag key rules: length and the reserved `aws:` prefix.
fn check_tag_key(op: &'static str, key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY_LEN {
        return Err(rejected(
            op,
            format!("ValidationException: tag key must be 1 to {MAX_TAG_KEY_LEN} characters"),
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(rejected(
            op,
            "InvalidParameterException: tag keys starting with 'aws:' are reserved",
        ));
    }
    Ok(())
}

/// AWS's per-tag rules for a set of tags.
fn check_tags(op: &'static str, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    for (key, value) in tags {
        check_tag_key(op, key)?;
        if value.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(rejected(
                op,
                format!(
                    "ValidationException: tag '{key}' value is longer than {MAX_TAG_VALUE_LEN} characters"
                ),
            ));
        }
    }
    Ok(())
}

/// AWS's 50-tags-per-secret rule.
fn check_tag_count(op: &'static str, count: usize) -> Result<(), StoreError> {
    if count > MAX_TAGS {
        return Err(rejected(
            op,
            format!("ValidationException: a secret can have at most {MAX_TAGS} tags, got {count}"),
        ));
    }
    Ok(())
}

/// AWS's length rules for KMS key id and description.
fn check_metadata(
    op: &'static str,
    kms_key_id: Option<&str>,
    description: Option<&str>,
) -> Result<(), StoreError> {
    if kms_key_id.is_some_and(|k| k.is_empty() || k.len() > MAX_KMS_KEY_LEN) {
        return Err(rejected(
            op,
            format!("ValidationException: KmsKeyId must be 1 to {MAX_KMS_KEY_LEN} characters"),
        ));
    }
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN) {
        return Err(rejected(
            op,
            format!(
                "ValidationException: Description is longer than {MAX_DESCRIPTION_LEN} characters"
            ),
        ));
    }
    Ok(())
}

impl Inner {
    /// Finds a secret by name or ARN, like `SecretId`.
    /// The key id a KMS key spelling names, if this store knows the key.
    fn kms_key_id_of(&self, key: &str) -> Option<String> {
        let alias = key
            .split_once(":alias/")
            .map_or(key.to_owned(), |(_, a)| format!("alias/{a}"));
        if alias == AWS_MANAGED_KMS_ALIAS {
            return Some(AWS_MANAGED_KEY_ID.to_owned());
        }
        let id = key.rsplit_once(":key/").map_or(key, |(_, id)| id);
        if id == AWS_MANAGED_KEY_ID || self.kms_keys.contains_key(id) {
            return Some(id.to_owned());
        }
        self.kms_keys
            .iter()
            .find(|(_, aliases)| aliases.contains(&alias))
            .map(|(id, _)| id.clone())
    }

    /// What `DescribeSecret` reports after a secret was set to `key`: like
    /// AWS, nothing for the AWS-managed key (also set by an empty key id),
    /// else the spelling used (or the key ARN, see
    /// [`MemoryStore::report_kms_as_key_arn`]).
    fn reported_kms(&self, key: Option<&str>) -> Option<String> {
        let key = key.filter(|k| !k.is_empty())?;
        let id = self.kms_key_id_of(key);
        if id.as_deref() == Some(AWS_MANAGED_KEY_ID) {
            return None;
        }
        match id {
            Some(id) if self.kms_reported_as_arn => Some(format!("{KMS_ARN_PREFIX}key/{id}")),
            _ => Some(key.to_owned()),
        }
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut Entry> {
        if self.secrets.contains_key(id) {
            return self.secrets.get_mut(id);
        }
        self.secrets.values_mut().find(|e| e.meta.arn == id)
    }

    fn find(&self, id: &str) -> Option<&Entry> {
        self.secrets
            .get(id)
            .or_else(|| self.secrets.values().find(|e| e.meta.arn == id))
    }

    /// A live (not pending deletion) secret, or AWS's error.
    fn live_mut(&mut self, op: &'static str, id: &str) -> Result<&mut Entry, StoreError> {
        let entry = self.find_mut(id).ok_or(StoreError::NotFound { op })?;
        if entry.meta.pending_deletion {
            return Err(rejected(
                op,
                format!("InvalidRequestException: {MSG_MARKED_FOR_DELETION}"),
            ));
        }
        Ok(entry)
    }
}

impl SecretStore for MemoryStore {
    async fn list_owned(
        &self,
        agent: &str,
        sync: &str,
        by: OwnerFilter,
        max_pages: usize,
    ) -> Result<Option<Owned>, StoreError> {
        let value = match by {
            OwnerFilter::Sync => sync,
            OwnerFilter::Agent => agent,
        };
        // AWS: tag-key and tag-value are independent prefix filters.
        Ok(self
            .list_pages(
                |s| {
                    s.tags.keys().any(|k| k.starts_with(TAG_SYNC))
                        && s.tags.values().any(|v| v.starts_with(value))
                },
                |s| {
                    s.tags.get(TAG_SYNC).map(String::as_str) == Some(sync)
                        && s.tags.get(TAG_AGENT).map(String::as_str) == Some(agent)
                },
                max_pages,
            )
            .await?
            .map(|(secrets, scanned)| Owned { secrets, scanned }))
    }

    async fn lookup_names(&self, names: &[String]) -> Result<Vec<RemoteSecret>, StoreError> {
        let wanted: Vec<&String> = names.iter().collect::<BTreeSet<_>>().into_iter().collect();
        let mut out = Vec::new();
        for chunk in wanted.chunks(NAME_FILTER_MAX) {
            out.extend(
                self.list_paged(
                    |s| chunk.iter().any(|n| s.name.starts_with(n.as_str())),
                    |s| chunk.iter().any(|n| s.name == **n),
                )
                .await?,
            );
        }
        Ok(out)
    }

    async fn list_by_prefix(&self, prefix: &str) -> Result<Vec<RemoteSecret>, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Config("empty prefix".into()));
        }
        self.list_paged(
            |s| s.name.starts_with(prefix),
            |s| s.name.starts_with(prefix),
        )
        .await
    }

    async fn list_by_prefix_capped(
        &self,
        prefix: &str,
        max_pages: usize,
    ) -> Result<Option<Vec<RemoteSecret>>, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Config("empty prefix".into()));
        }
        Ok(self
            .list_pages(
                |s| s.name.starts_with(prefix),
                |s| s.name.starts_with(prefix),
                max_pages,
            )
            .await?
            .map(|(secrets, _)| secrets))
    }

    async fn get_values(&self, ids: &[String]) -> Result<Vec<ValueRead>, StoreError> {
        let mut seen = BTreeSet::new();
        let unique: Vec<&String> = ids.iter().filter(|id| seen.insert(*id)).collect();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            self.call(OP_BATCH_GET).await?;
            let inner = self.lock();
            for id in chunk {
                let read = match inner.find(id) {
                    None => Err(StoreError::NotFound { op: OP_BATCH_GET }),
                    Some(e) if e.meta.pending_deletion => Err(rejected(
                        OP_BATCH_GET,
                        format!("InvalidRequestException: {MSG_MARKED_FOR_DELETION}"),
                    )),
                    Some(e) => match e.current_value() {
                        // AWS: "can't find the specified secret value for staging label: AWSCURRENT"
                        None => Err(StoreError::NotFound { op: OP_BATCH_GET }),
                        Some(v) => Ok(RemoteValue {
                            name: e.meta.name.clone(),
                            version_id: e.meta.current_version.clone(),
                            value: Some(v.clone()),
                        }),
                    },
                };
                out.push(((*id).clone(), read));
            }
        }
        Ok(out)
    }

    async fn create_secret(&self, req: &CreateSecret) -> Result<WriteResult, StoreError> {
        self.call(OP_CREATE).await?;
        check_name(OP_CREATE, &req.name)?;
        check_value(OP_CREATE, &req.value)?;
        check_token(OP_CREATE, &req.token)?;
        check_tags(OP_CREATE, &req.tags)?;
        check_tag_count(OP_CREATE, req.tags.len())?;
        check_metadata(
            OP_CREATE,
            req.kms_key_id.as_deref(),
            req.description.as_deref(),
        )?;
        let mut inner = self.lock();
        if let Some(existing) = inner.secrets.get(&req.name) {
            if existing.meta.pending_deletion {
                return Err(rejected(
                    OP_CREATE,
                    format!("InvalidRequestException: {MSG_CREATE_SCHEDULED}"),
                ));
            }
            // A retried create with the same token and value is ignored.
            let same = existing
                .versions
                .iter()
                .any(|v| v.id == req.token && v.value == req.value);
            if same {
                return Ok(WriteResult {
                    version_id: Some(req.token.clone()),
                });
            }
            return Err(StoreError::AlreadyExists {
                op: OP_CREATE,
                message: format!(
                    "ResourceExistsException: The operation failed because the secret {} already exists.",
                    req.name
                ),
            });
        }
        let replicas = new_replicas(OP_CREATE, &[], &req.replica_regions)?;
        let meta = RemoteSecret {
            name: req.name.clone(),
            arn: make_arn(&req.name),
            tags: req.tags.clone(),
            kms_key_id: inner.reported_kms(req.kms_key_id.as_deref()),
            description: req.description.clone(),
            pending_deletion: false,
            current_version: Some(req.token.clone()),
            rotation_enabled: false,
        };
        inner.secrets.insert(
            req.name.clone(),
            Entry {
                meta,
                versions: vec![Version {
                    id: req.token.clone(),
                    value: req.value.clone(),
                }],
                replicas,
            },
        );
        Ok(WriteResult {
            version_id: Some(req.token.clone()),
        })
    }

    async fn put_value(
        &self,
        name: &str,
        value: &SecretValue,
        token: &str,
    ) -> Result<WriteResult, StoreError> {
        self.call(OP_PUT).await?;
        check_value(OP_PUT, value)?;
        check_token(OP_PUT, token)?;
        let mut inner = self.lock();
        let entry = inner.live_mut(OP_PUT, name)?;
        if let Some(existing) = entry.versions.iter().find(|v| v.id == token) {
            if existing.value == *value {
                // Idempotent retry: ignored, no new version, labels unchanged.
                return Ok(WriteResult {
                    version_id: Some(token.to_owned()),
                });
            }
            // AWS says ResourceExistsException; `AwsStore` reports it as
            // Rejected for this operation, and so does this twin.
            return Err(rejected(
                OP_PUT,
                format!(
                    "ResourceExistsException: You can't use ClientRequestToken {token} because \
                     that value is already in use for a version of secret {}.",
                    entry.meta.arn
                ),
            ));
        }
        entry.versions.push(Version {
            id: token.to_owned(),
            value: value.clone(),
        });
        entry.meta.current_version = Some(token.to_owned());
        Ok(WriteResult {
            version_id: Some(token.to_owned()),
        })
    }

    async fn tag(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(()); // AwsStore makes no call for this either.
        }
        self.call(OP_TAG).await?;
        check_tags(OP_TAG, tags)?;
        let mut inner = self.lock();
        let entry = inner.live_mut(OP_TAG, name)?;
        let after = entry
            .meta
            .tags
            .keys()
            .chain(tags.keys())
            .collect::<BTreeSet<_>>()
            .len();
        check_tag_count(OP_TAG, after)?;
        for (k, v) in tags {
            entry.meta.tags.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    async fn untag(&self, name: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(()); // AwsStore makes no call for this either.
        }
        self.call(OP_UNTAG).await?;
        for key in keys {
            check_tag_key(OP_UNTAG, key)?;
        }
        let mut inner = self.lock();
        let entry = inner.live_mut(OP_UNTAG, name)?;
        for key in keys {
            entry.meta.tags.remove(key);
        }
        Ok(())
    }

    async fn update_metadata(
        &self,
        name: &str,
        kms_key_id: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), StoreError> {
        if kms_key_id.is_none() && description.is_none() {
            return Ok(()); // AwsStore makes no call for this either.
        }
        self.call(OP_UPDATE).await?;
        check_metadata(OP_UPDATE, kms_key_id, description)?;
        let mut inner = self.lock();
        let reported = kms_key_id.map(|k| inner.reported_kms(Some(k)));
        let entry = inner.live_mut(OP_UPDATE, name)?;
        if let Some(k) = reported {
            entry.meta.kms_key_id = k;
        }
        if let Some(d) = description {
            entry.meta.description = Some(d.to_owned());
        }
        Ok(())
    }

    async fn delete_secret(&self, name: &str, recovery_window_days: u8) -> Result<(), StoreError> {
        self.call(OP_DELETE).await?;
        if recovery_window_days != 0 && !(7..=30).contains(&recovery_window_days) {
            return Err(rejected(
                OP_DELETE,
                format!(
                    "InvalidParameterException: RecoveryWindowInDays must be 7 to 30, got {recovery_window_days}"
                ),
            ));
        }
        let mut inner = self.lock();
        let entry = inner
            .find_mut(name)
            .ok_or(StoreError::NotFound { op: OP_DELETE })?;
        if !entry.replicas.is_empty() {
            let regions: Vec<&str> = entry.replicas.iter().map(|r| r.region.as_str()).collect();
            return Err(rejected(
                OP_DELETE,
                format!(
                    "InvalidParameterException: You can't delete secret {name} that still has replica regions [{}]",
                    regions.join(",")
                ),
            ));
        }
        if recovery_window_days == 0 {
            // Force delete also works on a secret already scheduled for deletion.
            let key = entry.meta.name.clone();
            inner.secrets.remove(&key);
            return Ok(());
        }
        // AWS rejects this with InvalidRequestException; the trait makes it
        // a success (see `SecretStore::delete_secret`), as `AwsStore` does.
        entry.meta.pending_deletion = true;
        Ok(())
    }

    async fn restore_secret(&self, name: &str) -> Result<(), StoreError> {
        self.call(OP_RESTORE).await?;
        let mut inner = self.lock();
        let entry = inner
            .find_mut(name)
            .ok_or(StoreError::NotFound { op: OP_RESTORE })?;
        entry.meta.pending_deletion = false;
        Ok(())
    }

    async fn describe_secret(&self, name: &str) -> Result<Option<RemoteSecret>, StoreError> {
        self.call(OP_DESCRIBE).await?;
        Ok(self.lock().find(name).map(|e| e.meta.clone()))
    }

    async fn describe_replicas(&self, name: &str) -> Result<Vec<ReplicaStatus>, StoreError> {
        self.call(OP_DESCRIBE).await?;
        let inner = self.lock();
        let entry = inner
            .find(name)
            .ok_or(StoreError::NotFound { op: OP_DESCRIBE })?;
        Ok(entry.replicas.clone())
    }

    async fn replicate_to(&self, name: &str, regions: &[String]) -> Result<(), StoreError> {
        if regions.is_empty() {
            return Ok(()); // AwsStore makes no call for this either.
        }
        self.call(OP_REPLICATE).await?;
        let mut inner = self.lock();
        let entry = inner.live_mut(OP_REPLICATE, name)?;
        let added = new_replicas(OP_REPLICATE, &entry.replicas, regions)?;
        entry.replicas.extend(added);
        entry.replicas.sort();
        Ok(())
    }

    async fn remove_replicas(&self, name: &str, regions: &[String]) -> Result<(), StoreError> {
        if regions.is_empty() {
            return Ok(()); // AwsStore makes no call for this either.
        }
        self.call(OP_REMOVE_REPLICAS).await?;
        let mut inner = self.lock();
        let entry = inner.find_mut(name).ok_or(StoreError::NotFound {
            op: OP_REMOVE_REPLICAS,
        })?;
        entry.replicas.retain(|r| !regions.contains(&r.region));
        Ok(())
    }

    fn last_retry(&self) -> Option<RetryNote> {
        self.lock().retry_note.clone()
    }

    async fn resolve_kms_key(&self, key: &str) -> Result<Option<KeyIdentity>, StoreError> {
        self.kms_cache
            .resolve(key, || async {
                self.call(OP_DESCRIBE_KEY).await?;
                let inner = self.lock();
                if inner.describe_key_denied {
                    return Err(StoreError::AccessDenied {
                        op: OP_DESCRIBE_KEY,
                        message: format!(
                            "AccessDeniedException: User is not authorized to perform: kms:DescribeKey on resource {key}"
                        ),
                    });
                }
                let id = inner.kms_key_id_of(key).ok_or_else(|| {
                    rejected(
                        OP_DESCRIBE_KEY,
                        format!("NotFoundException: Key '{key}' does not exist"),
                    )
                })?;
                Ok(KeyIdentity {
                    arn: format!("{KMS_ARN_PREFIX}key/{id}"),
                    key_id: id,
                })
            })
            .await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.call(OP_LIST).await
    }
}

/// Replicas for `regions` on a secret that already has `existing`: AWS
/// rejects the primary region and a region that is already a replica.
fn new_replicas(
    op: &'static str,
    existing: &[ReplicaStatus],
    regions: &[String],
) -> Result<Vec<ReplicaStatus>, StoreError> {
    let mut out: Vec<ReplicaStatus> = Vec::new();
    for region in regions {
        if region == REGION || existing.iter().chain(&out).any(|r| &r.region == region) {
            return Err(rejected(
                op,
                format!("InvalidParameterException: Invalid replica region {region}."),
            ));
        }
        out.push(ReplicaStatus {
            region: region.clone(),
            status: "InSync".into(),
            message: Some("Replication succeeded".into()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::Instant;

    /// A 32-character token derived from `s`.
    fn tok(s: &str) -> String {
        format!("{s:0>32}")
    }

    fn val(s: &str) -> SecretValue {
        SecretValue::new(s)
    }

    fn owned_tags(sync: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("secretsync:agent".to_owned(), "web-01".to_owned()),
            (TAG_SYNC.to_owned(), sync.to_owned()),
        ])
    }

    fn req(name: &str, value: &str, token: &str) -> CreateSecret {
        CreateSecret {
            name: name.to_owned(),
            value: val(value),
            tags: owned_tags("app"),
            kms_key_id: None,
            description: Some("managed by secretsync".into()),
            token: tok(token),
            replica_regions: vec![],
        }
    }

    fn seed(store: &MemoryStore, name: &str, sync: &str, pending: bool) {
        store.insert(
            RemoteSecret {
                name: name.to_owned(),
                tags: owned_tags(sync),
                pending_deletion: pending,
                ..Default::default()
            },
            Some(val("v")),
        );
    }

    fn is_rejected(r: &Result<impl std::fmt::Debug, StoreError>, needle: &str) -> bool {
        matches!(r, Err(StoreError::Rejected { message, .. }) if message.contains(needle))
    }

    #[tokio::test]
    async fn create_then_read_back() {
        let s = MemoryStore::new();
        let out = s.create_secret(&req("prod/DB", "one", "t1")).await;
        assert_eq!(
            out,
            Ok(WriteResult {
                version_id: Some(tok("t1"))
            })
        );
        let (meta, value) = s.get("prod/DB").expect("created");
        assert_eq!(value, Some(val("one")));
        assert_eq!(meta.current_version, Some(tok("t1")));
        assert!(meta.arn.starts_with(ARN_PREFIX) && meta.arn.contains("prod/DB-"));
        assert_eq!(meta.description.as_deref(), Some("managed by secretsync"));
        assert_eq!(s.versions("prod/DB"), vec![tok("t1")]);
        assert_eq!(s.calls(), BTreeMap::from([(OP_CREATE, 1)]));
    }

    #[tokio::test]
    async fn create_existing_name() {
        let s = MemoryStore::new();
        s.create_secret(&req("a", "one", "t1"))
            .await
            .expect("create");
        // A retried create (same token, same value) is ignored.
        let retry = s.create_secret(&req("a", "one", "t1")).await;
        assert_eq!(
            retry,
            Ok(WriteResult {
                version_id: Some(tok("t1"))
            })
        );
        assert_eq!(s.versions("a").len(), 1);
        // Anything else is a conflict.
        let other = s.create_secret(&req("a", "two", "t2")).await;
        assert!(
            matches!(other, Err(StoreError::AlreadyExists { op: OP_CREATE, .. })),
            "{other:?}"
        );
        assert_eq!(s.get("a").expect("a").1, Some(val("one")));
    }

    #[tokio::test]
    async fn create_over_pending_deletion_is_rejected_like_aws() {
        let s = MemoryStore::new();
        seed(&s, "a", "app", true);
        let r = s.create_secret(&req("a", "one", "t1")).await;
        assert!(is_rejected(&r, "scheduled for deletion"), "{r:?}");
    }

    #[tokio::test]
    async fn put_value_token_idempotency() {
        let s = MemoryStore::new();
        s.create_secret(&req("a", "v1", "t1"))
            .await
            .expect("create");
        let put = s.put_value("a", &val("v2"), &tok("t2")).await;
        assert_eq!(
            put,
            Ok(WriteResult {
                version_id: Some(tok("t2"))
            })
        );
        // Same token, same value: same version, nothing new.
        let again = s.put_value("a", &val("v2"), &tok("t2")).await;
        assert_eq!(again, put);
        assert_eq!(s.versions("a"), vec![tok("t1"), tok("t2")]);
        // Same token, other value: AWS refuses to modify a version.
        let clash = s.put_value("a", &val("v3"), &tok("t2")).await;
        assert!(is_rejected(&clash, "already in use"), "{clash:?}");
        // Going back to an earlier value with a new token writes.
        s.put_value("a", &val("v1"), &tok("t3"))
            .await
            .expect("back to v1");
        assert_eq!(s.versions("a"), vec![tok("t1"), tok("t2"), tok("t3")]);
        let (meta, value) = s.get("a").expect("a");
        assert_eq!(
            (meta.current_version, value),
            (Some(tok("t3")), Some(val("v1")))
        );
        assert_eq!(s.calls().get(OP_PUT), Some(&4));
    }

    #[tokio::test]
    async fn pending_deletion_refuses_writes() {
        let s = MemoryStore::new();
        seed(&s, "a", "app", true);
        let tags = BTreeMap::from([("team".to_owned(), "x".to_owned())]);
        let results = [
            s.put_value("a", &val("v"), &tok("t")).await.map(|_| ()),
            s.tag("a", &tags).await,
            s.untag("a", &["team".to_owned()]).await,
            s.update_metadata("a", None, Some("d")).await,
        ];
        for r in &results {
            assert!(is_rejected(r, "marked for deletion"), "{r:?}");
        }
        assert_eq!(s.get("a").expect("a").0.tags, owned_tags("app"));
        // Scheduling it again is a success that changes nothing.
        assert_eq!(s.delete_secret("a", 7).await, Ok(()));
        assert!(s.get("a").expect("a").0.pending_deletion);
    }

    #[tokio::test]
    async fn missing_secret_is_not_found() {
        let s = MemoryStore::new();
        let tags = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        assert_eq!(
            s.put_value("nope", &val("v"), &tok("t")).await,
            Err(StoreError::NotFound { op: OP_PUT })
        );
        assert_eq!(
            s.tag("nope", &tags).await,
            Err(StoreError::NotFound { op: OP_TAG })
        );
        assert_eq!(
            s.untag("nope", &["k".to_owned()]).await,
            Err(StoreError::NotFound { op: OP_UNTAG })
        );
        assert_eq!(
            s.update_metadata("nope", Some("k"), None).await,
            Err(StoreError::NotFound { op: OP_UPDATE })
        );
        assert_eq!(
            s.delete_secret("nope", 7).await,
            Err(StoreError::NotFound { op: OP_DELETE })
        );
        assert_eq!(
            s.restore_secret("nope").await,
            Err(StoreError::NotFound { op: OP_RESTORE })
        );
    }

    #[tokio::test]
    async fn aws_limits_are_enforced_and_the_call_still_counts() {
        let s = MemoryStore::new();
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(is_rejected(
            &s.create_secret(&req("a", &big, "t")).await,
            "65536"
        ));
        let max = "x".repeat(MAX_VALUE_BYTES);
        s.create_secret(&req("a", &max, "t"))
            .await
            .expect("65,536 bytes fit");
        assert!(is_rejected(
            &s.put_value("a", &val(&big), &tok("t2")).await,
            "65536"
        ));
        // Multi-byte characters count as bytes.
        let wide = "é".repeat(MAX_VALUE_BYTES / 2 + 1);
        assert!(is_rejected(
            &s.put_value("a", &val(&wide), &tok("t3")).await,
            "bytes"
        ));

        // AWS's minimum SecretString length is 1 (moto accepts "").
        assert!(is_rejected(
            &s.create_secret(&req("empty", "", "t")).await,
            "minimum is 1"
        ));
        assert!(is_rejected(
            &s.put_value("a", &val(""), &tok("t4")).await,
            "minimum is 1"
        ));

        for bad in ["a b", "", "ü", &"n".repeat(513)] {
            let r = s.create_secret(&req(bad, "v", "t")).await;
            assert!(is_rejected(&r, "ValidationException"), "{bad:?}: {r:?}");
        }
        s.create_secret(&req(&"n".repeat(512), "v", "t"))
            .await
            .expect("512 chars");
        s.create_secret(&req("A-z0/_+=.@-9", "v", "t"))
            .await
            .expect("charset");

        let short_token = s.put_value("a", &val("v"), "short").await;
        assert!(
            is_rejected(&short_token, "ClientRequestToken"),
            "{short_token:?}"
        );
        let long_token = s.put_value("a", &val("v"), &"t".repeat(65)).await;
        assert!(
            is_rejected(&long_token, "ClientRequestToken"),
            "{long_token:?}"
        );

        let mut many = owned_tags("app");
        for i in 0..49 {
            many.insert(format!("k{i}"), "v".into());
        }
        let mut too_many = req("b", "v", "t");
        too_many.tags = many;
        assert!(is_rejected(&s.create_secret(&too_many).await, "at most 50"));

        let tag = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(is_rejected(
            &s.tag("a", &tag(&"k".repeat(129), "v")).await,
            "tag key"
        ));
        assert!(is_rejected(
            &s.tag("a", &tag("k", &"v".repeat(257))).await,
            "value"
        ));
        assert!(is_rejected(
            &s.tag("a", &tag("aws:owner", "v")).await,
            "aws:"
        ));
        assert!(is_rejected(
            &s.tag("a", &tag("AWS:owner", "v")).await,
            "aws:"
        ));
        assert!(is_rejected(
            &s.untag("a", &["aws:x".to_owned()]).await,
            "aws:"
        ));
        s.tag("a", &tag(&"k".repeat(128), &"v".repeat(256)))
            .await
            .expect("at the limits");

        // 2 ownership tags + 1 above + 47 more = 50: fine; one more is not.
        let fill: BTreeMap<String, String> =
            (0..47).map(|i| (format!("f{i}"), "v".to_owned())).collect();
        s.tag("a", &fill).await.expect("50 tags");
        assert!(is_rejected(
            &s.tag("a", &tag("one-more", "v")).await,
            "at most 50"
        ));
        // Overwriting an existing key does not add a tag.
        s.tag("a", &tag("f0", "new")).await.expect("overwrite");

        assert!(is_rejected(
            &s.update_metadata("a", None, Some(&"d".repeat(2049))).await,
            "Description"
        ));
        assert!(is_rejected(
            &s.delete_secret("a", 6).await,
            "RecoveryWindowInDays"
        ));
        assert!(is_rejected(
            &s.delete_secret("a", 31).await,
            "RecoveryWindowInDays"
        ));

        // Every rejected request was still a call: engine tests use this to
        // prove a limit is checked *before* calling (count stays 0).
        assert!(s.calls()[OP_CREATE] >= 7);
        assert!(s.write_calls() > 20);
    }

    #[tokio::test]
    async fn list_owned_filters_exactly_and_counts_pages() {
        let s = MemoryStore::new();
        for i in 0..150 {
            seed(&s, &format!("app/{i:03}"), "app", i % 10 == 0);
        }
        for i in 0..100 {
            seed(&s, &format!("prod/{i:03}"), "app-prod", false);
        }
        // A fleet: the same sync name on other hosts. "web-010" starts
        // with "web-01": AWS's tag-value prefix filter still sends it.
        for (host, n) in [("web-02", 500), ("web-010", 40)] {
            for i in 0..n {
                let mut tags = owned_tags("app");
                tags.insert(TAG_AGENT.to_owned(), host.to_owned());
                s.insert(
                    RemoteSecret {
                        name: format!("{host}/{i:03}"),
                        tags,
                        ..Default::default()
                    },
                    None,
                );
            }
        }
        // Our id as a value under another key: AWS's tag filters match it.
        s.insert(
            RemoteSecret {
                name: "other".into(),
                tags: BTreeMap::from([
                    (TAG_SYNC.to_owned(), "billing".to_owned()),
                    ("team".to_owned(), "web-01".to_owned()),
                ]),
                ..Default::default()
            },
            None,
        );

        // By the agent's id: ours, our other sync, the "web-010" prefix
        // match and "other" = 150 + 100 + 40 + 1 = 291 entries, 3 pages.
        let app = s
            .list_owned("web-01", "app", OwnerFilter::Agent, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        assert_eq!((app.secrets.len(), app.scanned), (150, 291));
        assert!(app.secrets.iter().all(|r| r.tags[TAG_SYNC] == "app"));
        assert!(app.secrets.iter().all(|r| r.tags[TAG_AGENT] == "web-01"));
        assert_eq!(
            app.secrets.iter().filter(|r| r.pending_deletion).count(),
            15
        );
        assert_eq!(s.calls()[OP_LIST], 3);

        // By the sync's name: every host's "app" (150 + 100 "app-prod" +
        // 500 + 40) = 790 entries, 8 pages, for the same 150.
        s.reset_calls();
        let by_sync = s
            .list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        assert_eq!((by_sync.secrets.len(), by_sync.scanned), (150, 790));
        assert_eq!(s.calls()[OP_LIST], 8);

        s.reset_calls();
        let web02 = s
            .list_owned("web-02", "app", OwnerFilter::Agent, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        assert_eq!(web02.secrets.len(), 500);
        assert_eq!(s.calls()[OP_LIST], 5);

        s.reset_calls();
        let none = s
            .list_owned("nobody", "app", OwnerFilter::Agent, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        assert!(none.secrets.is_empty());
        assert_eq!(s.calls()[OP_LIST], 1, "an empty listing is still one call");
    }

    #[tokio::test]
    async fn lookup_names_exact_and_chunked() {
        let s = MemoryStore::new();
        for name in ["a", "ab", "abc", "b", "gone"] {
            seed(&s, name, "x", name == "gone");
        }
        let mut names: Vec<String> = vec!["a".into(), "b".into(), "gone".into(), "a".into()];
        let found = s.lookup_names(&names).await.expect("lookup");
        let got: Vec<&str> = found.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(got, ["a", "b", "gone"]);
        assert!(found.iter().any(|r| r.name == "gone" && r.pending_deletion));
        assert_eq!(s.calls()[OP_LIST], 1);

        s.reset_calls();
        names = (0..25).map(|i| format!("n{i}")).collect();
        assert!(s.lookup_names(&names).await.expect("lookup").is_empty());
        assert_eq!(s.calls()[OP_LIST], 3, "10 names per call");

        s.reset_calls();
        assert!(s.lookup_names(&[]).await.expect("lookup").is_empty());
        assert!(s.calls().is_empty(), "nothing to look up, no call");
    }

    #[tokio::test]
    async fn get_values_batches_and_reports_per_secret() {
        let s = MemoryStore::new();
        for i in 0..40 {
            seed(&s, &format!("s{i:02}"), "app", false);
        }
        seed(&s, "pending", "app", true);
        s.insert(
            RemoteSecret {
                name: "empty".into(),
                ..Default::default()
            },
            None,
        );
        let arn = s.get("s00").expect("s00").0.arn;

        let mut ids: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
        ids.extend(["pending", "empty", "missing", "s01"].map(String::from));
        ids.push(arn.clone());
        let reads = s.get_values(&ids).await.expect("reads");
        // 44 unique ids → 3 batches of ≤ 20.
        assert_eq!(s.calls()[OP_BATCH_GET], 3);
        assert_eq!(reads.len(), 44);
        let by_id: BTreeMap<&str, &Result<RemoteValue, StoreError>> =
            reads.iter().map(|(id, r)| (id.as_str(), r)).collect();
        assert_eq!(by_id.len(), 44, "every id exactly once");
        let ok = by_id["s05"].as_ref().expect("s05");
        assert_eq!(
            (ok.name.as_str(), ok.value.as_ref()),
            ("s05", Some(&val("v")))
        );
        assert!(ok.version_id.is_some());
        assert!(matches!(by_id["pending"], Err(StoreError::Rejected { .. })));
        assert_eq!(
            *by_id["empty"],
            Err(StoreError::NotFound { op: OP_BATCH_GET })
        );
        assert_eq!(
            *by_id["missing"],
            Err(StoreError::NotFound { op: OP_BATCH_GET })
        );
        let by_arn = by_id[arn.as_str()].as_ref().expect("by arn");
        assert_eq!(by_arn.name, "s00");
    }

    #[tokio::test]
    async fn delete_restore_and_force_delete() {
        let s = MemoryStore::new();
        s.create_secret(&req("a", "v", "t")).await.expect("create");
        s.delete_secret("a", 7).await.expect("schedule");
        assert!(s.get("a").expect("a").0.pending_deletion);
        assert!(
            s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
                .await
                .expect("list")
                .expect("ended")
                .secrets[0]
                .pending_deletion
        );
        s.restore_secret("a").await.expect("restore");
        assert!(!s.get("a").expect("a").0.pending_deletion);
        s.restore_secret("a")
            .await
            .expect("restoring a live secret is a no-op");
        s.put_value("a", &val("w"), &tok("t2"))
            .await
            .expect("writable again");

        s.delete_secret("a", 30).await.expect("schedule");
        s.delete_secret("a", 0)
            .await
            .expect("force works on a pending secret");
        assert!(s.get("a").is_none());
        // The name is free again.
        s.create_secret(&req("a", "v", "t3"))
            .await
            .expect("recreate");
    }

    #[tokio::test]
    async fn fail_next_then_recover() {
        let s = MemoryStore::new();
        s.create_secret(&req("a", "v", "t")).await.expect("create");
        let throttled = StoreError::Throttled {
            op: "x",
            message: "Rate exceeded".into(),
        };
        s.fail_next(OP_PUT, throttled, 2);
        s.fail_next(
            OP_PUT,
            StoreError::Unavailable {
                op: "x",
                message: "503".into(),
            },
            1,
        );
        let mut errs = Vec::new();
        for _ in 0..3 {
            errs.push(
                s.put_value("a", &val("w"), &tok("t2"))
                    .await
                    .expect_err("injected"),
            );
        }
        assert!(matches!(errs[0], StoreError::Throttled { op: OP_PUT, .. }));
        assert!(matches!(errs[1], StoreError::Throttled { op: OP_PUT, .. }));
        assert!(matches!(
            errs[2],
            StoreError::Unavailable { op: OP_PUT, .. }
        ));
        assert!(errs.iter().all(StoreError::is_transient));
        // Injected failures had no effect; the next call goes through.
        assert_eq!(s.versions("a"), vec![tok("t")]);
        s.put_value("a", &val("w"), &tok("t2"))
            .await
            .expect("healed");
        assert_eq!(s.calls()[OP_PUT], 4);
        // Other operations were never affected.
        s.fail_next(
            OP_BATCH_GET,
            StoreError::Unavailable {
                op: "x",
                message: "m".into(),
            },
            1,
        );
        assert!(
            s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
                .await
                .is_ok()
        );
        assert!(s.get_values(&["a".into()]).await.is_err());
        assert!(s.get_values(&["a".into()]).await.is_ok());
    }

    #[tokio::test]
    async fn fail_next_on_a_later_page() {
        let s = MemoryStore::new();
        for i in 0..150 {
            seed(&s, &format!("n{i:03}"), "app", false);
        }
        s.fail_next(
            OP_LIST,
            StoreError::Throttled {
                op: "x",
                message: "m".into(),
            },
            1,
        );
        assert!(matches!(
            s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
                .await,
            Err(StoreError::Throttled { op: OP_LIST, .. })
        ));
        assert_eq!(
            s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
                .await
                .expect("list")
                .expect("ended")
                .secrets
                .len(),
            150
        );
    }

    #[test]
    #[should_panic(expected = "unknown operation")]
    fn fail_next_rejects_unknown_operations() {
        MemoryStore::new().fail_next("PutSecret", StoreError::Config("x".into()), 1);
    }

    #[tokio::test]
    async fn outage_and_heal() {
        let s = MemoryStore::new();
        s.create_secret(&req("a", "v", "t")).await.expect("create");
        s.fail_all(StoreError::Unavailable {
            op: "x",
            message: "connection refused".into(),
        });
        assert!(matches!(
            s.probe().await,
            Err(StoreError::Unavailable { op: OP_LIST, .. })
        ));
        assert!(matches!(
            s.delete_secret("a", 7).await,
            Err(StoreError::Unavailable { op: OP_DELETE, .. })
        ));
        assert!(s.get_values(&["a".into()]).await.is_err());
        assert!(
            !s.get("a").expect("a").0.pending_deletion,
            "nothing happened during the outage"
        );
        s.heal();
        s.delete_secret("a", 7).await.expect("after heal");
        assert_eq!(s.calls()[OP_DELETE], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_runs_in_virtual_time_per_call() {
        let s = MemoryStore::new();
        s.set_latency(Duration::from_millis(40));
        for i in 0..250 {
            seed(&s, &format!("n{i:03}"), "app", false);
        }
        let start = Instant::now();
        s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        assert_eq!(
            Instant::now() - start,
            Duration::from_millis(120),
            "3 pages"
        );
        let start = Instant::now();
        s.put_value("n000", &val("x"), &tok("t"))
            .await
            .expect("put");
        assert_eq!(Instant::now() - start, Duration::from_millis(40));
        // Concurrent callers overlap: the lock is not held while "in flight".
        let s = Arc::new(s);
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(
                    async move { s.put_value(&format!("n{i:03}"), &val("y"), &tok("u")).await },
                )
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("put");
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(40));
    }

    /// Starts `n` creates at once (names `q0000`…) and returns how many were
    /// throttled and when the last one finished, relative to the start.
    async fn burst_of_creates(s: &Arc<MemoryStore>, n: usize, from: usize) -> (usize, Duration) {
        let start = Instant::now();
        let tasks: Vec<_> = (from..from + n)
            .map(|i| {
                let s = Arc::clone(s);
                tokio::spawn(async move {
                    let r = s
                        .create_secret(&req(&format!("q{i:04}"), "v", &format!("t{i}")))
                        .await;
                    (r, Instant::now())
                })
            })
            .collect();
        let mut throttled = 0;
        let mut last = start;
        for t in tasks {
            let (r, at) = t.await.expect("join");
            match r {
                Ok(_) => {}
                Err(StoreError::Throttled { op, .. }) => {
                    assert_eq!(op, OP_CREATE);
                    throttled += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
            last = last.max(at);
        }
        (throttled, last - start)
    }

    #[tokio::test(start_paused = true)]
    async fn clients_share_the_account_and_retry_like_the_sdk() {
        fastrand::seed(3); // the backoff's jitter, reproducible
        let account = MemoryStore::new();
        account.set_write_quota(Some(Quota {
            per_second: 1,
            burst: 1,
        }));
        let (a, b) = (account.client(), account.client());
        b.set_sdk_retries(true);
        a.create_secret(&req("a/1", "one", "t1"))
            .await
            .expect("takes the only token");
        // Without retries a throttled call fails at once.
        let started = Instant::now();
        assert!(matches!(
            a.create_secret(&req("a/2", "two", "t2")).await,
            Err(StoreError::Throttled { .. })
        ));
        assert_eq!(a.client_calls(), (2, 1));
        // With them it backs off (full jitter, doubling from 1 s) until the
        // bucket has a token again, and lands.
        b.create_secret(&req("b/1", "three", "t3"))
            .await
            .expect("retried until the quota allowed it");
        let (sent, throttled) = b.client_calls();
        assert_eq!(sent, throttled + 1, "every attempt but the last throttled");
        assert!(started.elapsed() < MAX_BACKOFF * MAX_ATTEMPTS);
        // One account: all three see the same secrets and counts.
        assert_eq!(account.names(), ["a/1", "b/1"]);
        assert_eq!(account.calls()[OP_CREATE], sent + 2);
        assert_eq!(account.throttled(), throttled + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_congested_client_fails_throttled_calls_instead_of_retrying() {
        fastrand::seed(5);
        let account = MemoryStore::new();
        let host = account.client();
        host.set_sdk_retries(true);
        host.set_pacing(50, 20);
        // Every write throttled: the first throttle at full rate is worth a
        // retry (one more attempt); the retry's throttle, with the pacer now
        // slowed, is not: two attempts, not MAX_ATTEMPTS.
        account.set_write_quota(Some(Quota {
            per_second: 0,
            burst: 0,
        }));
        assert!(matches!(
            host.create_secret(&req("h/1", "one", "t1")).await,
            Err(StoreError::Throttled { .. })
        ));
        assert_eq!(host.client_calls(), (2, 2));
        // Still slowed: the next call's single throttled attempt fails it.
        assert!(matches!(
            host.create_secret(&req("h/2", "two", "t2")).await,
            Err(StoreError::Throttled { .. })
        ));
        assert_eq!(host.client_calls(), (3, 3));
        // Once the quota allows, successes win the rate back and calls land.
        account.set_write_quota(None);
        for i in 0..600 {
            host.create_secret(&req(&format!("h/ok{i}"), "v", &format!("k{i}")))
                .await
                .expect("quota lifted");
        }
        assert_eq!(host.client_calls(), (603, 3));
        let p = host.pacing.lock().expect("pacing").clone().expect("set");
        assert_eq!(p.writes.current_rate(), 20.0, "back at the configured rate");
    }

    #[tokio::test(start_paused = true)]
    async fn write_quota_throttles_beyond_the_bucket_and_refills() {
        let s = Arc::new(MemoryStore::new());
        s.set_write_quota(Some(Quota {
            per_second: 50,
            burst: 50,
        }));
        let (throttled, _) = burst_of_creates(&s, 60, 0).await;
        assert_eq!(throttled, 10, "50 fit the bucket, 10 do not");
        assert_eq!(s.throttled(), 10);
        assert_eq!(s.calls()[OP_CREATE], 60, "a throttled call is still a call");
        assert_eq!(s.names().len(), 50, "throttled calls change nothing");
        // Reads have their own bucket (none set here): not throttled.
        s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        // After 0.5 s, 25 tokens are back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (throttled, _) = burst_of_creates(&s, 30, 100).await;
        assert_eq!(throttled, 5);
        s.set_write_quota(None);
        let (throttled, _) = burst_of_creates(&s, 100, 200).await;
        assert_eq!(throttled, 0, "quota removed");
    }

    #[tokio::test(start_paused = true)]
    async fn read_quota_counts_pages_and_batches() {
        let s = MemoryStore::new();
        for i in 0..250 {
            seed(&s, &format!("n{i:03}"), "app", false);
        }
        s.set_read_quota(Some(Quota {
            per_second: 5,
            burst: 5,
        }));
        s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
            .await
            .expect("3 pages fit");
        let ids: Vec<String> = (0..40).map(|i| format!("n{i:03}")).collect();
        s.get_values(&ids).await.expect("2 batches fit");
        let err = s.get_values(&ids).await.expect_err("6th call throttled");
        assert!(
            matches!(
                err,
                StoreError::Throttled {
                    op: OP_BATCH_GET,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(s.throttled(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_like_the_aws_store_keeps_writes_under_the_quota() {
        let s = Arc::new(MemoryStore::new());
        s.set_write_quota(Some(Quota {
            per_second: 50,
            burst: 50,
        }));
        s.set_latency(Duration::from_millis(20));
        // Unpaced, 200 writes at once trip the quota.
        let (throttled, _) = burst_of_creates(&s, 200, 0).await;
        assert_eq!(throttled, 150);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Paced at 45/s: none throttled, and it takes as long as the pacing
        // says. The pacer starts with an empty bucket (one call at once,
        // then one per 1/45 s): 199 / 45 s, plus one call's latency.
        s.set_pacing(50, 45);
        s.record_call_times(true);
        let (throttled, took) = burst_of_creates(&s, 200, 1000).await;
        assert_eq!(throttled, 0);
        let expected = Duration::from_secs(1) * 199 / 45 + Duration::from_millis(20);
        assert!(
            took >= expected - Duration::from_millis(5)
                && took <= expected + Duration::from_millis(25),
            "{took:?} vs {expected:?}"
        );
        let times = s.call_times();
        assert_eq!(times.len(), 200);
        assert!(times.iter().all(|(op, _)| *op == OP_CREATE));
        assert!(times.windows(2).all(|w| w[0].1 <= w[1].1), "in send order");
        s.record_call_times(false);
        assert!(s.call_times().is_empty());
    }

    #[tokio::test]
    async fn call_accounting() {
        let s = MemoryStore::new();
        s.create_secret(&req("a", "v", "t")).await.expect("create");
        s.put_value("a", &val("w"), &tok("t2")).await.expect("put");
        s.tag("a", &BTreeMap::from([("k".into(), "v".into())]))
            .await
            .expect("tag");
        s.untag("a", &["k".into()]).await.expect("untag");
        s.update_metadata("a", Some("alias/x"), Some("d"))
            .await
            .expect("update");
        s.replicate_to("a", &["eu-west-1".into()])
            .await
            .expect("replicate");
        s.describe_replicas("a").await.expect("describe");
        s.remove_replicas("a", &["eu-west-1".into()])
            .await
            .expect("unreplicate");
        s.delete_secret("a", 7).await.expect("delete");
        s.restore_secret("a").await.expect("restore");
        s.list_owned("web-01", "app", OwnerFilter::Sync, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        s.lookup_names(&["a".into()]).await.expect("lookup");
        s.get_values(&["a".into()]).await.expect("get");
        s.probe().await.expect("probe");
        let calls = s.calls();
        for op in WRITE_OPS {
            assert_eq!(calls[op], 1, "{op}");
        }
        assert_eq!(calls[OP_LIST], 3);
        assert_eq!(calls[OP_BATCH_GET], 1);
        assert_eq!(calls[OP_DESCRIBE], 1);
        assert_eq!(s.write_calls(), 9);
        s.reset_calls();
        assert!(s.calls().is_empty());
        assert_eq!(s.write_calls(), 0);
        let (meta, _) = s.get("a").expect("a");
        assert_eq!(meta.kms_key_id.as_deref(), Some("alias/x"));
        assert_eq!(meta.description.as_deref(), Some("d"));
        assert!(!meta.tags.contains_key("k"));
    }

    #[tokio::test]
    async fn empty_changes_make_no_call_like_aws_store() {
        let s = MemoryStore::new();
        s.tag("missing", &BTreeMap::new()).await.expect("tag");
        s.untag("missing", &[]).await.expect("untag");
        s.update_metadata("missing", None, None)
            .await
            .expect("update");
        assert!(s.get_values(&[]).await.expect("get").is_empty());
        assert!(s.calls().is_empty());
    }

    #[tokio::test]
    async fn seeding_and_inspection() {
        let s = MemoryStore::new();
        s.insert(
            RemoteSecret {
                name: "x".into(),
                current_version: Some("v-1".into()),
                ..Default::default()
            },
            Some(val("seeded")),
        );
        let (meta, value) = s.get("x").expect("x");
        assert_eq!(meta.current_version.as_deref(), Some("v-1"));
        assert_eq!(value, Some(val("seeded")));
        assert!(!meta.arn.is_empty());
        assert!(s.calls().is_empty(), "seeding is not a call");

        s.insert(
            RemoteSecret {
                name: "y".into(),
                current_version: Some("bogus".into()),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            s.get("y").expect("y"),
            (
                RemoteSecret {
                    name: "y".into(),
                    arn: s.get("y").expect("y").0.arn,
                    ..Default::default()
                },
                None
            )
        );
        assert!(s.versions("y").is_empty());
        assert_eq!(s.names(), ["x", "y"]);
        assert!(s.remove("x"));
        assert!(!s.remove("x"));
        assert!(s.get("x").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_safe() {
        let s = Arc::new(MemoryStore::new());
        s.create_secret(&req("a", "v0", "t0"))
            .await
            .expect("create");
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    // Half the writers retry the same token and value.
                    let t = tok(&format!("t{}", i % 25));
                    s.put_value("a", &val(&format!("v{}", i % 25)), &t).await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("put");
        }
        assert_eq!(s.versions("a").len(), 25, "t0 from create + 24 new tokens");
        assert_eq!(s.calls()[OP_PUT], 50);
    }

    #[tokio::test]
    async fn replicas_behave_like_aws() {
        let store = MemoryStore::new();
        let mut create = req("r", "v", &tok("1"));
        create.replica_regions = vec!["eu-west-1".into()];
        store.create_secret(&create).await.expect("create");
        assert_eq!(store.replica_regions("r"), ["eu-west-1"]);
        let described = store.describe_replicas("r").await.expect("describe");
        assert_eq!(described[0].status, "InSync");
        // The primary region and a region already replicated are refused.
        for bad in [REGION, "eu-west-1"] {
            let r = store.replicate_to("r", &[bad.to_string()]).await;
            assert!(is_rejected(&r, "Invalid replica region"), "{bad}: {r:?}");
        }
        store
            .replicate_to("r", &["ap-south-1".into()])
            .await
            .expect("add");
        assert_eq!(store.replica_regions("r"), ["ap-south-1", "eu-west-1"]);
        // No deletion while replicas remain.
        let r = store.delete_secret("r", 7).await;
        assert!(is_rejected(&r, "still has replica regions"), "{r:?}");
        store
            .remove_replicas("r", &["ap-south-1".into(), "eu-west-1".into()])
            .await
            .expect("remove");
        store.delete_secret("r", 7).await.expect("delete");
        assert!(matches!(
            store.describe_replicas("nope").await,
            Err(StoreError::NotFound { .. })
        ));
        // Empty changes make no call, like the AWS store.
        store.reset_calls();
        store.replicate_to("r", &[]).await.expect("noop");
        store.remove_replicas("r", &[]).await.expect("noop");
        assert_eq!(store.write_calls(), 0);
    }
}
