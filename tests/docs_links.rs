//! The documentation stays inside the repository and its links resolve.
//!
//! For `README.md` and every `docs/*.md`: every markdown link
//! `[text](target)` (and reference definition `[label]: target`) whose
//! target has no scheme must name a file or directory that exists, relative
//! to the markdown file (the `#anchor` part is ignored), and must not
//! resolve outside the repository. The text must not mention `../shared`,
//! `SPEC §` or `EMULATOR.md` (documents that do not ship with a clone), and
//! `README.md` must stay an entry point of at most 15,000 bytes. Each
//! failure names the file and line.
//!
//! Plain std: no dependencies, no network.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Largest README, in bytes.
const README_MAX_BYTES: u64 = 15_000;

/// Strings that point at documents outside the repository.
const FORBIDDEN: [&str; 3] = ["../shared", "SPEC §", "EMULATOR.md"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, sorted.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A link target found in a markdown file.
#[derive(Debug, PartialEq)]
struct Link {
    line: usize,
    target: String,
}

/// The target inside `(…)`: the first token, without `<…>` and an
/// optional title.
fn clean_target(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('<') {
        return rest.split('>').next().unwrap_or("").to_string();
    }
    raw.split_whitespace().next().unwrap_or("").to_string()
}

/// Inline links `[text](target)` and reference definitions
/// `[label]: target`, outside fenced code blocks, with 1-based lines.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim_start();
        for marker in ["```", "~~~"] {
            if trimmed.starts_with(marker) {
                fence = match fence {
                    None => Some(marker),
                    Some(open) if open == marker => None,
                    other => other,
                };
            }
        }
        if fence.is_some() || trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            continue;
        }

        // Reference definition: `[label]: target`.
        if let Some(rest) = trimmed.strip_prefix('[')
            && let Some(close) = rest.find(']')
            && close > 0
            && rest[close + 1..].starts_with(':')
        {
            out.push(Link {
                line: number,
                target: clean_target(&rest[close + 2..]),
            });
            continue;
        }

        // Inline links: every `](` that closes a `[` on this line (or a
        // link text begun on an earlier line).
        let mut from = 0;
        while let Some(pos) = line[from..].find("](") {
            let start = from + pos + 2;
            let Some(len) = matching_paren(&line[start..]) else {
                break;
            };
            out.push(Link {
                line: number,
                target: clean_target(&line[start..start + len]),
            });
            from = start + len;
        }
    }
    out
}

/// Length of the text up to the `)` that closes a link target, allowing
/// balanced parentheses inside it.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `http:`, `https:`, `mailto:` and the like.
fn has_scheme(target: &str) -> bool {
    match target.find(':') {
        Some(colon) => {
            let scheme = &target[..colon];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        }
        None => false,
    }
}

/// `base.join(rel)` with `.` and `..` resolved lexically; `None` when `..`
/// climbs above the file system root.
fn normalize(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let joined = base.join(rel);
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// Checks one link; returns a problem description, if any.
fn check_link(root: &Path, md_dir: &Path, target: &str) -> Option<String> {
    if target.is_empty() || target.starts_with('#') || has_scheme(target) {
        return None;
    }
    let path_part = target.split(['#', '?']).next().unwrap_or("");
    if path_part.is_empty() {
        return None;
    }
    // A leading `/` means the repository root, as on code hosts.
    let (base, rel) = match path_part.strip_prefix('/') {
        Some(rest) => (root, rest),
        None => (md_dir, path_part),
    };
    let Some(resolved) = normalize(base, rel) else {
        return Some(format!("link `{target}` climbs above the file system root"));
    };
    if !resolved.starts_with(root) {
        return Some(format!(
            "link `{target}` resolves outside the repository ({})",
            resolved.display()
        ));
    }
    if !resolved.exists() {
        return Some(format!("link `{target}` names a file that does not exist"));
    }
    None
}

/// Every problem in one markdown file, as `FILE:LINE: message`.
fn problems_in(root: &Path, file: &Path) -> Vec<String> {
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return vec![format!("{shown}: cannot read: {e}")],
    };
    let md_dir = file.parent().unwrap_or(root);
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for needle in FORBIDDEN {
            if line.contains(needle) {
                problems.push(format!(
                    "{shown}:{}: mentions `{needle}`, which is not in the repository; link to the docs/ page that holds the fact",
                    i + 1
                ));
            }
        }
    }
    for link in links(&text) {
        if let Some(problem) = check_link(root, md_dir, &link.target) {
            problems.push(format!("{shown}:{}: {problem}", link.line));
        }
    }
    problems
}

#[test]
fn docs_links_resolve_inside_the_repository() {
    let root = repo_root();
    let files = markdown_files(&root);
    assert!(
        files.iter().any(|f| f.ends_with("docs/cli.md")),
        "docs/cli.md is missing"
    );
    let mut problems = Vec::new();
    for file in &files {
        problems.extend(problems_in(&root, file));
    }
    assert!(
        problems.is_empty(),
        "{} documentation problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn readme_is_an_entry_point_of_at_most_15000_bytes() {
    let readme = repo_root().join("README.md");
    let size = fs::metadata(&readme).expect("README.md exists").len();
    assert!(
        size <= README_MAX_BYTES,
        "README.md:1: {size} bytes, more than {README_MAX_BYTES}; move detail into docs/"
    );
}

#[test]
fn the_link_scanner_finds_what_it_should() {
    let text = "see [a](docs/a.md#x) and [b](<b c.md> \"title\")\n\
                ```\n[not](a/link.md)\n```\n\
                [ref]: ../outside.md\n\
                [ext](https://example.com/x) [anchor](#here) [p](f(1).md)\n";
    let found: Vec<(usize, String)> = links(text)
        .into_iter()
        .map(|l| (l.line, l.target))
        .collect();
    assert_eq!(
        found,
        vec![
            (1, "docs/a.md#x".to_string()),
            (1, "b c.md".to_string()),
            (5, "../outside.md".to_string()),
            (6, "https://example.com/x".to_string()),
            (6, "#here".to_string()),
            (6, "f(1).md".to_string()),
        ]
    );

    let root = Path::new("/repo");
    let docs = Path::new("/repo/docs");
    assert!(check_link(root, docs, "https://example.com").is_none());
    assert!(check_link(root, docs, "#anchor").is_none());
    let outside = check_link(root, docs, "../../shared/SPEC.md").expect("outside");
    assert!(outside.contains("outside the repository"), "{outside}");
    assert!(check_link(root, docs, "missing.md").is_some());
}
