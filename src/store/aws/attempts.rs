//! Watches the SDK's retry loop: every attempt's outcome passes through the
//! retry classifiers, timeouts included (no interceptor hook sees an
//! attempt timeout), so a classifier that never decides anything is the
//! one place to learn why a call that has not returned yet is being retried.
//! The engine turns the latest note into the status reason of a slow pass.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::interceptors::InterceptorContext;
use aws_sdk_secretsmanager::config::retry::{ClassifyRetry, RetryAction};

use super::{THROTTLING_CODES, UNAVAILABLE_CODES};
use crate::store::RetryNote;

/// Records the latest transient failure of any attempt of a client's calls.
/// Cheap to clone (shared state); install with `Builder::retry_classifier`.
#[derive(Debug, Clone, Default)]
pub(super) struct AttemptObserver {
    /// The configured attempt timeout, named in the note when one fires.
    call_timeout: Option<Duration>,
    last: Arc<Mutex<Option<RetryNote>>>,
}

impl AttemptObserver {
    /// An observer for a client whose attempts time out after `call_timeout`.
    pub(super) fn new(call_timeout: Option<Duration>) -> Self {
        AttemptObserver {
            call_timeout,
            last: Arc::default(),
        }
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
    fn describe(&self, ctx: &InterceptorContext) -> Option<String> {
        let err = ctx.output_or_error()?.err()?;
        if err.is_timeout_error() {
            return Some(match self.call_timeout {
                Some(t) => format!(
                    "an attempt timed out after {}",
                    humantime::format_duration(t)
                ),
                None => "an attempt timed out".into(),
            });
        }
        if let Some(conn) = err.as_connector_error() {
            return Some(if conn.is_timeout() {
                "connecting to AWS timed out".into()
            } else {
                "the connection to AWS failed or was reset".into()
            });
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
        Some(match code {
            Some(code) => format!("AWS answered {code} (HTTP {status})"),
            None => format!("AWS answered HTTP {status}"),
        })
    }
}

impl ClassifyRetry for AttemptObserver {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        if let Some(message) = self.describe(ctx) {
            self.record(message);
        }
        // Observes only: the SDK's own classifiers decide.
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "secretsync attempt observer"
    }
}
