//! The long-running part of `secretsync run`: the daemon (composition root,
//! signals, sd_notify), the engine (sync state, scheduling, debounce; the
//! only writer of status), directory watches and the status model.

pub mod daemon;
pub mod engine;
pub mod schedule;
pub(crate) mod status;
pub(crate) mod watch;
