//! The JSON of the gateway API (docs/DESIGN.md §3, §4, §6, §7): what sidecars send and receive.
//!
//! Types that cross a process boundary live in the policy crate, so the
//! operator (which serves them) and the sidecar (which calls it) share one
//! definition.

use std::collections::BTreeMap;

use crate::audit::{AuditEvent, ChainHead};
use serde::{Deserialize, Serialize};
use sluice_crds::{
    AccessPolicy, AccessRequest, Command, ConnectionSpec, RequestDecision, RequestPhase, Verdict,
};

/// The environment variables of the sidecar's run mode: the operator's
/// injection webhook sets them, the sidecar reads them. One list, so the two
/// cannot drift apart.
pub mod env {
    /// HTTPS URL of the operator's gateway API.
    pub const GATEWAY_URL: &str = "SLUICE_GATEWAY_URL";
    /// Path of the projected service-account token.
    pub const TOKEN_FILE: &str = "SLUICE_TOKEN_FILE";
    /// PEM of the operator's CA, which signs the gateway's serving certificate.
    pub const CA_PEM: &str = "SLUICE_CA_PEM";
    /// Instead of [`CA_PEM`]: a file holding that PEM (not set by the webhook).
    pub const CA_FILE: &str = "SLUICE_CA_FILE";
    /// Connections the sidecar serves, comma separated.
    pub const CONNECTIONS: &str = "SLUICE_CONNECTIONS";
    /// Address of the admin server (`/readyz`, `/healthz`, `/metrics`).
    pub const ADMIN_ADDR: &str = "SLUICE_ADMIN_ADDR";
    /// Pod name, from the downward API.
    pub const POD_NAME: &str = "SLUICE_POD_NAME";
    /// Pod namespace, from the downward API.
    pub const POD_NAMESPACE: &str = "SLUICE_POD_NAMESPACE";
    /// Read when [`POD_NAMESPACE`] is not set (not set by the webhook).
    pub const NAMESPACE: &str = "SLUICE_NAMESPACE";
    /// Pod UID, from the downward API.
    pub const POD_UID: &str = "SLUICE_POD_UID";
    /// The pod's service account, from the downward API.
    pub const SERVICE_ACCOUNT: &str = "SLUICE_SERVICE_ACCOUNT";
    /// Optional: seconds the upstream of an http Connection has to answer
    /// (and at most between two pieces of a body).
    pub const HTTP_TIMEOUT: &str = "SLUICE_HTTP_TIMEOUT";
    /// Optional: largest request body buffered to decide `jsonBody` rules, in bytes.
    pub const HTTP_MAX_BODY: &str = "SLUICE_HTTP_MAX_BODY";
    /// Optional: `true` offers only HTTP/1.1 to the upstreams of http Connections.
    pub const HTTP_UPSTREAM_HTTP1_ONLY: &str = "SLUICE_HTTP_UPSTREAM_HTTP1_ONLY";
    /// Optional: the audit durability of Connections that set none
    /// (`writeAhead` or `batched`).
    pub const AUDIT_DURABILITY: &str = "SLUICE_AUDIT_DURABILITY";
}

/// `POST /v1/token` request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// The pod's projected service-account token (audience `sluice.dev`).
    pub subject_token: String,
}

/// `POST /v1/token` answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The gateway JWT, sent as `Authorization: Bearer …` on the other routes.
    pub token: String,
    /// When it expires (RFC 3339); refresh well before.
    pub expires_at: String,
}

/// The body of every 4xx/5xx answer of the gateway API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// CamelCase reason, stable for programs (e.g. `WrongAudience`, `PodDeleted`).
    pub reason: String,
    /// What happened and what to do, for people.
    pub message: String,
}

/// Who a bundle was built for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleIdentity {
    /// Namespace of the service account and pod.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Pod name.
    pub pod: String,
    /// Groups of the service account.
    pub groups: Vec<String>,
}

/// One Connection of the identity's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BundleConnection {
    /// Name of the Connection.
    pub name: String,
    /// Its spec, as stored.
    pub spec: ConnectionSpec,
    /// Whether an AccessPolicy binds the identity to this Connection. Unbound
    /// Connections come without credentials; the sidecar refuses their
    /// sessions with a message naming the Connection.
    pub bound: bool,
    /// The credentials (`username`/`password`, or header name → value), only
    /// when bound. Kept in memory by the sidecar, never written anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<BTreeMap<String, String>>,
    /// PEM of `spec.upstream.tls.caSecretRef`, when set and bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Base64 of the key behind `spec.credentials.hashKeySecretRef`, when set and bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
}

/// A Secret key a policy of the bundle references (e.g. a masking hash key),
/// so the sidecar can compile the policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleSecretKey {
    /// Secret name, in the identity's namespace.
    pub secret: String,
    /// Key in the Secret.
    pub key: String,
    /// Base64 of the value.
    pub value: String,
}

/// `GET /v1/bundle` answer: everything one identity needs.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Changes whenever anything else in the bundle changes; also the ETag.
    pub revision: String,
    /// Who it is for.
    pub identity: BundleIdentity,
    /// Do not use this bundle after this instant (RFC 3339), even without a newer one.
    pub expires_at: String,
    /// The Connections of the namespace.
    pub connections: Vec<BundleConnection>,
    /// The Ready AccessPolicies that bind the identity, as stored (metadata
    /// name, namespace and generation, and spec); the sidecar compiles them
    /// with `sluice_policy::engine::CompiledPolicy::compile`.
    pub policies: Vec<AccessPolicy>,
    /// Secret keys the policies reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<BundleSecretKey>,
}

/// `POST /v1/audit` request: audit events of one sidecar, and its chain heads
/// to be signed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditBatch {
    /// Events in stream order.
    #[serde(default)]
    pub events: Vec<AuditEvent>,
    /// Chain heads to sign; the latest per Connection is written into its
    /// `status.auditCheckpoint`.
    #[serde(default)]
    pub heads: Vec<AuditHead>,
}

/// A chain head, and the Connection whose traffic it covers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    /// The Connection.
    pub connection: String,
    /// The head.
    #[serde(flatten)]
    pub head: ChainHead,
}

/// The start of every audit stream name of one sidecar: its identity and pod
/// (`sidecar:NAMESPACE/SERVICE_ACCOUNT:POD:`, then the sidecar's start time).
/// The operator signs heads only of streams whose name starts with the
/// gateway token's own.
pub fn stream_prefix(namespace: &str, service_account: &str, pod: &str) -> String {
    format!("sidecar:{namespace}/{service_account}:{pod}:")
}

/// A chain head signed by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignedHead {
    /// The Connection.
    pub connection: String,
    /// Stream of the head.
    pub stream: String,
    /// Sequence number.
    pub sequence: u64,
    /// Chain hash.
    pub hash: String,
    /// Base64url ES256 JWS (compact) over `{namespace, serviceAccount, pod,
    /// podUid, connection, stream, sequence, hash, previous, iat}`: `previous`
    /// is the sequence of the stream's last head this operator signed (absent
    /// for its first).
    pub signature: String,
    /// The signing key's ID, published at `/v1/jwks`.
    pub key_id: String,
    /// The identity whose stream it is (`system:serviceaccount:NS:NAME`), as signed.
    #[serde(default)]
    pub identity: String,
    /// The pod whose sidecar wrote the stream, as signed.
    #[serde(default)]
    pub pod: String,
}

/// `POST /v1/audit` answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditReceipt {
    /// Events taken into the counters.
    pub accepted: u64,
    /// Signed heads (checkpoints): those of the request signed now, after
    /// any of the same streams an operator flush signed since the stream's
    /// last upload (earlier heads of the stream).
    pub checkpoints: Vec<SignedHead>,
    /// Heads of the request taken but not signed yet (their stream was
    /// signed moments ago): the operator's next audit flush signs them into
    /// the checkpoint history and hands the signature back in the stream's
    /// next receipt. Absent from operators that sign every head at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<AuditHead>,
}

/// `POST /v1/approvals` body: a sidecar asks approval for a statement a
/// `requireApproval` rule holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalAsk {
    /// Connection the statement was sent on.
    pub connection: String,
    /// AccessPolicy whose rule requires approval.
    pub policy: String,
    /// The rule's name.
    pub rule: String,
    /// The statement, literals redacted, with its fingerprint and sha256.
    pub command: Command,
    /// Why, if the workload said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the approval endpoints answer: an AccessRequest as the sidecar needs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalTicket {
    /// AccessRequest name.
    pub name: String,
    /// Its namespace (the requester's).
    pub namespace: String,
    /// When it expires if not decided (and when an approval stops being usable).
    pub expires_at: String,
    /// `Pending`, `Approved`, `Denied`, `Expired`, `Executed` or `NotRun`.
    pub phase: String,
    /// The recorded decisions: who, when, verdict, comment.
    #[serde(default)]
    pub decisions: Vec<RequestDecision>,
    /// For the client: `kubectl sluice approve NAME -n NS`.
    pub approve_command: String,
}

impl ApprovalTicket {
    /// The ticket of an AccessRequest.
    pub fn of(ar: &AccessRequest) -> ApprovalTicket {
        let name = ar.metadata.name.clone().unwrap_or_default();
        let namespace = ar.metadata.namespace.clone().unwrap_or_default();
        let status = ar.status.clone().unwrap_or_default();
        ApprovalTicket {
            approve_command: format!("kubectl sluice approve {name} -n {namespace}"),
            name,
            namespace,
            expires_at: ar.spec.expires_at.0.to_string(),
            phase: format!("{:?}", status.phase.unwrap_or(RequestPhase::Pending)),
            decisions: status.decisions,
        }
    }

    /// The phase, `None` when the word is not one of [`RequestPhase`]'s.
    pub fn phase(&self) -> Option<RequestPhase> {
        Some(match self.phase.as_str() {
            "Pending" => RequestPhase::Pending,
            "Approved" => RequestPhase::Approved,
            "Denied" => RequestPhase::Denied,
            "Expired" => RequestPhase::Expired,
            "Executed" => RequestPhase::Executed,
            "NotRun" => RequestPhase::NotRun,
            _ => return None,
        })
    }

    /// The users who recorded `verdict`, oldest first.
    pub fn deciders(&self, verdict: Verdict) -> Vec<String> {
        self.decisions
            .iter()
            .filter(|d| d.verdict == verdict)
            .map(|d| d.user.clone())
            .collect()
    }
}
