//! [`SecretStore`] backed by AWS Secrets Manager.
//!
//! This is the only module that names AWS SDK types: everything the engine
//! sees is a [`RemoteSecret`], [`RemoteValue`] or [`StoreError`], so the SDK
//! can be upgraded (or replaced by [`super::memory::MemoryStore`] in tests)
//! without touching the planner.
//!
//! # Reliability choices
//!
//! - **Timeouts.** Every attempt is bounded by `call_timeout`; the TCP connect
//!   by [`CONNECT_TIMEOUT`] (or `call_timeout` if shorter); the whole call,
//!   retries and backoff included, by [`operation_timeout`]. The SDK sets no
//!   operation timeout by default, and an agent must never hang on one call.
//! - **Retries.** SDK "standard" mode, [`MAX_ATTEMPTS`] attempts, exponential
//!   backoff from [`INITIAL_BACKOFF`] capped at [`MAX_BACKOFF`] with full
//!   jitter. It retries throttling errors, 5xx, timeouts and connection
//!   errors, and stops early when its retry quota (a client-wide bucket that
//!   each retry drains) runs dry, so an outage does not turn into a retry
//!   storm. Writes carry `ClientRequestToken`, so a retried write cannot make
//!   a second version. Whatever still fails is returned as a transient
//!   [`StoreError`] and the engine retries the pass later.
//! - **Pacing.** Two [`Pacer`]s per store, one for reads (`max_read_tps`) and
//!   one for writes (`max_write_tps`). A token is taken per *call* (per page
//!   for paged listings), before it is sent; SDK-internal retries of that call
//!   are not paced again (they are already spaced by backoff and limited by
//!   the retry quota; pacing inside an attempt would eat into its timeout).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::error::Error as StdError;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager as sm;
use sm::config::http::HttpResponse;
use sm::error::{ConnectorError, ProvideErrorMetadata, SdkError};
use sm::operation::RequestId;
use sm::types::{Filter, FilterNameStringType, ReplicaRegionType, SecretListEntry, Tag};

use super::pacing::Pacer;
use super::{
    BATCH_GET_MAX, Connection, CreateSecret, LIST_PAGE_MAX, NAME_FILTER_MAX, RemoteSecret,
    RemoteValue, SecretStore, StoreError, ValueRead, WriteResult,
};
use crate::naming::TAG_SYNC;
use crate::secret::SecretValue;

/// Attempts per call, first one included. The SDK default is 3; we allow 5
/// because the quota is shared with every other tool in the account, and a
/// short burst of throttling should not fail a pass. Beyond that the engine
/// retries the whole pass later, which is cheaper than holding a call open.
pub const MAX_ATTEMPTS: u32 = 5;
/// Backoff before the first retry (before jitter). Secrets Manager quotas
/// refill per second, so retrying much sooner than that mostly burns
/// attempts; 1 s is also the SDK's own default.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest single backoff (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// TCP/TLS connect timeout: long enough for two SYN retransmissions (1 s, 2 s),
/// short enough that a black-holed endpoint fails fast (the SDK's own default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3_100);
/// Session name used when assuming `role_arn`, so CloudTrail shows who acted.
pub const SESSION_NAME: &str = "secretsync";
/// `tracing` directives the binary should append to its filter whatever the
/// configured log level: at TRACE the SDK's orchestrator logs whole HTTP
/// requests and responses, bodies (secret values) included.
pub const SDK_LOG_DIRECTIVES: &[&str] = &[
    "aws_smithy_runtime=debug",
    "aws_smithy_http_client=debug",
    "aws_sigv4=debug",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
];

/// A paged listing that returns more pages than this is treated as a
/// service fault rather than followed forever.
const MAX_PAGES: usize = 100_000;
/// Staging label of the current version.
const AWSCURRENT: &str = "AWSCURRENT";

const OP_LIST: &str = "ListSecrets";
const OP_BATCH_GET: &str = "BatchGetSecretValue";
const OP_CREATE: &str = "CreateSecret";
const OP_PUT: &str = "PutSecretValue";
const OP_TAG: &str = "TagResource";
const OP_UNTAG: &str = "UntagResource";
const OP_UPDATE: &str = "UpdateSecret";
const OP_DELETE: &str = "DeleteSecret";
const OP_RESTORE: &str = "RestoreSecret";

/// Secrets Manager in one region with one set of credentials, paced and
/// retried. Cheap to share behind an `Arc`: the SDK client is a handle and
/// the pacers are lock-light.
#[derive(Debug)]
pub struct AwsStore {
    client: sm::Client,
    reads: Pacer,
    writes: Pacer,
}

/// Retry policy for every call; see the module docs for the reasoning.
fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// Upper bound of one call, retries included: every attempt may take the
/// full `call_timeout` and every backoff its full (pre-jitter) length.
pub fn operation_timeout(call_timeout: Duration) -> Duration {
    let backoff: Duration = (0..MAX_ATTEMPTS.saturating_sub(1))
        .map(|retry| {
            INITIAL_BACKOFF
                .checked_mul(1u32 << retry.min(16))
                .unwrap_or(MAX_BACKOFF)
                .min(MAX_BACKOFF)
        })
        .sum();
    call_timeout.saturating_mul(MAX_ATTEMPTS) + backoff
}

/// Timeouts for every call; see the module docs.
fn timeout_config(call_timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(call_timeout))
        .operation_attempt_timeout(call_timeout)
        .operation_timeout(operation_timeout(call_timeout))
        .build()
}

impl AwsStore {
    /// Builds a client for `conn` without making any network call (the agent
    /// must start while AWS is unreachable; credential problems surface on the
    /// first call, or from [`SecretStore::probe`] in `check`).
    ///
    /// Region and `profile` go to the aws-config loader, which also honours
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` (and
    /// `endpoint_url` in the profile); an explicit `endpoint_url` overrides
    /// them for Secrets Manager only. With `role_arn` the loaded credentials
    /// are used to assume that role (session name [`SESSION_NAME`], optional
    /// external id) through STS in the same region, with the same timeouts
    /// and retries; assumed credentials are cached and refreshed before they
    /// expire.
    pub async fn connect(conn: &Connection) -> Result<AwsStore, StoreError> {
        if conn.region.trim().is_empty() {
            return Err(StoreError::Config("AWS region is empty".into()));
        }
        if conn.call_timeout.is_zero() {
            return Err(StoreError::Config("call_timeout must be above zero".into()));
        }
        if let Some(url) = &conn.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(StoreError::Config(format!(
                "endpoint_url '{url}' must start with http:// or https://"
            )));
        }
        let region = Region::new(conn.region.clone());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .retry_config(retry_config())
            .timeout_config(timeout_config(conn.call_timeout));
        if let Some(profile) = &conn.profile {
            loader = loader.profile_name(profile);
        }
        let sdk_config = loader.load().await;
        let mut builder = sm::config::Builder::from(&sdk_config);
        // Only Secrets Manager goes to `endpoint_url` (an emulator or a VPC
        // endpoint for secretsmanager); STS keeps its own endpoint, which the
        // environment can still override (AWS_ENDPOINT_URL[_STS]).
        if let Some(url) = &conn.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        if let Some(role) = &conn.role_arn {
            let mut assume = AssumeRoleProvider::builder(role)
                .session_name(SESSION_NAME)
                .region(region)
                .configure(&sdk_config);
            if let Some(external_id) = &conn.external_id {
                assume = assume.external_id(external_id);
            }
            builder = builder.credentials_provider(assume.build().await);
        }
        let client = sm::Client::from_conf(builder.build());
        Ok(Self::from_client(
            client,
            conn.max_read_tps,
            conn.max_write_tps,
        ))
    }

    /// Wraps an already configured client (tests use a mocked one). The
    /// client's own retry/timeout settings are used as they are; a rate of 0
    /// disables that pacer.
    #[doc(hidden)]
    pub fn from_client(client: sm::Client, max_read_tps: u32, max_write_tps: u32) -> Self {
        Self {
            client,
            reads: Pacer::for_rate(max_read_tps),
            writes: Pacer::for_rate(max_write_tps),
        }
    }

    /// All `ListSecrets` pages for `filters`, pending deletion included.
    async fn list_all(&self, filters: Vec<Filter>) -> Result<Vec<SecretListEntry>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        for _ in 0..MAX_PAGES {
            self.reads.acquire().await;
            let page = self
                .client
                .list_secrets()
                .include_planned_deletion(true)
                .max_results(LIST_PAGE_MAX)
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify(OP_LIST, &e, None))?;
            out.extend(page.secret_list.unwrap_or_default());
            match page.next_token {
                Some(next) if !next.is_empty() => {
                    if !seen_tokens.insert(next.clone()) {
                        return Err(StoreError::Unavailable {
                            op: OP_LIST,
                            message: "AWS returned the same NextToken twice".into(),
                        });
                    }
                    token = Some(next);
                }
                _ => return Ok(out),
            }
        }
        Err(StoreError::Unavailable {
            op: OP_LIST,
            message: format!("listing did not end after {MAX_PAGES} pages"),
        })
    }

    /// One `BatchGetSecretValue` round (≤ [`BATCH_GET_MAX`] ids), every id
    /// answered exactly once.
    async fn batch_get(&self, ids: &[String]) -> Result<Vec<ValueRead>, StoreError> {
        let mut answers: BTreeMap<String, Result<RemoteValue, StoreError>> = BTreeMap::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        for _ in 0..MAX_PAGES {
            self.reads.acquire().await;
            let resp = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify(OP_BATCH_GET, &e, None))?;
            let request_id = resp.request_id().map(str::to_owned);
            for entry in resp.secret_values() {
                let Some(id) = match_id(ids, entry.name(), entry.arn()) else {
                    continue;
                };
                let value = RemoteValue {
                    name: entry.name().unwrap_or(id).to_owned(),
                    version_id: entry.version_id().map(str::to_owned),
                    value: entry.secret_string().map(SecretValue::new),
                };
                answers.entry(id.to_owned()).or_insert(Ok(value));
            }
            for err in resp.errors() {
                let Some(id) = err.secret_id().and_then(|s| ids.iter().find(|i| *i == s)) else {
                    continue;
                };
                let mapped = from_code(
                    OP_BATCH_GET,
                    err.error_code(),
                    err.message(),
                    None,
                    request_id.as_deref(),
                    None,
                );
                answers.entry(id.clone()).or_insert(Err(mapped));
            }
            match resp.next_token {
                Some(next) if !next.is_empty() && seen_tokens.insert(next.clone()) => {
                    token = Some(next);
                }
                _ => break,
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let answer = answers.remove(id).unwrap_or_else(|| {
                    Err(StoreError::Unavailable {
                        op: OP_BATCH_GET,
                        message: "the response did not mention this secret".into(),
                    })
                });
                (id.clone(), answer)
            })
            .collect())
    }
}

/// Which requested id a returned value answers: by name, by full ARN, or by
/// partial ARN (ARN without the 6-character random suffix).
fn match_id<'a>(ids: &'a [String], name: Option<&str>, arn: Option<&str>) -> Option<&'a str> {
    ids.iter()
        .find(|id| Some(id.as_str()) == name || Some(id.as_str()) == arn)
        .or_else(|| {
            let arn = arn?;
            ids.iter()
                .find(|id| id.starts_with("arn:") && arn.starts_with(id.as_str()))
        })
        .map(String::as_str)
}

/// Converts a listing entry; entries without a name are skipped.
fn to_remote(entry: SecretListEntry) -> Option<RemoteSecret> {
    let current_version = entry.secret_versions_to_stages().and_then(|map| {
        map.iter()
            .find(|(_, stages)| stages.iter().any(|s| s == AWSCURRENT))
            .map(|(id, _)| id.clone())
    });
    let tags = entry
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect();
    Some(RemoteSecret {
        name: entry.name?,
        arn: entry.arn.unwrap_or_default(),
        tags,
        kms_key_id: entry.kms_key_id,
        description: entry.description,
        pending_deletion: entry.deleted_date.is_some(),
        current_version,
    })
}

/// One `ListSecrets` filter.
fn filter(key: FilterNameStringType, values: Vec<String>) -> Filter {
    Filter::builder().key(key).set_values(Some(values)).build()
}

/// Our tag map in the SDK's shape.
fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Logs one finished call; never a value.
fn log_call<T>(op: &'static str, secret: &str, result: &Result<T, StoreError>) {
    match result {
        Ok(_) => tracing::debug!(op, secret, "AWS call ok"),
        Err(err) => tracing::debug!(op, secret, error = %err, "AWS call failed"),
    }
}

impl SecretStore for AwsStore {
    async fn list_by_sync(&self, sync: &str) -> Result<Vec<RemoteSecret>, StoreError> {
        // Server-side both filters are prefix matches and are not tied to
        // the same tag, so the exact match is checked here.
        let filters = vec![
            filter(FilterNameStringType::TagKey, vec![TAG_SYNC.to_owned()]),
            filter(FilterNameStringType::TagValue, vec![sync.to_owned()]),
        ];
        let result = self.list_all(filters).await.map(|entries| {
            entries
                .into_iter()
                .filter_map(to_remote)
                .filter(|s| s.tags.get(TAG_SYNC).map(String::as_str) == Some(sync))
                .collect::<Vec<_>>()
        });
        log_call(OP_LIST, sync, &result);
        result
    }

    async fn lookup_names(&self, names: &[String]) -> Result<Vec<RemoteSecret>, StoreError> {
        let wanted: BTreeSet<&String> = names.iter().collect();
        let wanted_list: Vec<&String> = wanted.iter().copied().collect();
        let mut found: BTreeMap<String, RemoteSecret> = BTreeMap::new();
        for chunk in wanted_list.chunks(NAME_FILTER_MAX) {
            let values = chunk.iter().map(|n| (*n).clone()).collect();
            let entries = self
                .list_all(vec![filter(FilterNameStringType::Name, values)])
                .await;
            log_call(OP_LIST, &format!("{} name(s)", chunk.len()), &entries);
            for secret in entries?.into_iter().filter_map(to_remote) {
                if wanted.contains(&secret.name) {
                    found.entry(secret.name.clone()).or_insert(secret);
                }
            }
        }
        Ok(found.into_values().collect())
    }

    async fn list_by_prefix(&self, prefix: &str) -> Result<Vec<RemoteSecret>, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Config(
                "refusing to list every secret in the account (empty prefix)".into(),
            ));
        }
        let entries = self
            .list_all(vec![filter(
                FilterNameStringType::Name,
                vec![prefix.to_string()],
            )])
            .await;
        log_call(OP_LIST, "name prefix", &entries);
        Ok(entries?
            .into_iter()
            .filter_map(to_remote)
            .filter(|s| s.name.starts_with(prefix))
            .collect())
    }

    async fn get_values(&self, ids: &[String]) -> Result<Vec<ValueRead>, StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<String> = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let result = self.batch_get(chunk).await;
            log_call(OP_BATCH_GET, &format!("{} id(s)", chunk.len()), &result);
            out.extend(result?);
        }
        Ok(out)
    }

    async fn create_secret(&self, req: &CreateSecret) -> Result<WriteResult, StoreError> {
        self.writes.acquire().await;
        let replicas = (!req.replica_regions.is_empty()).then(|| {
            req.replica_regions
                .iter()
                .map(|r| ReplicaRegionType::builder().region(r).build())
                .collect()
        });
        let result = self
            .client
            .create_secret()
            .name(&req.name)
            .client_request_token(&req.token)
            .secret_string(req.value.expose())
            .set_tags(Some(sdk_tags(&req.tags)).filter(|t| !t.is_empty()))
            .set_kms_key_id(req.kms_key_id.clone())
            .set_description(req.description.clone())
            .set_add_replica_regions(replicas)
            .send()
            .await
            .map(|out| WriteResult {
                version_id: out.version_id,
            })
            .map_err(|e| classify(OP_CREATE, &e, Some(&req.value)));
        log_call(OP_CREATE, &req.name, &result);
        result
    }

    async fn put_value(
        &self,
        name: &str,
        value: &SecretValue,
        token: &str,
    ) -> Result<WriteResult, StoreError> {
        self.writes.acquire().await;
        let result = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.expose())
            .client_request_token(token)
            .send()
            .await
            .map(|out| WriteResult {
                version_id: out.version_id,
            })
            .map_err(|e| match classify(OP_PUT, &e, Some(value)) {
                // AWS answers a reused token with a different value with
                // ResourceExistsException. The secret existing is not the
                // problem: the request is (a token must mean one value).
                StoreError::AlreadyExists { op, message } => StoreError::Rejected { op, message },
                other => other,
            });
        log_call(OP_PUT, name, &result);
        result
    }

    async fn tag(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        self.writes.acquire().await;
        let result = self
            .client
            .tag_resource()
            .secret_id(name)
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_TAG, &e, None));
        log_call(OP_TAG, name, &result);
        result
    }

    async fn untag(&self, name: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.writes.acquire().await;
        let result = self
            .client
            .untag_resource()
            .secret_id(name)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_UNTAG, &e, None));
        log_call(OP_UNTAG, name, &result);
        result
    }

    async fn update_metadata(
        &self,
        name: &str,
        kms_key_id: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), StoreError> {
        if kms_key_id.is_none() && description.is_none() {
            return Ok(());
        }
        self.writes.acquire().await;
        let result = self
            .client
            .update_secret()
            .secret_id(name)
            .set_kms_key_id(kms_key_id.map(str::to_owned))
            .set_description(description.map(str::to_owned))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_UPDATE, &e, None));
        log_call(OP_UPDATE, name, &result);
        result
    }

    async fn delete_secret(&self, name: &str, recovery_window_days: u8) -> Result<(), StoreError> {
        self.writes.acquire().await;
        let mut call = self.client.delete_secret().secret_id(name);
        call = if recovery_window_days == 0 {
            call.force_delete_without_recovery(true)
        } else {
            call.recovery_window_in_days(i64::from(recovery_window_days))
        };
        let result = call
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_DELETE, &e, None));
        log_call(OP_DELETE, name, &result);
        result
    }

    async fn restore_secret(&self, name: &str) -> Result<(), StoreError> {
        self.writes.acquire().await;
        let result = self
            .client
            .restore_secret()
            .secret_id(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_RESTORE, &e, None));
        log_call(OP_RESTORE, name, &result);
        result
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.reads.acquire().await;
        let result = self
            .client
            .list_secrets()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_LIST, &e, None));
        log_call(OP_LIST, "(probe)", &result);
        result
    }
}

/// Error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
];
/// Error codes for a service-side fault worth retrying later.
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalServiceError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];
/// IAM or KMS refused: the operator must grant something.
const ACCESS_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "EncryptionFailure",
    "DecryptionFailure",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSInvalidKeyUsageException",
    "NotAuthorized",
];
/// The credentials themselves are wrong or expired.
const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
];
/// The request itself is wrong for AWS (limits, state, parameters).
const REJECTED_CODES: &[&str] = &[
    "InvalidRequestException",
    "InvalidParameterException",
    "LimitExceededException",
    "MalformedPolicyDocumentException",
    "ValidationException",
    "PreconditionNotMetException",
    "InvalidNextTokenException",
    "PublicPolicyException",
    "SerializationException",
];

/// Text for an AWS error: code, message and request id. If AWS ever echoed
/// the value we sent, the message is withheld rather than logged.
fn describe(
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<&str>,
    sent: Option<&SecretValue>,
) -> String {
    let mut text = code.unwrap_or("UnknownError").to_owned();
    if let Some(message) = message.filter(|m| !m.is_empty()) {
        let leaks = sent.is_some_and(|v| !v.is_empty() && message.contains(v.expose()));
        text.push_str(": ");
        text.push_str(if leaks {
            "(message withheld: it contained the secret value)"
        } else {
            message
        });
    }
    if let Some(id) = request_id {
        text.push_str(" (request id ");
        text.push_str(id);
        text.push(')');
    }
    text
}

/// Maps an AWS error code (plus HTTP status when there is one) to a
/// [`StoreError`].
fn from_code(
    op: &'static str,
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    request_id: Option<&str>,
    sent: Option<&SecretValue>,
) -> StoreError {
    let message = describe(code, message, request_id, sent);
    let code = code.unwrap_or("");
    let is = |list: &[&str]| list.contains(&code);
    if is(THROTTLING_CODES) {
        StoreError::Throttled { op, message }
    } else if is(UNAVAILABLE_CODES) {
        StoreError::Unavailable { op, message }
    } else if code == "ResourceNotFoundException" {
        StoreError::NotFound { op }
    } else if code == "ResourceExistsException" {
        StoreError::AlreadyExists { op, message }
    } else if is(ACCESS_CODES) {
        StoreError::AccessDenied { op, message }
    } else if is(CREDENTIAL_CODES) {
        StoreError::Config(format!("{op}: AWS rejected the credentials: {message}"))
    } else if is(REJECTED_CODES) {
        StoreError::Rejected { op, message }
    } else {
        match status {
            Some(429) => StoreError::Throttled { op, message },
            Some(s) if s >= 500 => StoreError::Unavailable { op, message },
            Some(401 | 403) => StoreError::AccessDenied { op, message },
            _ => StoreError::Rejected { op, message },
        }
    }
}

/// Classifies an SDK error. `sent` is the value the call carried, so a
/// message that echoes it can be withheld.
fn classify<E>(
    op: &'static str,
    err: &SdkError<E, HttpResponse>,
    sent: Option<&SecretValue>,
) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let request_id = err.request_id();
    match err {
        SdkError::ServiceError(ctx) => from_code(
            op,
            ctx.err().code(),
            ctx.err().message(),
            Some(ctx.raw().status().as_u16()),
            request_id,
            sent,
        ),
        SdkError::TimeoutError(_) => StoreError::Unavailable {
            op,
            message: chain_text(err),
        },
        SdkError::DispatchFailure(failure) => {
            if let Some(cred) = find_in_chain::<CredentialsError>(err) {
                return credentials_error(op, cred);
            }
            if failure.is_user() {
                StoreError::Config(format!("{op}: {}", chain_text(err)))
            } else {
                StoreError::Unavailable {
                    op,
                    message: chain_text(err),
                }
            }
        }
        SdkError::ConstructionFailure(_) => StoreError::Config(format!(
            "{op}: could not build the request: {}",
            chain_text(err)
        )),
        SdkError::ResponseError(ctx) => StoreError::Unavailable {
            op,
            message: format!(
                "unreadable response (HTTP {}){}",
                ctx.raw().status().as_u16(),
                request_id
                    .map(|id| format!(" (request id {id})"))
                    .unwrap_or_default()
            ),
        },
        _ => StoreError::Unavailable {
            op,
            message: chain_text(err),
        },
    }
}

/// A credentials provider failed: configuration (no credentials, bad
/// profile, role refused) unless the failure was the network or a timeout.
fn credentials_error(op: &'static str, cred: &CredentialsError) -> StoreError {
    let transient = match cred {
        CredentialsError::ProviderTimedOut(_) => true,
        CredentialsError::ProviderError(_) | CredentialsError::Unhandled(_) => {
            chain_is_network(cred)
        }
        _ => false,
    };
    let text = chain_text(cred);
    if transient {
        StoreError::Unavailable {
            op,
            message: format!("loading AWS credentials failed: {text}"),
        }
    } else {
        StoreError::Config(format!("{op}: could not load AWS credentials: {text}"))
    }
}

/// An error and its sources as one line, `outer: inner: root`, without the
/// `Debug` dump the SDK's own formatter appends. Parts that merely repeat
/// the text before them are skipped.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let part = e.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = e.source();
    }
    text
}

/// Whether an error chain bottoms out in I/O or a timeout.
fn chain_is_network(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<std::io::Error>() {
            return true;
        }
        if let Some(c) = e.downcast_ref::<ConnectorError>()
            && (c.is_io() || c.is_timeout())
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The first error of type `T` in `err`'s source chain (itself included).
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::credential_fn::provide_credentials_fn;
    use aws_smithy_mocks::{
        MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
    };
    use sm::operation::batch_get_secret_value::BatchGetSecretValueOutput;
    use sm::operation::create_secret::CreateSecretOutput;
    use sm::operation::delete_secret::DeleteSecretOutput;
    use sm::operation::list_secrets::ListSecretsOutput;
    use sm::operation::put_secret_value::PutSecretValueOutput;
    use sm::primitives::DateTime;
    use sm::types::{ApiErrorType, SecretValueEntry};

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";

    fn base_config() -> sm::config::Builder {
        sm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(sm::config::Credentials::new(
                "AKIDTEST", "SECRET", None, None, "test",
            ))
            .retry_config(retry_config())
            .timeout_config(timeout_config(Duration::from_secs(10)))
    }

    /// A store whose client answers from `rules` (first matching rule wins).
    fn mocked(rules: &[&Rule]) -> AwsStore {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in rules {
            interceptor = interceptor.with_rule(rule);
        }
        let conf = base_config()
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        AwsStore::from_client(sm::Client::from_conf(conf), 0, 0)
    }

    /// An AWS JSON-1.1 error response as Secrets Manager sends it.
    fn aws_error(status: u16, code: &str, message: &str) -> HttpResponse {
        let body = format!(r#"{{"__type":"{code}","Message":"{message}"}}"#);
        let mut resp = HttpResponse::new(status.try_into().expect("status"), body.into());
        resp.headers_mut().insert("x-amzn-RequestId", "req-1234");
        resp.headers_mut()
            .insert("content-type", "application/x-amz-json-1.1");
        resp
    }

    fn put_rule(status: u16, code: &'static str, message: &'static str) -> Rule {
        mock!(sm::Client::put_secret_value)
            .then_http_response(move || aws_error(status, code, message))
    }

    fn token() -> String {
        "0123456789abcdef0123456789abcdef".to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn error_classification() {
        type Check = fn(&StoreError) -> bool;
        let cases: &[(u16, &str, Check, usize)] = &[
            (
                400,
                "ThrottlingException",
                |e| matches!(e, StoreError::Throttled { .. }),
                5,
            ),
            (
                429,
                "TooManyRequestsException",
                |e| matches!(e, StoreError::Throttled { .. }),
                5,
            ),
            (
                500,
                "InternalServiceError",
                |e| matches!(e, StoreError::Unavailable { .. }),
                5,
            ),
            (
                503,
                "ServiceUnavailable",
                |e| matches!(e, StoreError::Unavailable { .. }),
                5,
            ),
            (
                400,
                "ResourceNotFoundException",
                |e| matches!(e, StoreError::NotFound { .. }),
                1,
            ),
            (
                400,
                "ResourceExistsException",
                |e| matches!(e, StoreError::AlreadyExists { .. }),
                1,
            ),
            (
                400,
                "AccessDeniedException",
                |e| matches!(e, StoreError::AccessDenied { .. }),
                1,
            ),
            (
                400,
                "EncryptionFailure",
                |e| matches!(e, StoreError::AccessDenied { .. }),
                1,
            ),
            (
                400,
                "DecryptionFailure",
                |e| matches!(e, StoreError::AccessDenied { .. }),
                1,
            ),
            (
                400,
                "KMSAccessDeniedException",
                |e| matches!(e, StoreError::AccessDenied { .. }),
                1,
            ),
            (
                400,
                "InvalidRequestException",
                |e| matches!(e, StoreError::Rejected { .. }),
                1,
            ),
            (
                400,
                "InvalidParameterException",
                |e| matches!(e, StoreError::Rejected { .. }),
                1,
            ),
            (
                400,
                "ValidationException",
                |e| matches!(e, StoreError::Rejected { .. }),
                1,
            ),
            (
                400,
                "MalformedPolicyDocumentException",
                |e| matches!(e, StoreError::Rejected { .. }),
                1,
            ),
            // The SDK's standard classifier treats this code as throttling and
            // retries it; the final answer is still "rejected".
            (
                400,
                "LimitExceededException",
                |e| matches!(e, StoreError::Rejected { .. }),
                5,
            ),
            (
                400,
                "UnrecognizedClientException",
                |e| matches!(e, StoreError::Config(_)),
                1,
            ),
            (
                400,
                "ExpiredTokenException",
                |e| matches!(e, StoreError::Config(_)),
                1,
            ),
            (
                403,
                "SomethingNew",
                |e| matches!(e, StoreError::AccessDenied { .. }),
                1,
            ),
            (
                400,
                "SomethingNew",
                |e| matches!(e, StoreError::Rejected { .. }),
                1,
            ),
            (
                502,
                "SomethingNew",
                |e| matches!(e, StoreError::Unavailable { .. }),
                5,
            ),
        ];
        for (status, code, check, attempts) in cases {
            let (status, code) = (*status, *code);
            let rule = mock!(sm::Client::create_secret)
                .then_http_response(move || aws_error(status, code, "details from AWS"));
            let store = mocked(&[&rule]);
            let req = CreateSecret {
                name: "prod/DB".into(),
                value: SecretValue::new("hunter2"),
                tags: BTreeMap::new(),
                kms_key_id: None,
                description: None,
                token: token(),
                replica_regions: vec![],
            };
            let err = store.create_secret(&req).await.expect_err("error response");
            assert!(check(&err), "{code}: {err:?}");
            assert_eq!(rule.num_calls(), *attempts, "{code}: attempts");
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            if !matches!(err, StoreError::NotFound { .. }) {
                assert!(text.contains(code), "{text}");
                assert!(text.contains("details from AWS"), "{text}");
                assert!(text.contains("req-1234"), "request id: {text}");
            }
            if let StoreError::Throttled { op, .. } | StoreError::Rejected { op, .. } = &err {
                assert_eq!(*op, "CreateSecret");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_with_backoff_then_succeeds() {
        let rule = mock!(sm::Client::put_secret_value)
            .sequence()
            .http_response(|| aws_error(400, "ThrottlingException", "Rate exceeded"))
            .times(2)
            .http_response(|| aws_error(503, "ServiceUnavailable", "try later"))
            .output(|| PutSecretValueOutput::builder().version_id(token()).build())
            .build();
        let store = mocked(&[&rule]);
        let start = tokio::time::Instant::now();
        let out = store
            .put_value("a", &SecretValue::new("v"), &token())
            .await
            .expect("eventually ok");
        assert_eq!(out.version_id, Some(token()));
        assert_eq!(rule.num_calls(), 4);
        // Three jittered backoffs of at most 1 + 2 + 4 s.
        assert!(tokio::time::Instant::now() - start <= Duration::from_secs(7));
    }

    #[tokio::test]
    async fn put_on_pending_deletion_is_rejected_like_aws() {
        // moto accepts this call; AWS answers InvalidRequestException.
        let rule = put_rule(
            400,
            "InvalidRequestException",
            "You can't perform this operation on the secret because it was marked for deletion.",
        );
        let store = mocked(&[&rule]);
        let err = store
            .put_value("a", &SecretValue::new("v"), &token())
            .await
            .expect_err("rejected");
        match err {
            StoreError::Rejected { op, message } => {
                assert_eq!(op, "PutSecretValue");
                assert!(
                    message.starts_with("InvalidRequestException: "),
                    "{message}"
                );
                assert!(message.contains("marked for deletion"), "{message}");
                assert!(message.ends_with("(request id req-1234)"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rule.num_calls(), 1, "not retried");
    }

    #[tokio::test]
    async fn reused_token_with_other_value_is_rejected() {
        let rule = put_rule(
            400,
            "ResourceExistsException",
            "You can't use ClientRequestToken 0123 because that value is already in use",
        );
        let store = mocked(&[&rule]);
        let err = store
            .put_value("a", &SecretValue::new("new-value-123"), &token())
            .await
            .expect_err("rejected");
        assert!(
            matches!(&err, StoreError::Rejected { op: "PutSecretValue", message } if message.contains("ClientRequestToken")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn message_echoing_the_value_is_withheld() {
        let rule = put_rule(
            400,
            "ValidationException",
            "Value 'hunter2-long' at 'secretString' failed",
        );
        let store = mocked(&[&rule]);
        let err = store
            .put_value("a", &SecretValue::new("hunter2-long"), &token())
            .await
            .expect_err("rejected");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("withheld"), "{text}");
    }

    fn entry(name: &str, sync: &str) -> SecretListEntry {
        SecretListEntry::builder()
            .name(name)
            .arn(format!("{ARN}{name}-AbCdEf"))
            .tags(Tag::builder().key(TAG_SYNC).value(sync).build())
            .tags(Tag::builder().key("team").value("payments").build())
            .secret_versions_to_stages("v-old", vec!["AWSPREVIOUS".to_owned()])
            .secret_versions_to_stages("v-cur", vec!["AWSCURRENT".to_owned()])
            .build()
    }

    #[tokio::test]
    async fn list_by_sync_follows_pages_and_filters_exactly() {
        let is_sync_filter = |req: &sm::operation::list_secrets::ListSecretsInput| {
            let f = req.filters();
            req.include_planned_deletion() == Some(true)
                && req.max_results() == Some(100)
                && f.len() == 2
                && f[0].key() == Some(&FilterNameStringType::TagKey)
                && f[0].values() == [TAG_SYNC]
                && f[1].key() == Some(&FilterNameStringType::TagValue)
                && f[1].values() == ["app"]
        };
        let page1 = mock!(sm::Client::list_secrets)
            .match_requests(move |req| is_sync_filter(req) && req.next_token().is_none())
            .then_output(|| {
                ListSecretsOutput::builder()
                    .secret_list(entry("app/A", "app"))
                    .secret_list(entry("prod/B", "app-prod")) // prefix match server-side
                    .next_token("page-2")
                    .build()
            });
        let page2 = mock!(sm::Client::list_secrets)
            .match_requests(move |req| is_sync_filter(req) && req.next_token() == Some("page-2"))
            .then_output(|| {
                let mut pending = entry("app/C", "app");
                pending.deleted_date = Some(DateTime::from_secs(1_700_000_000));
                pending.kms_key_id = Some("alias/app".into());
                pending.description = Some("managed".into());
                ListSecretsOutput::builder().secret_list(pending).build()
            });
        let store = mocked(&[&page1, &page2]);
        let got = store.list_by_sync("app").await.expect("list");
        assert_eq!((page1.num_calls(), page2.num_calls()), (1, 1));
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["app/A", "app/C"]);
        assert_eq!(got[0].current_version.as_deref(), Some("v-cur"));
        assert_eq!(got[0].tags["team"], "payments");
        assert_eq!(got[0].arn, format!("{ARN}app/A-AbCdEf"));
        assert!(!got[0].pending_deletion);
        assert!(got[1].pending_deletion);
        assert_eq!(got[1].kms_key_id.as_deref(), Some("alias/app"));
        assert_eq!(got[1].description.as_deref(), Some("managed"));
    }

    #[tokio::test]
    async fn repeated_next_token_is_an_error_not_a_loop() {
        let rule = mock!(sm::Client::list_secrets)
            .then_output(|| ListSecretsOutput::builder().next_token("same").build());
        let store = mocked(&[&rule]);
        let err = store.list_by_sync("app").await.expect_err("loop");
        assert!(
            matches!(
                err,
                StoreError::Unavailable {
                    op: "ListSecrets",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn lookup_names_chunks_by_ten_and_keeps_exact_matches() {
        let rule = mock!(sm::Client::list_secrets).then_compute_output(|req| {
            let f = req.filters();
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].key(), Some(&FilterNameStringType::Name));
            assert!(f[0].values().len() <= 10);
            assert_eq!(req.include_planned_deletion(), Some(true));
            // The server matches by prefix: answer with each name and a longer one.
            let mut out = ListSecretsOutput::builder();
            for v in f[0].values() {
                out = out
                    .secret_list(entry(v, "x"))
                    .secret_list(entry(&format!("{v}/longer"), "x"));
            }
            out.build()
        });
        let store = mocked(&[&rule]);
        let mut names: Vec<String> = (0..12).map(|i| format!("n{i:02}")).collect();
        names.push("n00".into());
        let got = store.lookup_names(&names).await.expect("lookup");
        assert_eq!(rule.num_calls(), 2);
        assert_eq!(got.len(), 12);
        assert!(got.iter().all(|s| !s.name.ends_with("/longer")));
    }

    #[tokio::test]
    async fn batch_get_maps_per_secret_errors() {
        let rule = mock!(sm::Client::batch_get_secret_value)
            .match_requests(|req| req.secret_id_list().len() <= 20 && req.filters().is_empty())
            .then_output(|| {
                let value = |name: &str| {
                    SecretValueEntry::builder()
                        .name(name)
                        .arn(format!("{ARN}{name}-AbCdEf"))
                        .version_id(format!("ver-{name}"))
                        .secret_string(format!("value-of-{name}"))
                        .version_stages("AWSCURRENT")
                        .build()
                };
                let error = |id: &str, code: &str| {
                    ApiErrorType::builder()
                        .secret_id(id)
                        .error_code(code)
                        .message(format!("{code} for {id}"))
                        .build()
                };
                let binary = SecretValueEntry::builder()
                    .name("bin")
                    .arn(format!("{ARN}bin-AbCdEf"))
                    .version_id("ver-bin")
                    .secret_binary(sm::primitives::Blob::new(vec![1, 2, 3]))
                    .build();
                BatchGetSecretValueOutput::builder()
                    .secret_values(value("ok"))
                    .secret_values(value("by-arn"))
                    .secret_values(binary)
                    .errors(error("gone", "ResourceNotFoundException"))
                    .errors(error("pending", "InvalidRequestException"))
                    .errors(error("kms", "DecryptionFailure"))
                    .errors(error("iam", "AccessDeniedException"))
                    .build()
            });
        let store = mocked(&[&rule]);
        let by_arn = format!("{ARN}by-arn-AbCdEf");
        let ids: Vec<String> = [
            "ok",
            by_arn.as_str(),
            "bin",
            "gone",
            "pending",
            "kms",
            "iam",
            "silent",
            "ok",
        ]
        .map(String::from)
        .to_vec();
        let reads = store.get_values(&ids).await.expect("batch");
        assert_eq!(rule.num_calls(), 1);
        let map: BTreeMap<String, Result<RemoteValue, StoreError>> = reads.into_iter().collect();
        assert_eq!(map.len(), 8, "every unique id exactly once");
        let ok = map["ok"].as_ref().expect("ok");
        assert_eq!(
            ok.value.as_ref().map(SecretValue::expose),
            Some("value-of-ok")
        );
        assert_eq!(ok.version_id.as_deref(), Some("ver-ok"));
        assert_eq!(map[&by_arn].as_ref().expect("arn").name, "by-arn");
        assert_eq!(map["bin"].as_ref().expect("bin").value, None);
        assert_eq!(
            map["gone"],
            Err(StoreError::NotFound {
                op: "BatchGetSecretValue"
            })
        );
        assert!(
            matches!(&map["pending"], Err(StoreError::Rejected { message, .. }) if message.contains("InvalidRequestException"))
        );
        assert!(matches!(map["kms"], Err(StoreError::AccessDenied { .. })));
        assert!(matches!(map["iam"], Err(StoreError::AccessDenied { .. })));
        assert!(matches!(map["silent"], Err(StoreError::Unavailable { .. })));
        // Errors never echo values.
        for r in map.values() {
            if let Err(e) = r {
                assert!(!e.to_string().contains("value-of"));
            }
        }
    }

    #[tokio::test]
    async fn get_values_batches_by_twenty() {
        let rule = mock!(sm::Client::batch_get_secret_value).then_compute_output(|req| {
            assert!(req.secret_id_list().len() <= 20);
            let mut out = BatchGetSecretValueOutput::builder();
            for id in req.secret_id_list() {
                out = out.secret_values(
                    SecretValueEntry::builder()
                        .name(id)
                        .secret_string("v")
                        .version_id("1")
                        .build(),
                );
            }
            out.build()
        });
        let store = mocked(&[&rule]);
        let ids: Vec<String> = (0..45).map(|i| format!("s{i}")).collect();
        let reads = store.get_values(&ids).await.expect("values");
        assert_eq!(rule.num_calls(), 3);
        assert_eq!(reads.len(), 45);
        assert!(reads.iter().all(|(_, r)| r.is_ok()));
        assert!(store.get_values(&[]).await.expect("empty").is_empty());
        assert_eq!(rule.num_calls(), 3, "no ids, no call");
    }

    #[tokio::test]
    async fn create_sends_everything_in_one_call() {
        let rule = mock!(sm::Client::create_secret)
            .match_requests(|req| {
                req.name() == Some("prod/DB")
                    && req.client_request_token() == Some("0123456789abcdef0123456789abcdef")
                    && req.secret_string() == Some("s3cret")
                    && req.kms_key_id() == Some("alias/app")
                    && req.description() == Some("desc")
                    && req.tags().len() == 2
                    && req.add_replica_regions().len() == 1
                    && req.add_replica_regions()[0].region() == Some("eu-west-1")
            })
            .then_output(|| CreateSecretOutput::builder().version_id(token()).build());
        let store = mocked(&[&rule]);
        let req = CreateSecret {
            name: "prod/DB".into(),
            value: SecretValue::new("s3cret"),
            tags: BTreeMap::from([
                (TAG_SYNC.to_owned(), "app".to_owned()),
                ("secretsync:agent".to_owned(), "web-01".to_owned()),
            ]),
            kms_key_id: Some("alias/app".into()),
            description: Some("desc".into()),
            token: token(),
            replica_regions: vec!["eu-west-1".into()],
        };
        let out = store.create_secret(&req).await.expect("created");
        assert_eq!(out.version_id, Some(token()));
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn delete_window_or_force() {
        let window = mock!(sm::Client::delete_secret)
            .match_requests(|r| {
                r.recovery_window_in_days() == Some(7)
                    && r.force_delete_without_recovery().is_none()
            })
            .then_output(|| DeleteSecretOutput::builder().build());
        let force = mock!(sm::Client::delete_secret)
            .match_requests(|r| {
                r.recovery_window_in_days().is_none()
                    && r.force_delete_without_recovery() == Some(true)
            })
            .then_output(|| DeleteSecretOutput::builder().build());
        let store = mocked(&[&window, &force]);
        store.delete_secret("a", 7).await.expect("window");
        store.delete_secret("a", 0).await.expect("force");
        assert_eq!((window.num_calls(), force.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn empty_metadata_changes_make_no_call() {
        // No rules: any call would panic in the mock interceptor.
        let store = mocked(&[]);
        store.tag("a", &BTreeMap::new()).await.expect("tag");
        store.untag("a", &[]).await.expect("untag");
        store
            .update_metadata("a", None, None)
            .await
            .expect("update");
        assert!(store.lookup_names(&[]).await.expect("lookup").is_empty());
    }

    fn store_with_credentials(
        result: fn() -> Result<sm::config::Credentials, CredentialsError>,
    ) -> AwsStore {
        let conf = base_config()
            .credentials_provider(provide_credentials_fn(move || async move { result() }))
            .http_client(create_mock_http_client())
            .build();
        AwsStore::from_client(sm::Client::from_conf(conf), 0, 0)
    }

    #[tokio::test]
    async fn credential_failures() {
        let missing = store_with_credentials(|| {
            Err(CredentialsError::not_loaded("no credentials in the chain"))
        });
        let err = missing.probe().await.expect_err("no credentials");
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("credentials")),
            "{err:?}"
        );

        let slow = store_with_credentials(|| {
            Err(CredentialsError::provider_timed_out(Duration::from_secs(5)))
        });
        assert!(matches!(
            slow.probe().await,
            Err(StoreError::Unavailable { .. })
        ));

        let sts_down = store_with_credentials(|| {
            Err(CredentialsError::provider_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "sts unreachable",
            )))
        });
        assert!(matches!(
            sts_down.probe().await,
            Err(StoreError::Unavailable { .. })
        ));

        let refused = store_with_credentials(|| {
            Err(CredentialsError::provider_error(
                "AccessDenied: not authorized to assume role",
            ))
        });
        assert!(matches!(refused.probe().await, Err(StoreError::Config(_))));
    }

    /// A client for a real local endpoint, with the production retry policy.
    fn real_client(endpoint: &str, call_timeout: Duration) -> AwsStore {
        let conf = base_config()
            .endpoint_url(endpoint)
            .timeout_config(timeout_config(call_timeout))
            .build();
        AwsStore::from_client(sm::Client::from_conf(conf), 0, 0)
    }

    #[tokio::test(start_paused = true)]
    async fn connection_refused_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let store = real_client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
        let err = store.probe().await.expect_err("refused");
        assert!(
            matches!(
                err,
                StoreError::Unavailable {
                    op: "ListSecrets",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_endpoint_times_out() {
        // Accepts connections (kernel backlog) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let store = real_client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        let err = store.probe().await.expect_err("timeout");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string().contains("timed out") || err.to_string().contains("timeout"),
            "{err}"
        );
        // Bounded by the operation timeout.
        assert!(tokio::time::Instant::now() - start <= operation_timeout(Duration::from_secs(2)));
        drop(listener);
    }

    fn conn() -> Connection {
        Connection {
            region: "eu-central-1".into(),
            profile: None,
            role_arn: None,
            external_id: None,
            endpoint_url: Some("http://127.0.0.1:9".into()),
            max_write_tps: 20,
            max_read_tps: 50,
            call_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn connect_applies_settings_without_network() {
        let store = AwsStore::connect(&conn()).await.expect("connect");
        let config = store.client.config();
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-central-1"));
        let timeouts = config.timeout_config().expect("timeouts");
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(65)));
        let retry = config.retry_config().expect("retry");
        assert_eq!(retry.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(retry.initial_backoff(), INITIAL_BACKOFF);

        let with_role = Connection {
            role_arn: Some("arn:aws:iam::123456789012:role/secretsync".into()),
            external_id: Some("ext-1".into()),
            profile: Some("does-not-exist".into()),
            ..conn()
        };
        AwsStore::connect(&with_role)
            .await
            .expect("assume-role setup makes no call");
    }

    #[tokio::test]
    async fn connect_rejects_bad_settings() {
        for bad in [
            Connection {
                region: " ".into(),
                ..conn()
            },
            Connection {
                call_timeout: Duration::ZERO,
                ..conn()
            },
            Connection {
                endpoint_url: Some("localhost:4566".into()),
                ..conn()
            },
        ] {
            assert!(
                matches!(AwsStore::connect(&bad).await, Err(StoreError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn operation_timeout_covers_attempts_and_backoff() {
        // 5 × 10 s + (1 + 2 + 4 + 8) s.
        assert_eq!(
            operation_timeout(Duration::from_secs(10)),
            Duration::from_secs(65)
        );
    }
}
