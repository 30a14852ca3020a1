//! Verifying an audit log against its chain and the signed checkpoints.

use std::collections::BTreeMap;
use std::fmt;

use super::canonical::canonical_json;
use super::chain::{ChainHead, chain_hash, decode_hash};
use super::event::AuditOutage;
use super::strict::StrictValue;
use super::{GENESIS, SCHEMA_VERSION};
use serde::Serialize;
use serde_json::Value;

// === verification ===

/// What is wrong with a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyErrorKind {
    /// A line is not an audit event (not JSON, a field missing or of the wrong
    /// type, an unsupported schema version).
    Malformed,
    /// An event's content does not match its hash.
    Edited,
    /// An event appears after a later event of its stream (or twice).
    Reordered,
    /// Events are missing: a sequence gap, a `prev` that is not the previous
    /// event's hash, or a stream that does not start at 1 (or at a checkpoint).
    Dropped,
    /// The log ends before a checkpoint's event.
    Truncated,
    /// A checkpoint's hash differs from the event at its sequence number: the
    /// chain was rewritten (edited and re-hashed) up to there.
    CheckpointMismatch,
}

impl VerifyErrorKind {
    /// A stable name, for reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyErrorKind::Malformed => "malformed",
            VerifyErrorKind::Edited => "edited",
            VerifyErrorKind::Reordered => "reordered",
            VerifyErrorKind::Dropped => "dropped",
            VerifyErrorKind::Truncated => "truncated",
            VerifyErrorKind::CheckpointMismatch => "checkpointMismatch",
        }
    }
}

impl fmt::Display for VerifyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem found in a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit log line {line}: {kind}: {detail}")]
pub struct VerifyError {
    /// 1-based line number (for `Truncated`, one past the last line).
    pub line: usize,
    /// What is wrong.
    pub kind: VerifyErrorKind,
    /// The stream concerned, when known.
    pub stream: Option<String>,
    /// What was found, in words.
    pub detail: String,
}

/// What a successful verification covered.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Events verified.
    pub events: u64,
    /// Streams seen.
    pub streams: usize,
    /// The last event of every stream, sorted by stream.
    pub heads: Vec<ChainHead>,
    /// Checkpoints confirmed by an event of the log.
    pub checkpoints_matched: usize,
    /// Checkpoints for events before the start of the log (not checked: the log
    /// is a later segment).
    pub checkpoints_before_log: usize,
    /// Outages of the audit sink the log records (events of type `outage`):
    /// events written late, not edited.
    pub outages: Vec<RecordedOutage>,
}

/// An `outage` event found in a verified log.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedOutage {
    /// 1-based line of the outage event.
    pub line: usize,
    /// Its stream.
    pub stream: String,
    /// Its seq.
    pub seq: u64,
    /// When the sink took writes again (the event's time).
    pub until: String,
    /// What it records.
    #[serde(flatten)]
    pub outage: AuditOutage,
}

#[derive(Debug)]
struct StreamState {
    last_seq: u64,
    last_hash: String,
    last_line: usize,
    /// First sequence number in the log (events before it are out of scope).
    first_seq: u64,
    /// Line of the first event.
    first_line: usize,
    /// The `prev` the first event must have (GENESIS, or an anchoring checkpoint's hash).
    start_hash: String,
    /// The first sequence gap not yet explained: (line, missing from, missing to).
    gap: Option<(usize, u64, u64)>,
}

/// Verifies an audit log given as lines (blank lines are skipped), against
/// operator-signed `checkpoints`. Streams may be interleaved; each is verified
/// on its own. A stream must start at seq 1, or right after one of the
/// checkpoints (to verify a later segment of a log). Returns the first
/// problem, by line. For a log too big to hold in memory, feed a
/// [`ChainVerifier`] line by line instead.
pub fn verify_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    checkpoints: &[ChainHead],
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = ChainVerifier::new(checkpoints);
    for line in lines {
        verifier.push_line(line)?;
    }
    verifier.finish()
}

/// Incremental [`verify_lines`]: memory grows with the number of streams and
/// checkpoints, not with the log.
#[derive(Debug)]
pub struct ChainVerifier {
    checkpoints: Vec<ChainHead>,
    /// Checkpoint hash by (stream, seq).
    wanted: BTreeMap<(String, u64), String>,
    streams: BTreeMap<String, StreamState>,
    /// Hash and line of the events that checkpoints name.
    seen: BTreeMap<(String, u64), (String, usize)>,
    events: u64,
    line: usize,
    failed: Option<VerifyError>,
    outages: Vec<RecordedOutage>,
}

impl ChainVerifier {
    /// A verifier of a log covered by `checkpoints`.
    pub fn new(checkpoints: &[ChainHead]) -> Self {
        ChainVerifier {
            checkpoints: checkpoints.to_vec(),
            wanted: checkpoints
                .iter()
                .map(|c| ((c.stream.clone(), c.seq), c.hash.clone()))
                .collect(),
            streams: BTreeMap::new(),
            seen: BTreeMap::new(),
            events: 0,
            line: 0,
            failed: None,
            outages: Vec::new(),
        }
    }

    /// Checks the log's next line. After an error every further call returns
    /// that error again.
    pub fn push_line(&mut self, raw: &str) -> Result<(), VerifyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.line += 1;
        match self.check(raw) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = earliest_gap(&self.streams, e);
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn check(&mut self, raw: &str) -> Result<(), VerifyError> {
        let line = self.line;
        if raw.trim().is_empty() {
            return Ok(());
        }
        let event = parse_line(raw).map_err(|detail| VerifyError {
            line,
            kind: VerifyErrorKind::Malformed,
            stream: None,
            detail,
        })?;
        let fail = |kind, detail: String| VerifyError {
            line,
            kind,
            stream: Some(event.stream.clone()),
            detail,
        };
        check_content(&event).map_err(|(kind, detail)| fail(kind, detail))?;
        self.events += 1;
        self.follow_stream(&event, line)
            .map_err(|(kind, detail)| fail(kind, detail))?;
        self.check_checkpoint(&event, line)
            .map_err(|(kind, detail)| fail(kind, detail))?;
        self.record_outage(&event, line)
            .map_err(|(kind, detail)| fail(kind, detail))
    }

    /// Places `event` in its stream: in order, linked to the event before it,
    /// or after a gap that a later line may still explain.
    fn follow_stream(&mut self, event: &ParsedLine, line: usize) -> Result<(), Problem> {
        let stream = event.stream.as_str();
        let wanted = &self.wanted;
        let state = self.streams.entry(stream.to_string()).or_insert_with(|| {
            // A later segment may start right after a checkpoint.
            let anchored = event.seq > 1
                && wanted
                    .get(&(stream.to_string(), event.seq - 1))
                    .is_some_and(|h| *h == event.prev);
            let (last_seq, last_hash) = if anchored {
                (event.seq - 1, event.prev.clone())
            } else {
                (0, GENESIS.to_string())
            };
            StreamState {
                last_seq,
                start_hash: last_hash.clone(),
                last_hash,
                last_line: 0,
                first_seq: last_seq + 1,
                first_line: line,
                gap: None,
            }
        });
        if event.seq <= state.last_seq {
            let explains_gap = state
                .gap
                .is_some_and(|(_, from, to)| (from..=to).contains(&event.seq));
            if explains_gap {
                state.gap = None;
            }
            return Err((
                VerifyErrorKind::Reordered,
                format!(
                    "seq {} comes after seq {} (line {})",
                    event.seq, state.last_seq, state.last_line
                ),
            ));
        }
        if event.seq == state.last_seq + 1 {
            if event.prev != state.last_hash {
                let after = if state.last_seq == 0 {
                    "the stream's start".to_string()
                } else {
                    format!("seq {} (line {})", state.last_seq, state.last_line)
                };
                return Err((
                    VerifyErrorKind::Dropped,
                    format!("seq {}: prev is not the hash of {after}", event.seq),
                ));
            }
        } else if state.gap.is_none() {
            state.gap = Some((line, state.last_seq + 1, event.seq - 1));
        }
        state.last_seq = event.seq;
        state.last_hash.clone_from(&event.hash);
        state.last_line = line;
        Ok(())
    }

    /// Compares `event` with the checkpoint that names it, if any.
    fn check_checkpoint(&mut self, event: &ParsedLine, line: usize) -> Result<(), Problem> {
        let key = (event.stream.clone(), event.seq);
        if let Some(want) = self.wanted.get(&key) {
            if *want != event.hash {
                return Err((
                    VerifyErrorKind::CheckpointMismatch,
                    format!(
                        "seq {}: the checkpoint's hash is {want} but the log's is {}",
                        event.seq, event.hash
                    ),
                ));
            }
            self.seen.insert(key, (event.hash.clone(), line));
        }
        Ok(())
    }

    /// Records an `outage` event, whose outage field must name earlier events.
    fn record_outage(&mut self, event: &ParsedLine, line: usize) -> Result<(), Problem> {
        if event.rest.get("type").and_then(Value::as_str) != Some("outage") {
            return Ok(());
        }
        let outage = event
            .rest
            .get("outage")
            .cloned()
            .and_then(|v| serde_json::from_value::<AuditOutage>(v).ok())
            .filter(|o| o.from_seq <= o.to_seq && o.to_seq < event.seq)
            .ok_or_else(|| {
                (
                    VerifyErrorKind::Malformed,
                    format!(
                        "seq {}: an outage event without a valid outage field",
                        event.seq
                    ),
                )
            })?;
        self.outages.push(RecordedOutage {
            line,
            stream: event.stream.clone(),
            seq: event.seq,
            until: event
                .rest
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            outage,
        });
        Ok(())
    }

    /// Ends the log: reports sequence gaps never explained, and checkpoints the
    /// log does not reach (`Truncated`, line one past the last) or contradicts.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if let Some(gap) = pending_gap(&self.streams) {
            return Err(gap);
        }
        let end = VerifyError {
            line: self.line + 1,
            kind: VerifyErrorKind::Truncated,
            stream: None,
            detail: String::new(),
        };
        let mut matched = 0;
        let mut before_log = 0;
        for c in &self.checkpoints {
            let mismatch = |line: usize, found: &str| VerifyError {
                line,
                kind: VerifyErrorKind::CheckpointMismatch,
                stream: Some(c.stream.clone()),
                detail: format!(
                    "seq {}: the checkpoint's hash is {} but the log's is {found}",
                    c.seq, c.hash
                ),
            };
            match self.streams.get(&c.stream) {
                _ if c.seq == 0 => {
                    if c.hash != GENESIS {
                        return Err(mismatch(1, GENESIS));
                    }
                    matched += 1;
                }
                // The checkpoint a later segment starts from: the first event's prev.
                Some(s) if c.seq + 1 == s.first_seq => {
                    if c.hash != s.start_hash {
                        return Err(mismatch(s.first_line, &s.start_hash));
                    }
                    matched += 1;
                }
                Some(s) if c.seq < s.first_seq => before_log += 1,
                Some(s) if c.seq <= s.last_seq => {
                    match self.seen.get(&(c.stream.clone(), c.seq)) {
                        Some((hash, _)) if *hash == c.hash => matched += 1,
                        Some((hash, line)) => return Err(mismatch(*line, hash)),
                        // Unreachable without a gap, and gaps are reported above.
                        None => return Err(mismatch(end.line, "missing")),
                    }
                }
                Some(s) => {
                    return Err(VerifyError {
                        stream: Some(c.stream.clone()),
                        detail: format!(
                            "the log ends at seq {} of stream {} but a checkpoint covers seq {}",
                            s.last_seq, c.stream, c.seq
                        ),
                        ..end
                    });
                }
                None => {
                    return Err(VerifyError {
                        stream: Some(c.stream.clone()),
                        detail: format!(
                            "stream {} has no event in the log but a checkpoint covers seq {}",
                            c.stream, c.seq
                        ),
                        ..end
                    });
                }
            }
        }
        Ok(VerifyReport {
            events: self.events,
            streams: self.streams.len(),
            heads: self
                .streams
                .iter()
                .map(|(stream, s)| ChainHead {
                    stream: stream.clone(),
                    seq: s.last_seq,
                    hash: s.last_hash.clone(),
                })
                .collect(),
            checkpoints_matched: matched,
            checkpoints_before_log: before_log,
            outages: self.outages,
        })
    }
}

/// What is wrong with one line, before the line and stream are added.
type Problem = (VerifyErrorKind, String);

/// Checks what a line says about itself: its hash and its schema version.
fn check_content(event: &ParsedLine) -> Result<(), Problem> {
    let computed = chain_hash(&event.prev, canonical_json(&event.rest));
    if computed != event.hash {
        return Err((
            VerifyErrorKind::Edited,
            format!("seq {}: the content does not match its hash", event.seq),
        ));
    }
    if event.v != u64::from(SCHEMA_VERSION) {
        return Err((
            VerifyErrorKind::Malformed,
            format!(
                "schema version {} is not supported (this verifier reads v{SCHEMA_VERSION}); \
                 use a newer kubectl-sluice",
                event.v
            ),
        ));
    }
    Ok(())
}

/// A sequence gap seen earlier than `e` wins over it: it is the first problem.
fn earliest_gap(streams: &BTreeMap<String, StreamState>, e: VerifyError) -> VerifyError {
    match pending_gap(streams) {
        Some(gap) if gap.line < e.line => gap,
        _ => e,
    }
}

fn pending_gap(streams: &BTreeMap<String, StreamState>) -> Option<VerifyError> {
    streams
        .iter()
        .filter_map(|(stream, s)| s.gap.map(|g| (stream, g)))
        .min_by_key(|(_, (line, _, _))| *line)
        .map(|(stream, (line, from, to))| VerifyError {
            line,
            kind: VerifyErrorKind::Dropped,
            stream: Some(stream.clone()),
            detail: if from == to {
                format!("seq {from} of stream {stream} is missing")
            } else {
                format!("seq {from} to {to} of stream {stream} are missing")
            },
        })
}

/// The chain fields of a line, and the rest of the event (everything but `hash`).
struct ParsedLine {
    v: u64,
    stream: String,
    seq: u64,
    prev: String,
    hash: String,
    rest: Value,
}

fn parse_line(raw: &str) -> Result<ParsedLine, String> {
    let StrictValue(mut value) = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = &mut value else {
        return Err("not a JSON object".to_string());
    };
    let hash = match map.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err("no string field \"hash\"".to_string()),
    };
    let string = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("no string field {name:?}")),
    };
    let number = |name: &str| {
        map.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no unsigned integer field {name:?}"))
    };
    let parsed = ParsedLine {
        v: number("v")?,
        stream: string("stream")?,
        seq: number("seq")?,
        prev: string("prev")?,
        hash,
        rest: Value::Null,
    };
    if parsed.seq == 0 {
        return Err("seq must be at least 1".to_string());
    }
    if decode_hash(&parsed.prev).is_none() || decode_hash(&parsed.hash).is_none() {
        return Err("prev and hash must be 64 lower-case hex digits".to_string());
    }
    Ok(ParsedLine {
        rest: value,
        ..parsed
    })
}
