//! What `check` concludes about a configured `kms_key_id` from KMS's
//! `DescribeKey` answer (pure; the call is [`crate::store::aws::AwsStore::describe_kms_key`]).
//!
//! `DescribeKey` is the one read-only call that tells whether Secrets
//! Manager can use a key: that it exists in the secrets' region, is
//! enabled, and is a symmetric encryption key. It cannot tell whether the
//! key *policy* lets these credentials encrypt through Secrets Manager: a
//! `kms:GenerateDataKey` dry run is evaluated without `kms:ViaService`, so
//! under the least-privilege policy we ship (KMS only via Secrets Manager)
//! it would be denied even when writes work. That part shows up on the
//! first write, as an ERROR naming the KMS key.
//!
//! [`KmsCache`] is the per-store memory of `DescribeKey` answers that lets
//! the planner compare keys by identity (`SecretStore::resolve_kms_key`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{KeyIdentity, KmsKeyInfo, StoreError};

/// How long a `DescribeKey` answer is trusted. An alias can be pointed at
/// another key (`UpdateAlias`), so the answer is not kept forever; ten
/// minutes is the default drift interval, so a drift check resolves each
/// configured key at most once.
pub const RESOLVE_TTL: Duration = Duration::from_secs(600);

/// One cached answer.
type Answer = Result<Option<KeyIdentity>, StoreError>;

/// `DescribeKey` answers per key spelling, shared by every sync of one
/// store (connection). Denied (`Ok(None)`) and permanent failures (a key
/// that does not exist) are cached like successes, so a pass never asks
/// twice within [`RESOLVE_TTL`]; transient failures are not cached.
#[derive(Debug, Default)]
pub struct KmsCache {
    answers: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl KmsCache {
    /// The cached answer for `key`, or `describe`'s (then cached). An
    /// `AccessDenied` from `describe` becomes `Ok(None)`: KMS will not say.
    pub async fn resolve<Fut>(&self, key: &str, describe: impl FnOnce() -> Fut) -> Answer
    where
        Fut: std::future::Future<Output = Result<KeyIdentity, StoreError>>,
    {
        if let Some(answer) = self.cached(key) {
            return answer;
        }
        let answer = match describe().await {
            Ok(identity) => Ok(Some(identity)),
            Err(StoreError::AccessDenied { op, message }) => {
                tracing::warn!(key, op, %message, "kms:DescribeKey denied; KMS keys are compared by spelling (see docs/operations.md)");
                Ok(None)
            }
            Err(e) => Err(e),
        };
        if !matches!(&answer, Err(e) if e.is_transient()) {
            self.lock()
                .insert(key.to_owned(), (Instant::now(), answer.clone()));
        }
        answer
    }

    fn cached(&self, key: &str) -> Option<Answer> {
        let answers = self.lock();
        let (at, answer) = answers.get(key)?;
        (at.elapsed() < RESOLVE_TTL).then(|| answer.clone())
    }

    /// The map only caches: after a panic elsewhere, keep using it.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Answer)>> {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Usable as far as KMS can tell; the text says what was checked.
    Usable(String),
    /// Secrets Manager cannot use it; the text says why and what fails.
    Unusable(String),
    /// Could not be checked (no `kms:DescribeKey`, KMS unreachable).
    Unknown(String),
}

/// The region part of a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`).
fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty())
}

/// Judges `DescribeKey`'s answer for a key used by secrets in `region`.
pub fn verdict(key_id: &str, region: &str, answer: &Result<KmsKeyInfo, StoreError>) -> KeyVerdict {
    let info = match answer {
        Ok(info) => info,
        Err(StoreError::AccessDenied { message, .. }) => {
            return KeyVerdict::Unknown(format!(
                "cannot check KMS key {key_id}: kms:DescribeKey denied ({message}); grant it (see packaging/iam/agent-kms-policy.json) to let check verify the key"
            ));
        }
        Err(StoreError::Rejected { message, .. }) if message.contains("NotFoundException") => {
            return KeyVerdict::Unusable(format!(
                "KMS key {key_id} does not exist in {region} (or these credentials cannot see it): creating and re-encrypting secrets would fail"
            ));
        }
        Err(e) if e.is_transient() => {
            return KeyVerdict::Unknown(format!("cannot check KMS key {key_id}: {e}"));
        }
        Err(e) => {
            return KeyVerdict::Unusable(format!("KMS key {key_id} cannot be used: {e}"));
        }
    };
    let arn = &info.arn;
    if info.state != "Enabled" || !info.enabled {
        return KeyVerdict::Unusable(format!(
            "KMS key {key_id} ({arn}) is {}: Secrets Manager cannot encrypt or decrypt with it (writes fail with KMSInvalidStateException or KMSDisabledException)",
            info.state
        ));
    }
    // Judged only when KMS reports them (it always does; emulators may not).
    let usage = info.usage.as_deref().unwrap_or("ENCRYPT_DECRYPT");
    let spec = info.spec.as_deref().unwrap_or("SYMMETRIC_DEFAULT");
    if usage != "ENCRYPT_DECRYPT" || spec != "SYMMETRIC_DEFAULT" {
        return KeyVerdict::Unusable(format!(
            "KMS key {key_id} ({arn}) is {usage} / {spec}: Secrets Manager needs a symmetric encryption key (ENCRYPT_DECRYPT / SYMMETRIC_DEFAULT)"
        ));
    }
    if let Some(key_region) = arn_region(arn)
        && key_region != region
    {
        return KeyVerdict::Unusable(format!(
            "KMS key {key_id} ({arn}) is in {key_region}, the secrets are in {region}: a KMS key works only in its own region"
        ));
    }
    KeyVerdict::Usable(format!(
        "KMS key {key_id} usable ({arn}, Enabled, symmetric)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: &str, usage: &str, spec: &str, arn_region: &str) -> KmsKeyInfo {
        KmsKeyInfo {
            arn: format!("arn:aws:kms:{arn_region}:123456789012:key/1234abcd"),
            enabled: state == "Enabled",
            state: state.into(),
            usage: Some(usage.into()),
            spec: Some(spec.into()),
        }
    }

    #[test]
    fn verdicts() {
        let ok = key(
            "Enabled",
            "ENCRYPT_DECRYPT",
            "SYMMETRIC_DEFAULT",
            "eu-west-1",
        );
        let cases: Vec<(&str, Result<KmsKeyInfo, StoreError>, &str, &str)> = vec![
            ("usable", Ok(ok.clone()), "usable", "Enabled, symmetric"),
            (
                "disabled",
                Ok(key(
                    "Disabled",
                    "ENCRYPT_DECRYPT",
                    "SYMMETRIC_DEFAULT",
                    "eu-west-1",
                )),
                "unusable",
                "is Disabled",
            ),
            (
                "pending deletion",
                Ok(key(
                    "PendingDeletion",
                    "ENCRYPT_DECRYPT",
                    "SYMMETRIC_DEFAULT",
                    "eu-west-1",
                )),
                "unusable",
                "is PendingDeletion",
            ),
            (
                "asymmetric",
                Ok(key("Enabled", "SIGN_VERIFY", "RSA_2048", "eu-west-1")),
                "unusable",
                "symmetric encryption key",
            ),
            (
                "other region",
                Ok(key(
                    "Enabled",
                    "ENCRYPT_DECRYPT",
                    "SYMMETRIC_DEFAULT",
                    "us-east-1",
                )),
                "unusable",
                "is in us-east-1, the secrets are in eu-west-1",
            ),
            (
                "not found",
                Err(StoreError::Rejected {
                    op: "kms:DescribeKey",
                    message: "NotFoundException: Alias alias/x is not found.".into(),
                }),
                "unusable",
                "does not exist in eu-west-1",
            ),
            (
                "access denied",
                Err(StoreError::AccessDenied {
                    op: "kms:DescribeKey",
                    message: "AccessDeniedException: not authorized".into(),
                }),
                "unknown",
                "kms:DescribeKey denied",
            ),
            (
                "kms down",
                Err(StoreError::Unavailable {
                    op: "kms:DescribeKey",
                    message: "timeout".into(),
                }),
                "unknown",
                "cannot check",
            ),
        ];
        for (what, answer, want, text) in cases {
            let v = verdict("alias/app", "eu-west-1", &answer);
            let (kind, got) = match &v {
                KeyVerdict::Usable(t) => ("usable", t),
                KeyVerdict::Unusable(t) => ("unusable", t),
                KeyVerdict::Unknown(t) => ("unknown", t),
            };
            assert_eq!(kind, want, "{what}: {v:?}");
            assert!(got.contains(text), "{what}: {got}");
            assert!(got.contains("alias/app"), "{what}: names the key: {got}");
        }
        assert_eq!(arn_region("alias/app"), None);
    }
}
