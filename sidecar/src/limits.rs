//! Bounds on what peers can hold (everything a peer
//! controls is bounded): connections per listener, file descriptors across listeners,
//! and the time a PostgreSQL client may take to start its session; the HTTP
//! header-read and idle timeouts are configured here too.
//!
//! Every accepted connection takes a slot of its listener and a share of the
//! process's file descriptors ([`FDS_PER_SESSION`]); a listener's slots are
//! at most its fair share of what the descriptor limit leaves after
//! [`Limits::fd_reserve`], so one listener full of idle clients cannot take
//! the descriptors another listener's sessions need. A connection past
//! either bound gets `FATAL 53300` (too many connections), as PostgreSQL
//! answers past `max_connections`, and is closed.
//!
//! The PostgreSQL plane's buffers share one [`BufferBudget`]: every message
//! larger than [`BUDGETED_MESSAGE`] is charged to it while it is assembled
//! and held, so many clients each within their own caps cannot together
//! exhaust memory. A session whose message does not fit gets `FATAL 53200`
//! (out_of_memory) naming the budget; the others go on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a PostgreSQL client may take to send its first message (the
/// startup packet, or an SSL/GSS request) — PostgreSQL's
/// `authentication_timeout` and PgBouncer's `client_login_timeout` are 60 s.
pub const DEFAULT_PG_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections one listener accepts at once, at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept free for everything but sessions (the admin port,
/// the operator's API, the audit file, logs, catalog lookups).
pub const DEFAULT_FD_RESERVE: usize = 64;
/// HTTP: how long a client may take to send a request's headers.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP: how long a keep-alive connection may stay idle between requests.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes all sessions' message buffers may hold together.
pub const DEFAULT_BUFFER_BUDGET: usize = 256 * 1024 * 1024;
/// The smallest buffer budget accepted: 1 MiB.
pub const MIN_BUFFER_BUDGET: usize = 1024 * 1024;
/// Messages larger than this are charged to the [`BufferBudget`] (smaller
/// ones fit in a session's own read buffer).
pub const BUDGETED_MESSAGE: usize = 64 * 1024;
/// Descriptors one session holds: the client's socket, the upstream's, and
/// the catalog session's.
pub const FDS_PER_SESSION: usize = 3;
/// Environment variables of the limits (both modes; standalone also takes
/// the flags of the same names).
pub mod env {
    /// Seconds; [`super::Limits::pg_startup_timeout`].
    pub const PG_STARTUP_TIMEOUT: &str = "SLUICE_PG_STARTUP_TIMEOUT";
    /// Connections; [`super::Limits::max_connections`].
    pub const MAX_CONNECTIONS: &str = "SLUICE_MAX_CONNECTIONS";
    /// Descriptors; [`super::Limits::fd_reserve`].
    pub const FD_RESERVE: &str = "SLUICE_FD_RESERVE";
    /// Seconds; [`super::Limits::http_header_timeout`].
    pub const HTTP_HEADER_TIMEOUT: &str = "SLUICE_HTTP_HEADER_TIMEOUT";
    /// Seconds; [`super::Limits::http_idle_timeout`].
    pub const HTTP_IDLE_TIMEOUT: &str = "SLUICE_HTTP_IDLE_TIMEOUT";
    /// Bytes; [`super::Limits::buffer_budget`].
    pub const BUFFER_BUDGET: &str = "SLUICE_BUFFER_BUDGET";
}

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// PostgreSQL: time to the client's first complete message; a client
    /// that sends nothing (or part of a message) is dropped after it.
    pub pg_startup_timeout: Duration,
    /// Connections one listener holds at once.
    pub max_connections: usize,
    /// Descriptors kept free for everything but sessions.
    pub fd_reserve: usize,
    /// HTTP: time to a request's complete headers (slowloris).
    pub http_header_timeout: Duration,
    /// HTTP: idle time of a keep-alive connection between requests.
    pub http_idle_timeout: Duration,
    /// PostgreSQL: bytes all sessions' large messages may hold together
    /// (see [`BufferBudget`]).
    pub buffer_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pg_startup_timeout: DEFAULT_PG_STARTUP_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            fd_reserve: DEFAULT_FD_RESERVE,
            http_header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            http_idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
        }
    }
}

/// A timeout from seconds: finite, more than 0, at most a day.
pub fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0 && s <= 86_400.0).then(|| Duration::from_secs_f64(s))
}

impl Limits {
    /// The limits from environment variables looked up by `lookup` (unset:
    /// the default); `Err` names the variable and what it takes.
    pub fn from_vars(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, (&'static str, String, &'static str)> {
        let mut limits = Limits::default();
        let var = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let secs = |name: &'static str, into: &mut Duration| {
            if let Some(v) = var(name) {
                *into = v.trim().parse::<f64>().ok().and_then(seconds).ok_or((
                    name,
                    v,
                    "seconds, more than 0 and at most 86400",
                ))?;
            }
            Ok(())
        };
        secs(env::PG_STARTUP_TIMEOUT, &mut limits.pg_startup_timeout)?;
        secs(env::HTTP_HEADER_TIMEOUT, &mut limits.http_header_timeout)?;
        secs(env::HTTP_IDLE_TIMEOUT, &mut limits.http_idle_timeout)?;
        let count = |name: &'static str, into: &mut usize| {
            if let Some(v) = var(name) {
                *into = v.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or((
                    name,
                    v,
                    "a number more than 0",
                ))?;
            }
            Ok(())
        };
        count(env::MAX_CONNECTIONS, &mut limits.max_connections)?;
        count(env::FD_RESERVE, &mut limits.fd_reserve)?;
        count(env::BUFFER_BUDGET, &mut limits.buffer_budget)?;
        if limits.buffer_budget < MIN_BUFFER_BUDGET {
            return Err((
                env::BUFFER_BUDGET,
                limits.buffer_budget.to_string(),
                "bytes, at least 1048576 (1 MiB)",
            ));
        }
        Ok(limits)
    }
}

/// Bytes the PostgreSQL plane's sessions may hold in large messages, all
/// together: a message larger than [`BUDGETED_MESSAGE`] takes a [`Charge`]
/// of its size before its buffer is reserved, released when the message is
/// dropped. Clones share one budget (one per process).
#[derive(Debug, Clone)]
pub struct BufferBudget {
    /// Bytes charged now; also the `sluice_buffer_budget_in_use_bytes`
    /// gauge when made [`BufferBudget::with_gauge`].
    used: Gauge,
    limit: usize,
}

/// Bytes taken from a [`BufferBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: BufferBudget,
    bytes: i64,
}

impl BufferBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self::with_gauge(limit, Gauge::default())
    }

    /// A budget of `limit` bytes that counts what it holds in `gauge`.
    pub fn with_gauge(limit: usize, gauge: Gauge) -> Self {
        BufferBudget { used: gauge, limit }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn in_use(&self) -> usize {
        usize::try_from(self.used.get()).unwrap_or(0)
    }

    /// Takes `bytes` from the budget, or `None` when they do not fit.
    pub fn charge(&self, bytes: usize) -> Option<Charge> {
        use std::sync::atomic::Ordering;
        let bytes = i64::try_from(bytes).ok()?;
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        self.used
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|next| *next <= limit)
            })
            .ok()?;
        Some(Charge {
            budget: self.clone(),
            bytes,
        })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.dec_by(self.bytes);
    }
}

/// The sessions the process's descriptors allow, shared by its listeners.
#[derive(Debug, Clone)]
pub struct FdBudget {
    sessions: Arc<Semaphore>,
    total: usize,
}

impl FdBudget {
    /// From the descriptor limit (`RLIMIT_NOFILE`, 1024 when unknown) less
    /// `reserve`.
    pub fn new(reserve: usize) -> Self {
        Self::with_limit(open_files_limit().unwrap_or(1024), reserve)
    }

    /// From a descriptor limit `nofile` less `reserve`.
    pub fn with_limit(nofile: usize, reserve: usize) -> Self {
        let total = nofile.saturating_sub(reserve) / FDS_PER_SESSION;
        FdBudget {
            sessions: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Sessions the budget allows in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (no libc call:
/// the crate forbids `unsafe`).
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One listener's slots.
#[derive(Debug, Clone)]
pub struct ListenerSlots {
    name: String,
    slots: Arc<Semaphore>,
    max: usize,
    budget: FdBudget,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The listener holds its most connections.
    #[error(
        "too many connections to Connection {name}: the sidecar holds at most {max} at once \
         (--max-connections, {env}); close idle ones or use a pool",
        env = env::MAX_CONNECTIONS
    )]
    Listener {
        /// The Connection.
        name: String,
        /// Its limit.
        max: usize,
    },
    /// The process's descriptors are taken.
    #[error(
        "too many connections: the sidecar's file descriptors are taken ({total} sessions in \
         all); close idle connections"
    )]
    Descriptors {
        /// Sessions the budget allows.
        total: usize,
    },
}

/// A connection's hold on its listener's slot and its descriptor share;
/// released when dropped.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _fds: OwnedSemaphorePermit,
}

impl ListenerSlots {
    /// Slots for the Connection `name`: `limits.max_connections`, and at
    /// most a `1/listeners` share of `budget`, so that no listener can take
    /// the descriptors of the others.
    pub fn new(name: &str, limits: &Limits, budget: &FdBudget, listeners: usize) -> Self {
        let share = (budget.total / listeners.max(1)).max(1);
        let max = limits.max_connections.min(share);
        ListenerSlots {
            name: name.to_string(),
            slots: Arc::new(Semaphore::new(max)),
            max,
            budget: budget.clone(),
        }
    }

    /// Connections the listener holds at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Admits one more connection, or says why not.
    pub fn admit(&self) -> Result<Admitted, Refused> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Listener {
                name: self.name.clone(),
                max: self.max,
            })?;
        let fds = self
            .budget
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Descriptors {
                total: self.budget.total,
            })?;
        Ok(Admitted {
            _slot: slot,
            _fds: fds,
        })
    }
}

/// Accepts the next connection within `slots`, for every plane's
/// listener: one past them gets `refuse` (spawned, it answers and closes)
/// and the next is awaited; an accept error (EMFILE and the like) waits a
/// little rather than spin. Cancel-safe: nothing is held between awaits.
pub async fn accept_within<F, Fut>(
    listener: &TcpListener,
    slots: &ListenerSlots,
    refuse: F,
) -> (TcpStream, SocketAddr, Admitted)
where
    F: Fn(TcpStream, Refused) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.admit() {
            Ok(admitted) => return (socket, peer, admitted),
            Err(refused) => {
                tracing::warn!(%peer, "{refused}");
                tokio::spawn(refuse(socket, refused));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener has at most its share of the descriptor budget, so a
    /// full listener leaves the others their sessions.
    #[test]
    fn one_listener_cannot_take_every_descriptor() {
        let limits = Limits::default();
        // 256 descriptors less 64 reserved: 64 sessions; two listeners.
        let budget = FdBudget::with_limit(256, 64);
        assert_eq!(budget.total(), 64);
        let http = ListenerSlots::new("api", &limits, &budget, 2);
        let pg = ListenerSlots::new("db", &limits, &budget, 2);
        assert_eq!(http.max(), 32);
        let held: Vec<_> = (0..32).map(|_| http.admit().unwrap()).collect();
        assert!(matches!(
            http.admit(),
            Err(Refused::Listener { max: 32, .. })
        ));
        let pg_held: Vec<_> = (0..32).map(|_| pg.admit().unwrap()).collect();
        drop(held);
        assert!(http.admit().is_ok());
        drop(pg_held);
    }

    /// Charges past the budget are refused; a dropped charge is given back.
    #[test]
    fn buffer_budget_charges_and_releases() {
        let budget = BufferBudget::new(1000);
        let a = budget.charge(600).unwrap();
        assert!(budget.clone().charge(600).is_none());
        let b = budget.charge(400).unwrap();
        assert_eq!(budget.in_use(), 1000);
        assert!(budget.charge(1).is_none());
        drop(a);
        assert_eq!(budget.in_use(), 400);
        assert!(budget.charge(600).is_some());
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.charge(1001).is_none());
    }

    #[test]
    fn limits_from_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Limits::from_vars(vars(&[])).unwrap(), Limits::default());
        let l = Limits::from_vars(vars(&[
            (env::PG_STARTUP_TIMEOUT, "2.5"),
            (env::MAX_CONNECTIONS, "10"),
            (env::BUFFER_BUDGET, "1048576"),
        ]))
        .unwrap();
        assert_eq!(l.buffer_budget, 1 << 20);
        assert_eq!(l.pg_startup_timeout, Duration::from_millis(2500));
        assert_eq!(l.max_connections, 10);
        let e = Limits::from_vars(vars(&[(env::HTTP_IDLE_TIMEOUT, "0")])).unwrap_err();
        assert_eq!(e.0, env::HTTP_IDLE_TIMEOUT);
        assert!(Limits::from_vars(vars(&[(env::FD_RESERVE, "x")])).is_err());
        let e = Limits::from_vars(vars(&[(env::BUFFER_BUDGET, "1000")])).unwrap_err();
        assert_eq!(e.0, env::BUFFER_BUDGET);
    }
}
