//! An extended-protocol group (Parse/Bind/Describe/Execute/Close up to
//! Sync or Flush): decided together, put on record, then forwarded with
//! what each message will be answered with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::catalog_changes::{followed_refusal, may_change_catalog};
use super::client::{alone_refusal, copies_out, statement_effect};
use super::expect::{BindInfo, DescribedColumns, ExecCtx, Expect, StatementRef};
use super::prepared::{closed_before, still_prepared_refusal};
use super::{ClientLoop, Guard, Portal, PreparedStatement, SessionError};
use crate::enforcement::{Decided, Refusal};
use crate::postgres::framing::Frame;
use crate::postgres::messages::{bind, describe, error_response, execute, frontend, parse};
use crate::postgres::rows_affected::{self, Limit};
use crate::postgres::settings::{self, Effect};

/// A group decided in pass 1 (see [`ClientLoop::decide_statements`]).
struct Parsed {
    /// What each message runs: a Parse its statement, an Execute its portal's.
    decisions: Vec<Option<StatementRef>>,
    /// Statements that need approval, asked once the group is decided.
    to_approve: Vec<(String, Arc<Decided>)>,
    /// The first refusal (on record).
    refusal: Option<Refusal>,
}

/// A group allowed to run: what each message runs, how its writes are
/// counted under `maxRowsAffected`, and whether it may change the
/// settings Sluice models.
struct Plan {
    decisions: Vec<Option<StatementRef>>,
    writes: Option<Guard>,
    barrier: bool,
    /// Each Execute's held decision (batched audit), by message.
    holds: Vec<Option<crate::audit::HoldId>>,
}

/// What becomes of a group.
enum Verdict {
    Forward(Plan),
    Refuse(Refusal),
}

impl ClientLoop {
    /// Decides and forwards (or refuses) the buffered extended-protocol
    /// messages, ending with `terminator` (Sync or Flush).
    pub(super) async fn flush_group(
        &mut self,
        terminator: Option<Frame>,
        sync: bool,
    ) -> Result<(), SessionError> {
        self.sync_masking();
        self.read_only_in_force()?;
        self.forget_failed_parses();
        if self.catalog_changed() {
            Box::pin(self.sync_catalog()).await;
        }
        if self.relations_to_warm() {
            Box::pin(self.warm_relations()).await;
        }
        self.redecide_prepared();
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        match self.decide_group(&pending, sync).await? {
            Verdict::Forward(plan) => self.forward_group(&pending, plan, terminator, sync).await,
            Verdict::Refuse(refusal) => {
                self.queue_refusal(&refusal, false, self.group_forwarded);
                if sync {
                    self.end_refused_group().await
                } else {
                    self.discarding = true;
                    Ok(())
                }
            }
        }
    }

    /// Decides a group before anything of it is forwarded: its statements
    /// (pass 1), their approvals, how `maxRowsAffected` counts its writes,
    /// then each Execute's checks and write-ahead record (pass 2). Every
    /// refusal is on record by then.
    async fn decide_group(
        &mut self,
        pending: &[Frame],
        sync: bool,
    ) -> Result<Verdict, SessionError> {
        let started = Instant::now();
        // A text whose reading depends on the settings (see
        // `settings::lexing_depends_on_settings`): read under what the
        // server reported once everything before its group is answered.
        let backslash = pending.iter().position(|f| {
            f.tag == frontend::PARSE && settings::lexing_depends_on_settings(f.body())
        });
        if backslash.is_some() && !self.group_forwarded {
            self.wait_answered(0).await;
        }
        let parsed = self.decide_statements(pending).await?;
        // Deciding may have picked up new rules.
        self.sync_masking();
        self.read_only_in_force()?;
        if let Some(refusal) = parsed.refusal {
            return Ok(Verdict::Refuse(refusal));
        }
        if let Some(at) = backslash
            && (self.group_forwarded || pending[..at].iter().any(|f| f.tag == frontend::EXECUTE))
        {
            let refusal = backslash_refusal();
            if let Some(Some(stmt)) = parsed.decisions.get(at) {
                self.record_refused(&stmt.decided, "extended", &refusal);
            }
            return Ok(Verdict::Refuse(refusal));
        }
        // Sluice's own time, unless a human's approval is part of it.
        let timed = parsed.to_approve.is_empty().then_some(started);
        // Statements that need approval hold (or refuse) the whole group.
        for (sql, decided) in &parsed.to_approve {
            let span = self.span.clone();
            let approve = tracing::Instrument::instrument(self.approve_parse(sql, decided), span);
            if let Some(refusal) = Box::pin(approve).await {
                return Ok(Verdict::Refuse(refusal));
            }
        }
        // maxRowsAffected: how the group's Executes are counted, decided
        // before anything of it is on record as run.
        let writes = match self.group_writes(pending, &parsed.decisions, sync) {
            Ok(writes) => writes,
            Err((refusal, decided)) => {
                if let Some(decided) = decided {
                    self.record_refused(&decided, "extended", &refusal);
                }
                return Ok(Verdict::Refuse(refusal));
            }
        };
        Ok(
            match self.record_executes(pending, &parsed.decisions, sync).await {
                Ok((barrier, holds)) => {
                    if let Some(t) = timed {
                        self.ctx.metrics.overhead(t.elapsed());
                    }
                    Verdict::Forward(Plan {
                        decisions: parsed.decisions,
                        writes,
                        barrier,
                        holds,
                    })
                }
                Err(refusal) => Verdict::Refuse(refusal),
            },
        )
    }

    /// Pass 1: decides every Parse (statements parsed earlier in the group
    /// are visible to later Binds) and finds the statement each Execute
    /// runs. A Parse refused by the rules, or read under settings Sluice
    /// does not model, is on record now and refuses the group.
    async fn decide_statements(&mut self, pending: &[Frame]) -> Result<Parsed, SessionError> {
        let mut parsed: HashMap<String, StatementRef> = HashMap::new();
        let mut refusal: Option<Refusal> = None;
        let mut decisions: Vec<Option<StatementRef>> = Vec::with_capacity(pending.len());
        let mut to_approve: Vec<(String, Arc<Decided>)> = Vec::new();
        for (i, frame) in pending.iter().enumerate() {
            match frame.tag {
                frontend::PARSE => {
                    let p = parse::decode(frame.body())?;
                    let decided = self.decide(p.query).await;
                    if !p.name.is_empty()
                        && (parsed.contains_key(p.name) || self.statements.contains_key(p.name))
                        && !closed_before(&pending[..i], p.name)?
                        && refusal.is_none()
                    {
                        let r = still_prepared_refusal(p.name);
                        self.record_refused(&decided, "extended", &r);
                        refusal = Some(r);
                    }
                    if let Some(r) = self
                        .unmodelled(p.query)
                        .or_else(|| self.read_only_refusal(&decided, p.query))
                        && refusal.is_none()
                    {
                        // Read under settings Sluice does not model: refused
                        // whatever the rules say; on record.
                        self.record_refused(&decided, "extended", &r);
                        refusal = Some(r);
                    }
                    let stmt = StatementRef {
                        decided: decided.clone(),
                        index: 0,
                        prepared: Some((Arc::from(p.query), self.decision_stamp())),
                    };
                    if self.ctx.approvals.is_some() && decided.awaits_approval().is_some() {
                        // Asked of the operator once the whole group is decided.
                        to_approve.push((p.query.to_string(), decided.clone()));
                    } else if let Some(r) = &decided.refusal {
                        // Refused at Parse: on record now, nothing of the group runs.
                        self.record_refused(&decided, "extended", r);
                        refusal.get_or_insert_with(|| r.clone());
                    }
                    parsed.insert(p.name.to_string(), stmt.clone());
                    decisions.push(Some(stmt));
                }
                frontend::BIND => {
                    // A statement prepared with SQL PREPARE, bound through
                    // the protocol: Sluice has no Parse of it to go by.
                    let b = bind::decode(frame.body())?;
                    if !b.statement.is_empty()
                        && !parsed.contains_key(b.statement)
                        && !self.statements.contains_key(b.statement)
                        && refusal.is_none()
                        && let Err((r, decided)) =
                            Box::pin(self.sql_prepared_laundering(b.statement)).await
                    {
                        if let Some(decided) = decided {
                            self.record_refused(&decided, "extended", &r);
                        }
                        refusal = Some(r);
                    }
                    decisions.push(None);
                }
                frontend::EXECUTE => {
                    let (portal, _) = execute::decode(frame.body())?;
                    // The portal as the Binds before it left it.
                    decisions.push(self.portal_statement(portal, &pending[..i], &parsed));
                }
                _ => decisions.push(None),
            }
        }
        Ok(Parsed {
            decisions,
            to_approve,
            refusal,
        })
    }

    /// Pass 2: each Execute runs a statement, checked and put on record
    /// (write-ahead) before anything is forwarded; the first refusal ends
    /// it. `Ok` with whether a statement of the group may change the
    /// settings Sluice models (see [`ClientLoop::barrier`]).
    async fn record_executes(
        &mut self,
        pending: &[Frame],
        decisions: &[Option<StatementRef>],
        sync: bool,
    ) -> Result<(bool, Vec<Option<crate::audit::HoldId>>), Refusal> {
        let mut barrier = false;
        let mut ticket = None;
        // Allocated only when a decision is held (batched audit).
        let mut holds = Vec::new();
        for (i, (frame, stmt)) in pending.iter().zip(decisions).enumerate() {
            if frame.tag != frontend::EXECUTE {
                continue;
            }
            let Some(stmt) = stmt else { continue };
            // A statement that changes the settings must end its Sync
            // group: what follows it is read under what the server
            // reports at that Sync.
            let followed = !sync
                || pending[i + 1..].iter().any(|f| {
                    matches!(
                        f.tag,
                        frontend::PARSE
                            | frontend::BIND
                            | frontend::EXECUTE
                            | frontend::DESCRIBE
                            | frontend::CLOSE
                    )
                });
            let (effect, approved) = self.execute_allowed(stmt, followed)?;
            // Its COPY plan and laundering check, boxed: only for the
            // statements that need them.
            if copies_out(&stmt.decided) || self.launders_maybe(&stmt.decided) {
                Box::pin(self.execute_checks(&stmt.decided)).await?;
            }
            let appended = self.execute_recorded(&stmt.decided, approved)?;
            barrier |= effect != Effect::None
                || (self.follows_names() && may_change_catalog(&stmt.decided, stmt.index));
            // Written once for the group, below.
            ticket = appended.map(|r| r.ticket).or(ticket);
            if let Some(hold) = appended.and_then(|r| r.hold) {
                holds.resize(pending.len(), None);
                holds[i] = Some(hold);
            }
        }
        // Write-ahead: the group's records are written before it is forwarded.
        if let Some(t) = ticket {
            self.ctx
                .audit
                .durable(t)
                .await
                .map_err(|e| Refusal::audit_failed(&e))?;
        }
        Ok((barrier, holds))
    }

    /// One Execute of pass 2: the settings its statement may change and
    /// whether it is an approved statement's one run; or its refusal under
    /// the settings Sluice models, the policies in force now, its approval
    /// or the rate limit, on record and counted. Then
    /// [`ClientLoop::execute_checks`] (when it applies) and
    /// [`ClientLoop::execute_recorded`].
    fn execute_allowed(
        &mut self,
        stmt: &StatementRef,
        followed: bool,
    ) -> Result<(Effect, bool), Refusal> {
        let decided = &stmt.decided;
        let text = stmt.prepared.as_ref().map_or("", |(t, _)| t);
        let effect = statement_effect(decided, text);
        let awaits = self.ctx.approvals.is_some() && decided.awaits_approval().is_some();
        let refused = self
            .unmodelled(text)
            .or_else(|| (effect == Effect::Alone && followed).then(alone_refusal))
            // What follows a catalog change would be decided before it ran.
            .or_else(|| {
                (followed && self.follows_names() && may_change_catalog(decided, stmt.index))
                    .then(followed_refusal)
            })
            // Prepared (or bound) under policies that have changed since,
            // and refused by the ones in force now.
            .or_else(|| decided.refusal.clone().filter(|_| !awaits));
        let checked = match refused {
            Some(refusal) => Err(refusal),
            None => self.approved_once(decided),
        };
        let checked = checked.and_then(|approved| match self.rate_check() {
            Some(refusal) => Err(refusal),
            None => Ok(approved),
        });
        match checked {
            Ok(approved) => Ok((effect, approved)),
            Err(refusal) => {
                self.record_refused(decided, "extended", &refusal);
                Err(refusal)
            }
        }
    }

    /// An Execute's COPY … TO STDOUT plan and laundering check (see
    /// [`ClientLoop::laundering_through`]); a refusal on record and counted.
    async fn execute_checks(&mut self, decided: &Arc<Decided>) -> Result<(), Refusal> {
        let mut checked = self.copy_masks(decided).await.map(drop);
        if checked.is_ok() {
            checked = self.laundering_through(decided).await;
        }
        if let Err(refusal) = &checked {
            self.record_refused(decided, "extended", refusal);
        }
        checked
    }

    /// An allowed Execute's write-ahead record, pending (none for an
    /// approved run: its record is its approval's, written at Parse).
    fn execute_recorded(
        &mut self,
        decided: &Decided,
        approved: bool,
    ) -> Result<Option<crate::audit::Recorded>, Refusal> {
        if approved {
            return Ok(None);
        }
        self.record_allowed(decided, "extended").map(Some)
    }

    /// Forwards a decided group, queueing what each message will be
    /// answered with; a write under `maxRowsAffected` goes behind the
    /// sidecar's own BEGIN or SAVEPOINT (see [`ClientLoop::guard_prefix`]).
    async fn forward_group(
        &mut self,
        pending: &[Frame],
        plan: Plan,
        terminator: Option<Frame>,
        sync: bool,
    ) -> Result<(), SessionError> {
        if let Some(guard) = plan.writes {
            self.guard_prefix(guard).await?;
        } else {
            self.out.clear();
        }
        // Masking needs each result's columns; the client may never ask for
        // them, so the sidecar describes every statement it forwards, once,
        // and gives each portal its statement's mask in the Bind's formats.
        let describe_statements = self.masking.active();
        for (i, (frame, stmt)) in pending.iter().zip(plan.decisions).enumerate() {
            let hold = plan.holds.get(i).copied().flatten();
            match frame.tag {
                frontend::PARSE => self.forward_parse(frame, stmt, describe_statements)?,
                frontend::BIND => self.forward_bind(frame, describe_statements)?,
                frontend::DESCRIBE => self.forward_describe(frame)?,
                frontend::EXECUTE => {
                    self.forward_execute(frame, describe_statements, hold)
                        .await?
                }
                frontend::CLOSE => self.forward_close(frame)?,
                _ => self.out.extend_from_slice(&frame.raw),
            }
        }
        if sync {
            self.send(Expect::Sync);
        } else {
            self.group_forwarded = true;
        }
        if let Some(terminator) = terminator {
            self.out.extend_from_slice(&terminator.raw);
        }
        self.upstream.write_all(&self.out).await?;
        self.barrier |= plan.barrier || self.read_only_barrier();
        Ok(())
    }

    /// A Parse: the server will know the statement by its name (with the
    /// sidecar's own Describe of it under masking).
    fn forward_parse(
        &mut self,
        frame: &Frame,
        stmt: Option<StatementRef>,
        describe_statements: bool,
    ) -> Result<(), SessionError> {
        let p = parse::decode(frame.body())?;
        // Its column names, for the recording (only while it records).
        let columns = self.recorded().then(DescribedColumns::default);
        let name: Arc<str> = Arc::from(p.name);
        if let Some(stmt) = stmt.clone() {
            self.statements.insert(
                p.name.to_string(),
                PreparedStatement {
                    name: name.clone(),
                    stmt,
                    described: describe_statements.then_some(self.generation),
                    columns: columns.clone(),
                },
            );
        }
        self.send(Expect::ParseComplete((!p.name.is_empty()).then_some(name)));
        self.out.extend_from_slice(&frame.raw);
        if describe_statements {
            self.send(Expect::Describe {
                portal: None,
                statement: Some(p.name.to_string()),
                stmt,
                forward: false,
                columns,
            });
            describe::describe_statement(&mut self.out, p.name);
        }
        Ok(())
    }

    /// A Bind: the portal runs its statement, masked in the Bind's result
    /// formats.
    fn forward_bind(
        &mut self,
        frame: &Frame,
        describe_statements: bool,
    ) -> Result<(), SessionError> {
        let b = bind::decode(frame.body())?;
        let generation = self.generation;
        // One lookup of the statement: what the portal and the server loop need of it.
        let known = self.statements.get_mut(b.statement).map(|s| {
            let stale = describe_statements && s.described != Some(generation);
            if stale {
                s.described = Some(generation);
            }
            let name = describe_statements.then(|| s.name.clone());
            (s.stmt.clone(), stale, name, s.columns.clone())
        });
        if let Some((stmt, true, _, columns)) = &known {
            // Described under other masking rules (or none): its mask is
            // made again first.
            self.send(Expect::Describe {
                portal: None,
                statement: Some(b.statement.to_string()),
                stmt: Some(stmt.clone()),
                forward: false,
                columns: columns.clone(),
            });
            describe::describe_statement(&mut self.out, b.statement);
        }
        let (stmt, name, columns) = match known {
            Some((stmt, _, name, columns)) => (Some(stmt), name, columns),
            None => (None, None, None),
        };
        let formats = b.result_formats.to_codes();
        let info = describe_statements.then(|| BindInfo {
            portal: b.portal.to_string(),
            statement: name.unwrap_or_else(|| Arc::from(b.statement)),
            formats: formats.clone(),
            stmt: stmt.clone(),
        });
        self.portals.insert(
            b.portal.to_string(),
            Portal {
                stmt,
                generation,
                columns,
                formats,
            },
        );
        self.send(Expect::BindComplete(info));
        self.out.extend_from_slice(&frame.raw);
        Ok(())
    }

    /// A Describe the client asked for: its answer is forwarded.
    fn forward_describe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let recorded = self.recorded();
        let (portal, stmt, columns) = match describe::decode(frame.body(), "Describe")? {
            describe::Target::Portal(name) => {
                let bound = self.portals.get(name);
                (
                    Some(name.to_string()),
                    bound.and_then(|p| p.stmt.clone()),
                    bound.and_then(|p| p.columns.clone()),
                )
            }
            describe::Target::Statement(s) => match self.statements.get_mut(s) {
                Some(s) => {
                    if recorded && s.columns.is_none() {
                        // Parsed before the session was recorded.
                        s.columns = Some(DescribedColumns::default());
                    }
                    (None, Some(s.stmt.clone()), s.columns.clone())
                }
                None => (None, None, None),
            },
        };
        self.send(Expect::Describe {
            portal,
            statement: None,
            stmt,
            forward: true,
            columns,
        });
        self.out.extend_from_slice(&frame.raw);
        Ok(())
    }

    /// An Execute: its rows belong to its portal's statement.
    async fn forward_execute(
        &mut self,
        frame: &Frame,
        describe_statements: bool,
        hold: Option<crate::audit::HoldId>,
    ) -> Result<(), SessionError> {
        let (portal, _) = execute::decode(frame.body())?;
        let generation = self.generation;
        let stale = describe_statements
            && self.portals.get_mut(portal).is_some_and(|p| {
                let stale = p.generation != generation;
                p.generation = generation;
                stale
            });
        // Its values are in its Bind's formats, for the recording.
        let recorded = self.recorded();
        let (stmt, columns, formats) = match self.portals.get(portal) {
            Some(p) => (
                p.stmt.clone(),
                p.columns.clone(),
                recorded.then(|| p.formats.clone()),
            ),
            None => (None, None, None),
        };
        if stale {
            // A portal bound under other masking rules: its mask is made
            // again, in its result formats, from its own description.
            self.send(Expect::Describe {
                portal: Some(portal.to_string()),
                statement: None,
                stmt: stmt.clone(),
                forward: false,
                columns: None,
            });
            describe::describe_portal(&mut self.out, portal);
        }
        // A COPY … TO STDOUT's plan: boxed, rare.
        let copy_mask = match &stmt {
            Some(s) if copies_out(&s.decided) => Box::pin(self.copy_masks(&s.decided))
                .await
                .ok()
                .and_then(|m| m.into_iter().next().flatten()),
            _ => None,
        };
        self.send(Expect::Execute(Box::new(ExecCtx {
            portal: portal.to_string(),
            stmt,
            started: Instant::now(),
            copy_mask,
            columns,
            formats,
            hold,
        })));
        self.out.extend_from_slice(&frame.raw);
        Ok(())
    }

    /// Whether the session is recorded (`spec.recording`): only then are
    /// prepared statements' column names kept (see [`DescribedColumns`]).
    fn recorded(&self) -> bool {
        !self.masking.recording().is_off()
    }

    /// A Close: the statement or portal is gone.
    fn forward_close(&mut self, frame: &Frame) -> Result<(), SessionError> {
        match describe::decode(frame.body(), "Close")? {
            describe::Target::Statement(s) => {
                self.statements.remove(s);
            }
            describe::Target::Portal(p) => {
                self.portals.remove(p);
            }
        }
        self.send(Expect::CloseComplete);
        self.out.extend_from_slice(&frame.raw);
        Ok(())
    }

    /// `maxRowsAffected` for an extended-protocol group: how its Executes
    /// are counted (`None`: no limit, or nothing of it writes), or its
    /// refusal with the decision to put it on record under.
    #[allow(clippy::type_complexity)]
    pub(super) fn group_writes(
        &self,
        pending: &[Frame],
        decisions: &[Option<StatementRef>],
        sync: bool,
    ) -> Result<Option<Guard>, (Refusal, Option<Arc<Decided>>)> {
        let Some((rows, policy)) = self.masking.limits().max_rows_affected.clone() else {
            return Ok(None);
        };
        let executed: Vec<&Option<StatementRef>> = pending
            .iter()
            .zip(decisions)
            .filter(|(f, _)| f.tag == frontend::EXECUTE)
            .map(|(_, d)| d)
            .collect();
        let first = executed
            .iter()
            .find_map(|d| d.as_ref().map(|s| s.decided.clone()));
        let statements: Vec<Option<(&Decided, usize)>> = executed
            .iter()
            .map(|d| d.as_ref().map(|s| (&*s.decided, s.index)))
            .collect();
        let limit = Limit {
            rows,
            policy: &policy,
        };
        let Some(counts) =
            rows_affected::plan(&statements, true, &limit).map_err(|r| (r, first.clone()))?
        else {
            return Ok(None);
        };
        if !sync {
            let refusal = Refusal {
                code: error_response::FEATURE_NOT_SUPPORTED,
                ..Refusal::plain(&format!(
                    "statement refused by Sluice: AccessPolicy {policy:?} limits writes to {rows} rows each (maxRowsAffected), and a write is counted only in an extended-protocol group that ends with Sync (this one ended with Flush); nothing ran"
                ))
            };
            return Err((refusal, first));
        }
        Ok(Some(Guard {
            decided: executed
                .iter()
                .map(|d| {
                    d.as_ref()
                        .map_or_else(|| first.clone(), |s| Some(s.decided.clone()))
                })
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default(),
            counts,
            protocol: "extended",
            savepoint: false,
            copy_in: false,
            rows,
            policy,
            changed_before: None,
        }))
    }

    /// The statement an Execute of `portal` runs: its last Bind in
    /// `before` (the messages of its group before it), else the portal as
    /// an earlier group left it. A Bind after the Execute (the unnamed
    /// portal bound again in a pipeline) is not the one it runs.
    pub(super) fn portal_statement(
        &self,
        portal: &str,
        pending: &[Frame],
        parsed: &HashMap<String, StatementRef>,
    ) -> Option<StatementRef> {
        for frame in pending.iter().rev() {
            if frame.tag == frontend::BIND
                && let Ok(b) = bind::decode(frame.body())
                && b.portal == portal
            {
                return parsed
                    .get(b.statement)
                    .cloned()
                    .or_else(|| self.statements.get(b.statement).map(|s| s.stmt.clone()));
            }
        }
        self.portals.get(portal).and_then(|p| p.stmt.clone())
    }

    /// Ends a Sync group whose error was already queued: the client gets
    /// ReadyForQuery; if part of the group reached the server, its Sync goes
    /// too (the server's ReadyForQuery is then the one the client sees).
    pub(super) async fn end_refused_group(&mut self) -> Result<(), SessionError> {
        self.pending.clear();
        self.pending_bytes = 0;
        if self.group_forwarded {
            self.send(Expect::Sync);
            let mut out = BytesMut::new();
            postgres_protocol::message::frontend::sync(&mut out);
            self.upstream.write_all(&out).await?;
        } else {
            self.send(Expect::Synthetic {
                bytes: Bytes::new(),
                rfq: true,
                in_group: false,
            });
        }
        Ok(())
    }
}

/// The refusal of a Parse whose text holds a backslash after an Execute of
/// its group (see [`settings::lexing_depends_on_settings`]).
fn backslash_refusal() -> Refusal {
    Refusal {
        code: error_response::FEATURE_NOT_SUPPORTED,
        ..Refusal::plain(
            "statement refused by Sluice: a statement text holding a backslash must not follow an Execute in its extended-protocol group (before its Sync): the statement run first may change standard_conforming_strings or client_encoding (a function, a trigger), and the server would read the backslash under that change; send it after a Sync, or pass the value as a parameter",
        )
    }
}
