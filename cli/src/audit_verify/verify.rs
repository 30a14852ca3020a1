//! The verification itself: classify the input, gather and check the
//! checkpoints, run the hash chain, say what checkpoints anchor.

use super::VerifyInputError;
use super::checkpoints::{Checkpoint, CheckpointLine, checkpoint, consistent};
use super::input::{Line, OtherLines, classify};
use super::report::{Failure, StreamReport, stream_reports};
use sluice_policy::audit::ChainHead;
use sluice_policy::audit::ChainVerifier;
use sluice_policy::audit::VerifyErrorKind;
use sluice_policy::audit::VerifyReport;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What to verify a log against.
pub struct Options<'a> {
    /// A checkpoints file: its path (for messages) and text.
    pub checkpoints: Option<(PathBuf, String)>,
    /// Keys checkpoints must be signed by.
    pub jwks: Option<&'a jsonwebtoken::jwk::JwkSet>,
    /// Fail on checkpoints of streams with no event in the log.
    pub require_every_stream: bool,
}

/// A log that verified, and what its report says.
pub struct Verified {
    pub(super) report: VerifyReport,
    pub(super) streams: Vec<StreamReport>,
    pub(super) checkpoints: Vec<Checkpoint>,
    pub(super) absent: Vec<usize>,
    pub(super) other: OtherLines,
    pub(super) authenticated: bool,
}

/// Verifies `text` (an audit log, or a merged container log): `Ok(Ok(_))`
/// when intact, `Ok(Err(failure))` when not, `Err` when the checkpoints
/// cannot be read at all.
pub fn verify(
    text: &str,
    options: &Options<'_>,
) -> Result<Result<Verified, Failure>, VerifyInputError> {
    let jwks = options.jwks;
    // The input, classified line by line.
    let mut kinds = Vec::new();
    let mut other = OtherLines::default();
    let mut first_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut checkpoints = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = classify(raw);
        match &line {
            Line::Audit(Some((stream, seq))) => {
                let first = first_seq.entry(stream.clone()).or_insert(*seq);
                *first = (*first).min(*seq);
                *events.entry(stream.clone()).or_default() += 1;
            }
            Line::Audit(None) | Line::Blank => {}
            Line::Receipt(c) => {
                other.receipts += 1;
                other.add(i + 1);
                match checkpoint((**c).clone(), format!("input line {}", i + 1), jwks) {
                    Ok(c) => checkpoints.push(c),
                    Err(f) => return Ok(Err(f)),
                }
            }
            Line::JsonOther => {
                other.json += 1;
                other.add(i + 1);
            }
            Line::TextOther => {
                other.text += 1;
                other.add(i + 1);
            }
        }
        kinds.push(line);
    }
    if let Some((path, text)) = &options.checkpoints {
        for (i, l) in text.lines().enumerate() {
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
            match checkpoint(parsed, format!("{} line {}", path.display(), i + 1), jwks) {
                Ok(c) => checkpoints.push(c),
                Err(f) => return Ok(Err(f)),
            }
        }
    }
    if let Err(f) = consistent(&checkpoints) {
        return Ok(Err(f));
    }

    // Checkpoints of streams the log does not hold are listed, not used
    // (unless every stream is required).
    let (present, absent): (Vec<usize>, Vec<usize>) =
        (0..checkpoints.len()).partition(|i| first_seq.contains_key(&checkpoints[*i].head.stream));
    if options.require_every_stream
        && let Some(i) = absent.first()
    {
        let c = &checkpoints[*i];
        return Ok(Err(Failure {
            kind: "truncated",
            line: Some(kinds.len() + 1),
            stream: Some(c.head.stream.clone()),
            detail: format!(
                "stream {} has no event in the log but {} covers its seq {}",
                c.head.stream, c.source, c.head.seq
            ),
        }));
    }
    let heads: BTreeSet<ChainHead> = present
        .iter()
        .map(|i| checkpoints[*i].head.clone())
        .collect();
    let heads: Vec<ChainHead> = heads.into_iter().collect();

    // The chain, on the audit lines only (the others count as blank, so
    // line numbers stay the input's).
    let mut verifier = ChainVerifier::new(&heads);
    let mut result = Ok(());
    for (raw, kind) in text.lines().zip(&kinds) {
        let fed = if matches!(kind, Line::Audit(_)) {
            raw
        } else {
            ""
        };
        if let Err(e) = verifier.push_line(fed) {
            result = Err(e);
            break;
        }
    }
    let result = result.and_then(|()| verifier.finish());
    let report = match result {
        Ok(report) => report,
        Err(mut e) => {
            // A last line cut mid-way (no newline, not JSON) is a truncation, not an edit.
            if e.kind == VerifyErrorKind::Malformed
                && e.line == kinds.len()
                && !text.ends_with('\n')
            {
                e.kind = VerifyErrorKind::Truncated;
                e.detail = format!("the last line is incomplete ({})", e.detail);
            }
            return Ok(Err(Failure {
                kind: e.kind.as_str(),
                line: Some(e.line),
                stream: e.stream,
                detail: e.detail,
            }));
        }
    };
    if report.events == 0 {
        return Ok(Err(Failure {
            kind: "noEvents",
            line: None,
            stream: None,
            detail: format!(
                "no audit event in the input ({} line(s), {} of them other output): nothing was verified; \
                 is this the sidecar's log (kubectl logs POD -c sluice-sidecar)?",
                kinds.len(),
                other.count()
            ),
        }));
    }
    let streams = stream_reports(&report, &first_seq, &events, &checkpoints);
    Ok(Ok(Verified {
        report,
        streams,
        checkpoints,
        absent,
        other,
        authenticated: jwks.is_some(),
    }))
}
