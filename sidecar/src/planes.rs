//! Every data plane of the sidecar ([`Planes`]), as run mode and standalone
//! hold them: one call prepares, commits, withdraws or lists them all. A new
//! plane is registered in [`Planes::new`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::http::bundle::HttpConnections;
use crate::limits::FdBudget;
use crate::metrics::Metrics;
use crate::mysql::bundle::MyConnections;
use crate::plane::{AcceptLoops, BindError, Commit, Listener, PlanOf, Plane, Prepare, SetupError};
use crate::postgres::bundle::{PgConnections, PgShared};

mod settings;

pub use settings::{PlaneSettings, ServingArgs, SettingError, env, flag_of, shutdown_grace};

/// Every plane of the sidecar.
pub struct Planes {
    planes: Vec<Box<dyn Staged>>,
    accept: AcceptLoops,
}

impl Planes {
    /// Every plane, serving nothing yet, its metrics in `registry`.
    pub fn new(settings: &PlaneSettings, metrics: &Arc<Metrics>, registry: &mut Registry) -> Self {
        let s = settings;
        let fd_budget = FdBudget::new(s.limits.fd_reserve);
        // One for every plane: a shutdown stops them all.
        let accept = AcceptLoops::default();
        let postgres = PgConnections::new(
            PgShared::new(
                metrics,
                &s.limits,
                fd_budget.clone(),
                s.max_message_size,
                s.catalog,
            ),
            accept.clone(),
        );
        let http = HttpConnections::new(
            metrics.clone(),
            crate::http::HttpMetrics::register(registry),
            s.http_upstream_timeout,
            s.http_max_request_body,
            s.http_upstream_http2,
            (s.limits.clone(), fd_budget.clone(), accept.clone()),
        );
        let mysql = MyConnections::new(
            s.limits.clone(),
            fd_budget,
            s.max_message_size,
            accept.clone(),
            metrics.clone(),
        );
        Planes {
            planes: vec![
                Staging::boxed(postgres),
                Staging::boxed(http),
                Staging::boxed(mysql),
            ],
            accept,
        }
    }

    /// The accept loops of every plane's listeners, also those a later
    /// bundle opens, for a shutdown to stop.
    pub fn accept_loops(&self) -> AcceptLoops {
        self.accept.clone()
    }

    /// Builds every plane's Connections of the bundle, kept for
    /// [`Planes::commit`] (see [`Plane::prepare`]); returns how many
    /// listeners they need in all.
    pub fn prepare(&mut self, bundle: Prepare<'_>) -> Result<usize, SetupError> {
        let mut listeners = 0;
        for plane in &mut self.planes {
            listeners += plane.prepare(bundle)?;
        }
        Ok(listeners)
    }

    /// Puts what [`Planes::prepare`] built in force (see [`Plane::commit`]).
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

/// A plane's commit, boxed.
type Committing<'a> = Pin<Box<dyn Future<Output = Result<(), BindError>> + Send + 'a>>;

/// A [`Plane`] with the Connections its last `prepare` built, whatever its
/// protocol: what [`Planes`] holds.
trait Staged: Send + Sync {
    /// Builds and keeps the plane's Connections (replacing what an earlier
    /// call kept); returns how many listeners they need.
    fn prepare(&mut self, bundle: Prepare<'_>) -> Result<usize, SetupError>;
    /// Puts what `prepare` kept in force.
    fn commit<'a>(&'a mut self, put: Commit<'a>) -> Committing<'a>;
    fn withdraw(&self, why: &str);
    fn listeners(&self) -> Vec<Listener>;
    fn detach(self: Box<Self>);
}

struct Staging<P: Plane> {
    plane: P,
    plans: Vec<PlanOf<P>>,
}

impl<P: Plane> Staging<P> {
    fn boxed(plane: P) -> Box<dyn Staged> {
        Box::new(Staging {
            plane,
            plans: Vec::new(),
        })
    }
}

impl<P: Plane> Staged for Staging<P> {
    fn prepare(&mut self, bundle: Prepare<'_>) -> Result<usize, SetupError> {
        self.plans = self.plane.prepare(bundle)?;
        Ok(self.plans.len())
    }

    fn commit<'a>(&'a mut self, put: Commit<'a>) -> Committing<'a> {
        let plans = std::mem::take(&mut self.plans);
        Box::pin(self.plane.commit(plans, put))
    }

    fn withdraw(&self, why: &str) {
        self.plane.withdraw(why);
    }

    fn listeners(&self) -> Vec<Listener> {
        self.plane.listeners()
    }

    fn detach(self: Box<Self>) {
        self.plane.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunConfig;
    use crate::standalone::StandaloneConfig;

    /// Both modes hold one [`PlaneSettings`]: their defaults cannot drift
    /// apart, and run mode's variables land in the same fields standalone's
    /// flags set.
    #[test]
    fn both_modes_serve_their_planes_with_the_same_settings() {
        let run = RunConfig::new("https://op".into(), "/token".into(), "CA".into());
        let standalone = StandaloneConfig::new("m.yaml".into(), "shop/app".into());
        assert_eq!(run.planes, standalone.planes);
        assert_eq!(run.planes, PlaneSettings::default());
        assert!(run.planes.http_upstream_http2);

        let vars = [
            ("SLUICE_GATEWAY_URL", "https://op"),
            ("SLUICE_TOKEN_FILE", "/token"),
            ("SLUICE_CA_PEM", "CA"),
            ("SLUICE_HTTP_TIMEOUT", "2.5"),
            ("SLUICE_HTTP_MAX_BODY", "4096"),
            ("SLUICE_HTTP_UPSTREAM_HTTP1_ONLY", "true"),
            ("SLUICE_MAX_CONNECTIONS", "7"),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let run = RunConfig::from_vars(lookup).unwrap();
        let mut standalone = StandaloneConfig::new("m.yaml".into(), "shop/app".into());
        // What `standalone --http-timeout 2.5 --http-max-body 4096
        // --http-upstream-http1-only --max-connections 7` sets.
        standalone.planes.http_upstream_timeout = std::time::Duration::from_millis(2500);
        standalone.planes.http_max_request_body = 4096;
        standalone.planes.http_upstream_http2 = false;
        standalone.planes.limits.max_connections = 7;
        assert_eq!(run.planes, standalone.planes);
    }
}
