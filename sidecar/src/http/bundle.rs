//! The http plane's [`Plane`]: the http Connections of a bundle (run mode's
//! from the operator, standalone's built from local manifests), each on its
//! own listener; a new bundle replaces the Connection's [`HttpContext`]
//! (policies, credentials, upstream) for the next request.
//!
//! Credentials stay in memory only (sensitive [`http::HeaderValue`]s inside
//! the upstream client). The upstream client, and with it its pool of
//! upstream connections, is kept across bundles while the upstream's URL,
//! TLS settings and credentials are unchanged: a policy edit does not cost a
//! TLS handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_crds::Protocol;
use sluice_policy::engine::PolicySet;
use sluice_policy::wire::BundleConnection;
use tokio::sync::watch;

use super::{HttpContext, HttpMetrics, HttpParts, HttpSetupError, HttpStanding, HttpUpstream};
use crate::limits::{FdBudget, Limits, ListenerSlots};
use crate::metrics::Metrics;
use crate::plane::{
    AcceptLoops, BindError, Commit, Entry, Plan, PlanOf, Plane, Prepare, Served, SetupError, bind,
};
use crate::rate::RateLimit;
use crate::standing::{HashKeyError, Standing};
use crate::tls;

/// One http Connection of a bundle, ready to be put in force; its own part
/// identifies the upstream settings (hashed: no credential kept twice).
pub type HttpPlan = PlanOf<HttpConnections>;

/// The upstream in force, when the Connection is bound.
fn upstream_of(standing: &HttpStanding) -> Option<Arc<HttpUpstream>> {
    match standing {
        Standing::Bound { plane, .. } => Some(plane.upstream.clone()),
        _ => None,
    }
}

/// One served http Connection ([`Entry`]): the context its next request
/// reads (the standing in force is in it), and the upstream client kept
/// while its settings are unchanged.
pub struct HttpServed {
    upstream_key: [u8; 32],
    upstream: Option<Arc<HttpUpstream>>,
    context: watch::Sender<Arc<HttpContext>>,
}

impl HttpServed {
    /// The Connection's rate bucket, kept across bundles (see [`crate::rate`]).
    fn rate(&self) -> Arc<RateLimit> {
        self.context.borrow().rate.clone()
    }
}

impl Entry for HttpServed {
    fn is_bound(&self) -> bool {
        self.context.borrow().standing.is_bound()
    }

    /// The next request reads a context whose standing refuses with `why`.
    fn refuse(&self, why: String) {
        self.context.send_modify(|ctx| {
            let mut next = HttpContext::clone(ctx);
            next.standing = Standing::Unavailable(why);
            *ctx = Arc::new(next);
        });
    }
}

/// The http Connections served (run mode and standalone).
pub struct HttpConnections {
    served: Served<HttpServed>,
    metrics: Arc<Metrics>,
    http_metrics: HttpMetrics,
    timeout: Duration,
    max_request_body: usize,
    http2: bool,
    limits: Limits,
    fd_budget: FdBudget,
}

impl HttpConnections {
    /// Serves nothing yet; the accept loops of its listeners are registered
    /// in `accept`, for a shutdown to stop.
    pub fn new(
        metrics: Arc<Metrics>,
        http_metrics: HttpMetrics,
        timeout: Duration,
        max_request_body: usize,
        http2: bool,
        (limits, fd_budget, accept): (Limits, FdBudget, AcceptLoops),
    ) -> Self {
        HttpConnections {
            served: Served::new(accept),
            metrics,
            http_metrics,
            timeout,
            max_request_body,
            http2,
            limits,
            fd_budget,
        }
    }

    /// Plans `conn`, an http Connection of the bundle.
    fn plan_one(
        &self,
        conn: &BundleConnection,
        prepare: &Prepare<'_>,
    ) -> Result<HttpPlan, HttpSetupError> {
        let name = conn.name.clone();
        let setup = |what: String| HttpSetupError::Bundle {
            connection: name.clone(),
            what,
        };
        let base_url = conn.spec.upstream.base_url.clone().ok_or_else(|| {
            setup("spec.upstream.baseURL is not set (http Connections need it)".into())
        })?;
        // An https URL always verifies; `disable` only makes sense for http:// URLs.
        let mode = match conn.spec.upstream.tls_mode() {
            sluice_crds::TlsMode::Disable => sluice_crds::TlsMode::VerifyFull,
            m => m,
        };
        let credentials: Vec<(String, Vec<u8>)> = conn
            .credentials
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        let upstream_key = upstream_key(&base_url, mode, conn.ca_pem.as_deref(), &credentials);
        let inspection = Arc::new(super::inspection(prepare.bundle.policies.iter(), &name));
        let served = self.served.get(&name);
        let plane = |_: &Arc<PolicySet>, _: Option<&[u8]>| -> Result<HttpParts, HttpSetupError> {
            let upstream = match served {
                Some(s) if s.upstream_key == upstream_key && s.upstream.is_some() => {
                    s.upstream.clone()
                }
                _ => None,
            };
            let upstream = match upstream {
                Some(u) => u,
                None => {
                    let ca = conn.ca_pem.as_deref().map(str::as_bytes);
                    let tls = tls::client_config(&name, mode, ca)
                        .map_err(|e| setup(e.to_string()))?
                        .map(|c| (*c).clone())
                        .ok_or_else(|| setup("no TLS configuration could be built".into()))?;
                    Arc::new(HttpUpstream::new(
                        &name,
                        &base_url,
                        tls,
                        &credentials,
                        self.timeout,
                        self.http2,
                    )?)
                }
            };
            Ok(HttpParts {
                inspection: inspection.clone(),
                upstream,
            })
        };
        let standing = Standing::for_connection(prepare.policies, prepare.identity, conn, plane)?;
        Ok(Plan::new(conn, standing, upstream_key))
    }

    /// Puts `plan` in force: the next request of its Connection uses it; a
    /// new Connection gets a listener on `listen_host`, with its share of
    /// the descriptors of the `listeners` served in all (see
    /// [`crate::limits`]). A request that needs approval asks `approvals`.
    async fn put_one(&mut self, plan: HttpPlan, put: &Commit<'_>) -> Result<(), BindError> {
        let rate = match self.served.get(&plan.name) {
            Some(s) => s.rate(),
            None => Arc::new(RateLimit::new()),
        };
        let ctx = Arc::new(HttpContext {
            name: plan.name.clone(),
            rate,
            identity: put.identity.clone(),
            standing: plan.standing.clone(),
            approvals: put.approvals.cloned(),
            max_request_body: self.max_request_body,
            audit: put.audit.clone(),
            metrics: self.metrics.for_connection(&plan.name),
            http_metrics: self.http_metrics.for_connection(&plan.name),
            audit_cache: Default::default(),
        });
        if let Some(s) = self.served.get_mut(&plan.name) {
            s.context.send_replace(ctx);
            s.upstream_key = plan.own;
            s.upstream = upstream_of(&plan.standing);
            return Ok(());
        }
        let (listener, addr) =
            bind(&plan.name, SocketAddr::new(put.listen_host, plan.port)).await?;
        tracing::info!(connection = %plan.name, %addr, "listening (http)");
        let (tx, rx) = watch::channel(ctx);
        let slots = ListenerSlots::new(&plan.name, &self.limits, &self.fd_budget, put.listeners);
        let accept_loop = super::serve(listener, rx, slots, self.limits.clone());
        let served = HttpServed {
            upstream_key: plan.own,
            upstream: upstream_of(&plan.standing),
            context: tx,
        };
        self.served.insert(plan.name, addr, served, accept_loop);
        Ok(())
    }
}

impl Plane for HttpConnections {
    const PROTOCOL: Protocol = Protocol::Http;
    type Parts = HttpParts;
    type Own = [u8; 32];
    type Entry = HttpServed;

    fn plan(&self, conn: &BundleConnection, bundle: &Prepare<'_>) -> Result<HttpPlan, SetupError> {
        Ok(self.plan_one(conn, bundle)?)
    }

    async fn put_in_force(&mut self, plan: HttpPlan, put: &Commit<'_>) -> Result<(), BindError> {
        self.put_one(plan, put).await
    }

    fn served(&self) -> &Served<HttpServed> {
        &self.served
    }

    fn served_mut(&mut self) -> &mut Served<HttpServed> {
        &mut self.served
    }
}

impl From<HashKeyError> for HttpSetupError {
    fn from(e: HashKeyError) -> Self {
        HttpSetupError::Bundle {
            connection: e.connection,
            what: e.what,
        }
    }
}

/// Identifies an upstream's settings (hashed: no credential kept twice):
/// an unchanged key keeps the upstream client and its pool of connections.
fn upstream_key(
    base_url: &str,
    mode: sluice_crds::TlsMode,
    ca_pem: Option<&str>,
    credentials: &[(String, Vec<u8>)],
) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [base_url.as_bytes(), format!("{mode:?}").as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    h.update(ca_pem.unwrap_or_default());
    h.update([0]);
    for (k, v) in credentials {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v);
        h.update([0]);
    }
    h.finalize().into()
}
