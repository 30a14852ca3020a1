//! Results on their way to the client: rows masked and counted against
//! `maxRows`, COPY data masked, and each statement's result recorded.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWrite;

use super::expect::{ExecCtx, Expect, SimpleCtx, StatementRef};
use super::{
    ConnectionContext, ResultState, ServerLoop, SessionError, SimpleProgress, log_unrecorded,
};
use crate::audit::{ResultRecord, SessionInfo};
use crate::enforcement::Decided;
use crate::masking::MaskCounts;
use crate::postgres::framing::Frame;
use crate::postgres::masking::{CopyMask, RowMask};
use crate::postgres::messages::error_response::{self, Report};
use crate::postgres::messages::{backend, command_complete};

impl<W: AsyncWrite + Unpin> ServerLoop<'_, W> {
    /// A COPY FROM STDIN ended (its CommandComplete or error): in the
    /// extended protocol the server ignored the Syncs the client sent
    /// during it, up to its CopyDone/CopyFail (see [`ServerLoop::settle`]).
    pub(super) fn copy_ended(&mut self) {
        if self.copy_in.take() == Some(true) {
            self.copy_syncs_ignored = true;
        }
    }

    pub(super) fn current_copy_mask(&self) -> Option<Arc<CopyMask>> {
        match self.queue.front() {
            Some(Expect::Simple(s)) => {
                let index = self.simple.as_ref().map_or(0, |p| p.index);
                s.copy_masks.get(index).cloned().flatten()
            }
            Some(Expect::Execute(e)) => e.copy_mask.clone(),
            _ => None,
        }
    }

    pub(super) fn copy_data(&mut self, frame: Frame) {
        let before = self.out.len();
        self.copy_data_masked(frame);
        // What the client got, masked: the recording never sees more.
        self.recorder.copy_data(
            self.masking.recording(),
            &self.session.recording,
            &self.out[before..],
        );
    }

    fn copy_data_masked(&mut self, frame: Frame) {
        let Some(mask) = self.copy_mask.clone() else {
            self.forward(&frame);
            return;
        };
        self.result.rows += 1;
        let before = self.out.len();
        match mask.apply_text(
            &self.masking,
            frame.body(),
            &mut self.out,
            &mut self.result.masks,
        ) {
            Some(n) => {
                self.result.masked += n as u64;
                self.ctx.metrics.masked(n as u64);
                if self.suppress {
                    self.out.truncate(before);
                }
            }
            None => self.forward(&frame),
        }
    }

    pub(super) fn data_row(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.result.rows += 1;
        if let Some(max) = self.masking.limits().max_rows
            && self.result.rows > max
        {
            if self.masking.limits().refuse_past_max {
                if !self.result.refused {
                    self.result.refused = true;
                    let mut out = BytesMut::new();
                    Report {
                        severity: "ERROR",
                        code: error_response::PROGRAM_LIMIT_EXCEEDED,
                        message: &format!(
                            "result refused: it has more than {max} rows, the maxRows limit of the AccessPolicy"
                        ),
                        detail: None,
                        hint: Some("add a LIMIT or a narrower WHERE clause"),
                    }
                    .encode(&mut out);
                    if !self.suppress {
                        self.out.extend_from_slice(&out);
                    }
                    self.suppress = true;
                }
            } else {
                self.result.truncated = true;
            }
            return Ok(());
        }
        let before = self.out.len();
        let mask = match self.queue.front() {
            Some(Expect::Execute(e)) => match self.portal_masks.get(&e.portal) {
                Some(mask) => mask.clone(),
                // A portal the sidecar did not bind (a cursor DECLAREd in
                // SQL, say): its columns are unknown, so with masking on
                // every value becomes NULL.
                None => self.masking.active().then(|| Arc::new(RowMask::opaque())),
            },
            _ if !self.result.described && self.masking.active() => {
                Some(Arc::new(RowMask::opaque()))
            }
            _ => self.result.mask.clone(),
        };
        match mask {
            Some(mask) if !self.suppress => {
                if let Some(n) = mask.apply(
                    &self.masking,
                    frame.body(),
                    &mut self.out,
                    &mut self.result.masks,
                )? {
                    self.result.masked += n as u64;
                    self.ctx.metrics.masked(n as u64);
                } else {
                    self.out.extend_from_slice(&frame.raw);
                }
            }
            _ => self.forward(&frame),
        }
        // What the client got, masked: the recording never sees more.
        let level = self.masking.recording();
        if !level.is_off()
            && let Some(Expect::Execute(e)) = self.queue.front()
        {
            self.recorder
                .execute_columns(level, e.columns.as_deref(), e.formats.as_ref());
        }
        self.recorder
            .data_row(level, &self.session.recording, &self.out[before..]);
        Ok(())
    }

    pub(super) fn command_complete(&mut self, frame: Frame) -> Result<(), SessionError> {
        let truncated = self.result.truncated;
        let rows = self.result.rows;
        let refused = self.result.refused;
        if truncated && !self.suppress {
            let max = self.masking.limits().max_rows.unwrap_or(0);
            Report {
                severity: "NOTICE",
                code: "01000",
                message: &format!(
                    "result truncated to {max} rows by the maxRows limit of the AccessPolicy ({rows} rows were returned by the server)"
                ),
                detail: None,
                hint: None,
            }
            .encode(&mut self.out);
            command_complete::encode(
                &mut self.out,
                &command_complete::with_rows(frame.body(), max),
            );
        } else {
            self.forward(&frame);
        }
        let rows = command_complete::rows(frame.body()).unwrap_or(rows);
        let masked = self.result.masked;
        let masks = std::mem::take(&mut self.result).masks;
        self.copy_mask = None;
        match self.queue.front() {
            Some(Expect::Simple(_)) => {
                let p = self.simple.get_or_insert_with(SimpleProgress::default);
                p.index += 1;
                p.rows += rows;
                p.masked += masked;
                p.masks.add_all(&masks);
                if refused && p.error.is_none() {
                    p.error = Some(error_response::PROGRAM_LIMIT_EXCEEDED.into());
                }
            }
            Some(Expect::Execute(_)) => {
                if let Some(Expect::Execute(e)) = self.pop() {
                    let error = refused.then(|| error_response::PROGRAM_LIMIT_EXCEEDED.to_string());
                    self.execute_result(&e, rows, (masked, masks), error);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn simple_done(&mut self, s: &SimpleCtx) {
        let p = self.simple.take().unwrap_or_default();
        let elapsed = s.started.elapsed();
        for index in 0..s.decided.len().max(1) {
            self.ran(StatementRef {
                decided: s.decided.clone(),
                index,
                prepared: None,
            });
        }
        let recorded = self.recorder.finish(self.masking.recording());
        self.ended(
            s.decided.clone(),
            ResultRecord {
                rows: p.rows,
                masked: p.masked,
                masks: self.masking.mask_counts(&p.masks),
                hold: s.hold,
                duration: elapsed,
                error: p.error,
                recorded,
            },
        );
    }

    /// A result ended: recorded after the answers are written (see
    /// [`ServerLoop::record_results`]), or, when it belongs to a write held
    /// for `maxRowsAffected`, once the write is committed or rolled back.
    fn ended(&mut self, decided: Arc<Decided>, result: ResultRecord) {
        match self.hold.as_mut() {
            Some(hold) => hold.results.push((decided, result)),
            None => self.results.push((decided, result)),
        }
    }

    pub(super) fn execute_done(&mut self, e: &ExecCtx, error: Option<String>) {
        let rows = self.result.rows;
        let masked = self.result.masked;
        let masks = std::mem::take(&mut self.result).masks;
        self.execute_result(e, rows, (masked, masks), error);
    }

    pub(super) fn execute_result(
        &mut self,
        e: &ExecCtx,
        rows: u64,
        (masked, masks): (u64, MaskCounts),
        error: Option<String>,
    ) {
        let elapsed = e.started.elapsed();
        let level = self.masking.recording();
        // Its columns, also when it returned no row.
        self.recorder
            .execute_columns(level, e.columns.as_deref(), e.formats.as_ref());
        let recorded = self.recorder.finish(level);
        match &e.stmt {
            Some(s) => self.ran(s.clone()),
            None => {
                // A statement Sluice has no Parse of: anything may have run.
                self.ctx.catalog.changed();
                if self.masking.has_column_rules() {
                    self.ran_overflow = true;
                }
            }
        }
        if let Some(stmt) = &e.stmt {
            self.ended(
                stmt.decided.clone(),
                ResultRecord {
                    rows,
                    masked,
                    masks: self.masking.mask_counts(&masks),
                    hold: e.hold,
                    duration: elapsed,
                    error,
                    recorded,
                },
            );
        } else {
            self.ctx.metrics.upstream_latency(elapsed);
        }
    }

    /// Records the results that ended since the last call (their audit
    /// events and latencies). Called after the answers are written to the
    /// client, so that this work is off the client's critical path: result
    /// events are not durable at that point anyway (they wait for the next
    /// write-ahead record or the periodic flush; see [`AuditLog`]), and
    /// every exit of the session calls it before `session_end`.
    pub(super) fn record_results(&mut self) {
        for (decided, result) in self.results.drain(..) {
            record_result((&self.ctx, &self.session, &self.span), &decided, result);
        }
    }

    /// At the session's end: the results of a write still held for
    /// `maxRowsAffected` (its answer incomplete, or not yet settled by the
    /// client loop) are recorded without their rows, saying that whether
    /// the write was kept is not known (a server rolls back the
    /// transaction a session leaves open; the session may have ended just
    /// after Sluice's COMMIT).
    pub(super) fn record_unsettled(&mut self) {
        let mut unsettled = self.answered.take_held_results();
        if let Some(hold) = self.hold.as_mut() {
            unsettled.append(&mut hold.results);
        }
        for (decided, mut result) in unsettled {
            if let Some(r) = result.recorded.as_mut() {
                crate::recording::unsettled(
                    r,
                    "the session ended while Sluice held the write for maxRowsAffected, so whether it was kept is not known",
                );
            }
            record_result((&self.ctx, &self.session, &self.span), &decided, result);
        }
    }

    pub(super) async fn error_response(&mut self, frame: Frame) -> Result<(), SessionError> {
        let code = self.scrubbed(&frame, backend::ERROR_RESPONSE).await;
        self.result = ResultState::default();
        self.copy_mask = None;
        self.parameters_seen = false;
        match self.queue.front() {
            Some(Expect::Simple(_)) => {
                let p = self.simple.get_or_insert_with(SimpleProgress::default);
                p.error.get_or_insert(code);
            }
            Some(Expect::Sync) | None => {}
            Some(_) => {
                // Extended protocol: this message failed, and the server
                // skips every message until Sync (see [`ServerLoop::settle`]).
                match self.pop() {
                    Some(Expect::Execute(e)) => {
                        self.execute_result(&e, 0, (0, MaskCounts::default()), Some(code));
                    }
                    // The server has no such statement (or kept the one
                    // it had under that name).
                    Some(Expect::ParseComplete(Some(name))) => self.answered.parse_failed(name),
                    _ => {}
                }
                self.skipping = true;
            }
        }
        Ok(())
    }
}

/// Puts one result on record (its audit event and its latency).
pub(super) fn record_result(
    (ctx, session, span): (&ConnectionContext, &SessionInfo, &tracing::Span),
    decided: &Decided,
    result: ResultRecord,
) {
    ctx.metrics.upstream_latency(result.duration);
    log_unrecorded(span, ctx.audit.result(session, decided, result), "result");
}
