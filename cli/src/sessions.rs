//! `kubectl sluice sessions`: the sessions of audit logs, by identity, pod,
//! Connection and time, and the reading both it and `replay` share: each
//! file is verified (as `audit verify` does) before anything of it is shown,
//! so a replay never shows an edited record.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use sluice_crds::Recording;
use sluice_policy::audit::{AuditEvent, AuditKind};

use crate::audit_verify;

/// `kubectl sluice sessions`.
#[derive(clap::Args)]
pub struct SessionsArgs {
    /// Audit files (the sidecars' JSON lines, or `kubectl logs` output; `-` for stdin).
    #[arg(long, num_args = 1.., required = true)]
    audit: Vec<PathBuf>,
    /// Only sessions of this identity (`NAMESPACE/SERVICEACCOUNT`).
    #[arg(long)]
    identity: Option<String>,
    /// Only sessions from this pod.
    #[arg(long)]
    pod: Option<String>,
    /// Only sessions on this Connection.
    #[arg(long)]
    connection: Option<String>,
    /// Output format: `text` (a table) or `json`.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Format,
}

/// How a command prints.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For a person.
    Text,
    /// For a script.
    Json,
}

/// Why sessions cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    /// An audit file cannot be read.
    #[error("cannot read audit file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An audit file does not verify: nothing of it is shown.
    #[error(
        "audit file {path} does not verify ({kind}{at}: {detail}); nothing of it is shown, \
         because a record that may have been edited cannot be replayed. \
         Run `kubectl sluice audit verify {path}` for the full report"
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// The verifier's kind of failure (`hashMismatch`, `truncated`, …).
        kind: String,
        /// ` at line N`, when the failure has a line.
        at: String,
        /// The verifier's words.
        detail: String,
    },
    /// No session has this id.
    #[error("no session {session} in {files}; list them with `kubectl sluice sessions --audit …`")]
    NoSession {
        /// The id or prefix asked for.
        session: String,
        /// The files read.
        files: String,
    },
    /// A prefix matches several sessions.
    #[error("session prefix {prefix} matches {count} sessions ({examples}); give more of the id")]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// How many match.
        count: usize,
        /// A few of them.
        examples: String,
    },
    /// A bad `--speed`.
    #[error("--speed must be a number above 0 (1 is real time, 10 ten times faster); got {0}")]
    Speed(f64),
}

/// The verified events of `files`, in file order and, per stream, in seq order.
pub fn load(files: &[PathBuf]) -> Result<Vec<AuditEvent>, SessionsError> {
    let mut events = Vec::new();
    for path in files {
        let text = read(path)?;
        let options = audit_verify::Options {
            checkpoints: None,
            jwks: None,
            require_every_stream: false,
        };
        let verified = audit_verify::verify(&text, &options).map_err(|e| SessionsError::Read {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if let Err(failure) = verified {
            let report = failure.to_json();
            return Err(SessionsError::Tampered {
                path: path.clone(),
                kind: report["kind"].as_str().unwrap_or("failed").to_string(),
                at: report["line"]
                    .as_u64()
                    .map(|l| format!(" at line {l}"))
                    .unwrap_or_default(),
                detail: report["detail"].as_str().unwrap_or_default().to_string(),
            });
        }
        // The verifier accepted every line that claims to be an event;
        // the others (log lines of a merged container log) are not events.
        events.extend(
            text.lines()
                .filter(|l| l.trim_start().starts_with('{'))
                .filter_map(|l| serde_json::from_str::<AuditEvent>(l.trim()).ok()),
        );
    }
    Ok(events)
}

fn read(path: &PathBuf) -> Result<String, SessionsError> {
    let err = |source| SessionsError::Read {
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

/// One session, summarised from its events.
pub struct Session {
    /// The session id.
    pub id: String,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub identity: String,
    /// The pod, when known.
    pub pod: Option<String>,
    /// The Connection.
    pub connection: String,
    /// `postgres`, `mysql` or `http` (from its commands and their
    /// decisions), when it ran any.
    pub protocol: Option<&'static str>,
    /// Its first and last event's time.
    pub start: String,
    /// The last event's time.
    pub end: String,
    /// Whether its end is on record.
    pub ended: bool,
    /// Statements or requests decided (run, run after approval, or refused).
    pub statements: u64,
    /// Of them, refused.
    pub denied: u64,
    /// Values masked in its results.
    pub masked: u64,
    /// The most its results were recorded at.
    pub recording: Recording,
    /// Its events, in order.
    pub events: Vec<AuditEvent>,
}

impl Session {
    /// The session as `sessions -o json` and `replay -o json` print it.
    pub fn summary_json(&self) -> Value {
        json!({
            "session": self.id,
            "identity": self.identity,
            "pod": self.pod,
            "connection": self.connection,
            "protocol": self.protocol,
            "start": self.start,
            "end": self.end,
            "ended": self.ended,
            "statements": self.statements,
            "denied": self.denied,
            "masked": self.masked,
            "recording": self.recording.as_str(),
        })
    }
}

/// The sessions of `events`, by start time.
pub fn sessions(events: Vec<AuditEvent>) -> Vec<Session> {
    let mut by_id: BTreeMap<String, Vec<AuditEvent>> = BTreeMap::new();
    for e in events {
        if let Some(id) = e.session.clone() {
            by_id.entry(id).or_default().push(e);
        }
    }
    let mut out: Vec<Session> = by_id
        .into_iter()
        .map(|(id, mut events)| {
            events.sort_by(|a, b| (&a.stream, a.seq).cmp(&(&b.stream, b.seq)));
            events.dedup_by(|a, b| a.stream == b.stream && a.seq == b.seq);
            summarise(id, events)
        })
        .collect();
    out.sort_by(|a, b| (time(&a.start), &a.id).cmp(&(time(&b.start), &b.id)));
    out
}

/// Whether `e` is a MySQL plane's decision: its reason ends by naming the
/// plane's protocol (`… (mysql text protocol)`, `… (mysql binary protocol)`).
fn is_mysql(e: &AuditEvent) -> bool {
    e.decision
        .as_ref()
        .and_then(|d| d.reason.as_deref())
        .is_some_and(|r| {
            r.ends_with("(mysql text protocol)") || r.ends_with("(mysql binary protocol)")
        })
}

fn summarise(id: String, events: Vec<AuditEvent>) -> Session {
    let who = events.iter().find_map(|e| e.identity.as_ref());
    let protocol = events.iter().find(|e| e.command.is_some()).map(|first| {
        if first.command.as_ref().and_then(|c| c.kind.as_deref()) == Some("http") {
            "http"
        } else if events.iter().any(is_mysql) {
            "mysql"
        } else {
            "postgres"
        }
    });
    let count = |k: AuditKind| events.iter().filter(|e| e.kind == k).count() as u64;
    let denied = count(AuditKind::Denial);
    Session {
        identity: who
            .map(|w| format!("{}/{}", w.namespace, w.service_account))
            .unwrap_or_else(|| "-".into()),
        pod: who.and_then(|w| w.pod.clone()),
        connection: events
            .iter()
            .find_map(|e| e.connection.clone())
            .unwrap_or_else(|| "-".into()),
        protocol,
        start: events.first().map(|e| e.time.clone()).unwrap_or_default(),
        end: events.last().map(|e| e.time.clone()).unwrap_or_default(),
        ended: events.iter().any(|e| e.kind == AuditKind::SessionEnd),
        // An approved statement's decision is its `Executed` approval step.
        statements: count(AuditKind::Statement)
            + denied
            + events
                .iter()
                .filter(|e| {
                    e.approval
                        .as_ref()
                        .is_some_and(|a| a.phase == sluice_crds::RequestPhase::Executed)
                })
                .count() as u64,
        denied,
        masked: events
            .iter()
            .filter_map(|e| e.outcome.as_ref()?.masked)
            .sum(),
        recording: events
            .iter()
            .filter_map(|e| e.outcome.as_ref()?.recorded.as_ref())
            .map(|r| r.level)
            .max()
            .unwrap_or_default(),
        id,
        events,
    }
}

/// An event's time, for ordering and delays (`None` when unreadable).
pub fn time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// Text safe to print on a terminal: control characters (an escape
/// sequence a recorded value carries, say) are shown escaped, never sent.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `kubectl sluice sessions`.
pub fn run(args: &SessionsArgs) -> Result<ExitCode, SessionsError> {
    let listed: Vec<Session> = sessions(load(&args.audit)?)
        .into_iter()
        .filter(|s| args.identity.as_ref().is_none_or(|i| *i == s.identity))
        .filter(|s| args.pod.as_ref().is_none_or(|p| Some(p) == s.pod.as_ref()))
        .filter(|s| args.connection.as_ref().is_none_or(|c| *c == s.connection))
        .collect();
    if args.output == Format::Json {
        let all: Vec<Value> = listed.iter().map(Session::summary_json).collect();
        println!("{}", Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        eprintln!("no sessions in the audit files (with these filters)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 9]> = listed
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                s.start.clone(),
                duration(s),
                s.identity.clone(),
                s.pod.clone().unwrap_or_else(|| "-".into()),
                s.connection.clone(),
                s.statements.to_string(),
                s.denied.to_string(),
                s.recording.as_str().to_string(),
            ]
            .map(|c| printable(&c))
        })
        .collect();
    let header = [
        "SESSION",
        "START",
        "DURATION",
        "IDENTITY",
        "POD",
        "CONNECTION",
        "STATEMENTS",
        "DENIED",
        "RECORDING",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a session lasted, or `open` when its end is not on record.
fn duration(s: &Session) -> String {
    let span = time(&s.start)
        .zip(time(&s.end))
        .map(|(a, b)| b.as_millisecond() - a.as_millisecond());
    match (span, s.ended) {
        (Some(ms), true) => format!("{:.1}s", ms as f64 / 1000.0),
        (Some(ms), false) => format!("open ({:.1}s)", ms as f64 / 1000.0),
        (None, _) => "-".into(),
    }
}
