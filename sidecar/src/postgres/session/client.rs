//! The client loop: reading the application's messages, and the checks
//! and records every statement goes through whatever its protocol.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use sluice_crds::Action;
use sluice_policy::audit::{AuditCommand, AuditDecision, AuditKind};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::expect::Expect;
use super::{
    ClientLoop, MAX_OUTSTANDING, MAX_PENDING_BYTES, MAX_PENDING_MESSAGES,
    READ_ONLY_SQL_TRANSACTION, SessionError, log_unrecorded,
};
use crate::enforcement::{Decided, Refusal};
use crate::postgres::catalog::CatalogError;
use crate::postgres::framing::{Frame, FrameReader};
use crate::postgres::masking::CopyMask;
use crate::postgres::messages::{error_response, frontend};
use crate::postgres::settings::{self, Effect};

impl ClientLoop {
    pub(super) async fn run<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        // The sidecar's shutdown, watched for the whole session (one
        // registration, not one per message).
        let mut shutdown = ShutdownWatch::new(self.shutdown.clone());
        loop {
            if let Some(guard) = self.guard.take() {
                Box::pin(self.finish_guard(guard, client)).await?;
            }
            self.read_only_in_force()?;
            if self.barrier {
                self.wait_answered(0).await;
                self.barrier = false;
            }
            // A client that does not read its answers is not read either.
            if self.sent.load(Ordering::Relaxed)
                > self.answered.settled.load(Ordering::Acquire) + MAX_OUTSTANDING
            {
                let _not_read = self.ctx.metrics.client_not_read();
                self.wait_answered(MAX_OUTSTANDING).await;
            }
            // What the client already sent is taken first (and refused:
            // the audit log takes no new statement while shutting down);
            // a message already read is taken without waiting on anything.
            let next = match client.try_next()? {
                Some(frame) => Some(Some(frame)),
                None => tokio::select! {
                    biased;
                    next = client.next() => Some(next?),
                    () = &mut shutdown => None,
                },
            };
            let Some(next) = next else {
                // Shutting down: a statement in flight finishes first.
                self.wait_answered(0).await;
                return Err(SessionError::ShuttingDown);
            };
            let Some(frame) = next else {
                return Ok(());
            };
            self.ctx.metrics.bytes_from_client(frame.raw.len());
            match frame.tag {
                frontend::QUERY | frontend::FUNCTION_CALL if self.discarding => {
                    // The group was refused before its Sync: the server would
                    // be skipping to Sync, and ignore this message too.
                }
                frontend::QUERY | frontend::FUNCTION_CALL if !self.pending.is_empty() => {
                    // Inside an unfinished extended-protocol group: what came
                    // before goes first, so the answers stay in order.
                    self.flush_group(None, false).await?;
                    if !self.discarding {
                        self.statement_message(frame, client).await?;
                    }
                }
                frontend::QUERY | frontend::FUNCTION_CALL => {
                    self.statement_message(frame, client).await?;
                }
                frontend::PARSE
                | frontend::BIND
                | frontend::DESCRIBE
                | frontend::EXECUTE
                | frontend::CLOSE => {
                    if !self.discarding {
                        self.hold(frame);
                    }
                }
                frontend::SYNC => {
                    if self.discarding {
                        self.discarding = false;
                        self.end_refused_group().await?;
                    } else {
                        self.flush_group(Some(frame), true).await?;
                    }
                    self.group_forwarded = false;
                }
                frontend::FLUSH => {
                    if !self.discarding {
                        self.flush_group(Some(frame), false).await?;
                    }
                }
                frontend::COPY_DATA => {
                    self.upstream.write_all(&frame.raw).await?;
                }
                frontend::COPY_DONE | frontend::COPY_FAIL => {
                    self.send(Expect::CopyEnd);
                    self.upstream.write_all(&frame.raw).await?;
                }
                frontend::TERMINATE => {
                    let _ = self.upstream.write_all(&frame.raw).await;
                    return Ok(());
                }
                // The stream cannot be trusted past an unknown message: the
                // session ends with FATAL 08P01, as PostgreSQL ends it.
                tag => return Err(SessionError::UnexpectedMessage(tag as char)),
            }
        }
    }

    /// Keeps an extended-protocol message until its group's Sync or Flush,
    /// within [`MAX_PENDING_MESSAGES`] and [`MAX_PENDING_BYTES`]: past
    /// either, the group is refused (54000) and discarded until Sync.
    pub(super) fn hold(&mut self, frame: Frame) {
        let bytes = self.pending_bytes + frame.raw.len();
        let over = self.pending.len() >= MAX_PENDING_MESSAGES
            || (!self.pending.is_empty() && bytes > MAX_PENDING_BYTES);
        if !over {
            self.pending_bytes = bytes;
            self.pending.push(frame);
            return;
        }
        self.pending.clear();
        self.pending_bytes = 0;
        let refusal = Refusal {
            code: error_response::PROGRAM_LIMIT_EXCEEDED,
            ..Refusal::plain(&format!(
                "extended-protocol group refused by Sluice: more than {MAX_PENDING_MESSAGES} messages or {} MiB without Sync or Flush; nothing of it ran. Send Sync (or Flush) more often",
                MAX_PENDING_BYTES / (1024 * 1024)
            ))
        };
        self.queue_refusal(&refusal, false, self.group_forwarded);
        self.discarding = true;
    }

    /// A simple Query or a fast-path FunctionCall.
    pub(super) async fn statement_message<R: AsyncRead + Unpin>(
        &mut self,
        frame: Frame,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        if frame.tag == frontend::FUNCTION_CALL {
            self.function_call(&frame);
            return Ok(());
        }
        if settings::lexing_depends_on_settings(frame.body()) {
            // Read under the settings the server has reported by now.
            self.wait_answered(0).await;
        }
        self.simple_query(frame).await?;
        if let Some((frame, decided)) = self.held.take() {
            // Boxed: held for a human, rare, and its future is several KiB
            // that every statement's future would otherwise carry and move.
            // Inside the session's span: the approvals' own log lines.
            let span = self.span.clone();
            Box::pin(tracing::Instrument::instrument(
                self.approve_simple(frame, decided, client),
                span,
            ))
            .await?;
        }
        Ok(())
    }

    /// The fast-path interface calls any function by OID, around every SQL
    /// rule: it is refused outright (and the refusal is on record).
    pub(super) fn function_call(&mut self, frame: &Frame) {
        let oid = frame
            .body()
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut refusal = Refusal::plain(
            "function calls through the fast-path interface are not allowed through Sluice; call the function in a SQL statement",
        );
        // Every refusal is on record; the arguments (values) are not.
        let text = match oid {
            Some(oid) => format!("fast-path FunctionCall of function OID {oid}"),
            None => "fast-path FunctionCall".to_string(),
        };
        let recorded = self.ctx.audit.event(
            &self.session,
            AuditKind::Denial,
            Some(AuditCommand {
                fingerprint: "fastpath-function-call".into(),
                kind: Some("functionCall".into()),
                text,
            }),
            Some(AuditDecision {
                action: Action::Deny,
                dry_run: false,
                policy: None,
                reason: Some(refusal.message.clone()),
                rule: None,
            }),
            None,
            true,
        );
        if let Err(e) = recorded {
            refusal = Refusal::audit_failed(&e);
        }
        self.refuse(&refusal);
    }

    /// Asks the enforcer for the decision on `sql`: the one place a
    /// statement is decided (a simple Query, a Parse, a statement approved
    /// while held). A text too large for the decision cache is parsed off
    /// the runtime thread ([`crate::parse_pool`]).
    pub(super) async fn decide(&mut self, sql: &str) -> Arc<Decided> {
        // Every statement passes here: what it always does stays out of
        // futures, and the rare steps' futures are boxed, so the common
        // path runs through little code (see `sidecar/bench/cg_footprint.py`).
        if self.catalog_changed() {
            Box::pin(self.sync_catalog()).await;
        }
        let decided = if self.enforcer.decides_on_thread(sql) {
            self.enforcer.decide(sql)
        } else {
            Box::pin(self.enforcer.decide_async(sql)).await
        };
        if self.plain_again(&decided) {
            return decided;
        }
        let decided = match self.names_to_follow(&decided) {
            None => {
                self.remember_plain(&decided);
                decided
            }
            Some(names) => Box::pin(self.through_relations(decided, names)).await,
        };
        if self.executes_prepared(&decided) {
            return Box::pin(self.executes_through_relations(decided)).await;
        }
        decided
    }

    /// [`ClientLoop::decide`] on the runtime thread, for a prepared
    /// statement re-decided under new policies (only after a policy
    /// change, from a synchronous step of an extended group).
    pub(super) fn decide_now(&mut self, sql: &str) -> Arc<Decided> {
        let decided = self.enforcer.decide(sql);
        self.through_relations_now(decided)
    }

    /// A refusal on record and counted: every refused statement goes
    /// through here, or through [`ClientLoop::settle_approval`] when its
    /// record is an approval step.
    pub(super) fn record_refused(&self, decided: &Decided, protocol: &str, refusal: &Refusal) {
        self.record_refusal(decided, protocol, refusal);
        self.ctx.metrics.statement(decided, true);
    }

    /// Puts a refusal on record, uncounted: [`ClientLoop::record_refused`]
    /// counts it; or it was counted when it was let through (a write
    /// `maxRowsAffected` rolled back, an approved run that could not start);
    /// or its client left while it was held for approval.
    /// The statement is refused whether or not its record could be written;
    /// a failed write is logged, never dropped in silence.
    pub(super) fn record_refusal(&self, decided: &Decided, protocol: &str, refusal: &Refusal) {
        log_unrecorded(
            &self.span,
            self.ctx
                .audit
                .statement(&self.session, decided, protocol, Some(refusal)),
            "refused statement",
        );
    }

    /// The write-ahead record of an allowed statement, counted: appended
    /// now; the caller waits for its ticket to be durable before anything is
    /// forwarded. When it cannot be written the statement does not run: the
    /// refusal says so.
    pub(super) fn record_allowed(
        &self,
        decided: &Decided,
        protocol: &str,
    ) -> Result<crate::audit::Recorded, Refusal> {
        let recorded = self
            .ctx
            .audit
            .statement_recorded(&self.session, decided, protocol)
            .map_err(|e| Refusal::audit_failed(&e));
        self.ctx.metrics.statement(decided, recorded.is_err());
        recorded
    }

    /// Queues the answer to a refused simple Query or FunctionCall: its
    /// error and ReadyForQuery; dropped by the server loop when it comes
    /// inside an extended-protocol group the server is skipping (the server
    /// would have ignored the message).
    pub(super) fn refuse(&self, refusal: &Refusal) {
        self.queue_refusal(refusal, true, self.group_forwarded);
    }

    pub(super) fn send(&self, e: Expect) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.expect.send(e);
    }

    /// Waits until at most `outstanding` expectations sent to the server
    /// loop are not settled yet. With 0: the answers (and ParameterStatus)
    /// of everything forwarded are in.
    pub(super) async fn wait_answered(&self, outstanding: u64) {
        loop {
            let notified = self.answered.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let settled = self.answered.settled.load(Ordering::Acquire);
            if self.sent.load(Ordering::Relaxed) <= settled + outstanding {
                return;
            }
            notified.await;
        }
    }

    /// The refusal for `text` when the session is in a state Sluice does
    /// not model and `text` does not bring it back (see [`settings`]).
    pub(super) fn unmodelled(&self, text: &str) -> Option<Refusal> {
        let why = self.answered.unmodelled()?;
        if settings::is_restore(text) {
            return None;
        }
        Some(Refusal {
            code: error_response::FEATURE_NOT_SUPPORTED,
            ..Refusal::plain(&format!("statement refused by Sluice: {why}"))
        })
    }

    pub(super) fn queue_refusal(&self, refusal: &Refusal, rfq: bool, in_group: bool) {
        let mut out = BytesMut::new();
        refusal.encode(&mut out);
        self.send(Expect::Synthetic {
            bytes: out.freeze(),
            rfq,
            in_group,
        });
    }

    /// Picks up new masking rules or limits (run mode) before a statement
    /// runs: the server loop switches when it reaches this point of the
    /// answers, and prepared statements and portals made under the old
    /// rules are described again before their next use (see
    /// [`ClientLoop::flush_group`]), so the next statement is masked by the
    /// new rules, never by a mix.
    pub(super) fn sync_masking(&mut self) {
        self.enforcer.refresh();
        let masking = self.enforcer.masking();
        if Arc::ptr_eq(&masking, &self.masking) {
            return;
        }
        self.generation += 1;
        if self.read_only.is_none()
            && let Some(policy) = masking.read_only()
        {
            self.read_only_lapse = Some(policy.to_string());
        }
        self.masking = masking.clone();
        self.send(Expect::Masking(masking));
    }

    /// `statementsPerSecond`, counted in the Connection's shared bucket.
    pub(super) fn rate_check(&self) -> Option<Refusal> {
        let rate = self.masking.limits().statements_per_second;
        self.rate.check(rate, &self.ctx.name)
    }

    /// Ends the session when `spec.readOnly` came into force after it
    /// started (the upstream session is read-write): before anything more runs.
    pub(super) fn read_only_in_force(&self) -> Result<(), SessionError> {
        match &self.read_only_lapse {
            Some(policy) => Err(SessionError::ReadOnly(format!(
                "AccessPolicy {policy:?} now sets readOnly, and this session was opened read-write: Sluice closes it before its next statement; reconnect to get a read-only session"
            ))),
            None => Ok(()),
        }
    }

    /// In a read-only session every statement is a barrier (see
    /// [`settings`]): a function it calls, directly or through a view, can
    /// `set_config('default_transaction_read_only', 'off', false)` with
    /// nothing in its text to say so, and a write pipelined behind it would
    /// start its transaction read-write before the server's report of the
    /// change (which ends the session) is in. What follows it is decided
    /// only once it is answered: no pipelining for read-only identities.
    pub(super) fn read_only_barrier(&self) -> bool {
        self.read_only.is_some()
    }

    /// The refusal of a statement that could undo a read-only session
    /// (see [`settings::read_only_undo`]).
    pub(super) fn read_only_refusal(&self, decided: &Decided, text: &str) -> Option<Refusal> {
        let policy = self.read_only.as_deref()?;
        let what = if decided.is_empty() {
            settings::read_only_undo(None, text)
        } else {
            (0..decided.len()).find_map(|i| settings::read_only_undo(decided.statement(i), text))
        }?;
        Some(Refusal {
            code: READ_ONLY_SQL_TRANSACTION,
            ..Refusal::plain(&format!(
                "statement refused by Sluice: AccessPolicy {policy:?} sets readOnly, and {what} could undo the read-only session; nothing ran"
            ))
        })
    }

    /// Whether `sql` may be decided in the session's current settings, and
    /// what it may do to them (see [`settings`]): refused while the session
    /// is in a state Sluice does not model (unless it brings it back), and
    /// when it changes them together with other statements in one string.
    pub(super) fn settings_check(&self, sql: &str, decided: &Decided) -> (Option<Refusal>, Effect) {
        let effect = statement_effect(decided, sql);
        if let Some(r) = self.unmodelled(sql) {
            return (Some(r), effect);
        }
        if let Some(r) = self.read_only_refusal(decided, sql) {
            return (Some(r), effect);
        }
        if effect == Effect::Alone && decided.len() > 1 {
            return (Some(alone_refusal()), effect);
        }
        (None, effect)
    }

    /// COPY … TO STDOUT under masking: the plan per statement (by index;
    /// none past the end), or a refusal.
    pub(super) async fn copy_masks(
        &self,
        decided: &Decided,
    ) -> Result<Vec<Option<Arc<CopyMask>>>, Refusal> {
        // No COPY … TO STDOUT (every statement but a handful): no plan, and
        // no allocation (a statement without an entry has no COPY mask).
        if !copies_out(decided) {
            return Ok(Vec::new());
        }
        // Boxed: the catalog lookups' future is KiBs that every statement's
        // future would carry (and move) for the few that copy out.
        Box::pin(self.copy_masks_planned(decided)).await
    }

    /// [`ClientLoop::copy_masks`] for a string with a COPY … TO STDOUT.
    async fn copy_masks_planned(
        &self,
        decided: &Decided,
    ) -> Result<Vec<Option<Arc<CopyMask>>>, Refusal> {
        let mut masks = Vec::new();
        for index in 0..decided.len() {
            let Some(target) = decided.copy_out(index) else {
                masks.push(None);
                continue;
            };
            if !self.masking.active() {
                masks.push(None);
                continue;
            }
            let mut catalog = self.catalog.lock().await;
            let columns = match &target.table {
                Some((schema, table)) => catalog
                    .table_columns(schema.as_deref(), table)
                    .await
                    .map_err(|e| catalog_refusal("COPY refused: Sluice could not look up the table's columns to mask them", &e))?,
                None => None,
            };
            // `COPY (SELECT … FROM some_view) TO STDOUT`: the view's masked
            // columns, and user-defined functions.
            let views = if self.masking.has_column_rules() {
                // No result columns to tell stored ones from computed ones
                // yet: planned on a fresh lookup (see
                // `Catalog::reads_beyond_tables`).
                catalog.forget_names();
                catalog
                    .extended_matcher(
                        decided.statement(index),
                        &[],
                        self.masking.column_matcher(),
                    )
                    .await
                    .map_err(|e| catalog_refusal("COPY refused: Sluice could not look up the views it reads to mask them", &e))?
            } else {
                None
            };
            drop(catalog);
            masks.push(
                self.masking
                    .copy_mask(decided, index, columns.as_deref(), views.as_ref())?
                    .map(Arc::new),
            );
        }
        Ok(masks)
    }
}

/// The sidecar's shutdown as the client loop waits for it next to the
/// client's next message: registered with the watch once, and its
/// registration polled again only when the watch changed or the task's
/// waker did. The session's task is polled for every message either way
/// (and for the server's answers), and each poll of a registration locks
/// the watch's list of waiters: that was several per statement.
struct ShutdownWatch {
    /// Compared with the watch's version: changed once a shutdown began
    /// (or the audit log is gone).
    seen: tokio::sync::watch::Receiver<bool>,
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker `wait` was last polled with.
    waker: Option<Waker>,
}

impl ShutdownWatch {
    fn new(shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        let mut watched = shutdown.clone();
        ShutdownWatch {
            seen: shutdown,
            wait: Box::pin(async move {
                if watched.wait_for(|down| *down).await.is_err() {
                    // No audit log any more: nothing to wait for.
                    std::future::pending::<()>().await;
                }
            }),
            waker: None,
        }
    }
}

impl Future for ShutdownWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Registered with this waker, and nothing sent since: it would
        // still be pending.
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            && matches!(this.seen.has_changed(), Ok(false))
        {
            return Poll::Pending;
        }
        let polled = this.wait.as_mut().poll(cx);
        this.waker = Some(cx.waker().clone());
        polled
    }
}

/// What a decided text may do to the settings Sluice models: the strongest
/// effect of its statements (see [`settings::effect`]).
pub(super) fn statement_effect(decided: &Decided, text: &str) -> Effect {
    if decided.is_empty() {
        return settings::effect(None, text);
    }
    (0..decided.len())
        .map(|i| settings::effect(decided.statement(i), text))
        .max()
        .unwrap_or(Effect::None)
}

/// Whether a statement of `decided` is a COPY … TO STDOUT, which
/// [`ClientLoop::copy_masks`] plans.
pub(super) fn copies_out(decided: &Decided) -> bool {
    (0..decided.len()).any(|index| decided.copy_out(index).is_some())
}

/// The refusal of a settings change that does not come alone.
pub(super) fn alone_refusal() -> Refusal {
    Refusal {
        code: error_response::FEATURE_NOT_SUPPORTED,
        ..Refusal::plain(
            "statement refused by Sluice: a statement that may change standard_conforming_strings or client_encoding (SET/RESET of them or of ALL, DISCARD, set_config, or text Sluice cannot parse) must be sent alone: in its own query string, or last in its extended-protocol group, followed by Sync; Sluice then reads what follows under the settings the server reports",
        )
    }
}

/// A statement refused because a catalog lookup it needs failed: 53300 when
/// no catalog session could be had, naming the cause.
pub(super) fn catalog_refusal(what: &str, e: &CatalogError) -> Refusal {
    let mut refusal = Refusal::plain(&format!("{what}: {e}"));
    if let CatalogError::Unavailable(_) = e {
        refusal.code = e.code();
    }
    refusal
}
