//! `kubectl sluice audit verify`: prove an audit log was not edited, reordered,
//! dropped from or truncated.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use sluice_policy::audit::{ChainHead, VerifyErrorKind, verify_lines};

/// Arguments of `audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The audit log: JSON lines as the sidecar writes them (`-` for stdin).
    file: PathBuf,
    /// Chain heads to check the log against (signed checkpoints from the
    /// operator, or heads recorded elsewhere): a file of JSON lines
    /// `{"stream":…,"seq":…,"hash":…}`. Without checkpoints, lines cut from the
    /// end of a log cannot be told from a log that simply ended there.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
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
        "{path} line {line}: not a checkpoint ({source}); expected {{\"stream\":…,\"seq\":…,\"hash\":…}}"
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

/// Verifies the log: exit 0 and a summary when intact; exit 1 naming the first
/// bad line when not.
pub fn run(args: &VerifyArgs) -> Result<ExitCode, VerifyInputError> {
    let text = read(&args.file)?;
    let checkpoints = match &args.checkpoints {
        None => Vec::new(),
        Some(path) => read(path)?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str::<ChainHead>(l).map_err(|source| {
                    VerifyInputError::Checkpoint {
                        path: path.clone(),
                        line: i + 1,
                        source,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    match verify_lines(text.lines(), &checkpoints) {
        Ok(report) => {
            if args.json {
                let heads: Vec<_> = report
                    .heads
                    .iter()
                    .map(|h| serde_json::json!({"stream": h.stream, "seq": h.seq, "hash": h.hash}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true, "events": report.events, "streams": report.streams,
                        "checkpointsMatched": report.checkpoints_matched, "heads": heads,
                        "outages": report.outages,
                    })
                );
            } else {
                println!(
                    "OK: {} events in {} stream(s) verified; {} of {} checkpoint(s) matched",
                    report.events,
                    report.streams,
                    report.checkpoints_matched,
                    checkpoints.len()
                );
                for o in &report.outages {
                    let dropped = match o.outage.dropped {
                        0 => String::new(),
                        n => format!(", {n} event(s) could not be kept and are not in the log"),
                    };
                    println!(
                        "note: line {}: recorded audit outage in stream {}: the sink failed from {} \
                         to {} ({} failed write(s): {}){dropped}; seq {} to {} were written late, \
                         intact; the statements, sessions and approvals they record were refused \
                         and did not run",
                        o.line,
                        o.stream,
                        o.outage.since,
                        o.until,
                        o.outage.failed_writes,
                        o.outage.error,
                        o.outage.from_seq,
                        o.outage.to_seq
                    );
                }
                if checkpoints.is_empty() {
                    println!(
                        "note: no checkpoints given, so lines cut from the end of the log cannot be detected"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(mut e) => {
            // A last line cut mid-way (no newline, not JSON) is a truncation, not an edit.
            let last_line = text.lines().count();
            if e.kind == VerifyErrorKind::Malformed && e.line == last_line && !text.ends_with('\n')
            {
                e.kind = VerifyErrorKind::Truncated;
                e.detail = format!("the last line is incomplete ({})", e.detail);
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "line": e.line, "kind": e.kind.as_str(),
                                       "stream": e.stream, "detail": e.detail})
                );
            }
            eprintln!("FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
