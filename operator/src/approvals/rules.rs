//! The pure rules of just-in-time approvals (DESIGN §2 AccessRequest, §6).
//!
//! - [`bind_decisions`]: what the admission webhook on `accessrequests/status`
//!   allows, and the approver identity it writes into a new decision (always
//!   the admission request's `userInfo`, never what the approver typed);
//! - [`next_phase`]: the phase the AccessRequest controller moves a request to;
//! - [`new_request`]: the AccessRequest the gateway creates for a sidecar.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use sluice_crds::{
    AccessRequest, AccessRequestSpec, AccessRequestStatus, Approval, Command, RequestDecision,
    RequestPhase, Requester, Verdict,
};

/// Label naming the requesting service account, for finding duplicates: the
/// name itself, or, beyond the 63 characters a label value may hold, a stable
/// shortening ([`requester_label_value`]). Annotation of the same name: the
/// full name.
pub const REQUESTER_LABEL: &str = "sluice.dev/requester";
/// Label holding the first 32 hex digits of the command's sha256.
pub const COMMAND_LABEL: &str = "sluice.dev/command-sha256";
/// Longest command text kept in an AccessRequest.
pub const MAX_COMMAND_CHARS: usize = 4096;

/// The identity Kubernetes authenticated for an admission request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approver {
    /// `userInfo.username`.
    pub user: String,
    /// `userInfo.groups`.
    pub groups: Vec<String>,
}

/// Why a change to an AccessRequest's status was refused. Each message names
/// the request, what was wrong, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefusal {
    /// The requester tried to decide its own request.
    #[error(
        "{user} is the requester of AccessRequest {request}; a workload cannot approve or deny its own request, ask an approver"
    )]
    SelfDecision {
        /// The request.
        request: String,
        /// The user.
        user: String,
    },
    /// The user is not one of the rule's approvers.
    #[error(
        "{user} is not an approver of AccessRequest {request} (approvers: {approvers}); ask one of them to decide"
    )]
    NotAnApprover {
        /// The request.
        request: String,
        /// The user.
        user: String,
        /// The rule's approvers, for the message.
        approvers: String,
    },
    /// The user already decided.
    #[error(
        "{user} already decided AccessRequest {request}; each approver decides once, and a decision cannot be changed"
    )]
    AlreadyDecided {
        /// The request.
        request: String,
        /// The user.
        user: String,
    },
    /// The request is no longer pending.
    #[error("AccessRequest {request} is {phase}, not Pending; it can no longer be decided")]
    NotPending {
        /// The request.
        request: String,
        /// Its phase.
        phase: String,
    },
    /// The request's expiry passed.
    #[error(
        "AccessRequest {request} expired at {expires_at}; it can no longer be decided, the workload must ask again"
    )]
    Expired {
        /// The request.
        request: String,
        /// When it expired.
        expires_at: String,
    },
    /// Recorded decisions were edited, reordered or removed.
    #[error(
        "recorded decisions of AccessRequest {request} cannot be edited or removed; append one new decision instead"
    )]
    DecisionsRewritten {
        /// The request.
        request: String,
    },
    /// More than one decision in one change.
    #[error(
        "a change to AccessRequest {request} may add one decision, not {count}; use kubectl sluice approve or deny"
    )]
    TooManyDecisions {
        /// The request.
        request: String,
        /// How many were added.
        count: usize,
    },
    /// Someone other than the operator changed the phase or other fields.
    #[error(
        "only the Sluice operator sets the phase, conditions and execution time of AccessRequest {request}; approvers only add decisions (kubectl sluice approve or deny)"
    )]
    NotTheOperator {
        /// The request.
        request: String,
    },
    /// Someone other than the operator created an AccessRequest.
    #[error(
        "AccessRequests are created by the Sluice operator on a sidecar's behalf, not by {user}; run the statement through the sidecar instead"
    )]
    CreatedByOthers {
        /// The user.
        user: String,
    },
    /// The operator tried to add a decision.
    #[error("the operator does not decide AccessRequest {request}; approvers do")]
    OperatorDecision {
        /// The request.
        request: String,
    },
}

impl DecisionRefusal {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DecisionRefusal::SelfDecision { .. } => "self_decision",
            DecisionRefusal::NotAnApprover { .. } => "not_an_approver",
            DecisionRefusal::AlreadyDecided { .. } => "already_decided",
            DecisionRefusal::NotPending { .. } => "not_pending",
            DecisionRefusal::Expired { .. } => "expired",
            DecisionRefusal::DecisionsRewritten { .. } => "rewritten",
            DecisionRefusal::TooManyDecisions { .. } => "too_many",
            DecisionRefusal::NotTheOperator { .. } => "not_operator",
            DecisionRefusal::CreatedByOthers { .. } => "created_by_others",
            DecisionRefusal::OperatorDecision { .. } => "operator_decision",
        }
    }
}

/// `system:serviceaccount:NS:SA` of a requester.
pub fn requester_user(requester: &Requester) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        requester.namespace, requester.service_account
    )
}

fn phase_name(phase: Option<RequestPhase>) -> String {
    match phase {
        Some(p) => format!("{p:?}"),
        None => "new".to_string(),
    }
}

fn request_name(ar: &AccessRequest) -> String {
    format!(
        "{}/{}",
        ar.metadata.namespace.as_deref().unwrap_or_default(),
        ar.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Checks a status update of `old` into `new` made by `who`, and returns the
/// decisions as they must be stored: the new decision's `user` and `groups`
/// bound to `who`, its `time` to `now`. `operator` is the operator's own user.
pub fn bind_decisions(
    old: &AccessRequest,
    new: &AccessRequest,
    who: &Approver,
    operator: &str,
    now: Timestamp,
) -> Result<Vec<RequestDecision>, DecisionRefusal> {
    let request = request_name(old);
    let old_status = old.status.clone().unwrap_or_default();
    let new_status = new.status.clone().unwrap_or_default();
    let recorded = &old_status.decisions;
    if new_status.decisions.len() < recorded.len()
        || new_status.decisions[..recorded.len()] != recorded[..]
    {
        return Err(DecisionRefusal::DecisionsRewritten { request });
    }
    let added = &new_status.decisions[recorded.len()..];
    if who.user == operator {
        if !added.is_empty() {
            return Err(DecisionRefusal::OperatorDecision { request });
        }
        return Ok(new_status.decisions);
    }
    let unchanged = AccessRequestStatus {
        decisions: Vec::new(),
        ..new_status.clone()
    } == AccessRequestStatus {
        decisions: Vec::new(),
        ..old_status.clone()
    };
    if !unchanged {
        return Err(DecisionRefusal::NotTheOperator { request });
    }
    match added.len() {
        0 => return Ok(new_status.decisions),
        1 => {}
        count => return Err(DecisionRefusal::TooManyDecisions { request, count }),
    }
    if who.user == requester_user(&old.spec.requester) {
        return Err(DecisionRefusal::SelfDecision {
            request,
            user: who.user.clone(),
        });
    }
    let approvers = &old.spec.approvers;
    let is_approver = approvers.users.contains(&who.user)
        || who.groups.iter().any(|g| approvers.groups.contains(g));
    if !is_approver {
        let mut named: Vec<String> = approvers.users.clone();
        named.extend(approvers.groups.iter().map(|g| format!("group {g}")));
        return Err(DecisionRefusal::NotAnApprover {
            request,
            user: who.user.clone(),
            approvers: named.join(", "),
        });
    }
    if old_status.phase != Some(RequestPhase::Pending) {
        return Err(DecisionRefusal::NotPending {
            request,
            phase: phase_name(old_status.phase),
        });
    }
    if now >= old.spec.expires_at.0 {
        return Err(DecisionRefusal::Expired {
            request,
            expires_at: old.spec.expires_at.0.to_string(),
        });
    }
    if recorded.iter().any(|d| d.user == who.user) {
        return Err(DecisionRefusal::AlreadyDecided {
            request,
            user: who.user.clone(),
        });
    }
    let mut decisions = recorded.clone();
    decisions.push(RequestDecision {
        user: who.user.clone(),
        groups: who.groups.clone(),
        verdict: added[0].verdict,
        time: Time(now),
        comment: added[0].comment.clone(),
    });
    Ok(decisions)
}

/// Checks the creation of an AccessRequest: only the operator creates them.
pub fn check_create(who: &Approver, operator: &str) -> Result<(), DecisionRefusal> {
    if who.user == operator {
        Ok(())
    } else {
        Err(DecisionRefusal::CreatedByOthers {
            user: who.user.clone(),
        })
    }
}

/// A phase change the controller makes, with the Event that tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseChange {
    /// The new phase.
    pub to: RequestPhase,
    /// CamelCase Event reason.
    pub reason: &'static str,
    /// Human note.
    pub note: String,
}

/// What the controller does with `ar` at `now`: a phase change, or when to
/// look again (the expiry of a pending or approved request).
pub fn next_phase(ar: &AccessRequest, now: Timestamp) -> (Option<PhaseChange>, Option<Duration>) {
    let status = ar.status.clone().unwrap_or_default();
    let expires = ar.spec.expires_at.0;
    let until_expiry = expires
        .duration_since(now)
        .try_into()
        .ok()
        .filter(|d: &Duration| !d.is_zero());
    let expired = now >= expires;
    match status.phase {
        None if expired => (Some(expire(ar)), None),
        None => (
            Some(PhaseChange {
                to: RequestPhase::Pending,
                reason: "Requested",
                note: format!(
                    "{} asks to run {:?} under rule {}",
                    requester_user(&ar.spec.requester),
                    short(&ar.spec.command.text),
                    ar.spec.rule
                ),
            }),
            until_expiry,
        ),
        Some(RequestPhase::Pending) => {
            if let Some(denial) = status.decisions.iter().find(|d| d.verdict == Verdict::Deny) {
                return (
                    Some(PhaseChange {
                        to: RequestPhase::Denied,
                        reason: "Denied",
                        note: match &denial.comment {
                            Some(c) => format!("denied by {}: {c}", denial.user),
                            None => format!("denied by {}", denial.user),
                        },
                    }),
                    None,
                );
            }
            let approvers: Vec<&str> = distinct_approvals(&status.decisions);
            if approvers.len() >= ar.spec.min_approvals.max(1) as usize && !expired {
                return (
                    Some(PhaseChange {
                        to: RequestPhase::Approved,
                        reason: "Approved",
                        note: format!("approved by {}", approvers.join(", ")),
                    }),
                    until_expiry,
                );
            }
            if expired {
                return (Some(expire(ar)), None);
            }
            (None, until_expiry)
        }
        Some(RequestPhase::Approved) if expired => (Some(expire(ar)), None),
        Some(RequestPhase::Approved) => (None, until_expiry),
        Some(
            RequestPhase::Denied
            | RequestPhase::Expired
            | RequestPhase::Executed
            | RequestPhase::NotRun,
        ) => (None, None),
    }
}

fn distinct_approvals(decisions: &[RequestDecision]) -> Vec<&str> {
    let mut users: Vec<&str> = Vec::new();
    for d in decisions {
        if d.verdict == Verdict::Approve && !users.contains(&d.user.as_str()) {
            users.push(&d.user);
        }
    }
    users
}

fn expire(ar: &AccessRequest) -> PhaseChange {
    let before = ar
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(RequestPhase::Pending);
    PhaseChange {
        to: RequestPhase::Expired,
        reason: "Expired",
        note: match before {
            RequestPhase::Approved => {
                format!("approved but not executed before {}", ar.spec.expires_at.0)
            }
            _ => format!("not decided before {}", ar.spec.expires_at.0),
        },
    }
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Parses a rule's `timeout` (`15m`, `1h30m`, `2s`, `500ms`).
pub fn parse_timeout(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// What a sidecar asks approval for.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// Connection name.
    pub connection: &'a str,
    /// AccessPolicy name.
    pub policy: &'a str,
    /// Rule name.
    pub rule: &'a str,
    /// The command, literals redacted.
    pub command: &'a Command,
    /// Why, if the workload said.
    pub reason: Option<&'a str>,
}

/// Whether `ar`'s requirement is still that of its rule in `policy` as it
/// stands now (the policy as the operator's cache has it; `None` when it is
/// gone): the rule exists, still requires approval, from the same approvers,
/// with the same `minApprovals`. `Err` says what changed. Decisions, reuse and
/// execution are checked with it (issue 18: not frozen at filing).
pub fn rule_as_it_stands(
    ar: &AccessRequest,
    policy: Option<&sluice_crds::AccessPolicy>,
) -> Result<(), String> {
    let named = format!(
        "rule {:?} of AccessPolicy {:?}",
        ar.spec.rule, ar.spec.policy
    );
    let Some(policy) = policy else {
        return Err(format!(
            "AccessPolicy {:?} no longer exists",
            ar.spec.policy
        ));
    };
    let Some(rule) = policy.spec.rules.iter().find(|r| r.name == ar.spec.rule) else {
        return Err(format!("{named} no longer exists"));
    };
    let approval = match (&rule.action, &rule.approval) {
        (sluice_crds::Action::RequireApproval, Some(a)) => a,
        _ => return Err(format!("{named} no longer requires approval")),
    };
    if approval.approvers != ar.spec.approvers {
        return Err(format!("{named} now names other approvers"));
    }
    if approval.min_approvals.max(1) != ar.spec.min_approvals {
        return Err(format!(
            "{named} now needs {} approvals, not {}",
            approval.min_approvals.max(1),
            ar.spec.min_approvals
        ));
    }
    Ok(())
}

/// The value of [`REQUESTER_LABEL`] for a service account: its name when it fits
/// a label value (service-account names are DNS subdomains of up to 253
/// characters, label values at most 63), else its first 46 characters and 16
/// hex digits of the name's sha256, so every long name has one stable value and
/// two names sharing a prefix get different ones. Every selector on the label
/// goes through this function.
pub fn requester_label_value(service_account: &str) -> String {
    const MAX: usize = 63;
    if service_account.len() <= MAX {
        return service_account.to_string();
    }
    let digest = hex::encode(&Sha256::digest(service_account.as_bytes())[..8]);
    // A label value must begin and end with an alphanumeric character.
    let prefix = service_account[..46].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{digest}")
}

/// The AccessRequest for `ask` by `requester` under `approval`, expiring
/// `timeout` after `now`. Its name is generated by the API server.
pub fn new_request(
    ask: &Ask<'_>,
    requester: Requester,
    approval: &Approval,
    timeout: Duration,
    now: Timestamp,
) -> AccessRequest {
    let expires = now
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(timeout).unwrap_or_default())
        .unwrap_or(now);
    let labels = BTreeMap::from([
        (
            REQUESTER_LABEL.to_string(),
            requester_label_value(&requester.service_account),
        ),
        (
            COMMAND_LABEL.to_string(),
            ask.command.sha256.get(..32).unwrap_or_default().to_string(),
        ),
    ]);
    let mut command = ask.command.clone();
    if command.text.chars().count() > MAX_COMMAND_CHARS {
        command.text = command.text.chars().take(MAX_COMMAND_CHARS).collect();
    }
    AccessRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ask.connection)),
            namespace: Some(requester.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                REQUESTER_LABEL.to_string(),
                requester.service_account.clone(),
            )])),
            ..Default::default()
        },
        spec: AccessRequestSpec {
            connection: ask.connection.to_string(),
            policy: ask.policy.to_string(),
            rule: ask.rule.to_string(),
            requester,
            command,
            reason: ask.reason.map(str::to_string),
            approvers: approval.approvers.clone(),
            min_approvals: approval.min_approvals.max(1),
            mode: approval.mode,
            expires_at: Time(expires),
        },
        status: None,
    }
}

/// Whether `ar` stands for the same ask by the same requester, still usable:
/// Pending, or Approved and not yet executed, and not expired.
pub fn is_reusable(
    ar: &AccessRequest,
    requester: &Requester,
    sha256: &str,
    now: Timestamp,
) -> bool {
    let phase = ar.status.as_ref().and_then(|s| s.phase);
    ar.spec.requester.namespace == requester.namespace
        && ar.spec.requester.service_account == requester.service_account
        && ar.spec.command.sha256 == sha256
        && matches!(
            phase,
            None | Some(RequestPhase::Pending) | Some(RequestPhase::Approved)
        )
        && now < ar.spec.expires_at.0
}

/// The note of the `Requested` Event.
pub fn requested_note(ar: &AccessRequest) -> String {
    let mut text: String = ar.spec.command.text.chars().take(120).collect();
    if text.len() < ar.spec.command.text.len() {
        text.push('…');
    }
    format!(
        "{} asks to run {text:?} on {} under rule {} of {}",
        requester_user(&ar.spec.requester),
        ar.spec.connection,
        ar.spec.rule,
        ar.spec.policy
    )
}

#[cfg(test)]
mod tests;
