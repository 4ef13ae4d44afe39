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
    Run(Box<msp_operator::lifecycle::flags::RunArgs>),
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
            runtime.block_on(msp_operator::lifecycle::run::run(*args))?;
        }
        Command::Crdgen { output } => {
            let yaml = msp_operator::state::crd::crd_yaml().context("rendering the CRD")?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{yaml}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
