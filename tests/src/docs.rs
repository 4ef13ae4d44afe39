//! Reading the project's Markdown pages for the docs check
//! (`tests/tests/docs.rs`): which pages there are, their links, the flags,
//! metrics and repository paths they name, so a page that drifts from the
//! code fails a test instead of misleading an admin.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The pages checked, relative to the root: the README, every page under
/// `docs/`, and the READMEs of `deploy/` and `policy/`.
pub fn pages(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages.push(PathBuf::from("deploy/README.md"));
    pages.push(PathBuf::from("policy/README.md"));
    Ok(pages)
}

/// Inline code spans (`` `…` ``) outside fenced blocks, with their line number.
pub fn code_spans(text: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    for (n, line) in prose_lines(text) {
        let mut parts = line.split('`');
        parts.next();
        while let (Some(span), Some(_)) = (parts.next(), parts.next()) {
            spans.push((n, span.to_string()));
        }
    }
    spans
}

/// Lines outside fenced code blocks (1-based numbers).
pub fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The section under the heading line `heading` (e.g. `## Your first
/// policy`), up to the next heading of the same or a higher level: its
/// first line's number (1-based) and its text.
pub fn section(text: &str, heading: &str) -> Option<(usize, String)> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let lines: Vec<&str> = text.lines().collect();
    let start = prose_lines(text)
        .into_iter()
        .find(|(_, l)| l.trim_end() == heading)?
        .0;
    let end = prose_lines(text)
        .into_iter()
        .find(|(n, l)| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            *n > start && hashes > 0 && hashes <= level && l[hashes..].starts_with(' ')
        })
        .map_or(lines.len(), |(n, _)| n - 1);
    Some((start, lines[start - 1..end].join("\n")))
}

/// A fenced code block: the number of its opening line, its info string
/// split into words (the language first) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    pub line: usize,
    pub info: Vec<String>,
    pub body: String,
}

impl Fenced {
    /// The language, the info string's first word (`""` when none).
    pub fn lang(&self) -> &str {
        self.info.first().map_or("", String::as_str)
    }
}

/// The fenced code blocks of `text`, whose first line is number `first`.
pub fn fenced_blocks(text: &str, first: usize) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    let mut open: Option<Fenced> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(_), Some(block)) => blocks.push(block),
            (Some(info), None) => {
                open = Some(Fenced {
                    line: first + i,
                    info: info.split_whitespace().map(str::to_string).collect(),
                    body: String::new(),
                })
            }
            (None, Some(mut block)) => {
                block.body.push_str(line);
                block.body.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Markdown link targets `[text](target)` outside fenced blocks.
pub fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push((n, rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to
/// dashes.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings.
pub fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect()
}

/// The flags in the first cell of each row of a table of flags (rows that
/// start with `` | `--``).
pub fn table_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        if !line.starts_with("| `--") {
            continue;
        }
        let cell = line.split('|').nth(1).unwrap_or_default();
        for (_, span) in code_spans(cell) {
            flags.insert(span);
        }
    }
    flags
}

/// The long flags a clap `--help` lists, one per option line (`-h, --help`
/// and `--version` left out).
pub fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            l.split([' ', ','])
                .find(|w| w.starts_with("--"))
                .map(str::to_string)
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// Metric names a page names: code spans that are a whole `msp_…` name,
/// with or without `{labels}`.
pub fn metric_names(text: &str) -> Vec<(usize, String)> {
    code_spans(text)
        .into_iter()
        .filter_map(|(n, span)| {
            let name = span.split('{').next()?.to_string();
            let whole = name.starts_with("msp_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && (span == name || span.ends_with('}'));
            whole.then_some((n, name))
        })
        .collect()
}

/// What the Prometheus text exposition registers: per family, the name an
/// admin queries (`_total` for a counter) and every sample name it may have.
pub fn exported_metrics(exposition: &str) -> Vec<(String, Vec<String>)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            Some(match kind {
                "counter" => (format!("{name}_total"), vec![format!("{name}_total")]),
                "histogram" => (
                    name.to_string(),
                    ["", "_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                ),
                _ => (name.to_string(), vec![name.to_string()]),
            })
        })
        .collect()
}

/// The operator's metrics with a series in every family: a family without
/// one is not in the exposition at all (prometheus-client), so each is used
/// once here, through the methods the operator calls.
pub fn exposition_with_every_family() -> String {
    use msp_operator::state::crd::PoolState;
    use msp_policy_engine::compare::Field;
    use msp_policy_engine::{ActivePolicy, PolicySource};
    let policy = ActivePolicy {
        name: "msp-default".into(),
        version: "0.1.0".into(),
        sha256: "0123456789abcdef".into(),
        source: PolicySource::ConfigMap,
        contract: "0.2.0".into(),
    };
    let m = msp_operator::metrics::Metrics::new();
    drop(m.reconcile_timer());
    m.reconcile_failure("kube");
    m.reconcile_step("decide", std::time::Duration::from_millis(1));
    m.set_pool("mayastor", "p", PoolState::Online, Some(1), Some(0));
    m.policy_failure("trap");
    m.set_policy(&policy);
    m.rail_refusal("destroy", "live-resource");
    m.node_operation("create", true);
    m.status_write();
    m.policy_reload("loaded");
    m.registration_refused("unknown_node");
    m.set_leader(true);
    m.set_pools_held(&[msp_operator::state::ledger::LedgerEntry {
        node: "node1".into(),
        held: Some(Default::default()),
        ..Default::default()
    }]);
    m.shadow.decision(&[Field::Action]);
    m.shadow.dropped();
    m.shadow.reload("loaded");
    m.shadow.set_candidate(Some(&policy));
    m.encode().expect("encoding the metrics")
}

/// The metric families the operator's code registers: every
/// `.register("name", …)` with a literal name in the Rust files under `dir`
/// (recursively, so a module may move), prefixed `msp_` as its registry does.
pub fn registered_metric_families(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            if !text.contains("prometheus_client") {
                continue;
            }
            let mut at = 0;
            while let Some(i) = text[at..].find(".register(") {
                at += i + ".register(".len();
                let rest = text[at..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let name: String = rest.chars().take_while(|c| *c != '"').collect();
                if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    names.insert(format!("msp_{name}"));
                }
            }
        }
    }
    Ok(names)
}

/// Repository paths a page names: words (in prose and code blocks) that
/// start with a top-level folder of the repository.
pub fn repo_paths(text: &str) -> Vec<(usize, String)> {
    const TOP: &[&str] = &[
        "deploy/", "docs/", "host/", "policy/", "proto/", "tests/", "wit/", ".ci/",
    ];
    // kubectl verbs whose argument `deploy/NAME` is a Deployment, not a path.
    const RESOURCE_VERBS: &[&str] = &["port-forward", "logs", "exec", "scale", "status", "restart"];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut previous = "";
        for word in line.split(|c: char| {
            c.is_whitespace() || matches!(c, '`' | '(' | ')' | '[' | ']' | '"' | '\'' | ',' | '|')
        }) {
            let path = word.split('#').next().unwrap_or_default();
            let path = path.trim_end_matches(['.', ',', ':', ';']);
            if TOP.iter().any(|t| path.starts_with(t))
                && !path.contains('<')
                && !RESOURCE_VERBS.contains(&previous)
            {
                out.push((i + 1, path.to_string()));
            }
            if !word.is_empty() {
                previous = word;
            }
        }
    }
    out
}

/// Whether `path` (relative, may hold one `*` in its last part) names
/// something that exists under `base`. A gitignored build output (`*.wasm`)
/// counts when its folder exists.
pub fn path_exists(base: &Path, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let full = base.join(path);
    if full.exists() {
        return true;
    }
    let (dir, last) = match path.rsplit_once('/') {
        Some((d, l)) => (base.join(d), l),
        None => (base.to_path_buf(), path),
    };
    if path.ends_with(".wasm") {
        return dir.is_dir();
    }
    let Some((prefix, suffix)) = last.split_once('*') else {
        return false;
    };
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spans_links_anchors_and_flags() {
        let page = "# Who may register\nSee [x](ops.md#who-may-register) and `--a`.\n```\n`--not-prose`\n```\n| `--node-deadline` | `10s` | what |\n";
        assert_eq!(
            links(page),
            vec![(2, "ops.md#who-may-register".to_string())]
        );
        assert!(anchors(page).contains("who-may-register"));
        assert_eq!(anchor("1. Images"), "1-images");
        assert_eq!(
            anchor("The ledger: critical state"),
            "the-ledger-critical-state"
        );
        assert_eq!(
            table_flags(page).into_iter().collect::<Vec<_>>(),
            vec!["--node-deadline"]
        );
        let spans: Vec<String> = code_spans(page).into_iter().map(|(_, s)| s).collect();
        assert!(spans.contains(&"--a".to_string()));
        assert!(!spans.contains(&"--not-prose".to_string()));
    }

    #[test]
    fn reads_help_and_metrics() {
        let help = "Usage: msp-operator run [OPTIONS]\n\nOptions:\n      --namespace <NAMESPACE>\n          Namespace (default: --policy-key)\n  -h, --help\n";
        assert_eq!(
            help_flags(help).into_iter().collect::<Vec<_>>(),
            vec!["--namespace"]
        );
        let names: Vec<String> = metric_names(
            "`msp_pool_state{a,b}`, `msp_operator=debug`, `msp_policy::decide`, `msp_leader`",
        )
        .into_iter()
        .map(|(_, n)| n)
        .collect();
        assert_eq!(names, vec!["msp_pool_state", "msp_leader"]);
        let exported = exported_metrics(
            "# HELP msp_reconcile x\n# TYPE msp_reconcile counter\n# TYPE msp_leader gauge\n# TYPE msp_t histogram\n",
        );
        assert_eq!(exported[0].0, "msp_reconcile_total");
        assert_eq!(exported[1].0, "msp_leader");
        assert!(exported[2].1.contains(&"msp_t_count".to_string()));
    }

    #[test]
    fn reads_a_section_and_its_blocks() {
        let page = "# P\n## A\ntext\n```sh eventually\nls\n## not a heading\n```\n### sub\n```toml Cargo.toml\n[x]\n```\n## B\n```sh\nno\n```\n";
        let (first, text) = section(page, "## A").expect("section A");
        assert_eq!(first, 2);
        assert!(!text.contains("## B"), "{text}");
        let blocks = fenced_blocks(&text, first);
        assert_eq!(blocks.len(), 2, "{blocks:?}");
        assert_eq!(blocks[0].line, 4);
        assert_eq!(blocks[0].info, vec!["sh", "eventually"]);
        assert_eq!(blocks[0].body, "ls\n## not a heading\n");
        assert_eq!((blocks[1].lang(), blocks[1].line), ("toml", 9));
        assert_eq!(section(page, "## C"), None);
    }

    #[test]
    fn finds_repository_paths() {
        let paths: Vec<String> = repo_paths("apply `deploy/base`, (tests/demo.sh). ../x/deploy/no /dev/sdb [l](docs/a.md#b) logs deploy/op wit/v<v>/")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(paths, vec!["deploy/base", "tests/demo.sh", "docs/a.md"]);
    }
}
