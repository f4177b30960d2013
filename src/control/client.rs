//! CLI side of the control socket.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::proto::{Reply, Request};

/// Why the agent could not be asked; each case says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket file: the agent is not running (or uses another path).
    #[error(
        "the agent is not running: no control socket at {0} (start it with `systemctl start secretsync`, or pass --socket)"
    )]
    Missing(PathBuf),
    /// The socket exists but we may not connect.
    #[error(
        "permission denied on {0}: ask an administrator to add you to the agent's group, or use sudo"
    )]
    PermissionDenied(PathBuf),
    /// The socket exists but nobody answers.
    #[error("no agent answers on {0} (stale socket, or the agent is stuck)")]
    NoAnswer(PathBuf),
    /// Another IO error.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The agent sent something we cannot read.
    #[error("unexpected reply from the agent: {0}")]
    Protocol(String),
}

/// Sends one request and waits up to `timeout` for its reply.
pub async fn call(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let path = socket.to_path_buf();
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => ClientError::Missing(path.clone()),
            ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.clone()),
            ErrorKind::ConnectionRefused => ClientError::NoAnswer(path.clone()),
            _ => ClientError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    // The agent may answer and hang up before reading the request (a `busy`
    // reply when it is at its client limit): then the write fails, but the
    // reply is there to read and says more than "broken pipe".
    let written = stream.write_all(&line).await;
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    let wait = if written.is_err() {
        timeout.min(Duration::from_secs(1))
    } else {
        timeout
    };
    let read = tokio::time::timeout(wait, reader.read_line(&mut reply)).await;
    if let Err(e) = written {
        if !reply.ends_with('\n') {
            return Err(io(e));
        }
    }
    match read {
        Err(_) => Err(ClientError::NoAnswer(path.clone())),
        Ok(Err(e)) => Err(io(e)),
        Ok(Ok(0)) => Err(ClientError::NoAnswer(path.clone())),
        Ok(Ok(_)) => serde_json::from_str(&reply).map_err(|e| ClientError::Protocol(e.to_string())),
    }
}
