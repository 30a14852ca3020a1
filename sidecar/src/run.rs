//! Run mode: `sluice-sidecar run`, in a pod, with policies and credentials
//! from the Sluice operator (DESIGN §3, §4).
//!
//! The projected service-account token (re-read at every exchange: the
//! kubelet rotates it) is exchanged for a gateway token, which fetches the
//! identity's bundle. Every postgres and http Connection of the bundle is
//! served on `127.0.0.1:spec.listen.port` (http: [`crate::http::bundle`]).
//! The bundle is long-polled; a change reaches
//! live sessions at their next statement through a watch of each
//! Connection's [`Standing`], and new sessions through a watch of its
//! [`ConnectionContext`] (credentials, upstream).
//!
//! Fail closed: until the first bundle no listener exists; a bundle is used
//! until its own expiry and never after; once it expired, or the operator
//! refused the identity (pod or service account deleted), every session and
//! statement is refused with a message that says why.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use prometheus_client::registry::Registry;
use sluice_crds::{ConnectionSpec, Protocol};
use sluice_policy::audit::ChainHead;
use sluice_policy::engine::{CompileError, CompiledPolicy, Identity, SecretSource};
use sluice_policy::gateway::{AuditHead, Bundle, BundleConnection, BundleSecretKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

use crate::admin::{self, AdminState};
use crate::audit::{AuditError, AuditLog, Forwarded};
use crate::bundle_client::{BundlePoll, GatewayClient, GatewayError};
use crate::enforcement::{Binding, Standing};
use crate::http::bundle::HttpConnections;
use crate::metrics::Metrics;
use crate::postgres::cancel::CancelRegistry;
use crate::postgres::catalog::CatalogPool;
use crate::postgres::framing;
use crate::postgres::session::ConnectionContext;
use crate::tls::TlsError;
use crate::postgres::upstream::UpstreamConfig;
use crate::rate::RateLimit;

/// Settings of run mode.
#[derive(Clone)]
pub struct RunConfig {
    /// `https://HOST[:PORT]` of the operator's gateway API.
    pub gateway_url: String,
    /// The projected service-account token (audience `sluice.dev`).
    pub token_file: PathBuf,
    /// PEM of the operator's CA.
    pub ca_pem: String,
    /// Serve only these Connections (`SLUICE_CONNECTIONS`); all when `None`.
    pub connections: Option<Vec<String>>,
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub admin_addr: Option<SocketAddr>,
    /// Write audit events to stdout.
    pub audit_stdout: bool,
    /// Largest protocol message accepted.
    pub max_message_size: usize,
    /// Address the listeners bind (loopback unless told otherwise).
    pub listen_host: IpAddr,
    /// How long one bundle long-poll waits for a change.
    pub poll_wait: Duration,
    /// How long [`start`] keeps trying to get the first bundle.
    pub first_bundle_timeout: Duration,
    /// How often audit events are sent to the operator.
    pub audit_upload_every: Duration,
    /// The pod this sidecar runs in, `NAMESPACE/SERVICEACCOUNT/POD`
    /// (`SLUICE_POD_NAMESPACE`, as the injection webhook sets it, or
    /// `SLUICE_NAMESPACE`; `SLUICE_SERVICE_ACCOUNT`, `SLUICE_POD_NAME`):
    /// a bundle for anyone else is not applied.
    pub expected_identity: Option<(String, String, String)>,
    /// HTTP Connections: how long the upstream has to answer with headers,
    /// and at most between two pieces of a body (`SLUICE_HTTP_TIMEOUT`, seconds).
    pub http_upstream_timeout: Duration,
    /// HTTP Connections: largest request body buffered to decide `jsonBody`
    /// rules (`SLUICE_HTTP_MAX_BODY`, bytes).
    pub http_max_request_body: usize,
    /// HTTP Connections: offer HTTP/2 to the upstream as well as HTTP/1.1
    /// (`SLUICE_HTTP_UPSTREAM_HTTP1_ONLY=true` turns it off).
    pub http_upstream_http2: bool,
    /// How long sessions get to end after SIGTERM (`SLUICE_SHUTDOWN_GRACE`,
    /// seconds; see [`crate::shutdown`]).
    pub shutdown_grace: Duration,
    /// Connection caps and timeouts (`SLUICE_PG_STARTUP_TIMEOUT`,
    /// `SLUICE_MAX_CONNECTIONS`, `SLUICE_FD_RESERVE`, … see [`crate::limits`]).
    pub limits: crate::limits::Limits,
    /// Catalog sessions per Connection and how long a lookup waits
    /// (`SLUICE_CATALOG_SESSIONS`, `SLUICE_CATALOG_WAIT`; see
    /// [`crate::postgres::catalog`]).
    pub catalog: crate::postgres::catalog::PoolSettings,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("gateway_url", &self.gateway_url)
            .field("token_file", &self.token_file)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl RunConfig {
    /// Defaults for a gateway, a token file and a CA.
    pub fn new(gateway_url: String, token_file: PathBuf, ca_pem: String) -> Self {
        RunConfig {
            gateway_url,
            token_file,
            ca_pem,
            connections: None,
            admin_addr: None,
            audit_stdout: true,
            max_message_size: framing::DEFAULT_MAX_MESSAGE_SIZE,
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            poll_wait: Duration::from_secs(30),
            first_bundle_timeout: Duration::from_secs(300),
            audit_upload_every: Duration::from_secs(2),
            expected_identity: None,
            http_upstream_timeout: crate::http::DEFAULT_UPSTREAM_TIMEOUT,
            http_max_request_body: crate::http::DEFAULT_MAX_REQUEST_BODY,
            http_upstream_http2: true,
            shutdown_grace: crate::shutdown::DEFAULT_GRACE,
            limits: crate::limits::Limits::default(),
            catalog: crate::postgres::catalog::PoolSettings::default(),
        }
    }

    /// Settings from the environment the injection webhook sets:
    /// `SLUICE_GATEWAY_URL`, `SLUICE_TOKEN_FILE`, `SLUICE_CA_PEM` or
    /// `SLUICE_CA_FILE`, and optionally `SLUICE_CONNECTIONS` (comma-separated)
    /// and `SLUICE_ADMIN_ADDR`; the HTTP settings `SLUICE_HTTP_TIMEOUT`
    /// (seconds), `SLUICE_HTTP_MAX_BODY` (bytes) and
    /// `SLUICE_HTTP_UPSTREAM_HTTP1_ONLY` (`true`/`false`), which the operator
    /// sets from its settings file (`sidecar.http`).
    pub fn from_env() -> Result<Self, RunError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`RunConfig::from_env`] with the variables looked up by `lookup`.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RunError> {
        let var = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let gateway_url = var(env::GATEWAY_URL).ok_or(RunError::MissingEnv(env::GATEWAY_URL))?;
        let token_file = var(env::TOKEN_FILE).ok_or(RunError::MissingEnv(env::TOKEN_FILE))?;
        let ca_pem = match (var(env::CA_PEM), var(env::CA_FILE)) {
            (Some(pem), _) => pem,
            (None, Some(path)) => {
                std::fs::read_to_string(&path).map_err(|source| RunError::ReadFile {
                    what: "the operator CA (SLUICE_CA_FILE)",
                    path: PathBuf::from(path),
                    source,
                })?
            }
            (None, None) => return Err(RunError::MissingEnv("SLUICE_CA_PEM or SLUICE_CA_FILE")),
        };
        let mut cfg = RunConfig::new(gateway_url, PathBuf::from(token_file), ca_pem);
        cfg.connections = var(env::CONNECTIONS).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        });
        if let (Some(ns), Some(sa), Some(pod)) = (
            var(env::POD_NAMESPACE).or_else(|| var(env::NAMESPACE)),
            var(env::SERVICE_ACCOUNT),
            var(env::POD_NAME),
        ) {
            cfg.expected_identity = Some((ns, sa, pod));
        }
        if let Some(addr) = var(env::ADMIN_ADDR) {
            cfg.admin_addr = Some(
                addr.parse()
                    .map_err(|_| RunError::BadAdminAddr(addr.clone()))?,
            );
        }
        let bad = |name: &'static str, value: &str, why: &'static str| RunError::BadEnv {
            name,
            value: value.to_string(),
            why,
        };
        if let Some(v) = var(env::HTTP_TIMEOUT) {
            cfg.http_upstream_timeout = v
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(crate::http::upstream_timeout)
                .ok_or_else(|| {
                    bad(
                        env::HTTP_TIMEOUT,
                        &v,
                        "seconds, more than 0 and at most 86400",
                    )
                })?;
        }
        if let Some(v) = var(env::HTTP_MAX_BODY) {
            cfg.http_max_request_body = v
                .trim()
                .parse::<usize>()
                .map_err(|_| bad(env::HTTP_MAX_BODY, &v, "a number of bytes"))?;
        }
        cfg.limits = crate::limits::Limits::from_vars(&lookup)
            .map_err(|(name, value, why)| bad(name, &value, why))?;
        cfg.catalog = crate::postgres::catalog::PoolSettings::from_vars(&lookup)
            .map_err(|(name, value, why)| bad(name, &value, why))?;
        if let Some(v) = var(crate::shutdown::GRACE_ENV) {
            cfg.shutdown_grace = v
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(crate::shutdown::grace)
                .ok_or_else(|| bad(crate::shutdown::GRACE_ENV, &v, "seconds, from 0 to 3600"))?;
        }
        if let Some(v) = var(env::HTTP_UPSTREAM_HTTP1_ONLY) {
            cfg.http_upstream_http2 = match v.trim() {
                "true" => false,
                "false" => true,
                _ => {
                    return Err(bad(env::HTTP_UPSTREAM_HTTP1_ONLY, &v, "true or false"));
                }
            };
        }
        Ok(cfg)
    }
}

/// The environment variables of run mode (the operator's injection webhook
/// sets them; one list shared with it).
pub use sluice_policy::gateway::env;

/// Why run mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A required environment variable is not set.
    #[error(
        "{0} is not set; the Sluice injection webhook sets it (run `sluice-sidecar standalone` outside a cluster)"
    )]
    MissingEnv(&'static str),
    /// A file could not be read.
    #[error("cannot read {what} at {path}: {source}")]
    ReadFile {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `SLUICE_ADMIN_ADDR` is not an address.
    #[error("SLUICE_ADMIN_ADDR {0:?} is not HOST:PORT, e.g. 127.0.0.1:9090")]
    BadAdminAddr(String),
    /// An optional setting has a value the sidecar cannot use.
    #[error("{name}={value:?} is not valid: expected {why}")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        why: &'static str,
    },
    /// The gateway client could not be built.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// No bundle arrived in time.
    #[error("no policy bundle from the Sluice operator within {after:?}: {last}")]
    NoBundle {
        /// How long it tried.
        after: Duration,
        /// The last error.
        last: String,
    },
    /// The audit sink could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
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

/// Why a bundle could not be applied (the previous one stays in force).
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("AccessPolicy {namespace}/{name} of the bundle does not compile: {source}")]
    Policy {
        namespace: String,
        name: String,
        #[source]
        source: Box<CompileError>,
    },
    #[error("the bundle's expiresAt {0:?} is not an RFC 3339 time")]
    Expiry(String),
    #[error("the bundle is for {0}, not a NAMESPACE/SERVICEACCOUNT this sidecar can use")]
    Identity(String),
    #[error(
        "the bundle is for {found}, but this sidecar runs as {expected} (SLUICE_POD_NAMESPACE, SLUICE_SERVICE_ACCOUNT, SLUICE_POD_NAME); check that the token file is this pod's"
    )]
    NotOurs { found: String, expected: String },
    #[error("Connection {connection}: {what}")]
    Connection { connection: String, what: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
}

/// A started run mode.
pub struct Running {
    /// `(connection, address)` per listener opened from the first bundle.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin address, if any.
    pub admin: Option<SocketAddr>,
    revision: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
    audit: Option<Arc<AuditLog>>,
    accept: AcceptLoops,
    admin_state: Arc<AdminState>,
    grace: Duration,
}

/// The accept loops of the PostgreSQL listeners, also those a later bundle opens.
type AcceptLoops = Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>;

impl Running {
    /// Shuts down (SIGTERM, SIGINT): stops accepting, gives the open
    /// sessions the configured grace period to end, records the end of
    /// every session, writes the audit log out (see [`crate::shutdown`]).
    pub async fn shutdown(self) -> crate::shutdown::DrainReport {
        let accept = self
            .accept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        crate::shutdown::drain(
            self.audit.as_ref(),
            &accept,
            Some(&self.admin_state),
            self.grace,
        )
        .await
    }

    /// The revision of the bundle in force; `None` while none is (expired,
    /// or the operator refused the identity).
    pub fn bundle_revision(&self) -> watch::Receiver<Option<String>> {
        self.revision.clone()
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("listeners", &self.listeners)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Gets the first bundle, binds its listeners, and keeps the bundle fresh in
/// the background. The servers run on the current runtime until the
/// returned [`Running`] is dropped.
pub async fn start(cfg: RunConfig) -> Result<Running, RunError> {
    let client = GatewayClient::new(&cfg.gateway_url, &cfg.ca_pem)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let fd_budget = crate::limits::FdBudget::new(cfg.limits.fd_reserve);
    let http = HttpConnections::new(
        metrics.clone(),
        crate::http::HttpMetrics::register(&mut registry),
        cfg.http_upstream_timeout,
        cfg.http_max_request_body,
        cfg.http_upstream_http2,
        (cfg.limits.clone(), fd_budget.clone()),
    );
    let buffer_budget = metrics.buffer_budget(cfg.limits.buffer_budget);
    let mut runner = Runner {
        http,
        client,
        cfg: cfg.clone(),
        token: None,
        revision: None,
        expires: None,
        served: BTreeMap::new(),
        audit: None,
        metrics,
        cancel: Arc::new(CancelRegistry::default()),
        last_error: String::new(),
        tasks: Vec::new(),
        in_force: watch::Sender::new(None),
        token_out: watch::Sender::new(None),
        admin: None,
        accept: AcceptLoops::default(),
        fd_budget,
        buffer_budget,
    };
    let revision = runner.in_force.subscribe();

    // === the first bundle ===
    let deadline = Instant::now() + cfg.first_bundle_timeout;
    let mut backoff = Backoff::default();
    loop {
        match runner.poll_once().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "no policy bundle yet; retrying");
                runner.last_error = e.to_string();
            }
        }
        if Instant::now() + backoff.peek() > deadline {
            return Err(RunError::NoBundle {
                after: cfg.first_bundle_timeout,
                last: runner.last_error.clone(),
            });
        }
        tokio::time::sleep(backoff.next()).await;
    }
    let listeners = runner
        .served
        .iter()
        .map(|(name, s)| (name.clone(), s.addr))
        .chain(runner.http.listeners())
        .collect();

    let admin_state = Arc::new(AdminState {
        registry,
        ready: std::sync::atomic::AtomicBool::new(false),
    });
    let mut admin = None;
    if let Some(addr) = cfg.admin_addr {
        let l = admin::bind(addr).await.map_err(|source| RunError::Bind {
            connection: "(admin)".into(),
            addr,
            source,
        })?;
        admin = Some(l.local_addr().unwrap_or(addr));
        runner
            .tasks
            .push(tokio::spawn(admin::serve(l, admin_state.clone())));
    }
    admin_state.ready.store(true, Ordering::Relaxed);
    runner.admin = Some(admin_state.clone());
    let (audit, accept) = (runner.audit.clone(), runner.accept.clone());

    let mut tasks = std::mem::take(&mut runner.tasks);
    if let Some(audit) = runner.audit.clone() {
        tasks.push(tokio::spawn(async move {
            // Result events wait for the next decision event; this bounds the wait.
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Err(e) = audit.flush() {
                    tracing::error!(error = %e, "writing pending audit events failed");
                }
            }
        }));
    }
    tasks.push(tokio::spawn(runner.keep_fresh()));
    Ok(Running {
        listeners,
        admin,
        revision,
        tasks,
        audit,
        accept,
        admin_state,
        grace: cfg.shutdown_grace,
    })
}

/// A gateway token and when to renew it.
struct GatewayToken {
    token: Zeroizing<String>,
    refresh_at: Instant,
}

/// One served Connection.
struct Served {
    addr: SocketAddr,
    standing: watch::Sender<Standing>,
    context: watch::Sender<Arc<ConnectionContext>>,
    /// `statementsPerSecond`'s bucket: the Connection's, whatever the bundle.
    rate: Arc<RateLimit>,
    /// The Connection's catalog sessions, pointed at each bundle's upstream.
    catalog: Arc<CatalogPool>,
}

struct Runner {
    client: GatewayClient,
    cfg: RunConfig,
    token: Option<GatewayToken>,
    /// The revision of the bundle in force, `None` when there is none.
    revision: Option<String>,
    /// When the bundle in force expires.
    expires: Option<Instant>,
    served: BTreeMap<String, Served>,
    /// The http Connections served.
    http: HttpConnections,
    audit: Option<Arc<AuditLog>>,
    metrics: Arc<Metrics>,
    cancel: Arc<CancelRegistry>,
    last_error: String,
    tasks: Vec<JoinHandle<()>>,
    /// Publishes the revision in force.
    in_force: watch::Sender<Option<String>>,
    /// Publishes the gateway token (for the audit uploader).
    token_out: watch::Sender<Option<Zeroizing<String>>>,
    /// `/readyz` follows whether a bundle is in force.
    admin: Option<Arc<AdminState>>,
    /// The PostgreSQL accept loops, for a shutdown to stop.
    accept: AcceptLoops,
    /// The sessions the process's descriptors allow, shared by the listeners.
    fd_budget: crate::limits::FdBudget,
    /// The PostgreSQL sessions' buffer budget, shared by the listeners.
    buffer_budget: crate::limits::BufferBudget,
}

#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn peek(&self) -> Duration {
        Duration::from_millis(250u64 << self.0.min(5)).min(Duration::from_secs(5))
    }
    fn next(&mut self) -> Duration {
        let d = self.peek();
        self.0 = self.0.saturating_add(1);
        d
    }
}

impl Runner {
    /// Long-polls forever, applying bundles and withdrawing them at expiry.
    async fn keep_fresh(mut self) {
        let mut backoff = Backoff::default();
        loop {
            let outcome = {
                let expires = self.expires;
                let poll = self.poll_once();
                tokio::pin!(poll);
                tokio::select! {
                    r = &mut poll => Some(r),
                    _ = sleep_until_opt(expires) => None,
                }
            };
            match outcome {
                None => self.withdraw_expired(),
                Some(Ok(_)) => backoff = Backoff::default(),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "refreshing the policy bundle failed");
                    self.last_error = e.to_string();
                    let pause = backoff.next();
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = sleep_until_opt(self.expires) => self.withdraw_expired(),
                    }
                }
            }
        }
    }

    /// Renews the token when due and polls the bundle once. `Ok(true)` when
    /// a new bundle was applied.
    async fn poll_once(&mut self) -> Result<bool, PollError> {
        let token = match self.token().await {
            // A refused (re-)exchange voids the bundle at once, not at its expiry.
            Err(PollError::Gateway(e)) if e.refuses_identity() => {
                self.withdraw(&format!(
                    "the Sluice operator no longer accepts this pod's identity ({e})"
                ));
                return Err(PollError::Gateway(e));
            }
            other => other?,
        };
        let wait = match &self.token {
            Some(t) => self
                .cfg
                .poll_wait
                .min(t.refresh_at.saturating_duration_since(Instant::now()))
                .max(Duration::from_secs(1)),
            None => self.cfg.poll_wait,
        };
        let polled = self
            .client
            .bundle(&token, self.revision.as_deref(), wait)
            .await;
        match polled {
            Ok(BundlePoll::Changed(mut bundle)) => {
                let applied = self.apply(&bundle).await;
                scrub(&mut bundle);
                applied?;
                Ok(true)
            }
            Ok(BundlePoll::Unchanged(expires)) => {
                if let Some(at) = expires.as_deref().and_then(instant_of) {
                    self.expires = Some(at);
                }
                Ok(false)
            }
            Err(e) if e.refuses_identity() => {
                // The token may just have expired: exchange once more; if the
                // operator refuses the identity itself, withdraw at once.
                self.token = None;
                match self.token().await {
                    Ok(_) => Err(PollError::Gateway(e)),
                    Err(PollError::Gateway(again)) if again.refuses_identity() => {
                        self.withdraw(&format!(
                            "the Sluice operator no longer accepts this pod's identity ({again})"
                        ));
                        Err(PollError::Gateway(again))
                    }
                    Err(other) => Err(other),
                }
            }
            Err(e) => Err(PollError::Gateway(e)),
        }
    }

    /// The gateway token, exchanged anew when due.
    async fn token(&mut self) -> Result<Zeroizing<String>, PollError> {
        if let Some(t) = &self.token
            && Instant::now() < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        // Re-read on every exchange: the kubelet rotates the file.
        let subject = Zeroizing::new(
            tokio::fs::read_to_string(&self.cfg.token_file)
                .await
                .map_err(|source| PollError::TokenFile {
                    path: self.cfg.token_file.clone(),
                    source,
                })?,
        );
        let answer = self.client.exchange(subject.trim()).await?;
        let token = Zeroizing::new(answer.token);
        let lifetime = chrono::DateTime::parse_from_rfc3339(&answer.expires_at)
            .ok()
            .and_then(|t| {
                (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            })
            .unwrap_or(Duration::from_secs(60));
        // Renew at 80% of the lifetime, well before expiry.
        let refresh_at = Instant::now() + lifetime.mul_f64(0.8);
        self.token = Some(GatewayToken {
            token: token.clone(),
            refresh_at,
        });
        self.token_out.send_replace(Some(token.clone()));
        Ok(token)
    }

    /// Applies a bundle: compiles its policies, then updates or opens the
    /// listener of each postgres Connection. On error nothing changes.
    async fn apply(&mut self, bundle: &Bundle) -> Result<(), PollError> {
        let expires = instant_of(&bundle.expires_at)
            .ok_or_else(|| ApplyError::Expiry(bundle.expires_at.clone()))?;
        let who = format!(
            "{}/{}",
            bundle.identity.namespace, bundle.identity.service_account
        );
        if let Some((ns, sa, pod)) = &self.cfg.expected_identity {
            let (ours, theirs) = (
                format!("{ns}/{sa} (pod {pod})"),
                format!("{who} (pod {})", bundle.identity.pod),
            );
            if ours != theirs {
                return Err(ApplyError::NotOurs {
                    found: theirs,
                    expected: ours,
                }
                .into());
            }
        }
        let mut identity = Identity::parse(&who).ok_or(ApplyError::Identity(who.clone()))?;
        identity.pod = Some(bundle.identity.pod.clone()).filter(|p| !p.is_empty());
        for g in &bundle.identity.groups {
            if !identity.groups.contains(g) {
                identity.groups.push(g.clone());
            }
        }
        let secrets = BundleSecrets(&bundle.secret_keys);
        let mut policies = Vec::new();
        for ap in &bundle.policies {
            let compiled =
                CompiledPolicy::compile(ap, &secrets).map_err(|source| ApplyError::Policy {
                    namespace: ap.metadata.namespace.clone().unwrap_or_default(),
                    name: ap.metadata.name.clone().unwrap_or_default(),
                    source: Box::new(source),
                })?;
            policies.push(Arc::new(compiled));
        }
        let literal_sensitive = bundle.policies.iter().any(|ap| {
            ap.spec
                .rules
                .iter()
                .any(|r| r.match_.text_pattern.is_some())
        });

        // Build everything first: a bad Connection leaves the old bundle in force.
        let mut next = Vec::new();
        for conn in &bundle.connections {
            if conn.spec.protocol != Protocol::Postgres {
                continue;
            }
            if let Some(only) = &self.cfg.connections
                && !only.iter().any(|c| c == &conn.name)
            {
                continue;
            }
            let upstream = upstream_config(conn, self.cfg.max_message_size)?;
            let hash_key = match &conn.hash_key {
                Some(b64) => Some(Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| ApplyError::Connection {
                            connection: conn.name.clone(),
                            what: format!("hashKey is not base64: {e}"),
                        })?,
                )),
                None => None,
            };
            let standing = if conn.bound {
                Standing::select(
                    &policies,
                    &identity,
                    &conn.name,
                    hash_key.as_deref().map(|k| k.as_slice()),
                    literal_sensitive,
                )
                .with_masking_key(&masking_key(
                    bundle,
                    hash_key.as_deref().map(|k| k.as_slice()),
                ))
            } else {
                Standing::NotBound
            };
            next.push((conn.name.clone(), conn.spec.clone(), upstream, standing));
        }

        let http_plans = self
            .http
            .prepare(
                bundle,
                &identity,
                &policies,
                self.cfg.connections.as_deref(),
            )
            .map_err(ApplyError::from)?;

        if self.audit.is_none() {
            let stream = format!(
                "{}{}",
                sluice_policy::gateway::stream_prefix(
                    &bundle.identity.namespace,
                    &bundle.identity.service_account,
                    &bundle.identity.pod
                ),
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
            );
            let mut log =
                AuditLog::open(&stream, self.cfg.audit_stdout, None).map_err(RunError::Audit)?;
            let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
            log.forward_to(tx);
            let log = Arc::new(log);
            self.tasks.push(tokio::spawn(upload_audit(
                self.client.clone(),
                self.token_out.subscribe(),
                rx,
                log.clone(),
                self.cfg.audit_upload_every,
            )));
            self.audit = Some(log);
        }
        let Some(audit) = self.audit.clone() else {
            return Ok(());
        };

        let mut seen = Vec::new();
        // Each listener's share of the descriptors (see crate::limits).
        let listeners = next.len() + http_plans.len();
        for (name, spec, upstream, standing) in next {
            seen.push(name.clone());
            match &standing {
                Standing::Bound { set, .. } => {
                    for w in set.warnings() {
                        tracing::warn!(connection = %name, "{w}");
                    }
                    tracing::info!(connection = %name, revision = %bundle.revision, policies = ?set.policy_names(), "identity bound");
                }
                _ => {
                    tracing::warn!(connection = %name, identity = %who, "no AccessPolicy binds the identity to this Connection: sessions will be refused")
                }
            }
            if let Some(s) = self.served.get(&name) {
                s.standing.send_replace(standing);
                let binding = Binding::live(identity.clone(), &name, s.standing.subscribe())
                    .with_rate(s.rate.clone());
                s.catalog.update(upstream.clone());
                let ctx = self.context(&name, upstream, binding, s.catalog.clone(), &audit);
                s.context.send_replace(Arc::new(ctx));
                continue;
            }
            let (standing_tx, standing_rx) = watch::channel(standing);
            let rate = Arc::new(RateLimit::new());
            let binding =
                Binding::live(identity.clone(), &name, standing_rx).with_rate(rate.clone());
            let catalog = CatalogPool::new(upstream.clone(), self.cfg.catalog);
            let ctx = Arc::new(self.context(&name, upstream, binding, catalog.clone(), &audit));
            let addr = SocketAddr::new(self.cfg.listen_host, spec_port(&spec));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind {
                    connection: name.clone(),
                    addr,
                    source,
                })?;
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(connection = %name, %addr, "listening");
            let (context_tx, context_rx) = watch::channel(ctx);
            let slots = crate::limits::ListenerSlots::new(
                &name,
                &self.cfg.limits,
                &self.fd_budget,
                listeners,
            );
            let task = tokio::spawn(crate::limits::serve_postgres(
                listener,
                context_rx,
                slots,
                self.cfg.limits.pg_startup_timeout,
            ));
            self.accept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task.abort_handle());
            self.tasks.push(task);
            self.served.insert(
                name,
                Served {
                    addr,
                    standing: standing_tx,
                    context: context_tx,
                    rate,
                    catalog,
                },
            );
        }
        self.http
            .commit(
                http_plans,
                &identity,
                &audit,
                Some(crate::approval::Approvals::new(
                    self.client.clone(),
                    self.token_out.subscribe(),
                    Some(self.metrics.clone()),
                )),
                self.cfg.listen_host,
                &bundle.revision,
                listeners,
            )
            .await
            .map_err(|(connection, addr, source)| RunError::Bind {
                connection,
                addr,
                source,
            })?;
        for (name, s) in &self.served {
            if !seen.contains(name) {
                s.standing.send_replace(Standing::Unavailable(format!(
                    "Connection {name:?} is no longer in this identity's policy bundle (revision {})",
                    bundle.revision
                )));
            }
        }
        self.revision = Some(bundle.revision.clone());
        self.expires = Some(expires);
        self.in_force.send_replace(self.revision.clone());
        if let Some(admin) = &self.admin {
            admin.ready.store(true, Ordering::Relaxed);
        }
        tracing::info!(revision = %bundle.revision, expires_at = %bundle.expires_at, "policy bundle applied");
        Ok(())
    }

    fn context(
        &self,
        name: &str,
        upstream: UpstreamConfig,
        binding: Binding,
        catalog: Arc<CatalogPool>,
        audit: &Arc<AuditLog>,
    ) -> ConnectionContext {
        ConnectionContext {
            name: name.to_string(),
            upstream,
            binding,
            catalog,
            audit: audit.clone(),
            metrics: self.metrics.clone(),
            cancel: self.cancel.clone(),
            max_message_size: self.cfg.max_message_size,
            buffer_budget: self.buffer_budget.clone(),
            approvals: Some(crate::approval::Approvals::new(
                self.client.clone(),
                self.token_out.subscribe(),
                Some(self.metrics.clone()),
            )),
        }
    }

    fn withdraw_expired(&mut self) {
        let why = format!(
            "the policy bundle from the Sluice operator expired and no newer one could be fetched (last error: {}); sessions are refused until the operator at {} answers",
            if self.last_error.is_empty() {
                "none"
            } else {
                &self.last_error
            },
            self.client.url()
        );
        self.withdraw(&why);
    }

    /// No bundle is in force any more: every session and statement is refused.
    fn withdraw(&mut self, why: &str) {
        if self.revision.is_none() && self.expires.is_none() {
            return;
        }
        tracing::error!(reason = %why, "policy bundle withdrawn: refusing sessions and statements");
        for s in self.served.values() {
            s.standing
                .send_replace(Standing::Unavailable(why.to_string()));
        }
        self.http.withdraw(why);
        // The next successful poll must return a whole bundle, not a 304.
        self.revision = None;
        self.expires = None;
        self.in_force.send_replace(None);
        if let Some(admin) = &self.admin {
            admin.ready.store(false, Ordering::Relaxed);
        }
    }
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("cannot read the service-account token {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("the new policy bundle was not applied (the previous one stays in force): {0}")]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Events waiting for the operator; past this, new events are dropped for
/// that sink (stdout keeps them all).
const AUDIT_QUEUE: usize = 10_000;

/// Events per `/v1/audit` request (the operator takes up to 10 000).
const AUDIT_BATCH: usize = 1_000;

/// The body of a `POST /v1/audit` ([`sluice_policy::gateway::AuditBatch`] on the wire): the
/// events' lines as they were written, and the last head per Connection of
/// the batch. The lines are copied, not parsed and serialised again.
fn audit_body(stream: &str, events: &[Forwarded]) -> Vec<u8> {
    // The last event of each Connection names its head.
    let mut last: BTreeMap<&str, &Forwarded> = BTreeMap::new();
    let mut body = Vec::with_capacity(events.iter().map(|e| e.line.len() + 1).sum::<usize>() + 256);
    body.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.line.as_bytes());
        if let Some(c) = &e.connection {
            last.insert(c, e);
        }
    }
    body.extend_from_slice(b"],\"heads\":");
    let heads: Vec<AuditHead> = last
        .into_iter()
        .map(|(c, e)| AuditHead {
            connection: c.to_string(),
            head: ChainHead {
                stream: stream.to_string(),
                seq: e.seq,
                hash: e.hash.clone(),
            },
        })
        .collect();
    // A Vec of plain structs of strings and integers always serialises.
    let _ = serde_json::to_writer(&mut body, &heads);
    body.push(b'}');
    body
}

/// Sends audit events to the operator's `/v1/audit` in batches, with a
/// chain head per Connection of the batch for the operator to sign. A batch
/// the operator did not take is sent again (it is kept, bounded by [`AUDIT_QUEUE`]).
async fn upload_audit(
    client: GatewayClient,
    token: watch::Receiver<Option<Zeroizing<String>>>,
    mut events: tokio::sync::mpsc::Receiver<Forwarded>,
    audit: Arc<AuditLog>,
    every: Duration,
) {
    let mut batch: Vec<Forwarded> = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped_seen = 0;
    // Warn once per outage, not at every retry.
    let mut failing = false;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => {
                    batch.push(e);
                    if batch.len() < AUDIT_BATCH {
                        continue;
                    }
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        let dropped = audit.forward_dropped();
        if dropped > dropped_seen {
            tracing::warn!(
                dropped = dropped - dropped_seen,
                "audit events not sent to the operator: its queue was full (they are on stdout)"
            );
            dropped_seen = dropped;
        }
        if batch.is_empty() {
            continue;
        }
        let Some(bearer) = token.borrow().clone() else {
            continue;
        };
        let take = batch.len().min(AUDIT_BATCH);
        let request = audit_body(audit.stream(), &batch[..take]);
        match client.audit(&bearer, request).await {
            Ok(receipt) => {
                tracing::debug!(
                    accepted = receipt.accepted,
                    checkpoints = receipt.checkpoints.len(),
                    "audit batch sent"
                );
                // The signed receipts are kept in the sidecar's log (not the
                // audit stream, which they would break): `kubectl logs` and the
                // log pipeline hold what the operator vouched for.
                for checkpoint in &receipt.checkpoints {
                    if let Ok(json) = serde_json::to_string(checkpoint) {
                        tracing::info!(checkpoint = %json, "audit checkpoint signed by the operator");
                    }
                }
                batch.drain(..take);
                if failing {
                    tracing::info!("audit events reach the operator again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, events = take, "sending audit events to the operator failed; will retry");
                    failing = true;
                }
                if batch.len() > AUDIT_QUEUE {
                    let excess = batch.len() - AUDIT_QUEUE;
                    batch.drain(..excess);
                    tracing::warn!(
                        dropped = excess,
                        "audit events not sent to the operator: too many waiting (they are on stdout)"
                    );
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant of an RFC 3339 time (now, when it is past).
fn instant_of(rfc3339: &str) -> Option<Instant> {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    let left = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}

/// What the sessions' masks depend on: every policy of the bundle but its
/// rules (which only decide, and apply at the next statement), the Secret
/// keys, and the Connection's hash key; hashed, so that no secret is kept
/// twice.
fn masking_key(bundle: &Bundle, hash_key: Option<&[u8]>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for ap in &bundle.policies {
        let mut spec = ap.spec.clone();
        spec.rules.clear();
        h.update(ap.metadata.name.as_deref().unwrap_or_default());
        h.update([0]);
        h.update(serde_json::to_vec(&spec).unwrap_or_default());
        h.update([0]);
    }
    for k in &bundle.secret_keys {
        for part in [&k.secret, &k.key, &k.value] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    }
    h.update(hash_key.unwrap_or_default());
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn spec_port(spec: &ConnectionSpec) -> u16 {
    spec.listen.port
}

/// Overwrites the credentials a bundle carried, once they were copied
/// into zeroizing holders.
fn scrub(bundle: &mut Bundle) {
    for c in &mut bundle.connections {
        if let Some(creds) = c.credentials.as_mut() {
            for v in creds.values_mut() {
                v.zeroize();
            }
        }
        if let Some(k) = c.hash_key.as_mut() {
            k.zeroize();
        }
    }
    for k in &mut bundle.secret_keys {
        k.value.zeroize();
    }
}

struct BundleSecrets<'a>(&'a [BundleSecretKey]);

impl SecretSource for BundleSecrets<'_> {
    fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let k = self.0.iter().find(|k| k.secret == name && k.key == key)?;
        base64::engine::general_purpose::STANDARD
            .decode(&k.value)
            .ok()
    }
}

fn upstream_config(
    conn: &BundleConnection,
    max_message_size: usize,
) -> Result<UpstreamConfig, ApplyError> {
    let missing = |what: &str| ApplyError::Connection {
        connection: conn.name.clone(),
        what: what.to_string(),
    };
    let empty = HashMap::new();
    let creds: HashMap<&str, &str> = match &conn.credentials {
        Some(c) => c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        None => empty,
    };
    // Unbound Connections come without credentials; their sessions are
    // refused before any upstream connection is made.
    let (username, password) = if conn.bound {
        (
            creds
                .get("username")
                .ok_or_else(|| missing("the bundle has no username for it"))?
                .to_string(),
            Zeroizing::new(
                creds
                    .get("password")
                    .ok_or_else(|| missing("the bundle has no password for it"))?
                    .to_string(),
            ),
        )
    } else {
        (String::new(), Zeroizing::new(String::new()))
    };
    let host = conn
        .spec
        .upstream
        .host
        .clone()
        .ok_or_else(|| missing("spec.upstream.host is not set"))?;
    Ok(UpstreamConfig::new(
        &conn.name,
        &conn.spec,
        host,
        username,
        password,
        conn.ca_pem.as_deref().map(str::as_bytes),
        max_message_size,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut all: Vec<(String, String)> = vec![
            ("SLUICE_GATEWAY_URL".into(), "https://gw:8443".into()),
            ("SLUICE_TOKEN_FILE".into(), "/var/run/token".into()),
            ("SLUICE_CA_PEM".into(), "PEM".into()),
        ];
        all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        move |name| {
            all.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    /// The upload body is an `AuditBatch` on the wire: the lines as
    /// events, and the last head of each Connection.
    #[test]
    fn audit_body_is_an_audit_batch() {
        use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
        let mut chain = AuditChain::new("st");
        let mut events = Vec::new();
        let mut forwarded = Vec::new();
        for connection in [Some("a"), Some("b"), Some("a"), None] {
            let mut draft = AuditEventDraft::new("2026-01-02T03:04:05Z", AuditKind::SessionStart);
            draft.connection = connection.map(String::from);
            let event = chain.append(draft).unwrap();
            forwarded.push(Forwarded {
                line: event.to_line().unwrap().into(),
                connection: event.connection.clone(),
                seq: event.seq,
                hash: event.hash.clone(),
            });
            events.push(event);
        }
        let batch: sluice_policy::gateway::AuditBatch =
            serde_json::from_slice(&audit_body("st", &forwarded)).unwrap();
        assert_eq!(batch.events, events);
        let heads: Vec<_> = batch
            .heads
            .iter()
            .map(|h| (h.connection.as_str(), h.head.seq, h.head.stream.as_str()))
            .collect();
        assert_eq!(heads, [("a", 3, "st"), ("b", 2, "st")]);
        assert_eq!(batch.heads[0].head.hash, events[2].hash);
        // An empty batch is well-formed too.
        let empty: sluice_policy::gateway::AuditBatch =
            serde_json::from_slice(&audit_body("st", &[])).unwrap();
        assert!(empty.events.is_empty() && empty.heads.is_empty());
    }

    #[test]
    fn http_settings_default_when_unset() {
        let cfg = RunConfig::from_vars(vars(&[])).unwrap();
        assert_eq!(
            cfg.http_upstream_timeout,
            crate::http::DEFAULT_UPSTREAM_TIMEOUT
        );
        assert_eq!(
            cfg.http_max_request_body,
            crate::http::DEFAULT_MAX_REQUEST_BODY
        );
        assert!(cfg.http_upstream_http2);
    }

    #[test]
    fn http_settings_come_from_the_environment() {
        let cfg = RunConfig::from_vars(vars(&[
            (env::HTTP_TIMEOUT, "2.5"),
            (env::HTTP_MAX_BODY, "4096"),
            (env::HTTP_UPSTREAM_HTTP1_ONLY, "true"),
        ]))
        .unwrap();
        assert_eq!(cfg.http_upstream_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.http_max_request_body, 4096);
        assert!(!cfg.http_upstream_http2);
        let cfg = RunConfig::from_vars(vars(&[(env::HTTP_UPSTREAM_HTTP1_ONLY, "false")])).unwrap();
        assert!(cfg.http_upstream_http2);
    }

    #[test]
    fn bad_http_settings_are_refused_with_the_variable_named() {
        for (name, value) in [
            (env::HTTP_TIMEOUT, "0"),
            (env::HTTP_TIMEOUT, "-1"),
            (env::HTTP_TIMEOUT, "NaN"),
            (env::HTTP_TIMEOUT, "100000"),
            (env::HTTP_TIMEOUT, "30s"),
            (env::HTTP_MAX_BODY, "-5"),
            (env::HTTP_MAX_BODY, "1MB"),
            (env::HTTP_UPSTREAM_HTTP1_ONLY, "yes"),
        ] {
            let err = RunConfig::from_vars(vars(&[(name, value)])).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, RunError::BadEnv { .. })
                    && text.contains(name)
                    && text.contains(value),
                "{name}={value}: {text}"
            );
        }
    }

    fn bundle(rules: serde_json::Value, masking: serde_json::Value, bound: bool) -> Bundle {
        serde_json::from_value(json!({
            "revision": "r1",
            "identity": {"namespace": "shop", "serviceAccount": "report-job", "pod": "report", "groups": []},
            "expiresAt": "2030-01-01T00:00:00Z",
            "connections": [{
                "name": "db",
                "spec": {
                    "protocol": "postgres",
                    "upstream": {"host": "db.shop", "port": 5432, "database": "orders", "tls": {"mode": "disable"}},
                    "credentials": {"secretRef": {"name": "creds"}},
                    "listen": {"port": 15432}
                },
                "bound": bound,
                "credentials": if bound { json!({"username": "app", "password": "pw"}) } else { json!(null) }
            }],
            "policies": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": {"subjects": [{"serviceAccount": "report-job"}], "connections": ["db"],
                         "rules": rules, "masking": masking}
            }],
            "secretKeys": [{"secret": "k", "key": "key", "value": "c2VjcmV0"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_masking_key_follows_masking_not_rules() {
        let deny = json!([{"name": "d", "match": {"statements": ["drop"]}, "action": "deny"}]);
        let ssn = json!([{"columns": ["customers.ssn"], "strategy": "redact"}]);
        let base = masking_key(&bundle(json!([]), ssn.clone(), true), None);
        assert_eq!(base, masking_key(&bundle(deny, ssn.clone(), true), None));
        assert_ne!(
            base,
            masking_key(
                &bundle(
                    json!([]),
                    json!([{"columns": ["customers.name"], "strategy": "redact"}]),
                    true
                ),
                None
            )
        );
        assert_ne!(base, masking_key(&bundle(json!([]), ssn, true), Some(b"k")));
    }

    #[test]
    fn bundle_connections_become_upstreams_and_credentials_are_scrubbed() {
        let mut b = bundle(json!([]), json!([]), true);
        let up = upstream_config(&b.connections[0], 1 << 20).unwrap();
        assert_eq!((up.host.as_str(), up.port), ("db.shop", 5432));
        assert_eq!(
            (up.username.as_str(), up.database.as_str()),
            ("app", "orders")
        );
        assert_eq!(up.password.as_str(), "pw");
        assert_eq!(
            BundleSecrets(&b.secret_keys).secret_key("k", "key"),
            Some(b"secret".to_vec())
        );
        assert_eq!(BundleSecrets(&b.secret_keys).secret_key("k", "other"), None);
        scrub(&mut b);
        let creds = b.connections[0].credentials.as_ref().unwrap();
        assert!(creds.values().all(String::is_empty));
        assert!(b.secret_keys[0].value.is_empty());

        // A bound Connection without a password is an error; an unbound one
        // needs no credentials (its sessions are refused before any upstream).
        let mut b = bundle(json!([]), json!([]), true);
        b.connections[0].credentials = Some(BTreeMap::from([("username".into(), "app".into())]));
        let err = upstream_config(&b.connections[0], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("no password"), "{err}");
        let b = bundle(json!([]), json!([]), false);
        assert!(upstream_config(&b.connections[0], 1 << 20).is_ok());
    }

    #[test]
    fn expiry_times_map_to_instants() {
        let now = Instant::now();
        assert!(instant_of("not a time").is_none());
        let past = instant_of("2001-01-01T00:00:00Z").unwrap();
        assert!(past >= now && past <= Instant::now());
        let future =
            instant_of(&(chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()).unwrap();
        assert!(future > now + Duration::from_secs(3000));
    }
}
