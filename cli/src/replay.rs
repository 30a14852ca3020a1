//! `kubectl sluice replay SESSION --audit FILES…`: one session as it
//! happened, from its verified audit events — each statement or request
//! with its decision, its outcome and, when the session was recorded
//! (`spec.recording`), what the workload received, masked as it received it.
//! With its timing (`--speed`), or at once (`--no-delay`); `-o json` for a script.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_crds::Action;
use sluice_policy::audit::{AuditEvent, AuditKind, AuditRecorded};

use crate::sessions::{self, Format, Session, SessionsError, printable, time};

/// A pause longer than this is shortened to it (and said), so a session
/// idle for an hour replays in seconds.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Rows of a result set printed; the rest are counted.
const SHOWN_ROWS: usize = 20;
/// Widest column printed; longer values are cut (and marked).
const SHOWN_WIDTH: usize = 60;

/// `kubectl sluice replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The session id (as `kubectl sluice sessions` lists it; a unique
    /// prefix of 8 or more characters is enough).
    session: String,
    /// Audit files holding the session (`-` for stdin).
    #[arg(long, num_args = 1.., required = true)]
    audit: Vec<PathBuf>,
    /// Replay this many times faster than it happened (pauses over 5 s are cut to 5 s).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Print everything at once.
    #[arg(long)]
    no_delay: bool,
    /// Output format: `text` or `json` (the session and its events, no delays).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Format,
}

/// `kubectl sluice replay`.
pub fn run(args: &ReplayArgs) -> Result<ExitCode, SessionsError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(SessionsError::Speed(args.speed));
    }
    let all = sessions::sessions(sessions::load(&args.audit)?);
    let session = find(all, &args.session, &args.audit)?;
    if args.output == Format::Json {
        println!("{}", to_json(&session));
        return Ok(ExitCode::SUCCESS);
    }
    print_text(&session, (!args.no_delay).then_some(args.speed));
    Ok(ExitCode::SUCCESS)
}

fn find(mut all: Vec<Session>, wanted: &str, files: &[PathBuf]) -> Result<Session, SessionsError> {
    if let Some(i) = all.iter().position(|s| s.id == wanted) {
        return Ok(all.swap_remove(i));
    }
    let mut matching: Vec<Session> = if wanted.len() >= 8 {
        all.into_iter()
            .filter(|s| s.id.starts_with(wanted))
            .collect()
    } else {
        Vec::new()
    };
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(SessionsError::NoSession {
            session: wanted.to_string(),
            files: files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        count => Err(SessionsError::Ambiguous {
            prefix: wanted.to_string(),
            count,
            examples: matching
                .iter()
                .take(3)
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The session and its events, each with its offset from the start.
fn to_json(s: &Session) -> Value {
    let start = time(&s.start);
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            if let (Some(obj), Some(a), Some(b)) = (v.as_object_mut(), start, time(&e.time)) {
                obj.insert(
                    "offsetMs".into(),
                    json!(b.as_millisecond() - a.as_millisecond()),
                );
            }
            v
        })
        .collect();
    let mut out = s.summary_json();
    out["events"] = Value::Array(events);
    out
}

fn print_text(s: &Session, speed: Option<f64>) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(
        out,
        "session {} of {}{} on {} ({}), {}, recording {}",
        printable(&s.id),
        printable(&s.identity),
        s.pod
            .as_ref()
            .map(|p| format!(" in pod {}", printable(p)))
            .unwrap_or_default(),
        printable(&s.connection),
        s.protocol.unwrap_or("no statements"),
        printable(&s.start),
        s.recording.as_str(),
    );
    let start = time(&s.start);
    let mut previous = start;
    for e in &s.events {
        let at = time(&e.time);
        if let (Some(speed), Some(prev), Some(now)) = (speed, previous, at) {
            let gap =
                Duration::from_millis((now.as_millisecond() - prev.as_millisecond()).max(0) as u64);
            let wait = gap.div_f64(speed);
            if wait > MAX_PAUSE {
                let _ = writeln!(out, "          … {} s idle …", gap.as_secs());
            }
            let _ = out.flush();
            std::thread::sleep(wait.min(MAX_PAUSE));
        }
        previous = at.or(previous);
        let offset = match (start, at) {
            (Some(a), Some(b)) => format!(
                "+{:>7.3}s",
                (b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0
            ),
            _ => "        ?".into(),
        };
        for line in describe(e) {
            let _ = writeln!(out, "{offset}  {line}");
        }
    }
    if !s.ended {
        let _ = writeln!(
            out,
            "(the session's end is not in these files: it was still open, or the rest is in another file)"
        );
    }
}

/// What one event says, as lines (the first carries the offset).
fn describe(e: &AuditEvent) -> Vec<String> {
    let command = e
        .command
        .as_ref()
        .map(|c| printable(&c.text))
        .unwrap_or_default();
    let mut lines = Vec::new();
    let decided = |lines: &mut Vec<String>| {
        if let Some(d) = &e.decision {
            let by = match (&d.policy, &d.rule) {
                (Some(p), Some(r)) => format!(" by {}/{}", printable(p), printable(r)),
                (Some(p), None) => format!(" by {}", printable(p)),
                _ => String::new(),
            };
            let dry = if d.dry_run { " (dry run: it ran)" } else { "" };
            let why = d
                .reason
                .as_ref()
                .map(|r| format!(": {}", printable(r)))
                .unwrap_or_default();
            lines.push(format!(
                "    {}{by}{dry}{why}",
                action_word(d.action, e.kind)
            ));
        }
    };
    match e.kind {
        AuditKind::SessionStart => lines.push("session started".into()),
        AuditKind::SessionEnd => lines.push("session ended".into()),
        AuditKind::Statement => {
            lines.push(format!("> {command}"));
            decided(&mut lines);
            // Batched mode: the decision and its result in one event.
            if let Some(o) = &e.outcome {
                outcome_lines(o, &mut lines);
            }
        }
        AuditKind::Denial => {
            lines.push(format!("> {command}"));
            decided(&mut lines);
        }
        AuditKind::Approval => {
            let step = e
                .approval
                .as_ref()
                .map(|a| {
                    format!(
                        "approval {} is {:?}{}",
                        printable(&a.request),
                        a.phase,
                        a.decided_by
                            .as_ref()
                            .map(|b| format!(" (by {})", printable(b)))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "approval".into());
            lines.push(format!("  {step}: {command}"));
        }
        AuditKind::Result => outcome_lines(&e.outcome.clone().unwrap_or_default(), &mut lines),
        AuditKind::Mask => lines.push(format!("  masked: {command}")),
        AuditKind::Policy => {
            let p = e.policy.as_ref();
            let name = p
                .map(|p| format!("{}/{}", printable(&p.namespace), printable(&p.name)))
                .unwrap_or_default();
            let what = match p {
                Some(p) if p.removed => "no longer in force".to_string(),
                Some(p) => format!(
                    "in force: generation {}, digest {}",
                    p.generation
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| "?".into()),
                    p.digest.as_deref().map(printable).unwrap_or_default()
                ),
                None => String::new(),
            };
            lines.push(format!("  policy {name} {what}"));
        }
        AuditKind::Outage => {
            lines.push("  the audit sink failed for a while (see audit verify)".into())
        }
    }
    lines
}

/// What a statement's outcome says, as lines.
fn outcome_lines(o: &sluice_policy::audit::AuditOutcome, lines: &mut Vec<String>) {
    let mut parts = Vec::new();
    if let Some(rows) = o.rows {
        parts.push(format!("{rows} row(s)"));
    }
    if let Some(m) = o.masked {
        parts.push(format!("{m} value(s) masked"));
    }
    if let Some(ms) = o.duration_ms {
        parts.push(format!("{ms} ms"));
    }
    if let Some(err) = &o.error {
        parts.push(format!("error {}", printable(err)));
    }
    lines.push(format!("< {}", parts.join(", ")));
    if let Some(r) = &o.recorded {
        lines.extend(recorded(r).into_iter().map(|l| format!("    {l}")));
    }
}

fn action_word(action: Action, kind: AuditKind) -> &'static str {
    match (action, kind) {
        (_, AuditKind::Denial) => "REFUSED",
        (Action::Allow, _) => "allowed",
        (Action::RequireApproval, _) => "needs approval",
        (Action::Deny, _) => "denied",
    }
}

/// A recorded result as lines: a table per result set, or the status and body.
fn recorded(r: &AuditRecorded) -> Vec<String> {
    let mut lines = Vec::new();
    for set in &r.sets {
        if set.columns.is_empty() && set.rows.is_empty() {
            continue;
        }
        let mut table: Vec<Vec<String>> = Vec::new();
        table.push(set.columns.iter().map(|c| cell(c)).collect());
        for row in set.rows.iter().take(SHOWN_ROWS) {
            table.push(
                row.iter()
                    .map(|v| v.as_deref().map(cell).unwrap_or_else(|| "NULL".into()))
                    .collect(),
            );
        }
        let n = table.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; n];
        for row in &table {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        for (i, row) in table.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(j, c)| format!("{c:<w$}", w = widths[j]))
                .collect();
            lines.push(cells.join(" | ").trim_end().to_string());
            if i == 0 && !set.columns.is_empty() {
                lines.push(
                    widths
                        .iter()
                        .map(|w| "-".repeat(*w))
                        .collect::<Vec<_>>()
                        .join("-+-"),
                );
            }
        }
        if set.rows.len() > SHOWN_ROWS {
            lines.push(format!(
                "… {} more recorded row(s) (-o json shows them)",
                set.rows.len() - SHOWN_ROWS
            ));
        }
    }
    if let Some(status) = r.status {
        lines.push(format!("HTTP {status}"));
    }
    if let Some(body) = &r.body {
        lines.extend(body.lines().take(SHOWN_ROWS).map(printable));
    }
    if let Some(why) = &r.rolled_back {
        lines.push(format!("(rolled back, not kept: {})", printable(why)));
    }
    if r.level == sluice_crds::Recording::Statements {
        lines.push("(values not recorded: the policy records statements only)".into());
    }
    if let Some(t) = &r.truncated {
        lines.push(format!("(recording incomplete: {})", printable(t)));
    }
    lines
}

fn cell(v: &str) -> String {
    let v = printable(v);
    if v.chars().count() > SHOWN_WIDTH {
        let cut: String = v.chars().take(SHOWN_WIDTH - 1).collect();
        format!("{cut}…")
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batched statement event (decision and result in one) replays as
    /// the statement, its decision and its result.
    #[test]
    fn a_joined_statement_event_replays_its_result() {
        let event: AuditEvent = serde_json::from_value(serde_json::json!({
            "v": 1, "seq": 1, "time": "2026-12-06T10:00:00Z", "type": "statement",
            "stream": "s", "prev": "0", "hash": "0",
            "command": {"fingerprint": "f", "text": "SELECT ssn FROM t"},
            "decision": {"action": "allow", "policy": "p"},
            "outcome": {"rows": 3, "masked": 3, "durationMs": 2},
        }))
        .unwrap();
        let lines = describe(&event);
        assert_eq!(lines[0], "> SELECT ssn FROM t", "{lines:?}");
        assert!(lines[1].contains("allowed"), "{lines:?}");
        assert_eq!(lines[2], "< 3 row(s), 3 value(s) masked, 2 ms", "{lines:?}");
    }
}
