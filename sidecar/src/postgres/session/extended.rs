//! An extended-protocol group (Parse/Bind/Describe/Execute/Close up to
//! Sync or Flush): decided together, put on record, then forwarded with
//! what each message will be answered with.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::client::{alone_refusal, statement_effect};
use super::expect::{BindInfo, ExecCtx, Expect, StatementRef};
use super::{ClientLoop, Guard, Portal, PreparedStatement, SessionError};
use crate::enforcement::{Decided, Refusal};
use crate::postgres::framing::Frame;
use crate::postgres::messages::{bind, describe, error_response, execute, frontend, parse};
use crate::postgres::rows_affected::{self, Limit};
use crate::postgres::settings::Effect;

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
        self.redecide_prepared();
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut barrier = false;
        // Pass 1: decide every Parse; statements parsed earlier in the group
        // are visible to later Binds.
        let mut parsed: HashMap<String, StatementRef> = HashMap::new();
        let mut refusal: Option<Refusal> = None;
        let mut decisions: Vec<Option<StatementRef>> = Vec::with_capacity(pending.len());
        let mut to_approve: Vec<(String, Arc<Decided>)> = Vec::new();
        for frame in &pending {
            match frame.tag {
                frontend::PARSE => {
                    let p = parse::decode(frame.body())?;
                    let decided = self.enforcer.decide(p.query);
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
                        prepared: Some((Arc::from(p.query), self.enforcer.generation())),
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
                frontend::EXECUTE => {
                    let (portal, _) = execute::decode(frame.body())?;
                    decisions.push(self.portal_statement(portal, &pending, &parsed));
                }
                _ => decisions.push(None),
            }
        }
        // Deciding may have picked up new rules.
        self.sync_masking();
        self.read_only_in_force()?;
        if refusal.is_none() {
            // Statements that need approval hold (or refuse) the whole group.
            for (sql, decided) in &to_approve {
                if let Some(r) = self.approve_parse(sql, decided).await {
                    refusal = Some(r);
                    break;
                }
            }
        }
        // maxRowsAffected: how the group's Executes are counted, decided
        // before anything of it is on record as run.
        let mut writes = None;
        if refusal.is_none() {
            match self.group_writes(&pending, &decisions, sync) {
                Ok(w) => writes = w,
                Err((r, decided)) => {
                    if let Some(decided) = decided {
                        self.record_refused(&decided, "extended", &r);
                    }
                    refusal = Some(r);
                }
            }
        }
        if refusal.is_none() {
            // Pass 2: each Execute runs a statement: rate limit, COPY plan and
            // the write-ahead audit record, before anything is forwarded.
            let mut ticket = None;
            for (i, (frame, stmt)) in pending.iter().zip(&decisions).enumerate() {
                if frame.tag != frontend::EXECUTE {
                    continue;
                }
                let Some(stmt) = stmt else { continue };
                let text = stmt.prepared.as_ref().map_or("", |(t, _)| t);
                let effect = statement_effect(&stmt.decided, text);
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
                let settings_refusal = self
                    .unmodelled(text)
                    .or_else(|| (effect == Effect::Alone && followed).then(alone_refusal));
                if let Some(r) = settings_refusal {
                    let _ = self.ctx.audit.statement(
                        &self.session,
                        &stmt.decided,
                        "extended",
                        Some(&r),
                    );
                    self.ctx.metrics.statement(&stmt.decided, true);
                    refusal = Some(r);
                    break;
                }
                barrier |= effect != Effect::None;
                let awaits =
                    self.ctx.approvals.is_some() && stmt.decided.awaits_approval().is_some();
                if let Some(r) = stmt.decided.refusal.as_ref().filter(|_| !awaits) {
                    // Prepared (or bound) under policies that have changed
                    // since, and refused by the ones in force now.
                    self.record_refused(&stmt.decided, "extended", r);
                    refusal = Some(r.clone());
                    break;
                }
                let approved = match self.approved_once(&stmt.decided) {
                    Ok(approved) => approved,
                    Err(r) => {
                        let _ = self.ctx.audit.statement(
                            &self.session,
                            &stmt.decided,
                            "extended",
                            Some(&r),
                        );
                        self.ctx.metrics.statement(&stmt.decided, true);
                        refusal = Some(r);
                        break;
                    }
                };
                let mut r = self.rate_check();
                if r.is_none()
                    && let Err(e) = self.copy_masks(&stmt.decided).await
                {
                    r = Some(e);
                }
                // An approved run's record is its approval's, written at Parse.
                if !approved || r.is_some() {
                    let recorded = match &r {
                        Some(_) => self.ctx.audit.statement(
                            &self.session,
                            &stmt.decided,
                            "extended",
                            r.as_ref(),
                        ),
                        // Written once for the group, below.
                        None => self
                            .ctx
                            .audit
                            .statement_pending(&self.session, &stmt.decided, "extended")
                            .map(|t| ticket = Some(t)),
                    };
                    if let Err(e) = recorded {
                        r = Some(Refusal::audit_failed(&e));
                    }
                    self.ctx.metrics.statement(&stmt.decided, r.is_some());
                }
                if r.is_some() {
                    refusal = r;
                    break;
                }
            }
            // Write-ahead: the group's records are written before it is forwarded.
            if refusal.is_none()
                && let Some(t) = ticket
                && let Err(e) = self.ctx.audit.durable(t).await
            {
                refusal = Some(Refusal::audit_failed(&e));
            }
        }
        if let Some(refusal) = refusal {
            self.queue_refusal(&refusal, false, self.group_forwarded);
            if sync {
                self.end_refused_group().await?;
            } else {
                self.discarding = true;
            }
            return Ok(());
        }

        // Forward, queueing what each message will be answered with.
        if let Some(guard) = writes {
            self.guard_prefix(guard).await?;
        } else {
            self.out.clear();
        }
        // Masking needs each result's columns; the client may never ask for
        // them, so the sidecar describes every statement it forwards, once,
        // and gives each portal its statement's mask in the Bind's formats.
        let describe_statements = self.masking.active();
        for (i, frame) in pending.iter().enumerate() {
            match frame.tag {
                frontend::PARSE => {
                    let p = parse::decode(frame.body())?;
                    if let Some(stmt) = decisions[i].clone() {
                        self.statements.insert(
                            p.name.to_string(),
                            PreparedStatement {
                                stmt,
                                described: describe_statements.then_some(self.generation),
                            },
                        );
                    }
                    self.send(Expect::ParseComplete);
                    self.out.extend_from_slice(&frame.raw);
                    if describe_statements {
                        self.send(Expect::Describe {
                            portal: None,
                            statement: Some(p.name.to_string()),
                            stmt: decisions[i].clone(),
                            forward: false,
                        });
                        describe::describe_statement(&mut self.out, p.name);
                    }
                }
                frontend::BIND => {
                    let b = bind::decode(frame.body())?;
                    let generation = self.generation;
                    let stmt = match self.statements.get_mut(b.statement) {
                        Some(s) => {
                            if describe_statements && s.described != Some(generation) {
                                // Described under other masking rules (or
                                // none): its mask is made again first.
                                s.described = Some(generation);
                                self.sent.fetch_add(1, Ordering::Relaxed);
                                let _ = self.expect.send(Expect::Describe {
                                    portal: None,
                                    statement: Some(b.statement.to_string()),
                                    stmt: Some(s.stmt.clone()),
                                    forward: false,
                                });
                                describe::describe_statement(&mut self.out, b.statement);
                            }
                            Some(s.stmt.clone())
                        }
                        None => None,
                    };
                    let portal = b.portal.to_string();
                    self.portals.insert(
                        portal.clone(),
                        Portal {
                            stmt: stmt.clone(),
                            generation,
                        },
                    );
                    let info = describe_statements.then(|| {
                        Box::new(BindInfo {
                            portal: portal.clone(),
                            statement: b.statement.to_string(),
                            formats: b.result_formats.clone(),
                        })
                    });
                    self.send(Expect::BindComplete(info));
                    self.out.extend_from_slice(&frame.raw);
                }
                frontend::DESCRIBE => {
                    let (portal, stmt) = match describe::decode(frame.body(), "Describe")? {
                        describe::Target::Portal(p) => (
                            Some(p.to_string()),
                            self.portals.get(p).and_then(|p| p.stmt.clone()),
                        ),
                        describe::Target::Statement(s) => {
                            (None, self.statements.get(s).map(|s| s.stmt.clone()))
                        }
                    };
                    self.send(Expect::Describe {
                        portal,
                        statement: None,
                        stmt,
                        forward: true,
                    });
                    self.out.extend_from_slice(&frame.raw);
                }
                frontend::EXECUTE => {
                    let (portal, _) = execute::decode(frame.body())?;
                    let generation = self.generation;
                    if describe_statements
                        && let Some(p) = self.portals.get_mut(portal)
                        && p.generation != generation
                    {
                        // A portal bound under other masking rules: its
                        // mask is made again, in its result formats, from
                        // its own description.
                        p.generation = generation;
                        self.sent.fetch_add(1, Ordering::Relaxed);
                        let _ = self.expect.send(Expect::Describe {
                            portal: Some(portal.to_string()),
                            statement: None,
                            stmt: p.stmt.clone(),
                            forward: false,
                        });
                        describe::describe_portal(&mut self.out, portal);
                    }
                    let stmt = self.portals.get(portal).and_then(|p| p.stmt.clone());
                    let copy_mask = match &stmt {
                        Some(s) => self
                            .copy_masks(&s.decided)
                            .await
                            .ok()
                            .and_then(|m| m.into_iter().next().flatten()),
                        None => None,
                    };
                    self.send(Expect::Execute(Box::new(ExecCtx {
                        portal: portal.to_string(),
                        stmt,
                        started: Instant::now(),
                        copy_mask,
                    })));
                    self.out.extend_from_slice(&frame.raw);
                }
                frontend::CLOSE => {
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
                }
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
        self.barrier |= barrier;
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
        }))
    }

    /// After a policy change, takes the decisions of the session's prepared
    /// statements and bound portals again, so the next Execute of a statement
    /// prepared under the old policies is decided by the new ones (a deny
    /// added since refuses it).
    pub(super) fn redecide_prepared(&mut self) {
        self.enforcer.refresh();
        let generation = self.enforcer.generation();
        if generation == self.decided_generation {
            return;
        }
        self.decided_generation = generation;
        let enforcer = &mut self.enforcer;
        for s in self.statements.values_mut() {
            s.stmt = s.stmt.redecided(enforcer);
        }
        for p in self.portals.values_mut() {
            if let Some(stmt) = p.stmt.as_mut() {
                *stmt = stmt.redecided(enforcer);
            }
        }
    }

    /// The statement an Execute of `portal` runs, looking at Binds earlier in
    /// the same group first.
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
