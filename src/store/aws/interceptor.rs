//! The SDK interceptor that counts calls, throttles and retries for the metrics.

#[allow(unused_imports)]
use super::*;

/// Counts calls, retries and throttled attempts into [`Metrics`]. Reads
/// only the status, the error-type header and, for error responses, the
/// error body's `__type` (error bodies carry no values).
#[derive(Debug)]
pub(super) struct MetricsInterceptor(pub(super) Arc<Metrics>);

impl MetricsInterceptor {
    fn operation(cfg: &ConfigBag) -> &str {
        cfg.load::<Metadata>().map_or("unknown", Metadata::name)
    }
}

impl Intercept for MetricsInterceptor {
    fn name(&self) -> &'static str {
        "secretsync-metrics"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = Self::operation(cfg);
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            self.0.aws_retried(op);
        }
        if response_outcome(context.response()) == "throttled" {
            self.0.aws_throttled(op);
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0
            .aws_call(Self::operation(cfg), response_outcome(context.response()));
        Ok(())
    }
}

/// Outcome class of one HTTP exchange: `ok`, or [`StoreError::kind`] of the
/// error it maps to (`unavailable` when no response arrived).
pub(super) fn response_outcome(response: Option<&HttpResponse>) -> &'static str {
    let Some(response) = response else {
        return "unavailable";
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return "ok";
    }
    let code = error_code(response);
    from_code("", code.as_deref(), None, Some(status), None, None).kind()
}

/// The AWS error code of an error response: the `x-amzn-errortype` header,
/// else the JSON body's `__type` (or `code`), without namespace or suffix.
pub(super) fn error_code(response: &HttpResponse) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "__type")]
        kind: Option<String>,
        code: Option<String>,
    }
    let raw = response
        .headers()
        .get("x-amzn-errortype")
        .map(str::to_owned)
        .or_else(|| {
            let bytes = response.body().bytes()?;
            let body: Body = serde_json::from_slice(bytes).ok()?;
            body.kind.or(body.code)
        })?;
    let after_ns = raw.rsplit('#').next().unwrap_or(&raw);
    Some(after_ns.split(':').next().unwrap_or(after_ns).to_owned())
}
