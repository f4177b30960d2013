//! secretsync: keeps AWS Secrets Manager in step with local `.env` and YAML
//! secret files.
//!
//! # Code map
//! - [`cli`]: clap definitions; [`commands`]: the one-shot commands;
//!   [`agent_cli`]: commands that ask the running agent; [`remove`]:
//!   "unsync"; [`exit`]: exit codes; [`logging`]: tracing setup.
//! - [`daemon`]: composition root of `secretsync run` (signals, sd_notify).
//! - [`engine`]: owns sync state, schedules passes (debounce, follow-ups,
//!   retries, drift), the only writer of [`status`].
//! - [`watch`]: directory watches and which events concern which sync.
//! - [`control`]: the Unix control socket (protocol, peer auth, server,
//!   client); it only reads status and sends requests to the engine.
//! - [`config`]: `agent.yaml` model, defaults, validation with `PATH:LINE:COL`.
//! - [`secret`]: [`secret::SecretValue`], whose `Debug`/`Display` redact.
//! - [`naming`]: name templates and AWS name/tag/size limits.
//! - [`source`]: pure `.env` / YAML parsers and format-preserving write-back;
//!   [`files`]: reading source files; [`import`]: initial-sync import scope
//!   and merge (pure).
//! - [`desired`]: files + mapping → the secrets that should exist (pure).
//! - [`plan`]: desired vs actual → actions; every safety rule (pure).
//! - [`store`]: the [`store::SecretStore`] trait, the AWS store (the only
//!   module that names AWS SDK types) and an in-memory store for tests and
//!   benchmarks.
//! - [`apply`]: runs a plan through a store with bounded concurrency.
//! - [`reconcile`]: one pass: files → desired → AWS state → plan → apply.
//! - [`report`]: JSON and human output models; [`state`]: `state_dir`;
//!   [`known`]: per-sync memory of AWS values (version id + keyed digest)
//!   that spares re-reading values a pass already knows.
//! - [`metrics`]: Prometheus metrics and the loopback `/metrics` endpoint
//!   (written by the engine and the AWS store's SDK interceptor);
//!   [`kms`]: `check`'s verdict on a configured KMS key (pure).
//!
//! # Invariants
//! - Data flows one way: sources (file events, signals, socket) → debounce
//!   (engine) → parse → desired → plan → apply → status.
//! - `source`, `desired`, `plan` and `import` do no IO (the one exception is
//!   `source::writeback::write_atomic`, the import's file write, kept beside
//!   the format-preserving edits it writes); their tests are tables of cases.
//! - Only the engine writes status; the socket and CLI read snapshots.
//! - Queues into the engine are bounded (requests answer `busy` when full;
//!   lost file events become one re-read of every sync).
//! - A value is only ever skipped when AWS's current version id is one the
//!   agent wrote or read itself ([`known`]); a secret's value or tags are
//!   only written after its ownership was read in the same pass.
//! - Only `store::aws` knows the AWS SDK; everything else uses the trait, so
//!   the in-memory store can drive engine tests under `tokio::time::pause`.
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
