//! `secretsync get --sync NAME KEY`: the value AWS holds for one key of a
//! sync, on stdout. The one command that prints a secret value, so it is
//! guarded: refused when stdout is a terminal unless `--reveal` (a value
//! on screen ends up in scrollback and screen shares), and limited to
//! secrets this agent's sync owns unless `--any`. Errors and logs name the
//! secret and key only, never the value.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::config;
use crate::exit::Exit;
use crate::naming::{self, TemplateVars};
use crate::reconcile::SyncJob;
use crate::reconcile::desired::{MappingKind, MappingSpec};
use crate::reconcile::plan::{Ownership, ownership_of};
use crate::secret::SecretValue;
use crate::store::aws::AwsStore;
use crate::store::{SecretStore, StoreError};

/// Why `get` printed nothing; each case maps to an exit code and carries
/// names and keys only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// The key cannot be a source key, or the name template fails for it.
    #[error("{0}")]
    Usage(String),
    /// No live secret of that name in the region.
    #[error("no secret {name} in {region}")]
    NoSecret {
        /// Secret name.
        name: String,
        /// Region looked in.
        region: String,
    },
    /// The secret is scheduled for deletion.
    #[error("secret {0} is scheduled for deletion")]
    Deleted(String),
    /// The secret exists but this agent's sync does not own it.
    #[error(
        "secret {name} is not owned by agent '{agent}' sync '{sync}' ({why}); pass --any to read it anyway"
    )]
    NotOwned {
        /// Secret name.
        name: String,
        /// This agent's id.
        agent: String,
        /// The sync asked for.
        sync: String,
        /// Who owns it instead.
        why: String,
    },
    /// The secret holds no `SecretString` (binary, or no current version).
    #[error("secret {0} has no string value")]
    NoValue(String),
    /// The many-to-one secret is not a JSON object.
    #[error("secret {0} is not a JSON object, so it has no keys")]
    NotJson(String),
    /// The many-to-one JSON object lacks the key.
    #[error("secret {name} has no key {key}")]
    NoKey {
        /// Secret name.
        name: String,
        /// The key asked for.
        key: String,
    },
    /// AWS could not be asked (network, outage, credentials).
    #[error("cannot reach AWS: {0}")]
    Unreachable(StoreError),
    /// AWS refused or failed the read for another reason (permissions).
    #[error("{0}")]
    Store(StoreError),
}

impl GetError {
    /// Exit code of the CLI contract: 2 usage, 3 AWS unreachable, else 1.
    pub fn exit(&self) -> Exit {
        match self {
            GetError::Usage(_) => Exit::Usage,
            GetError::Unreachable(_) => Exit::Unreachable,
            _ => Exit::Failed,
        }
    }
}

fn store_error(e: StoreError) -> GetError {
    if e.is_transient() || matches!(e, StoreError::Config(_)) {
        GetError::Unreachable(e)
    } else {
        GetError::Store(e)
    }
}

/// The AWS secret that holds `key` for `spec`: the key schema's name
/// (one-to-one) or the one JSON secret (many-to-one).
pub fn secret_name_for(spec: &MappingSpec, key: &str) -> Result<String, GetError> {
    if !naming::is_valid_key(key) {
        return Err(GetError::Usage(format!(
            "'{key}' is not a valid key (letters, digits, '_', '.', '-'; not starting with a digit)"
        )));
    }
    let (template, secret_key) = match spec.mapping {
        MappingKind::OneToOne => (spec.key_schema.as_str(), Some(key)),
        MappingKind::ManyToOne => (spec.secret_name.as_deref().unwrap_or_default(), None),
    };
    let vars = TemplateVars {
        secret_key,
        environment: spec.environment.as_deref(),
        sync_name: &spec.sync_name,
    };
    let name = naming::render_template(template, &vars)
        .map_err(|e| GetError::Usage(format!("cannot name the secret for key {key}: {e}")))?;
    naming::validate_secret_name(&name)
        .map_err(|e| GetError::Usage(format!("key {key} maps to an invalid secret name: {e}")))?;
    Ok(name)
}

/// Reads the value of `key` for `spec` from `store`: looks the secret up,
/// checks ownership (unless `any`), reads its current value and, for
/// many-to-one, picks the key out of the JSON object. A JSON value that is
/// not a string is returned as its JSON text.
pub async fn read_value<S: SecretStore>(
    store: &S,
    spec: &MappingSpec,
    region: &str,
    key: &str,
    any: bool,
) -> Result<SecretValue, GetError> {
    let name = secret_name_for(spec, key)?;
    let found = store
        .lookup_names(std::slice::from_ref(&name))
        .await
        .map_err(store_error)?;
    let Some(secret) = found.into_iter().find(|s| s.name == name) else {
        return Err(GetError::NoSecret {
            name,
            region: region.to_string(),
        });
    };
    if secret.pending_deletion {
        return Err(GetError::Deleted(name));
    }
    if !any {
        let why = match ownership_of(&spec.agent_id, &spec.sync_name, &secret.tags) {
            Ownership::Ours => None,
            Ownership::Unowned => Some("it carries no ownership tags".to_string()),
            Ownership::Foreign(who) => Some(who),
        };
        if let Some(why) = why {
            return Err(GetError::NotOwned {
                name,
                agent: spec.agent_id.clone(),
                sync: spec.sync_name.clone(),
                why,
            });
        }
    }
    let mut reads = store
        .get_values(std::slice::from_ref(&name))
        .await
        .map_err(store_error)?;
    let read = match reads.pop() {
        Some((_, r)) => r,
        None => return Err(GetError::NoValue(name)),
    };
    let value = match read {
        Ok(v) => v.value.ok_or_else(|| GetError::NoValue(name.clone()))?,
        Err(StoreError::NotFound { .. }) => return Err(GetError::NoValue(name)),
        Err(e) => return Err(store_error(e)),
    };
    match spec.mapping {
        MappingKind::OneToOne => Ok(value),
        MappingKind::ManyToOne => {
            // serde_json's errors carry positions, not input; still, none
            // of it is shown.
            let Ok(serde_json::Value::Object(mut map)) =
                serde_json::from_str::<serde_json::Value>(value.expose())
            else {
                return Err(GetError::NotJson(name));
            };
            match map.remove(key) {
                Some(serde_json::Value::String(s)) => Ok(SecretValue::new(s)),
                Some(other) => Ok(SecretValue::new(other.to_string())),
                None => Err(GetError::NoKey {
                    name,
                    key: key.to_string(),
                }),
            }
        }
    }
}

/// Runs `get`: prints the value (exactly, plus a newline only on a
/// terminal) or an error on stderr.
pub async fn get(config_path: &Path, sync: &str, key: &str, reveal: bool, any: bool) -> Exit {
    let config = match config::load_config(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Exit::Usage;
        }
    };
    let Some(sync_config) = config.sync(sync) else {
        eprintln!("error: no sync named '{sync}' in {}", config.path.display());
        return Exit::Usage;
    };
    let tty = std::io::stdout().is_terminal();
    if tty && !reveal {
        eprintln!(
            "error: refusing to print a secret value to a terminal; pass --reveal, or redirect stdout (e.g. into a file or a pipe)"
        );
        return Exit::Usage;
    }
    let job = SyncJob::from_config(&config, sync_config);
    if let Err(e) = secret_name_for(&job.spec, key) {
        eprintln!("error: {e}");
        return e.exit();
    }
    let store = match AwsStore::connect(&job.connection).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot reach AWS: {e}");
            return Exit::Unreachable;
        }
    };
    let value = match read_value(&store, &job.spec, &job.region, key, any).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit();
        }
    };
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(value.expose().as_bytes())
        .and_then(|()| if tty { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Exit::Ok,
        Err(e) => {
            // The IO error describes the pipe, not the data.
            eprintln!("error: cannot write to stdout: {e}");
            Exit::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RemoteSecret;
    use crate::store::memory::MemoryStore;
    use std::collections::BTreeMap;

    const CANARY: &str = "canary-get-unit-5d0e";

    fn spec(mapping: MappingKind) -> MappingSpec {
        MappingSpec {
            sync_name: "web".into(),
            agent_id: "me".into(),
            environment: Some("prod".into()),
            mapping,
            key_schema: "{{environment}}/{{secretKey}}".into(),
            secret_name: Some("{{environment}}/web/all".into()),
            include: vec![],
            exclude: vec![],
            tags: BTreeMap::new(),
            metadata_as_tags: false,
            kms_key_id: None,
            description: None,
            replica_regions: vec![],
        }
    }

    fn tags(agent: &str, sync: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (naming::TAG_AGENT.to_string(), agent.to_string()),
            (naming::TAG_SYNC.to_string(), sync.to_string()),
        ])
    }

    fn put(store: &MemoryStore, name: &str, tags: BTreeMap<String, String>, value: Option<&str>) {
        store.insert(
            RemoteSecret {
                name: name.into(),
                tags,
                ..Default::default()
            },
            value.map(SecretValue::new),
        );
    }

    #[test]
    fn names_follow_the_mapping() {
        let one = spec(MappingKind::OneToOne);
        assert_eq!(secret_name_for(&one, "DB_URL").unwrap(), "prod/DB_URL");
        let many = spec(MappingKind::ManyToOne);
        assert_eq!(secret_name_for(&many, "DB_URL").unwrap(), "prod/web/all");
        assert!(matches!(
            secret_name_for(&one, "1bad key"),
            Err(GetError::Usage(_))
        ));
    }

    /// (case, mapping, stored secret (name, owner, value), key, any) →
    /// the value printed or the exit code.
    #[tokio::test]
    async fn reads_owned_values_only() {
        let json = format!(r#"{{"A":"{CANARY}","N":5}}"#);
        type Case<'a> = (
            &'a str,
            MappingKind,
            Option<(&'a str, (&'a str, &'a str), Option<&'a str>)>,
            &'a str,
            bool,
            Result<&'a str, u8>,
        );
        let cases: Vec<Case> = vec![
            (
                "owned one-to-one",
                MappingKind::OneToOne,
                Some(("prod/A", ("me", "web"), Some(CANARY))),
                "A",
                false,
                Ok(CANARY),
            ),
            ("missing", MappingKind::OneToOne, None, "A", false, Err(1)),
            (
                "other sync",
                MappingKind::OneToOne,
                Some(("prod/A", ("me", "api"), Some(CANARY))),
                "A",
                false,
                Err(1),
            ),
            (
                "other sync, --any",
                MappingKind::OneToOne,
                Some(("prod/A", ("me", "api"), Some(CANARY))),
                "A",
                true,
                Ok(CANARY),
            ),
            (
                "other agent",
                MappingKind::OneToOne,
                Some(("prod/A", ("you", "web"), Some(CANARY))),
                "A",
                false,
                Err(1),
            ),
            (
                "no value",
                MappingKind::OneToOne,
                Some(("prod/A", ("me", "web"), None)),
                "A",
                false,
                Err(1),
            ),
            (
                "many-to-one key",
                MappingKind::ManyToOne,
                Some(("prod/web/all", ("me", "web"), Some(&json))),
                "A",
                false,
                Ok(CANARY),
            ),
            (
                "many-to-one number",
                MappingKind::ManyToOne,
                Some(("prod/web/all", ("me", "web"), Some(&json))),
                "N",
                false,
                Ok("5"),
            ),
            (
                "many-to-one missing key",
                MappingKind::ManyToOne,
                Some(("prod/web/all", ("me", "web"), Some(&json))),
                "B",
                false,
                Err(1),
            ),
            (
                "many-to-one not JSON",
                MappingKind::ManyToOne,
                Some(("prod/web/all", ("me", "web"), Some(CANARY))),
                "A",
                false,
                Err(1),
            ),
            (
                "bad key",
                MappingKind::OneToOne,
                None,
                "no way",
                false,
                Err(2),
            ),
        ];
        for (case, mapping, stored, key, any, want) in cases {
            let store = MemoryStore::new();
            if let Some((name, (agent, sync), value)) = stored {
                put(&store, name, tags(agent, sync), value);
            }
            let got = read_value(&store, &spec(mapping), "us-east-1", key, any).await;
            match (&got, want) {
                (Ok(v), Ok(w)) => assert_eq!(v.expose(), w, "{case}"),
                (Err(e), Err(code)) => {
                    assert_eq!(e.exit().code(), code, "{case}: {e}");
                    assert!(!e.to_string().contains(CANARY), "{case}: value in error");
                }
                _ => panic!("{case}: got {got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_secret_scheduled_for_deletion_is_not_read() {
        let store = MemoryStore::new();
        put(&store, "prod/A", tags("me", "web"), Some(CANARY));
        store.delete_secret("prod/A", 7).await.unwrap();
        let got = read_value(&store, &spec(MappingKind::OneToOne), "r", "A", true).await;
        assert_eq!(got, Err(GetError::Deleted("prod/A".into())));
    }

    #[tokio::test]
    async fn an_outage_is_exit_3() {
        let e = store_error(StoreError::Unavailable {
            op: "GetSecretValue",
            message: "connection refused".into(),
        });
        assert_eq!(e.exit(), Exit::Unreachable);
        let e = store_error(StoreError::AccessDenied {
            op: "GetSecretValue",
            message: "no".into(),
        });
        assert_eq!(e.exit(), Exit::Failed);
    }
}
