//! Requests a `requireApproval` rule catches, in run mode ([`approve`]):
//! the HTTP side of the sidecar's one approval flow
//! ([`crate::approval::Approvals::settle`]), recorded in its one audit shape
//! ([`ApprovalRecord`]).

use std::sync::Arc;

use http::{Response, StatusCode};
use sluice_crds::{Action, ApprovalMode};
use sluice_policy::audit::AuditDecision;
use sluice_policy::engine::Decision;
use sluice_policy::wire::ApprovalAsk;
use tokio::sync::watch;

use super::body::{full, read_limited};
use super::record::{RequestCommand, audit_decision, unrecorded};
use super::refuse::audit_failed;
use super::refuse::json_response;
use super::target::Target;
use super::{HttpContext, HttpStanding, ProxyBody};
use crate::approval::{ApprovalOutcome, ApprovalRecord, Approvals, Recorded};
use crate::audit::SessionInfo;

/// A request a `requireApproval` rule catches, in run mode: asked of the
/// operator, then held until decided (hold: the response waits) or refused
/// at once with the request's name until approved (retry: the same request
/// runs once after approval). The approval is for this exact request
/// (method, path and query as forwarded, and body), so the body is
/// buffered. An approved request is decided again under the policies in
/// force when the approval came (an edit during the hold may deny it). An
/// application that goes away while its request is held takes the hold
/// along (nothing runs). `Ok` carries the body to forward; every step is on
/// record, the approved run's written before it is forwarded.
pub(super) async fn approve(
    ctx: &HttpContext,
    live: &watch::Receiver<Arc<HttpContext>>,
    session: &SessionInfo,
    decision: &Decision,
    (target, path_and_query, json): (&Target, &str, Option<&serde_json::Value>),
    body: ProxyBody,
    approvals: &Approvals,
) -> Result<ProxyBody, Response<ProxyBody>> {
    let record = ApprovalRecord {
        audit: &ctx.audit,
        session,
        command: target.cmd.command().clone(),
        action: Action::RequireApproval,
        policy: decision.enforced_policy.clone().or(decision.policy.clone()),
        rule: decision.enforced_rule.clone().or(decision.rule.clone()),
        protocol: "http",
    };
    let (Some(policy), Some(rule)) = (record.policy.clone(), record.rule.clone()) else {
        let why = "request refused by Sluice: it needs approval, but the decision names no rule to ask under".to_string();
        let body = serde_json::json!({"error": "approvalRequired", "message": why});
        return Err(refuse_plain(ctx, &record, StatusCode::FORBIDDEN, body, why));
    };
    let bytes = match read_limited(body, ctx.max_request_body).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!(
                "request refused by Sluice: it needs approval, which is given for its exact body, and the body could not be read within {} bytes ({e})",
                ctx.max_request_body
            );
            let body = serde_json::json!({"error": "bodyTooLarge", "message": why});
            return Err(refuse_plain(
                ctx,
                &record,
                StatusCode::PAYLOAD_TOO_LARGE,
                body,
                why,
            ));
        }
    };
    let ask = ask_for(ctx, target, path_and_query, &bytes, (policy, rule));
    let mode = decision
        .approval
        .as_ref()
        .map_or(ApprovalMode::Hold, |a| a.mode);
    // The policies may have changed while the request was held.
    let recheck = |approved: &crate::approval::Approved| {
        let now = live.borrow().clone();
        let again = match &now.standing {
            HttpStanding::Bound { set, .. } => target.decide(set, json),
            _ => Decision::not_bound(&ctx.identity, &ctx.name),
        };
        crate::approval::standing(approved, &again)
    };
    let (outcome, recorded) = approvals.settle(&ask, mode, &record, recheck).await;
    let (policy, rule) = (&record.policy, &record.rule);
    let (body, why) = match outcome {
        ApprovalOutcome::Granted { .. } => {
            // Write-ahead: the approval and the run are on record first.
            return match recorded {
                Ok(_) => Ok(full(bytes)),
                Err(e) => Err(audit_failed(ctx, &e)),
            };
        }
        ApprovalOutcome::Pending {
            request,
            approve_command,
            expires_at,
            message,
        } => (
            serde_json::json!({
                "error": "approvalPending",
                "policy": policy,
                "rule": rule,
                "request": request,
                "approveCommand": approve_command,
                "expiresAt": expires_at,
                "message": message,
            }),
            message,
        ),
        ApprovalOutcome::Refused {
            request,
            phase,
            deciders,
            message,
        } => (
            serde_json::json!({
                "error": "approvalRefused",
                "policy": policy,
                "rule": rule,
                "request": request,
                "phase": phase,
                "deciders": deciders,
                "message": message,
            }),
            message,
        ),
    };
    let status = StatusCode::FORBIDDEN;
    match recorded {
        Ok(Recorded::Step) => {}
        Ok(Recorded::Plain) => unrecorded(ctx, plain_record(ctx, &record, why)),
        Err(e) => unrecorded::<()>(ctx, Err(e)),
    }
    ctx.http_metrics.request("requireApproval", status);
    Err(json_response(status, body))
}

/// What the operator is asked: an approval of rule `rule` of `policy` for
/// this exact request (method, path and query as forwarded, and body).
fn ask_for(
    ctx: &HttpContext,
    target: &Target,
    path_and_query: &str,
    body: &[u8],
    (policy, rule): (String, String),
) -> ApprovalAsk {
    let mut exact = format!("{} {path_and_query}\n", target.method).into_bytes();
    exact.extend_from_slice(body);
    ApprovalAsk {
        connection: ctx.name.clone(),
        policy,
        rule,
        command: crate::approval::approval_command(
            &target.cmd.command().text,
            &target.cmd.command().fingerprint,
            &exact,
        ),
        reason: None,
    }
}

/// Records an approval refusal that no AccessRequest carries (as any
/// refused request is recorded), and answers it.
fn refuse_plain(
    ctx: &HttpContext,
    record: &ApprovalRecord<'_>,
    status: StatusCode,
    body: serde_json::Value,
    why: String,
) -> Response<ProxyBody> {
    unrecorded(ctx, plain_record(ctx, record, why));
    ctx.http_metrics.request("requireApproval", status);
    json_response(status, body)
}

/// The `denial` of a request that needs approval and was refused without
/// an AccessRequest step to record it.
fn plain_record(
    ctx: &HttpContext,
    record: &ApprovalRecord<'_>,
    why: String,
) -> Result<u64, crate::audit::AuditError> {
    let decision = AuditDecision {
        action: Action::RequireApproval,
        policy: record.policy.clone(),
        rule: record.rule.clone(),
        dry_run: false,
        reason: Some(why),
    };
    // Rare (no AccessRequest to record it): rendered here.
    let command = RequestCommand::new(record.command.clone());
    audit_decision(ctx, record.session, &command, decision, true)
}
