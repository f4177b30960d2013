//! Pairs of syncs that would write the same AWS secret.

#[allow(unused_imports)]
use super::*;

/// The AWS names one sync may write, for the overlap check.
pub(super) struct Namespace {
    pub(super) sync: String,
    pub(super) line: u64,
    /// Primary region first, then replica regions.
    pub(super) regions: Vec<String>,
    /// Syncs with different credentials or endpoints may well be different
    /// accounts, where equal names do not collide.
    pub(super) account: (Option<String>, Option<String>, Option<String>),
    pub(super) kind: NameKind,
    /// Include/exclude patterns, to tell whether a one-to-one sync can
    /// produce a given key.
    pub(super) source: SourceSettings,
    /// Where to report an overlap found for this sync.
    pub(super) at: Location,
}

pub(super) enum NameKind {
    /// many-to-one: exactly this name.
    Exact(String),
    /// one-to-one: these literal parts with the key between each pair.
    Pattern(Vec<String>),
}

// ------------------------------------------------------------- overlaps --

/// Reports pairs of syncs that would write the same AWS secret. Two syncs
/// can collide only in a region both write to (primary or replica) with the
/// same profile, role and endpoint (otherwise they may be different
/// accounts). Detected:
/// - many-to-one vs many-to-one: identical rendered `secret_name`;
/// - one-to-one vs one-to-one: identical `key_schema` after rendering
///   `{{environment}}` and `{{syncName}}` (key filters are not compared);
/// - many-to-one vs one-to-one: the `secret_name` is a name the one-to-one
///   schema produces for some valid key that its include/exclude admits.
///
/// Not detected: different one-to-one schemas whose names can still meet
/// (e.g. `prod-{{secretKey}}` and `{{secretKey}}` for key `prod-X`); those
/// surface at run time as CONFLICT, never as an overwrite.
pub(super) fn check_overlaps(report: &mut Report<'_>, namespaces: &[Namespace]) {
    for (j, later) in namespaces.iter().enumerate() {
        for earlier in &namespaces[..j] {
            if earlier.account != later.account {
                continue;
            }
            let Some(region) = earlier.regions.iter().find(|r| later.regions.contains(r)) else {
                continue;
            };
            if let Some(message) = overlap(earlier, later, region) {
                report.at(&later.at, message);
                break;
            }
        }
    }
}

pub(super) fn overlap(earlier: &Namespace, later: &Namespace, region: &str) -> Option<String> {
    let other = format!("sync '{}' (line {})", earlier.sync, earlier.line);
    match (&earlier.kind, &later.kind) {
        (NameKind::Exact(a), NameKind::Exact(b)) => (a == b).then(|| {
            format!("secret '{b}' in {region} is also written by {other}; secret names must be unique per region")
        }),
        (NameKind::Pattern(a), NameKind::Pattern(b)) => (a == b).then(|| {
            format!(
                "key_schema gives the same secret names in {region} as {other}; make them differ, \
                 e.g. with {{{{syncName}}}} in the schema"
            )
        }),
        (NameKind::Pattern(parts), NameKind::Exact(name)) => {
            let key = naming::key_for_name(parts, name).filter(|k| earlier.source.key_selected(k))?;
            Some(format!(
                "secret '{name}' in {region} is also the name {other} gives key '{key}'"
            ))
        }
        (NameKind::Exact(name), NameKind::Pattern(parts)) => {
            let key = naming::key_for_name(parts, name).filter(|k| later.source.key_selected(k))?;
            Some(format!(
                "key '{key}' would be named '{name}' in {region}, the secret {other} writes"
            ))
        }
    }
}
