//! Batched mode: a statement's decision and its result as one event (#22).
//!
//! In `batched` mode a decision record is not written before its statement
//! runs (see [`super::durability`]), so it need not be sealed before then
//! either: an allowed statement's decision is *held* — its time and its
//! pre-rendered `command`, `connection` and `decision` fields, counted in
//! the batch like any queued record — and when its result comes before the
//! batch is written, the two are sealed as **one** `statement` event that
//! carries the result's `outcome` (rows, duration, error, masked values).
//! A reader takes such an event as the statement's decision and its result.
//!
//! Never delayed beyond the window and never lost: every write of the batch
//! (the window's timer, a full batch, a write-ahead record's write, a flush,
//! a session's end, SIGTERM) first seals what is still held as a plain
//! `statement` event, in the order the decisions were held; a result that
//! comes after that is written as a `result` event, as in `writeAhead` mode.
//! The pairing is exact: the plane hands the result the [`HoldId`] its
//! decision got ([`crate::audit::ResultRecord::hold`]); a held decision
//! whose statement never ran (the rest of an extended-protocol group after
//! an error, a group refused after it was recorded) is never paired with
//! another statement's result.
//!
//! Why one event and not a new kind: the event is a `statement` event with
//! an `outcome`, so every reader of the schema (`audit verify` of any
//! version: the hash covers whatever fields a line has; `sessions`,
//! `replay`, `tail`, `evidence`) reads it; per-event tamper evidence is the
//! chain's, unchanged. What a crash can lose is unchanged too: held
//! decisions count in the batch, so at most `SLUICE_AUDIT_BATCH_EVENTS`
//! records, or the window's.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use sluice_policy::audit::{AuditKind, AuditOutcome, EventPieces, Rendered};

use super::session::SessionPieces;
use super::{AuditError, AuditLog, Inner, MAX_BACKLOG, SessionInfo, now};

/// A held decision, handed to its statement's result (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldId(u64);

/// What recording an allowed statement gave: the ticket to await with
/// [`AuditLog::durable`] before it is forwarded, and, in batched mode, the
/// held decision its result may join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// See [`AuditLog::durable`].
    pub ticket: u64,
    /// See [`HoldId`].
    pub hold: Option<HoldId>,
}

/// One held decision.
pub(super) struct Held {
    time: String,
    /// Its `command`, `connection` and `decision` fields, in [`Holds::bytes`].
    head: Range<usize>,
    /// Its session's pre-rendered fields (rendered before it was held).
    session: Arc<OnceLock<Option<SessionPieces>>>,
    /// Its Connection, for the forward channel (run mode only).
    connection: Option<String>,
}

/// The held decisions, in the order they were held.
#[derive(Default)]
pub(super) struct Holds {
    /// The id of `slots[0]`.
    base: u64,
    /// `None` once joined by its result.
    slots: VecDeque<Option<Held>>,
    /// How many slots are `Some`.
    pub(super) live: u64,
    /// The held decisions' fields (cleared when none is held).
    bytes: Vec<u8>,
}

impl Holds {
    fn take(&mut self, id: HoldId) -> Option<Held> {
        let index = usize::try_from(id.0.checked_sub(self.base)?).ok()?;
        let held = self.slots.get_mut(index)?.take()?;
        self.live -= 1;
        Some(held)
    }

    /// Forgets the slots and bytes once nothing is held any more.
    fn tidy(&mut self) {
        if self.live == 0 {
            self.base += self.slots.len() as u64;
            self.slots.clear();
            self.bytes.clear();
        }
    }
}

impl AuditLog {
    /// Holds an allowed statement's decision (batched mode: see the module
    /// documentation), with the same ticket rule as a queued record: the
    /// plane waits only while more than a batch is unwritten.
    pub(crate) fn hold_statement(
        &self,
        s: &SessionInfo,
        command: &Rendered,
        decision: &Rendered,
    ) -> Result<Recorded, AuditError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AuditError::ShuttingDown);
        }
        let Some(pieces) = s.pieces() else {
            return Err(AuditError::Batch(
                "the session's audit fields could not be rendered".into(),
            ));
        };
        let time = now();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        if inner.pending.len() + inner.holds.bytes.len() >= MAX_BACKLOG
            && let Some(outage) = &mut inner.outage
        {
            outage.dropped += 1;
            return Err(AuditError::Backlog(outage.error.clone()));
        }
        let holds = &mut inner.holds;
        let start = holds.bytes.len();
        Rendered::write_head(
            Some(command),
            Some(&pieces.connection),
            Some(decision),
            &mut holds.bytes,
        )?;
        let id = HoldId(holds.base + holds.slots.len() as u64);
        holds.slots.push_back(Some(Held {
            time,
            head: start..holds.bytes.len(),
            session: s.pieces.clone(),
            connection: self.forward.as_ref().map(|_| s.connection.clone()),
        }));
        holds.live += 1;
        let ticket = self.batched_ticket(inner);
        Ok(Recorded {
            ticket,
            hold: Some(id),
        })
    }

    /// Joins a result to its held decision: `None` when it is not held any
    /// more (the batch was written: the result is written on its own).
    pub(crate) fn join_result(
        &self,
        hold: HoldId,
        outcome: &AuditOutcome,
    ) -> Option<Result<(), AuditError>> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        let held = inner.holds.take(hold)?;
        let sealed = self.seal(inner, &held, Some(outcome));
        inner.holds.tidy();
        Some(sealed)
    }

    /// [`AuditLog::seal_held`] under the lock: a session's end follows
    /// every decision of it that is held.
    pub(super) fn seal_all(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.holds.live == 0 {
            return Ok(());
        }
        self.seal_held(&mut inner)
    }

    /// Seals every held decision on its own, in the order they were held
    /// (before a write: nothing held is ever left out of one).
    pub(super) fn seal_held(&self, inner: &mut Inner) -> Result<(), AuditError> {
        let mut first_error = None;
        while let Some(slot) = inner.holds.slots.pop_front() {
            inner.holds.base += 1;
            if let Some(held) = slot {
                inner.holds.live -= 1;
                if let Err(e) = self.seal(inner, &held, None) {
                    first_error.get_or_insert(e);
                }
            }
        }
        inner.holds.tidy();
        first_error.map_or(Ok(()), Err)
    }

    /// Chains `held` (with `outcome`, its result, when joined) as a
    /// `statement` event at the end of the pending lines.
    fn seal(
        &self,
        inner: &mut Inner,
        held: &Held,
        outcome: Option<&AuditOutcome>,
    ) -> Result<(), AuditError> {
        let Some(session) = held.session.get().and_then(Option::as_ref) else {
            return Err(AuditError::Batch(
                "a held decision's session fields are gone".into(),
            ));
        };
        let start = inner.pending.len();
        let head = inner.holds.bytes.get(held.head.clone()).unwrap_or_default();
        let appended = inner.chain.append_head(
            head,
            &EventPieces {
                kind: AuditKind::Statement,
                time: &held.time,
                command: None,
                connection: None,
                decision: None,
                identity: Some(&session.identity),
                outcome,
                session: Some(&session.session),
            },
            &mut inner.pending,
        )?;
        inner.appended += 1;
        if self.forward.is_some() {
            self.forward_line(
                &inner.pending,
                start,
                appended.seq,
                appended.hash().to_string(),
                held.connection.clone(),
            );
        }
        Ok(())
    }
}
