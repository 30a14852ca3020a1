//! The connections of a [`super::GatewayClient`] and its clones (#25).
//!
//! When the operator offers HTTP/2 (ALPN `h2`), one connection carries every
//! request at once: the long-poll, uploads, token exchanges and approval
//! calls are streams of it, and a request opens no connection while it is
//! open and usable. Only one connection is being opened at a time, so
//! requests made together wait for the same one instead of each opening its
//! own. It is let go of after [`IDLE_FOR`] without a request open, and
//! forgotten after a request on it timed out (a connection that stopped
//! answering would otherwise take every later request down with it).
//!
//! When the operator offers only HTTP/1.1 (or no ALPN), up to [`MAX_IDLE`]
//! connections are kept, each for at most [`IDLE_FOR`], a request at a time
//! on each, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{IDLE_FOR, MAX_IDLE};

/// Largest header list (HPACK-decoded) of an answer on HTTP/2.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// The HPACK table the gateway may keep to compress its answers to this
/// sidecar (SETTINGS_HEADER_TABLE_SIZE): none. The gateway holds one such
/// table per sidecar connection, filled to its bound (4 KiB by default) by
/// answers' headers that change every second (`date`) and so are rarely
/// used again; at fleet scale those tables were about 3 KiB of the
/// operator's memory per sidecar (#25). Answers' headers are then sent
/// literally: a few dozen bytes per answer.
pub(super) const H2_HEADER_TABLE: u32 = 0;

/// A connection's request half.
pub(super) enum Sender {
    /// HTTP/1.1: one request at a time; kept for the next when it is done.
    H1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2: shared; the lease counts the request open.
    H2(http2::SendRequest<Full<Bytes>>, H2Lease),
}

/// A request open on the shared HTTP/2 connection number `id`.
pub(super) struct H2Lease {
    pool: Arc<Pool>,
    pub(super) id: u64,
}

impl Drop for H2Lease {
    fn drop(&mut self) {
        let mut shared = self.pool.lock_shared();
        if let Some(s) = shared.as_mut().filter(|s| s.id == self.id) {
            s.open = s.open.saturating_sub(1);
            s.last = Instant::now();
        }
    }
}

/// The shared HTTP/2 connection.
struct Shared {
    id: u64,
    sender: http2::SendRequest<Full<Bytes>>,
    /// Requests open on it.
    open: usize,
    /// When the last request began or ended.
    last: Instant,
}

/// A kept HTTP/1.1 connection: its request half, and since when it is idle.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    since: Instant,
}

/// The connections of a client and its clones.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Option<Shared>>,
    /// Held while a connection is being opened.
    dialing: tokio::sync::Mutex<()>,
    /// Connections opened, for the tests and the fleet benchmark.
    pub(super) opened: AtomicU64,
}

impl Pool {
    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Option<Shared>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection to send a request on without opening one: the shared
    /// HTTP/2 one when it is open, else the most recently kept HTTP/1.1 one
    /// that is open and not idle too long.
    pub(super) fn take(self: &Arc<Self>) -> Option<Sender> {
        if let Some(lease) = self.lease_shared() {
            return Some(lease);
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Idle { sender, since }) = idle.pop() {
            if since.elapsed() < IDLE_FOR && !sender.is_closed() {
                return Some(Sender::H1(sender));
            }
        }
        None
    }

    fn lease_shared(self: &Arc<Self>) -> Option<Sender> {
        let mut shared = self.lock_shared();
        let usable = shared
            .as_ref()
            .is_some_and(|s| !s.sender.is_closed() && (s.open > 0 || s.last.elapsed() < IDLE_FOR));
        if !usable {
            // Dropping the last sender lets the connection close.
            *shared = None;
            return None;
        }
        let s = shared.as_mut()?;
        s.open += 1;
        s.last = Instant::now();
        Some(Sender::H2(
            s.sender.clone(),
            H2Lease {
                pool: self.clone(),
                id: s.id,
            },
        ))
    }

    /// A connection to send a request on, opened by `dial` when none is
    /// usable. Only one is opened at a time: a request that waited for
    /// another's dial uses the HTTP/2 connection it opened.
    pub(super) async fn get<D, F, E>(self: &Arc<Self>, dial: D) -> Result<Sender, E>
    where
        D: FnOnce() -> F,
        F: Future<Output = Result<Dialed, E>>,
    {
        if let Some(sender) = self.take() {
            return Ok(sender);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(sender) = self.lease_shared() {
            return Ok(sender);
        }
        let dialed = dial().await?;
        let id = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        match dialed {
            Dialed::H1(sender) => Ok(Sender::H1(sender)),
            Dialed::H2(sender) => {
                *self.lock_shared() = Some(Shared {
                    id,
                    sender: sender.clone(),
                    open: 1,
                    last: Instant::now(),
                });
                let lease = H2Lease {
                    pool: self.clone(),
                    id,
                };
                Ok(Sender::H2(sender, lease))
            }
        }
    }

    /// Keeps an HTTP/1.1 connection whose answer was read whole for the
    /// next request, within [`MAX_IDLE`].
    pub(super) fn keep(&self, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|i| i.since.elapsed() < IDLE_FOR && !i.sender.is_closed());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Forgets the shared HTTP/2 connection `id` (a request on it timed
    /// out): the next request opens a new one. Requests open on it keep it
    /// until they end.
    pub(super) fn forget(&self, id: u64) {
        let mut shared = self.lock_shared();
        if shared.as_ref().is_some_and(|s| s.id == id) {
            *shared = None;
        }
    }
}

/// A connection just opened, its driver spawned.
pub(super) enum Dialed {
    /// The operator chose HTTP/1.1 (or offered no ALPN).
    H1(http1::SendRequest<Full<Bytes>>),
    /// The operator chose HTTP/2.
    H2(http2::SendRequest<Full<Bytes>>),
}

/// The HTTP handshake over a TLS connection, by the protocol the operator
/// chose; the connection's driver is spawned. Errors surface on the
/// requests; a connection ends when every sender of it is dropped.
pub(super) async fn handshake<T>(tls: T, h2: bool) -> hyper::Result<Dialed>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .header_table_size(H2_HEADER_TABLE)
            .handshake(TokioIo::new(tls))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Dialed::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Dialed::H1(sender))
    }
}
