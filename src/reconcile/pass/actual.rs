//! Reading AWS's side of a pass: full listings, targeted describes, values, and what a pass's own writes tell the next one.

#[allow(unused_imports)]
use super::*;
use std::collections::BTreeSet;

use crate::reconcile::known::Scan;
use crate::store::{NAME_FILTER_MAX, OwnerFilter};

/// Reads what AWS holds for `desired`: owned secrets by tag, same-named
/// unowned ones by name, values of those the planner compares, and the
/// replicas of those `scope` asks for (see [`plan::names_to_describe`]).
pub async fn read_actual<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    opts: &PlanOptions,
    scope: DescribeReplicas,
    known: &KnownValues,
    listing: Listing,
) -> Result<Actual, StoreError> {
    let adopt = opts.adopt_existing;
    let key = &opts.token_key;
    let changed = match listing {
        Listing::Changed => read_changed(store, spec, desired, known, opts).await?,
        Listing::Full => None,
    };
    let mut actual = match changed {
        Some(actual) => actual,
        None => read_listing(store, spec, desired, known).await?,
    };
    let mut to_read = plan::names_to_read(spec, desired, &actual.secrets, adopt);
    // A current version whose value we wrote or read needs no read: AWS
    // never changes an existing version's value. Many-to-one secrets that
    // differ are still read (the planner's key guard needs their JSON).
    let by_name: BTreeMap<&str, &desired::DesiredSecret> = desired
        .secrets
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    to_read.retain(|name| {
        let Some(d) = by_name.get(name.as_str()) else {
            return true;
        };
        let version = actual
            .secrets
            .get(name)
            .and_then(|r| r.current_version.as_deref());
        match known.compare(key, name, version, &d.value) {
            Knowledge::Holds => {
                actual
                    .values
                    .insert(name.clone(), Ok(Some(d.value.clone())));
                false
            }
            Knowledge::Differs if d.json_keys.is_none() => {
                actual.known_different.insert(name.clone());
                false
            }
            Knowledge::Differs | Knowledge::Unknown => true,
        }
    });
    if !to_read.is_empty() {
        for (name, read) in read_values(store, &to_read).await? {
            // Reads may come back by ARN; map them to names.
            let name = actual
                .secrets
                .values()
                .find(|r| r.arn == name)
                .map_or(name, |r| r.name.clone());
            let listed = actual
                .secrets
                .get(&name)
                .is_some_and(|r| !r.pending_deletion);
            let entry = match read {
                // A listed secret whose value cannot be found has no current
                // version (created without a value): there is nothing to
                // compare, and an owned one simply gets the file's value.
                Err(StoreError::NotFound { .. }) if listed => Ok(None),
                Ok(v) => {
                    if let (Some(version), Some(value)) = (&v.version_id, &v.value) {
                        known.record(key, &name, version, value);
                    }
                    Ok(v.value)
                }
                Err(e) => Err(e.to_string()),
            };
            actual.values.insert(name, entry);
        }
    }
    for name in plan::names_to_describe(spec, desired, &actual.secrets, opts, scope) {
        match store.describe_replicas(&name).await {
            Ok(replicas) => {
                actual.replicas.insert(name, replicas);
            }
            // Gone since the listing: the next pass sees that.
            Err(StoreError::NotFound { .. }) => {}
            // Replicas stay unknown (nothing is planned for them) and the
            // value sync goes on. The rest are not asked this pass: a
            // missing permission or an outage would fail them all alike.
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "cannot read replication status; replicas are left as they are this pass");
                break;
            }
        }
    }
    Ok(actual)
}

/// The full listing: owned secrets by tag, same-named others by name.
pub(super) async fn read_listing<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    known: &KnownValues,
) -> Result<Actual, StoreError> {
    let mut actual = Actual::default();
    for r in list_owned(store, spec, desired, known).await? {
        actual.secrets.insert(r.name.clone(), r);
    }
    let unknown: Vec<String> = desired
        .claimed_names()
        .into_iter()
        .filter(|n| !actual.secrets.contains_key(*n))
        .map(str::to_string)
        .collect();
    if !unknown.is_empty() {
        for r in find_names(store, &unknown).await? {
            actual.secrets.insert(r.name.clone(), r);
        }
    }
    known.set_listing(&actual.secrets);
    Ok(actual)
}

/// This sync's own secrets, listed by the tag value the last listings
/// say is cheaper ([`KnownValues::owner_filter`]). A listing by the sync's
/// name is capped at one page more than the sync's own secrets need: a
/// fleet's first listing (nothing remembered yet, after a restart too)
/// then costs a few pages before it lists by the agent's id, not a page
/// per 100 secrets of every host that shares the sync's name.
async fn list_owned<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    known: &KnownValues,
) -> Result<Vec<RemoteSecret>, StoreError> {
    let page = usize::try_from(crate::store::LIST_PAGE_MAX).unwrap_or(100);
    let own = desired.secrets.len().max(known.owned_seen());
    let (agent, sync) = (spec.agent_id.as_str(), spec.sync_name.as_str());
    if known.owner_filter() == OwnerFilter::Sync {
        let cap = own / page + 2;
        if let Some(owned) = store
            .list_owned(agent, sync, OwnerFilter::Sync, cap)
            .await?
        {
            known.record_scan(OwnerFilter::Sync, scan_of(&owned));
            return Ok(owned.secrets);
        }
        // Capped: at least that many entries were someone else's.
        let wasted = Scan {
            scanned: cap * page,
            kept: own,
        };
        known.record_scan(OwnerFilter::Sync, wasted);
    }
    let owned = store
        .list_owned(agent, sync, OwnerFilter::Agent, usize::MAX)
        .await?
        .ok_or_else(StoreError::unfinished_listing)?;
    known.record_scan(OwnerFilter::Agent, scan_of(&owned));
    Ok(owned.secrets)
}

fn scan_of(owned: &crate::store::Owned) -> Scan {
    Scan {
        scanned: owned.scanned,
        kept: owned.secrets.len(),
    }
}

/// Finds the secrets named in `names` (any owner). Names are looked up
/// [`NAME_FILTER_MAX`] per `ListSecrets` call; when that would take two or
/// more calls and the names share a prefix, one listing of that prefix is
/// tried first (a first sync of 1,000 keys: one call instead of 100),
/// capped at half the lookups' cost. A prefix shared with more foreign
/// secrets than that falls back to the lookups, so the worst case costs
/// 1.5 times the lookups and the usual first sync one call.
async fn find_names<S: SecretStore>(
    store: &S,
    names: &[String],
) -> Result<Vec<RemoteSecret>, StoreError> {
    let lookups = names.len().div_ceil(NAME_FILTER_MAX);
    let prefix = common_prefix(names);
    if lookups >= 2 && !prefix.is_empty() {
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        if let Some(listed) = store
            .list_by_prefix_capped(prefix, (lookups / 2).max(1))
            .await?
        {
            return Ok(listed
                .into_iter()
                .filter(|r| wanted.contains(r.name.as_str()))
                .collect());
        }
    }
    store.lookup_names(names).await
}

/// The longest prefix every name starts with (on a char boundary).
fn common_prefix(names: &[String]) -> &str {
    let Some((first, rest)) = names.split_first() else {
        return "";
    };
    let mut len = first.len();
    for name in rest {
        len = first
            .char_indices()
            .zip(name.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(len);
    }
    &first[..len]
}

/// The narrow read of [`Listing::Changed`]: `None` when a full listing is
/// needed (no trusted listing, names differ, anything not plainly ours, or
/// a re-checked secret is no longer ours and live).
pub(super) async fn read_changed<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    desired: &Desired,
    known: &KnownValues,
    opts: &PlanOptions,
) -> Result<Option<Actual>, StoreError> {
    let key = &opts.token_key;
    // Replica changes are planned from DescribeSecret answers, not from
    // the listing: syncs with replicas always list in full.
    if !spec.replica_regions.is_empty() {
        return Ok(None);
    }
    let Some(cached) = known.listing() else {
        return Ok(None);
    };
    let owned = |r: &RemoteSecret| matches!(plan::ownership(spec, r), plan::Ownership::Ours);
    let live = |r: &RemoteSecret| owned(r) && !r.pending_deletion;
    let wanted: std::collections::BTreeSet<&str> =
        desired.secrets.iter().map(|d| d.name.as_str()).collect();
    // Every desired name is a live secret of ours in the listing, and every
    // live secret of ours there is desired: nothing to create, restore,
    // delete or check for conflicts. Ours already scheduled for deletion
    // may stay (they need nothing).
    let same_names = desired.errors.is_empty()
        && cached.values().all(|r| {
            if wanted.contains(r.name.as_str()) {
                live(r)
            } else {
                owned(r) && r.pending_deletion
            }
        })
        && wanted.iter().all(|n| cached.contains_key(*n));
    if !same_names {
        return Ok(None);
    }
    let mut actual = Actual::default();
    for r in cached
        .values()
        .filter(|r| !wanted.contains(r.name.as_str()))
    {
        actual.secrets.insert(r.name.clone(), r.clone());
    }
    for d in &desired.secrets {
        let Some(r) = cached.get(&d.name) else {
            return Ok(None);
        };
        // Tags as the listing showed them, with none of ours to remove: the
        // planner will not touch this secret's tags either.
        let tags_settled = d.tags.iter().all(|(k, v)| r.tags.get(k) == Some(v))
            && opts
                .managed_tags
                .get(&d.name)
                .is_none_or(|ours| ours.iter().all(|k| d.tags.contains_key(k)));
        if tags_settled && known.holds(key, &d.name, r.current_version.as_deref(), &d.value) {
            actual.secrets.insert(d.name.clone(), r.clone());
            continue;
        }
        // About to be written: ownership and version from AWS, now.
        match store.describe_secret(&d.name).await? {
            Some(fresh) if live(&fresh) => {
                actual.secrets.insert(d.name.clone(), fresh);
            }
            _ => {
                known.drop_listing();
                return Ok(None);
            }
        }
    }
    Ok(Some(actual))
}

/// After an apply, remembers the values AWS now holds for this sync's
/// secrets (written, or found equal) and forgets everything else.
pub(super) fn remember_applied(
    known: &KnownValues,
    key: &TokenKey,
    desired: &Desired,
    plan: &Plan,
    applied: &Applied,
) {
    // The listing stays true only through our own successful value writes.
    let only_value_writes = plan
        .actions
        .iter()
        .zip(&applied.outcomes)
        .all(|(a, o)| a.kind == plan::ActionKind::Update && matches!(o, apply::Outcome::Ok));
    if only_value_writes {
        for s in &applied.secrets {
            if let (SecretState::Synced, Some(version)) = (s.state, s.version_id.as_deref()) {
                known.listing_wrote(&s.name, version);
            }
        }
    } else {
        known.drop_listing();
    }
    let values: BTreeMap<&str, &SecretValue> = desired
        .secrets
        .iter()
        .map(|d| (d.name.as_str(), &d.value))
        .collect();
    known.retain(|name| values.contains_key(name));
    for s in &applied.secrets {
        match (
            s.state,
            s.version_id.as_deref(),
            values.get(s.name.as_str()),
        ) {
            (SecretState::Synced, Some(version), Some(value)) => {
                known.record(key, &s.name, version, value);
            }
            _ => known.forget(&s.name),
        }
    }
}

/// Reads values in batches; when a whole batch is refused for a reason other
/// than an outage (one unreadable secret can fail a batch in some
/// implementations), reads its secrets one by one so that one secret never
/// blocks the others. Outages still fail the read, to be retried.
async fn read_values<S: SecretStore>(
    store: &S,
    ids: &[String],
) -> Result<Vec<crate::store::ValueRead>, StoreError> {
    match store.get_values(ids).await {
        Ok(reads) => Ok(reads),
        Err(e) if e.is_transient() => Err(e),
        Err(e) if ids.len() == 1 => Ok(vec![(ids[0].clone(), Err(e))]),
        Err(_) => {
            let mut reads = Vec::with_capacity(ids.len());
            for id in ids {
                match store.get_values(std::slice::from_ref(id)).await {
                    Ok(mut one) => reads.append(&mut one),
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => reads.push((id.clone(), Err(e))),
                }
            }
            Ok(reads)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_table() {
        let cases: &[(&[&str], &str)] = &[
            (&[], ""),
            (&["prod/app/A"], "prod/app/A"),
            (&["prod/app/A", "prod/app/B"], "prod/app/"),
            (&["prod/app/AB", "prod/app/AC", "prod/x"], "prod/"),
            (&["a", "ab"], "a"),
            (&["ab", "a"], "a"),
            (&["x/1", "y/1"], ""),
            (&["pé/a", "pé/b"], "pé/"),
            (&["pé", "pè"], "p"),
        ];
        for (names, want) in cases {
            let names: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
            assert_eq!(common_prefix(&names), *want, "{names:?}");
        }
    }
}
