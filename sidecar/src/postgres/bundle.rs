//! The postgres plane's [`Plane`]: the postgres Connections of a bundle (run
//! mode's from the operator, standalone's built from local manifests), each
//! on its own listener. [`Plane::prepare`] builds everything and can fail
//! without changing anything served, then [`Plane::commit`] puts it in force
//! (live sessions follow their Connection's [`Standing`] at their next
//! statement; new sessions get the new [`ConnectionContext`]);
//! [`Plane::withdraw`] refuses everything once no bundle is in force.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_crds::Protocol;
use sluice_policy::wire::{Bundle, BundleConnection};
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::limits::{BufferBudget, FdBudget, Limits, ListenerSlots};
use crate::metrics::Metrics;
use crate::plane::{
    AcceptLoops, BindError, Commit, Live, Plan, PlanOf, Plane, Prepare, Served, SetupError, bind,
};
use crate::postgres::cancel::CancelRegistry;
use crate::postgres::catalog::{CatalogPool, PoolSettings};
use crate::postgres::session::ConnectionContext;
use crate::postgres::upstream::UpstreamConfig;
use crate::standing::{Binding, HashKeyError, SqlParts, Standing};
use crate::tls::TlsError;

/// Why a postgres Connection of a bundle cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PgSetupError {
    /// Its settings are unusable.
    #[error("Connection {connection}: {what}")]
    Connection {
        /// Connection.
        connection: String,
        /// What is wrong.
        what: String,
    },
    /// Its TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Its masking hash key is unusable.
    #[error(transparent)]
    HashKey(#[from] HashKeyError),
}

/// One postgres Connection of a bundle, ready to be put in force: its
/// upstream is the plane's own part.
pub type PgPlan = PlanOf<PgConnections>;

/// What every postgres Connection's sessions share.
pub struct PgShared {
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// Where CancelRequests find their session.
    pub cancel: Arc<CancelRegistry>,
    /// Largest protocol message.
    pub max_message_size: usize,
    /// The catalog pool's settings.
    pub catalog: PoolSettings,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// The process's descriptors, shared by the listeners.
    pub fd_budget: FdBudget,
    /// The sessions' buffer budget, shared by the listeners.
    pub buffer_budget: BufferBudget,
}

impl PgShared {
    /// What the sessions of every postgres Connection of a sidecar share:
    /// `metrics`, the connection `limits` and descriptor budget, the largest
    /// message, the catalog pool's settings; a new cancel registry and
    /// buffer budget (`limits.buffer_budget`).
    pub fn new(
        metrics: &Arc<Metrics>,
        limits: &Limits,
        fd_budget: FdBudget,
        max_message_size: usize,
        catalog: PoolSettings,
    ) -> Self {
        PgShared {
            metrics: metrics.clone(),
            cancel: Arc::new(CancelRegistry::default()),
            max_message_size,
            catalog,
            limits: limits.clone(),
            fd_budget,
            buffer_budget: metrics.buffer_budget(limits.buffer_budget),
        }
    }
}

/// The postgres Connections served (run mode and standalone).
pub struct PgConnections {
    served: Served<Live<ConnectionContext>>,
    shared: PgShared,
}

impl PgConnections {
    /// Serves nothing yet; the accept loops of its listeners are registered
    /// in `accept`, for a shutdown to stop.
    pub fn new(shared: PgShared, accept: AcceptLoops) -> Self {
        PgConnections {
            served: Served::new(accept),
            shared,
        }
    }

    /// Plans `conn`, a postgres Connection of the bundle.
    fn plan_one(
        &self,
        conn: &BundleConnection,
        prepare: &Prepare<'_>,
    ) -> Result<PgPlan, PgSetupError> {
        let upstream = upstream_config(conn, self.shared.max_message_size)?;
        let literal_sensitive = literal_sensitive(prepare.bundle);
        let standing =
            Standing::for_connection(prepare.policies, prepare.identity, conn, |_, hash_key| {
                let key = masking_key(prepare.bundle, hash_key);
                Ok::<_, PgSetupError>(SqlParts::new(literal_sensitive, &key))
            })?;
        Ok(Plan::new(conn, standing, upstream))
    }

    /// Puts `plan` in force: live sessions of its Connection follow its new
    /// standing at their next statement, new sessions get the new context;
    /// a new Connection gets a listener on `listen_host`, with its share of
    /// the descriptors of the `listeners` served in all (see
    /// [`crate::limits`]). A statement that needs approval asks
    /// `approvals`.
    async fn put_one(&mut self, plan: PgPlan, put: &Commit<'_>) -> Result<(), BindError> {
        let Some(live) = self.served.get(&plan.name) else {
            return self.listen(plan, put).await;
        };
        let catalog = live.context().catalog.clone();
        catalog.update(plan.own.clone());
        let Plan {
            name,
            own: upstream,
            standing,
            ..
        } = plan;
        live.update(put.identity, &name, standing, |binding| {
            self.context(&name, upstream, binding, &catalog, put)
        });
        Ok(())
    }

    /// A new Connection's listener, serving `plan`.
    async fn listen(&mut self, plan: PgPlan, put: &Commit<'_>) -> Result<(), BindError> {
        let Plan {
            name,
            port,
            own: upstream,
            standing,
        } = plan;
        let upstream_addr = format!("{}:{}", upstream.host, upstream.port);
        let tls = crate::tls::mode_name(upstream.tls_mode);
        let catalog = CatalogPool::new(upstream.clone(), self.shared.catalog);
        let (live, contexts) = Live::new(put.identity, &name, standing, |binding| {
            self.context(&name, upstream, binding, &catalog, put)
        });
        let (listener, addr) = bind(&name, SocketAddr::new(put.listen_host, port)).await?;
        tracing::info!(connection = %name, %addr, upstream = %upstream_addr, tls, "listening");
        let shared = &self.shared;
        let slots = ListenerSlots::new(&name, &shared.limits, &shared.fd_budget, put.listeners);
        let span = tracing::info_span!("pg", connection = %name);
        let accept_loop =
            super::listen::serve(listener, contexts, slots, shared.limits.pg_startup_timeout)
                .instrument(span);
        self.served.insert(name, addr, live, accept_loop);
        Ok(())
    }

    fn context(
        &self,
        name: &str,
        upstream: UpstreamConfig,
        binding: Binding,
        catalog: &Arc<CatalogPool>,
        put: &Commit<'_>,
    ) -> ConnectionContext {
        ConnectionContext {
            name: name.to_string(),
            upstream,
            binding,
            catalog: catalog.clone(),
            audit: put.audit.clone(),
            metrics: self.shared.metrics.for_connection(name),
            cancel: self.shared.cancel.clone(),
            max_message_size: self.shared.max_message_size,
            buffer_budget: self.shared.buffer_budget.clone(),
            approvals: put.approvals.cloned(),
        }
    }
}

impl Plane for PgConnections {
    const PROTOCOL: Protocol = Protocol::Postgres;
    type Parts = SqlParts;
    type Own = UpstreamConfig;
    type Entry = Live<ConnectionContext>;

    fn plan(&self, conn: &BundleConnection, bundle: &Prepare<'_>) -> Result<PgPlan, SetupError> {
        Ok(self.plan_one(conn, bundle)?)
    }

    async fn put_in_force(&mut self, plan: PgPlan, put: &Commit<'_>) -> Result<(), BindError> {
        self.put_one(plan, put).await
    }

    fn served(&self) -> &Served<Self::Entry> {
        &self.served
    }

    fn served_mut(&mut self) -> &mut Served<Self::Entry> {
        &mut self.served
    }
}

/// Whether a rule of the bundle has a `textPattern`: it can match
/// literals, so decisions may then differ between texts that differ only
/// in literals (see [`crate::enforcement::Enforcer`]).
fn literal_sensitive(bundle: &Bundle) -> bool {
    bundle.policies.iter().any(|ap| {
        ap.spec
            .rules
            .iter()
            .any(|r| r.match_.text_pattern.is_some())
    })
}

/// What the sessions' masks depend on: every policy of the bundle but its
/// rules (which only decide, and apply at the next statement), the Secret
/// keys, and the Connection's hash key; hashed, so that no secret is kept
/// twice.
pub fn masking_key(bundle: &Bundle, hash_key: Option<&[u8]>) -> String {
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

/// The upstream of a postgres Connection of the bundle (an unbound one
/// has no credentials: its sessions are refused before any connection).
pub fn upstream_config(
    conn: &BundleConnection,
    max_message_size: usize,
) -> Result<UpstreamConfig, PgSetupError> {
    let missing = |what: &str| PgSetupError::Connection {
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
