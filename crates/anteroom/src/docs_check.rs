//! The documentation agrees with the code: every configuration key, metric
//! and command-line flag that exists in the code is documented, and nothing
//! documented is missing from the code. The key table and the shipped
//! configuration file are generated from the key declaration;
//! `ANTEROOM_REGENERATE=1 cargo test -p anteroom docs` rewrites them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anteroom_broker::config::{KEYS, markdown_table, sample_file};
use clap::CommandFactory;

use crate::Cli;

const TABLE_BEGIN: &str = "<!-- config-keys:begin (generated from the key declaration) -->\n";
const TABLE_END: &str = "<!-- config-keys:end -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn regenerate() -> bool {
    std::env::var_os("ANTEROOM_REGENERATE").is_some()
}

/// Every doc page a reader may look for a fact in.
fn docs() -> Vec<(String, String)> {
    let mut pages: Vec<(String, String)> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    pages.sort();
    pages
}

/// The first cells of every markdown table row, backticks kept.
fn first_cells(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .filter_map(|l| l.split('|').nth(1))
        .map(str::trim)
}

#[test]
fn the_key_table_is_generated_from_the_declaration() {
    let path = "docs/operations.md";
    let text = read(path);
    let begin = text
        .find(TABLE_BEGIN)
        .unwrap_or_else(|| panic!("{path} lacks the marker {TABLE_BEGIN:?}"));
    let end = text[begin..].find(TABLE_END).expect("end marker") + begin;
    let expected = markdown_table();
    let current = &text[begin + TABLE_BEGIN.len()..end];
    if regenerate() {
        let new = format!(
            "{}{}{}",
            &text[..begin + TABLE_BEGIN.len()],
            expected,
            &text[end..]
        );
        std::fs::write(root().join(path), new).unwrap();
        std::fs::write(root().join("config/anteroom.toml"), sample_file()).unwrap();
        return;
    }
    assert_eq!(
        current, expected,
        "{path}: the key table differs from the declaration; run with ANTEROOM_REGENERATE=1"
    );
}

#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    // The exporter renders every series from start-up; take the names from
    // what a scrape really returns.
    let rendered = anteroom_broker::telemetry::render();
    let in_code: BTreeSet<String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(in_code.len() >= 10, "too few metrics rendered: {in_code:?}");
    let text = read("docs/monitoring.md");
    let documented: BTreeSet<String> = first_cells(&text)
        .filter_map(|c| c.strip_prefix('`')?.strip_suffix('`'))
        .filter(|c| c.starts_with("anteroom_"))
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = in_code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&in_code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/monitoring.md: undocumented metrics {missing:?}, documented but not exported {stale:?}"
    );
}

/// Every long flag of every subcommand, with the subcommand's path.
fn flags_in_code() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long()
                && long != "help"
                && long != "version"
            {
                out.insert(format!("--{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

#[test]
fn every_flag_is_documented_and_every_documented_flag_exists() {
    let in_code = flags_in_code();
    let key_flags: BTreeSet<String> = KEYS.iter().map(|k| format!("--{}", k.flag())).collect();
    let pages = docs();
    let mut documented = BTreeSet::new();
    for (_, text) in &pages {
        for cell in first_cells(text) {
            if let Some(flag) = cell.strip_prefix("`--") {
                let name: String = flag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                documented.insert(format!("--{name}"));
            }
        }
    }
    // Per-key flags are documented by the key table's rule.
    let missing: Vec<_> = in_code
        .iter()
        .filter(|f| !documented.contains(*f) && !key_flags.contains(*f))
        .collect();
    let stale: Vec<_> = documented
        .iter()
        .filter(|f| !in_code.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "flags with no row in a docs/ table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "flags documented in docs/ that the binary does not have: {stale:?}"
    );
}
