//! Desired state: what a sync's files say should exist in AWS.
//!
//! Pure: takes parsed file views and the sync's mapping rules, returns the
//! secrets that should exist (name, value, tags) and per-key errors. No IO,
//! so every mapping rule is a table test.

use std::collections::{BTreeMap, BTreeSet};

use crate::naming::{self, TemplateVars};
use crate::secret::SecretValue;
use crate::source::ParsedFile;

/// How keys map to secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// Each key becomes its own secret named by the key schema.
    OneToOne,
    /// All keys go into one JSON secret.
    ManyToOne,
}

/// The mapping rules of one sync, detached from the config model so the
/// pure stages can be tested without a config file.
#[derive(Debug, Clone)]
pub struct MappingSpec {
    /// Sync name (`{{syncName}}`, ownership tag).
    pub sync_name: String,
    /// Agent id (ownership tag).
    pub agent_id: String,
    /// `{{environment}}`.
    pub environment: Option<String>,
    /// One-to-one or many-to-one.
    pub mapping: MappingKind,
    /// One-to-one naming template.
    pub key_schema: String,
    /// Many-to-one secret name template.
    pub secret_name: Option<String>,
    /// Key globs to include.
    pub include: Vec<glob::Pattern>,
    /// Key globs to exclude.
    pub exclude: Vec<glob::Pattern>,
    /// User tags.
    pub tags: BTreeMap<String, String>,
    /// Whether YAML metadata becomes tags.
    pub metadata_as_tags: bool,
    /// KMS key for new secrets and re-encryption.
    pub kms_key_id: Option<String>,
    /// Secret description; `None` = a default naming agent and sync.
    pub description: Option<String>,
    /// Replica regions requested at creation.
    pub replica_regions: Vec<String>,
}

impl MappingSpec {
    /// The description written to AWS.
    pub fn effective_description(&self) -> String {
        self.description.clone().unwrap_or_else(|| {
            format!(
                "Managed by secretsync (agent {}, sync {})",
                self.agent_id, self.sync_name
            )
        })
    }

    /// The two ownership tags every managed secret carries.
    pub fn ownership_tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (naming::TAG_AGENT.to_string(), self.agent_id.clone()),
            (naming::TAG_SYNC.to_string(), self.sync_name.clone()),
        ])
    }

    /// Whether `key` passes the include/exclude globs.
    pub fn key_selected(&self, key: &str) -> bool {
        self.include.iter().any(|p| p.matches(key)) && !self.exclude.iter().any(|p| p.matches(key))
    }
}

/// One secret that should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSecret {
    /// Source key (one-to-one); `None` for a many-to-one secret.
    pub key: Option<String>,
    /// AWS secret name.
    pub name: String,
    /// `SecretString` to store.
    pub value: SecretValue,
    /// Every tag this agent wants on the secret, ownership tags included.
    pub tags: BTreeMap<String, String>,
    /// For many-to-one: the keys inside the JSON object (deletion guard).
    pub json_keys: Option<BTreeSet<String>>,
}

/// A key that cannot become a secret; it goes to ERROR, the rest proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredError {
    /// Source key, when the error concerns one.
    pub key: Option<String>,
    /// Secret name, when it could be computed (so it is never deleted).
    pub name: Option<String>,
    /// What is wrong (never the value).
    pub message: String,
}

/// A one-to-one key whose value is empty. AWS cannot store an empty
/// `SecretString` (service-model minimum length 1), so nothing is sent for
/// it, and its secret, if one exists, is neither updated nor deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Source key.
    pub key: String,
    /// The secret name the key maps to.
    pub name: String,
}

/// Outcome of mapping a sync's files.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Secrets that should exist, sorted by name.
    pub secrets: Vec<DesiredSecret>,
    /// Keys that cannot be synced.
    pub errors: Vec<DesiredError>,
    /// One-to-one keys with an empty value, sorted by name.
    pub skipped: Vec<SkippedKey>,
}

impl Desired {
    /// Every name the files account for, errors included: none of these may
    /// be deleted.
    pub fn claimed_names(&self) -> BTreeSet<&str> {
        self.secrets
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.errors.iter().filter_map(|e| e.name.as_deref()))
            .chain(self.skipped.iter().map(|s| s.name.as_str()))
            .collect()
    }
}

/// One source entry after merging files (later files win).
#[derive(Debug, Clone)]
struct MergedEntry<'a> {
    value: &'a SecretValue,
    metadata: &'a BTreeMap<String, String>,
}

/// Maps parsed files (in config order) to desired secrets.
pub fn build_desired(spec: &MappingSpec, files: &[&ParsedFile]) -> Desired {
    let mut merged: BTreeMap<&str, MergedEntry<'_>> = BTreeMap::new();
    for file in files {
        for entry in &file.entries {
            if spec.key_selected(&entry.key) {
                merged.insert(
                    entry.key.as_str(),
                    MergedEntry {
                        value: &entry.value,
                        metadata: &entry.metadata,
                    },
                );
            }
        }
    }
    let mut desired = match spec.mapping {
        MappingKind::OneToOne => one_to_one(spec, &merged),
        MappingKind::ManyToOne => many_to_one(spec, &merged),
    };
    desired.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    desired.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    desired
}

fn one_to_one(spec: &MappingSpec, merged: &BTreeMap<&str, MergedEntry<'_>>) -> Desired {
    let mut out = Desired::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (key, entry) in merged {
        let key_err = |name: Option<String>, message: String| DesiredError {
            key: Some((*key).to_string()),
            name,
            message,
        };
        if !naming::is_valid_key(key) {
            out.errors.push(key_err(None, invalid_key_message(key)));
            continue;
        }
        let vars = TemplateVars {
            secret_key: Some(key),
            environment: spec.environment.as_deref(),
            sync_name: &spec.sync_name,
        };
        let name = match naming::render_template(&spec.key_schema, &vars) {
            Ok(name) => name,
            Err(e) => {
                out.errors.push(key_err(None, format!("key_schema: {e}")));
                continue;
            }
        };
        if let Err(e) = naming::validate_secret_name(&name) {
            out.errors.push(key_err(None, e));
            continue;
        }
        if let Some(other) = seen.insert(name.clone(), (*key).to_string()) {
            out.errors.push(key_err(
                Some(name),
                format!("maps to the same secret name as key '{other}'"),
            ));
            continue;
        }
        if entry.value.is_empty() {
            out.skipped.push(SkippedKey {
                key: (*key).to_string(),
                name,
            });
            continue;
        }
        if entry.value.len() > naming::MAX_VALUE_BYTES {
            out.errors.push(key_err(
                Some(name),
                format!(
                    "value is {} bytes, AWS allows at most {}",
                    entry.value.len(),
                    naming::MAX_VALUE_BYTES
                ),
            ));
            continue;
        }
        let tags = match build_tags(spec, [entry.metadata]) {
            Ok(tags) => tags,
            Err(e) => {
                out.errors.push(key_err(Some(name), e));
                continue;
            }
        };
        out.secrets.push(DesiredSecret {
            key: Some((*key).to_string()),
            name,
            value: entry.value.clone(),
            tags,
            json_keys: None,
        });
    }
    out
}

/// The per-key error for a key outside `[A-Za-z_][A-Za-z0-9_.-]*`; the pass
/// prefixes the key's `PATH:LINE:COL`.
fn invalid_key_message(key: &str) -> String {
    format!(
        "key '{}' is not a valid key ([A-Za-z_][A-Za-z0-9_.-]*)",
        key.escape_default()
    )
}

fn many_to_one(spec: &MappingSpec, merged: &BTreeMap<&str, MergedEntry<'_>>) -> Desired {
    let mut out = Desired::default();
    let template = spec.secret_name.as_deref().unwrap_or_default();
    let vars = TemplateVars {
        secret_key: None,
        environment: spec.environment.as_deref(),
        sync_name: &spec.sync_name,
    };
    let name = match naming::render_template(template, &vars)
        .map_err(|e| format!("secret_name: {e}"))
        .and_then(|n| naming::validate_secret_name(&n).map(|()| n))
    {
        Ok(name) => name,
        Err(message) => {
            out.errors.push(DesiredError {
                key: None,
                name: None,
                message,
            });
            return out;
        }
    };
    // A key outside the key charset puts the whole secret in ERROR: writing
    // the JSON without it would drop that key from AWS.
    let invalid: Vec<&&str> = merged.keys().filter(|k| !naming::is_valid_key(k)).collect();
    if !invalid.is_empty() {
        for key in invalid {
            out.errors.push(DesiredError {
                key: Some((*key).to_string()),
                name: Some(name.clone()),
                message: invalid_key_message(key),
            });
        }
        return out;
    }
    // BTreeMap iteration gives the sorted key order the contract asks for.
    let object: serde_json::Map<String, serde_json::Value> = merged
        .iter()
        .map(|(k, e)| {
            (
                (*k).to_string(),
                serde_json::Value::String(e.value.expose().to_string()),
            )
        })
        .collect();
    let mut text = serde_json::Value::Object(object).to_string();
    let value = SecretValue::new(std::mem::take(&mut text));
    let fail = |message: String| DesiredError {
        key: None,
        name: Some(name.clone()),
        message,
    };
    if value.len() > naming::MAX_VALUE_BYTES {
        out.errors.push(fail(format!(
            "JSON of {} keys is {} bytes, AWS allows at most {}",
            merged.len(),
            value.len(),
            naming::MAX_VALUE_BYTES
        )));
        return out;
    }
    match build_tags(spec, merged.values().map(|e| e.metadata)) {
        Ok(tags) => out.secrets.push(DesiredSecret {
            key: None,
            name: name.clone(),
            value,
            tags,
            json_keys: Some(merged.keys().map(|k| (*k).to_string()).collect()),
        }),
        Err(e) => out.errors.push(fail(e)),
    }
    out
}

/// Ownership tags, then metadata tags (if enabled), then configured tags,
/// which win over metadata.
fn build_tags<'a>(
    spec: &MappingSpec,
    metadata: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    if spec.metadata_as_tags {
        for meta in metadata {
            for (k, v) in meta {
                naming::validate_user_tag(k, v).map_err(|e| format!("metadata {e}"))?;
                tags.insert(k.clone(), v.clone());
            }
        }
    }
    tags.extend(spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    tags.extend(spec.ownership_tags());
    naming::validate_tag_count(&tags)?;
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceEntry;

    pub(crate) fn spec(mapping: MappingKind) -> MappingSpec {
        MappingSpec {
            sync_name: "app".into(),
            agent_id: "web-01".into(),
            environment: Some("prod".into()),
            mapping,
            key_schema: "{{environment}}/{{secretKey}}".into(),
            secret_name: Some("{{environment}}/{{syncName}}".into()),
            include: vec![glob::Pattern::new("*").unwrap()],
            exclude: vec![],
            tags: BTreeMap::from([("team".into(), "pay".into())]),
            metadata_as_tags: true,
            kms_key_id: None,
            description: None,
            replica_regions: vec![],
        }
    }

    type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn file(entries: &[Row<'_>]) -> ParsedFile {
        ParsedFile {
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, (k, v, meta))| SourceEntry {
                    key: (*k).into(),
                    value: SecretValue::new(*v),
                    metadata: meta
                        .iter()
                        .map(|(a, b)| ((*a).into(), (*b).into()))
                        .collect(),
                    line: i as u32 + 1,
                    column: 1,
                    end_line: i as u32 + 1,
                })
                .collect(),
        }
    }

    fn names(d: &Desired) -> Vec<&str> {
        d.secrets.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn empty_values_are_skipped_in_one_to_one_and_kept_in_many_to_one() {
        let f = file(&[("A", "", &[]), ("B", "2", &[]), ("C", "", &[])]);
        let d = build_desired(&spec(MappingKind::OneToOne), &[&f]);
        assert_eq!(names(&d), ["prod/B"]);
        let skipped: Vec<(&str, &str)> = d
            .skipped
            .iter()
            .map(|s| (s.key.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(skipped, [("A", "prod/A"), ("C", "prod/C")]);
        assert!(d.errors.is_empty());
        // A skipped key's secret is still claimed: never deleted.
        assert!(d.claimed_names().contains("prod/A"));

        let d = build_desired(&spec(MappingKind::ManyToOne), &[&f]);
        assert!(d.skipped.is_empty());
        assert_eq!(d.secrets.len(), 1);
        let json: serde_json::Value =
            serde_json::from_str(d.secrets[0].value.expose()).expect("json");
        assert_eq!(json["A"], "");
        assert_eq!(json["B"], "2");
    }

    #[test]
    fn an_invalid_key_in_many_to_one_puts_the_secret_in_error() {
        let f = file(&[("1KEY", "a", &[]), ("OK", "b", &[]), ("CLÉ", "c", &[])]);
        let d = build_desired(&spec(MappingKind::ManyToOne), &[&f]);
        // Nothing is written: the JSON without those keys would drop them.
        assert!(d.secrets.is_empty());
        let keys: Vec<&str> = d.errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(keys, ["1KEY", "CLÉ"]);
        assert!(
            d.errors.iter().all(|e| e.name.is_some()),
            "the secret stays claimed"
        );
        assert!(d.errors[0].message.contains("is not a valid key"));
    }

    #[test]
    fn one_to_one_table() {
        struct Case {
            what: &'static str,
            files: Vec<ParsedFile>,
            include: &'static [&'static str],
            exclude: &'static [&'static str],
            want_names: &'static [&'static str],
            want_error_keys: &'static [&'static str],
        }
        let big = "x".repeat(naming::MAX_VALUE_BYTES + 1);
        let cases = vec![
            Case {
                what: "plain",
                files: vec![file(&[("A", "1", &[]), ("B", "2", &[])])],
                include: &["*"],
                exclude: &[],
                want_names: &["prod/A", "prod/B"],
                want_error_keys: &[],
            },
            Case {
                what: "later file wins, union of keys",
                files: vec![
                    file(&[("A", "1", &[])]),
                    file(&[("A", "9", &[]), ("C", "3", &[])]),
                ],
                include: &["*"],
                exclude: &[],
                want_names: &["prod/A", "prod/C"],
                want_error_keys: &[],
            },
            Case {
                what: "include and exclude globs",
                files: vec![file(&[
                    ("DB_URL", "1", &[]),
                    ("DB_TMP", "2", &[]),
                    ("X", "3", &[]),
                ])],
                include: &["DB_*"],
                exclude: &["*_TMP"],
                want_names: &["prod/DB_URL"],
                want_error_keys: &[],
            },
            Case {
                what: "bad key and oversize value are per-key errors",
                files: vec![file(&[
                    ("9BAD", "1", &[]),
                    ("OK", "2", &[]),
                    ("BIG", &big, &[]),
                ])],
                include: &["*"],
                exclude: &[],
                want_names: &["prod/OK"],
                want_error_keys: &["9BAD", "BIG"],
            },
        ];
        for case in cases {
            let mut s = spec(MappingKind::OneToOne);
            s.include = case
                .include
                .iter()
                .map(|p| glob::Pattern::new(p).unwrap())
                .collect();
            s.exclude = case
                .exclude
                .iter()
                .map(|p| glob::Pattern::new(p).unwrap())
                .collect();
            let refs: Vec<&ParsedFile> = case.files.iter().collect();
            let d = build_desired(&s, &refs);
            assert_eq!(names(&d), case.want_names, "{}", case.what);
            let mut err_keys: Vec<&str> =
                d.errors.iter().filter_map(|e| e.key.as_deref()).collect();
            err_keys.sort();
            assert_eq!(err_keys, case.want_error_keys, "{}", case.what);
            for e in &d.errors {
                assert!(
                    !e.message.contains("xxxx"),
                    "value leaked into error: {}",
                    case.what
                );
            }
        }
    }

    #[test]
    fn later_file_value_wins() {
        let files = [file(&[("A", "old", &[])]), file(&[("A", "new", &[])])];
        let d = build_desired(&spec(MappingKind::OneToOne), &[&files[0], &files[1]]);
        assert_eq!(d.secrets[0].value.expose(), "new");
    }

    #[test]
    fn oversize_key_keeps_its_name_claimed() {
        let big = "x".repeat(naming::MAX_VALUE_BYTES + 1);
        let f = file(&[("BIG", &big, &[])]);
        let d = build_desired(&spec(MappingKind::OneToOne), &[&f]);
        assert!(d.claimed_names().contains("prod/BIG"));
    }

    #[test]
    fn tags_configured_win_over_metadata_and_ownership_wins_over_all() {
        let f = file(&[("A", "1", &[("team", "meta"), ("owner", "alice")])]);
        let d = build_desired(&spec(MappingKind::OneToOne), &[&f]);
        let tags = &d.secrets[0].tags;
        assert_eq!(tags["team"], "pay");
        assert_eq!(tags["owner"], "alice");
        assert_eq!(tags[naming::TAG_AGENT], "web-01");
        assert_eq!(tags[naming::TAG_SYNC], "app");
        let mut s = spec(MappingKind::OneToOne);
        s.metadata_as_tags = false;
        let d = build_desired(&s, &[&f]);
        assert!(!d.secrets[0].tags.contains_key("owner"));
    }

    #[test]
    fn reserved_metadata_tag_is_a_per_key_error() {
        let f = file(&[("A", "1", &[("aws:x", "y")]), ("B", "2", &[])]);
        let d = build_desired(&spec(MappingKind::OneToOne), &[&f]);
        assert_eq!(names(&d), ["prod/B"]);
        assert_eq!(d.errors[0].key.as_deref(), Some("A"));
    }

    #[test]
    fn many_to_one_sorted_json() {
        let f = file(&[("Z", "last", &[]), ("A", "first \"q\"", &[])]);
        let d = build_desired(&spec(MappingKind::ManyToOne), &[&f]);
        assert_eq!(names(&d), ["prod/app"]);
        assert_eq!(
            d.secrets[0].value.expose(),
            r#"{"A":"first \"q\"","Z":"last"}"#
        );
        assert_eq!(
            d.secrets[0]
                .json_keys
                .as_ref()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            ["A", "Z"]
        );
    }

    #[test]
    fn many_to_one_oversize_is_error_with_name() {
        let big = "x".repeat(naming::MAX_VALUE_BYTES);
        let f = file(&[("A", &big, &[])]);
        let d = build_desired(&spec(MappingKind::ManyToOne), &[&f]);
        assert!(d.secrets.is_empty());
        assert_eq!(d.errors[0].name.as_deref(), Some("prod/app"));
    }
}
