//! Standalone mode: `sluice-sidecar standalone -f MANIFESTS --as NS/SA`.
//!
//! Reads the YAML a user would apply (Namespace, Secret, Connection,
//! AccessPolicy) into the bundle the operator would serve, compiles its
//! policies, and serves every Connection of the identity's namespace on
//! `127.0.0.1:spec.listen.port` by its protocol's [`crate::plane::Plane`],
//! put in force as run mode puts a bundle in force. A Connection
//! no policy binds the identity to is still served, so that a client gets a
//! clear error at connect time instead of "connection refused".

mod args;
mod local;

pub use args::StandaloneArgs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::registry::Registry;
use sluice_crds::manifests::{ManifestError, ManifestSet};
use sluice_policy::engine::{CompileError, Identity};

use crate::admin::{self, AdminState};
use crate::audit::{AuditError, AuditLog};
use crate::metrics::Metrics;
use crate::plane::{AcceptLoops, BindError, Commit, Prepare, SetupError};
use crate::planes::{PlaneSettings, Planes, SettingError};
use crate::standing::compile_policies;

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
    /// Address the listeners bind (loopback unless told otherwise).
    pub listen_host: IpAddr,
    /// What every plane's Connections are served with (limits, message
    /// sizes, the catalog pool, the HTTP upstream's settings).
    pub planes: PlaneSettings,
    /// How long sessions get to end after SIGTERM (the binary passes it to
    /// [`Running::shutdown`]).
    pub shutdown_grace: std::time::Duration,
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
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            planes: PlaneSettings::default(),
            shutdown_grace: crate::shutdown::DEFAULT_GRACE,
        }
    }
}

/// Why standalone mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// A setting's value is unusable (the same words as run mode's).
    #[error(transparent)]
    Setting(#[from] SettingError),
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
    /// The audit sink could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A Connection's settings are unusable (its plane says why).
    #[error(transparent)]
    Setup(SetupError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A started sidecar: where it listens. Dropping it leaves the servers
/// running; [`Running::shutdown`] ends them on record.
pub struct Running {
    /// `(connection, address, bound)` per listener.
    pub listeners: Vec<(String, SocketAddr, bool)>,
    /// The admin address, if any.
    pub admin: Option<SocketAddr>,
    audit: Arc<AuditLog>,
    accept: AcceptLoops,
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

/// Loads the manifests, binds every listener and spawns the servers.
/// Returns once everything listens; the servers run on the current runtime.
///
/// The manifests become a bundle of the shape the operator serves
/// ([`local::local_bundle`]), put in force as run mode puts its bundles:
/// each plane's Connections prepared, then committed.
pub async fn start(cfg: StandaloneConfig) -> Result<Running, StandaloneError> {
    let identity = Identity::parse(&cfg.identity)
        .ok_or_else(|| StandaloneError::BadIdentity(cfg.identity.clone()))?;
    let set = ManifestSet::load(&cfg.manifests, &identity.namespace)?;
    for skipped in &set.skipped {
        tracing::warn!(object = %skipped, "skipped: not a kind Sluice reads");
    }
    let bundle = local::local_bundle(&set, &identity)?;
    if bundle.connections.is_empty() {
        return Err(StandaloneError::NoConnections {
            namespace: identity.namespace.clone(),
            path: cfg.manifests.clone(),
        });
    }
    let policies = compile_policies(&bundle).map_err(|e| StandaloneError::Policy {
        namespace: e.namespace,
        name: e.name,
        source: e.source,
    })?;
    let audit = open_audit(&cfg, &identity)?;
    audit.configure(&bundle);
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    metrics.local_policies_in_force();
    let mut planes = Planes::new(&cfg.planes, &metrics, &mut registry);
    let accept = planes.accept_loops();
    // Prepared first, committed after: as run mode puts a bundle in force.
    let listeners = planes
        .prepare(Prepare {
            bundle: &bundle,
            identity: &identity,
            policies: &policies,
            only: None,
        })
        .map_err(StandaloneError::Setup)?;
    planes
        .commit(Commit {
            identity: &identity,
            audit: &audit,
            // No operator: a statement or request that needs approval is refused.
            approvals: None,
            listen_host: cfg.listen_host,
            revision: &bundle.revision,
            // Each listener gets its share of the descriptors (see crate::limits).
            listeners,
        })
        .await?;
    let listeners = planes.listeners();
    // Nothing changes what is in force: the servers run on by themselves.
    planes.detach();

    let (admin_state, admin) =
        admin::start(cfg.admin_addr, registry, None)
            .await
            .map_err(|(addr, source)| BindError {
                connection: "(admin)".into(),
                addr,
                source,
            })?;
    // Detached: the admin port serves as long as the runtime runs.
    let admin = admin.map(|(addr, _task)| addr);
    admin_state.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        listeners,
        admin,
        audit,
        accept,
        admin_state,
    })
}

/// The audit log (stdout and/or the audit file), written out periodically.
fn open_audit(
    cfg: &StandaloneConfig,
    identity: &Identity,
) -> Result<Arc<AuditLog>, StandaloneError> {
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
    // Result events wait for the next decision event; this bounds the wait.
    audit.flush_periodically();
    Ok(audit)
}
