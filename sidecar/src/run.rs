//! Run mode: `sluice-sidecar run`, in a pod, with policies and credentials
//! from the Sluice operator (docs/DESIGN.md §3, §4).
//!
//! The projected service-account token (re-read at every exchange: the
//! kubelet rotates it) is exchanged for a gateway token, which fetches the
//! identity's bundle. Every Connection of the bundle is served on
//! `127.0.0.1:spec.listen.port` by its protocol's [`crate::plane::Plane`].
//! The bundle is long-polled; a change reaches
//! live sessions at their next statement through a watch of each
//! Connection's [`Standing`], and new sessions through a watch of its
//! [`ConnectionContext`] (credentials, upstream).
//!
//! Fail closed: until the first bundle no listener exists; a bundle is used
//! until its own expiry and never after; once it expired, or the operator
//! refused the identity (pod or service account deleted), every session and
//! statement is refused with a message that says why.

mod config;
#[cfg(test)]
mod tests;
mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sluice_policy::engine::{CompileError, CompiledPolicy, Identity};
use sluice_policy::wire::Bundle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

pub use config::{RunConfig, env};
use upload::{AUDIT_QUEUE, upload_audit};

use crate::admin::{self, AdminState};
use crate::approval::Approvals;
use crate::audit::{AuditError, AuditLog};
use crate::bundle_client::{BundlePoll, GatewayClient, GatewayError};
use crate::metrics::Metrics;
use crate::plane::{AcceptLoops, BindError, Commit, Prepare, SetupError};
use crate::planes::Planes;
use crate::standing::compile_policies;

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
    /// An optional setting has a value the sidecar cannot use (the same
    /// words as standalone's for its flag).
    #[error(transparent)]
    BadEnv(#[from] crate::planes::SettingError),
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
    #[error(transparent)]
    Bind(#[from] BindError),
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
    #[error(transparent)]
    Setup(SetupError),
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

impl Running {
    /// Shuts down (SIGTERM, SIGINT): stops accepting, gives the open
    /// sessions the configured grace period to end, records the end of
    /// every session, writes the audit log out (see [`crate::shutdown`]).
    pub async fn shutdown(self) -> crate::shutdown::DrainReport {
        crate::shutdown::drain(
            self.audit.as_ref(),
            &self.accept,
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
    let planes = Planes::new(&cfg.planes, &metrics, &mut registry);
    let accept = planes.accept_loops();
    let token_out = watch::Sender::new(None);
    let approvals = Approvals::new(client.clone(), token_out.subscribe(), Some(metrics.clone()));
    let mut runner = Runner {
        planes,
        approvals,
        client,
        cfg: cfg.clone(),
        token: None,
        revision: None,
        expires: None,
        audit: None,
        standing: Arc::new(crate::debug_standing::StandingBoard::new(metrics.clone())),
        last_error: String::new(),
        tasks: Vec::new(),
        in_force: watch::Sender::new(None),
        token_out,
        admin: None,
    };
    let revision = runner.in_force.subscribe();

    // === the first bundle ===
    let deadline = Instant::now() + cfg.first_bundle_timeout;
    let mut backoff = Backoff::default();
    loop {
        let asked = match runner.poll_once().await {
            Ok(true) => break,
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(error = %e, "no policy bundle yet; retrying");
                runner.last_error = e.to_string();
                e.retry_after()
            }
        };
        let pause = backoff.pause(asked);
        if Instant::now() + pause > deadline {
            return Err(RunError::NoBundle {
                after: cfg.first_bundle_timeout,
                last: runner.last_error.clone(),
            });
        }
        tokio::time::sleep(pause).await;
    }
    let listeners = runner
        .planes
        .listeners()
        .into_iter()
        .map(|(name, addr, _)| (name, addr))
        .collect();

    let (admin_state, admin) =
        admin::start(cfg.admin_addr, registry, Some(runner.standing.clone()))
            .await
            .map_err(|(addr, source)| BindError {
                connection: "(admin)".into(),
                addr,
                source,
            })?;
    let admin = admin.map(|(addr, task)| {
        runner.tasks.push(task);
        addr
    });
    admin_state.ready.store(true, Ordering::Relaxed);
    runner.admin = Some(admin_state.clone());
    let audit = runner.audit.clone();
    let mut tasks = std::mem::take(&mut runner.tasks);
    // Result events wait for the next decision event; this bounds the wait.
    tasks.extend(audit.as_ref().map(AuditLog::flush_periodically));
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

/// When to renew a gateway token that lives `lifetime`: well before expiry,
/// at a random point between 70% and 85% of it. The sidecars of a rollout
/// get their tokens together; renewing all at exactly 80% made every
/// renewal a thundering herd on the operator (#25).
pub fn token_refresh_after(lifetime: Duration) -> Duration {
    use rand::Rng;
    lifetime.mul_f64(rand::rng().random_range(0.70..=0.85))
}

/// A gateway token and when to renew it.
struct GatewayToken {
    token: Zeroizing<String>,
    refresh_at: Instant,
}

struct Runner {
    client: GatewayClient,
    cfg: RunConfig,
    token: Option<GatewayToken>,
    /// The revision of the bundle in force, `None` when there is none.
    revision: Option<String>,
    /// When the bundle in force expires.
    expires: Option<Instant>,
    /// Every plane's Connections served.
    planes: Planes,
    /// The operator's approval API, for every Connection's sessions.
    approvals: Approvals,
    audit: Option<Arc<AuditLog>>,
    /// What `/debug/standing` shows.
    standing: Arc<crate::debug_standing::StandingBoard>,
    last_error: String,
    tasks: Vec<JoinHandle<()>>,
    /// Publishes the revision in force.
    in_force: watch::Sender<Option<String>>,
    /// Publishes the gateway token (for the audit uploader and approvals).
    token_out: watch::Sender<Option<Zeroizing<String>>>,
    /// `/readyz` follows whether a bundle is in force.
    admin: Option<Arc<AdminState>>,
}

/// Pauses between failed polls: doubling from 250 ms to 5 s, each drawn
/// between half and all of that (sidecars that failed together retry spread
/// out), and never shorter than what the operator asked for (`Retry-After`,
/// honoured with jitter, [`crate::bundle_client::honoured`]).
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn pause(&mut self, asked: Option<Duration>) -> Duration {
        use rand::Rng;
        let ceiling = Duration::from_millis(250u64 << self.0.min(5)).min(Duration::from_secs(5));
        self.0 = self.0.saturating_add(1);
        let backoff = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        asked.map_or(backoff, |a| crate::bundle_client::honoured(a).max(backoff))
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
                    self.standing.refresh_failed(&self.last_error);
                    let pause = backoff.pause(e.retry_after());
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
                self.standing.bundle_applied(&bundle);
                Ok(true)
            }
            Ok(BundlePoll::Unchanged(expires)) => {
                self.standing.refreshed(expires.as_deref());
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
        let answer = (self.client.exchange(subject.trim()).await)
            .inspect_err(|e| self.standing.metrics().token_exchange_failed(e))?;
        let token = Zeroizing::new(answer.token);
        let lifetime = chrono::DateTime::parse_from_rfc3339(&answer.expires_at)
            .ok()
            .and_then(|t| {
                (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            })
            .unwrap_or(Duration::from_secs(60));
        let refresh_at = Instant::now() + token_refresh_after(lifetime);
        self.token = Some(GatewayToken {
            token: token.clone(),
            refresh_at,
        });
        self.token_out.send_replace(Some(token.clone()));
        Ok(token)
    }

    /// Applies a bundle, in phases: compile its policies, prepare every
    /// Connection of each plane (an error leaves the bundle in force as it
    /// was), then commit them (listeners opened or updated) and mark the
    /// bundle in force.
    async fn apply(&mut self, bundle: &Bundle) -> Result<(), PollError> {
        let expires = instant_of(&bundle.expires_at)
            .ok_or_else(|| ApplyError::Expiry(bundle.expires_at.clone()))?;
        let (identity, policies) = compile(bundle, self.cfg.expected_identity.as_ref())?;
        // Build everything first: a bad Connection leaves the old bundle in force.
        let listeners = self
            .planes
            .prepare(Prepare {
                bundle,
                identity: &identity,
                policies: &policies,
                only: self.cfg.connections.as_deref(),
            })
            .map_err(ApplyError::Setup)?;
        let audit = self.audit_log(bundle)?;
        audit.configure(bundle);
        self.planes
            .commit(Commit {
                identity: &identity,
                audit: &audit,
                approvals: Some(&self.approvals),
                listen_host: self.cfg.listen_host,
                revision: &bundle.revision,
                // Each listener's share of the descriptors (see crate::limits).
                listeners,
            })
            .await
            .map_err(RunError::from)?;
        self.revision = Some(bundle.revision.clone());
        self.expires = Some(expires);
        self.in_force.send_replace(self.revision.clone());
        if let Some(admin) = &self.admin {
            admin.ready.store(true, Ordering::Relaxed);
        }
        tracing::info!(revision = %bundle.revision, expires_at = %bundle.expires_at, "policy bundle applied");
        Ok(())
    }

    /// The audit log, opened at the first bundle (its stream is named after
    /// the bundle's identity) with its upload to the operator.
    fn audit_log(&mut self, bundle: &Bundle) -> Result<Arc<AuditLog>, RunError> {
        if let Some(audit) = &self.audit {
            return Ok(audit.clone());
        }
        let stream = format!(
            "{}{}",
            sluice_policy::wire::stream_prefix(
                &bundle.identity.namespace,
                &bundle.identity.service_account,
                &bundle.identity.pod
            ),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let mut log = AuditLog::open(&stream, self.cfg.audit_stdout, None)?;
        let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        log.forward_to(tx);
        let log = Arc::new(log);
        self.tasks.push(tokio::spawn(upload_audit(
            self.client.clone(),
            self.token_out.subscribe(),
            rx,
            log.clone(),
            self.cfg.audit_upload_every,
            self.standing.metrics(),
        )));
        self.audit = Some(log.clone());
        Ok(log)
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
        self.standing.withdrawn(why);
        self.planes.withdraw(why);
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

impl PollError {
    /// How long the operator asked to be left alone, when it did.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            PollError::Gateway(e) => e.retry_after(),
            _ => None,
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

/// The identity a bundle is for (it must be this pod's, when the pod's
/// identity is known) and its policies, compiled.
fn compile(
    bundle: &Bundle,
    expected: Option<&(String, String, String)>,
) -> Result<(Identity, Vec<Arc<CompiledPolicy>>), ApplyError> {
    let who = format!(
        "{}/{}",
        bundle.identity.namespace, bundle.identity.service_account
    );
    if let Some((ns, sa, pod)) = expected {
        let (ours, theirs) = (
            format!("{ns}/{sa} (pod {pod})"),
            format!("{who} (pod {})", bundle.identity.pod),
        );
        if ours != theirs {
            return Err(ApplyError::NotOurs {
                found: theirs,
                expected: ours,
            });
        }
    }
    let mut identity = Identity::parse(&who).ok_or(ApplyError::Identity(who.clone()))?;
    identity.pod = Some(bundle.identity.pod.clone()).filter(|p| !p.is_empty());
    for g in &bundle.identity.groups {
        if !identity.groups.contains(g) {
            identity.groups.push(g.clone());
        }
    }
    let policies = compile_policies(bundle).map_err(|e| ApplyError::Policy {
        namespace: e.namespace,
        name: e.name,
        source: e.source,
    })?;
    Ok((identity, policies))
}
