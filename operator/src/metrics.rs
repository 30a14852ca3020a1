//! Prometheus metrics of the operator, served at `/metrics`. Every label value
//! is a `&'static str` from a bounded set (a route, an outcome, an error
//! kind, a phase), never an object name or an error's text.
//!
//! Label values are one style across both binaries: camelCase words (the
//! CRDs' enum style, `requireApproval`). Callers name them in whatever case
//! the code has (`not_modified`, `WrongAudience`); they are spelled
//! camelCase when encoded (`notModified`, `wrongAudience`), at scrape time,
//! so a request costs no conversion.
//!
//! Every family has a sample from start (zero), so `absent()` alerts mean
//! what they say.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// A label value spelled camelCase when encoded (see the module's doc).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Word(pub &'static str);

/// Words whose parts the caller ran together.
const COMPOUNDS: [(&str, &str); 4] = [
    ("accesspolicy", "AccessPolicy"),
    ("accesspolicies", "AccessPolicies"),
    ("accessrequest", "AccessRequest"),
    ("accessrequests", "AccessRequests"),
];

/// `snake_case`, `PascalCase` or `camelCase` in, camelCase out.
pub fn camel(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for (i, part) in word.split(['_', '-']).filter(|p| !p.is_empty()).enumerate() {
        let part = COMPOUNDS
            .iter()
            .find(|(w, _)| part.eq_ignore_ascii_case(w))
            .map_or(part, |(_, c)| c);
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                out.push(first.to_ascii_lowercase());
            } else {
                out.push(first.to_ascii_uppercase());
            }
            out.extend(chars);
        }
    }
    out
}

impl EncodeLabelValue for Word {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&camel(self.0))
    }
}

fn encode_words(
    pairs: &[(&'static str, Word)],
    encoder: &mut LabelSetEncoder,
) -> Result<(), std::fmt::Error> {
    for pair in pairs {
        pair.encode(encoder.encode_label())?;
    }
    Ok(())
}

/// Labels of a gateway API answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RequestLabels {
    /// The route, e.g. `token`, `bundle`.
    pub route: &'static str,
    /// `ok`, `not_modified`, or the refusal's bounded reason.
    pub outcome: &'static str,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_words(
            &[("route", Word(self.route)), ("outcome", Word(self.outcome))],
            encoder,
        )
    }
}

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReconcileLabels {
    /// `connection` or `accesspolicy`.
    pub controller: &'static str,
    /// `ok`, or the error kind.
    pub outcome: &'static str,
}

impl EncodeLabelSet for ReconcileLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_words(
            &[
                ("controller", Word(self.controller)),
                ("outcome", Word(self.outcome)),
            ],
            encoder,
        )
    }
}

/// Labels of the families that carry one word.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct OneLabel {
    name: &'static str,
    value: Word,
}

impl EncodeLabelSet for OneLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_words(&[(self.name, self.value)], encoder)
    }
}

fn one(name: &'static str, value: &'static str) -> OneLabel {
    OneLabel {
        name,
        value: Word(value),
    }
}

/// Labels of `sluice_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    binary: &'static str,
}

/// The gateway's routes, by the path the router matched, and the word
/// their metrics carry (`other` for any path not listed).
const ROUTES: [(&str, &str); 14] = [
    ("/v1/token", "token"),
    ("/v1/bundle", "bundle"),
    ("/v1/jwks", "jwks"),
    ("/v1/audit", "audit"),
    (
        crate::identity::webhook_config::POD_INJECTION_PATH,
        "mutate_pods",
    ),
    ("/v1/approvals", "approvals"),
    ("/v1/approvals/{name}", "approvals_get"),
    ("/v1/approvals/{name}/executed", "approvals_executed"),
    ("/v1/approvals/{name}/not-run", "approvals_not_run"),
    (
        crate::identity::webhook_config::MUTATE_PATH,
        "mutate_accessrequests",
    ),
    (
        crate::identity::webhook_config::VALIDATE_PATH,
        "validate_accessrequests",
    ),
    ("/metrics", "metrics"),
    ("/healthz", "healthz"),
    ("/readyz", "readyz"),
];

/// The controllers whose reconciles are timed.
const CONTROLLERS: [&str; 3] = ["connection", "accesspolicy", "accessrequest"];

/// The phases of an AccessRequest, as the CRD spells them.
pub const PHASES: [&str; 6] = [
    "Pending", "Approved", "Denied", "Expired", "Executed", "NotRun",
];

/// Buckets of the duration histograms: 1 ms to 5 min (a bundle long-poll
/// waits up to minutes).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Durations = Family<OneLabel, Histogram, fn() -> Histogram>;

/// Registers `metric` under `name` and hands it back (a metric is a handle:
/// the registry and the caller share its value).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
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
    /// Bundles built to answer polls (or to learn their revision).
    pub bundle_builds: Counter,
    /// Bundle long-polls waiting now.
    pub bundle_waiting: Gauge,
    /// Pods and service accounts of token holders read from the API server
    /// (the watches did not vouch for them).
    pub holder_reads: Counter,
    /// Approval long-polls (`GET /v1/approvals/{name}?wait=`) waiting now.
    pub approval_waiting: Gauge,
    request_durations: Durations,
    reconcile_durations: Durations,
    access_requests: Family<OneLabel, Gauge>,
    oldest_pending: Gauge,
    leader: Gauge,
    certificate_expiry: Family<OneLabel, Gauge>,
    signing_key_created: Gauge,
}

/// Observes a reconcile's duration when dropped (see [`Metrics::reconcile_timer`]).
#[derive(Debug)]
pub struct Timer {
    started: Instant,
    histogram: Histogram,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// `sluice_build_info`: the operator's version.
fn register_build(registry: &mut Registry) {
    registry.register(
        "build",
        "The operator's version",
        Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            binary: "operator",
        }),
    );
}

impl Metrics {
    /// Registers every metric under the `sluice` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        register_build(&mut registry);
        let r = &mut registry;
        let requests = register(
            r,
            "gateway_requests",
            "Gateway API and webhook answers, by route and outcome",
            Family::<RequestLabels, Counter>::default(),
        );
        let request_durations = register(
            r,
            "gateway_request_duration_seconds",
            "Time to answer a gateway API call or a webhook, by route (a bundle long-poll's includes its wait)",
            Durations::new_with_constructor(histogram),
        );
        let reconciles = register(
            r,
            "reconciles",
            "Reconciles of Connections and AccessPolicies, by outcome",
            Family::<ReconcileLabels, Counter>::default(),
        );
        let reconcile_durations = register(
            r,
            "reconcile_duration_seconds",
            "Time a reconcile took, by controller",
            Durations::new_with_constructor(histogram),
        );
        let audit_events = register(
            r,
            "audit_events",
            "Audit events received from sidecars",
            Counter::default(),
        );
        let bundle_wakeups = register(
            r,
            "gateway_bundle_wakeups",
            "Bundle long-polls woken by a change of a watched object in their namespace (each rebuilds its bundle)",
            Counter::default(),
        );
        let bundle_builds = register(
            r,
            "gateway_bundle_builds",
            "Bundles built for polls: a poll whose caller holds the current bundle builds none until its namespace changes",
            Counter::default(),
        );
        let bundle_waiting = register(
            r,
            "gateway_bundle_waiting",
            "Bundle long-polls waiting for a change now",
            Gauge::default(),
        );
        let holder_reads = register(
            r,
            "gateway_holder_reads",
            "Token holders' pods and service accounts read from the API server because the watches did not hold them",
            Counter::default(),
        );
        let approval_waiting = register(
            r,
            "gateway_approval_waiting",
            "Approval long-polls waiting for a decision now",
            Gauge::default(),
        );
        let access_requests = register(
            r,
            "access_requests",
            "AccessRequests in the cluster, by phase (as this replica's watch sees them)",
            Family::<OneLabel, Gauge>::default(),
        );
        let oldest_pending = register(
            r,
            "access_request_oldest_pending_timestamp_seconds",
            "When the oldest Pending AccessRequest was created, Unix seconds; 0 when none is pending",
            Gauge::default(),
        );
        let leader = register(
            r,
            "leader",
            "1 while this replica holds the leader Lease, else 0",
            Gauge::default(),
        );
        let certificate_expiry = register(
            r,
            "certificate_expiration_timestamp_seconds",
            "When a certificate the operator serves or trusts expires, Unix seconds, by certificate (serving: the webhook and gateway certificate; ca: the newest CA of the caBundle); 0 when unknown",
            Family::<OneLabel, Gauge>::default(),
        );
        let signing_key_created = register(
            r,
            "signing_key_created_timestamp_seconds",
            "When the gateway signing key in use was created, Unix seconds (the leader rotates it daily); 0 when unknown",
            Gauge::default(),
        );
        let metrics = Metrics {
            registry,
            bundle_wakeups,
            bundle_builds,
            bundle_waiting,
            holder_reads,
            approval_waiting,
            requests,
            reconciles,
            audit_events,
            request_durations,
            reconcile_durations,
            access_requests,
            oldest_pending,
            leader,
            certificate_expiry,
            signing_key_created,
        };
        metrics.create_known_series();
        metrics
    }

    /// Creates the series of every known label value at zero (see the
    /// module's doc).
    fn create_known_series(&self) {
        for (_, route) in ROUTES {
            self.request_durations
                .get_or_create_owned(&one("route", route));
            self.requests.get_or_create_owned(&RequestLabels {
                route,
                outcome: "ok",
            });
        }
        for controller in CONTROLLERS {
            self.reconcile_durations
                .get_or_create_owned(&one("controller", controller));
        }
        for phase in PHASES {
            self.access_requests
                .get_or_create_owned(&one("phase", phase));
        }
        for certificate in ["serving", "ca"] {
            self.certificate_expiry
                .get_or_create_owned(&one("certificate", certificate));
        }
    }

    /// Counts one gateway answer.
    pub fn request(&self, route: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { route, outcome })
            .inc();
    }

    /// Times a reconcile of `controller` until the result is dropped.
    pub fn reconcile_timer(&self, controller: &'static str) -> Timer {
        Timer {
            started: Instant::now(),
            histogram: self
                .reconcile_durations
                .get_or_create_owned(&one("controller", controller)),
        }
    }

    /// A gateway route (a word of [`ROUTES`]) answered after `d`.
    fn request_duration(&self, route: &'static str, d: Duration) {
        self.request_durations
            .get_or_create(&one("route", route))
            .observe(d.as_secs_f64());
    }

    /// How many AccessRequests are in each phase (a phase left out has
    /// none), and when the oldest Pending one was created (Unix seconds).
    pub fn access_requests(&self, by_phase: &[(&'static str, i64)], oldest_pending: Option<i64>) {
        for phase in PHASES {
            let n = by_phase
                .iter()
                .filter(|(p, _)| *p == phase)
                .map(|(_, n)| n)
                .sum();
            self.access_requests
                .get_or_create(&one("phase", phase))
                .set(n);
        }
        self.oldest_pending.set(oldest_pending.unwrap_or(0));
    }

    /// Whether this replica leads.
    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// When `certificate` (`serving` or `ca`) expires, Unix seconds.
    pub fn certificate_expires(&self, certificate: &'static str, at: Option<i64>) {
        self.certificate_expiry
            .get_or_create(&one("certificate", certificate))
            .set(at.unwrap_or(0));
    }

    /// When the signing key in use was created, Unix seconds.
    pub fn signing_key_created(&self, at: Option<u64>) {
        self.signing_key_created
            .set(at.and_then(|s| i64::try_from(s).ok()).unwrap_or(0));
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

/// The route word of a request path (`other` for none of [`ROUTES`]).
fn route_of(path: &str) -> &'static str {
    if let Some((_, word)) = ROUTES.iter().find(|(r, _)| *r == path) {
        return word;
    }
    match path.strip_prefix("/v1/approvals/") {
        Some(rest) if !rest.is_empty() => match rest.split_once('/') {
            None => "approvals_get",
            Some((_, "executed")) => "approvals_executed",
            Some((_, "not-run")) => "approvals_not_run",
            Some(_) => "other",
        },
        _ => "other",
    }
}

/// Middleware of the gateway's router: times each answer by its route
/// (a `route_layer`, so only requests a route matched).
pub async fn timed(
    State(metrics): State<std::sync::Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_of(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.request_duration(route, started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_camel_case_whatever_the_callers_case() {
        assert_eq!(camel("not_modified"), "notModified");
        assert_eq!(camel("WrongAudience"), "wrongAudience");
        assert_eq!(camel("mutate_accessrequests"), "mutateAccessRequests");
        assert_eq!(camel("accesspolicy"), "accessPolicy");
        assert_eq!(camel("approvals_not_run"), "approvalsNotRun");
        assert_eq!(camel("ok"), "ok");
        assert_eq!(camel("NotRun"), "notRun");
        assert_eq!(route_of("/v1/approvals/ar-1/not-run"), "approvals_not_run");
        assert_eq!(route_of("/v1/approvals/ar-1"), "approvals_get");
        assert_eq!(route_of("/v1/approvals"), "approvals");
        assert_eq!(route_of("/mutate/pods"), "mutate_pods");
        assert_eq!(route_of("/v1/approvals/ar-1/x/y"), "other");
        let m = Metrics::new();
        m.request("mutate_pods", "bad_request");
        let text = m.encode();
        assert!(
            text.contains(
                "sluice_gateway_requests_total{route=\"mutatePods\",outcome=\"badRequest\"} 1"
            ),
            "{text}"
        );
        // Present from start, at zero.
        for line in [
            "sluice_build_info{version=\"",
            "sluice_leader 0",
            "sluice_gateway_requests_total{route=\"bundle\",outcome=\"ok\"} 0",
            "sluice_access_requests{phase=\"pending\"} 0",
            "sluice_gateway_request_duration_seconds_count{route=\"bundle\"} 0",
            "sluice_reconcile_duration_seconds_count{controller=\"accessPolicy\"} 0",
            "sluice_certificate_expiration_timestamp_seconds{certificate=\"serving\"} 0",
            "sluice_signing_key_created_timestamp_seconds 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
