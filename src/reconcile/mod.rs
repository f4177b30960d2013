//! One reconcile pass, pure at its core: the desired state from files and
//! mapping, the plan (every safety rule), applying it with bounded
//! concurrency, the initial-sync import, report models, and what a sync
//! remembers between passes (known values, `state_dir`).

pub mod apply;
pub mod desired;
pub(crate) mod import;
pub(crate) mod known;
pub mod outcome;
mod pass;
pub mod plan;
pub mod report;
pub mod state;

pub use pass::*;
