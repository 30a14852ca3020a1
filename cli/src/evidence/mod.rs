//! `kubectl sluice evidence export` and `evidence verify` (#21 item 3): a
//! self-contained package an auditor can take away and re-check offline.
//!
//! The package (a directory) holds:
//!
//! | file | what | SOC 2 |
//! |---|---|---|
//! | `policies/accesspolicies.json` | the AccessPolicies in force (spec, generation, conditions) | CC6.1 CC6.2 CC6.3 CC8.1 |
//! | `policies/history.json` | each AccessPolicy's versions and when each was put in force, from the audit's chained `policy` events, beside the cluster's version now | CC8.1 |
//! | `policies/connections.json` | the Connections (upstreams and Secret *names*; never a Secret's data) | CC6.1 CC6.6 |
//! | `access-requests/accessrequests.json`, `.csv` | requester, approvers, decisions with user, comment and time, phase, latency | CC6.2 CC6.3 CC8.1 |
//! | `samples/approved-requests.json` | up to 25 approved requests chosen by hash of their name (not by the exporter), with their audit trail | CC6.3 CC8.1 |
//! | `audit/*.jsonl`, `audit/verification.json` | the audit files as given, and `audit verify`'s report on each | CC7.2 CC7.3 |
//! | `audit/checkpoints.jsonl`, `audit/jwks.json` | the checkpoints and keys used | CC7.2 |
//! | `summary.json`, `grc/*.csv` | statistics for the period (decisions per day, denials by rule, masked values by Connection and by AccessPolicy, approvals) | CC6.1 CC7.2 CC7.3 |
//! | `soc2-mapping.json`, `grc/soc2-mapping.csv` | each criterion and the files that support it | — |
//! | `report.html` | one offline page with the charts (inline SVG) | — |
//! | `oscal-assessment-results.json` | OSCAL 1.1.2 assessment results: an observation and a finding per criterion | — |
//! | `manifest.json` | SHA-256 and size of every other file | — |
//!
//! With `-o FILE.tar.gz` the same files are written as one archive, under a
//! directory named after it (see [`archive`]).
//!
//! `evidence verify DIR|FILE.tar.gz` recomputes every hash of the manifest (an altered,
//! missing or unlisted file fails, named) and verifies the audit files again
//! with the packaged checkpoints and keys.

use std::path::{Path, PathBuf};

use crate::approvals::ClusterArgs;
use crate::audit_verify;

mod archive;
mod export;
mod history;
mod package;
mod report;
mod soc2;
mod stats;
mod verify;

pub use export::export;
pub use verify::verify;

/// The package format written into the manifest.
const FORMAT: &str = "sluice-evidence/v1";
/// How many approved requests are sampled.
const SAMPLES: usize = 25;

/// `kubectl sluice evidence export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Start of the period: a duration back from --until (`90d`, `12h`,
    /// `30m`) or an RFC 3339 time.
    #[arg(long, default_value = "90d")]
    since: String,
    /// End of the period (RFC 3339; default: now).
    #[arg(long)]
    until: Option<String>,
    /// Every namespace (default: the one of -n or the context).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Audit files to include (the sidecars' JSON lines, or `kubectl logs` output).
    #[arg(long, num_args = 1.., required = true)]
    audit: Vec<PathBuf>,
    /// Checkpoints for the audit files (`kubectl sluice audit checkpoints`).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// The keys the checkpoints are signed by (`kubectl sluice audit jwks`).
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Where to write the package: a directory (created; must not exist or
    /// be empty), or a `FILE.tar.gz` (must not exist).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Cluster flags.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `kubectl sluice evidence verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The package: its directory, or its `.tar.gz`.
    dir: PathBuf,
}

/// Why an export or a verification could not be done (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The cluster could not be read.
    #[error(transparent)]
    Cluster(#[from] crate::approvals::ApprovalsError),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Bad flags.
    #[error("{0}")]
    Usage(String),
    /// The audit files could not be verified at all.
    #[error(transparent)]
    Audit(#[from] audit_verify::VerifyInputError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EvidenceError + 'a {
    move |source| EvidenceError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
