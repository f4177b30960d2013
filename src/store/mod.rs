//! The storage boundary: what the engine needs from a secrets backend.
//!
//! The engine, planner and apply code talk only to [`SecretStore`]; the AWS
//! SDK lives behind it in [`aws`], and [`memory`] is an in-memory twin with
//! fault injection and call counting for engine tests. Values cross this
//! boundary only as [`SecretValue`].

pub mod aws;
pub(crate) mod kms;
#[cfg(any(test, feature = "memory-store"))]
pub mod memory;
pub(crate) mod pacing;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::secret::SecretValue;

/// Most ids one `BatchGetSecretValue` call accepts.
pub const BATCH_GET_MAX: usize = 20;
/// Most results one `ListSecrets` page returns.
pub const LIST_PAGE_MAX: i32 = 100;
/// Most values one `ListSecrets` name filter accepts.
pub const NAME_FILTER_MAX: usize = 10;

/// One secret as AWS describes it, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteSecret {
    /// Secret name (the identity the planner works with).
    pub name: String,
    /// Full ARN, as returned by AWS.
    pub arn: String,
    /// All tags, ours and others'.
    pub tags: BTreeMap<String, String>,
    /// KMS key id/ARN/alias the secret is encrypted with; `None` = AWS managed key.
    pub kms_key_id: Option<String>,
    /// The secret's description.
    pub description: Option<String>,
    /// Scheduled for deletion (has a `DeletedDate`).
    pub pending_deletion: bool,
    /// Version id labelled `AWSCURRENT`, if known.
    pub current_version: Option<String>,
    /// AWS rotation is turned on (`RotationEnabled`): a rotation function
    /// writes the value, so the agent must not (the planner makes such a
    /// secret a CONFLICT instead of fighting the rotation forever).
    pub rotation_enabled: bool,
}

/// The alias of the AWS-managed key that Secrets Manager uses when a secret
/// names none. `DescribeSecret` and `ListSecrets` omit `KmsKeyId` for a
/// secret encrypted with it, so an omitted key *is* this key.
pub const AWS_MANAGED_KMS_ALIAS: &str = "alias/aws/secretsmanager";

/// A KMS key as KMS identifies it (`DescribeKey`'s `KeyId` and `Arn`), so
/// that an alias, a key id and a key ARN of one key compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// Key id (a UUID, or `mrk-…` for multi-Region keys).
    pub key_id: String,
    /// Key ARN (`arn:aws:kms:REGION:ACCOUNT:key/KEY_ID`).
    pub arn: String,
}

/// The current value of one secret, as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteValue {
    /// Secret name.
    pub name: String,
    /// Version id of the value read.
    pub version_id: Option<String>,
    /// `SecretString`; `None` when the secret holds only `SecretBinary`.
    pub value: Option<SecretValue>,
}

/// One replica of a secret, as `DescribeSecret` reports it
/// (`ReplicationStatus`), shown per secret in status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ReplicaStatus {
    /// Replica region.
    pub region: String,
    /// `InSync`, `InProgress` or `Failed` (AWS's words).
    pub status: String,
    /// AWS's `StatusMessage` (why a replica failed), if any.
    pub message: Option<String>,
}

/// What KMS says about a configured key (`check`'s probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKeyInfo {
    /// Key ARN (aliases resolved).
    pub arn: String,
    /// `Enabled` flag.
    pub enabled: bool,
    /// `KeyState`, e.g. `Enabled`, `Disabled`, `PendingDeletion`.
    pub state: String,
    /// `KeyUsage`, e.g. `ENCRYPT_DECRYPT` (`None` if not reported).
    pub usage: Option<String>,
    /// `KeySpec`, e.g. `SYMMETRIC_DEFAULT` (`None` if not reported).
    pub spec: Option<String>,
}

/// Result of reading one secret's value in a batch.
pub type ValueRead = (String, Result<RemoteValue, StoreError>);

/// Everything needed to create a secret in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSecret {
    /// Secret name.
    pub name: String,
    /// Initial `SecretString`.
    pub value: SecretValue,
    /// Tags to set at creation (ownership tags included).
    pub tags: BTreeMap<String, String>,
    /// KMS key; `None` = AWS managed key.
    pub kms_key_id: Option<String>,
    /// Secret description.
    pub description: Option<String>,
    /// Idempotency token (also the new version id).
    pub token: String,
    /// Regions to replicate to at creation.
    pub replica_regions: Vec<String>,
}

/// Outcome of a call that writes a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// Version id AWS assigned (equals the idempotency token).
    pub version_id: Option<String>,
}

/// Store failures, classified by what the caller should do about them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Rate limited after the store's own retries; try the pass again later.
    #[error("{op}: throttled by AWS: {message}")]
    Throttled {
        /// Operation name, e.g. `PutSecretValue`.
        op: &'static str,
        /// AWS's message (never contains a value).
        message: String,
    },
    /// Network error, timeout or 5xx after retries; worth retrying later.
    #[error("{op}: AWS unavailable: {message}")]
    Unavailable {
        /// Operation name.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The secret does not exist.
    #[error("{op}: secret not found")]
    NotFound {
        /// Operation name.
        op: &'static str,
    },
    /// A secret with that name already exists (possibly pending deletion).
    #[error("{op}: secret already exists: {message}")]
    AlreadyExists {
        /// Operation name.
        op: &'static str,
        /// AWS's message.
        message: String,
    },
    /// Credentials lack a permission (IAM or KMS).
    #[error("{op}: access denied: {message}")]
    AccessDenied {
        /// Operation name.
        op: &'static str,
        /// AWS's message.
        message: String,
    },
    /// AWS rejected the request itself (limits, state such as pending deletion).
    #[error("{op}: rejected by AWS: {message}")]
    Rejected {
        /// Operation name.
        op: &'static str,
        /// AWS's message.
        message: String,
    },
    /// Credentials or client configuration could not be set up.
    #[error("AWS configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the same call may succeed later without any change on our side.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. })
    }

    /// An uncapped listing stops only when it never ends (a broken page
    /// token): an outage, never an empty listing.
    pub fn unfinished_listing() -> Self {
        Self::Unavailable {
            op: "ListSecrets",
            message: "the listing did not end".into(),
        }
    }

    /// AWS refused the call for its rate (quota), not for an outage.
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }

    /// A short class name for metrics labels (bounded set, no message).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::AccessDenied { .. } => "access_denied",
            Self::Rejected { .. } => "rejected",
            Self::Config(_) => "config",
        }
    }
}

/// Which tag value narrows an owned listing server-side. By the sync's
/// name suits a host with several syncs; by the agent's id suits a fleet
/// whose hosts share a sync name (by name, each host would page through
/// every host's secrets). The pass picks from what earlier listings cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerFilter {
    /// Tag value = the sync's name.
    Sync,
    /// Tag value = the agent's id.
    Agent,
}

/// An owned listing, and how many entries AWS sent for it (what the
/// server-side filter let through: the pages paid for).
#[derive(Debug, Clone, Default)]
pub struct Owned {
    /// The secrets that matched exactly.
    pub secrets: Vec<RemoteSecret>,
    /// Entries AWS returned before the exact match.
    pub scanned: usize,
}

/// A secrets backend. Implementations pace and retry on their own; errors
/// that come out are final for this attempt.
pub trait SecretStore: Send + Sync + 'static {
    /// Secrets tagged `secretsync:agent=<agent>` and
    /// `secretsync:sync=<sync>`, pending deletion included. `by` says
    /// which of the two tag values narrows the listing server-side (AWS's
    /// tag filters match by prefix and are not tied to one key, so the
    /// exact match is made here); [`Owned::scanned`] tells the caller what
    /// that choice cost (see [`OwnerFilter`]). `None` when the listing did
    /// not end within `max_pages` pages.
    fn list_owned(
        &self,
        agent: &str,
        sync: &str,
        by: OwnerFilter,
        max_pages: usize,
    ) -> impl Future<Output = Result<Option<Owned>, StoreError>> + Send;

    /// Secrets whose names are exactly in `names` (any owner), pending
    /// deletion included; used for names the sync does not own yet.
    fn lookup_names(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<RemoteSecret>, StoreError>> + Send;

    /// Secrets whose names start with `prefix` (any owner), pending
    /// deletion included; used to find adoptable secrets to import. The
    /// caller never passes an empty prefix (that would list the account).
    fn list_by_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<RemoteSecret>, StoreError>> + Send;

    /// Like [`Self::list_by_prefix`], but stops after `max_pages` pages:
    /// `None` when the listing did not end within them (the caller then
    /// looks names up one batch at a time). Used on a first sync, where one
    /// listing of the names' common prefix replaces a lookup per 10 names.
    fn list_by_prefix_capped(
        &self,
        prefix: &str,
        max_pages: usize,
    ) -> impl Future<Output = Result<Option<Vec<RemoteSecret>>, StoreError>> + Send;

    /// Current values of the given secrets (names or ARNs), batched.
    /// Per-secret failures are reported per entry; the outer error means the
    /// whole read failed.
    fn get_values(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ValueRead>, StoreError>> + Send;

    /// Creates a secret with value, tags, KMS key and description.
    fn create_secret(
        &self,
        req: &CreateSecret,
    ) -> impl Future<Output = Result<WriteResult, StoreError>> + Send;

    /// Writes a new current value, idempotent through `token`.
    fn put_value(
        &self,
        name: &str,
        value: &SecretValue,
        token: &str,
    ) -> impl Future<Output = Result<WriteResult, StoreError>> + Send;

    /// Sets (adds or overwrites) tags.
    fn tag(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes tags by key.
    fn untag(
        &self,
        name: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Changes KMS key and/or description without touching the value.
    fn update_metadata(
        &self,
        name: &str,
        kms_key_id: Option<&str>,
        description: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Schedules deletion; `recovery_window_days == 0` forces immediate deletion.
    /// Scheduling a secret that is already scheduled succeeds: the outcome
    /// the caller wants holds (AWS rejects the call; a late call of a killed
    /// agent, or another actor, may have scheduled it since it was read).
    fn delete_secret(
        &self,
        name: &str,
        recovery_window_days: u8,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Cancels a scheduled deletion.
    fn restore_secret(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One secret's metadata as a listing would show it (`DescribeSecret`);
    /// `None` if it does not exist. Event-driven passes use it to re-check
    /// the few secrets they will write instead of listing the whole sync.
    fn describe_secret(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RemoteSecret>, StoreError>> + Send;

    /// The secret's replicas and their status (`DescribeSecret`). Not part
    /// of the listings (AWS's `ListSecrets` does not report replication), so
    /// the engine asks only on the drift timer and for secrets whose
    /// replicas it does not track yet.
    fn describe_replicas(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<ReplicaStatus>, StoreError>> + Send;

    /// Adds replica regions to an existing secret (`ReplicateSecretToRegions`).
    fn replicate_to(
        &self,
        name: &str,
        regions: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes replica regions (`RemoveRegionsFromReplication`); the
    /// replicas in those regions are deleted by AWS.
    fn remove_replicas(
        &self,
        name: &str,
        regions: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Resolves a KMS key spelling (alias, alias ARN, key id or key ARN)
    /// to the key it names (`kms:DescribeKey`), so KMS keys compare by
    /// identity. Answers are cached per store (one `DescribeKey` per
    /// spelling and [`kms::RESOLVE_TTL`], transient failures not cached).
    /// `Ok(None)`: KMS will not say (`kms:DescribeKey` denied, or no KMS
    /// client): the caller falls back to comparing spellings.
    fn resolve_kms_key(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<KeyIdentity>, StoreError>> + Send;

    /// Read-only permission probe for `check` (one cheap listing call).
    fn probe(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest failed attempt this store is retrying on its own (calls
    /// that have not returned yet), so the engine can say why a pass takes
    /// long. `None` if the store does not retry internally.
    fn last_retry(&self) -> Option<RetryNote> {
        None
    }
}

/// A failed attempt that a store retries internally (throttling, 5xx, an
/// attempt timeout, a dropped connection). Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNote {
    /// When the attempt failed.
    pub at: std::time::Instant,
    /// Why, e.g. "an attempt timed out after 2s".
    pub message: String,
}

/// Connection settings for one destination; syncs with equal settings share
/// one store (one client, one pacing budget).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    /// AWS region.
    pub region: String,
    /// Named profile, or the default credential chain.
    pub profile: Option<String>,
    /// Role to assume.
    pub role_arn: Option<String>,
    /// External id for the assumed role.
    pub external_id: Option<String>,
    /// Endpoint override (emulators); `AWS_ENDPOINT_URL` is honoured too.
    pub endpoint_url: Option<String>,
    /// Client-side write pacing, calls per second.
    pub max_write_tps: u32,
    /// Client-side read pacing, calls per second.
    pub max_read_tps: u32,
    /// Timeout per attempt.
    pub call_timeout: Duration,
}

/// Builds stores for connections; the engine caches one per connection.
pub trait StoreFactory: Send + Sync + 'static {
    /// The store type.
    type Store: SecretStore;
    /// Creates a store for `conn`.
    fn connect(
        &self,
        conn: &Connection,
    ) -> impl std::future::Future<Output = Result<std::sync::Arc<Self::Store>, StoreError>> + Send;
}
