//! Which output columns of a statement's result must be masked, decided soundly.
//!
//! The sidecar sees two things about a result: the statement's text (parsed here
//! into a [`sqlparser::ast::Statement`]) and the server's column descriptions
//! ([`OutputColumn`]). PostgreSQL's RowDescription names, for each output column
//! that is a plain reference to a table column, that column (table OID and attribute
//! number, which the sidecar resolves to schema, table and column); it follows
//! references through subqueries, CTEs and joins, but not through expressions, set
//! operations or function results. MySQL's column definitions carry `org_table` and
//! `org_name` in a similar way. That origin alone is not enough: `lower(ssn)`,
//! `ssn || ''` or `row_to_json(c)` come back with no origin at all.
//!
//! So the plan joins both sources of knowledge. An output column is masked when:
//! - its origin matches a masking glob ([`MaskReason::Origin`]);
//! - the statement's own expression for it reads a masked column anywhere inside it
//!   (any function, operator, cast, aggregate, window, `CASE`, constructor or scalar
//!   subquery: the rule is syntactic and generic, there is no list of functions), or
//!   reads a whole row of a table that may hold masked columns
//!   ([`MaskReason::DerivedFrom`]);
//! - the analysis cannot place it (unknown syntax, a `*` of unknown width next to
//!   other unknowns, a set operation over `*`, a function of unknown provenance, a
//!   column count that does not match the server's) and the statement references a
//!   table that may hold masked columns ([`MaskReason::Uncertain`], with the reason).
//!
//! Lineage is followed through derived tables, CTEs (recursive ones to a fixpoint),
//! `LATERAL`, joins, aliases and column alias lists, set operations (every branch
//! counts), and `INSERT`/`UPDATE`/`DELETE`/`MERGE ... RETURNING` (values written by
//! the statement count for the columns they are written to, so
//! `UPDATE customers SET name = ssn RETURNING name` is masked although the server
//! reports `customers.name` as the origin).
//!
//! Deliberate limits, each erring on the side of masking more or stated here:
//! - Only values that flow into an output column count. Columns read only in
//!   `WHERE`, `GROUP BY`, `HAVING`, `ORDER BY`, join conditions or `EXISTS` do not
//!   mask anything: inferring values through predicates (`WHERE ssn LIKE '1%'`) is out
//!   of scope and belongs to statement rules.
//! - Everything syntactically inside an output expression counts (conditions of
//!   `CASE`, `IN (subquery)`, an aggregate's own `ORDER BY`, field access on a
//!   whole-row value: `(c).name` is masked when `customers` may hold masked columns),
//!   except what only selects or orders rows, like WHERE does: a window's
//!   `OVER (PARTITION BY ... ORDER BY ...)`, an aggregate's `FILTER (WHERE ...)`, and
//!   the argument of `count(...)`. `WITHIN GROUP (ORDER BY x)` counts, since
//!   `percentile_disc` and `mode` return values of x.
//! - An unqualified column name that several in-scope relations (or enclosing query
//!   levels) might provide counts as masked if any of them could provide a masked
//!   column of that name.
//! - Views: the server reports a view's columns with the *view* as origin. The
//!   PostgreSQL sidecar looks up the definition of every view (and materialized view)
//!   a statement reads, plans it with [`plan_view`], and extends the matcher with the
//!   view's masked columns ([`ColumnMatcher::with_columns`]), views over views
//!   included. It finds views by name in every schema (temporary views of the
//!   client's session included), so the client's `search_path` cannot hide one. A
//!   definition that does not parse masks every column of the view.
//! - Partitions and inheritance children hold their parent's rows under another
//!   name. The PostgreSQL sidecar looks up the ancestors and descendants of every
//!   table a statement reads and extends the matcher with the columns a rule
//!   matches under a relative's name ([`ColumnMatcher::with_columns`]).
//! - User-defined functions are opaque: their bodies read what they like. The
//!   PostgreSQL sidecar asks the catalog which functions a statement (or a view it
//!   reads) calls are user-defined (outside `pg_catalog` and `information_schema`,
//!   not part of an extension) and marks them ([`ColumnMatcher::with_functions`]):
//!   a value computed by one, or the rows of one in `FROM`, is masked whole whenever
//!   any masking rule exists, like the results of built-ins that run SQL given as
//!   text (`query_to_xml`, `dblink`, `crosstab`, ...) or read server files.
//!   Functions of extensions are trusted like built-ins. Without the catalog (the
//!   planner alone), set-returning functions in `FROM` other than well-known
//!   built-ins are treated as uncertain, and scalar ones are not seen.
//! - Rows whose query is not in the statement (`FETCH` from a cursor, `EXECUTE` of a
//!   prepared statement, MySQL `CALL`) are masked unless the server gives an origin.
//! - Data copied into an unmasked table (`INSERT INTO t SELECT ssn ...`,
//!   `CREATE TABLE AS`, `UPDATE … SET`), or handed to a side-effecting function
//!   (`set_config`, `pg_notify`, `setval`, …), is not followed into later
//!   statements: [`laundering`] finds such statements with the same lineage and the
//!   engine refuses them. It does not see through views or user-defined functions:
//!   the sidecars do, with a fresh catalog lookup for writes and side-effect calls
//!   that name a relation or function (PostgreSQL `session/launder.rs`; MySQL refuses
//!   a write reading a view). A user function (or trigger) that stores a value
//!   itself is not seen; so a masked identity may not define one (`CREATE
//!   FUNCTION`, `PROCEDURE`, `TRIGGER` are refused, `ddl.rs`): only code another
//!   role defined (a migration) can do so. `CREATE RULE`, `DO` and `CREATE EVENT`
//!   do not parse: under masking the engine refuses every text it cannot parse,
//!   whatever `onParseError` says ([`crate::engine::PolicySet::decide_sql`]).
//! - MySQL may report a derived table's alias as `org_table`; such origins are not
//!   trusted to clear a column (the expression analysis still decides). Where the
//!   server gives an origin for a column that only a `*` over several relations can
//!   place, or for rows of `FETCH`/`EXECUTE`, the origin is trusted as PostgreSQL
//!   reports it: a plain reference to exactly that column.
//! - Globs match names as written: copies of a table made outside Sluice need globs
//!   of their own (`customers*.ssn`); partitions and inheritance children are
//!   followed by the PostgreSQL sidecar (below). Matching ignores case. DDL that
//!   would move masked values to names the rules do not match (renaming a masked
//!   column, a table with masked columns or a schema a `schema.table.column` rule
//!   names, a generated column computed from a masked one) is refused like the
//!   writes above (`ddl.rs`); `ALTER TABLE … SET SCHEMA`, `ATTACH`/`DETACH
//!   PARTITION` and `[NO] INHERIT` do not parse, so they are refused under
//!   masking like every text Sluice cannot parse.
//! - Values of other tables that the server exposes through catalogs are handled for
//!   planner statistics (`pg_stats.most_common_vals`, MySQL `column_statistics`) and
//!   session variables (custom `current_setting`, `SHOW` of a custom setting and
//!   `SHOW ALL`, MySQL `@var`), which are masked whenever any masking rule exists;
//!   the MySQL sidecar also masks user variables read as rows (`SHOW
//!   USER_VARIABLES`, `information_schema.USER_VARIABLES`) and, after a procedure
//!   or stored function ran, server variables. Built-in PostgreSQL string settings
//!   a user function set (`application_name` via `set_config` in its body) are
//!   not masked on `SHOW` or in `pg_stat_activity`. Query texts in `pg_stat_activity` or
//!   `SHOW PROCESSLIST`, and values echoed in notices and errors, are not columns:
//!   detectors and the error path must cover them.

mod analyzer; // walks a statement: each output column's lineage
mod ddl; // DDL that renames or derives a masked column, or defines code: laundering
mod lineage; // the lineage model: taints, tables, slots, scopes
mod matcher; // masking globs compiled: ColumnMatcher
mod preview; // the plan from the statement alone, for `policy eval`
#[cfg(test)]
mod tests;

pub use matcher::ColumnMatcher;
pub use preview::{Preview, PreviewItem, preview};

use sqlparser::ast::Statement;

use analyzer::{Analyzer, to_mask};
use lineage::{Shape, Slot, TableRef, Taint, norm, schema_table};

/// Errors building a [`ColumnMatcher`] from masking rules.
#[derive(Debug, thiserror::Error)]
pub enum MaskPlanError {
    /// The pattern does not have the `table.column` / `schema.table.column` shape.
    #[error(
        "masking column pattern `{pattern}` is malformed ({problem}); write it as `table.column` or `schema.table.column`, each part a name or a `*` glob, double-quoted when it contains a dot"
    )]
    PatternShape {
        /// The pattern as written in the policy.
        pattern: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// One part of the pattern is not a valid glob.
    #[error(
        "masking column pattern `{pattern}` is not a valid glob; fix it in spec.masking[].columns"
    )]
    PatternGlob {
        /// The pattern as written in the policy.
        pattern: String,
        /// The glob compiler's complaint.
        #[source]
        source: globset::Error,
    },
}

// === Plan types ===

/// Where the server says an output column comes from (resolved from the table OID and
/// attribute number, or MySQL's `org_table`/`org_name`). An empty `column` means a
/// whole-row reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// Schema (PostgreSQL) or database (MySQL), when known.
    pub schema: Option<String>,
    /// Table (or view) name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// One column of the result as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputColumn {
    /// The column's name in the result.
    pub name: String,
    /// The table column it is a plain reference to, if the server says so.
    pub origin: Option<ColumnOrigin>,
}

/// Why a column is masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskReason {
    /// The server says it is a masked column.
    Origin,
    /// Its expression reads this masked column (e.g. "customers.ssn"), or a whole row
    /// that may hold one (e.g. "customers.*").
    DerivedFrom(String),
    /// Its source could not be told; it is masked whole to be safe, for this reason.
    Uncertain(String),
}

/// The decision for one output column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnMask {
    /// Pass the value through.
    Clear,
    /// Mask the value with the strategy of masking rule `rule`.
    Mask {
        /// Index of the masking rule whose strategy applies.
        rule: usize,
        /// Why the column is masked.
        reason: MaskReason,
    },
}

/// The decisions for a result's columns, in output order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskPlan {
    /// One entry per output column. [`plan_rows`] always returns exactly one per
    /// column; [`plan_copy`] may return an empty list when no column can be masked.
    pub columns: Vec<ColumnMask>,
}

impl MaskPlan {
    /// Whether no column is masked (the sidecar can forward rows untouched).
    pub fn is_noop(&self) -> bool {
        self.columns.iter().all(|c| matches!(c, ColumnMask::Clear))
    }

    /// How many columns are masked.
    pub fn masked_count(&self) -> usize {
        self.columns
            .iter()
            .filter(|c| matches!(c, ColumnMask::Mask { .. }))
            .count()
    }
}

/// The plan for `COPY ... TO STDOUT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyPlan {
    /// Per-column masks in the copied row's column order. An empty plan means no
    /// column can be masked (also for COPY forms that send nothing to the client).
    Columns(MaskPlan),
    /// The copy must be refused: which columns need masking cannot be told.
    Deny(String),
}

// === entry points ===

/// Functions whose effect outlives the statement where the workload can read
/// it back (settings, notifications, sequences, advisory locks in `pg_locks`,
/// large objects, server files, WAL messages, other connections): a value
/// derived from a masked column must not be passed to them (see
/// [`laundering`]). Matched by name, any schema.
pub const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_notify",
    "setval",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "lo_from_bytea",
    "lo_put",
    "lo_create",
    "lo_import",
    "lo_export",
    "lowrite",
    "pg_logical_emit_message",
    "pg_create_restore_point",
    "pg_file_write",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "dblink",
    "dblink_exec",
    "dblink_send_query",
    "dblink_open",
    "dblink_connect",
    "dblink_connect_u",
    "pg_background_launch",
    // MySQL/MariaDB: LAST_INSERT_ID(x) keeps x for the session's next
    // LAST_INSERT_ID() and @@last_insert_id; a user-level lock's name shows
    // in performance_schema.metadata_locks.
    "last_insert_id",
    "get_lock",
];

/// Whether `fname` (lower case, unqualified) is one of [`SIDE_EFFECT_FUNCTIONS`].
pub fn is_side_effect_function(fname: &str) -> bool {
    SIDE_EFFECT_FUNCTIONS.contains(&fname)
}

fn describe_taint(reason: &MaskReason) -> String {
    match reason {
        MaskReason::Origin => "a masked column's values".to_owned(),
        MaskReason::DerivedFrom(c) => format!("values derived from masked column {c}"),
        MaskReason::Uncertain(why) => format!("values that may carry masked columns ({why})"),
    }
}

/// Why `stmt` must be refused because it launders masked values, or `None`.
///
/// Masking covers what a statement *returns*. A statement that writes a value
/// derived from a masked column somewhere the workload can read back, or hands
/// it to a side-effecting function, would defeat it: `UPDATE customers SET
/// notes = translate(ssn, '-', 'x')` then `SELECT notes`; `INSERT INTO t
/// SELECT ssn …`; `CREATE TABLE t AS SELECT …`; `SELECT … INTO t`; `MERGE`;
/// data-modifying CTEs; `COPY (…) TO 'file'`; `set_config('x', ssn, false)`,
/// `pg_notify`, `setval`, `pg_advisory_lock`, `lo_from_bytea` (see
/// [`SIDE_EFFECT_FUNCTIONS`]); `CALL p(ssn)`; and the same inside `PREPARE`
/// and `EXPLAIN ANALYZE`. The lineage is the mask planner's, applied to
/// every clause (a side effect in `WHERE` counts). A value written into a
/// column that is itself masked by an equally strong rule is not laundering
/// (`UPDATE customers SET ssn = upper(ssn)`).
///
/// Out of sight: views and user-defined functions the planner alone cannot
/// see into (a value read through a view of a masked column, or passed to a
/// user-defined function that writes it), and inference through predicates.
pub fn laundering(stmt: &Statement, matcher: &ColumnMatcher) -> Option<String> {
    if matcher.is_empty() {
        return None;
    }
    if let Some(why) = ddl::finding(stmt, matcher) {
        return Some(format!(
            "the statement {why}; masked values stay masked only under the names the rules give and through statements Sluice sees"
        ));
    }
    let mut an = Analyzer::new(stmt, matcher);
    an.effects = true;
    match stmt {
        Statement::Prepare { statement, .. } | Statement::Explain { statement, .. } => {
            return laundering(statement, matcher);
        }
        Statement::CreateTable(ct) => {
            if let Some(q) = &ct.query {
                let slots = an.query(q);
                let t = an.slots_whole(&slots);
                an.note_write(&format!("CREATE TABLE {} AS writes", ct.name), &t);
            }
        }
        Statement::Copy {
            source,
            to: true,
            target:
                target @ (sqlparser::ast::CopyTarget::File { .. }
                | sqlparser::ast::CopyTarget::Program { .. }),
            ..
        } => {
            let t = match source {
                sqlparser::ast::CopySource::Query(q) => {
                    let slots = an.query(q);
                    an.slots_whole(&slots)
                }
                sqlparser::ast::CopySource::Table { table_name, .. } => {
                    let (schema, table) = schema_table(table_name);
                    an.table_whole(&TableRef::new(schema, table))
                }
            };
            let to = match target {
                sqlparser::ast::CopyTarget::Program { .. } => "a program",
                _ => "a server file",
            };
            an.note_write(&format!("COPY … TO {to} writes"), &t);
        }
        Statement::Call(f) => {
            let t = an.taint_of(&f.args);
            an.note_write(
                &format!(
                    "CALL {} passes to a procedure, which can store them where they can be read back,",
                    f.name
                ),
                &t,
            );
        }
        other => {
            let _ = an.statement(other);
        }
    }
    an.findings.into_iter().next().map(|f| {
        format!(
            "the statement {f}, where the workload could read them back unmasked; write \
             values that do not come from masked columns, or ask for the data through a \
             role that may see it"
        )
    })
}

/// Plan for a statement that returns rows (SELECT, VALUES, INSERT/UPDATE/DELETE ... RETURNING,
/// EXPLAIN, SHOW, FETCH, ...). Returns exactly one decision per `output` column.
pub fn plan_rows(stmt: &Statement, output: &[OutputColumn], matcher: &ColumnMatcher) -> MaskPlan {
    if matcher.is_empty() {
        return MaskPlan {
            columns: vec![ColumnMask::Clear; output.len()],
        };
    }
    if output.is_empty() {
        return MaskPlan::default();
    }
    let mut an = Analyzer::new(stmt, matcher);
    match an.statement(stmt) {
        Shape::Rows(slots) => an.plan_slots(&slots, output),
        Shape::Metadata => MaskPlan {
            columns: output.iter().map(|c| an.decide(c, &[], false)).collect(),
        },
        Shape::External(why) => {
            let t = matcher.lowest_rule().map(|rule| Taint {
                rule,
                reason: MaskReason::Uncertain(why.to_owned()),
            });
            MaskPlan {
                columns: output
                    .iter()
                    .map(|c| {
                        let trusted = c.origin.as_ref().is_some_and(|o| !o.column.is_empty());
                        if trusted {
                            an.decide(c, &[], false)
                        } else {
                            to_mask(t.clone())
                        }
                    })
                    .collect(),
            }
        }
        Shape::Unknown => MaskPlan {
            columns: output
                .iter()
                .map(|c| an.fallback(c, None, "the statement's kind is not analysed for masking"))
                .collect(),
        },
    }
}

/// Which columns of a view (or materialized view) carry masked values: its
/// definition `stmt` (as `pg_get_viewdef` gives it) planned like a statement whose
/// result has the view's columns, `columns` by name, in order. The server reports a
/// view's columns with the view as their origin, so without this a glob on the base
/// table would not mask `SELECT ssn FROM customer_view`. Returns `(column, rule)` for
/// each masked column; a definition whose shape does not match the columns masks them
/// all with the strongest rule.
pub fn plan_view(
    stmt: &Statement,
    columns: &[String],
    matcher: &ColumnMatcher,
) -> Vec<(String, usize)> {
    let output: Vec<OutputColumn> = columns
        .iter()
        .map(|name| OutputColumn {
            name: name.clone(),
            origin: None,
        })
        .collect();
    let plan = plan_rows(stmt, &output, matcher);
    if plan.columns.len() != columns.len() {
        return match matcher.lowest_rule() {
            Some(rule) => columns.iter().map(|c| (c.clone(), rule)).collect(),
            None => Vec::new(),
        };
    }
    columns
        .iter()
        .zip(plan.columns)
        .filter_map(|(c, m)| match m {
            ColumnMask::Clear => None,
            ColumnMask::Mask { rule, .. } => Some((c.clone(), rule)),
        })
        .collect()
}

/// The columns `COPY table [(list)] TO STDOUT` writes, in order: its column
/// list, else the table's columns (`table_columns`, when the caller knows
/// them). `None` for `COPY (query)` and when neither is known.
pub fn copy_column_names(
    stmt: &Statement,
    table_columns: Option<&[String]>,
) -> Option<Vec<String>> {
    let Statement::Copy {
        source: sqlparser::ast::CopySource::Table { columns, .. },
        ..
    } = stmt
    else {
        return None;
    };
    if columns.is_empty() {
        table_columns.map(<[String]>::to_vec)
    } else {
        Some(columns.iter().map(norm).collect())
    }
}

/// Plan for COPY ... TO STDOUT: either per-column masks (COPY t (a,b) TO / COPY (query) TO), or
/// Deny with a reason when it cannot tell (e.g. COPY t TO STDOUT with no column list on a table
/// that may have masked columns and `table_columns` is None). `table_columns` are the table's
/// column names in order, when the caller knows them.
pub fn plan_copy(
    stmt: &Statement,
    matcher: &ColumnMatcher,
    table_columns: Option<&[String]>,
) -> CopyPlan {
    let Statement::Copy {
        source, to, target, ..
    } = stmt
    else {
        return CopyPlan::Deny("the statement is not a COPY".to_owned());
    };
    if !*to || !matches!(target, sqlparser::ast::CopyTarget::Stdout) {
        // COPY FROM, or COPY TO a server file/program: nothing reaches the client.
        return CopyPlan::Columns(MaskPlan::default());
    }
    match source {
        sqlparser::ast::CopySource::Table { table_name, .. } => {
            let (schema, table) = schema_table(table_name);
            let names: Vec<String> = if let Some(names) = copy_column_names(stmt, table_columns) {
                names
            } else if let Some(rule) = matcher.table_may_have_masked(schema.as_deref(), &table) {
                return CopyPlan::Deny(format!(
                    "COPY {table} TO STDOUT without a column list may include columns masked by masking rule {rule}; \
                     list the columns (COPY {table} (col, ...) TO STDOUT) or use COPY (SELECT ...) TO STDOUT"
                ));
            } else {
                return CopyPlan::Columns(MaskPlan::default());
            };
            CopyPlan::Columns(MaskPlan {
                columns: names
                    .iter()
                    .map(
                        |c| match matcher.match_column(schema.as_deref(), &table, c) {
                            Some(rule) => ColumnMask::Mask {
                                rule,
                                reason: MaskReason::Origin,
                            },
                            None => ColumnMask::Clear,
                        },
                    )
                    .collect(),
            })
        }
        sqlparser::ast::CopySource::Query(q) => {
            let mut an = Analyzer::new(stmt, matcher);
            let slots = an.query(q);
            let items: Vec<&Slot> = slots
                .iter()
                .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                .collect();
            let first_run = items.iter().position(|s| !matches!(s, Slot::Col { .. }));
            let known = first_run.unwrap_or(items.len());
            let columns: Vec<ColumnMask> = items[..known]
                .iter()
                .map(|s| match s {
                    Slot::Col { taint, .. } => to_mask(taint.clone()),
                    _ => ColumnMask::Clear,
                })
                .collect();
            if first_run.is_some() {
                let rest: Vec<Slot> = items[known..].iter().map(|s| (*s).clone()).collect();
                if let Some(t) = an.slots_whole(&rest) {
                    return CopyPlan::Deny(format!(
                        "COPY (query) TO STDOUT: the query's * makes column positions unknown and may include columns masked by masking rule {}; list the columns in the query",
                        t.rule
                    ));
                }
            }
            CopyPlan::Columns(MaskPlan { columns })
        }
    }
}
