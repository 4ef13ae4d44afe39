//! `msp-operator`: the operator binary. This file only parses the command line
//! and wires the library's parts together.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "msp-operator", version, about = "MayastorPool operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: watch MayastorPools and Nodes, serve node
    /// registration, make pools real on storage nodes.
    // Boxed: the flags dwarf the other variants.
    Run(Box<msp_operator::flags::RunArgs>),
    /// Tools for policy authors: check a policy component, evaluate a
    /// decision, run test cases, diff two policies, benchmark one.
    Policy {
        #[command(subcommand)]
        command: msp_operator::policy_cli::PolicyCommand,
    },
    /// Print the MayastorPool CRD as YAML, or write it to a file.
    Crdgen {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(msp_operator::run::run(*args))?;
        }
        Command::Policy { command } => return Ok(msp_operator::policy_cli::run(command)),
        Command::Crdgen { output } => {
            let yaml = msp_operator::crd::crd_yaml().context("rendering the CRD")?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{yaml}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
