//! The one-shot commands: `check`, `plan`, `sync`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::exit::Exit;
use crate::reconcile::report::{self, Report, SyncStatus};
use crate::reconcile::state::State;
use crate::reconcile::{self, Mode, SyncJob};
use crate::store::aws::AwsStore;
use crate::store::{Connection, SecretStore};

fn load(path: &std::path::Path) -> Result<Config, Exit> {
    config::load_config(path).map_err(|errors| {
        eprintln!("{errors}");
        Exit::Usage
    })
}

/// The syncs a command works on: all, or the one named (unknown → exit 2).
fn select<'a>(config: &'a Config, name: Option<&str>) -> Result<Vec<&'a config::SyncConfig>, Exit> {
    match name {
        None => Ok(config.syncs.iter().collect()),
        Some(n) => match config.syncs.iter().find(|s| s.name == n) {
            Some(s) => Ok(vec![s]),
            None => {
                eprintln!("error: no sync named '{n}' in {}", config.path.display());
                Err(Exit::Usage)
            }
        },
    }
}

/// One AWS store per distinct connection, shared by the syncs using it.
async fn stores(jobs: &[SyncJob]) -> BTreeMap<Connection, Result<Arc<AwsStore>, String>> {
    let mut out = BTreeMap::new();
    for job in jobs {
        if !out.contains_key(&job.connection) {
            let store = AwsStore::connect(&job.connection)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string());
            out.insert(job.connection.clone(), store);
        }
    }
    out
}

/// `secretsync check`.
pub async fn check(path: &std::path::Path, offline: bool) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let n = config.syncs.len();
    println!(
        "{}: config OK ({n} sync{})",
        config.path.display(),
        if n == 1 { "" } else { "s" }
    );
    if let Some(addr) = config.agent.metrics_listen {
        println!("metrics: the agent serves Prometheus text at http://{addr}/metrics");
    }
    let jobs: Vec<SyncJob> = config
        .syncs
        .iter()
        .map(|s| SyncJob::from_config(&config, s))
        .collect();
    if offline {
        return Exit::Ok;
    }
    let mut exit = Exit::Ok;
    let stores = stores(&jobs).await;
    let mut probes: BTreeMap<Connection, Result<(), String>> = BTreeMap::new();
    for (conn, store) in &stores {
        let result = match store {
            Ok(s) => s.probe().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        probes.insert(conn.clone(), result);
    }
    for job in &jobs {
        match &probes[&job.connection] {
            Ok(()) => println!(
                "sync {}: {}: AWS reachable, ListSecrets allowed",
                job.spec.sync_name, job.region
            ),
            Err(e) => {
                println!(
                    "sync {}: {}: cannot use AWS: {e}",
                    job.spec.sync_name, job.region
                );
                exit = Exit::Unreachable;
            }
        }
    }
    // KMS: one DescribeKey per distinct (connection, key), reachable ones only.
    let mut keys: BTreeMap<(Connection, String), crate::store::kms::KeyVerdict> = BTreeMap::new();
    for job in &jobs {
        let Some(key) = &job.spec.kms_key_id else {
            continue;
        };
        let (Some(Ok(store)), Some(Ok(()))) =
            (stores.get(&job.connection), probes.get(&job.connection))
        else {
            continue;
        };
        let id = (job.connection.clone(), key.clone());
        if !keys.contains_key(&id) {
            let answer = store.describe_kms_key(key).await;
            keys.insert(
                id.clone(),
                crate::store::kms::verdict(key, &job.region, &answer),
            );
        }
        match &keys[&id] {
            crate::store::kms::KeyVerdict::Usable(text) => {
                println!("sync {}: {}: {text}", job.spec.sync_name, job.region);
            }
            crate::store::kms::KeyVerdict::Unknown(text) => {
                println!(
                    "sync {}: {}: warning: {text}",
                    job.spec.sync_name, job.region
                );
            }
            crate::store::kms::KeyVerdict::Unusable(text) => {
                println!("sync {}: {}: error: {text}", job.spec.sync_name, job.region);
                if exit == Exit::Ok {
                    exit = Exit::Failed;
                }
            }
        }
    }
    exit
}

/// Shared body of `plan` and `sync`.
async fn passes(
    path: &std::path::Path,
    only: Option<&str>,
    mode: Mode,
    allow_deletes: bool,
    take_over: bool,
) -> Result<(Report, State, Config), Exit> {
    let config = load(path)?;
    let selected = select(&config, only)?;
    let mut state = State::load(&config.agent.state_dir);
    let token_key = state.ensure_token_key();
    let install_id =
        crate::reconcile::state::install_id(&config.agent.state_dir, mode == Mode::Apply);
    // Persist the token key before any write uses it; a state dir that
    // cannot be written blocks imports (see SyncJob::state_unwritable).
    let state_unwritable = match mode {
        Mode::Apply => state
            .save(&config.agent.state_dir)
            .err()
            .map(|e| e.to_string()),
        Mode::Plan => None,
    };
    let jobs: Vec<SyncJob> = selected
        .iter()
        .map(|s| {
            let mut job = SyncJob::from_config(&config, s)
                .with_token_key(token_key)
                .with_install_id(install_id.clone());
            job.state_unwritable = state_unwritable.clone();
            job.options.take_over = take_over;
            // A one-shot pass is the operator looking: show replicas as AWS has them.
            job.describe_replicas = crate::reconcile::plan::DescribeReplicas::All;
            job
        })
        .collect();
    let enabled: Vec<SyncJob> = jobs.iter().filter(|j| j.enabled).cloned().collect();
    let stores = stores(&enabled).await;
    let mut syncs = Vec::new();
    for job in &jobs {
        if !job.enabled {
            syncs.push(job.disabled_report());
            continue;
        }
        let store = match &stores[&job.connection] {
            Ok(s) => Arc::clone(s),
            Err(e) => {
                syncs.push(
                    job.bare_report(SyncStatus::Failed, format!("cannot set up AWS client: {e}")),
                );
                continue;
            }
        };
        let sync_state = state
            .syncs
            .get(&job.spec.sync_name)
            .cloned()
            .unwrap_or_default();
        let pass = reconcile::run_pass(store, job, mode, allow_deletes, &sync_state).await;
        if let (Some(plan), Some(applied)) = (&pass.plan, &pass.applied) {
            let entry = state.syncs.entry(job.spec.sync_name.clone()).or_default();
            reconcile::record_state(entry, plan, applied);
            if pass.report.sync_status == SyncStatus::Synced {
                entry.initial_sync_done = true;
            }
        }
        tracing::info!(sync = %job.spec.sync_name, "{}", report::summary_line(&pass.report));
        syncs.push(pass.report);
    }
    Ok((Report { syncs }, state, config))
}

fn print(report: &Report, json: bool, applied: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode JSON: {e}"),
        }
    } else {
        print!("{}", report::render_human(report, applied));
    }
}

/// `secretsync plan`.
pub async fn plan(path: &std::path::Path, only: Option<&str>, json: bool, detailed: bool) -> Exit {
    let (report, _, _) = match passes(path, only, Mode::Plan, false, false).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    print(&report, json, false);
    let failed = report.syncs.iter().any(|s| {
        s.sync_status == SyncStatus::Failed
            || (s.sync_status == SyncStatus::Pending && s.last_sync_message.is_some())
    });
    if failed {
        Exit::Failed
    } else if detailed
        && report.syncs.iter().any(|s| {
            s.actions.iter().any(|a| {
                !matches!(
                    a.action,
                    crate::reconcile::plan::ActionKind::Conflict
                        | crate::reconcile::plan::ActionKind::Error
                )
            })
        })
    {
        Exit::Changes
    } else {
        Exit::Ok
    }
}

/// `secretsync sync`.
pub async fn sync(
    path: &std::path::Path,
    only: Option<&str>,
    allow_deletes: bool,
    take_over: bool,
    json: bool,
) -> Exit {
    let (report, state, config) =
        match passes(path, only, Mode::Apply, allow_deletes, take_over).await {
            Ok(r) => r,
            Err(e) => return e,
        };
    if let Err(e) = state.save(&config.agent.state_dir) {
        tracing::warn!(error = %e, "state not saved; stale tags set by this agent may not be removed later");
    }
    print(&report, json, true);
    let ok = report
        .syncs
        .iter()
        .all(|s| matches!(s.sync_status, SyncStatus::Synced | SyncStatus::Disabled));
    if ok { Exit::Ok } else { Exit::Failed }
}
