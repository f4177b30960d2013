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
    for text in ["A='unterminated", "not a line", "A=1\nB=\"x\ry\""] {
        let e = apply_env(text, &[set("A", "1")]).unwrap_err();
        assert!(matches!(e, WriteBackError::Parse(_)), "{e}");
    }
    for text in ["A: [1]", "A: 1\nA: 2", "- x", "A: \"x"] {
        let e = apply_yaml(text, &[set("A", "1")]).unwrap_err();
        assert!(matches!(e, WriteBackError::Parse(_)), "{e}");
    }
    let e = apply("A=1\nB C", SourceFormat::Env, &[set("A", "canary-secret")]).unwrap_err();
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
    let out = apply_checked("A: x\nB: 1\n", SourceFormat::Yaml, &[set("B", "$A")], true).unwrap();
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
    "a", "Z", "0", "9", "_", ".", " ", "  ", "\t", "\n", "\r\n", "\r", "\"", "'", "#", " #", "# ",
    "$", "${A}", "$A", "\\", "\\n", "\\$", ":", ": ", "-", "- ", "?", "{", "}", "[", "]", ",", "&",
    "*", "!", "|", ">", "%", "@", "`", "~", "=", "é", "€", "😀", "\u{2028}", "\u{85}", "\u{feff}",
    "\u{a0}", "\u{1}", "\u{7f}", "\u{9b}", "null", "true", "0080", "---", "...", "export ", "x=y",
    "ü",
];
const SPECIAL: &[&str] = &[
    "", " ", "null", "~", "NULL", "-", "- x", "a: b", "#x", "0080", "true", "\n", "'", "\"", "\\",
    "$", "x ", " x", "a #b", "|", ">", "*a", "&a", "!x", "%x", "@x", "`x", "--- x", "?", ":", "[]",
    "{}", "\\\\'", "'\\", "$A", "${A}", "\r\n",
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
        let after = parse_env(&out, false).unwrap_or_else(|e| panic!("{text:?} -> {out:?}: {e}"));
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
        let after = parse_yaml(&out, false).unwrap_or_else(|e| panic!("{text:?} -> {out:?}: {e}"));
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
        "\"", "'", "\\", "#", " #", "\n", "\r\n", "\r", ":", ": ", "|", ">", "{", "}", "[", ",",
        "&a ", "!!str ", "- ", "? ", "---\n", "...\n", "=", "export ", "\u{feff}", "\t", "  ", "é",
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
