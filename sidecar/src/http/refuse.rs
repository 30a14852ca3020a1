//! Refusals: the JSON answers a refused request gets, each put on record
//! first (a record that cannot be written is logged and counted: the
//! refusal stands).

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use sluice_crds::Action;
use sluice_policy::engine::Decision;

use super::record::{RequestCommand, audit_decision, decided, refused, unrecorded};
use super::{BoxError, HttpContext, ProxyBody};
use crate::audit::SessionInfo;

/// A JSON answer.
pub(super) fn json_response(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"error": error, "message": message}`.
pub(super) fn error_response(
    status: StatusCode,
    error: &str,
    message: String,
) -> Response<ProxyBody> {
    json_response(
        status,
        serde_json::json!({"error": error, "message": message}),
    )
}

/// A request refused before deciding because the sidecar cannot read it as
/// every server would (400 naming the limit broken); audited write-ahead.
pub(super) fn refuse_unreadable(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &RequestCommand,
    (error, limit): (&str, &str),
    message: String,
) -> Response<ProxyBody> {
    record_refusal(ctx, session, cmd, StatusCode::BAD_REQUEST, message.clone());
    json_response(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": error, "limit": limit, "message": message}),
    )
}

/// Records a request the sidecar refuses before any rule decides it (it
/// cannot read it soundly, or a limit refuses it): a write-ahead denial
/// naming no policy, and the refusal in the metrics.
pub(super) fn record_refusal(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &RequestCommand,
    status: StatusCode,
    reason: String,
) {
    unrecorded(
        ctx,
        audit_decision(ctx, session, cmd, refused(reason), true),
    );
    ctx.http_metrics.request("deny", status);
}

/// The answer to a request when no policy is in force for the identity on
/// the Connection: 403 when none binds it, 503 when none is at hand.
pub(super) fn refuse_standing(
    ctx: &HttpContext,
    session: &SessionInfo,
    unavailable: bool,
    reason: String,
) -> Response<ProxyBody> {
    unrecorded(ctx, ctx.audit.session_refused(session, &reason));
    // As the PostgreSQL plane counts it: no policy binds (or none is in force).
    ctx.metrics
        .session_refused_for(crate::metrics::SessionRefusal::NotBound);
    let (status, error) = if unavailable {
        (StatusCode::SERVICE_UNAVAILABLE, "noPolicy")
    } else {
        (StatusCode::FORBIDDEN, "notBound")
    };
    ctx.http_metrics.request("deny", status);
    json_response(
        status,
        serde_json::json!({"error": error, "reason": reason}),
    )
}

/// The answer to a request a rule refuses: denied, or needing an approval
/// that cannot be asked here (no operator). On record first.
pub(super) fn refuse_decision(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &RequestCommand,
    decision: &Decision,
    label: &'static str,
) -> Response<ProxyBody> {
    let policy = decision.enforced_policy.clone().or(decision.policy.clone());
    let rule = decision.enforced_rule.clone().or(decision.rule.clone());
    unrecorded(
        ctx,
        audit_decision(ctx, session, cmd, decided(decision), true),
    );
    ctx.http_metrics.request(label, StatusCode::FORBIDDEN);
    let body = if decision.enforced == Action::RequireApproval {
        serde_json::json!({
            "error": "approvalRequired",
            "policy": policy,
            "rule": rule,
            "reason": decision.reason,
            "message": format!(
                "this request needs approval under rule {:?}, and approving HTTP requests needs the Sluice operator's approval flow, which is not available here: refused",
                rule.as_deref().unwrap_or("-")
            ),
        })
    } else {
        serde_json::json!({
            "error": "denied",
            "policy": policy,
            "rule": rule,
            "reason": decision.reason,
        })
    };
    json_response(StatusCode::FORBIDDEN, body)
}

/// The answer when the audit record of a request that would run could not
/// be written: it is not sent (audit is write-ahead).
pub(super) fn audit_failed(ctx: &HttpContext, e: &crate::audit::AuditError) -> Response<ProxyBody> {
    ctx.http_metrics
        .request("deny", StatusCode::SERVICE_UNAVAILABLE);
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "auditFailed",
        format!(
            "request not sent: Sluice could not write its audit record ({e}); audit is write-ahead"
        ),
    )
}
