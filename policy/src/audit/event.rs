//! The audit event (schema v1) and its parts.

use serde::{Deserialize, Serialize};
use sluice_crds::{Action, RequestPhase};

/// What an event records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AuditKind {
    /// A workload session was opened.
    SessionStart,
    /// A session ended.
    SessionEnd,
    /// A statement or request was decided (written before it is forwarded).
    Statement,
    /// The outcome of a forwarded statement or request.
    Result,
    /// Values of a result were masked.
    Mask,
    /// A statement or request was refused.
    Denial,
    /// An approval was requested or decided.
    Approval,
    /// The audit sink failed and recovered: events were written late (see
    /// [`AuditOutage`]). Chained like any event, so a recorded outage is
    /// told apart from an edit.
    Outage,
    /// The sidecar put a version of an AccessPolicy in force, or took one
    /// away (see [`AuditPolicy`]): the policies' change history, chained
    /// with the decisions taken under them.
    Policy,
}

/// Who sent the call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditIdentity {
    /// The identity's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The workload's namespace.
    pub namespace: String,
    /// The pod the call came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Its service account.
    pub service_account: String,
}

/// The statement or request, as far as the audit trail may show it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditCommand {
    /// Fingerprint of the normalised command (equal for calls differing only in literals).
    pub fingerprint: String,
    /// Statement kind (`select`, `drop`, …) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The command with its literals redacted (e.g. `SELECT * FROM t WHERE id = ?`,
    /// `POST /v1/refunds`).
    pub text: String,
}

/// How the call was decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditDecision {
    /// The action taken (or, in dry run, that would have been taken).
    pub action: Action,
    /// Whether the deciding policy is in dry run (the call ran whatever `action` says).
    #[serde(default)]
    pub dry_run: bool,
    /// The policy that decided; absent when no policy applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Why, in words (e.g. `default action`, `statement could not be parsed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule that decided; absent for a default action or a parse-error decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// What a forwarded call produced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditOutcome {
    /// Time from forwarding to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The upstream error, with literals redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Values masked in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<u64>,
    /// The values of `masked`, by the masking rule that masked them (absent
    /// in events written before it was added, and when nothing was masked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<AuditMaskCount>,
    /// What the workload received, when its policy records the session
    /// (`spec.recording`): never more than it received, so masked values
    /// are recorded masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<AuditRecorded>,
    /// Rows returned or affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// Values one masking rule masked in a result: the rule is the entry
/// `index` of the AccessPolicy `policy`'s `spec.masking` (its detectors
/// included). Both are absent for values Sluice masked on its own (a row
/// wider than its description, masking rules that could not be combined).
///
/// Fields are declared sorted by their JSON names (see `write_canonical`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditMaskCount {
    /// Values masked.
    pub count: u64,
    /// The rule's index in the policy's `spec.masking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The AccessPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// A result as the workload received it, recorded for replay. Bounded
/// (see the sidecar's `recording` module): `truncated` says what was left out.
///
/// Fields are declared sorted by their JSON names (see `write_canonical`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecorded {
    /// HTTP: the response body as the workload received it (masked), as
    /// UTF-8 text (`results` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The recording level of the session (`statements` or `results`).
    pub level: sluice_crds::Recording,
    /// SQL: why the statement's changes were not kept although the server
    /// ran it (a write `maxRowsAffected` rolled back, a failed COMMIT);
    /// the rows it returned are then not recorded. Absent when it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// SQL: the result sets, in order (a query string may hold several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<AuditRecordedSet>,
    /// HTTP: the response status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why part of the result is missing (a bound was reached); absent when
    /// everything the workload received is here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// One SQL result set, as the workload received it.
///
/// Fields are declared sorted by their JSON names (see `write_canonical`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecordedSet {
    /// The column names (from the RowDescription the workload received).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The rows' values (`null` for SQL NULL), `results` only. A value that
    /// is not UTF-8 (binary format) is written as `\x` and hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Vec<Option<String>>>,
}

/// An approval step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditApproval {
    /// The approver's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who decided, as authenticated by the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Its phase after this step (`Pending` when it was just requested).
    pub phase: RequestPhase,
    /// Name of the AccessRequest.
    pub request: String,
}

/// A period in which the audit sink refused writes (a full disk, a closed
/// pipe), recorded when it took writes again. No event of the chain is lost:
/// the sidecar keeps events it could not write and writes them, in order,
/// when the sink recovers. A decision whose record could not be written was
/// refused (write-ahead), so the `statement`, `sessionStart` and `approval`
/// events from `fromSeq` to `toSeq` record calls that did not run; the
/// other events there record what happened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditOutage {
    /// Events that were never chained because the backlog kept for the
    /// retry was full (bounded memory); 0 when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The last write error.
    pub error: String,
    /// How many writes failed.
    pub failed_writes: u64,
    /// The first event whose first write failed.
    pub from_seq: u64,
    /// When the first write failed (RFC 3339).
    pub since: String,
    /// The last event whose first write failed.
    pub to_seq: u64,
}

/// A version of an AccessPolicy a stream put in force (events of type
/// `policy`): written when a bundle brings a policy, or a version of it,
/// the stream did not have in force, and when one leaves the bundle.
///
/// Fields are declared sorted by their JSON names (see `write_canonical`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditPolicy {
    /// sha256 (hex) of the canonical JSON of the spec (see
    /// [`canonical_json`](super::canonical_json)), the bytes `specBase64`
    /// holds: the version's name, equal for the same spec read from the
    /// cluster. Absent when removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Its `metadata.generation`, when the bundle carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// It no longer applies to the stream (deleted, or it no longer binds
    /// the identity).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// The revision of the bundle that brought the change.
    pub revision: String,
    /// Its spec as put in force, as canonical JSON in base64 (an
    /// AccessPolicy holds no secret value: a masking hash key is named by
    /// its Secret). Encoded so that a search of the stream for a rule's
    /// name finds the decisions, not the policy's versions. Absent when
    /// removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_base64: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One audit event, as written (one JSON line).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Schema version ([`SCHEMA_VERSION`](super::SCHEMA_VERSION)).
    pub v: u32,
    /// Position in the stream, from 1.
    pub seq: u64,
    /// When it happened, RFC 3339 (given by the caller).
    pub time: String,
    /// What it records.
    #[serde(rename = "type")]
    pub kind: AuditKind,
    /// The chain it belongs to (e.g. sidecar pod and boot id).
    pub stream: String,
    /// The workload session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AuditIdentity>,
    /// The Connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The statement or request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<AuditCommand>,
    /// The decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<AuditDecision>,
    /// The outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AuditOutcome>,
    /// The approval step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<AuditApproval>,
    /// An outage of the audit sink (events of type `outage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<AuditOutage>,
    /// A policy version put in force (events of type `policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<AuditPolicy>,
    /// Hash of the previous event of the stream ([`GENESIS`](super::GENESIS) for the first).
    pub prev: String,
    /// This event's chain hash.
    pub hash: String,
}

/// The content of an event, before the chain numbers and hashes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEventDraft {
    /// When it happened, RFC 3339.
    pub time: String,
    /// What it records.
    pub kind: AuditKind,
    /// The workload session.
    pub session: Option<String>,
    /// Who.
    pub identity: Option<AuditIdentity>,
    /// The Connection.
    pub connection: Option<String>,
    /// The statement or request.
    pub command: Option<AuditCommand>,
    /// The decision.
    pub decision: Option<AuditDecision>,
    /// The outcome.
    pub outcome: Option<AuditOutcome>,
    /// The approval step.
    pub approval: Option<AuditApproval>,
}

impl AuditEventDraft {
    /// A draft with only a time and a kind.
    pub fn new(time: impl Into<String>, kind: AuditKind) -> Self {
        AuditEventDraft {
            time: time.into(),
            kind,
            session: None,
            identity: None,
            connection: None,
            command: None,
            decision: None,
            outcome: None,
            approval: None,
        }
    }
}
