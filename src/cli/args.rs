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

/// How commands that talk to the running agent find its socket: `--socket`
/// (or `SECRETSYNC_SOCKET`) wins; else `agent.socket` from `--config` (or
/// `SECRETSYNC_CONFIG`, or the default config when it exists); else
/// [`DEFAULT_SOCKET`]. An agent started with its own config and socket is
/// found by passing the same `--config` it was started with.
#[derive(Debug, clap::Args)]
pub struct SocketArg {
    /// Control socket of the running agent [default: agent.socket from the
    /// config, else /run/secretsync/control.sock].
    #[arg(long, short = 's', env = "SECRETSYNC_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Agent config whose agent.socket to use when --socket is not given
    /// [default: /etc/secretsync/agent.yaml, when it exists].
    #[arg(long, short = 'c', env = "SECRETSYNC_CONFIG")]
    pub config: Option<PathBuf>,
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
        /// Take over secrets that another install sharing this agent.id and
        /// sync wrote (an identity collision), e.g. after reinstalling a host.
        #[arg(long)]
        take_over: bool,
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
        /// Exit 1 when a sync is FAILED, retrying after a failure, or has a
        /// secret in ERROR or CONFLICT (for monitoring; 3 = agent unreachable).
        #[arg(long)]
        check: bool,
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
    /// Print the value AWS holds for KEY of sync NAME (the one command that
    /// prints a secret value; refused on a terminal without --reveal).
    Get {
        #[command(flatten)]
        config: ConfigArg,
        /// The sync whose secret to read.
        #[arg(long, value_name = "NAME")]
        sync: String,
        /// The source key: its one-to-one secret, or its entry in the
        /// many-to-one JSON secret.
        key: String,
        /// Print the value even when stdout is a terminal.
        #[arg(long)]
        reveal: bool,
        /// Also read a secret this agent's sync does not own.
        #[arg(long)]
        any: bool,
    },
    /// Print a shell completion script to stdout.
    Completions {
        /// Shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}
