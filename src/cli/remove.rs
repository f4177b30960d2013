//! `secretsync remove NAME`: "unsync" — schedule deletion of every secret
//! owned by a sync (both ownership tags match this agent and NAME), found
//! by tag in AWS. Works without the agent and for syncs already deleted
//! from the config; refused while NAME is enabled there.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use crate::config::{self, Config};
use crate::exit::Exit;
use crate::reconcile::plan::{Ownership, ownership_of};
use crate::reconcile::{SyncJob, aws_connection};
use crate::store::aws::AwsStore;
use crate::store::{Connection, OwnerFilter, RemoteSecret, SecretStore, StoreError};

/// Recovery window used when the sync is no longer in the config.
pub const DEFAULT_RECOVERY_DAYS: u8 = 7;

/// Connection and recovery window for `name`: the sync's own when it is
/// still configured (disabled), else the `aws:` defaults.
fn target(config: &Config, name: &str) -> Result<(Connection, u8), String> {
    if let Some(sync) = config.sync(name) {
        let job = SyncJob::from_config(config, sync);
        return Ok((job.connection, job.options.recovery_window_days));
    }
    let region = config
        .aws
        .region
        .clone()
        .ok_or("no aws.region in the config (or AWS_REGION) to look for the sync's secrets")?;
    Ok((
        aws_connection(
            &config.aws,
            region,
            config.aws.profile.clone(),
            config.aws.role_arn.clone(),
            config.aws.external_id.clone(),
        ),
        DEFAULT_RECOVERY_DAYS,
    ))
}

/// Secrets owned by this agent's sync `name` that are not already deleted.
pub fn owned_live(secrets: Vec<RemoteSecret>, agent_id: &str, name: &str) -> Vec<RemoteSecret> {
    secrets
        .into_iter()
        .filter(|s| ownership_of(agent_id, name, &s.tags) == Ownership::Ours)
        .filter(|s| !s.pending_deletion)
        .collect()
}

fn confirm(count: usize, name: &str, days: u8) -> bool {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        eprintln!(
            "error: not a terminal; pass --yes to confirm removing {count} secrets of sync '{name}'"
        );
        return false;
    }
    let window = if days == 0 {
        "IMMEDIATELY, without recovery".to_string()
    } else {
        format!("with a {days}-day recovery window")
    };
    eprint!("Schedule deletion of {count} secrets of sync '{name}' {window}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if stdin.lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes")
}

/// Deletes one secret, removing its replicas first: AWS refuses to delete
/// a secret that still has replica regions, and these may have been added
/// by a config the agent no longer has.
pub async fn delete_with_replicas<S: SecretStore>(
    store: &S,
    name: &str,
    days: u8,
) -> Result<(), StoreError> {
    let regions: Vec<String> = store
        .describe_replicas(name)
        .await?
        .into_iter()
        .map(|r| r.region)
        .collect();
    if !regions.is_empty() {
        store.remove_replicas(name, &regions).await?;
    }
    store.delete_secret(name, days).await
}

/// Runs `remove`.
pub async fn remove(config_path: &Path, name: &str, yes: bool) -> Exit {
    let config = match config::load_config(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Exit::Usage;
        }
    };
    if config.sync(name).is_some_and(|s| s.enabled) {
        eprintln!(
            "error: sync '{name}' is present and enabled in {}; remove it from the config (or set enabled: false) first",
            config.path.display()
        );
        return Exit::Failed;
    }
    let (conn, days) = match target(&config, name) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let store = match AwsStore::connect(&conn).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Unreachable;
        }
    };
    // By the agent's id: on a fleet host that bounds the listing by what
    // this host owns, whatever other hosts call their syncs.
    let found = match store
        .list_owned(&config.agent.id, name, OwnerFilter::Agent, usize::MAX)
        .await
        .and_then(|f| f.ok_or_else(StoreError::unfinished_listing))
    {
        Ok(f) => owned_live(f.secrets, &config.agent.id, name),
        Err(e) => {
            eprintln!("error: cannot list secrets: {e}");
            return Exit::Failed;
        }
    };
    if found.is_empty() {
        println!(
            "no secrets owned by agent '{}' sync '{name}' in {}",
            config.agent.id, conn.region
        );
        return Exit::Ok;
    }
    for s in &found {
        println!("  {}", s.name);
    }
    if !yes && !confirm(found.len(), name, days) {
        eprintln!("nothing removed");
        return Exit::Failed;
    }
    let mut failed = 0;
    for s in &found {
        if let Err(e) = delete_with_replicas(&store, &s.name, days).await {
            eprintln!("error: {}: {e}", s.name);
            failed += 1;
        }
    }
    println!(
        "scheduled deletion of {} of {} secrets (recovery window {days} days)",
        found.len() - failed,
        found.len()
    );
    if failed > 0 { Exit::Failed } else { Exit::Ok }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn replicated_secrets_lose_their_replicas_first() {
        use crate::store::memory::MemoryStore;
        let store = MemoryStore::new();
        store.insert(
            RemoteSecret {
                name: "r".into(),
                ..Default::default()
            },
            Some(crate::secret::SecretValue::new("v")),
        );
        store
            .replicate_to("r", &["eu-west-1".into()])
            .await
            .expect("replicate");
        assert!(store.delete_secret("r", 7).await.is_err(), "AWS refuses");
        delete_with_replicas(&store, "r", 7).await.expect("delete");
        assert!(store.replica_regions("r").is_empty());
        assert!(store.get("r").expect("kept").0.pending_deletion);
    }

    #[test]
    fn only_our_live_secrets_are_removed() {
        let mk = |name: &str, agent: &str, sync: &str, pending: bool| RemoteSecret {
            name: name.into(),
            tags: BTreeMap::from([
                (crate::naming::TAG_AGENT.to_string(), agent.to_string()),
                (crate::naming::TAG_SYNC.to_string(), sync.to_string()),
            ]),
            pending_deletion: pending,
            ..Default::default()
        };
        let all = vec![
            mk("a", "me", "old", false),
            mk("b", "other", "old", false),
            mk("c", "me", "old2", false),
            mk("d", "me", "old", true),
        ];
        let names: Vec<String> = owned_live(all, "me", "old")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a"]);
    }
}
