//! KMS keys by identity: what a pass resolves before planning, and what it
//! remembers of its own key writes when KMS cannot resolve a key.
//!
//! The planner compares keys by spelling first; only when the configured
//! key and the key AWS reports are spelt differently does the pass ask KMS
//! (`DescribeKey`, cached per store) what they name. When KMS will not say
//! (`kms:DescribeKey` denied) the agent writes the configured key once and
//! then accepts whatever AWS reports for that secret afterwards, for as
//! long as that report stays the same ([`KmsWrites`]).

#[allow(unused_imports)]
use super::*;

use std::sync::Mutex;

use crate::reconcile::plan::{ActionKind, KmsFacts, Op};

/// One KMS key write this agent made: the key it set, and what AWS
/// reported for the secret on the first read after it (`None` until then).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KmsWrite {
    configured: String,
    reported: Option<Option<String>>,
}

/// Per-sync runtime memory of the agent's own KMS key writes (a cheap
/// handle: clones share it). Empty for one-shot commands, so each `sync`
/// run may write an unresolvable key once.
#[derive(Debug, Clone, Default)]
pub struct KmsWrites {
    inner: Arc<Mutex<BTreeMap<String, KmsWrite>>>,
}

impl KmsWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, KmsWrite>> {
        // Only a memory: after a panic elsewhere, keep what is there.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the KMS key writes of `plan` that succeeded.
    pub fn record(&self, plan: &Plan, applied: &Applied) {
        let mut writes = self.lock();
        for action in applied.succeeded(plan) {
            if let (
                ActionKind::Kms,
                Op::UpdateMetadata {
                    kms_key_id: Some(key),
                    ..
                },
            ) = (action.kind, &action.op)
            {
                writes.insert(
                    action.name.clone(),
                    KmsWrite {
                        configured: key.clone(),
                        reported: None,
                    },
                );
            }
        }
    }

    /// The accepted `(configured, reported)` pairs for the secrets read
    /// this pass; the first read after a write fixes what AWS reports.
    fn accepted(
        &self,
        secrets: &BTreeMap<String, RemoteSecret>,
    ) -> BTreeMap<String, (String, Option<String>)> {
        let mut writes = self.lock();
        writes.retain(|name, _| secrets.contains_key(name));
        writes
            .iter_mut()
            .filter_map(|(name, w)| {
                let now = secrets.get(name)?.kms_key_id.clone();
                let reported = w.reported.get_or_insert(now).clone();
                Some((name.clone(), (w.configured.clone(), reported)))
            })
            .collect()
    }
}

/// What the planner needs to compare KMS keys by identity: the spellings
/// [`plan::kms_spellings_to_resolve`] names, resolved through the store
/// (cached there), and the accepted pairs of earlier writes. A failure to
/// resolve is logged and leaves that spelling unresolved (compared by text
/// and by `writes`): KMS trouble never fails a pass.
pub async fn kms_facts<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    actual: &Actual,
    adopt_existing: bool,
    writes: &KmsWrites,
) -> KmsFacts {
    let mut facts = KmsFacts {
        accepted: writes.accepted(&actual.secrets),
        ..KmsFacts::default()
    };
    for spelling in plan::kms_spellings_to_resolve(spec, desired, &actual.secrets, adopt_existing) {
        match store.resolve_kms_key(&spelling).await {
            Ok(Some(identity)) => {
                facts.identities.insert(spelling, identity);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(key = %spelling, error = %e, "cannot resolve KMS key; comparing it by spelling this pass");
            }
        }
    }
    facts
}
