//! A COM_QUERY decided, put on record and forwarded, or refused.

use super::*;

impl Session<'_> {
    /// Why a decided text may not run (`None`: it may). With `admit`, the
    /// statement is counted against the rate limit (it is about to run; a
    /// PREPARE is not counted, its EXECUTEs are).
    pub(super) fn refusal(&self, text: &str, decided: &SqlDecision, admit: bool) -> Option<String> {
        if let Some(why) = &self.revoked {
            return Some(format!("statement refused by Sluice: {why}"));
        }
        if let Some(why) = &self.ctx.unserved {
            return Some(why.clone());
        }
        let d = &decided.decision;
        let which = || {
            format!(
                "policy {:?}, rule {:?}",
                d.enforced_policy
                    .as_deref()
                    .or(d.policy.as_deref())
                    .unwrap_or("-"),
                d.enforced_rule
                    .as_deref()
                    .or(d.rule.as_deref())
                    .unwrap_or("(default or parse error)")
            )
        };
        if decided.too_complex {
            return Some(format!("statement refused by Sluice: {}", d.reason));
        }
        match d.enforced {
            Action::Allow => {}
            Action::Deny => {
                let mut msg = format!("statement denied by Sluice: {} ({})", d.reason, which());
                let n = decided.statements.len();
                if n > 1 {
                    let at = decided
                        .statements
                        .iter()
                        .position(|(_, s)| s.enforced == Action::Deny)
                        .map_or(1, |i| i + 1);
                    msg.push_str(&format!(
                        "; statement {at} of {n} is denied, so the whole query string was refused and none of it ran"
                    ));
                }
                return Some(msg);
            }
            Action::RequireApproval => {
                return Some(format!(
                    "statement needs approval ({}; {}), and approvals are not served on MySQL Connections by this sidecar yet: refused",
                    d.reason,
                    which()
                ));
            }
        }
        if let Some(why) = decided
            .statements
            .iter()
            .find_map(|(s, _)| s.refused.clone())
        {
            return Some(format!("statement refused by Sluice: {why}"));
        }
        let limits = self.masking.limits();
        if limits.max_rows_affected.is_some() || self.masking.read_only().is_some() {
            return Some(
                "statement refused by Sluice: the AccessPolicy sets maxRowsAffected or readOnly, which the MySQL plane does not enforce yet; every statement is refused rather than run unguarded".into(),
            );
        }
        if text.to_ascii_lowercase().contains("session_track") {
            return Some("statement refused by Sluice: the session's tracking settings (session_track_*) are Sluice's own; it follows sql_mode and the character sets through them".into());
        }
        // A statement that may change how the server reads the next ones
        // must come last in a string: the string was decided under the
        // settings in force when it arrived.
        let n = decided.statements.len();
        if n > 1
            && let Some((s, _)) = decided.statements[..n - 1].iter().find(|(s, _)| {
                !matches!(
                    s.kind,
                    sluice_crds::StatementKind::Select
                        | sluice_crds::StatementKind::Insert
                        | sluice_crds::StatementKind::Update
                        | sluice_crds::StatementKind::Delete
                )
            })
        {
            return Some(format!(
                "statement refused by Sluice: a {} statement may change how the server reads the statements after it; send it on its own, not followed by more statements in one string",
                s.kind.as_str()
            ));
        }
        let rate = self.set.limits().statements_per_second;
        if admit && !self.ctx.binding.rate().admit(rate) {
            return Some(crate::rate::exceeded(rate.unwrap_or(0), &self.ctx.name));
        }
        None
    }

    /// A COM_QUERY: gated, decided, put on record, forwarded, its results
    /// relayed and masked; or refused with an ERR packet (the session goes on).
    pub(super) async fn query(
        &mut self,
        text: Result<String, std::string::FromUtf8Error>,
        forward: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        self.follow();
        let decided = match self.decide(text) {
            Ok(d) => d,
            Err(why) => return self.refuse_undecided(&why, reply_seq, false).await,
        };
        self.run_decided(&decided, forward, reply_seq, false).await
    }

    /// A text read as the server will read it (the session's settings, then
    /// MySQL's lexer) and decided; the error is why it is refused undecided.
    pub(super) fn decide(
        &self,
        text: Result<String, std::string::FromUtf8Error>,
    ) -> Result<Decided, String> {
        let Ok(text) = text else {
            return Err("statement refused by Sluice: the statement text is not valid UTF-8; Sluice decides UTF-8 (utf8mb4) texts only".into());
        };
        // The reading the server will make: settings first, then MySQL's lexer.
        let lexing = self.settings.refusal(&text).map_or_else(
            || {
                gate::lexical_gate(&text, false, false)
                    .map_err(|why| format!("statement refused by Sluice: {why}"))
            },
            |why| Err(format!("statement refused by Sluice: {why}")),
        );
        let count = lexing?;
        let decision = self.set.decide_sql(&text, SqlDialect::Mysql);
        if decision.parse_error.is_none() && decision.statements.len() != count {
            return Err(format!(
                "statement refused by Sluice: MySQL splits this text into {count} statements and Sluice's parser into {}; it is not decided on a reading other than the server's",
                decision.statements.len()
            ));
        }
        Ok(Decided { text, decision })
    }

    /// A decided text (a COM_QUERY, or a prepared statement's EXECUTE when
    /// `binary`): refused with an ERR packet, or put on record, forwarded
    /// as `forward`, its results relayed and masked.
    pub(super) async fn run_decided(
        &mut self,
        decided: &Decided,
        forward: &[u8],
        reply_seq: u8,
        binary: bool,
    ) -> Result<(), SessionError> {
        let (text, decided) = (&decided.text, &decided.decision);
        if let Some(why) = self.refusal(text, decided, true) {
            let _ = self.record(decided, Some(&why), binary);
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "42000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        // Write-ahead: on record before it runs.
        if let Err(e) = self.record(decided, None, binary) {
            let why = format!(
                "statement not run: Sluice could not write its audit record ({e}); audit is write-ahead"
            );
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "HY000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        // The server reports a view's columns with the view as their
        // origin: which of the tables the text reads are views.
        let views = if self.masking.has_column_rules() {
            self.views(decided).await?
        } else {
            Vec::new()
        };
        let started = Instant::now();
        self.up.command(forward).await?;
        let warnings = {
            let t = text.trim_start().to_ascii_lowercase();
            t.starts_with("show") && (t.contains("warnings") || t.contains("errors"))
        };
        let outcome = self
            .relay(decided, reply_seq, (warnings, binary), &views)
            .await?;
        if may_change_settings(decided) {
            self.recheck().await?;
        }
        let _ = self.ctx.audit.event(
            self.info,
            AuditKind::Result,
            Some(command(decided)),
            None,
            Some(AuditOutcome {
                rows: Some(outcome.rows),
                duration_ms: Some(started.elapsed().as_millis() as u64),
                error: outcome.error,
                masked: (outcome.masked > 0).then_some(outcome.masked),
                masks: Vec::new(),
                recorded: None,
            }),
            false,
        );
        Ok(())
    }

    /// Which of the tables `decided` reads are views (names in lower case,
    /// any schema: a base table that shares a view's name is treated as
    /// one). Asked of the server before the text runs; when it cannot tell,
    /// every table counts as a view.
    pub(super) async fn views(
        &mut self,
        decided: &SqlDecision,
    ) -> Result<Vec<String>, SessionError> {
        let names: Vec<String> = decided
            .statements
            .iter()
            .flat_map(|(s, _)| s.tables.iter())
            .map(|t| {
                t.rsplit('.')
                    .next()
                    .unwrap_or(t)
                    .trim_matches('`')
                    .to_lowercase()
            })
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        if names.iter().any(|n| n.contains(['\\', '\''])) {
            return Ok(names);
        }
        let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let sql = format!(
            "SELECT LOWER(TABLE_NAME) FROM information_schema.VIEWS WHERE LOWER(TABLE_NAME) IN ({})",
            list.join(",")
        );
        let mut q = vec![COM_QUERY];
        q.extend_from_slice(sql.as_bytes());
        self.up.command(&q).await?;
        let head = self.up.read().await?;
        match head.payload.first() {
            Some(0xFF) => return Ok(names),
            Some(0x00) => return Ok(Vec::new()),
            _ => {}
        }
        // One column definition, then rows until the OK that ends them.
        self.up.read().await?;
        let mut views = Vec::new();
        loop {
            let r = self.up.read().await?;
            match r.payload.first() {
                Some(0xFE) if r.payload.len() < packet::MAX_WIRE_PAYLOAD => {
                    let ok = OkPacket::parse(&r.payload)?;
                    self.track(&ok)?;
                    return Ok(views);
                }
                Some(0xFF) => return Ok(names),
                _ => {
                    let mut pos = 0;
                    if let Some(v) = packet::lenenc_bytes(&r.payload, &mut pos)? {
                        views.push(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
    }

    /// After a statement that may have changed the session's tracking
    /// itself (a procedure, dynamic SQL, …: the server would not report
    /// that), reads the settings again, and sets tracking up again when it
    /// was changed.
    pub(super) async fn recheck(&mut self) -> Result<(), SessionError> {
        let mut s = read_settings(&mut self.up)
            .await
            .map_err(SessionError::Closed)?;
        if s.tracking_lost().is_some() {
            tracing::info!("the session's tracking was changed by a statement; set up again");
            s = setup(&mut self.up).await.map_err(SessionError::Closed)?;
        }
        self.settings = s;
        Ok(())
    }

    /// Refuses a text before it is decided (the session's settings or the
    /// lexer say it would be read otherwise): recorded without its text.
    pub(super) async fn refuse_undecided(
        &mut self,
        why: &str,
        reply_seq: u8,
        binary: bool,
    ) -> Result<(), SessionError> {
        let decision = AuditDecision {
            action: Action::Deny,
            policy: None,
            rule: None,
            dry_run: false,
            reason: Some(format!(
                "{why} (mysql {} protocol)",
                if binary { "binary" } else { "text" }
            )),
        };
        let cmd = AuditCommand {
            text: "<not decided: refused before parsing>".into(),
            fingerprint: String::new(),
            kind: None,
        };
        let _ = self.ctx.audit.event(
            self.info,
            AuditKind::Denial,
            Some(cmd),
            Some(decision),
            None,
            true,
        );
        let mut reply = Reply::new(reply_seq);
        reply.push(&packet::err_payload(ACCESS_DENIED, "42000", why));
        self.client.write_all(&reply.out).await?;
        Ok(())
    }

    /// The decision's audit record: a statement event (durable) or, with
    /// `refused`, a denial; `binary` for a prepared statement's.
    pub(super) fn record(
        &self,
        decided: &SqlDecision,
        refused: Option<&str>,
        binary: bool,
    ) -> Result<u64, crate::audit::AuditError> {
        let d = &decided.decision;
        let (kind, action, reason) = match refused {
            Some(why) if d.enforced == Action::Allow => {
                (AuditKind::Denial, Action::Deny, why.to_string())
            }
            Some(_) => (AuditKind::Denial, d.action, d.reason.clone()),
            None => (AuditKind::Statement, d.action, d.reason.clone()),
        };
        let decision = AuditDecision {
            action,
            policy: d.policy.clone(),
            rule: d.rule.clone(),
            dry_run: d.dry_run,
            reason: Some(format!(
                "{reason} (mysql {} protocol)",
                if binary { "binary" } else { "text" }
            )),
        };
        self.ctx.audit.event(
            self.info,
            kind,
            Some(command(decided)),
            Some(decision),
            None,
            true,
        )
    }
}
