//! `readOnly` and `maxRowsAffected` on MySQL.
//!
//! readOnly: the upstream session's transactions are made read-only at its
//! start (and again after COM_RESET_CONNECTION), the server refuses every
//! write in them, the read-only variable is followed through session
//! tracking (reported read-write: the session is closed), and whatever could
//! turn it off is refused before it runs ([`gate::read_only_undo`]).
//!
//! maxRowsAffected: a write (INSERT, REPLACE, UPDATE, DELETE, a prepared
//! one at EXECUTE) runs inside a transaction the sidecar opens (autocommit
//! turned off for it, which keeps LOCK TABLES locks; START TRANSACTION
//! would release them) or behind a savepoint (inside the client's transaction); its OK packet's
//! affected-rows count decides: over the limit it is rolled back and
//! refused, otherwise committed (or the savepoint released) and the client
//! gets the write's OK. Only transactional (InnoDB) tables can be rolled
//! back: a write naming any other table is refused before it runs. Under
//! the limit a write comes alone in its query string; text Sluice cannot
//! parse and writes that return rows (RETURNING) are refused; SQL-level
//! EXECUTE is counted as the text it runs (see `sql_prepared`). Writes done inside stored functions, procedures and triggers
//! are not counted (use readOnly to stop those).

use super::*;

/// `SERVER_STATUS_IN_TRANS`.
const IN_TRANSACTION: u16 = 0x0001;
/// `SERVER_STATUS_AUTOCOMMIT`.
const AUTOCOMMIT: u16 = 0x0002;
/// The savepoint of a guarded write inside the client's transaction.
const SAVEPOINT: &str = "sluice_rows_guard";

/// How a guarded write is opened, kept and undone.
struct Guard {
    open: String,
    keep: String,
    undo: Vec<String>,
    /// Run last whether the write was kept or undone.
    after: Option<String>,
}

impl Session<'_> {
    /// Why `decided` is refused under `readOnly`, when so: it could undo
    /// the read-only session, or readOnly came into force after the session
    /// started read-write.
    pub(super) fn read_only_refusal(&self, decided: &SqlDecision) -> Option<String> {
        let policy = match (&self.read_only, self.masking.read_only()) {
            (None, None) => return None,
            (None, Some(now)) => {
                return Some(format!(
                    "statement refused by Sluice: AccessPolicy {now:?} now sets readOnly, and this session was opened read-write; reconnect to get a read-only session"
                ));
            }
            (Some(policy), _) => policy,
        };
        let what = gate::read_only_undo(decided)?;
        Some(format!(
            "statement refused by Sluice: AccessPolicy {policy:?} sets readOnly, and {what} could undo the read-only session; nothing ran"
        ))
    }

    /// Whether `decided` is a write the `maxRowsAffected` guard counts:
    /// its lookup ([`Session::rows_guard`]) finds every relation the write
    /// names and refuses any that is not an InnoDB table (a view has no
    /// engine), so a guarded write needs no views lookup of its own (one
    /// lookup answers both).
    pub(super) fn guarded_write(&self, decided: &SqlDecision) -> bool {
        self.masking.limits().max_rows_affected.is_some()
            && decided.statements.len() == 1
            && decided
                .statements
                .iter()
                .any(|(s, _)| is_counted_write(s) && !s.tables.is_empty())
    }

    /// Why `decided` cannot run under `maxRowsAffected`, when so (before
    /// anything is asked of the server).
    pub(super) fn rows_affected_refusal(&self, decided: &SqlDecision) -> Option<String> {
        let (limit, policy) = self.masking.limits().max_rows_affected.as_ref()?;
        let refused = |why: &str| {
            Some(format!(
                "statement refused by Sluice: AccessPolicy {policy:?} limits writes to {limit} rows each (maxRowsAffected), and {why}; nothing ran"
            ))
        };
        if decided.parse_error.is_some() {
            return refused(
                "Sluice cannot parse this text, so it cannot tell whether it writes or count what it writes",
            );
        }
        if decided
            .statements
            .iter()
            .any(|(s, _)| s.execute_name.is_some())
        {
            return refused(
                "SQL-level EXECUTE runs text Sluice cannot count; send the write itself (or use the binary protocol's prepared statements)",
            );
        }
        let writes = decided
            .statements
            .iter()
            .filter(|(s, _)| is_counted_write(s))
            .count();
        if writes > 0 && decided.statements.len() > 1 {
            return refused(
                "a write is counted only when it comes alone in its query string; send it on its own",
            );
        }
        None
    }

    /// The limit and policy when `decided` (run in `database`) is a write
    /// `maxRowsAffected` counts; `Err` with why it is refused when it
    /// names a relation a rollback cannot undo: asked of
    /// information_schema.TABLES with the plane's one lookup shape
    /// ([`views::lookup`]: each relation by its schema and name as the
    /// server resolves it; no database scanned). Every relation must be
    /// found, and each one found must be an InnoDB table (a view has no
    /// engine); what cannot be asked precisely is refused.
    pub(super) async fn rows_guard(
        &mut self,
        decided: &SqlDecision,
        database: Option<&str>,
    ) -> Result<Result<Option<(u64, Arc<str>)>, String>, SessionError> {
        let Some((limit, policy)) = self.masking.limits().max_rows_affected.clone() else {
            return Ok(Ok(None));
        };
        let Some((stmt, _)) = decided.statements.iter().find(|(s, _)| is_counted_write(s)) else {
            return Ok(Ok(None));
        };
        let refused = |why: String| {
            Ok(Err(format!(
                "statement refused by Sluice: AccessPolicy {policy:?} limits writes to {limit} rows each (maxRowsAffected), and {why}; nothing ran"
            )))
        };
        let tables: Vec<&str> = stmt.tables.iter().map(String::as_str).collect();
        if tables.is_empty() {
            return Ok(Ok(Some((limit, policy))));
        }
        let lower_case = self.settings.lower_case_names;
        let Some((candidates, assumed)) =
            views::candidates(&tables, &[stmt.text.as_str()], database, lower_case)
        else {
            return refused(format!(
                "it names more relations than Sluice looks up at once ({})",
                views::MAX_CANDIDATES
            ));
        };
        if let Some(&i) = assumed.first() {
            return refused(format!(
                "Sluice cannot look up whether {:?} is a transactional table (no database is selected for it, or its name is not found in the text as written)",
                tables[i]
            ));
        }
        // Each row: the index of the relation in `tables`, its engine.
        let pairs = candidates.iter().map(|(s, t, _)| (s.as_str(), t.as_str()));
        let column = |c: usize| {
            let table = candidates.get(c).map_or(0, |(_, _, i)| *i);
            format!("CONCAT('{table}:', IFNULL(UPPER(ENGINE), ''))")
        };
        let Some(sql) = views::lookup(pairs, column, "") else {
            return Ok(Ok(Some((limit, policy))));
        };
        let Some(found) = self.single_column(&sql).await? else {
            return refused(
                "the server would not say whether the tables it writes are transactional".into(),
            );
        };
        for (i, name) in tables.iter().enumerate() {
            let engines: Vec<&str> = found
                .iter()
                .filter_map(|f| f.split_once(':'))
                .filter(|(t, _)| t.parse() == Ok(i))
                .map(|(_, e)| e)
                .collect();
            if engines.is_empty() {
                return refused(format!(
                    "table {name:?} is not a base table information_schema shows (a temporary table or a view), so Sluice cannot tell whether a rollback undoes a write to it"
                ));
            }
            if let Some(e) = engines.iter().find(|e| **e != "INNODB") {
                let e = if e.is_empty() { "a view" } else { e };
                return refused(format!(
                    "table {name:?} is {e}, whose writes a rollback cannot undo (only InnoDB tables can be guarded)"
                ));
            }
        }
        Ok(Ok(Some((limit, policy))))
    }

    /// Runs the write `forward` under the guard: over `limit` rows it is
    /// rolled back and the client gets an ERR; otherwise it is kept and the
    /// client gets its OK (or its ERR). A write the server ran whose
    /// changes were not kept says why in `outcome.rolled_back`.
    pub(super) async fn guarded(
        &mut self,
        decided: &SqlDecision,
        forward: &[u8],
        reply_seq: u8,
        (limit, policy): (u64, Arc<str>),
        (unseen, outcome): (&Unseen, &mut Outcome),
    ) -> Result<(), SessionError> {
        let mut reply = Reply::new(reply_seq);
        let in_transaction =
            self.server_status & IN_TRANSACTION != 0 || self.server_status & AUTOCOMMIT == 0;
        let guard = if in_transaction {
            Guard {
                open: format!("SAVEPOINT {SAVEPOINT}"),
                keep: format!("RELEASE SAVEPOINT {SAVEPOINT}"),
                undo: vec![
                    format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"),
                    format!("RELEASE SAVEPOINT {SAVEPOINT}"),
                ],
                after: None,
            }
        } else {
            // Not START TRANSACTION: it would release the client's LOCK
            // TABLES locks; COMMIT and ROLLBACK do not.
            Guard {
                open: "SET autocommit = 0".into(),
                keep: "COMMIT".into(),
                undo: vec!["ROLLBACK".into()],
                after: Some("SET autocommit = 1".into()),
            }
        };
        if let Err(err) = self.own_statement(&guard.open).await? {
            let msg = format!(
                "statement refused by Sluice: AccessPolicy {policy:?} limits writes (maxRowsAffected), and the guard of this write could not be opened ({}); nothing ran",
                packet::parse_err(&err).2
            );
            outcome.error = Some(msg.clone());
            reply.push(&packet::err_payload(ACCESS_DENIED, "HY000", &msg));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        self.up.command(forward).await?;
        let answer = self.up.read().await?;
        let refusal = match answer.payload.first() {
            Some(0x00) => {
                let mut ok = OkPacket::parse(&answer.payload)?;
                self.track(&ok)?;
                if ok.status & MORE_RESULTS != 0 {
                    self.drain().await?;
                    Some("it was answered with more than one result".to_string())
                } else if ok.affected > limit {
                    Some(format!(
                        "it changed {} rows, more than the {limit} AccessPolicy {policy:?} allows one write (maxRowsAffected); it was rolled back",
                        ok.affected
                    ))
                } else {
                    let kept = self.own_statement(&guard.keep).await?;
                    let kept = match (&guard.after, kept) {
                        (Some(after), Ok(_)) => self.own_statement(after).await?,
                        (Some(after), Err(err)) => {
                            let _ = self.own_statement(after).await?;
                            Err(err)
                        }
                        (None, kept) => kept,
                    };
                    match kept {
                        Ok(kept) => {
                            // The client's transaction state is the one
                            // after the guard, not inside it.
                            ok.status = (kept.status & !STATE_CHANGED_FLAG)
                                | (ok.status & STATE_CHANGED_FLAG);
                            reply.push(&ok.encode(0, self.client_caps));
                        }
                        Err(err) => {
                            let err = self.scrubbed(&err, decided, 0, unseen);
                            outcome.error = Some(packet::parse_err(&err).2);
                            outcome.rolled_back = Some(format!(
                                "the server failed Sluice's {} of the write, so none of it was kept",
                                guard.keep
                            ));
                            reply.push(&err);
                        }
                    }
                    None
                }
            }
            Some(0xFF) => {
                self.undo(&guard).await?;
                let err = self.scrubbed(&answer.payload, decided, 0, unseen);
                outcome.error = Some(packet::parse_err(&err).2);
                reply.push(&err);
                None
            }
            Some(0xFB) => {
                // LOCAL INFILE: never offered; the server gets an empty file.
                self.up.send(answer.seq.wrapping_add(1), &[]).await?;
                let _ = self.up.read().await?;
                Some("LOAD DATA LOCAL is refused by Sluice: the sidecar never offers CLIENT_LOCAL_FILES".into())
            }
            _ => {
                self.drain_result(&answer.payload).await?;
                Some(
                    "it returned rows (RETURNING), which are not counted; it was rolled back"
                        .into(),
                )
            }
        };
        if let Some(why) = refusal {
            self.undo(&guard).await?;
            let msg = format!("statement refused by Sluice: {why}");
            outcome.error = Some(msg.clone());
            outcome.rolled_back = Some(format!("Sluice rolled the write back: {why}"));
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &msg));
        }
        self.client.write_all(&reply.out).await?;
        Ok(())
    }

    /// Undoes a guarded write (errors are the server's to report: a
    /// transaction the server rolled back itself has no savepoint left).
    async fn undo(&mut self, guard: &Guard) -> Result<(), SessionError> {
        for sql in guard.undo.iter().chain(&guard.after) {
            let _ = self.own_statement(sql).await?;
        }
        Ok(())
    }

    /// Runs one of the sidecar's own statements; its OK, or its ERR payload.
    async fn own_statement(
        &mut self,
        sql: &str,
    ) -> Result<Result<OkPacket, Vec<u8>>, SessionError> {
        let mut q = vec![COM_QUERY];
        q.extend_from_slice(sql.as_bytes());
        self.up.command(&q).await?;
        let p = self.up.read().await?;
        match p.payload.first() {
            Some(0x00) => {
                let ok = OkPacket::parse(&p.payload)?;
                self.track(&ok)?;
                Ok(Ok(ok))
            }
            Some(0xFF) => Ok(Err(p.payload)),
            _ => {
                self.drain_result(&p.payload).await?;
                Err(SessionError::Closed(format!(
                    "the server answered the sidecar's own {sql:?} with rows"
                )))
            }
        }
    }

    /// Reads and drops a result set whose first packet (the column count)
    /// was `head`, and whatever results follow it.
    async fn drain_result(&mut self, head: &[u8]) -> Result<(), SessionError> {
        let mut pos = 0;
        let n = packet::lenenc_int(head, &mut pos)?.unwrap_or(0);
        let end = self.read_rows(n, |_| Ok(())).await?;
        if end.is_some_and(|ok| ok.status & MORE_RESULTS != 0) {
            self.drain().await?;
        }
        Ok(())
    }
}

/// `SERVER_SESSION_STATE_CHANGED`.
const STATE_CHANGED_FLAG: u16 = 0x4000;

/// Whether `maxRowsAffected` counts `s`: INSERT (REPLACE), UPDATE, DELETE
/// or MERGE, top level or nested.
fn is_counted_write(s: &sluice_policy::sql::Statement) -> bool {
    use sluice_crds::StatementKind as K;
    s.kinds
        .iter()
        .any(|k| matches!(k, K::Insert | K::Update | K::Delete | K::Merge))
}
