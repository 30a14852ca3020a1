//! Cursors on prepared statements: a COM_STMT_EXECUTE with
//! CURSOR_TYPE_READ_ONLY is decided, recorded and run as any EXECUTE, and
//! the server answers with the result's columns only (the cursor open);
//! the rows then come with COM_STMT_FETCH, each fetch:
//! - decided again under the policies in force (a policy edited since the
//!   EXECUTE applies; refused, the cursor is closed for the client);
//! - masked as any binary row, by the masks of the policies in force;
//! - counted against `maxRows` across the cursor's fetches (past it:
//!   refused, or truncated with SERVER_STATUS_LAST_ROW_SENT);
//! - put on record as a result event (recorded, under `spec.recording`,
//!   as a result of its own named after the cursor's columns: the bounds
//!   of a statement apply per fetch, the session's across them).
//!
//! A fetch for a statement without an open cursor (unknown, closed, reset,
//! executed again or executed without a cursor) is refused and not
//! forwarded.

use mysql_common::packets::Column;

use super::prepared::UNKNOWN_STATEMENT;
use super::relay::{RowStream, RowsSent};
use super::*;

/// `SERVER_STATUS_LAST_ROW_SENT`.
const LAST_ROW_SENT: u16 = 0x0080;

/// An open cursor.
pub(super) struct Cursor {
    /// The result's column definitions, as the EXECUTE's answer gave them.
    columns: Vec<Column>,
    /// Rows sent so far, across fetches.
    sent: RowsSent,
    /// What the policies decided at the EXECUTE that opened it (an
    /// approved run, when `requireApproval`).
    opened_under: Action,
}

impl Cursor {
    pub(super) fn new(columns: Vec<Column>, opened_under: Action) -> Self {
        Cursor {
            columns,
            sent: RowsSent::default(),
            opened_under,
        }
    }
}

impl Session<'_> {
    /// COM_STMT_FETCH (`body`: statement id, rows asked for): refused for
    /// a statement without an open cursor, else decided again, forwarded
    /// as `forward`, its rows masked and counted.
    pub(super) async fn fetch(
        &mut self,
        body: &[u8],
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        self.follow();
        let id = statement_id(body, COM_STMT_FETCH)?;
        let (Some(prepared), Some(cursor)) = (self.statements.get(&id), self.cursors.get(&id))
        else {
            let msg = format!(
                "statement refused by Sluice: COM_STMT_FETCH for statement {id}, which has no cursor open in this session (unknown, closed, reset, or executed without CURSOR_TYPE_READ_ONLY); nothing was fetched"
            );
            send_err(
                &mut self.client,
                reply_seq,
                UNKNOWN_STATEMENT,
                "HY000",
                &msg,
            )
            .await?;
            return Ok(());
        };
        let started = Instant::now();
        let (columns, mut sent, opened_under) =
            (cursor.columns.clone(), cursor.sent, cursor.opened_under);
        let text = prepared.text.clone();
        let decided = self.set.decide_sql(&text, SqlDialect::Mysql);
        // The rows are the EXECUTE's; they go out under the policies in
        // force now.
        let mut refused = self.refusal(&text, &decided, false);
        if refused.is_none()
            && decided.decision.enforced == Action::RequireApproval
            && opened_under != Action::RequireApproval
        {
            refused = Some(format!(
                "statement refused by Sluice: the policies now require approval of it ({}); execute it again to ask",
                decided.decision.reason
            ));
        }
        let unseen = match refused {
            None => self.unseen(&decided, &text).await?,
            Some(_) => Unseen::default(),
        };
        if refused.is_none() {
            refused = self.laundering_through(&decided, &unseen);
        }
        if let Some(why) = refused {
            let _ = self.record(&decided, Some(&why), true);
            // Closed for the client: later fetches are refused too.
            self.cursors.remove(&id);
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        let plan = self.plan_for(&decided, 0, &columns, false, &unseen);
        let detect = self.masking.active() && self.set.detectors().is_some();
        let limits = self.masking.limits().clone();
        let mut reply = Reply::new(reply_seq);
        let mut outcome = Outcome::default();
        // Recorded as a result of its own, named after the cursor's columns.
        let level = self.masking.recording();
        outcome
            .recorder
            .named_set(level, crate::mysql::recording::names(&columns));
        let stream = RowStream {
            columns: &columns,
            plan: &plan,
            detect,
            binary: true,
            max_rows: limits.max_rows,
            recording: level,
        };
        let end = match self.up.command(forward).await {
            Ok(()) => {
                self.rows(
                    None,
                    &stream,
                    &mut sent,
                    &mut reply,
                    &mut outcome,
                    (&decided, 0, &unseen),
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                self.result_cut_short(&decided, outcome, started, &e);
                return Err(e);
            }
        };
        self.fetch_ended(id, end, sent, (&mut reply, &mut outcome), &limits);
        let written = self.client.write_all(&reply.out).await;
        self.ctx.metrics.upstream_latency(started.elapsed());
        match written {
            Ok(()) => self.result_event(&decided, outcome, started),
            Err(e) => {
                let e = SessionError::from(e);
                self.result_cut_short(&decided, outcome, started, &e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A fetch's rows ended (`end`: their terminator, `None` when the
    /// server ended them with an error): the client's terminator or ERR
    /// added to `reply`, and the cursor kept with `sent`, or closed.
    fn fetch_ended(
        &mut self,
        id: u32,
        end: Option<OkPacket>,
        sent: RowsSent,
        (reply, outcome): (&mut Reply, &mut Outcome),
        limits: &crate::masking::ResultLimits,
    ) {
        match end {
            // The server ended the fetch with an error.
            None => {
                self.cursors.remove(&id);
            }
            Some(_) if sent.past_max && limits.refuse_past_max => {
                let msg = format!(
                    "result refused by Sluice: more than {} rows, the maxRows limit of the AccessPolicy, across this cursor's fetches; the cursor is closed for the client",
                    limits.max_rows.unwrap_or(0)
                );
                reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &msg));
                outcome.error = Some(msg);
                self.cursors.remove(&id);
            }
            Some(mut ok) => {
                if sent.past_max {
                    // Truncated at maxRows: the client is told the last row
                    // was sent.
                    ok.status |= LAST_ROW_SENT;
                }
                reply.push(&self.terminator(&ok));
                if ok.status & LAST_ROW_SENT != 0 {
                    // Done (the server closes an exhausted cursor).
                    self.cursors.remove(&id);
                } else if let Some(c) = self.cursors.get_mut(&id) {
                    c.sent = sent;
                }
            }
        }
    }
}
