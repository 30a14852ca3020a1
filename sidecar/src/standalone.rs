//! Standalone mode: `sluice-sidecar standalone -f MANIFESTS --as NS/SA`.
//!
//! Reads the YAML a user would apply (Namespace, Secret, Connection,
//! AccessPolicy), compiles the policies, and serves every postgres and http
//! Connection of the identity's namespace on `127.0.0.1:spec.listen.port`. A Connection
//! no policy binds the identity to is still served, so that a client gets a
//! clear error at connect time instead of "connection refused".

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::registry::Registry;
use sluice_crds::manifests::{ManifestError, ManifestSet};
use sluice_crds::{Connection, Protocol};
use sluice_policy::engine::{CompileError, CompiledPolicy, Identity, PolicySet, SecretSource};

use zeroize::Zeroizing;

use crate::admin::{self, AdminState};
use crate::audit::{AuditError, AuditLog};
use crate::enforcement::Binding;
use crate::metrics::Metrics;
use crate::postgres::cancel::CancelRegistry;
use crate::postgres::framing;
use crate::postgres::session::ConnectionContext;
use crate::tls::{self, TlsError};
use crate::postgres::upstream::UpstreamConfig;

/// Settings of standalone mode.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// A YAML file or a folder of YAML files.
    pub manifests: PathBuf,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub identity: String,
    /// Also append audit events to this file.
    pub audit_file: Option<PathBuf>,
    /// Write audit events to stdout.
    pub audit_stdout: bool,
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub admin_addr: Option<SocketAddr>,
    /// Largest protocol message accepted.
    pub max_message_size: usize,
    /// Address the listeners bind (loopback unless told otherwise).
    pub listen_host: IpAddr,
    /// HTTP Connections: how long the upstream has to send response headers,
    /// and at most between two pieces of a body (either way).
    pub http_upstream_timeout: std::time::Duration,
    /// HTTP Connections: largest request body buffered for `jsonBody` rules.
    pub http_max_request_body: usize,
    /// HTTP Connections: offer HTTP/2 besides HTTP/1.1 to the upstream (see
    /// [`crate::http::HttpUpstream::new`]).
    pub http_upstream_http2: bool,
    /// Connection caps and timeouts (see [`crate::limits`]).
    pub limits: crate::limits::Limits,
    /// Catalog sessions per Connection and how long a lookup waits (see
    /// [`crate::postgres::catalog`]).
    pub catalog: crate::postgres::catalog::PoolSettings,
}

impl StandaloneConfig {
    /// Defaults for a manifest path and identity.
    pub fn new(manifests: PathBuf, identity: String) -> Self {
        StandaloneConfig {
            manifests,
            identity,
            audit_file: None,
            audit_stdout: true,
            admin_addr: None,
            max_message_size: framing::DEFAULT_MAX_MESSAGE_SIZE,
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_upstream_timeout: crate::http::DEFAULT_UPSTREAM_TIMEOUT,
            http_max_request_body: crate::http::DEFAULT_MAX_REQUEST_BODY,
            http_upstream_http2: true,
            limits: crate::limits::Limits::default(),
            catalog: crate::postgres::catalog::PoolSettings::default(),
        }
    }
}

/// Why standalone mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// `--as` is not `NAMESPACE/SERVICEACCOUNT`.
    #[error(
        "--as {0:?} is not NAMESPACE/SERVICEACCOUNT (lower-case DNS names, e.g. shop/report-job)"
    )]
    BadIdentity(String),
    /// The manifests could not be read.
    #[error("cannot load manifests: {0}")]
    Manifests(#[from] ManifestError),
    /// A policy does not compile.
    #[error("AccessPolicy {namespace}/{name} is invalid: {source}")]
    Policy {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The compile error.
        #[source]
        source: Box<CompileError>,
    },
    /// No postgres or http Connection in the namespace.
    #[error("no postgres or http Connection in namespace {namespace} of {path}; nothing to serve")]
    NoConnections {
        /// Namespace.
        namespace: String,
        /// The manifests.
        path: PathBuf,
    },
    /// A Connection's Secret or key is missing.
    #[error("Connection {namespace}/{connection}: {what}; add it to the manifests")]
    Credentials {
        /// Namespace.
        namespace: String,
        /// Connection.
        connection: String,
        /// What is missing.
        what: String,
    },
    /// A Connection has no upstream host.
    #[error("Connection {namespace}/{connection} has no spec.upstream.host")]
    NoHost {
        /// Namespace.
        namespace: String,
        /// Connection.
        connection: String,
    },
    /// TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The audit sink could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// An http Connection's settings are unusable.
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} for Connection {connection}: {source}")]
    Bind {
        /// Connection.
        connection: String,
        /// Address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A started sidecar: where it listens. Dropping it leaves the servers
/// running; [`Running::shutdown`] ends them on record.
pub struct Running {
    /// `(connection, address, bound)` per listener.
    pub listeners: Vec<(String, SocketAddr, bool)>,
    /// The admin address, if any.
    pub admin: Option<SocketAddr>,
    audit: Arc<AuditLog>,
    accept: Vec<tokio::task::AbortHandle>,
    admin_state: Arc<AdminState>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("listeners", &self.listeners)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Shuts down (SIGTERM, SIGINT): stops accepting, gives the open
    /// sessions `grace` to end, records the end of every session, writes
    /// the audit log out (see [`crate::shutdown`]).
    pub async fn shutdown(self, grace: std::time::Duration) -> crate::shutdown::DrainReport {
        crate::shutdown::drain(
            Some(&self.audit),
            &self.accept,
            Some(&self.admin_state),
            grace,
        )
        .await
    }

    /// The audit log's shutdown signal (see [`AuditLog::shutdown_signal`]).
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.audit.shutdown_signal()
    }
}

struct ManifestSecrets<'a> {
    set: &'a ManifestSet,
    namespace: String,
}

impl SecretSource for ManifestSecrets<'_> {
    fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        self.set
            .secret_key(&self.namespace, name, key)
            .map(<[u8]>::to_vec)
    }
}

/// Loads the manifests, binds every listener and spawns the servers.
/// Returns once everything listens; the servers run on the current runtime.
pub async fn start(cfg: StandaloneConfig) -> Result<Running, StandaloneError> {
    let identity = Identity::parse(&cfg.identity)
        .ok_or_else(|| StandaloneError::BadIdentity(cfg.identity.clone()))?;
    let set = ManifestSet::load(&cfg.manifests, &identity.namespace)?;
    for skipped in &set.skipped {
        tracing::warn!(object = %skipped, "skipped: not a kind Sluice reads");
    }
    let mut policies = Vec::new();
    // Policies name Connections of their own namespace: only those of the
    // identity's namespace can apply to the Connections served here.
    for ap in set.policies_in(&identity.namespace) {
        let namespace = ap.metadata.namespace.clone().unwrap_or_default();
        let name = ap.metadata.name.clone().unwrap_or_default();
        let secrets = ManifestSecrets {
            set: &set,
            namespace: namespace.clone(),
        };
        let compiled =
            CompiledPolicy::compile(ap, &secrets).map_err(|source| StandaloneError::Policy {
                namespace,
                name,
                source: Box::new(source),
            })?;
        policies.push(Arc::new(compiled));
    }
    // A textPattern can match literals: decisions may then differ between
    // texts that differ only in literals (see enforcement::Enforcer).
    let literal_sensitive = set.policies_in(&identity.namespace).any(|ap| {
        ap.spec
            .rules
            .iter()
            .any(|r| r.match_.text_pattern.is_some())
    });
    let connections: Vec<&Connection> = set
        .connections
        .iter()
        .filter(|c| {
            matches!(c.spec.protocol, Protocol::Postgres | Protocol::Http)
                && c.metadata.namespace.as_deref() == Some(identity.namespace.as_str())
        })
        .collect();
    if connections.is_empty() {
        return Err(StandaloneError::NoConnections {
            namespace: identity.namespace.clone(),
            path: cfg.manifests.clone(),
        });
    }

    let stream = format!(
        "sidecar:{}/{}:{}",
        identity.namespace,
        identity.service_account,
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let audit = Arc::new(AuditLog::open(
        &stream,
        cfg.audit_stdout,
        cfg.audit_file.as_deref(),
    )?);
    {
        // Result events wait for the next decision event; this bounds the wait.
        let audit = audit.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Err(e) = audit.flush() {
                    tracing::error!(error = %e, "writing pending audit events failed");
                }
            }
        });
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let buffer_budget = metrics.buffer_budget(cfg.limits.buffer_budget);
    let http_metrics = crate::http::HttpMetrics::register(&mut registry);
    let cancel = Arc::new(CancelRegistry::default());
    let mut http_servers = Vec::new();

    let mut listeners = Vec::new();
    let mut servers = Vec::new();
    for conn in connections {
        let name = conn.metadata.name.clone().unwrap_or_default();
        if conn.spec.protocol == Protocol::Http {
            let shared = HttpShared {
                audit: audit.clone(),
                metrics: metrics.clone(),
                http_metrics: http_metrics.clone(),
            };
            let ctx = http_context(&cfg, &set, conn, &identity, &policies, shared)?;
            let bound = matches!(ctx.standing, crate::http::HttpStanding::Bound { .. });
            let addr = SocketAddr::new(cfg.listen_host, conn.spec.listen.port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StandaloneError::Bind {
                    connection: name.clone(),
                    addr,
                    source,
                })?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(connection = %name, %addr, bound, "listening (http)");
            listeners.push((name, addr, bound));
            http_servers.push((listener, Arc::new(ctx)));
            continue;
        }
        let upstream = upstream_config(&set, conn, &identity.namespace, cfg.max_message_size)?;
        let hash_key = conn
            .spec
            .credentials
            .hash_key_secret_ref
            .as_ref()
            .and_then(|r| set.secret_key(&identity.namespace, &r.name, &r.key));
        let binding = Binding::new(
            &policies,
            identity.clone(),
            &name,
            hash_key,
            literal_sensitive,
        );
        for w in binding.warnings() {
            tracing::warn!(connection = %name, "{w}");
        }
        let bound = binding.is_bound();
        if bound {
            tracing::info!(connection = %name, policies = ?binding.policy_names(), "identity bound");
        } else {
            tracing::warn!(connection = %name, identity = %cfg.identity, "no AccessPolicy binds the identity to this Connection: sessions will be refused");
        }
        let addr = SocketAddr::new(cfg.listen_host, conn.spec.listen.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StandaloneError::Bind {
                connection: name.clone(),
                addr,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(connection = %name, %addr, upstream = %format!("{}:{}", upstream.host, upstream.port), tls = tls::mode_name(upstream.tls_mode), "listening");
        let ctx = Arc::new(ConnectionContext {
            name: name.clone(),
            catalog: crate::postgres::catalog::CatalogPool::new(upstream.clone(), cfg.catalog),
            upstream,
            binding,
            audit: audit.clone(),
            metrics: metrics.clone(),
            cancel: cancel.clone(),
            max_message_size: cfg.max_message_size,
            buffer_budget: buffer_budget.clone(),
            approvals: None,
        });
        listeners.push((name, addr, bound));
        servers.push((listener, ctx));
    }

    let admin_state = Arc::new(AdminState {
        registry,
        ready: std::sync::atomic::AtomicBool::new(false),
    });
    let mut admin = None;
    if let Some(addr) = cfg.admin_addr {
        let l = admin::bind(addr)
            .await
            .map_err(|source| StandaloneError::Bind {
                connection: "(admin)".into(),
                addr,
                source,
            })?;
        admin = Some(l.local_addr().unwrap_or(addr));
        tokio::spawn(admin::serve(l, admin_state.clone()));
    }
    let mut accept = Vec::new();
    // Each listener gets its share of the descriptors (see crate::limits).
    let budget = crate::limits::FdBudget::new(cfg.limits.fd_reserve);
    let count = servers.len() + http_servers.len();
    for (listener, ctx) in servers {
        let slots = crate::limits::ListenerSlots::new(&ctx.name, &cfg.limits, &budget, count);
        // The sender is dropped: standalone's context never changes.
        let context = tokio::sync::watch::channel(ctx).1;
        accept.push(
            tokio::spawn(crate::limits::serve_postgres(
                listener,
                context,
                slots,
                cfg.limits.pg_startup_timeout,
            ))
            .abort_handle(),
        );
    }
    for (listener, ctx) in http_servers {
        let slots = crate::limits::ListenerSlots::new(&ctx.name, &cfg.limits, &budget, count);
        // The sender is dropped: standalone's context never changes.
        accept.push(
            tokio::spawn(crate::http::serve(
                listener,
                tokio::sync::watch::channel(ctx).1,
                slots,
                cfg.limits.clone(),
            ))
            .abort_handle(),
        );
    }
    admin_state.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        listeners,
        admin,
        audit,
        accept,
        admin_state,
    })
}

fn upstream_config(
    set: &ManifestSet,
    conn: &Connection,
    namespace: &str,
    max_message_size: usize,
) -> Result<UpstreamConfig, StandaloneError> {
    let name = conn.metadata.name.clone().unwrap_or_default();
    let missing = |what: String| StandaloneError::Credentials {
        namespace: namespace.to_string(),
        connection: name.clone(),
        what,
    };
    let secret = &conn.spec.credentials.secret_ref.name;
    let key = |k: &str| {
        set.secret_key(namespace, secret, k)
            .ok_or_else(|| missing(format!("Secret {namespace}/{secret} has no key {k:?}")))
    };
    let username = String::from_utf8_lossy(key("username")?).into_owned();
    let password = Zeroizing::new(String::from_utf8_lossy(key("password")?).into_owned());
    let host = conn
        .spec
        .upstream
        .host
        .clone()
        .ok_or_else(|| StandaloneError::NoHost {
            namespace: namespace.to_string(),
            connection: name.clone(),
        })?;
    let ca = upstream_ca(set, namespace, conn).map_err(missing)?;
    Ok(UpstreamConfig::new(
        &name,
        &conn.spec,
        host,
        username,
        password,
        ca,
        max_message_size,
    )?)
}

/// The CA the Connection's `spec.upstream.tls.caSecretRef` names, if any;
/// `Err` says which Secret key is missing.
fn upstream_ca<'a>(
    set: &'a ManifestSet,
    namespace: &str,
    conn: &Connection,
) -> Result<Option<&'a [u8]>, String> {
    let Some(r) = conn
        .spec
        .upstream
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
    else {
        return Ok(None);
    };
    set.secret_key(namespace, &r.name, &r.key)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the CA Secret {namespace}/{} (key {:?}) named by spec.upstream.tls.caSecretRef is missing",
                r.name, r.key
            )
        })
}

/// What every http Connection shares.
struct HttpShared {
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    http_metrics: crate::http::HttpMetrics,
}

/// The context of an http Connection.
fn http_context(
    cfg: &StandaloneConfig,
    set: &ManifestSet,
    conn: &Connection,
    identity: &Identity,
    policies: &[Arc<CompiledPolicy>],
    shared: HttpShared,
) -> Result<crate::http::HttpContext, StandaloneError> {
    let namespace = identity.namespace.as_str();
    let name = conn.metadata.name.clone().unwrap_or_default();
    let missing = |what: String| StandaloneError::Credentials {
        namespace: namespace.to_string(),
        connection: name.clone(),
        what,
    };
    let base_url = conn.spec.upstream.base_url.clone().ok_or_else(|| {
        missing("spec.upstream.baseURL is not set (http Connections need it)".into())
    })?;
    let secret = &conn.spec.credentials.secret_ref.name;
    let keys: Vec<String> = match &conn.spec.credentials.headers {
        Some(headers) => headers.clone(),
        None => set
            .secrets
            .get(&(namespace.to_string(), secret.clone()))
            .map(|data| data.keys().cloned().collect())
            .ok_or_else(|| missing(format!("Secret {namespace}/{secret} is missing")))?,
    };
    let mut credentials = Vec::new();
    for k in keys {
        let v = set.secret_key(namespace, secret, &k).ok_or_else(|| {
            missing(format!(
                "Secret {namespace}/{secret} has no key {k:?} (named by spec.credentials.headers)"
            ))
        })?;
        credentials.push((k, v.to_vec()));
    }
    let ca = upstream_ca(set, namespace, conn).map_err(missing)?;
    // An https URL always verifies; `disable` only makes sense for http:// URLs.
    let mode = match conn.spec.upstream.tls_mode() {
        sluice_crds::TlsMode::Disable => sluice_crds::TlsMode::VerifyFull,
        m => m,
    };
    let tls = tls::client_config(&name, mode, ca)?
        .map(|c| (*c).clone())
        .ok_or_else(|| missing("no TLS configuration could be built".into()))?;
    let upstream = crate::http::HttpUpstream::new(
        &name,
        &base_url,
        tls,
        &credentials,
        cfg.http_upstream_timeout,
        cfg.http_upstream_http2,
    )?;
    let hash_key = conn
        .spec
        .credentials
        .hash_key_secret_ref
        .as_ref()
        .and_then(|r| set.secret_key(namespace, &r.name, &r.key));
    let policy_set = PolicySet::select(policies, identity, &name, hash_key).map(Arc::new);
    if let Some(s) = &policy_set {
        for w in s.warnings() {
            tracing::warn!(connection = %name, "{w}");
        }
    }
    let inspection = Arc::new(crate::http::inspection(set.policies_in(namespace), &name));
    let standing = match policy_set {
        Some(set) => crate::http::HttpStanding::Bound {
            set,
            inspection,
            upstream: Arc::new(upstream),
        },
        None => crate::http::HttpStanding::NotBound,
    };
    Ok(crate::http::HttpContext {
        name: name.clone(),
        identity: identity.clone(),
        standing,
        approvals: None,
        max_request_body: cfg.http_max_request_body,
        rate: Arc::new(crate::rate::RateLimit::new()),
        audit: shared.audit,
        metrics: shared.metrics,
        http_metrics: shared.http_metrics,
    })
}
