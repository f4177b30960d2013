//! Error mapping: AWS error codes and SDK failures to StoreError; messages never echo a value.

#[allow(unused_imports)]
use super::*;

/// Whether a DeleteSecret failed because the secret is already scheduled
/// for deletion (AWS: "...because it was marked for deletion"; moto: "...
/// currently marked deleted").
pub(super) fn already_scheduled<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    let SdkError::ServiceError(ctx) = err else {
        return false;
    };
    let message = ctx.err().message().unwrap_or("");
    ctx.err().code() == Some("InvalidRequestException")
        && (message.contains("marked for deletion") || message.contains("marked deleted"))
}

/// Error codes that mean "slow down".
pub(super) const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
];
/// Error codes for a service-side fault worth retrying later.
pub(super) const UNAVAILABLE_CODES: &[&str] = &[
    "InternalServiceError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];
/// IAM or KMS refused: the operator must grant something.
pub(super) const ACCESS_CODES: &[&str] = &[
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
pub(super) const CREDENTIAL_CODES: &[&str] = &[
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
pub(super) const REJECTED_CODES: &[&str] = &[
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

/// Shortest run of a value's characters that, found in an AWS error
/// message, counts as an echo of the value.
pub(super) const ECHO_WINDOW: usize = 8;

/// Whether `message` quotes `value` or a piece of it: the whole value, or
/// any [`ECHO_WINDOW`] consecutive characters of it (AWS-style messages
/// quote input truncated, e.g. `Value 'abc...' at 'secretString'`). A value
/// shorter than the window counts when it appears whole. Errs towards
/// withholding: a stray match costs an error message's detail, a miss
/// would put (part of) a secret into logs and status.
pub(super) fn echoes(message: &str, value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    let starts: Vec<usize> = value.char_indices().map(|(i, _)| i).collect();
    if starts.len() <= ECHO_WINDOW {
        return message.contains(value);
    }
    (0..=starts.len() - ECHO_WINDOW).any(|i| {
        let end = starts.get(i + ECHO_WINDOW).copied().unwrap_or(value.len());
        message.contains(&value[starts[i]..end])
    })
}

/// Text for an AWS error: code, message and request id. If the message
/// quotes the value we sent, or any piece of it ([`echoes`]), it is
/// withheld rather than logged.
pub(super) fn describe(
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<&str>,
    sent: Option<&SecretValue>,
) -> String {
    let mut text = code.unwrap_or("UnknownError").to_owned();
    if let Some(message) = message.filter(|m| !m.is_empty()) {
        let leaks = sent.is_some_and(|v| echoes(message, v.expose()));
        text.push_str(": ");
        text.push_str(if leaks {
            "(message withheld: it quoted the secret value)"
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
pub(super) fn from_code(
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
        let message = if code.starts_with("KMS") || code.ends_with("cryptionFailure") {
            format!(
                "the KMS key cannot be used ({message}); check the key's state and that its key policy lets these credentials use it through Secrets Manager"
            )
        } else {
            message
        };
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
pub(super) fn classify<E>(
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
pub(super) fn credentials_error(op: &'static str, cred: &CredentialsError) -> StoreError {
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
    } else if matches!(cred, CredentialsError::CredentialsNotLoaded(_)) {
        StoreError::Config(format!("{op}: {}", no_credentials_text(None)))
    } else if find_in_chain::<aws_config::imds::client::error::ImdsError>(cred).is_some() {
        // IMDS is the default chain's last step: every provider before it
        // found nothing, so its own failure says little on its own.
        StoreError::Config(format!("{op}: {}", no_credentials_text(Some(&text))))
    } else {
        StoreError::Config(format!("{op}: could not load AWS credentials: {text}"))
    }
}

/// "No credentials anywhere": the whole default chain in one line, the
/// last step's failure when it says something, and what to do.
pub(super) fn no_credentials_text(last_step: Option<&str>) -> String {
    let last = last_step
        .map(|t| format!("; the last step (IMDS) said: {t}"))
        .unwrap_or_default();
    format!(
        "no AWS credentials found (tried: environment variables, shared config and credentials files (profile, SSO, credential_process), web identity token, ECS container credentials, EC2 instance metadata (IMDS)){last}. Hint: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or aws.profile / aws.role_arn in the config; for a local emulator, set aws.endpoint_url and dummy credentials (AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test)"
    )
}

/// An error and its sources as one line, `outer: inner: root`, without the
/// `Debug` dump the SDK's own formatter appends. Parts that merely repeat
/// the text before them are skipped.
pub(super) fn chain_text(err: &(dyn StdError + 'static)) -> String {
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
pub(super) fn chain_is_network(err: &(dyn StdError + 'static)) -> bool {
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
pub(super) fn find_in_chain<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}
