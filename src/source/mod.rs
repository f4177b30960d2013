//! Source files: turning the bytes of a local `.env` or YAML secret file into
//! key/value entries (SPEC §4 "Sources and mapping").
//!
//! Everything here is pure: no IO, no clock, and in particular no access to
//! the process environment, so a value can only ever come from the file that
//! is being parsed. The caller reads the file (enforcing `max_file_size`),
//! picks the format ([`SourceFormat::from_path`] or the configured one) and
//! calls [`parse`].
//!
//! Both parsers share these conventions:
//!
//! * Positions are 1-based lines and 1-based columns counted in characters
//!   (Unicode scalar values), the way editors and `file:line:col` consumers
//!   count them. A UTF-8 byte-order mark at the start of the file is stripped
//!   and does not count as a column.
//! * A [`ParseError`] never contains a value or any part of one: it names a
//!   position, a key when one is known, and a fixed description. Values are
//!   held in [`SecretValue`], whose `Debug` redacts.
//! * Keys are not checked against the key charset here (a later stage reports
//!   a bad key per secret, so one odd key does not fail the whole file); the
//!   parsers only enforce what the syntax needs.
//! * A repeated key: see [`ParsedFile`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::secret::SecretValue;

pub(crate) mod dotenv;
pub(crate) mod files;
pub(crate) mod writeback;
pub(crate) mod yaml;

/// The syntax of a source file. `source.format: auto` in the config maps to
/// [`SourceFormat::from_path`]; `env` and `yaml` force one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// dotenv syntax: `KEY=value` lines (see [`dotenv`]).
    Env,
    /// A YAML document whose top level is a mapping (see [`yaml`]).
    Yaml,
}

impl SourceFormat {
    /// Guesses the format from a file name, for `format: auto`:
    /// `*.yaml` / `*.yml` are YAML; `.env`, `*.env` and `.env.*` (for example
    /// `.env.production`) are dotenv. Extensions match ASCII
    /// case-insensitively. A YAML extension wins over a `.env.` prefix, so
    /// `.env.yaml` is YAML. Anything else is `None`: the caller reports that
    /// the format must be configured instead of guessing.
    pub fn from_path(path: &Path) -> Option<SourceFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            return Some(SourceFormat::Yaml);
        }
        if name == ".env" || name.starts_with(".env.") || name.ends_with(".env") {
            return Some(SourceFormat::Env);
        }
        None
    }
}

/// One key of a source file with its value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// The key as written (not yet checked against the key charset).
    pub key: String,
    /// The decoded (and, when enabled, expanded) value.
    pub value: SecretValue,
    /// YAML `metadata:` of the entry (used for metadata tags); always empty
    /// for `.env` files, which have no such syntax.
    pub metadata: BTreeMap<String, String>,
    /// Line of the key (1-based), for status and error messages.
    pub line: u32,
    /// Column of the key (1-based, in characters).
    pub column: u32,
    /// Last line (1-based, inclusive) the entry occupies, including a
    /// multi-line value and a trailing comment on that line, so format-
    /// preserving write-back can replace lines `line..=end_line`.
    pub end_line: u32,
}

/// The entries of one source file, in file order.
///
/// If a key occurs more than once in a `.env` file only the last occurrence
/// is kept (at its own position), which is what dotenv tools do when they
/// load with override and what a shell does when it sources the file. A YAML
/// file with a repeated key is an error instead (YAML requires unique keys,
/// and a duplicate there is almost always an editing mistake); see [`yaml`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFile {
    /// Entries ordered by their position in the file.
    pub entries: Vec<SourceEntry>,
}

impl ParsedFile {
    /// The entry for `key`, if the file defines it.
    pub fn get(&self, key: &str) -> Option<&SourceEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// Why a source file could not be parsed. The file is then not applied at all
/// (SPEC §4: the sync keeps the last good view of it).
///
/// `Display` is `LINE:COL: message`, followed by ` (key KEY)` when the error
/// belongs to a known key; the caller prefixes the file path. The message is
/// built from fixed text, key names and variable names only, never from a
/// value, so it is safe for logs and `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}{key_suffix}", key_suffix = key_suffix(.key))]
pub struct ParseError {
    /// 1-based line of the problem.
    pub line: u32,
    /// 1-based column (in characters) of the problem.
    pub column: u32,
    /// The key whose entry is wrong, when known.
    pub key: Option<String>,
    /// What is wrong, without any part of a value.
    pub message: String,
}

impl ParseError {
    /// Builds an error at a 1-based position.
    pub fn new(line: u32, column: u32, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            line,
            column,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// The ` (key KEY)` suffix of [`ParseError`]'s `Display`; escaped so a key
/// with a line break still gives a one-line message.
fn key_suffix(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" (key {})", k.escape_debug()),
        None => String::new(),
    }
}

/// Parses a source file's raw bytes.
///
/// Rejects invalid UTF-8 (pointing at the first bad byte) and NUL bytes, strips
/// a leading byte-order mark, then dispatches to [`parse_env`] or
/// [`parse_yaml`]. `expand` is the sync's `source.expand`: `${VAR}` / `$VAR`
/// expansion from keys defined earlier in the same file only.
pub fn parse(bytes: &[u8], format: SourceFormat, expand: bool) -> Result<ParsedFile, ParseError> {
    let text = decode_utf8(bytes)?;
    match format {
        SourceFormat::Env => parse_env(text, expand),
        SourceFormat::Yaml => parse_yaml(text, expand),
    }
}

/// Parses `.env` text (see [`dotenv`] for the accepted syntax). Strips a
/// leading byte-order mark and rejects NUL characters like [`parse`].
pub fn parse_env(text: &str, expand: bool) -> Result<ParsedFile, ParseError> {
    let text = prepare(text)?;
    dotenv::parse(text, expand)
}

/// Parses YAML text (see [`yaml`] for the accepted shapes). Strips a leading
/// byte-order mark and rejects NUL characters like [`parse`].
pub fn parse_yaml(text: &str, expand: bool) -> Result<ParsedFile, ParseError> {
    let text = prepare(text)?;
    yaml::parse(text, expand)
}

const BOM: &str = "\u{feff}";

/// Checks UTF-8; an error points at the first invalid byte.
fn decode_utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| {
        // `valid_up_to` is always a char boundary of a valid prefix, so this
        // second conversion cannot fail; fall back to "" rather than panic.
        let prefix = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
        let prefix = prefix.strip_prefix(BOM).unwrap_or(prefix);
        let (line, column) = position_in(prefix, prefix.len());
        ParseError::new(line, column, None, "file is not valid UTF-8")
    })
}

/// Strips one leading byte-order mark and rejects NUL characters, which no
/// text secret file contains and which AWS and C-based tools mishandle.
fn prepare(text: &str) -> Result<&str, ParseError> {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    if let Some(offset) = text.find('\0') {
        let (line, column) = position_in(text, offset);
        return Err(ParseError::new(
            line,
            column,
            None,
            "file contains a NUL byte",
        ));
    }
    Ok(text)
}

/// Saturating conversion for positions: files are bounded by
/// `max_file_size` long before `u32` overflows, but the parsers are public
/// and must not panic on anything.
pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// 1-based (line, column in chars) of byte `offset` in `text`, with lines
/// separated by `\n`. `offset` is clamped to the text and to a char boundary.
pub(crate) fn position_in(text: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (to_u32(line), to_u32(column))
}

/// Start offsets of the `\n`-separated lines of a text, for turning many byte
/// offsets into positions without rescanning from the start each time.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    /// 1-based (line, column in chars) of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0] == 0 <= offset`, so the partition point is at least 1.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line.saturating_sub(1)];
        let column = self.text[start..offset].chars().count() + 1;
        (to_u32(line), to_u32(column))
    }

    /// 1-based line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> u32 {
        to_u32(self.starts.partition_point(|&s| s <= offset))
    }
}

/// Largest value (in bytes) that variable expansion may build. Far above the
/// 64 KiB AWS limit, so a moderately oversize value still reaches the
/// per-secret size check; it exists so `A=x`, `B=$A$A`, `C=$B$B`, ... cannot
/// grow exponentially.
pub(crate) const MAX_EXPANDED_VALUE: usize = 1 << 20;
/// Largest total number of bytes variable expansion may insert over a whole
/// file, bounding memory for many moderately large expansions.
pub(crate) const MAX_EXPANSION_TOTAL: usize = 16 << 20;

/// What follows a `$` in a value that is subject to expansion.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reference<'a> {
    /// Not a reference (`$` at the end, before a space, digit, ...): the `$`
    /// is kept literally, as shells and dotenv tools do.
    Literal,
    /// `$NAME` or `${NAME}`; `len` is the number of bytes after the `$`.
    Var { name: &'a str, len: usize },
    /// `${` not followed by a key name and `}`.
    Invalid,
}

/// Reads the reference after a `$`. `$NAME` takes `[A-Za-z_][A-Za-z0-9_]*`
/// (shell rules, so `$A.B` is `$A` followed by `.B`); `${NAME}` takes the
/// whole key charset `[A-Za-z_][A-Za-z0-9_.-]*`, so keys with dots or dashes
/// can be referenced.
pub(crate) fn scan_reference(after: &str) -> Reference<'_> {
    let bytes = after.as_bytes();
    match bytes.first() {
        Some(b'{') => {
            let inner = &after[1..];
            let len = inner
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                .count();
            let name = &inner[..len];
            let starts_ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            if starts_ok && inner.as_bytes().get(len) == Some(&b'}') {
                Reference::Var { name, len: len + 2 }
            } else {
                Reference::Invalid
            }
        }
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            Reference::Var {
                name: &after[..len],
                len,
            }
        }
        _ => Reference::Literal,
    }
}

/// Why a reference could not be expanded; [`ExpandError::message`] gives the
/// text (variable names are keys, never values, so they may be shown).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// No key of that name was defined earlier in the file.
    Undefined(String),
    /// `${` without a valid name and `}`.
    Invalid,
    /// The value would exceed [`MAX_EXPANDED_VALUE`].
    ValueTooLarge,
    /// The file would exceed [`MAX_EXPANSION_TOTAL`].
    TotalTooLarge,
}

impl ExpandError {
    /// The error message; `literal_hint` tells how to write a literal `$` in
    /// the format at hand.
    pub(crate) fn message(&self, literal_hint: &str) -> String {
        match self {
            ExpandError::Undefined(name) => format!(
                "undefined variable '{}' (expansion only sees keys defined earlier in this file)",
                name.escape_debug()
            ),
            ExpandError::Invalid => {
                format!("invalid variable reference: expected ${{NAME}} or $NAME ({literal_hint})")
            }
            ExpandError::ValueTooLarge => format!(
                "value grows beyond {} MiB through variable expansion",
                MAX_EXPANDED_VALUE >> 20
            ),
            ExpandError::TotalTooLarge => format!(
                "variable expansion inserts more than {} MiB in this file",
                MAX_EXPANSION_TOTAL >> 20
            ),
        }
    }
}

/// Collects entries in file order, keeping the last occurrence of a key, and
/// answers expansion look-ups ("defined earlier in the same file").
#[derive(Default)]
pub(crate) struct EntriesBuilder {
    entries: Vec<Option<SourceEntry>>,
    index: HashMap<String, usize>,
    expanded_total: usize,
}

impl EntriesBuilder {
    /// The entry defined so far for `key` (its latest occurrence).
    pub(crate) fn get(&self, key: &str) -> Option<&SourceEntry> {
        let i = *self.index.get(key)?;
        self.entries.get(i)?.as_ref()
    }

    /// Adds an entry; an earlier entry with the same key is dropped.
    pub(crate) fn push(&mut self, entry: SourceEntry) {
        let i = self.entries.len();
        let previous = self.index.insert(entry.key.clone(), i);
        if let Some(slot) = previous.and_then(|old| self.entries.get_mut(old)) {
            *slot = None;
        }
        self.entries.push(Some(entry));
    }

    /// Appends the value of `name` to `out` for an expansion, enforcing the
    /// size bounds.
    pub(crate) fn expand_into(&mut self, name: &str, out: &mut String) -> Result<(), ExpandError> {
        let i = *self
            .index
            .get(name)
            .ok_or_else(|| ExpandError::Undefined(name.to_owned()))?;
        let value = self
            .entries
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| ExpandError::Undefined(name.to_owned()))?
            .value
            .expose();
        if out.len().saturating_add(value.len()) > MAX_EXPANDED_VALUE {
            return Err(ExpandError::ValueTooLarge);
        }
        self.expanded_total = self.expanded_total.saturating_add(value.len());
        if self.expanded_total > MAX_EXPANSION_TOTAL {
            return Err(ExpandError::TotalTooLarge);
        }
        out.push_str(value);
        Ok(())
    }

    /// Expands every `$NAME` / `${NAME}` in an already decoded value (YAML,
    /// where the format has no escape for `$`). On error, returns the byte
    /// offset of the offending `$` in `text`.
    pub(crate) fn expand_text(&mut self, text: &str) -> Result<String, (usize, ExpandError)> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let offset = text.len() - rest.len() + i;
            let after = &rest[i + 1..];
            match scan_reference(after) {
                Reference::Literal => {
                    out.push('$');
                    rest = after;
                }
                Reference::Var { name, len } => {
                    self.expand_into(name, &mut out).map_err(|e| (offset, e))?;
                    rest = &after[len..];
                }
                Reference::Invalid => return Err((offset, ExpandError::Invalid)),
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The entries in file order.
    pub(crate) fn finish(self) -> ParsedFile {
        ParsedFile {
            entries: self.entries.into_iter().flatten().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_path() {
        let cases = [
            (".env", Some(SourceFormat::Env)),
            ("/etc/app/.env", Some(SourceFormat::Env)),
            ("prod.env", Some(SourceFormat::Env)),
            ("/etc/app/PROD.ENV", Some(SourceFormat::Env)),
            (".env.production", Some(SourceFormat::Env)),
            (".env.local", Some(SourceFormat::Env)),
            ("secrets.yaml", Some(SourceFormat::Yaml)),
            ("/x/secrets.yml", Some(SourceFormat::Yaml)),
            ("S.YAML", Some(SourceFormat::Yaml)),
            (".env.yaml", Some(SourceFormat::Yaml)),
            (".envrc", None),
            ("env", None),
            ("prod.env.bak", None),
            ("secrets.json", None),
            ("yaml", None),
            ("/", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(SourceFormat::from_path(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn invalid_utf8_points_at_first_bad_byte() {
        let cases: &[(&[u8], u32, u32)] = &[
            (b"\xff", 1, 1),
            (b"A=\xff", 1, 3),
            (b"A=1\nB=\xc3\xa9\xc3", 2, 4),
            (b"\xef\xbb\xbfA=\xfe", 1, 3),
            (b"A: |\n  ok\n  \xe2\x82", 3, 3),
        ];
        for (bytes, line, column) in cases {
            for format in [SourceFormat::Env, SourceFormat::Yaml] {
                let e = parse(bytes, format, false).unwrap_err();
                assert_eq!((e.line, e.column), (*line, *column), "{bytes:?}: {e}");
                assert!(e.message.contains("UTF-8"), "{e}");
                assert_eq!(e.key, None);
            }
        }
    }

    #[test]
    fn nul_bytes_are_rejected() {
        for format in [SourceFormat::Env, SourceFormat::Yaml] {
            let e = parse(b"A=1\nB=x\0y", format, false).unwrap_err();
            assert_eq!((e.line, e.column), (2, 4), "{e}");
            assert!(e.message.contains("NUL"), "{e}");
            let e = parse(b"\xef\xbb\xbf\0", format, false).unwrap_err();
            assert_eq!((e.line, e.column), (1, 1), "{e}");
        }
        assert!(parse_env("A=\0", false).is_err());
        assert!(parse_yaml("A: \0", false).is_err());
    }

    #[test]
    fn bom_is_stripped_once() {
        let f = parse(b"\xef\xbb\xbfA=1\n", SourceFormat::Env, false).unwrap();
        assert_eq!(f.entries[0].key, "A");
        let f = parse(b"\xef\xbb\xbfA: 1\n", SourceFormat::Yaml, false).unwrap();
        assert_eq!((f.entries[0].key.as_str(), f.entries[0].column), ("A", 1));
        // A second BOM is content: some loaders trim it as whitespace,
        // others keep it in the key, so it is refused with its position.
        let e = parse("\u{feff}\u{feff}A=1".as_bytes(), SourceFormat::Env, false).unwrap_err();
        assert_eq!((e.line, e.column), (1, 1), "{e}");
    }

    #[test]
    fn dispatch_and_get() {
        let f = parse(b"A=1\nB=2", SourceFormat::Env, false).unwrap();
        assert_eq!(f.get("B").map(|e| e.value.expose()), Some("2"));
        assert!(f.get("C").is_none());
        let f = parse(
            b"A: {value: x, metadata: {o: p}}",
            SourceFormat::Yaml,
            false,
        )
        .unwrap();
        let a = f.get("A").unwrap();
        assert_eq!(a.metadata.get("o").map(String::as_str), Some("p"));
        // The same text means different things per format.
        assert!(parse(b"A: 1", SourceFormat::Env, false).is_err());
        assert!(parse(b"A=1", SourceFormat::Yaml, false).is_err());
    }

    #[test]
    fn references() {
        use Reference::*;
        let cases = [
            ("A", Var { name: "A", len: 1 }),
            (
                "A_1.b",
                Var {
                    name: "A_1",
                    len: 3,
                },
            ),
            ("_x y", Var { name: "_x", len: 2 }),
            ("{A}", Var { name: "A", len: 3 }),
            (
                "{a.b-c}x",
                Var {
                    name: "a.b-c",
                    len: 7,
                },
            ),
            ("{A", Invalid),
            ("{}", Invalid),
            ("{1}", Invalid),
            ("{A B}", Invalid),
            ("{A:-x}", Invalid),
            ("", Literal),
            (" ", Literal),
            ("1", Literal),
            ("$", Literal),
            ("é", Literal),
        ];
        for (after, want) in cases {
            assert_eq!(scan_reference(after), want, "{after:?}");
        }
    }

    #[test]
    fn line_index_positions() {
        let text = "ab\nüé\n\nx";
        let idx = LineIndex::new(text);
        for offset in 0..=text.len() + 2 {
            let clamped = offset.min(text.len());
            if text.is_char_boundary(clamped) {
                assert_eq!(idx.position(offset), position_in(text, offset), "{offset}");
            }
        }
        assert_eq!(idx.position(5), (2, 2));
        assert_eq!(idx.position(4), (2, 1)); // inside 'ü' -> its start
        assert_eq!(idx.line(text.len()), 4);
    }

    use crate::test_rng::{Rng, cases};

    /// Checks the invariants every result must satisfy.
    fn check_result(input: &[u8], r: &Result<ParsedFile, ParseError>) {
        let lines = u32::try_from(input.iter().filter(|&&b| b == b'\n' || b == b'\r').count() + 1)
            .unwrap_or(u32::MAX);
        match r {
            Ok(f) => {
                let mut keys = std::collections::HashSet::new();
                let mut last_line = 0;
                for e in &f.entries {
                    assert!(e.line >= 1 && e.column >= 1, "{input:?}");
                    assert!(
                        e.line <= e.end_line && e.end_line <= lines,
                        "{input:?}: {e:?}"
                    );
                    assert!(e.line >= last_line, "file order: {input:?}");
                    last_line = e.line;
                    assert!(keys.insert(e.key.clone()), "duplicate kept: {input:?}");
                }
            }
            Err(e) => {
                assert!(e.line >= 1 && e.column >= 1, "{input:?}: {e}");
                assert!(e.line <= lines, "{input:?}: {e}");
                assert!(!e.message.is_empty());
            }
        }
    }

    const SEEDS: &[&str] = &[
        "A=1\nexport B = \"x\\ny\" # c\nC='q'\n# c\nD=${A}$B\n",
        "A=\"multi\nline\"\r\nB=x #c\r\n",
        "A: 1\nB: {value: \"x\", metadata: {o: p}}\nC: |\n  block\n  text\nD: >-\n  f\n",
        "A:\n  value: 'x'\n  metadata:\n    a: b\n{X: [1, {y: z}]}\n? k\n: v\n",
        "A: &a x\nB: *a\n--- !!map\n%YAML 1.2\n...\n",
    ];
    const SPICE: &[&[u8]] = &[
        b"\"",
        b"'",
        b"\\",
        b"$",
        b"${",
        b"}",
        b"{",
        b"[",
        b"]",
        b":",
        b": ",
        b"#",
        b" #",
        b"\n",
        b"\r\n",
        b"\r",
        b"\t",
        b"=",
        b"export ",
        b"-",
        b"- ",
        b"? ",
        b"|",
        b">",
        b"&a",
        b"*a",
        b"!",
        b"!!str ",
        b"---\n",
        b"...\n",
        b"%",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xc3",
        b"\0",
        b"~",
        b",",
        b"\xe2\x82\xac",
        b"    ",
    ];

    #[test]
    fn fuzz_parsers_never_panic_on_random_input() {
        let mut rng = Rng::seeded(0x2545_f491_4f6c_dd1d);
        let run = |input: &[u8]| {
            for format in [SourceFormat::Env, SourceFormat::Yaml] {
                for expand in [false, true] {
                    let r = parse(input, format, expand);
                    check_result(input, &r);
                }
            }
        };
        // Pure random bytes, with a bias towards ASCII and syntax characters.
        for _ in 0..cases(20_000) {
            let len = rng.below(64);
            let input: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => rng.next() as u8,
                    1 => b" \n\t\"'\\$={}[]:#-|>&*!?,"[rng.below(22)],
                    _ => b'A' + rng.below(26) as u8,
                })
                .collect();
            run(&input);
        }
        // Mutations of realistic files.
        for _ in 0..cases(20_000) {
            let mut input = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                match rng.below(3) {
                    0 => {
                        let spice = SPICE[rng.below(SPICE.len())];
                        input.splice(at..at, spice.iter().copied());
                    }
                    1 if at < input.len() => {
                        let end = (at + 1 + rng.below(8)).min(input.len());
                        input.drain(at..end);
                    }
                    _ if at < input.len() => input[at] = rng.next() as u8,
                    _ => {}
                }
            }
            run(&input);
        }
    }

    #[test]
    fn pathological_inputs_finish() {
        let big = 1 << 20;
        let inputs: Vec<Vec<u8>> = vec![
            vec![b'"'; big],
            vec![b'\''; big],
            vec![b'['; big],
            vec![b'{'; big],
            vec![b'\n'; big],
            vec![b'='; big],
            vec![b'$'; big],
            vec![b'#'; big],
            vec![b' '; big],
            b"A=\"".iter().chain(&vec![b'\\'; big]).copied().collect(),
            b"A="
                .iter()
                .chain(b"${".repeat(big / 2).iter())
                .copied()
                .collect(),
            b"A: "
                .iter()
                .chain(b"- ".repeat(big / 2).iter())
                .copied()
                .collect(),
            "k: v\n".repeat(big / 5).into_bytes(),
            (0..20_000)
                .flat_map(|i| format!("K{i}=${{K{}}}x\n", i.max(1) - 1).into_bytes())
                .collect(),
            "A: &a x\n".repeat(1000).into_bytes(),
            "a".repeat(big).into_bytes(),
        ];
        for input in inputs {
            let start = std::time::Instant::now();
            for format in [SourceFormat::Env, SourceFormat::Yaml] {
                for expand in [false, true] {
                    let r = parse(&input, format, expand);
                    check_result(&input, &r);
                }
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "slow on input starting {:?}",
                &input[..input.len().min(20)]
            );
        }
    }
}
