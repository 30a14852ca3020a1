//! The server loop: reading the upstream's answers, matching each to the
//! expectation it answers (or ending the session rather than guess), and
//! writing the sidecar's own answers where their turn comes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::expect::Expect;
use super::startup::parameter_status;
use super::{HeldAnswer, Hold, MAX_HELD_BYTES, ServerLoop, SessionError};
use crate::postgres::framing::Frame;
use crate::postgres::masking::RowMask;
use crate::postgres::messages::{backend, copy, error_response, ready_for_query};
use crate::postgres::rows_affected::Outcome;
use crate::postgres::settings;

impl<W: AsyncWrite + Unpin> ServerLoop<'_, W> {
    pub(super) async fn run(&mut self) -> Result<(), SessionError> {
        loop {
            self.settle()?;
            // Forward everything already buffered before waiting again; the
            // sidecar's own answers that are due go out before each frame.
            while let Some(frame) = self.upstream.try_next()? {
                self.settle()?;
                if let Some(frame) = self.plain_answer(frame)? {
                    self.handle(frame).await?;
                }
                self.bound_hold();
            }
            self.settle()?;
            match self.hold.as_mut() {
                None if !self.out.is_empty() => {
                    self.client.write_all(&self.out).await?;
                    self.ctx.metrics.bytes_to_client(self.out.len());
                    self.out.clear();
                }
                // What came before the held answer goes out; the rest waits.
                Some(hold) if hold.start > 0 => {
                    let ready = self.out.split_to(hold.start);
                    hold.start = 0;
                    self.client.write_all(&ready).await?;
                    self.ctx.metrics.bytes_to_client(ready.len());
                }
                _ => {}
            }
            // A client loop held at a barrier decides again.
            self.answered.notify.notify_waiters();
            self.record_results();
            tokio::select! {
                more = self.upstream.fill() => {
                    if !more? {
                        return Err(SessionError::UpstreamClosed);
                    }
                }
                // What the client loop handed over is taken at once: one
                // turn of this loop per burst, not per message.
                () = self.rx.ready() => self.drain_queue(),
            }
        }
    }

    /// Takes the front expectation (answered, or dropped because the
    /// server will not answer it); counted for [`ClientLoop::wait_answered`].
    pub(super) fn pop(&mut self) -> Option<Expect> {
        let e = self.queue.pop_front();
        if e.is_some() {
            self.answered.settled.fetch_add(1, Ordering::Release);
        }
        e
    }

    /// A ParameterStatus: tracked settings are recorded (see [`settings`]).
    /// One that leaves what Sluice models while statements sent after the
    /// current one are already on their way (they were decided under the
    /// old setting: a function or trigger changed it unseen) ends the session.
    pub(super) async fn parameter_status(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let Some((name, value)) = parameter_status(frame.body()) else {
            return Err(SessionError::Desync(
                "the server sent a malformed ParameterStatus".into(),
            ));
        };
        if let Some(policy) = &self.read_only
            && name == settings::READ_ONLY_SETTING
            && value != "on"
        {
            // Something Sluice did not see (a function, say) turned it off.
            return Err(SessionError::ReadOnly(format!(
                "AccessPolicy {policy:?} sets readOnly, and the server reported {name} = {value:?}: Sluice closes the session"
            )));
        }
        if self.answered.report_setting(name, value) {
            self.drain_queue();
            let later = self.queue.iter().skip(1).any(|e| {
                !matches!(
                    e,
                    Expect::Synthetic { .. } | Expect::Masking(_) | Expect::CopyEnd | Expect::Sync
                )
            });
            if later {
                return Err(SessionError::Desync(format!(
                    "the server reported {name} = {value:?} while statements decided under the previous setting were already sent"
                )));
            }
        }
        if self.masking.active() && !self.suppress {
            let (name, value) = (name.to_string(), value.to_string());
            self.scrubbed_parameter(&name, &value).await;
        } else {
            self.forward(frame);
        }
        Ok(())
    }

    pub(super) fn drain_queue(&mut self) {
        self.rx.drain_into(&mut self.queue);
    }

    /// Brings the queue to the next answer the server owes: applies masking
    /// switches, writes the sidecar's own answers (refusals) whose turn has
    /// come, and drops what the server will not answer (the rest of a Sync
    /// group after an error; Syncs swallowed by COPY FROM STDIN). Called
    /// before every upstream frame, so a refusal always reaches the client
    /// exactly where the server's answer would have been, whatever arrives
    /// in the same read.
    pub(super) fn settle(&mut self) -> Result<(), SessionError> {
        loop {
            // Only the front is looked at: the channel is read when the
            // queue runs out (every expectation sent so far is then seen).
            if self.queue.is_empty() {
                self.drain_queue();
            }
            if matches!(self.queue.front(), Some(Expect::Masking(_))) {
                self.switch_masking();
                continue;
            }
            match self.queue.front() {
                Some(Expect::CopyEnd) => {
                    // The client ended a COPY FROM STDIN: Syncs it sent before
                    // were ignored by the server (see `copy_syncs_ignored`).
                    self.copy_syncs_ignored = false;
                }
                Some(Expect::Sync) if self.copy_syncs_ignored => {}
                Some(Expect::Sync) | None => return Ok(()),
                Some(Expect::Synthetic { in_group, rfq, .. }) => {
                    if self.skipping && !*in_group {
                        return Err(SessionError::Desync(
                            "a refusal outside an extended-protocol group was due while the server was still skipping to Sync".into(),
                        ));
                    }
                    let (in_group, rfq) = (*in_group, *rfq);
                    if let Some(Expect::Synthetic { bytes, .. }) = self.pop()
                        && !(in_group && self.skipping)
                    {
                        self.out.extend_from_slice(&bytes);
                        if rfq {
                            ready_for_query::encode(&mut self.out, self.status);
                        }
                    }
                    continue;
                }
                Some(Expect::HoldStart { swallow, shift }) => {
                    self.hold = Some(Hold {
                        start: self.out.len(),
                        outcomes: Vec::new(),
                        error: false,
                        overflow: false,
                        swallow: *swallow,
                        shift: *shift,
                        results: Vec::new(),
                    });
                }
                Some(_) if self.skipping => {
                    // After an error in an extended-protocol group the server
                    // ignores every message until Sync (simple Queries too).
                }
                Some(_) => return Ok(()),
            }
            // A Parse skipped after an error: the server has no such statement.
            if let Some(Expect::ParseComplete(Some(name))) = self.pop() {
                self.answered.parse_failed(name);
            }
        }
    }

    /// The session cannot go on: an answer came that is not the one the
    /// server owes next. Guessing could attach rows to the wrong statement
    /// (and its mask plan), so the session ends.
    pub(super) fn desync(&self, frame: &Frame) -> SessionError {
        let expected = match self.queue.front() {
            None => "nothing",
            Some(Expect::Simple(_)) => "the answer to a simple query",
            Some(Expect::ParseComplete(_)) => "ParseComplete",
            Some(Expect::BindComplete(_)) => "BindComplete",
            Some(Expect::Describe { .. }) => "the answer to a Describe",
            Some(Expect::Execute(_)) => "the answer to an Execute",
            Some(Expect::CloseComplete) => "CloseComplete",
            Some(Expect::Sync) => "ReadyForQuery",
            Some(
                Expect::Masking(_)
                | Expect::Synthetic { .. }
                | Expect::CopyEnd
                | Expect::HoldStart { .. }
                | Expect::Prefix
                | Expect::Internal,
            ) => "a sidecar answer",
        };
        SessionError::Desync(format!(
            "the server sent a message of type {:?} while Sluice expected {expected}",
            frame.tag as char
        ))
    }

    pub(super) fn forward(&mut self, frame: &Frame) {
        if !self.suppress {
            self.out.extend_from_slice(&frame.raw);
        }
    }

    /// Applies masking changes that reached the front of the queue: every
    /// answer before them belonged to statements decided under the old
    /// rules, every answer after them to statements decided under the new.
    /// Masks made under the old rules are dropped; the client loop has the
    /// sidecar describe prepared statements and portals again before use.
    pub(super) fn switch_masking(&mut self) {
        while matches!(self.queue.front(), Some(Expect::Masking(_))) {
            if let Some(Expect::Masking(masking)) = self.pop() {
                self.masking = masking;
                self.mask_cache.clear();
                self.statement_masks.clear();
                self.portal_masks.clear();
            }
        }
    }

    /// Whether `tag` may answer the expectation at the front of the queue.
    /// Asynchronous messages (notices, parameter status, notifications) are
    /// checked by the caller; everything else must belong to the front.
    pub(super) fn expected(&self, tag: u8) -> bool {
        use backend::*;
        match self.queue.front() {
            Some(Expect::Simple(_)) => matches!(
                tag,
                ROW_DESCRIPTION
                    | DATA_ROW
                    | COMMAND_COMPLETE
                    | EMPTY_QUERY_RESPONSE
                    | ERROR_RESPONSE
                    | COPY_IN_RESPONSE
                    | COPY_OUT_RESPONSE
                    | COPY_DATA
                    | COPY_DONE
                    | READY_FOR_QUERY
            ),
            Some(Expect::ParseComplete(_)) => matches!(tag, PARSE_COMPLETE | ERROR_RESPONSE),
            Some(Expect::BindComplete(_)) => matches!(tag, BIND_COMPLETE | ERROR_RESPONSE),
            Some(Expect::Describe { portal, .. }) => match tag {
                ROW_DESCRIPTION | NO_DATA | ERROR_RESPONSE => true,
                // Only a statement's description starts with its parameters.
                PARAMETER_DESCRIPTION => portal.is_none() && !self.parameters_seen,
                _ => false,
            },
            Some(Expect::Execute(_)) => matches!(
                tag,
                DATA_ROW
                    | COMMAND_COMPLETE
                    | EMPTY_QUERY_RESPONSE
                    | PORTAL_SUSPENDED
                    | ERROR_RESPONSE
                    | COPY_IN_RESPONSE
                    | COPY_OUT_RESPONSE
                    | COPY_DATA
                    | COPY_DONE
            ),
            Some(Expect::CloseComplete) => matches!(tag, CLOSE_COMPLETE | ERROR_RESPONSE),
            // An error at Sync: the implicit transaction's COMMIT failed.
            Some(Expect::Sync) => matches!(tag, READY_FOR_QUERY | ERROR_RESPONSE),
            // A FATAL error (terminated backend, shutdown) before the close.
            None => tag == ERROR_RESPONSE,
            Some(Expect::Prefix) => matches!(
                tag,
                PARSE_COMPLETE | BIND_COMPLETE | COMMAND_COMPLETE | CLOSE_COMPLETE | ERROR_RESPONSE
            ),
            Some(Expect::Internal) => matches!(
                tag,
                COMMAND_COMPLETE
                    | EMPTY_QUERY_RESPONSE
                    | ERROR_RESPONSE
                    | READY_FOR_QUERY
                    | ROW_DESCRIPTION
                    | DATA_ROW
            ),
            Some(
                Expect::Masking(_)
                | Expect::Synthetic { .. }
                | Expect::CopyEnd
                | Expect::HoldStart { .. },
            ) => false,
        }
    }

    /// The frames of a plain result (DataRow, CommandComplete,
    /// EmptyQueryResponse, ReadyForQuery; a simple query's RowDescription
    /// whose mask is known, a BindComplete whose statement is not planned
    /// again) answered without the async [`ServerLoop::handle`], which they
    /// would go through to the same synchronous steps: the answer the
    /// server owes, no write held for `maxRowsAffected`, none of the
    /// sidecar's own statements due. Every frame of a plain select is one
    /// of these, so `handle` and `answer` stay off its path (#15/#20/#22:
    /// the per-statement code footprint). `Some(frame)` when `handle` must
    /// take it.
    fn plain_answer(&mut self, frame: Frame) -> Result<Option<Frame>, SessionError> {
        let plain = matches!(
            frame.tag,
            backend::DATA_ROW
                | backend::COMMAND_COMPLETE
                | backend::EMPTY_QUERY_RESPONSE
                | backend::READY_FOR_QUERY
                | backend::ROW_DESCRIPTION
                | backend::BIND_COMPLETE
        );
        if !plain || self.hold.is_some() {
            return Ok(Some(frame));
        }
        // As `handle`: masking switches due before this answer apply first.
        self.switch_masking();
        if matches!(
            self.queue.front(),
            None | Some(Expect::Internal | Expect::Prefix)
        ) || !self.expected(frame.tag)
        {
            return Ok(Some(frame));
        }
        match frame.tag {
            backend::DATA_ROW => self.data_row(frame)?,
            backend::READY_FOR_QUERY => self.ready_for_query(frame),
            backend::ROW_DESCRIPTION => {
                if !self.simple_row_description(&frame) {
                    return Ok(Some(frame));
                }
            }
            backend::BIND_COMPLETE => {
                if self.replans_at_bind() {
                    return Ok(Some(frame));
                }
                if let Some(Expect::BindComplete(Some(info))) = self.pop() {
                    self.bind_portal(info);
                }
                self.forward(&frame);
            }
            _ => {
                self.copy_ended();
                self.command_complete(frame)?;
            }
        }
        Ok(None)
    }

    /// Whether the BindComplete due is of a statement whose mask is planned
    /// again at each Bind (see [`ServerLoop::replan_statement`]).
    fn replans_at_bind(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Expect::BindComplete(Some(info)))
                if self.statement_masks.get(&*info.statement).is_some_and(|m| m.recheck.is_some())
        )
    }

    /// A portal was bound: it gets its statement's mask in the Bind's
    /// result formats.
    fn bind_portal(&mut self, info: super::expect::BindInfo) {
        let mask = match self.statement_masks.get_mut(&*info.statement) {
            Some(mask) => mask.in_formats(&info.formats),
            // Never described (cannot happen while masking is on):
            // every value of its rows becomes NULL rather than pass unseen.
            None => Some(Arc::new(RowMask::opaque())),
        };
        self.portal_masks.insert(info.portal, mask);
    }

    pub(super) async fn handle(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.switch_masking();
        match frame.tag {
            // The sidecar's own COMMIT/ROLLBACK warns of nothing the client asked.
            backend::NOTICE_RESPONSE if matches!(self.queue.front(), Some(Expect::Internal)) => {
                return Ok(());
            }
            // Asynchronous: these may come at any point.
            // The rare answers' futures (scrubbing, catalog lookups: KiBs)
            // are boxed so that every answer's future does not carry them.
            backend::NOTICE_RESPONSE => {
                Box::pin(self.notice(frame)).await;
                return Ok(());
            }
            backend::PARAMETER_STATUS => return Box::pin(self.parameter_status(&frame)).await,
            backend::NOTIFICATION_RESPONSE => return Box::pin(self.notification(&frame)).await,
            tag if !self.expected(tag) => return Err(self.desync(&frame)),
            _ => {}
        }
        match self.queue.front() {
            Some(Expect::Internal) => return Box::pin(self.internal_answer(frame)).await,
            Some(Expect::Prefix) if frame.tag != backend::ERROR_RESPONSE => {
                self.pop();
                return Ok(());
            }
            _ => {}
        }
        let Some(frame) = self.held(frame) else {
            return Ok(());
        };
        self.answer(frame).await
    }

    /// A frame of a write's answer held for `maxRowsAffected` (see
    /// [`Expect::HoldStart`]): its outcomes are counted, the answers to the
    /// sidecar's own BEGIN or SAVEPOINT swallowed (`None`), and error
    /// positions moved back past them. Other frames pass as they are.
    fn held(&mut self, frame: Frame) -> Option<Frame> {
        if frame.tag == backend::COPY_IN_RESPONSE && self.hold.is_some() {
            // The client must see it to send its data; nothing of the write's
            // answer is held before it (a COPY FROM comes alone).
            self.copy_in = Some(matches!(self.queue.front(), Some(Expect::Execute(_))));
            self.forward(&frame);
            let released = self.out.len();
            if let Some(hold) = self.hold.as_mut() {
                hold.start = released;
            }
            return None;
        }
        let Some(hold) = self.hold.as_mut() else {
            return Some(frame);
        };
        Some(match frame.tag {
            backend::COMMAND_COMPLETE if hold.swallow > 0 => {
                // The sidecar's own BEGIN or SAVEPOINT.
                hold.swallow -= 1;
                return None;
            }
            backend::COMMAND_COMPLETE => {
                let tag = frame.body().strip_suffix(b"\0").unwrap_or(frame.body());
                hold.outcomes
                    .push(Outcome::Tag(String::from_utf8_lossy(tag).into_owned()));
                frame
            }
            backend::EMPTY_QUERY_RESPONSE => {
                hold.outcomes.push(Outcome::Empty);
                frame
            }
            backend::PORTAL_SUSPENDED => {
                hold.outcomes.push(Outcome::Suspended);
                frame
            }
            backend::ERROR_RESPONSE => {
                hold.error = true;
                match shift_position(&frame, hold.shift) {
                    Some(shifted) => shifted,
                    None => frame,
                }
            }
            _ => frame,
        })
    }

    /// A frame that answers the expectation at the front of the queue.
    async fn answer(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame.tag {
            backend::DATA_ROW => self.data_row(frame),
            backend::COMMAND_COMPLETE | backend::EMPTY_QUERY_RESPONSE => {
                self.copy_ended();
                self.command_complete(frame)
            }
            backend::READY_FOR_QUERY => {
                self.ready_for_query(frame);
                Ok(())
            }
            backend::ROW_DESCRIPTION => {
                self.parameters_seen = false;
                self.row_description(frame).await
            }
            backend::NO_DATA => {
                self.parameters_seen = false;
                self.described(None, None, Some(&frame));
                Ok(())
            }
            backend::PARAMETER_DESCRIPTION => {
                self.parameters_seen = true;
                if let Some(Expect::Describe { forward, .. }) = self.queue.front()
                    && !forward
                {
                    return Ok(());
                }
                self.forward(&frame);
                Ok(())
            }
            backend::BIND_COMPLETE => {
                if let Some(Expect::BindComplete(Some(info))) = self.pop() {
                    self.replan_statement(&info.statement).await;
                    self.bind_portal(info);
                }
                self.forward(&frame);
                Ok(())
            }
            backend::PARSE_COMPLETE | backend::CLOSE_COMPLETE => {
                self.pop();
                self.forward(&frame);
                Ok(())
            }
            backend::PORTAL_SUSPENDED => {
                if let Some(Expect::Execute(e)) = self.pop() {
                    self.execute_done(&e, None);
                }
                self.forward(&frame);
                Ok(())
            }
            backend::ERROR_RESPONSE => {
                self.copy_ended();
                Box::pin(self.error_response(frame)).await
            }
            backend::COPY_IN_RESPONSE => {
                self.copy_in = Some(matches!(self.queue.front(), Some(Expect::Execute(_))));
                self.forward(&frame);
                Ok(())
            }
            backend::COPY_OUT_RESPONSE => {
                self.copy_mask = self.current_copy_mask();
                if let Some(mask) = &self.copy_mask
                    && copy::overall_format(frame.body())? != 0
                    && !mask.columns.iter().all(Option::is_none)
                {
                    tracing::warn!(parent: &self.span, "binary COPY with masked columns: rows are dropped");
                }
                self.forward(&frame);
                Ok(())
            }
            backend::COPY_DATA => {
                self.copy_data(frame);
                Ok(())
            }
            _ => {
                self.forward(&frame);
                Ok(())
            }
        }
    }

    /// Drops a held answer past [`MAX_HELD_BYTES`] (the write will be rolled back).
    pub(super) fn bound_hold(&mut self) {
        if let Some(hold) = self.hold.as_mut()
            && self.out.len() - hold.start > MAX_HELD_BYTES
        {
            self.out.truncate(hold.start);
            hold.overflow = true;
        }
    }

    /// A ReadyForQuery: the cycle ends (the simple query's result is
    /// recorded, maxRows' suppression lifted); a held write's answer is
    /// complete and goes to the client loop, which decides it (see
    /// [`super::ClientLoop::finish_guard`]); else it is forwarded.
    fn ready_for_query(&mut self, frame: Frame) {
        self.transaction_status(&frame);
        self.suppress = false;
        self.skipping = false;
        if let Some(Expect::Simple(s)) = self.pop() {
            self.simple_done(&s);
        }
        self.transaction_ended();
        let Some(hold) = self.hold.take() else {
            self.forward(&frame);
            return;
        };
        let bytes = self.out.split_off(hold.start).freeze();
        // Recorded by the client loop once the write is settled.
        match self.answered.held_results.lock() {
            Ok(mut r) => r.extend(hold.results),
            Err(p) => p.into_inner().extend(hold.results),
        }
        let held = HeldAnswer {
            bytes: if hold.overflow { Bytes::new() } else { bytes },
            outcomes: hold.outcomes,
            error: hold.error,
            overflow: hold.overflow,
        };
        if let Ok(mut slot) = self.answered.held.lock() {
            *slot = Some(held);
        }
    }

    /// Takes a ReadyForQuery's transaction status, shared with the client
    /// loop before the expectation it answers is settled (the client loop
    /// reads it once settled).
    fn transaction_status(&mut self, frame: &Frame) {
        self.status = ready_for_query::status(frame.body());
        self.answered.status.store(self.status, Ordering::Release);
    }

    /// Out of a transaction, the statements it ran are forgotten (see
    /// [`ServerLoop::ran`]).
    fn transaction_ended(&mut self) {
        if self.status == ready_for_query::IDLE {
            self.ran.clear();
            self.ran_overflow = false;
        }
    }

    /// An answer to the sidecar's own query (BEGIN, COMMIT, RELEASE,
    /// ROLLBACK, the rows changed so far): never forwarded; an error is
    /// kept (scrubbed) for the client loop, and so is a row's first column.
    pub(super) async fn internal_answer(&mut self, frame: Frame) -> Result<(), SessionError> {
        match frame.tag {
            backend::DATA_ROW => {
                let body = frame.body();
                let first = crate::postgres::messages::data_row::values(body)?
                    .into_iter()
                    .next()
                    .flatten()
                    .and_then(|r| body.get(r))
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                if let Ok(mut slot) = self.answered.internal_value.lock() {
                    *slot = Some(first);
                }
            }
            backend::ERROR_RESPONSE => {
                let at = self.out.len();
                self.scrubbed(&frame, backend::ERROR_RESPONSE).await;
                let error = self.out.split_off(at).freeze();
                if let Ok(mut slot) = self.answered.internal_error.lock() {
                    slot.get_or_insert(error);
                }
            }
            backend::READY_FOR_QUERY => {
                self.transaction_status(&frame);
                self.transaction_ended();
                self.pop();
            }
            _ => {}
        }
        Ok(())
    }
}

/// An ErrorResponse with its position moved back by `shift` characters
/// (the sidecar's own `BEGIN;` in front of the client's query string), or
/// `None` when it has no position to move.
pub(super) fn shift_position(frame: &Frame, shift: u32) -> Option<Frame> {
    if shift == 0 {
        return None;
    }
    let mut fields = error_response::decode(frame.body()).ok()?;
    let position = fields.iter_mut().find(|f| f.code == b'P')?;
    let at: u32 = position.value.parse().ok()?;
    position.value = at.saturating_sub(shift).max(1).to_string();
    let mut out = BytesMut::new();
    error_response::encode_fields(&mut out, backend::ERROR_RESPONSE, &fields);
    Some(Frame::new(backend::ERROR_RESPONSE, out.freeze()))
}
