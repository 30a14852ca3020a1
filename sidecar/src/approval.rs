//! Just-in-time approvals (docs/DESIGN.md §2 AccessRequest, §6): the sidecar's side
//! of the operator's approval API (`operator/src/approvals_gateway.rs`).
//!
//! A statement a `requireApproval` rule catches is asked for with
//! `POST /v1/approvals`; the operator creates (or reuses) an AccessRequest
//! and answers its [`ApprovalTicket`].
//! - **hold** ([`Approvals::hold`]): the caller is told the request's name
//!   and approve command, then the request is long-polled until it is
//!   decided or expires;
//! - **retry** ([`Approvals::retry`]): the answer is given at once; the same
//!   statement asked again after approval gets the approved request back.
//!
//! An approved request comes back as [`Held::Approved`], not yet claimed:
//! the data plane decides the statement again under the policies in force
//! then ([`standing`]) and hands the verdict to [`Approvals::run`], the one
//! place that records what happens. Allowed, the request is marked executed
//! (`POST …/executed`) *before* the statement runs, and only a 200 lets it
//! run: an approval runs its statement once. Refused, it is marked not run
//! (`POST …/not-run` with the reason: phase `NotRun`, never `Executed`).
//! Anything else (operator unreachable, a refusal, an unknown answer)
//! refuses the statement: approvals fail closed.
//!
//! One flow for every data plane: ask, then hold or retry
//! ([`Approvals::wait_for`]), then re-decide under the live standing and
//! claim or refuse ([`Approvals::conclude`]), each step recorded in one audit
//! shape ([`ApprovalRecord`]); [`Approvals::settle`] is the whole of it for a
//! plane with nothing to watch in between (HTTP). Each plane turns the
//! [`ApprovalOutcome`] into its own answer.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use sha2::{Digest, Sha256};
use sluice_crds::{
    Action, ApprovalMode, Command, MAX_STATEMENT_BYTES, RequestPhase, TRUNCATED_MARKER, Verdict,
};
use sluice_policy::engine::Decision;
use sluice_policy::wire::{ApprovalAsk, ApprovalTicket};
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

mod record;

pub use record::{ApprovalRecord, Recorded};

use crate::bundle_client::{GatewayClient, GatewayError, decode, ok_or_refused};
use crate::metrics::{ApprovalStep, Metrics};

/// Longest single long-poll of a pending request.
const POLL_WAIT: Duration = Duration::from_secs(30);

/// How long past `expiresAt` a pending request is still polled: the
/// operator's controller marks it Expired, and its word is the one recorded.
const EXPIRY_GRACE: Duration = Duration::from_secs(15);

/// Transport failures in a row tolerated while a statement is held (the
/// operator restarting); past this the statement is refused.
const POLL_RETRIES: u32 = 3;

/// Why an approval call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The sidecar holds no gateway token (none exchanged yet, or the
    /// operator stopped accepting this pod's identity).
    #[error(
        "the sidecar holds no gateway token from the Sluice operator (the service-account token exchange has not succeeded)"
    )]
    NoToken,
    /// The gateway call failed or was refused.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The operator answered a phase this sidecar does not know.
    #[error(
        "the Sluice operator answered phase {phase:?} for AccessRequest {name}, which this sidecar does not know"
    )]
    UnknownPhase {
        /// The request.
        name: String,
        /// The phase word.
        phase: String,
    },
}

/// What became of a statement that needs approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Approved and marked executed: run the statement now, once.
    Granted {
        /// The AccessRequest, `NAMESPACE/NAME`.
        request: String,
        /// Who approved, oldest first.
        approvers: Vec<String>,
    },
    /// The statement must not run.
    Refused {
        /// The AccessRequest, `NAMESPACE/NAME`, when one was made.
        request: Option<String>,
        /// Its phase when known (`Denied`, `Expired`, …).
        phase: Option<RequestPhase>,
        /// Who decided against it (deny verdicts), oldest first.
        deciders: Vec<String>,
        /// What the client is told.
        message: String,
    },
    /// Retry mode, not decided yet: refuse now, naming the request.
    Pending {
        /// The AccessRequest, `NAMESPACE/NAME`.
        request: String,
        /// `kubectl sluice approve NAME -n NS`.
        approve_command: String,
        /// When the request expires (RFC 3339).
        expires_at: String,
        /// What the client is told.
        message: String,
    },
}

/// Where a statement that needs approval stands once the operator answered.
#[derive(Debug)]
pub enum Held {
    /// Approved, not yet claimed: decide it again under the policies in
    /// force ([`standing`]) and pass the verdict to [`Approvals::run`].
    Approved(Approved),
    /// Settled without running (refused, pending in retry mode).
    Settled(ApprovalOutcome),
}

/// An approved request, not yet claimed (see [`Held::Approved`]).
#[derive(Debug)]
pub struct Approved {
    ticket: ApprovalTicket,
    policy: String,
    rule: String,
}

impl Approved {
    /// The AccessRequest, `NAMESPACE/NAME`.
    pub fn request(&self) -> String {
        qualified(&self.ticket)
    }
}

/// Whether an approved statement may still run under `now`, the decision
/// of the policies in force when it is about to run: allowed outright, or
/// still held by the very rule its AccessRequest was approved under (the
/// operator checks that rule's approvers and `minApprovals` are unchanged).
/// `Err` says why not, for the client, the audit and the AccessRequest.
pub fn standing(approved: &Approved, now: &Decision) -> Result<(), String> {
    match now.enforced {
        Action::Allow => Ok(()),
        Action::RequireApproval => {
            let policy = now.enforced_policy.as_ref().or(now.policy.as_ref());
            let rule = now.enforced_rule.as_ref().or(now.rule.as_ref());
            if policy == Some(&approved.policy) && rule == Some(&approved.rule) {
                Ok(())
            } else {
                Err(format!(
                    "it now needs approval under rule {:?} of AccessPolicy {:?}, not under rule {:?} of {:?} as approved ({})",
                    rule.map_or("-", String::as_str),
                    policy.map_or("-", String::as_str),
                    approved.rule,
                    approved.policy,
                    now.reason
                ))
            }
        }
        Action::Deny => Err(format!("they now deny it ({})", now.reason)),
    }
}

/// Body of `POST /v1/approvals/{name}/not-run`.
#[derive(Debug, serde::Serialize)]
struct NotRun<'a> {
    reason: &'a str,
}

/// A client of the operator's approval API, shared by every session of a
/// sidecar (cheap to clone).
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    client: GatewayClient,
    token: watch::Receiver<Option<Zeroizing<String>>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("gateway", &self.inner.client.url())
            .finish_non_exhaustive()
    }
}

/// The [`Command`] of a statement: `redacted` (literals redacted) for the
/// audit trail, its fingerprint, the sha256 of the `exact` text the approval
/// is for, and that text itself for approvers (bounded: see [`statement`]).
pub fn approval_command(redacted: &str, fingerprint: &str, exact: &[u8]) -> Command {
    let digest = Sha256::digest(exact);
    let (statement, truncated) = statement(exact);
    Command {
        text: redacted.to_string(),
        statement: Some(statement),
        truncated,
        fingerprint: fingerprint.to_string(),
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// What approvers are shown of `exact`: the text itself when it is UTF-8 and
/// fits [`MAX_STATEMENT_BYTES`]; else its (lossily decoded) start, cut at a
/// character boundary, with [`TRUNCATED_MARKER`] after it, and `true`.
pub fn statement(exact: &[u8]) -> (String, bool) {
    if exact.len() <= MAX_STATEMENT_BYTES
        && let Ok(text) = std::str::from_utf8(exact)
    {
        return (text.to_string(), false);
    }
    let room = MAX_STATEMENT_BYTES - TRUNCATED_MARKER.len();
    let lossy = String::from_utf8_lossy(&exact[..exact.len().min(room)]);
    let mut cut = room.min(lossy.len());
    while !lossy.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut shown = lossy[..cut].to_string();
    shown.push_str(TRUNCATED_MARKER);
    (shown, true)
}

impl Approvals {
    /// A client over `client`, authenticating with the gateway token the
    /// run loop publishes on `token`; counts in `metrics` when given.
    pub fn new(
        client: GatewayClient,
        token: watch::Receiver<Option<Zeroizing<String>>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Approvals {
            inner: Arc::new(Inner {
                client,
                token,
                metrics,
            }),
        }
    }

    fn count(&self, step: ApprovalStep) {
        if let Some(m) = &self.inner.metrics {
            m.approval(step);
        }
    }

    fn bearer(&self) -> Result<Zeroizing<String>, ApprovalError> {
        self.inner
            .token
            .borrow()
            .clone()
            .ok_or(ApprovalError::NoToken)
    }

    async fn ticket(
        &self,
        method: Method,
        path: &str,
        route: &str,
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<ApprovalTicket, ApprovalError> {
        let bearer = self.bearer()?;
        let (status, _, bytes) = self
            .inner
            .client
            .call(method, path, Some(&bearer), &[], body, limit)
            .await?;
        Ok(decode(ok_or_refused(route, status, &bytes)?, route)?)
    }

    /// `POST /v1/approvals`: asks approval; the answer is a new request, or
    /// the pending or approved one for the same requester and statement.
    pub async fn ask(&self, ask: &ApprovalAsk) -> Result<ApprovalTicket, ApprovalError> {
        let body = serde_json::to_vec(ask).map_err(|source| GatewayError::Malformed {
            path: "/v1/approvals".into(),
            source,
        })?;
        let ticket = self
            .ticket(
                Method::POST,
                "/v1/approvals",
                "/v1/approvals",
                Some(body),
                Duration::from_secs(30),
            )
            .await?;
        self.count(ApprovalStep::Asked);
        Ok(ticket)
    }

    /// `GET /v1/approvals/{name}`, long-polled up to `wait` while pending.
    pub async fn get(&self, name: &str, wait: Duration) -> Result<ApprovalTicket, ApprovalError> {
        let path = if wait.is_zero() {
            format!("/v1/approvals/{name}")
        } else {
            format!("/v1/approvals/{name}?wait={}s", wait.as_secs().max(1))
        };
        self.ticket(
            Method::GET,
            &path,
            "/v1/approvals/{name}",
            None,
            wait + Duration::from_secs(15),
        )
        .await
    }

    /// Long-polls request `name` until it is no longer pending or `until`
    /// passes; answers its latest ticket (still `Pending` when time ran
    /// out). A few transport failures in a row are retried.
    pub async fn wait(&self, name: &str, until: Instant) -> Result<ApprovalTicket, ApprovalError> {
        let mut failures = 0u32;
        let mut last: Option<ApprovalTicket> = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero()
                && let Some(t) = last
            {
                return Ok(t);
            }
            let wait = left.min(POLL_WAIT);
            match self.get(name, wait).await {
                Ok(t) => {
                    failures = 0;
                    if t.phase() != Some(RequestPhase::Pending) {
                        return Ok(t);
                    }
                    if left.is_zero() {
                        return Ok(t);
                    }
                    last = Some(t);
                }
                Err(ApprovalError::Gateway(
                    e @ (GatewayError::Transport { .. } | GatewayError::Timeout { .. }),
                )) if failures < POLL_RETRIES && !left.is_zero() => {
                    failures += 1;
                    tracing::warn!(request = %name, error = %e, "polling an approval failed; retrying");
                    let pause = Duration::from_secs(1 << failures).min(left);
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `POST /v1/approvals/{name}/executed`: claims the approval. `Ok` only
    /// when the statement may run now (once).
    pub async fn executed(&self, name: &str) -> Result<ApprovalTicket, ApprovalError> {
        self.ticket(
            Method::POST,
            &format!("/v1/approvals/{name}/executed"),
            "/v1/approvals/{name}/executed",
            None,
            Duration::from_secs(30),
        )
        .await
    }

    /// Hold mode: asks, calls `notify` with the pending ticket (the client is
    /// told which request to approve, and how), waits for the decision until
    /// the request expires, and claims an approval.
    pub async fn hold(&self, ask: &ApprovalAsk, notify: impl FnOnce(&ApprovalTicket)) -> Held {
        let ticket = match self.ask(ask).await {
            Ok(t) => t,
            Err(e) => return Held::Settled(self.unreachable(ask, &e)),
        };
        let ticket = match ticket.phase() {
            Some(RequestPhase::Pending) => {
                notify(&ticket);
                let _pending = self.inner.metrics.as_ref().map(|m| m.approval_pending());
                let until = deadline(&ticket.expires_at);
                match self.wait(&ticket.name, until).await {
                    Ok(t) => t,
                    Err(e) => {
                        self.count(ApprovalStep::Failed);
                        return Held::Settled(ApprovalOutcome::Refused {
                            request: Some(qualified(&ticket)),
                            phase: None,
                            deciders: Vec::new(),
                            message: format!(
                                "statement not run: Sluice lost track of AccessRequest {} while holding it ({e}); nothing ran, send the statement again",
                                qualified(&ticket)
                            ),
                        });
                    }
                }
            }
            _ => ticket,
        };
        self.ticket_held(ask, ticket)
    }

    /// Retry mode: asks; a pending request is answered at once, an approved
    /// one (the same statement, approved since) is claimed.
    pub async fn retry(&self, ask: &ApprovalAsk) -> Held {
        let ticket = match self.ask(ask).await {
            Ok(t) => t,
            Err(e) => return Held::Settled(self.unreachable(ask, &e)),
        };
        if ticket.phase() == Some(RequestPhase::Pending) {
            return Held::Settled(ApprovalOutcome::Pending {
                request: qualified(&ticket),
                message: format!(
                    "statement needs approval: Sluice asked for it in AccessRequest {}; once approved (`{}`), send the same statement again before {} and it runs once",
                    qualified(&ticket),
                    ticket.approve_command,
                    ticket.expires_at
                ),
                approve_command: ticket.approve_command,
                expires_at: ticket.expires_at,
            });
        }
        self.ticket_held(ask, ticket)
    }

    /// The first half of the one approval flow: asks, then holds until
    /// decided (`Hold`: `notify` is told the pending ticket, for the client
    /// and the record) or answers at once (`Retry`). A plane that must watch
    /// its client meanwhile (a cancel, a closed socket) races this future;
    /// dropping it runs nothing.
    pub async fn wait_for(
        &self,
        ask: &ApprovalAsk,
        mode: ApprovalMode,
        notify: impl FnOnce(&ApprovalTicket),
    ) -> Held {
        match mode {
            ApprovalMode::Retry => self.retry(ask).await,
            ApprovalMode::Hold => self.hold(ask, notify).await,
        }
    }

    /// The second half: an approved request is decided again under the
    /// policies in force now (`recheck`, see [`standing`]), then claimed or
    /// marked not run ([`Approvals::run`]); a settled one is as it is.
    pub async fn conclude(
        &self,
        held: Held,
        recheck: impl FnOnce(&Approved) -> Result<(), String>,
    ) -> ApprovalOutcome {
        match held {
            Held::Settled(outcome) => outcome,
            Held::Approved(approved) => {
                let standing = recheck(&approved);
                self.run(approved, standing).await
            }
        }
    }

    /// The whole flow, for a plane that needs nothing between its halves:
    /// ask, hold or retry, re-decide under the live standing, claim; each
    /// step on record through `record` in the one audit shape. A refusal
    /// without an AccessRequest is left to the plane to record
    /// ([`Recorded::Plain`]); a failed write of the step that lets the
    /// command run refuses it (write-ahead).
    pub async fn settle(
        &self,
        ask: &ApprovalAsk,
        mode: ApprovalMode,
        record: &ApprovalRecord<'_>,
        recheck: impl FnOnce(&Approved) -> Result<(), String>,
    ) -> (ApprovalOutcome, Result<Recorded, crate::audit::AuditError>) {
        let held = self
            .wait_for(ask, mode, |ticket| {
                tracing::info!(
                    request = %qualified(ticket),
                    approve = %ticket.approve_command,
                    "held for approval"
                );
                if let Err(e) = record.held(ticket) {
                    tracing::error!(error = %e, "writing the audit record of a held request failed");
                }
            })
            .await;
        let outcome = self.conclude(held, recheck).await;
        let recorded = record.outcome(&outcome);
        (outcome, recorded)
    }

    /// Runs or refuses an approved statement, and puts on the AccessRequest
    /// what really happens: with `standing` Ok (see [`standing`]) it is
    /// claimed (marked executed, once) and [`ApprovalOutcome::Granted`];
    /// with `Err(why)` it is marked not run, with why, and refused. Both
    /// data planes end an approval here.
    pub async fn run(&self, approved: Approved, standing: Result<(), String>) -> ApprovalOutcome {
        let request = approved.request();
        let approvers = approved.ticket.deciders(Verdict::Approve);
        let name = approved.ticket.name;
        if let Err(why) = standing {
            self.count(ApprovalStep::Failed);
            let body = serde_json::to_vec(&NotRun { reason: &why }).unwrap_or_default();
            let path = format!("/v1/approvals/{name}/not-run");
            // The statement is refused whatever the operator answers; a
            // request left Approved here expires unused.
            if let Err(e) = self
                .ticket(
                    Method::POST,
                    &path,
                    "/v1/approvals/{name}/not-run",
                    Some(body),
                    Duration::from_secs(30),
                )
                .await
            {
                tracing::warn!(request = %request, error = %e, "could not record on the AccessRequest that its approved statement did not run");
            }
            return ApprovalOutcome::Refused {
                message: format!(
                    "statement refused by Sluice: AccessRequest {request} was approved by {}, but the policies changed while it was held: {why}; nothing ran",
                    approvers.join(", ")
                ),
                request: Some(request),
                phase: Some(RequestPhase::NotRun),
                deciders: approvers,
            };
        }
        match self.executed(&name).await {
            Ok(_) => {
                self.count(ApprovalStep::Granted);
                ApprovalOutcome::Granted { request, approvers }
            }
            Err(e) => {
                self.count(ApprovalStep::Failed);
                ApprovalOutcome::Refused {
                    message: format!(
                        "statement refused by Sluice: AccessRequest {request} was approved by {}, but the operator would not let it run ({e}); nothing ran",
                        approvers.join(", ")
                    ),
                    request: Some(request),
                    phase: Some(RequestPhase::Approved),
                    deciders: approvers,
                }
            }
        }
    }

    /// Where a decided (or still pending, past its expiry) ticket leaves the
    /// statement; an approval is handed back unclaimed.
    fn ticket_held(&self, ask: &ApprovalAsk, ticket: ApprovalTicket) -> Held {
        let request = qualified(&ticket);
        Held::Settled(match ticket.phase() {
            Some(RequestPhase::Approved) => {
                return Held::Approved(Approved {
                    ticket,
                    policy: ask.policy.clone(),
                    rule: ask.rule.clone(),
                });
            }
            Some(RequestPhase::Denied) => {
                self.count(ApprovalStep::Denied);
                let deciders = ticket.deciders(Verdict::Deny);
                let comments: Vec<String> = ticket
                    .decisions
                    .iter()
                    .filter(|d| d.verdict == Verdict::Deny)
                    .map(|d| match &d.comment {
                        Some(c) if !c.is_empty() => format!("{}: {c:?}", d.user),
                        _ => d.user.clone(),
                    })
                    .collect();
                ApprovalOutcome::Refused {
                    message: format!(
                        "statement refused by Sluice: AccessRequest {request} was denied by {}; nothing ran",
                        comments.join(", ")
                    ),
                    request: Some(request),
                    phase: Some(RequestPhase::Denied),
                    deciders,
                }
            }
            Some(phase @ (RequestPhase::Expired | RequestPhase::Pending)) => {
                self.count(ApprovalStep::Expired);
                let approvers = ticket.deciders(Verdict::Approve);
                let so_far = if approvers.is_empty() {
                    "no approval".to_string()
                } else {
                    format!("approved so far by {} only", approvers.join(", "))
                };
                ApprovalOutcome::Refused {
                    message: format!(
                        "statement refused by Sluice: AccessRequest {request} expired at {} without a decision ({so_far}); nothing ran, send it again to ask anew",
                        ticket.expires_at
                    ),
                    request: Some(request),
                    phase: Some(if phase == RequestPhase::Pending {
                        RequestPhase::Expired
                    } else {
                        phase
                    }),
                    deciders: approvers,
                }
            }
            Some(phase @ (RequestPhase::Executed | RequestPhase::NotRun)) => {
                self.count(ApprovalStep::Failed);
                ApprovalOutcome::Refused {
                    message: format!(
                        "statement refused by Sluice: the approval of AccessRequest {request} was already used (an approval runs its statement once, or not at all once refused at run time); send it again to ask anew"
                    ),
                    request: Some(request),
                    phase: Some(phase),
                    deciders: Vec::new(),
                }
            }
            None => {
                self.count(ApprovalStep::Failed);
                let e = ApprovalError::UnknownPhase {
                    name: request.clone(),
                    phase: ticket.phase.clone(),
                };
                ApprovalOutcome::Refused {
                    message: format!("statement refused by Sluice: {e}; nothing ran"),
                    request: Some(request),
                    phase: None,
                    deciders: Vec::new(),
                }
            }
        })
    }

    fn unreachable(&self, ask: &ApprovalAsk, e: &ApprovalError) -> ApprovalOutcome {
        self.count(ApprovalStep::Failed);
        ApprovalOutcome::Refused {
            request: None,
            phase: None,
            deciders: Vec::new(),
            message: format!(
                "statement refused by Sluice: rule {:?} of AccessPolicy {:?} requires an approval, and asking the Sluice operator for it failed ({e}); nothing ran",
                ask.rule, ask.policy
            ),
        }
    }
}

/// `NAMESPACE/NAME` of a ticket.
fn qualified(t: &ApprovalTicket) -> String {
    format!("{}/{}", t.namespace, t.name)
}

/// Until when a pending request is waited for: its expiry plus a grace for
/// the operator to record it (now plus the grace when the time is unreadable).
fn deadline(expires_at: &str) -> Instant {
    let left = chrono::DateTime::parse_from_rfc3339(expires_at)
        .ok()
        .and_then(|at| {
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or(Duration::ZERO);
    Instant::now() + left + EXPIRY_GRACE
}

/// Which rule asked for a statement's approval, for the client's error
/// (PostgreSQL DETAIL, MySQL message).
pub fn approval_detail(d: &Decision) -> String {
    format!(
        "rule {:?} of AccessPolicy {:?} requires a human approval",
        d.enforced_rule
            .as_deref()
            .or(d.rule.as_deref())
            .unwrap_or("-"),
        d.enforced_policy
            .as_deref()
            .or(d.policy.as_deref())
            .unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_hash_the_exact_text() {
        let c = approval_command("UPDATE t SET a = ?", "fp", b"UPDATE t SET a = 1");
        assert_eq!(c.text, "UPDATE t SET a = ?");
        assert_eq!(c.sha256.len(), 64);
        assert_ne!(
            c.sha256,
            approval_command("UPDATE t SET a = ?", "fp", b"UPDATE t SET a = 2").sha256
        );
        // sha256("abc")
        assert_eq!(
            approval_command("", "", b"abc").sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn approvers_see_the_exact_text_bounded() {
        let c = approval_command("UPDATE t SET a = ?", "fp", b"UPDATE t SET a = 1000000");
        assert_eq!(c.statement.as_deref(), Some("UPDATE t SET a = 1000000"));
        assert!(!c.truncated);
        // Long: cut at a character boundary, marked, within the bound.
        let long = format!("UPDATE t SET a = '{}'", "é".repeat(4000));
        let (shown, truncated) = statement(long.as_bytes());
        assert!(truncated);
        assert!(shown.len() <= MAX_STATEMENT_BYTES, "{}", shown.len());
        assert!(shown.starts_with("UPDATE t SET a = 'é"));
        assert!(shown.ends_with(TRUNCATED_MARKER));
        // Not UTF-8 (an HTTP body): shown lossily, and marked as not the text.
        let (shown, truncated) = statement(b"POST /x\n\xff\xfe");
        assert!(truncated);
        assert!(shown.starts_with("POST /x\n"));
        assert!(shown.ends_with(TRUNCATED_MARKER));
    }

    fn approved(policy: &str, rule: &str) -> Approved {
        Approved {
            ticket: ApprovalTicket {
                name: "r".into(),
                namespace: "ns".into(),
                expires_at: String::new(),
                phase: "Approved".into(),
                decisions: Vec::new(),
                approve_command: String::new(),
            },
            policy: policy.into(),
            rule: rule.into(),
        }
    }

    fn decision(enforced: Action, policy: &str, rule: &str) -> Decision {
        Decision {
            action: enforced,
            enforced,
            policy: Some(policy.into()),
            rule: Some(rule.into()),
            enforced_policy: Some(policy.into()),
            enforced_rule: Some(rule.into()),
            dry_run: false,
            approval: None,
            reason: format!("rule {rule} of {policy}"),
        }
    }

    #[test]
    fn an_approval_stands_only_under_its_own_rule() {
        let a = approved("p", "r");
        assert_eq!(standing(&a, &decision(Action::Allow, "p", "x")), Ok(()));
        assert_eq!(
            standing(&a, &decision(Action::RequireApproval, "p", "r")),
            Ok(())
        );
        let other = standing(&a, &decision(Action::RequireApproval, "q", "strict")).unwrap_err();
        assert!(other.contains("\"strict\""), "{other}");
        let denied = standing(&a, &decision(Action::Deny, "p", "freeze")).unwrap_err();
        assert!(denied.contains("freeze"), "{denied}");
    }

    #[test]
    fn deadlines_follow_the_expiry() {
        let now = Instant::now();
        let past = deadline("2001-01-01T00:00:00Z");
        assert!(past >= now + EXPIRY_GRACE);
        let soon = deadline(&(chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339());
        assert!(soon > now + Duration::from_secs(500));
    }
}
