//! `kubectl sluice audit verify`: prove an audit log was not edited, reordered,
//! dropped from or truncated.
//!
//! Checkpoints (chain heads) catch lines cut from the end and a log rewritten
//! with fresh hashes, but only if they are authentic: with `--jwks` every
//! checkpoint must carry the operator's signature (a compact JWS over its
//! stream, sequence and hash, by a key of the operator's `/v1/jwks`), which
//! is verified before the checkpoint is used. Without `--jwks` checkpoints
//! are taken as given and the report says so.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;
use sluice_policy::audit::{ChainHead, VerifyErrorKind, verify_lines};

/// Arguments of `audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The audit log: JSON lines as the sidecar writes them (`-` for stdin).
    file: PathBuf,
    /// Chain heads to check the log against: a file of JSON lines, each a
    /// checkpoint as the operator writes it in Connection status
    /// (`{"stream":…,"sequence":…,"hash":…,"signature":…,"keyId":…}`) or a
    /// head recorded elsewhere (`{"stream":…,"seq":…,"hash":…}`). Without
    /// checkpoints, lines cut from the end of a log cannot be told from a log
    /// that simply ended there.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// The operator's public keys (the JSON of its `/v1/jwks`): every
    /// checkpoint must then be signed by one of them, or verification fails.
    /// Without it checkpoints are not authenticated.
    #[arg(long, requires = "checkpoints")]
    jwks: Option<PathBuf>,
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
    #[error("{path}: not a JSON Web Key Set ({source}); give the JSON of the operator's /v1/jwks")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// A line of the checkpoints file: the operator's signed checkpoint, or a
/// bare head.
#[derive(Deserialize)]
#[serde(untagged)]
enum CheckpointLine {
    Signed(SignedCheckpoint),
    Head(ChainHead),
}

/// A checkpoint as the operator writes it (`Connection.status.auditCheckpoint`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedCheckpoint {
    stream: String,
    sequence: u64,
    hash: String,
    signature: String,
    key_id: String,
}

/// What a checkpoint's signature covers (the operator's JWS payload).
#[derive(Deserialize)]
struct SignedPayload {
    stream: String,
    sequence: u64,
    hash: String,
}

/// The algorithm the operator signs with (ES256); pinned, never read from the token.
const ALGORITHM: jsonwebtoken::Algorithm = jsonwebtoken::Algorithm::ES256;

/// Checks a checkpoint's signature against `jwks`: by the key its `keyId`
/// names (and its JWS header too), with ES256, over exactly its stream,
/// sequence and hash. `Err` says why not.
fn authenticate(c: &SignedCheckpoint, jwks: &jsonwebtoken::jwk::JwkSet) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(&c.signature)
        .map_err(|e| format!("the signature is not a JWS ({e})"))?;
    if header.kid.as_deref() != Some(c.key_id.as_str()) {
        return Err(format!(
            "the signature names key {:?}, the checkpoint key {:?}",
            header.kid, c.key_id
        ));
    }
    let jwk = jwks.find(&c.key_id).ok_or_else(|| {
        format!(
            "key {:?} is not in the JWKS (not the operator's, or rotated out of it)",
            c.key_id
        )
    })?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
        .map_err(|e| format!("key {:?} of the JWKS is unusable ({e})", c.key_id))?;
    let mut validation = jsonwebtoken::Validation::new(ALGORITHM);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let payload = jsonwebtoken::decode::<SignedPayload>(&c.signature, &key, &validation)
        .map_err(|e| format!("the signature does not verify ({e})"))?
        .claims;
    if (
        payload.stream.as_str(),
        payload.sequence,
        payload.hash.as_str(),
    ) != (c.stream.as_str(), c.sequence, c.hash.as_str())
    {
        return Err(format!(
            "the signature covers stream {} seq {} hash {}, not this checkpoint's",
            payload.stream, payload.sequence, payload.hash
        ));
    }
    Ok(())
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
    let jwks = match &args.jwks {
        None => None,
        Some(path) => Some(
            serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&read(path)?).map_err(|source| {
                VerifyInputError::Jwks {
                    path: path.clone(),
                    source,
                }
            })?,
        ),
    };
    let mut checkpoints = Vec::new();
    if let Some(path) = &args.checkpoints {
        for (i, l) in read(path)?.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<CheckpointLine>(l).map_err(|source| {
                VerifyInputError::Checkpoint {
                    path: path.clone(),
                    line: i + 1,
                    source,
                }
            })?;
            let forged = |why: String| {
                eprintln!(
                    "FAILED: {} line {}: checkpoint not authentic: {why}",
                    path.display(),
                    i + 1
                );
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"ok": false, "kind": "checkpointForged",
                                           "checkpointLine": i + 1, "detail": why})
                    );
                }
                ExitCode::from(1)
            };
            let head = match (parsed, &jwks) {
                (CheckpointLine::Signed(c), Some(jwks)) => {
                    if let Err(why) = authenticate(&c, jwks) {
                        return Ok(forged(why));
                    }
                    ChainHead {
                        stream: c.stream,
                        seq: c.sequence,
                        hash: c.hash,
                    }
                }
                (CheckpointLine::Signed(c), None) => ChainHead {
                    stream: c.stream,
                    seq: c.sequence,
                    hash: c.hash,
                },
                (CheckpointLine::Head(_), Some(_)) => {
                    return Ok(forged(
                        "it carries no signature, and --jwks asks for signed checkpoints".into(),
                    ));
                }
                (CheckpointLine::Head(h), None) => h,
            };
            checkpoints.push(head);
        }
    }
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
                        "checkpointsAuthenticated": jwks.is_some() && !checkpoints.is_empty(),
                        "outages": report.outages,
                    })
                );
            } else {
                println!(
                    "OK: {} events in {} stream(s) verified; {} of {} checkpoint(s) matched{}",
                    report.events,
                    report.streams,
                    report.checkpoints_matched,
                    checkpoints.len(),
                    match (&jwks, checkpoints.is_empty()) {
                        (_, true) => "",
                        (Some(_), false) => ", their signatures verified",
                        (None, false) =>
                            " (not authenticated: give --jwks to check their signatures)",
                    }
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
