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
//! - the walkthrough (policy/README.md, "Your first policy") is made of
//!   blocks its test (`walkthrough`) runs, and no page repeats it with
//!   commands it replaced.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use msp_tests::{docs, walkthrough};

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

/// The walkthrough's blocks are all ones its test runs (the test itself,
/// `walkthrough`, builds and runs them; this finds a block it could not run
/// without building anything).
#[test]
fn the_walkthrough_is_made_of_blocks_its_test_runs() {
    let root = docs::repo_root();
    let page = read(&root, Path::new(walkthrough::PAGE));
    let steps = walkthrough::plan(&page).unwrap_or_else(|e| panic!("{e}"));
    let provided = walkthrough::Provided {
        msp_policy_dir: "bin".into(),
        demo_exports: vec!["export KUBECONFIG=kubeconfig".into()],
    };
    let script = walkthrough::script(&steps, &provided).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .expect("bash -n");
    assert!(
        out.status.success(),
        "the walkthrough's script does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One walkthrough: other pages point to it rather than repeat its commands,
/// and none keeps a command it replaced (a tool that needs another registry,
/// a macro that does not exist, an apply that cannot take over the live
/// ConfigMap).
#[test]
fn no_page_repeats_the_walkthrough_differently() {
    const GONE: &[(&str, &str)] = &[
        ("wasm-tools component new", "`msp-policy componentize`"),
        ("cargo install wasm-tools", "`msp-policy componentize`"),
        (
            "msp_policy::export_policy!",
            "`msp_policy_sdk::export_policy!`",
        ),
    ];
    let mut found = Vec::new();
    for (page, text) in all_pages() {
        for (i, line) in text.lines().enumerate() {
            let at = format!("{}:{}", page.display(), i + 1);
            for (gone, instead) in GONE {
                if line.contains(gone) {
                    found.push(format!("{at}: {gone} (the walkthrough uses {instead})"));
                }
            }
            if line.contains("kubectl apply --server-side")
                && line.trim_end().ends_with("-f -")
                && !line.contains("--force-conflicts")
            {
                found.push(format!(
                    "{at}: an apply of a piped object without --force-conflicts (it fails on a \
                     ConfigMap first made with kubectl create)"
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
