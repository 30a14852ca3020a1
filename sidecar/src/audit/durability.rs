//! When audit records are written: `writeAhead` or `batched` per Connection
//! (`spec.audit.durability`), and the batched mode's window (docs/DESIGN.md §7).
//!
//! `writeAhead`: a decision record is on the sink before its statement is
//! forwarded (the plane awaits [`super::AuditLog::durable`] with its ticket).
//! `batched`: records are queued and written within [`AuditSettings::batch_window`]
//! (the timer starts at the first record queued after a write), or as soon as
//! [`AuditSettings::batch_events`] records wait; the ticket a batched record
//! gets makes its plane wait only while more than that many wait (held
//! decisions included, see [`super::held`]), so a crash loses at most that
//! many records, never one that a shutdown could write. Both modes share one chain: a write-ahead record waiting for
//! its write also waits for every batched record queued before it.

use std::time::Duration;

pub use sluice_crds::AuditDurability;

/// The default durability of Connections that do not set one.
pub const DURABILITY_ENV: &str = sluice_policy::wire::env::AUDIT_DURABILITY;
/// The batched window, in milliseconds.
pub const BATCH_MS_ENV: &str = "SLUICE_AUDIT_BATCH_MS";
/// How many batched records may wait for a write.
pub const BATCH_EVENTS_ENV: &str = "SLUICE_AUDIT_BATCH_EVENTS";

/// The default batched window.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(10);
/// The default number of records a batch holds before it is written.
pub const DEFAULT_BATCH_EVENTS: u64 = 256;
/// The longest batched window accepted, in milliseconds.
pub const MAX_BATCH_MS: u64 = 60_000;
/// The most records a batch may hold.
pub const MAX_BATCH_EVENTS: u64 = 65_536;

/// The audit log's durability settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// The durability of Connections whose `spec.audit.durability` is unset.
    pub durability: AuditDurability,
    /// Batched records are written at most this long after the first of
    /// them was queued.
    pub batch_window: Duration,
    /// Batched records are written as soon as this many wait, and a plane
    /// forwards nothing while more than this many wait (never dropped):
    /// what a crash can lose at most.
    pub batch_events: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            durability: AuditDurability::WriteAhead,
            batch_window: DEFAULT_BATCH_WINDOW,
            batch_events: DEFAULT_BATCH_EVENTS,
        }
    }
}

/// A durability setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?} is not valid: expected {expected}")]
pub struct SettingError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it takes.
    pub expected: String,
}

impl AuditSettings {
    /// The settings from `SLUICE_AUDIT_DURABILITY`, `SLUICE_AUDIT_BATCH_MS`
    /// and `SLUICE_AUDIT_BATCH_EVENTS` (each defaults when unset or empty).
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`AuditSettings::from_env`] over `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let mut s = AuditSettings::default();
        let get = |name| var(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(DURABILITY_ENV) {
            s.durability = AuditDurability::parse(v.trim()).ok_or_else(|| SettingError {
                name: DURABILITY_ENV,
                value: v.clone(),
                expected: "writeAhead or batched".into(),
            })?;
        }
        if let Some(v) = get(BATCH_MS_ENV) {
            let ms = bounded(&v, 1, MAX_BATCH_MS).ok_or_else(|| SettingError {
                name: BATCH_MS_ENV,
                value: v.clone(),
                expected: format!("milliseconds, from 1 to {MAX_BATCH_MS}"),
            })?;
            s.batch_window = Duration::from_millis(ms);
        }
        if let Some(v) = get(BATCH_EVENTS_ENV) {
            s.batch_events = bounded(&v, 1, MAX_BATCH_EVENTS).ok_or_else(|| SettingError {
                name: BATCH_EVENTS_ENV,
                value: v.clone(),
                expected: format!("a number of records, from 1 to {MAX_BATCH_EVENTS}"),
            })?;
        }
        Ok(s)
    }
}

fn bounded(v: &str, min: u64, max: u64) -> Option<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

/// How an appended record is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Now, with everything pending before it.
    Now,
    /// Later: with the next write, or when the caller awaits
    /// [`super::AuditLog::durable`] with its ticket (write-ahead, grouped).
    Pending,
    /// Batched: within the window, or once the batch is full.
    Batched,
}

impl super::AuditLog {
    /// The ticket of a record just queued in batched mode (a line, or a
    /// held decision): 0 (no wait) while at most a batch is unwritten,
    /// else one that waits for the next write. Starts the window's timer
    /// at the first record after a write, and has a full batch written.
    pub(super) fn batched_ticket(&self, inner: &mut super::Inner) -> u64 {
        if !inner.batch_armed {
            // The window starts at the first record after a write.
            inner.batch_armed = true;
            self.batch.notify_one();
        }
        let waiting = inner.appended - inner.attempted + inner.holds.live;
        if waiting >= self.settings.batch_events {
            // Full: written as soon as the runtime gets to it, off this
            // client's path.
            self.commit.notify_one();
        }
        if waiting > self.settings.batch_events {
            // Past every line so far, and past the held decisions (which
            // become lines when written).
            inner.appended + u64::from(inner.holds.live > 0)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn settings_come_from_the_environment_and_are_bounded() {
        assert_eq!(
            AuditSettings::from_vars(vars(&[])).unwrap(),
            AuditSettings::default()
        );
        let s = AuditSettings::from_vars(vars(&[
            (DURABILITY_ENV, "batched"),
            (BATCH_MS_ENV, "25"),
            (BATCH_EVENTS_ENV, "64"),
        ]))
        .unwrap();
        assert_eq!(s.durability, AuditDurability::Batched);
        assert_eq!(s.batch_window, Duration::from_millis(25));
        assert_eq!(s.batch_events, 64);
        for (name, bad) in [
            (DURABILITY_ENV, "Batched"),
            (DURABILITY_ENV, "sometimes"),
            (BATCH_MS_ENV, "0"),
            (BATCH_MS_ENV, "60001"),
            (BATCH_MS_ENV, "ten"),
            (BATCH_EVENTS_ENV, "0"),
            (BATCH_EVENTS_ENV, "65537"),
            (BATCH_EVENTS_ENV, "-1"),
        ] {
            let e = AuditSettings::from_vars(vars(&[(name, bad)])).unwrap_err();
            assert_eq!((e.name, e.value.as_str()), (name, bad));
            assert!(e.to_string().contains("expected"), "{e}");
        }
    }
}
