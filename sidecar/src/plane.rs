//! A data plane, as run mode and standalone see it: the Connections of one
//! protocol, each on its own listener, put in force bundle after bundle.
//!
//! Run mode ([`crate::run`]) and standalone ([`crate::standalone`]) hold
//! every plane as a [`Plane`] in [`Planes`] and put a bundle in force in two
//! steps: [`Planes::prepare`] builds every plane's Connections (an error
//! leaves what is served untouched), then [`Planes::commit`] puts them in
//! force (listeners opened or updated). [`Planes::withdraw`] refuses
//! everything once no bundle is in force.

use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use sluice_policy::engine::{CompiledPolicy, Identity};
use sluice_policy::wire::Bundle;

use crate::approval::Approvals;
use crate::audit::AuditLog;
use crate::http::bundle::HttpConnections;
use crate::limits::{FdBudget, Limits};
use crate::metrics::Metrics;
use crate::postgres::bundle::{AcceptLoops, PgConnections, PgShared};
use crate::postgres::catalog::PoolSettings;

/// Why a plane's Connections of a bundle cannot be served (the plane's own
/// error: its text names the Connection and what to fix).
pub type SetupError = Box<dyn Error + Send + Sync>;

/// `(connection, address, bound)` of one listener.
pub type Listener = (String, SocketAddr, bool);

/// A listener could not bind: one error for every plane and the admin port.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for Connection {connection}: {source}")]
pub struct BindError {
    /// Connection (`(admin)` for the admin port).
    pub connection: String,
    /// Address.
    pub addr: SocketAddr,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// What a plane prepares from: the bundle, the identity it is for and its
/// policies, compiled once for every plane.
#[derive(Clone, Copy)]
pub struct Prepare<'a> {
    /// The bundle (run mode: the operator's; standalone: the manifests').
    pub bundle: &'a Bundle,
    /// The identity the bundle is for.
    pub identity: &'a Identity,
    /// The bundle's policies, compiled.
    pub policies: &'a [Arc<CompiledPolicy>],
    /// Serve only these Connections, when set (`SLUICE_CONNECTIONS`).
    pub only: Option<&'a [String]>,
}

/// What every plane's sessions get when a bundle is put in force.
#[derive(Clone, Copy)]
pub struct Commit<'a> {
    /// The identity the bundle is for.
    pub identity: &'a Identity,
    /// The audit trail.
    pub audit: &'a Arc<AuditLog>,
    /// The operator's approval API (standalone: none; what needs approval
    /// is refused).
    pub approvals: Option<&'a Approvals>,
    /// Address new listeners bind.
    pub listen_host: IpAddr,
    /// The bundle's revision (for the logs and refusals).
    pub revision: &'a str,
    /// Listeners served in all, across planes: each new listener takes its
    /// share of the descriptors (see [`crate::limits`]).
    pub listeners: usize,
}

/// What [`Plane::commit`] returns.
pub type Committing<'a> = Pin<Box<dyn Future<Output = Result<(), BindError>> + Send + 'a>>;

/// One data plane: the Connections of one protocol of a bundle, each on its
/// own listener.
///
/// A new plane (MySQL next) needs only its protocol code (framing,
/// sessions, its side of the policy engine) plus an impl of this trait,
/// registered in [`Planes::new`]: run mode and standalone then fetch,
/// compile, prepare, commit, withdraw and list its Connections as they do
/// every other plane's, and the spine ([`crate::standing`],
/// [`crate::approval`], [`crate::audit`], [`crate::limits`]) is shared.
pub trait Plane: Send + Sync {
    /// Builds this plane's Connections of `bundle` and keeps them staged,
    /// without changing anything served: an error leaves the bundle in
    /// force as it was. Returns how many listeners the staged Connections
    /// need. A later `prepare` replaces what an earlier one staged.
    fn prepare(&mut self, bundle: Prepare<'_>) -> Result<usize, SetupError>;

    /// Puts what [`Plane::prepare`] staged in force: live sessions follow
    /// their Connection's new standing, new Connections get a listener.
    /// Connections served but not staged refuse everything from now on.
    fn commit<'a>(&'a mut self, put: Commit<'a>) -> Committing<'a>;

    /// No bundle is in force any more: everything is refused with `why`.
    fn withdraw(&self, why: &str);

    /// Every listener of the plane.
    fn listeners(&self) -> Vec<Listener>;

    /// Lets the listeners serve on as they are, for as long as the runtime
    /// runs (standalone: nothing ever changes what is in force).
    fn detach(self: Box<Self>);
}

/// What the planes' Connections are served with (run mode's and
/// standalone's settings alike).
pub struct PlaneSettings {
    /// Connection caps and timeouts.
    pub limits: Limits,
    /// Largest PostgreSQL protocol message.
    pub max_message_size: usize,
    /// Catalog sessions per postgres Connection.
    pub catalog: PoolSettings,
    /// HTTP: how long the upstream has to answer, and between pieces.
    pub http_upstream_timeout: std::time::Duration,
    /// HTTP: largest request body buffered for `jsonBody` rules.
    pub http_max_request_body: usize,
    /// HTTP: offer HTTP/2 to the upstream.
    pub http_upstream_http2: bool,
}

/// Every plane of the sidecar.
pub struct Planes {
    planes: Vec<Box<dyn Plane>>,
    accept: AcceptLoops,
}

impl Planes {
    /// Every plane, serving nothing yet, its metrics in `registry`.
    pub fn new(settings: &PlaneSettings, metrics: &Arc<Metrics>, registry: &mut Registry) -> Self {
        let s = settings;
        let fd_budget = FdBudget::new(s.limits.fd_reserve);
        let postgres = PgConnections::new(PgShared::new(
            metrics,
            &s.limits,
            fd_budget.clone(),
            s.max_message_size,
            s.catalog,
        ));
        let accept = postgres.accept_loops();
        let http = HttpConnections::new(
            metrics.clone(),
            crate::http::HttpMetrics::register(registry),
            s.http_upstream_timeout,
            s.http_max_request_body,
            s.http_upstream_http2,
            (s.limits.clone(), fd_budget),
        );
        Planes {
            planes: vec![Box::new(postgres), Box::new(http)],
            accept,
        }
    }

    /// The accept loops of the listeners, also those a later bundle opens,
    /// for a shutdown to stop.
    pub fn accept_loops(&self) -> AcceptLoops {
        self.accept.clone()
    }

    /// Stages every plane's Connections of the bundle (see
    /// [`Plane::prepare`]); returns how many listeners they need in all.
    pub fn prepare(&mut self, bundle: Prepare<'_>) -> Result<usize, SetupError> {
        let mut listeners = 0;
        for plane in &mut self.planes {
            listeners += plane.prepare(bundle)?;
        }
        Ok(listeners)
    }

    /// Puts every plane's staged Connections in force (see [`Plane::commit`]).
    pub async fn commit(&mut self, put: Commit<'_>) -> Result<(), BindError> {
        for plane in &mut self.planes {
            plane.commit(put).await?;
        }
        Ok(())
    }

    /// Every plane refuses everything with `why`.
    pub fn withdraw(&self, why: &str) {
        for plane in &self.planes {
            plane.withdraw(why);
        }
    }

    /// Every listener of every plane.
    pub fn listeners(&self) -> Vec<Listener> {
        self.planes.iter().flat_map(|p| p.listeners()).collect()
    }

    /// Lets every listener serve on by itself (see [`Plane::detach`]).
    pub fn detach(self) {
        for plane in self.planes {
            plane.detach();
        }
    }
}
