//! `Connection`: a downstream target and how to reach it. Holds no secret itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{Conditions, SecretKeyRef, SecretRef};

/// A downstream target (a PostgreSQL or MySQL database, or an HTTP API) that
/// workloads reach through the Sluice sidecar, and where its credentials live.
/// The credentials stay in the referenced Secret; the workload never sees them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    shortname = "conn",
    category = "sluice",
    status = "ConnectionStatus",
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.upstream.host"}"#,
    printcolumn = r#"{"name":"Base URL","type":"string","jsonPath":".spec.upstream.baseURL","priority":1}"#,
    printcolumn = r#"{"name":"Listen","type":"integer","jsonPath":".spec.listen.port"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.spec.protocol == 'http' || has(self.spec.upstream.host)").message("spec.upstream.host is required for postgres and mysql connections"),
    validation = Rule::new("self.spec.protocol != 'http' || has(self.spec.upstream.baseURL)").message("spec.upstream.baseURL is required for http connections"),
    validation = Rule::new("self.spec.protocol == 'http' || !has(self.spec.upstream.baseURL)").message("spec.upstream.baseURL is only valid for http connections"),
    validation = Rule::new("self.spec.protocol != 'http' || (!has(self.spec.upstream.host) && !has(self.spec.upstream.database))").message("http connections take spec.upstream.baseURL, not host or database"),
    validation = Rule::new("self.spec.protocol == 'http' || !has(self.spec.credentials.headers)").message("spec.credentials.headers is only valid for http connections"),
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Wire protocol spoken to the upstream and served to the workload.
    pub protocol: Protocol,
    /// Where the upstream lives and how to reach it.
    pub upstream: Upstream,
    /// Where the sidecar reads the credentials it presents to the upstream.
    pub credentials: Credentials,
    /// Where the sidecar serves this connection inside the pod.
    pub listen: Listen,
    /// What the injection webhook adds to the application containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<Inject>,
    /// How the sidecar writes this Connection's audit records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<ConnectionAudit>,
}

/// How the sidecar writes a Connection's audit records.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionAudit {
    /// When the records are written (`writeAhead` or `batched`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<AuditDurability>,
}

/// `writeAhead`: a statement's (or request's) decision record is on the
/// audit sink before the statement is forwarded; nothing that ran can be
/// missing from the log. `batched`: records are queued in memory and
/// written off the client's path within 10 ms, or as soon as 256 wait
/// (the sidecar's `SLUICE_AUDIT_BATCH_MS` and `SLUICE_AUDIT_BATCH_EVENTS`);
/// when that many wait, forwarding waits for the write (a record is never
/// dropped), and SIGTERM writes the queue out; a crash (SIGKILL, OOM kill,
/// node loss) can lose the records of that window: statements that did run.
/// When omitted: the sidecar's default (`SLUICE_AUDIT_DURABILITY`, the
/// chart's `sidecar.auditDurability`), else `writeAhead`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AuditDurability {
    /// The decision record is written before the statement is forwarded.
    #[default]
    WriteAhead,
    /// Records are written within a bounded window off the client's path.
    Batched,
}

impl AuditDurability {
    /// The name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDurability::WriteAhead => "writeAhead",
            AuditDurability::Batched => "batched",
        }
    }

    /// Parses the API name (`writeAhead`, `batched`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "writeAhead" => Some(AuditDurability::WriteAhead),
            "batched" => Some(AuditDurability::Batched),
            _ => None,
        }
    }
}

/// Wire protocol of a Connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// PostgreSQL frontend/backend protocol 3.0.
    Postgres,
    /// MySQL / MariaDB client/server protocol.
    Mysql,
    /// HTTP/1.1 from the workload; HTTP/1.1 or HTTP/2 to the upstream.
    Http,
}

impl Protocol {
    /// The protocol's name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Http => "http",
        }
    }

    /// The upstream port used when `spec.upstream.port` is not set.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Postgres => 5432,
            Protocol::Mysql => 3306,
            Protocol::Http => 443,
        }
    }
}

/// The downstream target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Host name or IP address of the database server (postgres, mysql).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// TCP port of the database server. Defaults to 5432 for postgres and 3306 for mysql.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Database to connect to (postgres, mysql). The workload's own choice of
    /// database is ignored: the Connection decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub database: Option<String>,
    /// Base URL of the HTTP API (http only), e.g. `https://api.stripe.com`.
    /// Requests to the local listener are forwarded below this URL.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/\S*)?$"))]
    pub base_url: Option<String>,
    /// TLS from the sidecar to the upstream. When omitted, `verify-full` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

impl Upstream {
    /// The TLS mode in force: the one written, or `verify-full`.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map(|t| t.mode).unwrap_or_default()
    }
}

/// TLS settings towards the upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// How strictly the upstream's certificate is checked: `disable` (plain TCP),
    /// `require` (encrypted, certificate not checked), `verify-ca` (signed by a
    /// trusted CA), `verify-full` (trusted CA and matching host name).
    #[serde(default)]
    pub mode: TlsMode,
    /// A Secret holding the CA certificate (PEM) that signs the upstream's
    /// certificate. Without it the system's trust roots are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

/// A Secret key holding a PEM CA bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Name of the Secret, in the same namespace as the Connection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the PEM bundle in the Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// How the upstream's TLS certificate is checked.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum TlsMode {
    /// Plain TCP, no TLS.
    #[serde(rename = "disable")]
    Disable,
    /// TLS, but the certificate is not verified.
    #[serde(rename = "require")]
    Require,
    /// TLS, certificate chain verified against the CA; host name not checked.
    #[serde(rename = "verify-ca")]
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    #[serde(rename = "verify-full")]
    #[default]
    VerifyFull,
}

/// Where the credentials for the upstream live.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// A Secret in the same namespace. For postgres and mysql it holds the keys
    /// `username` and `password`. For http each key is a header name and its value
    /// the header value to inject (e.g. key `Authorization`, value `Bearer …`).
    pub secret_ref: SecretRef,
    /// For http: the Secret keys to inject as headers. When omitted, every key
    /// of the Secret is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Optional key of a Secret holding the keyed-hash (HMAC) secret used by the
    /// `hash` masking strategy for this connection's results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key_secret_ref: Option<SecretKeyRef>,
}

/// Where the sidecar listens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listen {
    /// The loopback (127.0.0.1) port the sidecar serves this connection on, inside the pod.
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u16,
}

/// What the injection webhook adds to the application containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inject {
    /// Name of an environment variable set in every application container to the
    /// local URL of this connection, e.g. `DATABASE_URL` =
    /// `postgres://localhost:15432/orders`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub env: String,
}

/// Observed state of a Connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Conditions: `Ready` (usable by sidecars) and `CredentialsResolved` (the
    /// Secret exists and has the keys the protocol needs).
    #[serde(default)]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Conditions,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// AccessPolicies in this namespace that name this Connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_policies: Vec<String>,
    /// Sessions currently open through sidecars, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sessions: Option<i64>,
    /// When a sidecar last reported traffic on this Connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// The latest audit chain head signed by the operator for this Connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_checkpoint: Option<AuditCheckpoint>,
}

/// A signed audit chain head (see `kubectl sluice audit verify`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditCheckpoint {
    /// Audit stream (sidecar session source) the head belongs to.
    pub stream: String,
    /// Sequence number of the last event covered.
    pub sequence: u64,
    /// Hex sha256 chain hash of that event.
    pub hash: String,
    /// Base64 signature by the operator's gateway key over stream, sequence and hash.
    pub signature: String,
    /// ID of the signing key, as published at `/v1/jwks`.
    pub key_id: String,
    /// When the operator signed it.
    pub time: Time,
}
