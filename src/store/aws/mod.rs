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
//!   Every attempt's outcome is fed back to its pacer, which slows down
//!   when AWS throttles (a fleet shares one quota) and tells the SDK not
//!   to retry a throttled attempt once it is backing off: the engine's
//!   pass-level backoff, with full jitter, takes over (see
//!   [`super::pacing`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager as sm;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use sm::config::http::HttpResponse;
use sm::config::interceptors::FinalizerInterceptorContextRef;
use sm::config::{ConfigBag, Intercept, RuntimeComponents};
use sm::error::{ConnectorError, ProvideErrorMetadata, SdkError};
use sm::operation::RequestId;
use sm::types::{Filter, FilterNameStringType, ReplicaRegionType, SecretListEntry, Tag};

use super::pacing::Pacer;
use super::{
    BATCH_GET_MAX, Connection, CreateSecret, KeyIdentity, KmsKeyInfo, LIST_PAGE_MAX,
    NAME_FILTER_MAX, Owned, OwnerFilter, RemoteSecret, RemoteValue, ReplicaStatus, RetryNote,
    SecretStore, StoreError, ValueRead, WriteResult,
};
use crate::metrics::Metrics;
use crate::naming::{TAG_AGENT, TAG_SYNC};
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
const OP_DESCRIBE: &str = "DescribeSecret";
const OP_REPLICATE: &str = "ReplicateSecretToRegions";
const OP_REMOVE_REPLICAS: &str = "RemoveRegionsFromReplication";
const OP_DESCRIBE_KEY: &str = "kms:DescribeKey";

/// Secrets Manager in one region with one set of credentials, paced and
/// retried. Cheap to share behind an `Arc`: the SDK client is a handle and
/// the pacers are lock-light.
#[derive(Debug)]
pub struct AwsStore {
    /// For reads; its attempts feed the read pacer.
    client: sm::Client,
    /// The same client configuration for writes; its attempts feed the
    /// write pacer (one client per pacer, so that the attempt observer
    /// knows whose rate a throttle lowers).
    writer: sm::Client,
    /// KMS in the same region with the same credentials, for `check`'s
    /// key probe only (the agent never calls KMS itself).
    kms: Option<aws_sdk_kms::Client>,
    /// `DescribeKey` answers for [`SecretStore::resolve_kms_key`].
    kms_cache: super::kms::KmsCache,
    reads: Arc<Pacer>,
    writes: Arc<Pacer>,
    attempts: AttemptObserver,
}

/// The read side of an [`AwsStore`] as an owned handle (the SDK client is
/// a handle too), so that one lookup can fan out into concurrent tasks.
#[derive(Debug, Clone)]
struct Reader {
    client: sm::Client,
    reads: Arc<Pacer>,
}

/// How many read calls one lookup (names in chunks of
/// [`NAME_FILTER_MAX`], values in batches of [`BATCH_GET_MAX`]) runs at
/// once. The read pacer still caps the rate; this only stops one slow or
/// throttled call (backing off for seconds) from holding up the others.
const READ_CONCURRENCY: usize = 4;

/// Runs `jobs`, at most [`READ_CONCURRENCY`] at a time, each in its own
/// task (in the caller's tracing span); results in job order, or the first
/// error (the tasks still running are then aborted).
async fn run_bounded<T, Fut>(jobs: impl IntoIterator<Item = Fut>) -> Result<Vec<T>, StoreError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let mut jobs = jobs.into_iter().enumerate();
    let mut tasks = tokio::task::JoinSet::new();
    let mut done: Vec<(usize, T)> = Vec::new();
    loop {
        while tasks.len() < READ_CONCURRENCY {
            let Some((i, job)) = jobs.next() else { break };
            tasks.spawn(tracing::Instrument::in_current_span(async move {
                (i, job.await)
            }));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((i, result)) => done.push((i, result?)),
            Err(e) => {
                return Err(StoreError::Unavailable {
                    op: OP_LIST,
                    message: format!("read task failed: {e}"),
                });
            }
        }
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, t)| t).collect())
}

mod attempts;
use attempts::AttemptObserver;

mod client;
mod errors;
mod interceptor;
mod read;
#[allow(unused_imports)]
use client::*;
#[allow(unused_imports)]
use errors::*;
#[allow(unused_imports)]
use interceptor::*;
#[allow(unused_imports)]
use read::*;

impl SecretStore for AwsStore {
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
        let filters = vec![
            filter(FilterNameStringType::TagKey, vec![TAG_SYNC.to_owned()]),
            filter(FilterNameStringType::TagValue, vec![value.to_owned()]),
        ];
        let pages = self
            .reader()
            .list_pages(filters, max_pages.min(MAX_PAGES))
            .await;
        let result = pages.map(|entries| {
            let entries = entries?;
            let scanned = entries.len();
            let secrets = entries
                .into_iter()
                .filter_map(to_remote)
                .filter(|s| {
                    s.tags.get(TAG_SYNC).map(String::as_str) == Some(sync)
                        && s.tags.get(TAG_AGENT).map(String::as_str) == Some(agent)
                })
                .collect();
            Some(Owned { secrets, scanned })
        });
        log_call(OP_LIST, sync, &result);
        result
    }

    async fn lookup_names(&self, names: &[String]) -> Result<Vec<RemoteSecret>, StoreError> {
        let wanted: BTreeSet<&String> = names.iter().collect();
        let wanted_list: Vec<&String> = wanted.iter().copied().collect();
        let mut found: BTreeMap<String, RemoteSecret> = BTreeMap::new();
        // Collected first: the futures own their data, and the iterator's
        // borrowing closure must not live across an await (Send bounds).
        let lookups: Vec<_> = wanted_list
            .chunks(NAME_FILTER_MAX)
            .map(|chunk| {
                let values: Vec<String> = chunk.iter().map(|n| (*n).clone()).collect();
                let reader = self.reader();
                async move {
                    let n = values.len();
                    let entries = reader
                        .list_all(vec![filter(FilterNameStringType::Name, values)])
                        .await;
                    log_call(OP_LIST, &format!("{n} name(s)"), &entries);
                    entries
                }
            })
            .collect();
        for entries in run_bounded(lookups).await? {
            for secret in entries.into_iter().filter_map(to_remote) {
                if wanted.contains(&secret.name) {
                    found.entry(secret.name.clone()).or_insert(secret);
                }
            }
        }
        Ok(found.into_values().collect())
    }

    async fn list_by_prefix(&self, prefix: &str) -> Result<Vec<RemoteSecret>, StoreError> {
        self.list_by_prefix_capped(prefix, MAX_PAGES)
            .await?
            .ok_or_else(|| StoreError::Unavailable {
                op: OP_LIST,
                message: format!("listing did not end after {MAX_PAGES} pages"),
            })
    }

    async fn list_by_prefix_capped(
        &self,
        prefix: &str,
        max_pages: usize,
    ) -> Result<Option<Vec<RemoteSecret>>, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Config(
                "refusing to list every secret in the account (empty prefix)".into(),
            ));
        }
        let entries = self
            .reader()
            .list_pages(
                vec![filter(FilterNameStringType::Name, vec![prefix.to_string()])],
                max_pages,
            )
            .await;
        log_call(OP_LIST, "name prefix", &entries);
        Ok(entries?.map(|entries| {
            entries
                .into_iter()
                .filter_map(to_remote)
                .filter(|s| s.name.starts_with(prefix))
                .collect()
        }))
    }

    async fn get_values(&self, ids: &[String]) -> Result<Vec<ValueRead>, StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<String> = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        let batches: Vec<_> = unique
            .chunks(BATCH_GET_MAX)
            .map(|chunk| {
                let ids = chunk.to_vec();
                let reader = self.reader();
                async move {
                    let result = reader.batch_get(&ids).await;
                    log_call(OP_BATCH_GET, &format!("{} id(s)", ids.len()), &result);
                    result
                }
            })
            .collect();
        Ok(run_bounded(batches).await?.into_iter().flatten().collect())
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
            .writer
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
            .writer
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
            .writer
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
            .writer
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
            .writer
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
        let mut call = self.writer.delete_secret().secret_id(name);
        call = if recovery_window_days == 0 {
            call.force_delete_without_recovery(true)
        } else {
            call.recovery_window_in_days(i64::from(recovery_window_days))
        };
        let result = match call.send().await.map(|_| ()) {
            // Already scheduled (by a late call of a killed agent, or by
            // someone else since the pass read it): the outcome holds.
            Err(e) if recovery_window_days != 0 && already_scheduled(&e) => {
                tracing::debug!(secret = name, "already scheduled for deletion");
                Ok(())
            }
            other => other.map_err(|e| classify(OP_DELETE, &e, None)),
        };
        log_call(OP_DELETE, name, &result);
        result
    }

    async fn restore_secret(&self, name: &str) -> Result<(), StoreError> {
        self.writes.acquire().await;
        let result = self
            .writer
            .restore_secret()
            .secret_id(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_RESTORE, &e, None));
        log_call(OP_RESTORE, name, &result);
        result
    }

    async fn describe_secret(&self, name: &str) -> Result<Option<RemoteSecret>, StoreError> {
        self.reads.acquire().await;
        let result = match self.client.describe_secret().secret_id(name).send().await {
            Ok(out) => Ok(describe_to_remote(out)),
            Err(e) => match classify(OP_DESCRIBE, &e, None) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        };
        log_call(OP_DESCRIBE, name, &result);
        result
    }

    async fn describe_replicas(&self, name: &str) -> Result<Vec<ReplicaStatus>, StoreError> {
        self.reads.acquire().await;
        let result = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .map(|out| {
                let mut replicas: Vec<ReplicaStatus> = out
                    .replication_status()
                    .iter()
                    .filter_map(|r| {
                        Some(ReplicaStatus {
                            region: r.region()?.to_owned(),
                            status: r
                                .status()
                                .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned()),
                            message: r.status_message().map(str::to_owned),
                        })
                    })
                    .collect();
                replicas.sort();
                replicas
            })
            .map_err(|e| classify(OP_DESCRIBE, &e, None));
        log_call(OP_DESCRIBE, name, &result);
        result
    }

    async fn replicate_to(&self, name: &str, regions: &[String]) -> Result<(), StoreError> {
        if regions.is_empty() {
            return Ok(());
        }
        self.writes.acquire().await;
        let result = self
            .writer
            .replicate_secret_to_regions()
            .secret_id(name)
            .set_add_replica_regions(Some(
                regions
                    .iter()
                    .map(|r| ReplicaRegionType::builder().region(r).build())
                    .collect(),
            ))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_REPLICATE, &e, None));
        log_call(OP_REPLICATE, name, &result);
        result
    }

    async fn remove_replicas(&self, name: &str, regions: &[String]) -> Result<(), StoreError> {
        if regions.is_empty() {
            return Ok(());
        }
        self.writes.acquire().await;
        let result = self
            .writer
            .remove_regions_from_replication()
            .secret_id(name)
            .set_remove_replica_regions(Some(regions.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(OP_REMOVE_REPLICAS, &e, None));
        log_call(OP_REMOVE_REPLICAS, name, &result);
        result
    }

    fn last_retry(&self) -> Option<RetryNote> {
        self.attempts.last()
    }

    async fn resolve_kms_key(&self, key: &str) -> Result<Option<KeyIdentity>, StoreError> {
        if self.kms.is_none() {
            return Ok(None);
        }
        self.kms_cache
            .resolve(key, || async {
                self.describe_kms_key(key)
                    .await
                    .map(|info| key_identity(&info))
            })
            .await
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

/// Production factory: one [`AwsStore`] per connection, counting its
/// calls into `metrics` when set.
#[derive(Debug, Default, Clone)]
pub struct AwsStoreFactory {
    /// Where AWS calls are counted (`agent.metrics_listen` set).
    pub metrics: Option<Arc<Metrics>>,
}

impl super::StoreFactory for AwsStoreFactory {
    type Store = AwsStore;
    async fn connect(&self, conn: &Connection) -> Result<Arc<AwsStore>, StoreError> {
        let store = AwsStore::connect_with_metrics(conn, self.metrics.clone()).await?;
        // The agent retries passes with full jitter: a congested call may
        // fail rather than retry into the quota (see `store::pacing`).
        store.attempts.fail_fast_when_congested();
        Ok(Arc::new(store))
    }
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
        mocked_paced(rules, 0, 0)
    }

    fn mocked_paced(rules: &[&Rule], max_read_tps: u32, max_write_tps: u32) -> AwsStore {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in rules {
            interceptor = interceptor.with_rule(rule);
        }
        let conf = base_config()
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        AwsStore::from_client(sm::Client::from_conf(conf), max_read_tps, max_write_tps)
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

    /// Congestion control through the SDK: the write client's attempts feed
    /// the write pacer. A throttle at full rate is retried; once the pacer
    /// is backing off, a throttled attempt ends the call in the agent (the
    /// engine's jittered pass retry takes over) instead of up to
    /// MAX_ATTEMPTS more. One-shot commands keep the SDK's retries.
    #[tokio::test(start_paused = true)]
    async fn a_backing_off_store_stops_retrying_throttled_attempts() {
        use sm::operation::describe_secret::DescribeSecretOutput;
        let rule = mock!(sm::Client::put_secret_value)
            .then_http_response(|| aws_error(400, "ThrottlingException", "Rate exceeded"));
        let reads = mock!(sm::Client::describe_secret)
            .then_output(|| DescribeSecretOutput::builder().name("a").build());
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        interceptor = interceptor.with_rule(&rule).with_rule(&reads);
        let conf = base_config()
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        let store = AwsStore::from_client(sm::Client::from_conf(conf), 50, 20);
        store.attempts.fail_fast_when_congested();
        let err = store
            .put_value("a", &SecretValue::new("v"), &token())
            .await
            .expect_err("throttled");
        assert!(err.is_throttled(), "{err}");
        assert_eq!(rule.num_calls(), 2, "one retry, then the pacer says stop");
        store
            .put_value("a", &SecretValue::new("v"), &token())
            .await
            .expect_err("throttled");
        assert_eq!(rule.num_calls(), 3, "still backing off: no retry at all");
        assert!(store.writes.current_rate() < 20.0);
        // Reads have their own pacer, untouched by the writes' throttling.
        store.describe_secret("a").await.expect("read");
        assert_eq!(store.reads.current_rate(), 50.0);

        // Without fail-fast (one-shot commands): every attempt is retried.
        let rule = mock!(sm::Client::put_secret_value)
            .then_http_response(|| aws_error(400, "ThrottlingException", "Rate exceeded"));
        let store = mocked_paced(&[&rule], 50, 20);
        store
            .put_value("a", &SecretValue::new("v"), &token())
            .await
            .expect_err("throttled");
        assert_eq!(rule.num_calls(), MAX_ATTEMPTS as usize);
        assert!(store.writes.current_rate() < 20.0, "it still slows down");
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

    #[tokio::test]
    async fn message_echoing_part_of_the_value_is_withheld() {
        let value = "canary-0123456789-must-not-leak";
        for message in [
            "Value 'canary-012...' at 'secretString' failed to satisfy constraint",
            "invalid character in '...6789-must-...'",
            "Value at 'secretString' ends with 'not-leak'",
        ] {
            let rule = put_rule(400, "ValidationException", message);
            let store = mocked(&[&rule]);
            let err = store
                .put_value("a", &SecretValue::new(value), &token())
                .await
                .expect_err("rejected");
            let text = err.to_string();
            assert!(text.contains("withheld"), "{message}: {text}");
            assert!(
                text.starts_with("PutSecretValue: rejected by AWS: ValidationException"),
                "{text}"
            );
            assert!(!text.contains("canary") && !text.contains("leak"), "{text}");
        }
    }

    #[test]
    fn echo_detection() {
        assert!(echoes("x 'abcdefgh' y", "abcdefghij"));
        assert!(echoes("x 'ghij' y", "ghij"));
        assert!(echoes("äöü€abcd", "xäöü€abcdz"));
        assert!(!echoes("x 'abcdefg' y", "abcdefghij"));
        assert!(!echoes("anything", ""));
        assert!(!echoes(
            "Member must have length less than or equal to 65536",
            "s3cr3t-Value!"
        ));
    }

    fn entry(name: &str, sync: &str) -> SecretListEntry {
        SecretListEntry::builder()
            .name(name)
            .arn(format!("{ARN}{name}-AbCdEf"))
            .tags(Tag::builder().key(TAG_AGENT).value("web-01").build())
            .tags(Tag::builder().key(TAG_SYNC).value(sync).build())
            .tags(Tag::builder().key("team").value("payments").build())
            .secret_versions_to_stages("v-old", vec!["AWSPREVIOUS".to_owned()])
            .secret_versions_to_stages("v-cur", vec!["AWSCURRENT".to_owned()])
            .build()
    }

    #[tokio::test]
    async fn list_owned_follows_pages_and_filters_exactly() {
        let is_sync_filter = |req: &sm::operation::list_secrets::ListSecretsInput| {
            let f = req.filters();
            req.include_planned_deletion() == Some(true)
                && req.max_results() == Some(100)
                && f.len() == 2
                && f[0].key() == Some(&FilterNameStringType::TagKey)
                && f[0].values() == [TAG_SYNC]
                && f[1].key() == Some(&FilterNameStringType::TagValue)
                && f[1].values() == ["web-01"]
        };
        let page1 = mock!(sm::Client::list_secrets)
            .match_requests(move |req| is_sync_filter(req) && req.next_token().is_none())
            .then_output(|| {
                let mut neighbour = entry("app/N", "app");
                neighbour.tags = Some(vec![
                    Tag::builder().key(TAG_AGENT).value("web-010").build(),
                    Tag::builder().key(TAG_SYNC).value("app").build(),
                ]);
                ListSecretsOutput::builder()
                    .secret_list(entry("app/A", "app"))
                    .secret_list(entry("prod/B", "app-prod")) // another sync of ours
                    .secret_list(neighbour) // tag values match by prefix server-side
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
        let owned = store
            .list_owned("web-01", "app", OwnerFilter::Agent, usize::MAX)
            .await
            .expect("list")
            .expect("ended");
        assert_eq!(owned.scanned, 4, "what the server-side filter let through");
        let got = owned.secrets;
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
    async fn list_owned_by_sync_filters_on_the_sync_name() {
        let rule = mock!(sm::Client::list_secrets)
            .match_requests(|req| req.filters()[1].values() == ["app"])
            .then_output(|| {
                ListSecretsOutput::builder()
                    .secret_list(entry("app/A", "app"))
                    .secret_list(entry("app/B", "app-prod"))
                    .build()
            });
        let store = mocked(&[&rule]);
        let owned = store
            .list_owned("web-01", "app", OwnerFilter::Sync, 1)
            .await
            .expect("list")
            .expect("one page");
        assert_eq!(rule.num_calls(), 1);
        assert_eq!((owned.secrets.len(), owned.scanned), (1, 2));
    }

    #[tokio::test]
    async fn repeated_next_token_is_an_error_not_a_loop() {
        let rule = mock!(sm::Client::list_secrets)
            .then_output(|| ListSecretsOutput::builder().next_token("same").build());
        let store = mocked(&[&rule]);
        let err = store
            .list_owned("web-01", "app", OwnerFilter::Agent, usize::MAX)
            .await
            .expect_err("loop");
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
    async fn capped_prefix_listing_stops_after_its_pages() {
        let rule = mock!(sm::Client::list_secrets).then_compute_output(|req| {
            let f = req.filters();
            assert_eq!(f[0].key(), Some(&FilterNameStringType::Name));
            assert_eq!(f[0].values(), ["prod/"]);
            let n = req.next_token().map_or(0, |t| t.len());
            ListSecretsOutput::builder()
                .secret_list(entry(&format!("prod/K{n}"), "app"))
                .secret_list(entry("prodx/K", "app")) // server-side prefix match is coarse
                .next_token("x".repeat(n + 1))
                .build()
        });
        let store = mocked(&[&rule]);
        assert!(
            store
                .list_by_prefix_capped("prod/", 3)
                .await
                .expect("list")
                .is_none()
        );
        assert_eq!(rule.num_calls(), 3);

        let last = mock!(sm::Client::list_secrets).then_output(|| {
            ListSecretsOutput::builder()
                .secret_list(entry("prod/A", "app"))
                .secret_list(entry("prodx/K", "app"))
                .build()
        });
        let store = mocked(&[&last]);
        let got = store
            .list_by_prefix_capped("prod/", 1)
            .await
            .expect("list")
            .expect("ended within one page");
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["prod/A"]);
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
            .http_client(https_client())
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
    async fn retried_attempts_leave_a_note_without_the_message() {
        let rule = put_rule(400, "ThrottlingException", "Rate exceeded for canary-value");
        let store = mocked(&[&rule]);
        assert_eq!(store.last_retry(), None);
        let err = store.put_value("a", &SecretValue::new("v"), &token()).await;
        assert!(matches!(err, Err(StoreError::Throttled { .. })), "{err:?}");
        let note = store
            .last_retry()
            .expect("a note after a throttled attempt");
        assert_eq!(note.message, "AWS answered ThrottlingException (HTTP 400)");
        assert!(!note.message.contains("canary"));

        // A final, non-retryable error leaves no note.
        let rejected = put_rule(400, "InvalidParameterException", "bad");
        let store = mocked(&[&rejected]);
        let _ = store.put_value("a", &SecretValue::new("v"), &token()).await;
        assert_eq!(store.last_retry(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_reads_overlap_keep_order_and_stop_at_an_error() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let job = |i: usize, fail: bool| {
            let running = Arc::clone(&running);
            let peak = Arc::clone(&peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later jobs finish first: order must come from the index.
                tokio::time::sleep(Duration::from_millis(100 - i as u64)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if fail {
                    Err(StoreError::Unavailable {
                        op: OP_LIST,
                        message: format!("job {i}"),
                    })
                } else {
                    Ok(i)
                }
            }
        };
        let start = tokio::time::Instant::now();
        let out = run_bounded((0..10).map(|i| job(i, false)).collect::<Vec<_>>())
            .await
            .expect("all ok");
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), READ_CONCURRENCY);
        assert!(tokio::time::Instant::now() - start < Duration::from_millis(400));
        let err = run_bounded((0..10).map(|i| job(i, i == 5)).collect::<Vec<_>>())
            .await
            .expect_err("job 5 fails");
        assert!(err.to_string().contains("job 5"), "{err}");
    }

    #[tokio::test]
    async fn deleting_a_secret_already_scheduled_succeeds() {
        for message in [
            "You can't perform this operation on the secret because it was marked for deletion.",
            "You tried to perform the operation on a secret that's currently marked deleted.",
        ] {
            let rule = mock!(sm::Client::delete_secret)
                .then_http_response(move || aws_error(400, "InvalidRequestException", message));
            let store = mocked(&[&rule]);
            assert_eq!(store.delete_secret("a", 7).await, Ok(()), "{message}");
        }
        // Any other rejection is still an error.
        let rule = mock!(sm::Client::delete_secret).then_http_response(|| {
            aws_error(400, "InvalidRequestException", "something else entirely")
        });
        let store = mocked(&[&rule]);
        assert!(matches!(
            store.delete_secret("a", 7).await,
            Err(StoreError::Rejected { .. })
        ));
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
        let note = store.last_retry().expect("timed-out attempts leave a note");
        assert_eq!(note.message, "an attempt timed out after 2s");
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

    /// A KMS client answering from `rules`.
    fn mocked_kms(rules: &[&Rule]) -> aws_sdk_kms::Client {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in rules {
            interceptor = interceptor.with_rule(rule);
        }
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(sm::config::Credentials::new(
                "AKIDTEST", "SECRET", None, None, "test",
            ))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    #[tokio::test]
    async fn kms_key_probe_reads_metadata_and_maps_errors() {
        use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
        use aws_sdk_kms::types::{KeyMetadata, KeySpec, KeyState, KeyUsageType};
        let found = mock!(aws_sdk_kms::Client::describe_key)
            .match_requests(|r| r.key_id() == Some("alias/app"))
            .then_output(|| {
                DescribeKeyOutput::builder()
                    .key_metadata(
                        KeyMetadata::builder()
                            .key_id("1234abcd")
                            .arn("arn:aws:kms:eu-west-1:123456789012:key/1234abcd")
                            .enabled(false)
                            .key_state(KeyState::Disabled)
                            .key_usage(KeyUsageType::EncryptDecrypt)
                            .key_spec(KeySpec::SymmetricDefault)
                            .build()
                            .expect("metadata"),
                    )
                    .build()
            });
        let missing = mock!(aws_sdk_kms::Client::describe_key)
            .match_requests(|r| r.key_id() == Some("alias/typo"))
            .then_http_response(|| {
                aws_error(400, "NotFoundException", "Alias alias/typo is not found.")
            });
        let denied = mock!(aws_sdk_kms::Client::describe_key)
            .match_requests(|r| r.key_id() == Some("alias/locked"))
            .then_http_response(|| {
                aws_error(
                    400,
                    "AccessDeniedException",
                    "User is not authorized to perform kms:DescribeKey",
                )
            });
        let store = mocked(&[]).with_kms_client(mocked_kms(&[&found, &missing, &denied]));
        let info = store.describe_kms_key("alias/app").await.expect("found");
        assert_eq!(
            info,
            KmsKeyInfo {
                arn: "arn:aws:kms:eu-west-1:123456789012:key/1234abcd".into(),
                enabled: false,
                state: "Disabled".into(),
                usage: Some("ENCRYPT_DECRYPT".into()),
                spec: Some("SYMMETRIC_DEFAULT".into()),
            }
        );
        let verdict = crate::store::kms::verdict("alias/app", "eu-west-1", &Ok(info));
        assert!(
            matches!(&verdict, crate::store::kms::KeyVerdict::Unusable(t) if t.contains("is Disabled")),
            "{verdict:?}"
        );
        let typo = store.describe_kms_key("alias/typo").await;
        assert!(
            matches!(&typo, Err(StoreError::Rejected { message, .. }) if message.contains("NotFoundException")),
            "{typo:?}"
        );
        assert!(matches!(
            crate::store::kms::verdict("alias/typo", "eu-west-1", &typo),
            crate::store::kms::KeyVerdict::Unusable(_)
        ));
        let locked = store.describe_kms_key("alias/locked").await;
        assert!(
            matches!(locked, Err(StoreError::AccessDenied { .. })),
            "{locked:?}"
        );
        assert!(matches!(
            crate::store::kms::verdict("alias/locked", "eu-west-1", &locked),
            crate::store::kms::KeyVerdict::Unknown(_)
        ));
        // A store built without KMS says so instead of panicking.
        assert!(matches!(
            mocked(&[]).describe_kms_key("alias/app").await,
            Err(StoreError::Config(_))
        ));
    }

    #[tokio::test]
    async fn resolve_kms_key_asks_once_per_spelling_and_denied_is_none() {
        use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
        use aws_sdk_kms::types::KeyMetadata;
        let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd";
        let found = mock!(aws_sdk_kms::Client::describe_key)
            .match_requests(|r| r.key_id() == Some("alias/app"))
            .then_output(move || {
                DescribeKeyOutput::builder()
                    .key_metadata(
                        KeyMetadata::builder()
                            .key_id("1234abcd")
                            .arn(arn)
                            .build()
                            .expect("metadata"),
                    )
                    .build()
            });
        let denied = mock!(aws_sdk_kms::Client::describe_key)
            .match_requests(|r| r.key_id() == Some("alias/locked"))
            .then_http_response(|| {
                aws_error(
                    400,
                    "AccessDeniedException",
                    "User is not authorized to perform kms:DescribeKey",
                )
            });
        let store = mocked(&[]).with_kms_client(mocked_kms(&[&found, &denied]));
        for _ in 0..3 {
            assert_eq!(
                store.resolve_kms_key("alias/app").await,
                Ok(Some(KeyIdentity {
                    key_id: "1234abcd".into(),
                    arn: arn.into(),
                }))
            );
            assert_eq!(store.resolve_kms_key("alias/locked").await, Ok(None));
        }
        assert_eq!(found.num_calls(), 1, "cached per store");
        assert_eq!(denied.num_calls(), 1, "the denial is cached too");
        // Without a KMS client there is nobody to ask.
        assert_eq!(mocked(&[]).resolve_kms_key("alias/app").await, Ok(None));
    }

    #[tokio::test]
    async fn kms_failures_on_writes_say_the_key_is_the_problem() {
        for code in [
            "KMSAccessDeniedException",
            "KMSDisabledException",
            "KMSInvalidStateException",
            "EncryptionFailure",
        ] {
            let rule = put_rule(400, code, "Access to KMS is not allowed");
            let store = mocked(&[&rule]);
            let err = store
                .put_value("a", &SecretValue::new("v"), &token())
                .await
                .expect_err(code);
            assert!(
                matches!(err, StoreError::AccessDenied { .. }),
                "{code}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("the KMS key cannot be used") && text.contains(code),
                "{code}: {text}"
            );
            assert!(!err.is_transient());
        }
        // IAM denials keep their own wording.
        let rule = put_rule(400, "AccessDeniedException", "not authorized");
        let err = mocked(&[&rule])
            .put_value("a", &SecretValue::new("v"), &token())
            .await
            .expect_err("iam");
        assert!(!err.to_string().contains("KMS"), "{err}");
    }

    #[tokio::test]
    async fn describe_secret_maps_like_a_listing_and_missing_is_none() {
        use sm::operation::describe_secret::DescribeSecretOutput;
        let found = mock!(sm::Client::describe_secret)
            .match_requests(|r| r.secret_id() == Some("app/A"))
            .then_output(|| {
                DescribeSecretOutput::builder()
                    .name("app/A")
                    .arn("arn:aws:secretsmanager:us-east-1:1:secret:app/A-x")
                    .description("d")
                    .kms_key_id("alias/k")
                    .rotation_enabled(true)
                    .tags(Tag::builder().key("secretsync:sync").value("app").build())
                    .version_ids_to_stages("v-old", vec!["AWSPREVIOUS".to_owned()])
                    .version_ids_to_stages("v-cur", vec!["AWSCURRENT".to_owned()])
                    .build()
            });
        let missing = mock!(sm::Client::describe_secret)
            .match_requests(|r| r.secret_id() == Some("gone"))
            .then_http_response(|| {
                aws_error(
                    400,
                    "ResourceNotFoundException",
                    "Secrets Manager can't find it",
                )
            });
        let store = mocked(&[&found, &missing]);
        let got = store
            .describe_secret("app/A")
            .await
            .expect("ok")
            .expect("some");
        assert_eq!(got.name, "app/A");
        assert_eq!(got.current_version.as_deref(), Some("v-cur"));
        assert_eq!(
            got.tags.get("secretsync:sync").map(String::as_str),
            Some("app")
        );
        assert_eq!(got.kms_key_id.as_deref(), Some("alias/k"));
        assert_eq!(got.description.as_deref(), Some("d"));
        assert!(!got.pending_deletion);
        assert!(got.rotation_enabled, "RotationEnabled is read");
        assert_eq!(store.describe_secret("gone").await.expect("ok"), None);
    }

    #[tokio::test]
    async fn replicas_are_described_added_and_removed() {
        use sm::operation::describe_secret::DescribeSecretOutput;
        use sm::operation::remove_regions_from_replication::RemoveRegionsFromReplicationOutput;
        use sm::operation::replicate_secret_to_regions::ReplicateSecretToRegionsOutput;
        use sm::types::{ReplicationStatusType, StatusType};
        let describe = mock!(sm::Client::describe_secret).then_output(|| {
            DescribeSecretOutput::builder()
                .replication_status(
                    ReplicationStatusType::builder()
                        .region("eu-west-1")
                        .status(StatusType::Failed)
                        .status_message(
                            "Replication failed: a secret with this name already exists",
                        )
                        .build(),
                )
                .replication_status(
                    ReplicationStatusType::builder()
                        .region("ap-south-1")
                        .status(StatusType::InSync)
                        .build(),
                )
                .build()
        });
        let add = mock!(sm::Client::replicate_secret_to_regions)
            .match_requests(|r| {
                r.secret_id() == Some("a")
                    && r.add_replica_regions().len() == 1
                    && r.add_replica_regions()[0].region() == Some("eu-central-1")
            })
            .then_output(|| ReplicateSecretToRegionsOutput::builder().build());
        let remove = mock!(sm::Client::remove_regions_from_replication)
            .match_requests(|r| r.remove_replica_regions() == ["eu-west-1".to_string()])
            .then_output(|| RemoveRegionsFromReplicationOutput::builder().build());
        let store = mocked(&[&describe, &add, &remove]);
        let got = store.describe_replicas("a").await.expect("describe");
        assert_eq!(
            got,
            vec![
                ReplicaStatus {
                    region: "ap-south-1".into(),
                    status: "InSync".into(),
                    message: None,
                },
                ReplicaStatus {
                    region: "eu-west-1".into(),
                    status: "Failed".into(),
                    message: Some(
                        "Replication failed: a secret with this name already exists".into()
                    ),
                },
            ]
        );
        store
            .replicate_to("a", &["eu-central-1".into()])
            .await
            .expect("add");
        store
            .remove_replicas("a", &["eu-west-1".into()])
            .await
            .expect("remove");
        store.replicate_to("a", &[]).await.expect("no call");
        store.remove_replicas("a", &[]).await.expect("no call");
        assert_eq!(
            (describe.num_calls(), add.num_calls(), remove.num_calls()),
            (1, 1, 1)
        );
    }

    #[test]
    fn response_outcomes_for_metrics() {
        let ok = HttpResponse::new(200.try_into().expect("status"), "{}".into());
        assert_eq!(response_outcome(Some(&ok)), "ok");
        assert_eq!(
            response_outcome(Some(&aws_error(
                400,
                "ThrottlingException",
                "Rate exceeded"
            ))),
            "throttled"
        );
        assert_eq!(
            response_outcome(Some(&aws_error(
                400,
                "com.amazonaws.secretsmanager#ResourceNotFoundException",
                "nope"
            ))),
            "not_found"
        );
        let mut header_only = HttpResponse::new(400.try_into().expect("status"), "".into());
        header_only
            .headers_mut()
            .insert("x-amzn-errortype", "AccessDeniedException:http://internal/");
        assert_eq!(response_outcome(Some(&header_only)), "access_denied");
        assert_eq!(
            response_outcome(Some(&aws_error(503, "Whatever", "x"))),
            "unavailable"
        );
        assert_eq!(response_outcome(None), "unavailable");
    }
}
