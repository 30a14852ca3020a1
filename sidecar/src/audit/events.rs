//! The events a plane writes through [`AuditLog`] besides a SQL statement's
//! decision and result: an event of any kind for a session (the HTTP plane's
//! requests, which are not SQL texts), the same with its command rendered
//! once for both of a request's events (in batched mode one event: the
//! request's decision held for its result, see [`super::held`]), and the
//! steps of an approval.

use sluice_policy::audit::{
    AuditApproval, AuditCommand, AuditDecision, AuditKind, AuditOutcome, Rendered,
};

use super::durability::WriteMode;
use super::held::{HoldId, Recorded};
use super::{AuditError, AuditLog, SessionInfo, StatementEvent};

/// A statement, a session's start or an approval is not begun once the
/// sidecar is shutting down; what ends or reports one still is.
fn refuse_when_shutting_down(log: &AuditLog, kind: AuditKind) -> Result<(), AuditError> {
    if matches!(
        kind,
        AuditKind::Statement | AuditKind::SessionStart | AuditKind::Approval
    ) {
        log.shutting_down()?;
    }
    Ok(())
}

impl AuditLog {
    /// An event of any kind for `s` (used by the HTTP data plane, whose
    /// requests are not SQL texts). Written now when `durable`
    /// (decisions: write-ahead), else with the next durable event. Returns
    /// the line's number: with `durable` false, a ticket for
    /// [`AuditLog::durable`] (write-ahead that shares one write with other
    /// connections' records).
    pub fn event(
        &self,
        s: &SessionInfo,
        kind: AuditKind,
        command: Option<AuditCommand>,
        decision: Option<AuditDecision>,
        outcome: Option<AuditOutcome>,
        durable: bool,
    ) -> Result<u64, AuditError> {
        refuse_when_shutting_down(self, kind)?;
        if let Some(session) = s.pieces() {
            // The session's fields pre-rendered; the request's rendered here.
            let command = command.as_ref().map(Rendered::command).transpose()?;
            let decision = decision.as_ref().map(Rendered::decision).transpose()?;
            let event = StatementEvent {
                kind,
                command: command.as_ref(),
                decision: decision.as_ref(),
                outcome: outcome.as_ref(),
            };
            return self.append_pieces(s, session, event, self.write_mode(s, durable));
        }
        let mut d = self.draft(s, kind);
        d.command = command;
        d.decision = decision;
        d.outcome = outcome;
        self.append_event(d, self.write_mode(s, durable))
    }

    /// [`AuditLog::event`] of a command rendered already (`rendered` is
    /// [`Rendered::command`] of `command`): the HTTP plane serialises a
    /// request's command once for both its events, the decision and the
    /// result (the same bytes as [`AuditLog::event`] writes).
    pub(crate) fn event_rendered(
        &self,
        s: &SessionInfo,
        kind: AuditKind,
        (command, rendered): (&AuditCommand, &Rendered),
        decision: Option<AuditDecision>,
        outcome: Option<AuditOutcome>,
        durable: bool,
    ) -> Result<u64, AuditError> {
        let Some(session) = s.pieces() else {
            let command = Some(command.clone());
            return self.event(s, kind, command, decision, outcome, durable);
        };
        refuse_when_shutting_down(self, kind)?;
        let decision = decision.as_ref().map(Rendered::decision).transpose()?;
        let event = StatementEvent {
            kind,
            command: Some(rendered),
            decision: decision.as_ref(),
            outcome: outcome.as_ref(),
        };
        self.append_pieces(s, session, event, self.write_mode(s, durable))
    }

    /// The `statement` event of a request about to run, its `command` and
    /// `decision` fields rendered already: in batched mode held for its
    /// result, which joins it in one event ([`super::held`]; the plane
    /// hands the result [`Recorded::hold`]); else appended as
    /// [`AuditLog::event_rendered`] appends it, left pending. The caller
    /// awaits [`AuditLog::durable`] with the ticket before it forwards.
    pub(crate) fn statement_rendered(
        &self,
        s: &SessionInfo,
        command: &Rendered,
        decision: &Rendered,
    ) -> Result<Recorded, AuditError> {
        self.shutting_down()?;
        let write = self.write_mode(s, false);
        if write == WriteMode::Batched {
            return self.hold_statement(s, command, decision);
        }
        let Some(session) = s.pieces() else {
            return Err(AuditError::Batch(
                "the session's audit fields could not be rendered".into(),
            ));
        };
        let event = StatementEvent {
            kind: AuditKind::Statement,
            command: Some(command),
            decision: Some(decision),
            outcome: None,
        };
        let ticket = self.append_pieces(s, session, event, write)?;
        Ok(Recorded { ticket, hold: None })
    }

    /// The result of a request recorded by [`AuditLog::statement_rendered`]:
    /// sealed with its decision as one `statement` event while that is
    /// still held (`hold`), else a `result` event of its own, left pending
    /// (as [`AuditLog::event_rendered`] writes it).
    pub(crate) fn result_rendered(
        &self,
        s: &SessionInfo,
        command: (&AuditCommand, &Rendered),
        hold: Option<HoldId>,
        outcome: AuditOutcome,
    ) -> Result<(), AuditError> {
        if let Some(hold) = hold
            && let Some(joined) = self.join_result(hold, &outcome)
        {
            return joined;
        }
        self.event_rendered(s, AuditKind::Result, command, None, Some(outcome), false)
            .map(|_| ())
    }

    /// A step of an approval (see [`crate::approval::ApprovalRecord`]),
    /// written now: `Approval` events when it was asked (phase Pending) and
    /// when an approved command is about to run (phase Executed,
    /// write-ahead: an error means it must not run); a `Denial` when it was
    /// denied, expired or not run.
    pub fn approval_step(
        &self,
        s: &SessionInfo,
        kind: AuditKind,
        command: AuditCommand,
        decision: AuditDecision,
        step: AuditApproval,
    ) -> Result<(), AuditError> {
        if kind != AuditKind::Denial {
            self.shutting_down()?;
        }
        let mut d = self.draft(s, kind);
        d.command = Some(command);
        d.decision = Some(decision);
        d.approval = Some(step);
        // Written now whatever the durability: an approval is rare, and the
        // approved command runs only once it is on record.
        self.write_event(d, WriteMode::Now)
    }
}
