//! Control protocol messages: one JSON object per line each way.

use serde::{Deserialize, Serialize};

/// Largest request line accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request. `id` is echoed back verbatim (any JSON value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Caller's id, echoed in the reply.
    #[serde(default)]
    pub id: serde_json::Value,
    /// `status`, `resync`, `reload` or `plan`.
    pub cmd: String,
    /// Narrows status/plan/resync to one sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    /// Extension: several syncs for `resync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncs: Option<Vec<String>>,
    /// Lift the deletion guard for this resync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_deletes: bool,
    /// Extension: `false` makes `resync` reply as soon as it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// Error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed, oversize or unknown request.
    BadRequest,
    /// Peer may not run this command.
    Forbidden,
    /// Unknown sync.
    NotFound,
    /// Reload rejected: the config is invalid.
    InvalidConfig,
    /// Too many clients, or shutting down.
    Busy,
    /// Anything else.
    Internal,
}

/// Error body of a failed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message (never a secret value).
    pub message: String,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id (`null` when it could not be read).
    pub id: serde_json::Value,
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A success reply.
    pub fn ok(id: serde_json::Value, result: serde_json::Value) -> Reply {
        Reply {
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// An error reply.
    pub fn err(id: serde_json::Value, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            id,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    /// The reply as one line (with the trailing newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            // Serializing these plain types cannot fail; keep a valid line anyway.
            br#"{"id":null,"ok":false,"error":{"code":"internal","message":"encode failed"}}"#
                .to_vec()
        });
        line.push(b'\n');
        line
    }
}
