//! `msp-policy`: the policy author's tool, a binary of its own as kwctl is
//! apart from Kubewarden's policy-server. The operator binary keeps only
//! what it runs.

use std::process::ExitCode;

use clap::Parser;
use msp_policy_cli::PolicyCommand;

#[derive(Parser)]
#[command(
    name = "msp-policy",
    version,
    about = "Tools for MayastorPool policy authors: check, componentize, eval, test, diff, bench, keygen, sign, verify"
)]
struct Cli {
    #[command(subcommand)]
    command: PolicyCommand,
}

fn main() -> ExitCode {
    msp_policy_cli::run(Cli::parse().command)
}
