//! HTTPS serving of the [`crate::gateway`] router: rustls over accepted TCP
//! connections, HTTP/1.1 with hyper, the certificate taken per handshake from
//! the hot-swappable resolver.
//!
//! Draining: once `draining` turns true the listener is closed (no new
//! connection is accepted), handshakes in progress are dropped, idle
//! keep-alive connections are closed, and every request in flight is answered
//! before its connection closes (hyper's `graceful_shutdown`; the gateway
//! answers waiting long-polls at once). [`serve_tls`] returns when the last
//! connection is done; the caller bounds that with its grace period.
//!
//! Keep-alive: a connection idle (or sending a request head) for longer than
//! [`IDLE_TIMEOUT`] is closed.
//!
//! The accept loop is hand-written rather than `axum::serve(..).with_graceful_shutdown`
//! because axum's server speaks plain TCP only and the certificate is chosen
//! per TLS handshake here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
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

/// Resolves once `draining` is true (or its sender is gone, which also means
/// the operator is stopping).
pub async fn drained(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|d| *d).await;
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
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            futures::pin_mut!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = drained(&mut draining) => {
                    // Answers the request in flight (if any), then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
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
