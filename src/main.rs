//! `secretsync` binary: parse the command line, set up logging, run the
//! command, map its outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use secretsync::cli::{Cli, Command};
use secretsync::{commands, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init_cli();
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
            Command::Check { config, offline } => commands::check(&config.config, offline).await,
            Command::Plan {
                config,
                sync,
                json,
                detailed_exitcode,
            } => commands::plan(&config.config, sync.as_deref(), json, detailed_exitcode).await,
            Command::Sync {
                config,
                sync,
                allow_deletes,
                json,
            } => commands::sync(&config.config, sync.as_deref(), allow_deletes, json).await,
        }
    });
    ExitCode::from(exit.code())
}
