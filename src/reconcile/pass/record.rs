//! What a pass leaves in state_dir: tag keys and replica regions the agent set.

#[allow(unused_imports)]
use super::*;

/// Updates remembered tag ownership after an applied pass: tag keys set or
/// removed by a call that succeeded are recorded, even when a later step for
/// the same secret failed (the next pass sees those tags as already equal and
/// would never record them); deleted secrets are forgotten.
pub fn record_state(state: &mut SyncState, plan: &Plan, applied: &Applied) {
    let (mut created, mut deleted, mut restored) = (0, 0, 0);
    for a in applied.succeeded(plan) {
        match a.op {
            plan::Op::Create(_) => created += 1,
            plan::Op::Delete { .. } => deleted += 1,
            plan::Op::Restore => restored += 1,
            _ => {}
        }
    }
    // The most this sync owned during the pass is what it had plus what it
    // created (so the first pass, not the second, records the peak).
    state.record_guard(
        crate::reconcile::state::unix_now(),
        plan.owned_live + created,
        deleted,
        restored,
        plan.deletes_confirmed,
    );
    let mut tags_by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in applied.succeeded(plan) {
        if let plan::Op::Create(req) = &a.op {
            tags_by_name.insert(&a.name, req.tags.keys().cloned().collect());
        }
        if let plan::Op::Tag { set, .. } = &a.op {
            tags_by_name
                .entry(&a.name)
                .or_default()
                .extend(set.keys().cloned());
        }
    }
    record_replicas(state, plan, applied);
    for s in &applied.secrets {
        match s.state {
            SecretState::Deleted => {
                state.managed_tags.remove(&s.name);
            }
            _ => {
                if let Some(keys) = tags_by_name.get(s.name.as_str()) {
                    let entry = state.managed_tags.entry(s.name.clone()).or_default();
                    entry.extend(
                        keys.iter()
                            .filter(|k| !k.starts_with(naming::RESERVED_TAG_PREFIX))
                            .cloned(),
                    );
                }
                let removed: Vec<&String> = applied
                    .succeeded(plan)
                    .filter(|a| a.name == s.name)
                    .filter_map(|a| match &a.op {
                        plan::Op::Tag { remove, .. } => Some(remove),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if let Some(entry) = state.managed_tags.get_mut(&s.name) {
                    for r in removed {
                        entry.remove(r);
                    }
                }
            }
        }
    }
}

/// Updates remembered replica regions after an applied pass: what a
/// describe showed as ours, then each call that succeeded (a create with
/// replicas, an add, a removal); deleted secrets are forgotten.
pub(super) fn record_replicas(state: &mut SyncState, plan: &Plan, applied: &Applied) {
    for (name, ours) in &plan.replica_tracking {
        state.managed_replicas.insert(name.clone(), ours.clone());
    }
    for a in applied.succeeded(plan) {
        match &a.op {
            plan::Op::Create(req) => {
                state.managed_replicas.insert(
                    a.name.clone(),
                    req.replica_regions.iter().cloned().collect(),
                );
            }
            plan::Op::Replicate { add } => {
                state
                    .managed_replicas
                    .entry(a.name.clone())
                    .or_default()
                    .extend(add.iter().cloned());
            }
            plan::Op::RemoveReplicas { regions } => {
                if let Some(entry) = state.managed_replicas.get_mut(&a.name) {
                    entry.retain(|r| !regions.contains(r));
                }
            }
            plan::Op::Delete { .. } => {
                state.managed_replicas.remove(&a.name);
            }
            _ => {}
        }
    }
}
