//! secretsync: keeps AWS Secrets Manager in step with local `.env` and YAML
//! secret files.
//!
//! # Code map (the folders name the stages of the flow)
//! - [`cli`]: the binary's faces: clap model, one-shot commands
//!   (`check`/`plan`/`sync`), agent client commands (`status`/`resync`/
//!   `reload`), `remove`, completions. [`exit`]: exit codes.
//! - [`config`]: `agent.yaml`: raw model, field readers, per-sync checks,
//!   overlaps; every error as `PATH:LINE:COL`.
//! - [`source`]: pure `.env` / YAML parsers to positioned entries; reading
//!   files and globs; format-preserving write-back and the one atomic write.
//! - [`reconcile`]: one pass: desired (files + mapping), plan (every safety
//!   rule), apply (bounded concurrency), outcomes, import, report models,
//!   known values and `state_dir`.
//! - [`store`]: the [`store::SecretStore`] trait; `store::aws` (client,
//!   error mapping, bulk reads, pacing, retries: the only module naming AWS
//!   SDK types); `store::memory` (AWS's contract with fault injection and
//!   quotas, behind the `memory-store` feature, for tests and benchmarks).
//! - [`agent`]: the long-running part: daemon (composition root, signals,
//!   sd_notify), engine (scheduling, debounce; the only writer of status),
//!   directory watches, the status model.
//! - `control`: the Unix socket (protocol, peer auth, per-uid limits, server, client);
//!   `metrics`: Prometheus registry and the loopback `/metrics` server.
//! - [`secret`]: [`secret::SecretValue`], whose `Debug`/`Display` redact;
//!   [`naming`]: name templates, key-schema inversion, AWS limits;
//!   [`logging`]: journald / text / JSON set-up and the SDK log caps.
//!
//! # Invariants
//! - Data flows one way: sources (file events, signals, socket) → debounce
//!   (engine) → parse → desired → plan → apply → status.
//! - No import cycle between files (`tests/module_graph.rs` fails on one);
//!   a helper lives in the lowest layer that needs it, and metrics, logging
//!   and report models take plain types.
//! - `source` parsers, `reconcile::desired`, `reconcile::plan` and the import
//!   merge do no IO; their tests are tables of cases. The IO of `source` is
//!   confined to `source::files` (reading) and the atomic write.
//! - Only `store::aws` knows the AWS SDK. The engine and the pass talk to
//!   the [`store::SecretStore`] trait (the engine through a
//!   [`store::StoreFactory`]), so the in-memory store drives engine tests
//!   under `tokio::time::pause`; only composition roots (the daemon, the
//!   one-shot commands) pick the AWS store.
//! - Only the engine writes status; the socket, CLI and metrics read
//!   snapshots.
//! - Queues into the engine are bounded (requests answer `busy` when full;
//!   lost file events become one re-read of every sync).
//! - A value is only ever skipped when AWS's current version id is one the
//!   agent wrote or read itself (known values); a secret's value or tags are
//!   only written after its ownership was read in the same pass.
//! - A value is a `SecretValue` from parse to send; nothing formats it, and
//!   errors, reports and logs carry names and keys only.

pub mod agent;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub mod exit;
pub mod logging;
pub(crate) mod metrics;
pub mod naming;
pub mod reconcile;
pub mod secret;
pub mod source;
pub mod store;
#[cfg(test)]
mod test_rng;
