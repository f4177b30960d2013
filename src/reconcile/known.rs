//! What the agent knows of the values in AWS between passes, so that an edit
//! to one key does not read every value of the sync.
//!
//! A pass always lists the sync's secrets (tags, ownership, and the version
//! id labelled `AWSCURRENT`). AWS never changes the value of an existing
//! version, so when that version id is one whose value we wrote or read
//! before, and that value equals the desired one, the value needs no read.
//! Anything else (unknown version: someone wrote, or we never saw it) is
//! read as before. Only keyed digests are kept, never values.
//!
//! It also keeps the sync's last full listing, so that a pass started by a
//! file event can re-check (`DescribeSecret`) only the secrets it is about
//! to write instead of listing the whole sync (see
//! [`crate::reconcile::Listing`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::Mac;

use crate::reconcile::plan::TokenKey;
use crate::secret::SecretValue;
use crate::store::{LIST_PAGE_MAX, OwnerFilter, RemoteSecret};

/// What [`KnownValues::compare`] can say without reading the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// The current version holds exactly this value.
    Holds,
    /// The current version holds some other value.
    Differs,
    /// The current version was never seen: read it.
    Unknown,
}

/// A value seen in AWS: its version id and a keyed digest of the value.
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    version: String,
    digest: [u8; 32],
}

#[derive(Default)]
struct Memory {
    values: BTreeMap<String, Seen>,
    /// The last full listing, kept up to date with our own value writes;
    /// dropped by anything else we change.
    listing: Option<BTreeMap<String, RemoteSecret>>,
    /// What each owned-listing filter cost when last used.
    scans: Scans,
}

/// Entries AWS sent for an owned listing, and how many of them were ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Entries the server-side filter let through.
    pub scanned: usize,
    /// Of those, this sync's own.
    pub kept: usize,
}

/// The last [`Scan`] of each [`OwnerFilter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scans {
    /// Filtered by the sync's name.
    pub by_sync: Option<Scan>,
    /// Filtered by the agent's id.
    pub by_agent: Option<Scan>,
}

impl Scans {
    /// The filter for the next owned listing: by sync name until that
    /// listing wastes a page or more on other agents' secrets (a fleet
    /// sharing the sync's name), then by agent id; once both were tried,
    /// whichever let fewer entries through.
    pub fn choose(&self) -> OwnerFilter {
        let page = usize::try_from(LIST_PAGE_MAX).unwrap_or(100);
        match (self.by_sync, self.by_agent) {
            (Some(s), Some(a)) if a.scanned < s.scanned => OwnerFilter::Agent,
            (Some(s), None) if s.scanned >= s.kept + page => OwnerFilter::Agent,
            _ => OwnerFilter::Sync,
        }
    }

    /// Remembers what a listing by `by` cost.
    pub fn record(&mut self, by: OwnerFilter, scan: Scan) {
        match by {
            OwnerFilter::Sync => self.by_sync = Some(scan),
            OwnerFilter::Agent => self.by_agent = Some(scan),
        }
    }
}

/// Per-sync memory of values in AWS, shared by the passes of one sync (a
/// cheap handle: clones share the same memory). Empty for one-shot
/// commands, which therefore read every value.
#[derive(Clone, Default)]
pub struct KnownValues {
    inner: Arc<Mutex<Memory>>,
}

impl std::fmt::Debug for KnownValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownValues({} secrets)", self.lock().values.len())
    }
}

/// HMAC-SHA256 under the agent's token key, so the digests in memory
/// cannot be checked against guessed values without the key.
fn digest(key: &TokenKey, name: &str, value: &SecretValue) -> [u8; 32] {
    let mut mac = key.mac(b"secretsync/known/v1\0");
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac.update(value.expose().as_bytes());
    mac.finalize().into_bytes().into()
}

impl KnownValues {
    /// The memory is only an optimisation: after a panic elsewhere while it
    /// was locked, start from nothing rather than trust it.
    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = Memory::default();
            guard
        })
    }

    /// What is known of AWS's current version of `name` against `value`.
    pub fn compare(
        &self,
        key: &TokenKey,
        name: &str,
        current_version: Option<&str>,
        value: &SecretValue,
    ) -> Knowledge {
        let Some(version) = current_version else {
            return Knowledge::Unknown;
        };
        match self.lock().values.get(name) {
            Some(s) if s.version == version => {
                if s.digest == digest(key, name, value) {
                    Knowledge::Holds
                } else {
                    Knowledge::Differs
                }
            }
            _ => Knowledge::Unknown,
        }
    }

    /// Whether AWS's current version of `name` is known to hold `value`.
    pub fn holds(
        &self,
        key: &TokenKey,
        name: &str,
        current_version: Option<&str>,
        value: &SecretValue,
    ) -> bool {
        self.compare(key, name, current_version, value) == Knowledge::Holds
    }

    /// Remembers that `version` of `name` holds `value` (read or written).
    pub fn record(&self, key: &TokenKey, name: &str, version: &str, value: &SecretValue) {
        let seen = Seen {
            version: version.to_string(),
            digest: digest(key, name, value),
        };
        self.lock().values.insert(name.to_string(), seen);
    }

    /// Forgets `name` (its value is no longer known).
    pub fn forget(&self, name: &str) {
        self.lock().values.remove(name);
    }

    /// Keeps only the names `keep` accepts (secrets that left the sync).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().values.retain(|name, _| keep(name));
    }

    /// How many secrets are remembered.
    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    /// The last full listing, if still trusted.
    pub fn listing(&self) -> Option<BTreeMap<String, RemoteSecret>> {
        self.lock().listing.clone()
    }

    /// Remembers a full listing.
    pub fn set_listing(&self, secrets: &BTreeMap<String, RemoteSecret>) {
        self.lock().listing = Some(secrets.clone());
    }

    /// The filter the next owned listing should use ([`Scans::choose`]).
    pub fn owner_filter(&self) -> OwnerFilter {
        self.lock().scans.choose()
    }

    /// How many secrets of this sync the last owned listing found.
    pub fn owned_seen(&self) -> usize {
        let scans = self.lock().scans;
        scans
            .by_sync
            .into_iter()
            .chain(scans.by_agent)
            .map(|s| s.kept)
            .max()
            .unwrap_or(0)
    }

    /// Remembers what an owned listing cost.
    pub fn record_scan(&self, by: OwnerFilter, scan: Scan) {
        self.lock().scans.record(by, scan);
    }

    /// Stops trusting the listing: the next pass lists in full.
    pub fn drop_listing(&self) {
        self.lock().listing = None;
    }

    /// Our write made `version` current for `name` (the listing stays
    /// true otherwise: a value write changes nothing else).
    pub fn listing_wrote(&self, name: &str, version: &str) {
        let mut memory = self.lock();
        let known = memory
            .listing
            .as_mut()
            .and_then(|l| l.get_mut(name))
            .map(|r| r.current_version = Some(version.to_string()));
        if known.is_none() {
            memory.listing = None;
        }
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn owner_filter_choice_table() {
        let scan = |scanned, kept| Some(Scan { scanned, kept });
        let cases = [
            (None, None, OwnerFilter::Sync),
            // By sync name, little waste: stay.
            (scan(120, 100), None, OwnerFilter::Sync),
            (scan(199, 100), None, OwnerFilter::Sync),
            // A page or more of other agents' secrets: try the agent id.
            (scan(200, 100), None, OwnerFilter::Agent),
            (scan(50_000, 50), None, OwnerFilter::Agent),
            // Both tried: the cheaper one.
            (scan(50_000, 50), scan(50, 50), OwnerFilter::Agent),
            (scan(300, 100), scan(1_000, 100), OwnerFilter::Sync),
            (scan(300, 100), scan(300, 100), OwnerFilter::Sync),
        ];
        for (by_sync, by_agent, want) in cases {
            let scans = Scans { by_sync, by_agent };
            assert_eq!(scans.choose(), want, "{scans:?}");
        }
    }

    use super::*;

    fn v(s: &str) -> SecretValue {
        SecretValue::new(s.to_string())
    }

    #[test]
    fn holds_only_for_the_recorded_version_and_value() {
        let key = TokenKey([7; 32]);
        let known = KnownValues::default();
        assert!(
            !known.holds(&key, "a", Some("v1"), &v("x")),
            "nothing known"
        );
        known.record(&key, "a", "v1", &v("x"));
        let cases = [
            ("a", Some("v1"), "x", true),
            ("a", Some("v2"), "x", false), // someone wrote a new version
            ("a", None, "x", false),       // no current version listed
            ("a", Some("v1"), "y", false), // the file changed
            ("b", Some("v1"), "x", false), // another secret
        ];
        for (name, version, value, want) in cases {
            assert_eq!(
                known.holds(&key, name, version, &v(value)),
                want,
                "{name} {version:?} {value}"
            );
        }
        assert_eq!(
            known.compare(&key, "a", Some("v1"), &v("y")),
            Knowledge::Differs
        );
        assert_eq!(
            known.compare(&key, "a", Some("v2"), &v("y")),
            Knowledge::Unknown
        );
        // Another key (another install) does not match the digest.
        assert!(!known.holds(&TokenKey([8; 32]), "a", Some("v1"), &v("x")));
    }

    #[test]
    fn forget_retain_and_shared_clones() {
        let key = TokenKey([1; 32]);
        let known = KnownValues::default();
        let shared = known.clone();
        known.record(&key, "a", "v1", &v("x"));
        known.record(&key, "b", "v1", &v("y"));
        assert!(shared.holds(&key, "a", Some("v1"), &v("x")), "clones share");
        shared.forget("a");
        assert!(!known.holds(&key, "a", Some("v1"), &v("x")));
        known.retain(|n| n != "b");
        assert!(known.is_empty());
    }

    #[test]
    fn listing_follows_our_writes_and_is_dropped_for_unknown_names() {
        let known = KnownValues::default();
        assert!(known.listing().is_none());
        let a = RemoteSecret {
            name: "a".into(),
            current_version: Some("v1".into()),
            ..Default::default()
        };
        known.set_listing(&BTreeMap::from([("a".to_string(), a)]));
        known.listing_wrote("a", "v2");
        let listing = known.listing().expect("kept");
        assert_eq!(listing["a"].current_version.as_deref(), Some("v2"));
        known.listing_wrote("b", "v1");
        assert!(
            known.listing().is_none(),
            "a write it cannot place drops it"
        );
        known.set_listing(&listing);
        known.drop_listing();
        assert!(known.listing().is_none());
    }

    #[test]
    fn debug_shows_no_digests() {
        let known = KnownValues::default();
        known.record(&TokenKey([1; 32]), "a", "v1", &v("secret"));
        assert_eq!(format!("{known:?}"), "KnownValues(1 secrets)");
    }
}
