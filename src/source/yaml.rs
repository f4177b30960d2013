//! YAML secret-file parser (SPEC §4).
//!
//! Reads the event stream of `granit-parser` (re-exported by `serde-saphyr`)
//! instead of deserializing into a tree, because the event stream keeps what
//! a generic YAML value loses: the text of a scalar as written (`PORT: 0080`
//! is `"0080"`, `ON: yes` is `"yes"`, `X: 1.50` is `"1.50"`) and the line and
//! column of every node. Only the three fixed levels of the accepted shape are
//! ever open at once, so nothing recurses on input depth.
//!
//! Accepted shape: one document whose top level is a mapping (an empty or
//! comment-only document, or a lone `~`, has no entries). Each entry is
//!
//! * `KEY: scalar`: plain, quoted or block (`|`, `>`) scalar, taken as YAML
//!   decodes its text, with no type resolution; or
//! * `KEY: {value: scalar, metadata: {name: scalar, ...}}` (block or flow
//!   style): `value` is required, `metadata` optional, any other field is an
//!   error.
//!
//! Rejected, each with line, column and (when known) key:
//!
//! * null values (`KEY:`, `KEY: ~`, `KEY: null`, `!!null`): AWS has no null
//!   secret, and an empty `KEY:` is more often an unfinished edit than a wish
//!   for an empty secret; write `KEY: ""` for that;
//! * sequences, nested mappings other than the form above, non-scalar or
//!   empty keys, tags other than `!!str`, `!!int`, `!!float`, `!!bool` (and
//!   `!!map` on mappings);
//! * aliases (`*name`): a secret file has no use for them, and refusing them
//!   rules out "billion laughs" expansion. Anchors alone are harmless and
//!   ignored;
//! * a repeated key. Unlike `.env` (where "last one wins" is what every
//!   dotenv tool does), YAML requires unique keys and most YAML tools reject
//!   or warn on duplicates, so a duplicate is almost surely an editing mistake
//!   and silently picking one of two secrets is the less safe choice;
//! * more than one document (`---` followed by another document).
//!
//! With `expand`, `${NAME}` / `$NAME` in plain and double-quoted `value`s are
//! replaced by the value of a key defined earlier in the file (an undefined
//! name is an error); single-quoted and block scalars are never expanded,
//! which is how to write a literal `$` (YAML has no `\$` escape). Keys and
//! metadata are never expanded.
//!
//! Error messages come from fixed text: syntax errors reported by the YAML
//! scanner are reduced to their kind, and the one kind that quotes input
//! (an unexpected character) is reported without the character.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_saphyr::granit_parser::{
    ErrorKind, Event, Marker, Options, Parser, ScalarStyle, ScanError, Span, StrInput,
    StructureStyle, Tag,
};

use super::{EntriesBuilder, ParseError, ParsedFile, SourceEntry, to_u32};
use crate::secret::SecretValue;

/// Nesting limit handed to the YAML scanner. The accepted shape is 3 levels
/// deep and anything deeper is rejected at its first unexpected collection;
/// this bounds the scanner's own bookkeeping on hostile input.
const MAX_DEPTH: usize = 64;

const ALIAS_MESSAGE: &str = "YAML aliases are not supported in secret files";
const LITERAL_DOLLAR_HINT: &str = "single-quote the value for a literal '$'";
const NULL_MESSAGE: &str = "null value: AWS has no null secret (write \"\" for an empty string)";
const TAG_MESSAGE: &str =
    "unsupported YAML tag (only !!str, !!int, !!float and !!bool are allowed)";

/// Parses YAML text that [`super::parse_yaml`] has already stripped of a BOM
/// and checked for NUL.
pub(crate) fn parse(text: &str, expand: bool) -> Result<ParsedFile, ParseError> {
    let mut options = Options::default();
    options.emit_comments = false;
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    let mut reader = Reader {
        parser: Parser::new_from_str_with_options(text, options),
        lines: split_lines(text),
        key: None,
        expand,
        out: EntriesBuilder::default(),
    };
    reader.document()?;
    Ok(reader.out.finish())
}

/// Lines as the YAML scanner counts them (`\r\n`, `\n` and a lone `\r` all
/// end a line), for trimming blank lines off an entry's end.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    lines.push(&text[start..]);
    lines
}

/// The events this reader cares about, decoupled from the parser's
/// non-exhaustive event type.
enum Ev<'a> {
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
    Alias,
    Scalar(Cow<'a, str>, ScalarStyle, Option<Cow<'a, Tag>>),
    SequenceStart,
    SequenceEnd,
    MappingStart(StructureStyle, Option<Cow<'a, Tag>>),
    MappingEnd,
}

/// How a scalar's tag and text classify it.
enum ScalarKind {
    Text,
    Null,
    BadTag,
}

fn classify(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> ScalarKind {
    match tag {
        None => {
            if style == ScalarStyle::Plain && matches!(text, "" | "~" | "null" | "Null" | "NULL") {
                ScalarKind::Null
            } else {
                ScalarKind::Text
            }
        }
        Some(tag) => match tag.core_suffix() {
            Some("str" | "int" | "float" | "bool") => ScalarKind::Text,
            Some("null") => ScalarKind::Null,
            _ => ScalarKind::BadTag,
        },
    }
}

fn position(m: &Marker) -> (u32, u32) {
    (to_u32(m.line()), to_u32(m.col().saturating_add(1)))
}

/// Message for a scanner error, without any input text.
fn scan_message(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::UnknownAnchor => ALIAS_MESSAGE.to_owned(),
        ErrorKind::RecursionLimitExceeded => {
            format!("YAML nesting deeper than {MAX_DEPTH} levels")
        }
        // These carry text from the input (or from elsewhere) in their
        // Display: report only the category.
        ErrorKind::UnexpectedCharacter { .. } => "invalid YAML: unexpected character".to_owned(),
        ErrorKind::Custom(_) | ErrorKind::InputIo { .. } | ErrorKind::InputDecoding { .. } => {
            "invalid YAML".to_owned()
        }
        other => {
            let text = other.to_string();
            if text.is_empty() {
                "invalid YAML".to_owned()
            } else {
                format!("invalid YAML: {text}")
            }
        }
    }
}

/// Walks the event stream of one YAML text, checking the accepted shape.
struct Reader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    lines: Vec<&'a str>,
    /// The top-level key being read, for error messages.
    key: Option<String>,
    expand: bool,
    out: EntriesBuilder,
}

impl<'a> Reader<'a> {
    fn error_at(&self, m: &Marker, message: impl Into<String>) -> ParseError {
        let (line, column) = position(m);
        ParseError::new(line, column, self.key.as_deref(), message)
    }

    fn scan_error(&self, e: &ScanError) -> ParseError {
        self.error_at(e.marker(), scan_message(e.kind()))
    }

    /// The next event that matters, skipping comments and anchor metadata.
    fn next(&mut self) -> Result<(Ev<'a>, Span), ParseError> {
        loop {
            let (event, span) = match self.parser.next_event() {
                Some(Ok(pair)) => pair,
                Some(Err(e)) => return Err(self.scan_error(&e)),
                None => {
                    return Err(ParseError::new(
                        to_u32(self.lines.len()),
                        1,
                        self.key.as_deref(),
                        "invalid YAML: unexpected end of input",
                    ));
                }
            };
            let ev = match event {
                Event::StreamStart => Ev::StreamStart,
                Event::StreamEnd => Ev::StreamEnd,
                Event::DocumentStart(..) => Ev::DocumentStart,
                Event::DocumentEnd => Ev::DocumentEnd,
                Event::Alias(_) | Event::UnresolvedAlias(_) => Ev::Alias,
                Event::Scalar(text, style, _anchor, tag) => Ev::Scalar(text, style, tag),
                Event::SequenceStart(..) => Ev::SequenceStart,
                Event::SequenceEnd => Ev::SequenceEnd,
                Event::MappingStart(style, _anchor, tag) => Ev::MappingStart(style, tag),
                Event::MappingEnd => Ev::MappingEnd,
                // Comments, anchor metadata and any future presentation
                // event carry no data.
                other if !other.is_node() => continue,
                _ => return Err(self.error_at(&span.start, "unsupported YAML construct")),
            };
            return Ok((ev, span));
        }
    }

    /// Error for an event that the parser's grammar should not produce here.
    fn unexpected(&self, span: &Span) -> ParseError {
        self.error_at(&span.start, "invalid YAML: unexpected structure")
    }

    fn document(&mut self) -> Result<(), ParseError> {
        let (ev, span) = self.next()?;
        if !matches!(ev, Ev::StreamStart) {
            return Err(self.unexpected(&span));
        }
        let (ev, span) = self.next()?;
        match ev {
            Ev::StreamEnd => return Ok(()),
            Ev::DocumentStart => {}
            _ => return Err(self.unexpected(&span)),
        }
        let (ev, span) = self.next()?;
        match ev {
            Ev::MappingStart(_, tag) => {
                self.check_mapping_tag(tag.as_deref(), &span)?;
                self.top_mapping()?;
            }
            Ev::Scalar(text, style, tag)
                if matches!(classify(&text, style, tag.as_deref()), ScalarKind::Null) => {}
            Ev::Alias => return Err(self.error_at(&span.start, ALIAS_MESSAGE)),
            _ => {
                return Err(self.error_at(
                    &span.start,
                    "the top level of a secret file must be a mapping of KEY: value",
                ));
            }
        }
        let (ev, span) = self.next()?;
        if !matches!(ev, Ev::DocumentEnd) {
            return Err(self.unexpected(&span));
        }
        let (ev, span) = self.next()?;
        match ev {
            Ev::StreamEnd => Ok(()),
            Ev::DocumentStart => Err(self.error_at(
                &span.start,
                "multiple YAML documents are not supported in secret files",
            )),
            _ => Err(self.unexpected(&span)),
        }
    }

    fn check_mapping_tag(&self, tag: Option<&Tag>, span: &Span) -> Result<(), ParseError> {
        match tag {
            None => Ok(()),
            Some(t) if t.is_yaml_core_schema_tag("map") => Ok(()),
            Some(_) => Err(self.error_at(
                span.tag_start.as_ref().unwrap_or(&span.start),
                "unsupported YAML tag on a mapping (only !!map is allowed)",
            )),
        }
    }

    /// A key or field name: a non-null, non-empty string.
    fn name(
        &self,
        text: Cow<'a, str>,
        style: ScalarStyle,
        tag: Option<&Tag>,
        span: &Span,
        what: &str,
    ) -> Result<String, ParseError> {
        match classify(&text, style, tag) {
            ScalarKind::Text if !text.is_empty() => Ok(text.into_owned()),
            ScalarKind::Text | ScalarKind::Null => {
                Err(self.error_at(&span.start, format!("empty or null {what}")))
            }
            ScalarKind::BadTag => {
                Err(self.error_at(span.tag_start.as_ref().unwrap_or(&span.start), TAG_MESSAGE))
            }
        }
    }

    /// A scalar value: text, with `expand` applied if asked and allowed.
    fn value(
        &mut self,
        text: Cow<'a, str>,
        style: ScalarStyle,
        tag: Option<&Tag>,
        span: &Span,
        expand: bool,
    ) -> Result<String, ParseError> {
        match classify(&text, style, tag) {
            ScalarKind::Text => {}
            ScalarKind::Null => return Err(self.error_at(&span.start, NULL_MESSAGE)),
            ScalarKind::BadTag => {
                return Err(
                    self.error_at(span.tag_start.as_ref().unwrap_or(&span.start), TAG_MESSAGE)
                );
            }
        }
        if expand && matches!(style, ScalarStyle::Plain | ScalarStyle::DoubleQuoted) {
            self.out
                .expand_text(&text)
                .map_err(|(_, e)| self.error_at(&span.start, e.message(LITERAL_DOLLAR_HINT)))
        } else {
            Ok(text.into_owned())
        }
    }

    fn top_mapping(&mut self) -> Result<(), ParseError> {
        loop {
            self.key = None;
            let (ev, span) = self.next()?;
            let (text, style, tag) = match ev {
                Ev::MappingEnd => return Ok(()),
                Ev::Scalar(text, style, tag) => (text, style, tag),
                Ev::Alias => return Err(self.error_at(&span.start, ALIAS_MESSAGE)),
                Ev::SequenceStart | Ev::MappingStart(..) => {
                    return Err(self.error_at(
                        &span.start,
                        "keys must be strings, not sequences or mappings",
                    ));
                }
                _ => return Err(self.unexpected(&span)),
            };
            let key = self.name(text, style, tag.as_deref(), &span, "key")?;
            self.key = Some(key.clone());
            if let Some(first) = self.out.get(&key) {
                let message = format!(
                    "duplicate key (first defined at line {}); YAML keys must be unique",
                    first.line
                );
                return Err(self.error_at(&span.start, message));
            }
            let (value, metadata, end) = self.entry_value()?;
            let (line, column) = position(&span.start);
            let end_line = self.end_line(line, span.start.col(), &end);
            self.out.push(SourceEntry {
                key,
                value: SecretValue::new(value),
                metadata,
                line,
                column,
                end_line,
            });
        }
    }

    /// Last line of an entry that starts on `start_line` with its key at
    /// 0-based column `key_col`, whose last node ends at `end`: the line of
    /// `end`, minus trailing blank lines (a block scalar's span includes
    /// them) and comments no deeper than the key (which cannot belong to the
    /// value).
    fn end_line(&self, start_line: u32, key_col: usize, end: &Marker) -> u32 {
        let mut line = to_u32(end.line());
        if end.col() == 0 && line > start_line {
            line -= 1;
        }
        while line > start_line {
            let idx = usize::try_from(line - 1).unwrap_or(usize::MAX);
            let Some(text) = self.lines.get(idx) else {
                line -= 1;
                continue;
            };
            let trimmed = text.trim_start_matches([' ', '\t']);
            let indent = text.len() - trimmed.len();
            if trimmed.is_empty() || (trimmed.starts_with('#') && indent <= key_col) {
                line -= 1;
            } else {
                break;
            }
        }
        line
    }

    /// The value node of a top-level entry: its decoded value, its metadata
    /// and where it ends.
    fn entry_value(&mut self) -> Result<(String, BTreeMap<String, String>, Marker), ParseError> {
        let (ev, span) = self.next()?;
        match ev {
            Ev::Scalar(text, style, tag) => {
                let expand = self.expand;
                let value = self.value(text, style, tag.as_deref(), &span, expand)?;
                Ok((value, BTreeMap::new(), span.end))
            }
            Ev::MappingStart(style, tag) => {
                self.check_mapping_tag(tag.as_deref(), &span)?;
                self.secret_mapping(&span, style)
            }
            Ev::SequenceStart => Err(self.error_at(
                &span.start,
                "a value must be a scalar or a {value: ..., metadata: {...}} mapping, not a sequence",
            )),
            Ev::Alias => Err(self.error_at(&span.start, ALIAS_MESSAGE)),
            _ => Err(self.unexpected(&span)),
        }
    }

    /// `{value: ..., metadata: {...}}` after its `MappingStart` at `start`.
    fn secret_mapping(
        &mut self,
        start: &Span,
        style: StructureStyle,
    ) -> Result<(String, BTreeMap<String, String>, Marker), ParseError> {
        let mut value: Option<String> = None;
        let mut metadata: Option<BTreeMap<String, String>> = None;
        let mut end = start.end;
        loop {
            let (ev, span) = self.next()?;
            let (text, text_style, tag) = match ev {
                Ev::MappingEnd => {
                    if style == StructureStyle::Flow {
                        end = span.end;
                    }
                    break;
                }
                Ev::Scalar(text, text_style, tag) => (text, text_style, tag),
                Ev::Alias => return Err(self.error_at(&span.start, ALIAS_MESSAGE)),
                _ => {
                    return Err(self.error_at(
                        &span.start,
                        "fields of a secret mapping must be 'value' or 'metadata'",
                    ));
                }
            };
            // Field names are not echoed: `KEY: {s3cret}` is a mapping whose
            // only field name is the (misplaced) value.
            let field = self.name(text, text_style, tag.as_deref(), &span, "field name")?;
            match field.as_str() {
                "value" => {
                    if value.is_some() {
                        return Err(self.error_at(&span.start, "duplicate 'value' field"));
                    }
                    let (ev, vspan) = self.next()?;
                    match ev {
                        Ev::Scalar(text, s, tag) => {
                            let expand = self.expand;
                            value = Some(self.value(text, s, tag.as_deref(), &vspan, expand)?);
                            end = vspan.end;
                        }
                        Ev::Alias => return Err(self.error_at(&vspan.start, ALIAS_MESSAGE)),
                        _ => {
                            return Err(self.error_at(
                                &vspan.start,
                                "'value' must be a scalar, not a sequence or mapping",
                            ));
                        }
                    }
                }
                "metadata" => {
                    if metadata.is_some() {
                        return Err(self.error_at(&span.start, "duplicate 'metadata' field"));
                    }
                    let (map, map_end) = self.metadata()?;
                    metadata = Some(map);
                    end = map_end;
                }
                _ => {
                    return Err(self.error_at(
                        &span.start,
                        "unknown field in a secret mapping (allowed: value, metadata)",
                    ));
                }
            }
        }
        match value {
            Some(value) => Ok((value, metadata.unwrap_or_default(), end)),
            None => Err(self.error_at(
                &start.start,
                "a secret mapping needs a 'value' field (use KEY: {value: ..., metadata: {...}})",
            )),
        }
    }

    /// The mapping after `metadata:`; returns it and where it ends.
    fn metadata(&mut self) -> Result<(BTreeMap<String, String>, Marker), ParseError> {
        let (ev, span) = self.next()?;
        let style = match ev {
            Ev::MappingStart(style, tag) => {
                self.check_mapping_tag(tag.as_deref(), &span)?;
                style
            }
            Ev::Alias => return Err(self.error_at(&span.start, ALIAS_MESSAGE)),
            _ => {
                return Err(self.error_at(
                    &span.start,
                    "'metadata' must be a mapping of names to scalar values",
                ));
            }
        };
        let mut map = BTreeMap::new();
        let mut end = span.end;
        loop {
            let (ev, span) = self.next()?;
            let (text, text_style, tag) = match ev {
                Ev::MappingEnd => {
                    if style == StructureStyle::Flow {
                        end = span.end;
                    }
                    return Ok((map, end));
                }
                Ev::Scalar(text, text_style, tag) => (text, text_style, tag),
                Ev::Alias => return Err(self.error_at(&span.start, ALIAS_MESSAGE)),
                _ => {
                    return Err(self.error_at(
                        &span.start,
                        "metadata names must be strings, not sequences or mappings",
                    ));
                }
            };
            let name = self.name(text, text_style, tag.as_deref(), &span, "metadata name")?;
            if map.contains_key(&name) {
                return Err(self.error_at(&span.start, "duplicate metadata name"));
            }
            let (ev, vspan) = self.next()?;
            let value = match ev {
                Ev::Scalar(text, s, tag) => self.value(text, s, tag.as_deref(), &vspan, false)?,
                Ev::Alias => return Err(self.error_at(&vspan.start, ALIAS_MESSAGE)),
                _ => {
                    return Err(self.error_at(
                        &vspan.start,
                        "metadata values must be scalars, not sequences or mappings",
                    ));
                }
            };
            end = vspan.end;
            map.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_yaml;

    type Meta<'a> = &'a [(&'a str, &'a str)];

    /// Expected outcome of one table case.
    enum Want<'a> {
        /// (key, value, line, column, end_line, metadata) in file order.
        Ok(&'a [(&'a str, &'a str, u32, u32, u32, Meta<'a>)]),
        /// line, column, key, a fragment of the message.
        Err(u32, u32, Option<&'a str>, &'a str),
    }
    use Want::{Err as E, Ok as O};

    const NO: Meta<'static> = &[];

    /// Checks one case; returns a description of the mismatch.
    fn check(input: &str, expand: bool, want: &Want<'_>) -> Result<(), String> {
        match (want, parse_yaml(input, expand)) {
            (Want::Ok(entries), Ok(file)) => {
                let got: Vec<_> = file
                    .entries
                    .iter()
                    .map(|e| {
                        let meta: Vec<(&str, &str)> = e
                            .metadata
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        (
                            e.key.as_str(),
                            e.value.expose(),
                            e.line,
                            e.column,
                            e.end_line,
                            meta,
                        )
                    })
                    .collect();
                let want: Vec<_> = entries
                    .iter()
                    .map(|(k, v, l, c, el, m)| (*k, *v, *l, *c, *el, m.to_vec()))
                    .collect();
                if got != want {
                    return Err(format!(
                        "{input:?} expand={expand}:\n  got  {got:?}\n  want {want:?}"
                    ));
                }
            }
            (Want::Err(line, col, key, frag), Err(e)) => {
                if (e.line, e.column, e.key.as_deref()) != (*line, *col, *key)
                    || !e.message.contains(frag)
                {
                    return Err(format!(
                        "{input:?} expand={expand}:\n  got  {e:?}\n  want {line}:{col} {key:?} {frag:?}"
                    ));
                }
            }
            (Want::Ok(_), Err(e)) => return Err(format!("{input:?}: unexpected error {e}")),
            (Want::Err(..), Ok(f)) => {
                let keys: Vec<_> = f.entries.iter().map(|e| e.key.clone()).collect();
                return Err(format!("{input:?}: expected an error, got keys {keys:?}"));
            }
        }
        Ok(())
    }

    /// Runs a table and reports every failing case at once.
    fn run_table(cases: &[(&str, Want<'_>)], expand: bool) {
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|(input, want)| check(input, expand, want).err())
            .collect();
        assert!(
            failures.is_empty(),
            "{} failing case(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn table() {
        let cases: &[(&str, Want<'_>)] = &[
            ("", O(&[])),
            ("# only a comment\n\n", O(&[])),
            ("---\n", O(&[])),
            ("--- ~\n", O(&[])),
            ("{}", O(&[])),
            ("A: x", O(&[("A", "x", 1, 1, 1, NO)])),
            // scalars are the text written
            (
                "PORT: 0080\nON: yes\nX: 1.50\nY: true\nZ: 0x1F\nH: 1e3\nI: .inf\n",
                O(&[
                    ("PORT", "0080", 1, 1, 1, NO),
                    ("ON", "yes", 2, 1, 2, NO),
                    ("X", "1.50", 3, 1, 3, NO),
                    ("Y", "true", 4, 1, 4, NO),
                    ("Z", "0x1F", 5, 1, 5, NO),
                    ("H", "1e3", 6, 1, 6, NO),
                    ("I", ".inf", 7, 1, 7, NO),
                ]),
            ),
            (
                "A: \"\"\nB: ''",
                O(&[("A", "", 1, 1, 1, NO), ("B", "", 2, 1, 2, NO)]),
            ),
            (
                "A: \"null\"\nB: '~'",
                O(&[("A", "null", 1, 1, 1, NO), ("B", "~", 2, 1, 2, NO)]),
            ),
            (
                "A: !!str\nB: !!str ~",
                O(&[("A", "", 1, 1, 1, NO), ("B", "~", 2, 1, 2, NO)]),
            ),
            (
                "A: !!int 0080\nB: !!bool yes\nC: !!float 1.50\n",
                O(&[
                    ("A", "0080", 1, 1, 1, NO),
                    ("B", "yes", 2, 1, 2, NO),
                    ("C", "1.50", 3, 1, 3, NO),
                ]),
            ),
            (
                "A: \"a\\tb\\n\\u00e9\\\"\"",
                O(&[("A", "a\tb\né\"", 1, 1, 1, NO)]),
            ),
            ("A: 'it''s'", O(&[("A", "it's", 1, 1, 1, NO)])),
            ("A: plain # comment", O(&[("A", "plain", 1, 1, 1, NO)])),
            ("A: a#b", O(&[("A", "a#b", 1, 1, 1, NO)])),
            ("A:   spaced out   ", O(&[("A", "spaced out", 1, 1, 1, NO)])),
            (
                "A: plain\n  continued\nB: 1",
                O(&[
                    ("A", "plain continued", 1, 1, 2, NO),
                    ("B", "1", 3, 1, 3, NO),
                ]),
            ),
            (
                "A: |\n  line1\n  line2\n\n\nB: 1\n",
                O(&[
                    ("A", "line1\nline2\n", 1, 1, 3, NO),
                    ("B", "1", 6, 1, 6, NO),
                ]),
            ),
            ("A: |-\n  x\n  y\n", O(&[("A", "x\ny", 1, 1, 3, NO)])),
            ("A: |+\n  x\n\n", O(&[("A", "x\n\n", 1, 1, 2, NO)])),
            (
                "A: >\n  folded\n  text\n\n  para\n# top comment\nB: 2",
                O(&[
                    ("A", "folded text\npara\n", 1, 1, 5, NO),
                    ("B", "2", 7, 1, 7, NO),
                ]),
            ),
            (
                "A: |\n  # not a comment\n  x\n",
                O(&[("A", "# not a comment\nx\n", 1, 1, 3, NO)]),
            ),
            (
                "CERT: |\n  -----BEGIN-----\n  abc\n  -----END-----\n",
                O(&[("CERT", "-----BEGIN-----\nabc\n-----END-----\n", 1, 1, 4, NO)]),
            ),
            // keys
            (
                "\"db.url\": 1\n'my-key': 2\n? k3\n: 3",
                O(&[
                    ("db.url", "1", 1, 1, 1, NO),
                    ("my-key", "2", 2, 1, 2, NO),
                    ("k3", "3", 3, 3, 4, NO),
                ]),
            ),
            (
                "1: x\ntrue: y",
                O(&[("1", "x", 1, 1, 1, NO), ("true", "y", 2, 1, 2, NO)]),
            ),
            (
                "  A: 1\n  B: 2",
                O(&[("A", "1", 1, 3, 1, NO), ("B", "2", 2, 3, 2, NO)]),
            ),
            (
                "ü: ö\né: 1",
                O(&[("ü", "ö", 1, 1, 1, NO), ("é", "1", 2, 1, 2, NO)]),
            ),
            // flow top level
            (
                "{A: 1, B: \"x\"}",
                O(&[("A", "1", 1, 2, 1, NO), ("B", "x", 1, 8, 1, NO)]),
            ),
            // secret mappings
            (
                "A: {value: \"v\", metadata: {owner: alice, n: 1}}\nB: 2",
                O(&[
                    ("A", "v", 1, 1, 1, &[("n", "1"), ("owner", "alice")]),
                    ("B", "2", 2, 1, 2, NO),
                ]),
            ),
            (
                "A:\n  value: 0080\n  metadata:\n    owner: alice\n    team: pay\n\nB: 2\n",
                O(&[
                    ("A", "0080", 1, 1, 5, &[("owner", "alice"), ("team", "pay")]),
                    ("B", "2", 7, 1, 7, NO),
                ]),
            ),
            (
                "A:\n  metadata: {owner: alice}\n  value: |\n    x\n  # trailing\nB: 2\n",
                // An indented comment inside the entry's block belongs to it.
                O(&[
                    ("A", "x\n", 1, 1, 5, &[("owner", "alice")]),
                    ("B", "2", 6, 1, 6, NO),
                ]),
            ),
            ("A: {value: x}", O(&[("A", "x", 1, 1, 1, NO)])),
            ("A: {value: x, metadata: {}}", O(&[("A", "x", 1, 1, 1, NO)])),
            ("A: !!map {value: x}", O(&[("A", "x", 1, 1, 1, NO)])),
            (
                "A: {value: '', metadata: {o: ''}}",
                O(&[("A", "", 1, 1, 1, &[("o", "")])]),
            ),
            ("A: {\n  value: x\n  }\n", O(&[("A", "x", 1, 1, 3, NO)])),
            // anchors alone are ignored
            ("A: &a x", O(&[("A", "x", 1, 1, 1, NO)])),
            // CRLF, BOM, trailing whitespace, lone CR
            (
                "A: 1\r\nB: |\r\n  x\r\n  y\r\nC: 3\r\n",
                O(&[
                    ("A", "1", 1, 1, 1, NO),
                    ("B", "x\ny\n", 2, 1, 4, NO),
                    ("C", "3", 5, 1, 5, NO),
                ]),
            ),
            ("\u{feff}A: 1", O(&[("A", "1", 1, 1, 1, NO)])),
            (
                "A: 1   \nB: 2\t\n",
                O(&[("A", "1", 1, 1, 1, NO), ("B", "2", 2, 1, 2, NO)]),
            ),
            (
                "A: 1\rB: 2",
                O(&[("A", "1", 1, 1, 1, NO), ("B", "2", 2, 1, 2, NO)]),
            ),
            ("%YAML 1.2\n---\nA: 1\n...\n", O(&[("A", "1", 3, 1, 3, NO)])),
            // $ is literal without expand
            (
                "A: x\nB: $A ${A}",
                O(&[("A", "x", 1, 1, 1, NO), ("B", "$A ${A}", 2, 1, 2, NO)]),
            ),
            // errors: nulls
            ("A:", E(1, 2, Some("A"), "null value")),
            ("A:\nB: 1", E(1, 2, Some("A"), "null value")),
            ("X: 1\nA: ~", E(2, 4, Some("A"), "null value")),
            ("A: null", E(1, 4, Some("A"), "null value")),
            ("A: NULL", E(1, 4, Some("A"), "null value")),
            ("A: !!null x", E(1, 11, Some("A"), "null value")),
            ("A: {value: ~}", E(1, 12, Some("A"), "null value")),
            ("A: {value: }", E(1, 10, Some("A"), "null value")),
            (
                "A: {value: x, metadata: {o: }}",
                E(1, 27, Some("A"), "null value"),
            ),
            // errors: shapes
            ("- a\n- b", E(1, 1, None, "top level")),
            ("just text", E(1, 1, None, "top level")),
            ("'x'", E(1, 1, None, "top level")),
            ("A: [1, 2]", E(1, 4, Some("A"), "not a sequence")),
            ("A:\n  - 1\n", E(2, 3, Some("A"), "not a sequence")),
            (
                "A: {metadata: {o: p}}",
                E(1, 4, Some("A"), "needs a 'value' field"),
            ),
            ("A:\n  nested: x\n", E(2, 3, Some("A"), "unknown field")),
            (
                "A: {value: x, extra: y}",
                E(1, 15, Some("A"), "unknown field"),
            ),
            (
                "A: {value: x, value: y}",
                E(1, 15, Some("A"), "duplicate 'value'"),
            ),
            (
                "A: {value: [x]}",
                E(1, 12, Some("A"), "'value' must be a scalar"),
            ),
            (
                "A: {value: {x: y}}",
                E(1, 12, Some("A"), "'value' must be a scalar"),
            ),
            (
                "A: {value: x, metadata: [a]}",
                E(1, 25, Some("A"), "'metadata' must be a mapping"),
            ),
            (
                "A: {value: x, metadata: ~}",
                E(1, 25, Some("A"), "'metadata' must be a mapping"),
            ),
            (
                "A: {value: x, metadata: {o: [p]}}",
                E(1, 29, Some("A"), "metadata values"),
            ),
            (
                "A: {value: x, metadata: {o: {p: q}}}",
                E(1, 29, Some("A"), "metadata values"),
            ),
            (
                "A: {value: x, metadata: {[o]: p}}",
                E(1, 26, Some("A"), "metadata names"),
            ),
            (
                "A: {value: x, metadata: {o: 1, o: 2}}",
                E(1, 32, Some("A"), "duplicate metadata"),
            ),
            (
                "A: {[v]: x}",
                E(1, 5, Some("A"), "must be 'value' or 'metadata'"),
            ),
            ("? [a]\n: 1", E(1, 3, None, "keys must be strings")),
            ("? {a: 1}\n: 1", E(1, 3, None, "keys must be strings")),
            (": 1", E(1, 1, None, "empty or null key")),
            ("'': 1", E(1, 1, None, "empty or null key")),
            ("~: 1", E(1, 1, None, "empty or null key")),
            // errors: tags
            ("A: !foo x", E(1, 4, Some("A"), "unsupported YAML tag")),
            (
                "A: !!binary aGk=",
                E(1, 4, Some("A"), "unsupported YAML tag"),
            ),
            ("A: ! x", E(1, 4, Some("A"), "unsupported YAML tag")),
            (
                "A: !!timestamp 2001-12-14",
                E(1, 4, Some("A"), "unsupported YAML tag"),
            ),
            (
                "A: !foo {value: x}",
                E(1, 4, Some("A"), "unsupported YAML tag on a mapping"),
            ),
            ("!foo A: 1", E(1, 1, None, "unsupported YAML tag")),
            (
                "!!set {a: 1}",
                E(1, 1, None, "unsupported YAML tag on a mapping"),
            ),
            // errors: aliases
            (
                "A: &a x\nB: *a",
                E(2, 4, Some("B"), "aliases are not supported"),
            ),
            (
                "A: *missing",
                E(1, 4, Some("A"), "aliases are not supported"),
            ),
            (
                "A: &a x\n*a : 1",
                E(2, 1, None, "aliases are not supported"),
            ),
            (
                "A: &a x\nB: {value: *a}",
                E(2, 12, Some("B"), "aliases are not supported"),
            ),
            (
                "base: &b {value: x}\n<<: *b",
                E(2, 5, Some("<<"), "aliases are not supported"),
            ),
            // errors: duplicates
            (
                "A: 1\nB: 2\nA: 3",
                E(3, 1, Some("A"), "duplicate key (first defined at line 1)"),
            ),
            ("{A: 1, A: 2}", E(1, 8, Some("A"), "duplicate key")),
            // errors: documents
            ("A: 1\n---\nB: 2", E(2, 1, None, "multiple YAML documents")),
            ("A: 1\n--- \n", E(2, 1, None, "multiple YAML documents")),
            // errors: syntax, with positions from the scanner
            ("A: \"abc\nB: 1", E(1, 4, Some("A"), "invalid YAML")),
            ("A: [1, 2\n", E(1, 4, Some("A"), "not a sequence")),
            ("A: {value: x\n", E(1, 4, Some("A"), "invalid YAML")),
            // A finished entry is no longer the context of later errors.
            ("A: x: y", E(1, 5, None, "invalid YAML")),
            ("A: 1\n B: 2", E(2, 3, None, "invalid YAML")),
            ("A: \"a\\qb\"", E(1, 4, Some("A"), "invalid YAML")),
            ("A:\n\t- 1", E(2, 2, Some("A"), "invalid YAML")),
            ("A: @x", E(1, 4, Some("A"), "unexpected character")),
            ("A: `x", E(1, 4, Some("A"), "unexpected character")),
        ];
        run_table(cases, false);
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, Want<'_>)] = &[
            (
                "A: x\nB: $A-${A}\nC: \"<$A>\"",
                O(&[
                    ("A", "x", 1, 1, 1, NO),
                    ("B", "x-x", 2, 1, 2, NO),
                    ("C", "<x>", 3, 1, 3, NO),
                ]),
            ),
            (
                "A: x\nB: '$A'\nC: |\n  $A\nD: >\n  ${A}\n",
                O(&[
                    ("A", "x", 1, 1, 1, NO),
                    ("B", "$A", 2, 1, 2, NO),
                    ("C", "$A\n", 3, 1, 4, NO),
                    ("D", "${A}\n", 5, 1, 6, NO),
                ]),
            ),
            (
                "db.url: u\nB: {value: \"${db.url}/x\", metadata: {m: $db}}",
                O(&[
                    ("db.url", "u", 1, 1, 1, NO),
                    ("B", "u/x", 2, 1, 2, &[("m", "$db")]),
                ]),
            ),
            (
                "A: '$Z'\nB: $A",
                O(&[("A", "$Z", 1, 1, 1, NO), ("B", "$Z", 2, 1, 2, NO)]),
            ),
            (
                "A: cost $5 and $",
                O(&[("A", "cost $5 and $", 1, 1, 1, NO)]),
            ),
            ("$A: 1", O(&[("$A", "1", 1, 1, 1, NO)])),
            ("B: $A", E(1, 4, Some("B"), "undefined variable 'A'")),
            ("B: x\n  ${A}", E(1, 4, Some("B"), "undefined variable 'A'")),
            (
                "B: \"${A}\"\nA: 1",
                E(1, 4, Some("B"), "undefined variable 'A'"),
            ),
            (
                "B: {value: $B}",
                E(1, 12, Some("B"), "undefined variable 'B'"),
            ),
            (
                "B: \"${A\"",
                E(1, 4, Some("B"), "invalid variable reference"),
            ),
        ];
        run_table(cases, true);
    }

    #[test]
    fn deep_nesting_errors_without_recursion() {
        for n in [10, 64, 65, 1000, 10_000, 100_000] {
            for input in [
                format!("A: {}", "[".repeat(n)),
                format!("A: {}", "{a: ".repeat(n)),
                "[".repeat(n),
                "{".repeat(n),
                (0..n.min(2000))
                    .map(|i| format!("{}k:\n", " ".repeat(i)))
                    .collect(),
            ] {
                assert!(parse_yaml(&input, false).is_err(), "depth {n}");
            }
        }
    }

    #[test]
    fn billion_laughs_is_rejected() {
        let mut text = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            text.push_str(&format!(
                "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let e = parse_yaml(&text, false).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (1, Some("a")), "{e}");
        let text = "a: &a lol\nb: &b {value: *a}\n";
        let e = parse_yaml(text, false).unwrap_err();
        assert!(e.message.contains("aliases"), "{e}");
    }

    #[test]
    fn errors_never_contain_values() {
        let inputs = [
            "A: \"canary-secret",
            "A: 'canary-secret",
            "A: \"canary\\qsecret\"",
            "A: canary: secret",
            "A: {canary-secret}",
            "A: {canarysecret: x}",
            "A: {value: canary, canary: 1}",
            "A: {value: canary, metadata: {canary}}",
            "A: [canary]",
            "A: canary\n B: canary",
            "A: canary@secret\n\tB",
            "A: @canary",
            "A: `canary",
            "A: !canary x",
            "A: canary\n---\nB: canary",
            "A: |\n  canary\n canary: x",
            "A: \"canary\nB: \"canary",
            "A: [canary, {canary: [canary",
        ];
        for input in inputs {
            for expand in [false, true] {
                let e = parse_yaml(input, expand).unwrap_err();
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("canary"), "{input:?}: {shown}");
            }
        }
        for input in [
            "B: canary${A}",
            "B: \"canary$A\"",
            "B: canary${A",
            "A: canary\nB: ${canary",
        ] {
            let e = parse_yaml(input, true).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("canary"), "{input:?}: {shown}");
        }
    }

    #[test]
    fn value_debug_is_redacted() {
        let f = parse_yaml("A: {value: canary, metadata: {o: p}}", false).unwrap();
        assert!(!format!("{f:?}").contains("canary"));
    }
}
