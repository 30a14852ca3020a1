//! The verification itself: classify the input, gather and check the
//! checkpoints, run the hash chain, say what checkpoints anchor.

use super::VerifyInputError;
use super::checkpoints::{Checkpoint, CheckpointLine, checkpoint, consistent};
use super::failure::Failure;
use super::input::{Line, OtherLines, classify};
use super::report::{Verified, stream_reports};
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

/// Verifies `text` (an audit log, or a merged container log): `Ok(Ok(_))`
/// when intact, `Ok(Err(failure))` when not, `Err` when the checkpoints
/// cannot be read at all. Lines torn by a crash (see [`torn_lines`]) are
/// left out: the last line when it is torn ([`Verified::torn`]), and a torn
/// line inside the log after which no stream that wrote before it goes on
/// (the writer died there; what follows is a restarted writer's new stream:
/// [`Verified::torn_within`]). A torn line inside the log that a stream
/// goes on after is no crash's: a failure.
pub fn verify(
    text: &str,
    options: &Options<'_>,
) -> Result<Result<Verified, Failure>, VerifyInputError> {
    let lines: Vec<&str> = text.lines().collect();
    let torn = torn_lines(&lines);
    if torn.is_empty() {
        return verify_whole(text, options);
    }
    // The last line torn: the text before it, as before.
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let (tail, within): (Vec<usize>, Vec<usize>) = torn.into_iter().partition(|i| Some(*i) == last);
    let kept = match tail.first() {
        Some(i) => &lines[..*i],
        None => &lines[..],
    };
    // Torn lines inside: blank (line numbers stay the input's).
    let mut blanked = String::with_capacity(text.len());
    for (i, line) in kept.iter().enumerate() {
        if i > 0 {
            blanked.push('\n');
        }
        if within.binary_search(&i).is_err() {
            blanked.push_str(line);
        }
    }
    if !tail.is_empty() || text.ends_with('\n') {
        blanked.push('\n');
    }
    let continued = continued_after(&lines, &within);
    let verified = verify_whole(&blanked, options)?;
    if let Some((torn_at, stream, goes_on)) = continued {
        // A failure of the chain before the torn line comes first.
        if let Err(f) = &verified
            && f.line.is_some_and(|l| l <= torn_at)
        {
            return Ok(verified);
        }
        return Ok(Err(Failure {
            kind: "malformed",
            line: Some(torn_at + 1),
            stream: Some(stream.clone()),
            detail: format!(
                "the line is incomplete (cut mid-write), but stream {stream} goes on after it \
                 (line {}): a crash ends its writer's stream, so this is no crash's torn line",
                goes_on + 1
            ),
        }));
    }
    Ok(verified.map(|mut v| {
        v.torn = tail.first().map(|i| i + 1);
        v.torn_within = within.iter().map(|i| i + 1).collect();
        v
    }))
}

/// The 0-based indices of the torn lines: a line cut mid-write (a crash:
/// the sidecar never writes a line in pieces otherwise) is the beginning of
/// a JSON object that ends early.
fn torn_lines(lines: &[&str]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            // Checked, not built: every event line is read here once more.
            line.starts_with('{')
                && matches!(
                    serde_json::from_str::<serde::de::IgnoredAny>(line),
                    Err(e) if e.is_eof()
                )
        })
        .map(|(i, _)| i)
        .collect()
}

/// The first torn line of `within` that a stream which wrote before it goes
/// on after: (its index, the stream, the index of the stream's next line).
fn continued_after(lines: &[&str], within: &[usize]) -> Option<(usize, String, usize)> {
    if within.is_empty() {
        return None;
    }
    let streams: Vec<Option<String>> = lines
        .iter()
        .map(|l| match classify(l) {
            Line::Audit(Some((stream, _))) => Some(stream),
            _ => None,
        })
        .collect();
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in streams.iter().enumerate() {
        if let Some(s) = s {
            last.insert(s.as_str(), i);
        }
    }
    // The stream seen so far whose last line is furthest on.
    let mut reach: Option<(usize, &str)> = None;
    let mut torn = within.iter().peekable();
    for (i, s) in streams.iter().enumerate() {
        if torn.peek() == Some(&&i) {
            torn.next();
            if let Some((end, stream)) = reach
                && end > i
            {
                let next = streams[i..]
                    .iter()
                    .position(|x| x.as_deref() == Some(stream))
                    .map_or(end, |p| i + p);
                return Some((i, stream.to_string(), next));
            }
        }
        if let Some(s) = s
            && let Some(end) = last.get(s.as_str())
            && reach.is_none_or(|(r, _)| *end > r)
        {
            reach = Some((*end, s));
        }
    }
    None
}

fn verify_whole(
    text: &str,
    options: &Options<'_>,
) -> Result<Result<Verified, Failure>, VerifyInputError> {
    let jwks = options.jwks;
    let Input {
        kinds,
        other,
        first_seq,
        events,
        mut checkpoints,
    } = match read_input(text, jwks) {
        Ok(input) => input,
        Err(f) => return Ok(Err(f)),
    };
    if let Err(f) = read_checkpoints(options, &mut checkpoints)? {
        return Ok(Err(f));
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

    let report = match chain(text, &kinds, &heads) {
        Ok(report) => report,
        Err(f) => return Ok(Err(f)),
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
        torn: None,
        torn_within: Vec::new(),
    }))
}

/// The input, classified line by line, with the checkpoints its receipts carry.
struct Input {
    kinds: Vec<Line>,
    other: OtherLines,
    /// The first seq of each stream in the log.
    first_seq: BTreeMap<String, u64>,
    /// How many events of each stream the log holds.
    events: BTreeMap<String, u64>,
    checkpoints: Vec<Checkpoint>,
}

fn read_input(text: &str, jwks: Option<&jsonwebtoken::jwk::JwkSet>) -> Result<Input, Failure> {
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
                checkpoints.push(checkpoint(
                    (**c).clone(),
                    format!("input line {}", i + 1),
                    jwks,
                )?);
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
    Ok(Input {
        kinds,
        other,
        first_seq,
        events,
        checkpoints,
    })
}

/// The checkpoints of the checkpoints file, if any, added to `checkpoints`;
/// `Ok(Err(_))` when one is not authentic, `Err` when the file is not
/// checkpoints at all.
fn read_checkpoints(
    options: &Options<'_>,
    checkpoints: &mut Vec<Checkpoint>,
) -> Result<Result<(), Failure>, VerifyInputError> {
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
            let source = format!("{} line {}", path.display(), i + 1);
            match checkpoint(parsed, source, options.jwks) {
                Ok(c) => checkpoints.push(c),
                Err(f) => return Ok(Err(f)),
            }
        }
    }
    Ok(Ok(()))
}

/// The hash chain, on the audit lines only (the others count as blank, so
/// line numbers stay the input's), checked against the checkpoints' `heads`.
fn chain(text: &str, kinds: &[Line], heads: &[ChainHead]) -> Result<VerifyReport, Failure> {
    let mut verifier = ChainVerifier::new(heads);
    let mut result = Ok(());
    for (raw, kind) in text.lines().zip(kinds) {
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
    match result.and_then(|()| verifier.finish()) {
        Ok(report) => Ok(report),
        Err(mut e) => {
            // A last line cut mid-way (no newline, not JSON) is a truncation, not an edit.
            if e.kind == VerifyErrorKind::Malformed
                && e.line == kinds.len()
                && !text.ends_with('\n')
            {
                e.kind = VerifyErrorKind::Truncated;
                e.detail = format!("the last line is incomplete ({})", e.detail);
            }
            Err(Failure {
                kind: e.kind.as_str(),
                line: Some(e.line),
                stream: e.stream,
                detail: e.detail,
            })
        }
    }
}
