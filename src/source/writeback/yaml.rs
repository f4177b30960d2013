//! YAML edits: locate a top-level entry's scalar through the parser's
//! spans and replace it, or append a new entry where the mapping ends.

#[allow(unused_imports)]
use super::*;

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
