//! Prepared statements (the binary protocol). The text is decided at
//! COM_STMT_PREPARE under the same gate as a COM_QUERY (refused: an ERR,
//! no statement id handed out); COM_STMT_EXECUTE decides it again under
//! the standing in force (a policy edited in between applies), puts it on
//! record and masks the binary rows by column. An EXECUTE may ask for a
//! read-only cursor; its rows then come with COM_STMT_FETCH (see
//! `cursor`).

use super::*;

/// ER_UNKNOWN_STMT_HANDLER.
const UNKNOWN_STATEMENT: u16 = 1243;
/// COM_STMT_EXECUTE's flag for a read-only cursor.
const CURSOR_TYPE_READ_ONLY: u8 = 0x01;
/// Prepared statements a session may hold at once (the server bounds them
/// too, with max_prepared_stmt_count, across all sessions).
const MAX_PREPARED: usize = 1024;
/// The bytes of text a session's prepared statements may hold together.
const MAX_PREPARED_BYTES: usize = 16 << 20;

impl Session<'_> {
    /// Answers that the statement id a command names is not one of this
    /// session's (ER_UNKNOWN_STMT_HANDLER, as the server would), with why.
    pub(super) async fn unknown_statement(
        &mut self,
        reply_seq: u8,
        msg: &str,
    ) -> Result<(), SessionError> {
        send_err(&mut self.client, reply_seq, UNKNOWN_STATEMENT, "HY000", msg).await?;
        Ok(())
    }

    /// COM_STMT_PREPARE: gated and decided; refused, or forwarded and the
    /// server's answer relayed (its statement id then maps to the text).
    pub(super) async fn prepare(
        &mut self,
        body: &[u8],
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        self.follow();
        let decided = match self.decide(String::from_utf8(body.to_vec())) {
            Ok(d) => d,
            Err(why) => return self.refuse_undecided(&why, reply_seq, true).await,
        };
        let refusal = if decided.decision.statements.len() > 1 {
            Some("statement refused by Sluice: a prepared statement holds one statement".into())
        } else if self.statements.len() >= MAX_PREPARED
            || self
                .statements
                .values()
                .map(|d| d.text.len())
                .sum::<usize>()
                + decided.text.len()
                > MAX_PREPARED_BYTES
        {
            Some(format!(
                "statement refused by Sluice: this session holds {} prepared statements already (at most {MAX_PREPARED}, with {} MiB of text together); close some (COM_STMT_CLOSE)",
                self.statements.len(),
                MAX_PREPARED_BYTES >> 20
            ))
        } else {
            self.refusal(&decided.text, &decided.decision, false)
        };
        if let Some(why) = refusal {
            let _ = self.record(&decided.decision, Some(&why), true);
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        self.up.command(forward).await?;
        let head = self.up.read().await?;
        let mut reply = Reply::new(reply_seq);
        if head.payload.first() != Some(&0x00) {
            let scrub = results::reads_masked(&self.masking, &decided.decision, 0);
            reply.push(&results::scrub_err(&head.payload, &self.masking, scrub));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        // OK: statement id (4), columns (2), parameters (2), filler, warnings.
        let (id, columns, params) = match head.payload.get(1..9) {
            Some(b) => (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                u16::from_le_bytes([b[4], b[5]]),
                u16::from_le_bytes([b[6], b[7]]),
            ),
            None => return Err(PacketError::Malformed("COM_STMT_PREPARE answer".into()).into()),
        };
        reply.push(&head.payload);
        let eof_client = !self
            .client_caps
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        for n in [params, columns] {
            for _ in 0..n {
                let def = self.up.read().await?;
                reply.push(&def.payload);
            }
            if n > 0 && eof_client {
                reply.push(&OkPacket::default().eof());
            }
        }
        self.statements.insert(id, decided);
        self.client.write_all(&reply.out).await?;
        Ok(())
    }

    /// COM_STMT_EXECUTE: the statement decided again under the standing
    /// in force, then run as a COM_QUERY is (binary rows masked).
    pub(super) async fn execute(
        &mut self,
        body: &[u8],
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        self.follow();
        // Statement id (4), flags (1: the cursor type), iteration count (4).
        let id = statement_id(body, COM_STMT_EXECUTE)?;
        let Some(prepared) = self.statements.get(&id) else {
            let msg = format!("Unknown prepared statement handler ({id}) given to EXECUTE");
            self.unknown_statement(reply_seq, &msg).await?;
            return Ok(());
        };
        // Flags: the cursor type; only CURSOR_TYPE_READ_ONLY is served
        // (FOR_UPDATE and SCROLLABLE are not MySQL's anyway).
        // (statement_id checked that the flags are there.)
        let cursor = body.get(4).copied().unwrap_or_default();
        if cursor & !CURSOR_TYPE_READ_ONLY != 0 {
            let msg = format!(
                "statement refused by Sluice: COM_STMT_EXECUTE flags 0x{cursor:02x} ask for a cursor type Sluice does not serve; use no cursor or CURSOR_TYPE_READ_ONLY (0x01)"
            );
            send_err(&mut self.client, reply_seq, UNKNOWN_COMMAND, "HY000", &msg).await?;
            return Ok(());
        }
        // The server runs the text it parsed at PREPARE, under the gate
        // it passed then; the decision is the standing's now.
        let decided = Decided {
            decision: self
                .decisions
                .decide_again(&self.set, &self.settings, &prepared.text),
            text: prepared.text.clone(),
            database: prepared.database.clone(),
        };
        // Executing again closes the statement's cursor on the server.
        self.cursors.remove(&id);
        self.opened_cursor = None;
        self.cursor_asked = cursor == CURSOR_TYPE_READ_ONLY;
        let ran = self.run_decided(&decided, forward, reply_seq, true).await;
        self.cursor_asked = false;
        ran?;
        if let Some(opened) = self.opened_cursor.take() {
            let opened_under = decided.decision.decision.enforced;
            let masking = self.masking.clone();
            self.cursors
                .insert(id, cursor::Cursor::new(opened, opened_under, masking));
        }
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE (neither is answered) and
    /// COM_STMT_RESET, passed on for a statement this session prepared.
    pub(super) async fn statement_command(
        &mut self,
        command: u8,
        body: &[u8],
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let id = statement_id(body, command).ok();
        let known = id.is_some_and(|id| self.statements.contains_key(&id));
        // Closed or reset, a statement's cursor is gone.
        if command != COM_STMT_SEND_LONG_DATA
            && let Some(id) = id
        {
            self.cursors.remove(&id);
        }
        if command != COM_STMT_RESET {
            if known {
                if command == COM_STMT_CLOSE {
                    id.map(|id| self.statements.remove(&id));
                }
                self.up.command(forward).await?;
            }
            return Ok(());
        }
        if !known {
            let msg = format!(
                "Unknown prepared statement handler ({}) given to RESET",
                id.unwrap_or(0)
            );
            self.unknown_statement(reply_seq, &msg).await?;
            return Ok(());
        }
        self.up.command(forward).await?;
        let a = self.up.read().await?;
        let mut reply = Reply::new(reply_seq);
        self.relay_simple(&a.payload, &mut reply)?;
        self.client.write_all(&reply.out).await?;
        Ok(())
    }
}
