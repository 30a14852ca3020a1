//! HTTP metrics: `sluice_http_requests_total{connection,decision,status}`.

use std::sync::{Arc, OnceLock};

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `sluice_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    connection: String,
    decision: &'static str,
    status: &'static str,
}

/// The `decision` labels whose counters are kept at hand.
const DECISIONS: [&str; 4] = ["allow", "deny", "requireApproval", "dryRunDeny"];
/// The `status` labels, by status class.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// HTTP metrics, next to the sidecar's shared [`crate::metrics::Metrics`]:
/// the family, and (from [`HttpMetrics::for_connection`]) the Connection
/// whose requests this handle counts.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    /// The `connection` label; `""` only on the handle [`HttpMetrics::register`]
    /// returns, which serves no Connection.
    connection: Arc<str>,
    /// The Connection's counters by decision and status class, looked up
    /// once: the family's own lookup (a lock and a hash of the labels) was
    /// a cost of every request.
    counters: Arc<[OnceLock<Counter>; DECISIONS.len() * STATUSES.len()]>,
}

impl HttpMetrics {
    /// Creates and registers
    /// `sluice_http_requests_total{connection,decision,status}`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = HttpMetrics::default();
        registry.register(
            "sluice_http_requests",
            "HTTP requests, by Connection, decision and response status class",
            m.requests.clone(),
        );
        m
    }

    /// The handle that counts the requests of Connection `name`, in the
    /// same family. Its allowed-2xx and denied-4xx series exist from now
    /// on (at zero), as the other families' series of a Connection do.
    pub fn for_connection(&self, name: &str) -> HttpMetrics {
        let m = HttpMetrics {
            requests: self.requests.clone(),
            connection: name.into(),
            counters: Arc::default(),
        };
        m.counter("allow", 1);
        m.counter("deny", 3);
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
        self.counter(decision, class).inc();
    }

    /// The counter of `decision` and status class `class` (an index of
    /// [`STATUSES`]).
    fn counter(&self, decision: &'static str, class: usize) -> Counter {
        let labels = || RequestLabels {
            connection: self.connection.to_string(),
            decision,
            status: STATUSES[class],
        };
        match DECISIONS.iter().position(|d| *d == decision) {
            Some(d) => self.counters[d * STATUSES.len() + class]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .clone(),
            None => self.requests.get_or_create(&labels()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `registry`'s text exposition, which must hold every one of `lines`.
    fn assert_exposed(registry: &Registry, lines: &[&str]) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        for line in lines {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        text
    }

    #[test]
    fn every_request_is_counted_under_its_labels() {
        let mut registry = Registry::default();
        let m = HttpMetrics::register(&mut registry).for_connection("api");
        let copy = m.clone();
        m.request("allow", StatusCode::OK);
        copy.request("allow", StatusCode::NO_CONTENT);
        m.request("allow", StatusCode::BAD_GATEWAY);
        m.request("deny", StatusCode::FORBIDDEN);
        m.request("other", StatusCode::CONTINUE);
        assert_exposed(
            &registry,
            &[
                r#"sluice_http_requests_total{connection="api",decision="allow",status="2xx"} 2"#,
                r#"sluice_http_requests_total{connection="api",decision="allow",status="5xx"} 1"#,
                r#"sluice_http_requests_total{connection="api",decision="deny",status="4xx"} 1"#,
                r#"sluice_http_requests_total{connection="api",decision="other",status="1xx"} 1"#,
            ],
        );
    }

    #[test]
    fn each_connection_counts_its_own_requests_from_zero() {
        let mut registry = Registry::default();
        let family = HttpMetrics::register(&mut registry);
        let (a, b) = (family.for_connection("a"), family.for_connection("b"));
        assert_exposed(
            &registry,
            &[
                r#"sluice_http_requests_total{connection="a",decision="allow",status="2xx"} 0"#,
                r#"sluice_http_requests_total{connection="a",decision="deny",status="4xx"} 0"#,
                r#"sluice_http_requests_total{connection="b",decision="allow",status="2xx"} 0"#,
            ],
        );
        a.request("allow", StatusCode::OK);
        a.request("allow", StatusCode::OK);
        b.request("allow", StatusCode::OK);
        b.request("deny", StatusCode::FORBIDDEN);
        // A later bundle's handle for the same Connection counts on.
        family.for_connection("a").request("allow", StatusCode::OK);
        let text = assert_exposed(
            &registry,
            &[
                r#"sluice_http_requests_total{connection="a",decision="allow",status="2xx"} 3"#,
                r#"sluice_http_requests_total{connection="a",decision="deny",status="4xx"} 0"#,
                r#"sluice_http_requests_total{connection="b",decision="allow",status="2xx"} 1"#,
                r#"sluice_http_requests_total{connection="b",decision="deny",status="4xx"} 1"#,
            ],
        );
        assert!(!text.contains(r#"connection="""#), "{text}");
    }
}
