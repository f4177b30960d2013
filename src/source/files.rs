//! Reading a sync's source files: glob expansion, size limit, parse.
//!
//! The only IO before the pure stages. A file that is missing, unreadable,
//! too large, empty (0 bytes), not a regular file, changing while read or
//! does not parse is reported per file and never read as "no keys": the
//! reconcile then refuses to delete anything.
//!
//! Opening never blocks: sources are opened with `O_NONBLOCK` (a FIFO with
//! no writer would otherwise hang the reader forever) and anything that is
//! not a regular file is refused before a byte is read.

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::source::{self, ParseError, ParsedFile, SourceFormat};

/// Why a source file gave no entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The path does not exist (or a glob matched nothing).
    #[error("{0}")]
    Missing(String),
    /// The file exists but could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// Larger than `agent.max_file_size`; not read.
    #[error("file is larger than max_file_size ({max} bytes); not read")]
    TooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// The file has no bytes at all. That is what a file looks like while
    /// an editor or `> file` is rewriting it, or after a failed write, far
    /// more often than a wish to remove every key; so it is not applied
    /// and deletes nothing. A file meant to hold no keys says so with a
    /// comment line.
    #[error(
        "file is empty (0 bytes); not applied and nothing deleted (a file meant to have no keys needs a comment line)"
    )]
    Empty,
    /// The path names a FIFO, socket, device or directory. Never opened for
    /// reading (a FIFO would block), so it never blocks the agent.
    #[error("not a regular file ({kind}); not read")]
    NotRegular {
        /// What it is instead, e.g. `FIFO`.
        kind: &'static str,
    },
    /// A glob match that is a symlink to nothing. The name is still there,
    /// so the file is not "gone": its keys are held, nothing deleted.
    #[error("dangling symlink (its target does not exist); not read")]
    Dangling,
    /// The file's size, times or inode changed while it was read: a writer
    /// is at work. The agent reads it again after another quiet period.
    #[error("file changed while it was read (still being written); not applied")]
    Changing,
    /// Format not configured and not guessable from the extension.
    #[error("cannot tell the format from the file name; set source.format to env or yaml")]
    UnknownFormat,
    /// The content does not parse.
    #[error("{0}")]
    Parse(ParseError),
}

/// One source file and what came of reading it.
#[derive(Debug, Clone)]
pub struct FileView {
    /// Path as configured or as a glob expanded it.
    pub path: PathBuf,
    /// Entries, or why there are none.
    pub result: Result<ParsedFile, FileError>,
    /// SHA-256 of the bytes read (`None` when nothing could be read), so
    /// the agent can drop events that did not change any content.
    pub digest: Option<[u8; 32]>,
    /// Identity and times of what was read (`None` when nothing was), so
    /// the agent can tell "the same bytes, untouched since" from "the same
    /// bytes, written again" (a rewrite loop passes through equal states).
    pub stamp: Option<FileStamp>,
}

/// What `fstat` says about a file: inode, size and change times. Equal
/// stamps on two reads mean nobody wrote the file in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `meta`.
    pub fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl FileView {
    /// `PATH:LINE:COL: message`-style one-liner for errors (never a value).
    pub fn error_line(&self) -> Option<String> {
        let err = self.result.as_ref().err()?;
        Some(match err {
            FileError::Parse(p) => format!("{}:{p}", self.path.display()),
            other => format!("{}: {other}", self.path.display()),
        })
    }
}

/// Whether a configured source path is a glob pattern rather than a file.
pub fn has_glob_chars(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Expands `patterns` in order (matches of one glob sorted by path) and
/// reads each file. `format: None` means by extension. Same as
/// [`read_sources_known`] with no last good view.
pub fn read_sources(
    patterns: &[String],
    format: Option<SourceFormat>,
    expand: bool,
    max_size: u64,
) -> Vec<FileView> {
    read_sources_known(patterns, format, expand, max_size, &BTreeSet::new())
}

/// [`read_sources`], where `known` are the paths the caller holds a last
/// good view of. A glob match that is a dangling symlink is always a file
/// error (its name is there, so it is not gone); one that is a directory,
/// FIFO, socket or device is an error when it is in `known` (a file that
/// was read before and is now unusable) and is skipped otherwise (a glob
/// never reads a FIFO it happens to match). Only a match that is really
/// gone leaves the glob's view.
pub fn read_sources_known(
    patterns: &[String],
    format: Option<SourceFormat>,
    expand: bool,
    max_size: u64,
    known: &BTreeSet<PathBuf>,
) -> Vec<FileView> {
    let mut views = Vec::new();
    for pattern in patterns {
        if !has_glob_chars(pattern) {
            views.push(read_one(Path::new(pattern), format, expand, max_size));
            continue;
        }
        let mut paths: Vec<PathBuf> = match glob::glob(pattern) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(e) => {
                views.push(error_view(
                    PathBuf::from(pattern),
                    FileError::Io(format!("bad glob: {e}")),
                ));
                continue;
            }
        };
        paths.sort();
        let before = views.len();
        for path in paths {
            match glob_match_kind(&path) {
                MatchKind::File => views.push(read_one(&path, format, expand, max_size)),
                MatchKind::Dangling => views.push(error_view(path, FileError::Dangling)),
                MatchKind::Other(err) if known.contains(&path) => views.push(error_view(path, err)),
                MatchKind::Other(_) => {}
            }
        }
        if views.len() == before {
            views.push(error_view(
                PathBuf::from(pattern),
                FileError::Missing("glob matched no files".into()),
            ));
        }
    }
    views
}

fn error_view(path: PathBuf, err: FileError) -> FileView {
    FileView {
        path,
        result: Err(err),
        digest: None,
        stamp: None,
    }
}

/// What a glob match is, following symlinks.
enum MatchKind {
    File,
    Dangling,
    /// Not a regular file, or cannot even be inspected.
    Other(FileError),
}

fn glob_match_kind(path: &Path) -> MatchKind {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => MatchKind::File,
        Ok(meta) => MatchKind::Other(FileError::NotRegular {
            kind: kind_name(&meta),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                MatchKind::Dangling
            } else {
                // Removed between the listing and now: really gone.
                MatchKind::Other(FileError::Missing("file does not exist".into()))
            }
        }
        Err(e) => MatchKind::Other(FileError::Io(e.to_string())),
    }
}

fn kind_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Reads and parses one file.
pub fn read_one(
    path: &Path,
    format: Option<SourceFormat>,
    expand: bool,
    max_size: u64,
) -> FileView {
    let read = read_bytes(path, max_size);
    let stamp = read.as_ref().ok().map(|(_, stamp)| *stamp);
    let bytes = read.map(|(bytes, _)| bytes);
    let digest = bytes.as_ref().ok().map(|b| Sha256::digest(b).into());
    let result = bytes.and_then(|bytes| {
        let format = format
            .or_else(|| SourceFormat::from_path(path))
            .ok_or(FileError::UnknownFormat)?;
        source::parse(&bytes, format, expand).map_err(FileError::Parse)
    });
    FileView {
        path: path.to_path_buf(),
        result,
        digest,
        stamp,
    }
}

/// Reads a source file's bytes (at most `max_size`) and the stamp they
/// were read under, refusing anything but a regular file without ever
/// blocking on it, and a file whose stamp changed while it was read.
fn read_bytes(path: &Path, max_size: u64) -> Result<(Vec<u8>, FileStamp), FileError> {
    let open_error = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => FileError::Missing("file does not exist".into()),
        _ => FileError::Io(e.to_string()),
    };
    // Refuse a FIFO or device before opening it (opening a device can
    // have effects of its own); the fstat below catches a swap in between.
    let meta = std::fs::metadata(path).map_err(open_error)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            kind: kind_name(&meta),
        });
    }
    let file = open_nonblocking(path).map_err(open_error)?;
    let meta = file.metadata().map_err(|e| FileError::Io(e.to_string()))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            kind: kind_name(&meta),
        });
    }
    let before = FileStamp::of(&meta);
    let mut bytes = Vec::new();
    // Read one byte past the limit to detect oversize without trusting
    // metadata (the file may grow while we read).
    (&file)
        .take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Io(e.to_string()))?;
    if bytes.len() as u64 > max_size {
        return Err(FileError::TooLarge { max: max_size });
    }
    let after = file
        .metadata()
        .map(|m| FileStamp::of(&m))
        .map_err(|e| FileError::Io(e.to_string()))?;
    if after != before || after.size != bytes.len() as u64 {
        return Err(FileError::Changing);
    }
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    Ok((bytes, after))
}

/// Opens `path` read-only without blocking (a FIFO with no writer, a
/// device waiting for carrier) and without taking a controlling terminal.
/// Reads from a regular file are unaffected by `O_NONBLOCK`.
pub fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
}

/// Reads a whole source file for an edit (the import write-back): the same
/// non-blocking, regular-files-only open as a pass's read. `Ok(None)` when
/// the file does not exist.
pub fn read_regular(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match open_nonblocking(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file ({})",
            kind_name(&meta)
        )));
    }
    let mut bytes = Vec::new();
    (&file).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_globs_in_order_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.env"), "B=2\n").unwrap();
        std::fs::write(dir.path().join("a.env"), "A=1\n").unwrap();
        let glob = format!("{}/*.env", dir.path().display());
        let missing = format!("{}/nope.env", dir.path().display());
        let none = format!("{}/*.yaml", dir.path().display());
        let views = read_sources(&[glob, missing, none], None, false, 1024);
        let names: Vec<String> = views
            .iter()
            .map(|v| v.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.env", "b.env", "nope.env", "*.yaml"]);
        assert!(views[0].result.is_ok());
        assert!(matches!(views[2].result, Err(FileError::Missing(_))));
        assert!(matches!(views[3].result, Err(FileError::Missing(_))));
    }

    #[test]
    fn too_large_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.env");
        std::fs::write(&p, format!("A={}\n", "x".repeat(100))).unwrap();
        let v = read_one(&p, None, false, 50);
        let line = v.error_line().unwrap();
        assert!(
            line.contains("larger than max_file_size") && !line.contains("xxx"),
            "{line}"
        );
        assert_eq!(v.result.unwrap_err(), FileError::TooLarge { max: 50 });
    }

    /// A 10 MB file under the default `max_file_size` (1 MiB): an error
    /// naming the file and the setting, nothing of the content.
    #[test]
    fn ten_megabyte_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.env");
        let line = format!("TOKEN=canary-{}\n", "x".repeat(100));
        std::fs::write(&p, line.repeat(10 * 1024 * 1024 / line.len() + 1)).unwrap();
        let max = crate::config::DEFAULT_MAX_FILE_SIZE;
        assert_eq!(max, 1024 * 1024);
        let views = read_sources(&[p.display().to_string()], None, false, max);
        assert_eq!(views.len(), 1);
        let shown = views[0].error_line().unwrap();
        assert!(shown.starts_with(&p.display().to_string()), "{shown}");
        assert!(shown.contains("max_file_size (1048576 bytes)"), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
        assert_eq!(views[0].digest, None);
    }

    /// NUL bytes and invalid UTF-8 next to a value: `PATH:LINE:COL`, and
    /// the value is not in the message.
    #[test]
    fn nul_and_invalid_utf8_name_file_and_line_not_value() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "a.env",
                b"A=1\nTOKEN=canary-secret\0tail\n",
                ":2:20: file contains a NUL byte",
            ),
            (
                "b.env",
                b"A=1\nTOKEN=\"canary-secret\xff\"\n",
                ":2:21: file is not valid UTF-8",
            ),
            (
                "c.yaml",
                b"A: 1\nTOKEN: canary-secret\0\n",
                ":2:21: file contains a NUL byte",
            ),
            (
                "d.yaml",
                b"A: 1\nTOKEN: 'canary-secret\xc3'\n",
                ":2:22: file is not valid UTF-8",
            ),
            ("e.env", b"\0", ":1:1: file contains a NUL byte"),
        ];
        for (name, bytes, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let shown = read_one(&p, None, false, 1024).error_line().unwrap();
            assert_eq!(shown, format!("{}{want}", p.display()));
            assert!(!shown.contains("canary"), "{shown}");
        }
    }

    /// A file truncated to 0 bytes is an error, not "no keys"; a file that
    /// says it has none (a comment, a blank line) is read as empty.
    #[test]
    fn zero_byte_file_is_an_error_but_a_comment_only_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.env", "a.yaml"] {
            let p = dir.path().join(name);
            std::fs::write(&p, "").unwrap();
            let v = read_one(&p, None, false, 1024);
            assert_eq!(v.result.as_ref().unwrap_err(), &FileError::Empty);
            let line = v.error_line().unwrap();
            assert!(line.contains("file is empty (0 bytes)"), "{line}");
            for text in ["# no keys\n", "\n"] {
                std::fs::write(&p, text).unwrap();
                let v = read_one(&p, None, false, 1024);
                assert!(v.result.unwrap().entries.is_empty(), "{name} {text:?}");
            }
        }
    }

    #[test]
    fn parse_error_line_names_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.env");
        std::fs::write(&p, "A=1\nB=\"canary-unterminated\n").unwrap();
        let v = read_one(&p, None, false, 1024);
        let line = v.error_line().unwrap();
        assert!(line.starts_with(&format!("{}:2:", p.display())), "{line}");
        assert!(!line.contains("canary"), "{line}");
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(
            path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
    }

    /// A FIFO named as a source (with no writer, opening it for reading
    /// would block forever) is refused at once with an error naming it.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.env");
        mkfifo(&p);
        let started = std::time::Instant::now();
        let views = read_sources(&[p.display().to_string()], None, false, 1024);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            views[0].error_line().unwrap(),
            format!("{}: not a regular file (a FIFO); not read", p.display())
        );
        // The same for the import's read of the first file.
        let err = read_regular(&p).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        // A symlink to a FIFO, and a directory, are refused the same way.
        let link = dir.path().join("link.env");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let d = dir.path().join("d.env");
        std::fs::create_dir(&d).unwrap();
        let v = read_one(&link, None, false, 1024);
        assert_eq!(
            v.result.unwrap_err(),
            FileError::NotRegular { kind: "a FIFO" }
        );
        let v = read_one(&d, None, false, 1024);
        assert_eq!(
            v.result.unwrap_err(),
            FileError::NotRegular {
                kind: "a directory"
            }
        );
    }

    /// Glob matches that are not regular files: a dangling symlink is
    /// always an error (the name is there); a directory or FIFO is an error
    /// when the caller held a last good view of that path, and skipped
    /// otherwise. A removed file is simply not matched.
    #[test]
    fn glob_matches_that_are_not_files_table() {
        let dir = tempfile::tempdir().unwrap();
        let g = |name: &str| dir.path().join(name);
        std::fs::write(g("a.env"), "A=1\n").unwrap();
        std::os::unix::fs::symlink(g("nowhere"), g("b.env")).unwrap();
        std::fs::create_dir(g("c.env")).unwrap();
        mkfifo(&g("d.env"));
        let pattern = format!("{}/*.env", dir.path().display());
        let read = |known: &[&str]| -> Vec<(String, Option<FileError>)> {
            let known = known.iter().map(|n| g(n)).collect();
            read_sources_known(std::slice::from_ref(&pattern), None, false, 1024, &known)
                .into_iter()
                .map(|v| {
                    (
                        v.path.file_name().unwrap().to_string_lossy().into_owned(),
                        v.result.err(),
                    )
                })
                .collect()
        };
        let dangling = ("b.env".to_string(), Some(FileError::Dangling));
        let ok = ("a.env".to_string(), None);
        assert_eq!(read(&[]), [ok.clone(), dangling.clone()]);
        assert_eq!(
            read(&["c.env", "d.env", "gone.env"]),
            [
                ok,
                dangling,
                (
                    "c.env".to_string(),
                    Some(FileError::NotRegular {
                        kind: "a directory"
                    })
                ),
                (
                    "d.env".to_string(),
                    Some(FileError::NotRegular { kind: "a FIFO" })
                ),
            ]
        );
    }

    /// What a read saw is stamped; a rewrite with the same bytes gets a
    /// different stamp.
    #[test]
    fn stamps_tell_a_rewrite_from_an_untouched_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.env");
        std::fs::write(&p, "A=1\n").unwrap();
        let first = read_one(&p, None, false, 1024);
        let again = read_one(&p, None, false, 1024);
        assert!(first.stamp.is_some());
        assert_eq!(first.stamp, again.stamp);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, "A=1\n").unwrap();
        let rewritten = read_one(&p, None, false, 1024);
        assert_eq!(first.digest, rewritten.digest);
        assert_ne!(first.stamp, rewritten.stamp);
    }
}
