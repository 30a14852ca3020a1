//! A simple Query: decided, put on record, and forwarded (or refused).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::catalog_changes::may_change_catalog;
use super::client::copies_out;
use super::expect::{Expect, SimpleCtx};
use super::{ClientLoop, Guard, SessionError};
use crate::enforcement::{Decided, Refusal};
use crate::postgres::framing::Frame;
use crate::postgres::masking::CopyMask;
use crate::postgres::messages::{query, ready_for_query};
use crate::postgres::rows_affected::{self, Count, Limit};
use crate::postgres::settings::Effect;

impl ClientLoop {
    /// A simple Query: decided, checked, put on record (write-ahead), then
    /// forwarded; or refused, or held for approval (see
    /// [`ClientLoop::approve_simple`]).
    pub(super) async fn simple_query(&mut self, frame: Frame) -> Result<(), SessionError> {
        let started = Instant::now();
        let sql = query::decode(frame.body())?;
        let decided = self.decide(sql).await;
        self.sync_masking();
        self.read_only_in_force()?;
        let (settings_refusal, effect) = self.settings_check(sql, &decided);
        if settings_refusal.is_none()
            && self.ctx.approvals.is_some()
            && decided.awaits_approval().is_some()
        {
            self.held = Some((frame, decided));
            return Ok(());
        }
        let refusal = settings_refusal
            .or_else(|| decided.refusal.clone())
            .or_else(|| self.catalog_change_refusal(&decided))
            .or_else(|| self.rate_check());
        let planned = match refusal {
            Some(r) => Err(r),
            // Neither a COPY … TO STDOUT nor a write to check for masked
            // values (nearly every statement): no future for them.
            None if !copies_out(&decided) && !self.launders_maybe(&decided) => self
                .simple_writes(&decided)
                .map(|writes| (Vec::new(), writes)),
            None => Box::pin(self.simple_plan(&decided)).await,
        };
        let (copy_masks, writes) = match planned {
            Ok(plan) => plan,
            Err(refusal) => {
                self.record_refused(&decided, "simple", &refusal);
                self.refuse(&refusal);
                return Ok(());
            }
        };
        // Write-ahead: the decision is on record before anything runs (an
        // allowed statement's record may share one write with other
        // sessions' records: see AuditLog::durable).
        let mut hold = None;
        let durable = match self.record_allowed(&decided, "simple") {
            Ok(recorded) => {
                hold = recorded.hold;
                self.ctx
                    .audit
                    .durable(recorded.ticket)
                    .await
                    .map_err(|e| Refusal::audit_failed(&e))
            }
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = durable {
            self.refuse(&refusal);
            return Ok(());
        }
        self.ctx.metrics.overhead(started.elapsed());
        let changes_catalog = self.follows_names()
            && (0..decided.len().max(1)).any(|i| may_change_catalog(&decided, i));
        self.forward_simple(&frame, decided, copy_masks, writes, hold)
            .await?;
        self.barrier |= effect != Effect::None || self.read_only_barrier() || changes_catalog;
        Ok(())
    }

    /// What an allowed simple query string needs before it runs: the masks
    /// of its COPY … TO STDOUT statements, and how `maxRowsAffected` counts
    /// its writes; or the refusal when either cannot be had.
    pub(super) async fn simple_plan(
        &mut self,
        decided: &Arc<Decided>,
    ) -> Result<(Vec<Option<Arc<CopyMask>>>, Option<Vec<Count>>), Refusal> {
        let copy_masks = self.copy_masks(decided).await?;
        self.laundering_through(decided).await?;
        let writes = self.simple_writes(decided)?;
        Ok((copy_masks, writes))
    }

    /// `maxRowsAffected` for a simple query string: how its statements are
    /// counted (`None`: no limit, or nothing of it writes), or its refusal.
    pub(super) fn simple_writes(
        &self,
        decided: &Arc<Decided>,
    ) -> Result<Option<Vec<Count>>, Refusal> {
        let Some((rows, policy)) = &self.masking.limits().max_rows_affected else {
            return Ok(None);
        };
        let statements: Vec<Option<(&Decided, usize)>> = if decided.is_empty() {
            vec![Some((&**decided, 0))]
        } else {
            (0..decided.len()).map(|i| Some((&**decided, i))).collect()
        };
        rows_affected::plan(
            &statements,
            false,
            &Limit {
                rows: *rows,
                policy,
            },
        )
    }

    /// Sends a decided simple query upstream. A write under
    /// `maxRowsAffected` goes inside a transaction (autocommit) or a
    /// savepoint (inside the client's transaction) of the sidecar's own,
    /// put in front of it in the same query string so that nothing of it
    /// runs if that fails; its answer is held until
    /// [`ClientLoop::finish_guard`] decides.
    pub(super) async fn forward_simple(
        &mut self,
        frame: &Frame,
        decided: Arc<Decided>,
        copy_masks: Vec<Option<Arc<CopyMask>>>,
        writes: Option<Vec<Count>>,
        hold: Option<crate::audit::HoldId>,
    ) -> Result<(), SessionError> {
        let simple = Expect::Simple(Box::new(SimpleCtx {
            decided: decided.clone(),
            started: Instant::now(),
            copy_masks,
            hold,
        }));
        let Some(counts) = writes else {
            self.send(simple);
            self.upstream.write_all(&frame.raw).await?;
            return Ok(());
        };
        // Boxed: a write under a limit is the rare case, and its future
        // (the wait for earlier answers, the row count) is large.
        Box::pin(self.forward_guarded(frame, decided, simple, counts)).await
    }

    /// [`ClientLoop::forward_simple`] of a write under `maxRowsAffected`.
    async fn forward_guarded(
        &mut self,
        frame: &Frame,
        decided: Arc<Decided>,
        simple: Expect,
        counts: Vec<Count>,
    ) -> Result<(), SessionError> {
        let Some((rows, policy)) = self.masking.limits().max_rows_affected.clone() else {
            return Err(SessionError::Desync(
                "maxRowsAffected changed while a write was decided".into(),
            ));
        };
        // The transaction status decides between BEGIN and SAVEPOINT: what
        // was sent before is answered first.
        self.wait_answered(0).await;
        let savepoint = self.answered.status() != ready_for_query::IDLE;
        // In autocommit the sidecar's BEGIN goes first, with the count of
        // the rows changed so far (see `rows_affected::beyond_tags`).
        let changed_before = self.rows_changed(!savepoint).await?;
        let prefix = if savepoint {
            format!("SAVEPOINT {};", self.guard_name)
        } else {
            String::new()
        };
        let sql = query::decode(frame.body())?;
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(&format!("{prefix}{sql}"), &mut out)?;
        self.send(Expect::HoldStart {
            swallow: u32::from(savepoint),
            shift: prefix.len() as u32,
        });
        self.send(simple);
        self.upstream.write_all(&out).await?;
        let copy_in = decided
            .statement(0)
            .is_some_and(|s| s.kind == sluice_crds::StatementKind::Copy)
            && counts.first() == Some(&Count::Strict);
        self.guard = Some(Guard {
            decided: vec![decided; counts.len()],
            counts,
            protocol: "simple",
            savepoint,
            copy_in,
            rows,
            policy,
            changed_before,
        });
        Ok(())
    }
}
