//! The audit writer: session start/end, each statement's decision (written
//! before the statement is forwarded) and its result, as hash-chained JSON
//! lines (DESIGN §7) on stdout and, when asked, in a file.
//!
//! Write-ahead: [`AuditLog::statement`] returns an error when a sink cannot
//! take the event, and the caller then refuses the statement. Commands are
//! recorded with literals redacted; no credential and no result value is
//! ever written.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use interim::{AuditChain, AuditEvent};
use sluice_crds::Action;

use crate::enforcement::{Binding, Decided, Refusal};

/// Why an audit event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing to standard output failed.
    #[error("writing the audit event to stdout failed: {0}")]
    Stdout(#[source] io::Error),
    /// Writing to the audit file failed.
    #[error("writing the audit event to {path} failed: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The event could not be serialised.
    #[error("the audit event could not be serialised: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Who a session is, for audit records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Random session id.
    pub id: String,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub subject: String,
    /// Namespace of the identity.
    pub namespace: String,
    /// Service account of the identity.
    pub service_account: String,
    /// Pod, when known.
    pub pod: Option<String>,
    /// The Connection.
    pub connection: String,
    /// The client's address (loopback in a pod).
    pub client: String,
}

impl SessionInfo {
    /// A new session of `binding` on `connection`.
    pub fn new(binding: &Binding, connection: &str, client: SocketAddr) -> Self {
        let id: u128 = rand::random();
        let identity = binding.identity();
        SessionInfo {
            id: format!("{id:032x}"),
            subject: format!("{}/{}", identity.namespace, identity.service_account),
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            pod: identity.pod.clone(),
            connection: connection.to_string(),
            client: client.to_string(),
        }
    }
}

/// The outcome of one statement (or query string).
#[derive(Debug, Clone)]
pub struct ResultRecord {
    /// Rows returned or affected.
    pub rows: u64,
    /// Values masked.
    pub masked: u64,
    /// Time from forwarding to the end of the result.
    pub duration: Duration,
    /// SQLSTATE of the error, if it failed.
    pub error: Option<String>,
}

/// Where audit lines go.
pub struct AuditLog {
    inner: Mutex<Inner>,
    stdout: bool,
}

struct Inner {
    chain: AuditChain,
    file: Option<(PathBuf, BufWriter<File>)>,
}

impl AuditLog {
    /// An audit log on stdout (when `stdout`) and in `file` (appended) when given.
    /// `stream` names the chain (e.g. the sidecar's identity and start time).
    pub fn open(stream: &str, stdout: bool, file: Option<&Path>) -> Result<Self, AuditError> {
        let file = match file {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::File {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some((path.to_path_buf(), BufWriter::new(f)))
            }
            None => None,
        };
        Ok(AuditLog {
            inner: Mutex::new(Inner {
                chain: AuditChain::new(stream),
                file,
            }),
            stdout,
        })
    }

    fn write(&self, event: AuditEvent) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let event = inner.chain.append(event);
        let mut line = serde_json::to_vec(&event).map_err(AuditError::Encode)?;
        line.push(b'\n');
        if self.stdout {
            let mut out = io::stdout().lock();
            out.write_all(&line)
                .and_then(|()| out.flush())
                .map_err(AuditError::Stdout)?;
        }
        if let Some((path, f)) = inner.file.as_mut() {
            f.write_all(&line)
                .and_then(|()| f.flush())
                .map_err(|source| AuditError::File {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn event(&self, s: &SessionInfo, kind: &str) -> AuditEvent {
        let mut e = AuditEvent::new(kind);
        e.session = Some(s.id.clone());
        e.subject = Some(s.subject.clone());
        e.namespace = Some(s.namespace.clone());
        e.pod = s.pod.clone();
        e.connection = Some(s.connection.clone());
        e
    }

    /// A session was refused (not bound, upstream unreachable).
    pub fn session_refused(&self, s: &SessionInfo, reason: &str) -> Result<(), AuditError> {
        let mut e = self.event(s, "session.refused");
        e.outcome = Some("refused".into());
        e.reason = Some(reason.to_string());
        self.write(e)
    }

    /// A session started.
    pub fn session_start(
        &self,
        s: &SessionInfo,
        tls: bool,
        channel_binding: bool,
    ) -> Result<(), AuditError> {
        let mut e = self.event(s, "session.start");
        e.outcome = Some("opened".into());
        e.reason = Some(format!(
            "client {}, upstream tls {}, scram channel binding {}",
            s.client,
            if tls { "on" } else { "off" },
            if channel_binding { "on" } else { "off" }
        ));
        self.write(e)
    }

    /// A session ended.
    pub fn session_end(
        &self,
        s: &SessionInfo,
        duration: Duration,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let mut e = self.event(s, "session.end");
        e.duration_ms = Some(duration.as_secs_f64() * 1000.0);
        e.outcome = Some(if error.is_some() { "error" } else { "closed" }.into());
        e.reason = error.map(String::from);
        self.write(e)
    }

    /// A statement's decision, before it is forwarded (or instead, when refused).
    pub fn statement(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        protocol: &str,
        refusal: Option<&Refusal>,
    ) -> Result<(), AuditError> {
        let d = decided.summary();
        let mut e = self.event(s, "statement");
        e.command = Some(decided.redacted().to_string());
        e.fingerprint = Some(decided.fingerprint().to_string());
        e.protocol = Some(protocol.to_string());
        e.action = Some(d.action);
        e.enforced = Some(if refusal.is_some() && d.enforced == Action::Allow {
            Action::Deny
        } else {
            d.enforced
        });
        e.policy = d.policy;
        e.rule = d.rule;
        e.dry_run = d.dry_run;
        e.reason = Some(match refusal {
            Some(r) if d.enforced == Action::Allow => r.message.clone(),
            _ => d.reason,
        });
        e.outcome = Some(
            if refusal.is_some() {
                "refused"
            } else {
                "forwarded"
            }
            .into(),
        );
        self.write(e)
    }

    /// A statement's result.
    pub fn result(
        &self,
        s: &SessionInfo,
        decided: &Decided,
        r: ResultRecord,
    ) -> Result<(), AuditError> {
        let mut e = self.event(s, "result");
        e.fingerprint = Some(decided.fingerprint().to_string());
        e.rows = Some(r.rows);
        e.masked = Some(r.masked);
        e.duration_ms = Some(r.duration.as_secs_f64() * 1000.0);
        e.outcome = Some(if r.error.is_some() { "error" } else { "ok" }.into());
        e.error = r.error;
        self.write(e)
    }
}

/// Stand-in for the engine's audit types until `sluice_policy::audit` lands.
mod interim {
    use serde::Serialize;
    use sha2::{Digest, Sha256};
    use sluice_crds::Action;

    #[derive(Debug, Clone, Serialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct AuditEvent {
        pub v: u32,
        pub stream: String,
        pub seq: u64,
        pub time: String,
        pub kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub session: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub subject: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub pod: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub connection: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub protocol: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub command: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub fingerprint: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub action: Option<Action>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub enforced: Option<Action>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub policy: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub rule: Option<String>,
        pub dry_run: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub outcome: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub rows: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub masked: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub duration_ms: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        pub prev: String,
        pub hash: String,
    }

    impl AuditEvent {
        pub fn new(kind: &str) -> Self {
            AuditEvent {
                v: 1,
                kind: kind.into(),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ..Default::default()
            }
        }
    }

    pub struct AuditChain {
        stream: String,
        seq: u64,
        prev: String,
    }

    impl AuditChain {
        pub fn new(stream: &str) -> Self {
            AuditChain {
                stream: stream.into(),
                seq: 0,
                prev: "0".repeat(64),
            }
        }

        pub fn append(&mut self, mut e: AuditEvent) -> AuditEvent {
            self.seq += 1;
            e.stream = self.stream.clone();
            e.seq = self.seq;
            e.prev = self.prev.clone();
            e.hash = String::new();
            let body = serde_json::to_vec(&e).unwrap_or_default();
            let mut h = Sha256::new();
            h.update(self.prev.as_bytes());
            h.update(&body);
            e.hash = hex(&h.finalize());
            self.prev = e.hash.clone();
            e
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
