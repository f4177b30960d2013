//! Initial-sync import (`import-prioritize-source` / `-destination`): on a
//! sync's first pass, secrets in AWS that belong to its scope are brought
//! into its first file before the normal push, so files and AWS agree.
//!
//! This module is the pure part: which AWS names are in scope, how a
//! many-to-one JSON secret splits into keys, and which keys to write given
//! the local view. The IO (reading AWS, writing the file) is in
//! `reconcile`.

use std::collections::BTreeMap;

use crate::naming;
use crate::reconcile::desired::{MappingKind, MappingSpec};
use crate::secret::SecretValue;

/// Which side wins when both have a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Add keys the files lack; local values win.
    PrioritizeSource,
    /// Add missing keys and replace local values that differ.
    PrioritizeDestination,
}

/// A key/value found in AWS for the sync's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Source key it maps to.
    pub key: String,
    /// Secret it came from.
    pub name: String,
    /// Its value.
    pub value: SecretValue,
}

/// What to write into the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPlan {
    /// Keys to add or replace, with the reason.
    pub sets: Vec<(Candidate, &'static str)>,
    /// Keys present on both sides with different values, local kept.
    pub kept_local: usize,
    /// Keys present on both sides with different values, AWS taken.
    pub replaced_local: usize,
}

impl ImportPlan {
    /// Human summary for status (never values).
    pub fn summary(&self) -> String {
        let mut s = format!("imported {} keys", self.sets.len());
        if self.replaced_local > 0 {
            s.push_str(&format!(
                ", {} conflict(s) resolved in favour of AWS",
                self.replaced_local
            ));
        }
        if self.kept_local > 0 {
            s.push_str(&format!(
                ", {} conflict(s) resolved in favour of the files",
                self.kept_local
            ));
        }
        s
    }
}

/// The literal parts around the key slots of the sync's key schema.
fn schema_parts(spec: &MappingSpec) -> Option<Vec<String>> {
    naming::schema_parts(
        &spec.key_schema,
        spec.environment.as_deref(),
        &spec.sync_name,
    )
}

/// The longest fixed name prefix of the sync's one-to-one secrets, used to
/// list adoptable secrets; empty when the schema starts with the key.
pub fn name_prefix(spec: &MappingSpec) -> String {
    schema_parts(spec)
        .and_then(|parts| parts.into_iter().next())
        .unwrap_or_default()
}

/// The key a one-to-one secret name maps back to, if it is in scope (the
/// schema could have produced it from a valid, included key).
pub fn key_for_name(spec: &MappingSpec, name: &str) -> Option<String> {
    if spec.mapping != MappingKind::OneToOne {
        return None;
    }
    let key = naming::key_for_name(&schema_parts(spec)?, name)?;
    spec.key_selected(&key).then_some(key)
}

/// Splits a many-to-one JSON secret into candidates. Anything but a flat
/// object of strings is an error and nothing is imported.
pub fn json_candidates(
    spec: &MappingSpec,
    name: &str,
    value: &SecretValue,
) -> Result<Vec<Candidate>, String> {
    let parsed: serde_json::Value = serde_json::from_str(value.expose())
        .map_err(|_| format!("{name}: value is not JSON; nothing imported"))?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(format!(
            "{name}: value is not a JSON object; nothing imported"
        ));
    };
    let mut out = Vec::new();
    for (key, v) in map {
        let serde_json::Value::String(text) = v else {
            return Err(format!(
                "{name}: key '{}' is not a string (nested or typed JSON); nothing imported",
                key.escape_default()
            ));
        };
        if !naming::is_valid_key(&key) {
            return Err(format!(
                "{name}: key '{}' is not a valid source key; nothing imported",
                key.escape_default()
            ));
        }
        if spec.key_selected(&key) {
            out.push(Candidate {
                key,
                name: name.to_string(),
                value: SecretValue::new(text),
            });
        }
    }
    Ok(out)
}

/// Decides what to import given the merged local values.
pub fn plan_import(
    mode: ImportMode,
    local: &BTreeMap<String, SecretValue>,
    remote: Vec<Candidate>,
) -> ImportPlan {
    let mut plan = ImportPlan::default();
    for c in remote {
        match local.get(&c.key) {
            None => plan.sets.push((c, "in AWS, not in the files")),
            Some(v) if *v == c.value => {}
            Some(_) => match mode {
                ImportMode::PrioritizeSource => plan.kept_local += 1,
                ImportMode::PrioritizeDestination => {
                    plan.replaced_local += 1;
                    plan.sets.push((
                        c,
                        "AWS value differs; import-prioritize-destination takes it",
                    ));
                }
            },
        }
    }
    plan.sets.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schema: &str) -> MappingSpec {
        MappingSpec {
            sync_name: "app".into(),
            agent_id: "a".into(),
            environment: Some("prod".into()),
            mapping: MappingKind::OneToOne,
            key_schema: schema.into(),
            secret_name: None,
            include: vec![glob::Pattern::new("*").unwrap()],
            exclude: vec![glob::Pattern::new("TMP_*").unwrap()],
            tags: BTreeMap::new(),
            metadata_as_tags: false,
            kms_key_id: None,
            description: None,
            replica_regions: vec![],
        }
    }

    #[test]
    fn key_for_name_table() {
        let cases = [
            (
                "{{environment}}/app/{{secretKey}}",
                "prod/app/DB_URL",
                Some("DB_URL"),
            ),
            (
                "{{environment}}/app/{{secretKey}}",
                "prod/other/DB_URL",
                None,
            ),
            (
                "{{environment}}/app/{{secretKey}}",
                "prod/app/nested/X",
                None,
            ),
            ("{{environment}}/app/{{secretKey}}", "prod/app/TMP_X", None),
            ("{{secretKey}}-{{syncName}}", "K1-app", Some("K1")),
            ("{{secretKey}}", "9bad", None),
            ("{{secretKey}}", "ok.key-1", Some("ok.key-1")),
        ];
        for (schema, name, want) in cases {
            assert_eq!(
                key_for_name(&spec(schema), name).as_deref(),
                want,
                "{schema} {name}"
            );
        }
        assert_eq!(
            name_prefix(&spec("{{environment}}/app/{{secretKey}}")),
            "prod/app/"
        );
        assert_eq!(name_prefix(&spec("{{secretKey}}")), "");
    }

    #[test]
    fn json_split_table() {
        let s = spec("{{secretKey}}");
        let ok = json_candidates(
            &s,
            "m",
            &SecretValue::new(r#"{"A":"1","TMP_X":"2","B":""}"#),
        )
        .unwrap();
        let keys: Vec<&str> = ok.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["A", "B"]);
        for bad in [
            r#"{"A":{"n":1}}"#,
            r#"{"A":1}"#,
            "[1]",
            "not json",
            r#"{"9x":"v"}"#,
        ] {
            let err = json_candidates(&s, "m", &SecretValue::new(bad)).unwrap_err();
            assert!(err.contains("nothing imported"), "{bad}: {err}");
        }
        let err = json_candidates(&s, "m", &SecretValue::new("canary-secret")).unwrap_err();
        assert!(!err.contains("canary"));
    }

    #[test]
    fn modes_table() {
        let local = BTreeMap::from([
            ("SAME".to_string(), SecretValue::new("1")),
            ("DIFF".to_string(), SecretValue::new("local")),
        ]);
        let remote = || {
            vec![
                Candidate {
                    key: "SAME".into(),
                    name: "n/SAME".into(),
                    value: SecretValue::new("1"),
                },
                Candidate {
                    key: "DIFF".into(),
                    name: "n/DIFF".into(),
                    value: SecretValue::new("aws"),
                },
                Candidate {
                    key: "NEW".into(),
                    name: "n/NEW".into(),
                    value: SecretValue::new("x"),
                },
            ]
        };
        let src = plan_import(ImportMode::PrioritizeSource, &local, remote());
        assert_eq!(
            src.sets
                .iter()
                .map(|(c, _)| c.key.as_str())
                .collect::<Vec<_>>(),
            ["NEW"]
        );
        assert_eq!((src.kept_local, src.replaced_local), (1, 0));
        let dst = plan_import(ImportMode::PrioritizeDestination, &local, remote());
        assert_eq!(
            dst.sets
                .iter()
                .map(|(c, _)| c.key.as_str())
                .collect::<Vec<_>>(),
            ["DIFF", "NEW"]
        );
        assert_eq!((dst.kept_local, dst.replaced_local), (0, 1));
        assert_eq!(
            dst.summary(),
            "imported 2 keys, 1 conflict(s) resolved in favour of AWS"
        );
    }
}
