//! `/debug/standing` on the admin port: what this sidecar holds now, for
//! `kubectl sluice status` (which reads it through the API server's
//! `pods/proxy`, like `istioctl proxy-status`).
//!
//! Read-only and secret-free by construction: the board keeps names,
//! revisions, times and counts it copies out of a bundle, never the bundle
//! itself, so no credential, token, masking or hash key, CA or statement can
//! reach the page.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sluice_policy::wire::Bundle;

use crate::metrics::Metrics;

/// Longest error text kept (an operator's message can be long).
const MAX_ERROR: usize = 300;

/// What `/debug/standing` answers.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StandingReport {
    /// The sidecar's version.
    pub version: String,
    /// `NAMESPACE/SERVICEACCOUNT` the bundle is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The pod the bundle is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The bundle in force; `None` when none is (not yet, expired, withdrawn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleStanding>,
    /// When the operator last answered a poll (a new bundle or "unchanged"), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<String>,
    /// Why the last poll failed, or why the bundle was withdrawn; cleared by a good poll.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The Connections of the bundle.
    pub connections: Vec<ConnectionStanding>,
    /// The AccessPolicies of the bundle.
    pub policies: Vec<PolicyStanding>,
    /// Client sessions open now.
    pub open_sessions: i64,
    /// Statements refused since the sidecar started.
    pub statements_refused: u64,
}

/// The bundle in force.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BundleStanding {
    /// The operator's revision of it.
    pub revision: String,
    /// When it expires unless refreshed, RFC 3339 (as the operator wrote it).
    pub expires_at: String,
    /// When this sidecar received it, RFC 3339.
    pub received_at: String,
}

/// One Connection of the bundle.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStanding {
    /// Its name.
    pub name: String,
    /// `postgres`, `http`, …
    pub protocol: String,
    /// The loopback port the app connects to.
    pub port: u16,
    /// A policy binds this identity to it (else every statement is refused).
    pub bound: bool,
}

/// One AccessPolicy of the bundle.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStanding {
    /// `NAMESPACE/NAME`.
    pub name: String,
    /// `enforce` or `dryRun`.
    pub mode: String,
    /// The Connections it names.
    pub connections: Vec<String>,
}

/// Where run mode records what it holds; the admin port renders it.
#[derive(Debug)]
pub struct StandingBoard {
    report: Mutex<StandingReport>,
    metrics: Arc<Metrics>,
}

impl StandingBoard {
    /// An empty board; counts come from `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            report: Mutex::new(StandingReport {
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            }),
            metrics,
        }
    }

    fn with(&self, f: impl FnOnce(&mut StandingReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A bundle was put in force: copies its names, never its secrets.
    pub fn bundle_applied(&self, bundle: &Bundle) {
        self.metrics.bundle_refreshed(Some(&bundle.expires_at));
        let now = now();
        self.with(|r| {
            r.identity = Some(format!(
                "{}/{}",
                bundle.identity.namespace, bundle.identity.service_account
            ));
            r.pod = Some(bundle.identity.pod.clone()).filter(|p| !p.is_empty());
            r.bundle = Some(BundleStanding {
                revision: bundle.revision.clone(),
                expires_at: bundle.expires_at.clone(),
                received_at: now.clone(),
            });
            r.last_refresh = Some(now);
            r.last_error = None;
            r.connections = bundle
                .connections
                .iter()
                .map(|c| ConnectionStanding {
                    name: c.name.clone(),
                    protocol: word(&c.spec.protocol),
                    port: c.spec.listen.port,
                    bound: c.bound,
                })
                .collect();
            r.policies = bundle
                .policies
                .iter()
                .map(|p| PolicyStanding {
                    name: format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default()
                    ),
                    mode: word(&p.spec.mode),
                    connections: p.spec.connections.clone(),
                })
                .collect();
        });
    }

    /// The operator answered "unchanged"; `expires_at` is the bundle's new expiry if it said one.
    pub fn refreshed(&self, expires_at: Option<&str>) {
        self.metrics.bundle_refreshed(expires_at);
        let now = now();
        self.with(|r| {
            r.last_refresh = Some(now);
            r.last_error = None;
            if let (Some(b), Some(at)) = (r.bundle.as_mut(), expires_at) {
                b.expires_at = at.to_string();
            }
        });
    }

    /// A poll failed (the bundle stays in force until its expiry).
    pub fn refresh_failed(&self, error: &str) {
        self.metrics.bundle_refresh_failed();
        self.with(|r| r.last_error = Some(error.chars().take(MAX_ERROR).collect()));
    }

    /// The bundle is no longer in force.
    pub fn withdrawn(&self, why: &str) {
        self.metrics.bundle_withdrawn();
        self.with(|r| {
            r.bundle = None;
            r.last_error = Some(why.chars().take(MAX_ERROR).collect());
        });
    }

    /// The process's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The page: the board with the counters as they are now.
    pub fn report(&self) -> StandingReport {
        let mut report = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        report.open_sessions = self.metrics.active_sessions();
        report.statements_refused = self.metrics.statements_refused();
        report
    }

    /// The page as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.report()).unwrap_or_else(|e| {
            serde_json::json!({"error": format!("could not encode the standing: {e}")}).to_string()
        })
    }
}

/// An enum's wire word (`postgres`, `dryRun`).
fn word(v: &impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn the_page_names_what_is_in_force_and_no_secret() {
        let bundle: Bundle = serde_json::from_value(serde_json::json!({
            "revision": "r7",
            "identity": {"namespace": "shop", "serviceAccount": "report-job", "pod": "report-0", "groups": []},
            "expiresAt": "2030-01-01T00:00:00Z",
            "connections": [{
                "name": "orders-db", "bound": true,
                "spec": {"protocol": "postgres",
                    "upstream": {"host": "db", "port": 5432, "database": "orders"},
                    "credentials": {"secretRef": {"name": "creds"}},
                    "listen": {"port": 15432}},
                "credentials": {"username": "app", "password": "s3cret-password"},
                "hashKey": "bWFza2luZy1rZXktc2VjcmV0"
            }],
            "policies": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": "reporting", "namespace": "shop"},
                "spec": {"subjects": [{"serviceAccount": "report-job"}], "connections": ["orders-db"], "mode": "dryRun"}
            }],
            "secretKeys": [{"secret": "k", "key": "key", "value": "bWFza2luZy1rZXktc2VjcmV0"}]
        }))
        .unwrap();
        let metrics = Arc::new(Metrics::register(&mut Registry::default()));
        let board = StandingBoard::new(metrics);
        board.bundle_applied(&bundle);
        let page = board.json();
        for secret in ["s3cret-password", "bWFza2luZy1rZXktc2VjcmV0", "creds"] {
            assert!(!page.contains(secret), "{secret} in {page}");
        }
        let r = board.report();
        assert_eq!(r.identity.as_deref(), Some("shop/report-job"));
        assert_eq!(r.bundle.as_ref().unwrap().revision, "r7");
        assert_eq!(r.connections[0].protocol, "postgres");
        assert_eq!(r.connections[0].port, 15432);
        assert_eq!(r.policies[0].name, "shop/reporting");
        assert_eq!(r.policies[0].mode, "dryRun");
        board.refresh_failed("the operator is away");
        assert_eq!(
            board.report().last_error.as_deref(),
            Some("the operator is away")
        );
        board.refreshed(Some("2031-01-01T00:00:00Z"));
        assert_eq!(board.report().last_error, None);
        assert_eq!(
            board.report().bundle.unwrap().expires_at,
            "2031-01-01T00:00:00Z"
        );
        board.withdrawn("expired");
        assert!(board.report().bundle.is_none());
    }
}
