//! Building the store: SDK config, credentials and role assumption, timeouts and retry policy.

#[allow(unused_imports)]
use super::*;

/// Retry policy for every call; see the module docs for the reasoning.
pub(super) fn retry_config() -> RetryConfig {
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
pub(super) fn timeout_config(call_timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(call_timeout))
        .operation_attempt_timeout(call_timeout)
        .operation_timeout(operation_timeout(call_timeout))
        .build()
}

/// The one HTTPS client every SDK client here uses (Secrets Manager, KMS,
/// and aws-config's STS/SSO/IMDS providers): rustls on ring with the
/// system's root certificates. Chosen here, not by SDK features, so the
/// binary carries one TLS stack (see the `Cargo.toml` comment).
pub(super) fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
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
        Self::connect_with_metrics(conn, None).await
    }

    /// [`AwsStore::connect`], and with `metrics` every API call, retry and
    /// throttled attempt is counted there (by an SDK interceptor, so the
    /// counts are per HTTP exchange, not per store method).
    pub async fn connect_with_metrics(
        conn: &Connection,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<AwsStore, StoreError> {
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
            .http_client(https_client())
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
        // KMS keeps its default endpoint (AWS_ENDPOINT_URL[_KMS] still
        // apply): `endpoint_url` may be a Secrets Manager VPC endpoint.
        let mut kms_builder = aws_sdk_kms::config::Builder::from(&sdk_config);
        if let Some(role) = &conn.role_arn {
            let mut assume = AssumeRoleProvider::builder(role)
                .session_name(SESSION_NAME)
                .region(region)
                .configure(&sdk_config);
            if let Some(external_id) = &conn.external_id {
                assume = assume.external_id(external_id);
            }
            // One provider (one cache of assumed credentials) for both clients.
            let provider = SharedCredentialsProvider::new(assume.build().await);
            builder = builder.credentials_provider(provider.clone());
            kms_builder = kms_builder.credentials_provider(provider);
        }
        if let Some(metrics) = metrics {
            builder = builder.interceptor(MetricsInterceptor(metrics));
        }
        let client = sm::Client::from_conf(builder.build());
        let mut store = Self::from_client(client, conn.max_read_tps, conn.max_write_tps);
        store.kms = Some(aws_sdk_kms::Client::from_conf(kms_builder.build()));
        Ok(store)
    }

    /// Wraps an already configured client (tests use a mocked one). The
    /// client's own retry/timeout settings are used as they are; a rate of 0
    /// disables that pacer.
    #[doc(hidden)]
    pub fn from_client(client: sm::Client, max_read_tps: u32, max_write_tps: u32) -> Self {
        let call_timeout = client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_attempt_timeout());
        let attempts = AttemptObserver::new(call_timeout);
        let reads = Arc::new(Pacer::for_rate(max_read_tps));
        let writes = Arc::new(Pacer::for_rate(max_write_tps));
        let observed = |observer: AttemptObserver| {
            let conf = client
                .config()
                .to_builder()
                .retry_classifier(observer.clone())
                .interceptor(observer)
                .build();
            sm::Client::from_conf(conf)
        };
        Self {
            client: observed(attempts.feeding(Arc::clone(&reads))),
            writer: observed(attempts.feeding(Arc::clone(&writes))),
            attempts,
            kms: None,
            kms_cache: Default::default(),
            reads,
            writes,
        }
    }

    /// Sets the KMS client (tests use a mocked one).
    #[doc(hidden)]
    pub fn with_kms_client(mut self, kms: aws_sdk_kms::Client) -> Self {
        self.kms = Some(kms);
        self
    }

    /// `DescribeKey` for a configured `kms_key_id` (id, ARN or alias):
    /// read-only, for `check`. Needs `kms:DescribeKey`, which reveals key
    /// metadata only.
    pub async fn describe_kms_key(&self, key_id: &str) -> Result<KmsKeyInfo, StoreError> {
        let Some(kms) = &self.kms else {
            return Err(StoreError::Config("no KMS client configured".into()));
        };
        self.reads.acquire().await;
        let result = kms
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| classify(OP_DESCRIBE_KEY, &e, None))
            .and_then(|out| {
                let meta = out.key_metadata.ok_or_else(|| StoreError::Unavailable {
                    op: OP_DESCRIBE_KEY,
                    message: "the answer had no KeyMetadata".into(),
                })?;
                Ok(KmsKeyInfo {
                    arn: meta.arn.unwrap_or_else(|| meta.key_id.clone()),
                    enabled: meta.enabled,
                    state: meta
                        .key_state
                        .map_or_else(|| "Unknown".into(), |s| s.as_str().to_owned()),
                    usage: meta.key_usage.map(|s| s.as_str().to_owned()),
                    spec: meta.key_spec.map(|s| s.as_str().to_owned()),
                })
            });
        log_call(OP_DESCRIBE_KEY, key_id, &result);
        result
    }

    /// The read side as an owned handle.
    pub(super) fn reader(&self) -> Reader {
        Reader {
            client: self.client.clone(),
            reads: Arc::clone(&self.reads),
        }
    }
}

/// The identity in a `DescribeKey` answer: the key id is the last part of
/// the key ARN (`…:key/KEY_ID`); without an ARN the answer's id stands.
pub(super) fn key_identity(info: &KmsKeyInfo) -> KeyIdentity {
    let key_id = info
        .arn
        .rsplit_once(":key/")
        .map_or(info.arn.as_str(), |(_, id)| id);
    KeyIdentity {
        key_id: key_id.to_owned(),
        arn: info.arn.clone(),
    }
}
