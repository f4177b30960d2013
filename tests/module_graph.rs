//! The source tree has no import cycle between files.
//!
//! Every `crate::…`, `super::…` and `self::…` path in production code (test
//! modules and `tests.rs` files are left out) is resolved to the file of the
//! longest module prefix that exists; the resulting file graph must be
//! acyclic. A new cycle fails here with the files that form it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module path (`["reconcile", "plan"]`) for each production source file.
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let last = parts.last().cloned().unwrap_or_default();
            if last == "tests" || last == "main" {
                continue;
            }
            if last == "mod" || last == "lib" {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// Production text of a file: everything before its `#[cfg(test)] mod tests`.
fn production_text(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        // Comments (doc links included) are not dependencies.
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every module path named from `text`, expanded from `use` groups.
fn named_paths(text: &str, here: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let bytes: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 8)].iter().collect();
        let prev_is_ident = i > 0 && (bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        let base: Option<(Vec<String>, usize)> = if prev_is_ident {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), 7))
        } else if rest.starts_with("super::") {
            // `super` of a mod.rs is its parent folder's module; of a file, its folder.
            let mut p = here.to_vec();
            if !is_mod_file || !p.is_empty() {
                p.pop();
            }
            Some((p, 7))
        } else if rest.starts_with("self::") {
            Some((here.to_vec(), 6))
        } else {
            None
        };
        match base {
            Some((prefix, skip)) => {
                i += skip;
                i = parse_tree(&bytes, i, prefix, &mut found);
            }
            None => i += 1,
        }
    }
    found
}

/// Parses `a::b::{c, d::e}` from `i`, pushing each full path; returns the end.
fn parse_tree(
    s: &[char],
    mut i: usize,
    prefix: Vec<String>,
    found: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        if i < s.len() && s[i] == '{' {
            return parse_group(s, i + 1, &path, found);
        }
        let start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        if i > start {
            path.push(s[start..i].iter().collect());
        }
        if i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':' {
            i += 2;
            while i < s.len() && s[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        found.push(path);
        return i;
    }
}

/// Parses the members of a `{…}` group starting after its `{`.
fn parse_group(s: &[char], mut i: usize, path: &[String], found: &mut Vec<Vec<String>>) -> usize {
    loop {
        while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
            i += 1;
        }
        if i >= s.len() || s[i] == '}' {
            return i + 1;
        }
        let before = i;
        i = parse_tree(s, i, path.to_vec(), found);
        if i == before {
            i += 1;
        }
    }
}

/// The file owning the longest existing prefix of `path`.
fn resolve<'a>(
    path: &[String],
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a PathBuf> {
    (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = module_files(&src);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = production_text(&fs::read_to_string(file).expect("read source"));
        let is_mod_file = file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let targets = edges.entry(file.clone()).or_default();
        for path in named_paths(&text, module, is_mod_file) {
            if let Some(target) = resolve(&path, &modules)
                && target != file
                && !path.is_empty()
            {
                targets.insert(target.clone());
            }
        }
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a PathBuf) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on_stack.insert(v);
        let edges = st.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low[v];
                st.low.insert(v, lv.min(lw));
            } else if st.on_stack.contains(w) {
                let iw = st.index[w];
                let lv = st.low[v];
                st.low.insert(v, lv.min(iw));
            }
        }
        if st.low[v] == st.index[v] {
            let mut component = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                st.out.push(component);
            }
        }
    }
    let mut st = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

#[test]
fn no_import_cycle_between_source_files() {
    let edges = graph();
    let found = cycles(&edges);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
            format!("cycle: {}", names.join(" <-> "))
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_and_a_use_group() {
    // The checker itself can fail: a two-file cycle built by hand is found.
    let mut edges = BTreeMap::new();
    let a = PathBuf::from("a.rs");
    let b = PathBuf::from("b.rs");
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(cycles(&edges), vec![vec![a, b]]);
    // Use groups expand to every leaf path.
    let here = vec!["x".to_string()];
    let paths = named_paths("use crate::{a::b, c::{d, e}};", &here, false);
    let flat: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(flat, ["a::b", "c::d", "c::e"]);
}

#[test]
fn the_real_tree_has_edges() {
    // Guards against a resolver that silently finds nothing.
    let edges = graph();
    let total: usize = edges.values().map(BTreeSet::len).sum();
    assert!(total > 50, "only {total} edges found");
}
