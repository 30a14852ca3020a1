//! The admin port: `/metrics` (Prometheus text format), `/healthz`, `/readyz`,
//! and in run mode `/debug/standing` ([`crate::debug_standing`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Shared state of the admin endpoints.
pub struct AdminState {
    /// The metrics registry.
    pub registry: Registry,
    /// Set once every listener is up.
    pub ready: AtomicBool,
    /// What `/debug/standing` shows (run mode).
    pub standing: Option<Arc<crate::debug_standing::StandingBoard>>,
}

/// Serves the admin endpoints on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The admin port of either mode: `/metrics` from `registry`, `/readyz`
/// not ready until the caller says so. Served at `addr` when given: the
/// address bound and the server's task come back with the state; `Err` is
/// the address that could not be bound, and why.
#[allow(clippy::type_complexity)]
pub async fn start(
    addr: Option<SocketAddr>,
    registry: Registry,
    standing: Option<Arc<crate::debug_standing::StandingBoard>>,
) -> Result<
    (
        Arc<AdminState>,
        Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    ),
    (SocketAddr, std::io::Error),
> {
    let state = Arc::new(AdminState {
        registry,
        ready: AtomicBool::new(false),
        standing,
    });
    let Some(addr) = addr else {
        return Ok((state, None));
    };
    let listener = bind(addr).await.map_err(|e| (addr, e))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let task = tokio::spawn(serve(listener, state.clone()));
    Ok((state, Some((bound, task))))
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<AdminState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
                Ok(()) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "metrics could not be encoded\n".to_string(),
                ),
            }
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/debug/standing" if state.standing.is_some() => {
            let page = state
                .standing
                .as_ref()
                .map(|b| b.json())
                .unwrap_or_default();
            (StatusCode::OK, "application/json", page)
        }
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                (StatusCode::OK, "text/plain", "ready\n".to_string())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "listeners not up yet\n".to_string(),
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
