//! The audit records of requests: the command (method and path, with what
//! detectors find masked), the decision, and the result; and what happens
//! when a refusal's record cannot be written.

use std::time::Instant;

use sha2::Digest;
use sluice_crds::Action;
use sluice_policy::audit::{AuditCommand, AuditDecision, AuditKind, AuditOutcome, Rendered};
use sluice_policy::detectors::DetectorSet;
use sluice_policy::engine::Decision;
use sluice_policy::masker::Masker;

use super::HttpContext;
use crate::audit::{AuditError, AuditLog, HoldId, SessionInfo};

/// A request's audit command, with its `command` field serialised once for
/// all its events (its decision and its result record the same bytes).
pub(super) struct RequestCommand {
    /// The command.
    pub(super) command: AuditCommand,
    /// Its `command` field (`None`: it could not be serialised ahead, and
    /// each event serialises it).
    rendered: Option<Rendered>,
    /// The request's decision, held for its result (batched mode: the two
    /// become one event, see [`crate::audit::HoldId`]); taken by the
    /// result, so that a request's result joins only its own decision.
    hold: Option<HoldId>,
}

impl RequestCommand {
    /// `command`, rendered.
    pub(super) fn new(command: AuditCommand) -> Self {
        let rendered = Rendered::command(&command).ok();
        RequestCommand {
            command,
            rendered,
            hold: None,
        }
    }

    /// Records the decision of a request about to run (a `statement`
    /// event, left pending: the ticket is for [`AuditLog::durable`]); in
    /// batched mode it is held for the request's result
    /// ([`RequestCommand::record_result`]), which then joins it.
    pub(super) fn record_allowed(
        &mut self,
        audit: &AuditLog,
        session: &SessionInfo,
        mut decision: AuditDecision,
    ) -> Result<u64, AuditError> {
        with_protocol(&mut decision);
        if let (Some(rendered), Some(_)) = (&self.rendered, session.pieces())
            && let Ok(decision) = Rendered::decision(&decision)
        {
            let recorded = audit.statement_rendered(session, rendered, &decision)?;
            self.hold = recorded.hold;
            return Ok(recorded.ticket);
        }
        let event = (Some(decision), None);
        self.record(audit, session, AuditKind::Statement, event, false)
    }

    /// Records the request's result, left pending: one event with its
    /// decision while that is held (batched mode), else a `result` event.
    pub(super) fn record_result(
        &mut self,
        audit: &AuditLog,
        session: &SessionInfo,
        outcome: AuditOutcome,
    ) -> Result<(), AuditError> {
        let hold = self.hold.take();
        match &self.rendered {
            Some(rendered) => {
                audit.result_rendered(session, (&self.command, rendered), hold, outcome)
            }
            None => {
                let event = (None, Some(outcome));
                self.record(audit, session, AuditKind::Result, event, false)
                    .map(|_| ())
            }
        }
    }

    /// Records an event of `kind` with this command (see
    /// [`AuditLog::event`]).
    pub(super) fn record(
        &self,
        audit: &AuditLog,
        session: &SessionInfo,
        kind: AuditKind,
        (decision, outcome): (Option<AuditDecision>, Option<AuditOutcome>),
        durable: bool,
    ) -> Result<u64, AuditError> {
        match &self.rendered {
            Some(rendered) => audit.event_rendered(
                session,
                kind,
                (&self.command, rendered),
                decision,
                outcome,
                durable,
            ),
            None => audit.event(
                session,
                kind,
                Some(self.command.clone()),
                decision,
                outcome,
                durable,
            ),
        }
    }
}

/// The detectors run over every audited path.
static AUDIT_DETECTORS: std::sync::LazyLock<DetectorSet> = std::sync::LazyLock::new(|| {
    use sluice_crds::Detector::*;
    DetectorSet::new(&[CreditCard, Ssn, Email, Phone, Iban, Jwt, AwsKey, PrivateKey])
});

/// The audit record of a request: method and normalised path (the query is
/// left out: it may carry values).
pub(super) fn request_command(method: &str, path: &str) -> RequestCommand {
    // Every detector runs over the path, whatever the masking rules: the
    // audit trail keeps no card number, e-mail or key a path carries (issue
    // 16). The fingerprint is of the masked text too.
    let findings = AUDIT_DETECTORS.find(path);
    // Built in place: `format!` (and `{:x}` over the digest's bytes) was a
    // measurable part of every request's cost.
    let mut text = String::with_capacity(method.len() + 1 + path.len());
    text.push_str(method);
    text.push(' ');
    if findings.is_empty() {
        text.push_str(path);
    } else {
        text.push_str(&Masker::redact().mask_findings(path, &findings));
    }
    let fingerprint = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    RequestCommand::new(AuditCommand {
        text,
        fingerprint,
        kind: Some("http".into()),
    })
}

/// How a rule's decision on a request is recorded.
pub(super) fn decided(decision: &Decision) -> AuditDecision {
    AuditDecision {
        action: decision.action,
        policy: decision.policy.clone(),
        rule: decision.rule.clone(),
        dry_run: decision.dry_run,
        reason: Some(decision.reason.clone()),
    }
}

/// [`decided`], taking the decision's fields instead of copying them (an
/// allowed request's decision is not needed after its record).
pub(super) fn decided_owned(decision: Decision) -> AuditDecision {
    AuditDecision {
        action: decision.action,
        policy: decision.policy,
        rule: decision.rule,
        dry_run: decision.dry_run,
        reason: Some(decision.reason),
    }
}

/// How a request refused before any rule decides it is recorded.
pub(super) fn refused(reason: String) -> AuditDecision {
    AuditDecision {
        action: Action::Deny,
        policy: None,
        rule: None,
        dry_run: false,
        reason: Some(reason),
    }
}

/// A request's decision record (a `statement` when it runs, else a
/// `denial`), written now when `durable`, else left pending: the returned
/// ticket is for [`crate::audit::AuditLog::durable`].
pub(super) fn audit_decision(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &RequestCommand,
    mut decision: AuditDecision,
    durable: bool,
) -> Result<u64, AuditError> {
    let kind = if decision.action == Action::Allow || decision.dry_run {
        AuditKind::Statement
    } else {
        AuditKind::Denial
    };
    with_protocol(&mut decision);
    cmd.record(&ctx.audit, session, kind, (Some(decision), None), durable)
}

/// A request's decision names the protocol in its reason, as a
/// statement's does.
fn with_protocol(decision: &mut AuditDecision) {
    let mut reason = decision.reason.take().unwrap_or_default();
    reason.push_str(" (http protocol)");
    decision.reason = Some(reason);
}

/// A refusal whose record could not be written: the refusal stands (it
/// fails closed, nothing ran), and the gap in the trail is logged and
/// counted (`sluice_audit_unrecorded_refusals_total`).
pub(super) fn unrecorded<T>(ctx: &HttpContext, written: Result<T, AuditError>) {
    if let Err(e) = written {
        tracing::error!(connection = %ctx.name, error = %e, "writing the audit record of a refused request failed");
        ctx.metrics.refusal_unrecorded();
    }
}

/// A request's result record, left pending (written with the next durable
/// record, or by the periodic flush; joined with its held decision in
/// batched mode).
pub(super) fn result_event(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &mut RequestCommand,
    started: Instant,
    masked: u64,
    error: Option<String>,
) {
    let outcome = AuditOutcome {
        recorded: None,
        rows: None,
        duration_ms: Some(started.elapsed().as_millis() as u64),
        error,
        masked: (masked > 0).then_some(masked),
        masks: Vec::new(),
    };
    if let Err(e) = cmd.record_result(&ctx.audit, session, outcome) {
        tracing::error!(connection = %session.connection, client = %session.client, error = %e, "writing an audit result failed");
    }
}
