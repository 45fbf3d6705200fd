//! Architecture invariants that a test can hold (ARCHITECTURE.md): reaper-core's dependency
//! list, and SQL text only in `reaper_core::sql`.

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
