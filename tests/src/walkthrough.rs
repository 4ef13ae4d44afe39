//! `policy/README.md`'s "Your first policy" as the shell script CI runs
//! (`tests/tests/walkthrough.rs`), so that the walkthrough cannot drift from
//! what the tools and the operator do.
//!
//! The section's fenced blocks, in order, become one bash script:
//! - `sh`: run as written (`set -euo pipefail`: any failure ends the run);
//! - `sh eventually`: a check of what the operator does next, run in a bash
//!   of its own until it exits 0, for up to [`EVENTUALLY`];
//! - `sh exits=N`: run in a bash of its own, which must exit with N (`diff`
//!   answers 1 when the policies differ);
//! - `sh elsewhere`: what the reader does once or in another shell (install
//!   `msp-policy`, start the demo): replaced by what the test does instead
//!   ([`Provided`]), and a block the test does not know is an error;
//! - `toml PATH`, `rust PATH`, `yaml PATH`: the file PATH, relative to the
//!   shell's directory; the first block of a path writes it, later ones add
//!   to it;
//! - `console`, `text`: output shown to the reader, not run.
//!
//! Words after the language are not shown by Markdown renderers, so the
//! marks cost the reader nothing.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::docs;

/// The page and the section that is the walkthrough.
pub const PAGE: &str = "policy/README.md";
pub const HEADING: &str = "## Your first policy";
/// How long an `eventually` block is retried.
pub const EVENTUALLY: Duration = Duration::from_secs(60);

/// One block of the walkthrough, as the script runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Run {
        line: usize,
        body: String,
    },
    Eventually {
        line: usize,
        body: String,
    },
    Exits {
        line: usize,
        status: i32,
        body: String,
    },
    Elsewhere {
        line: usize,
        body: String,
    },
    File {
        line: usize,
        path: String,
        append: bool,
        body: String,
    },
}

/// What the test does in place of the `elsewhere` blocks.
pub struct Provided {
    /// A directory holding `msp-policy` (built by the test).
    pub msp_policy_dir: std::path::PathBuf,
    /// The `export …` lines the running demo printed.
    pub demo_exports: Vec<String>,
}

impl Provided {
    /// The shell text standing in for `elsewhere` block `body`.
    fn instead(&self, line: usize, body: &str) -> Result<String, String> {
        if body.contains("cargo install") && body.contains("policy/cli") {
            return Ok(format!(
                "export PATH={}:$PATH   # msp-policy, built by the test\n",
                shell_quote(&self.msp_policy_dir.to_string_lossy())
            ));
        }
        if body.contains("tests/demo.sh") {
            return Ok(self.demo_exports.join("\n") + "\n");
        }
        Err(format!(
            "{PAGE}:{line}: an `sh elsewhere` block the walkthrough test does not know how to \
             stand in for:\n{body}(teach tests/src/walkthrough.rs, or make it a block CI runs)"
        ))
    }
}

/// The walkthrough's steps, from the text of [`PAGE`].
pub fn plan(page: &str) -> Result<Vec<Step>, String> {
    let (first, text) =
        docs::section(page, HEADING).ok_or_else(|| format!("{PAGE}: no section {HEADING:?}"))?;
    let mut written = HashSet::new();
    let mut steps = Vec::new();
    for block in docs::fenced_blocks(&text, first) {
        let line = block.line;
        let body = block.body.clone();
        let marks: Vec<&str> = block.info.iter().skip(1).map(String::as_str).collect();
        let step = match (block.lang(), marks.as_slice()) {
            ("sh", []) => Step::Run { line, body },
            ("sh", ["eventually"]) => Step::Eventually { line, body },
            ("sh", ["elsewhere"]) => Step::Elsewhere { line, body },
            ("sh", [exits]) if exits.starts_with("exits=") => {
                let status = exits["exits=".len()..]
                    .parse()
                    .map_err(|_| format!("{PAGE}:{line}: {exits:?} is not exits=N"))?;
                Step::Exits { line, status, body }
            }
            ("toml" | "rust" | "yaml", [path]) => {
                if Path::new(path).is_absolute() || path.split('/').any(|p| p == "..") {
                    return Err(format!("{PAGE}:{line}: {path:?} is outside the crate"));
                }
                Step::File {
                    line,
                    path: path.to_string(),
                    append: !written.insert(path.to_string()),
                    body,
                }
            }
            ("console" | "text", _) => continue,
            _ => {
                return Err(format!(
                    "{PAGE}:{line}: a ```{} block the walkthrough test cannot run: `sh` (with \
                     `eventually`, `exits=N` or `elsewhere`), or `toml`/`rust`/`yaml` with the \
                     file it goes in",
                    block.info.join(" ")
                ));
            }
        };
        steps.push(step);
    }
    if steps.is_empty() {
        return Err(format!("{PAGE}: {HEADING:?} has no blocks"));
    }
    Ok(steps)
}

/// `s` in single quotes for bash.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A heredoc of `body` (its terminator chosen not to occur in it).
fn heredoc(body: &str) -> String {
    let mut end = "WALKTHROUGH_EOF".to_string();
    while body.lines().any(|l| l == end) {
        end.push('_');
    }
    format!("<<'{end}'\n{body}{end}\n")
}

/// The bash script running `steps`, with `provided` in place of the
/// `elsewhere` blocks. Before each block it prints the seconds since the
/// start, the block's place and its text, so a failure's log says which one
/// failed and a run's log how long each took.
pub fn script(steps: &[Step], provided: &Provided) -> Result<String, String> {
    let wait = EVENTUALLY.as_secs();
    let mut out = format!(
        r#"set -euo pipefail
# {PAGE}, "{title}", as CI runs it (tests/src/walkthrough.rs).
eventually() {{  # LINE BODY: retried until it exits 0, for up to {wait} s
  local line=$1 body=$2 deadline=$((SECONDS + {wait}))
  until bash -euo pipefail -c "$body"; do
    if ((SECONDS >= deadline)); then
      echo "walkthrough: {PAGE}:$line still fails after {wait} s" >&2
      return 1
    fi
    sleep 1
  done
}}
exits() {{  # LINE STATUS BODY: must exit with STATUS
  local line=$1 want=$2 body=$3 status=0
  bash -euo pipefail -c "$body" || status=$?
  if [ "$status" != "$want" ]; then
    echo "walkthrough: {PAGE}:$line exited $status, not $want" >&2
    return 1
  fi
}}
"#,
        title = HEADING
            .trim_start_matches("# ")
            .trim_start_matches('#')
            .trim(),
    );
    for step in steps {
        let (line, shown) = match step {
            Step::Run { line, body }
            | Step::Eventually { line, body }
            | Step::Exits { line, body, .. }
            | Step::Elsewhere { line, body }
            | Step::File { line, body, .. } => (line, body),
        };
        let what = match step {
            Step::Run { .. } => "runs".to_string(),
            Step::Eventually { .. } => format!("until it passes, up to {wait} s"),
            Step::Exits { status, .. } => format!("must exit {status}"),
            Step::Elsewhere { .. } => "elsewhere; the test does instead what follows it".into(),
            Step::File { path, append, .. } => {
                format!("{} {path}", if *append { "adds to" } else { "writes" })
            }
        };
        out.push_str(&format!(
            "\nprintf '\\n::: [%ss] %s\\n' \"$SECONDS\" '{PAGE}:{line}, {}'\ncat {}",
            what.replace('\'', ""),
            heredoc(shown)
        ));
        match step {
            Step::Run { body, .. } => out.push_str(body),
            Step::Eventually { line, body } => {
                out.push_str(&format!("eventually {line} {}\n", shell_quote(body)));
            }
            Step::Exits { line, status, body } => {
                out.push_str(&format!("exits {line} {status} {}\n", shell_quote(body)));
            }
            Step::Elsewhere { line, body } => {
                let instead = provided.instead(*line, body)?;
                out.push_str(&format!("cat {}{instead}", heredoc(&instead)));
            }
            Step::File {
                path, append, body, ..
            } => {
                let to = if *append { ">>" } else { ">" };
                out.push_str(&format!("cat {to} {} {}", shell_quote(path), heredoc(body)));
            }
        }
    }
    out.push_str("\nprintf '\\n::: [%ss] the walkthrough ran to its end\\n' \"$SECONDS\"\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE_TEXT: &str = "# P\n## Your first policy\n```sh elsewhere\ncargo install --path x/policy/cli\n```\n```toml Cargo.toml\n[a]\n```\n```toml Cargo.toml\n[b]\n```\n```sh\necho 'hi'\n(sleep 1 && touch ready) &\n```\n```sh eventually\ntest -e ready\n```\n```sh exits=1\nfalse\n```\n```console\n$ out\n```\n## Next\n```sh\nnot run\n```\n";

    fn provided() -> Provided {
        Provided {
            msp_policy_dir: "/bin dir".into(),
            demo_exports: vec!["export KUBECONFIG=/k".into()],
        }
    }

    #[test]
    fn the_section_becomes_steps() {
        let steps = plan(PAGE_TEXT).expect("a plan");
        assert_eq!(steps.len(), 6, "{steps:?}");
        assert!(
            matches!(&steps[1], Step::File { append: false, path, .. } if path == "Cargo.toml")
        );
        assert!(matches!(&steps[2], Step::File { append: true, .. }));
        assert!(matches!(&steps[5], Step::Exits { status: 1, .. }));
        assert!(plan("## Your first policy\n```python\nx\n```\n").is_err());
        assert!(plan("## Your first policy\n```rust\nx\n```\n").is_err());
        assert!(plan("## Your first policy\n```yaml ../x\nx\n```\n").is_err());
        assert!(plan("## Other\n").is_err());
    }

    #[test]
    fn the_script_runs_as_written() {
        let text = script(&plan(PAGE_TEXT).expect("a plan"), &provided()).expect("a script");
        let out = std::process::Command::new("bash")
            .args(["-c", &text])
            .current_dir(tempfile::tempdir().expect("a dir").path())
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{:?}", out.stderr);
        assert!(stdout.contains("hi\n"), "{stdout}");
        assert!(stdout.contains("export PATH='/bin dir':$PATH"), "{stdout}");
        assert!(
            stdout.contains("the walkthrough ran to its end"),
            "{stdout}"
        );
        assert!(!stdout.contains("not run"), "{stdout}");
        let unknown = plan("## Your first policy\n```sh elsewhere\nmake coffee\n```\n");
        assert!(script(&unknown.expect("a plan"), &provided()).is_err());
    }

    #[test]
    fn a_block_that_fails_ends_the_script() {
        for failing in [
            "```sh\nfalse\necho after\n```\n",
            "```sh exits=1\ntrue\n```\n```sh\necho after\n```\n",
            "```sh exits=1\nfalse\n```\n```sh\necho after\n```\n",
        ] {
            let page = format!("## Your first policy\n{failing}");
            let text = script(&plan(&page).expect("a plan"), &provided()).expect("a script");
            let out = std::process::Command::new("bash")
                .args(["-c", &text])
                .output()
                .expect("bash");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let ran_on = stdout.lines().any(|l| l == "after");
            assert_eq!(
                (out.status.success(), ran_on),
                (
                    failing.contains("exits=1\nfalse"),
                    failing.contains("exits=1\nfalse")
                ),
                "{failing}: {stdout}"
            );
        }
    }
}
