//! A forwarded command's answer relayed to the client, rows masked.

use super::*;

impl Session<'_> {
    /// Relays the server's answer to a forwarded COM_QUERY.
    pub(super) async fn relay(
        &mut self,
        decided: &SqlDecision,
        reply_seq: u8,
        (warnings, binary): (bool, bool),
        unseen: &Unseen,
    ) -> Result<Outcome, SessionError> {
        let mut reply = Reply::new(reply_seq);
        let mut outcome = Outcome::default();
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
                            &mut outcome,
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
        Ok(outcome)
    }

    /// One result set; returns whether more results follow.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn result_set(
        &mut self,
        head: &[u8],
        decided: &SqlDecision,
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
        for _ in 0..count {
            let c = self.up.read().await?;
            columns.push(results::column(&c.payload)?);
            reply.push(&c.payload);
        }
        let eof_client = !self
            .client_caps
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        if eof_client {
            reply.push(&OkPacket::default().eof());
        }
        let mut plan = results::plan(
            &self.masking,
            decided,
            index,
            &columns,
            warnings,
            unseen.matcher.as_ref(),
        );
        if !unseen.views.is_empty() {
            results::mask_views(&self.masking, decided, &columns, &mut plan, &unseen.views);
        }
        if unseen.whole {
            results::mask_all(&self.masking, &mut plan);
        }
        let masks = plan.iter().any(|c| c.rule.is_some()) || detect;
        let mut rows = 0u64;
        let mut past_max = false;
        loop {
            let r = self.up.read().await?;
            match r.payload.first() {
                Some(0xFE) if r.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&r.payload)?;
                    self.track(&ok)?;
                    outcome.rows += rows;
                    if past_max && limits.refuse_past_max {
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
                    if eof_client {
                        reply.push(&ok.eof());
                    } else {
                        reply.push(&ok.encode(0xFE, self.client_caps));
                    }
                    return Ok(ok.status & MORE_RESULTS != 0);
                }
                Some(0xFF) => {
                    let err = self.scrubbed(&r.payload, decided, index, unseen);
                    outcome.error = Some(packet::parse_err(&err).2);
                    reply.push(&err);
                    return Ok(false);
                }
                _ => {
                    rows += 1;
                    if limits.max_rows.is_some_and(|m| rows > m) {
                        past_max = true;
                        rows -= 1;
                        continue;
                    }
                    let masked = if masks {
                        if binary {
                            super::super::binary::mask_binary_row(
                                &r.payload,
                                &columns,
                                &plan,
                                &self.masking,
                                detect,
                            )?
                        } else {
                            results::mask_row(&r.payload, &plan, &self.masking, detect)?
                        }
                    } else {
                        None
                    };
                    match masked {
                        Some((row, n)) => {
                            outcome.masked += n;
                            reply.push(&row);
                        }
                        None => reply.push(&r.payload),
                    }
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
