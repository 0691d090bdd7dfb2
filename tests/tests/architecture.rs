//! Checks the architecture invariants of ARCHITECTURE.md that a test can check: what the
//! domain and the adapters may depend on, and that no SQL lives in the applications.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do database, HTTP or template work, which the domain must not depend on.
const IO_CRATES: &[&str] = &[
    "sqlx",
    "sqlx-core",
    "sqlx-sqlite",
    "sqlx-postgres",
    "rusqlite",
    "tokio-postgres",
    "reqwest",
    "axum",
    "axum-core",
    "hyper",
    "hyper-util",
    "minijinja",
    "tera",
    "handlebars",
];

/// Tokio features that do I/O.
const TOKIO_IO_FEATURES: &[&str] = &["net", "fs"];

/// Crates of the inbound side, which the adapters must not depend on.
const INBOUND_CRATES: &[&str] = &["axum", "axum-core", "clap"];

/// One line of `cargo tree --prefix none -f "{p} {f}"`: a package and its enabled features.
#[derive(Debug, PartialEq, Eq)]
struct Dependency {
    name: String,
    features: BTreeSet<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")))
}

/// The normal (non-dev, non-build) dependencies of `package`, with their resolved features.
fn normal_dependencies(package: &str) -> Result<Vec<Dependency>, String> {
    let manifest = workspace_root().join("Cargo.toml");
    let output = Command::new(cargo())
        .arg("tree")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", package, "-e", "normal", "--prefix", "none"])
        .args(["-f", "{p} {f}"])
        .output()
        .map_err(|err| format!("could not run cargo tree: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let dependencies = parse_tree(&String::from_utf8_lossy(&output.stdout));
    if !dependencies.iter().any(|dep| dep.name == package) {
        return Err(format!("cargo tree did not list {package} itself"));
    }
    Ok(dependencies)
}

/// Parses lines such as `tokio v1.54.1 bytes,fs,net,rt` or `clarion-domain v0.1.0 (/path) `.
/// Every word after the version is split on commas into features; the path and markers such
/// as `(proc-macro)` or `(*)` never match a feature name that is checked.
fn parse_tree(output: &str) -> Vec<Dependency> {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?.to_owned();
            let _version = words.next()?;
            let features = words
                .flat_map(|word| word.split(','))
                .filter(|feature| !feature.is_empty())
                .map(str::to_owned)
                .collect();
            Some(Dependency { name, features })
        })
        .collect()
}

/// The I/O crates among the dependencies, and tokio when it has an I/O feature.
fn io_dependencies(dependencies: &[Dependency]) -> BTreeSet<String> {
    dependencies
        .iter()
        .filter_map(|dep| {
            if IO_CRATES.contains(&dep.name.as_str()) {
                return Some(dep.name.clone());
            }
            let io_features: Vec<&str> = TOKIO_IO_FEATURES
                .iter()
                .copied()
                .filter(|feature| dep.features.contains(*feature))
                .collect();
            if dep.name == "tokio" && !io_features.is_empty() {
                return Some(format!("tokio (features {})", io_features.join(", ")));
            }
            None
        })
        .collect()
}

fn inbound_dependencies(dependencies: &[Dependency]) -> BTreeSet<String> {
    dependencies
        .iter()
        .filter(|dep| INBOUND_CRATES.contains(&dep.name.as_str()))
        .map(|dep| dep.name.clone())
        .collect()
}

#[test]
fn the_domain_depends_on_no_database_http_template_or_io_runtime_crate() -> Result<(), String> {
    let dependencies = normal_dependencies("clarion-domain")?;

    let offenders = io_dependencies(&dependencies);

    assert!(
        offenders.is_empty(),
        "clarion-domain must do no I/O, but depends on: {offenders:?} \
         (see `cargo tree -p clarion-domain -e normal -i <crate>`)"
    );
    Ok(())
}

#[test]
fn the_adapters_know_nothing_of_axum_or_clap() -> Result<(), String> {
    let dependencies = normal_dependencies("clarion-adapters")?;

    let offenders = inbound_dependencies(&dependencies);

    assert!(
        offenders.is_empty(),
        "clarion-adapters must not depend on the inbound side, but depends on: {offenders:?}"
    );
    Ok(())
}

#[test]
fn the_dependency_checks_catch_forbidden_crates_and_tokio_io_features() {
    let output = "\
clarion-domain v0.1.0 (/work/main/domain) 
serde v1.0.229 default,derive
tokio v1.54.1 bytes,fs,rt (*)
sqlx v0.9.0 json,time
clap v4.6.0 derive
";

    let dependencies = parse_tree(output);

    assert_eq!(
        io_dependencies(&dependencies),
        BTreeSet::from(["sqlx".to_owned(), "tokio (features fs)".to_owned()])
    );
    assert_eq!(
        inbound_dependencies(&dependencies),
        BTreeSet::from(["clap".to_owned()])
    );
    assert!(io_dependencies(&parse_tree("tokio v1.54.1 rt,sync,time\n")).is_empty());
}

/// A string literal found in Rust source: where it starts and what it holds.
#[derive(Debug, PartialEq, Eq)]
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of Rust source (plain, byte and raw strings), outside comments.
/// A small lexer is enough here: it only has to tell strings from comments, character
/// literals and lifetimes.
fn string_literals(source: &str) -> Vec<Literal> {
    let chars: Vec<char> = source.chars().collect();
    let mut literals = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |index: usize| chars.get(index).copied();
    while let Some(c) = at(i) {
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && at(i + 1) == Some('/') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while let Some(c) = at(i) {
                if c == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'', '\u{1F600}') or a lifetime ('a).
            if at(i + 1) == Some('\\') {
                i += 2;
                while at(i).is_some_and(|c| c != '\'') {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == Some('\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c == 'r'
            && !is_ident_before_raw(&chars, i)
            && matches!(at(i + 1), Some('"' | '#'))
        {
            let mut hashes = 0;
            let mut j = i + 1;
            while at(j) == Some('#') {
                hashes += 1;
                j += 1;
            }
            if at(j) != Some('"') {
                // A raw identifier such as r#type.
                i = j;
                continue;
            }
            let start_line = line;
            let mut text = String::new();
            j += 1;
            while let Some(c) = at(j) {
                if c == '"' && (1..=hashes).all(|k| at(j + k) == Some('#')) {
                    j += 1 + hashes;
                    break;
                }
                if c == '\n' {
                    line += 1;
                }
                text.push(c);
                j += 1;
            }
            literals.push(Literal {
                line: start_line,
                text,
            });
            i = j;
        } else if c == '"' {
            let start_line = line;
            let mut text = String::new();
            i += 1;
            while let Some(c) = at(i) {
                match c {
                    '"' => {
                        i += 1;
                        break;
                    }
                    '\\' => {
                        // Keep escapes as written; a line continuation still counts a line.
                        if at(i + 1) == Some('\n') {
                            line += 1;
                        }
                        text.push(c);
                        if let Some(next) = at(i + 1) {
                            text.push(next);
                        }
                        i += 2;
                    }
                    _ => {
                        if c == '\n' {
                            line += 1;
                        }
                        text.push(c);
                        i += 1;
                    }
                }
            }
            literals.push(Literal {
                line: start_line,
                text,
            });
        } else {
            i += 1;
        }
    }
    literals
}

/// Whether the `r` at `i` is inside an identifier (`bar"` is not a raw string), allowing the
/// `b` of a raw byte string (`br"..."`).
fn is_ident_before_raw(chars: &[char], i: usize) -> bool {
    let Some(before) = i.checked_sub(1).and_then(|p| chars.get(p)) else {
        return false;
    };
    if *before == 'b' {
        let before_b = i.checked_sub(2).and_then(|p| chars.get(p));
        return before_b.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    }
    before.is_alphanumeric() || *before == '_'
}

/// The SQL keyword a literal contains, if any. Upper case only: SQL in this project is
/// written in upper case, and lower-case words such as "select" are common in help texts.
fn sql_keyword(text: &str) -> Option<&'static str> {
    if text.contains("SELECT ") {
        return Some("SELECT");
    }
    if text.contains("INSERT INTO") {
        return Some("INSERT INTO");
    }
    if text.contains("DELETE FROM") {
        return Some("DELETE FROM");
    }
    if let Some(position) = text.find("UPDATE ")
        && text[position..].contains("SET")
    {
        return Some("UPDATE ... SET");
    }
    None
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        fs::read_dir(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|err| format!("cannot read {}: {err}", dir.display()))?
            .path();
        if path.is_dir() {
            rust_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

#[test]
fn the_applications_contain_no_sql() -> Result<(), String> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["app-cli/src", "app-http/src"] {
        rust_files(&root.join(dir), &mut files)?;
    }
    assert!(
        !files.is_empty(),
        "found no Rust files in app-cli or app-http"
    );

    let mut offenders = Vec::new();
    for file in &files {
        let source = fs::read_to_string(file)
            .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
        for literal in string_literals(&source) {
            if let Some(keyword) = sql_keyword(&literal.text) {
                let relative = file.strip_prefix(&root).unwrap_or(file);
                offenders.push(format!(
                    "{}:{}: {keyword}",
                    relative.display(),
                    literal.line
                ));
            }
        }
    }

    assert!(
        offenders.is_empty(),
        "SQL belongs in clarion-adapters, but these string literals hold SQL:\n{}",
        offenders.join("\n")
    );
    Ok(())
}

#[test]
fn the_sql_scan_finds_queries_in_string_literals_and_ignores_comments() {
    let source = r####"
// SELECT * FROM devices in a comment is fine.
/* DELETE FROM devices, /* nested */ also fine. */
fn main() {
    let c = '"';
    let r#type = 1;
    let help = "select a device";
    let query = "SELECT id FROM devices";
    let raw = r#"
        UPDATE devices
        SET active = false
    "#;
    let bytes = br"INSERT INTO keys";
}
"####;

    let found: Vec<(usize, &str)> = string_literals(source)
        .iter()
        .filter_map(|literal| sql_keyword(&literal.text).map(|keyword| (literal.line, keyword)))
        .collect();

    assert_eq!(
        found,
        vec![(8, "SELECT"), (9, "UPDATE ... SET"), (13, "INSERT INTO")]
    );
}

/// The modules of `clarion-adapters` that the configuration may use: itself, and the helper
/// that redacts database URLs. Everything else is an adapter it configures.
const CONFIG_MAY_USE: &[&str] = &["config", "url_secrets"];

/// The `crate::` modules that code (not comments) in `source` names, with their lines. A
/// `//` inside a string literal ends the scan of its line early, which can miss a path but
/// never reports one that is not there.
fn crate_modules(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (position, _) in code.match_indices("crate::") {
            let module: String = code[position + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            found.push((index + 1, module));
        }
    }
    found
}

#[test]
fn the_configuration_imports_none_of_the_adapters_it_configures() -> Result<(), String> {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root.join("adapters/src/config"), &mut files)?;
    assert!(
        !files.is_empty(),
        "found no Rust files in adapters/src/config"
    );

    let mut offenders = Vec::new();
    for file in &files {
        let source = fs::read_to_string(file)
            .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
        for (line, module) in crate_modules(&source) {
            if !CONFIG_MAY_USE.contains(&module.as_str()) {
                let relative = file.strip_prefix(&root).unwrap_or(file);
                offenders.push(format!("{}:{line}: crate::{module}", relative.display()));
            }
        }
    }

    assert!(
        offenders.is_empty(),
        "the configuration is data: its checks live with the adapters (adapters/src/check.rs), \
         but these lines use an adapter:\n{}",
        offenders.join("\n")
    );
    Ok(())
}

#[test]
fn the_configuration_scan_finds_crate_paths_in_code_and_ignores_comments() {
    let source = "\
//! Checked by [`crate::check`].
use crate::config::Secret;
use crate::{providers, store};
let probe = crate::postgres::probe(url); // not crate::sqlite
";

    let found = crate_modules(source);

    assert_eq!(
        found,
        vec![
            (2, "config".to_owned()),
            (3, "{providers".to_owned()),
            (4, "postgres".to_owned()),
        ]
    );
}
