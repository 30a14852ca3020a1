//! The client of the operator's gateway API (docs/DESIGN.md §3, §4, §7): token
//! exchange, bundle (long-poll) and audit upload, over HTTPS that trusts only
//! the operator's CA.
//!
//! Connections are kept and used again (#25): a TLS handshake costs the
//! operator far more CPU than the request it carries (an audit upload every
//! few seconds, a long-poll after the last), and each connection held costs
//! it memory. The client offers HTTP/2 and HTTP/1.1 by ALPN. When the
//! operator chooses HTTP/2, a client and its clones share one connection:
//! the long-poll, uploads, token exchanges and approval calls are streams of
//! it (the operator bounds how many are open at once; more wait their turn).
//! When it chooses HTTP/1.1, a client and its clones share a few idle
//! connections ([`MAX_IDLE`]), so the long-poll and the uploader each hold
//! one. Either way a connection is let go of after [`IDLE_FOR`] without a
//! request (the operator closes a connection idle longer than its own,
//! longer, bound). A request goes on a fresh connection when none is open
//! and usable, and again on a fresh one when a kept connection turns out
//! closed before the request was written (hyper hands it back unsent); a
//! request that was written is never sent twice by this client. An HTTP/2
//! connection a request timed out on is not used for new requests.
//!
//! Bounds: connecting and the TLS handshake take at most [`CONNECT_TIMEOUT`],
//! an answer's body at most [`MAX_BODY`] bytes, each call its own time limit;
//! a `Retry-After` is honoured up to [`MAX_RETRY_AFTER`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
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

/// How long an idle connection is kept (an HTTP/2 one: without a request open). Below the operator's idle bound
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

mod pool;

use pool::{Dialed, Pool, Sender};

/// A client of one operator's gateway API. Clones share the connections.
#[derive(Clone)]
pub struct GatewayClient {
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    pool: Arc<Pool>,
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
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(GatewayClient {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            pool: Arc::default(),
        })
    }

    /// How many connections this client (and its clones) opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.pool.opened.load(Ordering::Relaxed)
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
        let request = self.request(method, path, bearer, headers, body)?;
        // The HTTP/2 connection the request went on, if it did.
        let on = AtomicU64::new(0);
        match tokio::time::timeout(limit, self.send(request, &on)).await {
            Ok(answer) => answer,
            Err(_) => {
                // It may have stopped answering: new requests go elsewhere.
                self.pool.forget(on.load(Ordering::Relaxed));
                Err(GatewayError::Timeout {
                    url: self.url.clone(),
                    path: route,
                    after: limit,
                })
            }
        }
    }

    fn transport(&self, why: String) -> GatewayError {
        GatewayError::Transport {
            url: self.url.clone(),
            why,
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, GatewayError> {
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut request = Request::builder().method(method).header(
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
        // The authority goes in the URI (HTTP/2's `:authority`) and, on
        // HTTP/1.1, in `host`: set where the connection is known.
        request
            .uri(format!("https://{authority}{path}"))
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.transport(format!("cannot build the request: {e}")))
    }

    /// Sends `request` on a kept connection, or a fresh one when none is
    /// usable or the kept one closed before the request could be written;
    /// reads the answer whole. `on` is set to the HTTP/2 connection used.
    async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
        on: &AtomicU64,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), GatewayError> {
        let (sender, response) = loop {
            let sender = self.pool.get(|| self.connect()).await?;
            let sent = match sender {
                Sender::H1(mut h1) => {
                    // Ready once its last answer is done; an error means it closed.
                    let ready = tokio::time::timeout(Duration::from_secs(1), h1.ready()).await;
                    if !matches!(ready, Ok(Ok(()))) {
                        continue;
                    }
                    let request = http1_form(request);
                    let sent = h1.try_send_request(request).await;
                    (Sender::H1(h1), sent)
                }
                Sender::H2(mut h2, lease) => {
                    on.store(lease.id, Ordering::Relaxed);
                    let sent = h2.try_send_request(absolute_form(request)).await;
                    (Sender::H2(h2, lease), sent)
                }
            };
            match sent {
                (sender, Ok(response)) => break (sender, response),
                (_, Err(mut e)) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(self.transport(format!("request failed: {}", e.into_error())));
                    }
                },
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| self.transport(format!("reading the answer failed: {e}")))?
            .to_bytes();
        // The answer was read whole: the connection may carry the next
        // request (an HTTP/2 one's lease ends here).
        if let Sender::H1(h1) = sender {
            self.pool.keep(h1);
        }
        Ok((status, headers, bytes))
    }

    /// A new TLS connection to the gateway, HTTP/2 when the operator
    /// chose it, its driver spawned.
    async fn connect(&self) -> Result<Dialed, GatewayError> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| self.transport(format!("TCP connect failed: {e}")))?;
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| self.transport(format!("TLS handshake failed: {e}")))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| self.transport(format!("no connection within {CONNECT_TIMEOUT:?}")))??;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        pool::handshake(tls, h2)
            .await
            .map_err(|e| self.transport(format!("HTTP handshake failed: {e}")))
    }
}

/// `request` with the authority in its URI again (HTTP/2's `:authority`),
/// after an HTTP/1.1 connection handed it back unsent in origin form.
fn absolute_form(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    if request.uri().authority().is_some() {
        return request;
    }
    let authority = request
        .headers_mut()
        .remove(hyper::header::HOST)
        .and_then(|h| h.to_str().ok().map(String::from));
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Some(Ok(uri)) = authority.map(|a| format!("https://{a}{path}").parse()) {
        *request.uri_mut() = uri;
    }
    request
}

/// `request` in HTTP/1.1's origin form: the path in the request line, the
/// authority in `host`.
fn http1_form(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let uri = request.uri();
    let origin = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map(|a| a.as_str().to_string());
    if let Ok(origin) = origin.parse() {
        *request.uri_mut() = origin;
    }
    if let Some(authority) = authority.and_then(|a| a.parse().ok()) {
        request.headers_mut().insert(hyper::header::HOST, authority);
    }
    request
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
mod tests;
