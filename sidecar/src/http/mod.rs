//! The HTTP API data plane: the application calls `http://127.0.0.1:PORT/…`
//! without credentials; each request is decided by the policy engine, sent to
//! `spec.upstream.baseURL` (TLS with rustls, HTTP/1.1 or HTTP/2 by ALPN) with
//! the Connection's credential headers, and JSON responses are masked as they
//! stream ([`stream_mask`]).
//!
//! Refusals are JSON bodies: `403` (deny, approval needed), `400` (a path
//! that decodes ambiguously or climbs out of the baseURL, a body or query a
//! rule inspects that breaks the strict grammar, a `_method` override, a
//! malformed request), `413` (a body too large to decide), `502` (upstream
//! unreachable, a compressed response, a body that cannot be masked while
//! masking rules apply), `504` (upstream timeout), `503` (the audit sink
//! failed: audit is write-ahead). What is read strictly, scrubbed, masked
//! and refused, per content type, is in sidecar/README.md ("HTTP APIs").

pub mod bundle;
mod listen;
pub mod scrub;
pub mod stream_mask;
pub mod text_mask;

mod approval;
mod body;
mod metrics;
mod proxy;
mod record;
mod refuse;
mod respond;
mod response;
mod stall;
mod target;
mod upstream;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use sluice_policy::engine::Identity;
use sluice_policy::http::Inspection;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::approval::Approvals;
use crate::audit::{AuditLog, SessionInfo};
use crate::limits::{Limits, ListenerSlots, accept_within};
use crate::metrics::Metrics;
use crate::standing::Standing;
pub use metrics::HttpMetrics;
use proxy::handle;
pub use upstream::HttpUpstream;

/// Default largest request body buffered to decide `jsonBody` rules.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;
/// Default time the upstream has to answer with response headers.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// An upstream timeout of `secs` seconds: `None` unless it is more than 0
/// and at most a day (`--http-timeout`, `SLUICE_HTTP_TIMEOUT`).
pub fn upstream_timeout(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0 && secs <= 86_400.0).then(|| Duration::from_secs_f64(secs))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// Why an HTTP Connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// `spec.upstream.baseURL` is missing or unusable.
    #[error(
        "Connection {connection}: spec.upstream.baseURL {url:?} is not an http(s) URL: {why}; set it to e.g. https://api.example.com/v1"
    )]
    BaseUrl {
        /// Connection.
        connection: String,
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// An http Connection of the bundle cannot be served.
    #[error("Connection {connection}: {what}")]
    Bundle {
        /// Connection.
        connection: String,
        /// What is wrong.
        what: String,
    },
    /// A credential key is not a valid header name or value.
    #[error(
        "Connection {connection}: Secret key {key:?} cannot be sent as an HTTP header (name or value invalid); the Secret's keys are header names and its values header values"
    )]
    Header {
        /// Connection.
        connection: String,
        /// The key.
        key: String,
    },
}

/// The HTTP plane's part of a bound [`Standing`]: what the rules look at,
/// and where requests go.
#[derive(Clone)]
pub struct HttpParts {
    /// What the rules look at beyond method and path (bodies are buffered
    /// only when a rule has `jsonBody` predicates).
    pub inspection: Arc<Inspection>,
    /// The upstream, with its credentials and its pool of connections.
    pub upstream: Arc<HttpUpstream>,
}

/// What decides the requests of one HTTP Connection: the sidecar's one
/// [`Standing`], with the HTTP plane's parts.
pub type HttpStanding = Standing<HttpParts>;

/// Everything the requests of one HTTP Connection need.
#[derive(Clone)]
pub struct HttpContext {
    /// The Connection.
    pub name: String,
    /// The identity served.
    pub identity: Identity,
    /// The policies and upstream in force.
    pub standing: HttpStanding,
    /// The operator's approval API (run mode); without it a request that
    /// needs approval is refused.
    pub approvals: Option<Approvals>,
    /// Largest request body buffered for `jsonBody` rules.
    pub max_request_body: usize,
    /// `statementsPerSecond` (requests per second here): the bucket the
    /// identity's requests on the Connection share, kept across bundles.
    pub rate: Arc<crate::rate::RateLimit>,
    /// The audit trail.
    pub audit: Arc<AuditLog>,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// HTTP metrics.
    pub http_metrics: HttpMetrics,
    /// What its requests' audit records share (commands by path,
    /// decision fields).
    pub(crate) audit_cache: Arc<record::AuditCache>,
}

/// What the rules of the policies naming Connection `name` look at (see
/// [`Inspection`]); dry-run policies' rules never make the grammar strict.
pub fn inspection<'a>(
    policies: impl Iterator<Item = &'a sluice_crds::AccessPolicy>,
    name: &str,
) -> Inspection {
    Inspection::of_connection(policies, name)
}

/// Accepts application connections on `listener` (HTTP/1.1, keep-alive)
/// until the sidecar shuts down, each within `slots` and `limits` (see
/// [`listen`]). Each request is served with the context in force when it
/// arrives: a policy change applies to the next request. On the shutdown
/// signal the loop stops accepting and every connection ends gracefully:
/// the request in flight is answered, then the connection closes.
pub async fn serve(
    listener: TcpListener,
    context: watch::Receiver<Arc<HttpContext>>,
    slots: ListenerSlots,
    limits: Limits,
) {
    let span = tracing::info_span!("http", connection = %context.borrow().name);
    accept(listener, context, slots, limits)
        .instrument(span)
        .await;
}

/// [`serve`]'s accept loop.
async fn accept(
    listener: TcpListener,
    context: watch::Receiver<Arc<HttpContext>>,
    slots: ListenerSlots,
    limits: Limits,
) {
    // A shutdown stops this loop as every plane's (crate::plane::AcceptLoops);
    // the connections it accepted end on the audit's signal.
    let signal = context.borrow().audit.shutdown_signal();
    loop {
        let (socket, peer, admitted) = accept_within(&listener, &slots, |socket, refused| {
            let reason = crate::metrics::SessionRefusal::TooManyConnections;
            context.borrow().metrics.session_refused_for(reason);
            listen::refuse(socket, refused)
        })
        .await;
        let _ = socket.set_nodelay(true);
        let context = context.clone();
        let (limits, signal) = (limits.clone(), signal.clone());
        let serve_connection = async move {
            let _admitted = admitted;
            let session = {
                let ctx = context.borrow();
                Arc::new(SessionInfo::for_identity(&ctx.identity, &ctx.name, peer))
            };
            // Its decision records share writes with other connections'.
            let (audit, name) = {
                let ctx = context.borrow();
                (ctx.audit.clone(), ctx.name.clone())
            };
            let _open = audit.open_connection();
            let (socket, activity) = listen::track(socket);
            let requests = activity.clone();
            let service = hyper::service::service_fn(move |req| {
                let ctx = context.borrow().clone();
                let live = context.clone();
                let session = session.clone();
                // Held until the response body is sent in full (or dropped).
                let in_flight = requests.request();
                async move {
                    let response = handle(&ctx, &live, &session, req).await;
                    Ok::<_, Infallible>(response.map(|body| in_flight.hold(body)))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(socket), service);
            listen::drive(conn, activity, &limits, signal, (&name, peer)).await;
        };
        // Not in a span of its own: entering and leaving one at every poll
        // was a cost of every request. The few events of a connection name
        // the Connection and the client themselves.
        tokio::spawn(serve_connection);
    }
}
