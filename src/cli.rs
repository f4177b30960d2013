//! Command-line definitions (clap only; behaviour lives in `commands`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/secretsync/agent.yaml";

/// Keeps AWS Secrets Manager in step with local .env and YAML files.
#[derive(Debug, Parser)]
#[command(name = "secretsync", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Config file option shared by commands that read the config.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Agent config file.
    #[arg(long, short = 'c', env = "SECRETSYNC_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and (unless --offline) test AWS access per destination.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Only validate the config; make no AWS calls.
        #[arg(long)]
        offline: bool,
    },
    /// Dry run: show what a reconcile would do now (values are never shown).
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this sync.
        #[arg(long)]
        sync: Option<String>,
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
        /// Exit 4 when changes are pending.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// One reconcile pass without a daemon, then exit.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this sync.
        #[arg(long)]
        sync: Option<String>,
        /// Lift the deletion guard for this pass.
        #[arg(long)]
        allow_deletes: bool,
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
}
