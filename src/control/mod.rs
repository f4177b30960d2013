//! The local control socket: JSON lines over a Unix stream socket.
//!
//! [`proto`] holds the request/reply types, [`auth`] the peer-credential
//! decision, [`limits`] the per-uid connection slots and `plan` rate,
//! [`server`] the listener inside the agent (limits, timeouts,
//! dispatch to the engine handle; it only reads status), and [`client`] the
//! CLI side.

pub mod auth;
pub mod client;
pub mod limits;
pub mod proto;
pub mod server;

pub use server::{ServerSettings, bind, cleanup, serve};
