//! Shutting down on SIGTERM (what the kubelet sends at every rollout) or
//! SIGINT: stop accepting, let the sessions end within a grace period,
//! record every `sessionEnd`, write what is pending, exit 0 (docs/DESIGN.md §7).
//!
//! The order: `/readyz` turns 503; every plane's accept loops stop
//! ([`AcceptLoops::stop`]: a new connection is refused, on every listener,
//! also one a bundle opens later); the audit log
//! refuses new sessions, statements and approvals (write-ahead, so nothing
//! runs unrecorded: [`crate::audit::AuditError::ShuttingDown`]) and tells the
//! session loops through [`crate::audit::AuditLog::shutdown_signal`]; the
//! sessions end as their clients leave, or at the grace period's end, when
//! the audit log records the `sessionEnd` of every one still open, writes
//! what is pending (the queue of `batched` Connections too: see
//! [`crate::audit::durability`]) and then records nothing more.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::admin::AdminState;
use crate::audit::AuditLog;
use crate::plane::AcceptLoops;

/// How long sessions get to end after SIGTERM by default: shorter than a
/// pod's default `terminationGracePeriodSeconds` (30 s), so the sidecar ends
/// them itself, on record, before the kubelet's SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// The environment variable of the grace period, in seconds (both modes;
/// standalone also takes `--shutdown-grace`).
pub const GRACE_ENV: &str = "SLUICE_SHUTDOWN_GRACE";

/// The longest grace period accepted.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

/// A grace period from seconds (`--shutdown-grace`, `SLUICE_SHUTDOWN_GRACE`);
/// `None` unless finite and between 0 and [`MAX_GRACE`].
pub fn grace(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && (0.0..=MAX_GRACE.as_secs_f64()).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

/// What a shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions open when it began.
    pub open_at_start: usize,
    /// Sessions still open at the grace period's end, ended by the sidecar.
    pub ended_by_sidecar: usize,
    /// How long it took.
    pub took: Duration,
}

/// Runs a shutdown (see the module documentation). `accept` are every
/// plane's accept loops.
pub async fn drain(
    audit: Option<&Arc<AuditLog>>,
    accept: &AcceptLoops,
    admin: Option<&AdminState>,
    grace: Duration,
) -> DrainReport {
    let started = tokio::time::Instant::now();
    if let Some(admin) = admin {
        admin.ready.store(false, Ordering::Relaxed);
    }
    let listeners = accept.stop();
    tracing::info!(
        listeners,
        "shutting down: no new connections on any listener"
    );
    let Some(audit) = audit else {
        return DrainReport {
            open_at_start: 0,
            ended_by_sidecar: 0,
            took: started.elapsed(),
        };
    };
    audit.begin_shutdown();
    let open_at_start = audit.open_session_count();
    tracing::info!(
        sessions = open_at_start,
        grace_seconds = grace.as_secs_f64(),
        "shutting down: no new sessions or statements; waiting for the open sessions to end"
    );
    let still_open = audit.drained(started + grace).await;
    let reason = format!(
        "the sidecar shut down (SIGTERM or SIGINT): the session was still open after the grace period of {}s",
        grace.as_secs_f64()
    );
    let ended_by_sidecar = match audit.end_open_sessions(&reason) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "recording the end of the open sessions failed");
            still_open
        }
    };
    let report = DrainReport {
        open_at_start,
        ended_by_sidecar,
        took: started.elapsed(),
    };
    tracing::info!(
        sessions = report.open_at_start,
        ended_by_sidecar = report.ended_by_sidecar,
        took_ms = report.took.as_millis() as u64,
        "shut down: every session's end is on record"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_bounded() {
        assert_eq!(grace(2.5), Some(Duration::from_millis(2500)));
        assert_eq!(grace(0.0), Some(Duration::ZERO));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 3601.0] {
            assert_eq!(grace(bad), None, "{bad}");
        }
    }
}
