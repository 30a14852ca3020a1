//! The sidecar metrics' label sets and label values (see [`super`]).

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::bundle_client::GatewayError;

/// The decision label of a statement.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DecisionLabel {
    /// Ran.
    Allow,
    /// Refused by a deny rule (or a limit).
    Deny,
    /// Refused: needs an approval.
    RequireApproval,
    /// Ran, but a dryRun policy would have refused it.
    DryRunDeny,
}

/// Labels of `sluice_statements_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    /// The Connection.
    pub connection: String,
    /// The decision.
    pub decision: DecisionLabel,
}

/// Labels of `sluice_rule_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The Connection.
    pub connection: String,
    /// The deciding AccessPolicy (of the identity's namespace), empty when none did.
    pub policy: String,
    /// The deciding rule, empty for a policy's default action.
    pub rule: String,
    /// The action the rule decided.
    pub action: ActionLabel,
}

/// A rule's action, as the CRDs spell it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ActionLabel {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
    /// `requireApproval`.
    RequireApproval,
}

/// Labels of the families that carry only the Connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// The Connection.
    pub connection: String,
}

/// Labels of `sluice_sessions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// The Connection.
    pub connection: String,
    /// `opened` or `refused`.
    pub outcome: SessionOutcome,
}

/// How a session attempt ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SessionOutcome {
    /// It was opened.
    Opened,
    /// It was refused (not bound, upstream failure, audit failure).
    Refused,
}

/// Labels of `sluice_session_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The Connection.
    pub connection: String,
    /// Why.
    pub reason: SessionRefusal,
}

/// Why a session was refused before it opened.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SessionRefusal {
    /// No AccessPolicy binds the identity to the Connection (or none is in force).
    NotBound,
    /// The upstream could not be reached or refused the session.
    UpstreamUnavailable,
    /// A readOnly policy's session could not be verified read-only.
    ReadOnlyUnverified,
    /// The audit log could not be written.
    AuditFailed,
    /// The listener holds its most connections (`53300`).
    TooManyConnections,
    /// The client's startup was malformed (`08P01`).
    ProtocolViolation,
    /// The client asked for what Sluice does not serve: another protocol
    /// version, a replication connection (`0A000`).
    Unsupported,
    /// Any other reason (the log says which).
    Other,
}

impl SessionRefusal {
    pub(super) const ALL: [SessionRefusal; 8] = [
        SessionRefusal::NotBound,
        SessionRefusal::UpstreamUnavailable,
        SessionRefusal::ReadOnlyUnverified,
        SessionRefusal::AuditFailed,
        SessionRefusal::TooManyConnections,
        SessionRefusal::ProtocolViolation,
        SessionRefusal::Unsupported,
        SessionRefusal::Other,
    ];

    /// The reason of a refusal answered with SQLSTATE `code`.
    pub fn of_sqlstate(code: &str) -> SessionRefusal {
        match code {
            // invalid_authorization_specification
            "28000" => SessionRefusal::NotBound,
            // connection_failure
            "08006" | "08001" | "08004" => SessionRefusal::UpstreamUnavailable,
            // read_only_sql_transaction
            "25006" => SessionRefusal::ReadOnlyUnverified,
            // internal_error: the audit log could not be written
            "XX000" => SessionRefusal::AuditFailed,
            "53300" => SessionRefusal::TooManyConnections,
            "08P01" => SessionRefusal::ProtocolViolation,
            "0A000" => SessionRefusal::Unsupported,
            _ => SessionRefusal::Other,
        }
    }
}

/// Labels of `sluice_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// The Connection.
    pub connection: String,
    /// Direction.
    pub direction: Direction,
}

/// Direction of bytes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From the application to the sidecar.
    FromClient,
    /// From the sidecar to the application.
    ToClient,
}

/// Labels of `sluice_approvals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalLabels {
    /// The step.
    pub step: ApprovalStep,
}

/// A step of a statement's approval.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ApprovalStep {
    /// The operator was asked (a new request, or the pending one again).
    Asked,
    /// Approved, and the statement ran.
    Granted,
    /// Denied by an approver.
    Denied,
    /// Expired without a decision.
    Expired,
    /// Refused for another reason (operator unreachable, approval already used).
    Failed,
}

impl ApprovalStep {
    pub(super) const ALL: [ApprovalStep; 5] = [
        ApprovalStep::Asked,
        ApprovalStep::Granted,
        ApprovalStep::Denied,
        ApprovalStep::Expired,
        ApprovalStep::Failed,
    ];
}

/// Labels of `sluice_token_exchange_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    /// Why.
    pub reason: ExchangeFailure,
}

/// Why exchanging the pod's token for a gateway token failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ExchangeFailure {
    /// The operator could not be reached (TCP, TLS, HTTP).
    Unreachable,
    /// The operator did not answer in time.
    Timeout,
    /// The operator refused the pod's token or identity (401, 403).
    Refused,
    /// The operator failed (5xx) or refused for another reason.
    Failed,
    /// The answer or the local set-up (CA, token file) is unusable.
    Malformed,
}

impl ExchangeFailure {
    pub(super) const ALL: [ExchangeFailure; 5] = [
        ExchangeFailure::Unreachable,
        ExchangeFailure::Timeout,
        ExchangeFailure::Refused,
        ExchangeFailure::Failed,
        ExchangeFailure::Malformed,
    ];

    /// The bounded reason of a gateway error.
    pub fn of(e: &GatewayError) -> ExchangeFailure {
        match e {
            GatewayError::Transport { .. } => ExchangeFailure::Unreachable,
            GatewayError::Timeout { .. } => ExchangeFailure::Timeout,
            GatewayError::Refused {
                status: 401 | 403, ..
            } => ExchangeFailure::Refused,
            GatewayError::Refused { .. } => ExchangeFailure::Failed,
            _ => ExchangeFailure::Malformed,
        }
    }
}

/// Labels of `sluice_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
    pub(super) binary: &'static str,
}

/// Label values are the API's own words (`allow`, `requireApproval`), not Rust names.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self {
                    $(<$ty>::$variant => $text),*
                })
            }
        }
    };
}

label_values!(DecisionLabel {
    Allow => "allow",
    Deny => "deny",
    RequireApproval => "requireApproval",
    DryRunDeny => "dryRunDeny",
});
label_values!(ActionLabel {
    Allow => "allow",
    Deny => "deny",
    RequireApproval => "requireApproval",
});
label_values!(ApprovalStep {
    Asked => "asked",
    Granted => "granted",
    Denied => "denied",
    Expired => "expired",
    Failed => "failed",
});
label_values!(SessionOutcome { Opened => "opened", Refused => "refused" });
label_values!(SessionRefusal {
    NotBound => "notBound",
    UpstreamUnavailable => "upstreamUnavailable",
    ReadOnlyUnverified => "readOnlyUnverified",
    AuditFailed => "auditFailed",
    TooManyConnections => "tooManyConnections",
    ProtocolViolation => "protocolViolation",
    Unsupported => "unsupported",
    Other => "other",
});
label_values!(Direction { FromClient => "fromClient", ToClient => "toClient" });
label_values!(ExchangeFailure {
    Unreachable => "unreachable",
    Timeout => "timeout",
    Refused => "refused",
    Failed => "failed",
    Malformed => "malformed",
});
