//! `msp-operator policy …`: tools for policy authors (like kwctl for
//! Kubewarden). `check` runs exactly the validation the operator runs before
//! swapping a module in; `eval` runs one decision on an observation.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use msp_policy_sdk::model::Observation;

use msp_policy_engine::{Contract, Limits, PolicySource, check, decide_with};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy component as the operator would before loading it:
    /// size, header, no imports, contract version, conformance self-test.
    /// Exits non-zero when the module would be refused.
    Check {
        /// The policy component (.wasm).
        file: PathBuf,
    },
    /// Run one decision and print it as JSON.
    Eval {
        /// The policy component (.wasm).
        file: PathBuf,
        /// The observation as JSON (camelCase fields, as in the WIT); `-` reads standard input.
        #[arg(long)]
        observation: PathBuf,
    },
}

pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    let limits = Limits::default();
    match command {
        PolicyCommand::Check { file } => {
            let bytes = read_module(&file)?;
            let report = check(&bytes, PolicySource::File, &limits).with_context(|| {
                format!(
                    "FAIL {}: the operator would refuse this module",
                    file.display()
                )
            })?;
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
                    format!("{:?}", d.action).to_lowercase(),
                    format!("{:?}", d.state).to_lowercase(),
                    case.micros,
                    d.reason
                );
            }
        }
        PolicyCommand::Eval { file, observation } => {
            let bytes = read_module(&file)?;
            let obs = read_observation(&observation)?;
            let report = check(&bytes, PolicySource::File, &limits).with_context(|| {
                format!("{}: the operator would refuse this module", file.display())
            })?;
            let decision = decide_with(report.compiled(), &obs, &limits).context("deciding")?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
        }
    }
    Ok(())
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
    serde_json::from_str(&text)
        .with_context(|| format!("parsing the observation {}", path.display()))
}
