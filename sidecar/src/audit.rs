//! The audit writer: session start/end, each statement's decision (written
//! before the statement is forwarded) and its result, as hash-chained JSON
//! lines (DESIGN §7) on stdout and, when asked, in a file.
//!
//! Write-ahead: [`AuditLog::statement`] returns an error when a sink cannot
//! take the event, and the caller then refuses the statement. Commands are
//! recorded with literals redacted; no credential and no result value is
//! ever written.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sluice_crds::Action;
use sluice_policy::audit::{
    AuditApproval, AuditChain, AuditCommand, AuditDecision, AuditEvent, AuditEventDraft,
    AuditIdentity, AuditKind, AuditOutcome,
};

use crate::enforcement::{Binding, Decided, Refusal};

/// Why an audit event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing to standard output failed.
    #[error("writing the audit event to stdout failed: {0}")]
    Stdout(#[source] io::Error),
    /// Writing to the audit file failed.
    #[error("writing the audit event to {path} failed: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The event could not be serialised.
    #[error(transparent)]
    Encode(#[from] sluice_policy::audit::AuditError),
}

/// Who a session is, for audit records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Random session id.
    pub id: String,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub subject: String,
    /// Namespace of the identity.
    pub namespace: String,
    /// Service account of the identity.
    pub service_account: String,
    /// Pod, when known.
    pub pod: Option<String>,
    /// Groups of the identity.
    pub groups: Vec<String>,
    /// The Connection.
    pub connection: String,
    /// The client's address (loopback in a pod).
    pub client: String,
}

impl SessionInfo {
    /// A new session of `binding` on `connection`.
    pub fn new(binding: &Binding, connection: &str, client: SocketAddr) -> Self {
        let id: u128 = rand::random();
        let identity = binding.identity();
        SessionInfo {
            id: format!("{id:032x}"),
            subject: format!("{}/{}", identity.namespace, identity.service_account),
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            pod: identity.pod.clone(),
            groups: identity.groups.clone(),
            connection: connection.to_string(),
            client: client.to_string(),
        }
    }
}

/// The outcome of one statement (or query string).
#[derive(Debug, Clone)]
pub struct ResultRecord {
    /// Rows returned or affected.
    pub rows: u64,
    /// Values masked.
    pub masked: u64,
    /// Time from forwarding to the end of the result.
    pub duration: Duration,
    /// SQLSTATE of the error, if it failed.
    pub error: Option<String>,
}

/// Where audit lines go.
pub struct AuditLog {
    inner: Mutex<Inner>,
    stdout: bool,
    /// Also hands every event to this channel (run mode: the operator's
    /// `/v1/audit`). Best effort: stdout and the file stay the write-ahead sinks.
    forward: Option<tokio::sync::mpsc::Sender<AuditEvent>>,
    /// Events the forward channel had no room for.
    forward_dropped: std::sync::atomic::AtomicU64,
}

struct Inner {
    chain: AuditChain,
    file: Option<(PathBuf, File)>,
    /// Lines not yet written: result events wait here for the next decision
    /// event (or the periodic [`AuditLog::flush`]) so that a statement costs
    /// one write, not two. Decision, denial and session events are written
    /// at once, with everything before them.
    pending: Vec<u8>,
}

impl AuditLog {
    /// An audit log on stdout (when `stdout`) and in `file` (appended) when given.
    /// `stream` names the chain (e.g. the sidecar's identity and start time).
    pub fn open(stream: &str, stdout: bool, file: Option<&Path>) -> Result<Self, AuditError> {
        let file = match file {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::File {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some((path.to_path_buf(), f))
            }
            None => None,
        };
        Ok(AuditLog {
            inner: Mutex::new(Inner {
                chain: AuditChain::new(stream),
                file,
                pending: Vec::with_capacity(4096),
            }),
            stdout,
            forward: None,
            forward_dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Also hands every event to `tx` (a full channel drops the event for
    /// that sink only; see [`AuditLog::forward_dropped`]).
    pub fn forward_to(&mut self, tx: tokio::sync::mpsc::Sender<AuditEvent>) {
        self.forward = Some(tx);
    }

    /// How many events the forward channel had no room for.
    pub fn forward_dropped(&self) -> u64 {
        self.forward_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends an event to the chain; writes it (and everything pending)
    /// now when `durable`, else leaves it pending.
    fn write_event(&self, draft: AuditEventDraft, durable: bool) -> Result<(), AuditError> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        // Serialised once, straight into the pending lines.
        let event = inner.chain.append_line(draft, &mut inner.pending)?;
        if let Some(tx) = &self.forward
            && tx.try_send(event).is_err()
        {
            self.forward_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if durable {
            self.write_pending(inner)
        } else {
            Ok(())
        }
    }

    fn write(&self, draft: AuditEventDraft) -> Result<(), AuditError> {
        self.write_event(draft, true)
    }

    fn write_pending(&self, inner: &mut Inner) -> Result<(), AuditError> {
        if inner.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut inner.pending);
        let result = (|| {
            if self.stdout {
                let mut out = io::stdout().lock();
                out.write_all(&pending)
                    .and_then(|()| out.flush())
                    .map_err(AuditError::Stdout)?;
            }
            if let Some((path, f)) = inner.file.as_mut() {
                f.write_all(&pending).map_err(|source| AuditError::File {
                    path: path.clone(),
                    source,
                })?;
            }
            Ok(())
        })();
        // Keep the allocation for the next batch.
        inner.pending = pending;
        inner.pending.clear();
        result
    }

    /// Writes pending result events (called periodically, so that a quiet
    /// session's last result is on record within a fraction of a second).
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.write_pending(&mut inner)
    }

    fn draft(&self, s: &SessionInfo, kind: AuditKind) -> AuditEventDraft {
        let mut d = AuditEventDraft::new(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            kind,
        );
        d.session = Some(s.id.clone());
        d.identity = Some(AuditIdentity {
            namespace: s.namespace.clone(),
            service_account: s.service_account.clone(),
            pod: s.pod.clone(),
            groups: s.groups.clone(),
        });
        d.connection = Some(s.connection.clone());
        d
    }

    /// An event of any kind for `s` (used by the HTTP data plane, whose
    /// requests are not SQL [`Decided`] texts). Written now when `durable`
    /// (decisions: write-ahead), else with the next durable event.
    pub fn event(
        &self,
        s: &SessionInfo,
        kind: AuditKind,
        command: Option<AuditCommand>,
        decision: Option<AuditDecision>,
        outcome: Option<AuditOutcome>,
        durable: bool,
    ) -> Result<(), AuditError> {
        let mut d = self.draft(s, kind);
        d.command = command;
        d.decision = decision;
        d.outcome = outcome;
        self.write_event(d, durable)
    }

    /// A session was refused (not bound, upstream unreachable).
    pub fn session_refused(&self, s: &SessionInfo, reason: &str) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::Denial);
        d.decision = Some(AuditDecision {
            action: Action::Deny,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(reason.to_string()),
        });
        self.write(d)
    }

    /// A session started.
    pub fn session_start(
        &self,
        s: &SessionInfo,
        tls: bool,
        channel_binding: bool,
    ) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::SessionStart);
        d.decision = Some(AuditDecision {
            action: Action::Allow,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(format!(
                "session opened for client {}; upstream tls {}, scram channel binding {}",
                s.client,
                if tls { "on" } else { "off" },
                if channel_binding { "on" } else { "off" }
            )),
        });
        self.write(d)
    }

    /// A session ended.
    pub fn session_end(
        &self,
        s: &SessionInfo,
        duration: Duration,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::SessionEnd);
        d.outcome = Some(AuditOutcome {
            rows: None,
            duration_ms: Some(duration.as_millis() as u64),
            error: error.map(String::from),
            masked: None,
        });
        self.write(d)
    }

    /// A statement's decision, before it is forwarded; a `denial` event
    /// instead when it is refused.
    pub fn statement(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
        refusal: Option<&Refusal>,
    ) -> Result<(), AuditError> {
        let sum = decided.summary();
        let kind = if refusal.is_some() {
            AuditKind::Denial
        } else {
            AuditKind::Statement
        };
        let mut d = self.draft(s, kind);
        d.command = Some(command(decided));
        let (action, reason) = match refusal {
            // Refused although the policy allows it: a limit or the audit sink.
            Some(r) if sum.enforced == Action::Allow => (Action::Deny, r.message.clone()),
            _ => (sum.action, sum.reason),
        };
        d.decision = Some(AuditDecision {
            action,
            policy: sum.policy,
            rule: sum.rule,
            dry_run: sum.dry_run,
            reason: Some(format!("{reason} ({protocol} protocol)")),
        });
        self.write(d)
    }

    /// A statement's result.
    pub fn result(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        r: ResultRecord,
    ) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::Result);
        d.command = Some(command(decided));
        d.outcome = Some(AuditOutcome {
            rows: Some(r.rows),
            duration_ms: Some(r.duration.as_millis() as u64),
            error: r.error,
            masked: (r.masked > 0).then_some(r.masked),
        });
        self.write_event(d, false)
    }

    /// A step of a statement's approval, written now: `Approval` events when
    /// it was asked (phase Pending) and when an approved statement is about
    /// to run (phase Executed, write-ahead: an error means it must not run);
    /// a `Denial` when it was denied, expired or could not be asked.
    pub fn approval(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        kind: AuditKind,
        step: AuditApproval,
        reason: String,
    ) -> Result<(), AuditError> {
        let sum = decided.summary();
        let mut d = self.draft(s, kind);
        d.command = Some(command(decided));
        d.decision = Some(AuditDecision {
            action: sum.enforced,
            policy: sum.policy,
            rule: sum.rule,
            dry_run: false,
            reason: Some(reason),
        });
        d.approval = Some(step);
        self.write(d)
    }
}

fn command(decided: &Decided) -> AuditCommand {
    AuditCommand {
        text: decided.redacted().to_string(),
        fingerprint: decided.fingerprint().to_string(),
        kind: decided.kind().map(String::from),
    }
}
