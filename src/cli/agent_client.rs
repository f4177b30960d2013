//! CLI commands that talk to the running agent: `status`, `resync`,
//! `reload`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::control::client::{self, ClientError};
use crate::control::proto::{ErrorCode, Reply, Request};
use crate::exit::Exit;

/// How long `status`/`reload` wait for an answer.
const QUICK: Duration = Duration::from_secs(30);
/// How long a waiting `resync` may take (AWS may be slow or throttling).
const LONG: Duration = Duration::from_secs(3600);

fn request(cmd: &str) -> Request {
    Request {
        id: json!(1),
        cmd: cmd.into(),
        sync: None,
        syncs: None,
        allow_deletes: false,
        wait: None,
    }
}

/// Sends a request; prints and maps failures to exit codes.
async fn ask(socket: &Path, req: &Request, timeout: Duration) -> Result<Value, Exit> {
    let reply: Reply = client::call(socket, req, timeout)
        .await
        .map_err(|e: ClientError| {
            eprintln!("error: {e}");
            Exit::Unreachable
        })?;
    if reply.ok {
        return Ok(reply.result.unwrap_or(Value::Null));
    }
    let (code, message) = reply
        .error
        .map(|e| (e.code, e.message))
        .unwrap_or((ErrorCode::Internal, "no error message".into()));
    eprintln!("error: {message}");
    Err(exit_for(code))
}

/// Exit code for an error reply. `busy` (too many clients, the engine's
/// queue full, shutting down) means the agent could not take the request:
/// "cannot reach the agent" (3), like a socket that does not answer.
fn exit_for(code: ErrorCode) -> Exit {
    match code {
        ErrorCode::NotFound | ErrorCode::InvalidConfig | ErrorCode::BadRequest => Exit::Usage,
        ErrorCode::Busy => Exit::Unreachable,
        ErrorCode::Forbidden | ErrorCode::Internal => Exit::Failed,
    }
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// `secretsync status`.
pub async fn status(socket: &Path, json_out: bool, name: Option<String>) -> Exit {
    let mut req = request("status");
    req.sync = name.clone();
    let result = match ask(socket, &req, QUICK).await {
        Ok(v) => v,
        Err(e) => return e,
    };
    if json_out {
        print_json(&result);
    } else {
        print!(
            "{}",
            render_status(&result, name.is_some(), SystemTime::now())
        );
    }
    Exit::Ok
}

/// "3 s ago" style age of an RFC 3339 time.
fn ago(time: &Value, now: SystemTime) -> String {
    let Some(t) = time.as_str().and_then(|s| humantime::parse_rfc3339(s).ok()) else {
        return "never".into();
    };
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// Human table of the status result.
pub fn render_status(result: &Value, per_secret: bool, now: SystemTime) -> String {
    let mut out = String::new();
    let agent = &result["agent"];
    let _ = writeln!(
        out,
        "agent {} (v{}, pid {}), config {}",
        agent["id"].as_str().unwrap_or("?"),
        agent["version"].as_str().unwrap_or("?"),
        agent["pid"],
        agent["config_path"].as_str().unwrap_or("?")
    );
    if let Some(err) = agent["config_error"].as_str() {
        let _ = writeln!(out, "  ! last reload rejected, old config running:");
        for line in err.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:>7} {:>6} {:>7} {:>8} {:>5}  {:<12} MESSAGE",
        "SYNC", "STATUS", "SECRETS", "SYNCED", "PENDING", "CONFLICT", "ERROR", "LAST SYNCED"
    );
    let empty = vec![];
    for s in result["syncs"].as_array().unwrap_or(&empty) {
        let c = &s["counts"];
        let message = s["last_sync_message"]
            .as_str()
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:>7} {:>6} {:>7} {:>8} {:>5}  {:<12} {}",
            s["name"].as_str().unwrap_or("?"),
            s["sync_status"].as_str().unwrap_or("?"),
            c["secrets"].to_string(),
            c["synced"].to_string(),
            c["pending"].to_string(),
            c["conflict"].to_string(),
            c["error"].to_string(),
            ago(&s["last_synced_at"], now),
            message
        );
        if per_secret {
            let _ = writeln!(
                out,
                "\n  {:<24} {:<40} {:<9} MESSAGE",
                "KEY", "NAME", "STATE"
            );
            for sec in s["secrets"].as_array().unwrap_or(&empty) {
                let _ = writeln!(
                    out,
                    "  {:<24} {:<40} {:<9} {}",
                    sec["key"].as_str().unwrap_or("-"),
                    sec["name"].as_str().unwrap_or("?"),
                    sec["state"].as_str().unwrap_or("?"),
                    sec["message"].as_str().unwrap_or("")
                );
                // One indented line per replica region: `replica eu-west-1 InSync`.
                for r in sec["replicas"].as_array().unwrap_or(&empty) {
                    let _ = writeln!(
                        out,
                        "  {:<24} replica {} {}{}",
                        "",
                        r["region"].as_str().unwrap_or("?"),
                        r["status"].as_str().unwrap_or("?"),
                        r["message"]
                            .as_str()
                            .filter(|m| !m.is_empty())
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                }
            }
            for f in s["files"].as_array().unwrap_or(&empty) {
                if let Some(e) = f["error"].as_str() {
                    let _ = writeln!(out, "  ! {e}");
                }
            }
        }
    }
    out
}

/// `secretsync resync`.
pub async fn resync(
    socket: &Path,
    names: Vec<String>,
    allow_deletes: bool,
    no_wait: bool,
    json_out: bool,
) -> Exit {
    let mut req = request("resync");
    req.syncs = Some(names);
    req.allow_deletes = allow_deletes;
    req.wait = Some(!no_wait);
    let result = match ask(socket, &req, if no_wait { QUICK } else { LONG }).await {
        Ok(v) => v,
        Err(e) => return e,
    };
    if json_out {
        print_json(&result);
    }
    if no_wait {
        if !json_out {
            println!("queued");
        }
        return Exit::Ok;
    }
    let empty = vec![];
    let mut failed = false;
    for s in result["syncs"].as_array().unwrap_or(&empty) {
        let status = s["sync_status"].as_str().unwrap_or("?");
        failed |= !matches!(status, "SYNCED" | "DISABLED");
        if !json_out {
            let msg = s["last_sync_message"].as_str().unwrap_or("");
            println!("{} {status} {msg}", s["name"].as_str().unwrap_or("?"));
        }
    }
    if failed { Exit::Failed } else { Exit::Ok }
}

/// `secretsync reload`.
pub async fn reload(socket: &Path) -> Exit {
    match ask(socket, &request("reload"), QUICK).await {
        Ok(_) => {
            println!("config reloaded");
            Exit::Ok
        }
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_exit_codes() {
        let cases = [
            (ErrorCode::BadRequest, 2),
            (ErrorCode::Forbidden, 1),
            (ErrorCode::NotFound, 2),
            (ErrorCode::InvalidConfig, 2),
            (ErrorCode::Busy, 3),
            (ErrorCode::Internal, 1),
        ];
        for (code, want) in cases {
            assert_eq!(exit_for(code).code(), want, "{code:?}");
        }
    }

    #[test]
    fn ages() {
        let now = humantime::parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        assert_eq!(ago(&json!("2026-01-01T00:09:57Z"), now), "3 s ago");
        assert_eq!(ago(&json!("2026-01-01T00:00:00Z"), now), "10 min ago");
        assert_eq!(ago(&Value::Null, now), "never");
    }

    #[test]
    fn table_shows_counts_and_first_error_line() {
        let v = json!({"agent": {"id": "a", "version": "0.1.0", "pid": 1, "config_path": "/c"},
            "syncs": [{"name": "app", "sync_status": "FAILED", "last_sync_message": "x.env:2:3: bad\nmore",
              "last_synced_at": null, "counts": {"secrets": 2, "synced": 1, "pending": 0, "conflict": 0, "error": 1},
              "secrets": [{"key": "A", "name": "p/A", "state": "ERROR", "message": "too big"},
                          {"key": "B", "name": "p/B", "state": "SYNCED", "message": null,
                           "replicas": [{"region": "eu-west-1", "status": "Failed", "message": "name exists"}]}],
              "files": []}]});
        let now = SystemTime::now();
        let t = render_status(&v, true, now);
        assert!(
            t.contains("app") && t.contains("FAILED") && t.contains("x.env:2:3: bad"),
            "{t}"
        );
        assert!(!t.contains("more"));
        assert!(t.contains("p/A") && t.contains("too big"));
        assert!(t.contains("replica eu-west-1 Failed: name exists"), "{t}");
    }
}
