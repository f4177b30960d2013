//! `secretsync` binary: parse the command line, set up logging, run the
//! command, map its outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use secretsync::agent::daemon;
use secretsync::cli::{Cli, Command};
use secretsync::cli::{agent_client, oneshot, remove};
use secretsync::logging;

fn main() -> ExitCode {
    logging::install_panic_hook();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        logging::init_cli();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let exit = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => daemon::run(&config.config).await,
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
            Command::Status { socket, json, name } => {
                agent_client::status(&socket.socket, json, name).await
            }
            Command::Resync {
                socket,
                names,
                allow_deletes,
                no_wait,
                json,
            } => agent_client::resync(&socket.socket, names, allow_deletes, no_wait, json).await,
            Command::Reload { socket } => agent_client::reload(&socket.socket).await,
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
                json,
            } => oneshot::sync(&config.config, sync.as_deref(), allow_deletes, json).await,
        }
    });
    ExitCode::from(exit.code())
}
