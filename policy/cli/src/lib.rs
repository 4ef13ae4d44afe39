//! `msp-policy …`: tools for policy authors (like kwctl for
//! Kubewarden). `check` runs exactly the validation the operator runs before
//! swapping a module in; `eval` runs one decision on an observation; `test`
//! runs a cases file; `diff` shows where two policies decide differently;
//! `bench` times decisions on the operator's path; `componentize` wraps an
//! author's core module into the component the operator loads; `keygen`,
//! `sign` and `verify` make and check the detached signature an operator
//! with `--policy-trust-secret` requires.
//!
//! Exit codes, the same for every command: 0 done (passed, no differences),
//! 1 the answer is no (`check` refused the module, a `test` case failed,
//! `diff` found differences, `verify` refused the signature), 2 the command could not run (unreadable or
//! invalid file, a policy the operator would refuse for `eval`, `test`,
//! `diff` and `bench`).

mod bench;
mod cases;
mod diff;
mod partial;
mod sign;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use msp_policy_sdk::model::Observation;

use msp_policy_engine::sample::Metadata;
use msp_policy_engine::{CheckReport, Contract, Limits, PolicySource, bundled, check, decide_with};

/// The word that names the default policy embedded in the binary wherever a
/// policy file is expected (write `./bundled` for a file of that name).
pub const BUNDLED: &str = "bundled";

/// The answer is no: refused, a case failed, the policies differ.
const EXIT_NO: u8 = 1;
/// The command could not run.
const EXIT_TROUBLE: u8 = 2;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy component as the operator would before loading it.
    ///
    /// Size, header, no imports, contract version, conformance self-test.
    /// Exit 1 when the module would be refused, 2 when it cannot be read.
    Check {
        /// The policy component (.wasm), or `bundled` for the default policy.
        file: PathBuf,
    },
    /// Wrap the core module a policy crate builds for wasm32-unknown-unknown
    /// into the component the operator loads, then check it as `check` does.
    ///
    /// Exit 1 when the component would be refused, 2 when the module cannot
    /// be read or wrapped.
    Componentize {
        /// The core module (target/wasm32-unknown-unknown/release/<crate>.wasm).
        core: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Run one decision and print it as JSON.
    Eval {
        /// The policy component (.wasm), or `bundled` for the default policy.
        file: PathBuf,
        /// The observation as JSON (camelCase fields, as in the WIT); `-` reads standard input.
        #[arg(long)]
        observation: PathBuf,
    },
    /// Run a policy over test cases (YAML) and report each case pass or fail.
    ///
    /// Each decision is compared with the case's expected fields. A case gives a partial observation
    /// (what differs from a named start) and any of action, state, reason,
    /// reasonContains, requeueAfterMs, event (see policy/README.md).
    /// Exit 0 when every case passes, 1 when one fails, 2 when the file or
    /// the policy cannot be used.
    #[command(after_help = CASES_HELP)]
    Test {
        /// The policy component (.wasm), or `bundled` for the default policy.
        file: PathBuf,
        /// The cases (YAML).
        cases: PathBuf,
    },
    /// Show where two policies decide differently, over generated observations.
    ///
    /// The observations where they differ are grouped by what differs, with the smallest
    /// example of each group as JSON for `policy eval`. `→` reads from FILE
    /// (or the --against policy) to OTHER (or FILE). Exit 0 when they agree
    /// everywhere, 1 when they differ, 2 when a policy cannot be used.
    Diff {
        /// The policy component (.wasm), or `bundled`.
        file: PathBuf,
        /// The policy to compare with.
        #[arg(required_unless_present = "against", conflicts_with = "against")]
        other: Option<PathBuf>,
        /// Compare FILE with the default policy embedded in the binary
        /// (reported as the first side: bundled → FILE).
        #[arg(long, value_enum)]
        against: Option<Against>,
        /// Observations to generate.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Seed of the generator: the same seed gives the same observations and report.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write each group's example observation to DIR/N.json.
        #[arg(long, value_name = "DIR")]
        examples: Option<PathBuf>,
        /// The policy's cases file(s): every label and annotation key (and
        /// value) a case names is drawn too.
        #[arg(long, value_name = "CASES.yaml")]
        cases: Vec<PathBuf>,
        /// A label key the observations carry (besides `team`), with
        /// VALUE, else with "true", "false" and "".
        #[arg(long, value_name = "KEY[=VALUE]")]
        label: Vec<String>,
        /// An annotation key the observations carry (besides
        /// `example.com/retain`), as --label.
        #[arg(long, value_name = "KEY[=VALUE]")]
        annotation: Vec<String>,
    },
    /// Make an Ed25519 key pair (PEM) for signing policies.
    ///
    /// The public key goes into the trust Secret the operator is given
    /// (--policy-trust-secret); the secret key stays with whoever signs.
    Keygen {
        /// Where to write the secret key (never overwritten).
        #[arg(long)]
        secret_key: PathBuf,
        /// Where to write the public key (never overwritten).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Sign a policy component: a detached signature over its exact bytes.
    ///
    /// The module is checked as `check` does first: a module the operator
    /// would refuse is not signed (exit 1). The signature goes beside the
    /// module in its ConfigMap, under the module's key with `.sig` added.
    Sign {
        /// The policy component (.wasm), or `bundled`.
        file: PathBuf,
        /// The secret key (PEM, from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (default: FILE.sig).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Verify a policy's detached signature as the operator does.
    ///
    /// Exit 0 when one of the public keys signed these exact bytes, 1 when
    /// the operator would refuse it (and why: the cause is the Event reason
    /// it would give), 2 when a file cannot be read or a key is not one.
    Verify {
        /// The policy component (.wasm), or `bundled`.
        file: PathBuf,
        /// A trusted public key (PEM); repeat for several, as the trust
        /// Secret's entries.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// The signature (default: FILE.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Time a policy's decisions: p50, p99, mean and max per decision.
    ///
    /// Decisions go through the engine the operator uses
    /// (PolicyEngine::decide on a tokio runtime), over generated observations.
    Bench {
        /// The policy component (.wasm), or `bundled`.
        file: PathBuf,
        /// Timed decisions.
        #[arg(long, default_value_t = 10_000)]
        iterations: usize,
        /// Seed of the observation generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// What `diff --against` compares with.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Against {
    /// The default policy embedded in this binary.
    Bundled,
}

const CASES_HELP: &str = "\
A cases file:
  defaults: {pool: {name: data}}     # optional, merged into every case first
  cases:
    - name: a deleted pool in the ledger is destroyed
      start: online                  # new (default), pending, online, degraded, faulted, offline, empty
      observation: {pool: {deleted: true}}
      expect: {action: destroy, reasonContains: destroying, requeueAfterMs: 1000}
Starts: new is a resource not on its node yet, on a labelled node whose storage node is
registered, heartbeating and listing its pools; online (degraded …) is a pool created earlier,
listed online, in the ledger; empty has every field at its zero value. `reported: {state: faulted}`
and `lastOperation: {action: destroy, error: {kind: internal}, failures: 2, agoMs: 500}` fill
the rest from templates. `requeueAfterMs: null` / `event: null` expect none.";

/// Runs a `policy` command; errors are printed here, as the exit code says
/// what kind of failure it was.
pub fn run(command: PolicyCommand) -> ExitCode {
    match execute(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_TROUBLE)
        }
    }
}

fn execute(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let limits = Limits::default();
    match command {
        PolicyCommand::Check { file } => {
            let (bytes, source) = module_bytes(&file)?;
            let report = match check(&bytes, source, &limits) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!(
                        "FAIL {}: the operator would refuse this module: {:#}",
                        file.display(),
                        anyhow::Error::from(e)
                    );
                    return Ok(ExitCode::from(EXIT_NO));
                }
            };
            print_check(&file, &report, &limits);
        }
        PolicyCommand::Componentize { core, output } => {
            let component = msp_policy_engine::componentize::componentize(&read_module(&core)?)
                .with_context(|| format!("{}", core.display()))?;
            let report = match check(&component, PolicySource::File, &limits) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!(
                        "FAIL {}: the operator would refuse its component: {:#}",
                        core.display(),
                        anyhow::Error::from(e)
                    );
                    return Ok(ExitCode::from(EXIT_NO));
                }
            };
            std::fs::write(&output, &component)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "wrote {} ({} bytes): {} {}, sha256 {}",
                output.display(),
                component.len(),
                report.policy.name,
                report.policy.version,
                report.policy.sha256
            );
        }
        PolicyCommand::Eval { file, observation } => {
            let policy = Policy::load(&file, &limits)?;
            let obs = read_observation(&observation)?;
            let decision =
                decide_with(policy.report.compiled(), &obs, &limits).context("deciding")?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
        }
        PolicyCommand::Test { file, cases } => {
            let policy = Policy::load(&file, &limits)?;
            let text = std::fs::read_to_string(&cases)
                .with_context(|| format!("reading {}", cases.display()))?;
            let prepared = cases::prepare(&text).with_context(|| format!("{}", cases.display()))?;
            println!(
                "policy test: {} with {} cases from {}",
                policy.label(),
                prepared.len(),
                cases.display()
            );
            let results: Vec<(&str, cases::Outcome)> = prepared
                .iter()
                .map(|case| {
                    let outcome =
                        match decide_with(policy.report.compiled(), &case.observation, &limits) {
                            Err(e) => {
                                cases::Outcome::Failed(format!("{:#}", anyhow::Error::from(e)))
                            }
                            Ok(d) => match case.expect.mismatches(&d) {
                                m if m.is_empty() => cases::Outcome::Pass,
                                m => cases::Outcome::Mismatch(m),
                            },
                        };
                    (case.name.as_str(), outcome)
                })
                .collect();
            let (report, failed) = cases::report(&results);
            print!("{report}");
            if failed > 0 {
                return Ok(ExitCode::from(EXIT_NO));
            }
        }
        PolicyCommand::Diff {
            file,
            other,
            against,
            count,
            seed,
            examples,
            cases: case_files,
            label,
            annotation,
        } => {
            let metadata = diff_metadata(&case_files, &label, &annotation)?;
            let (from, to) = match (other, against) {
                (Some(other), _) => (
                    Policy::load(&file, &limits)?,
                    Policy::load(&other, &limits)?,
                ),
                (None, Some(Against::Bundled)) => (
                    Policy::load(Path::new(BUNDLED), &limits)?,
                    Policy::load(&file, &limits)?,
                ),
                (None, None) => anyhow::bail!("give a second policy or --against bundled"),
            };
            if let Some(dir) = &examples {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let generate = diff::Generate {
                count,
                seed,
                metadata: &metadata,
            };
            let run = diff::run(
                &from.side(),
                &to.side(),
                &generate,
                &limits,
                examples.as_deref(),
            )?;
            print!("{}", run.report);
            if run.differs {
                return Ok(ExitCode::from(EXIT_NO));
            }
        }
        PolicyCommand::Keygen {
            secret_key,
            public_key,
        } => sign::keygen(&secret_key, &public_key)?,
        PolicyCommand::Sign { file, key, output } => {
            let (bytes, source) = module_bytes(&file)?;
            if let Err(e) = check(&bytes, source, &limits) {
                eprintln!(
                    "FAIL {}: the operator would refuse this module, so it is not signed: {:#}",
                    file.display(),
                    anyhow::Error::from(e)
                );
                return Ok(ExitCode::from(EXIT_NO));
            }
            let output = output.unwrap_or_else(|| sign::default_signature_path(&file));
            sign::sign(&bytes, &file.display().to_string(), &key, &output)?;
        }
        PolicyCommand::Verify {
            file,
            key,
            signature,
        } => {
            let (bytes, _) = module_bytes(&file)?;
            let signature = signature.unwrap_or_else(|| sign::default_signature_path(&file));
            match sign::verify(&bytes, &signature, &key)? {
                Ok((signers, took)) => println!(
                    "VERIFIED {} (sha256 {}, {} bytes): signed by {} (checked in {:.3} ms)",
                    file.display(),
                    sign::hex_sha256(&bytes),
                    bytes.len(),
                    signers.join(", "),
                    took.as_secs_f64() * 1000.0
                ),
                Err(why) => {
                    eprintln!(
                        "FAIL {}: the operator would refuse it: {why}",
                        file.display()
                    );
                    return Ok(ExitCode::from(EXIT_NO));
                }
            }
        }
        PolicyCommand::Bench {
            file,
            iterations,
            seed,
        } => {
            let (bytes, source) = module_bytes(&file)?;
            print!(
                "{}",
                bench::run(
                    &bytes,
                    source,
                    &file.display().to_string(),
                    iterations,
                    seed
                )?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A checked policy and where it came from.
struct Policy {
    report: CheckReport,
    from: String,
}

impl Policy {
    /// Reads and checks the module at `path` (`bundled`: the embedded default).
    fn load(path: &Path, limits: &Limits) -> anyhow::Result<Policy> {
        let (bytes, source) = module_bytes(path)?;
        let report = check(&bytes, source, limits).with_context(|| {
            format!("{}: the operator would refuse this module", path.display())
        })?;
        Ok(Policy {
            report,
            from: path.display().to_string(),
        })
    }

    fn label(&self) -> String {
        format!(
            "{} {} ({})",
            self.report.policy.name, self.report.policy.version, self.from
        )
    }

    fn side(&self) -> diff::Side<'_> {
        diff::Side {
            label: self.label(),
            name: self.report.policy.name.clone(),
            compiled: self.report.compiled(),
        }
    }
}

fn module_bytes(path: &Path) -> anyhow::Result<(Vec<u8>, PolicySource)> {
    if path == Path::new(BUNDLED) {
        return Ok((bundled::DEFAULT_COMPONENT.to_vec(), PolicySource::Bundled));
    }
    Ok((read_module(path)?, PolicySource::File))
}

fn print_check(file: &Path, report: &CheckReport, limits: &Limits) {
    println!("PASS {}", file.display());
    println!(
        "  policy:    {} {}",
        report.policy.name, report.policy.version
    );
    println!("  sha256:    {}", report.policy.sha256);
    println!(
        "  size:      {} bytes (limit {})",
        report.size, limits.module_bytes
    );
    println!(
        "  compile:   {:.1} ms",
        report.compile_time.as_secs_f64() * 1000.0
    );
    println!(
        "  contract:  {} (this host runs {}; imports nothing)",
        report.policy.contract,
        Contract::accepted()
    );
    println!(
        "  limits:    fuel {} / call, deadline {} ms, memory {} MiB",
        limits.fuel,
        limits.deadline.as_millis(),
        limits.memory_bytes >> 20
    );
    println!("  self-test: {} cases passed", report.cases.len());
    for case in &report.cases {
        let d = &case.decision;
        println!(
            "    ok  {:<28} {:<8} {:<9} {:>5} µs  {}",
            case.case,
            cases::name(&d.action),
            cases::name(&d.state),
            case.micros,
            d.reason
        );
    }
}

/// The label and annotation keys `diff` draws: the generator's own, every
/// one the cases files name (with the values they give), and the flags'.
fn diff_metadata(
    case_files: &[PathBuf],
    labels: &[String],
    annotations: &[String],
) -> anyhow::Result<Metadata> {
    let mut metadata = Metadata::default();
    for file in case_files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let prepared = cases::prepare(&text).with_context(|| format!("{}", file.display()))?;
        for case in &prepared {
            let pool = &case.observation.pool;
            for (k, v) in &pool.labels {
                Metadata::add(&mut metadata.labels, k, [v.clone()]);
            }
            for (k, v) in &pool.annotations {
                Metadata::add(&mut metadata.annotations, k, [v.clone()]);
            }
        }
    }
    for (flags, map) in [
        (labels, &mut metadata.labels),
        (annotations, &mut metadata.annotations),
    ] {
        for flag in flags {
            match flag.split_once('=') {
                Some((k, v)) => Metadata::add(map, k, [v.to_string()]),
                None => Metadata::add(map, flag, []),
            }
        }
    }
    metadata.fill_values();
    Ok(metadata)
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_observation(path: &Path) -> anyhow::Result<Observation> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the observation from standard input")?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let obs: Observation = serde_json::from_str(&text)
        .with_context(|| format!("parsing the observation {}", path.display()))?;
    obs.possible().map_err(|why| {
        anyhow::anyhow!(
            "{}: the operator never makes this observation: {why}",
            path.display()
        )
    })?;
    Ok(obs)
}
