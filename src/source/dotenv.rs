//! `.env` parser (SPEC §4).
//!
//! The contract: the value pushed is the value the application reads from
//! the same file with the loaders apps use (python-dotenv, Node dotenv,
//! Docker Compose `env_file`, dotenvy). Where they agree we agree; where
//! they disagree we follow the loaders that agree with each other, or, when
//! they split evenly on something that changes a value or which keys exist,
//! refuse the file with `LINE:COL` and a message saying how to write the line
//! so every loader reads it the same way. `tests/dotenv_loaders.rs` checks
//! this against the results of the real loaders (`tests/data/dotenv`), and
//! `docs/config.md` ("Where the loaders disagree") lists every choice.
//!
//! Why not the `dotenvy` crate at run time: `dotenvy` substitutes `$VAR` from
//! the agent's own process environment (SPEC §4 says values never come from
//! there, and the agent's environment may hold credentials), and on success
//! it reports no line numbers, which status, errors and write-back need.
//!
//! Accepted syntax, line by line (lines end in `\n` or `\r\n`):
//!
//! * blank lines and full-line `#` comments (leading blanks allowed).
//!   "Blank" is space, tab, `\v`, `\f`, no-break space and the other Unicode
//!   space separators ([`is_blank`]): all four loaders trim them. A `\r`
//!   before the end of a line is trimmed too; a `\r` followed by more text on
//!   the line (a "lone CR" line break) is an error: python-dotenv and Node
//!   start a new line there, Compose and dotenvy keep it in the value.
//! * `KEY=value` or `export KEY=value`. Blanks around `=` are ignored. A key
//!   is the non-empty text before `=` with no whitespace, quote or `=`; its
//!   charset is checked later, per key, with its position.
//! * A line that is a single word (`KEY`, `export KEY`, optionally with a
//!   `#` comment) defines nothing: python-dotenv lists the key without a
//!   value and sets nothing, the others ignore it. On the last line without
//!   a line break it is an error instead: that is what a file cut off in
//!   the middle of a key looks like, and reading it would drop the keys
//!   that were still to come.
//! * An unquoted value runs to the end of the line, is trimmed of blanks, and
//!   ends early at a `#` preceded by a blank (inline comment); `A= #c` is
//!   empty. A `#` right after `=` (`A=#x`) is an error: python-dotenv and
//!   Compose read `#x`, Node and dotenvy an empty value. Backslashes, quotes
//!   and `$` inside an unquoted value are literal (`A=ab\$cd` is `ab\$cd`,
//!   as python-dotenv and Node read it), unless `expand` is on.
//! * `'single quoted'`: literal text, may span lines; a `'` after an odd
//!   number of backslashes is part of the value and `\'` reads as `'` (as
//!   python-dotenv and Compose read `'it\'s'`); other backslashes are
//!   literal (`'C:\\x'` is `C:\\x`, as all but python-dotenv read it).
//! * `"double quoted"`: escapes `\n` `\r` `\t` `\"` `\\` `\a` `\b` `\f` `\v`
//!   (as python-dotenv, Compose and dotenvy decode them); a backslash before
//!   anything else is kept (`"\d"` is `\d`, as every loader reads it). `\$`
//!   is a `$` (as Compose and dotenvy read it; python-dotenv and Node keep
//!   the backslash: a known split, see `docs/config.md`). May span lines: a literal line
//!   break is part of the value, `\r\n` inside the quotes is read as `\n`.
//! * After a closing quote only blanks and a `#` comment may follow.
//! * With `expand`, `${NAME}` and `$NAME` in unquoted and double-quoted values
//!   are replaced by the value of the key defined earlier in this file; an
//!   undefined name is an error; `\$` is a literal `$`. Single-quoted values
//!   never expand. Without `expand`, `$` is an ordinary character.
//! * A repeated key keeps its last value (python-dotenv, Node and Compose;
//!   dotenvy keeps the first).

use super::{
    EntriesBuilder, ExpandError, LineIndex, ParseError, ParsedFile, Reference, SourceEntry,
    scan_reference,
};
use crate::secret::SecretValue;

/// How to write a literal `$` in a `.env` value, for expansion errors.
const LITERAL_DOLLAR_HINT: &str = "write \\$ or single-quote the value for a literal '$'";

/// Why a lone CR is refused (see the module docs).
const LONE_CR: &str = "carriage return (CR) inside a line: python-dotenv and Node dotenv \
     start a new line there, Docker Compose and dotenvy keep it in the value; save the file \
     with LF or CRLF line endings";

/// Whitespace that python-dotenv, Node dotenv, compose-go and dotenvy all
/// trim around keys and unquoted values (checked against the loaders in
/// `tests/dotenv_loaders.rs`). `\r` is handled separately.
pub(crate) fn is_blank(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{b}' | '\u{c}' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Characters some loaders trim as whitespace and others keep (NEL, the
/// Unicode line and paragraph separators, a BOM inside the file, the ASCII
/// information separators Python counts as whitespace). At the edge of a key
/// or an unquoted value they are an error rather than a guess.
fn is_ambiguous_space(c: char) -> bool {
    (c.is_whitespace() && !is_blank(c) && c != '\r' && c != '\n')
        || matches!(c, '\u{1c}'..='\u{1f}' | '\u{feff}')
}

/// Offset of the quote closing a single-quoted value opened at `open`: the
/// first `'` after an even number (or none) of backslashes (Compose's rule;
/// see [`Parser::single_quoted`]). For write-back, which must find the same
/// end as the parser.
pub(crate) fn single_quote_close(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate().skip(open + 1) {
        match b {
            b'\\' => run += 1,
            b'\'' if run % 2 == 0 => return Some(i),
            _ => run = 0,
        }
    }
    None
}

/// Parses `.env` text that [`super::parse_env`] has already stripped of a BOM
/// and checked for NUL.
pub(crate) fn parse(text: &str, expand: bool) -> Result<ParsedFile, ParseError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        lines: LineIndex::new(text),
        expand,
        out: EntriesBuilder::default(),
    };
    parser.run()?;
    Ok(parser.out.finish())
}

/// Cursor state for one `.env` text. Offsets are byte offsets into `text`,
/// always on char boundaries (they only move by whole chars or past ASCII
/// syntax characters).
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    lines: LineIndex<'a>,
    expand: bool,
    out: EntriesBuilder,
}

impl Parser<'_> {
    fn error(&self, offset: usize, key: Option<&str>, message: impl Into<String>) -> ParseError {
        let (line, column) = self.lines.position(offset);
        ParseError::new(line, column, key, message)
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn char_at(&self, i: usize) -> Option<char> {
        self.text.get(i..)?.chars().next()
    }

    /// Skips blanks ([`is_blank`]).
    fn skip_blanks(&self, mut i: usize) -> usize {
        while let Some(c) = self.char_at(i).filter(|&c| is_blank(c)) {
            i += c.len_utf8();
        }
        i
    }

    /// Offset of the `\n` ending the line that contains `i`, or the end of
    /// the text.
    fn line_end(&self, i: usize) -> usize {
        let i = i.min(self.bytes.len());
        self.bytes[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.bytes.len(), |p| i + p)
    }

    /// Offset of the next line after the line end `eol`.
    fn next_line(&self, eol: usize) -> usize {
        (eol + 1).min(self.bytes.len())
    }

    /// Whether only blanks and `\r` remain on the line from `i`.
    fn rest_blank(&self, i: usize) -> bool {
        let end = self.line_end(i);
        self.text[i.min(end)..end]
            .chars()
            .all(|c| is_blank(c) || c == '\r')
    }

    /// Fails on a lone CR in `from..to` (text outside quotes): a `\r` is
    /// only allowed when nothing but blanks follows it on the line.
    fn check_cr(&self, from: usize, to: usize, key: Option<&str>) -> Result<(), ParseError> {
        if let Some(p) = self.text[from..to].find('\r') {
            if !self.rest_blank(from + p) {
                return Err(self.error(from + p, key, LONE_CR));
            }
        }
        Ok(())
    }

    fn odd_space_error(&self, at: usize, key: Option<&str>, c: char) -> ParseError {
        self.error(
            at,
            key,
            format!(
                "whitespace character U+{:04X} next to a key or value: the dotenv loaders \
                 disagree on whether it is whitespace; remove it or quote the value",
                u32::from(c)
            ),
        )
    }

    /// Reads every line: blank lines and comments are skipped, anything else
    /// must be an entry.
    fn run(&mut self) -> Result<(), ParseError> {
        let mut pos = 0;
        while pos < self.bytes.len() {
            let start = self.skip_blanks(pos);
            let eol = self.line_end(start);
            if self.rest_blank(start) {
                pos = self.next_line(eol);
                continue;
            }
            match self.char_at(start) {
                Some('#') => {
                    self.check_cr(start, eol, None)?;
                    pos = self.next_line(eol);
                }
                Some('\r') => return Err(self.error(start, None, LONE_CR)),
                Some(c) if is_ambiguous_space(c) => {
                    return Err(self.odd_space_error(start, None, c));
                }
                _ => pos = self.entry(start)?,
            }
        }
        Ok(())
    }

    /// End offset (exclusive) of a key starting at `i`.
    fn key_end(&self, i: usize) -> usize {
        let rest = &self.text[i..];
        rest.find(|c: char| c == '=' || c.is_whitespace())
            .map_or(self.text.len(), |p| i + p)
    }

    /// Parses one line (or multi-line entry) whose key starts at `start`;
    /// returns the offset of the next line.
    fn entry(&mut self, start: usize) -> Result<usize, ParseError> {
        let mut key_start = start;
        let mut key_end = self.key_end(start);
        if &self.text[key_start..key_end] == "export" && self.char_at(key_end).is_some_and(is_blank)
        {
            let next = self.skip_blanks(key_end);
            if !self.rest_blank(next) && !matches!(self.byte(next), Some(b'=' | b'#')) {
                key_start = next;
                key_end = self.key_end(next);
            }
        }
        // Key syntax errors name no key: a line that is not KEY=VALUE may be
        // a stray piece of a value (an unquoted multi-line value), so none of
        // its text is echoed.
        if key_start == key_end {
            return Err(self.error(key_start, None, "missing key before '='"));
        }
        if let Some(q) = self.bytes[key_start..key_end]
            .iter()
            .position(|&b| b == b'"' || b == b'\'')
        {
            return Err(self.error(
                key_start + q,
                None,
                "quotes are not allowed in keys (expected KEY=VALUE)",
            ));
        }
        let eq = self.skip_blanks(key_end);
        let eol = self.line_end(eq);
        match self.char_at(eq) {
            Some('=') => {}
            // The last line ends in a word with no line break: what a file
            // cut off while being written looks like, so reading it as "no
            // more keys" could delete secrets. Refused like a bad line.
            _ if eol == self.bytes.len()
                && (self.rest_blank(eq) || self.byte(eq) == Some(b'#')) =>
            {
                return Err(self.error(
                    eq,
                    None,
                    "expected '=' after the key: the file ends in a word without a line break \
                     (cut off while being written?); end the line with a line break if it is \
                     meant to be a key without a value",
                ));
            }
            // A lone word: a key without a value, which no loader sets.
            _ if self.rest_blank(eq) => return Ok(self.next_line(eol)),
            Some('#') => {
                self.check_cr(eq, eol, None)?;
                return Ok(self.next_line(eol));
            }
            Some('\r') => return Err(self.error(eq, None, LONE_CR)),
            Some(c) if is_ambiguous_space(c) => return Err(self.odd_space_error(eq, None, c)),
            _ => {
                return Err(self.error(
                    eq,
                    None,
                    "expected '=' after the key (a line must be KEY=VALUE, a # comment or blank)",
                ));
            }
        }
        let key = &self.text[key_start..key_end];
        let value_start = self.skip_blanks(eq + 1);
        let (value, last) = match self.char_at(value_start) {
            Some('\'') => self.single_quoted(key, value_start)?,
            Some('"') => self.double_quoted(key, value_start)?,
            Some(c) if is_ambiguous_space(c) => {
                return Err(self.odd_space_error(value_start, Some(key), c));
            }
            _ => self.unquoted(key, value_start, value_start == eq + 1)?,
        };
        let (line, column) = self.lines.position(key_start);
        let end_line = self.lines.line(last);
        self.out.push(SourceEntry {
            key: key.to_owned(),
            value: SecretValue::new(value),
            metadata: Default::default(),
            line,
            column,
            end_line,
        });
        Ok(self.next_line(last))
    }

    /// After a closing quote at `close`: allows blanks and a `#` comment up to
    /// the end of the line. Returns the end-of-line offset.
    fn after_closing_quote(&self, key: &str, close: usize) -> Result<usize, ParseError> {
        let i = self.skip_blanks(close + 1);
        let eol = self.line_end(i);
        if self.rest_blank(i) {
            return Ok(eol);
        }
        match self.byte(i) {
            Some(b'#') => {
                self.check_cr(i, eol, Some(key))?;
                Ok(eol)
            }
            Some(b'\r') => Err(self.error(i, Some(key), LONE_CR)),
            _ => Err(self.error(
                i,
                Some(key),
                "unexpected text after the closing quote (only a # comment may follow)",
            )),
        }
    }

    /// Value from `start` to the end of the line; returns it and the
    /// end-of-line offset. `glued` says the value starts right after `=`.
    fn unquoted(
        &mut self,
        key: &str,
        start: usize,
        glued: bool,
    ) -> Result<(String, usize), ParseError> {
        let text = self.text;
        let eol = self.line_end(start);
        let line = &text[start..eol];
        // An inline comment starts at a `#` preceded by a blank, or at the
        // start of the value when blanks separate it from `=`.
        let mut cut = line.len();
        let mut prev_blank = true;
        for (i, c) in line.char_indices() {
            if c == '#' && prev_blank {
                cut = i;
                break;
            }
            prev_blank = is_blank(c);
        }
        if cut == 0 && glued && line.starts_with('#') {
            return Err(self.error(
                start,
                Some(key),
                "value starts with '#' right after '=': python-dotenv and Docker Compose read \
                 it as the value, Node dotenv and dotenvy as a comment (an empty value); quote \
                 the value, or put a blank before a comment",
            ));
        }
        self.check_cr(start + cut, eol, Some(key))?;
        let raw = line[..cut].trim_end_matches(|c: char| is_blank(c) || c == '\r');
        if let Some(p) = raw.find('\r') {
            return Err(self.error(start + p, Some(key), LONE_CR));
        }
        if let Some(c) = raw.chars().next_back().filter(|&c| is_ambiguous_space(c)) {
            return Err(self.odd_space_error(start + raw.len() - c.len_utf8(), Some(key), c));
        }
        if !self.expand {
            return Ok((raw.to_owned(), eol));
        }
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let Some(d) = raw[i..].find(['\\', '$']) else {
                out.push_str(&raw[i..]);
                break;
            };
            out.push_str(&raw[i..i + d]);
            i += d;
            if raw.as_bytes()[i] == b'\\' {
                if raw.as_bytes().get(i + 1) == Some(&b'$') {
                    out.push('$');
                    i += 2;
                } else {
                    out.push('\\');
                    i += 1;
                }
            } else {
                i += 1 + self.dollar(key, start + i, &raw[i + 1..], &mut out)?;
            }
        }
        Ok((out, eol))
    }

    /// Handles a `$` at absolute offset `at`, followed by `after` (the rest of
    /// the value's source text), appending to `out`; returns how many bytes
    /// of `after` the reference used.
    fn dollar(
        &mut self,
        key: &str,
        at: usize,
        after: &str,
        out: &mut String,
    ) -> Result<usize, ParseError> {
        if !self.expand {
            out.push('$');
            return Ok(0);
        }
        match scan_reference(after) {
            Reference::Literal => {
                out.push('$');
                Ok(0)
            }
            Reference::Var { name, len } => {
                self.out
                    .expand_into(name, out)
                    .map_err(|e| self.expand_error(at, key, &e))?;
                Ok(len)
            }
            Reference::Invalid => Err(self.expand_error(at, key, &ExpandError::Invalid)),
        }
    }

    fn expand_error(&self, at: usize, key: &str, e: &ExpandError) -> ParseError {
        self.error(at, Some(key), e.message(LITERAL_DOLLAR_HINT))
    }

    /// `'...'` starting at `open`; returns the value and the end-of-line
    /// offset of the line holding the closing quote.
    fn single_quoted(&self, key: &str, open: usize) -> Result<(String, usize), ParseError> {
        let mut out = String::new();
        let mut i = open + 1;
        loop {
            let Some(d) = self.bytes[i..]
                .iter()
                .position(|&b| matches!(b, b'\'' | b'\\' | b'\r'))
            else {
                return Err(self.error(open, Some(key), "unterminated single-quoted value"));
            };
            out.push_str(&self.text[i..i + d]);
            i += d;
            match (self.bytes[i], self.byte(i + 1)) {
                (b'\'', _) => break,
                (b'\\', _) => {
                    // Compose's rule: a quote after an odd run of
                    // backslashes is escaped and `\'` reads as `'`; an even
                    // run is literal and the quote after it closes.
                    let run = self.bytes[i..].iter().take_while(|&&b| b == b'\\').count();
                    let escapes_quote = run % 2 == 1 && self.byte(i + run) == Some(b'\'');
                    let kept = if escapes_quote { run - 1 } else { run };
                    out.extend(std::iter::repeat_n('\\', kept));
                    i += run;
                    if escapes_quote {
                        out.push('\'');
                        i += 1;
                    }
                }
                (_, Some(b'\n')) => {
                    out.push('\n');
                    i += 2;
                }
                _ => return Err(self.error(i, Some(key), LONE_CR)),
            }
        }
        let eol = self.after_closing_quote(key, i)?;
        Ok((out, eol))
    }

    /// `"..."` starting at `open`; returns the value and the end-of-line
    /// offset of the line holding the closing quote.
    fn double_quoted(&mut self, key: &str, open: usize) -> Result<(String, usize), ParseError> {
        let mut out = String::new();
        let mut i = open + 1;
        loop {
            let Some(d) = self.bytes[i..]
                .iter()
                .position(|&b| matches!(b, b'"' | b'\\' | b'\r' | b'$'))
            else {
                return Err(self.error(open, Some(key), "unterminated double-quoted value"));
            };
            out.push_str(&self.text[i..i + d]);
            i += d;
            match self.bytes[i] {
                b'"' => break,
                b'\\' => {
                    let c = match self.byte(i + 1) {
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'a') => '\u{7}',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'v') => '\u{b}',
                        // As Compose and dotenvy read it (python-dotenv and
                        // Node keep the backslash); see docs/config.md.
                        Some(b'$') => '$',
                        None => {
                            return Err(self.error(
                                open,
                                Some(key),
                                "unterminated double-quoted value",
                            ));
                        }
                        // Every loader keeps a backslash it does not know.
                        Some(_) => {
                            out.push('\\');
                            i += 1;
                            continue;
                        }
                    };
                    out.push(c);
                    i += 2;
                }
                b'\r' => {
                    if self.byte(i + 1) != Some(b'\n') {
                        return Err(self.error(i, Some(key), LONE_CR));
                    }
                    out.push('\n');
                    i += 2;
                }
                _ => {
                    let text = self.text;
                    i += 1 + self.dollar(key, i, &text[i + 1..], &mut out)?;
                }
            }
        }
        let eol = self.after_closing_quote(key, i)?;
        Ok((out, eol))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ParseError, parse_env};

    /// Expected outcome of one table case.
    enum Want<'a> {
        /// (key, value, line, column, end_line) in file order.
        Ok(&'a [(&'a str, &'a str, u32, u32, u32)]),
        /// line, column, key, a fragment of the message.
        Err(u32, u32, Option<&'a str>, &'a str),
    }
    use Want::{Err as E, Ok as O};

    /// Checks one case; returns a description of the mismatch.
    fn check(input: &str, expand: bool, want: &Want<'_>) -> Result<(), String> {
        match (want, parse_env(input, expand)) {
            (Want::Ok(entries), Ok(file)) => {
                let got: Vec<_> = file
                    .entries
                    .iter()
                    .map(|e| {
                        (
                            e.key.as_str(),
                            e.value.expose(),
                            e.line,
                            e.column,
                            e.end_line,
                        )
                    })
                    .collect();
                if file.entries.iter().any(|e| !e.metadata.is_empty()) {
                    return Err(format!("{input:?}: .env entries have no metadata"));
                }
                if got != *entries {
                    return Err(format!(
                        "{input:?} expand={expand}:\n  got  {got:?}\n  want {entries:?}"
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
            ("\n\n", O(&[])),
            ("# only a comment\n   # indented\n\t\n", O(&[])),
            ("A=1", O(&[("A", "1", 1, 1, 1)])),
            ("A=1\nB=2\n", O(&[("A", "1", 1, 1, 1), ("B", "2", 2, 1, 2)])),
            ("A=", O(&[("A", "", 1, 1, 1)])),
            ("A=   ", O(&[("A", "", 1, 1, 1)])),
            ("A=\"\"", O(&[("A", "", 1, 1, 1)])),
            ("A=''", O(&[("A", "", 1, 1, 1)])),
            ("A = 1", O(&[("A", "1", 1, 1, 1)])),
            ("A\t=\t1\t", O(&[("A", "1", 1, 1, 1)])),
            ("  A=1", O(&[("A", "1", 1, 3, 1)])),
            ("A=1   \n", O(&[("A", "1", 1, 1, 1)])),
            ("A=hello world", O(&[("A", "hello world", 1, 1, 1)])),
            ("A=v # comment", O(&[("A", "v", 1, 1, 1)])),
            ("A=v\t# comment", O(&[("A", "v", 1, 1, 1)])),
            ("A=v#not-comment", O(&[("A", "v#not-comment", 1, 1, 1)])),
            ("A=#comment", E(1, 3, Some("A"), "starts with '#'")),
            ("A= # comment", O(&[("A", "", 1, 1, 1)])),
            ("A=a=b=c", O(&[("A", "a=b=c", 1, 1, 1)])),
            ("A=it's", O(&[("A", "it's", 1, 1, 1)])),
            ("A=a\"b", O(&[("A", "a\"b", 1, 1, 1)])),
            ("A=c:\\dir\\n", O(&[("A", "c:\\dir\\n", 1, 1, 1)])),
            ("A=p\\$x", O(&[("A", "p\\$x", 1, 1, 1)])),
            ("A=p$x", O(&[("A", "p$x", 1, 1, 1)])),
            ("A=ünï €", O(&[("A", "ünï €", 1, 1, 1)])),
            // export
            ("export A=1", O(&[("A", "1", 1, 8, 1)])),
            ("export    A=1", O(&[("A", "1", 1, 11, 1)])),
            ("export\tA=1", O(&[("A", "1", 1, 8, 1)])),
            ("  export  A = 1 ", O(&[("A", "1", 1, 11, 1)])),
            ("export=1", O(&[("export", "1", 1, 1, 1)])),
            ("export = 1", O(&[("export", "1", 1, 1, 1)])),
            ("exportA=1", O(&[("exportA", "1", 1, 1, 1)])),
            // keys: charset is checked later
            ("db.url=1", O(&[("db.url", "1", 1, 1, 1)])),
            ("my-key=1", O(&[("my-key", "1", 1, 1, 1)])),
            ("9a$b=1", O(&[("9a$b", "1", 1, 1, 1)])),
            // single quotes
            ("A='x y # z'", O(&[("A", "x y # z", 1, 1, 1)])),
            ("A='$B \\n \"'", O(&[("A", "$B \\n \"", 1, 1, 1)])),
            ("A='x' # c", O(&[("A", "x", 1, 1, 1)])),
            ("A='x'#c", O(&[("A", "x", 1, 1, 1)])),
            (
                "A='l1\nl2'\nB=2",
                O(&[("A", "l1\nl2", 1, 1, 2), ("B", "2", 3, 1, 3)]),
            ),
            // double quotes
            ("A=\"x y # z\"", O(&[("A", "x y # z", 1, 1, 1)])),
            (
                r#"A="a\nb\tc\rd\"e\\f\$g\'h""#,
                O(&[("A", "a\nb\tc\rd\"e\\f$g\\'h", 1, 1, 1)]),
            ),
            ("A=\"it's\"", O(&[("A", "it's", 1, 1, 1)])),
            ("A=  \"  padded  \"  ", O(&[("A", "  padded  ", 1, 1, 1)])),
            ("A=\"x\" # c", O(&[("A", "x", 1, 1, 1)])),
            ("A=\"x\"#c", O(&[("A", "x", 1, 1, 1)])),
            (
                "A=\"line1\nline2\n\"\nB=2\n",
                O(&[("A", "line1\nline2\n", 1, 1, 3), ("B", "2", 4, 1, 4)]),
            ),
            (
                "A=\"-----BEGIN\n# not a comment\nEND-----\" # c\nB=\"\"",
                O(&[
                    ("A", "-----BEGIN\n# not a comment\nEND-----", 1, 1, 3),
                    ("B", "", 4, 1, 4),
                ]),
            ),
            ("A=\"ü\\\"€\"", O(&[("A", "ü\"€", 1, 1, 1)])),
            // CRLF
            (
                "A=1\r\nB=2\r\n",
                O(&[("A", "1", 1, 1, 1), ("B", "2", 2, 1, 2)]),
            ),
            (
                "A=1 # c\r\n\r\n# x\r\nB='q'\r\n",
                O(&[("A", "1", 1, 1, 1), ("B", "q", 4, 1, 4)]),
            ),
            (
                "A=\"l1\r\nl2\"\r\nB=\"x\"\r\n",
                O(&[("A", "l1\nl2", 1, 1, 2), ("B", "x", 3, 1, 3)]),
            ),
            ("A='l1\r\nl2'\r\n", O(&[("A", "l1\nl2", 1, 1, 2)])),
            ("A=\r\n", O(&[("A", "", 1, 1, 1)])),
            // lone CR is not a line break
            ("A=x\ry\n", E(1, 4, Some("A"), "carriage return")),
            ("A=x\r\r\n", O(&[("A", "x", 1, 1, 1)])),
            ("A=x\r", O(&[("A", "x", 1, 1, 1)])),
            ("# c\rA=1\n", E(1, 4, None, "carriage return")),
            ("A=\"x\ry\"", E(1, 5, Some("A"), "carriage return")),
            ("A='x\ry'", E(1, 5, Some("A"), "carriage return")),
            ("A=\"x\"\rB=1", E(1, 6, Some("A"), "carriage return")),
            ("A\rB=1", E(1, 2, None, "carriage return")),
            // BOM
            ("\u{feff}A=1", O(&[("A", "1", 1, 1, 1)])),
            ("\u{feff}  A=1\n", O(&[("A", "1", 1, 3, 1)])),
            // duplicates: last wins, at its own position
            (
                "A=1\nB=2\nA=3\n",
                O(&[("B", "2", 2, 1, 2), ("A", "3", 3, 1, 3)]),
            ),
            ("A=1\nA=\n", O(&[("A", "", 2, 1, 2)])),
            // columns count characters, not bytes
            ("ü=1\n  é=2", O(&[("ü", "1", 1, 1, 1), ("é", "2", 2, 3, 2)])),
            // errors
            // a lone word defines nothing...
            ("A\n", O(&[])),
            ("A\nB=1", O(&[("B", "1", 2, 1, 2)])),
            ("A # c\n", O(&[])),
            ("export A\r\n", O(&[])),
            ("export\n", O(&[])),
            // ... except as a last line without a line break (cut off?)
            ("A", E(1, 2, None, "expected '='")),
            ("B=1\nA", E(2, 2, None, "cut off")),
            ("export A # c", E(1, 10, None, "cut off")),
            ("B=1\nA B=1", E(2, 3, None, "expected '='")),
            ("B=1\njust some text\n", E(2, 6, None, "expected '='")),
            ("=1", E(1, 1, None, "missing key")),
            ("  = 1", E(1, 3, None, "missing key")),
            ("\"A\"=1", E(1, 1, None, "quotes are not allowed")),
            ("A'=1", E(1, 2, None, "quotes are not allowed")),
            ("A='x", E(1, 3, Some("A"), "unterminated single-quoted")),
            (
                "X=1\n\nA = 'x\ny\n",
                E(3, 5, Some("A"), "unterminated single-quoted"),
            ),
            ("A=\"x", E(1, 3, Some("A"), "unterminated double-quoted")),
            ("A=\"x\\", E(1, 3, Some("A"), "unterminated double-quoted")),
            (
                "A=\"x\\\"",
                E(1, 3, Some("A"), "unterminated double-quoted"),
            ),
            (
                "A=\"a\nb\nc",
                E(1, 3, Some("A"), "unterminated double-quoted"),
            ),
            // unknown escapes keep their backslash; \a \b \f \v decode
            ("A=\"x\\qy\"", O(&[("A", "x\\qy", 1, 1, 1)])),
            ("A=\"ü\\x\\d\"", O(&[("A", "ü\\x\\d", 1, 1, 1)])),
            (
                "A=\"\\a\\b\\f\\v\"",
                O(&[("A", "\u{7}\u{8}\u{c}\u{b}", 1, 1, 1)]),
            ),
            (
                "A=\"x\"y",
                E(1, 6, Some("A"), "unexpected text after the closing quote"),
            ),
            (
                "A=\"x\" y",
                E(1, 7, Some("A"), "unexpected text after the closing quote"),
            ),
            (
                "A='it's'",
                E(1, 7, Some("A"), "unexpected text after the closing quote"),
            ),
            (
                "A='x'\"y\"",
                E(1, 6, Some("A"), "unexpected text after the closing quote"),
            ),
            ("\u{feff}A=1\nB='x", E(2, 3, Some("B"), "unterminated")),
        ];
        run_table(cases, false);
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, Want<'_>)] = &[
            ("A=x\nB=$A", O(&[("A", "x", 1, 1, 1), ("B", "x", 2, 1, 2)])),
            (
                "A=x\nB=${A}",
                O(&[("A", "x", 1, 1, 1), ("B", "x", 2, 1, 2)]),
            ),
            (
                "A=x\nB=\"<$A>\"",
                O(&[("A", "x", 1, 1, 1), ("B", "<x>", 2, 1, 2)]),
            ),
            (
                "A=x\nB=\"<${A}>\"",
                O(&[("A", "x", 1, 1, 1), ("B", "<x>", 2, 1, 2)]),
            ),
            (
                "A=x\nB=pre${A}post",
                O(&[("A", "x", 1, 1, 1), ("B", "prexpost", 2, 1, 2)]),
            ),
            (
                "A=x\nB=$A-$A.$A",
                O(&[("A", "x", 1, 1, 1), ("B", "x-x.x", 2, 1, 2)]),
            ),
            (
                "A=x\nB='$A ${A}'",
                O(&[("A", "x", 1, 1, 1), ("B", "$A ${A}", 2, 1, 2)]),
            ),
            (
                "A=x\nB=\\$A",
                O(&[("A", "x", 1, 1, 1), ("B", "$A", 2, 1, 2)]),
            ),
            (
                "A=x\nB=\"\\$A\\${A}\"",
                O(&[("A", "x", 1, 1, 1), ("B", "$A${A}", 2, 1, 2)]),
            ),
            ("B=a$ b$", O(&[("B", "a$ b$", 1, 1, 1)])),
            ("B=$1 $$ $-", O(&[("B", "$1 $$ $-", 1, 1, 1)])),
            ("B=\"cost: $5\"", O(&[("B", "cost: $5", 1, 1, 1)])),
            (
                "db.url=u\nB=${db.url}",
                O(&[("db.url", "u", 1, 1, 1), ("B", "u", 2, 1, 2)]),
            ),
            (
                "my-k=u\nB=${my-k}",
                O(&[("my-k", "u", 1, 1, 1), ("B", "u", 2, 1, 2)]),
            ),
            // the latest earlier definition is used
            (
                "A=1\nB=$A\nA=2\nC=$A",
                O(&[
                    ("B", "1", 2, 1, 2),
                    ("A", "2", 3, 1, 3),
                    ("C", "2", 4, 1, 4),
                ]),
            ),
            // chained: the expanded value is used, not re-expanded text
            (
                "A=x\nB=$A$A\nC=${B}!",
                O(&[
                    ("A", "x", 1, 1, 1),
                    ("B", "xx", 2, 1, 2),
                    ("C", "xx!", 3, 1, 3),
                ]),
            ),
            (
                "A='$Z'\nB=$A",
                O(&[("A", "$Z", 1, 1, 1), ("B", "$Z", 2, 1, 2)]),
            ),
            (
                "A=x # $Z\nB=$A",
                O(&[("A", "x", 1, 1, 1), ("B", "x", 2, 1, 2)]),
            ),
            (
                "A=\"m\nl\"\nB=\"$A\"",
                O(&[("A", "m\nl", 1, 1, 2), ("B", "m\nl", 3, 1, 3)]),
            ),
            // errors
            ("B=$A", E(1, 3, Some("B"), "undefined variable 'A'")),
            ("B=${A}", E(1, 3, Some("B"), "undefined variable 'A'")),
            ("B=x$A", E(1, 4, Some("B"), "undefined variable 'A'")),
            ("B=\"ü $A\"", E(1, 6, Some("B"), "undefined variable 'A'")),
            ("B=$B", E(1, 3, Some("B"), "undefined variable 'B'")),
            ("B=$A\nA=1", E(1, 3, Some("B"), "undefined variable 'A'")),
            (
                "A=1\nB=$A.b",
                O(&[("A", "1", 1, 1, 1), ("B", "1.b", 2, 1, 2)]),
            ),
            (
                "A=1\nB=$A_b",
                E(2, 3, Some("B"), "undefined variable 'A_b'"),
            ),
            ("B=${A", E(1, 3, Some("B"), "invalid variable reference")),
            ("B=${}", E(1, 3, Some("B"), "invalid variable reference")),
            ("B=${1A}", E(1, 3, Some("B"), "invalid variable reference")),
            (
                "B=\"${A:-x}\"",
                E(1, 4, Some("B"), "invalid variable reference"),
            ),
            (
                "B=\"${A\"",
                E(1, 4, Some("B"), "invalid variable reference"),
            ),
        ];
        run_table(cases, true);
    }

    #[test]
    fn without_expand_dollar_is_literal() {
        let f = parse_env("A=x\nB=$A ${A} \"$A\"\nC=\"${A}\\$A\"\nD=${nope", false).unwrap();
        let values: Vec<_> = f.entries.iter().map(|e| e.value.expose()).collect();
        assert_eq!(values, ["x", "$A ${A} \"$A\"", "${A}$A", "${nope"]);
    }

    #[test]
    fn expansion_growth_is_bounded() {
        let mut text = String::from("A0=0123456789abcdef\n");
        for i in 1..40 {
            text.push_str(&format!("A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
        }
        let e = parse_env(&text, true).unwrap_err();
        assert!(e.message.contains("MiB"), "{e}");
        assert_eq!(e.key.as_deref(), Some("A17"));

        // Many values just under the per-value bound hit the file bound.
        let mut text = format!("A={}\n", "x".repeat(1 << 19));
        for i in 0..40 {
            text.push_str(&format!("B{i}=$A\n"));
        }
        let e = parse_env(&text, true).unwrap_err();
        assert!(e.message.contains("in this file"), "{e}");
    }

    #[test]
    fn canary_from_process_environment_never_appears() {
        // A unique name, so no other test or the real environment can clash.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("SECRETSYNC_CANARY_{}_{nanos}", std::process::id());
        // SAFETY: set once, before reading; no other test reads this name and
        // the parser under test never reads the environment at all.
        unsafe { std::env::set_var(&name, "canary-value") };
        for form in [format!("${{{name}}}"), format!("${name}")] {
            for input in [
                format!("A={form}\n"),
                format!("A=\"{form}\"\n"),
                format!("A='{form}'\n"),
                format!("export A = x{form}y # c\n"),
            ] {
                match parse_env(&input, true) {
                    Ok(f) => {
                        // Only the single-quoted form parses with expansion on.
                        assert!(input.contains('\''), "{input}");
                        assert!(!f.entries[0].value.expose().contains("canary"));
                    }
                    Err(e) => {
                        assert!(e.message.contains(&name), "{e}");
                        assert!(!e.to_string().contains("canary-value"), "{e}");
                    }
                }
                let f = parse_env(&input, false).unwrap();
                let v = f.entries[0].value.expose();
                assert!(!v.contains("canary"), "{input}");
                assert!(v.contains(&form), "{input} -> {v}");
            }
        }
        unsafe { std::env::remove_var(&name) };
    }

    #[test]
    fn errors_never_contain_values() {
        let inputs = [
            "A=\"canary-secret",
            "A='canary-secret",
            "A=#canary-secret",
            "A=canary\rsecret=1",
            "A=\"canary\rsecret\"",
            "A=\"canary-secret\"canary",
            "A='canary' canary",
            "A=first\ncanary secret\n",
            "A=first\ncanary\"secret=1\n",
            "A=first\ncanary'secret=1\n",
            "A=\"canary\n\ncanary",
        ];
        for input in inputs {
            for expand in [false, true] {
                let e = parse_env(input, expand).unwrap_err();
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("canary"), "{input:?}: {shown}");
            }
        }
        for input in [
            "B=canary${A}",
            "B=\"canary$A\"",
            "B=canary${A",
            "B=canary${A:-canary}",
        ] {
            let e = parse_env(input, true).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("canary"), "{input:?}: {shown}");
        }
    }

    #[test]
    fn display_format() {
        let e = parse_env("X=1\nA='x", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "2:3: unterminated single-quoted value (key A)"
        );
        let e = parse_env("X=1\nA B", false).unwrap_err();
        assert!(e.to_string().starts_with("2:3: expected '='"), "{e}");
        assert!(!e.to_string().contains("(key"), "{e}");
        let e = ParseError::new(1, 2, Some("a\nb"), "m");
        assert_eq!(e.to_string(), "1:2: m (key a\\nb)");
    }

    /// What `dotenvy` yields for `input`, with later duplicates winning at
    /// their own position (our documented behaviour).
    fn oracle(input: &str) -> Result<Vec<(String, String)>, String> {
        let pairs: Vec<(String, String)> = dotenvy::from_read_iter(input.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            out.retain(|(ok, _)| *ok != k);
            out.push((k, v));
        }
        Ok(out)
    }

    fn ours(input: &str) -> Result<Vec<(String, String)>, String> {
        parse_env(input, false)
            .map(|f| {
                f.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.expose().to_owned()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn differential_table_against_dotenvy() {
        let inputs = [
            "A=1",
            "A=1\nB=2\n",
            "A=",
            // (dotenvy rejects trailing blanks at the very end of the input)
            "A=   \n",
            "A= # c",
            "A=v # c",
            "A=v\t# c",
            "A=v#c",
            "A=a=b",
            "A = 1",
            "A\t=\t1",
            "  A=1",
            "# c\n\n  # c\nA=1\n",
            "export A=1",
            "export   A=1",
            "export=1",
            "export\tA=1",
            "A.B=1",
            "_A=1",
            "A='x y # z'",
            "A='x' # c",
            "A='multi\nline'\nB=1",
            "A='he said \"hi\"'",
            "A=\"x y # z\"",
            "A=\"x\" # c",
            "A=\"it's\"",
            "A=\"a\\nb\"",
            "A=\"q\\\"q\"",
            "A=\"b\\\\s\"",
            "A=\"multi\nline\"\nB=2",
            "A=\"multi\n\n  line  \n\" # c\nB=\"\"",
            "A=\"\"",
            "A=''",
            "A=1\r\nB=2\r\n",
            "A=1 # c\r\nB=' x '\r\n",
            "A=1\nA=2\n",
            "A=1\nB=2\nA=3\n",
            "A=ünï€",
            "A=\"ünï €\"",
            "A=https://user@host:5432/db?x=1&y=2",
            "A=-----BEGIN-----",
        ];
        for input in inputs {
            let want = oracle(input);
            assert!(want.is_ok(), "oracle rejects {input:?}: {want:?}");
            assert_eq!(ours(input), want, "input {input:?}");
        }
    }

    /// Documented differences from `dotenvy` (see the module docs).
    #[test]
    fn documented_differences_from_dotenvy() {
        // dotenvy rejects inner whitespace and `-` in keys; we accept both.
        assert!(oracle("A=hello world").is_err());
        assert_eq!(ours("A=hello world").unwrap()[0].1, "hello world");
        assert!(oracle("my-key=1").is_err());
        assert!(ours("my-key=1").is_ok());
        // Unquoted backslashes and quotes stay literal.
        assert_eq!(oracle("A=a\\\\b").unwrap()[0].1, "a\\b");
        assert_eq!(ours("A=a\\\\b").unwrap()[0].1, "a\\\\b");
        // Text glued to a closing quote is an error, a glued comment is not.
        assert_eq!(oracle("A=\"x\"y").unwrap()[0].1, "xy");
        assert!(ours("A=\"x\"y").is_err());
        assert_eq!(oracle("A=\"x\"#c").unwrap()[0].1, "x#c");
        assert_eq!(ours("A=\"x\"#c").unwrap()[0].1, "x");
        // \t and \r escapes.
        assert!(oracle("A=\"a\\tb\"").is_err());
        assert_eq!(ours("A=\"a\\tb\"").unwrap()[0].1, "a\tb");
    }

    use crate::test_rng::{Rng, cases};

    /// A random file in the subset of syntax where we and `dotenvy` agree.
    fn random_env(rng: &mut Rng) -> String {
        const KEY_FIRST: &[&str] = &["A", "B", "Z", "_", "K"];
        const KEY_REST: &[&str] = &["A", "B", "1", "_", "."];
        const BARE: &[&str] = &[
            "a", "Z", "0", "9", "_", ".", "/", ":", "@", "+", ",", "-", "=", "ü", "€",
        ];
        const SINGLE: &[&str] = &["a", " ", "\"", "#", "=", "\\", "é", "\t"];
        const DOUBLE: &[&str] = &["a", " ", "'", "#", "=", "é", "\\n", "\\\"", "\\\\"];
        let crlf = rng.below(4) == 0;
        let nl = if crlf { "\r\n" } else { "\n" };
        let blank = |rng: &mut Rng| rng.pick(&["", " ", "  ", "\t"]).to_owned();
        let mut out = String::new();
        for _ in 0..rng.below(8) {
            match rng.below(10) {
                0 => {}
                1 => out.push_str(&format!("{}# comment {}", blank(rng), rng.text(BARE, 5))),
                _ => {
                    if rng.below(4) == 0 {
                        out.push_str(&format!("export{} ", blank(rng)));
                    } else {
                        out.push_str(&blank(rng));
                    }
                    out.push_str(rng.pick(KEY_FIRST));
                    out.push_str(&rng.text(KEY_REST, 4));
                    out.push_str(&blank(rng));
                    out.push('=');
                    out.push_str(&blank(rng));
                    match rng.below(4) {
                        0 => {
                            let v = rng.text(BARE, 8);
                            out.push_str(&v);
                        }
                        1 => {
                            let mut v = rng.text(SINGLE, 8);
                            // dotenvy treats a backslash before the closing
                            // quote as an escape while finding line ends.
                            while v.ends_with('\\') {
                                v.pop();
                            }
                            out.push_str(&format!("'{}'", v.replace("\\'", "")));
                        }
                        2 => {
                            let mut v = rng.text(DOUBLE, 8);
                            if !crlf && rng.below(3) == 0 {
                                v.push('\n');
                                v.push_str(&rng.text(DOUBLE, 4));
                            }
                            out.push_str(&format!("\"{v}\""));
                        }
                        _ => {}
                    }
                    if rng.below(3) == 0 {
                        out.push_str(&format!(" {}#{}", blank(rng), rng.text(BARE, 4)));
                    } else {
                        out.push_str(&blank(rng));
                    }
                }
            }
            out.push_str(nl);
        }
        out
    }

    #[test]
    fn fuzz_differential_against_dotenvy() {
        let mut rng = Rng::seeded(0x9e37_79b9_7f4a_7c15);
        for _ in 0..cases(3000) {
            let input = random_env(&mut rng);
            let want = oracle(&input);
            assert!(want.is_ok(), "oracle rejects {input:?}: {want:?}");
            assert_eq!(ours(&input), want, "input {input:?}");
        }
    }
}
