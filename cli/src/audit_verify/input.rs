//! The input, line by line: audit events, checkpoint receipts the sidecar
//! logged, and every other line (counted and named, never skipped silently).

use super::checkpoints::CheckpointLine;
use serde_json::Value;

/// The chain fields that make a line an audit event. The sidecar's own log
/// lines (tracing's JSON: `timestamp`, `level`, `fields`, `target`, spans)
/// carry none of them at the top level.
const CHAIN_FIELDS: [&str; 3] = ["hash", "prev", "seq"];

/// The message the run-mode sidecar logs a signed receipt under (sidecar/src/run.rs).
const RECEIPT_MESSAGE: &str = "audit checkpoint signed by the operator";

/// What one input line is.
pub(super) enum Line {
    Blank,
    /// An audit event (or something that claims to be one; the chain
    /// verifier decides), with its stream and seq when they could be read.
    Audit(Option<(String, u64)>),
    /// A log line carrying a signed checkpoint receipt.
    Receipt(Box<CheckpointLine>),
    /// A JSON line that is not an audit event (a JSON log line).
    JsonOther,
    /// A line that is not JSON.
    TextOther,
}

/// Whether a log line is an audit event (for `tail`, which shows them live).
pub(crate) fn is_audit_event(raw: &str) -> bool {
    matches!(classify(raw), Line::Audit(_))
}

pub(super) fn classify(raw: &str) -> Line {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Line::Blank;
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(map)) => {
            if CHAIN_FIELDS.iter().any(|f| map.contains_key(*f)) {
                let id = map
                    .get("stream")
                    .and_then(Value::as_str)
                    .zip(map.get("seq").and_then(Value::as_u64))
                    .map(|(s, q)| (s.to_string(), q));
                return Line::Audit(id);
            }
            let fields = map.get("fields");
            let receipt = fields
                .filter(|f| f.get("message").and_then(Value::as_str) == Some(RECEIPT_MESSAGE))
                .and_then(|f| f.get("checkpoint")?.as_str())
                .and_then(|c| serde_json::from_str::<CheckpointLine>(c).ok());
            match receipt {
                Some(c) => Line::Receipt(Box::new(c)),
                None => Line::JsonOther,
            }
        }
        Ok(_) => Line::JsonOther,
        // Not JSON: a text log line, unless it carries a chain field the way
        // an audit event writes it (a torn or mangled event must fail).
        Err(_) => {
            if ["\"hash\":\"", "\"prev\":\"", "\"seq\":"]
                .iter()
                .any(|m| trimmed.contains(m))
            {
                Line::Audit(None)
            } else {
                Line::TextOther
            }
        }
    }
}

/// Lines that are not audit events: counted, and the first few named.
#[derive(Default)]
pub(super) struct OtherLines {
    pub(super) json: usize,
    pub(super) text: usize,
    pub(super) receipts: usize,
    pub(super) first: Vec<usize>,
}

/// How many line numbers of other lines the report names.
const OTHER_LINES_NAMED: usize = 5;

impl OtherLines {
    pub(super) fn add(&mut self, line: usize) {
        if self.first.len() < OTHER_LINES_NAMED {
            self.first.push(line);
        }
    }

    pub(super) fn count(&self) -> usize {
        self.json + self.text + self.receipts
    }
}
