//! A forwarded command's answer relayed to the client, rows masked.

use super::*;
use crate::mysql::recording;

/// `SERVER_STATUS_CURSOR_EXISTS`.
pub(super) const CURSOR_EXISTS: u16 = 0x0040;

/// The rows of one result as they are relayed: their columns, masks and
/// encoding, and the `maxRows` limit.
pub(super) struct RowStream<'a> {
    pub columns: &'a [mysql_common::packets::Column],
    pub plan: &'a [results::ColumnPlan],
    pub detect: bool,
    pub binary: bool,
    pub max_rows: Option<u64>,
    /// How much of it is recorded (`spec.recording`).
    pub recording: sluice_crds::Recording,
}

/// Rows sent of one result (a cursor's, across its fetches).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RowsSent {
    pub rows: u64,
    pub past_max: bool,
}

impl Session<'_> {
    /// Relays the server's answer to a forwarded COM_QUERY, into `outcome`
    /// (what it holds when this fails is what was relayed until then).
    pub(super) async fn relay(
        &mut self,
        decided: &Arc<SqlDecision>,
        reply_seq: u8,
        (warnings, binary): (bool, bool),
        unseen: &Unseen,
        outcome: &mut Outcome,
    ) -> Result<(), SessionError> {
        let mut reply = Reply::new(reply_seq);
        let mut index = 0;
        let limits = self.masking.limits().clone();
        let detect = self.masking.active() && self.set.detectors().is_some();
        loop {
            let p = self.up.read().await?;
            match p.payload.first() {
                Some(0x00) => {
                    let ok = OkPacket::parse(&p.payload)?;
                    self.track(&ok)?;
                    reply.push(&ok.encode(0, self.client_caps));
                    if ok.status & MORE_RESULTS == 0 {
                        break;
                    }
                    index += 1;
                }
                Some(0xFF) => {
                    let err = self.scrubbed(&p.payload, decided, index, unseen);
                    outcome.error = Some(packet::parse_err(&err).2);
                    reply.push(&err);
                    break;
                }
                Some(0xFB) => {
                    // LOCAL INFILE request: never offered; the server gets
                    // an empty file and the client an error.
                    self.up.send(p.seq.wrapping_add(1), &[]).await?;
                    let _ = self.up.read().await?;
                    let msg = "LOAD DATA LOCAL is refused by Sluice: the sidecar never offers CLIENT_LOCAL_FILES";
                    outcome.error = Some(msg.into());
                    reply.push(&packet::err_payload(ACCESS_DENIED, "42000", msg));
                    break;
                }
                _ => {
                    let more = self
                        .result_set(
                            &p.payload,
                            decided,
                            index,
                            &mut reply,
                            outcome,
                            &limits,
                            detect,
                            (warnings, binary, unseen),
                        )
                        .await?;
                    if !more {
                        break;
                    }
                    index += 1;
                }
            }
            if reply.out.len() > 64 * 1024 {
                self.client.write_all(&reply.out).await?;
                reply.out.clear();
            }
        }
        self.client.write_all(&reply.out).await?;
        Ok(())
    }

    /// One result set; returns whether more results follow. A binary
    /// result of an EXECUTE that asked for a cursor (`self.cursor_asked`)
    /// may end at its column definitions with the cursor open: then the
    /// columns and their masks are kept in `self.opened_cursor` and the
    /// rows come with COM_STMT_FETCH.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn result_set(
        &mut self,
        head: &[u8],
        decided: &Arc<SqlDecision>,
        index: usize,
        reply: &mut Reply,
        outcome: &mut Outcome,
        limits: &crate::masking::ResultLimits,
        detect: bool,
        (warnings, binary, unseen): (bool, bool, &Unseen),
    ) -> Result<bool, SessionError> {
        let mut pos = 0;
        let count = packet::lenenc_int(head, &mut pos)?
            .filter(|n| *n > 0 && *n <= 4096)
            .ok_or_else(|| PacketError::Malformed("result set column count".into()))?;
        reply.push(head);
        let mut columns = Vec::new();
        // The column definitions as sent (each after its length): the key
        // of the last result's mask plan (see `PlanMemo`).
        let mut sent = Vec::new();
        for _ in 0..count {
            let c = self.up.read().await?;
            columns.push(results::column(&c.payload)?);
            sent.extend_from_slice(&(c.payload.len() as u64).to_le_bytes());
            sent.extend_from_slice(&c.payload);
            reply.push(&c.payload);
        }
        let level = self.masking.recording();
        outcome
            .recorder
            .named_set(level, recording::names(&columns));
        let eof_client = !self
            .client_caps
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        // A cursor's answer ends at its columns: the EOF after them is the
        // server's, with its status (SERVER_STATUS_CURSOR_EXISTS).
        let cursor = binary && self.cursor_asked;
        if eof_client && !cursor {
            reply.push(&OkPacket::default().eof());
        }
        let plan = self.memo_plan(decided, index, (&columns, sent), warnings, unseen);
        let mut sent = RowsSent::default();
        let first = if cursor {
            let r = self.up.read().await?;
            if r.payload.first() == Some(&0xFE) && r.payload.len() < packet::MAX_WIRE_PAYLOAD {
                let ok = OkPacket::parse(&r.payload)?;
                if ok.status & CURSOR_EXISTS != 0 {
                    self.track(&ok)?;
                    reply.push(&self.terminator(&ok));
                    let asked = self.masking.active();
                    self.opened_cursor = Some(cursor::Opened::new(columns, plan, unseen, asked));
                    return Ok(ok.status & MORE_RESULTS != 0);
                }
            }
            // No cursor opened: the rows follow, as for any result.
            if eof_client {
                reply.push(&OkPacket::default().eof());
            }
            Some(r)
        } else {
            None
        };
        let rows = RowStream {
            columns: &columns,
            plan: &plan,
            detect,
            binary,
            max_rows: limits.max_rows,
            recording: level,
        };
        let end = self
            .rows(
                first,
                &rows,
                &mut sent,
                reply,
                outcome,
                (decided, index, unseen),
            )
            .await?;
        let Some(ok) = end else {
            return Ok(false);
        };
        if sent.past_max && limits.refuse_past_max {
            // Refused: the client gets an error, the rest is drained.
            let msg = format!(
                "result refused by Sluice: more than {} rows, the maxRows limit of the AccessPolicy",
                limits.max_rows.unwrap_or(0)
            );
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &msg));
            outcome.error = Some(msg);
            if ok.status & MORE_RESULTS != 0 {
                self.drain().await?;
            }
            return Ok(false);
        }
        reply.push(&self.terminator(&ok));
        Ok(ok.status & MORE_RESULTS != 0)
    }

    /// [`Session::plan_for`], with the last result's plan kept for the
    /// next result of the same decision, standing, statement index and
    /// column definitions (byte for byte, as `sent`): a session repeating
    /// a statement gets the same plan without planning again. Only the
    /// engine's plan is kept, and only when the statement calls no stored
    /// function (`unseen.matcher`): its views and calls out of sight are
    /// applied to every result afresh.
    fn memo_plan(
        &mut self,
        decided: &Arc<SqlDecision>,
        index: usize,
        (columns, sent): (&[mysql_common::packets::Column], Vec<u8>),
        warnings: bool,
        unseen: &Unseen,
    ) -> Vec<results::ColumnPlan> {
        let mut plan = if unseen.matcher.is_some() {
            results::plan(
                &self.masking,
                decided,
                index,
                columns,
                warnings,
                unseen.matcher.as_ref(),
            )
        } else if let Some(m) = self.plan_memo.as_ref().filter(|m| {
            Arc::ptr_eq(&m.decision, decided)
                && Arc::ptr_eq(&m.masking, &self.masking)
                && m.index == index
                && m.warnings == warnings
                && m.columns == sent
        }) {
            m.plan.clone()
        } else {
            let plan = results::plan(&self.masking, decided, index, columns, warnings, None);
            self.plan_memo = Some(PlanMemo {
                decision: decided.clone(),
                masking: self.masking.clone(),
                index,
                warnings,
                columns: sent,
                plan: plan.clone(),
            });
            plan
        };
        self.out_of_sight(decided, columns, &mut plan, unseen);
        plan
    }

    /// Views and calls out of the lineage analysis' sight, masked whole in
    /// `plan`.
    fn out_of_sight(
        &self,
        decided: &SqlDecision,
        columns: &[mysql_common::packets::Column],
        plan: &mut [results::ColumnPlan],
        unseen: &Unseen,
    ) {
        if !unseen.views.is_empty() {
            results::mask_views(&self.masking, decided, columns, plan, &unseen.views);
        }
        if unseen.whole || unseen.variables {
            results::mask_all(&self.masking, plan);
        }
    }

    /// The masks of a result's columns (see [`results::plan`]), views and
    /// calls out of the lineage analysis' sight masked whole.
    pub(super) fn plan_for(
        &self,
        decided: &SqlDecision,
        index: usize,
        columns: &[mysql_common::packets::Column],
        warnings: bool,
        unseen: &Unseen,
    ) -> Vec<results::ColumnPlan> {
        let mut plan = results::plan(
            &self.masking,
            decided,
            index,
            columns,
            warnings,
            unseen.matcher.as_ref(),
        );
        self.out_of_sight(decided, columns, &mut plan, unseen);
        plan
    }

    /// The OK that ends rows, in the client's format.
    pub(super) fn terminator(&self, ok: &OkPacket) -> Vec<u8> {
        if self
            .client_caps
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
        {
            ok.encode(0xFE, self.client_caps)
        } else {
            ok.eof()
        }
    }

    /// Rows relayed (`first`, when already read, then the server's next
    /// packets), masked by `rows.plan`, counted in `sent` against
    /// `rows.max_rows` (the rows past it are dropped and `sent.past_max`
    /// set), until their terminator: its OK, tracked, not yet passed on;
    /// `None` when the server ended them with an error (passed on,
    /// scrubbed).
    pub(super) async fn rows(
        &mut self,
        first: Option<packet::Packet>,
        rows: &RowStream<'_>,
        sent: &mut RowsSent,
        reply: &mut Reply,
        outcome: &mut Outcome,
        (decided, index, unseen): (&SqlDecision, usize, &Unseen),
    ) -> Result<Option<OkPacket>, SessionError> {
        let masks = rows.plan.iter().any(|c| c.rule.is_some()) || rows.detect;
        let mut first = first;
        loop {
            let r = match first.take() {
                Some(r) => r,
                None => self.up.read().await?,
            };
            match r.payload.first() {
                Some(0xFE) if r.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&r.payload)?;
                    self.track(&ok)?;
                    return Ok(Some(ok));
                }
                Some(0xFF) => {
                    let err = self.scrubbed(&r.payload, decided, index, unseen);
                    outcome.error = Some(packet::parse_err(&err).2);
                    reply.push(&err);
                    return Ok(None);
                }
                _ => {
                    if rows.max_rows.is_some_and(|m| sent.rows >= m) {
                        sent.past_max = true;
                        continue;
                    }
                    sent.rows += 1;
                    outcome.rows += 1;
                    let masked = if masks {
                        if rows.binary {
                            super::super::binary::mask_binary_row(
                                &r.payload,
                                rows.columns,
                                rows.plan,
                                &self.masking,
                                rows.detect,
                                &mut outcome.masks,
                            )?
                        } else {
                            results::mask_row(
                                &r.payload,
                                rows.plan,
                                &self.masking,
                                rows.detect,
                                &mut outcome.masks,
                            )?
                        }
                    } else {
                        None
                    };
                    let row = match &masked {
                        Some((row, n)) => {
                            outcome.masked += n;
                            row
                        }
                        None => &r.payload,
                    };
                    reply.push(row);
                    // What the client got, masked: the recording never sees more.
                    outcome
                        .recorder
                        .decoded_row(rows.recording, &self.info.recording, || {
                            if rows.binary {
                                recording::binary_row(row, rows.columns)
                            } else {
                                recording::text_row(row, rows.columns.len())
                            }
                        });
                    if reply.out.len() > 64 * 1024 {
                        self.client.write_all(&reply.out).await?;
                        reply.out.clear();
                    }
                }
            }
        }
    }

    /// The server's ERR packet for statement `index` of `decided`, its
    /// message scrubbed when the statement may read masked values (a
    /// stored function's error can carry what it read).
    pub(super) fn scrubbed(
        &self,
        payload: &[u8],
        decided: &SqlDecision,
        index: usize,
        unseen: &Unseen,
    ) -> Vec<u8> {
        let scrub = results::reads_masked(&self.masking, decided, index)
            || (self.masking.has_column_rules() && unseen.calls_stored());
        results::scrub_err(payload, &self.masking, scrub)
    }

    /// Reads and drops the rest of an answer (after a refused result).
    pub(super) async fn drain(&mut self) -> Result<(), SessionError> {
        let mut in_rows = false;
        loop {
            let p = self.up.read().await?;
            match p.payload.first() {
                Some(0x00) if !in_rows => {
                    let ok = OkPacket::parse(&p.payload)?;
                    self.track(&ok)?;
                    if ok.status & MORE_RESULTS == 0 {
                        return Ok(());
                    }
                }
                Some(0xFE) if in_rows && p.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&p.payload)?;
                    self.track(&ok)?;
                    if ok.status & MORE_RESULTS == 0 {
                        return Ok(());
                    }
                    in_rows = false;
                }
                Some(0xFF) => return Ok(()),
                _ if !in_rows => {
                    let mut pos = 0;
                    let n = packet::lenenc_int(&p.payload, &mut pos)?.unwrap_or(0);
                    for _ in 0..n {
                        self.up.read().await?;
                    }
                    in_rows = true;
                }
                _ => {}
            }
        }
    }
}

/// The last result's mask plan and what it was planned from (see
/// [`Session::memo_plan`]); the decision and the masking are held, so
/// neither can be another one at the same address.
pub(super) struct PlanMemo {
    decision: Arc<SqlDecision>,
    masking: Arc<Masking>,
    index: usize,
    warnings: bool,
    /// The column definitions as the server sent them, each after its
    /// length.
    columns: Vec<u8>,
    plan: Vec<results::ColumnPlan>,
}
