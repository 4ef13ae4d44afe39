//! The docs check: the README, `docs/*.md` and the READMEs of `deploy/` and
//! `policy/` against the code, so a page cannot drift from what it describes.
//! - every relative link resolves, and its `#anchor` is a heading there;
//! - the flags table of `docs/operations.md` and `msp-operator run --help`
//!   list the same flags (the real binary's help, both ways);
//! - every metric a page names is one the operator registers, and
//!   `docs/operations.md` names every one it registers (the operator's own
//!   registry; `operator_binary` also checks a running operator's /metrics);
//! - every repository path a page names (`deploy/…`, `tests/…`, `host/…`) exists;
//! - the README stays a landing page (≤ 150 lines) and keeps its two commands.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use msp_tests::docs;

fn read(root: &Path, page: &Path) -> String {
    std::fs::read_to_string(root.join(page))
        .unwrap_or_else(|e| panic!("reading {}: {e}", page.display()))
}

fn all_pages() -> Vec<(std::path::PathBuf, String)> {
    let root = docs::repo_root();
    docs::pages(&root)
        .expect("listing docs/")
        .into_iter()
        .map(|p| {
            let text = read(&root, &p);
            (p, text)
        })
        .collect()
}

#[test]
fn every_relative_link_resolves() {
    let root = docs::repo_root();
    let mut broken = Vec::new();
    for (page, text) in all_pages() {
        let dir = page.parent().unwrap_or(Path::new(""));
        for (line, target) in docs::links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let at = format!("{}:{line}: {target}", page.display());
            let linked = if file.is_empty() {
                root.join(&page)
            } else {
                root.join(dir).join(file)
            };
            if !linked.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&linked).unwrap_or_default();
                if !docs::anchors(&text).contains(anchor) {
                    broken.push(format!("{at}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_run_flag_is_documented_and_every_documented_flag_exists() {
    let Some(bin) = msp_tests::replicas::require_operator_binary() else {
        return;
    };
    let out = Command::new(&bin)
        .args(["run", "--help"])
        .output()
        .expect("running msp-operator run --help");
    assert!(
        out.status.success(),
        "msp-operator run --help failed: {out:?}"
    );
    let help = docs::help_flags(&String::from_utf8_lossy(&out.stdout));
    assert!(help.len() > 20, "too few flags read from --help: {help:?}");
    let root = docs::repo_root();
    let table = docs::table_flags(&read(&root, Path::new("docs/operations.md")));
    let undocumented: Vec<_> = help.difference(&table).collect();
    let unknown: Vec<_> = table.difference(&help).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/operations.md's flags table and `msp-operator run --help` differ:\n\
         in --help, not in the table: {undocumented:?}\nin the table, not in --help: {unknown:?}"
    );
}

#[test]
fn every_metric_named_is_exported_and_every_exported_one_is_documented() {
    let root = docs::repo_root();
    let exported = docs::exported_metrics(&docs::exposition_with_every_family());
    // Every family the code registers is in that exposition: a new metric
    // needs a line above and a row in docs/operations.md.
    let registered =
        docs::registered_metric_families(&root.join("host/src")).expect("reading host/src");
    let seen: BTreeSet<String> = exported
        .iter()
        .map(|(name, _)| name.strip_suffix("_total").unwrap_or(name).to_string())
        .collect();
    assert!(
        registered.len() > 15,
        "too few metrics found in host/src: {registered:?}"
    );
    let unseen: Vec<_> = registered.difference(&seen).collect();
    assert!(
        unseen.is_empty(),
        "metrics registered in host/src that this test does not use (add them to \
         exposition_with_every_family and to docs/operations.md): {unseen:?}"
    );
    let samples: BTreeSet<String> = exported.iter().flat_map(|(_, s)| s.clone()).collect();
    let mut unknown = Vec::new();
    for (page, text) in all_pages() {
        for (line, name) in docs::metric_names(&text) {
            if !samples.contains(&name) {
                unknown.push(format!("{}:{line}: {name}", page.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics named in the docs that the operator does not export:\n{}",
        unknown.join("\n")
    );
    let documented: BTreeSet<String> =
        docs::metric_names(&read(&root, Path::new("docs/operations.md")))
            .into_iter()
            .map(|(_, n)| n)
            .collect();
    let missing: Vec<_> = exported
        .iter()
        .map(|(name, _)| name)
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the operator exports that docs/operations.md does not name: {missing:?}"
    );
}

#[test]
fn every_repository_path_named_exists() {
    let root = docs::repo_root();
    let mut missing = Vec::new();
    for (page, text) in all_pages() {
        let dir = root.join(page.parent().unwrap_or(Path::new("")));
        for (line, path) in docs::repo_paths(&text) {
            // A README inside a folder may name paths relative to it.
            if !docs::path_exists(&root, &path) && !docs::path_exists(&dir, &path) {
                missing.push(format!("{}:{line}: {path}", page.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths named in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_is_a_landing_page_that_keeps_its_two_commands() {
    let root = docs::repo_root();
    let readme = read(&root, Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 150,
        "README.md has {lines} lines (at most 150: details go to docs/)"
    );
    assert!(
        readme.contains("\n## Set-up: two commands\n"),
        "README.md lost its section \"Set-up: two commands\" (CI and the project's rules name it)"
    );
    for command in ["tests/demo.sh", "tests/test.sh"] {
        assert!(
            readme.lines().any(|l| l.starts_with(command)),
            "README.md's set-up no longer starts a line with {command}"
        );
        assert!(root.join(command).exists(), "{command} is gone");
    }
    assert!(root.join("LICENSE").exists(), "no LICENSE file");
}
