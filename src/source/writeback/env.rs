//! `.env` edits: locate an entry's value text and replace it in the
//! quoting style it had, when the new value can be written in it.

#[allow(unused_imports)]
use super::*;

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
            let close = crate::source::dotenv::single_quote_close(body, start)?;
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
