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

/// Reads one request line (without its newline). Anything that is not a
/// well-formed request gives the `bad_request` reply to send back, with the
/// line's `id` when the line is at least a JSON object carrying one.
pub fn parse_request(line: &[u8]) -> Result<Request, Box<Reply>> {
    serde_json::from_slice(line).map_err(|e| {
        let id = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(serde_json::Value::Null);
        Box::new(Reply::err(
            id,
            ErrorCode::BadRequest,
            format!("invalid request: {e}"),
        ))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::{Rng, cases};

    const SEEDS: &[&[u8]] = &[
        br#"{"id":1,"cmd":"status"}"#,
        br#"{"id":"x","cmd":"resync","sync":"app","allow_deletes":true,"wait":false}"#,
        br#"{"cmd":"resync","syncs":["a","b"]}"#,
        br#"{"id":{"n":[1,2]},"cmd":"plan","sync":"a"}"#,
        br#"{"id":null,"cmd":"reload"}"#,
    ];
    const SPICE: &[&[u8]] = &[
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\\",
        b"\\u0000",
        b"\\ud800",
        b"\0",
        b"\xff",
        b"\xc3",
        b"null",
        b"true",
        b"1e999",
        b"-",
        b"\"cmd\":\"x\"",
        b"\"id\":",
        b"\n",
        b"\r",
        b" ",
        b"\xef\xbb\xbf",
    ];

    /// What every answer to a line must satisfy: a request that survives a
    /// round trip through its own encoding, or a `bad_request` reply that
    /// encodes as exactly one line of JSON.
    fn check(line: &[u8]) {
        match parse_request(line) {
            Ok(request) => {
                let again = serde_json::to_vec(&request).expect("encode");
                assert_eq!(parse_request(&again).ok(), Some(request), "{line:?}");
            }
            Err(reply) => {
                assert!(!reply.ok && reply.result.is_none(), "{line:?}");
                let code = reply.error.as_ref().map(|e| e.code);
                assert_eq!(code, Some(ErrorCode::BadRequest), "{line:?}");
                let out = reply.to_line();
                assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "{line:?}");
                assert_eq!(out.last(), Some(&b'\n'));
                let back: Reply = serde_json::from_slice(&out).expect("reply is JSON");
                assert_eq!(back, *reply);
            }
        }
    }

    #[test]
    fn fuzz_request_parser_on_random_bytes() {
        let mut rng = Rng::seeded(0x6a09_e667_f3bc_c908);
        for _ in 0..cases(10_000) {
            let len = rng.below(100);
            check(&rng.bytes(len, b"{}[]\":,\\0123456789.-eE "));
        }
        for _ in 0..cases(10_000) {
            let mut line = SEEDS[rng.below(SEEDS.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(line.len() + 1);
                match rng.below(3) {
                    0 => {
                        let spice = SPICE[rng.below(SPICE.len())];
                        line.splice(at..at, spice.iter().copied());
                    }
                    1 if at < line.len() => {
                        let end = (at + 1 + rng.below(6)).min(line.len());
                        line.drain(at..end);
                    }
                    _ if at < line.len() => line[at] = rng.next() as u8,
                    _ => {}
                }
            }
            check(&line);
        }
    }

    #[test]
    fn id_is_echoed_when_the_line_is_an_object_with_one() {
        let reply = parse_request(br#"{"id":7,"cmd":5}"#).unwrap_err();
        assert_eq!(reply.id, serde_json::json!(7));
        let reply = parse_request(b"\xff{\"id\":7}").unwrap_err();
        assert_eq!(reply.id, serde_json::Value::Null);
        let reply = parse_request(&[b'['; 100_000]).unwrap_err();
        assert_eq!(reply.id, serde_json::Value::Null);
    }
}
