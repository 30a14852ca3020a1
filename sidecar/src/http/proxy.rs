//! One request, from the application to the upstream and back
//! ([`handle`]), in phases: standing → path → body → decide → approve →
//! record → forward. Each phase either hands the next what it needs or
//! answers the request itself (a refusal, on record first).

// A phase's `Err` is the request's answer, returned once per request:
// boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use sluice_crds::Action;
use sluice_policy::engine::{Decision, PolicySet};
use sluice_policy::http::{Inspection, RequestPath};
use tokio::sync::watch;

use super::approval::approve;
use super::body::read_request_body;
use super::record::request_command;
use super::refuse::{
    audit_failed, error_response, record_refusal, refuse_decision, refuse_standing,
    refuse_unreadable,
};
use super::respond::respond;
use super::target::Target;
use super::upstream::upstream_request;
use super::{HttpContext, HttpParts, HttpStanding, ProxyBody};
use crate::audit::SessionInfo;

/// A phase's refusal: the answer, already on record.
type Refused = Response<ProxyBody>;

/// Serves one request with the context in force when it arrived (`live`:
/// the context in force now, for an approval that comes later).
pub(super) async fn handle(
    ctx: &HttpContext,
    live: &watch::Receiver<Arc<HttpContext>>,
    session: &Arc<SessionInfo>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    proxy(ctx, live, session, req)
        .await
        .unwrap_or_else(|refused| refused)
}

async fn proxy(
    ctx: &HttpContext,
    live: &watch::Receiver<Arc<HttpContext>>,
    session: &Arc<SessionInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refused> {
    let started = Instant::now();
    let (set, plane) = standing(ctx, session)?;
    let mut target = target(ctx, session, &plane.inspection, &req)?;
    let (parts, body) = req.into_parts();
    let timeout = plane.upstream.timeout;
    let (mut body, json) = read_request_body(
        ctx,
        session,
        &target,
        &plane.inspection,
        (&parts, body),
        timeout,
    )
    .await?;
    let (decision, label) = decide(ctx, session, &set, &target, json.as_ref())?;
    if decision.enforced != Action::Allow {
        let Some(approvals) = ctx
            .approvals
            .as_ref()
            .filter(|_| decision.enforced == Action::RequireApproval)
        else {
            return Err(refuse_decision(ctx, session, &target.cmd, &decision, label));
        };
        // On record as its approval's steps; runs once when approved.
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{}?{q}", target.path.forwarded()),
            None => target.path.forwarded().to_string(),
        };
        let exact = (&target, path_and_query.as_str(), json.as_ref());
        // Boxed: the wait is rare and large, and held inline it would make
        // every request's future (allocated and moved per request) as
        // large as itself.
        let approved = approve(ctx, live, session, &decision, exact, body, approvals);
        body = Box::pin(approved).await?;
    } else {
        record_allowed(ctx, session, &mut target, decision).await?;
    }
    forward(
        ctx,
        session,
        (&set, &plane),
        target,
        (parts, body),
        (label, started),
    )
    .await
}

/// The standing phase: the policies and upstream in force, or the refusal
/// when none binds the identity or none is at hand.
fn standing(
    ctx: &HttpContext,
    session: &SessionInfo,
) -> Result<(Arc<PolicySet>, HttpParts), Refused> {
    match &ctx.standing {
        HttpStanding::Bound { set, plane } => Ok((set.clone(), plane.clone())),
        other => {
            let unavailable = matches!(other, HttpStanding::Unavailable(_));
            let reason = other.refusal(&ctx.identity, &ctx.name).unwrap_or_default();
            Err(refuse_standing(ctx, session, unavailable, reason))
        }
    }
}

/// The path phase: the path decided is the path forwarded, and it, the
/// query and a `_method` in it must read the same to every server.
fn target(
    ctx: &HttpContext,
    session: &SessionInfo,
    inspection: &Inspection,
    req: &Request<Incoming>,
) -> Result<Target, Refused> {
    let method = req.method().as_str();
    let raw_path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    // The path decided is the path forwarded (issue 16: a raw `/../x` was
    // decided as `/x` and sent as written).
    let path = match RequestPath::parse(raw_path) {
        Ok(p) => p,
        Err(e) => {
            let cmd = request_command(method, "(ambiguous path)");
            record_refusal(
                ctx,
                session,
                &cmd,
                StatusCode::BAD_REQUEST,
                format!("ambiguous request path: {e}"),
            );
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "ambiguousPath",
                sluice_policy::http::path_refusal(&e),
            ));
        }
    };
    let cmd = ctx.audit_cache.command(req.method(), path.decided());
    // A query a rule looks at must read the same to every server, name no
    // other method, and stand for no body field a rule judges.
    let request = sluice_policy::http::HttpRequest {
        method,
        path: raw_path,
        query,
        body: None,
    };
    if let Some(u) = inspection.unreadable(&request) {
        return Err(refuse_unreadable(
            ctx,
            session,
            &cmd,
            (u.error, u.limit),
            u.message,
        ));
    }
    Ok(Target {
        method: req.method().clone(),
        uri: req.uri().clone(),
        path,
        cmd,
        capitals: inspection.globs_with_capitals(),
    })
}

/// The decide phase: the rules' decision and its metric label, within
/// `statementsPerSecond`.
fn decide(
    ctx: &HttpContext,
    session: &SessionInfo,
    set: &PolicySet,
    target: &Target,
    json: Option<&serde_json::Value>,
) -> Result<(Decision, &'static str), Refused> {
    let decision = target.decide(set, json);
    let label = match (decision.enforced, decision.action) {
        (Action::Deny, _) => "deny",
        (Action::RequireApproval, _) => "requireApproval",
        (Action::Allow, Action::Allow) => "allow",
        (Action::Allow, _) => "dryRunDeny",
    };
    // `statementsPerSecond` counts the requests a rule lets through (or
    // holds for approval), as the PostgreSQL plane counts statements.
    let counted = match decision.enforced {
        Action::Allow => true,
        Action::RequireApproval => ctx.approvals.is_some(),
        Action::Deny => false,
    };
    let rate = set.limits().statements_per_second;
    if counted && !ctx.rate.admit(rate) {
        let message = format!(
            "Sluice refused the request: more than {} requests per second from this identity on Connection {:?}, the statementsPerSecond limit of the AccessPolicy (shared by all of this sidecar's connections); retry later",
            rate.unwrap_or(0),
            ctx.name
        );
        record_refusal(
            ctx,
            session,
            &target.cmd,
            StatusCode::TOO_MANY_REQUESTS,
            message.clone(),
        );
        let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rateLimited", message);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        return Err(response);
    }
    Ok((decision, label))
}

/// The record phase of an allowed request. Write-ahead: no record, no
/// request (the record may share one write with other connections'
/// records: see [`crate::audit::AuditLog::durable`]). Batched: the
/// decision is held for the request's result, which joins it in one event.
async fn record_allowed(
    ctx: &HttpContext,
    session: &SessionInfo,
    target: &mut Target,
    decision: Decision,
) -> Result<(), Refused> {
    let audit = (&*ctx.audit, &*ctx.audit_cache);
    let ticket = target.cmd.record_allowed(audit, session, decision);
    let written = match ticket {
        Ok(ticket) => ctx.audit.durable(ticket).await,
        Err(e) => Err(e),
    };
    written.map_err(|e| audit_failed(ctx, &e))
}

/// The forward phase: the request goes upstream with the Connection's
/// credentials; the answer comes back scrubbed and masked ([`respond`]).
async fn forward(
    ctx: &HttpContext,
    session: &Arc<SessionInfo>,
    (set, plane): (&Arc<PolicySet>, &HttpParts),
    target: Target,
    (parts, body): (Parts, ProxyBody),
    (label, started): (&'static str, Instant),
) -> Result<Response<ProxyBody>, Refused> {
    let up = &*plane.upstream;
    let Some(upstream_req) = upstream_request(up, target.path.forwarded(), parts, body) else {
        ctx.http_metrics.request(label, StatusCode::BAD_REQUEST);
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Sluice could not build the upstream URL from the request path".into(),
        ));
    };
    let sent = tokio::time::timeout(up.timeout, up.client.request(upstream_req)).await;
    Ok(respond(ctx, session, set, up, target.cmd, (label, started), sent).await)
}
