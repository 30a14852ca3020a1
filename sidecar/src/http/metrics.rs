//! HTTP metrics: `sluice_http_requests_total{decision,status}`.

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

/// HTTP metrics, next to the sidecar's shared [`crate::metrics::Metrics`].
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
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
        let status = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels { decision, status })
            .inc();
    }
}
