//! The catalog sessions: upstream sessions the sidecar opens for its own
//! lookups, shared by every client session of a Connection (see the parent
//! module), and how many there are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::upstream::{self, UpstreamConfig, UpstreamError, UpstreamSession};

/// SQLSTATE `too_many_connections`: the answer when no catalog session can be had.
pub const TOO_MANY_CONNECTIONS: &str = "53300";

/// Environment variables of the catalog pool (both modes).
pub mod env {
    /// Catalog sessions per Connection, 1 to 16 (default 2).
    pub const SESSIONS: &str = "SLUICE_CATALOG_SESSIONS";
    /// Seconds a lookup waits for a catalog session (default 5).
    pub const WAIT: &str = "SLUICE_CATALOG_WAIT";
}

/// How many catalog sessions a Connection keeps, and how long a lookup waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Upstream sessions for catalog lookups, per Connection.
    pub sessions: usize,
    /// How long a lookup waits for one of them.
    pub wait: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            sessions: 2,
            wait: Duration::from_secs(5),
        }
    }
}

impl PoolSettings {
    /// The settings from [`env`] variables looked up by `lookup` (unset:
    /// the default); `Err` is (variable, value, what it takes).
    pub fn from_vars(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, (&'static str, String, &'static str)> {
        let mut out = PoolSettings::default();
        if let Some(v) = lookup(env::SESSIONS).filter(|v| !v.trim().is_empty()) {
            out.sessions = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or((
                    env::SESSIONS,
                    v.clone(),
                    "a number of sessions from 1 to 16",
                ))?;
        }
        if let Some(v) = lookup(env::WAIT).filter(|v| !v.trim().is_empty()) {
            out.wait = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 600.0)
                .map(Duration::from_secs_f64)
                .ok_or((env::WAIT, v.clone(), "seconds, more than 0 and at most 600"))?;
        }
        Ok(out)
    }

    /// The settings from the process environment.
    pub fn from_env() -> Result<Self, (&'static str, String, &'static str)> {
        PoolSettings::from_vars(|name| std::env::var(name).ok())
    }
}

/// Why a catalog lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No catalog session could be had: the statement fails (53300).
    #[error("Sluice could not get a catalog session to look up which columns to mask: {0}")]
    Unavailable(String),
    /// A lookup failed on its session.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// What a name stands for cannot be told (a view definition Sluice
    /// cannot parse, views nested too deep, too many partitions).
    #[error("Sluice cannot tell which tables {0}")]
    Unknowable(String),
}

impl CatalogError {
    /// The SQLSTATE a client is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            CatalogError::Unavailable(_) => TOO_MANY_CONNECTIONS,
            CatalogError::Upstream(_) => "58000",
            CatalogError::Unknowable(_) => "42501",
        }
    }
}

/// The catalog sessions of one Connection, shared by its client sessions.
pub struct CatalogPool {
    state: Mutex<PoolState>,
    permits: Arc<Semaphore>,
    settings: PoolSettings,
    /// Counts the statements run through this Connection's sessions that
    /// may have changed what a name stands for (see [`CatalogPool::changed`]).
    changes: AtomicU64,
}

struct PoolState {
    upstream: UpstreamConfig,
    /// Bumped when the upstream changes: older sessions are not reused.
    generation: u64,
    idle: Vec<(u64, UpstreamSession)>,
}

impl CatalogPool {
    /// A pool for `upstream`; sessions open on first use.
    pub fn new(upstream: UpstreamConfig, settings: PoolSettings) -> Arc<Self> {
        Arc::new(CatalogPool {
            state: Mutex::new(PoolState {
                upstream,
                generation: 0,
                idle: Vec::new(),
            }),
            permits: Arc::new(Semaphore::new(settings.sessions)),
            settings,
            changes: AtomicU64::new(0),
        })
    }

    /// A statement that may have changed the catalog ran through one of the
    /// Connection's sessions (DDL, a function or procedure, a `DO` block,
    /// text Sluice cannot parse): what every session has cached about what
    /// names stand for may be stale (a table dropped and a view of another
    /// table created under its name).
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// How many such statements ran: a session whose cache is older than
    /// this forgets it (see `ClientLoop::decide`).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Points the pool at `upstream` (run mode: a new bundle may change the
    /// address or credentials): idle sessions are closed, busy ones are
    /// closed when returned, new ones open with `upstream`.
    pub fn update(&self, upstream: UpstreamConfig) {
        let mut state = self.lock();
        state.upstream = upstream;
        state.generation += 1;
        state.idle.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // Poisoned: another task panicked while moving a session in or out;
        // the list is still a list of whole sessions.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A catalog session, waiting at most the pool's wait for one.
    pub(super) async fn acquire(self: &Arc<Self>) -> Result<Pooled, CatalogError> {
        let wait = self.settings.wait;
        let permit = match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(CatalogError::Unavailable("the pool is closed".into())),
            Err(_) => {
                return Err(CatalogError::Unavailable(format!(
                    "all {} catalog sessions stayed busy for {:.1} s (raise {} or {})",
                    self.settings.sessions,
                    wait.as_secs_f64(),
                    env::SESSIONS,
                    env::WAIT
                )));
            }
        };
        let (upstream, generation, idle) = {
            let mut state = self.lock();
            let generation = state.generation;
            let idle = state.idle.pop();
            (state.upstream.clone(), generation, idle)
        };
        let (generation, session) = match idle {
            Some(s) => s,
            None => {
                let params = vec![("application_name".to_string(), "sluice-catalog".to_string())];
                let session = upstream::connect(&upstream, &params).await.map_err(|e| {
                    CatalogError::Unavailable(format!(
                        "the server refused the catalog session Sluice opens beside the client's: {e}; allow the Connection's role one more connection per Connection (at most {}, {})",
                        self.settings.sessions,
                        env::SESSIONS
                    ))
                })?;
                (generation, session)
            }
        };
        Ok(Pooled {
            pool: self.clone(),
            session: Some((generation, session)),
            _permit: permit,
        })
    }
}

/// A catalog session lent by the pool; back to the pool when dropped,
/// unless a lookup failed on it ([`Pooled::broken`]).
pub(super) struct Pooled {
    pool: Arc<CatalogPool>,
    session: Option<(u64, UpstreamSession)>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    /// Runs `sql`; a failure closes the session rather than return it.
    pub(super) async fn query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
        let Some((generation, mut session)) = self.session.take() else {
            return Err(CatalogError::Unavailable(
                "the catalog session was lost".into(),
            ));
        };
        let rows = upstream::simple_query(&mut session, sql).await?;
        self.session = Some((generation, session));
        Ok(rows)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some((generation, session)) = self.session.take() {
            let mut state = self.pool.lock();
            if state.generation == generation {
                state.idle.push((generation, session));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        pairs: &[(&str, &str)],
    ) -> Result<PoolSettings, (&'static str, String, &'static str)> {
        PoolSettings::from_vars(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn pool_settings_come_from_the_environment_with_clear_errors() {
        assert_eq!(settings(&[]).unwrap(), PoolSettings::default());
        let s = settings(&[(env::SESSIONS, "4"), (env::WAIT, "0.5")]).unwrap();
        assert_eq!(s.sessions, 4);
        assert_eq!(s.wait, Duration::from_millis(500));
        for (name, value) in [
            (env::SESSIONS, "0"),
            (env::SESSIONS, "17"),
            (env::SESSIONS, "two"),
            (env::WAIT, "0"),
            (env::WAIT, "-1"),
            (env::WAIT, "inf"),
        ] {
            let (var, got, _) = settings(&[(name, value)]).unwrap_err();
            assert_eq!((var, got.as_str()), (name, value));
        }
    }
}
