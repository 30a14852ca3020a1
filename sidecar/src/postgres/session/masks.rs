//! The mask of a result's columns, made from its RowDescription and the
//! catalog (cached per result shape), or withheld when it cannot be made.

use std::sync::Arc;

use tokio::io::AsyncWrite;

use super::expect::{Expect, StatementRef};
use super::{MASK_CACHE_ENTRIES, ServerLoop, SessionError, SimpleProgress};
use crate::postgres::catalog::{Catalog, CatalogError};
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
        let mut recheck = None;
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
                    let (mask, names) = match Box::pin(self.row_mask(stmt.as_ref(), &columns)).await
                    {
                        Ok(planned) => planned,
                        Err(e) => {
                            self.catalog_unavailable(&e);
                            return self.row_description_withheld(is_describe);
                        }
                    };
                    match (key, &stmt) {
                        // Planned from what names are now (views, functions):
                        // planned again next time (see `RowMask` staleness in
                        // `row_mask`), and a prepared statement at each Bind.
                        (_, Some(stmt)) if names => recheck = Some((stmt.clone(), columns)),
                        (Some(key), Some(stmt)) => {
                            if self.mask_cache.len() >= MASK_CACHE_ENTRIES {
                                self.mask_cache.clear();
                            }
                            // The entry holds the decision, so its address is not reused.
                            self.mask_cache
                                .insert(key, (stmt.decided.clone(), mask.clone()));
                        }
                        _ => {}
                    }
                    mask
                }
            }
        } else {
            None
        };
        if !is_describe {
            self.take_row_description(&frame, mask);
            return Ok(());
        }
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
        self.described(mask, recheck, Some(&frame));
        Ok(())
    }

    /// A simple query's RowDescription whose mask is known without
    /// planning (masking is off, or this statement's result with these
    /// columns was planned before and cached): taken synchronously, as
    /// [`ServerLoop::row_description`] takes it. `false` when that must
    /// plan it.
    pub(super) fn simple_row_description(&mut self, frame: &Frame) -> bool {
        let Some(Expect::Simple(s)) = self.queue.front() else {
            return false;
        };
        let mask = if self.masking.active() {
            let index = self.simple.as_ref().map_or(0, |p| p.index);
            let key = (Arc::as_ptr(&s.decided) as usize, index, frame.body_bytes());
            match self.mask_cache.get(&key) {
                Some((_, mask)) => mask.clone(),
                None => return false,
            }
        } else {
            None
        };
        self.simple.get_or_insert_with(SimpleProgress::default);
        self.parameters_seen = false;
        self.take_row_description(frame, mask);
        true
    }

    /// The RowDescription of a result (not a Describe's): its rows get
    /// `mask`, and it goes to the client.
    fn take_row_description(&mut self, frame: &Frame, mask: Option<Arc<RowMask>>) {
        self.result.mask = mask;
        self.result.described = true;
        if !self.suppress {
            self.recorder
                .columns(self.masking.recording(), frame.body());
        }
        self.forward(frame);
    }

    /// The answer to a Describe came (RowDescription or NoData): the
    /// described portal or statement gets `mask`, and the answer is
    /// forwarded when the client asked for it (and `frame` is given: a
    /// description withheld is not).
    /// `recheck`: the mask rests on what names are now (see
    /// [`ServerLoop::row_mask`]), planned again at each Bind of the statement.
    pub(super) fn described(
        &mut self,
        mask: Option<Arc<RowMask>>,
        recheck: Option<(StatementRef, Vec<row_description::Column>)>,
        frame: Option<&Frame>,
    ) {
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
                let mut described = super::StatementMask::new(mask);
                described.recheck = recheck;
                self.statement_masks.insert(s, described);
            }
            if forward && let Some(frame) = frame {
                self.forward(frame);
            }
        }
    }

    /// A prepared statement whose mask rests on what names are now is
    /// planned again before a portal is bound from it: `CREATE OR REPLACE
    /// VIEW` between two Binds changes what its same columns carry. When
    /// no catalog session can be had, its values are withheld.
    pub(super) async fn replan_statement(&mut self, name: &str) {
        let Some((stmt, columns)) = self
            .statement_masks
            .get(name)
            .and_then(|m| m.recheck.clone())
        else {
            return;
        };
        // Boxed, as at RowDescription: every answer's future would carry it.
        let mask = match Box::pin(self.row_mask(Some(&stmt), &columns)).await {
            Ok((mask, _)) => mask,
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "catalog session unavailable: the prepared statement's values are withheld");
                Some(Arc::new(RowMask::opaque()))
            }
        };
        if let Some(m) = self.statement_masks.get_mut(name) {
            m.replanned(mask);
        }
    }

    /// No catalog session could resolve a result's columns (#17): the
    /// statement fails with 53300 naming the cause, and nothing more of its
    /// answer reaches the client until ReadyForQuery (as maxRows' refusal),
    /// rather than values masked whole for want of a lookup.
    pub(super) fn catalog_unavailable(&mut self, e: &CatalogError) {
        tracing::warn!(parent: &self.span, error = %e, "catalog session unavailable: the statement's result is withheld");
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
            self.described(opaque, None, None);
        } else {
            self.result.mask = opaque;
            self.result.described = true;
        }
        Ok(())
    }

    /// The mask of a result with these columns, or `None` when rows pass
    /// untouched, and whether it rests on what names are now: the result
    /// reads more than stored table columns (see
    /// [`Catalog::reads_beyond_tables`]) and names a relation or function.
    /// Such a mask must not be kept for the next run of the statement: the
    /// same RowDescription comes back after `CREATE OR REPLACE VIEW v AS
    /// SELECT ssn AS name …` (same OID, names and types) or after a table
    /// `t` was replaced by a view of that name under `SELECT lower(x) FROM
    /// t` (an expression: OID 0 both times), in this session or any other.
    /// `Err` when no catalog session could be had to resolve them.
    ///
    /// [`Catalog::reads_beyond_tables`]: crate::postgres::catalog::Catalog::reads_beyond_tables
    pub(super) async fn row_mask(
        &self,
        stmt: Option<&StatementRef>,
        columns: &[row_description::Column],
    ) -> Result<(Option<Arc<RowMask>>, bool), CatalogError> {
        let mut names = false;
        let (origins, views) = if self.masking.has_column_rules() {
            let keys: Vec<(u32, i16)> = columns.iter().map(|c| (c.table_oid, c.attnum)).collect();
            let statement = stmt.and_then(|s| s.decided.statement(s.index));
            let mut catalog = self.catalog.lock().await;
            let looked_up = match catalog.resolve(&keys).await {
                Ok(mut origins) => {
                    // A cursor's rows were planned at its DECLARE: a view
                    // named as their origin may read other columns now
                    // than then (`WITH HOLD`, then `CREATE OR REPLACE
                    // VIEW`). Such an origin is not trusted: unknown, so
                    // masked (see `mask_plan`'s FETCH).
                    if statement
                        .is_some_and(|s| matches!(s.ast, sqlparser::ast::Statement::Fetch { .. }))
                    {
                        for (origin, key) in origins.iter_mut().zip(&keys) {
                            if catalog.reads_beyond_tables(std::slice::from_ref(key)) {
                                *origin = None;
                            }
                        }
                    }
                    if catalog.reads_beyond_tables(&keys) {
                        catalog.forget_names();
                        names = keys.iter().any(|(oid, _)| *oid != 0)
                            || statement
                                .is_none_or(|s| !s.tables.is_empty() || !s.functions.is_empty());
                    }
                    let named: Vec<(&str, &str)> = origins
                        .iter()
                        .flatten()
                        .map(|o| (o.schema.as_str(), o.table.as_str()))
                        .collect();
                    let views = catalog
                        .extended_matcher(statement, &named, self.masking.column_matcher())
                        .await;
                    if views.is_ok() && statement.is_some_and(|s| prints_folded_values(s, &catalog))
                    {
                        return Ok((Some(Arc::new(RowMask::opaque())), names));
                    }
                    views.map(|v| (origins, v))
                }
                Err(e) => Err(e),
            };
            match looked_up {
                Ok((origins, views)) => (Some(origins), views),
                Err(e @ CatalogError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(parent: &self.span, error = %e, "catalog lookup failed: masking every column of the result");
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
        Ok(((!mask.is_noop()).then(|| Arc::new(mask)), names))
    }
}

/// Whether `s` is an EXPLAIN whose plan may print values read from tables:
/// the planner folds an `IMMUTABLE` function of constants into its result,
/// and EXPLAIN prints it (`Output: '123-45-6789'::text`, in a `Filter`
/// too), so a user-defined function the statement (or a view it reads)
/// calls, or `EXPLAIN EXECUTE` of a statement Sluice cannot see here, has
/// its plan withheld under column masking. Call after
/// [`Catalog::extended_matcher`] of `s`.
fn prints_folded_values(s: &sluice_policy::sql::Statement, catalog: &Catalog) -> bool {
    match &s.ast {
        sqlparser::ast::Statement::Explain { statement, .. } => {
            matches!(**statement, sqlparser::ast::Statement::Execute { .. })
                || catalog.user_functions_called()
        }
        _ => false,
    }
}
