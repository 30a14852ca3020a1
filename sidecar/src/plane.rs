//! A data plane, as run mode and standalone see it: the Connections of one
//! protocol, each on its own listener, put in force bundle after bundle.
//!
//! Run mode ([`crate::run`]) and standalone ([`crate::standalone`]) hold
//! every plane as a [`Plane`] in [`crate::planes::Planes`] and put a bundle
//! in force in two steps: `prepare` builds every plane's Connections (an
//! error leaves what is served untouched), then `commit` puts them in force
//! (listeners opened or updated); `withdraw` refuses everything once no
//! bundle is in force.
//!
//! Every plane keeps the Connections it serves in one [`Served`] set (their
//! listeners, what their live sessions follow, their accept loops, which a
//! shutdown stops through the planes' [`AcceptLoops`]): withdrawing,
//! listing and detaching are the same for every plane.

mod served;

pub use served::{AcceptLoops, Entry, Live, Served, bind};

use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sluice_policy::engine::{CompiledPolicy, Identity};
use sluice_policy::wire::Bundle;

use crate::approval::Approvals;
use crate::audit::AuditLog;

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

/// One data plane: the Connections of one protocol of a bundle, each on its
/// own listener.
///
/// A new plane (MySQL next) needs only its protocol code (framing,
/// sessions, its side of the policy engine) plus an impl of this trait,
/// registered in [`crate::planes::Planes::new`]: run mode and standalone
/// then fetch, compile, prepare, commit, withdraw and list its Connections
/// as they do every other plane's, and the spine ([`crate::standing`],
/// [`crate::approval`], [`crate::audit`], [`crate::limits`]) is shared.
pub trait Plane: Send + Sync + 'static {
    /// One Connection of a bundle, built and ready to be put in force.
    type Plan: Send + Sync + 'static;

    /// What the plane keeps for each Connection it serves.
    type Entry: Entry;

    /// Builds this plane's Connections of the bundle without changing
    /// anything served: an error leaves the bundle in force as it was.
    fn prepare(&self, bundle: Prepare<'_>) -> Result<Vec<Self::Plan>, SetupError>;

    /// Puts `plans` in force: live sessions follow their Connection's new
    /// standing, new Connections get a listener (opened and served through
    /// [`Plane::served_mut`]). Connections served but not in `plans` refuse
    /// everything from now on ([`Served::retire_others`]).
    fn commit(
        &mut self,
        plans: Vec<Self::Plan>,
        put: Commit<'_>,
    ) -> impl Future<Output = Result<(), BindError>> + Send;

    /// The Connections the plane serves.
    fn served(&self) -> &Served<Self::Entry>;

    /// [`Plane::served`], to change.
    fn served_mut(&mut self) -> &mut Served<Self::Entry>;

    /// No bundle is in force any more: everything is refused with `why`.
    fn withdraw(&self, why: &str) {
        self.served().withdraw(why);
    }

    /// Every listener of the plane.
    fn listeners(&self) -> Vec<Listener> {
        self.served().listeners()
    }

    /// Lets the listeners serve on as they are, for as long as the runtime
    /// runs (standalone: nothing ever changes what is in force); a shutdown
    /// still stops them.
    fn detach(mut self)
    where
        Self: Sized,
    {
        self.served_mut().detach();
    }
}
