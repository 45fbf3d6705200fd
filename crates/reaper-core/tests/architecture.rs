//! Architecture invariants that a test can hold (ARCHITECTURE.md): reaper-core's dependency
//! list, SQL text only in `reaper_core::sql`, and no function in the binary or the engine
//! longer than 80 lines unless its doc comment says why.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The names in one `[section]` of a Cargo.toml.
fn dependencies(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn the_core_depends_on_no_database_queue_or_runtime_crate() {
    let manifest =
        std::fs::read_to_string(workspace().join("crates/reaper-core/Cargo.toml")).unwrap();
    let allowed = [
        "serde",
        "serde_json",
        "thiserror",
        "chrono",
        "uuid",
        "humantime",
        "cron",
    ];
    assert_eq!(
        dependencies(&manifest, "[dependencies]"),
        allowed.iter().map(|name| (*name).to_owned()).collect(),
        "reaper-core's dependencies changed: update this list and ARCHITECTURE.md only for a \
         crate that does no I/O"
    );
}

/// How SQL text starts (uppercase, as reaper writes it).
const SQL_STARTS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
    "SET ",
    "ALTER TABLE",
    "CREATE ",
    "DROP ",
    "WITH ",
    "DO $$",
];

/// Files outside `reaper_core::sql` that may hold SQL text, and why.
const ALLOWED: &[(&str, &str)] = &[(
    "crates/reaper/src/demo.rs",
    "the demo's seed data, for the SQLite file the demo creates for itself",
)];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Lines of `text` where a string literal starts with SQL (on its line or, for a literal that
/// opens at the end of a line, on the next).
/// SQL-looking string literals in a file's product code: a file's `#[cfg(test)]` module, at its
/// end by convention, is test code (it may set up or break a database by hand).
fn sql_literals(text: &str) -> Vec<(usize, String)> {
    let all: Vec<&str> = text.lines().collect();
    let test_module = all
        .windows(2)
        .position(|pair| pair[0] == "#[cfg(test)]" && pair[1].starts_with("mod "))
        .unwrap_or(all.len());
    let lines = &all[..test_module];
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (quote, _) in line.match_indices('"') {
            let rest = &line[quote + 1..];
            let rest = if rest.trim().is_empty() {
                lines.get(index + 1).map_or("", |next| next.trim_start())
            } else {
                rest
            };
            if SQL_STARTS.iter().any(|start| rest.starts_with(start)) {
                found.push((index + 1, line.trim().to_owned()));
            }
        }
    }
    found
}

#[test]
fn sql_text_lives_only_in_the_core_sql_modules() {
    let root = workspace();
    let mut files = Vec::new();
    for crate_dir in ["reaper-core", "reaper-engine", "reaper", "reaper-client"] {
        rust_files(&root.join("crates").join(crate_dir).join("src"), &mut files);
    }
    let sql_dir = root.join("crates/reaper-core/src/sql");
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if file.starts_with(&sql_dir) || ALLOWED.iter().any(|(allowed, _)| relative == *allowed) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, literal) in sql_literals(&text) {
            offenders.push(format!("{relative}:{line}: {literal}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL text outside reaper_core::sql (plan it there, through SqlWriter):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_checker_finds_formatted_and_multi_line_sql() {
    let found = sql_literals(
        "let a = format!(\"SET SESSION x = {n}\");\n// \"SELECT in a comment\"\nlet b = r#\"\n    CREATE TABLE t (id int)\"#;\nlet c = \"Selected rows\";",
    );
    assert_eq!(
        found.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
        vec![1, 3]
    );
}

/// How long a function in the binary or the engine may be before its doc comment must say why.
const MAX_FUNCTION_LINES: usize = 80;

/// The doc-comment marker that states why a function is longer than `MAX_FUNCTION_LINES`.
const LONG_REASON_MARKER: &str = "Long because";

/// `text` with every comment, string literal and char literal blanked to spaces (line breaks
/// kept), so that braces and `fn` inside them do not count. Lifetimes (`'a`) stay code.
fn code_only(text: &str) -> Vec<char> {
    let source: Vec<char> = text.chars().collect();
    let mut code = source.clone();
    let blank = |code: &mut Vec<char>, from: usize, to: usize| {
        for slot in &mut code[from..to.min(source.len())] {
            if *slot != '\n' {
                *slot = ' ';
            }
        }
    };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut at = 0;
    while at < source.len() {
        let rest = &source[at..];
        let after_ident = at > 0 && is_ident(source[at - 1]);
        let end = if rest.starts_with(&['/', '/']) {
            rest.iter()
                .position(|&c| c == '\n')
                .map_or(source.len(), |n| at + n)
        } else if rest.starts_with(&['/', '*']) {
            let (mut depth, mut scan) = (0usize, at);
            loop {
                if scan >= source.len() {
                    break source.len();
                }
                if source[scan..].starts_with(&['/', '*']) {
                    depth += 1;
                    scan += 2;
                } else if source[scan..].starts_with(&['*', '/']) {
                    depth -= 1;
                    scan += 2;
                    if depth == 0 {
                        break scan;
                    }
                } else {
                    scan += 1;
                }
            }
        } else if !after_ident && raw_string_start(rest).is_some() {
            let (prefix, hashes) = raw_string_start(rest).unwrap_or_default();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = at + prefix;
            (body..source.len())
                .find(|&scan| source[scan..].starts_with(&close))
                .map_or(source.len(), |scan| scan + close.len())
        } else if rest[0] == '"' || (!after_ident && rest.starts_with(&['b', '"'])) {
            let mut scan = at + if rest[0] == 'b' { 2 } else { 1 };
            while scan < source.len() && source[scan] != '"' {
                scan += if source[scan] == '\\' { 2 } else { 1 };
            }
            scan + 1
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            let mut scan = at + 2;
            while scan < source.len() && source[scan] != '\'' {
                scan += if source[scan] == '\\' { 2 } else { 1 };
            }
            scan + 1
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            at + 3
        } else {
            at += 1;
            continue;
        };
        blank(&mut code, at, end);
        at = end;
    }
    code
}

/// Where `rest` opens a raw string (`r"`, `r#"`, `br##"`…): the prefix's length up to and
/// including the quote, and the number of `#`.
fn raw_string_start(rest: &[char]) -> Option<(usize, usize)> {
    let after_b = usize::from(rest.first() == Some(&'b'));
    if rest.get(after_b) != Some(&'r') {
        return None;
    }
    let hashes = rest[after_b + 1..]
        .iter()
        .take_while(|&&c| c == '#')
        .count();
    let quote = after_b + 1 + hashes;
    (rest.get(quote) == Some(&'"')).then_some((quote + 1, hashes))
}

/// Every function with a body in `text`'s product code (before its `#[cfg(test)] mod`): its
/// name, first line (1-based), length in lines, and whether its doc comment says why it is long.
fn functions(text: &str) -> Vec<(String, usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let product_end = lines
        .windows(2)
        .position(|pair| pair[0] == "#[cfg(test)]" && pair[1].starts_with("mod "))
        .unwrap_or(lines.len());
    let code = code_only(text);
    let line_of = |offset: usize| 1 + code[..offset].iter().filter(|&&c| c == '\n').count();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for at in 0..code.len() {
        let keyword = code[at..].starts_with(&['f', 'n'])
            && (at == 0 || !is_ident(code[at - 1]))
            && code.get(at + 2).is_some_and(|c| c.is_whitespace());
        if !keyword {
            continue;
        }
        let name: String = code[at + 2..]
            .iter()
            .skip_while(|c| c.is_whitespace())
            .take_while(|&&c| is_ident(c))
            .collect();
        let Some(open) = (at..code.len()).find(|&scan| matches!(code[scan], '{' | ';')) else {
            continue;
        };
        if name.is_empty() || code[open] == ';' {
            continue;
        }
        let mut depth = 0usize;
        let Some(close) = (open..code.len()).find(|&scan| {
            match code[scan] {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            depth == 0
        }) else {
            continue;
        };
        let (first, last) = (line_of(at), line_of(close));
        if first > product_end {
            break;
        }
        found.push((name, first, last - first + 1, says_why_long(&lines, first)));
    }
    found
}

/// Whether the doc comment above the item on `line` (1-based; attributes in between are
/// skipped) has a line that starts with `LONG_REASON_MARKER`.
fn says_why_long(lines: &[&str], line: usize) -> bool {
    lines[..line - 1]
        .iter()
        .rev()
        .map(|above| above.trim())
        .take_while(|above| {
            !above.is_empty() && !above.ends_with(['{', '}', ';']) && !above.starts_with("//!")
        })
        .filter_map(|above| above.strip_prefix("///"))
        .any(|doc| doc.trim_start().starts_with(LONG_REASON_MARKER))
}

#[test]
fn no_function_in_the_binary_or_the_engine_is_long_without_saying_why() {
    let root = workspace();
    let mut files = Vec::new();
    for crate_dir in ["reaper", "reaper-engine"] {
        rust_files(&root.join("crates").join(crate_dir).join("src"), &mut files);
    }
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(&root).unwrap().display().to_string();
        for (name, line, length, says_why) in functions(&text) {
            if length > MAX_FUNCTION_LINES && !says_why {
                offenders.push(format!("{relative}:{line}: fn {name} has {length} lines"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: split them along their responsibilities, \
         or start a doc-comment line with \"{LONG_REASON_MARKER}\" and say why:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_length_checker_counts_bodies_past_strings_chars_and_comments() {
    let body = "    let _ = 1;\n".repeat(MAX_FUNCTION_LINES);
    let text = format!(
        "/// Short.\nfn short() -> char {{ '}}' }}\n\
         fn long<'a>(x: &'a str) {{\n    let _ = \"}}\"; // }}\n    let _ = r#\"{{\"#; /* {{ */\n{body}}}\n\
         /// Many arms.\n///\n/// {LONG_REASON_MARKER} each arm is one message.\n#[allow(dead_code)]\n\
         fn explained() {{\n{body}}}\n\
         trait T {{ fn declared(&self); }}\n\
         #[cfg(test)]\nmod tests {{\n    fn in_a_test() {{\n{body}    }}\n}}\n"
    );
    let found: Vec<(String, usize, bool)> = functions(&text)
        .into_iter()
        .map(|(name, _, length, says_why)| (name, length, says_why))
        .collect();
    assert_eq!(
        found,
        vec![
            ("short".to_owned(), 1, false),
            ("long".to_owned(), MAX_FUNCTION_LINES + 4, false),
            ("explained".to_owned(), MAX_FUNCTION_LINES + 2, true),
        ]
    );
}
