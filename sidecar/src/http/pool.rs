//! The connections to one Connection's upstream ([`UpstreamPool`]): hyper's
//! own HTTP/1.1 connections (`client::conn::http1`), one request at a time
//! each and kept for the next when its response has been read to the end
//! (bounded in number and in idle time); or, when the upstream chooses `h2`
//! by ALPN, one HTTP/2 connection that every request shares.
//!
//! It stands in for hyper-util's legacy client (issue 22): that client's
//! pool keys connections by scheme and authority, spawns a task per request
//! to return an HTTP/1.1 connection and formats the `Host` header and the
//! origin-form URI of every request, for one upstream whose URI parts this
//! Connection knows from its base URL.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ProxyBody;

/// How many idle HTTP/1.1 connections a Connection keeps for later
/// requests (more in use at once are closed when their response ends).
pub(super) const MAX_IDLE: usize = 64;
/// How long an unused connection is kept.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request could not be sent upstream, or got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The TCP connection could not be made.
    #[error("connecting to {address} failed")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection or the TLS handshake took longer than allowed.
    #[error("connecting to {address} took longer than {} ms", .after.as_millis())]
    ConnectTimeout {
        /// `host:port`.
        address: String,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("the TLS handshake with {address} failed")]
    Tls {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP connection could not be set up, or the request failed on it.
    #[error("the HTTP exchange with the upstream failed")]
    Http(#[source] hyper::Error),
}

/// Where the connections go and how many are kept.
#[derive(Clone, Debug)]
pub(super) struct PoolSettings {
    /// Idle HTTP/1.1 connections kept at most.
    pub(super) max_idle: usize,
    /// How long an idle connection is kept.
    pub(super) idle_timeout: Duration,
    /// How long connecting (TCP and TLS) may take.
    pub(super) connect_timeout: Duration,
}

/// The connections to one upstream.
pub(super) struct UpstreamPool {
    shared: Arc<Shared>,
}

struct Shared {
    scheme: Scheme,
    authority: Authority,
    /// The host to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// `None` for `http`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    settings: PoolSettings,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Mutex<VecDeque<Idle>>,
    /// The HTTP/2 connection every request shares, and when it was last used.
    h2: Mutex<Option<(http2::SendRequest<ProxyBody>, Instant)>>,
    /// Set once the task that closes connections idle too long runs.
    reaper: std::sync::atomic::AtomicBool,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection taken for one request.
enum Taken {
    /// An HTTP/1.1 connection; `reused`: it served a request before (and
    /// may have been closed by the upstream meanwhile).
    H1 {
        sender: http1::SendRequest<ProxyBody>,
        reused: bool,
    },
    /// The shared HTTP/2 connection.
    H2 {
        sender: http2::SendRequest<ProxyBody>,
        reused: bool,
    },
}

/// An HTTP/1.1 connection busy with one response: back to the pool when the
/// response has been read to its end ([`Lease::release`]), closed when it
/// is dropped before (the rest of the body is never read).
pub(super) struct Lease {
    held: Option<(http1::SendRequest<ProxyBody>, Weak<Shared>)>,
}

impl Lease {
    /// Nothing to give back (HTTP/2: the connection is shared).
    fn none() -> Self {
        Lease { held: None }
    }

    /// The response was read to its end: the connection may serve the next
    /// request.
    pub(super) fn release(&mut self) {
        if let Some((sender, pool)) = self.held.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.check_in(sender);
        }
    }
}

impl UpstreamPool {
    /// The pool of `scheme://authority`; `tls` (with its ALPN protocols set)
    /// for `https`. `None` when the host cannot be a TLS server name.
    pub(super) fn new(
        scheme: Scheme,
        authority: Authority,
        tls: Option<rustls::ClientConfig>,
        settings: PoolSettings,
    ) -> Option<Self> {
        // No user information in `:authority` (the base URL's is not a
        // credential Sluice sends).
        let authority = match authority.as_str().rsplit_once('@') {
            Some((_, hostport)) => hostport.parse().ok()?,
            None => authority,
        };
        let https = scheme == Scheme::HTTPS;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        let tls = match tls {
            Some(config) if https => {
                let name = ServerName::try_from(host.clone()).ok()?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Some(UpstreamPool {
            shared: Arc::new(Shared {
                scheme,
                authority,
                host,
                port,
                tls,
                settings,
                idle: Mutex::new(VecDeque::new()),
                h2: Mutex::new(None),
                reaper: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Sends `req` (origin-form URI and a `Host` header, as HTTP/1.1 wants
    /// them; made absolute-form for HTTP/2) on an idle connection or a new
    /// one. A request that a reused connection did not start to send (the
    /// upstream had closed it) is sent once more, on a new connection; one
    /// that was sent is never sent twice. The [`Lease`] goes with the
    /// response body.
    pub(super) async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let shared = &self.shared;
        let mut retried = false;
        loop {
            let idle = if retried {
                None
            } else {
                shared.check_out().await
            };
            let taken = match idle {
                Some(taken) => taken,
                None => shared.connect().await?,
            };
            let (mut failed, reused) = match taken {
                Taken::H1 { mut sender, reused } => match sender.try_send_request(req).await {
                    Ok(response) => {
                        let lease = Lease {
                            held: Some((sender, Arc::downgrade(shared))),
                        };
                        return Ok((response, lease));
                    }
                    Err(e) => (e, reused),
                },
                Taken::H2 { mut sender, reused } => {
                    shared.absolute_form(&mut req);
                    match sender.try_send_request(req).await {
                        Ok(response) => return Ok((response, Lease::none())),
                        Err(e) => {
                            shared.forget_h2(&sender);
                            (e, reused)
                        }
                    }
                }
            };
            match failed.take_message() {
                // Not sent: the upstream had closed the reused connection.
                // Tried once more on a new one, whose failure is final.
                Some(back) if reused => {
                    tracing::debug!(error = %failed.error(), "an idle upstream connection was closed; the request goes on a new one");
                    req = back;
                    retried = true;
                }
                _ => return Err(UpstreamError::Http(failed.into_error())),
            }
        }
    }

    /// Idle HTTP/1.1 connections kept now (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.lock_idle().len()
    }
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_h2(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(http2::SendRequest<ProxyBody>, Instant)>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared HTTP/2 connection, or the most recently used idle
    /// HTTP/1.1 connection that is still open and not idle too long.
    async fn check_out(&self) -> Option<Taken> {
        {
            let mut h2 = self.lock_h2();
            if let Some((sender, used)) = h2.as_mut() {
                if !sender.is_closed() {
                    *used = Instant::now();
                    return Some(Taken::H2 {
                        sender: sender.clone(),
                        reused: true,
                    });
                }
                *h2 = None;
            }
        }
        loop {
            let idle = self.lock_idle().pop_back()?;
            if idle.since.elapsed() > self.settings.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Released when its last response ended: ready at once, or
            // after its connection task has seen that end (or closed).
            if !sender.is_ready() {
                let ready =
                    tokio::time::timeout(self.settings.connect_timeout, sender.ready()).await;
                if !matches!(ready, Ok(Ok(()))) {
                    continue;
                }
            }
            return Some(Taken::H1 {
                sender,
                reused: true,
            });
        }
    }

    /// Keeps `sender` for the next request: the most recently used last,
    /// those idle too long and the oldest past [`PoolSettings::max_idle`]
    /// closed (dropped).
    fn check_in(&self, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() || self.settings.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock_idle();
        self.expire(&mut idle, now);
        if idle.len() >= self.settings.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    /// Closes the idle connections unused for longer than the idle timeout.
    fn expire(&self, idle: &mut VecDeque<Idle>, now: Instant) {
        while idle
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) > self.settings.idle_timeout)
        {
            idle.pop_front();
        }
    }

    /// Drops the shared HTTP/2 connection when it is `failed` or closed.
    fn forget_h2(&self, failed: &http2::SendRequest<ProxyBody>) {
        let mut h2 = self.lock_h2();
        if h2
            .as_ref()
            .is_some_and(|(s, _)| s.is_closed() || failed.is_closed())
        {
            *h2 = None;
        }
    }

    /// HTTP/2 carries the authority in `:authority`: the URI absolute, no
    /// `Host` header.
    fn absolute_form(&self, req: &mut Request<ProxyBody>) {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        req.headers_mut().remove(header::HOST);
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A new connection (TLS when `https`), HTTP/2 when the upstream chose
    /// `h2` by ALPN (kept as the shared one), else HTTP/1.1.
    async fn connect(self: &Arc<Self>) -> Result<Taken, UpstreamError> {
        self.start_reaper();
        let limit = self.settings.connect_timeout;
        let timed_out = || UpstreamError::ConnectTimeout {
            address: self.address(),
            after: limit,
        };
        let tcp = tokio::time::timeout(limit, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| UpstreamError::Connect {
                address: self.address(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return http1_over(tcp).await;
        };
        let stream = tokio::time::timeout(limit, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| UpstreamError::Tls {
                address: self.address(),
                source,
            })?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return http1_over(stream).await;
        }
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "an HTTP/2 upstream connection ended");
            }
        });
        *self.lock_h2() = Some((sender.clone(), Instant::now()));
        Ok(Taken::H2 {
            sender,
            reused: false,
        })
    }

    /// Closes idle connections once they are idle too long, even when no
    /// request comes to notice (one task per pool, ending with it).
    fn start_reaper(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.reaper.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = self.settings.idle_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                pool.expire(&mut pool.lock_idle(), now);
                let mut h2 = pool.lock_h2();
                if h2
                    .as_ref()
                    .is_some_and(|(_, used)| now.saturating_duration_since(*used) > every)
                {
                    *h2 = None;
                }
            }
        });
    }
}

/// An HTTP/1.1 connection over `io`, its task spawned.
async fn http1_over<T>(io: T) -> Result<Taken, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "an HTTP/1.1 upstream connection ended");
        }
    });
    Ok(Taken::H1 {
        sender,
        reused: false,
    })
}

/// The `Host` header of requests to `authority` under `scheme`: the host,
/// and the port unless it is the scheme's default.
pub(super) fn host_header(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_string(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests;
