//! The approval API sidecars call (DESIGN §6, §8) and the admission webhooks on
//! AccessRequests. Handlers are thin: the rules are in [`crate::approvals`].
//!
//! - `POST /v1/approvals`: ask approval for a held statement; answers the
//!   request's name (an existing pending or approved request for the same
//!   requester and command is answered instead of a new one);
//! - `GET /v1/approvals/{name}?wait=30s`: the request's phase, long-polled;
//! - `POST /v1/approvals/{name}/executed`: the approved statement ran; a
//!   second call is refused, so an approval runs a statement once;
//! - `POST /v1/approvals/{name}/not-run` `{"reason"}`: the approved statement
//!   was refused when it was to run (the policies changed while it was
//!   held): phase `NotRun`, never `Executed`, with the reason on record;
//! - `POST /mutate/accessrequests`, `POST /validate/accessrequests`: bind each
//!   new decision to the admission request's `userInfo` and refuse what
//!   [`crate::approvals::rules::bind_decisions`] refuses.
//!
//! The sidecar's side of the contract (gateway token as `Authorization: Bearer`):
//! - **hold**: `POST /v1/approvals` with [`ApprovalAsk`] → [`ApprovalTicket`]
//!   (`name`, `phase`, `expiresAt`, `approveCommand` for the client NOTICE);
//!   then `GET /v1/approvals/{name}?wait=30s` in a loop while `phase` is
//!   `Pending`. `Approved` → decide it again under the policies in force;
//!   refused → `POST .../not-run` with why; allowed → `POST .../executed`
//!   first, and run the statement only if that answers 200 (a 409 `AlreadyExecuted`/`NotApproved`/`Expired`
//!   means it must not run); `Denied`/`Expired` → ErrorResponse naming the
//!   request and the deciders in `decisions`.
//! - **retry**: `POST /v1/approvals` answers the same request for the same
//!   requester, connection and `command.sha256` while it is `Pending` or
//!   `Approved` and unexpired; refuse at once with its name while `Pending`,
//!   and on `Approved` do as hold does (`executed`, then run once).
//! - Errors are [`crate::wire::ErrorBody`] with a CamelCase `reason`:
//!   `NotBound` 403, `NotAnApprovalRule`/`NoApprovers`/`InvalidTimeout`/
//!   `PolicyInvalid` 409, `NotFound` 404 (also another workload's request),
//!   `AlreadyExecuted`/`NotApproved`/`Expired` 409, `BadRequest` 400.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::EventType;
use serde::Deserialize;
use sluice_crds::{
    AccessRequest, Action, Approval, MAX_STATEMENT_BYTES, RequestPhase, Requester, TRUNCATED_MARKER,
};
use sluice_policy::engine::Identity;
use sluice_policy::wire::{ApprovalAsk, ApprovalTicket};

use crate::approvals::admission::check_rule;
use crate::approvals::events::publish;
use crate::approvals::rules::requested_note;
use crate::approvals::rules::{
    Ask, COMMAND_LABEL, REQUESTER_LABEL, is_reusable, new_request, parse_timeout,
};
use crate::approvals::tally::{Tally, count};
use crate::gateway::auth::{
    Gateway, Refusal, Waiting, authenticate, bad_request, check_holder, parse_wait, unavailable,
};
use crate::gateway::token::GatewayClaims;

/// The routes of this module, merged into [`crate::gateway::router`].
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/approvals", post(ask))
        .route("/v1/approvals/{name}", get(poll))
        .route("/v1/approvals/{name}/executed", post(executed))
        .route("/v1/approvals/{name}/not-run", post(not_run))
}

fn answer(g: &Gateway, route: &'static str, result: Result<ApprovalTicket, Refusal>) -> Response {
    match result {
        Ok(ticket) => {
            g.metrics.request(route, "ok");
            axum::Json(ticket).into_response()
        }
        Err(refusal) => {
            g.metrics.request(route, refusal.reason_label());
            refusal.into_response()
        }
    }
}

// === POST /v1/approvals ===

async fn ask(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = create_or_reuse(&g, &headers, &body).await;
    answer(&g, "approvals", result)
}

/// The ask authenticated and checked against the policy in force; an open
/// request for the same statement reused, else a new one filed (Pending).
async fn create_or_reuse(
    g: &Gateway,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ApprovalTicket, Refusal> {
    let claims = authenticate(g, headers).await?;
    check_holder(g, &claims).await?;
    let ask = read_ask(body)?;
    let (approval, timeout) = approval_rule(g, &ask, &claims)?;
    let namespace = claims.namespace.clone();
    let requester = Requester {
        service_account: claims.service_account.clone(),
        namespace: namespace.clone(),
        pod: Some(claims.pod.clone()),
        groups: claims.groups.clone(),
    };
    let api: Api<AccessRequest> = Api::namespaced(g.client.clone(), &namespace);
    let now = Timestamp::now();
    if let Some(found) = find_reusable(g, &api, &ask, &requester, now).await? {
        return Ok(ApprovalTicket::of(&found));
    }
    let request = new_request(
        &Ask {
            connection: &ask.connection,
            policy: &ask.policy,
            rule: &ask.rule,
            command: &ask.command,
            reason: ask.reason.as_deref(),
        },
        requester,
        &approval,
        timeout,
        now,
    );
    let created = file_request(g, &api, &request).await?;
    count(&g.audit, &namespace, &ask.policy, Tally::Requested);
    Ok(ApprovalTicket::of(&created))
}

/// The body of `POST /v1/approvals`, its sha256 and statement checked.
fn read_ask(body: &[u8]) -> Result<ApprovalAsk, Refusal> {
    let ask: ApprovalAsk = serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "the body is not {{\"connection\", \"policy\", \"rule\", \"command\": {{\"text\", \"fingerprint\", \"sha256\"}}}}: {e}"
        ))
    })?;
    let sha = &ask.command.sha256;
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad_request(format!(
            "command.sha256 {sha:?} is not 64 lowercase hex digits"
        )));
    }
    check_statement(&ask.command).map_err(bad_request)?;
    Ok(ask)
}

/// The approval (approvers, timeout) of the requireApproval rule the ask
/// names, in a valid AccessPolicy of the caller's namespace that binds the
/// caller and the Connection.
fn approval_rule(
    g: &Gateway,
    ask: &ApprovalAsk,
    claims: &GatewayClaims,
) -> Result<(Approval, Duration), Refusal> {
    let namespace = &claims.namespace;
    let identity = identity_of(claims);
    let policy = g
        .catalog
        .policies_in(namespace)
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(ask.policy.as_str()))
        .ok_or_else(|| not_bound(ask, claims))?;
    let compiled = g.catalog.compile(&policy).map_err(|_| {
        Refusal::new(
            StatusCode::CONFLICT,
            "PolicyInvalid",
            format!(
                "AccessPolicy {namespace}/{} is invalid; fix it (see its status) before asking approvals under it",
                ask.policy
            ),
        )
    })?;
    if !compiled.binds(&identity) || !compiled.names_connection(&ask.connection) {
        return Err(not_bound(ask, claims));
    }
    let rule = policy
        .spec
        .rules
        .iter()
        .find(|r| r.name == ask.rule && r.action == Action::RequireApproval)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::CONFLICT,
                "NotAnApprovalRule",
                format!(
                    "AccessPolicy {namespace}/{} has no requireApproval rule named {:?}; the sidecar's bundle may be stale",
                    ask.policy, ask.rule
                ),
            )
        })?;
    let approval = rule.approval.clone().ok_or_else(|| {
        Refusal::new(
            StatusCode::CONFLICT,
            "NoApprovers",
            format!(
                "rule {:?} of AccessPolicy {namespace}/{} requires approval but names no approvers; add spec.rules[].approval",
                ask.rule, ask.policy
            ),
        )
    })?;
    let timeout = parse_timeout(&approval.timeout).ok_or_else(|| {
        Refusal::new(
            StatusCode::CONFLICT,
            "InvalidTimeout",
            format!(
                "rule {:?} of AccessPolicy {namespace}/{} has timeout {:?}, not a duration like 15m",
                ask.rule, ask.policy, approval.timeout
            ),
        )
    })?;
    Ok((approval, timeout))
}

/// An AccessRequest of the same requester for the same statement and
/// Connection that may be reused (see `is_reusable`), while its rule is as
/// it was when it was filed.
async fn find_reusable(
    g: &Gateway,
    api: &Api<AccessRequest>,
    ask: &ApprovalAsk,
    requester: &Requester,
    now: Timestamp,
) -> Result<Option<AccessRequest>, Refusal> {
    let sha = &ask.command.sha256;
    let selector = format!(
        "{REQUESTER_LABEL}={},{COMMAND_LABEL}={}",
        crate::approvals::rules::requester_label_value(&requester.service_account),
        sha.get(..32).unwrap_or_default()
    );
    let existing = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| unavailable("AccessRequest lookup", &e))?;
    Ok(existing
        .items
        .into_iter()
        .filter(|ar| ar.spec.connection == ask.connection)
        // Reused only while its rule is as it was when it was filed.
        .filter(|ar| check_rule(g, ar).is_ok())
        .find(|ar| is_reusable(ar, requester, sha, now)))
}

/// Creates the AccessRequest and sets it Pending (announcing it with a
/// `Requested` event), unless the controller got there first.
async fn file_request(
    g: &Gateway,
    api: &Api<AccessRequest>,
    request: &AccessRequest,
) -> Result<AccessRequest, Refusal> {
    let mut created = api
        .create(&PostParams::default(), request)
        .await
        .map_err(|e| unavailable("AccessRequest creation", &e))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    // Pending from the start, unless the controller got there first.
    let mut pending = created.clone();
    pending.status = Some(sluice_crds::AccessRequestStatus {
        phase: Some(RequestPhase::Pending),
        ..Default::default()
    });
    match api
        .replace_status(&name, &PostParams::default(), &pending)
        .await
    {
        Ok(stored) => {
            created = stored;
            publish(
                &g.approvals.recorder,
                &created,
                EventType::Normal,
                "Requested",
                requested_note(&created),
            )
            .await;
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            created = api
                .get(&name)
                .await
                .map_err(|e| unavailable("AccessRequest read", &e))?;
        }
        Err(e) => return Err(unavailable("AccessRequest status", &e)),
    }
    Ok(created)
}

/// What approvers are shown must be what the approval binds to: a whole
/// `command.statement` hashes to `command.sha256`; a cut one is bounded and
/// ends with the marker that says so.
pub fn check_statement(command: &sluice_crds::Command) -> Result<(), String> {
    use sha2::Digest;
    let Some(statement) = &command.statement else {
        return if command.truncated {
            Err("command.truncated is true but command.statement is missing".into())
        } else {
            Ok(())
        };
    };
    if statement.len() > MAX_STATEMENT_BYTES {
        return Err(format!(
            "command.statement is {} bytes, more than {MAX_STATEMENT_BYTES}; cut it and set command.truncated",
            statement.len()
        ));
    }
    if command.truncated {
        if !statement.ends_with(TRUNCATED_MARKER) {
            return Err(format!(
                "command.statement is cut (command.truncated) but does not end with {TRUNCATED_MARKER:?}"
            ));
        }
        return Ok(());
    }
    let digest = hex::encode(sha2::Sha256::digest(statement.as_bytes()));
    if digest != command.sha256 {
        return Err(format!(
            "command.statement hashes to {digest}, not to command.sha256 {}: approvers would see another statement than the one approved",
            command.sha256
        ));
    }
    Ok(())
}

fn identity_of(claims: &GatewayClaims) -> Identity {
    Identity {
        namespace: claims.namespace.clone(),
        service_account: claims.service_account.clone(),
        groups: claims.groups.clone(),
        pod: Some(claims.pod.clone()),
    }
}

fn not_bound(ask: &ApprovalAsk, claims: &GatewayClaims) -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "NotBound",
        format!(
            "{} is not bound to connection {} by AccessPolicy {}/{}; only a bound workload may ask for approval",
            claims.sub, ask.connection, claims.namespace, ask.policy
        ),
    )
}

// === GET /v1/approvals/{name} ===

/// Query of `GET /v1/approvals/{name}`.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    /// Wait up to this long (`30s`) while the request is pending.
    wait: Option<String>,
}

async fn poll(
    State(g): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<PollQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let claims = authenticate(&g, &headers).await?;
        let wait = match &query.wait {
            Some(text) => parse_wait(text).ok_or_else(|| {
                bad_request(format!("wait={text:?} is not a duration like 30s or 1m"))
            })?,
            None => Duration::ZERO,
        };
        let api: Api<AccessRequest> = Api::namespaced(g.client.clone(), &claims.namespace);
        let ar = own_request(&api, &name, &claims).await?;
        if is_open(&ar) && !wait.is_zero() {
            let decided = kube::runtime::wait::await_condition(
                api.clone(),
                &name,
                |ar: Option<&AccessRequest>| ar.is_none_or(|ar| !is_open(ar)),
            );
            // A timeout, a broken watch or a drain (SIGTERM: the sidecar
            // asks again, reaching a replica that stays) all answer the latest phase.
            let _waiting = Waiting::new(&g.metrics.approval_waiting);
            let mut draining = g.draining.clone();
            tokio::select! {
                _ = tokio::time::timeout(wait, decided) => {}
                () = crate::gateway::serve::drained(&mut draining) => {}
            }
            return Ok(ApprovalTicket::of(
                &own_request(&api, &name, &claims).await?,
            ));
        }
        Ok(ApprovalTicket::of(&ar))
    }
    .await;
    answer(&g, "approvals_get", result)
}

fn is_open(ar: &AccessRequest) -> bool {
    matches!(
        ar.status.as_ref().and_then(|s| s.phase),
        None | Some(RequestPhase::Pending)
    )
}

async fn own_request(
    api: &Api<AccessRequest>,
    name: &str,
    claims: &GatewayClaims,
) -> Result<AccessRequest, Refusal> {
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{} has no AccessRequest {}/{name}; ask again with POST /v1/approvals",
                claims.sub, claims.namespace
            ),
        )
    };
    let ar = api
        .get_opt(name)
        .await
        .map_err(|e| unavailable("AccessRequest read", &e))?
        .ok_or_else(not_found)?;
    // Another workload's request is answered as absent: names are not secrets,
    // but phases and commands of others are none of this caller's business.
    if ar.spec.requester.service_account != claims.service_account
        || ar.spec.requester.namespace != claims.namespace
    {
        return Err(not_found());
    }
    Ok(ar)
}

// === POST /v1/approvals/{name}/executed ===

async fn executed(
    State(g): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = mark_executed(&g, &name, &headers).await;
    answer(&g, "approvals_executed", result)
}

async fn mark_executed(
    g: &Gateway,
    name: &str,
    headers: &HeaderMap,
) -> Result<ApprovalTicket, Refusal> {
    let claims = authenticate(g, headers).await?;
    check_holder(g, &claims).await?;
    let api: Api<AccessRequest> = Api::namespaced(g.client.clone(), &claims.namespace);
    let mut ar = own_request(&api, name, &claims).await?;
    let phase = ar.status.as_ref().and_then(|s| s.phase);
    let refuse =
        |reason: &'static str, message: String| Refusal::new(StatusCode::CONFLICT, reason, message);
    match phase {
        Some(RequestPhase::Approved) => {}
        Some(RequestPhase::Executed) => {
            return Err(refuse(
                "AlreadyExecuted",
                format!(
                    "AccessRequest {}/{name} was already executed; an approval runs its statement once, ask again",
                    claims.namespace
                ),
            ));
        }
        other => {
            return Err(refuse(
                "NotApproved",
                format!(
                    "AccessRequest {}/{name} is {}, not Approved; the statement must not run",
                    claims.namespace,
                    other.map_or("new".to_string(), |p| format!("{p:?}"))
                ),
            ));
        }
    }
    // Checked against the rule as it stands when the statement runs.
    if let Err(message) = check_rule(g, &ar) {
        publish(
            &g.approvals.recorder,
            &ar,
            EventType::Warning,
            "NotRun",
            message.clone(),
        )
        .await;
        return Err(refuse("RuleChanged", message));
    }
    let now = Timestamp::now();
    if now >= ar.spec.expires_at.0 {
        return Err(refuse(
            "Expired",
            format!(
                "the approval of AccessRequest {}/{name} ran out at {}; ask again",
                claims.namespace, ar.spec.expires_at.0
            ),
        ));
    }
    let status = ar.status.get_or_insert_with(Default::default);
    status.phase = Some(RequestPhase::Executed);
    status.executed_at = Some(Time(now));
    // The resourceVersion read above makes this a compare-and-swap: of two
    // concurrent calls, one gets a conflict and is refused below.
    match api.replace_status(name, &PostParams::default(), &ar).await {
        Ok(stored) => {
            publish(
                &g.approvals.recorder,
                &stored,
                EventType::Normal,
                "Executed",
                format!("the approved statement ran in pod {}", claims.pod),
            )
            .await;
            Ok(ApprovalTicket::of(&stored))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Err(refuse(
            "AlreadyExecuted",
            format!(
                "AccessRequest {}/{name} changed while being marked executed; it runs once, ask again",
                claims.namespace
            ),
        )),
        Err(e) => Err(unavailable("AccessRequest status", &e)),
    }
}

// === POST /v1/approvals/{name}/not-run ===

/// Longest reason a sidecar may give for a statement that did not run.
const MAX_NOT_RUN_REASON: usize = 1024;

/// Body of `POST /v1/approvals/{name}/not-run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotRunBody {
    /// Why the sidecar refused the approved statement when it was to run.
    reason: String,
}

async fn not_run(
    State(g): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = mark_not_run(&g, &name, &headers, &body).await;
    answer(&g, "approvals_not_run", result)
}

/// The requester's sidecar refused an approved statement at run time: the
/// request becomes `NotRun` (terminal: not reused, never `Executed`), its
/// `Ready` condition and a Warning Event say why.
async fn mark_not_run(
    g: &Gateway,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ApprovalTicket, Refusal> {
    let claims = authenticate(g, headers).await?;
    check_holder(g, &claims).await?;
    let body: NotRunBody = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body is not {{\"reason\": \"...\"}}: {e}")))?;
    let mut reason: String = body
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NOT_RUN_REASON)
        .collect();
    if reason.len() < body.reason.len() {
        reason.push('…');
    }
    let api: Api<AccessRequest> = Api::namespaced(g.client.clone(), &claims.namespace);
    let mut ar = own_request(&api, name, &claims).await?;
    let phase = ar.status.as_ref().and_then(|s| s.phase);
    match phase {
        Some(RequestPhase::Approved) => {}
        Some(RequestPhase::NotRun) => return Ok(ApprovalTicket::of(&ar)),
        other => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "NotApproved",
                format!(
                    "AccessRequest {}/{name} is {}, not Approved; only an approved request can be refused at run time",
                    claims.namespace,
                    other.map_or("new".to_string(), |p| format!("{p:?}"))
                ),
            ));
        }
    }
    let note = format!(
        "the approved statement did not run: the sidecar of pod {} refused it when it was to run, because {reason}",
        claims.pod
    );
    let now = Timestamp::now();
    let generation = ar.metadata.generation;
    let status = ar.status.get_or_insert_with(Default::default);
    status.phase = Some(RequestPhase::NotRun);
    status.conditions.retain(|c| c.type_ != "Ready");
    status
        .conditions
        .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".to_string(),
            status: "False".to_string(),
            reason: "NotRun".to_string(),
            message: note.clone(),
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    // Compare-and-swap on the resourceVersion read, as in `mark_executed`.
    match api.replace_status(name, &PostParams::default(), &ar).await {
        Ok(stored) => {
            publish(
                &g.approvals.recorder,
                &stored,
                EventType::Warning,
                "NotRun",
                note,
            )
            .await;
            Ok(ApprovalTicket::of(&stored))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Refusal::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "AccessRequest {}/{name} changed while being marked not run; the statement did not run",
                claims.namespace
            ),
        )),
        Err(e) => Err(unavailable("AccessRequest status", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvers_see_what_the_approval_binds_to() {
        use sha2::Digest;
        let exact = "UPDATE orders SET amount = amount + 1000000 WHERE id = 7";
        let command =
            |statement: Option<&str>, truncated: bool, sha: String| sluice_crds::Command {
                text: "UPDATE orders SET amount = amount + ? WHERE id = ?".into(),
                statement: statement.map(str::to_string),
                truncated,
                fingerprint: "f".into(),
                sha256: sha,
            };
        let sha = hex::encode(sha2::Sha256::digest(exact.as_bytes()));
        assert_eq!(
            check_statement(&command(Some(exact), false, sha.clone())),
            Ok(())
        );
        assert_eq!(check_statement(&command(None, false, sha.clone())), Ok(()));
        // Another statement than the one the hash binds.
        let shown = exact.replace("1000000", "1");
        let e = check_statement(&command(Some(&shown), false, sha.clone())).unwrap_err();
        assert!(e.contains("another statement"), "{e}");
        // Cut: bounded, and marked.
        let cut = format!("UPDATE orders{TRUNCATED_MARKER}");
        assert_eq!(
            check_statement(&command(Some(&cut), true, sha.clone())),
            Ok(())
        );
        assert!(check_statement(&command(Some("UPDATE orders"), true, sha.clone())).is_err());
        assert!(check_statement(&command(None, true, sha.clone())).is_err());
        let long = "x".repeat(MAX_STATEMENT_BYTES + 1);
        assert!(check_statement(&command(Some(&long), true, sha)).is_err());
    }
}
