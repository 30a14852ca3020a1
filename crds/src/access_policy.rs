//! `AccessPolicy`: who may use which Connections, and what they may do there.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{Conditions, SecretKeyRef};

/// Grants subjects (service accounts, groups) access to Connections and
/// restricts what they may do there: ordered rules that allow, deny or require
/// human approval, masking of sensitive result fields, and limits.
///
/// For an identity and a Connection, every policy naming both applies. Per
/// statement each policy yields the action of its first matching rule (or its
/// defaultAction); across policies the most restrictive wins
/// (deny > requireApproval > allow). Masking of all applicable policies applies together.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    shortname = "ap",
    category = "sluice",
    status = "AccessPolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Connections","type":"string","jsonPath":".spec.connections"}"#,
    printcolumn = r#"{"name":"Default","type":"string","jsonPath":".spec.defaultAction","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Denied","type":"integer","jsonPath":".status.counters.denied","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Who this policy applies to: service accounts and groups. At least one.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<Subject>,
    /// Names of Connections in this namespace that the subjects may use. At least one.
    #[schemars(length(min = 1, max = 64), inner(length(max = 253)))]
    pub connections: Vec<String>,
    /// `enforce` blocks what the rules deny; `dryRun` decides and records every
    /// statement but never blocks (for rolling a policy out safely).
    #[serde(default)]
    pub mode: PolicyMode,
    /// Ordered rules; the first whose match fits a statement or request decides it.
    /// At most 256; rule names are unique (the API server checks it: a list keyed by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub rules: Vec<PolicyRule>,
    /// The action when no rule matches. `allow` by default: the binding grants
    /// access and rules restrict it.
    #[serde(default)]
    pub default_action: Action,
    /// What happens to a statement the SQL parser cannot classify: `deny` (default) or `allow`.
    /// Under SQL masking (column rules or detectors) such a statement is refused whatever this says.
    #[serde(default)]
    pub on_parse_error: ParseErrorAction,
    /// Masking of result fields, applied together with the masking of every other
    /// applicable policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub masking: Vec<MaskingRule>,
    /// Limits on results and statement rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Makes the subjects' sessions read-only, enforced by the database server:
    /// the sidecar opens the upstream PostgreSQL session with
    /// `default_transaction_read_only = on`, checks that the server reports it,
    /// and refuses every statement that could undo it (SET/RESET of it, RESET
    /// ALL, DISCARD, set_config, `... READ WRITE`, UPDATE pg_settings, DO, text
    /// it cannot parse). PostgreSQL then refuses every write, including writes
    /// done inside functions and `nextval`. On MySQL the upstream session
    /// gets `SET SESSION TRANSACTION READ ONLY` (and the server refuses writes
    /// and DDL); a SET of `transaction_read_only`, `READ WRITE`, `CALL`,
    /// SQL-level PREPARE/EXECUTE and unparsed text are refused. Most
    /// restrictive wins: one
    /// applicable policy in `enforce` mode with `readOnly: true` is enough.
    /// Turning it on closes live sessions that are not read-only yet; turning
    /// it off applies to new sessions. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Session recording for replay (`kubectl sluice replay`): `off` (default),
    /// `statements` (each statement with its decision, outcome and the result's
    /// column names or HTTP status), or `results` (also the values the
    /// workload received, as masked, bounded per statement and per session).
    /// Recorded results are audit events of the same chain. Across applicable
    /// policies (dryRun ones too) the most recording wins.
    #[serde(default, skip_serializing_if = "Recording::is_off")]
    pub recording: Recording,
}

/// How much of a session is recorded for replay (see `AccessPolicySpec::recording`).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Recording {
    /// Nothing beyond the audit events every session has.
    #[default]
    Off,
    /// Statements, decisions, outcomes, and result column names (SQL) or
    /// status (HTTP); no values.
    Statements,
    /// As `statements`, plus the result values as the workload received them
    /// (masked), bounded.
    Results,
}

impl Recording {
    /// Whether nothing is recorded.
    pub fn is_off(&self) -> bool {
        *self == Recording::Off
    }

    /// The level's name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Recording::Off => "off",
            Recording::Statements => "statements",
            Recording::Results => "results",
        }
    }
}

/// A service account or a group the policy applies to. Exactly one of
/// `serviceAccount` and `group` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.serviceAccount) != has(self.group)").message("a subject sets exactly one of serviceAccount and group"))]
#[x_kube(validation = Rule::new("!has(self.namespace) || has(self.serviceAccount)").message("namespace is only valid with serviceAccount"))]
pub struct Subject {
    /// Name of a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub service_account: Option<String>,
    /// Namespace of the ServiceAccount; the policy's own namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub namespace: Option<String>,
    /// A Kubernetes group, e.g. `system:serviceaccounts:ci` (every service account
    /// of namespace `ci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub group: Option<String>,
}

/// Whether a policy blocks or only records.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PolicyMode {
    /// Decisions are enforced.
    #[default]
    Enforce,
    /// Decisions are recorded as would-be decisions; every call runs.
    DryRun,
}

/// What happens to a statement or request.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// It runs.
    #[default]
    Allow,
    /// It waits for (or must be retried after) a human approval.
    RequireApproval,
    /// It is refused.
    Deny,
}

impl Action {
    /// The action's name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::RequireApproval => "requireApproval",
            Action::Deny => "deny",
        }
    }
}

/// What happens to a statement the parser cannot classify.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ParseErrorAction {
    /// Refuse it (the safe default).
    #[default]
    Deny,
    /// Let it run (the rules cannot see into it).
    Allow,
}

/// One ordered rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.approval) || self.action == 'requireApproval'").message("approval is only valid with action requireApproval"))]
#[x_kube(validation = Rule::new("self.action != 'requireApproval' || has(self.approval)").message("action requireApproval needs approval.approvers"))]
pub struct PolicyRule {
    /// Name of the rule, unique in the policy; named in denials and audit events.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// What the rule matches. Every field given must match (AND); within a list,
    /// any element may match (OR). Required and never empty: a rule that
    /// matches everything says so with `any: true`.
    #[serde(rename = "match")]
    pub match_: RuleMatch,
    /// What happens to a matching statement or request.
    pub action: Action,
    /// Who approves, for how long, and how (only with `requireApproval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// What a rule matches. SQL fields apply to postgres and mysql Connections,
/// HTTP fields to http Connections; a rule with fields of the other kind does
/// not match. At least one field: an empty match (e.g. after the API server
/// pruned a misspelt field) is refused, never read as "everything".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "x-kubernetes-validations" = [{
    "rule": "(has(self.any) && self.any) || (has(self.statements) && size(self.statements) > 0) || (has(self.tables) && size(self.tables) > 0) || (has(self.functions) && size(self.functions) > 0) || has(self.withoutWhere) || has(self.textPattern) || (has(self.methods) && size(self.methods) > 0) || (has(self.paths) && size(self.paths) > 0) || (has(self.query) && size(self.query) > 0) || (has(self.jsonBody) && size(self.jsonBody) > 0)",
    "message": "match is empty; name what the rule matches, or write match: {any: true} for a catch-all"
}]))]
pub struct RuleMatch {
    /// `true`: matches every statement and request (the explicit catch-all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [true]))]
    pub any: Option<bool>,
    /// SQL: statement kinds, e.g. `[drop, truncate]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<StatementKind>,
    /// SQL: table globs, optionally schema-qualified (`public.orders`,
    /// `*.password_hash`, `audit_*`). Matches when the statement references any
    /// matching table anywhere (joins, subqueries, CTEs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// SQL: function name globs (`pg_read_file`, `dblink*`, `lo_*`). Matches when
    /// any matching function is called anywhere in the statement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// SQL: when true, matches UPDATE and DELETE statements (also nested, and
    /// inside SQL-text functions and a plain EXPLAIN) whose WHERE clause does
    /// not certainly restrict the target's rows: none at all, a constant
    /// (`WHERE true`, `1 = 1`, `$1 = $1`), a subquery (`(SELECT true)`,
    /// `EXISTS (SELECT 1)`), a self-comparison (`id = id`), an OR with
    /// anything that does not restrict, a negation, LIKE, or a comparison with
    /// an unqualified name inside a subquery; and MERGE with `WHEN MATCHED THEN
    /// UPDATE/DELETE` under an ON (and clause condition) that does not
    /// restrict, or any `WHEN NOT MATCHED BY SOURCE THEN UPDATE/DELETE`.
    /// Syntax cannot see value-level tautologies (`id > -1`): pair it with
    /// `limits.maxRowsAffected`, which counts the rows the server changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_where: Option<bool>,
    /// SQL: a regular expression matched against the statement text (escape hatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub text_pattern: Option<String>,
    /// HTTP: methods, e.g. `[POST, DELETE]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// HTTP: path globs, e.g. `/v1/refunds/**`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// HTTP: query parameters that must be present, each with a value glob (`*` = any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// HTTP: predicates over the JSON request body; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_body: Vec<JsonBodyPredicate>,
}

impl RuleMatch {
    /// Whether any SQL field is set.
    pub fn has_sql_fields(&self) -> bool {
        !self.statements.is_empty()
            || !self.tables.is_empty()
            || !self.functions.is_empty()
            || self.without_where.is_some()
            || self.text_pattern.is_some()
    }

    /// Whether any HTTP field is set.
    pub fn has_http_fields(&self) -> bool {
        !self.methods.is_empty()
            || !self.paths.is_empty()
            || !self.query.is_empty()
            || !self.json_body.is_empty()
    }
}

/// A SQL statement kind.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE, SHOW and other reads.
    Select,
    /// INSERT (and REPLACE in MySQL).
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// MERGE.
    Merge,
    /// COPY (and LOAD DATA in MySQL).
    Copy,
    /// CREATE of any object.
    Create,
    /// ALTER of any object.
    Alter,
    /// DROP of any object.
    Drop,
    /// TRUNCATE.
    Truncate,
    /// GRANT.
    Grant,
    /// REVOKE.
    Revoke,
    /// SET and RESET of session settings.
    Set,
    /// CALL of a procedure.
    Call,
    /// DO (anonymous code block).
    Do,
    /// BEGIN / START TRANSACTION / SAVEPOINT.
    Begin,
    /// COMMIT / RELEASE.
    Commit,
    /// ROLLBACK (to a savepoint or of the whole transaction).
    Rollback,
    /// Anything else.
    Other,
}

impl StatementKind {
    /// The kind's name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Copy => "copy",
            StatementKind::Create => "create",
            StatementKind::Alter => "alter",
            StatementKind::Drop => "drop",
            StatementKind::Truncate => "truncate",
            StatementKind::Grant => "grant",
            StatementKind::Revoke => "revoke",
            StatementKind::Set => "set",
            StatementKind::Call => "call",
            StatementKind::Do => "do",
            StatementKind::Begin => "begin",
            StatementKind::Commit => "commit",
            StatementKind::Rollback => "rollback",
            StatementKind::Other => "other",
        }
    }
}

/// A predicate over the JSON request body. Every field given must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonBodyPredicate {
    /// JSONPath of the value, e.g. `$.amount` or `$.items[*].sku`. When it selects
    /// several values, the predicate holds if any of them satisfies it.
    #[schemars(regex(pattern = r"^\$"))]
    pub path: String,
    /// When true the value must exist; when false it must not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The value must equal this JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub equals: Option<serde_json::Value>,
    /// The value must be one of these JSON values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_list")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The value must be a string matching this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// The value must be a number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    /// The value must be a number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
}

/// Who approves a `requireApproval` rule, and how the workload waits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Kubernetes users and groups who may approve or deny. The requester itself
    /// never may.
    pub approvers: Approvers,
    /// How long a request waits for a decision before it expires, e.g. `15m`.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: String,
    /// `hold`: the statement waits for the decision. `retry`: it is refused at
    /// once with the request's name, and the same statement from the same
    /// identity runs once after approval.
    #[serde(default)]
    pub mode: ApprovalMode,
    /// How many distinct approvers must approve.
    #[serde(default = "default_min_approvals")]
    #[schemars(range(min = 1, max = 10))]
    pub min_approvals: u32,
}

fn default_timeout() -> String {
    "15m".into()
}

fn default_min_approvals() -> u32 {
    1
}

/// Users and groups allowed to decide a request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.users.size() + self.groups.size() > 0").message("approvers needs at least one user or group"))]
pub struct Approvers {
    /// Kubernetes user names, e.g. `alice@example.com`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub users: Vec<String>,
    /// Kubernetes groups, e.g. `dba`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub groups: Vec<String>,
}

/// How a workload waits for an approval.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ApprovalMode {
    /// The statement waits until it is decided or expires.
    #[default]
    Hold,
    /// The statement is refused with the request name; retrying it after approval runs it once.
    Retry,
}

/// One masking rule: what to mask and how.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.columns.size() + self.jsonPaths.size() + self.detectors.size() > 0").message("a masking rule needs columns, jsonPaths or detectors"))]
#[x_kube(validation = Rule::new("self.strategy != 'fixed' || has(self.value)").message("strategy fixed needs value"))]
#[x_kube(validation = Rule::new("!has(self.value) || self.strategy == 'fixed'").message("value is only valid with strategy fixed"))]
#[x_kube(validation = Rule::new("!has(self.keep) || self.strategy == 'partial'").message("keep is only valid with strategy partial"))]
pub struct MaskingRule {
    /// SQL: `table.column` globs (`customers.ssn`, `*.password_hash`), optionally
    /// schema-qualified. Any result column derived from a matching column
    /// (aliases, expressions, aggregates, row_to_json, …) is masked as a whole.
    #[serde(default)]
    #[schemars(length(max = 128), inner(length(max = 512)))]
    pub columns: Vec<String>,
    /// HTTP: JSONPaths into JSON responses, e.g. `$.customer.email`, `$.data[*].card.number`.
    #[serde(default)]
    #[schemars(length(max = 128), inner(length(max = 512)))]
    pub json_paths: Vec<String>,
    /// Detectors run on every text value of a result (SQL) or response (HTTP).
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub detectors: Vec<Detector>,
    /// How matching values are replaced.
    #[serde(default)]
    pub strategy: MaskStrategy,
    /// For `partial`: how many trailing characters stay visible (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub keep: Option<u32>,
    /// For `fixed`: the replacement string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For `hash`: the Secret key holding the HMAC key. When omitted the
    /// Connection's `credentials.hashKeySecretRef` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
}

/// A detector of sensitive values in free text.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Detector {
    /// Payment card numbers (13–19 digits, spaces or dashes allowed, Luhn-checked).
    CreditCard,
    /// US social security numbers (AAA-GG-SSSS, valid ranges).
    Ssn,
    /// E-mail addresses.
    Email,
    /// Phone numbers (E.164 and common national formats).
    Phone,
    /// International bank account numbers (mod-97 checked).
    Iban,
    /// JSON Web Tokens.
    Jwt,
    /// AWS access key IDs.
    AwsKey,
    /// PEM private keys.
    PrivateKey,
}

/// How a masked value is replaced.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum MaskStrategy {
    /// Replaced by a fixed marker that reveals nothing.
    #[default]
    Redact,
    /// Everything but the last `keep` characters hidden.
    Partial,
    /// Replaced by a keyed HMAC-SHA256, so equal values stay equal (joins work).
    Hash,
    /// Replaced by `value`.
    Fixed,
}

/// Limits on results and statement rate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most rows one result may return to the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_rows: Option<u64>,
    /// What happens past `maxRows`: `truncate` ends the result there with a
    /// notice; `refuse` fails the statement with an error.
    #[serde(default)]
    pub on_max_rows: MaxRowsAction,
    /// Most statements (or requests) per second one identity may send on one
    /// Connection: one token bucket shared by all the sessions of the
    /// identity's sidecar, holding one second's worth; a policy edit does not
    /// refill it. Each pod's sidecar enforces its own bucket, so a Deployment
    /// of R replicas may send up to R times this rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub statements_per_second: Option<u32>,
    /// Most rows one write statement may change, as the server counts them
    /// (the command tag of INSERT, UPDATE, DELETE, MERGE, COPY FROM and of
    /// SQL `EXECUTE` of a prepared write). The sidecar runs such a statement
    /// inside a transaction (autocommit) or savepoint (inside the client's
    /// transaction) it controls, holds its answer (RETURNING rows included),
    /// and rolls it back with an error (SQLSTATE 54000) when the count is
    /// over the limit. Cost: one more round trip to the server per write,
    /// and writes are no longer pipelined with what follows them. Under this
    /// limit a write must not share its query string (or extended-protocol
    /// group) with transaction control, a COPY FROM must come alone, a
    /// data-modifying `WITH` is refused (the server does not report how many
    /// rows it changed), and writes done inside functions, procedures,
    /// triggers and DO blocks are not counted (use `readOnly` to stop those).
    /// On MySQL the count is the OK packet's affected rows (INSERT, REPLACE,
    /// UPDATE, DELETE, prepared ones at EXECUTE), and a write naming a table
    /// that is not InnoDB (a rollback could not undo it) is refused. Most
    /// restrictive wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_rows_affected: Option<u64>,
}

/// What happens to a result past `maxRows`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum MaxRowsAction {
    /// Rows past the limit are dropped and the client is told with a notice.
    #[default]
    Truncate,
    /// The statement fails with an error once the limit is passed.
    Refuse,
}

/// Observed state of an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// Conditions: `Ready` (compiled and served to sidecars) and `Invalid` (a
    /// field is wrong; the reason names it, e.g. `UnknownConnection`, `InvalidPattern`).
    #[serde(default)]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Conditions,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The subjects as resolved, e.g. `serviceaccount:shop/report-job`, `group:system:serviceaccounts:ci`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Decision counters reported by sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<PolicyCounters>,
    /// The last few denials, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_denials: Vec<RecentDenial>,
}

/// Decision counters of a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCounters {
    /// Statements and requests allowed.
    #[serde(default)]
    pub allowed: u64,
    /// Statements and requests denied.
    #[serde(default)]
    pub denied: u64,
    /// Values masked.
    #[serde(default)]
    pub masked: u64,
    /// Approvals requested.
    #[serde(default)]
    pub approvals_requested: u64,
    /// Approvals granted.
    #[serde(default)]
    pub approvals_granted: u64,
    /// Approvals denied or expired.
    #[serde(default)]
    pub approvals_denied: u64,
}

/// A recent denial, short.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentDenial {
    /// When it was denied.
    pub time: Time,
    /// Who sent it, e.g. `serviceaccount:shop/report-job`.
    pub subject: String,
    /// The Connection it was sent on.
    pub connection: String,
    /// The rule that denied it (empty for a default or parse-error denial).
    #[serde(default)]
    pub rule: String,
    /// The command, literals redacted, shortened.
    #[serde(default)]
    pub command: String,
}

/// Schema of a list of arbitrary JSON values, in the structural form the API server accepts.
fn any_json_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "nullable": true,
        "description": "The value must be one of these JSON values.",
        "items": {"x-kubernetes-preserve-unknown-fields": true}
    })
}
