//! `kubectl sluice audit verify`: prove an audit log was not edited, reordered,
//! dropped from or truncated, and say how much of it checkpoints anchor.
//!
//! The input may be a container's merged log (`kubectl logs POD -c
//! sluice-sidecar`: the audit events on stdout and the sidecar's own logs on
//! stderr, interleaved). Audit events are recognised by their chain fields;
//! every other line is reported (how many, which lines), never silently
//! skipped, and a line that looks like an audit event but is broken fails.
//!
//! A hash chain proves a log consistent, not complete: whoever can rewrite
//! the file can cut its newest events or recompute every hash. Checkpoints
//! (signed chain heads) close that gap up to their sequence number, and only
//! if they are authentic: with `--jwks FILE` or `--jwks-from-cluster` each
//! must carry a signature (a compact ES256 JWS over its stream, sequence and
//! hash) by one of those keys. The report then says, per stream, which
//! ranges are anchored by which checkpoint and what is not proven. Checkpoints
//! come from `--checkpoints` (the operator's history, `kubectl sluice audit
//! checkpoints`, or a standalone sidecar's checkpoint file) and from the
//! receipts the run-mode sidecar logs (`audit checkpoint signed by the
//! operator`) when they are in the input.
//!
//! Exit status: 0 intact; 1 not intact (the first problem is named); 2 the
//! input cannot be read; 3 ([`TORN_EXIT`]) every line verified but torn ones
//! (cut mid-write by a crash of the sidecar): the last line, or a line
//! inside the log after which the writer started again — no stream that
//! wrote before it goes on after it, a new stream follows (a sidecar
//! restarted on the same file begins on a new line). An incomplete line
//! that a stream goes on after is no crash's: it fails (1).
//!
//! Here: the arguments and [`run`]; [`input`] classifies the lines,
//! [`checkpoints`] reads and authenticates checkpoints, [`verify`] runs the
//! chain, [`report`] says what verified and [`failure`] what did not.

mod checkpoints;
mod failure;
pub(crate) mod input;
mod report;
mod verify;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

pub use verify::{Options, verify};

/// Arguments of `audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The audit log (`-` for stdin): the sidecar's JSON lines, or its
    /// container's merged log as `kubectl logs` prints it (lines that are not
    /// audit events are counted and reported).
    file: PathBuf,
    /// Checkpoints to check the log against: JSON lines, each a signed
    /// checkpoint as the operator's history (`kubectl sluice audit
    /// checkpoints`), Connection status or a standalone sidecar's checkpoint
    /// file hold it (`{"stream":…,"sequence":…,"hash":…,"signature":…,"keyId":…}`),
    /// or a head recorded elsewhere (`{"stream":…,"seq":…,"hash":…}`).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// The public keys checkpoints must be signed by (a JSON Web Key Set: the
    /// operator's, from `kubectl sluice audit jwks`, or a standalone sidecar's
    /// `KEY.jwks.json`). Without it (or --jwks-from-cluster) checkpoints are
    /// not authenticated.
    #[arg(long, conflicts_with = "jwks_from_cluster")]
    jwks: Option<PathBuf>,
    /// Read the operator's published checkpoint keys from the cluster of the
    /// current kubeconfig context (ConfigMap `sluice-checkpoint-keys` in
    /// --operator-namespace). Off by default, so that a verification never
    /// depends on which cluster happens to be configured.
    #[arg(long)]
    jwks_from_cluster: bool,
    /// The operator's namespace (for --jwks-from-cluster).
    #[arg(long, default_value = crate::checkpoints::DEFAULT_OPERATOR_NAMESPACE)]
    operator_namespace: String,
    /// The kubeconfig (for --jwks-from-cluster; default: `KUBECONFIG`, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (for --jwks-from-cluster).
    #[arg(long)]
    context: Option<String>,
    /// Fail when a checkpoint names a stream that has no event in the log. By
    /// default such checkpoints are listed: a Connection's history holds the
    /// streams of every pod, a pod's log only its own.
    #[arg(long)]
    require_every_stream: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Why verification could not be attempted (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyInputError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint line is not a chain head.
    #[error(
        "{path} line {line}: not a checkpoint ({source}); expected {{\"stream\":…,\"sequence\":…,\"hash\":…,\"signature\":…,\"keyId\":…}} or {{\"stream\":…,\"seq\":…,\"hash\":…}}"
    )]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The JWKS is not a JSON Web Key Set.
    #[error(
        "{path}: not a JSON Web Key Set ({source}); give the operator's keys (kubectl sluice audit jwks) or a standalone sidecar's KEY.jwks.json"
    )]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The keys could not be read from the cluster.
    #[error(transparent)]
    Cluster(#[from] crate::checkpoints::CheckpointsError),
}

fn read(path: &PathBuf) -> Result<String, VerifyInputError> {
    let err = |source| VerifyInputError::Read {
        path: path.clone(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(err)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}

fn load_jwks(args: &VerifyArgs) -> Result<Option<jsonwebtoken::jwk::JwkSet>, VerifyInputError> {
    if args.jwks_from_cluster {
        let cluster = crate::approvals::ClusterArgs {
            namespace: None,
            context: args.context.clone(),
            kubeconfig: args.kubeconfig.clone(),
            as_user: None,
            as_group: Vec::new(),
            token: None,
        };
        return Ok(Some(crate::checkpoints::cluster_jwks(
            &cluster,
            &args.operator_namespace,
        )?));
    }
    match &args.jwks {
        None => Ok(None),
        Some(path) => serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&read(path)?)
            .map(Some)
            .map_err(|source| VerifyInputError::Jwks {
                path: path.clone(),
                source,
            }),
    }
}

/// The exit status of a log with torn lines (cut mid-write by a crash: the
/// last line, or one a restarted writer wrote after) whose other lines
/// verify: not success (a torn line proves nothing, and what it held is
/// lost) and not tampering (1); 2 is unreadable input.
pub const TORN_EXIT: u8 = 3;

/// Verifies the log: exit 0 and a report when intact; [`TORN_EXIT`] and a
/// report when only torn lines (a crash's) did not verify; exit 1 naming the first problem
/// when not intact.
pub fn run(args: &VerifyArgs) -> Result<ExitCode, VerifyInputError> {
    let text = read(&args.file)?;
    let jwks = load_jwks(args)?;
    let checkpoints = match &args.checkpoints {
        Some(path) => Some((path.clone(), read(path)?)),
        None => None,
    };
    let options = Options {
        checkpoints,
        jwks: jwks.as_ref(),
        require_every_stream: args.require_every_stream,
    };
    match verify(&text, &options)? {
        Ok(v) => {
            if args.json {
                println!("{}", v.to_json());
            } else {
                v.print_text();
            }
            if let Some(line) = v.torn_within.first() {
                eprintln!(
                    "TORN: audit log line {line}: a line inside the log is torn ({}); \
                     the lines around it verified ({} torn line(s) in all)",
                    report::TORN_WITHIN_DETAIL,
                    v.torn_within.len()
                );
            }
            if let Some(line) = v.torn {
                eprintln!(
                    "TORN: audit log line {line}: the last line is torn ({}); the lines before it verified",
                    report::TORN_DETAIL
                );
            }
            if v.torn.is_some() || !v.torn_within.is_empty() {
                return Ok(ExitCode::from(TORN_EXIT));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            if args.json {
                println!("{}", f.to_json());
            }
            match f.line {
                Some(line) => eprintln!("FAILED: audit log line {line}: {}: {}", f.kind, f.detail),
                None => eprintln!("FAILED: {}: {}", f.kind, f.detail),
            }
            Ok(ExitCode::from(1))
        }
    }
}
