//! HTTP metrics: `sluice_http_requests_total{decision,status}`.

use std::sync::{Arc, OnceLock};

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `sluice_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    decision: &'static str,
    status: &'static str,
}

/// The `decision` labels whose counters are kept at hand.
const DECISIONS: [&str; 4] = ["allow", "deny", "requireApproval", "dryRunDeny"];
/// The `status` labels, by status class.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// HTTP metrics, next to the sidecar's shared [`crate::metrics::Metrics`].
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    /// The family's counters by decision and status class, looked up once:
    /// the family's own lookup (a lock and a hash of both labels) was a
    /// cost of every request.
    counters: Arc<[OnceLock<Counter>; DECISIONS.len() * STATUSES.len()]>,
}

impl HttpMetrics {
    /// Creates and registers `sluice_http_requests_total{decision,status}`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = HttpMetrics::default();
        registry.register(
            "sluice_http_requests",
            "HTTP requests, by decision and response status class",
            m.requests.clone(),
        );
        m
    }

    pub(super) fn request(&self, decision: &'static str, status: StatusCode) {
        let class = match status.as_u16() / 100 {
            1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        };
        let labels = || RequestLabels {
            decision,
            status: STATUSES[class],
        };
        match DECISIONS.iter().position(|d| *d == decision) {
            Some(d) => self.counters[d * STATUSES.len() + class]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_request_is_counted_under_its_labels() {
        let mut registry = Registry::default();
        let m = HttpMetrics::register(&mut registry);
        let copy = m.clone();
        m.request("allow", StatusCode::OK);
        copy.request("allow", StatusCode::NO_CONTENT);
        m.request("allow", StatusCode::BAD_GATEWAY);
        m.request("deny", StatusCode::FORBIDDEN);
        m.request("other", StatusCode::CONTINUE);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"sluice_http_requests_total{decision="allow",status="2xx"} 2"#,
            r#"sluice_http_requests_total{decision="allow",status="5xx"} 1"#,
            r#"sluice_http_requests_total{decision="deny",status="4xx"} 1"#,
            r#"sluice_http_requests_total{decision="other",status="1xx"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
