//! File watching: which directories to watch for a sync's source patterns,
//! and a thin wrapper over `notify` that forwards relevant paths.
//!
//! We watch parent directories, not files: editors save by renaming a temp
//! file over the original, tools truncate and rewrite, Kubernetes swaps a
//! `..data` symlink; all of these show up as events in the directory, while
//! a watch on the file itself would die with the old inode. Events only say
//! *when* to look; the engine re-reads the files and compares content
//! hashes, so spurious events cost a read, never an AWS call.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};

use crate::source::files::has_glob_chars;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Directories to watch for `patterns`: the parent of each literal file and
/// of its symlink target, the static directory prefix of each glob (and
/// every directory its directory part matches now). A directory that does
/// not exist yet is replaced by its nearest existing ancestor, so its
/// creation is seen and the set recomputed.
pub fn dirs_for(patterns: &[String]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let Some(parent) = path.parent() else {
            continue;
        };
        if has_glob_chars(pattern) {
            let parent_str = parent.to_string_lossy();
            if has_glob_chars(&parent_str) {
                dirs.insert(existing_ancestor(&static_prefix(parent)));
                if let Ok(matches) = glob::glob(&parent_str) {
                    dirs.extend(matches.filter_map(Result::ok).filter(|p| p.is_dir()));
                }
            } else {
                dirs.insert(existing_ancestor(parent));
            }
            continue;
        }
        dirs.insert(existing_ancestor(parent));
        if let Ok(target) = std::fs::canonicalize(path) {
            if let Some(tp) = target.parent() {
                dirs.insert(tp.to_path_buf());
            }
        }
    }
    dirs
}

fn static_prefix(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        if let Component::Normal(part) = c {
            if has_glob_chars(&part.to_string_lossy()) {
                break;
            }
        }
        out.push(c.as_os_str());
    }
    out
}

fn existing_ancestor(dir: &Path) -> PathBuf {
    let mut cur = dir;
    loop {
        if cur.is_dir() || cur.parent().is_none() {
            return cur.to_path_buf();
        }
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => return PathBuf::from("."),
        }
    }
}

/// Whether an event at `path` concerns a sync watching `dirs` for
/// `patterns`: the path sits directly in one of the directories, or it is a
/// directory on the way to one (created or renamed ancestor).
pub fn event_concerns(path: &Path, dirs: &BTreeSet<PathBuf>, patterns: &[String]) -> bool {
    if path.parent().is_some_and(|p| dirs.contains(p)) || dirs.contains(path) {
        return true;
    }
    patterns.iter().any(|p| Path::new(p).starts_with(path))
}

/// Whether `path` is one of the source files `patterns` name (a literal
/// path, or a match of a glob): the events that extend a sync's debounce.
pub fn names_source_file(path: &Path, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        if has_glob_chars(p) {
            glob::Pattern::new(p).is_ok_and(|g| g.matches_path(path))
        } else {
            Path::new(p) == path
        }
    })
}

/// What an event says about a path, for the engine's quiet period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Content was written (`IN_MODIFY`): the writer may still hold the
    /// file open and be only part way through.
    Written,
    /// A writer closed the file (`IN_CLOSE_WRITE`): that write is complete.
    Closed,
    /// The path went away (deleted, or renamed to another name).
    Gone,
    /// Anything else that can mean a change (created, renamed here,
    /// attributes), or an event whose kind is not known.
    Other,
}

impl Activity {
    /// Whether the event can change which directories a sync watches
    /// (writes and closes cannot, so an event storm of writes does not
    /// recompute the watch set per event).
    pub fn may_move_dirs(self) -> bool {
        matches!(self, Activity::Gone | Activity::Other)
    }
}

/// What a notify event kind means for content, `None` when it cannot mean
/// a change: opens, reads and read-only closes (our own reads among them).
pub fn activity(kind: &EventKind) -> Option<Activity> {
    use notify::event::{ModifyKind, RenameMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Activity::Closed),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Data(_)) => Some(Activity::Written),
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            Some(Activity::Gone)
        }
        _ => Some(Activity::Other),
    }
}

/// One notify event as the engine sees it: what happened, and to which paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// What the event says about its paths.
    pub activity: Activity,
    /// The paths it concerns.
    pub paths: Vec<PathBuf>,
}

/// At most one log line per period, counting the ones left out, for a
/// warning that an event storm can trigger thousands of times a second.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    next: Option<Instant>,
    left_out: u64,
}

impl LogThrottle {
    /// A throttle allowing one line per `every`.
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            next: None,
            left_out: 0,
        }
    }

    /// Whether to log now; `Some(n)`: yes, and `n` lines were left out
    /// since the last one logged.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.left_out += 1;
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.left_out))
    }
}

/// How often the "file events were dropped" warning may be logged.
pub const DROPPED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Errors setting up watches.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    /// Directory.
    pub path: PathBuf,
    /// What notify said.
    pub source: notify::Error,
}

/// How many event batches may wait for the engine. Past this the feed
/// stops queueing and records an overflow instead, so an event storm in a
/// watched directory costs bounded memory (the engine then re-reads every
/// sync once, which is what the dropped events could have asked for).
pub const EVENT_QUEUE: usize = 1024;

/// What the watcher tells the engine.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// These paths saw an event.
    Files(FileEvent),
    /// Events were dropped (our queue or the kernel's overflowed): any
    /// watched file may have changed.
    Unknown,
}

/// The sending half of the watch feed, moved into notify's callback.
#[derive(Clone, Debug)]
pub struct ChangeSender {
    tx: mpsc::Sender<Option<FileEvent>>,
    overflow: Arc<AtomicBool>,
}

impl ChangeSender {
    /// Queues `event`, or records an overflow when the queue is full.
    pub fn send(&self, event: FileEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Some(event)) {
            self.overflow.store(true, Ordering::Release);
        }
    }

    /// Records that events were lost and wakes the engine if it can.
    pub fn lost_events(&self) {
        self.overflow.store(true, Ordering::Release);
        // An empty message only wakes the receiver; when the queue is full
        // the receiver is awake anyway.
        let _ = self.tx.try_send(None);
    }
}

/// The receiving half of the watch feed, owned by the engine.
#[derive(Debug)]
pub struct ChangeReceiver {
    rx: mpsc::Receiver<Option<FileEvent>>,
    overflow: Arc<AtomicBool>,
}

impl ChangeReceiver {
    /// The next change; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Change> {
        let event = self.rx.recv().await?;
        Some(match event {
            _ if self.overflow.swap(false, Ordering::AcqRel) => Change::Unknown,
            Some(event) => Change::Files(event),
            None => Change::Unknown,
        })
    }
}

/// A bounded feed from the watcher thread to the engine (see [`EVENT_QUEUE`]).
pub fn change_feed(capacity: usize) -> (ChangeSender, ChangeReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(AtomicBool::new(false));
    (
        ChangeSender {
            tx,
            overflow: Arc::clone(&overflow),
        },
        ChangeReceiver { rx, overflow },
    )
}

/// A set of non-recursive directory watches that forwards event paths.
pub struct DirWatcher {
    inner: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl DirWatcher {
    /// Starts the watcher thread; relevant event paths go to `feed`. An
    /// event that says the kernel dropped events (inotify queue overflow)
    /// becomes [`Change::Unknown`].
    pub fn new(feed: ChangeSender) -> Result<Self, notify::Error> {
        let inner =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) if event.need_rescan() => feed.lost_events(),
                Ok(event) => {
                    if let Some(activity) = activity(&event.kind) {
                        feed.send(FileEvent {
                            activity,
                            paths: event.paths,
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "file watch error"),
            })?;
        Ok(Self {
            inner,
            watched: BTreeSet::new(),
        })
    }

    /// Makes the watched set equal `dirs`; returns the directories that
    /// could not be watched (they are retried on the next call).
    pub fn set_dirs(&mut self, dirs: &BTreeSet<PathBuf>) -> Vec<WatchError> {
        let mut errors = Vec::new();
        let stale: Vec<PathBuf> = self.watched.difference(dirs).cloned().collect();
        for dir in stale {
            let _ = self.inner.unwatch(&dir);
            self.watched.remove(&dir);
        }
        for dir in dirs.difference(&self.watched.clone()) {
            match self.inner.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(source) => errors.push(WatchError {
                    path: dir.clone(),
                    source,
                }),
            }
        }
        errors
    }

    /// Directories currently watched.
    pub fn watched(&self) -> &BTreeSet<PathBuf> {
        &self.watched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_files_named_by_literal_paths_and_globs() {
        let patterns = vec![
            "/etc/app/prod.env".to_string(),
            "/etc/app/extra/*.yaml".to_string(),
        ];
        let cases = [
            ("/etc/app/prod.env", true),
            ("/etc/app/extra/db.yaml", true),
            ("/etc/app/.prod.env.swp", false),
            ("/etc/app/other.env", false),
            ("/etc/app/..data", false),
            ("/etc/app/extra/db.json", false),
        ];
        for (path, want) in cases {
            assert_eq!(
                names_source_file(Path::new(path), &patterns),
                want,
                "{path}"
            );
        }
    }

    fn ev(path: &str) -> FileEvent {
        FileEvent {
            activity: Activity::Other,
            paths: vec![PathBuf::from(path)],
        }
    }

    #[tokio::test]
    async fn a_full_feed_drops_batches_and_reports_one_unknown_change() {
        let (tx, mut rx) = change_feed(2);
        for i in 0..5 {
            tx.send(ev(&format!("/d/{i}")));
        }
        // The queued batches come out; the first receive after the overflow
        // says "unknown" (any file may have changed), then it is cleared.
        assert_eq!(rx.next().await, Some(Change::Unknown));
        assert_eq!(rx.next().await, Some(Change::Files(ev("/d/1"))));
        tx.send(ev("/d/9"));
        assert_eq!(rx.next().await, Some(Change::Files(ev("/d/9"))));
        drop(tx);
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test]
    async fn lost_kernel_events_wake_the_receiver_as_unknown() {
        let (tx, mut rx) = change_feed(4);
        tx.lost_events();
        assert_eq!(rx.next().await, Some(Change::Unknown));
    }

    #[test]
    fn dirs_table() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("app/extra")).unwrap();
        std::fs::create_dir_all(root.join("svc/a")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/t.env"), "A=1").unwrap();
        std::os::unix::fs::symlink(root.join("real/t.env"), root.join("app/link.env")).unwrap();
        let p = |s: &str| root.join(s).to_string_lossy().into_owned();
        let cases: Vec<(&str, Vec<String>, Vec<PathBuf>)> = vec![
            (
                "literal file",
                vec![p("app/prod.env")],
                vec![root.join("app")],
            ),
            (
                "glob in file name",
                vec![p("app/extra/*.yaml")],
                vec![root.join("app/extra")],
            ),
            (
                "missing dir -> nearest ancestor",
                vec![p("app/later/x.env")],
                vec![root.join("app")],
            ),
            (
                "glob in dir part",
                vec![p("svc/*/x.env")],
                vec![root.join("svc"), root.join("svc/a")],
            ),
            (
                "symlink target dir too",
                vec![p("app/link.env")],
                vec![root.join("app"), root.join("real").canonicalize().unwrap()],
            ),
        ];
        for (what, patterns, want) in cases {
            let got: Vec<PathBuf> = dirs_for(&patterns).into_iter().collect();
            let mut want = want;
            want.sort();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn concerns_table() {
        let dirs = BTreeSet::from([PathBuf::from("/etc/app")]);
        let pats = vec!["/etc/app/later/prod.env".to_string()];
        assert!(event_concerns(Path::new("/etc/app/prod.env"), &dirs, &pats));
        assert!(event_concerns(Path::new("/etc/app/later"), &dirs, &pats));
        assert!(!event_concerns(
            Path::new("/etc/other/prod.env"),
            &dirs,
            &pats
        ));
        assert!(event_concerns(Path::new("/etc/app"), &dirs, &pats));
    }

    #[test]
    fn event_kinds_table() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};
        let cases = [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), None),
            (EventKind::Access(AccessKind::Close(AccessMode::Read)), None),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                Some(Activity::Closed),
            ),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                Some(Activity::Written),
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                Some(Activity::Gone),
            ),
            (EventKind::Remove(RemoveKind::File), Some(Activity::Gone)),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                Some(Activity::Other),
            ),
            (EventKind::Create(CreateKind::File), Some(Activity::Other)),
            (EventKind::Any, Some(Activity::Other)),
        ];
        for (kind, want) in cases {
            assert_eq!(activity(&kind), want, "{kind:?}");
        }
    }

    /// One line, then silence for the period while counting, then one line
    /// carrying the count.
    #[test]
    fn log_throttle_table() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = LogThrottle::new(Duration::from_secs(10));
        let cases = [
            (0, Some(0)),
            (1, None),
            (5_000, None),
            (9_999, None),
            (10_000, Some(3)),
            (10_001, None),
            (30_000, Some(1)),
            (30_001, None),
        ];
        for (at, want) in cases {
            assert_eq!(t.hit(t0 + ms(at)), want, "at {at} ms");
        }
    }
}
