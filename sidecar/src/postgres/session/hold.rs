//! A statement a `requireApproval` rule catches (run mode), on the
//! sidecar's one approval flow ([`crate::approval`]): asked and held or
//! answered at once ([`Approvals::wait_for`], raced against the client's
//! CancelRequest or departure), decided again under the policies in force
//! when approved ([`Approvals::conclude`]), and put on record at every step
//! in the one audit shape ([`ApprovalRecord`]). What is the session's own:
//! the NOTICE naming the request, and the client's answer.

use std::sync::Arc;

use bytes::BytesMut;
use sluice_crds::ApprovalMode;
use sluice_policy::wire::{ApprovalAsk, ApprovalTicket};
use tokio::io::AsyncRead;

use super::client::statement_effect;
use super::expect::Expect;
use super::{ClientLoop, SessionError, log_unrecorded};
use crate::approval::{self, ApprovalOutcome, ApprovalRecord, Approvals, Recorded};
use crate::enforcement::{Decided, Refusal};
use crate::postgres::framing::{Frame, FrameReader};
use crate::postgres::messages::error_response::Report;
use crate::postgres::messages::query;
use crate::postgres::settings::Effect;

impl ClientLoop {
    /// A simple query a `requireApproval` rule catches, in run mode: asked
    /// of the operator, then held until decided (hold) or refused with the
    /// request's name until approved (retry); run once when approved. A
    /// client that leaves while its statement is held takes it along.
    pub(super) async fn approve_simple<R: AsyncRead + Unpin>(
        &mut self,
        frame: Frame,
        decided: Arc<Decided>,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        let sql = query::decode(frame.body())?;
        if let Some(refusal) = self.rate_check() {
            self.record_refused(&decided, "simple", &refusal);
            self.refuse(&refusal);
            return Ok(());
        }
        let held = match self.approval_ask(sql, &decided) {
            Err(refusal) => Err(refusal),
            Ok((approvals, ask, ApprovalMode::Retry)) => Ok(Some((
                approvals.wait_for(&ask, ApprovalMode::Retry, |_| {}).await,
                approvals,
            ))),
            Ok((approvals, ask, ApprovalMode::Hold)) => {
                self.hold_simple(approvals, &ask, &decided, client).await
            }
        };
        let refusal = match held {
            Err(refusal) => Some(refusal),
            Ok(None) => {
                let refusal = Refusal::plain(
                    "the client closed the session while its statement was held for approval; it did not run",
                );
                self.record_refusal(&decided, "simple", &refusal);
                return Ok(());
            }
            Ok(Some((held, approvals))) => {
                let outcome = self.conclude(held, &approvals, sql).await;
                self.settle_approval(outcome, &decided, "simple")
            }
        };
        if let Some(refusal) = refusal {
            self.refuse(&refusal);
            return Ok(());
        }
        // Approved: on record, and counted as an approved run.
        let (copy_masks, writes) = match self.simple_plan(&decided).await {
            Ok(plan) => plan,
            Err(refusal) => {
                self.record_refusal(&decided, "simple", &refusal);
                self.refuse(&refusal);
                return Ok(());
            }
        };
        let effect = statement_effect(&decided, sql);
        self.forward_simple(&frame, decided, copy_masks, writes, None)
            .await?;
        self.barrier |= effect != Effect::None || self.read_only_barrier();
        Ok(())
    }

    /// Hold mode for a simple query: the shared flow's wait
    /// ([`Approvals::wait_for`]) raced against the client. A CancelRequest
    /// gives the statement up (the refusal); a client that leaves takes it
    /// along (`Ok(None)`); pipelined input waits in the reader until the
    /// statement is settled.
    async fn hold_simple<R: AsyncRead + Unpin>(
        &self,
        approvals: Approvals,
        ask: &ApprovalAsk,
        decided: &Arc<Decided>,
        client: &mut FrameReader<R>,
    ) -> Result<Option<(approval::Held, Approvals)>, Refusal> {
        let hold = approvals.wait_for(ask, ApprovalMode::Hold, |ticket| {
            self.notify_held(decided, ticket, "simple")
        });
        tokio::pin!(hold);
        // Enabled now: a CancelRequest from here on is not missed.
        let cancelled = self.cancel_hold.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        let mut watching = true;
        loop {
            tokio::select! {
                outcome = &mut hold => return Ok(Some((outcome, approvals.clone()))),
                () = &mut cancelled => return Err(self.cancelled(decided, "simple")),
                more = client.fill(), if watching => match more {
                    // Pipelined input waits in the reader until the statement is settled.
                    Ok(true) => watching = false,
                    Ok(false) | Err(_) => return Ok(None),
                },
            }
        }
    }

    /// A Parse a `requireApproval` rule catches, in run mode: held or
    /// refused as in [`ClientLoop::approve_simple`]; `None` when approved,
    /// and then the statement's next Execute (only) may run.
    pub(super) async fn approve_parse(
        &mut self,
        sql: &str,
        decided: &Arc<Decided>,
    ) -> Option<Refusal> {
        let (held, approvals) = match self.approval_ask(sql, decided) {
            Err(refusal) => return Some(refusal),
            Ok((approvals, ask, ApprovalMode::Retry)) => (
                approvals.wait_for(&ask, ApprovalMode::Retry, |_| {}).await,
                approvals,
            ),
            Ok((approvals, ask, ApprovalMode::Hold)) => {
                let cancelled = self.cancel_hold.notified();
                tokio::pin!(cancelled);
                cancelled.as_mut().enable();
                let hold = approvals.wait_for(&ask, ApprovalMode::Hold, |ticket| {
                    self.notify_held(decided, ticket, "extended")
                });
                tokio::select! {
                    held = hold => (held, approvals.clone()),
                    () = cancelled => return Some(self.cancelled(decided, "extended")),
                }
            }
        };
        let outcome = self.conclude(held, &approvals, sql).await;
        let refusal = self.settle_approval(outcome, decided, "extended");
        if refusal.is_none() {
            self.approved.push(decided.clone());
        }
        refusal
    }

    /// The shared flow's second half ([`Approvals::conclude`]): a statement
    /// approved while held runs only if the policies in force now still let
    /// it (they may have changed, or lapsed, during the wait); the request
    /// is claimed, or marked not run with why.
    pub(super) async fn conclude(
        &mut self,
        held: approval::Held,
        approvals: &Approvals,
        sql: &str,
    ) -> ApprovalOutcome {
        // Decided again only for an approved request (asynchronously: the
        // flow's recheck is the verdict on this decision).
        let live = match held {
            approval::Held::Approved(_) => Some(self.live_standing(sql).await),
            approval::Held::Settled(_) => None,
        };
        approvals
            .conclude(held, |approved| match live {
                Some((read_only, now)) => match (read_only, &now.refusal) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(r)) if now.awaits_approval().is_none() => {
                        Err(format!("they now refuse it ({})", r.message))
                    }
                    (Ok(()), _) => approval::standing(approved, &now.sql.decision),
                },
                // Not reached: only an approved request is rechecked.
                None => Err("Sluice did not decide it again".into()),
            })
            .await
    }

    /// The statement decided under the policies in force now, and whether
    /// the session may still run statements (`readOnly` that came into force).
    async fn live_standing(&mut self, sql: &str) -> (Result<(), String>, Arc<Decided>) {
        let now = self.decide(sql).await;
        // Masking that changed during the wait applies to this run.
        self.sync_masking();
        (self.read_only_in_force().map_err(|e| e.to_string()), now)
    }

    /// An Execute of a statement that needs approval runs only as the one
    /// run its approval at Parse allowed: `Ok(true)` uses that approval,
    /// `Ok(false)` when none is needed, `Err` refuses any other run.
    pub(super) fn approved_once(&mut self, decided: &Arc<Decided>) -> Result<bool, Refusal> {
        if self.ctx.approvals.is_none() || decided.awaits_approval().is_none() {
            return Ok(false);
        }
        match self.approved.iter().position(|d| Arc::ptr_eq(d, decided)) {
            Some(i) => {
                self.approved.swap_remove(i);
                Ok(true)
            }
            None => Err(Refusal {
                detail: Some(approval_detail(decided)),
                ..Refusal::plain(
                    "statement refused by Sluice: its approval was used by an earlier execution (an approval runs a statement once); prepare it again to ask anew",
                )
            }),
        }
    }

    /// What to ask the operator for `sql`, and in which mode; or the
    /// refusal (on record) when it cannot be asked.
    pub(super) fn approval_ask(
        &self,
        sql: &str,
        decided: &Arc<Decided>,
    ) -> Result<(Approvals, ApprovalAsk, ApprovalMode), Refusal> {
        let mode = decided
            .awaits_approval()
            .map_or(ApprovalMode::Hold, |a| a.mode);
        match (
            self.ctx.approvals.clone(),
            decided.approval_ask(&self.ctx.name, sql),
        ) {
            (Some(approvals), Some(ask)) => Ok((approvals, ask, mode)),
            _ => {
                let refusal = Refusal::plain(
                    "statement refused by Sluice: it needs approval, but the decision names no rule to ask under",
                );
                self.record_refused(decided, "approval", &refusal);
                Err(refusal)
            }
        }
    }

    /// Where the steps of `decided`'s approval go on record: the one audit
    /// shape every plane writes ([`ApprovalRecord`]).
    fn approval_record<'a>(&'a self, decided: &Decided, protocol: &'a str) -> ApprovalRecord<'a> {
        ApprovalRecord::for_statement(&self.ctx.audit, &self.session, decided, protocol)
    }

    /// Puts an approval's outcome on record ([`ApprovalRecord::outcome`]);
    /// `None` when the statement may run now (approved and claimed; the
    /// record is written first), else the refusal for the client.
    pub(super) fn settle_approval(
        &self,
        outcome: ApprovalOutcome,
        decided: &Arc<Decided>,
        protocol: &str,
    ) -> Option<Refusal> {
        let recorded = self.approval_record(decided, protocol).outcome(&outcome);
        let refusal = match outcome {
            ApprovalOutcome::Granted { .. } => {
                // Write-ahead: the approval and the run are on record first.
                return match recorded {
                    Ok(_) => {
                        self.ctx.metrics.approved_run();
                        None
                    }
                    Err(e) => Some(Refusal::audit_failed(&e)),
                };
            }
            ApprovalOutcome::Refused { message, .. } => Refusal {
                detail: Some(approval_detail(decided)),
                ..Refusal::plain(&message)
            },
            ApprovalOutcome::Pending {
                approve_command,
                message,
                ..
            } => Refusal {
                detail: Some(approval_detail(decided)),
                hint: Some(format!(
                    "an approver runs: {approve_command}; then send the same statement again"
                )),
                ..Refusal::plain(&message)
            },
        };
        match recorded {
            // No AccessRequest was made: recorded as any other refusal.
            Ok(Recorded::Plain) => self.record_refused(decided, protocol, &refusal),
            // A step of its AccessRequest (a failed write is logged), counted.
            step => {
                log_unrecorded(&self.span, step.map(|_| ()), "approval step");
                self.ctx.metrics.statement(decided, true);
            }
        }
        Some(refusal)
    }

    /// The client cancelled its held statement: nothing runs (its
    /// AccessRequest stays pending until it expires); on record.
    pub(super) fn cancelled(&self, decided: &Arc<Decided>, protocol: &str) -> Refusal {
        let refusal = Refusal {
            code: QUERY_CANCELED,
            detail: Some(approval_detail(decided)),
            ..Refusal::plain(
                "canceling statement due to user request: it was held for approval and did not run",
            )
        };
        self.record_refused(decided, protocol, &refusal);
        refusal
    }

    /// Hold mode, once the operator made the request: on record, and the
    /// client is told which request to approve and how.
    pub(super) fn notify_held(&self, decided: &Decided, ticket: &ApprovalTicket, protocol: &str) {
        log_unrecorded(
            &self.span,
            self.approval_record(decided, protocol).held(ticket),
            "approval step",
        );
        let request = format!("{}/{}", ticket.namespace, ticket.name);
        let mut out = BytesMut::new();
        Report {
            severity: "NOTICE",
            code: "00000",
            message: &format!(
                "Sluice is holding this statement for approval: AccessRequest {request}; approve it with: {}",
                ticket.approve_command
            ),
            detail: Some(&format!(
                "{}; the statement runs once when approved, and is refused if denied or not decided by {}",
                approval_detail(decided),
                ticket.expires_at
            )),
            hint: None,
        }
        .encode(&mut out);
        self.send(Expect::Synthetic {
            bytes: out.freeze(),
            rfq: false,
            in_group: self.group_forwarded,
        });
    }
}

/// SQLSTATE of a statement the client cancelled.
pub(super) const QUERY_CANCELED: &str = "57014";

/// Which rule asked for the approval, for the client.
pub(super) fn approval_detail(decided: &Decided) -> String {
    crate::approval::approval_detail(decided.decision())
}
