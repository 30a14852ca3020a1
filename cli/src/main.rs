//! `kubectl-sluice`: the kubectl plugin for Sluice policy authors, approvers and auditors.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approvals;
mod audit_verify;
mod check;
mod checkpoints;
mod completion;
mod evidence;
mod policy_eval;
mod replay;
mod sessions;
mod status;
mod tail;

/// Sluice: identity-aware access to databases and APIs for machine identities.
#[derive(Parser)]
// Usage lines read `kubectl sluice …`, as kubectl runs the plugin.
#[command(
    name = "kubectl-sluice",
    bin_name = "kubectl sluice",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  kubectl sluice check                      # is Sluice healthy here?
  kubectl sluice status -A                  # what every sidecar holds
  kubectl sluice requests -n shop           # AccessRequests, pending first
  kubectl sluice approve orders-db-7f2c -n shop --reason 'ticket 123'
  kubectl sluice policy eval -f policies/ --as shop/report-job --connection orders-db --sql 'DROP TABLE t'
  kubectl logs deploy/report -c sluice-sidecar | kubectl sluice audit verify -
  kubectl sluice completion --help          # shell completion for bash, zsh, fish and kubectl"
)]
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
    #[command(after_help = "Examples:
  # Approve, saying why (recorded with the decision)
  kubectl sluice approve orders-db-7f2c -n shop --reason 'ticket OPS-123'

  # Approve as another user (needs impersonate rights)
  kubectl sluice approve orders-db-7f2c -n shop --as alice --as-group dba")]
    Approve(approvals::DecideArgs),
    /// Deny a pending AccessRequest, as the Kubernetes user of the current context.
    #[command(after_help = "Examples:
  kubectl sluice deny orders-db-7f2c -n shop --reason 'not during the freeze'")]
    Deny(approvals::DecideArgs),
    /// List AccessRequests, pending first.
    #[command(after_help = "Examples:
  # The current namespace's requests, pending first
  kubectl sluice requests

  # Every namespace, with the full statement and expiry
  kubectl sluice requests -A -o wide

  # For a script, and as they change
  kubectl sluice requests -n shop -o json
  kubectl sluice requests -n shop --watch")]
    Requests(approvals::RequestsArgs),
    /// Check that Sluice is installed and healthy (exit 1 when not), or with
    /// --pre that the cluster is ready for it.
    Check(check::CheckArgs),
    /// Show what each injected pod's sidecar holds: bundle revision, refresh,
    /// expiry, Connections, policies, sessions, refusals.
    Status(status::StatusArgs),
    /// Show the sidecars' decisions live, one line each (from their audit
    /// streams, through `pods/log`).
    Tail(tail::TailArgs),
    /// Evidence packages for auditors.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Print a shell completion script (bash, zsh, fish), or the
    /// kubectl_complete-sluice script kubectl uses to complete `kubectl sluice`.
    Completion(completion::CompletionArgs),
    /// List the sessions of audit logs: identity, pod, Connection, time, recording.
    #[command(after_help = "Examples:
  kubectl sluice sessions --audit audit.jsonl
  kubectl logs deploy/report -c sluice-sidecar | kubectl sluice sessions --audit - --identity shop/report-job")]
    Sessions(sessions::SessionsArgs),
    /// Replay a session from audit logs: statements, decisions and, when the
    /// policy records it, the (masked) results, with their timing.
    #[command(after_help = "Examples:
  kubectl sluice replay 3fa24c1e --audit audit.jsonl --speed 10
  kubectl sluice replay 3fa24c1e --audit audit.jsonl -o json")]
    Replay(replay::ReplayArgs),
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
    #[command(after_help = "Examples:
  # A sidecar's audit stream, straight from its logs
  kubectl logs deploy/report -c sluice-sidecar | kubectl sluice audit verify -

  # A saved log, checked against checkpoints (catches lines cut from the end)
  kubectl sluice audit verify audit.jsonl --checkpoints heads.jsonl --jwks jwks.json")]
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
    // A completion request from a script of `completion bash|zsh|fish`.
    completion::complete_from_env();
    // kubectl's plugin completion (kubectl_complete-sluice) asks with Cobra's
    // hidden `__complete` command; it is not part of the CLI's help.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "__complete") {
        return completion::complete(args.collect());
    }
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
        Command::Sessions(args) => sessions::run(&args).map_err(|e| e.to_string()),
        Command::Replay(args) => replay::run(&args).map_err(|e| e.to_string()),
        Command::Check(args) => return cluster(check::run(&args)),
        Command::Status(args) => return cluster(status::run(&args)),
        Command::Completion(args) => return completion::run(&args),
        Command::Tail(args) => return cluster(tail::run(&args)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A base64url token can begin with `-`; kubectl takes the argument after
    /// `--token` as its value whatever it begins with, and so do we (CI once
    /// drew such a token and `approve` refused it as an unknown flag).
    #[test]
    fn a_token_beginning_with_a_hyphen_is_the_tokens_value() {
        for token in ["-_abc", "--x", "-"] {
            let cli = Cli::try_parse_from(["kubectl-sluice", "approve", "r1", "--token", token])
                .unwrap_or_else(|e| panic!("{token}: {e}"));
            match cli.command {
                Command::Approve(args) => {
                    assert_eq!(args.name, "r1");
                    assert_eq!(args.cluster.token.as_deref(), Some(token));
                }
                _ => panic!("parsed as another command"),
            }
        }
    }
}
