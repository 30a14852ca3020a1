//! A statement a `requireApproval` rule catches (run mode), on the
//! sidecar's one approval flow ([`crate::approval`]), as the PostgreSQL
//! plane uses it: asked of the operator (an AccessRequest), then held until
//! decided (`mode: hold`: the client waits for its answer; a client that
//! leaves meanwhile takes the statement along) or refused at once with an
//! ERR naming the request (`mode: retry`: the same text sent again after
//! approval runs, once); an approved statement is decided again under the
//! policies in force then, and claimed before it runs. Every step is on
//! record in the one audit shape ([`ApprovalRecord`]). MySQL has no
//! notices: a held client is told nothing until its answer; the request is
//! on record (and in the operator's AccessRequests) when it is made.

use sluice_crds::ApprovalMode;
use sluice_policy::wire::ApprovalAsk;

use super::*;
use crate::approval::{self, ApprovalOutcome, ApprovalRecord, Held, Recorded};

impl Session<'_> {
    /// Asks approval of `decided` (whose exact text is `text`, run in
    /// `database`) and waits as its rule's mode says: `Ok(())` when it may
    /// run now, once (approved, claimed, and on record as its approval's
    /// step); else the ERR message for the client (on record).
    pub(super) async fn approve(
        &mut self,
        text: &str,
        decided: &SqlDecision,
        database: Option<&str>,
        binary: bool,
    ) -> Result<Result<(), String>, SessionError> {
        let protocol = protocol(binary);
        let d = &decided.decision;
        let mode = d.approval.as_ref().map_or(ApprovalMode::Hold, |a| a.mode);
        let ask = d
            .enforced_policy
            .clone()
            .or_else(|| d.policy.clone())
            .zip(d.enforced_rule.clone().or_else(|| d.rule.clone()))
            .map(|(policy, rule)| ApprovalAsk {
                connection: self.ctx.name.clone(),
                policy,
                rule,
                command: approval::approval_command(
                    &decided.redacted,
                    &decided.fingerprint,
                    text.as_bytes(),
                ),
                reason: None,
            });
        let (Some(approvals), Some(ask)) = (self.ctx.approvals.clone(), ask) else {
            let why = "statement refused by Sluice: it needs approval, but the decision names no rule to ask under (or this sidecar has no operator to ask)".to_string();
            let _ = self.record(decided, Some(&why), binary);
            return Ok(Err(why));
        };
        let held = match mode {
            ApprovalMode::Retry => approvals.wait_for(&ask, ApprovalMode::Retry, |_| {}).await,
            ApprovalMode::Hold => {
                self.hold(&approvals, &ask, decided, protocol, binary)
                    .await?
            }
        };
        // Decided again under the policies in force now, for an approved
        // request only, its names followed through the views they stand
        // for now (one may have been swapped in while it waited).
        let live = match &held {
            Held::Approved(_) => {
                self.follow();
                let now = Arc::new(decisions::decide_sql(&self.set, text));
                let followed = self.through_views(&now, database).await?;
                let now = followed.decided;
                let other = followed.refused.or_else(|| self.refusal(text, &now, false));
                Some((now, other))
            }
            Held::Settled(_) => None,
        };
        let outcome = approvals
            .conclude(held, |approved| match &live {
                Some((_, Some(refused))) => Err(format!("they now refuse it ({refused})")),
                Some((now, None)) => approval::standing(approved, &now.decision),
                None => Err("Sluice did not decide it again".into()),
            })
            .await;
        let recorded =
            approval_record(&self.ctx.audit, self.info, decided, protocol).outcome(&outcome);
        let why = match outcome {
            ApprovalOutcome::Granted { .. } => {
                return Ok(match recorded {
                    Ok(_) => {
                        self.ctx.metrics.approved_run();
                        Ok(())
                    }
                    Err(e) => {
                        let why = format!(
                            "statement not run: Sluice could not write the audit record of its approval ({e}); audit is write-ahead"
                        );
                        self.ctx.metrics.decision(d.action, d.enforced, true);
                        Err(why)
                    }
                });
            }
            // Retry mode: the message names the request and the approve
            // command.
            ApprovalOutcome::Refused { message, .. } | ApprovalOutcome::Pending { message, .. } => {
                message
            }
        };
        let why = format!("{why} ({})", approval_detail(decided));
        match recorded {
            // No AccessRequest was made: recorded as any other refusal.
            Ok(Recorded::Plain) => {
                let _ = self.record(decided, Some(&why), binary);
            }
            step => {
                if let Err(e) = step {
                    self.ctx.metrics.refusal_unrecorded();
                    tracing::error!(error = %e, "writing the audit record of an approval step failed");
                }
                self.count(decided, true);
            }
        }
        Ok(Err(why))
    }

    /// `mode: hold`: waits for the request's decision while watching the
    /// client; a client that leaves meanwhile takes the statement along (on
    /// record, and the session ends).
    async fn hold(
        // `&mut`: a shared `&Session` is not `Send` (its upstream is not
        // `Sync`), and this future is held across an await.
        &mut self,
        approvals: &Approvals,
        ask: &ApprovalAsk,
        decided: &SqlDecision,
        protocol: &'static str,
        binary: bool,
    ) -> Result<Held, SessionError> {
        let (audit, info, client) = (&self.ctx.audit, self.info, &self.client);
        let record = approval_record(audit, info, decided, protocol);
        let hold = approvals.wait_for(ask, ApprovalMode::Hold, |ticket| {
            tracing::info!(
                request = %format!("{}/{}", ticket.namespace, ticket.name),
                approve = %ticket.approve_command,
                "mysql statement held for approval"
            );
            if let Err(e) = record.held(ticket) {
                tracing::error!(error = %e, "writing the audit record of a held request failed");
            }
        });
        tokio::pin!(hold);
        let mut watching = true;
        loop {
            tokio::select! {
                held = &mut hold => break Ok(held),
                left = client_left(client), if watching => {
                    if left {
                        let why = "the client closed the session while its statement was held for approval; it did not run";
                        let _ = self.record(decided, Some(why), binary);
                        return Err(SessionError::Closed(why.into()));
                    }
                    // The client sent more while waiting (MySQL
                    // clients do not pipeline): it waits in the
                    // socket until the statement is settled.
                    watching = false;
                }
            }
        }
    }
}

/// Whether the client left: its socket reads as closed (`true`), or it
/// sent something (`false`).
async fn client_left(client: &TcpStream) -> bool {
    let mut one = [0u8; 1];
    !matches!(client.peek(&mut one).await, Ok(n) if n > 0)
}

/// `mysql text` or `mysql binary`, named in every approval step's reason
/// (`… (mysql text protocol)`, as the plane's other records).
fn protocol(binary: bool) -> &'static str {
    if binary { "mysql binary" } else { "mysql text" }
}

/// Where the steps of `decided`'s approval go on record: the one audit
/// shape every plane writes.
fn approval_record<'a>(
    audit: &'a AuditLog,
    info: &'a SessionInfo,
    decided: &SqlDecision,
    protocol: &'a str,
) -> ApprovalRecord<'a> {
    let d = &decided.decision;
    ApprovalRecord {
        audit,
        session: info,
        command: command(decided),
        action: d.enforced,
        policy: d.policy.clone(),
        rule: d.rule.clone(),
        protocol,
    }
}

/// Which rule asked for the approval, for the client.
fn approval_detail(decided: &SqlDecision) -> String {
    crate::approval::approval_detail(&decided.decision)
}
