//! Writes and side effects of masked values read through views and
//! user-defined functions, which the policy's own laundering check
//! ([`sluice_policy::mask_plan::laundering`]) cannot see into: refused.
//!
//! `INSERT INTO notes SELECT x FROM v` where `v` is `SELECT ssn AS x FROM
//! customers`, `UPDATE t SET c = f_ssn()`, `SELECT set_config('a', x,
//! false) FROM v`: the statement alone reads no masked column, so the
//! policy lets it through; the catalog knows better. Asked only for a
//! statement that may write or calls a side-effecting function while column
//! masking applies, and only when it names a relation or a function: plain
//! reads pay nothing. The lookup is fresh (see
//! [`Catalog::reads_beyond_tables`]): a view created a moment ago counts.
//!
//! [`Catalog::reads_beyond_tables`]: crate::postgres::catalog::Catalog::reads_beyond_tables

use sluice_crds::StatementKind as K;
use sluice_policy::sql::Statement;

use std::sync::Arc;

use super::ClientLoop;
use super::client::catalog_refusal;
use super::expect::StatementRef;
use crate::enforcement::{Decided, Refusal};

impl ClientLoop {
    /// The refusal of a statement of `decided` that writes (or hands to a
    /// side-effecting function) values that views or user-defined functions
    /// it reads derive from masked columns. SQL `EXECUTE name` is checked as
    /// every statement this session prepared under that name (SQL `PREPARE`
    /// or a protocol Parse: one namespace on the server), looked up now: a
    /// view replaced since the `PREPARE` counts.
    pub(super) async fn laundering_through(
        &mut self,
        decided: &Arc<Decided>,
    ) -> Result<(), Refusal> {
        if !self.launders_maybe(decided) {
            return Ok(());
        }
        // Under rules that follow names alone, SQL PREPAREs are only noted
        // (see `catalog_changes::executes_through_relations`).
        let masking = self.masking.has_column_rules();
        for index in 0..decided.len() {
            let Some(stmt) = decided.statement(index) else {
                continue;
            };
            if let Some(name) = &stmt.execute_name {
                if !masking {
                    continue;
                }
                for prepared in self.executed_statements(name)? {
                    if let Some(s) = prepared.decided.statement(prepared.index) {
                        self.stores_masked(s).await?;
                    }
                }
                continue;
            }
            if masking {
                self.stores_masked(stmt).await?;
            }
            if let Some(name) = &stmt.prepare_name {
                self.note_sql_prepare(
                    name,
                    StatementRef {
                        decided: decided.clone(),
                        index,
                        prepared: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// Whether [`ClientLoop::laundering_through`] has anything to do for
    /// `decided`: under column rules, a statement that may store what it
    /// reads and names a relation or a function ([`ClientLoop::stores_masked`]'s
    /// trigger), or a SQL `PREPARE` (noted) or `EXECUTE` (checked); under
    /// rules that follow names, a SQL `PREPARE` (noted). Plain reads skip
    /// it, and its future, altogether.
    pub(super) fn launders_maybe(&self, decided: &Decided) -> bool {
        let statements = || (0..decided.len()).filter_map(|index| decided.statement(index));
        (self.masking.has_column_rules()
            && statements()
                .any(|s| s.execute_name.is_some() || s.prepare_name.is_some() || stores_maybe(s)))
            || (self.follows_names() && statements().any(|s| s.prepare_name.is_some()))
    }

    /// [`ClientLoop::laundering_through`] of a protocol Bind of `name`, a
    /// statement Sluice has no Parse of: what SQL `PREPARE` made of that
    /// name. `Err` with the refusal and a decision to put it on record.
    pub(super) async fn sql_prepared_laundering(
        &mut self,
        name: &str,
    ) -> Result<(), (Refusal, Option<Arc<Decided>>)> {
        if !self.masking.has_column_rules() {
            return Ok(());
        }
        let candidates = self.executed_statements(name).map_err(|r| (r, None))?;
        for prepared in candidates {
            if let Some(s) = prepared.decided.statement(prepared.index) {
                self.stores_masked(s)
                    .await
                    .map_err(|r| (r, Some(prepared.decided.clone())))?;
            }
        }
        Ok(())
    }

    /// What `EXECUTE name` may run: every statement prepared under `name`
    /// in this session (a `PREPARE` the server refused leaves the one
    /// before it in place, so none is forgotten); refused when the session
    /// prepared more than Sluice keeps and `name` is not among them.
    pub(super) fn executed_statements(&self, name: &str) -> Result<Vec<StatementRef>, Refusal> {
        // Names compared ignoring case: more statements are checked, never
        // fewer, whatever the quoting.
        let mut out: Vec<StatementRef> = self
            .sql_prepared
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, s)| s.iter().cloned())
            .collect();
        out.extend(
            self.statements
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, p)| p.stmt.clone()),
        );
        if out.is_empty() && self.sql_prepared_overflow {
            return Err(Refusal::plain(&format!(
                "statement refused by Sluice: EXECUTE of a statement this session prepared beyond the {MAX_SQL_PREPARED} Sluice keeps track of under masking; DEALLOCATE unused statements or reconnect"
            )));
        }
        Ok(out)
    }

    /// Keeps a SQL `PREPARE` for [`ClientLoop::laundering_through`].
    fn note_sql_prepare(&mut self, name: &str, stmt: StatementRef) {
        let total: usize = self.sql_prepared.values().map(Vec::len).sum();
        if total >= MAX_SQL_PREPARED {
            self.sql_prepared.clear();
            self.sql_prepared_overflow = true;
        }
        self.sql_prepared
            .entry(name.to_string())
            .or_default()
            .push(stmt);
    }

    /// [`ClientLoop::laundering_through`] of one statement.
    async fn stores_masked(&self, stmt: &Statement) -> Result<(), Refusal> {
        if !stores_maybe(stmt) {
            return Ok(());
        }
        let mut catalog = self.catalog.lock().await;
        catalog.forget_names();
        let extended = catalog
                .extended_matcher(Some(stmt), &[], self.masking.column_matcher())
                .await
                .map_err(|e| {
                    catalog_refusal(
                        "statement refused: Sluice could not look up the views and functions it reads to check that it stores no masked values",
                        &e,
                    )
                })?;
        drop(catalog);
        // Nothing read beyond the policy's own sight: its check stands.
        let Some(matcher) = extended else {
            return Ok(());
        };
        let found = sluice_policy::mask_plan::laundering(&stmt.ast, &matcher).or_else(|| {
            stmt.embedded.iter().find_map(|inner| {
                sluice_policy::mask_plan::laundering(&inner.ast, &matcher)
                    .map(|why| format!("in the SQL it runs as text: {why}"))
            })
        });
        match found {
            Some(why) => Err(Refusal::plain(&format!(
                "statement refused by Sluice: {why} (read through a view or a user-defined function)"
            ))),
            None => Ok(()),
        }
    }
}

/// Most SQL `PREPARE`s a session keeps for `EXECUTE` (see
/// [`ClientLoop::laundering_through`]).
const MAX_SQL_PREPARED: usize = 1024;

/// Whether [`ClientLoop::stores_masked`] looks `stmt` up: it may store
/// what it reads, and names a relation or a function to read it through.
fn stores_maybe(stmt: &Statement) -> bool {
    may_store(stmt) && !(stmt.tables.is_empty() && stmt.functions.is_empty())
}

/// Whether `stmt` may store a value where the workload can read it back: a
/// write of any kind, or a call of a side-effecting function (the same
/// trigger as the policy's own check).
fn may_store(stmt: &Statement) -> bool {
    stmt.kinds.iter().any(|k| {
        matches!(
            k,
            K::Insert | K::Update | K::Merge | K::Create | K::Copy | K::Call
        )
    }) || stmt.functions.iter().any(|f| {
        sluice_policy::mask_plan::is_side_effect_function(f.rsplit('.').next().unwrap_or(f))
    })
}
