//! The binary's faces: the clap model, one-shot commands that talk to AWS
//! (`check`, `plan`, `sync`), commands that ask the running agent (`status`,
//! `resync`, `reload`), `remove` ("unsync"), `get` (the one command that
//! prints a value) and shell completions.

pub mod agent_client;
mod args;
pub mod completions;
pub mod get;
pub mod oneshot;
pub mod remove;

pub use args::*;
