//! The mask of a result's columns, made from its RowDescription and the
//! catalog (cached per result shape), or withheld when it cannot be made.

use std::sync::Arc;

use tokio::io::AsyncWrite;

use super::expect::{Expect, StatementRef};
use super::{MASK_CACHE_ENTRIES, ServerLoop, SessionError, SimpleProgress};
use crate::postgres::catalog::CatalogError;
use crate::postgres::framing::Frame;
use crate::postgres::masking::RowMask;
use crate::postgres::messages::error_response::Report;
use crate::postgres::messages::row_description;

impl<W: AsyncWrite + Unpin> ServerLoop<'_, W> {
    pub(super) async fn row_description(&mut self, frame: Frame) -> Result<(), SessionError> {
        let front = self.queue.front();
        let stmt = match front {
            Some(Expect::Simple(s)) => {
                let progress = self.simple.get_or_insert_with(SimpleProgress::default);
                Some(StatementRef {
                    decided: s.decided.clone(),
                    index: progress.index,
                    prepared: None,
                })
            }
            Some(Expect::Describe { stmt, .. }) => stmt.clone(),
            _ => None,
        };
        let is_describe = matches!(front, Some(Expect::Describe { .. }));
        if let Some(Expect::Describe {
            columns: Some(names),
            ..
        }) = front
            && names.get().is_none()
            && let Ok(columns) = row_description::decode(frame.body())
        {
            // A recorded session: the statement's columns, for its Executes.
            let _ = names.set(columns);
        }
        let mask = if self.masking.active() {
            // The same statement with the same columns masks the same way:
            // plan once per session, not once per execution.
            let key = stmt.as_ref().map(|s| {
                (
                    Arc::as_ptr(&s.decided) as usize,
                    s.index,
                    frame.body_bytes(),
                )
            });
            match key.as_ref().and_then(|k| self.mask_cache.get(k)) {
                Some((_, mask)) => mask.clone(),
                // A statement or portal the sidecar did not decide (a cursor
                // DECLAREd in SQL, described as a portal): its lineage is
                // unknown, so every value is withheld.
                None if stmt.is_none() => Some(Arc::new(RowMask::opaque())),
                None => {
                    let columns = row_description::decode(frame.body())?;
                    // Boxed: planned once per statement and columns, with
                    // catalog lookups (KiBs of future every answer would carry).
                    let mask = match Box::pin(self.row_mask(stmt.as_ref(), &columns)).await {
                        Ok(mask) => mask,
                        Err(e) => {
                            self.catalog_unavailable(&e);
                            return self.row_description_withheld(is_describe);
                        }
                    };
                    if let (Some(key), Some(stmt)) = (key, &stmt) {
                        if self.mask_cache.len() >= MASK_CACHE_ENTRIES {
                            self.mask_cache.clear();
                        }
                        // The entry holds the decision, so its address is not reused.
                        self.mask_cache
                            .insert(key, (stmt.decided.clone(), mask.clone()));
                    }
                    mask
                }
            }
        } else {
            None
        };
        if is_describe {
            if matches!(
                self.queue.front(),
                Some(Expect::Describe {
                    portal: Some(_),
                    forward: true,
                    ..
                })
            ) && !self.suppress
            {
                self.recorder
                    .columns(self.masking.recording(), frame.body());
            }
            self.described(mask, Some(&frame));
        } else {
            self.result.mask = mask;
            self.result.described = true;
            if !self.suppress {
                self.recorder
                    .columns(self.masking.recording(), frame.body());
            }
            self.forward(&frame);
        }
        Ok(())
    }

    /// The answer to a Describe came (RowDescription or NoData): the
    /// described portal or statement gets `mask`, and the answer is
    /// forwarded when the client asked for it (and `frame` is given: a
    /// description withheld is not).
    pub(super) fn described(&mut self, mask: Option<Arc<RowMask>>, frame: Option<&Frame>) {
        if let Some(Expect::Describe {
            portal,
            statement,
            forward,
            ..
        }) = self.pop()
        {
            if let Some(p) = portal {
                self.portal_masks.insert(p, mask.clone());
            }
            if let Some(s) = statement {
                self.statement_masks
                    .insert(s, super::StatementMask::new(mask));
            }
            if forward && let Some(frame) = frame {
                self.forward(frame);
            }
        }
    }

    /// No catalog session could resolve a result's columns (#17): the
    /// statement fails with 53300 naming the cause, and nothing more of its
    /// answer reaches the client until ReadyForQuery (as maxRows' refusal),
    /// rather than values masked whole for want of a lookup.
    pub(super) fn catalog_unavailable(&mut self, e: &CatalogError) {
        tracing::warn!(error = %e, "catalog session unavailable: the statement's result is withheld");
        if !self.suppress {
            Report {
                severity: "ERROR",
                code: e.code(),
                message: &e.to_string(),
                detail: Some("the server ran the statement; Sluice withheld its result because it could not tell which columns to mask"),
                hint: Some("retry later, or raise the role's connection limit (Sluice needs SLUICE_CATALOG_SESSIONS more, 2 by default)"),
            }
            .encode(&mut self.out);
        }
        self.suppress = true;
        self.result.refused = true;
        if let Some(Expect::Simple(_)) = self.queue.front() {
            let p = self.simple.get_or_insert_with(SimpleProgress::default);
            p.error.get_or_insert(e.code().to_string());
        }
    }

    /// A RowDescription whose columns could not be resolved: withheld, and
    /// the result (or the described statement or portal) gets a mask that
    /// withholds every value, should anything of it be read later.
    pub(super) fn row_description_withheld(
        &mut self,
        is_describe: bool,
    ) -> Result<(), SessionError> {
        let opaque = Some(Arc::new(RowMask::opaque()));
        if is_describe {
            self.described(opaque, None);
        } else {
            self.result.mask = opaque;
            self.result.described = true;
        }
        Ok(())
    }

    /// The mask of a result with these columns, or `None` when rows pass
    /// untouched; `Err` when no catalog session could be had to resolve them.
    pub(super) async fn row_mask(
        &self,
        stmt: Option<&StatementRef>,
        columns: &[row_description::Column],
    ) -> Result<Option<Arc<RowMask>>, CatalogError> {
        let (origins, views) = if self.masking.has_column_rules() {
            let keys: Vec<(u32, i16)> = columns.iter().map(|c| (c.table_oid, c.attnum)).collect();
            let statement = stmt.and_then(|s| s.decided.statement(s.index));
            let mut catalog = self.catalog.lock().await;
            let looked_up = match catalog.resolve(&keys).await {
                Ok(origins) => {
                    if catalog.reads_beyond_tables(&keys) {
                        catalog.forget_names();
                    }
                    let named: Vec<(&str, &str)> = origins
                        .iter()
                        .flatten()
                        .map(|o| (o.schema.as_str(), o.table.as_str()))
                        .collect();
                    let views = catalog
                        .extended_matcher(statement, &named, self.masking.column_matcher())
                        .await;
                    views.map(|v| (origins, v))
                }
                Err(e) => Err(e),
            };
            match looked_up {
                Ok((origins, views)) => (Some(origins), views),
                Err(e @ CatalogError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "catalog lookup failed: masking every column of the result");
                    (None, None)
                }
            }
        } else {
            (Some(vec![None; columns.len()]), None)
        };
        let mask = self.masking.row_mask(
            stmt.map(|s| (&*s.decided, s.index)),
            columns,
            origins.as_deref(),
            views.as_ref(),
        );
        Ok((!mask.is_noop()).then(|| Arc::new(mask)))
    }
}
