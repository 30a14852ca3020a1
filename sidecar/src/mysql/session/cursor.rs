//! Cursors on prepared statements: a COM_STMT_EXECUTE with
//! CURSOR_TYPE_READ_ONLY is decided, recorded and run as any EXECUTE, and
//! the server answers with the result's columns only (the cursor open);
//! the rows then come with COM_STMT_FETCH, each fetch:
//! - decided again under the policies in force (a policy edited since the
//!   EXECUTE applies; refused, the cursor is closed, on the server too);
//! - masked by the plan its EXECUTE made (planned again only when the
//!   policies changed since; the views the EXECUTE read still count: its
//!   rows are the server's from then);
//! - counted against `maxRows` across the cursor's fetches (past it:
//!   refused, or truncated with SERVER_STATUS_LAST_ROW_SENT; either way
//!   the cursor is closed on the server too, with COM_STMT_RESET);
//! - put on record as a result event (recorded, under `spec.recording`,
//!   as a result of its own named after the cursor's columns: the bounds
//!   of a statement apply per fetch, the session's across them).
//!
//! A fetch for a statement without an open cursor (unknown, closed, reset,
//! executed again or executed without a cursor) is refused and not
//! forwarded.

use mysql_common::packets::Column;

use super::relay::{RowStream, RowsSent};
use super::*;

/// `SERVER_STATUS_LAST_ROW_SENT`.
const LAST_ROW_SENT: u16 = 0x0080;

/// What an EXECUTE's answer opened a cursor on: the result's columns and
/// their masks, as the EXECUTE planned them.
pub(super) struct Opened {
    columns: Vec<Column>,
    plan: Vec<results::ColumnPlan>,
    /// The views the EXECUTE read (its rows are the server's from then:
    /// a view replaced since still masks them), and whether they were
    /// asked for (masking applied then).
    views: Option<Vec<String>>,
    /// The calls the EXECUTE made out of the lineage analysis' sight.
    functions: Vec<String>,
    whole: bool,
}

impl Opened {
    pub(super) fn new(
        columns: Vec<Column>,
        plan: Vec<results::ColumnPlan>,
        unseen: &Unseen,
        views_asked: bool,
    ) -> Self {
        Opened {
            columns,
            plan,
            views: views_asked.then(|| unseen.views.clone()),
            functions: unseen.functions.clone(),
            // Masked whole either way.
            whole: unseen.whole || unseen.variables,
        }
    }
}

/// An open cursor.
pub(super) struct Cursor {
    /// The result's columns and their masks, planned under `planned_under`.
    opened: Opened,
    planned_under: Arc<Masking>,
    /// Rows sent so far, across fetches.
    sent: RowsSent,
    /// What the policies decided at the EXECUTE that opened it (an
    /// approved run, when `requireApproval`).
    opened_under: Action,
}

impl Cursor {
    pub(super) fn new(opened: Opened, opened_under: Action, planned_under: Arc<Masking>) -> Self {
        Cursor {
            opened,
            planned_under,
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
            self.unknown_statement(reply_seq, &msg).await?;
            return Ok(());
        };
        let started = Instant::now();
        let (columns, mut sent, opened_under) = (
            cursor.opened.columns.clone(),
            cursor.sent,
            cursor.opened_under,
        );
        let text = prepared.text.clone();
        let decided = self
            .decisions
            .decide_again(&self.set, &self.settings, &text);
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
        let (plan, unseen) = match refused {
            None => self.cursor_plan(id, &decided, &text).await?,
            Some(_) => Default::default(),
        };
        if refused.is_none() {
            refused = self.laundering_through(&decided, &unseen);
        }
        if let Some(why) = refused {
            let _ = self.record(&decided, Some(&why), true);
            // Closed, for the client and on the server: later fetches are
            // refused too.
            self.close_cursor(id).await?;
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
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
        if self.fetch_ended(id, end, sent, (&mut reply, &mut outcome), &limits) {
            self.close_cursor(id).await?;
        }
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

    /// The masks of cursor `id`'s rows: as its EXECUTE planned them while
    /// the policies in force are the same; otherwise planned again under
    /// the ones in force, with what the EXECUTE read out of sight (its
    /// views: the rows are the server's from then, whatever the views are
    /// now; every relation it names when none were asked for then).
    async fn cursor_plan(
        &mut self,
        id: u32,
        decided: &SqlDecision,
        text: &str,
    ) -> Result<(Vec<results::ColumnPlan>, Unseen), SessionError> {
        let Some(c) = self.cursors.get(&id) else {
            return Err(SessionError::Closed(format!("cursor {id} vanished")));
        };
        let mut unseen = Unseen {
            views: c.opened.views.clone().unwrap_or_default(),
            functions: c.opened.functions.clone(),
            whole: c.opened.whole,
            matcher: None,
            variables: false,
        };
        if Arc::ptr_eq(&c.planned_under, &self.masking) {
            return Ok((c.opened.plan.clone(), unseen));
        }
        let (columns, views_asked) = (c.opened.columns.clone(), c.opened.views.is_some());
        let fresh = self.unseen(decided, text).await?;
        unseen.whole |= fresh.whole || fresh.variables;
        unseen.functions.extend(fresh.functions);
        unseen.functions.sort();
        unseen.functions.dedup();
        unseen.matcher = (!unseen.functions.is_empty()).then(|| {
            self.masking
                .column_matcher()
                .with_functions(&unseen.functions)
        });
        if !views_asked && self.masking.active() {
            unseen.views = decided
                .statements
                .iter()
                .flat_map(|(s, _)| s.tables.iter())
                .map(|t| views::unqualified(t))
                .collect();
        }
        let plan = self.plan_for(decided, 0, &columns, false, &unseen);
        if let Some(c) = self.cursors.get_mut(&id) {
            c.opened.plan = plan.clone();
            c.opened.functions = unseen.functions.clone();
            c.opened.whole = unseen.whole;
            if self.masking.active() {
                c.opened.views = Some(unseen.views.clone());
            }
            c.planned_under = self.masking.clone();
        }
        Ok((plan, unseen))
    }

    /// Closes statement `id`'s cursor, for the client and on the server
    /// (COM_STMT_RESET: the statement stays prepared).
    async fn close_cursor(&mut self, id: u32) -> Result<(), SessionError> {
        self.cursors.remove(&id);
        let mut reset = vec![COM_STMT_RESET];
        reset.extend_from_slice(&id.to_le_bytes());
        self.up.command(&reset).await?;
        let answer = self.up.read().await?;
        if answer.payload.first() == Some(&0x00) {
            let ok = OkPacket::parse(&answer.payload)?;
            self.track(&ok)?;
        }
        Ok(())
    }

    /// A fetch's rows ended (`end`: their terminator, `None` when the
    /// server ended them with an error): the client's terminator or ERR
    /// added to `reply`, and the cursor kept with `sent`; or `true` when it
    /// is to be closed.
    fn fetch_ended(
        &mut self,
        id: u32,
        end: Option<OkPacket>,
        sent: RowsSent,
        (reply, outcome): (&mut Reply, &mut Outcome),
        limits: &crate::masking::ResultLimits,
    ) -> bool {
        match end {
            // The server ended the fetch with an error.
            None => true,
            Some(_) if sent.past_max && limits.refuse_past_max => {
                let msg = format!(
                    "result refused by Sluice: more than {} rows, the maxRows limit of the AccessPolicy, across this cursor's fetches; the cursor is closed",
                    limits.max_rows.unwrap_or(0)
                );
                reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &msg));
                outcome.error = Some(msg);
                true
            }
            Some(mut ok) => {
                if sent.past_max {
                    // Truncated at maxRows: the client is told the last row
                    // was sent.
                    ok.status |= LAST_ROW_SENT;
                }
                reply.push(&self.terminator(&ok));
                if ok.status & LAST_ROW_SENT != 0 {
                    // Done: the server closed an exhausted cursor; one cut
                    // at maxRows is closed on the server by the sidecar.
                    self.cursors.remove(&id);
                    return sent.past_max;
                }
                if let Some(c) = self.cursors.get_mut(&id) {
                    c.sent = sent;
                }
                false
            }
        }
    }
}
