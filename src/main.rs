//! `secretsync` binary: parse the command line, set up logging, run the
//! command, map its outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use secretsync::agent::daemon;
use secretsync::cli::{Cli, Command};
use secretsync::cli::{agent_client, get, oneshot, remove};
use secretsync::logging;

/// Worker threads of the async runtime. The agent waits on AWS and on file
/// events; two workers keep a long pass from holding up the control socket.
/// Tokio's default, one per core, made the idle agent's memory grow with
/// the host: 17.6 MiB RSS with 2 workers, 20.2 with 16 and 22.0 with 64
/// (1,000 keys; per-thread stacks and allocator arenas). Blocking file
/// reads have their own pool. `TOKIO_WORKER_THREADS` still overrides.
const WORKER_THREADS: usize = 2;

fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(WORKER_THREADS);
    }
    builder.build()
}

fn main() -> ExitCode {
    logging::install_panic_hook();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        logging::init_cli();
    }
    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let exit = runtime.block_on(async {
        match cli.command {
            // The agent keeps the absolute path: status shows it, and a
            // reload reads the same file whatever the working directory.
            Command::Run { config } => {
                let path = std::path::absolute(&config.config).unwrap_or(config.config);
                daemon::run(&path).await
            }
            Command::Completions { shell } => {
                match secretsync::cli::completions::write_completions(shell, &mut std::io::stdout())
                {
                    Ok(()) => secretsync::exit::Exit::Ok,
                    Err(e) => {
                        eprintln!("error: {e}");
                        secretsync::exit::Exit::Failed
                    }
                }
            }
            Command::Status {
                socket,
                json,
                check,
                name,
            } => match agent_client::resolve(&socket) {
                Ok(target) => agent_client::status(&target, json, check, name).await,
                Err(e) => e,
            },
            Command::Resync {
                socket,
                names,
                allow_deletes,
                no_wait,
                json,
            } => match agent_client::resolve(&socket) {
                Ok(target) => {
                    agent_client::resync(&target, names, allow_deletes, no_wait, json).await
                }
                Err(e) => e,
            },
            Command::Reload { socket } => match agent_client::resolve(&socket) {
                Ok(target) => agent_client::reload(&target).await,
                Err(e) => e,
            },
            Command::Get {
                config,
                sync,
                key,
                reveal,
                any,
            } => get::get(&config.config, &sync, &key, reveal, any).await,
            Command::Remove { config, name, yes } => {
                remove::remove(&config.config, &name, yes).await
            }
            Command::Check { config, offline } => oneshot::check(&config.config, offline).await,
            Command::Plan {
                config,
                sync,
                json,
                detailed_exitcode,
            } => oneshot::plan(&config.config, sync.as_deref(), json, detailed_exitcode).await,
            Command::Sync {
                config,
                sync,
                allow_deletes,
                take_over,
                json,
            } => {
                oneshot::sync(
                    &config.config,
                    sync.as_deref(),
                    allow_deletes,
                    take_over,
                    json,
                )
                .await
            }
        }
    });
    // Do not wait for blocking threads: a reader stuck in the kernel (a
    // hung network mount) must not keep the process alive after the agent
    // stopped within `shutdown_timeout`; whatever such a thread was doing
    // is abandoned like any in-flight call at the timeout.
    runtime.shutdown_background();
    ExitCode::from(exit.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the host's core count (tokio's default), unless the
    /// operator asked for another number.
    #[test]
    fn the_runtime_has_a_fixed_number_of_workers() {
        let rt = build_runtime().expect("runtime");
        let expected = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WORKER_THREADS);
        assert_eq!(rt.metrics().num_workers(), expected);
    }
}
