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

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/secretsync/control.sock";

/// Socket option shared by commands that talk to the running agent.
#[derive(Debug, clap::Args)]
pub struct SocketArg {
    /// Control socket of the running agent.
    #[arg(long, short = 's', env = "SECRETSYNC_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
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
    /// Run the agent in the foreground (systemd Type=notify).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
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
    /// Show the running agent's status.
    Status {
        #[command(flatten)]
        socket: SocketArg,
        /// Print the status JSON object.
        #[arg(long)]
        json: bool,
        /// Only this sync, with one row per secret.
        name: Option<String>,
    },
    /// Re-read sources and reconcile now (all syncs if none named).
    Resync {
        #[command(flatten)]
        socket: SocketArg,
        /// Syncs to resync.
        names: Vec<String>,
        /// Lift the deletion guard for this pass.
        #[arg(long)]
        allow_deletes: bool,
        /// Return once queued instead of waiting for the result.
        #[arg(long)]
        no_wait: bool,
        /// Print the result JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reload the agent's config (same as SIGHUP).
    Reload {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Schedule deletion of every secret owned by sync NAME ("unsync").
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The sync whose secrets to remove.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print a shell completion script to stdout.
    Completions {
        /// Shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}
