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
    /// Read-only looks at what the operator keeps.
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// Print the MayastorPool CRD as YAML, or write it to a file.
    Crdgen {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PoolsCommand {
    /// List the held pools: pools whose MayastorPool was deleted but that are
    /// kept because they hold replicas, snapshots or clones (or could not be
    /// checked), from the ledger ConfigMaps. Writes nothing.
    Held {
        /// The operator's namespace, where the ledger is.
        #[arg(long, env = "POD_NAMESPACE", default_value = "mayastor")]
        operator_namespace: String,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(msp_operator::lifecycle::run::run(*args))?;
        }
        Command::Pools(PoolsCommand::Held { operator_namespace }) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let entries = runtime.block_on(async {
                let client = kube::Client::try_default().await.context(
                    "connecting to the API server (KUBECONFIG, ~/.kube/config or in-cluster)",
                )?;
                let ledger =
                    msp_operator::state::ledger::Ledger::load(client, &operator_namespace).await?;
                anyhow::Ok(ledger.all())
            })?;
            print!("{}", msp_operator::nodes::data_safety::held_table(&entries));
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
