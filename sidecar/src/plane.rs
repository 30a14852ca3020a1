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

use sluice_crds::Protocol;
use sluice_policy::engine::{CompiledPolicy, Identity};
use sluice_policy::wire::{Bundle, BundleConnection};

use crate::approval::Approvals;
use crate::audit::AuditLog;
use crate::standing::{SqlParts, Standing, plane_connections};

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

/// One Connection of a bundle as its plane planned it, ready to be put in
/// force: what every plane plans (the Connection, the port it listens on,
/// the [`Standing`] in force for the identity on it) and the plane's own
/// part `T` (its upstream); `P` is the plane's part of a bound standing.
pub struct Plan<T, P = SqlParts> {
    /// The Connection.
    pub name: String,
    /// The port its listener binds.
    pub port: u16,
    /// What is in force for the identity on it.
    pub standing: Standing<P>,
    /// The plane's own part.
    pub own: T,
}

impl<T, P> Plan<T, P> {
    /// The plan of `conn` (a Connection of the bundle) under `standing`.
    pub fn new(conn: &BundleConnection, standing: Standing<P>, own: T) -> Self {
        Plan {
            name: conn.name.clone(),
            port: conn.spec.listen.port,
            standing,
            own,
        }
    }
}

/// The plan of one Connection of plane `P`.
pub type PlanOf<P> = Plan<<P as Plane>::Own, <P as Plane>::Parts>;

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
    /// The protocol of the Connections it serves.
    const PROTOCOL: Protocol;

    /// The plane's part of a bound [`Standing`].
    type Parts: Send + Sync + 'static;

    /// The plane's own part of a Connection's [`Plan`].
    type Own: Send + Sync + 'static;

    /// What the plane keeps for each Connection it serves.
    type Entry: Entry;

    /// Plans `conn`, one of its Connections of the bundle, without
    /// changing anything served.
    fn plan(
        &self,
        conn: &BundleConnection,
        bundle: &Prepare<'_>,
    ) -> Result<PlanOf<Self>, SetupError>;

    /// Puts `plan` in force: its Connection's live sessions follow the new
    /// standing when it is served, else it gets a listener (opened and
    /// served through [`Plane::served_mut`]).
    fn put_in_force(
        &mut self,
        plan: PlanOf<Self>,
        put: &Commit<'_>,
    ) -> impl Future<Output = Result<(), BindError>> + Send;

    /// Plans this plane's Connections of the bundle (only those in `only`,
    /// when set) without changing anything served: an error leaves the
    /// bundle in force as it was.
    fn prepare(&self, bundle: Prepare<'_>) -> Result<Vec<PlanOf<Self>>, SetupError> {
        plane_connections(bundle.bundle, Self::PROTOCOL, bundle.only)
            .map(|conn| self.plan(conn, &bundle))
            .collect()
    }

    /// Puts `plans` in force, one after the other, each logging what it
    /// puts in force first. Connections served but not in `plans` refuse
    /// everything from now on ([`Served::retire_others`]); not when a
    /// listener could not bind (the error stops the commit there).
    fn commit(
        &mut self,
        plans: Vec<PlanOf<Self>>,
        put: Commit<'_>,
    ) -> impl Future<Output = Result<(), BindError>> + Send {
        async move {
            let mut seen = Vec::new();
            for plan in plans {
                seen.push(plan.name.clone());
                // What an identity no policy binds gets refused, for the log.
                let refused = match Self::PROTOCOL {
                    Protocol::Http => "requests",
                    Protocol::Postgres | Protocol::Mysql => "sessions",
                };
                plan.standing
                    .log_in_force(&plan.name, Some(put.revision), put.identity, refused);
                self.put_in_force(plan, &put).await?;
            }
            self.served().retire_others(&seen, put.revision);
            Ok(())
        }
    }

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
