//! CLI commands that talk to the running agent: `status`, `resync`,
//! `reload`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::cli::{DEFAULT_CONFIG, DEFAULT_SOCKET, SocketArg};
use crate::config;
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

/// Where the socket path came from; error messages say it, so a user
/// whose agent listens elsewhere learns which setting to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSource {
    /// `--socket` or `SECRETSYNC_SOCKET`.
    Given,
    /// `agent.socket` of this config file.
    Config(PathBuf),
    /// The built-in default (no config named one).
    Default,
}

/// The socket a client command talks to, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Socket path.
    pub socket: PathBuf,
    /// Where the path came from.
    pub source: SocketSource,
    /// The config consulted for hints when `--socket` was given or no
    /// config could be read (path and the socket it names, if any).
    pub config_socket: Option<(PathBuf, PathBuf)>,
}

/// `agent.socket` of the config at `path`: from the validated config, or,
/// when the file is readable but invalid (an edit the agent rejected on
/// reload while it keeps running), from just that one key, so `status`
/// still finds the agent. `Err` only when the file cannot be read.
pub fn socket_of_config(path: &Path) -> Result<PathBuf, String> {
    match config::load_config(path) {
        Ok(c) => Ok(c.agent.socket),
        Err(errors) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                errors
                    .0
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| e.to_string())
            })?;
            #[derive(serde::Deserialize)]
            struct Partial {
                agent: Option<PartialAgent>,
            }
            #[derive(serde::Deserialize)]
            struct PartialAgent {
                socket: Option<PathBuf>,
            }
            let socket = serde_saphyr::from_str::<Partial>(&text)
                .ok()
                .and_then(|p| p.agent)
                .and_then(|a| a.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
            let base = path.parent().unwrap_or(Path::new("."));
            Ok(base.join(socket))
        }
    }
}

/// Picks the socket per [`SocketArg`]'s rules: `--socket`, else the
/// config's `agent.socket` (`--config`, or the default config when it
/// exists), else the default socket. A config named explicitly that
/// cannot be read is a usage error (exit 2).
pub fn resolve(arg: &SocketArg) -> Result<Target, Exit> {
    let explicit_config = arg.config.clone();
    let config_path = explicit_config.clone().or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| DEFAULT_CONFIG.into())
    });
    if let Some(socket) = &arg.socket {
        // Read the config only for a hint if the socket turns out missing.
        let config_socket = config_path.and_then(|p| socket_of_config(&p).ok().map(|s| (p, s)));
        return Ok(Target {
            socket: socket.clone(),
            source: SocketSource::Given,
            config_socket,
        });
    }
    match config_path {
        Some(p) => match socket_of_config(&p) {
            Ok(socket) => Ok(Target {
                socket,
                source: SocketSource::Config(p),
                config_socket: None,
            }),
            Err(e) if explicit_config.is_some() => {
                eprintln!("{e}");
                eprintln!(
                    "hint: pass the config the agent runs with (--config PATH or SECRETSYNC_CONFIG), or its socket with --socket"
                );
                Err(Exit::Usage)
            }
            // The default config exists but we may not read it (a user
            // outside the agent's group): try the default socket.
            Err(e) => {
                tracing::debug!(error = %e, "default config unreadable; using the default socket");
                Ok(Target {
                    socket: DEFAULT_SOCKET.into(),
                    source: SocketSource::Default,
                    config_socket: None,
                })
            }
        },
        None => Ok(Target {
            socket: DEFAULT_SOCKET.into(),
            source: SocketSource::Default,
            config_socket: None,
        }),
    }
}

/// What to add to an "agent unreachable" error: where the socket path came
/// from, and another socket a config names. `None` when there is nothing
/// useful to add.
pub fn unreachable_hint(target: &Target) -> Option<String> {
    let mut hints = Vec::new();
    match &target.source {
        SocketSource::Given => {}
        SocketSource::Config(p) => hints.push(format!(
            "the socket path is agent.socket in {}",
            p.display()
        )),
        SocketSource::Default => hints.push(format!(
            "{} is the default socket (no config named another); if the agent runs with its own config, pass it: --config PATH (or SECRETSYNC_CONFIG)",
            DEFAULT_SOCKET
        )),
    }
    if let Some((config, socket)) = &target.config_socket
        && socket != &target.socket
    {
        hints.push(format!(
            "{} names another socket, {}: drop --socket/SECRETSYNC_SOCKET or pass --socket {}",
            config.display(),
            socket.display(),
            socket.display()
        ));
    }
    (!hints.is_empty()).then(|| hints.join("\nhint: "))
}

/// A path that exists but is not a socket: connecting to it would be
/// refused, which reads like a dead agent; say what it really is.
fn not_a_socket(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).ok()?;
    let ft = meta.file_type();
    if ft.is_socket() {
        return None;
    }
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a socket"
    };
    Some(format!(
        "{} is {what}, not a control socket; pass the agent's socket with --socket (or its config with --config)",
        path.display()
    ))
}

/// [`ask`] at `target`, with the checks and hints that need to know where
/// the path came from.
async fn ask_agent(target: &Target, req: &Request, timeout: Duration) -> Result<Value, Exit> {
    if let Some(e) = not_a_socket(&target.socket) {
        eprintln!("error: {e}");
        return Err(Exit::Unreachable);
    }
    let result = ask(&target.socket, req, timeout).await;
    if result == Err(Exit::Unreachable)
        && !target.socket.exists()
        && let Some(h) = unreachable_hint(target)
    {
        eprintln!("hint: {h}");
    }
    result
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// `secretsync status`; with `check`, the exit code says whether anything
/// needs attention ([`problems`]).
pub async fn status(target: &Target, json_out: bool, check: bool, name: Option<String>) -> Exit {
    let mut req = request("status");
    req.sync = name.clone();
    let result = match ask_agent(target, &req, QUICK).await {
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
    if !check {
        return Exit::Ok;
    }
    let problems = problems(&result);
    for p in &problems {
        eprintln!("check: {p}");
    }
    if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// What `status --check` reports, one line per sync that needs attention:
/// FAILED; PENDING with a message (a retry after a failed attempt, e.g. AWS
/// unreachable); or any secret in ERROR or CONFLICT, whatever the status.
/// Fine: SYNCED, RUNNING (a pass in progress), DISABLED (switched off on
/// purpose) and PENDING without a message (a debounce in progress, or
/// `auto_sync: false` waiting for `resync`).
pub fn problems(result: &Value) -> Vec<String> {
    let empty = vec![];
    let mut out = Vec::new();
    for s in result["syncs"].as_array().unwrap_or(&empty) {
        let name = s["name"].as_str().unwrap_or("?");
        let status = s["sync_status"].as_str().unwrap_or("?");
        let message = s["last_sync_message"]
            .as_str()
            .and_then(|m| m.lines().next())
            .filter(|m| !m.is_empty());
        let counts = &s["counts"];
        let errors = counts["error"].as_u64().unwrap_or(0);
        let conflicts = counts["conflict"].as_u64().unwrap_or(0);
        let mut why = Vec::new();
        match (status, message) {
            ("FAILED", m) => why.push(format!("FAILED: {}", m.unwrap_or("no message"))),
            ("PENDING", Some(m)) => why.push(format!("PENDING (retrying): {m}")),
            ("SYNCED" | "RUNNING" | "DISABLED" | "PENDING", _) => {}
            (other, _) => why.push(format!("unknown status {other}")),
        }
        if errors > 0 {
            why.push(format!("{errors} secret(s) in ERROR"));
        }
        if conflicts > 0 {
            why.push(format!("{conflicts} secret(s) in CONFLICT"));
        }
        if !why.is_empty() {
            out.push(format!("sync {name}: {}", why.join("; ")));
        }
    }
    out
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
        "{:<20} {:<9} {:>7} {:>6} {:>7} {:>8} {:>5} {:>7}  {:<12} MESSAGE",
        "SYNC",
        "STATUS",
        "SECRETS",
        "SYNCED",
        "PENDING",
        "CONFLICT",
        "ERROR",
        "DELETED",
        "LAST SYNCED"
    );
    let empty = vec![];
    for s in result["syncs"].as_array().unwrap_or(&empty) {
        let c = &s["counts"];
        let message = s["last_sync_message"]
            .as_str()
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|| "-".into());
        // SECRETS counts live secrets; those scheduled for deletion are
        // only in DELETED.
        let deleted = c["deleted"].as_u64().unwrap_or(0);
        let live = c["secrets"].as_u64().unwrap_or(0).saturating_sub(deleted);
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:>7} {:>6} {:>7} {:>8} {:>5} {:>7}  {:<12} {}",
            s["name"].as_str().unwrap_or("?"),
            s["sync_status"].as_str().unwrap_or("?"),
            live.to_string(),
            c["synced"].to_string(),
            c["pending"].to_string(),
            c["conflict"].to_string(),
            c["error"].to_string(),
            deleted.to_string(),
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
    target: &Target,
    names: Vec<String>,
    allow_deletes: bool,
    no_wait: bool,
    json_out: bool,
) -> Exit {
    let mut req = request("resync");
    req.syncs = Some(names);
    req.allow_deletes = allow_deletes;
    req.wait = Some(!no_wait);
    let result = match ask_agent(target, &req, if no_wait { QUICK } else { LONG }).await {
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
            println!("{}", resync_line(s));
        }
    }
    if failed { Exit::Failed } else { Exit::Ok }
}

/// One line of `resync`'s human output: `NAME STATUS[ MESSAGE]`, with no
/// trailing space when there is no message.
fn resync_line(s: &Value) -> String {
    let mut line = format!(
        "{} {}",
        s["name"].as_str().unwrap_or("?"),
        s["sync_status"].as_str().unwrap_or("?")
    );
    if let Some(msg) = s["last_sync_message"].as_str().filter(|m| !m.is_empty()) {
        line.push(' ');
        line.push_str(msg);
    }
    line
}

/// `secretsync reload`.
pub async fn reload(target: &Target) -> Exit {
    match ask_agent(target, &request("reload"), QUICK).await {
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

    fn sync(status: &str, message: Option<&str>, error: u64, conflict: u64) -> Value {
        json!({"name": "web", "sync_status": status, "last_sync_message": message,
               "counts": {"secrets": 3, "synced": 1, "pending": 0, "conflict": conflict,
                          "error": error, "deleted": 0}})
    }

    /// `status --check`: which syncs need attention (table of cases).
    #[test]
    fn check_flags_failed_retrying_and_bad_secrets() {
        let cases: &[(&str, Option<&str>, u64, u64, bool)] = &[
            ("SYNCED", None, 0, 0, false),
            ("RUNNING", None, 0, 0, false),
            ("DISABLED", None, 0, 0, false),
            ("PENDING", None, 0, 0, false),
            ("PENDING", Some("ListSecrets: AWS unavailable"), 0, 0, true),
            ("FAILED", Some("deletion guard"), 0, 0, true),
            ("FAILED", None, 0, 0, true),
            ("SYNCED", None, 1, 0, true),
            ("SYNCED", None, 0, 2, true),
            ("RUNNING", None, 1, 0, true),
        ];
        for &(status, message, error, conflict, bad) in cases {
            let v = json!({"syncs": [sync(status, message, error, conflict)]});
            let p = problems(&v);
            assert_eq!(
                !p.is_empty(),
                bad,
                "{status} {message:?} {error} {conflict}: {p:?}"
            );
            if bad {
                assert!(p[0].starts_with("sync web: "), "{p:?}");
            }
        }
        assert!(problems(&json!({"syncs": []})).is_empty());
    }

    #[test]
    fn resync_lines_have_no_trailing_space() {
        assert_eq!(resync_line(&sync("SYNCED", None, 0, 0)), "web SYNCED");
        assert_eq!(resync_line(&sync("SYNCED", Some(""), 0, 0)), "web SYNCED");
        assert_eq!(
            resync_line(&sync("FAILED", Some("guard tripped"), 0, 0)),
            "web FAILED guard tripped"
        );
    }

    #[test]
    fn secrets_column_counts_live_secrets_and_deleted_apart() {
        let v = json!({"agent": {"id": "a", "version": "0.1.0", "pid": 1, "config_path": "/c"},
            "syncs": [{"name": "app", "sync_status": "SYNCED", "last_sync_message": null,
              "last_synced_at": null,
              "counts": {"secrets": 5, "synced": 3, "pending": 0, "conflict": 0, "error": 0, "deleted": 2},
              "secrets": [], "files": []}]});
        let t = render_status(&v, false, SystemTime::now());
        let header = t.lines().nth(1).unwrap();
        let row = t.lines().nth(2).unwrap();
        assert!(header.contains("DELETED"), "{t}");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cols[..8],
            ["app", "SYNCED", "3", "3", "0", "0", "0", "2"],
            "{t}"
        );
    }

    #[test]
    fn a_regular_file_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reg");
        std::fs::write(&file, "x").unwrap();
        let e = not_a_socket(&file).unwrap();
        assert!(e.contains("is a regular file, not a control socket"), "{e}");
        assert!(!e.contains("stale"), "{e}");
        assert!(not_a_socket(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn socket_comes_from_the_config_even_an_invalid_one() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            "agent:\n  id: a\n  socket: run/ctl.sock\naws:\n  region: us-east-1\nsyncs: []\n",
        )
        .unwrap();
        assert_eq!(
            socket_of_config(&good).unwrap(),
            dir.path().join("run/ctl.sock")
        );
        // A rejected edit elsewhere in the file: the socket is still found.
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "agent:\n  socket: /tmp/x.sock\n  bogus: 1\nsyncs: []\n",
        )
        .unwrap();
        assert_eq!(
            socket_of_config(&bad).unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        let missing = dir.path().join("missing.yaml");
        assert!(socket_of_config(&missing).is_err());

        let arg = SocketArg {
            socket: None,
            config: Some(good.clone()),
        };
        let t = resolve(&arg).unwrap();
        assert_eq!(t.socket, dir.path().join("run/ctl.sock"));
        assert_eq!(t.source, SocketSource::Config(good.clone()));
        assert!(unreachable_hint(&t).unwrap().contains("agent.socket in"));

        // --socket wins, and a missing one points at the config's socket.
        let arg = SocketArg {
            socket: Some("/run/secretsync/control.sock".into()),
            config: Some(good.clone()),
        };
        let t = resolve(&arg).unwrap();
        assert_eq!(t.socket, PathBuf::from("/run/secretsync/control.sock"));
        let hint = unreachable_hint(&t).unwrap();
        assert!(
            hint.contains("names another socket") && hint.contains("run/ctl.sock"),
            "{hint}"
        );

        let arg = SocketArg {
            socket: None,
            config: Some(missing),
        };
        assert_eq!(resolve(&arg), Err(Exit::Usage));
    }
}
