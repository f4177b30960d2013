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

use notify::event::{AccessKind, AccessMode};

use crate::source::files::has_glob_chars;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

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

/// Whether a notify event kind can mean content changed. Opens, reads and
/// read-only closes (our own reads among them) are ignored.
fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

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
    Paths(Vec<PathBuf>),
    /// Events were dropped (our queue or the kernel's overflowed): any
    /// watched file may have changed.
    Unknown,
}

/// The sending half of the watch feed, moved into notify's callback.
#[derive(Clone, Debug)]
pub struct ChangeSender {
    tx: mpsc::Sender<Vec<PathBuf>>,
    overflow: Arc<AtomicBool>,
}

impl ChangeSender {
    /// Queues `paths`, or records an overflow when the queue is full.
    pub fn send(&self, paths: Vec<PathBuf>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(paths) {
            self.overflow.store(true, Ordering::Release);
        }
    }

    /// Records that events were lost and wakes the engine if it can.
    pub fn lost_events(&self) {
        self.overflow.store(true, Ordering::Release);
        // An empty batch only wakes the receiver; when the queue is full
        // the receiver is awake anyway.
        let _ = self.tx.try_send(Vec::new());
    }
}

/// The receiving half of the watch feed, owned by the engine.
#[derive(Debug)]
pub struct ChangeReceiver {
    rx: mpsc::Receiver<Vec<PathBuf>>,
    overflow: Arc<AtomicBool>,
}

impl ChangeReceiver {
    /// The next change; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Change> {
        let paths = self.rx.recv().await?;
        Some(if self.overflow.swap(false, Ordering::AcqRel) {
            Change::Unknown
        } else {
            Change::Paths(paths)
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
                Ok(event) if is_relevant(&event.kind) => feed.send(event.paths),
                Ok(_) => {}
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

    #[tokio::test]
    async fn a_full_feed_drops_batches_and_reports_one_unknown_change() {
        let (tx, mut rx) = change_feed(2);
        for i in 0..5 {
            tx.send(vec![PathBuf::from(format!("/d/{i}"))]);
        }
        // The queued batches come out; the first receive after the overflow
        // says "unknown" (any file may have changed), then it is cleared.
        assert_eq!(rx.next().await, Some(Change::Unknown));
        assert_eq!(
            rx.next().await,
            Some(Change::Paths(vec![PathBuf::from("/d/1")]))
        );
        tx.send(vec![PathBuf::from("/d/9")]);
        assert_eq!(
            rx.next().await,
            Some(Change::Paths(vec![PathBuf::from("/d/9")]))
        );
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
    fn own_reads_are_not_events() {
        assert!(!is_relevant(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_relevant(&EventKind::Create(
            notify::event::CreateKind::File
        )));
    }
}
