//! A client connection's own HTTP/1.1 connection to the upstream
//! ([`Dedicated`]): an HTTP/1.1 connection carries one request at a time,
//! and so does a client's keep-alive connection to the sidecar, so each
//! client connection keeps one upstream connection of its own instead of
//! checking one out of the client's shared pool for every request (the
//! pool's key, lock, checkout and return were a cost of every request,
//! issue 22). An upstream that chooses HTTP/2 by ALPN is served by the
//! shared client ([`HttpUpstream::shared_only`]): its one connection
//! multiplexes every client's requests.
//!
//! Bounded as the pool was: at most one upstream connection per admitted
//! client connection, closed with it (or by the upstream); its TCP connect
//! and TLS handshake within the Connection's upstream timeout (the caller's
//! timeout covers the whole exchange).

use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::upstream::HttpUpstream;
use super::{BoxError, ProxyBody};

/// How long a kept connection may take to be ready for the next request.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One client connection's upstream connection: its sender while it is
/// open, with the upstream it leads to (a bundle with another upstream
/// gets a connection of its own).
#[derive(Default)]
pub(super) struct Dedicated(Mutex<Option<Kept>>);

struct Kept {
    upstream: Arc<HttpUpstream>,
    sender: http1::SendRequest<ProxyBody>,
}

/// What a new connection to the upstream turned out to be.
enum Opened {
    /// HTTP/1.1: the sender of a connection now driven by its own task.
    Http1(http1::SendRequest<ProxyBody>),
    /// The upstream chose HTTP/2: the shared client serves it.
    Http2,
}

impl Dedicated {
    /// The kept sender to `upstream`, if any (a sender to another
    /// upstream is dropped, which closes its connection).
    fn take(&self, upstream: &Arc<HttpUpstream>) -> Option<http1::SendRequest<ProxyBody>> {
        let kept = lock(&self.0).take()?;
        Arc::ptr_eq(&kept.upstream, upstream).then_some(kept.sender)
    }

    fn keep(&self, upstream: &Arc<HttpUpstream>, sender: http1::SendRequest<ProxyBody>) {
        *lock(&self.0) = Some(Kept {
            upstream: upstream.clone(),
            sender,
        });
    }
}

/// A client connection's requests are sequential: the lock is never
/// contended; a panic while it was held left an `Option` whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends `req` (its URI absolute, as [`super::upstream::upstream_request`]
/// builds it) over the client connection's own upstream connection,
/// opening one when there is none (or the kept one closed); through the
/// shared client when the upstream speaks HTTP/2. A request that a kept
/// connection could not send because it had just closed is sent once more
/// over a new connection (as the shared pool retries it).
pub(super) async fn send(
    up: &Arc<HttpUpstream>,
    own: &Dedicated,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, BoxError> {
    if up.shared_only() {
        return Ok(up.client.request(req).await?);
    }
    let mut req = req;
    let kept = match own.take(up) {
        // Ready at once but for a moment at the end of the previous
        // response; a connection that is not ready within a second is
        // left to end on its own, and another one is opened.
        Some(mut sender) => match tokio::time::timeout(READY_WAIT, sender.ready()).await {
            Ok(Ok(())) => Some(sender),
            _ => None,
        },
        None => None,
    };
    let reused = kept.is_some();
    let mut sender = match kept {
        Some(sender) => sender,
        None => match open(up).await? {
            Opened::Http1(sender) => sender,
            Opened::Http2 => return Ok(up.client.request(req).await?),
        },
    };
    origin_form(up, &mut req);
    let sending = sender.try_send_request(req);
    // Kept at once: the next request of this client waits for it to be
    // ready (this response read to its end) or opens another.
    own.keep(up, sender);
    let unsent = match sending.await {
        Ok(response) => return Ok(response),
        Err(mut e) => match e.take_message() {
            Some(req) if reused => req,
            _ => return Err(Box::new(e.into_error())),
        },
    };
    let Opened::Http1(mut sender) = open(up).await? else {
        return Err("the upstream changed protocol between two connections".into());
    };
    let response = sender.send_request(unsent).await;
    own.keep(up, sender);
    Ok(response?)
}

/// An HTTP/1.1 request carries its path in the request line and the
/// upstream's authority in `Host` (which the shared client sets from an
/// absolute URI).
fn origin_form(up: &HttpUpstream, req: &mut Request<ProxyBody>) {
    let path = req.uri().path_and_query().cloned();
    if let Some(path) = path {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, up.host_header().clone());
    }
}

/// Opens a connection to the upstream: TCP, then TLS for an https base
/// URL (ALPN as the shared client offers it), then the HTTP/1.1
/// handshake, the connection driven by a task of its own.
async fn open(up: &HttpUpstream) -> Result<Opened, BoxError> {
    let (host, port) = up.address();
    let connecting = TcpStream::connect((host, port));
    let tcp = tokio::time::timeout(up.timeout, connecting)
        .await
        .map_err(|_| format!("connecting to {}: timed out", up.authority))?
        .map_err(|e| format!("connecting to {}: {e}", up.authority))?;
    let _ = tcp.set_nodelay(true);
    let Some((tls, name)) = up.tls() else {
        return handshake(TokioIo::new(tcp)).await;
    };
    let tls = tokio::time::timeout(up.timeout, tls.connect(name.clone(), tcp))
        .await
        .map_err(|_| format!("TLS handshake with {}: timed out", up.authority))?
        .map_err(|e| format!("TLS handshake with {}: {e}", up.authority))?;
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        up.chose_h2();
        return Ok(Opened::Http2);
    }
    handshake(TokioIo::new(tls)).await
}

async fn handshake<T>(io: T) -> Result<Opened, BoxError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "an upstream connection ended with an error");
        }
    });
    Ok(Opened::Http1(sender))
}

/// The `Host` header of an upstream whose base URL has `authority` under
/// `scheme`: the host, and the port unless it is the scheme's default.
pub(super) fn host_header(
    scheme: &http::uri::Scheme,
    authority: &http::uri::Authority,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let default_port = if *scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let value = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_string(),
    };
    HeaderValue::from_str(&value)
}

/// The TLS of a client connection's own connection to an https upstream
/// named `host`: the Connection's client configuration, with ALPN as the
/// shared client offers it.
pub(super) fn tls(
    config: &rustls::ClientConfig,
    host: &str,
    http2: bool,
) -> Result<(TlsConnector, ServerName<'static>), rustls::pki_types::InvalidDnsNameError> {
    let name = ServerName::try_from(host.to_string())?;
    let mut config = config.clone();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok((TlsConnector::from(Arc::new(config)), name))
}
