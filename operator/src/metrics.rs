//! Prometheus metrics of the operator, served at `/metrics`. Every label value
//! is a `&'static str` from a bounded set (a route, an outcome, an error
//! kind), never an object name or an error's text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a gateway API answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, e.g. `token`, `bundle`.
    pub route: &'static str,
    /// `ok`, `not_modified`, or the refusal's bounded reason.
    pub outcome: &'static str,
}

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `connection` or `accesspolicy`.
    pub controller: &'static str,
    /// `ok`, or the error kind.
    pub outcome: &'static str,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Gateway API answers.
    pub requests: Family<RequestLabels, Counter>,
    /// Reconciles.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Audit events taken in.
    pub audit_events: Counter,
    /// Bundle long-polls woken by a change in their namespace.
    pub bundle_wakeups: Counter,
    /// Bundle long-polls waiting now.
    pub bundle_waiting: Gauge,
    /// Approval long-polls (`GET /v1/approvals/{name}?wait=`) waiting now.
    pub approval_waiting: Gauge,
}

impl Metrics {
    /// Registers every metric under the `sluice` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Gateway API and webhook answers, by route and outcome",
            requests.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of Connections and AccessPolicies, by outcome",
            reconciles.clone(),
        );
        let audit_events = Counter::default();
        registry.register(
            "audit_events",
            "Audit events received from sidecars",
            audit_events.clone(),
        );
        let bundle_wakeups = Counter::default();
        registry.register(
            "gateway_bundle_wakeups",
            "Bundle long-polls woken by a change of a watched object in their namespace (each rebuilds its bundle)",
            bundle_wakeups.clone(),
        );
        let bundle_waiting = Gauge::default();
        registry.register(
            "gateway_bundle_waiting",
            "Bundle long-polls waiting for a change now",
            bundle_waiting.clone(),
        );
        let approval_waiting = Gauge::default();
        registry.register(
            "gateway_approval_waiting",
            "Approval long-polls waiting for a decision now",
            approval_waiting.clone(),
        );
        Metrics {
            registry,
            bundle_wakeups,
            bundle_waiting,
            approval_waiting,
            requests,
            reconciles,
            audit_events,
        }
    }

    /// Counts one gateway answer.
    pub fn request(&self, route: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { route, outcome })
            .inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
