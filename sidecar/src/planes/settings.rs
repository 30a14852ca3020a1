//! What every plane is served with ([`PlaneSettings`]).

use crate::limits::Limits;
use crate::postgres::catalog::PoolSettings;

/// What the planes' Connections are served with: one part of run mode's
/// and standalone's settings alike ([`crate::run::RunConfig::planes`],
/// [`crate::standalone::StandaloneConfig::planes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneSettings {
    /// Connection caps and timeouts (see [`crate::limits`]).
    pub limits: Limits,
    /// Largest protocol message accepted from a client or a server.
    pub max_message_size: usize,
    /// Catalog sessions per postgres Connection and how long a lookup waits
    /// (see [`crate::postgres::catalog`]).
    pub catalog: PoolSettings,
    /// HTTP: how long the upstream has to answer with headers, and at most
    /// between two pieces of a body (either way).
    pub http_upstream_timeout: std::time::Duration,
    /// HTTP: largest request body buffered for `jsonBody` rules.
    pub http_max_request_body: usize,
    /// HTTP: offer HTTP/2 to the upstream as well as HTTP/1.1 (see
    /// [`crate::http::HttpUpstream::new`]).
    pub http_upstream_http2: bool,
}

impl Default for PlaneSettings {
    /// The defaults of both modes.
    fn default() -> Self {
        PlaneSettings {
            limits: Limits::default(),
            max_message_size: crate::postgres::framing::DEFAULT_MAX_MESSAGE_SIZE,
            catalog: PoolSettings::default(),
            http_upstream_timeout: crate::http::DEFAULT_UPSTREAM_TIMEOUT,
            http_max_request_body: crate::http::DEFAULT_MAX_REQUEST_BODY,
            http_upstream_http2: true,
        }
    }
}
