//! A simple Query: decided, put on record, and forwarded (or refused).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::expect::{Expect, SimpleCtx};
use super::{ClientLoop, Guard, SessionError};
use crate::enforcement::{Decided, Refusal};
use crate::postgres::framing::Frame;
use crate::postgres::masking::CopyMask;
use crate::postgres::messages::{query, ready_for_query};
use crate::postgres::rows_affected::{self, Count, Limit};
use crate::postgres::settings::Effect;

impl ClientLoop {
    pub(super) async fn simple_query(&mut self, frame: Frame) -> Result<(), SessionError> {
        let sql = query::decode(frame.body())?;
        let decided = self.enforcer.decide(sql);
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
        let mut refusal = settings_refusal.or_else(|| decided.refusal.clone());
        if refusal.is_none() {
            refusal = self.rate_check();
        }
        let copy_masks = if refusal.is_none() {
            match self.copy_masks(&decided).await {
                Ok(m) => m,
                Err(r) => {
                    refusal = Some(r);
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let mut writes = None;
        if refusal.is_none() {
            match self.simple_writes(&decided) {
                Ok(w) => writes = w,
                Err(r) => refusal = Some(r),
            }
        }
        // Write-ahead: the decision is on record before anything runs (an
        // allowed statement's record may share one write with other
        // sessions' records: see AuditLog::durable).
        let recorded = match &refusal {
            Some(r) => self
                .ctx
                .audit
                .statement(&self.session, &decided, "simple", Some(r)),
            None => match self
                .ctx
                .audit
                .statement_pending(&self.session, &decided, "simple")
            {
                Ok(ticket) => self.ctx.audit.durable(ticket).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = recorded {
            self.refuse(&Refusal::audit_failed(&e));
            return Ok(());
        }
        self.ctx.metrics.statement(&decided, refusal.is_some());
        if let Some(refusal) = refusal {
            self.refuse(&refusal);
            return Ok(());
        }
        self.forward_simple(&frame, decided, copy_masks, writes)
            .await?;
        self.barrier |= effect != Effect::None;
        Ok(())
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
    ) -> Result<(), SessionError> {
        let simple = Expect::Simple(Box::new(SimpleCtx {
            decided: decided.clone(),
            started: Instant::now(),
            copy_masks,
        }));
        let Some(counts) = writes else {
            self.send(simple);
            self.upstream.write_all(&frame.raw).await?;
            return Ok(());
        };
        let Some((rows, policy)) = self.masking.limits().max_rows_affected.clone() else {
            return Err(SessionError::Desync(
                "maxRowsAffected changed while a write was decided".into(),
            ));
        };
        // The transaction status decides between BEGIN and SAVEPOINT: what
        // was sent before is answered first.
        self.wait_answered(0).await;
        let savepoint = self.answered.status() != ready_for_query::IDLE;
        let prefix = if savepoint {
            format!("SAVEPOINT {};", self.guard_name)
        } else {
            "BEGIN;".to_string()
        };
        let sql = query::decode(frame.body())?;
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(&format!("{prefix}{sql}"), &mut out)?;
        self.send(Expect::HoldStart {
            swallow: 1,
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
        });
        Ok(())
    }
}
