//! The audit records of SQL statements: a statement's decision (written
//! before it is forwarded), its result, and the steps of its approval, as
//! [`AuditLog`] methods over a [`Decided`] text (its approval's steps go
//! through [`ApprovalRecord::for_statement`], the one shape every plane
//! writes). The audit sink itself knows nothing of SQL.

use sluice_crds::Action;
use sluice_policy::audit::{
    AuditCommand, AuditDecision, AuditEventDraft, AuditKind, AuditOutcome, Rendered,
};

use super::{Decided, Refusal};
use crate::approval::ApprovalRecord;
use crate::audit::durability::WriteMode;
use crate::audit::{AuditError, AuditLog, Recorded, ResultRecord, SessionInfo, StatementEvent};
use crate::metrics::Metrics;

impl AuditLog {
    /// A statement's decision, before it is forwarded; a `denial` event
    /// instead when it is refused.
    pub fn statement(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
        refusal: Option<&Refusal>,
    ) -> Result<(), AuditError> {
        if refusal.is_none() {
            self.shutting_down()?;
        }
        let d = self.statement_draft(s, decided, protocol, refusal);
        self.write(s, d)
    }

    pub(crate) fn statement_draft(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
        refusal: Option<&Refusal>,
    ) -> AuditEventDraft {
        let kind = if refusal.is_some() {
            AuditKind::Denial
        } else {
            AuditKind::Statement
        };
        let mut d = self.draft(s, kind);
        d.command = Some(sql_command(decided));
        d.decision = Some(sql_decision(decided, protocol, refusal));
        d
    }

    /// [`AuditLog::statement`] for an allowed statement, left pending: the
    /// caller awaits [`AuditLog::durable`] with the returned ticket before
    /// it forwards the statement (write-ahead, one write for many; batched:
    /// a wait only while the batch is full).
    ///
    /// The hot path: the session's and the statement's fields are copied
    /// pre-rendered (see [`StatementPieces`]), so a statement served from
    /// the decision cache costs its time, its chain link and a hash.
    pub fn statement_pending(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
    ) -> Result<u64, AuditError> {
        self.statement_recorded(s, decided, protocol)
            .map(|r| r.ticket)
    }

    /// [`AuditLog::statement_pending`], with the held decision a batched
    /// session's statement gets (see [`crate::audit::HoldId`]): its result
    /// joins it in one event when the plane hands it over
    /// ([`ResultRecord::hold`]).
    pub fn statement_recorded(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
    ) -> Result<Recorded, AuditError> {
        self.shutting_down()?;
        let pieces = &decided.audit;
        let rendered = match protocol {
            "simple" => Some(&pieces.simple),
            "extended" => Some(&pieces.extended),
            _ => None,
        }
        .and_then(|slot| {
            slot.get_or_init(|| Rendered::decision(&sql_decision(decided, protocol, None)).ok())
                .as_ref()
        });
        let recorded = |ticket| Recorded { ticket, hold: None };
        if let (Some(session), Some(command), Some(decision)) =
            (s.pieces(), statement_command(decided), rendered)
        {
            let write = self.write_mode(s, false);
            if write == WriteMode::Batched {
                return self.hold_statement(s, command, decision);
            }
            let event = StatementEvent {
                kind: AuditKind::Statement,
                command: Some(command),
                decision: Some(decision),
                outcome: None,
            };
            return self.append_pieces(s, session, event, write).map(recorded);
        }
        let d = self.statement_draft(s, decided, protocol, None);
        self.append_event(d, self.write_mode(s, false))
            .map(recorded)
    }

    /// A statement's result.
    pub fn result(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        r: ResultRecord,
    ) -> Result<(), AuditError> {
        let outcome = AuditOutcome {
            rows: Some(r.rows),
            duration_ms: Some(r.duration.as_millis() as u64),
            error: r.error,
            masked: (r.masked > 0).then_some(r.masked),
            masks: r.masks,
            recorded: r.recorded,
        };
        if let Some(hold) = r.hold
            && let Some(joined) = self.join_result(hold, &outcome)
        {
            return joined;
        }
        if let (Some(session), Some(command)) = (s.pieces(), statement_command(decided)) {
            let event = StatementEvent {
                kind: AuditKind::Result,
                command: Some(command),
                decision: None,
                outcome: Some(&outcome),
            };
            return self
                .append_pieces(s, session, event, self.write_mode(s, false))
                .map(|_| ());
        }
        let mut d = self.draft(s, AuditKind::Result);
        d.command = Some(sql_command(decided));
        d.outcome = Some(outcome);
        self.write_event(d, self.write_mode(s, false))
    }
}

impl<'a> ApprovalRecord<'a> {
    /// Where the steps of `decided`'s approval go on record, in the shape
    /// every plane writes (see [`ApprovalRecord`]).
    pub fn for_statement(
        audit: &'a AuditLog,
        session: &'a SessionInfo,
        decided: &Decided,
        protocol: &'a str,
    ) -> Self {
        let sum = decided.summary();
        ApprovalRecord {
            audit,
            session,
            command: sql_command(decided),
            action: sum.enforced,
            policy: sum.policy,
            rule: sum.rule,
            protocol,
        }
    }
}

impl Metrics {
    /// A statement was decided (refused or not).
    pub fn statement(&self, decided: &Decided, refused: bool) {
        let d = decided.decision();
        self.decision(d.action, d.enforced, refused);
        let (policy, rule) = (d.policy.as_deref(), d.rule.as_deref());
        self.rule(&decided.audit.rule, policy, rule, d.action);
    }
}

/// `decided`'s [`sql_command`], rendered once.
fn statement_command(decided: &Decided) -> Option<&Rendered> {
    decided
        .audit
        .command
        .get_or_init(|| Rendered::command(&sql_command(decided)).ok())
        .as_ref()
}

/// How `decided` is recorded; `refusal` when it was refused although the
/// policy allows it (a limit or the audit sink).
fn sql_decision(decided: &Decided, protocol: &str, refusal: Option<&Refusal>) -> AuditDecision {
    let sum = decided.summary();
    let (action, reason) = match refusal {
        Some(r) if sum.enforced == Action::Allow => (Action::Deny, r.message.clone()),
        _ => (sum.action, sum.reason),
    };
    AuditDecision {
        action,
        policy: sum.policy,
        rule: sum.rule,
        dry_run: sum.dry_run,
        reason: Some(format!("{reason} ({protocol} protocol)")),
    }
}

pub(crate) fn sql_command(decided: &Decided) -> AuditCommand {
    AuditCommand {
        text: decided.redacted().to_string(),
        fingerprint: decided.fingerprint().to_string(),
        kind: decided.kind().map(String::from),
    }
}
