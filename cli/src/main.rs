//! `kubectl-sluice`: the kubectl plugin for Sluice policy authors, approvers and auditors.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod policy_eval;

/// Sluice: identity-aware access to databases and APIs for machine identities.
#[derive(Parser)]
#[command(name = "kubectl-sluice", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with AccessPolicies before applying them.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Decide a SQL statement or HTTP request as the sidecar would, from manifests
    /// on disk, and print the decision as JSON.
    Eval(policy_eval::EvalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(PolicyCommand::Eval(args)) => policy_eval::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
