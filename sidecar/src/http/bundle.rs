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
use tokio::sync::watch;

use super::{HttpContext, HttpMetrics, HttpParts, HttpSetupError, HttpStanding, HttpUpstream};
use crate::limits::{FdBudget, Limits, ListenerSlots};
use crate::metrics::Metrics;
use crate::plane::{
    AcceptLoops, BindError, Commit, Entry, Plane, Prepare, Served, SetupError, bind,
};
use crate::rate::RateLimit;
use crate::standing::{HashKeyError, Standing, plane_connections};
use crate::tls;

/// One http Connection of a bundle, ready to be put in force.
pub struct HttpPlan {
    name: String,
    port: u16,
    /// Identifies the upstream settings (hashed: no credential kept twice).
    upstream_key: [u8; 32],
    /// What is in force for the identity on the Connection.
    standing: HttpStanding,
}

impl HttpPlan {
    /// The upstream in force, when the Connection is bound.
    fn upstream(&self) -> Option<Arc<HttpUpstream>> {
        match &self.standing {
            Standing::Bound { plane, .. } => Some(plane.upstream.clone()),
            _ => None,
        }
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

    /// Builds the http Connections of the bundle (only those in `only`,
    /// when set) without changing anything served: an error leaves the
    /// bundle in force as it was.
    fn plans(&self, prepare: Prepare<'_>) -> Result<Vec<HttpPlan>, HttpSetupError> {
        let Prepare {
            bundle,
            identity,
            policies,
            only,
        } = prepare;
        let mut plans = Vec::new();
        for conn in plane_connections(bundle, Protocol::Http, only) {
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
            let inspection = Arc::new(super::inspection(bundle.policies.iter(), &name));
            let served = self.served.get(&name);
            let plane = |_: &Arc<PolicySet>,
                         _: Option<&[u8]>|
             -> Result<HttpParts, HttpSetupError> {
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
            let standing = Standing::for_connection(policies, identity, conn, plane)?;
            plans.push(HttpPlan {
                name,
                port: conn.spec.listen.port,
                upstream_key,
                standing,
            });
        }
        Ok(plans)
    }

    /// Puts `plans` in force: the next request of each Connection uses them;
    /// new Connections get a listener on `listen_host`. Connections served
    /// but not in `plans` refuse requests from now on. A request that needs
    /// approval asks `approvals`. A new listener takes its share of the
    /// descriptors of the `listeners` served in all (see [`crate::limits`]).
    async fn put_in_force(
        &mut self,
        plans: Vec<HttpPlan>,
        put: Commit<'_>,
    ) -> Result<(), BindError> {
        let Commit {
            identity,
            audit,
            approvals,
            listen_host,
            revision,
            listeners,
        } = put;
        let mut seen = Vec::new();
        for plan in plans {
            seen.push(plan.name.clone());
            plan.standing
                .log_in_force(&plan.name, Some(revision), identity, "requests");
            let rate = match self.served.get(&plan.name) {
                Some(s) => s.rate(),
                None => Arc::new(RateLimit::new()),
            };
            let ctx = Arc::new(HttpContext {
                name: plan.name.clone(),
                rate,
                identity: identity.clone(),
                standing: plan.standing.clone(),
                approvals: approvals.cloned(),
                max_request_body: self.max_request_body,
                audit: audit.clone(),
                metrics: self.metrics.for_connection(&plan.name),
                http_metrics: self.http_metrics.for_connection(&plan.name),
                audit_cache: Default::default(),
            });
            if let Some(s) = self.served.get_mut(&plan.name) {
                s.context.send_replace(ctx);
                s.upstream_key = plan.upstream_key;
                s.upstream = plan.upstream();
                continue;
            }
            let (listener, addr) =
                bind(&plan.name, SocketAddr::new(listen_host, plan.port)).await?;
            tracing::info!(connection = %plan.name, %addr, "listening (http)");
            let (tx, rx) = watch::channel(ctx);
            let slots = ListenerSlots::new(&plan.name, &self.limits, &self.fd_budget, listeners);
            let accept_loop = super::serve(listener, rx, slots, self.limits.clone());
            let served = HttpServed {
                upstream_key: plan.upstream_key,
                upstream: plan.upstream(),
                context: tx,
            };
            self.served.insert(plan.name, addr, served, accept_loop);
        }
        self.served.retire_others(&seen, revision);
        Ok(())
    }
}

impl Plane for HttpConnections {
    type Plan = HttpPlan;
    type Entry = HttpServed;

    fn prepare(&self, bundle: Prepare<'_>) -> Result<Vec<HttpPlan>, SetupError> {
        Ok(self.plans(bundle)?)
    }

    async fn commit(&mut self, plans: Vec<HttpPlan>, put: Commit<'_>) -> Result<(), BindError> {
        self.put_in_force(plans, put).await
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
