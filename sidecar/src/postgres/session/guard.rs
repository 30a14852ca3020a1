//! A write under `maxRowsAffected`: sent inside a transaction or savepoint
//! of the sidecar's own, its answer held until the server's row counts are
//! checked, then committed (and let through) or rolled back (and refused).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::expect::Expect;
use super::results::record_result;
use super::{ClientLoop, Guard, HeldAnswer, MAX_HELD_BYTES, SessionError};
use crate::enforcement::Refusal;
use crate::postgres::framing::FrameReader;
use crate::postgres::messages::{error_response, frontend, ready_for_query};
use crate::postgres::rows_affected::{self, Limit};

impl ClientLoop {
    /// Opens the sidecar's transaction (autocommit: a BEGIN of its own,
    /// answered before the group is sent) or puts a SAVEPOINT (inside the
    /// client's transaction) in front of an extended-protocol group that
    /// writes under `maxRowsAffected`, as messages of the same group: if it
    /// fails, the server skips the group. The statement and portal carry the
    /// session's reserved name, closed again at once. Either way the rows the
    /// transaction changed so far are counted first ([`Self::rows_changed`]).
    pub(super) async fn guard_prefix(&mut self, mut guard: Guard) -> Result<(), SessionError> {
        use bytes::BufMut;
        // The transaction status decides: what was sent before is answered first.
        self.wait_answered(0).await;
        guard.savepoint = self.answered.status() != ready_for_query::IDLE;
        // In autocommit the sidecar's BEGIN goes first, with the count.
        guard.changed_before = self.rows_changed(!guard.savepoint).await?;
        if !guard.savepoint {
            self.out.clear();
            self.send(Expect::HoldStart {
                swallow: 0,
                shift: 0,
            });
            self.guard = Some(guard);
            return Ok(());
        }
        let name = self.guard_name.clone();
        let sql = format!("SAVEPOINT {name}");
        let out = &mut self.out;
        out.clear();
        postgres_protocol::message::frontend::close(b'S', &name, out)?;
        postgres_protocol::message::frontend::parse(&name, &sql, std::iter::empty(), out)?;
        let at = crate::postgres::messages::begin(out, frontend::BIND);
        crate::postgres::messages::put_cstr(out, &name);
        crate::postgres::messages::put_cstr(out, &name);
        out.put_i16(0); // parameter formats
        out.put_i16(0); // parameters
        out.put_i16(0); // result formats
        crate::postgres::messages::finish(out, at);
        postgres_protocol::message::frontend::execute(&name, 0, out)?;
        postgres_protocol::message::frontend::close(b'P', &name, out)?;
        postgres_protocol::message::frontend::close(b'S', &name, out)?;
        self.send(Expect::HoldStart {
            swallow: 0,
            shift: 0,
        });
        for _ in 0..6 {
            self.send(Expect::Prefix);
        }
        self.guard = Some(guard);
        Ok(())
    }

    /// Decides a write held under `maxRowsAffected` once its whole answer is
    /// in: commits it (RELEASE inside the client's transaction) and lets
    /// the answer through, or rolls it back (to the savepoint inside the
    /// client's transaction, whose earlier work stands) and answers an
    /// error naming the limit, the policy and the counts. One more round
    /// trip to the server per write.
    pub(super) async fn finish_guard<R: AsyncRead + Unpin>(
        &mut self,
        guard: Guard,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        if guard.copy_in {
            self.pump_copy(client).await?;
        } else {
            self.wait_answered(0).await;
        }
        let Some(held) = self.answered.take_held() else {
            return Err(SessionError::Desync(
                "the answer of a write held for maxRowsAffected did not come".into(),
            ));
        };
        let name = self.guard_name.clone();
        if held.error {
            // The server failed it: nothing of it is committed. Inside the
            // client's transaction, that transaction is failed, as it would
            // be without Sluice; in autocommit the sidecar's is rolled back.
            if !guard.savepoint {
                self.internal("ROLLBACK").await?;
            }
            // The client gets the answer as it came, error included.
            self.record_held(None);
            self.release(held.bytes);
            return Ok(());
        }
        let refused = self.guard_verdict(&guard, &held).await?;
        match refused {
            Some((i, refusal)) => {
                let undo = if guard.savepoint {
                    format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
                } else {
                    "ROLLBACK".to_string()
                };
                self.internal(&undo).await?;
                if self.answered.take_internal_error().is_some() {
                    return Err(SessionError::Desync(
                        "the server refused to roll back a write over maxRowsAffected".into(),
                    ));
                }
                let why = format!(
                    "Sluice rolled the write back: AccessPolicy {:?} limits writes to {} rows each (maxRowsAffected)",
                    guard.policy, guard.rows
                );
                self.record_held(Some((refusal.code, why.as_str())));
                if let Some(decided) = guard.decided.get(i).or(guard.decided.first()) {
                    self.record_refusal(decided, guard.protocol, &refusal);
                }
                self.queue_refusal(&refusal, true, false);
            }
            None => {
                let done = if guard.savepoint {
                    format!("RELEASE SAVEPOINT {name}")
                } else {
                    "COMMIT".to_string()
                };
                self.internal(&done).await?;
                // A COMMIT can fail (a deferred constraint): then that error
                // is the answer, and nothing of the write stands.
                match self.answered.take_internal_error() {
                    Some(error) => {
                        // The SQLSTATE the client gets (the message's body
                        // follows its type byte and length).
                        let code = error
                            .get(5..)
                            .and_then(|body| error_response::decode(body).ok())
                            .and_then(|f| f.into_iter().find(|f| f.code == b'C'))
                            .map(|f| f.value);
                        let what = if guard.savepoint { "RELEASE" } else { "COMMIT" };
                        let why = format!(
                            "the server failed Sluice's {what} of the write, so none of it was kept"
                        );
                        self.record_held(Some((
                            code.as_deref().unwrap_or(error_response::INTERNAL_ERROR),
                            why.as_str(),
                        )));
                        self.release(error)
                    }
                    None => {
                        self.record_held(None);
                        self.release(held.bytes)
                    }
                }
            }
        }
        Ok(())
    }

    /// Why a held write must be rolled back (its index in the group and the
    /// refusal), or `None` when it may stand: its answer overflowed what
    /// Sluice holds, a tag is over the limit or uncounted, or the server's
    /// statistics count more rows than the tags (see [`rows_affected`]).
    async fn guard_verdict(
        &mut self,
        guard: &Guard,
        held: &HeldAnswer,
    ) -> Result<Option<(usize, Refusal)>, SessionError> {
        let limit = Limit {
            rows: guard.rows,
            policy: &guard.policy,
        };
        Ok(if held.overflow {
            Some((
                0,
                Refusal {
                    code: error_response::PROGRAM_LIMIT_EXCEEDED,
                    hint: Some(
                        "return fewer rows (RETURNING fewer columns, or smaller batches)".into(),
                    ),
                    ..Refusal::plain(&format!(
                        "write refused by Sluice: AccessPolicy {:?} limits writes to {} rows each (maxRowsAffected), and the write's answer was larger than the {} MiB Sluice holds until the server reports its count; it was rolled back",
                        guard.policy,
                        guard.rows,
                        MAX_HELD_BYTES / (1024 * 1024)
                    ))
                },
            ))
        } else {
            match rows_affected::verdict(&guard.counts, &held.outcomes, &limit) {
                Some(refused) => Some(refused),
                None => {
                    let changed = match guard.changed_before {
                        Some(before) => self
                            .rows_changed(false)
                            .await?
                            .map(|after| after.saturating_sub(before)),
                        None => None,
                    };
                    rows_affected::beyond_tags(&guard.counts, &held.outcomes, changed, &limit)
                }
            }
        })
    }

    /// Puts the results of a settled write on record: as they came when it
    /// stands (`None`), else rolled back with the SQLSTATE the client got
    /// and why (see [`crate::recording::rolled_back`]): the recording never
    /// shows rows the database did not keep as if it had.
    fn record_held(&self, rolled_back: Option<(&str, &str)>) {
        for (decided, mut result) in self.answered.take_held_results() {
            if let Some((code, why)) = rolled_back {
                result.error.get_or_insert_with(|| code.to_string());
                if let Some(r) = result.recorded.as_mut() {
                    crate::recording::rolled_back(r, why);
                }
            }
            record_result((&self.ctx, &self.session, &self.span), &decided, result);
        }
    }

    /// The rows the transaction changed so far ([`rows_affected::ROWS_CHANGED`]),
    /// after the sidecar's own BEGIN when `begin`; `None` when the server
    /// keeps no count or could not give it (the write is then refused once
    /// it ran, see [`rows_affected::beyond_tags`]: a transaction the client
    /// left failed fails the write first).
    pub(super) async fn rows_changed(&mut self, begin: bool) -> Result<Option<u64>, SessionError> {
        let sql = if begin {
            format!("BEGIN;{}", rows_affected::ROWS_CHANGED)
        } else {
            rows_affected::ROWS_CHANGED.to_string()
        };
        self.answered.take_internal_value();
        self.internal(&sql).await?;
        if self.answered.take_internal_error().is_some() {
            self.answered.take_internal_value();
            return Ok(None);
        }
        Ok(self
            .answered
            .take_internal_value()
            .flatten()
            .and_then(|v| v.parse().ok()))
    }

    /// Sends the sidecar's own simple query and waits for its answer
    /// (swallowed; an error is kept in [`Answered::internal_error`]).
    pub(super) async fn internal(&mut self, sql: &str) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out)?;
        self.send(Expect::Internal);
        self.upstream.write_all(&out).await?;
        self.wait_answered(0).await;
        Ok(())
    }

    /// Lets a held answer through, with the ReadyForQuery of the server's
    /// transaction status now.
    pub(super) fn release(&self, bytes: Bytes) {
        self.send(Expect::Synthetic {
            bytes,
            rfq: true,
            in_group: false,
        });
    }

    /// A COPY FROM STDIN under `maxRowsAffected`: the client's data goes
    /// upstream while its answer is awaited; nothing else is read from the
    /// client until then.
    pub(super) async fn pump_copy<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut FrameReader<R>,
    ) -> Result<(), SessionError> {
        let mut ended = false;
        loop {
            while !ended && let Some(frame) = client.try_next()? {
                match frame.tag {
                    frontend::COPY_DATA => self.upstream.write_all(&frame.raw).await?,
                    frontend::COPY_DONE | frontend::COPY_FAIL => {
                        self.send(Expect::CopyEnd);
                        self.upstream.write_all(&frame.raw).await?;
                        ended = true;
                    }
                    // Ignored by the server during COPY FROM STDIN.
                    frontend::FLUSH | frontend::SYNC => {}
                    tag => return Err(SessionError::UnexpectedMessage(tag as char)),
                }
            }
            tokio::select! {
                () = self.wait_answered(0) => return Ok(()),
                more = client.fill(), if !ended => {
                    if !more? {
                        return Err(SessionError::Refused(
                            "the client closed the session during a COPY FROM STDIN".into(),
                        ));
                    }
                }
            }
        }
    }
}
