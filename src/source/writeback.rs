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
//!   characters. A value containing `$` is single-quoted whenever it can be,
//!   because single quotes are never expanded (YAML has no `\$`); a `$` value
//!   that needs double quotes (it has a line break or control character)
//!   reads back differently under `expand: true`, which [`apply_checked`]
//!   reports instead of writing.
//! * New keys: appended as `KEY: "value"` lines (single-quoted for `$`, as
//!   above) with the top-level mapping's indentation, before an explicit
//!   document end `...` if there is one; into a top-level flow mapping
//!   (`{A: 1}`) they are inserted before its closing brace as `, KEY: "value"`.
//!   A file whose top level is an explicit null (`~`) gets no new keys
//!   ([`WriteBackError::Unsupported`]).
//!
//! A new key (in either format) must match the key charset
//! `[A-Za-z_][A-Za-z0-9_.-]*`; an existing key is edited where it is,
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
/// byte-for-byte, including a byte-order mark and CRLF line endings.
pub fn apply_env(text: &str, edits: &[Edit]) -> Result<String, WriteBackError> {
    let before = parse_env(text, false).map_err(WriteBackError::Parse)?;
    let (bom, body) = split_bom(text);
    let sets = collapse(edits);
    let starts = line_starts(body);
    let mut splices = Vec::new();
    let mut appends = Vec::new();
    for &(key, value) in &sets {
        let expose = value.expose();
        if expose.contains('\0') {
            return Err(unsupported(
                key,
                "the value contains a NUL character, which a .env file cannot hold",
            ));
        }
        match before.get(key) {
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
                if !repr.is_empty()
                    && !repr.starts_with(['"', '\''])
                    && body[loc.end..].starts_with('#')
                {
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
                appends.push(format!("{key}={repr}"));
            }
        }
    }
    let mut out = splice(body, splices);
    append_lines(&mut out, body, &appends);
    let out = format!("{bom}{out}");
    verify(&before, &out, SourceFormat::Env, &sets)?;
    Ok(out)
}

/// Applies `edits` to YAML text (rules in the module docs). Refuses text that
/// does not parse; everything but the edited scalars is kept byte-for-byte.
pub fn apply_yaml(text: &str, edits: &[Edit]) -> Result<String, WriteBackError> {
    let before = parse_yaml(text, false).map_err(WriteBackError::Parse)?;
    let (bom, body) = split_bom(text);
    let sets = collapse(edits);
    let layout = yaml_layout(body).ok_or_else(|| WriteBackError::Verify {
        reason: "the YAML layout of the file was not recognised".to_owned(),
    })?;
    let mut splices = Vec::new();
    let mut appends = Vec::new();
    for &(key, value) in &sets {
        let expose = value.expose();
        match layout.scalars.get(key) {
            Some(loc) => {
                let prefer = match loc.style {
                    ScalarStyle::SingleQuoted => YamlStyle::Single,
                    ScalarStyle::DoubleQuoted => YamlStyle::Double,
                    _ => YamlStyle::Plain,
                };
                let repr = yaml_scalar(expose, prefer);
                splices.push(yaml_splice(body, loc, repr).ok_or_else(|| {
                    unsupported(key, "the value's YAML layout was not recognised")
                })?);
            }
            None => {
                check_new_key(key)?;
                let key_repr = yaml_scalar(key, YamlStyle::Plain);
                appends.push(format!(
                    "{key_repr}: {}",
                    yaml_scalar(expose, YamlStyle::Double)
                ));
            }
        }
    }
    if let Some(first) = appends.first() {
        match &layout.top {
            YamlTop::Block { indent, append_at } => {
                let (head, tail) = body.split_at(*append_at);
                let indented: Vec<String> = appends
                    .iter()
                    .map(|line| format!("{}{line}", " ".repeat(*indent)))
                    .collect();
                let mut with = splice(head, splices);
                append_lines(&mut with, body, &indented);
                with.push_str(tail);
                let out = format!("{bom}{with}");
                verify(&before, &out, SourceFormat::Yaml, &sets)?;
                return Ok(out);
            }
            YamlTop::Flow { insert_at, empty } => {
                let mut text = String::new();
                for (i, item) in appends.iter().enumerate() {
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
            }
            YamlTop::Null => {
                let key = sets
                    .iter()
                    .find(|(k, _)| !layout.scalars.contains_key(*k))
                    .map_or(first.as_str(), |(k, _)| *k);
                return Err(unsupported(
                    key,
                    "the file's top level is an explicit null, not a mapping",
                ));
            }
        }
    }
    let out = format!("{bom}{}", splice(body, splices));
    verify(&before, &out, SourceFormat::Yaml, &sets)?;
    Ok(out)
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

/// Atomic replace: temp file in the same directory (O_EXCL, mode of the original or 0600 for a new file), write, fsync, rename over the path, fsync the directory; keeps the original's mode, and owner/group when permitted (fchown; ignore EPERM for owner but report in a returned note). Refuses to write through a symlink whose target is outside the link's directory unless `allow_outside_symlink`; a symlink inside the dir is resolved and the TARGET file is replaced (so the link stays a link). Creates the file (and nothing else: not parent dirs) when absent.
///
/// Why this way: readers (the application, the agent's own watcher) see
/// either the old or the new file, never a partial one, and a crash leaves
/// the old file (plus at worst a stray `.secretsync-write-*.tmp`, a name no
/// `.env`/YAML pattern matches). The temp file is created 0600 and only then
/// given the original owner and mode, so the content is never more exposed
/// than either file. "Inside the directory" means the link's directory or a
/// directory below it, after resolving every link (a chain of links is
/// followed; a link that leads out and back in is inside). A dangling link
/// inside the directory gets its target created. A path that is not a
/// regular file (a directory, a device) is refused.
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
struct Splice {
    start: usize,
    end: usize,
    text: String,
}

/// Applies non-overlapping splices to `text`.
fn splice(text: &str, mut splices: Vec<Splice>) -> String {
    splices.sort_by_key(|s| (s.start, s.end));
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for s in splices {
        let start = s.start.clamp(at, text.len());
        out.push_str(&text[at..start]);
        out.push_str(&s.text);
        at = s.end.clamp(start, text.len());
    }
    out.push_str(&text[at..]);
    out
}

/// Appends `lines` to `out`, first ending its last line if needed; uses the
/// line ending of `original`.
fn append_lines(out: &mut String, original: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let eol = line_ending(original);
    if !out.is_empty() && !out.ends_with('\n') {
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
}

/// Where new top-level keys go.
#[derive(Debug, Clone, Copy)]
enum YamlTop {
    /// A block mapping (or an empty document): lines indented by `indent`
    /// spaces, inserted at `append_at`.
    Block { indent: usize, append_at: usize },
    /// A flow mapping `{...}`: `, KEY: value` inserted at `insert_at`.
    Flow { insert_at: usize, empty: bool },
    /// An explicit null document (`~`): nowhere.
    Null,
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
            top: YamlTop::Block {
                indent: 0,
                append_at: body.len(),
            },
            scalars,
        });
    };
    let top = match first {
        Event::Scalar(..) => {
            if start_of(first_span)? == end_of(first_span)? {
                // An implicit empty document (`---` and comments).
                YamlTop::Block {
                    indent: 0,
                    append_at: document_end(body, &mut it)?,
                }
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
                let line_start = body[..map_start].rfind('\n').map_or(0, |i| i + 1);
                let indent = &body[line_start..map_start];
                if !indent.bytes().all(|b| b == b' ') {
                    return None;
                }
                YamlTop::Block {
                    indent: indent.len(),
                    append_at: document_end(body, &mut it)?,
                }
            }
        }
        _ => return None,
    };
    Some(YamlLayout { top, scalars })
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
                return Some(body[..start].rfind('\n').map_or(0, |i| i + 1));
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
        Event::Scalar(_, style, ..) => Some((scalar_loc(span, *style, key_end)?, end_of(span)?)),
        Event::MappingStart(..) => {
            let mut loc = None;
            loop {
                let (ev, span) = it.next()?;
                match ev {
                    Event::MappingEnd => return Some((loc?, end_of(span)?)),
                    Event::Scalar(field, ..) if field.as_ref() == "value" => {
                        let field_end = end_of(span)?;
                        let (ev, vspan) = it.next()?;
                        let Event::Scalar(_, style, ..) = ev else {
                            return None;
                        };
                        loc = Some(scalar_loc(vspan, *style, field_end)?);
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

fn scalar_loc(span: &Span, style: ScalarStyle, prev_end: usize) -> Option<ScalarLoc> {
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
            let mut line_end = body[header_end..]
                .find('\n')
                .map_or(body.len(), |i| header_end + i);
            if line_end > header_end && body.as_bytes()[line_end - 1] == b'\r' {
                line_end -= 1;
            }
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
            b'#' => i = body[i..].find('\n').map_or(body.len(), |p| i + p),
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
    Plain,
    Single,
    Double,
}

/// A YAML scalar for `value` (style rules in the module docs).
fn yaml_scalar(value: &str, prefer: YamlStyle) -> String {
    if value.contains('$') && yaml_single_ok(value) {
        return yaml_single(value);
    }
    match prefer {
        YamlStyle::Plain if yaml_plain_ok(value) => value.to_owned(),
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
            Err(e) => return Err(io_error(&tmp, e)),
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
