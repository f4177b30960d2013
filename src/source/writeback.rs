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

/// Applies `edits` to `.env` text (rules in the module docs). Refuses text
/// that does not parse; everything but the edited values is kept
/// byte-for-byte, including a byte-order mark and CRLF line endings. An edit
/// whose value equals the current one changes nothing.
pub fn apply_env(text: &str, edits: &[Edit]) -> Result<String, WriteBackError> {
    let before = parse_env(text, false).map_err(WriteBackError::Parse)?;
    let (bom, body) = split_bom(text);
    let sets = collapse(edits);
    let starts = line_starts(body);
    let mut splices = Vec::new();
    // (key, line)
    let mut appends: Vec<(&str, String)> = Vec::new();
    for &(key, value) in &sets {
        let expose = value.expose();
        if expose.contains('\0') {
            return Err(unsupported(
                key,
                "the value contains a NUL character, which a .env file cannot hold",
            ));
        }
        match before.get(key) {
            Some(entry) if entry.value == *value => {}
            Some(entry) => {
                let loc = env_locate(body, &starts, entry.line, entry.column, key, entry.end_line)
                    .ok_or_else(|| unsupported(key, "the entry's layout was not recognised"))?;
                let mut repr = match loc.style {
                    EnvStyle::Unquoted if env_plain_ok(expose) => expose.to_owned(),
                    EnvStyle::Single if env_single_ok(expose) => format!("'{expose}'"),
                    _ => env_double(expose),
                };
                // `A=#c` is an empty value followed by a comment; a bare value
                // glued to that `#` would swallow the comment.
                let comment_follows = body.get(loc.end..).is_some_and(|r| r.starts_with('#'));
                if comment_follows && !repr.is_empty() && !repr.starts_with(['"', '\'']) {
                    repr.push(' ');
                }
                splices.push(Splice {
                    start: loc.start,
                    end: loc.end,
                    text: repr,
                });
            }
            None => {
                check_new_key(key)?;
                let repr = if env_plain_ok(expose) {
                    expose.to_owned()
                } else {
                    env_double(expose)
                };
                appends.push((key, format!("{key}={repr}")));
            }
        }
    }
    let mut out = splice(body, splices)?;
    // A lone `\r` at the very end is part of the last value in `.env`
    // syntax; the line break added before new lines would turn it into a
    // CRLF and change that value.
    if let Some((key, _)) = appends.first()
        && out.ends_with('\r')
    {
        return Err(unsupported(
            key,
            "the file ends with a carriage return that is not followed by a line feed",
        ));
    }
    let appends: Vec<String> = appends.into_iter().map(|(_, line)| line).collect();
    append_lines(&mut out, body, &appends);
    let out = format!("{bom}{out}");
    verify(&before, &out, SourceFormat::Env, &sets)?;
    Ok(out)
}

/// Applies `edits` to YAML text (rules in the module docs). Refuses text that
/// does not parse; everything but the edited scalars is kept byte-for-byte.
/// An edit whose value equals the current one changes nothing.
pub fn apply_yaml(text: &str, edits: &[Edit]) -> Result<String, WriteBackError> {
    let before = parse_yaml(text, false).map_err(WriteBackError::Parse)?;
    let (bom, body) = split_bom(text);
    let sets = collapse(edits);
    let layout = yaml_layout(body).ok_or_else(layout_error)?;
    let mut splices = Vec::new();
    // (key, line without indentation)
    let mut appends: Vec<(&str, String)> = Vec::new();
    for &(key, value) in &sets {
        let expose = value.expose();
        if before.get(key).is_some_and(|e| e.value == *value) {
            continue;
        }
        match layout.scalars.get(key) {
            Some(loc) => {
                let prefer = match loc.style {
                    ScalarStyle::SingleQuoted => YamlStyle::Single,
                    ScalarStyle::DoubleQuoted => YamlStyle::Double,
                    ScalarStyle::Plain => YamlStyle::Plain {
                        typed_ok: loc.typed,
                    },
                    _ => YamlStyle::Plain { typed_ok: false },
                };
                let repr = yaml_scalar(expose, prefer);
                splices.push(yaml_splice(body, loc, repr).ok_or_else(|| {
                    unsupported(key, "the value's YAML layout was not recognised")
                })?);
            }
            None => {
                check_new_key(key)?;
                let key_repr = yaml_scalar(key, YamlStyle::Plain { typed_ok: false });
                let line = format!("{key_repr}: {}", yaml_scalar(expose, YamlStyle::Double));
                appends.push((key, line));
            }
        }
    }
    let out = match (&layout.top, appends.first()) {
        (_, None) => splice(body, splices)?,
        (YamlTop::Block { indent, at }, Some(_)) => {
            let indented: Vec<String> = appends
                .iter()
                .map(|(_, line)| format!("{}{line}", " ".repeat(*indent)))
                .collect();
            let build = |append_at: usize| -> Result<String, WriteBackError> {
                let head = body.get(..append_at).ok_or_else(layout_error)?;
                let tail = body.get(append_at..).ok_or_else(layout_error)?;
                let mut out = splice(head, splices.clone())?;
                append_lines(&mut out, body, &indented);
                out.push_str(tail);
                Ok(format!("{bom}{out}"))
            };
            let out = build(at.first)?;
            return match (verify(&before, &out, SourceFormat::Yaml, &sets), at.second) {
                (Ok(()), _) => Ok(out),
                (Err(_), Some(second)) => {
                    let out = build(second)?;
                    verify(&before, &out, SourceFormat::Yaml, &sets)?;
                    Ok(out)
                }
                (Err(e), None) => Err(e),
            };
        }
        (YamlTop::Flow { insert_at, empty }, Some(_)) => {
            let mut text = String::new();
            for (i, (_, item)) in appends.iter().enumerate() {
                if i > 0 || !*empty {
                    text.push_str(", ");
                }
                text.push_str(item);
            }
            splices.push(Splice {
                start: *insert_at,
                end: *insert_at,
                text,
            });
            splice(body, splices)?
        }
        (YamlTop::Null, Some((key, _))) => {
            return Err(unsupported(
                key,
                "the file's top level is an explicit null, not a mapping",
            ));
        }
        (YamlTop::Unaligned, Some((key, _))) => {
            return Err(unsupported(
                key,
                "new keys cannot be aligned with the file's top-level keys \
                 (they are not indented with spaces only)",
            ));
        }
    };
    let out = format!("{bom}{out}");
    verify(&before, &out, SourceFormat::Yaml, &sets)?;
    Ok(out)
}

fn layout_error() -> WriteBackError {
    WriteBackError::Verify {
        reason: "the layout of the file was not recognised".to_owned(),
    }
}

/// What [`write_atomic`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The file that was replaced or created: the path itself, or the target
    /// of a symbolic link (the link is left in place).
    pub written_path: PathBuf,
    /// SHA-256 of the contents, so the agent can recognise the file events
    /// caused by its own write and not start another sync (SPEC §5 rule 6).
    pub digest: [u8; 32],
    /// Things the caller should report but that did not stop the write
    /// (an owner that could not be kept, other hard links, a followed link).
    pub notes: Vec<String>,
}

/// Most symbolic links followed for one path (Linux's own limit is 40).
const MAX_SYMLINKS: usize = 40;
/// Attempts at finding an unused temp file name.
const TEMP_ATTEMPTS: usize = 16;

/// Atomically replaces the file at `path` with `contents` (or creates it).
///
/// Steps: a temp file is created in the same directory (`O_CREAT|O_EXCL`,
/// mode 0600, named `.secretsync-write-<random>.tmp`, which no `.env`/YAML
/// pattern matches), given the original's owner and group when permitted
/// (`fchown`) and then the original's mode (0600 for a new file), written,
/// fsynced, renamed over the path, and the directory is fsynced.
///
/// Why: readers (the application, the agent's own watcher) see either the
/// old or the new file, never a partial one; a crash leaves the old file
/// (plus at worst a stray temp file); the content is never more exposed
/// than either version of the file; and the rename keeps the old inode
/// intact for anyone holding it open.
///
/// Ownership: if `fchown` is not permitted (the agent is not root), the
/// owner (and, if that is not permitted either, the group) becomes the
/// agent's, and [`WriteOutcome::notes`] says so; the write still happens,
/// since the mode still protects the content. Other hard links of the file
/// keep the old content (noted too).
///
/// Symbolic links: a link whose target lies inside the link's directory
/// (that directory or below it, after resolving every link in the chain and
/// in the directories) is followed and its target replaced, so the link
/// stays a link; a dangling one gets its target created. A target outside
/// is refused with [`WriteBackError::Symlink`] unless
/// `allow_outside_symlink`, because a link planted in a watched directory
/// must not turn the agent into a writer of arbitrary files.
///
/// Creates the file, and nothing else: a missing parent directory is an
/// [`WriteBackError::Io`] error. A path that is not a regular file (a
/// directory, a device) is refused.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    allow_outside_symlink: bool,
) -> Result<WriteOutcome, WriteBackError> {
    let mut notes = Vec::new();
    let target = resolve_target(path, allow_outside_symlink, &mut notes)?;
    let dir = parent_dir(&target);
    let existing = match fs::metadata(&target) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => {
            return Err(io_error(
                &target,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&target, e)),
    };
    if let Some(m) = &existing
        && m.nlink() > 1
    {
        notes.push(format!(
            "{} had {} hard links; only this name gets the new content",
            target.display(),
            m.nlink()
        ));
    }
    let (tmp_path, mut file) = create_temp(&dir)?;
    let result = (|| {
        if let Some(m) = &existing {
            keep_owner(&file, &tmp_path, &target, m, &mut notes)?;
        }
        let mode = existing.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&tmp_path, e))?;
        file.write_all(contents)
            .map_err(|e| io_error(&tmp_path, e))?;
        file.sync_all().map_err(|e| io_error(&tmp_path, e))?;
        fs::rename(&tmp_path, &target).map_err(|e| io_error(&target, e))
    })();
    drop(file);
    if let Err(e) = result {
        // Best effort: the temp file holds the new content and must not stay.
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&dir, e))?;
    Ok(WriteOutcome {
        written_path: target,
        digest: Sha256::digest(contents).into(),
        notes,
    })
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

// ---------------------------------------------------------------------------
// .env

/// How an existing `.env` value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvStyle {
    Unquoted,
    Single,
    Double,
}

/// Where an existing `.env` value's text is.
struct EnvValue {
    style: EnvStyle,
    /// First byte of the value (its opening quote, if quoted).
    start: usize,
    /// One past its last byte (the closing quote, if quoted).
    end: usize,
}

/// Finds the value text of the entry whose key starts at (`line`, `column`);
/// `None` if the text there is not what the parser described.
fn env_locate(
    body: &str,
    starts: &[usize],
    line: u32,
    column: u32,
    key: &str,
    end_line: u32,
) -> Option<EnvValue> {
    let line_start = *starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let skip_chars = usize::try_from(column).ok()?.checked_sub(1)?;
    let key_start = match body[line_start..].char_indices().nth(skip_chars) {
        Some((i, _)) => line_start + i,
        None => return None,
    };
    if !body[key_start..].starts_with(key) {
        return None;
    }
    let bytes = body.as_bytes();
    let blanks = |mut i: usize| {
        while matches!(bytes.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    let eq = blanks(key_start + key.len());
    if bytes.get(eq) != Some(&b'=') {
        return None;
    }
    let start = blanks(eq + 1);
    let (style, end, last) = match bytes.get(start) {
        Some(b'\'') => {
            let close = start + 1 + body[start + 1..].find('\'')?;
            (EnvStyle::Single, close + 1, close)
        }
        Some(b'"') => {
            let mut i = start + 1;
            loop {
                match bytes.get(i)? {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            (EnvStyle::Double, i + 1, i)
        }
        _ => {
            let mut eol = body[start..].find('\n').map_or(body.len(), |p| start + p);
            if eol > start && bytes[eol - 1] == b'\r' && eol < body.len() {
                eol -= 1;
            }
            let line = &bytes[start..eol];
            let mut end = line.len();
            for (i, &b) in line.iter().enumerate() {
                if b == b'#' && (i == 0 || matches!(line[i - 1], b' ' | b'\t')) {
                    end = i;
                    break;
                }
            }
            while end > 0 && matches!(line[end - 1], b' ' | b'\t') {
                end -= 1;
            }
            (EnvStyle::Unquoted, start + end, start)
        }
    };
    // The parser's end line is the line of the closing quote (or, unquoted,
    // of the value itself); anything else means we misread the entry.
    let last_line = starts.partition_point(|&s| s <= last);
    if u32::try_from(last_line).ok()? != end_line {
        return None;
    }
    Some(EnvValue { style, start, end })
}

/// Whether a value can be written unquoted in a `.env` file and be read the
/// same by this crate, common dotenv libraries and a POSIX shell.
fn env_plain_ok(value: &str) -> bool {
    value.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || "_-./:@+,=%^".contains(c)
            || (!c.is_ascii() && !c.is_whitespace() && !c.is_control() && c != '\u{feff}')
    })
}

/// Whether a value can be written between single quotes (see module docs).
fn env_single_ok(value: &str) -> bool {
    !value.contains(['\'', '\n', '\r']) && !value.ends_with('\\')
}

/// A double-quoted `.env` value.
fn env_double(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// YAML

/// Where the value scalar of one top-level key is (byte offsets).
#[derive(Debug, Clone, Copy)]
struct ScalarLoc {
    /// End of the node before it (the key, or the `value` field name).
    prev_end: usize,
    start: usize,
    end: usize,
    style: ScalarStyle,
    /// Start and end of the scalar's tag, if it has one.
    tag: Option<(usize, usize)>,
    /// A plain scalar that a typed loader would not read as a string.
    typed: bool,
}

/// Where new lines go in a block mapping: at `first`, or, if the result
/// does not read back, at `second`.
#[derive(Debug, Clone, Copy)]
struct AppendAt {
    first: usize,
    second: Option<usize>,
}

/// Where new top-level keys go.
#[derive(Debug, Clone, Copy)]
enum YamlTop {
    /// A block mapping (or an empty document): lines indented by `indent`
    /// spaces, inserted at `append_at`.
    Block { indent: usize, at: AppendAt },
    /// A flow mapping `{...}`: `, KEY: value` inserted at `insert_at`.
    Flow { insert_at: usize, empty: bool },
    /// An explicit null document (`~`): nowhere.
    Null,
    /// A block mapping whose first key is not preceded by spaces only (a
    /// tab, or `--- ` on the same line): no safe indentation for new keys.
    Unaligned,
}

struct YamlLayout {
    top: YamlTop,
    scalars: HashMap<String, ScalarLoc>,
}

/// The events of `body`, without comments, with byte-offset spans. `None` on
/// a scan error (the file has already parsed, so that does not happen) or a
/// missing byte offset.
fn yaml_events(body: &str) -> Option<Vec<(Event<'_>, Span)>> {
    let mut options = Options::default();
    options.emit_comments = false;
    options.flow_nesting_limit = 64;
    options.block_nesting_limit = 64;
    let mut parser = Parser::new_from_str_with_options(body, options);
    let mut events = Vec::new();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.ok()?;
        // Comments and anchor definitions carry nothing this module needs.
        let keep = event.is_node()
            || matches!(
                event,
                Event::MappingEnd | Event::SequenceEnd | Event::DocumentEnd
            );
        if !keep {
            continue;
        }
        span.start.byte_offset()?;
        span.end.byte_offset()?;
        events.push((event, span));
    }
    Some(events)
}

fn start_of(span: &Span) -> Option<usize> {
    span.start.byte_offset()
}

fn end_of(span: &Span) -> Option<usize> {
    span.end.byte_offset()
}

/// Walks the (already validated) document and records where each key's
/// value scalar is and where new keys go.
fn yaml_layout(body: &str) -> Option<YamlLayout> {
    let events = yaml_events(body)?;
    let mut it = events.iter();
    let mut scalars = HashMap::new();
    let Some((first, first_span)) = it.next() else {
        // No document at all: an empty or comment-only file.
        return Some(YamlLayout {
            top: block_top(body, 0, body.len()),
            scalars,
        });
    };
    let top = match first {
        Event::Scalar(..) => {
            if start_of(first_span)? == end_of(first_span)? {
                // An implicit empty document (`---` and comments).
                block_top(body, 0, document_end(body, &mut it)?)
            } else {
                YamlTop::Null
            }
        }
        Event::MappingStart(style, ..) => {
            let map_start = start_of(first_span)?;
            let mut last_end = None;
            loop {
                let (ev, span) = it.next()?;
                match ev {
                    Event::MappingEnd => break,
                    Event::Scalar(key, ..) => {
                        let key_end = end_of(span)?;
                        let (loc, value_end) = yaml_entry_value(&mut it, key_end)?;
                        last_end = Some(value_end);
                        scalars.insert(key.to_string(), loc);
                    }
                    _ => return None,
                }
            }
            if *style == StructureStyle::Flow {
                YamlTop::Flow {
                    insert_at: last_end.unwrap_or(end_of(first_span)?),
                    empty: last_end.is_none(),
                }
            } else {
                // New keys line up with the existing ones, which must start
                // their line (not follow `--- ` on it).
                let before_map = body.get(..map_start)?;
                // (YAML also ends lines with a lone `\r`.)
                let line_start = before_map.rfind(['\n', '\r']).map_or(0, |i| i + 1);
                let mut indent = body.get(line_start..map_start)?;
                if line_start == 0 {
                    // The YAML scanner also skips a further byte-order mark.
                    indent = indent.trim_start_matches('\u{feff}');
                }
                if indent.bytes().all(|b| b == b' ') {
                    block_top(body, indent.len(), document_end(body, &mut it)?)
                } else {
                    YamlTop::Unaligned
                }
            }
        }
        _ => return None,
    };
    Some(YamlLayout { top, scalars })
}

/// Where new lines go in a block mapping (or empty document) indented by
/// `indent` whose content ends at `append_at`. At the end of the file, a
/// last line of only blanks stays last (new lines go before it, so it does
/// not become an empty line of a `|+` block scalar's value), unless that
/// line is content of a block scalar (deeper than its indentation): then the
/// end of the file is the second choice.
fn block_top(body: &str, indent: usize, append_at: usize) -> YamlTop {
    let last_line = body.rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let blank_last = body
        .get(last_line..)
        .is_some_and(|l| l.bytes().all(|b| b == b' ' || b == b'\t'));
    let at = if append_at == body.len() && blank_last && last_line < body.len() {
        AppendAt {
            first: last_line,
            second: Some(append_at),
        }
    } else {
        AppendAt {
            first: append_at,
            second: None,
        }
    };
    YamlTop::Block { indent, at }
}

/// Where block-style new keys go: before an explicit `...` document end
/// marker (at the start of its line), else at the end of the text.
fn document_end<'e, 'a: 'e>(
    body: &str,
    it: &mut impl Iterator<Item = &'e (Event<'a>, Span)>,
) -> Option<usize> {
    for (ev, span) in it {
        if matches!(ev, Event::DocumentEnd) {
            let (start, end) = (start_of(span)?, end_of(span)?);
            if start < end {
                let before = body.get(..start)?;
                return Some(before.rfind(['\n', '\r']).map_or(0, |i| i + 1));
            }
            return Some(body.len());
        }
    }
    Some(body.len())
}

/// Reads the value node of a top-level entry (after its key, which ends at
/// `key_end`): the location of the scalar to replace and where the node ends.
fn yaml_entry_value<'e, 'a: 'e>(
    it: &mut impl Iterator<Item = &'e (Event<'a>, Span)>,
    key_end: usize,
) -> Option<(ScalarLoc, usize)> {
    let (ev, span) = it.next()?;
    match ev {
        Event::Scalar(text, style, ..) => {
            Some((scalar_loc(span, *style, text, key_end)?, end_of(span)?))
        }
        Event::MappingStart(..) => {
            let mut loc = None;
            loop {
                let (ev, span) = it.next()?;
                match ev {
                    Event::MappingEnd => return Some((loc?, end_of(span)?)),
                    Event::Scalar(field, ..) if field.as_ref() == "value" => {
                        let field_end = end_of(span)?;
                        let (ev, vspan) = it.next()?;
                        let Event::Scalar(text, style, ..) = ev else {
                            return None;
                        };
                        loc = Some(scalar_loc(vspan, *style, text, field_end)?);
                    }
                    Event::Scalar(..) => {
                        // `metadata`: skip its mapping of scalars.
                        let (ev, _) = it.next()?;
                        if !matches!(ev, Event::MappingStart(..)) {
                            return None;
                        }
                        loop {
                            let (ev, _) = it.next()?;
                            match ev {
                                Event::MappingEnd => break,
                                Event::Scalar(..) => {}
                                _ => return None,
                            }
                        }
                    }
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

fn scalar_loc(span: &Span, style: ScalarStyle, text: &str, prev_end: usize) -> Option<ScalarLoc> {
    let tag = match span.tag_span() {
        Some(t) => Some((start_of(&t)?, end_of(&t)?)),
        None => match span.tag_start() {
            // A tag whose extent is unknown: it cannot be removed safely.
            Some(_) => return None,
            None => None,
        },
    };
    Some(ScalarLoc {
        prev_end,
        start: start_of(span)?,
        end: end_of(span)?,
        style,
        tag,
        typed: style == ScalarStyle::Plain && span.tag_start().is_none() && yaml_looks_typed(text),
    })
}

/// The replacement of an existing scalar by `repr`, or `None` for a layout
/// not understood.
fn yaml_splice(body: &str, loc: &ScalarLoc, repr: String) -> Option<Splice> {
    let start = loc.tag.map_or(loc.start, |(s, _)| s);
    match loc.style {
        ScalarStyle::Literal | ScalarStyle::Folded => {
            let (header_start, header_end) =
                block_header(body, loc.tag.map_or(loc.prev_end, |(_, e)| e))?;
            let start = loc.tag.map_or(header_start, |(s, _)| s);
            // End of the header line (YAML also breaks lines at a lone `\r`).
            let line_end = body[header_end..]
                .find(['\n', '\r'])
                .map_or(body.len(), |i| header_end + i);
            // The content ends at its last non-blank character; trailing
            // blank lines (part of the node's span) stay.
            let content = body.get(loc.start..loc.end)?;
            let trimmed = content.trim_end_matches([' ', '\t', '\r', '\n']);
            let content_end = if trimmed.is_empty() || loc.start < header_end {
                line_end
            } else {
                (loc.start + trimmed.len()).max(line_end)
            };
            // Keep a comment on the header line.
            let text = format!("{repr}{}", &body[header_end..line_end]);
            Some(Splice {
                start,
                end: content_end,
                text,
            })
        }
        _ => Some(Splice {
            start,
            end: loc.end,
            text: repr,
        }),
    }
}

/// Finds a block scalar header (`|`, `>-`, `|2+`, ...) after `from`, past the
/// `:` indicator, whitespace, comments and node properties; returns its byte
/// range.
fn block_header(body: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = body.as_bytes();
    let token_end = |mut i: usize| {
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = from;
    loop {
        match *bytes.get(i)? {
            b' ' | b'\t' | b'\r' | b'\n' | b':' => i += 1,
            b'#' => i = body[i..].find(['\n', '\r']).map_or(body.len(), |p| i + p),
            b'&' | b'!' => i = token_end(i),
            b'|' | b'>' => {
                let end = token_end(i);
                let indicators = &bytes[i + 1..end];
                let valid = indicators.len() <= 2
                    && indicators
                        .iter()
                        .all(|b| matches!(b, b'1'..=b'9' | b'+' | b'-'))
                    && indicators.iter().filter(|b| b.is_ascii_digit()).count() <= 1
                    && indicators.iter().filter(|b| !b.is_ascii_digit()).count() <= 1;
                return valid.then_some((i, end));
            }
            _ => return None,
        }
    }
}

/// The scalar style a replacement should prefer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum YamlStyle {
    /// Plain if possible; `typed_ok`: the original plain scalar itself
    /// looked like a number, boolean or null to a typed YAML loader, so the
    /// new one may too.
    Plain {
        typed_ok: bool,
    },
    Single,
    Double,
}

/// A YAML scalar for `value` (style rules in the module docs).
fn yaml_scalar(value: &str, prefer: YamlStyle) -> String {
    if value.contains('$') && yaml_single_ok(value) {
        return yaml_single(value);
    }
    match prefer {
        YamlStyle::Plain { typed_ok }
            if yaml_plain_ok(value) && (typed_ok || !yaml_looks_typed(value)) =>
        {
            value.to_owned()
        }
        YamlStyle::Single if yaml_single_ok(value) => yaml_single(value),
        _ => yaml_double(value),
    }
}

/// Characters YAML allows in a document unescaped, minus the ones that are
/// (or some tools treat as) line breaks or byte-order marks.
fn yaml_printable(c: char) -> bool {
    match c {
        '\t' | ' '..='~' => true,
        '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => false,
        c => c >= '\u{a0}',
    }
}

/// Whether `value` can be a plain scalar that reads back as the same text
/// in block and flow context (conservative: when in doubt, quote).
fn yaml_plain_ok(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if matches!(value, "~" | "null" | "Null" | "NULL") {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if value.ends_with(':') || value.contains(": ") || value.contains(" #") {
        return false;
    }
    !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains([',', '[', ']', '{', '}', '$'])
        && value
            .chars()
            .all(|c| c == ' ' || (yaml_printable(c) && !c.is_whitespace()))
}

/// Whether a typed YAML loader (YAML 1.1 or the 1.2 core schema, as the
/// application reading the same file may use) could read this plain scalar
/// as something other than a string: a number, timestamp, boolean or null.
/// Conservative: anything starting with a digit or a sign/dot counts.
fn yaml_looks_typed(value: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", "=", "<<",
    ];
    let first = value.chars().next();
    first.is_none_or(|c| c.is_ascii_digit() || "+-.".contains(c))
        || WORDS.contains(&value.to_ascii_lowercase().as_str())
}

/// Whether `value` can be a single-quoted scalar on one line.
fn yaml_single_ok(value: &str) -> bool {
    value.chars().all(|c| yaml_printable(c) && c != '\t')
}

fn yaml_single(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn yaml_double(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if yaml_printable(c) => out.push(c),
            c if u32::from(c) <= 0xff => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Files

fn io_error(path: &Path, source: io::Error) -> WriteBackError {
    WriteBackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The file to replace for `path`: `path` itself, or the final target of a
/// chain of symbolic links (checked against the link's directory).
fn resolve_target(
    path: &Path,
    allow_outside: bool,
    notes: &mut Vec<String>,
) -> Result<PathBuf, WriteBackError> {
    let mut current = path.to_path_buf();
    let mut followed = false;
    let mut resolved = false;
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|e| io_error(&current, e))?;
                current = parent_dir(&current).join(link);
                followed = true;
            }
            Ok(_) => {
                resolved = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved = true;
                break;
            }
            Err(e) => return Err(io_error(&current, e)),
        }
    }
    if !resolved {
        return Err(io_error(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many levels of symbolic links",
            ),
        ));
    }
    if !followed {
        return Ok(path.to_path_buf());
    }
    let name = match current.file_name() {
        Some(name) => name.to_owned(),
        None => {
            return Err(io_error(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "symbolic link to a directory"),
            ));
        }
    };
    let target_dir = parent_dir(&current);
    let target_dir = fs::canonicalize(&target_dir).map_err(|e| io_error(&target_dir, e))?;
    let link_dir = parent_dir(path);
    let link_dir = fs::canonicalize(&link_dir).map_err(|e| io_error(&link_dir, e))?;
    let target = target_dir.join(name);
    if !target_dir.starts_with(&link_dir) {
        if !allow_outside {
            return Err(WriteBackError::Symlink {
                path: path.to_path_buf(),
                target,
            });
        }
        notes.push(format!(
            "{} is a symbolic link outside its directory; wrote {} as allowed",
            path.display(),
            target.display()
        ));
    }
    Ok(target)
}

/// Creates a new, empty, mode-0600 temp file in `dir` (never following or
/// reusing an existing name).
fn create_temp(dir: &Path) -> Result<(PathBuf, fs::File), WriteBackError> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(".secretsync-write-{:016x}.tmp", fastrand::u64(..)));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            // Reported on the directory: that is what the user must fix.
            Err(e) => return Err(io_error(dir, e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no unused temp file name"));
    Err(io_error(dir, e))
}

/// Gives the temp file the original's owner and group where permitted.
/// Not being allowed to (the agent is not root) is a note, not an error:
/// the content must still arrive, and the mode keeps it private.
fn keep_owner(
    file: &fs::File,
    tmp_path: &Path,
    target: &Path,
    original: &fs::Metadata,
    notes: &mut Vec<String>,
) -> Result<(), WriteBackError> {
    let current = file.metadata().map_err(|e| io_error(tmp_path, e))?;
    let (uid, gid) = (original.uid(), original.gid());
    if current.uid() == uid && current.gid() == gid {
        return Ok(());
    }
    let denied = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
    match std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        Ok(()) => return Ok(()),
        Err(e) if denied(&e) => {}
        Err(e) => return Err(io_error(tmp_path, e)),
    }
    if current.uid() != uid {
        notes.push(format!(
            "{}: could not keep owner uid {uid} (not permitted); it is now owned by uid {}",
            target.display(),
            current.uid()
        ));
    }
    if current.gid() != gid {
        match std::os::unix::fs::fchown(file, None, Some(gid)) {
            Ok(()) => {}
            Err(e) if denied(&e) => notes.push(format!(
                "{}: could not keep group gid {gid} (not permitted); its group is now gid {}",
                target.display(),
                current.gid()
            )),
            Err(e) => return Err(io_error(tmp_path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(s: &str) -> SecretValue {
        SecretValue::new(s)
    }

    fn set(key: &str, value: &str) -> Edit {
        Edit::set(key, sv(value))
    }

    type Map = BTreeMap<String, (String, BTreeMap<String, String>)>;

    fn map_of(f: &ParsedFile) -> Map {
        f.entries
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    (e.value.expose().to_owned(), e.metadata.clone()),
                )
            })
            .collect()
    }

    fn expected(before: &ParsedFile, edits: &[Edit]) -> Map {
        let mut map = map_of(before);
        for Edit::Set { key, value } in edits {
            let meta = map.remove(key).map(|(_, m)| m).unwrap_or_default();
            map.insert(key.clone(), (value.expose().to_owned(), meta));
        }
        map
    }

    /// Asserts that `out` consists of `want` line by line (so a failure
    /// names the first differing line).
    fn assert_lines(out: &str, want: &str) {
        let (o, w): (Vec<_>, Vec<_>) = (out.split('\n').collect(), want.split('\n').collect());
        for (i, (a, b)) in o.iter().zip(&w).enumerate() {
            assert_eq!(a, b, "line {}", i + 1);
        }
        assert_eq!(o.len(), w.len(), "line count\n{out}");
        assert_eq!(out, want);
    }

    // -- .env --------------------------------------------------------------

    const GOLDEN_ENV: &str = "\
# Application secrets
# managed by hand; secretsync imports missing ones

export DATABASE_URL=postgres://app@db:5432/app   # primary
API_KEY='old-key'
TOKEN='abc'
QUOTED='q'  # keep me
SESSION_SECRET=\"multi
line\" # two lines
EMPTY=
  # indented comment
FEATURE_FLAG=on
API_KEY=override   # the second one wins
";

    #[test]
    fn golden_env() {
        let edits = [
            set("DATABASE_URL", "postgres://app@db:5432/app2"),
            set("API_KEY", "new key with space"),
            set("TOKEN", "x y$z"),
            set("QUOTED", "it's"),
            set("SESSION_SECRET", "a\"b$c\\d\te\r\nf"),
            set("EMPTY", "x#y"),
            set("NEW_ONE", "simple"),
            set("NEW_TWO", "it's \n"),
            set("NEW_THREE", ""),
        ];
        let out = apply_env(GOLDEN_ENV, &edits).unwrap();
        let want = "\
# Application secrets
# managed by hand; secretsync imports missing ones

export DATABASE_URL=postgres://app@db:5432/app2   # primary
API_KEY='old-key'
TOKEN='x y$z'
QUOTED=\"it's\"  # keep me
SESSION_SECRET=\"a\\\"b\\$c\\\\d\\te\\r\\nf\" # two lines
EMPTY=\"x#y\"
  # indented comment
FEATURE_FLAG=on
API_KEY=\"new key with space\"   # the second one wins
NEW_ONE=simple
NEW_TWO=\"it's \\n\"
NEW_THREE=
";
        assert_lines(&out, want);
        let before = parse_env(GOLDEN_ENV, false).unwrap();
        assert_eq!(
            map_of(&parse_env(&out, false).unwrap()),
            expected(&before, &edits)
        );
    }

    #[test]
    fn golden_env_crlf_bom_no_final_newline() {
        let text = "\u{feff}# c\r\nA=1\r\nexport B = 'x' # b\r\n\r\nC=\"m\r\nl\"";
        let edits = [set("B", "y"), set("C", "z z"), set("D", "4")];
        let out = apply_env(text, &edits).unwrap();
        assert_eq!(
            out,
            "\u{feff}# c\r\nA=1\r\nexport B = 'y' # b\r\n\r\nC=\"z z\"\r\nD=4\r\n"
        );
    }

    #[test]
    fn env_quoting_choices() {
        // (original line, new value, expected line)
        let cases = [
            ("A=x", "plain-._/:@+,=%^Zz09", "A=plain-._/:@+,=%^Zz09"),
            ("A=x", "ünï€", "A=ünï€"),
            ("A=x", "", "A="),
            ("A=x", "a b", "A=\"a b\""),
            ("A=x", " a", "A=\" a\""),
            ("A=x", "a#", "A=\"a#\""),
            ("A=x", "$HOME", "A=\"\\$HOME\""),
            ("A=x", "a\\b", "A=\"a\\\\b\""),
            ("A=x", "'", "A=\"'\""),
            ("A=x", "*", "A=\"*\""),
            ("A=x", "\u{feff}", "A=\"\u{feff}\""),
            ("A='x'", "a b #$\\\"", "A='a b #$\\\"'"),
            ("A='x'", "", "A=''"),
            ("A='x'", "it's", "A=\"it's\""),
            ("A='x'", "a\nb", "A=\"a\\nb\""),
            ("A='x'", "a\rb", "A=\"a\\rb\""),
            ("A='x'", "ends\\", "A=\"ends\\\\\""),
            ("A=\"x\"", "plain", "A=\"plain\""),
            ("A=\"x\"", "", "A=\"\""),
            ("A=#comment", "v", "A=v #comment"),
            ("A=#comment", "", "A=#comment"),
            ("A= #comment", "v", "A= v #comment"),
            ("A=\"x\"#c", "v", "A=\"v\"#c"),
            ("A=   ", "v", "A=   v"),
            ("A = x\t# c", "y", "A = y\t# c"),
            ("  export\tA=x", "y", "  export\tA=y"),
            ("export=x", "y", "export=y"),
            ("A=x'y\"z # c", "v", "A=v # c"),
        ];
        for (line, value, want) in cases {
            let out = apply_env(line, &[set(line_key(line), value)]).unwrap();
            assert_eq!(out, want, "{line:?} <- {value:?}");
        }
    }

    fn line_key(line: &str) -> &str {
        let line = line.trim_start();
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let end = line.find(['=', ' ', '\t']).unwrap_or(line.len());
        &line[..end]
    }

    #[test]
    fn unchanged_values_leave_the_file_identical() {
        let env = "A=\"x\"\nB=plain # c\nC='m\nl'\n";
        let edits = [set("A", "x"), set("B", "plain"), set("C", "m\nl")];
        assert_eq!(apply_env(env, &edits).unwrap(), env);
        let yaml = "A: |\n  x\nB: {value: \"y\", metadata: {o: p}}\nC: 0080\n";
        let edits = [set("A", "x\n"), set("B", "y"), set("C", "0080")];
        assert_eq!(apply_yaml(yaml, &edits).unwrap(), yaml);
    }

    #[test]
    fn env_duplicate_key_edits_last_occurrence_only() {
        let text = "A=1\nB=2\nA=3\n";
        let out = apply_env(text, &[set("A", "9")]).unwrap();
        assert_eq!(out, "A=1\nB=2\nA=9\n");
    }

    #[test]
    fn repeated_edits_last_wins_and_order_of_first_appearance() {
        let edits = [set("X", "1"), set("W", "2"), set("X", "3")];
        assert_eq!(apply_env("", &edits).unwrap(), "X=3\nW=2\n");
        assert_eq!(apply_yaml("", &edits).unwrap(), "X: \"3\"\nW: \"2\"\n");
    }

    #[test]
    fn no_edits_is_identity() {
        for text in ["", "A=1", "# c\r\nA='x'\r\n", "\u{feff}B=\"m\nl\"\n"] {
            assert_eq!(apply_env(text, &[]).unwrap(), text);
        }
        for text in ["", "A: 1", "# c\r\nA: |\r\n  x\r\n", "{A: 1}", "~"] {
            assert_eq!(apply_yaml(text, &[]).unwrap(), text);
        }
    }

    #[test]
    fn unparseable_files_are_refused() {
        for text in ["A='unterminated", "not a line", "A=1\nB=\"x\\q\""] {
            let e = apply_env(text, &[set("A", "1")]).unwrap_err();
            assert!(matches!(e, WriteBackError::Parse(_)), "{e}");
        }
        for text in ["A: [1]", "A: 1\nA: 2", "- x", "A: \"x"] {
            let e = apply_yaml(text, &[set("A", "1")]).unwrap_err();
            assert!(matches!(e, WriteBackError::Parse(_)), "{e}");
        }
        let e = apply("A=1\nB", SourceFormat::Env, &[set("A", "canary-secret")]).unwrap_err();
        assert!(e.to_string().starts_with("the file does not parse"), "{e}");
    }

    #[test]
    fn unsupported_cases() {
        let e = apply_env("A=1\r", &[set("B", "1")]).unwrap_err();
        assert!(
            matches!(&e, WriteBackError::Unsupported { key, .. } if key == "B"),
            "{e}"
        );
        let e = apply_env("A=1\n", &[set("A", "a\0b")]).unwrap_err();
        assert!(
            matches!(&e, WriteBackError::Unsupported { key, .. } if key == "A"),
            "{e}"
        );
        for bad in ["1A", "a b", "", "A=B", "é", "-x", "a\nb"] {
            for format in [SourceFormat::Env, SourceFormat::Yaml] {
                let e = apply("", format, &[set(bad, "v")]).unwrap_err();
                assert!(
                    matches!(&e, WriteBackError::Unsupported { key, .. } if key == bad),
                    "{bad:?}: {e}"
                );
            }
        }
        for text in ["~", "--- ~\n", "null\n", "\tB: 1\n"] {
            let e = apply_yaml(text, &[set("A", "v")]).unwrap_err();
            assert!(
                matches!(&e, WriteBackError::Unsupported { key, .. } if key == "A"),
                "{e}"
            );
        }
    }

    #[test]
    fn errors_never_contain_values() {
        let canary = "canary-7f3e";
        let errors = [
            apply_env("A='x", &[set("A", canary)]).unwrap_err(),
            apply_env("", &[set("A", &format!("{canary}\0"))]).unwrap_err(),
            apply_env("", &[set("bad key", canary)]).unwrap_err(),
            apply_yaml("~", &[set("A", canary)]).unwrap_err(),
            apply_yaml("A: [x]", &[set("A", canary)]).unwrap_err(),
            apply_checked(
                "A: x\n",
                SourceFormat::Yaml,
                &[set("B", &format!("{canary}$A\n"))],
                true,
            )
            .unwrap_err(),
        ];
        for e in errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("canary"), "{shown}");
        }
        let edit = set("A", canary);
        assert!(!format!("{edit:?}").contains("canary"));
    }

    #[test]
    fn apply_checked_catches_expansion() {
        // .env: `\$` and single quotes keep the value literal under expand.
        for (text, value) in [("A=x\nB=1\n", "$A ${A}"), ("A=x\nB='1'\n", "$A")] {
            let edits = [set("B", value), set("C", "${A}\n$A")];
            let out = apply_checked(text, SourceFormat::Env, &edits, true).unwrap();
            let f = parse_env(&out, true).unwrap();
            assert_eq!(f.get("B").unwrap().value.expose(), value);
            assert_eq!(f.get("C").unwrap().value.expose(), "${A}\n$A");
        }
        // YAML: a single-line `$` value is single-quoted, so it is safe.
        let out =
            apply_checked("A: x\nB: 1\n", SourceFormat::Yaml, &[set("B", "$A")], true).unwrap();
        assert_eq!(out, "A: x\nB: '$A'\n");
        // A `$` value with a line break must be double-quoted, which expand
        // would change: refused with expand, fine without.
        let edits = [set("B", "$A\n")];
        let e = apply_checked("A: x\nB: 1\n", SourceFormat::Yaml, &edits, true).unwrap_err();
        assert!(matches!(e, WriteBackError::Verify { .. }), "{e}");
        let out = apply_checked("A: x\nB: 1\n", SourceFormat::Yaml, &edits, false).unwrap();
        assert_eq!(out, "A: x\nB: \"$A\\n\"\n");
    }

    // -- YAML --------------------------------------------------------------

    const GOLDEN_YAML: &str = "\
# Secrets for the payments service
---
DB_PASSWORD: hunter2  # rotate quarterly
PORT: 0080
API_TOKEN: 'abc'
CERT: |  # PEM
  -----BEGIN-----
  abc
  -----END-----

STRIPE:
  value: \"sk_test_1\"
  metadata:
    owner: alice   # team lead
    team: pay
WEBHOOK: {value: whsec_1, metadata: {owner: bob}}
NOTE: >-
  folded
  text
TAGGED: !!str &t 5
# end of file
";

    #[test]
    fn golden_yaml() {
        let edits = [
            set("DB_PASSWORD", "hunter3"),
            set("API_TOKEN", "it's $x"),
            set("CERT", "-----BEGIN-----\nxyz\n-----END-----\n"),
            set("STRIPE", "sk: live"),
            set("WEBHOOK", "whsec_2"),
            set("NOTE", "plain now"),
            set("TAGGED", "6"),
            set("NEW_KEY", "v"),
            set("null", "x"),
        ];
        let out = apply_yaml(GOLDEN_YAML, &edits).unwrap();
        let want = "\
# Secrets for the payments service
---
DB_PASSWORD: hunter3  # rotate quarterly
PORT: 0080
API_TOKEN: 'it''s $x'
CERT: \"-----BEGIN-----\\nxyz\\n-----END-----\\n\"  # PEM

STRIPE:
  value: \"sk: live\"
  metadata:
    owner: alice   # team lead
    team: pay
WEBHOOK: {value: whsec_2, metadata: {owner: bob}}
NOTE: plain now
TAGGED: \"6\"
# end of file
NEW_KEY: \"v\"
\"null\": \"x\"
";
        assert_lines(&out, want);
        let before = parse_yaml(GOLDEN_YAML, false).unwrap();
        assert_eq!(
            map_of(&parse_yaml(&out, false).unwrap()),
            expected(&before, &edits)
        );
    }

    /// (text, edits as (key, value), expected output)
    type LayoutCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn yaml_layouts() {
        // (text, edits, expected output)
        let cases: &[LayoutCase<'_>] = &[
            ("A: 1", &[("B", "2")], "A: 1\nB: \"2\"\n"),
            ("A: 1\r\n", &[("B", "2")], "A: 1\r\nB: \"2\"\r\n"),
            ("\u{feff}A: 1\n", &[("A", "2")], "\u{feff}A: 2\n"),
            (
                "  A: 1\n  B: 2\n",
                &[("C", "3")],
                "  A: 1\n  B: 2\n  C: \"3\"\n",
            ),
            (
                "A: 1\n...\n# after\n",
                &[("B", "2")],
                "A: 1\nB: \"2\"\n...\n# after\n",
            ),
            (
                "{A: 1, B: x}",
                &[("A", "2"), ("C", "3")],
                "{A: 2, B: x, C: \"3\"}",
            ),
            ("{A: 1,}\n", &[("C", "3")], "{A: 1, C: \"3\",}\n"),
            ("{}\n", &[("C", "3"), ("D", "4")], "{C: \"3\", D: \"4\"}\n"),
            ("", &[("A", "1")], "A: \"1\"\n"),
            ("A: 1\n  ", &[("B", "2")], "A: 1\nB: \"2\"\n  "),
            ("A: 1\r", &[("B", "2")], "A: 1\rB: \"2\"\n"),
            ("A: |+\n  x\n\n", &[("B", "2")], "A: |+\n  x\n\nB: \"2\"\n"),
            ("A: |+\n  x\n ", &[("B", "2")], "A: |+\n  x\nB: \"2\"\n "),
            (
                "A: |+\n  x\n# c",
                &[("B", "2")],
                "A: |+\n  x\n# c\nB: \"2\"\n",
            ),
            ("A: |+\n  x", &[("B", "2")], "A: |+\n  x\nB: \"2\"\n"),
            ("A: |2\n   ", &[("B", "2")], "A: |2\n   \nB: \"2\"\n"),
            ("# only\n", &[("A", "1")], "# only\nA: \"1\"\n"),
            ("---\n# c", &[("A", "1")], "---\n# c\nA: \"1\"\n"),
            ("---\n...\n", &[("A", "1")], "---\nA: \"1\"\n...\n"),
            (
                "A: plain\n  continued\nB: 1\n",
                &[("A", "x")],
                "A: x\nB: 1\n",
            ),
            ("A: 'a\n\n  b' # c\n", &[("A", "x")], "A: 'x' # c\n"),
            ("A: \"a\n  b\"\n", &[("A", "x")], "A: \"x\"\n"),
            ("A:\n  next-line\n", &[("A", "x y")], "A:\n  x y\n"),
            ("A: |\n  x\n", &[("A", "v")], "A: v\n"),
            ("A: |", &[("A", "v")], "A: v"),
            ("A: |-\n  x", &[("A", "v")], "A: v"),
            ("A: |\n\nB: 1\n", &[("A", "v")], "A: v\n\nB: 1\n"),
            ("A: |+\n  x\n\n\nB: 1\n", &[("A", "v")], "A: v\n\n\nB: 1\n"),
            ("A: |2\n   x\n  y\n", &[("A", "z")], "A: z\n"),
            ("A: >\n  a\n\n  b\n# c\n", &[("A", "z")], "A: z\n# c\n"),
            (
                "A: | # h\n    x\n  # c\nB: 1\n",
                &[("A", "z")],
                "A: z # h\n  # c\nB: 1\n",
            ),
            ("A: !!str |\n  x\n", &[("A", "z")], "A: z\n"),
            ("A: &a |\n  x\n", &[("A", "z")], "A: &a z\n"),
            ("A: &a x\n", &[("A", "z")], "A: &a z\n"),
            ("A: !!int 5 # n\n", &[("A", "z")], "A: z # n\n"),
            (
                "A: |\r\n  x\r\n  y\r\nB: 1\r\n",
                &[("A", "z")],
                "A: z\r\nB: 1\r\n",
            ),
            (
                "A:\n  value: |\n    x\n  metadata: {o: p}\n",
                &[("A", "z")],
                "A:\n  value: z\n  metadata: {o: p}\n",
            ),
            (
                "A:\n  metadata:\n    o: p\n  value: 'x'\n",
                &[("A", "z")],
                "A:\n  metadata:\n    o: p\n  value: 'z'\n",
            ),
            (
                "A: {metadata: {o: p}, value: \"x\"}\n",
                &[("A", "z")],
                "A: {metadata: {o: p}, value: \"z\"}\n",
            ),
            ("? A\n: x\n", &[("A", "z")], "? A\n: z\n"),
            ("\"db.url\": x\n", &[("db.url", "z")], "\"db.url\": z\n"),
            ("A: x\n", &[("A", "")], "A: \"\"\n"),
            ("A: x\n", &[("A", "null")], "A: \"null\"\n"),
            // A typed-looking value stays plain only where the original
            // plain scalar looked typed too.
            ("A: x\n", &[("A", "0080")], "A: \"0080\"\n"),
            ("A: 0080\n", &[("A", "0081")], "A: 0081\n"),
            ("A: 1.5\n", &[("A", "true")], "A: true\n"),
            ("A: abc\n", &[("A", "true")], "A: \"true\"\n"),
            ("A: abc\n", &[("A", "No")], "A: \"No\"\n"),
            ("A: abc\n", &[("A", ".5")], "A: \".5\"\n"),
            ("A: yes\n", &[("A", "off")], "A: off\n"),
            ("A: '5'\n", &[("A", "6")], "A: '6'\n"),
            ("A: |\n  x\n", &[("A", "5")], "A: \"5\"\n"),
            ("A: !!str 5\n", &[("A", "6")], "A: \"6\"\n"),
            ("A: x\n", &[("A", "a: b")], "A: \"a: b\"\n"),
            ("A: x\n", &[("A", "- a")], "A: \"- a\"\n"),
            ("A: x\n", &[("A", "a,b")], "A: \"a,b\"\n"),
            ("A: 'x'\n", &[("A", "it's")], "A: 'it''s'\n"),
            ("A: 'x'\n", &[("A", "a\nb")], "A: \"a\\nb\"\n"),
            ("A: \"x\"\n", &[("A", "plain")], "A: \"plain\"\n"),
            (
                "A: x\n",
                &[("A", "\u{1}\u{7f}\u{85}\u{9b}\u{2028}\u{feff}\t\0")],
                "A: \"\\x01\\x7f\\x85\\x9b\\u2028\\ufeff\\t\\x00\"\n",
            ),
            ("A: x\n", &[("A", "é 😀")], "A: é 😀\n"),
        ];
        for (text, edits, want) in cases {
            let edits: Vec<Edit> = edits.iter().map(|(k, v)| set(k, v)).collect();
            let out = apply_yaml(text, &edits).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(out, *want, "{text:?}");
        }
    }

    // -- property tests ----------------------------------------------------

    use crate::test_rng::{Rng, cases};

    const ATOMS: &[&str] = &[
        "a", "Z", "0", "9", "_", ".", " ", "  ", "\t", "\n", "\r\n", "\r", "\"", "'", "#", " #",
        "# ", "$", "${A}", "$A", "\\", "\\n", "\\$", ":", ": ", "-", "- ", "?", "{", "}", "[", "]",
        ",", "&", "*", "!", "|", ">", "%", "@", "`", "~", "=", "é", "€", "😀", "\u{2028}",
        "\u{85}", "\u{feff}", "\u{a0}", "\u{1}", "\u{7f}", "\u{9b}", "null", "true", "0080", "---",
        "...", "export ", "x=y", "ü",
    ];
    const SPECIAL: &[&str] = &[
        "", " ", "null", "~", "NULL", "-", "- x", "a: b", "#x", "0080", "true", "\n", "'", "\"",
        "\\", "$", "x ", " x", "a #b", "|", ">", "*a", "&a", "!x", "%x", "@x", "`x", "--- x", "?",
        ":", "[]", "{}", "\\\\'", "'\\", "$A", "${A}", "\r\n",
    ];

    fn random_value(rng: &mut Rng, nul: bool) -> String {
        if rng.chance(6) {
            return rng.pick(SPECIAL).to_owned();
        }
        let mut v = rng.text(ATOMS, 10);
        if nul && rng.chance(10) {
            v.insert(0, '\0');
        }
        v
    }

    fn random_key(rng: &mut Rng) -> String {
        const FIRST: &[&str] = &["A", "B", "K", "z", "_"];
        const REST: &[&str] = &["A", "b", "1", "_", ".", "-"];
        format!("{}{}", rng.pick(FIRST), rng.text(REST, 3))
    }

    fn random_edits(rng: &mut Rng, existing: &[String], nul: bool) -> Vec<Edit> {
        let mut edits = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let key = if !existing.is_empty() && rng.below(3) > 0 {
                existing[rng.below(existing.len())].clone()
            } else {
                random_key(rng)
            };
            edits.push(Edit::set(key, SecretValue::new(random_value(rng, nul))));
        }
        edits
    }

    /// Lines of the original outside the edited entries must all still be
    /// in the output, in order.
    /// (The last line may gain a line break, so line breaks are not compared.)
    fn check_untouched(text: &str, out: &str, before: &ParsedFile, edits: &[Edit]) {
        let edited: Vec<(u32, u32)> = edits
            .iter()
            .filter_map(|Edit::Set { key, .. }| before.get(key))
            .map(|e| (e.line, e.end_line))
            .collect();
        let body = split_bom(text).1;
        let mut out_lines = split_bom(out)
            .1
            .split('\n')
            .map(|l| l.trim_end_matches('\r'));
        for (i, line) in body.split('\n').enumerate() {
            let line = line.trim_end_matches('\r');
            let n = u32::try_from(i + 1).unwrap();
            if edited.iter().any(|&(a, b)| a <= n && n <= b) {
                continue;
            }
            if i + 1 == body.split('\n').count() && line.is_empty() {
                continue;
            }
            assert!(
                out_lines.any(|o| o == line),
                "untouched line {n} {line:?} missing or out of order in\n{out}\nfrom\n{text:?}\n{edited:?} {edits:?}"
            );
        }
    }

    fn random_env(rng: &mut Rng) -> String {
        const KEYS: &[&str] = &["A", "B", "C", "DB_URL", "x.y", "k-1", "export"];
        const BARE: &[&str] = &[
            "a", "Z", "0", "/", ":", "@", "=", "é", "'", "\"", "\\", "#", "$",
        ];
        const SINGLE: &[&str] = &["a", " ", "\"", "#", "$", "\\", "é", "\t", "\n"];
        const DOUBLE: &[&str] = &[
            "a", " ", "'", "#", "é", "\\n", "\\\"", "\\\\", "\\$", "\n", "$",
        ];
        let nl = if rng.chance(4) { "\r\n" } else { "\n" };
        let blank = |rng: &mut Rng| rng.pick(&["", " ", "\t"]).to_owned();
        let mut out = String::new();
        if rng.chance(5) {
            out.push('\u{feff}');
        }
        let lines = rng.below(8);
        for i in 0..lines {
            match rng.below(8) {
                0 => {}
                1 => out.push_str(&format!("{}# comment {}", blank(rng), rng.text(BARE, 4))),
                _ => {
                    out.push_str(&blank(rng));
                    if rng.chance(4) {
                        out.push_str("export ");
                    }
                    out.push_str(rng.pick(KEYS));
                    out.push_str(&blank(rng));
                    out.push('=');
                    out.push_str(&blank(rng));
                    match rng.below(4) {
                        0 => {
                            // Unquoted: must not start with a quote.
                            let v = rng.text(BARE, 6);
                            let v = v.trim_start_matches(['\'', '"']);
                            out.push_str(v);
                        }
                        1 => out.push_str(&format!("'{}'", rng.text(SINGLE, 6))),
                        2 => out.push_str(&format!("\"{}\"", rng.text(DOUBLE, 6))),
                        _ => {}
                    }
                    if rng.chance(3) {
                        out.push_str(&format!(" {}# {}", blank(rng), rng.text(BARE, 3)));
                    }
                }
            }
            if i + 1 < lines || rng.below(3) > 0 {
                out.push_str(nl);
            }
        }
        out
    }

    #[test]
    fn fuzz_env_write_back_round_trip() {
        let mut rng = Rng::seeded(0x2545_f491_4f6c_dd1d);
        let total = cases(4000);
        let mut cases = 0;
        while cases < total {
            let text = random_env(&mut rng);
            let Ok(before) = parse_env(&text, false) else {
                continue;
            };
            cases += 1;
            let keys: Vec<String> = before.entries.iter().map(|e| e.key.clone()).collect();
            let edits = random_edits(&mut rng, &keys, false);
            let out = apply_env(&text, &edits).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let after =
                parse_env(&out, false).unwrap_or_else(|e| panic!("{text:?} -> {out:?}: {e}"));
            assert_eq!(
                map_of(&after),
                expected(&before, &edits),
                "{text:?} -> {out:?}"
            );
            check_untouched(&text, &out, &before, &edits);
            // Applying the same edits again changes nothing.
            assert_eq!(apply_env(&out, &edits).unwrap(), out, "{text:?}");
        }
    }

    /// A scalar in one of the YAML styles, valid after `KEY: ` in block
    /// context at indentation `indent` (continuation lines go deeper).
    fn random_yaml_scalar(rng: &mut Rng, indent: usize, flow: bool) -> String {
        const PLAIN: &[&str] = &["a", "Z", "0", "é", "-", ".", "/", "'", "\"", "#", "$", "\\"];
        const SINGLE: &[&str] = &["a", " ", "\"", "#", "$", "\\", "é", "''", ": "];
        const DOUBLE: &[&str] = &[
            "a", " ", "'", "#", "$", "\\n", "\\\"", "\\\\", "\\t", "é", "\\x41",
        ];
        const BLOCK: &[&str] = &["a", " ", "'", "\"", "#", "$", "\\", "é", ": "];
        let deeper = " ".repeat(indent + 2);
        let choice = if flow { rng.below(3) } else { rng.below(6) };
        match choice {
            0 => format!("x{}", rng.text(PLAIN, 5)),
            1 => format!("'{}'", rng.text(SINGLE, 5)),
            2 => format!("\"{}\"", rng.text(DOUBLE, 5)),
            3 => format!("x{}\n{deeper}y{}", rng.text(PLAIN, 3), rng.text(PLAIN, 3)),
            4 => {
                let header = rng.pick(&["|", "|-", "|+", ">", ">-", "|2", "| # h"]);
                let mut s = header.to_owned();
                for _ in 0..1 + rng.below(3) {
                    s.push('\n');
                    if !rng.chance(4) {
                        s.push_str(&deeper);
                        s.push('w');
                        s.push_str(&rng.text(BLOCK, 5));
                    }
                }
                s
            }
            _ => format!("!!str &n{} x{}", rng.below(9), rng.text(PLAIN, 3)),
        }
    }

    fn random_yaml(rng: &mut Rng) -> String {
        const KEYS: &[&str] = &["A", "B", "C", "DB_URL", "x.y", "k-1", "'q k'", "\"d.k\""];
        let nl = if rng.chance(4) { "\r\n" } else { "\n" };
        let mut out = String::new();
        if rng.chance(5) {
            out.push('\u{feff}');
        }
        if rng.chance(5) {
            out.push_str("# head\n");
        }
        if rng.chance(5) {
            out.push_str("---\n");
        }
        let mut keys: Vec<&str> = KEYS.to_vec();
        if rng.chance(8) {
            // A flow mapping at the top level.
            let mut items = Vec::new();
            for _ in 0..rng.below(4) {
                let key = keys.remove(rng.below(keys.len()));
                items.push(format!("{key}: {}", random_yaml_scalar(rng, 0, true)));
            }
            out.push('{');
            out.push_str(&items.join(", "));
            out.push_str("}\n");
            return out.replace('\n', nl);
        }
        let indent = if rng.chance(5) { 2 } else { 0 };
        let pad = " ".repeat(indent);
        let pad2 = " ".repeat(indent + 2);
        let pad4 = " ".repeat(indent + 4);
        for _ in 0..rng.below(6) {
            match rng.below(7) {
                0 => {}
                1 => out.push_str(&format!("{pad}# comment")),
                2 => {
                    let key = keys.remove(rng.below(keys.len()));
                    let value = random_yaml_scalar(rng, indent + 2, false);
                    let meta = format!("{pad2}metadata:\n{pad4}o: p # m");
                    let value = format!("{pad2}value: {value}");
                    if rng.chance(2) {
                        out.push_str(&format!("{pad}{key}:\n{value}\n{meta}"));
                    } else {
                        out.push_str(&format!("{pad}{key}:\n{meta}\n{value}"));
                    }
                }
                3 => {
                    let key = keys.remove(rng.below(keys.len()));
                    out.push_str(&format!(
                        "{pad}{key}: {{value: {}, metadata: {{o: p}}}}",
                        random_yaml_scalar(rng, indent, true)
                    ));
                }
                _ => {
                    let key = keys.remove(rng.below(keys.len()));
                    let value = random_yaml_scalar(rng, indent, false);
                    let comment = if rng.chance(3) && !value.starts_with(['|', '>']) {
                        " # c"
                    } else {
                        ""
                    };
                    out.push_str(&format!("{pad}{key}: {value}{comment}"));
                }
            }
            out.push('\n');
        }
        if rng.chance(6) {
            out.push_str("...\n# after the end\n");
        }
        if rng.chance(4) {
            out.pop();
        }
        if nl == "\r\n" {
            out = out.replace('\n', "\r\n");
        }
        out
    }

    #[test]
    fn fuzz_yaml_write_back_round_trip() {
        let mut rng = Rng::seeded(0x9e37_79b9_7f4a_7c15);
        let total = cases(4000);
        let mut cases = 0;
        let mut rejected = 0;
        while cases < total {
            let text = random_yaml(&mut rng);
            let Ok(before) = parse_yaml(&text, false) else {
                rejected += 1;
                assert!(
                    rejected < total / 10 + 1,
                    "generator makes invalid YAML: {text:?}"
                );
                continue;
            };
            cases += 1;
            let keys: Vec<String> = before.entries.iter().map(|e| e.key.clone()).collect();
            let edits = random_edits(&mut rng, &keys, true);
            let out = apply_yaml(&text, &edits).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let after =
                parse_yaml(&out, false).unwrap_or_else(|e| panic!("{text:?} -> {out:?}: {e}"));
            assert_eq!(
                map_of(&after),
                expected(&before, &edits),
                "{text:?} -> {out:?}"
            );
            // Keys added to a flow mapping change its last line.
            if !text.contains('{')
                || !edits
                    .iter()
                    .any(|Edit::Set { key, .. }| before.get(key).is_none())
            {
                check_untouched(&text, &out, &before, &edits);
            }
            assert_eq!(apply_yaml(&out, &edits).unwrap(), out, "{text:?}");
        }
    }

    /// Mutated files (most no longer parse, some parse oddly): `apply` must
    /// answer without panicking, and whatever it returns for a file that
    /// parses must read back (checked inside `apply`; here it must not be
    /// a panic).
    #[test]
    fn fuzz_write_back_on_mutated_files() {
        const SPICE: &[&str] = &[
            "\"", "'", "\\", "#", " #", "\n", "\r\n", "\r", ":", ": ", "|", ">", "{", "}", "[",
            ",", "&a ", "!!str ", "- ", "? ", "---\n", "...\n", "=", "export ", "\u{feff}", "\t",
            "  ", "é",
        ];
        let mut rng = Rng::seeded(0x1234_5678_9abc_def1);
        for i in 0..cases(3000) {
            let (format, text) = if i % 2 == 0 {
                (SourceFormat::Env, random_env(&mut rng))
            } else {
                (SourceFormat::Yaml, random_yaml(&mut rng))
            };
            let mut text = text;
            for _ in 0..1 + rng.below(3) {
                let mut at = rng.below(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                if rng.chance(2) {
                    text.insert_str(at, rng.pick(SPICE));
                } else if at < text.len() {
                    let mut end = (at + 1 + rng.below(6)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, "");
                }
            }
            let keys: Vec<String> = parse_text(&text, format, false)
                .map(|f| f.entries.iter().map(|e| e.key.clone()).collect())
                .unwrap_or_default();
            let edits = random_edits(&mut rng, &keys, format == SourceFormat::Yaml);
            let parses = parse_text(&text, format, false).is_ok();
            match apply(&text, format, &edits) {
                Ok(out) => assert!(parse_text(&out, format, false).is_ok(), "{text:?}"),
                Err(WriteBackError::Parse(_)) => assert!(!parses, "{text:?}"),
                Err(WriteBackError::Unsupported { .. }) => {}
                Err(e) => panic!("{text:?}: {e}"),
            }
            // The import's entry point, with either `expand`: what it
            // returns reads back with every edited key at its new value.
            let expand = rng.chance(2);
            check_apply_checked(&text, format, &edits, expand);
        }
    }

    /// `apply_checked` either refuses (never a panic, never an IO error)
    /// or returns text in which, read with `expand`, every edited key has
    /// its new value; without `expand` the other keys keep theirs.
    fn check_apply_checked(text: &str, format: SourceFormat, edits: &[Edit], expand: bool) {
        match apply_checked(text, format, edits, expand) {
            Ok(out) => {
                let after = parse_text(&out, format, expand)
                    .unwrap_or_else(|e| panic!("{text:?} -> {out:?} ({expand}): {e}"));
                for (key, value) in collapse(edits) {
                    assert!(
                        after.get(key).is_some_and(|e| e.value == *value),
                        "{text:?} -> {out:?} ({expand}): key {key} does not read back"
                    );
                }
                if !expand {
                    let before = parse_text(text, format, false)
                        .unwrap_or_else(|e| panic!("accepted unparseable {text:?}: {e}"));
                    assert_eq!(map_of(&after), expected(&before, edits), "{text:?}");
                }
            }
            Err(
                WriteBackError::Parse(_)
                | WriteBackError::Unsupported { .. }
                | WriteBackError::Verify { .. },
            ) => {}
            Err(e) => panic!("{text:?}: unexpected error {e}"),
        }
    }

    /// `apply_checked` on arbitrary bytes (lossily decoded, so invalid
    /// UTF-8 turns into U+FFFD) and arbitrary edits never panics and never
    /// returns text that reads back wrong.
    #[test]
    fn fuzz_apply_checked_on_random_text() {
        const SYNTAX: &[u8] = b" \n\n\t\"'\\$={}[]:#-|>&*!?,\r";
        let mut rng = Rng::seeded(0x5851_f42d_4c95_7f2d);
        for _ in 0..cases(20_000) {
            let len = rng.below(80);
            let bytes = rng.bytes(len, SYNTAX);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let format = if rng.chance(2) {
                SourceFormat::Env
            } else {
                SourceFormat::Yaml
            };
            let keys: Vec<String> = parse_text(&text, format, false)
                .map(|f| f.entries.iter().map(|e| e.key.clone()).collect())
                .unwrap_or_default();
            let edits = random_edits(&mut rng, &keys, format == SourceFormat::Yaml);
            check_apply_checked(&text, format, &edits, rng.chance(2));
        }
    }

    // -- write_atomic ------------------------------------------------------

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn leftover_temps(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".secretsync-write-"))
            .collect()
    }

    #[test]
    fn write_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o600, 0o644, 0o400] {
            let path = dir.path().join(format!("m{mode:o}.env"));
            fs::write(&path, "A=1\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let out = write_atomic(&path, b"A=2\n", false).unwrap();
            assert_eq!(out.written_path, path);
            assert_eq!(mode_of(&path), mode, "{mode:o}");
            assert_eq!(fs::read(&path).unwrap(), b"A=2\n");
            assert_eq!(out.digest, sha(b"A=2\n"));
            assert!(out.notes.is_empty(), "{:?}", out.notes);
        }
        assert!(leftover_temps(dir.path()).is_empty());
    }

    #[test]
    fn write_creates_absent_file_0600_but_no_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        let out = write_atomic(&path, b"NEW=1\n", false).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"NEW=1\n");
        assert_eq!(out.digest, sha(b"NEW=1\n"));
        assert_ne!(out.digest, sha(b"NEW=2\n"));

        let missing = dir.path().join("no-such-dir").join(".env");
        let e = write_atomic(&missing, b"x", false).unwrap_err();
        assert!(matches!(e, WriteBackError::Io { .. }), "{e}");
        assert!(!dir.path().join("no-such-dir").exists());
    }

    #[test]
    fn write_refuses_non_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x", false).unwrap_err();
        assert!(matches!(e, WriteBackError::Io { .. }), "{e}");
        assert!(sub.is_dir());
        assert!(leftover_temps(dir.path()).is_empty());
    }

    #[test]
    fn write_through_symlink_inside_dir_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.env");
        fs::write(&real, "A=1\n").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join(".env");
        std::os::unix::fs::symlink("real.env", &link).unwrap();
        let out = write_atomic(&link, b"A=2\n", false).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("real.env"));
        assert_eq!(fs::read(&real).unwrap(), b"A=2\n");
        assert_eq!(mode_of(&real), 0o640);
        assert_eq!(out.written_path, fs::canonicalize(&real).unwrap());

        // A chain through a subdirectory is still inside.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("t.env"), "B=1\n").unwrap();
        std::os::unix::fs::symlink("sub/t.env", dir.path().join("mid")).unwrap();
        std::os::unix::fs::symlink("mid", dir.path().join("chain.env")).unwrap();
        write_atomic(&dir.path().join("chain.env"), b"B=2\n", false).unwrap();
        assert_eq!(fs::read(sub.join("t.env")).unwrap(), b"B=2\n");

        // A dangling link inside the directory gets its target created.
        std::os::unix::fs::symlink("later.env", dir.path().join("dangling")).unwrap();
        write_atomic(&dir.path().join("dangling"), b"C=1\n", false).unwrap();
        assert_eq!(fs::read(dir.path().join("later.env")).unwrap(), b"C=1\n");
        assert_eq!(mode_of(&dir.path().join("later.env")), 0o600);
        assert!(leftover_temps(dir.path()).is_empty());
    }

    #[test]
    fn write_through_symlink_outside_dir_needs_permission() {
        let root = tempfile::tempdir().unwrap();
        let app = root.path().join("app");
        let other = root.path().join("other");
        fs::create_dir(&app).unwrap();
        fs::create_dir(&other).unwrap();
        let real = other.join("real.env");
        fs::write(&real, "A=1\n").unwrap();
        let link = app.join(".env");
        std::os::unix::fs::symlink("../other/real.env", &link).unwrap();

        let e = write_atomic(&link, b"A=2\n", false).unwrap_err();
        match &e {
            WriteBackError::Symlink { path, target } => {
                assert_eq!(path, &link);
                assert_eq!(target, &fs::canonicalize(&real).unwrap());
            }
            other => panic!("{other}"),
        }
        assert_eq!(fs::read(&real).unwrap(), b"A=1\n");

        // An absolute link, and a link via a symlinked directory, too.
        std::os::unix::fs::symlink(&real, app.join("abs.env")).unwrap();
        std::os::unix::fs::symlink(&other, app.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("dirlink/real.env", app.join("via.env")).unwrap();
        for name in ["abs.env", "via.env"] {
            let e = write_atomic(&app.join(name), b"A=2\n", false).unwrap_err();
            assert!(matches!(e, WriteBackError::Symlink { .. }), "{name}: {e}");
        }
        assert_eq!(fs::read(&real).unwrap(), b"A=1\n");

        let out = write_atomic(&link, b"A=3\n", true).unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"A=3\n");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(out.written_path, fs::canonicalize(&real).unwrap());
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
    }

    #[test]
    fn write_reports_other_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.env");
        fs::write(&a, "A=1\n").unwrap();
        fs::hard_link(&a, dir.path().join("b.env")).unwrap();
        let out = write_atomic(&a, b"A=2\n", false).unwrap();
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        assert_eq!(fs::read(dir.path().join("b.env")).unwrap(), b"A=1\n");
    }

    /// Environment variable that tells [`unprivileged_child`] which
    /// directory to work in.
    const CHILD_ENV: &str = "SECRETSYNC_WRITEBACK_CHILD_DIR";
    /// The unprivileged user the root-only tests switch to.
    const NOBODY: u32 = 65534;

    /// Sets up `base/ro` (read-only, holding `.env`) and `base/rw`
    /// (writable, holding a root-owned `.env` when run as root).
    fn prepare_unprivileged(base: &Path, as_root: bool) {
        let ro = base.join("ro");
        let rw = base.join("rw");
        fs::create_dir(&ro).unwrap();
        fs::create_dir(&rw).unwrap();
        fs::write(ro.join(".env"), "A=1\n").unwrap();
        fs::write(rw.join(".env"), "A=1\n").unwrap();
        fs::set_permissions(rw.join(".env"), fs::Permissions::from_mode(0o644)).unwrap();
        if as_root {
            for p in [base, &ro, &ro.join(".env"), &rw] {
                std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    }

    /// The checks that need an unprivileged process.
    fn unprivileged_checks(base: &Path, as_root: bool) {
        // A read-only directory: Io error, original untouched, no temp file.
        let ro = base.join("ro");
        let e = write_atomic(&ro.join(".env"), b"A=2\n", false).unwrap_err();
        assert!(
            matches!(&e, WriteBackError::Io { source, path }
                if source.kind() == io::ErrorKind::PermissionDenied && path == &ro),
            "{e}"
        );
        assert_eq!(fs::read(ro.join(".env")).unwrap(), b"A=1\n");
        assert!(leftover_temps(&ro).is_empty());
        if as_root {
            // A root-owned file in a writable directory: replaced, with the
            // owner and group that could not be kept reported.
            let path = base.join("rw").join(".env");
            let out = write_atomic(&path, b"A=2\n", false).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"A=2\n");
            assert_eq!(mode_of(&path), 0o644);
            assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
            assert!(out.notes[0].contains("owner uid 0"), "{:?}", out.notes);
            assert!(out.notes[1].contains("group gid 0"), "{:?}", out.notes);
        }
    }

    #[test]
    fn write_unprivileged() {
        let base = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        prepare_unprivileged(base.path(), as_root);
        if !as_root {
            unprivileged_checks(base.path(), false);
        } else {
            // Root bypasses permission checks: run the checks in a child
            // process of this test binary that drops to an unprivileged user.
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "source::writeback::tests::unprivileged_child",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, base.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&child.stdout);
            assert!(
                child.status.success() && stdout.contains("1 passed"),
                "child {}:\n{stdout}\n{}",
                child.status,
                String::from_utf8_lossy(&child.stderr)
            );
        }
        fs::set_permissions(base.path().join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Run by [`write_unprivileged`] as root; does nothing on its own.
    #[test]
    #[ignore = "helper process of write_unprivileged"]
    fn unprivileged_child() {
        let Some(base) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        // SAFETY: plain syscalls; this process runs only this test.
        unsafe {
            assert_eq!(libc::setegid(NOBODY), 0);
            assert_eq!(libc::seteuid(NOBODY), 0);
        }
        unprivileged_checks(Path::new(&base), true);
    }
}
