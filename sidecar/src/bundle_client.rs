//! The client of the operator's gateway API (docs/DESIGN.md §3, §4, §7): token
//! exchange, bundle (long-poll) and audit upload, over HTTPS that trusts only
//! the operator's CA.
//!
//! Connections are kept and used again (#25): a TLS handshake costs the
//! operator far more CPU than the request it carries (an audit upload every
//! few seconds, a long-poll after the last). A client and its clones share a
//! few idle connections ([`MAX_IDLE`]), each for at most [`IDLE_FOR`] (the
//! operator closes a connection idle longer than its own, longer, bound), so
//! the long-poll and the uploader each hold one. A request goes on a fresh
//! connection when no idle one is open and ready, and again on a fresh one
//! when a kept connection turns out closed before the request was written
//! (hyper hands it back unsent); a request that was written is never sent
//! twice by this client.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sluice_policy::wire::{AuditReceipt, Bundle, ErrorBody, TokenRequest, TokenResponse};

/// Largest answer accepted from the gateway (a bundle holds policies of one
/// namespace; this is far above any real one).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How long connecting and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most idle connections a client (with its clones) keeps: one per task that
/// calls the gateway (the long-poll, the uploader, approvals) is plenty.
pub const MAX_IDLE: usize = 4;

/// How long an idle connection is kept. Below the operator's idle bound
/// (`sluice_operator::gateway::serve::IDLE_TIMEOUT`, 90 s), so the client
/// lets go of a connection before the operator would close it under a
/// request being written.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// The longest `Retry-After` honoured: a longer one (or a broken one) is
/// read as this, so a confused operator cannot silence a sidecar for long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a gateway call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `SLUICE_GATEWAY_URL` is unusable.
    #[error(
        "gateway URL {url:?} is not usable: {why}; set SLUICE_GATEWAY_URL to https://HOST[:PORT]"
    )]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The CA PEM holds no usable certificate.
    #[error("the operator CA (SLUICE_CA_PEM or SLUICE_CA_FILE) holds no usable certificate: {0}")]
    BadCa(String),
    /// TCP, TLS or HTTP failed.
    #[error("cannot reach the Sluice operator at {url}: {why}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// The call took too long.
    #[error("the Sluice operator at {url} did not answer {path} within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The route.
        path: String,
        /// The limit.
        after: Duration,
    },
    /// The gateway refused the call.
    #[error("the Sluice operator refused {path}: HTTP {status} {reason}: {message}")]
    Refused {
        /// The route.
        path: String,
        /// HTTP status.
        status: u16,
        /// CamelCase reason from the body (e.g. `PodDeleted`).
        reason: String,
        /// The message from the body.
        message: String,
        /// The `Retry-After` of a 429 or 503 (overloaded, throttled,
        /// unavailable), at most [`MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
    },
    /// The answer is not what the API promises.
    #[error("the Sluice operator's answer to {path} is malformed: {source}")]
    Malformed {
        /// The route.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl GatewayError {
    /// Whether the gateway said the token is not (or no longer) good.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, GatewayError::Refused { status: 401, .. })
    }

    /// How long the operator asked to be left alone (its `Retry-After` on a
    /// 429 or 503), at most [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the gateway refuses this pod's identity or sidecar outright
    /// (401: token, pod or service account void; 403: not a genuine sidecar):
    /// the bundle held must not be used any longer.
    pub fn refuses_identity(&self) -> bool {
        matches!(
            self,
            GatewayError::Refused {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// What a bundle poll returned.
#[derive(Debug)]
pub enum BundlePoll {
    /// A new bundle.
    Changed(Box<Bundle>),
    /// Unchanged; the held bundle is vouched for until this instant (RFC 3339), when given.
    Unchanged(Option<String>),
}

/// A kept connection: its request half, and since when it is idle.
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A client of one operator's gateway API. Clones share the idle connections.
#[derive(Clone)]
pub struct GatewayClient {
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    idle: Arc<Mutex<Vec<Idle>>>,
    /// Connections opened, for the tests.
    opened: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// A client of `url` (`https://HOST[:PORT]`) trusting only the CAs in `ca_pem`.
    pub fn new(url: &str, ca_pem: &str) -> Result<Self, GatewayError> {
        let bad = |why: &str| GatewayError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("the host is not a DNS name or IP address"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| GatewayError::BadCa(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| GatewayError::BadCa(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(GatewayError::BadCa("no PEM certificate found".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| GatewayError::BadCa(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(GatewayClient {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            idle: Arc::new(Mutex::new(Vec::new())),
            opened: Arc::default(),
        })
    }

    /// How many connections this client (and its clones) opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The gateway URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `POST /v1/token`: exchanges a projected service-account token.
    pub async fn exchange(&self, subject_token: &str) -> Result<TokenResponse, GatewayError> {
        let body = serde_json::to_vec(&TokenRequest {
            subject_token: subject_token.to_string(),
        })
        .map_err(|source| GatewayError::Malformed {
            path: "/v1/token".into(),
            source,
        })?;
        let (status, headers, bytes) = self
            .call(
                Method::POST,
                "/v1/token",
                None,
                &[],
                Some(body),
                Duration::from_secs(30),
            )
            .await?;
        decode(answer("/v1/token", status, &headers, &bytes)?, "/v1/token")
    }

    /// `GET /v1/bundle`, long-polling up to `wait` when `revision` is held.
    pub async fn bundle(
        &self,
        token: &str,
        revision: Option<&str>,
        wait: Duration,
    ) -> Result<BundlePoll, GatewayError> {
        let path = match revision {
            Some(_) => format!("/v1/bundle?wait={}s", wait.as_secs()),
            None => "/v1/bundle".to_string(),
        };
        let etag = revision.map(|r| format!("\"{r}\""));
        let headers: Vec<(&str, &str)> = etag
            .as_deref()
            .map(|e| vec![("if-none-match", e)])
            .unwrap_or_default();
        let (status, headers, bytes) = self
            .call(
                Method::GET,
                &path,
                Some(token),
                &headers,
                None,
                wait + Duration::from_secs(15),
            )
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            let expires = headers
                .get("sluice-bundle-expires-at")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            return Ok(BundlePoll::Unchanged(expires));
        }
        let bytes = answer("/v1/bundle", status, &headers, &bytes)?;
        Ok(BundlePoll::Changed(Box::new(decode(bytes, "/v1/bundle")?)))
    }

    /// `POST /v1/audit`, with an [`sluice_policy::wire::AuditBatch`] as JSON (the uploader
    /// assembles it from the events' lines).
    pub async fn audit(&self, token: &str, body: Vec<u8>) -> Result<AuditReceipt, GatewayError> {
        let (status, headers, bytes) = self
            .call(
                Method::POST,
                "/v1/audit",
                Some(token),
                &[],
                Some(body),
                Duration::from_secs(30),
            )
            .await?;
        decode(answer("/v1/audit", status, &headers, &bytes)?, "/v1/audit")
    }

    /// One request to the gateway; `limit` bounds the whole exchange.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), GatewayError> {
        let route = path.split('?').next().unwrap_or(path).to_string();
        tokio::time::timeout(limit, self.call_inner(method, path, bearer, headers, body))
            .await
            .map_err(|_| GatewayError::Timeout {
                url: self.url.clone(),
                path: route,
                after: limit,
            })?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), GatewayError> {
        let transport = |why: String| GatewayError::Transport {
            url: self.url.clone(),
            why,
        };
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority)
            .header(
                "user-agent",
                concat!("sluice-sidecar/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let mut request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| transport(format!("cannot build the request: {e}")))?;
        // A kept connection first; a fresh one when none is usable, or when
        // the kept one closed before the request could be written.
        let (sender, response) = loop {
            let Some(mut kept) = self.take_idle() else {
                let mut sender = self.connect().await?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| transport(format!("request failed: {e}")))?;
                break (sender, response);
            };
            // Ready once its last answer is done; an error means it closed.
            let ready = tokio::time::timeout(Duration::from_secs(1), kept.ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                continue;
            }
            match kept.try_send_request(request).await {
                Ok(response) => break (kept, response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(transport(format!("request failed: {}", e.into_error())));
                    }
                },
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| transport(format!("reading the answer failed: {e}")))?
            .to_bytes();
        // The answer was read whole: the connection may carry the next request.
        if !sender.is_closed() {
            self.keep(sender);
        }
        Ok((status, headers, bytes))
    }

    /// The most recently kept connection that is open and not idle too long.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Idle { sender, since }) = idle.pop() {
            if since.elapsed() < IDLE_FOR && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender`'s connection for the next request, within [`MAX_IDLE`].
    fn keep(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|i| i.since.elapsed() < IDLE_FOR && !i.sender.is_closed());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new TLS connection to the gateway, its HTTP/1.1 driver spawned.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, GatewayError> {
        let transport = |why: String| GatewayError::Transport {
            url: self.url.clone(),
            why,
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| transport(format!("TCP connect failed: {e}")))?;
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| transport(format!("TLS handshake failed: {e}")))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| transport(format!("no connection within {CONNECT_TIMEOUT:?}")))??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport(format!("HTTP handshake failed: {e}")))?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            // Errors surface on the request; the connection ends when every
            // sender of it is dropped (a request cut off, an idle one let go).
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// The body of a 2xx answer, else the gateway's refusal.
pub(crate) fn ok_or_refused<'a>(
    path: &str,
    status: StatusCode,
    bytes: &'a Bytes,
) -> Result<&'a Bytes, GatewayError> {
    if status.is_success() {
        return Ok(bytes);
    }
    let (reason, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(e) => (e.reason, e.message),
        Err(_) => (
            status.canonical_reason().unwrap_or("").to_string(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
        ),
    };
    Err(GatewayError::Refused {
        path: path.to_string(),
        status: status.as_u16(),
        reason,
        message,
        retry_after: None,
    })
}

/// Like [`ok_or_refused`], with the `Retry-After` of a 429 or 503 kept.
fn answer<'a>(
    path: &str,
    status: StatusCode,
    headers: &hyper::HeaderMap,
    bytes: &'a Bytes,
) -> Result<&'a Bytes, GatewayError> {
    ok_or_refused(path, status, bytes).map_err(|mut e| {
        if let GatewayError::Refused { retry_after, .. } = &mut e
            && matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
        {
            *retry_after = retry_after_of(headers);
        }
        e
    })
}

/// A `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`] (an HTTP date,
/// which the gateway never sends, or garbage, reads as the maximum).
fn retry_after_of(headers: &hyper::HeaderMap) -> Option<Duration> {
    let value = headers.get(hyper::header::RETRY_AFTER)?;
    let seconds = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(MAX_RETRY_AFTER, Duration::from_secs);
    Some(seconds.min(MAX_RETRY_AFTER))
}

/// How long to wait before asking again after the operator asked for
/// `asked`: at least that (at most [`MAX_RETRY_AFTER`]), plus up to half of
/// it again at random, so sidecars turned away together come back spread out.
pub fn honoured(asked: Duration) -> Duration {
    use rand::Rng;
    let asked = asked.min(MAX_RETRY_AFTER);
    asked + asked.mul_f64(rand::rng().random_range(0.0..=0.5))
}

/// Decodes a JSON answer of `path`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &Bytes,
    path: &str,
) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|source| GatewayError::Malformed {
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod test_gateway;

#[cfg(test)]
mod tests {
    use super::test_gateway::TestGateway;
    use super::*;

    #[test]
    fn retry_after_is_read_bounded_and_honoured_with_jitter() {
        let refusal = |status: StatusCode, value: Option<&str>| {
            let mut headers = hyper::HeaderMap::new();
            if let Some(v) = value {
                headers.insert(hyper::header::RETRY_AFTER, v.parse().unwrap());
            }
            let body = Bytes::from_static(br#"{"reason":"Overloaded","message":"busy"}"#);
            answer("/v1/audit", status, &headers, &body)
                .unwrap_err()
                .retry_after()
        };
        let secs = Duration::from_secs;
        assert_eq!(
            refusal(StatusCode::TOO_MANY_REQUESTS, Some("3")),
            Some(secs(3))
        );
        assert_eq!(
            refusal(StatusCode::SERVICE_UNAVAILABLE, Some("1")),
            Some(secs(1))
        );
        assert_eq!(
            refusal(StatusCode::TOO_MANY_REQUESTS, Some("86400")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            refusal(StatusCode::TOO_MANY_REQUESTS, Some("soon")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(refusal(StatusCode::TOO_MANY_REQUESTS, None), None);
        // Only overload and unavailability ask for a pause.
        assert_eq!(refusal(StatusCode::FORBIDDEN, Some("3")), None);
        for _ in 0..100 {
            let wait = honoured(secs(2));
            assert!(wait >= secs(2) && wait <= secs(3), "{wait:?}");
        }
        assert!(honoured(secs(3600)) <= MAX_RETRY_AFTER + MAX_RETRY_AFTER / 2);
    }

    /// A stand-in gateway over HTTPS that counts the connections it
    /// accepted and closed. Every answer is an audit receipt; `/v1/bundle`
    /// answers only once `release` is notified. Connections are kept alive
    /// (closed after `idle` without a request, when given) unless `keep_alive`
    /// is false.
    struct StandIn {
        url: String,
        ca_pem: String,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        closed: Arc<std::sync::atomic::AtomicUsize>,
        release: Arc<tokio::sync::Notify>,
        _server: TestGateway,
    }

    impl StandIn {
        async fn start(keep_alive: bool, idle: Option<Duration>) -> StandIn {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let accepted = Arc::new(AtomicUsize::new(0));
            let closed = Arc::new(AtomicUsize::new(0));
            let release = Arc::new(tokio::sync::Notify::new());
            let server = TestGateway::start({
                let (accepted, closed, release) =
                    (accepted.clone(), closed.clone(), release.clone());
                move |handshake| {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (closed, release) = (closed.clone(), release.clone());
                    async move {
                        if let Ok(tls) = handshake.await {
                            let service = hyper::service::service_fn(
                                move |request: hyper::Request<hyper::body::Incoming>| {
                                    let release = release.clone();
                                    async move {
                                        if request.uri().path() == "/v1/bundle" {
                                            release.notified().await;
                                        }
                                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                            Full::new(Bytes::from_static(
                                                br#"{"accepted":1,"checkpoints":[]}"#,
                                            )),
                                        ))
                                    }
                                },
                            );
                            let mut builder = hyper::server::conn::http1::Builder::new();
                            builder.keep_alive(keep_alive);
                            if let Some(idle) = idle {
                                builder
                                    .timer(hyper_util::rt::TokioTimer::new())
                                    .header_read_timeout(idle);
                            }
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        closed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .await;
            StandIn {
                url: server.url.clone(),
                ca_pem: server.ca_pem.clone(),
                accepted,
                closed,
                release,
                _server: server,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn closed(&self) -> usize {
            self.closed.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection_also_from_clones() {
        let gateway = StandIn::start(true, None).await;
        let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
        for _ in 0..3 {
            client.audit("t", b"{}".to_vec()).await.unwrap();
        }
        // A clone (the uploader's, approvals') shares the kept connection.
        client.clone().audit("t", b"{}".to_vec()).await.unwrap();
        assert_eq!(
            (gateway.accepted(), client.connections_opened()),
            (1, 1),
            "four requests in turn opened more than one connection"
        );
    }

    #[tokio::test]
    async fn a_request_while_another_waits_takes_a_connection_of_its_own() {
        let gateway = StandIn::start(true, None).await;
        let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
        // Warm: one kept connection.
        client.audit("t", b"{}".to_vec()).await.unwrap();
        let poll = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .call(
                        Method::GET,
                        "/v1/bundle",
                        Some("t"),
                        &[],
                        None,
                        Duration::from_secs(30),
                    )
                    .await
            }
        });
        // The long-poll holds the kept connection; the upload does not wait
        // behind it.
        tokio::time::timeout(Duration::from_secs(10), client.audit("t", b"{}".to_vec()))
            .await
            .expect("an upload waited behind a long-poll")
            .unwrap();
        assert_eq!(gateway.accepted(), 2);
        gateway.release.notify_one();
        let (status, _, _) = poll.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        // Both are kept: two more requests at once open nothing new.
        let (a, b) = tokio::join!(
            client.audit("t", b"{}".to_vec()),
            client.audit("t", b"{}".to_vec())
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(gateway.accepted(), 2);
    }

    #[tokio::test]
    async fn a_connection_the_operator_closed_is_not_used_again() {
        // The operator closes connections idle for 200 ms.
        let gateway = StandIn::start(true, Some(Duration::from_millis(200))).await;
        let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
        client.audit("t", b"{}".to_vec()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while gateway.closed() < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the stand-in closed the idle connection");
        client.audit("t", b"{}".to_vec()).await.unwrap();
        assert_eq!(gateway.accepted(), 2);
        // An operator that closes after every answer.
        let gateway = StandIn::start(false, None).await;
        let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
        for _ in 0..3 {
            client.audit("t", b"{}".to_vec()).await.unwrap();
        }
        assert_eq!(gateway.accepted(), 3);
    }

    #[test]
    fn urls_and_cas_are_checked() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err = GatewayClient::new("http://op:8443", "x").unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = GatewayClient::new("https://op:8443", "not a pem").unwrap_err();
        assert!(matches!(err, GatewayError::BadCa(_)), "{err}");
    }
}
