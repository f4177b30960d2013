//! The control socket server inside the agent.
//!
//! Limits keep a misbehaving client from hurting the agent or starving
//! other users: 64 KiB per request line; 10 s idle timeout, and the same
//! timeout on writing a reply; one request at a time per connection (the
//! next line is not read while a reply is unwritten, so a client that never
//! reads costs one reply of memory, then its slot after the timeout); at
//! most 64 clients at once and 8 per unprivileged uid, with 8 slots only
//! root and the agent's uid may take (see [`super::limits`]); and `plan`
//! from users outside `control.allow_*` at 1 per 2 s (burst 2) per uid, so
//! they cannot keep the AWS API busy. Refusals are `busy` replies.
//! Handlers only read status and send requests to the engine handle; they
//! never touch sync state.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::auth::{self, Peer};
use super::limits::{Rate, RateLimiter, SlotLimits, Slots};
use super::proto::{ErrorCode, MAX_REQUEST_BYTES, Reply, Request, parse_request};
use crate::agent::engine::{EngineError, EngineHandle, Request as EngineRequest};
use crate::config::Config;

/// Idle time after which a connection is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent clients.
pub const MAX_CLIENTS: usize = 64;
/// Most concurrent clients of one uid other than root and the agent's.
pub const MAX_CLIENTS_PER_UID: usize = 8;
/// Slots kept for root and the agent's uid: other users together hold at
/// most `MAX_CLIENTS - RESERVED_CLIENTS`.
pub const RESERVED_CLIENTS: usize = 8;
/// `plan` rate per uid for users outside `control.allow_*`: a plan reads
/// every destination from AWS, so an unlisted user looping on it could eat
/// the account's API rate that event passes need.
pub const PLAN_RATE: Rate = Rate {
    burst: 2,
    every: Duration::from_secs(2),
};

/// Socket settings from the config.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Socket path.
    pub socket: PathBuf,
    /// File mode of the socket.
    pub mode: u32,
    /// Extra uids allowed to resync/reload.
    pub allow_uids: Vec<u32>,
    /// Groups allowed to resync/reload.
    pub allow_groups: Vec<String>,
    /// Idle timeout per connection.
    pub idle_timeout: Duration,
    /// Concurrent client limits.
    pub slots: SlotLimits,
    /// `plan` rate for uids that may not resync.
    pub plan_rate: Rate,
}

impl ServerSettings {
    /// Settings of the running config.
    pub fn from_config(config: &Config) -> ServerSettings {
        ServerSettings {
            socket: config.agent.socket.clone(),
            mode: config.agent.socket_mode,
            allow_uids: config.control.allow_uids.clone(),
            allow_groups: config.control.allow_groups.clone(),
            idle_timeout: IDLE_TIMEOUT,
            slots: SlotLimits {
                total: MAX_CLIENTS,
                per_uid: MAX_CLIENTS_PER_UID,
                reserved: RESERVED_CLIENTS,
            },
            plan_rate: PLAN_RATE,
        }
    }
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another agent answers on this socket.
    #[error("another secretsync agent is already running on {0}")]
    AlreadyRunning(PathBuf),
    /// Something that is not a socket is in the way; we do not delete it.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Any other IO failure.
    #[error("cannot bind {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Binds the socket: a stale socket file (nobody answers) is replaced, a
/// live one makes this fail, and the mode is set before the agent reports
/// ready.
pub async fn bind(settings: &ServerSettings) -> Result<UnixListener, BindError> {
    let path = &settings.socket;
    let io = |source| BindError::Io {
        path: path.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.clone()));
        }
        match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::AlreadyRunning(path.clone())),
            Err(_) => {
                tracing::info!(path = %path.display(), "replacing stale control socket");
                std::fs::remove_file(path).map_err(io)?;
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode)).map_err(io)?;
    Ok(listener)
}

/// Removes the socket file at exit.
pub fn cleanup(socket: &Path) {
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(socket);
    }
}

/// Accepts clients until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    handle: EngineHandle,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Slots::new(settings.slots);
    let plans = Arc::new(RateLimiter::new(settings.plan_rate));
    let settings = Arc::new(settings);
    let allowed_gids: Arc<Vec<u32>> = Arc::new(auth::resolve_groups(&settings.allow_groups));
    let agent_uid = nix::unistd::Uid::current().as_raw();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let peer = match stream.peer_cred() {
                        Ok(c) => Peer {
                            uid: c.uid(),
                            gid: c.gid(),
                            pid: c.pid(),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "control connection without peer credentials; closing");
                            continue;
                        }
                    };
                    let privileged = peer.uid == 0 || peer.uid == agent_uid;
                    let slot = match slots.acquire(peer.uid, privileged) {
                        Ok(slot) => slot,
                        Err(refusal) => {
                            tracing::debug!(uid = peer.uid, pid = ?peer.pid, %refusal, "control connection refused");
                            tokio::spawn(reject_busy(stream, refusal.to_string()));
                            continue;
                        }
                    };
                    let conn = Connection {
                        handle: handle.clone(),
                        settings: Arc::clone(&settings),
                        allowed_gids: Arc::clone(&allowed_gids),
                        agent_uid,
                        plans: Arc::clone(&plans),
                        peer,
                    };
                    tokio::spawn(async move {
                        conn.run(stream).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn reject_busy(mut stream: UnixStream, message: String) {
    let reply = Reply::err(Value::Null, ErrorCode::Busy, message);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&reply.to_line())).await;
}

/// Writes one reply within `timeout`; false when the connection is to be
/// closed (write failed, or the client does not read).
async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    reply: &Reply,
    timeout: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(timeout, write.write_all(&reply.to_line())).await,
        Ok(Ok(()))
    )
}

/// Outcome of reading one request line.
enum Line {
    Data(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads up to a newline, never buffering more than `limit` bytes.
async fn read_line_limited<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    limit: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                Line::Eof
            } else {
                Line::Data(line)
            });
        }
        let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let newline = chunk.len() < found;
        if line.len() + chunk.len() > limit {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(chunk);
        reader.consume(found);
        if newline {
            return Ok(Line::Data(line));
        }
    }
}

struct Connection {
    handle: EngineHandle,
    settings: Arc<ServerSettings>,
    allowed_gids: Arc<Vec<u32>>,
    agent_uid: u32,
    plans: Arc<RateLimiter>,
    peer: Peer,
}

impl Connection {
    /// Serves requests one at a time: the next line is read only once the
    /// previous reply is written, so at most one reply is buffered here.
    async fn run(self, stream: UnixStream) {
        let peer = self.peer;
        let timeout = self.settings.idle_timeout;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        loop {
            let line = match tokio::time::timeout(
                self.settings.idle_timeout,
                read_line_limited(&mut reader, MAX_REQUEST_BYTES),
            )
            .await
            {
                Err(_) | Ok(Err(_)) | Ok(Ok(Line::Eof)) => return,
                Ok(Ok(Line::TooLong)) => {
                    let reply = Reply::err(
                        Value::Null,
                        ErrorCode::BadRequest,
                        format!("request larger than {MAX_REQUEST_BYTES} bytes"),
                    );
                    write_reply(&mut write, &reply, timeout).await;
                    return;
                }
                Ok(Ok(Line::Data(bytes))) => bytes,
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let reply = self.answer(&peer, &line).await;
            if !write_reply(&mut write, &reply, timeout).await {
                tracing::debug!(uid = peer.uid, pid = ?peer.pid, "control client does not read its replies; closing");
                return;
            }
        }
    }

    async fn answer(&self, peer: &Peer, line: &[u8]) -> Reply {
        let request = match parse_request(line) {
            Ok(r) => r,
            Err(reply) => return *reply,
        };
        let id = request.id.clone();
        if request.cmd == "plan" {
            if let Err(retry) = self.plan_allowed(peer, Instant::now()) {
                let rate = self.plans.rate();
                return Reply::err(
                    id,
                    ErrorCode::Busy,
                    format!(
                        "plan rate limit for uid {}: {} at once, then 1 per {} s (root, the agent's user, control.allow_uids and control.allow_groups are exempt); retry in {:.1} s",
                        peer.uid,
                        rate.burst,
                        rate.every.as_secs_f64(),
                        retry.as_secs_f64()
                    ),
                );
            }
        }
        if !auth::is_read_only(&request.cmd) && !self.authorized(peer) {
            // Only command names the protocol knows reach the log: the rest
            // is whatever a client sent, possibly pasted data.
            let cmd = match request.cmd.as_str() {
                known @ ("resync" | "reload") => known,
                _ => "(unknown command)",
            };
            tracing::warn!(uid = peer.uid, pid = ?peer.pid, cmd, "control request denied");
            return Reply::err(
                id,
                ErrorCode::Forbidden,
                format!(
                    "uid {} may not run '{}'; allowed: root, the agent's user, control.allow_uids, control.allow_groups",
                    peer.uid, request.cmd
                ),
            );
        }
        match self.dispatch(request).await {
            Ok(result) => Reply::ok(id, result),
            Err((code, message)) => Reply::err(id, code, message),
        }
    }

    /// `plan` is rate-limited per uid here, before it reaches the engine,
    /// for peers that may not resync.
    fn plan_allowed(&self, peer: &Peer, now: Instant) -> Result<(), Duration> {
        if self.authorized(peer) {
            return Ok(());
        }
        self.plans.take(peer.uid, now)
    }

    fn authorized(&self, peer: &Peer) -> bool {
        let cheap = auth::may_change(
            peer,
            self.agent_uid,
            &self.settings.allow_uids,
            &self.allowed_gids,
            &[],
        );
        cheap
            || (!self.allowed_gids.is_empty()
                && auth::may_change(
                    peer,
                    self.agent_uid,
                    &self.settings.allow_uids,
                    &self.allowed_gids,
                    &auth::peer_groups(peer),
                ))
    }

    async fn dispatch(&self, request: Request) -> Result<Value, (ErrorCode, String)> {
        let to_json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| (ErrorCode::Internal, format!("encode: {e}")))
        };
        match request.cmd.as_str() {
            "status" => {
                let status = self.handle.status();
                match &request.sync {
                    None => to_json(serde_json::to_value(&*status)),
                    Some(name) => {
                        let mut one = (*status).clone();
                        one.syncs.retain(|s| &s.name == name);
                        if one.syncs.is_empty() {
                            return Err((ErrorCode::NotFound, format!("no sync named '{name}'")));
                        }
                        to_json(serde_json::to_value(&one))
                    }
                }
            }
            "plan" => {
                let report = self.handle.plan(request.sync).await.map_err(engine_error)?;
                to_json(serde_json::to_value(&report))
            }
            "resync" => {
                let mut names = request.syncs.unwrap_or_default();
                names.extend(request.sync);
                if request.wait == Some(false) {
                    let status = self.handle.status();
                    if let Some(unknown) = names
                        .iter()
                        .find(|n| !status.syncs.iter().any(|s| &s.name == *n))
                    {
                        return Err((ErrorCode::NotFound, format!("no sync named '{unknown}'")));
                    }
                    self.handle
                        .send(EngineRequest::Resync {
                            syncs: names.clone(),
                            allow_deletes: request.allow_deletes,
                            reply: None,
                        })
                        .map_err(engine_error)?;
                    return Ok(json!({ "queued": names }));
                }
                let reports = self
                    .handle
                    .resync(names, request.allow_deletes)
                    .await
                    .map_err(engine_error)?;
                to_json(serde_json::to_value(json!({ "syncs": reports })))
            }
            "reload" => {
                self.handle.reload().await.map_err(engine_error)?;
                Ok(json!({ "reloaded": true }))
            }
            other => Err((
                ErrorCode::BadRequest,
                format!(
                    "unknown cmd '{}' (status, plan, resync, reload)",
                    other.escape_default()
                ),
            )),
        }
    }
}

fn engine_error(e: EngineError) -> (ErrorCode, String) {
    let code = match &e {
        EngineError::UnknownSync(_) => ErrorCode::NotFound,
        EngineError::InvalidConfig(_) => ErrorCode::InvalidConfig,
        EngineError::Stopped | EngineError::Busy => ErrorCode::Busy,
    };
    (code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn line_reader_limits_and_splits() {
        let data = b"one\ntwo\n\nlast".to_vec();
        let mut r = BufReader::with_capacity(3, &data[..]);
        let mut got = vec![];
        loop {
            match read_line_limited(&mut r, 10).await.unwrap() {
                Line::Data(d) => got.push(String::from_utf8(d).unwrap()),
                Line::TooLong => panic!("too long"),
                Line::Eof => break,
            }
        }
        assert_eq!(got, ["one", "two", "", "last"]);
        let big = [b'x'; 100];
        let mut r = BufReader::with_capacity(8, &big[..]);
        assert!(matches!(
            read_line_limited(&mut r, 64).await.unwrap(),
            Line::TooLong
        ));
    }

    #[test]
    fn engine_errors_map_to_contract_codes() {
        assert_eq!(
            engine_error(EngineError::UnknownSync("x".into())).0,
            ErrorCode::NotFound
        );
        assert_eq!(
            engine_error(EngineError::InvalidConfig("x".into())).0,
            ErrorCode::InvalidConfig
        );
        assert_eq!(engine_error(EngineError::Busy).0, ErrorCode::Busy);
    }

    #[test]
    fn replies_are_single_lines() {
        let r = Reply::err(json!(7), ErrorCode::BadRequest, "multi\nline");
        let line = r.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], "bad_request");
    }
}
