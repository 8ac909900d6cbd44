//! The daemon's shape, checked on its source (README, "How the code is laid
//! out"): every folder of `src/` uses only the folders below it, and no
//! module's imports run in a circle. Read from every `crate::`, `super::` and
//! `self::` path, and every child module named by its own name, outside
//! comments, string literals and test-only code. A module is a file here: an
//! inline `mod` other than a test module would be read as part of its file.
#![expect(
    clippy::expect_used,
    reason = "the helpers read this crate's own source: a failure is the test's report"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The folders (and shared files) of `src/`, bottom first: each may use only
/// those before it. What is not listed (the library's root, the binary, the
/// CLI subcommands) sits on top and may use them all.
const LAYERS: &[&str] = &[
    "textfile",
    "kernel",
    "exec",
    "record",
    "exclusions",
    "output",
    "run",
];

type Module = Vec<String>;

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "(crate root)".to_owned()
    } else {
        m.join("::")
    }
}

/// Every module of `src/` (the binary's `main.rs` aside: it uses the library
/// by its crate name) with its file's text.
fn modules(dir: &Path, path: &Module, out: &mut BTreeMap<Module, String>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let p = entry.expect("a directory entry").path();
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 names")
            .to_owned();
        let mut m = path.clone();
        if p.is_dir() {
            m.push(stem);
            modules(&p, &m, out);
        } else if p.extension().is_some_and(|e| e == "rs") && stem != "main" {
            if stem != "mod" && stem != "lib" {
                m.push(stem);
            }
            out.insert(m, fs::read_to_string(&p).expect("a source file"));
        }
    }
}

/// Where a raw string (`r"`, `r#"`, `br#"`...) starting at `i` ends its
/// opening: the index after its `"`, and its closing (`"#`...).
fn raw_string(b: &[char], i: usize) -> Option<(usize, String)> {
    let r = if b.get(i) == Some(&'b') { i + 1 } else { i };
    if b.get(r) != Some(&'r') {
        return None;
    }
    let hashes = b[r + 1..].iter().take_while(|&&c| c == '#').count();
    (b.get(r + 1 + hashes) == Some(&'"'))
        .then(|| (r + 2 + hashes, format!("\"{}", "#".repeat(hashes))))
}

/// The text with comments and string and character literals blanked out.
fn code(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| b.get(i + k) == Some(&c));
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let word_before = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
        if at(i, "//") {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            loop {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
                if depth == 0 || i >= b.len() {
                    break;
                }
            }
        } else if let Some((start, end)) = raw_string(&b, i).filter(|_| !word_before) {
            i = start;
            while i < b.len() && !at(i, &end) {
                i += 1;
            }
            i += end.chars().count();
            out.push_str("\"\"");
        } else if b[i] == '"' || (!word_before && at(i, "b\"")) {
            i += if b[i] == 'b' { 2 } else { 1 };
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == '\'' {
            // A character literal ('a', '\n', '\'', '\u{1F600}'), not a lifetime:
            // the index of its closing quote.
            let close = if b.get(i + 1) == Some(&'\\') {
                b.get(i + 3..)
                    .and_then(|t| t.iter().position(|&c| c == '\''))
                    .map(|p| i + 3 + p)
            } else {
                (b.get(i + 2) == Some(&'\'')).then_some(i + 2)
            };
            if let Some(close) = close {
                i = close + 1;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            // Identifiers here are ASCII: anything else is not part of a path.
            out.push(if b[i].is_ascii() { b[i] } else { ' ' });
            i += 1;
        }
    }
    out
}

/// `#[cfg(test)] mod NAME { ... }` blocks removed; the names of the
/// `#[cfg(test)] mod NAME;` files returned.
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let after = after.strip_prefix("pub ").unwrap_or(after);
        let Some(decl) = after.strip_prefix("mod ") else {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        };
        let ident: String = decl
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let decl = decl[ident.len()..].trim_start();
        if let Some(tail) = decl.strip_prefix(';') {
            files.push(ident);
            rest = tail;
        } else {
            let body = decl.strip_prefix('{').expect("a test module's body");
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(body.len(), |(i, _)| i + 1);
            rest = &body[end..];
        }
    }
    out.push_str(rest);
    (out, files)
}

/// Length of the identifier at the start of `s`.
fn ident(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// Length of the whitespace at the start of `s`.
fn blank(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

/// Reads one path or use tree at the start of `s` (`a::b`, `a::{b, c::{d}}`,
/// `a as b`) under `prefix`, pushes every path it names, and returns the
/// bytes it took.
fn tree(prefix: &[String], s: &str, out: &mut Vec<Module>) -> usize {
    let mut path = prefix.to_vec();
    let mut i = blank(s);
    loop {
        if s[i..].starts_with('{') {
            i += 1;
            loop {
                i += blank(&s[i..]);
                if i >= s.len() || s[i..].starts_with('}') {
                    return (i + 1).min(s.len());
                }
                i += tree(&path, &s[i..], out);
                // Past an `as NAME` to the `,` or the `}`.
                while i < s.len() && !s[i..].starts_with([',', '}']) {
                    i += 1;
                }
                if s[i..].starts_with(',') {
                    i += 1;
                }
            }
        }
        let len = ident(&s[i..]);
        let id = &s[i..i + len];
        i += len;
        if !id.is_empty() && id != "self" {
            path.push(id.to_owned());
        }
        if len > 0 && s[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// The modules each module uses.
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut texts = BTreeMap::new();
    modules(&src, &Vec::new(), &mut texts);
    let mut stripped = BTreeMap::new();
    let mut test_only: Vec<Module> = Vec::new();
    for (m, text) in &texts {
        let (c, files) = without_tests(&code(text));
        for f in files {
            let mut t = m.clone();
            t.push(f);
            test_only.push(t);
        }
        stripped.insert(m.clone(), c);
    }
    stripped.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
    let known: BTreeSet<Module> = stripped.keys().cloned().collect();
    let module_of = |p: &Module| -> Option<Module> {
        (0..=p.len())
            .rev()
            .map(|n| p[..n].to_vec())
            .find(|m| known.contains(m))
    };
    let mut graph = BTreeMap::new();
    for (m, c) in &stripped {
        let mut found = Vec::new();
        for (i, _) in c.match_indices("::") {
            // The path's first segment, just before this `::`, starts a path
            // unless another `::` precedes it.
            let head_start = c[..i]
                .rfind(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .map_or(0, |p| p + 1);
            let head = &c[head_start..i];
            if head.is_empty() || c[..head_start].ends_with("::") {
                continue;
            }
            let base: Module = match head {
                "crate" => Vec::new(),
                "super" => m[..m.len().saturating_sub(1)].to_vec(),
                "self" => m.clone(),
                child => {
                    let mut b = m.clone();
                    b.push(child.to_owned());
                    if !known.contains(&b) {
                        continue;
                    }
                    b
                }
            };
            let mut base = base;
            let mut tail = &c[i + 2..];
            // `super::super::x`
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
            tree(&base, tail, &mut found);
        }
        let uses: BTreeSet<Module> = found
            .iter()
            .filter_map(&module_of)
            .filter(|u| u != m)
            .collect();
        graph.insert(m.clone(), uses);
    }
    graph
}

#[test]
fn no_import_runs_in_a_circle() {
    let graph = graph();
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            let names: Vec<String> = path[at..].iter().chain([m]).map(|p| name(p)).collect();
            circles.push(names.join(" -> "));
            return;
        }
        if !done.insert(m.clone()) {
            return;
        }
        path.push(m.clone());
        for u in &graph[m] {
            visit(u, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn each_folder_uses_only_the_folders_below_it() {
    let layer = |m: &Module| m.first().and_then(|f| LAYERS.iter().position(|l| l == f));
    let mut up = Vec::new();
    for (m, uses) in graph() {
        let Some(own) = layer(&m) else { continue };
        for u in uses {
            match layer(&u) {
                Some(l) if l <= own => {}
                _ => up.push(format!("{} uses {}", name(&m), name(&u))),
            }
        }
    }
    assert!(up.is_empty(), "arrows up a layer:\n{}", up.join("\n"));
}
