//! The one audit shape of an approval, for every data plane: each step is
//! an `approval` event (asked and held, pending, approved and about to run)
//! or a `denial` carrying the AccessRequest and its phase (denied, expired,
//! not run), with the command and the rule that asked for it.

use sluice_crds::{Action, RequestPhase};
use sluice_policy::audit::{AuditApproval, AuditCommand, AuditDecision, AuditKind};
use sluice_policy::wire::ApprovalTicket;

use super::{ApprovalOutcome, qualified};
use crate::audit::{AuditError, AuditLog, SessionInfo};

/// Where the steps of one approval go on record.
pub struct ApprovalRecord<'a> {
    /// The audit trail.
    pub audit: &'a AuditLog,
    /// The session (an HTTP connection, a PostgreSQL session).
    pub session: &'a SessionInfo,
    /// The command asked for (literals redacted).
    pub command: AuditCommand,
    /// The action recorded: what the policies decided.
    pub action: Action,
    /// The deciding policy.
    pub policy: Option<String>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// `simple`, `extended` or `http`, named in every reason.
    pub protocol: &'a str,
}

/// How an [`ApprovalOutcome`] went on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// As a step of its AccessRequest.
    Step,
    /// Not at all: no AccessRequest was made (the operator could not be
    /// asked), so the plane records the refusal as it records any other.
    Plain,
}

impl ApprovalRecord<'_> {
    /// One step, written now (write-ahead: an `Err` on the step that lets a
    /// command run means it must not run).
    fn step(&self, kind: AuditKind, step: AuditApproval, reason: String) -> Result<(), AuditError> {
        self.audit.approval_step(
            self.session,
            kind,
            self.command.clone(),
            AuditDecision {
                action: self.action,
                policy: self.policy.clone(),
                rule: self.rule.clone(),
                dry_run: false,
                reason: Some(reason),
            },
            step,
        )
    }

    /// Hold mode, once the operator made the request: an `approval` event
    /// in phase Pending.
    pub fn held(&self, ticket: &ApprovalTicket) -> Result<(), AuditError> {
        let request = qualified(ticket);
        let reason = format!(
            "held for approval in AccessRequest {request} ({} protocol)",
            self.protocol
        );
        let step = AuditApproval {
            request,
            phase: RequestPhase::Pending,
            decided_by: None,
            comment: None,
        };
        self.step(AuditKind::Approval, step, reason)
    }

    /// Puts `outcome` on record: granted, an `approval` event in phase
    /// Executed, written before the command runs (an `Err` refuses it);
    /// pending (retry mode), an `approval` event in phase Pending; refused
    /// with an AccessRequest, a `denial` with its phase and deciders;
    /// refused without one, nothing ([`Recorded::Plain`]).
    pub fn outcome(&self, outcome: &ApprovalOutcome) -> Result<Recorded, AuditError> {
        let protocol = self.protocol;
        match outcome {
            ApprovalOutcome::Granted { request, approvers } => {
                let who = approvers.join(", ");
                let reason = format!(
                    "approved by {who} in AccessRequest {request}; runs once ({protocol} protocol)"
                );
                let step = AuditApproval {
                    request: request.clone(),
                    phase: RequestPhase::Executed,
                    decided_by: Some(who),
                    comment: None,
                };
                self.step(AuditKind::Approval, step, reason)?;
            }
            ApprovalOutcome::Pending {
                request, message, ..
            } => {
                let step = AuditApproval {
                    request: request.clone(),
                    phase: RequestPhase::Pending,
                    decided_by: None,
                    comment: None,
                };
                self.step(
                    AuditKind::Approval,
                    step,
                    format!("{message} ({protocol} protocol)"),
                )?;
            }
            ApprovalOutcome::Refused {
                request: Some(request),
                phase: Some(phase),
                deciders,
                message,
            } => {
                let step = AuditApproval {
                    request: request.clone(),
                    phase: *phase,
                    decided_by: (!deciders.is_empty()).then(|| deciders.join(", ")),
                    comment: None,
                };
                self.step(
                    AuditKind::Denial,
                    step,
                    format!("{message} ({protocol} protocol)"),
                )?;
            }
            ApprovalOutcome::Refused { .. } => return Ok(Recorded::Plain),
        }
        Ok(Recorded::Step)
    }
}
