//! The MySQL plane's [`Plane`]: the mysql Connections of a bundle, each on
//! its own listener (see [`crate::postgres::bundle`] for the shape every
//! plane follows).

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_crds::Protocol;
use sluice_policy::wire::BundleConnection;
use tokio::sync::watch;
use tracing::Instrument;
use zeroize::Zeroizing;

use super::session::MyContext;
use super::upstream::MyUpstream;
use crate::limits::{FdBudget, Limits, ListenerSlots, accept_within};
use crate::metrics::Metrics;
use crate::plane::{
    AcceptLoops, BindError, Commit, Live, Plan, PlanOf, Plane, Prepare, Served, SetupError, bind,
};
use crate::standing::{Binding, SqlParts, Standing};

/// One mysql Connection of a bundle, ready to be put in force.
pub type MyPlan = PlanOf<MyConnections>;

/// The MySQL plane's own part of a [`MyPlan`].
pub struct MyTarget {
    upstream: MyUpstream,
    /// Why its sessions are refused, when its TLS settings are unusable.
    unserved: Option<String>,
}

/// The mysql Connections served.
pub struct MyConnections {
    served: Served<Live<MyContext>>,
    limits: Limits,
    fd_budget: FdBudget,
    max_packet: usize,
    metrics: Arc<Metrics>,
}

impl MyConnections {
    /// Serves nothing yet; `max_packet` bounds a client's packets; the
    /// accept loops of its listeners are registered in `accept`, for a
    /// shutdown to stop; each Connection counts in its series of `metrics`.
    pub fn new(
        limits: Limits,
        fd_budget: FdBudget,
        max_packet: usize,
        accept: AcceptLoops,
        metrics: Arc<Metrics>,
    ) -> Self {
        MyConnections {
            served: Served::new(accept),
            limits,
            fd_budget,
            max_packet,
            metrics,
        }
    }

    fn upstream(&self, conn: &BundleConnection) -> Result<MyTarget, SetupError> {
        let creds = conn.credentials.clone().unwrap_or_default();
        let missing =
            |what: &str| -> SetupError { format!("Connection {}: {what}", conn.name).into() };
        let (username, password) = if conn.bound {
            (
                creds
                    .get("username")
                    .cloned()
                    .ok_or_else(|| missing("the bundle has no username for it"))?,
                creds
                    .get("password")
                    .cloned()
                    .ok_or_else(|| missing("the bundle has no password for it"))?,
            )
        } else {
            (String::new(), String::new())
        };
        let host = conn
            .spec
            .upstream
            .host
            .clone()
            .ok_or_else(|| missing("spec.upstream.host is not set"))?;
        let tls_mode = conn
            .spec
            .upstream
            .tls
            .as_ref()
            .map(|t| t.mode)
            .unwrap_or_default();
        // A TLS setting that cannot be used refuses this Connection's
        // sessions with the reason; other Connections are served.
        let (tls, unserved) = match crate::tls::client_config(
            &conn.name,
            tls_mode,
            conn.ca_pem.as_deref().map(str::as_bytes),
        ) {
            Ok(t) => (t, None),
            Err(e) => (None, Some(format!("Sluice refused the session: {e}"))),
        };
        Ok(MyTarget {
            upstream: MyUpstream {
                connection: conn.name.clone(),
                host,
                port: conn
                    .spec
                    .upstream
                    .port
                    .unwrap_or(Protocol::Mysql.default_port()),
                database: conn.spec.upstream.database.clone(),
                username,
                password: Zeroizing::new(password),
                tls_mode,
                tls,
                max_packet: 64 * 1024 * 1024,
            },
            unserved,
        })
    }

    fn context(&self, plan: MyPlan, binding: Binding, put: &Commit<'_>) -> MyContext {
        MyContext {
            metrics: self.metrics.for_connection(&plan.name),
            approvals: put.approvals.cloned(),
            name: plan.name,
            upstream: plan.own.upstream,
            binding,
            audit: put.audit.clone(),
            max_packet: self.max_packet,
            unserved: plan.own.unserved,
            startup_timeout: self.limits.pg_startup_timeout,
        }
    }
}

impl Plane for MyConnections {
    const PROTOCOL: Protocol = Protocol::Mysql;
    type Parts = SqlParts;
    type Own = MyTarget;
    type Entry = Live<MyContext>;

    fn plan(&self, conn: &BundleConnection, bundle: &Prepare<'_>) -> Result<MyPlan, SetupError> {
        // A rule with a textPattern can match literal values: the
        // sessions' decision caches then key texts exactly (see
        // `session::decisions`).
        let literal_sensitive = bundle.bundle.policies.iter().any(|ap| {
            ap.spec
                .rules
                .iter()
                .any(|r| r.match_.text_pattern.is_some())
        });
        let target = self.upstream(conn)?;
        let standing = Standing::for_connection(bundle.policies, bundle.identity, conn, |_, _| {
            Ok::<_, SetupError>(SqlParts::new(literal_sensitive, ""))
        })?;
        Ok(Plan::new(conn, standing, target))
    }

    async fn put_in_force(&mut self, plan: MyPlan, put: &Commit<'_>) -> Result<(), BindError> {
        let name = plan.name.clone();
        let standing = plan.standing.clone();
        if let Some(live) = self.served.get(&name) {
            live.update(put.identity, &name, standing, |binding| {
                self.context(plan, binding, put)
            });
            return Ok(());
        }
        let upstream = &plan.own.upstream;
        let (listener, addr) = bind(&name, SocketAddr::new(put.listen_host, plan.port)).await?;
        tracing::info!(connection = %name, %addr, upstream = %format!("{}:{}", upstream.host, upstream.port), tls = crate::tls::mode_name(upstream.tls_mode), "listening (mysql)");
        let (live, contexts) = Live::new(put.identity, &name, standing, |binding| {
            self.context(plan, binding, put)
        });
        let slots = ListenerSlots::new(&name, &self.limits, &self.fd_budget, put.listeners);
        let span = tracing::info_span!("mysql", connection = %name);
        let accept_loop = accept(listener, contexts, slots).instrument(span);
        self.served.insert(name, addr, live, accept_loop);
        Ok(())
    }

    fn served(&self) -> &Served<Self::Entry> {
        &self.served
    }

    fn served_mut(&mut self) -> &mut Served<Self::Entry> {
        &mut self.served
    }
}

/// Accepts MySQL sessions within `slots`; each gets the Connection's
/// context at that moment.
async fn accept(
    listener: tokio::net::TcpListener,
    context: watch::Receiver<Arc<MyContext>>,
    slots: ListenerSlots,
) {
    loop {
        let (socket, peer, admitted) = accept_within(&listener, &slots, refuse).await;
        let ctx = context.borrow().clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            super::session::serve(ctx, socket, peer).await;
        });
    }
}

/// Past the listener's slots: an ERR packet in place of the greeting
/// (ER_CON_COUNT_ERROR), then closed.
async fn refuse(mut socket: tokio::net::TcpStream, refused: crate::limits::Refused) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::new();
    let mut seq = 0;
    super::packet::write_packet(
        &mut out,
        &mut seq,
        &super::packet::err_payload(1040, "08004", &refused.to_string()),
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), socket.write_all(&out)).await;
}
