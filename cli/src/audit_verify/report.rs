//! The report: a failure, or what verified (per stream, the ranges
//! checkpoints anchor), as text or JSON.

use super::checkpoints::Checkpoint;
use super::input::OtherLines;
use serde_json::Value;
use serde_json::json;
use sluice_policy::audit::VerifyReport;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// One stream of the log: its range, and which parts checkpoints anchor.
pub(super) struct StreamReport {
    pub(super) stream: String,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) events: u64,
    /// (from, to, checkpoint index) in seq order.
    pub(super) anchored: Vec<(u64, u64, usize)>,
    /// The range no checkpoint covers, at the end.
    pub(super) unanchored: Option<(u64, u64)>,
}

pub(super) fn stream_reports(
    report: &VerifyReport,
    first_seq: &BTreeMap<String, u64>,
    events: &BTreeMap<String, u64>,
    checkpoints: &[Checkpoint],
) -> Vec<StreamReport> {
    report
        .heads
        .iter()
        .map(|h| {
            let first = first_seq.get(&h.stream).copied().unwrap_or(1);
            let mut mine: Vec<(u64, usize)> = checkpoints
                .iter()
                .enumerate()
                .filter(|(_, c)| c.head.stream == h.stream && c.head.seq >= first)
                .map(|(i, c)| (c.head.seq, i))
                .collect();
            mine.sort();
            mine.dedup_by_key(|(seq, _)| *seq);
            let mut from = first;
            let mut anchored = Vec::new();
            for (seq, i) in mine {
                if seq > h.seq {
                    break;
                }
                anchored.push((from, seq, i));
                from = seq + 1;
            }
            StreamReport {
                stream: h.stream.clone(),
                first_seq: first,
                last_seq: h.seq,
                events: events.get(&h.stream).copied().unwrap_or(0),
                anchored,
                unanchored: (from <= h.seq).then_some((from, h.seq)),
            }
        })
        .collect()
}

fn signed_at_text(at: Option<i64>) -> String {
    at.and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(|t| format!(", signed {t}"))
        .unwrap_or_default()
}

/// What a torn last line is, in the report.
pub(super) const TORN_DETAIL: &str = "an incomplete write, e.g. a crash of the sidecar while it \
     wrote the line; it is not an event and was not verified";

/// A log that verified, and what its report says.
pub struct Verified {
    pub(super) report: VerifyReport,
    pub(super) streams: Vec<StreamReport>,
    pub(super) checkpoints: Vec<Checkpoint>,
    pub(super) absent: Vec<usize>,
    pub(super) other: OtherLines,
    pub(super) authenticated: bool,
    /// The last line, when it is torn (cut mid-write, e.g. by a crash):
    /// everything before it verified; it is not an event.
    pub(super) torn: Option<usize>,
    /// Torn lines inside the log, each the last write of a writer that
    /// crashed (no stream that wrote before it goes on after it; what
    /// follows is a restarted writer's new stream): not events, and the
    /// lines around them verified.
    pub(super) torn_within: Vec<usize>,
}

/// How many torn lines inside the log the report names.
const TORN_WITHIN_NAMED: usize = 20;

/// What a torn line inside the log is, in the report.
pub(super) const TORN_WITHIN_DETAIL: &str = "an incomplete write, after which the writer \
     started again (a crash, then a restart: a new stream follows, and no stream before it goes \
     on); it is not an event and was not verified, what it held is lost";

impl Verified {
    /// The report as JSON (`audit verify --json`).
    pub fn to_json(&self) -> Value {
        let Verified {
            report,
            streams,
            checkpoints,
            absent,
            other,
            authenticated,
            torn,
            torn_within,
        } = self;
        let authenticated = *authenticated;
        let cp = |i: usize| {
            let c = &checkpoints[i];
            json!({"source": c.source, "stream": c.head.stream, "seq": c.head.seq,
               "keyId": c.key_id, "signedAt": c.signed_at, "previous": c.previous,
               "authenticated": c.authenticated})
        };
        let streams: Vec<Value> = streams
            .iter()
            .map(|s| {
                json!({
                    "stream": s.stream, "firstSeq": s.first_seq, "lastSeq": s.last_seq,
                    "events": s.events,
                    "anchored": s.anchored.iter().map(|(from, to, i)| json!({
                        "from": from, "to": to, "checkpoint": cp(*i)})).collect::<Vec<_>>(),
                    "unanchored": s.unanchored.map(|(from, to)| json!({"from": from, "to": to})),
                })
            })
            .collect();
        let heads: Vec<_> = report
            .heads
            .iter()
            .map(|h| json!({"stream": h.stream, "seq": h.seq, "hash": h.hash}))
            .collect();
        // Not ok when torn: what the torn line held is not proven.
        json!({
            "ok": torn.is_none() && torn_within.is_empty(),
            "events": report.events, "streams": report.streams,
            "torn": torn.map(|line| json!({"line": line, "verifiedThroughLine": line - 1,
                "detail": TORN_DETAIL})),
            "tornWithin": (!torn_within.is_empty()).then(|| json!({
                "count": torn_within.len(),
                "lines": torn_within.iter().take(TORN_WITHIN_NAMED).collect::<Vec<_>>(),
                "detail": TORN_WITHIN_DETAIL})),
            "checkpointsMatched": report.checkpoints_matched, "heads": heads,
            "checkpointsAuthenticated": authenticated && !checkpoints.is_empty(),
            "outages": report.outages,
            "anchoring": streams,
            "checkpointsWithoutEvents": absent.iter().map(|i| cp(*i)).collect::<Vec<_>>(),
            "otherLines": {"count": other.count(), "json": other.json, "text": other.text,
                           "receipts": other.receipts, "first": other.first},
        })
    }

    /// Prints the report as text.
    pub fn print_text(&self) {
        let Verified {
            report,
            streams,
            checkpoints,
            absent,
            other,
            authenticated,
            torn,
            torn_within,
        } = self;
        let authenticated = *authenticated;
        let absent_streams: BTreeSet<&str> = absent
            .iter()
            .map(|i| checkpoints[*i].head.stream.as_str())
            .collect();
        let used = checkpoints.len() - absent.len();
        let (status, upto) = match torn {
            Some(line) => ("TORN", format!(" up to line {}", line - 1)),
            None if !torn_within.is_empty() => ("TORN", String::new()),
            None => ("OK", String::new()),
        };
        println!(
            "{status}: {} events in {} stream(s) verified{upto}; {} of {} checkpoint(s) matched{}",
            report.events,
            report.streams,
            report.checkpoints_matched,
            used,
            match (authenticated, checkpoints.is_empty()) {
                (_, true) => "",
                (true, false) => ", their signatures verified",
                (false, false) => " (not authenticated: give --jwks to check their signatures)",
            }
        );
        for s in streams {
            println!(
                "stream {}: seq {}..{} ({} event(s))",
                s.stream, s.first_seq, s.last_seq, s.events
            );
            for (from, to, i) in &s.anchored {
                let c = &checkpoints[*i];
                println!(
                    "  seq {from}..{to} anchored by the checkpoint at seq {} ({}{}{}){}",
                    c.head.seq,
                    c.source,
                    c.key_id
                        .as_deref()
                        .map(|k| format!(", key {k}"))
                        .unwrap_or_default(),
                    signed_at_text(c.signed_at),
                    if c.authenticated {
                        ""
                    } else {
                        " — NOT authenticated"
                    }
                );
            }
            if let Some((from, to)) = s.unanchored {
                println!(
                    "  seq {from}..{to} NOT anchored: no checkpoint covers them, so events cut from \
                 the end, or the chain recomputed from seq {from} on, would not be detected"
                );
            }
        }
        if !absent.is_empty() {
            println!(
                "note: {} checkpoint(s) of {} stream(s) with no event in this log were not used \
             (other pods' or earlier containers' streams of the Connection; if this log should \
             hold them, their events are missing — pass --require-every-stream to fail): {}",
                absent.len(),
                absent_streams.len(),
                absent_streams
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
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
        if other.count() > 0 {
            let lines: Vec<String> = other.first.iter().map(ToString::to_string).collect();
            println!(
                "note: {} line(s) are not audit events and were not verified ({} JSON log line(s), \
             {} text line(s), {} checkpoint receipt(s)); first at line(s) {}{}",
                other.count(),
                other.json,
                other.text,
                other.receipts,
                lines.join(", "),
                if other.count() > other.first.len() {
                    ", …"
                } else {
                    ""
                }
            );
        }
        print_last_notes(*torn, torn_within, checkpoints.is_empty());
    }
}

/// The report's last lines: the torn lines, and what no checkpoint proves.
fn print_last_notes(torn: Option<usize>, torn_within: &[usize], no_checkpoints: bool) {
    if !torn_within.is_empty() {
        println!(
            "{} line(s) inside the log are torn ({}{}): {TORN_WITHIN_DETAIL}",
            torn_within.len(),
            torn_within
                .iter()
                .take(TORN_WITHIN_NAMED)
                .map(|l| format!("line {l}"))
                .collect::<Vec<_>>()
                .join(", "),
            if torn_within.len() > TORN_WITHIN_NAMED {
                ", …"
            } else {
                ""
            }
        );
    }
    if let Some(line) = torn {
        println!("the last line ({line}) is torn: {TORN_DETAIL}");
    }
    if no_checkpoints {
        println!(
            "note: no checkpoints given, so events cut from the end of the log, or a chain \
             recomputed after an edit, cannot be detected"
        );
    }
}
