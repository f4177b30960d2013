//! `secretsync run`: the composition root of the agent. Loads the config,
//! sets up logging, builds the engine with the AWS store factory and the
//! file watcher, binds the control socket, wires signals, and talks to
//! systemd (READY, STATUS, RELOADING, WATCHDOG, STOPPING).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::agent::engine::{AwsStoreFactory, Engine, EngineHandle};
use crate::agent::status::Status;
use crate::config;
use crate::control;
use crate::exit::Exit;
use crate::logging;
use crate::metrics::{self, Metrics};
use crate::reconcile::report::SyncStatus;

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(config_path: &Path) -> Exit {
    let config = match config::load_config(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("secretsync: invalid config; not starting");
            return Exit::Usage;
        }
    };
    logging::init_agent(&config.agent);
    let control_settings = control::ServerSettings::from_config(&config);
    let socket_path = control_settings.socket.clone();
    let listener = match control::bind(&control_settings).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot bind the control socket");
            eprintln!("secretsync: {e}");
            return Exit::Usage;
        }
    };
    let metrics_listener = match config.agent.metrics_listen {
        Some(addr) => match metrics::server::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the metrics endpoint");
                eprintln!("secretsync: {e}");
                control::cleanup(&socket_path);
                return Exit::Usage;
            }
        },
        None => None,
    };
    let metrics = metrics_listener.as_ref().map(|_| Arc::new(Metrics::new()));
    let factory = AwsStoreFactory {
        metrics: metrics.clone(),
    };
    let (engine, handle) = match Engine::new(config, factory, true) {
        Ok((engine, handle)) => match &metrics {
            Some(m) => (engine.with_metrics(Arc::clone(m)), handle),
            None => (engine, handle),
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot start the file watcher");
            return Exit::Failed;
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let engine_task = tokio::spawn(engine.run(async move {
        let _ = stop_rx.await;
    }));
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(control::serve(
        listener,
        handle.clone(),
        control_settings,
        async move {
            let _ = server_stop_rx.await;
        },
    ));
    let (metrics_stop_tx, metrics_stop_rx) = oneshot::channel::<()>();
    let metrics_task = match (metrics_listener, metrics) {
        (Some(listener), Some(m)) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics endpoint at http://{addr}/metrics");
            }
            Some(tokio::spawn(metrics::server::serve(
                listener,
                m,
                async move {
                    let _ = metrics_stop_rx.await;
                },
            )))
        }
        _ => None,
    };
    notify(&[NotifyState::Ready]);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "secretsync agent started"
    );
    let status_task = tokio::spawn(report_status(handle.clone()));
    let watchdog_task =
        sd_notify::watchdog_enabled().map(|period| tokio::spawn(watchdog(handle.clone(), period)));

    wait_for_stop(&handle).await;
    notify(&[NotifyState::Stopping]);
    tracing::info!("stopping: no new events; finishing in-flight calls");
    let _ = server_stop_tx.send(());
    let _ = stop_tx.send(());
    let _ = engine_task.await;
    let _ = server.await;
    let _ = metrics_stop_tx.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    status_task.abort();
    if let Some(w) = watchdog_task {
        w.abort();
    }
    control::cleanup(&socket_path);
    tracing::info!("stopped");
    Exit::Ok
}

/// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives.
async fn wait_for_stop(handle: &EngineHandle) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                let mut states = vec![NotifyState::Reloading];
                if let Ok(ts) = NotifyState::monotonic_usec_now() {
                    states.push(ts);
                }
                notify(&states);
                if let Err(e) = handle.reload().await {
                    tracing::error!(error = %e, "reload failed");
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }
}

/// Sends `STATUS=` with a one-line summary whenever status changes.
async fn report_status(handle: EngineHandle) {
    let mut rx = handle.subscribe();
    while rx.changed().await.is_ok() {
        let line = summary(&rx.borrow_and_update());
        notify(&[NotifyState::Status(&line)]);
    }
}

/// One-line status for systemd.
pub fn summary(status: &Status) -> String {
    let count = |want: SyncStatus| {
        status
            .syncs
            .iter()
            .filter(|s| s.sync_status == want)
            .count()
    };
    let secrets: usize = status.syncs.iter().map(|s| s.counts.synced).sum();
    format!(
        "{} syncs: {} synced, {} pending, {} failed; {} secrets in step",
        status.syncs.len(),
        count(SyncStatus::Synced),
        count(SyncStatus::Pending) + count(SyncStatus::Running),
        count(SyncStatus::Failed),
        secrets
    )
}

/// Pets the watchdog at half its period, only while the engine loop
/// answers a ping: a stuck engine stops petting and systemd restarts it.
async fn watchdog(handle: EngineHandle, period: Duration) {
    let half = period / 2;
    loop {
        tokio::time::sleep(half).await;
        if handle.ping(half).await {
            notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("engine did not answer the watchdog ping");
        }
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
