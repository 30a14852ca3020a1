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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::Digest;
use sluice_crds::Action;
use sluice_policy::audit::{AuditCommand, AuditDecision, AuditKind, AuditOutcome};
use sluice_policy::detectors::DetectorSet;
use sluice_policy::engine::{Decision, Identity, PolicySet};
use sluice_policy::http::{HttpRequest, Inspection, forward_path, normalize_path};
use sluice_policy::masker::Masker;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::approval::{ApprovalOutcome, Approvals, Held};
use crate::audit::{AuditLog, SessionInfo};
use crate::limits::{Limits, ListenerSlots};
use crate::metrics::Metrics;
use scrub::{ScrubStream, Secrets};
use stream_mask::JsonStreamMasker;
use text_mask::TextMasker;

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

/// Headers never forwarded: hop-by-hop (RFC 9110 §7.6.1) and the
/// application's own credentials.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that make servers and frameworks read another method or
/// path than the request line's (Symfony, Laravel, Rails, Express
/// method-override, IIS URL rewriting, nginx auth_request): the request is
/// decided on its request line, so these never reach the upstream (stripped,
/// not decided on: the upstream then executes exactly what was decided).
const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-path",
];

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

/// Where and how requests of one Connection go.
pub struct HttpUpstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's path, without a trailing slash.
    base_path: String,
    /// Credential headers (marked sensitive).
    credentials: Vec<(HeaderName, HeaderValue)>,
    /// The credential values as they may come back in a response (scrubbed).
    secrets: Option<Arc<Secrets>>,
    client: HttpsClient,
    /// How long the upstream has to answer with headers, and at most
    /// between two pieces of a response body.
    timeout: Duration,
}

impl HttpUpstream {
    /// Parses `base_url` and builds the client. `tls` is used for `https`
    /// (its ALPN is set here); `credentials` are `(header, value)` pairs.
    ///
    /// With `http2` (the default of both modes) ALPN offers `h2` and
    /// `http/1.1` and the upstream chooses: HTTP/2 multiplexes the requests
    /// over one connection, HTTP/1.1 uses a pool of keep-alive connections.
    /// Without it only HTTP/1.1 is offered (for upstreams whose HTTP/2 is
    /// broken or limited); both measured alike in `http_bench.sh`.
    pub fn new(
        connection: &str,
        base_url: &str,
        tls: rustls::ClientConfig,
        credentials: &[(String, Vec<u8>)],
        timeout: Duration,
        http2: bool,
    ) -> Result<Self, HttpSetupError> {
        let bad = |why: &str| HttpSetupError::BaseUrl {
            connection: connection.to_string(),
            url: base_url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = base_url.parse().map_err(|_| bad("it does not parse"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a base URL cannot have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let mut headers = Vec::new();
        for (key, value) in credentials {
            let err = || HttpSetupError::Header {
                connection: connection.to_string(),
                key: key.clone(),
            };
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| err())?;
            let mut value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|_| err())?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let values: Vec<&[u8]> = headers.iter().map(|(_, v)| v.as_bytes()).collect();
        let (secrets, short) = Secrets::new(&values).map_err(|e| HttpSetupError::Bundle {
            connection: connection.to_string(),
            what: format!("its credential values cannot be searched for in responses ({e}), so they could not be kept from the application"),
        })?;
        for i in short {
            if let Some((name, _)) = headers.get(i) {
                tracing::warn!(
                    connection,
                    header = %name,
                    "the credential header's value is shorter than {} bytes: it is not scrubbed from responses; use a longer secret",
                    scrub::MIN_SECRET_LEN
                );
            }
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if http2 {
            builder.enable_all_versions().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(HttpUpstream {
            scheme,
            authority,
            base_path,
            credentials: headers,
            secrets: secrets.map(Arc::new),
            client,
            timeout,
        })
    }
}

/// Labels of `sluice_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    decision: &'static str,
    status: &'static str,
}

/// HTTP metrics, next to the sidecar's shared [`Metrics`].
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

    fn request(&self, decision: &'static str, status: StatusCode) {
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

/// What decides the requests of one HTTP Connection.
#[derive(Clone)]
pub enum HttpStanding {
    /// Policies bind the identity to the Connection.
    Bound {
        /// The applicable policies.
        set: Arc<PolicySet>,
        /// What the rules look at beyond method and path (bodies are
        /// buffered only when a rule has `jsonBody` predicates).
        inspection: Arc<Inspection>,
        /// The upstream, with its credentials and its pool of connections.
        upstream: Arc<HttpUpstream>,
    },
    /// No policy binds the identity to the Connection.
    NotBound,
    /// No valid policies (the bundle expired, the Connection left it):
    /// every request is refused; the text says why.
    Unavailable(String),
}

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
    let signal = context.borrow().audit.shutdown_signal();
    let mut down = std::pin::pin!(listen::shutdown(signal.clone()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = down.as_mut() => {
                tracing::info!(connection = %context.borrow().name, "shutting down: no new http connections");
                return;
            }
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!(connection = %context.borrow().name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match slots.admit() {
            Ok(admitted) => admitted,
            Err(refused) => {
                tracing::warn!(%peer, "{refused}");
                tokio::spawn(listen::refuse(socket, refused));
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let context = context.clone();
        let (limits, signal) = (limits.clone(), signal.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            let session = Arc::new(session_info(&context.borrow(), peer));
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
                    Ok::<_, Infallible>(response.map(move |body| {
                        body.map_frame(move |frame| {
                            let _ = &in_flight;
                            frame
                        })
                        .boxed_unsync()
                    }))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(socket), service);
            listen::drive(conn, activity, &limits, signal, &name).await;
        });
    }
}

fn session_info(ctx: &HttpContext, peer: SocketAddr) -> SessionInfo {
    let id: u128 = rand::random();
    SessionInfo {
        id: format!("{id:032x}"),
        subject: format!(
            "{}/{}",
            ctx.identity.namespace, ctx.identity.service_account
        ),
        namespace: ctx.identity.namespace.clone(),
        service_account: ctx.identity.service_account.clone(),
        pod: ctx.identity.pod.clone(),
        groups: ctx.identity.groups.clone(),
        connection: ctx.name.clone(),
        client: peer.to_string(),
        pieces: Default::default(),
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(status: StatusCode, error: &str, message: String) -> Response<ProxyBody> {
    json_response(
        status,
        serde_json::json!({"error": error, "message": message}),
    )
}

/// The detectors run over every audited path.
static AUDIT_DETECTORS: std::sync::LazyLock<DetectorSet> = std::sync::LazyLock::new(|| {
    use sluice_crds::Detector::*;
    DetectorSet::new(&[CreditCard, Ssn, Email, Phone, Iban, Jwt, AwsKey, PrivateKey])
});

/// The audit record of a request: method and normalised path (the query is
/// left out: it may carry values).
fn command(method: &str, path: &str) -> AuditCommand {
    // Every detector runs over the path, whatever the masking rules: the
    // audit trail keeps no card number, e-mail or key a path carries (issue
    // 16). The fingerprint is of the masked text too.
    let findings = AUDIT_DETECTORS.find(path);
    let text = if findings.is_empty() {
        format!("{method} {path}")
    } else {
        format!(
            "{method} {}",
            Masker::redact().mask_findings(path, &findings)
        )
    };
    let fingerprint = format!("{:x}", sha2::Sha256::digest(text.as_bytes()));
    AuditCommand {
        text,
        fingerprint,
        kind: Some("http".into()),
    }
}

/// A request refused before deciding because the sidecar cannot read it as
/// every server would (400 naming the limit broken); audited write-ahead.
fn refuse_unreadable(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: AuditCommand,
    error: &str,
    limit: &str,
    message: String,
) -> Response<ProxyBody> {
    record_refusal(ctx, session, cmd, StatusCode::BAD_REQUEST, message.clone());
    json_response(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": error, "limit": limit, "message": message}),
    )
}

/// Records a request the sidecar refuses before any rule decides it (it
/// cannot read it soundly): a write-ahead denial naming no policy, and the
/// refusal in the metrics.
fn record_refusal(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: AuditCommand,
    status: StatusCode,
    reason: String,
) {
    let _ = audit_decision(
        ctx,
        session,
        cmd,
        Action::Deny,
        None,
        None,
        false,
        reason,
        true,
    );
    ctx.http_metrics.request("deny", status);
}

/// Whether the body is a form (`Some(true)` multipart, `Some(false)`
/// urlencoded), whose `_method` field frameworks run as the method.
fn form_kind(headers: &HeaderMap) -> Option<bool> {
    headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .find_map(|ct| match media_type(ct)?.0.as_str() {
            "multipart/form-data" => Some(true),
            "application/x-www-form-urlencoded" => Some(false),
            _ => None,
        })
}

/// A form body must not carry `_method` (nor hide its fields in an encoding).
fn form_without_override(headers: &HeaderMap, bytes: &[u8]) -> Result<(), String> {
    if headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err("Sluice refused the request: its form body is compressed, so Sluice cannot tell whether it carries a _method field that some servers run as the method; send it unencoded".into());
    }
    let found = match form_kind(headers) {
        Some(true) => bytes
            .windows(sluice_policy::http::METHOD_PARAMETER.len())
            .any(|w| w.eq_ignore_ascii_case(sluice_policy::http::METHOD_PARAMETER.as_bytes())),
        _ => sluice_policy::http::has_method_parameter(bytes),
    };
    if found {
        return Err("Sluice refused the request: its form body has a _method field, which some servers run as the request's method; send the method on the request line".into());
    }
    Ok(())
}

/// The media type of a Content-Type value, lower-case, and its charset
/// parameter (lower-case, unquoted) if any.
fn media_type(value: &HeaderValue) -> Option<(String, Option<String>)> {
    let text = value.to_str().ok()?;
    let mut parts = text.split(';');
    let mime = parts.next()?.trim().to_ascii_lowercase();
    let mut charset = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("charset")
        {
            charset = Some(v.trim().trim_matches('"').to_ascii_lowercase());
        }
    }
    Some((mime, charset))
}

/// A request body an enforced `jsonBody` rule reads: it must be unencoded,
/// labelled as JSON (or as text, or not at all: servers such as Starlette
/// parse any label), UTF-8, and strict JSON
/// ([`sluice_policy::http::parse_body`]). `Err` names the limit broken.
#[allow(clippy::result_large_err)]
fn strict_body(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Option<serde_json::Value>, (&'static str, String)> {
    if bytes.is_empty() {
        return Ok(None);
    }
    for v in headers.get_all(header::CONTENT_ENCODING) {
        if !v.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err((
                "contentEncoding",
                format!(
                    "its Content-Encoding {:?} cannot be inspected; send the body unencoded",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            ));
        }
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    if let Some(ct) = types.next() {
        if types.next().is_some() {
            return Err((
                "contentType",
                "it has more than one Content-Type; send one, application/json".into(),
            ));
        }
        let readable = media_type(ct).is_some_and(|(mime, charset)| {
            let json = mime == "application/json"
                || mime == "text/json"
                || mime == "text/plain"
                || (mime.starts_with("application/") && mime.ends_with("+json"));
            json && charset.is_none_or(|c| c == "utf-8" || c == "utf8")
        });
        if !readable {
            return Err((
                "contentType",
                format!(
                    "its Content-Type {:?} cannot be inspected; send JSON as application/json in UTF-8",
                    String::from_utf8_lossy(ct.as_bytes())
                ),
            ));
        }
    }
    sluice_policy::http::parse_body(bytes).map_err(|e| (e.limit(), e.to_string()))
}

/// The most bytes read to find a body's first non-whitespace byte.
const SNIFF_LIMIT: usize = 64 * 1024;

async fn handle(
    ctx: &HttpContext,
    live: &watch::Receiver<Arc<HttpContext>>,
    session: &Arc<SessionInfo>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let raw_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let (set, inspection, up) = match &ctx.standing {
        HttpStanding::Bound {
            set,
            inspection,
            upstream,
        } => (set.clone(), inspection.clone(), upstream.clone()),
        HttpStanding::NotBound => {
            let reason = Decision::not_bound(&ctx.identity, &ctx.name).reason;
            let _ = ctx.audit.session_refused(session, &reason);
            ctx.http_metrics.request("deny", StatusCode::FORBIDDEN);
            return json_response(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "notBound", "reason": reason}),
            );
        }
        HttpStanding::Unavailable(why) => {
            let _ = ctx.audit.session_refused(session, why);
            ctx.http_metrics
                .request("deny", StatusCode::SERVICE_UNAVAILABLE);
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "noPolicy", "reason": why}),
            );
        }
    };
    // The path decided is the path forwarded (issue 16: a raw `/../x` was
    // decided as `/x` and sent as written).
    let decided = normalize_path(&raw_path).and_then(|p| Ok((p, forward_path(&raw_path)?)));
    let (path, forwarded) = match decided {
        Ok(p) => p,
        Err(e) => {
            let cmd = command(&method, "(ambiguous path)");
            record_refusal(
                ctx,
                session,
                cmd,
                StatusCode::BAD_REQUEST,
                format!("ambiguous request path: {e}"),
            );
            return error_response(
                StatusCode::BAD_REQUEST,
                "ambiguousPath",
                format!(
                    "Sluice refused the request: {e}; servers would not agree on the path, so no rule can decide it. Send the path plainly"
                ),
            );
        }
    };
    let cmd = command(&method, &path);
    // A query a rule looks at must read the same to every server.
    if !inspection.query_names().is_empty()
        && let Err(e) = sluice_policy::http::check_query(&query, inspection.query_names())
    {
        let message = sluice_policy::http::query_refusal(&e);
        return refuse_unreadable(ctx, session, cmd, "queryRefused", e.limit(), message);
    }
    // `_method` (Symfony, Laravel, Rails) would run another method than the
    // one decided: refused where rules tell methods apart.
    if inspection.names_methods()
        && !query.is_empty()
        && sluice_policy::http::has_method_parameter(query.as_bytes())
    {
        let message = sluice_policy::http::QUERY_METHOD_REFUSAL.to_string();
        return refuse_unreadable(
            ctx,
            session,
            cmd,
            "methodOverride",
            "methodOverride",
            message,
        );
    }
    let (parts, body) = req.into_parts();
    let form = inspection.names_methods()
        && parts.method == http::Method::POST
        && form_kind(&parts.headers).is_some();

    // The body is read whole before the upstream sees the request when a
    // rule looks into it, and also (request buffering, as nginx's
    // proxy_request_buffering does by default) when its length is not
    // declared (chunked) or is declared within the buffering limit: a
    // malformed, stalled or cut-off body is then a 400 and the upstream sees
    // nothing of it (issue 17: it was a 502 after the headers had been
    // forwarded). A body declared larger than the limit streams through;
    // its Content-Length tells the upstream when it was cut.
    let inspect = inspection.buffers_body() || form;
    let store = match body.size_hint().exact() {
        None => true,
        Some(n) => n > 0 && n <= ctx.max_request_body as u64,
    };
    let (mut body, json): (ProxyBody, Option<serde_json::Value>) = if inspect || store {
        let collected = tokio::time::timeout(
            up.timeout,
            Limited::new(body, ctx.max_request_body).collect(),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the request body stalled: nothing arrived for {} ms",
                up.timeout.as_millis()
            )
            .into())
        });
        match collected {
            Ok(collected) if !inspect => (
                Full::new(collected.to_bytes())
                    .map_err(|e: Infallible| -> BoxError { match e {} })
                    .boxed_unsync(),
                None,
            ),
            Ok(collected) => {
                let bytes = collected.to_bytes();
                if form && let Err(message) = form_without_override(&parts.headers, &bytes) {
                    return refuse_unreadable(
                        ctx,
                        session,
                        cmd,
                        "methodOverride",
                        "methodOverride",
                        message,
                    );
                }
                let strict = inspection.strict_body(&HttpRequest {
                    method: &method,
                    path: &raw_path,
                    query: &query,
                    body: None,
                });
                let json = if strict {
                    match strict_body(&parts.headers, &bytes) {
                        Ok(json) => json,
                        Err((limit, e)) => {
                            let message = sluice_policy::http::body_refusal(&e);
                            return refuse_unreadable(
                                ctx,
                                session,
                                cmd,
                                "bodyRefused",
                                limit,
                                message,
                            );
                        }
                    }
                } else {
                    // Only dry-run rules (or none) read this body: never blocks.
                    serde_json::from_slice(&bytes).ok()
                };
                (
                    Full::new(bytes)
                        .map_err(|e: Infallible| -> BoxError { match e {} })
                        .boxed_unsync(),
                    json,
                )
            }
            Err(e) => {
                let too_large = e.is::<http_body_util::LengthLimitError>();
                let (status, error, message) = if too_large && inspect {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "bodyTooLarge",
                        format!(
                            "Sluice refused the request: a policy rule inspects JSON bodies, and this body is larger than the {} bytes Sluice buffers to decide",
                            ctx.max_request_body
                        ),
                    )
                } else if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "bodyTooLarge",
                        format!(
                            "Sluice refused the request: its body is chunked (no Content-Length) and larger than the {} bytes Sluice reads before forwarding such a body; send it with a Content-Length, or raise --http-max-body",
                            ctx.max_request_body
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "badBody",
                        format!("Sluice could not read the request body: {e}"),
                    )
                };
                record_refusal(ctx, session, cmd, status, message.clone());
                return error_response(status, error, message);
            }
        }
    } else {
        (
            StallGuard::new(
                body.map_err(|e| -> BoxError { Box::new(e) }),
                up.timeout,
                "the application's request body",
            )
            .boxed_unsync(),
            None,
        )
    };

    let decision = set.decide_http(&HttpRequest {
        method: &method,
        path: &raw_path,
        query: &query,
        body: json.as_ref(),
    });
    let label = match (decision.enforced, decision.action) {
        (Action::Deny, _) => "deny",
        (Action::RequireApproval, _) => "requireApproval",
        (Action::Allow, Action::Allow) => "allow",
        (Action::Allow, _) => "dryRunDeny",
    };
    // `statementsPerSecond` counts the requests a rule lets through (or
    // holds for approval), as the PostgreSQL plane counts statements.
    let counted = match decision.enforced {
        Action::Allow => true,
        Action::RequireApproval => ctx.approvals.is_some(),
        Action::Deny => false,
    };
    if counted && !ctx.rate.admit(set.limits().statements_per_second) {
        let rate = set.limits().statements_per_second.unwrap_or(0);
        let message = format!(
            "Sluice refused the request: more than {rate} requests per second from this identity on Connection {:?}, the statementsPerSecond limit of the AccessPolicy (shared by all of this sidecar's connections); retry later",
            ctx.name
        );
        record_refusal(
            ctx,
            session,
            cmd,
            StatusCode::TOO_MANY_REQUESTS,
            message.clone(),
        );
        let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rateLimited", message);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        return response;
    }
    // The AccessRequest an approved request runs under.
    let mut approved = None;
    match (decision.enforced, ctx.approvals.as_ref()) {
        (Action::Allow, _) => {}
        (Action::RequireApproval, Some(approvals)) => {
            let asked = ApprovalAsked {
                method: method.clone(),
                raw_path: raw_path.clone(),
                query: query.clone(),
                path_and_query: match parts.uri.query() {
                    Some(q) => format!("{forwarded}?{q}"),
                    None => forwarded.clone(),
                },
                json: json.clone(),
            };
            match approve(ctx, live, session, &cmd, &decision, asked, body, approvals).await {
                Ok((b, request)) => {
                    body = b;
                    approved = Some(request);
                }
                Err(response) => return response,
            }
        }
        (refused, _) => {
            let policy = decision.enforced_policy.clone().or(decision.policy.clone());
            let rule = decision.enforced_rule.clone().or(decision.rule.clone());
            let _ = audit_decision(
                ctx,
                session,
                cmd,
                decision.action,
                decision.policy.clone(),
                decision.rule.clone(),
                decision.dry_run,
                decision.reason.clone(),
                true,
            );
            ctx.http_metrics.request(label, StatusCode::FORBIDDEN);
            let body = if refused == Action::RequireApproval {
                serde_json::json!({
                    "error": "approvalRequired",
                    "policy": policy,
                    "rule": rule,
                    "reason": decision.reason,
                    "message": format!(
                        "this request needs approval under rule {:?}, and approving HTTP requests needs the Sluice operator's approval flow, which is not available here: refused",
                        rule.as_deref().unwrap_or("-")
                    ),
                })
            } else {
                serde_json::json!({
                    "error": "denied",
                    "policy": policy,
                    "rule": rule,
                    "reason": decision.reason,
                })
            };
            return json_response(StatusCode::FORBIDDEN, body);
        }
    }
    // Write-ahead: no record, no request (the record may share one write
    // with other connections' records: see AuditLog::durable).
    let written = match &approved {
        None => match audit_decision(
            ctx,
            session,
            cmd.clone(),
            decision.action,
            decision.policy.clone(),
            decision.rule.clone(),
            decision.dry_run,
            decision.reason.clone(),
            false,
        ) {
            Ok(ticket) => ctx.audit.durable(ticket).await,
            Err(e) => Err(e),
        },
        Some(note) => ctx
            .audit
            .event(
                session,
                AuditKind::Statement,
                Some(cmd.clone()),
                Some(AuditDecision {
                    action: Action::RequireApproval,
                    policy: decision.enforced_policy.clone().or(decision.policy.clone()),
                    rule: decision.enforced_rule.clone().or(decision.rule.clone()),
                    dry_run: false,
                    reason: Some(format!("{} (http protocol); {note}", decision.reason)),
                }),
                None,
                true,
            )
            .map(|_| ()),
    };
    if let Err(e) = written {
        ctx.http_metrics
            .request("deny", StatusCode::SERVICE_UNAVAILABLE);
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "auditFailed",
            format!(
                "request not sent: Sluice could not write its audit record ({e}); audit is write-ahead"
            ),
        );
    }

    // The upstream request.
    let up = &*up;
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}{forwarded}?{q}", up.base_path),
        None => format!("{}{forwarded}", up.base_path),
    };
    let uri = Uri::builder()
        .scheme(up.scheme.clone())
        .authority(up.authority.clone())
        .path_and_query(path_and_query)
        .build();
    let Ok(uri) = uri else {
        ctx.http_metrics.request(label, StatusCode::BAD_REQUEST);
        return error_response(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Sluice could not build the upstream URL from the request path".into(),
        );
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    for name in OVERRIDE_HEADERS {
        headers.remove(*name);
    }
    // A byte range could cut a credential or a masked value in two, each
    // half passing the scrubber and the masker: whole representations only.
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    for (name, value) in &up.credentials {
        headers.remove(name);
        headers.append(name.clone(), value.clone());
    }
    // Masking must read the bytes the client will get.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;

    let response = match tokio::time::timeout(up.timeout, up.client.request(upstream_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let why = error_chain(&e);
            result_event(
                ctx,
                session,
                &cmd,
                started,
                0,
                Some(format!("upstream error: {why}")),
            );
            ctx.http_metrics.request(label, StatusCode::BAD_GATEWAY);
            return error_response(
                StatusCode::BAD_GATEWAY,
                "upstreamUnavailable",
                format!(
                    "Sluice could not reach the upstream of Connection {} ({}): {why}",
                    ctx.name, up.authority
                ),
            );
        }
        Err(_) => {
            result_event(
                ctx,
                session,
                &cmd,
                started,
                0,
                Some("upstream timeout".into()),
            );
            ctx.http_metrics.request(label, StatusCode::GATEWAY_TIMEOUT);
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstreamTimeout",
                format!(
                    "the upstream of Connection {} did not answer within {} ms",
                    ctx.name,
                    up.timeout.as_millis()
                ),
            );
        }
    };
    ctx.metrics.upstream_latency(started.elapsed());
    let (mut parts, mut body) = response.into_parts();
    // The upstream's own reason phrase would be written back by hyper; it
    // can carry anything (a credential, a value): the canonical one is sent.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    // A transfer coding hyper does not remove (only chunked is) leaves the
    // body encoded like a Content-Encoding would.
    let transfer_coded = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|c| {
            let c = c.trim_ascii();
            !c.eq_ignore_ascii_case(b"chunked") && !c.eq_ignore_ascii_case(b"identity")
        });
    strip_hop_by_hop(&mut parts.headers);
    if let Some(secrets) = &up.secrets {
        secrets.scrub_headers(&mut parts.headers);
    }
    let mask_rules = !set.json_paths().is_empty() || set.detectors_indexed().is_some();
    // Response headers are a channel back too (a Location, a cookie, an
    // X-Contact): the detectors run over every value.
    if let Some((detectors, masker)) = set.detectors() {
        for value in parts.headers.values_mut() {
            let text = String::from_utf8_lossy(value.as_bytes());
            let findings = detectors.find(&text);
            if !findings.is_empty() {
                let masked = masker.mask_findings(&text, &findings);
                *value = HeaderValue::from_str(&masked)
                    .unwrap_or_else(|_| HeaderValue::from_static("[redacted]"));
            }
        }
    }
    let encoded = transfer_coded
        || parts
            .headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    // A compressed container (zip, gzip, …) hides the credential as well as
    // a Content-Encoding does.
    let container = parts
        .headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .filter_map(media_type)
        .any(|(mime, _)| scrub::is_compressed_type(&mime));
    if (encoded || container) && (mask_rules || up.secrets.is_some()) {
        let message = format!(
            "the upstream of Connection {} sent a compressed response although Sluice asked for identity encoding; Sluice cannot scrub credentials from it or mask it, so it is not passed on",
            ctx.name
        );
        result_event(ctx, session, &cmd, started, 0, Some(message.clone()));
        ctx.http_metrics.request(label, StatusCode::BAD_GATEWAY);
        return error_response(StatusCode::BAD_GATEWAY, "compressedResponse", message);
    }
    // The first bytes are read before answering when masking rules apply
    // (issue 16: a body that cannot be masked is refused with a status, not
    // cut off) and when credentials are scrubbed (compressed data under
    // another label is refused with a status, however the upstream chunks
    // its first bytes).
    let (first, ended) = if mask_rules || up.secrets.is_some() {
        let need = |got: &[u8]| {
            (mask_rules && !sniffed(got)) || (up.secrets.is_some() && scrub::magic_undecided(got))
        };
        match peek(&mut body, up.timeout, need).await {
            Ok(p) => p,
            Err(why) => {
                let message = format!("the upstream response broke off: {why}");
                result_event(ctx, session, &cmd, started, 0, Some(message.clone()));
                ctx.http_metrics.request(label, StatusCode::BAD_GATEWAY);
                return error_response(StatusCode::BAD_GATEWAY, "upstreamUnavailable", message);
            }
        }
    } else {
        (Vec::new(), false)
    };
    if up.secrets.is_some()
        && let Some(kind) = scrub::compressed_magic(&first)
    {
        let message = format!(
            "the upstream of Connection {} answered with {kind} data under another label; Sluice cannot scrub the injected credential from it, so it is not passed on",
            ctx.name
        );
        result_event(ctx, session, &cmd, started, 0, Some(message.clone()));
        ctx.http_metrics.request(label, StatusCode::BAD_GATEWAY);
        return error_response(StatusCode::BAD_GATEWAY, "compressedResponse", message);
    }
    let stage = if mask_rules {
        let bytes = &first;
        let representation = representation(&parts.headers, bytes, ended);
        let why = match &representation {
            Representation::Empty => None,
            Representation::Json { .. } => None,
            Representation::Text if set.json_paths().is_empty() => None,
            Representation::Text => Some(
                "jsonPaths masking applies, and JSON paths cannot be found in it; ask for application/json"
                    .to_string(),
            ),
            Representation::Unmaskable(why) => Some(why.clone()),
        };
        if let Some(why) = why {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let message = format!(
                "the upstream of Connection {} answered {} with a {} body that Sluice cannot mask ({why}); masking rules apply, so it is not passed on",
                ctx.name,
                parts.status.as_u16(),
                content_type.as_deref().unwrap_or("unlabelled"),
            );
            result_event(ctx, session, &cmd, started, 0, Some(message.clone()));
            ctx.http_metrics.request(label, StatusCode::BAD_GATEWAY);
            return json_response(
                StatusCode::BAD_GATEWAY,
                serde_json::json!({
                    "error": "unmaskableResponse",
                    "upstreamStatus": parts.status.as_u16(),
                    "contentType": content_type,
                    "message": message,
                }),
            );
        }
        match representation {
            Representation::Json { lines: false } => {
                Stage::Json(JsonStreamMasker::new(set.clone()))
            }
            Representation::Json { lines: true } => {
                Stage::Json(JsonStreamMasker::lines(set.clone()))
            }
            Representation::Text => Stage::Text(TextMasker::new(set.clone())),
            _ => Stage::Pass,
        }
    } else {
        Stage::Pass
    };
    if !matches!(stage, Stage::Pass) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    ctx.http_metrics.request(label, parts.status);
    let status = parts.status;
    let body = ResponseBody {
        inner: body,
        stall: None,
        stall_after: up.timeout,
        secrets: up.secrets.clone(),
        scrub: ScrubStream::new(),
        stage,
        first: (!first.is_empty()).then_some(first),
        ended: false,
        finished: false,
        record: Some(ResultRecord {
            audit: ctx.audit.clone(),
            metrics: ctx.metrics.clone(),
            session: session.clone(),
            command: cmd,
            started,
            status,
            bytes: 0,
            error: None,
        }),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Puts an approval refusal on record and answers it.
struct RefusalRecord<'a> {
    ctx: &'a HttpContext,
    session: &'a SessionInfo,
    cmd: &'a AuditCommand,
    policy: Option<String>,
    rule: Option<String>,
}

impl RefusalRecord<'_> {
    fn refuse(
        &self,
        status: StatusCode,
        body: serde_json::Value,
        why: String,
    ) -> Response<ProxyBody> {
        let _ = audit_decision(
            self.ctx,
            self.session,
            self.cmd.clone(),
            Action::RequireApproval,
            self.policy.clone(),
            self.rule.clone(),
            false,
            why,
            true,
        );
        self.ctx.http_metrics.request("requireApproval", status);
        json_response(status, body)
    }
}

/// Reads a whole body of at most `max` bytes.
async fn read_limited(mut body: ProxyBody, max: usize) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(format!("the body is larger than {max} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The body to forward and the audit note, or the refusal.
type ApprovalResult = Result<(ProxyBody, String), Response<ProxyBody>>;

/// The request an approval is asked for.
struct ApprovalAsked {
    method: String,
    raw_path: String,
    query: String,
    path_and_query: String,
    json: Option<serde_json::Value>,
}

/// A request a `requireApproval` rule catches, in run mode: asked of the
/// operator, then held until decided (hold: the response waits) or refused
/// at once with the request's name until approved (retry: the same request
/// runs once after approval). The approval is for this exact request
/// (method, path, query and body), so the body is buffered. An approved
/// request is decided again under the policies in force when the approval
/// came (an edit during the hold may deny it). An application that goes
/// away while its request is held takes the hold along (nothing runs).
/// `Ok` carries the body to forward and the note for the audit record.
#[allow(clippy::too_many_arguments)]
async fn approve(
    ctx: &HttpContext,
    live: &watch::Receiver<Arc<HttpContext>>,
    session: &SessionInfo,
    cmd: &AuditCommand,
    decision: &Decision,
    asked: ApprovalAsked,
    body: ProxyBody,
    approvals: &Approvals,
) -> ApprovalResult {
    let policy = decision.enforced_policy.clone().or(decision.policy.clone());
    let rule = decision.enforced_rule.clone().or(decision.rule.clone());
    let refusal = RefusalRecord {
        ctx,
        session,
        cmd,
        policy: policy.clone(),
        rule: rule.clone(),
    };
    let (Some(policy_name), Some(rule_name)) = (policy.clone(), rule.clone()) else {
        let why = "request refused by Sluice: it needs approval, but the decision names no rule to ask under".to_string();
        return Err(refusal.refuse(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "approvalRequired", "message": why}),
            why,
        ));
    };
    let bytes = match read_limited(body, ctx.max_request_body).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!(
                "request refused by Sluice: it needs approval, which is given for its exact body, and the body could not be read within {} bytes ({e})",
                ctx.max_request_body
            );
            return Err(refusal.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": "bodyTooLarge", "message": why}),
                why,
            ));
        }
    };
    let mut exact = format!("{} {}\n", asked.method, asked.path_and_query).into_bytes();
    exact.extend_from_slice(&bytes);
    let ask = sluice_policy::gateway::ApprovalAsk {
        connection: ctx.name.clone(),
        policy: policy_name,
        rule: rule_name,
        command: crate::approval::command(&cmd.text, &cmd.fingerprint, &exact),
        reason: None,
    };
    let retry = decision
        .approval
        .as_ref()
        .is_some_and(|a| a.mode == sluice_crds::ApprovalMode::Retry);
    let held = if retry {
        approvals.retry(&ask).await
    } else {
        let connection = ctx.name.clone();
        approvals
            .hold(
                &ask,
                move |ticket: &sluice_policy::gateway::ApprovalTicket| {
                    tracing::info!(
                        connection = %connection,
                        request = %format!("{}/{}", ticket.namespace, ticket.name),
                        approve = %ticket.approve_command,
                        "HTTP request held for approval"
                    );
                },
            )
            .await
    };
    let outcome = match held {
        Held::Settled(outcome) => outcome,
        Held::Approved(approved) => {
            // The policies may have changed while the request was held.
            let now = live.borrow().clone();
            let again = match &now.standing {
                HttpStanding::Bound { set, .. } => set.decide_http(&HttpRequest {
                    method: &asked.method,
                    path: &asked.raw_path,
                    query: &asked.query,
                    body: asked.json.as_ref(),
                }),
                _ => Decision::not_bound(&ctx.identity, &ctx.name),
            };
            let standing = crate::approval::standing(&approved, &again);
            approvals.run(approved, standing).await
        }
    };
    match outcome {
        ApprovalOutcome::Granted { request, approvers } => {
            let body = Full::new(bytes)
                .map_err(|e: Infallible| -> BoxError { match e {} })
                .boxed_unsync();
            Ok((
                body,
                format!(
                    "approved in AccessRequest {request} by {}",
                    approvers.join(", ")
                ),
            ))
        }
        ApprovalOutcome::Pending {
            request,
            approve_command,
            expires_at,
            message,
        } => Err(refusal.refuse(
            StatusCode::FORBIDDEN,
            serde_json::json!({
                "error": "approvalPending",
                "policy": policy,
                "rule": rule,
                "request": request,
                "approveCommand": approve_command,
                "expiresAt": expires_at,
                "message": message,
            }),
            format!(
                "request waits for approval in AccessRequest {request}; refused until approved"
            ),
        )),
        ApprovalOutcome::Refused {
            request,
            phase,
            deciders,
            message,
        } => Err(refusal.refuse(
            StatusCode::FORBIDDEN,
            serde_json::json!({
                "error": "approvalRefused",
                "policy": policy,
                "rule": rule,
                "request": request,
                "phase": phase,
                "deciders": deciders,
                "message": message,
            }),
            message.clone(),
        )),
    }
}

/// A request's decision record, written now when `durable`, else left
/// pending: the returned ticket is for [`crate::audit::AuditLog::durable`].
#[allow(clippy::too_many_arguments)]
fn audit_decision(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: AuditCommand,
    action: Action,
    policy: Option<String>,
    rule: Option<String>,
    dry_run: bool,
    reason: String,
    durable: bool,
) -> Result<u64, crate::audit::AuditError> {
    let kind = if action == Action::Allow || dry_run {
        AuditKind::Statement
    } else {
        AuditKind::Denial
    };
    ctx.audit.event(
        session,
        kind,
        Some(cmd),
        Some(AuditDecision {
            action,
            policy,
            rule,
            dry_run,
            reason: Some(format!("{reason} (http protocol)")),
        }),
        None,
        durable,
    )
}

fn result_event(
    ctx: &HttpContext,
    session: &SessionInfo,
    cmd: &AuditCommand,
    started: Instant,
    masked: u64,
    error: Option<String>,
) {
    let outcome = AuditOutcome {
        rows: None,
        duration_ms: Some(started.elapsed().as_millis() as u64),
        error,
        masked: (masked > 0).then_some(masked),
    };
    if let Err(e) = ctx.audit.event(
        session,
        AuditKind::Result,
        Some(cmd.clone()),
        None,
        Some(outcome),
        false,
    ) {
        tracing::error!(error = %e, "writing an audit result failed");
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the result event of a request needs, written once when the body
/// ends (or the client goes away).
struct ResultRecord {
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    session: Arc<SessionInfo>,
    command: AuditCommand,
    started: Instant,
    status: StatusCode,
    bytes: u64,
    error: Option<String>,
}

/// What happens to a response body's bytes after credentials are scrubbed.
enum Stage {
    /// Passed on as they are.
    Pass,
    /// Masked as JSON (or JSON lines) by paths and detectors.
    Json(JsonStreamMasker),
    /// Masked as text by detectors.
    Text(TextMasker),
}

impl Stage {
    fn masked(&self) -> u64 {
        match self {
            Stage::Pass => 0,
            Stage::Json(m) => m.masked(),
            Stage::Text(m) => m.masked(),
        }
    }
}

/// What a response body is, for masking.
#[derive(Debug)]
enum Representation {
    /// No body.
    Empty,
    /// JSON (`lines`: documents one after another).
    Json { lines: bool },
    /// UTF-8 text that is not JSON: masked by detectors.
    Text,
    /// Cannot be masked (binary, another charset, an unreadable label): why.
    Unmaskable(String),
}

/// How many bytes of `b` are a UTF-8 byte-order mark.
fn bom_len(b: &[u8]) -> usize {
    if b.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    }
}

/// What a response body is, from its headers and its first bytes
/// (`ended`: that is all of it). JSON behind another label (`text/plain`,
/// none), after a byte-order mark or not, is JSON.
fn representation(headers: &HeaderMap, first: &[u8], ended: bool) -> Representation {
    use Representation::{Empty, Json, Text, Unmaskable};
    if ended && first.is_empty() {
        return Empty;
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let label = types.next();
    if types.next().is_some() {
        return Unmaskable("it has more than one Content-Type".into());
    }
    let (mime, charset) = match label.map(media_type) {
        None => (None, None),
        Some(Some((m, c))) => (Some(m), c),
        Some(None) => return Unmaskable("its Content-Type cannot be read".into()),
    };
    if let Some(c) = charset
        && !matches!(c.as_str(), "utf-8" | "utf8" | "us-ascii")
    {
        return Unmaskable(format!("its charset is {c}, and Sluice masks UTF-8 text"));
    }
    let utf16 = first.starts_with(&[0xFE, 0xFF])
        || first.starts_with(&[0xFF, 0xFE])
        || first.iter().take(4).any(|b| *b == 0);
    let sniffed_json = first[bom_len(first)..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    let found = match mime.as_deref() {
        Some("application/json" | "text/json") => Json { lines: false },
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => Json { lines: false },
        Some(
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines"
            | "application/json-seq",
        ) => Json { lines: true },
        None | Some("text/plain") if sniffed_json => Json { lines: true },
        None => match std::str::from_utf8(first) {
            Ok(_) => Text,
            // Cut inside a character at the end of what was read: still text.
            Err(e) if e.error_len().is_none() => Text,
            Err(_) => Unmaskable("it has no Content-Type and is not UTF-8 text".into()),
        },
        Some(m) if is_textual(m) => Text,
        Some(m) => Unmaskable(format!("{m} is not a textual type")),
    };
    match found {
        Json { .. } | Text if utf16 => {
            Unmaskable("it is UTF-16 or UTF-32 text, and Sluice masks UTF-8 text".into())
        }
        found => found,
    }
}

/// Types masked as text by detectors.
fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime.ends_with("+xml")
        || matches!(
            mime,
            "application/xml"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/x-www-form-urlencoded"
                | "application/yaml"
                | "application/x-yaml"
                | "application/csv"
                | "application/graphql"
                | "application/sql"
        )
}

/// Whether the first bytes of a body say enough to choose how to mask it:
/// one that is not whitespace (after a byte-order mark), or [`SNIFF_LIMIT`].
fn sniffed(got: &[u8]) -> bool {
    got.len() >= SNIFF_LIMIT || got[bom_len(got)..].iter().any(|b| !b.is_ascii_whitespace())
}

/// Reads the first bytes of a body while `need` says more are needed, up to
/// the end (`true`). Each frame must arrive within `timeout`.
async fn peek(
    body: &mut Incoming,
    timeout: Duration,
    need: impl Fn(&[u8]) -> bool,
) -> Result<(Vec<u8>, bool), String> {
    let mut got = Vec::new();
    while need(&got) {
        if body.is_end_stream() {
            return Ok((got, true));
        }
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .map_err(|_| format!("nothing arrived for {} ms", timeout.as_millis()))?;
        match frame {
            None => return Ok((got, true)),
            Some(Err(e)) => return Err(error_chain(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
        }
    }
    Ok((got, body.is_end_stream()))
}

/// The response body: the upstream's, credentials scrubbed, masked when
/// masking applies, counted for audit and metrics.
struct ResponseBody {
    inner: Incoming,
    /// Fires when the upstream sends nothing for `stall_after`: the response
    /// is then cut off (the client sees the connection end) and audited.
    /// Armed at the first wait (a small body that is there at once costs no timer).
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stall_after: Duration,
    /// The Connection's credentials, scrubbed from every byte.
    secrets: Option<Arc<Secrets>>,
    scrub: ScrubStream,
    stage: Stage,
    /// The first bytes, read before answering (see [`peek`]).
    first: Option<Vec<u8>>,
    /// The end of the body went through the stages.
    ended: bool,
    finished: bool,
    record: Option<ResultRecord>,
}

impl ResponseBody {
    fn write_result(&mut self) {
        let Some(r) = self.record.take() else { return };
        let masked = self.stage.masked();
        r.metrics.masked(masked);
        let error = match (&r.error, self.finished) {
            (Some(e), _) => Some(e.clone()),
            (None, false) => Some("the client went away before the response ended".into()),
            (None, true) if r.status.as_u16() >= 400 => Some(format!("HTTP {}", r.status.as_u16())),
            (None, true) => None,
        };
        let scrubbed = self.scrub.scrubbed();
        let note = (scrubbed > 0).then(|| {
            format!(
                "the injected credential was scrubbed from the response body ({scrubbed} pieces)"
            )
        });
        let error = match (error, note) {
            (Some(e), Some(n)) => Some(format!("{e}; {n}")),
            (e, n) => e.or(n),
        };
        let outcome = AuditOutcome {
            rows: None,
            duration_ms: Some(r.started.elapsed().as_millis() as u64),
            error: error.map(|e| format!("{e}; status {}, {} bytes", r.status.as_u16(), r.bytes)),
            masked: (masked > 0).then_some(masked),
        };
        if let Err(e) = r.audit.event(
            &r.session,
            AuditKind::Result,
            Some(r.command),
            None,
            Some(outcome),
            false,
        ) {
            tracing::error!(error = %e, "writing an audit result failed");
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(r) = self.record.as_mut() {
            r.bytes += n as u64;
            r.metrics.bytes_to_client(n);
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::warn!("{message}");
        if let Some(r) = self.record.as_mut() {
            r.error = Some(message.clone());
        }
        self.finished = true;
        self.write_result();
        Poll::Ready(Some(Err(message.into())))
    }

    /// Runs the next piece of the body (`end`: the last) through the
    /// scrubber and the stage; returns what the client may have now.
    fn transform(&mut self, data: &[u8], end: bool) -> Result<Vec<u8>, String> {
        if self.ended {
            return Ok(Vec::new());
        }
        self.ended = end;
        let bytes = match &self.secrets {
            Some(s) => self.scrub.feed(s, data, end),
            None => data.to_vec(),
        };
        match &mut self.stage {
            Stage::Pass => Ok(bytes),
            Stage::Json(m) => {
                let mut out = Vec::with_capacity(bytes.len());
                m.feed(&bytes, &mut out).map_err(|e| e.to_string())?;
                if end {
                    m.finish(&mut out).map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            Stage::Text(m) => {
                let mut out = Vec::with_capacity(bytes.len());
                m.feed(&bytes, &mut out).map_err(|e| e.to_string())?;
                if end {
                    m.finish(&mut out).map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            match this.transform(&first, false) {
                Ok(out) if out.is_empty() => {}
                Ok(out) => {
                    this.count(out.len());
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Err(e) => return this.fail(e),
            }
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    let after = this.stall_after;
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                    if stall.as_mut().poll(cx).is_ready() {
                        let message = format!(
                            "the upstream response body stalled: nothing arrived for {} ms; the response was cut off",
                            after.as_millis()
                        );
                        return this.fail(message);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(stall) = this.stall.as_mut() {
                        stall
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.stall_after);
                    }
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => match frame.into_trailers() {
                            Ok(mut trailers) => {
                                if let Some(s) = &this.secrets {
                                    s.scrub_headers(&mut trailers);
                                }
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                            // Neither data nor trailers: nothing to pass on.
                            Err(_) => continue,
                        },
                    };
                    // The hot path: nothing to scrub or mask.
                    if this.secrets.is_none() && matches!(this.stage, Stage::Pass) {
                        this.count(data.len());
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let end = this.inner.is_end_stream();
                    let out = match this.transform(&data, end) {
                        Ok(out) => out,
                        Err(e) => return this.fail(e),
                    };
                    if out.is_empty() {
                        continue;
                    }
                    this.count(out.len());
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Ready(Some(Err(e))) => {
                    let message = format!("the upstream response broke off: {}", error_chain(&e));
                    return this.fail(message);
                }
                Poll::Ready(None) => {
                    let tail = match this.transform(&[], true) {
                        Ok(tail) => tail,
                        Err(e) => return this.fail(e),
                    };
                    this.finished = true;
                    this.count(tail.len());
                    this.write_result();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        // Scrubbing keeps the length; masking changes it.
        if matches!(self.stage, Stage::Pass) {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.write_result();
    }
}

/// A request body that fails when the application sends nothing for
/// `after` (a stalled upload must not hold an upstream connection forever).
struct StallGuard<B> {
    inner: B,
    /// Armed at the first wait.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    after: Duration,
    what: &'static str,
}

impl<B> StallGuard<B> {
    fn new(inner: B, after: Duration, what: &'static str) -> Self {
        StallGuard {
            inner,
            stall: None,
            after,
            what,
        }
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let after = this.after;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if stall.as_mut().poll(cx).is_ready() {
                    let message = format!(
                        "{} stalled: nothing arrived for {} ms",
                        this.what,
                        this.after.as_millis()
                    );
                    tracing::warn!("{message}");
                    return Poll::Ready(Some(Err(message.into())));
                }
                Poll::Pending
            }
            ready => {
                if let Some(stall) = this.stall.as_mut() {
                    stall
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.after);
                }
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
