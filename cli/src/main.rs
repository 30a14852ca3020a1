//! `kubectl-sluice`: the kubectl plugin for Sluice policy authors, approvers and auditors.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approvals;
mod audit_verify;
mod checkpoints;
mod evidence;
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
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Approve a pending AccessRequest, as the Kubernetes user of the current context.
    Approve(approvals::DecideArgs),
    /// Deny a pending AccessRequest, as the Kubernetes user of the current context.
    Deny(approvals::DecideArgs),
    /// List AccessRequests, pending first.
    Requests(approvals::RequestsArgs),
    /// Evidence packages for auditors.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
}

#[derive(Subcommand)]
enum EvidenceCommand {
    /// Export policies, Connections, AccessRequests, the verified audit and
    /// statistics for a period, with a SOC 2 mapping and an HTML report.
    Export(Box<evidence::ExportArgs>),
    /// Re-check an exported package offline (exit 0 intact, 1 altered, 2 unreadable).
    Verify(evidence::VerifyArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an audit log's hash chain (exit 0 intact, 1 tampered, 2 unreadable).
    Verify(audit_verify::VerifyArgs),
    /// Print a Connection's signed checkpoint history, as `verify --checkpoints` reads it.
    Checkpoints(checkpoints::CheckpointsArgs),
    /// Print the operator's published checkpoint keys, as `verify --jwks` reads them.
    Jwks(checkpoints::JwksArgs),
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
        Command::Policy(PolicyCommand::Eval(args)) => {
            policy_eval::run(&args).map_err(|e| e.to_string())
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            audit_verify::run(&args).map_err(|e| e.to_string())
        }
        Command::Audit(AuditCommand::Checkpoints(args)) => {
            checkpoints::checkpoints(&args).map_err(|e| e.to_string())
        }
        Command::Audit(AuditCommand::Jwks(args)) => {
            checkpoints::jwks(&args).map_err(|e| e.to_string())
        }
        Command::Approve(args) => {
            return cluster(approvals::decide(&args, sluice_crds::Verdict::Approve));
        }
        Command::Deny(args) => {
            return cluster(approvals::decide(&args, sluice_crds::Verdict::Deny));
        }
        Command::Requests(args) => return cluster(approvals::requests(&args)),
        Command::Evidence(EvidenceCommand::Export(args)) => {
            evidence::export(&args).map_err(|e| e.to_string())
        }
        Command::Evidence(EvidenceCommand::Verify(args)) => {
            evidence::verify(&args).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The cluster commands' errors (a refusal by the API server or the
/// operator's webhook included) are one line on stderr and exit 1.
fn cluster(result: Result<ExitCode, approvals::ApprovalsError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
