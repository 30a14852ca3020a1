//! HTTPS serving of the [`crate::gateway`] router: rustls over accepted TCP
//! connections, HTTP/2 or HTTP/1.1 with hyper as the client chose by ALPN,
//! the certificate taken per handshake from the hot-swappable resolver.
//!
//! HTTP/2 (#25): a sidecar multiplexes its long-poll, uploads, token
//! exchanges and approval calls over one connection instead of holding one
//! per task; at fleet scale the connections are most of the operator's
//! memory. A client that offers `h2` gets HTTP/2; one that offers only
//! `http/1.1`, or no ALPN at all (curl, kubectl-style clients, the CLI, the
//! API server calling the webhooks), gets HTTP/1.1 as before. What the peer
//! controls on an HTTP/2 connection is bounded: at most
//! [`H2_MAX_STREAMS`] requests at once (a stream beyond is refused with
//! `REFUSED_STREAM`), a header list of at most [`H2_MAX_HEADER_LIST`], flow
//! control windows and a send buffer of [`H2_WINDOW`] per stream (the
//! connection window [`H2_CONNECTION_WINDOW`]), so a connection's buffers stay
//! below those of the two HTTP/1.1 connections a sidecar held before; the
//! router's per-request limits (body size, in-flight bound) apply to each
//! stream as to each HTTP/1.1 request.
//!
//! Draining: once `draining` turns true the listener is closed (no new
//! connection is accepted), handshakes in progress are dropped, idle
//! keep-alive connections are closed, and every request in flight is answered
//! before its connection closes (hyper's `graceful_shutdown`, a GOAWAY on
//! HTTP/2; the gateway answers waiting long-polls at once). [`serve_tls`]
//! returns when the last connection is done; the caller bounds that with its
//! grace period.
//!
//! Keep-alive: a connection idle for longer than [`IDLE_TIMEOUT`] is closed:
//! on HTTP/1.1 one without a request (or sending a request head) that long;
//! on HTTP/2 one with no request open that long (it is shut down gracefully,
//! so a request that crosses the GOAWAY is still answered), and one whose
//! peer does not answer a PING within [`H2_PING_TIMEOUT`] (sent after
//! [`IDLE_TIMEOUT`] without a frame from it).
//!
//! The accept loop is hand-written rather than `axum::serve(..).with_graceful_shutdown`
//! because axum's server speaks plain TCP only and the certificate is chosen
//! per TLS handshake here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay without a request (idle after an answer,
/// or a request's head not yet whole) before it is closed. Sidecars keep
/// their connections for the next request (#25: a TLS handshake per request
/// cost more than the request) and let go of an idle one after 30 s
/// (`sluice_sidecar::bundle_client::IDLE_FOR`), before this closes it; a
/// client that vanished without closing holds its connection this long at most.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The protocols offered by ALPN, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Most requests open at once on one HTTP/2 connection. A sidecar has a
/// long-poll, an upload, a token exchange and an approval call or two open
/// at most.
pub const H2_MAX_STREAMS: u32 = 16;

/// Largest header list (HPACK-decoded) of an HTTP/2 request.
pub const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// Flow-control window of an HTTP/2 stream, both ways: how much of a
/// request body the peer may send before the router reads it, and how much
/// of an answer is buffered for a peer that does not read.
pub const H2_WINDOW: u32 = 64 * 1024;

/// Flow-control window of an HTTP/2 connection (all its streams together).
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// How long a PING may go unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Resolves once `draining` is true (or its sender is gone, which also means
/// the operator is stopping).
pub async fn drained(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|d| *d).await;
}

/// The HTTP/2 server settings (see the module doc).
fn http2() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_WINDOW as usize)
        .keep_alive_interval(IDLE_TIMEOUT)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Serves `app` on `listener` until `draining` turns true, then finishes the
/// requests in flight and returns once every connection is closed.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    draining: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let h2 = Arc::new(http2());
    let mut connections = JoinSet::new();
    let mut stop = draining.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drained(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let h2 = h2.clone();
        let mut draining = draining.clone();
        connections.spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let tls = tokio::select! {
                handshake = handshake => match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                // No request was made yet: nothing is lost.
                () = drained(&mut draining) => return,
            };
            let service = TowerToHyperService::new(app);
            let result = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let activity = Arc::new(Activity::new());
                let service = Tracked {
                    inner: service,
                    activity: activity.clone(),
                };
                let connection = h2.serve_connection(TokioIo::new(tls), service);
                drive(connection, draining, activity.idle_for(IDLE_TIMEOUT)).await
            } else {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(IDLE_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service);
                drive(connection, draining, std::future::pending()).await
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "draining: no longer accepting; finishing the requests in flight"
    );
    while connections.join_next().await.is_some() {}
}

/// Runs `connection` until it ends; once draining starts, or `idle`
/// resolves, it answers the requests in flight and closes.
async fn drive<C: GracefulConnection>(
    connection: C,
    mut draining: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
) -> Result<(), C::Error> {
    futures::pin_mut!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = drained(&mut draining) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = idle => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// The requests open on an HTTP/2 connection and when the last one began
/// or ended, for its idle bound.
struct Activity {
    born: Instant,
    open: AtomicUsize,
    /// Milliseconds from `born` to the last request's start or end.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            open: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once no request was open for `bound`.
    async fn idle_for(self: Arc<Self>, bound: Duration) {
        loop {
            let last = self.born + Duration::from_millis(self.last.load(Ordering::Relaxed));
            if self.open.load(Ordering::Relaxed) == 0 && last.elapsed() >= bound {
                return;
            }
            // Looked at again a bound after the last request began or ended,
            // or a bound from now while one is open.
            let wake = if self.open.load(Ordering::Relaxed) > 0 {
                Instant::now() + bound
            } else {
                last + bound
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A request counted open in its [`Activity`] until its answer (or it was
/// dropped).
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: Arc<Activity>) -> Open {
        activity.open.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Open(activity)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The router's service with its requests counted in an [`Activity`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn call(&self, request: R) -> Self::Future {
        let open = Open::new(self.activity.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(open);
            answer
        })
    }
}

#[cfg(test)]
mod tests;
