//! The engine's front: the requests it takes and the handle that the socket and daemon hold.

#[allow(unused_imports)]
use super::*;

/// How many requests (socket commands, signals) may wait for the engine
/// loop. Bounded so a client sending `resync --no-wait` in a loop gets
/// `busy` instead of growing the agent's memory.
pub const REQUEST_QUEUE: usize = 256;

pub(super) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What callers can ask of the engine.
#[derive(Debug)]
pub enum Request {
    /// Paths that changed on disk (from the watcher).
    FilesChanged(Vec<PathBuf>),
    /// One watcher event with its kind (writes and closes steer the quiet
    /// period); what the watcher feeds, for tests without a watcher.
    FileEvent(crate::agent::watch::FileEvent),
    /// Re-read and reconcile now (all enabled syncs if `syncs` is empty);
    /// the reply comes when those passes finish.
    Resync {
        /// Sync names; empty = all enabled.
        syncs: Vec<String>,
        /// Lift the deletion guard for these passes.
        allow_deletes: bool,
        /// Where to send the reports (`None`: do not wait).
        reply: Option<Reply<Vec<SyncReport>>>,
    },
    /// Dry run now, without touching status.
    Plan {
        /// One sync, or all.
        sync: Option<String>,
        /// The plan.
        reply: Reply<Report>,
    },
    /// Re-read the config file.
    Reload {
        /// Ok, or the validation errors.
        reply: Option<Reply<()>>,
    },
    /// Liveness check for the systemd watchdog.
    Ping {
        /// Answered by the loop.
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle to a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(super) tx: mpsc::Sender<Request>,
    pub(super) status: watch::Receiver<Arc<Status>>,
}

impl EngineHandle {
    /// Queues a request without waiting: [`EngineError::Busy`] when the
    /// queue is full, [`EngineError::Stopped`] once the engine is gone.
    pub fn send(&self, request: Request) -> Result<(), EngineError> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EngineError::Busy,
            mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
        })
    }

    /// The latest published status.
    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status.borrow())
    }

    /// A receiver that wakes on every status change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Status>> {
        self.status.clone()
    }

    /// Resync and wait for the passes.
    pub async fn resync(
        &self,
        syncs: Vec<String>,
        allow_deletes: bool,
    ) -> Result<Vec<SyncReport>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Resync {
            syncs,
            allow_deletes,
            reply: Some(reply),
        })?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Plan now.
    pub async fn plan(&self, sync: Option<String>) -> Result<Report, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Plan { sync, reply })?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Reload the config and wait for the verdict.
    pub async fn reload(&self) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Reload { reply: Some(reply) })?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Whether the engine loop answers within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.send(Request::Ping { reply }).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }
}

pub(super) type Digests = Vec<(PathBuf, Option<[u8; 32]>)>;
