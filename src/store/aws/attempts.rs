//! Watches the SDK's retry loop: every attempt's outcome passes through the
//! retry classifiers, timeouts included (no interceptor hook sees an
//! attempt timeout), so a classifier that never decides anything is the
//! one place to learn why a call that has not returned yet is being retried.
//! The engine turns the latest note into the status reason of a slow pass.
//!
//! The same type, as an interceptor, feeds each attempt's outcome to the
//! client's [`Pacer`] (congestion control, see [`crate::store::pacing`]);
//! in the agent, for a throttled attempt while that pacer is already backing
//! off, it forbids the SDK's retry: the call fails as throttled and the
//! engine's jittered pass-level backoff spreads a fleet's retries instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::interceptors as sm_interceptors;
use aws_sdk_secretsmanager::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_secretsmanager::config::interceptors::InterceptorContext;
use aws_sdk_secretsmanager::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use super::{THROTTLING_CODES, UNAVAILABLE_CODES};
use crate::store::RetryNote;
use crate::store::pacing::Pacer;

/// Records the latest transient failure of any attempt of a client's calls.
/// Cheap to clone (shared state); install with `Builder::retry_classifier`.
#[derive(Debug, Clone, Default)]
pub(super) struct AttemptObserver {
    /// The configured attempt timeout, named in the note when one fires.
    call_timeout: Option<Duration>,
    last: Arc<Mutex<Option<RetryNote>>>,
    /// The pacer the observed client's calls take their tokens from.
    pacer: Option<Arc<Pacer>>,
    /// Whether a throttled attempt of a backing-off pacer ends its call
    /// (the agent, whose engine retries passes with jitter) rather than
    /// being retried by the SDK (one-shot commands, which have no later
    /// pass). Shared by every clone.
    fail_fast: Arc<AtomicBool>,
}

/// When the current attempt was sent (per-request interceptor state).
#[derive(Debug, Clone, Copy)]
struct AttemptSentAt(tokio::time::Instant);

impl Storable for AttemptSentAt {
    type Storer = StoreReplace<Self>;
}

/// What kind of transient failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transient {
    Throttled,
    Other,
}

impl AttemptObserver {
    /// An observer for a client whose attempts time out after `call_timeout`.
    pub(super) fn new(call_timeout: Option<Duration>) -> Self {
        AttemptObserver {
            call_timeout,
            last: Arc::default(),
            pacer: None,
            fail_fast: Arc::default(),
        }
    }

    /// The same observer (one shared latest note) for a client whose
    /// calls are paced by `pacer`: attempts' outcomes are fed back to it.
    pub(super) fn feeding(&self, pacer: Arc<Pacer>) -> Self {
        AttemptObserver {
            pacer: Some(pacer),
            ..self.clone()
        }
    }

    /// From now on, a throttled attempt of a backing-off pacer is not
    /// retried by the SDK: the call fails as throttled.
    pub(super) fn fail_fast_when_congested(&self) {
        self.fail_fast.store(true, Ordering::Relaxed);
    }

    /// The latest note, if any attempt failed transiently.
    pub(super) fn last(&self) -> Option<RetryNote> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, message: String) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(RetryNote {
            at: Instant::now(),
            message,
        });
    }

    /// Why an attempt failed, if it failed in a way worth retrying. The text
    /// comes from the error kind, the HTTP status and the error code: never
    /// from an error message (messages may echo what was sent).
    fn describe(&self, ctx: &InterceptorContext) -> Option<(String, Transient)> {
        let err = ctx.output_or_error()?.err()?;
        if err.is_timeout_error() {
            let message = match self.call_timeout {
                Some(t) => format!(
                    "an attempt timed out after {}",
                    humantime::format_duration(t)
                ),
                None => "an attempt timed out".into(),
            };
            return Some((message, Transient::Other));
        }
        if let Some(conn) = err.as_connector_error() {
            let message = if conn.is_timeout() {
                "connecting to AWS timed out".into()
            } else {
                "the connection to AWS failed or was reset".into()
            };
            return Some((message, Transient::Other));
        }
        let response = ctx.response()?;
        let status = response.status().as_u16();
        // The error type header, else `__type` of the JSON body (only that
        // field is read; the rest of a body may echo what was sent).
        let code = response
            .headers()
            .get("x-amzn-errortype")
            .map(str::to_string)
            .or_else(|| {
                let body: serde_json::Value =
                    serde_json::from_slice(response.body().bytes()?).ok()?;
                body.get("__type")?.as_str().map(str::to_string)
            })
            .map(|c| {
                // `Code:uri` in the header, `namespace#Code` in some bodies.
                let c = c.split(':').next().unwrap_or(&c);
                c.rsplit('#').next().unwrap_or(c).to_string()
            });
        let throttled = status == 429
            || code
                .as_deref()
                .is_some_and(|c| THROTTLING_CODES.contains(&c));
        let unavailable = status >= 500
            || code
                .as_deref()
                .is_some_and(|c| UNAVAILABLE_CODES.contains(&c));
        if !(throttled || unavailable) {
            return None;
        }
        let message = match code {
            Some(code) => format!("AWS answered {code} (HTTP {status})"),
            None => format!("AWS answered HTTP {status}"),
        };
        let kind = if throttled {
            Transient::Throttled
        } else {
            Transient::Other
        };
        Some((message, kind))
    }
}

impl ClassifyRetry for AttemptObserver {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let transient = self.describe(ctx);
        let throttled = matches!(transient, Some((_, Transient::Throttled)));
        if let Some((message, _)) = transient {
            self.record(message);
        }
        // The SDK runs classifiers more than once per attempt (connection
        // poisoning asks too), so the pacer is fed in `read_after_attempt`,
        // once; here only its verdict is read.
        if throttled
            && self.fail_fast.load(Ordering::Relaxed)
            && self.pacer.as_ref().is_some_and(|p| !p.retry_worthwhile())
        {
            // Backing off already: fail the call now.
            return RetryAction::RetryForbidden;
        }
        // Otherwise the SDK's own classifiers decide.
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "secretsync attempt observer"
    }
}

impl Intercept for AttemptObserver {
    fn name(&self) -> &'static str {
        "secretsync pacer feedback"
    }

    /// Notes when the attempt went out: a throttle of a call sent before
    /// the pacer's last slow-down belongs to the same congestion event.
    fn read_before_transmit(
        &self,
        _context: &sm_interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(AttemptSentAt(tokio::time::Instant::now()));
        Ok(())
    }

    /// Feeds each attempt's outcome to the pacer, exactly once per attempt,
    /// before the SDK decides about a retry.
    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(pacer) = &self.pacer else {
            return Ok(());
        };
        let ctx = context.inner();
        match (ctx.output_or_error(), self.describe(ctx)) {
            (Some(Ok(_)), _) => pacer.succeeded(),
            (Some(Err(_)), Some((_, Transient::Throttled))) => {
                let sent_at = cfg
                    .load::<AttemptSentAt>()
                    .map_or_else(tokio::time::Instant::now, |s| s.0);
                pacer.throttled(sent_at);
            }
            _ => {}
        }
        Ok(())
    }
}
