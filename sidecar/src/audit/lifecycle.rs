//! A session's life on the audit log: opened, refused, started, ended, and
//! the count of open sessions that lets write-ahead records share a write.

use std::sync::Arc;
use std::time::Duration;

use sluice_crds::Action;
use sluice_policy::audit::{AuditDecision, AuditKind, AuditOutcome};

use super::{AuditError, AuditLog, OpenConnection, SessionInfo};

impl AuditLog {
    /// Counts a connection that has no session events (HTTP) among the
    /// open sessions until the guard is dropped: with more than one open,
    /// [`AuditLog::durable`] groups their records into one write.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.session_opened();
        OpenConnection(self.clone())
    }

    /// One more open session (see [`AuditLog::durable`]).
    pub(super) fn session_opened(&self) {
        self.open_sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One open session fewer (never below zero); wakes a shutdown's wait
    /// ([`AuditLog::drained`]).
    pub(super) fn session_closed(&self) {
        let _ = self.open_sessions.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| n.checked_sub(1),
        );
        self.session_ended.notify_waiters();
    }

    /// Sessions and connections open now: a shutdown waits for HTTP
    /// connections too, else the process would exit under a request in
    /// flight ([`AuditLog::open_connection`] counts them, with no session).
    pub fn open_now(&self) -> usize {
        let open = self
            .open_sessions
            .load(std::sync::atomic::Ordering::Relaxed);
        self.open_session_count().max(open)
    }

    /// A session was refused (not bound, upstream unreachable).
    pub fn session_refused(&self, s: &SessionInfo, reason: &str) -> Result<(), AuditError> {
        let mut d = self.draft(s, AuditKind::Denial);
        d.decision = Some(AuditDecision {
            action: Action::Deny,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(reason.to_string()),
        });
        self.write(s, d)
    }

    /// A session started.
    pub fn session_start(
        &self,
        s: &SessionInfo,
        tls: bool,
        channel_binding: bool,
    ) -> Result<(), AuditError> {
        self.shutting_down()?;
        let mut d = self.draft(s, AuditKind::SessionStart);
        d.decision = Some(AuditDecision {
            action: Action::Allow,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(format!(
                "session opened for client {}; upstream tls {}, scram channel binding {}",
                s.client,
                if tls { "on" } else { "off" },
                if channel_binding { "on" } else { "off" }
            )),
        });
        self.write(s, d)?;
        // Counted once on record (a refused session never ends one).
        self.session_opened();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id.clone(), (s.clone(), std::time::Instant::now()));
        Ok(())
    }

    /// A session ended.
    pub fn session_end(
        &self,
        s: &SessionInfo,
        duration: Duration,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let on_record = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&s.id)
            .is_some();
        self.session_ended.notify_waiters();
        if !on_record && self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            // The shutdown already recorded its end.
            return Ok(());
        }
        self.session_closed();
        self.write_session_end(s, duration, error)
    }

    pub(super) fn write_session_end(
        &self,
        s: &SessionInfo,
        duration: Duration,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        self.seal_all()?;
        let mut d = self.draft(s, AuditKind::SessionEnd);
        d.outcome = Some(AuditOutcome {
            recorded: None,
            rows: None,
            duration_ms: Some(duration.as_millis() as u64),
            error: error.map(String::from),
            masked: None,
            masks: Vec::new(),
        });
        self.write(s, d)
    }
}
