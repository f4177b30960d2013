//! Format-preserving write-back of values into source files (SPEC §5 rule 6).
//!
//! The `import-prioritize-*` initial syncs bring values that exist only (or
//! differently) in AWS into the sync's first file. That file belongs to a
//! person: it has comments, an order, a quoting habit, maybe CRLF line
//! endings. So an import changes exactly the entries it must and leaves every
//! other byte alone, and it lands atomically with the file's mode and owner,
//! so a crash or a reader racing the write never sees half a file.
//!
//! Two layers:
//!
//! * [`apply`] / [`apply_env`] / [`apply_yaml`] are pure text-to-text
//!   functions (no IO, like the parsers). They refuse a file that does not
//!   parse, and before returning they parse their own output and check that
//!   every edited key reads back as its new value and every other entry is
//!   unchanged, so a layout this module gets wrong is an error, never a
//!   silently corrupted file. [`apply_checked`] does the same check under the
//!   sync's `expand` setting.
//! * [`write_atomic`] is the one IO function: temp file in the same
//!   directory, fsync, rename, fsync of the directory.
//!
//! # `.env` rules
//!
//! * An existing key: only its value text is replaced (the bytes from the
//!   start of the value to its closing quote or, unquoted, to its last
//!   character). Indentation, `export `, the key, the spacing around `=` and
//!   a trailing `# comment` stay byte-identical; a multi-line value becomes a
//!   single line. A repeated key is edited at its last occurrence, the one
//!   that wins.
//! * Quoting keeps the original style when the value can be written in it:
//!   unquoted only for a "plain" value (ASCII letters, digits and
//!   `_ - . / : @ + , = % ^`, or non-ASCII characters that are neither
//!   whitespace nor control characters; empty is plain). That is stricter
//!   than this crate's parser needs, on purpose: the same file is usually
//!   read by the application's own dotenv library or sourced by a shell.
//!   Single quotes are kept when the value has no `'`, line break, carriage
//!   return, and does not end in a backslash (which some dotenv tools read as
//!   escaping the closing quote). Anything else is double-quoted with the
//!   escapes `\\ \" \n \r \t \$`, which every reader of this crate's syntax
//!   understands; `\$` also keeps `expand: true` from touching the value.
//! * New keys are appended in the order of the edits, one `KEY=value` line
//!   each (quoted as above), after making sure the file ends with a line
//!   break; the file's line ending (`\r\n` if its first line break is one) is
//!   used.
//! * A value with a NUL character cannot be written (the parser rejects NUL
//!   anywhere in a file): [`WriteBackError::Unsupported`].
//!
//! # YAML rules
//!
//! * An existing key: the scalar node of `KEY: scalar`, or of `value:` inside
//!   `KEY: {value: ..., metadata: ...}` (block or flow), is replaced in place;
//!   metadata, comments, anchors and all other bytes are kept. A tag on the
//!   replaced scalar (`!!str`, `!!int`, ...) is dropped with it, since the
//!   new text may not fit the old tag.
//! * Block scalars (`|`, `>`, with any chomping/indentation indicator) are
//!   edited too: the header and the content lines are replaced by a one-line
//!   quoted or plain scalar, a comment on the header line is kept, and
//!   trailing blank lines of the block stay as blank lines.
//! * Scalar style: plain when the original was plain or a block scalar and
//!   the value is plain-safe (no leading indicator, no `: `/` #`, no flow
//!   indicators, no `$`, not a null spelling, printable, no surrounding
//!   whitespace, ...); single-quoted when the original was single-quoted and
//!   the value is a single printable line; otherwise double-quoted with
//!   `\\ \" \n \r \t` and `\xNN` / `\uNNNN` for other non-printable
//!   characters. Our parser keeps every scalar's text, but the application
//!   may load the same file with a typed YAML loader, so a value that such a
//!   loader would read as a number, boolean or null (`0080`, `1.5`, `true`,
//!   `yes`, `off`, `~`, ...) stays plain only where the original plain
//!   scalar looked typed as well (`PORT: 0080` -> `PORT: 0081`, but
//!   `NAME: abc` -> `NAME: "true"`). A value containing `$` is
//!   single-quoted whenever it can be, because single quotes are never
//!   expanded (YAML has no `\$`); a `$` value that needs double quotes (it
//!   has a line break or control character) reads back differently under
//!   `expand: true`, which [`apply_checked`] reports instead of writing.
//! * New keys: appended as `KEY: "value"` lines (single-quoted for `$`, as
//!   above) with the top-level mapping's indentation, before an explicit
//!   document end `...` if there is one (and before an unterminated last
//!   line of only blanks, unless that is block-scalar content); the key is
//!   double-quoted too if a typed loader would not read it as a string
//!   (`"null"`, `"on"`, `"Y"`); into a top-level flow mapping
//!   (`{A: 1}`) they are inserted after its last entry as `, KEY: "value"`.
//!   A file whose top level is an explicit null (`~`), or whose first key
//!   is not preceded by spaces only (a tab, `--- KEY: v`), gets no new keys
//!   ([`WriteBackError::Unsupported`]).
//!
//! In both formats: an edit whose value equals the current one changes
//! nothing (the file stays byte-identical); several edits of one key apply
//! in order, so the last wins; a new key must match the key charset
//! `[A-Za-z_][A-Za-z0-9_.-]*`, while an existing key is edited where it is,
//! whatever its spelling.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, Span, StructureStyle};
use sha2::{Digest, Sha256};

use super::{ParseError, ParsedFile, SourceFormat, parse_env, parse_yaml};
use crate::naming::is_valid_key;
use crate::secret::SecretValue;

mod atomic;
mod env;
#[cfg(test)]
mod tests;
mod yaml;

pub use atomic::write_atomic;
pub use env::apply_env;
pub use yaml::apply_yaml;
/// One change to make in a file. An enum so that later kinds of change
/// (removing a key, say) can be added without changing the functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Sets `key` to `value`: replaces the value of an existing entry in
    /// place, or appends a new entry. If several edits name the same key,
    /// the last one wins (as if they were applied one after another).
    Set {
        /// The key, exactly as the parser reports it.
        key: String,
        /// The new value.
        value: SecretValue,
    },
}

#[cfg(test)]
impl Edit {
    /// Convenience constructor for [`Edit::Set`].
    pub fn set(key: impl Into<String>, value: SecretValue) -> Self {
        Edit::Set {
            key: key.into(),
            value,
        }
    }
}

/// Why a file was not rewritten. Messages name keys, paths and positions,
/// never a value (SPEC §5 rule 9), so they are safe for logs and status.
#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    /// The current file text does not parse. Editing a file we cannot read
    /// could destroy what the user is in the middle of writing, so nothing is
    /// changed.
    #[error("the file does not parse, so it is not rewritten: {0}")]
    Parse(ParseError),
    /// The edit cannot be made safely in this file (a value the format cannot
    /// hold, a new key outside the key charset, a layout without a place to
    /// add keys).
    #[error("cannot write key {} into this file: {reason}", .key.escape_debug())]
    Unsupported {
        /// The key of the edit.
        key: String,
        /// Why, in fixed text.
        reason: String,
    },
    /// The rewritten text would not read back as intended (a layout this
    /// module mishandles, or a value `expand` would change). Nothing is
    /// written; this is the last line of defence against corrupting a file.
    #[error("refusing to write: {reason}")]
    Verify {
        /// What did not read back, with key names only.
        reason: String,
    },
    /// A filesystem operation failed; the original file is untouched unless
    /// the failure was the final directory fsync (then the new content is in
    /// place but may not be durable yet).
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path is a symbolic link whose target lies outside the link's
    /// directory. Writing through it could overwrite any file the agent can
    /// write, so it needs `allow_outside_symlink`.
    #[error(
        "{} is a symbolic link to {}, outside its directory; not writing through it",
        .path.display(),
        .target.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
    },
}

/// Applies `edits` to the text of a file in `format` (see [`apply_env`] and
/// [`apply_yaml`]).
pub fn apply(text: &str, format: SourceFormat, edits: &[Edit]) -> Result<String, WriteBackError> {
    match format {
        SourceFormat::Env => apply_env(text, edits),
        SourceFormat::Yaml => apply_yaml(text, edits),
    }
}

/// Like [`apply`], then also parses the result with the sync's `expand`
/// setting and checks that every edited key reads back as its new value.
/// The import path should call this one: with `expand: true` a YAML value
/// that had to be double-quoted and contains `$` would otherwise be written
/// and then read back expanded, and the next pass would push that different
/// value to AWS.
pub fn apply_checked(
    text: &str,
    format: SourceFormat,
    edits: &[Edit],
    expand: bool,
) -> Result<String, WriteBackError> {
    let out = apply(text, format, edits)?;
    if expand {
        let after = parse_text(&out, format, true).map_err(|e| WriteBackError::Verify {
            reason: format!("with variable expansion the rewritten file does not parse ({e})"),
        })?;
        for (key, value) in collapse(edits) {
            let ok = after.get(key).is_some_and(|e| e.value == *value);
            if !ok {
                return Err(WriteBackError::Verify {
                    reason: format!(
                        "with variable expansion key {} would not read back as the written value",
                        key.escape_debug()
                    ),
                });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Shared helpers

/// The edits as (key, value) in order of each key's first edit, with the
/// last value for a key winning.
fn collapse(edits: &[Edit]) -> Vec<(&str, &SecretValue)> {
    let mut out: Vec<(&str, &SecretValue)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for edit in edits {
        let Edit::Set { key, value } = edit;
        match index.get(key.as_str()) {
            Some(&i) => out[i].1 = value,
            None => {
                index.insert(key, out.len());
                out.push((key, value));
            }
        }
    }
    out
}

fn unsupported(key: &str, reason: &str) -> WriteBackError {
    WriteBackError::Unsupported {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn check_new_key(key: &str) -> Result<(), WriteBackError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(unsupported(
            key,
            "a new key must match [A-Za-z_][A-Za-z0-9_.-]*",
        ))
    }
}

const BOM: &str = "\u{feff}";

/// Splits one leading byte-order mark off, the way the parsers do.
fn split_bom(text: &str) -> (&str, &str) {
    match text.strip_prefix(BOM) {
        Some(body) => (BOM, body),
        None => ("", text),
    }
}

/// Byte offsets where the `\n`-separated lines of `text` start.
fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    starts
}

/// The file's line ending: CRLF if its first line break is one.
fn line_ending(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// A replacement of `start..end` (byte offsets) by `text`.
#[derive(Clone)]
struct Splice {
    start: usize,
    end: usize,
    text: String,
}

/// Applies non-overlapping splices to `text`; an offset that is out of
/// range, overlapping or not on a character boundary is a layout error (the
/// offsets come from the parsers, so that would be a bug, reported rather
/// than panicking).
fn splice(text: &str, mut splices: Vec<Splice>) -> Result<String, WriteBackError> {
    splices.sort_by_key(|s| (s.start, s.end));
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for s in splices {
        if s.start < at || s.end < s.start {
            return Err(layout_error());
        }
        out.push_str(text.get(at..s.start).ok_or_else(layout_error)?);
        out.push_str(&s.text);
        at = s.end;
    }
    out.push_str(text.get(at..).ok_or_else(layout_error)?);
    Ok(out)
}

/// Appends `lines` to `out`, first ending its last line if needed; uses the
/// line ending of `original`.
fn append_lines(out: &mut String, original: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let eol = line_ending(original);
    // (`\r` alone ends a line in YAML; in `.env` the caller refuses it.)
    if !out.is_empty() && !out.ends_with(['\n', '\r']) {
        out.push_str(eol);
    }
    for line in lines {
        out.push_str(line);
        out.push_str(eol);
    }
}

fn parse_text(text: &str, format: SourceFormat, expand: bool) -> Result<ParsedFile, ParseError> {
    match format {
        SourceFormat::Env => parse_env(text, expand),
        SourceFormat::Yaml => parse_yaml(text, expand),
    }
}

/// Parses the output (without expansion) and checks it against the input:
/// edited keys have their new value, every other entry is unchanged, and
/// nothing else appeared or disappeared.
fn verify(
    before: &ParsedFile,
    out: &str,
    format: SourceFormat,
    sets: &[(&str, &SecretValue)],
) -> Result<(), WriteBackError> {
    let after = parse_text(out, format, false).map_err(|e| WriteBackError::Verify {
        reason: format!("the rewritten file would not parse ({e})"),
    })?;
    let fail = |key: &str, what: &str| WriteBackError::Verify {
        reason: format!("key {} {what} after the rewrite", key.escape_debug()),
    };
    let edited: HashMap<&str, &SecretValue> = sets.iter().copied().collect();
    for entry in &before.entries {
        if edited.contains_key(entry.key.as_str()) {
            continue;
        }
        let Some(now) = after.get(&entry.key) else {
            return Err(fail(&entry.key, "would disappear"));
        };
        if now.value != entry.value || now.metadata != entry.metadata {
            return Err(fail(&entry.key, "would change"));
        }
    }
    for (key, value) in sets {
        let Some(now) = after.get(key) else {
            return Err(fail(key, "would be missing"));
        };
        if now.value != **value {
            return Err(fail(key, "would not read back as the written value"));
        }
        let metadata = before.get(key).map(|e| &e.metadata);
        let empty = BTreeMap::new();
        if now.metadata != *metadata.unwrap_or(&empty) {
            return Err(fail(key, "would change its metadata"));
        }
    }
    let known = |k: &str| edited.contains_key(k) || before.get(k).is_some();
    if let Some(extra) = after.entries.iter().find(|e| !known(&e.key)) {
        return Err(fail(&extra.key, "would appear"));
    }
    Ok(())
}

/// The error for a file layout the edit code did not recognise.
fn layout_error() -> WriteBackError {
    WriteBackError::Verify {
        reason: "the layout of the file was not recognised".to_owned(),
    }
}
