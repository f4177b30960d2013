//! Reading a sync's source files: glob expansion, size limit, parse.
//!
//! The only IO before the pure stages. A file that is missing, unreadable,
//! too large, empty (0 bytes) or does not parse is reported per file and
//! never read as "no keys": the reconcile then refuses to delete anything.

use std::io::Read;
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
/// reads each file. `format: None` means by extension.
pub fn read_sources(
    patterns: &[String],
    format: Option<SourceFormat>,
    expand: bool,
    max_size: u64,
) -> Vec<FileView> {
    let mut views = Vec::new();
    for pattern in patterns {
        if !has_glob_chars(pattern) {
            views.push(read_one(Path::new(pattern), format, expand, max_size));
            continue;
        }
        let mut paths: Vec<PathBuf> = match glob::glob(pattern) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect(),
            Err(e) => {
                views.push(FileView {
                    path: PathBuf::from(pattern),
                    result: Err(FileError::Io(format!("bad glob: {e}"))),
                    digest: None,
                });
                continue;
            }
        };
        paths.sort();
        if paths.is_empty() {
            views.push(FileView {
                path: PathBuf::from(pattern),
                result: Err(FileError::Missing("glob matched no files".into())),
                digest: None,
            });
        }
        for path in paths {
            views.push(read_one(&path, format, expand, max_size));
        }
    }
    views
}

/// Reads and parses one file.
pub fn read_one(
    path: &Path,
    format: Option<SourceFormat>,
    expand: bool,
    max_size: u64,
) -> FileView {
    let bytes = read_bytes(path, max_size);
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
    }
}

fn read_bytes(path: &Path, max_size: u64) -> Result<Vec<u8>, FileError> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FileError::Missing("file does not exist".into()),
        _ => FileError::Io(e.to_string()),
    })?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to detect oversize without trusting
    // metadata (the file may grow while we read).
    file.take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Io(e.to_string()))?;
    if bytes.len() as u64 > max_size {
        return Err(FileError::TooLarge { max: max_size });
    }
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    Ok(bytes)
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
}
