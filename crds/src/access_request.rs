//! `AccessRequest`: a just-in-time approval, created by the operator for a sidecar.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{ApprovalMode, Approvers, Conditions};

/// A just-in-time approval for one statement or request that a
/// `requireApproval` rule held. Created by the operator on a sidecar's behalf;
/// decided with `kubectl sluice approve|deny`. The spec never changes after
/// creation, and recorded decisions are never edited or removed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AccessRequest",
    namespaced,
    shortname = "ar",
    category = "sluice",
    status = "AccessRequestStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Requester","type":"string","jsonPath":".spec.requester.serviceAccount"}"#,
    printcolumn = r#"{"name":"Rule","type":"string","jsonPath":".spec.rule"}"#,
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".spec.connection","priority":1}"#,
    printcolumn = r#"{"name":"Statement","type":"string","jsonPath":".spec.command.statement"}"#,
    printcolumn = r#"{"name":"Command","type":"string","jsonPath":".spec.command.text","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".spec.expiresAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("an AccessRequest's spec cannot be changed"))]
pub struct AccessRequestSpec {
    /// The Connection the held statement or request was sent on.
    pub connection: String,
    /// The AccessPolicy whose rule asked for approval.
    pub policy: String,
    /// The rule that asked for approval.
    pub rule: String,
    /// Who sent it.
    pub requester: Requester,
    /// What was sent: redacted for the audit trail, exact (bounded) for approvers.
    pub command: Command,
    /// Why, when the workload or policy gave a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who may decide (copied from the rule when the request was created).
    pub approvers: Approvers,
    /// How many distinct approvers must approve.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub min_approvals: u32,
    /// How the workload waits: `hold` or `retry`.
    #[serde(default)]
    pub mode: ApprovalMode,
    /// When the request expires undecided.
    pub expires_at: Time,
}

fn one() -> u32 {
    1
}

/// The workload identity that sent the held statement or request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// Service account name.
    pub service_account: String,
    /// Namespace of the service account.
    pub namespace: String,
    /// Pod the sidecar runs in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Kubernetes groups of the identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Longest [`Command::statement`], in bytes (marker included).
pub const MAX_STATEMENT_BYTES: usize = 4096;

/// Appended to a [`Command::statement`] that is not the whole text.
pub const TRUNCATED_MARKER: &str =
    " …[truncated by Sluice; the approval is for the whole text, see sha256]";

/// The held command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// The statement or request with literals redacted (as the audit trail has it).
    pub text: String,
    /// The exact statement, literals included, as it will run (for HTTP:
    /// `METHOD path?query`, a newline, then the body), so approvers see what
    /// they approve. Only in the AccessRequest (namespaced, RBAC-guarded),
    /// never in the audit stream. At most 4096 bytes: a longer text, or one
    /// that is not UTF-8, is cut (lossily decoded) and ends with a marker, and
    /// `truncated` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub statement: Option<String>,
    /// True when `statement` is not the whole text (the approval still binds
    /// to the sha256 of the whole); false when sha256 is the hash of `statement`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Fingerprint of the statement (literals normalised), shared by statements of the same shape.
    pub fingerprint: String,
    /// Hex sha256 of the exact statement text: the approval is valid for this statement only.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// Observed state of an AccessRequest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestStatus {
    /// Where the request stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RequestPhase>,
    /// Decisions recorded so far, oldest first. Never edited or removed.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.size() >= oldSelf.size() && oldSelf.all(d, d in self)").message("recorded decisions cannot be edited or removed"))]
    pub decisions: Vec<RequestDecision>,
    /// Conditions: `Ready` is True once the request is decided (approved,
    /// denied or expired); its reason says which.
    #[serde(default)]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Conditions,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the approved statement ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<Time>,
}

/// Phase of an AccessRequest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RequestPhase {
    /// Waiting for decisions.
    Pending,
    /// Enough approvers approved.
    Approved,
    /// An approver denied.
    Denied,
    /// Not decided before `spec.expiresAt`.
    Expired,
    /// Approved and run.
    Executed,
    /// Approved, but refused when it was to run: the policies in force
    /// then did not let it (condition `Ready`'s message says why). Nothing ran.
    NotRun,
}

/// One approver's decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestDecision {
    /// The Kubernetes user who decided, as authenticated by the API server
    /// (bound by the operator's admission webhook, never typed).
    pub user: String,
    /// That user's groups, as authenticated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `approve` or `deny`.
    pub verdict: Verdict,
    /// When.
    pub time: Time,
    /// The approver's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An approver's verdict.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}
