//! Apply: runs a plan's calls through a store with bounded concurrency.
//!
//! Steps for one secret run in plan order (restore, value, tags, metadata)
//! and stop at the first failure; different secrets run concurrently, and
//! the store paces the calls. Every action gets an outcome, every secret a
//! final state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::task::JoinSet;

pub use crate::reconcile::outcome::{Applied, Outcome};
use crate::reconcile::plan::{Action, Op, Plan, SecretState};
use crate::store::{SecretStore, StoreError};

/// Default number of secrets worked on at once; pacing, not this, bounds
/// the call rate, so it only needs to cover latency × rate.
pub const DEFAULT_CONCURRENCY: usize = 32;

async fn run_step<S: SecretStore>(
    store: &S,
    action: &Action,
) -> Result<Option<String>, StoreError> {
    match &action.op {
        Op::None => Ok(None),
        Op::Create(req) => store.create_secret(req).await.map(|w| w.version_id),
        Op::PutValue { value, token } => store
            .put_value(&action.name, value, token)
            .await
            .map(|w| w.version_id),
        Op::Tag { set, remove } => {
            if !set.is_empty() {
                store.tag(&action.name, set).await?;
            }
            if !remove.is_empty() {
                store.untag(&action.name, remove).await?;
            }
            Ok(None)
        }
        Op::UpdateMetadata {
            kms_key_id,
            description,
        } => store
            .update_metadata(&action.name, kms_key_id.as_deref(), description.as_deref())
            .await
            .map(|()| None),
        Op::Delete {
            recovery_window_days,
        } => store
            .delete_secret(&action.name, *recovery_window_days)
            .await
            .map(|()| None),
        Op::Restore => store.restore_secret(&action.name).await.map(|()| None),
        Op::Replicate { add } => store.replicate_to(&action.name, add).await.map(|()| None),
        Op::RemoveReplicas { regions } => store
            .remove_replicas(&action.name, regions)
            .await
            .map(|()| None),
    }
}

type GroupResult = (Vec<(usize, Outcome)>, Option<String>, Option<StoreError>);

/// Throttled failures after which a pass starts no more secrets. One or two
/// are a fleet's normal congestion (each slows the store's pacer, see
/// `store::pacing`); this many in one pass means the quota is spent.
pub const THROTTLED_FAILURES_MAX: usize = 8;

/// Applies `plan` through `store`, at most `concurrency` secrets at once.
///
/// Tasks are started as earlier ones finish, so a plan of thousands of
/// secrets holds at most `concurrency` tasks (and copies of their actions)
/// at any time.
pub async fn apply<S: SecretStore>(store: Arc<S>, plan: &Plan, concurrency: usize) -> Applied {
    // Action indices per secret, in plan order.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, action) in plan.actions.iter().enumerate() {
        if action.op != Op::None {
            groups.entry(action.name.as_str()).or_default().push(i);
        }
    }
    let with_calls: BTreeSet<&str> = groups.keys().copied().collect();
    let mut outcomes = vec![Outcome::NotRun; plan.actions.len()];
    let mut results: BTreeMap<String, (Option<String>, Option<StoreError>)> = BTreeMap::new();
    let mut queue = groups.into_iter();
    let mut tasks: JoinSet<(String, GroupResult)> = JoinSet::new();
    // A call AWS throttled through the store's retries slows the store's
    // pacer, which spaces the rest of the pass out; the pass goes on. After
    // THROTTLED_FAILURES_MAX such failures the account's quota is clearly
    // spent (other hosts share it): the rest waits for the pass's retry.
    let mut throttled_failures = 0;
    let mut started: BTreeSet<String> = BTreeSet::new();
    loop {
        while throttled_failures < THROTTLED_FAILURES_MAX && tasks.len() < concurrency.max(1) {
            let Some((name, indices)) = queue.next() else {
                break;
            };
            let steps: Vec<(usize, Action)> = indices
                .into_iter()
                .map(|i| (i, plan.actions[i].clone()))
                .collect();
            let store = Arc::clone(&store);
            let name = name.to_string();
            started.insert(name.clone());
            tasks.spawn(tracing::Instrument::in_current_span(async move {
                let mut done = Vec::with_capacity(steps.len());
                let mut version = None;
                let mut failure = None;
                for (i, action) in &steps {
                    if failure.is_some() {
                        done.push((*i, Outcome::Skipped));
                        continue;
                    }
                    match run_step(store.as_ref(), action).await {
                        Ok(v) => {
                            tracing::info!(secret = %action.name, action = ?action.kind, "write");
                            version = v.or(version);
                            done.push((*i, Outcome::Ok));
                        }
                        Err(e) => {
                            tracing::warn!(secret = %action.name, action = ?action.kind, error = %e, "call failed");
                            failure = Some(e.clone());
                            done.push((*i, Outcome::Failed(e)));
                        }
                    }
                }
                (name, (done, version, failure))
            }));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((name, (done, version, failure))) => {
                for (i, o) in done {
                    outcomes[i] = o;
                }
                if failure.as_ref().is_some_and(StoreError::is_throttled) {
                    throttled_failures += 1;
                }
                results.insert(name, (version, failure));
            }
            // A panicking task is a bug; its secrets are marked ERROR below.
            Err(e) => {
                tracing::error!(error = %crate::logging::join_error_text(e), "apply task failed")
            }
        }
    }
    let secrets = plan
        .secrets
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let had_calls = with_calls.contains(s.name.as_str());
            match results.get(&s.name) {
                Some((_, Some(err))) => {
                    s.state = if err.is_transient() {
                        SecretState::Pending
                    } else {
                        SecretState::Error
                    };
                    s.message = Some(err.to_string());
                }
                Some((Some(version), None)) => s.version_id = Some(version.clone()),
                Some((None, None)) => {}
                None if had_calls && !started.contains(&s.name) => {
                    s.state = SecretState::Pending;
                    s.message = Some("not sent: AWS throttled this pass; will retry".into());
                }
                None if had_calls => {
                    s.state = SecretState::Error;
                    s.message = Some("internal error: apply task did not finish".into());
                }
                None => {}
            }
            s
        })
        .collect();
    Applied { outcomes, secrets }
}
