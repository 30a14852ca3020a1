//! A COM_QUERY decided, put on record and forwarded, or refused.

use super::*;

/// Why a text that is not UTF-8 is refused.
const NOT_UTF8: &str = "statement refused by Sluice: the statement text is not valid UTF-8; Sluice decides UTF-8 (utf8mb4) texts only";

impl Session<'_> {
    /// Why a decided text may not run (`None`: it may, or, when a
    /// `requireApproval` rule caught it and the operator's approvals are at
    /// hand, it may once approved: [`Session::run_decided`] asks). With
    /// `admit`, the statement is counted against the rate limit (it is
    /// about to run; a PREPARE is not counted, its EXECUTEs are).
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
            // Asked for in run_decided, once nothing else refuses it.
            Action::RequireApproval if self.ctx.approvals.is_some() => {}
            Action::RequireApproval => {
                return Some(format!(
                    "statement needs approval ({}; {}), and approvals need the Sluice operator, which this standalone sidecar does not have: refused",
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
        if let Some(why) = self.read_only_refusal(decided) {
            return Some(why);
        }
        if let Some(why) = self.rows_affected_refusal(decided) {
            return Some(why);
        }
        // SQL-level EXECUTE is decided as the text it runs (see
        // `sql_prepared`); one that reaches the parser ran a text Sluice
        // did not decide: what it reads or stores from views and
        // functions is out of the masking's sight.
        if self.masking.has_column_rules()
            && decided
                .statements
                .iter()
                .any(|(s, _)| s.execute_name.is_some())
        {
            return Some("statement refused by Sluice: SQL-level EXECUTE runs a text Sluice did not decide, and column masking applies to this session; send the statement itself, or use the binary protocol's prepared statements (decided at COM_STMT_PREPARE and EXECUTE)".into());
        }
        if gate::contains_ignore_case(text, "session_track") {
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
        // SQL-level PREPARE / EXECUTE / DEALLOCATE: decided by the text
        // they prepare (see `sql_prepared`), once the text reads as Sluice
        // reads it.
        let read = text.map_err(|_| NOT_UTF8.to_string()).and_then(|t| {
            let lexed = self.read(&t)?;
            Ok((t, lexed))
        });
        let (text, lexed) = match read {
            Ok(r) => r,
            Err(why) => return self.refuse_undecided(&why, reply_seq, false).await,
        };
        if let Some(form) = sql_prepared::classify(&text, &lexed) {
            return self.sql_prepared(form, text, forward, reply_seq).await;
        }
        let decided = match self.decide_lexed(text, &lexed) {
            Ok(d) => d,
            Err(why) => return self.refuse_undecided(&why, reply_seq, false).await,
        };
        self.run_decided(&decided, forward, reply_seq, false).await
    }

    /// `text` read as the server will read it: the session's settings
    /// first, then MySQL's lexer, then the forms Sluice's parser misreads
    /// (`misread`); the error is why it is refused undecided.
    pub(super) fn read(&self, text: &str) -> Result<Lexed, String> {
        if let Some(why) = self.settings.refusal(text) {
            return Err(format!("statement refused by Sluice: {why}"));
        }
        let lexed = gate::lex(text, false, false)
            .map_err(|why| format!("statement refused by Sluice: {why}"))?;
        match crate::mysql::misread::misread(text, &lexed) {
            Some(why) => Err(why),
            None => Ok(lexed),
        }
    }

    /// A text read as the server will read it (the session's settings, then
    /// MySQL's lexer) and decided; the error is why it is refused undecided.
    pub(super) fn decide(
        &mut self,
        text: Result<String, std::string::FromUtf8Error>,
    ) -> Result<Decided, String> {
        let Ok(text) = text else {
            return Err(NOT_UTF8.into());
        };
        let lexed = self.read(&text)?;
        self.decide_lexed(text, &lexed)
    }

    /// A text [`Session::read`] as `lexed`, decided (through the session's
    /// decision cache); the error is why it is refused undecided.
    pub(super) fn decide_lexed(&mut self, text: String, lexed: &Lexed) -> Result<Decided, String> {
        let count = lexed.statements;
        let agrees = |d: &SqlDecision| d.parse_error.is_some() || d.statements.len() == count;
        let decision = self
            .decisions
            .decide(&self.set, &self.settings, &text, lexed, agrees);
        if !agrees(&decision) {
            return Err(format!(
                "statement refused by Sluice: MySQL splits this text into {count} statements and Sluice's parser into {}; it is not decided on a reading other than the server's",
                decision.statements.len()
            ));
        }
        Ok(Decided {
            text,
            decision,
            database: self.settings.database.clone(),
        })
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
        let arrived = Instant::now();
        let database = decided.database.as_deref();
        // Rules on tables, matched through the views its names stand for.
        let followed = self.through_views(&decided.decision, database).await?;
        let (text, decided) = (&decided.text, &followed.decided);
        let mut refused = followed
            .refused
            .or_else(|| self.refusal(text, decided, true));
        // Views and stored functions: what the lineage analysis cannot see.
        // A statement that only reads has its views asked for as it is
        // sent; any other now (writes of what a view reads are checked).
        // A guarded write's views are its guard's to refuse (one lookup).
        // When the rules' lookup above asked about every name already, its
        // answer is the views lookup's (nothing more is asked).
        let pipelined = only_reads(decided);
        let own_lookup = self.masking.active() && !pipelined && !self.guarded_write(decided);
        let mut known = followed.views.filter(|_| self.masking.active());
        let mut unseen = match refused {
            None => self.unseen(decided, text).await?,
            Some(_) => Unseen::default(),
        };
        if refused.is_none() && own_lookup {
            unseen.views = match known.take() {
                Some(views) => views,
                None => self.views(decided, database).await?,
            };
        }
        if refused.is_none() {
            refused = self.laundering_through(decided, &unseen);
        }
        // maxRowsAffected: a write runs behind a guard, on InnoDB tables only.
        let mut guard = None;
        if refused.is_none() {
            match self.rows_guard(decided, database).await? {
                Ok(g) => guard = g,
                Err(why) => refused = Some(why),
            }
        }
        if let Some(why) = refused {
            let _ = self.record(decided, Some(&why), binary);
            return self.send_refusal(reply_seq, &why).await;
        }
        // requireApproval: asked once nothing else refuses the text; the
        // approved run is on record as its approval's step.
        let mut approved = false;
        if decided.decision.enforced == Action::RequireApproval {
            if let Err(why) = self.approve(text, decided, database, binary).await? {
                return self.send_refusal(reply_seq, &why).await;
            }
            approved = true;
            // What was asked before the wait is not taken for now.
            known = None;
            let waited = (own_lookup, &mut guard, &mut unseen);
            if let Some(why) = self.after_wait(decided, database, waited).await? {
                let _ = self.record(decided, Some(&why), binary);
                return self.send_refusal(reply_seq, &why).await;
            }
        }
        // Write-ahead: on record before it runs (an approved run is, as
        // its approval's step).
        if !approved && let Err(e) = self.record(decided, None, binary) {
            let why = format!(
                "statement not run: Sluice could not write its audit record ({e}); audit is write-ahead"
            );
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "HY000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        self.ctx.metrics.overhead(arrived.elapsed());
        let started = Instant::now();
        let warnings = shows_diagnostics(text);
        let mut outcome = Outcome::default();
        let ran = match guard {
            Some(limit) => {
                self.guarded(decided, forward, reply_seq, limit, (&unseen, &mut outcome))
                    .await
            }
            None => {
                let views = match known {
                    Some(views) if pipelined => {
                        unseen.views = views;
                        None
                    }
                    _ => (pipelined && self.masking.active())
                        .then(|| self.view_query(decided, database, true)),
                };
                self.forward_and_relay(
                    (decided, forward, views),
                    reply_seq,
                    (warnings, binary),
                    &mut unseen,
                    &mut outcome,
                )
                .await
            }
        };
        if let Err(e) = ran {
            // The session ends: the result is on record with what is known of it.
            self.result_cut_short(decided, outcome, started, &e);
            return Err(e);
        }
        let checked = self.after_run(decided, &unseen).await;
        self.ctx.metrics.upstream_latency(started.elapsed());
        self.result_event(decided, outcome, started);
        checked
    }

    /// What a statement that ran may have changed out of the server's
    /// reports: stored functions (forgotten), prepared names (forgotten
    /// after a CALL or a text Sluice could not parse: a procedure or a
    /// compound statement may prepare under any name), and the settings
    /// (read again after a statement that may change them or calls a
    /// stored function, which can turn the server's tracking off).
    async fn after_run(
        &mut self,
        decided: &SqlDecision,
        unseen: &Unseen,
    ) -> Result<(), SessionError> {
        if may_change_settings(decided) {
            self.routines.clear();
        }
        let calls_procedure = decided
            .statements
            .iter()
            .any(|(s, _)| s.kinds.contains(&sluice_crds::StatementKind::Call));
        if decided.parse_error.is_some() || calls_procedure {
            self.sql_statements.clear();
        }
        // A procedure or stored function may have set a server variable
        // from a masked column: from now on, reads of server variables
        // are masked whole (see `functions::reads_server_variables`).
        if (calls_procedure || unseen.calls_stored()) && self.masking.has_column_rules() {
            self.variables_tainted = true;
        }
        if may_change_settings(decided) || unseen.calls_stored() {
            self.recheck().await
        } else {
            Ok(())
        }
    }

    /// After an approval's wait: the guarded write's tables (`guard`) and
    /// the views (with `own_lookup`) asked again, since they may have
    /// changed while it waited; why it is refused now, when so.
    async fn after_wait(
        &mut self,
        decided: &SqlDecision,
        database: Option<&str>,
        (own_lookup, guard, unseen): (bool, &mut Option<(u64, Arc<str>)>, &mut Unseen),
    ) -> Result<Option<String>, SessionError> {
        if guard.is_some() {
            match self.rows_guard(decided, database).await? {
                Ok(g) => *guard = g,
                Err(why) => return Ok(Some(why)),
            }
        }
        if own_lookup {
            unseen.views = self.views(decided, database).await?;
            return Ok(self.laundering_through(decided, unseen));
        }
        Ok(None)
    }

    /// Sends `forward` (after the views lookup `views`, when given, whose
    /// answer comes first: no round trip of its own) and relays its answer.
    async fn forward_and_relay(
        &mut self,
        (decided, forward, views): (&Arc<SqlDecision>, &[u8], Option<views::ViewQuery>),
        reply_seq: u8,
        (warnings, binary): (bool, bool),
        unseen: &mut Unseen,
        outcome: &mut Outcome,
    ) -> Result<(), SessionError> {
        match views.as_ref().and_then(|v| v.ask.as_ref()) {
            Some(ask) => {
                let mut commands = ask.commands();
                commands.push(forward);
                self.up.commands(&commands).await?;
            }
            None => self.up.command(forward).await?,
        }
        if let Some(views) = views {
            unseen.views = self.views_answer(views).await?;
        }
        self.relay(decided, reply_seq, (warnings, binary), unseen, outcome)
            .await
    }

    /// An ERR packet refusing the command (the session goes on).
    pub(super) async fn send_refusal(
        &mut self,
        reply_seq: u8,
        why: &str,
    ) -> Result<(), SessionError> {
        let mut reply = Reply::new(reply_seq);
        reply.push(&packet::err_payload(ACCESS_DENIED, "42000", why));
        self.client.write_all(&reply.out).await?;
        Ok(())
    }

    /// A result the session's end cut short (the client left, or the
    /// server's connection failed, while it was relayed): on record with
    /// its error, and its recording without rows, since which of them the
    /// client received is not known (see [`crate::recording::unsettled`]).
    pub(super) fn result_cut_short(
        &self,
        decided: &SqlDecision,
        mut outcome: Outcome,
        started: Instant,
        e: &SessionError,
    ) {
        outcome.error.get_or_insert_with(|| {
            format!("the session ended before the result was complete: {e}")
        });
        outcome.cut_short = true;
        self.result_event(decided, outcome, started);
    }

    /// A result on record (`outcome.masks` per masking rule, as the
    /// PostgreSQL plane writes them), its masked values counted, with what
    /// the workload received of it when the session is recorded.
    pub(super) fn result_event(
        &self,
        decided: &SqlDecision,
        mut outcome: Outcome,
        started: Instant,
    ) {
        self.ctx.metrics.masked(outcome.masked);
        let mut recorded = outcome.recorder.finish(self.masking.recording());
        if let Some(r) = recorded.as_mut() {
            if let Some(why) = &outcome.rolled_back {
                crate::recording::rolled_back(r, why);
            }
            if outcome.cut_short {
                crate::recording::unsettled(
                    r,
                    "the session ended before the result was complete, so which of its rows the client received is not known",
                );
            }
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
                masks: self.masking.mask_counts(&outcome.masks),
                recorded,
            }),
            false,
        );
    }

    /// After a statement that may have changed the session's tracking
    /// itself (a procedure, dynamic SQL, …: the server would not report
    /// that), reads the settings again, and sets tracking up again when it
    /// was changed.
    pub(super) async fn recheck(&mut self) -> Result<(), SessionError> {
        let var = self.settings.read_only_var;
        let mut s = read_settings(&mut self.up, var)
            .await
            .map_err(SessionError::Closed)?;
        if s.tracking_lost().is_some() {
            tracing::info!("the session's tracking was changed by a statement; set up again");
            s = setup(&mut self.up, var)
                .await
                .map_err(SessionError::Closed)?;
        }
        self.settings = s;
        self.read_only_kept()
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
        self.ctx.metrics.decision(Action::Deny, Action::Deny, true);
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

    /// A decided text counted: `sluice_statements_total` by decision (the
    /// same series the PostgreSQL plane writes) and its rule's
    /// `sluice_rule_decisions_total`.
    pub(super) fn count(&self, decided: &SqlDecision, refused: bool) {
        let d = &decided.decision;
        self.ctx.metrics.decision(d.action, d.enforced, refused);
        self.ctx.metrics.rule(
            &crate::metrics::RuleSlot::default(),
            d.policy.as_deref(),
            d.rule.as_deref(),
            d.action,
        );
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
        self.count(decided, refused.is_some());
        let (kind, action, reason) = match refused {
            Some(why) if d.enforced == Action::Allow => {
                (AuditKind::Denial, Action::Deny, why.to_string())
            }
            // What the client was told: its approval could not be asked,
            // or something else refused it first.
            Some(why) if d.enforced == Action::RequireApproval => {
                (AuditKind::Denial, d.action, why.to_string())
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

/// Whether `text` may be `SHOW WARNINGS` or `SHOW ERRORS` (whose rows
/// carry the texts of earlier errors): no allocation.
fn shows_diagnostics(text: &str) -> bool {
    let t = text.trim_start();
    t.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("show"))
        && (gate::contains_ignore_case(t, "warnings") || gate::contains_ignore_case(t, "errors"))
}

/// Whether every statement of `decided` only reads (SELECT, nested
/// anywhere): its views matter only to how its results are masked.
fn only_reads(decided: &SqlDecision) -> bool {
    decided.parse_error.is_none()
        && decided.statements.iter().all(|(s, _)| {
            s.kinds
                .iter()
                .all(|k| matches!(k, sluice_crds::StatementKind::Select))
        })
}
