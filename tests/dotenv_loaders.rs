//! Differential harness: our `.env` parser against the real loaders.
//!
//! `tests/data/dotenv/cases.json` holds, per case, what python-dotenv, Node
//! dotenv, Docker Compose (compose-go) and dotenvy returned when run on the
//! exact input (see `scripts/dotenv-oracle/README.md`). SPEC §4: where the
//! loaders that read a file agree, we read the same keys and values; where
//! we do not, the case is in [`DELIBERATE`] with the reason, and that list
//! must be exactly the set of such cases. Where the loaders disagree, we
//! either refuse the file with a position or push, for every key, a value
//! that at least one loader reads; `DISAGREEMENTS.md`'s `secretsync` column
//! must show what we do (`SECRETSYNC_BLESS=1` rewrites it).
//!
//! We parse with `expand: false` (the default), so python-dotenv is taken
//! as `dotenv_values(path, interpolate=False)`; Compose and dotenvy expand
//! `$VAR` from the environment, which we never read.

use std::collections::{BTreeMap, BTreeSet};

use secretsync::naming::is_valid_key;
use secretsync::source::parse_env;
use serde_json::Value;

const CASES: &str = "tests/data/dotenv/cases.json";
const TABLE: &str = "tests/data/dotenv/DISAGREEMENTS.md";

/// The loaders compared, as named in `cases.json`.
const LOADERS: [&str; 4] = [
    "python-dotenv/interpolate=false",
    "node-dotenv",
    "compose-go",
    "dotenvy",
];

/// Cases where the loaders that read the file agree and we deliberately do
/// not (all refusals), or that every loader reads without error or warning
/// and we refuse. Each reason is also in docs/config.md.
const DELIBERATE: &[(&str, &str)] = &[
    // A line of several words: python-dotenv warns it cannot parse it, Node
    // skips it, Compose and dotenvy reject the file. It is most likely a
    // mistyped entry (`C D=1`) or a piece of an unquoted multi-line value,
    // whose value would silently go missing; we point at it instead.
    ("node-what-is-this", "several words without '='"),
    ("ours-key-space", "several words without '='"),
    ("ours-key-space-then-valid", "several words without '='"),
    ("compose-parse-variable-error", "several words without '='"),
    // A word without `=` on the last line, with no line break: what a file
    // cut off in the middle of a key looks like; reading it as "no more
    // keys" could delete the secrets of the keys that were still to come.
    // With a line break (`ours-bare-key`) it is accepted and defines nothing.
    ("py-parser-032", "cut-off last line"),
    ("compose-parsing-error-lol-wut", "cut-off last line"),
    // `="value"`: python-dotenv warns, Compose reads an empty-named
    // variable, dotenvy rejects; no key we could push.
    ("compose-parsing-044", "missing key"),
    // Lone CR line breaks: every loader reads the file, but python-dotenv
    // and Node split lines there while Compose and dotenvy keep the rest of
    // the line in the value (one secret holding the others).
    ("py-parser-035", "lone CR"),
    ("node-lone-cr-lines", "lone CR"),
    ("ours-lone-cr-lines", "lone CR"),
    ("ours-lone-cr-in-double-quotes", "lone CR"),
    // `A=#x`: python-dotenv and Compose read `#x`, Node and dotenvy an
    // empty value; an even split on whether a secret exists.
    ("py-parser-013", "'#' right after '='"),
    ("py-main-comment-005", "'#' right after '='"),
    ("py-main-comment-006", "'#' right after '='"),
    ("ours-hash-first-unquoted", "'#' right after '='"),
    // Keys outside `[A-Za-z_][A-Za-z0-9_.-]*` (SPEC §4): python-dotenv, Node
    // and Compose read `1KEY`; the mapping stage reports the key with its
    // PATH:LINE:COL and syncs the other keys.
    ("ours-key-leading-digit", "invalid key"),
    ("ours-key-leading-digit-then-valid", "invalid key"),
];

/// Disagreement cases where we push a value no loader reads. Known gap,
/// kept listed so it cannot grow unnoticed: with `expand: false` a `\$`
/// inside double quotes reads as `$` (as Compose and dotenvy read it, and as
/// write-back writes a `$` in double quotes), while a `${VAR}` next to it
/// stays literal (as python-dotenv and Node read it); Compose and dotenvy
/// expand the `${VAR}`, python-dotenv and Node keep the backslash. The fix
/// needs write-back to stop writing `\$` (see docs/config.md).
const KNOWN_GAPS: &[&str] = &["compose-expanding-008"];

/// What one loader (or we) read: key -> value, or `None` for a rejection.
type Read = Option<BTreeMap<String, String>>;

/// A loader's result as comparable values: `None` when it failed (it set
/// nothing, or stopped part-way); keys without a value (python-dotenv's
/// bare `KEY`) and Compose's empty-named variable are dropped, since no
/// loader sets either.
fn loader_read(result: &Value) -> Read {
    if result.get("error").is_some() {
        return None;
    }
    let values = result.get("values")?.as_object()?;
    Some(
        values
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
    )
}

/// What we read: values of valid keys, plus keys the mapping stage reports
/// as invalid (with their position), or a refusal with its position.
#[derive(Debug)]
enum Ours {
    Read {
        values: BTreeMap<String, String>,
        bad_keys: BTreeMap<String, (u32, u32)>,
    },
    Refused {
        line: u32,
        column: u32,
        message: String,
    },
}

fn ours(input: &str) -> Ours {
    match parse_env(input, false) {
        Ok(f) => {
            let mut values = BTreeMap::new();
            let mut bad_keys = BTreeMap::new();
            for e in &f.entries {
                if is_valid_key(&e.key) {
                    values.insert(e.key.clone(), e.value.expose().to_owned());
                } else {
                    bad_keys.insert(e.key.clone(), (e.line, e.column));
                }
            }
            Ours::Read { values, bad_keys }
        }
        Err(e) => Ours::Refused {
            line: e.line,
            column: e.column,
            message: e.message,
        },
    }
}

struct Case {
    id: String,
    input: String,
    env: bool,
    expected: Value,
}

fn load() -> Vec<Case> {
    let text = std::fs::read_to_string(CASES).expect("read cases.json");
    let doc: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().expect("id").to_owned(),
            input: c["input"].as_str().expect("input").to_owned(),
            env: c.get("env").is_some(),
            expected: c["expected"].clone(),
        })
        .collect()
}

/// Whether every loader read the file without an error or a warning.
fn all_accept(case: &Case) -> bool {
    LOADERS.iter().all(|l| {
        let r = &case.expected[*l];
        r.get("error").is_none() && r.get("warnings").is_none()
    })
}

#[test]
fn agrees_with_the_loaders() {
    let cases = load();
    assert_eq!(cases.len(), 283, "cases.json changed: review DELIBERATE");
    let mut deviations = BTreeSet::new();
    let mut problems = Vec::new();
    let mut gaps = BTreeSet::new();
    let (mut consensus, mut disagree, mut chose, mut refused) = (0, 0, 0, 0);
    for case in &cases {
        let reads: Vec<Read> = LOADERS
            .iter()
            .map(|l| loader_read(&case.expected[*l]))
            .collect();
        let producers: Vec<&BTreeMap<String, String>> = reads.iter().flatten().collect();
        let us = ours(&case.input);
        if let Ours::Refused { line, column, .. } = &us {
            assert!(
                *line >= 1 && *column >= 1,
                "{}: refusal without position",
                case.id
            );
            if all_accept(case) {
                deviations.insert(case.id.clone());
            }
        }
        let agreed = producers
            .first()
            .filter(|first| producers.iter().all(|p| p == *first));
        match agreed {
            Some(want) => {
                consensus += 1;
                match &us {
                    Ours::Read { values, bad_keys } if values == *want && bad_keys.is_empty() => {}
                    Ours::Read { values, bad_keys } if bad_keys.is_empty() => {
                        problems.push(format!(
                            "{}: loaders agree on {want:?}, we read {values:?}",
                            case.id
                        ));
                    }
                    _ => {
                        deviations.insert(case.id.clone());
                    }
                }
            }
            None => {
                disagree += 1;
                match &us {
                    Ours::Refused { .. } => refused += 1,
                    Ours::Read { values, .. } => {
                        chose += 1;
                        for (k, v) in values {
                            if !producers.iter().any(|p| p.get(k) == Some(v)) {
                                gaps.insert(case.id.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    let listed: BTreeSet<String> = DELIBERATE.iter().map(|(id, _)| (*id).to_owned()).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let known: BTreeSet<String> = KNOWN_GAPS.iter().map(|id| (*id).to_owned()).collect();
    assert_eq!(gaps, known, "cases where we push a value no loader reads");
    assert_eq!(
        deviations, listed,
        "the deliberate deviations changed: update DELIBERATE and docs/config.md"
    );
    println!(
        "dotenv loaders: {} cases; loaders agree on {consensus}: we match {}, deviate \
         deliberately on {}; loaders disagree on {disagree}: we read {chose} (values no \
         loader reads: {}), refuse {refused}",
        cases.len(),
        consensus
            - deviations
                .iter()
                .filter(|id| !is_disagreement(&cases, id))
                .count(),
        deviations
            .iter()
            .filter(|id| !is_disagreement(&cases, id))
            .count(),
        gaps.len(),
    );
}

fn is_disagreement(cases: &[Case], id: &str) -> bool {
    let Some(case) = cases.iter().find(|c| c.id == id) else {
        return false;
    };
    let reads: Vec<Read> = LOADERS
        .iter()
        .map(|l| loader_read(&case.expected[*l]))
        .collect();
    let producers: Vec<_> = reads.iter().flatten().collect();
    !producers.iter().all(|p| Some(p) == producers.first())
}

/// The pinned dev-dependency `dotenvy`, run in-process, gives what the
/// oracle recorded for `dotenvy::from_path` (so the corpus and the crate
/// the unit tests use are the same loader). Cases that read the environment
/// (`$` or an `env`) are skipped: this process has its own environment.
#[test]
fn dotenvy_in_process_matches_the_recorded_results() {
    let (mut same, mut skipped) = (0, 0);
    let mut problems = Vec::new();
    for case in load() {
        // from_path strips a BOM, from_read_iter does not.
        if case.env || case.input.contains('$') || case.input.starts_with('\u{feff}') {
            skipped += 1;
            continue;
        }
        let mut got = BTreeMap::new();
        let mut failed = false;
        for item in dotenvy::from_read_iter(case.input.as_bytes()) {
            match item {
                // from_path never overrides a variable already set, so the
                // first occurrence of a key wins.
                Ok((k, v)) => {
                    got.entry(k).or_insert(v);
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let r = &case.expected["dotenvy"];
        let want: BTreeMap<String, String> = r["values"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        if failed != r.get("error").is_some() || got != want {
            problems.push(format!(
                "{}: in-process {got:?} (failed: {failed})",
                case.id
            ));
        } else {
            same += 1;
        }
    }
    println!("dotenvy in-process: {same} cases as recorded, {skipped} skipped");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A JSON string literal with every non-ASCII character escaped, in a
/// Markdown cell (as `generate.py` writes the other columns).
fn show_text(s: &str) -> String {
    let mut lit = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => lit.push_str("\\\""),
            '\\' => lit.push_str("\\\\"),
            '\n' => lit.push_str("\\n"),
            '\r' => lit.push_str("\\r"),
            '\t' => lit.push_str("\\t"),
            '\u{8}' => lit.push_str("\\b"),
            '\u{c}' => lit.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    lit.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => lit.push(c),
        }
    }
    lit.push('"');
    format!("`{}`", lit.replace('|', "\\|"))
}

/// Our cell for one row of the disagreement table.
fn our_cell(us: &Ours, key_cell: &str) -> String {
    match us {
        Ours::Refused {
            line,
            column,
            message,
        } => {
            let short = message
                .split([';', '(', ':'])
                .next()
                .unwrap_or_default()
                .trim_end_matches([' ', ':'])
                .replace('|', "\\|");
            format!("refused ({line}:{column}: {short})")
        }
        Ours::Read { values, bad_keys } => {
            if key_cell == "(file)" {
                return "(no key)".to_owned();
            }
            let key = values
                .keys()
                .chain(bad_keys.keys())
                .find(|k| show_text(k) == key_cell);
            match key {
                None => "(not set)".to_owned(),
                Some(k) => match (values.get(k), bad_keys.get(k)) {
                    (Some(v), _) => show_text(v),
                    (None, Some((l, c))) => format!("key error ({l}:{c}: not a valid key)"),
                    (None, None) => "(not set)".to_owned(),
                },
            }
        }
    }
}

/// Splits a Markdown table row on `|` not escaped by a backslash.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut prev = '\0';
    for c in row.chars() {
        if c == '|' && prev != '\\' {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
        prev = c;
    }
    out.into_iter().map(|s| s.trim().to_owned()).collect()
}

#[test]
fn disagreement_table_shows_what_we_do() {
    let cases: BTreeMap<String, Case> = load().into_iter().map(|c| (c.id.clone(), c)).collect();
    let text = std::fs::read_to_string(TABLE).expect("read DISAGREEMENTS.md");
    let mut out = String::new();
    let mut stale = Vec::new();
    let mut rows = 0;
    for line in text.lines() {
        let c = cells(line);
        // | case | input | key | 4 loaders | secretsync |  -> 10 pieces
        let case = (c.len() == 10).then(|| cases.get(&c[1])).flatten();
        let Some(case) = case else {
            if line.starts_with("The `secretsync` column is to be filled in.") {
                out.push_str(
                    "The `secretsync` column is what secretsync reads (`expand: false`), written \
                     by\n`tests/dotenv_loaders.rs` (`SECRETSYNC_BLESS=1`); docs/config.md says why.",
                );
            } else {
                out.push_str(line);
            }
            out.push('\n');
            continue;
        };
        rows += 1;
        let cell = our_cell(&ours(&case.input), &c[3]);
        if c[8] != cell {
            stale.push(format!(
                "{} {}: table {:?}, we {:?}",
                c[1], c[3], c[8], cell
            ));
        }
        let prefix_end = line.trim_end().trim_end_matches('|').trim_end().len();
        let prefix = &line[..prefix_end];
        let prefix = prefix.trim_end_matches(|ch: char| ch != '|');
        out.push_str(&format!("{prefix} {cell} |\n"));
    }
    assert!(rows > 100, "table rows not found");
    if std::env::var_os("SECRETSYNC_BLESS").is_some() {
        std::fs::write(TABLE, out).expect("write DISAGREEMENTS.md");
        return;
    }
    assert!(
        stale.is_empty(),
        "DISAGREEMENTS.md is out of date (SECRETSYNC_BLESS=1 rewrites it):\n{}",
        stale.join("\n")
    );
}
