//! secretsync library (code map filled in as modules land).
pub mod naming;
pub mod secret;
