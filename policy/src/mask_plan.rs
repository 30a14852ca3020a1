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
//!   engine refuses them. It does not see through views or user-defined functions.
//! - MySQL may report a derived table's alias as `org_table`; such origins are not
//!   trusted to clear a column (the expression analysis still decides). Where the
//!   server gives an origin for a column that only a `*` over several relations can
//!   place, or for rows of `FETCH`/`EXECUTE`, the origin is trusted as PostgreSQL
//!   reports it: a plain reference to exactly that column.
//! - Globs match names as written: partitions, inheritance children and copies of a
//!   table need globs of their own (`customers*.ssn`). Matching ignores case.
//! - Values of other tables that the server exposes through catalogs are handled for
//!   planner statistics (`pg_stats.most_common_vals`, MySQL `column_statistics`) and
//!   session variables (custom `current_setting`, MySQL `@var`), which are masked
//!   whenever any masking rule exists. Query texts in `pg_stat_activity` or
//!   `SHOW PROCESSLIST`, and values echoed in notices and errors, are not columns:
//!   detectors and the error path must cover them.

use std::collections::HashSet;
use std::ops::ControlFlow;

use globset::{GlobBuilder, GlobMatcher};
use sqlparser::ast::{
    Assignment, Cte, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, OnConflictAction, OnInsert,
    OutputClause, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement,
    TableAlias, TableFactor, TableObject, TableWithJoins, Visit, Visitor,
    WildcardAdditionalOptions,
};

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

// === impl ColumnMatcher ===

/// One compiled `[schema.]table.column` glob.
#[derive(Debug, Clone)]
struct ColumnGlob {
    schema: Option<GlobMatcher>,
    table: GlobMatcher,
    column: GlobMatcher,
    rule: usize,
}

/// Compiled `table.column` globs, each tagged with the index of the masking rule it came from.
///
/// Matching ignores case, for quoted and unquoted names alike: a glob can then only
/// match more columns than a case-sensitive reading would, never fewer.
#[derive(Debug, Clone, Default)]
pub struct ColumnMatcher {
    globs: Vec<ColumnGlob>,
    /// Functions whose results may hold any table's data (user-defined
    /// functions the catalog found), lower-cased unqualified names.
    opaque_functions: Vec<String>,
}

impl ColumnMatcher {
    /// `globs`: (pattern, rule index). Patterns: `table.column`, `schema.table.column`, `*` globs
    /// per segment; a segment in double quotes is taken literally (it may contain dots).
    /// Errors on an invalid pattern, naming the pattern.
    pub fn new(globs: &[(String, usize)]) -> Result<Self, MaskPlanError> {
        let mut compiled = Vec::with_capacity(globs.len());
        for (pattern, rule) in globs {
            let segments = split_pattern(pattern)?;
            if !(2..=3).contains(&segments.len()) {
                return Err(MaskPlanError::PatternShape {
                    pattern: pattern.clone(),
                    problem: "it needs two or three dot-separated parts",
                });
            }
            let matchers = segments
                .iter()
                .map(|s| compile_segment(pattern, s))
                .collect::<Result<Vec<_>, _>>()?;
            let mut it = matchers.into_iter();
            let glob = match (it.next(), it.next(), it.next()) {
                (Some(table), Some(column), None) => ColumnGlob {
                    schema: None,
                    table,
                    column,
                    rule: *rule,
                },
                (Some(schema), Some(table), Some(column)) => ColumnGlob {
                    schema: Some(schema),
                    table,
                    column,
                    rule: *rule,
                },
                _ => {
                    return Err(MaskPlanError::PatternShape {
                        pattern: pattern.clone(),
                        problem: "it needs two or three dot-separated parts",
                    });
                }
            };
            compiled.push(glob);
        }
        Ok(Self {
            globs: compiled,
            opaque_functions: Vec::new(),
        })
    }

    /// Whether there are no globs at all (then nothing is ever masked by column).
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// Lowest rule index whose glob matches this column (a `table.column` glob matches any
    /// schema; a `schema.table.column` glob matches when `schema` is unknown, since the
    /// column might live in that schema).
    pub fn match_column(&self, schema: Option<&str>, table: &str, column: &str) -> Option<usize> {
        self.globs
            .iter()
            .filter(|g| {
                schema_matches(g, schema) && g.table.is_match(table) && g.column.is_match(column)
            })
            .map(|g| g.rule)
            .min()
    }

    /// Whether some glob could match some column of this table (used for whole-row references
    /// like row_to_json(c), `SELECT c FROM customers c`, and `*` of unknown width).
    pub fn table_may_have_masked(&self, schema: Option<&str>, table: &str) -> Option<usize> {
        self.globs
            .iter()
            .filter(|g| schema_matches(g, schema) && g.table.is_match(table))
            .map(|g| g.rule)
            .min()
    }

    /// This matcher plus exact entries for columns found elsewhere to carry
    /// masked values: a view's columns (see [`plan_view`]). Each entry is
    /// `(schema, table, column, rule)` and matches that column by name, as
    /// written (case ignored, like globs); glob characters in it are literal. An
    /// empty column matches every column of that table.
    pub fn with_columns(&self, extra: &[(String, String, String, usize)]) -> Self {
        let mut globs = self.globs.clone();
        for (schema, table, column, rule) in extra {
            // A quoted pattern segment: the name taken literally, case ignored.
            let exact = |text: &str| {
                compile_segment(
                    text,
                    &Segment {
                        text: text.to_owned(),
                        quoted: true,
                    },
                )
            };
            // An escaped name always compiles; should it not, the entry
            // becomes a glob for every column of every table of the
            // schema (masking more, never less).
            let any = || {
                compile_segment(
                    "*",
                    &Segment {
                        text: "*".to_owned(),
                        quoted: false,
                    },
                )
            };
            let (Ok(schema_m), Ok(table_m), Ok(column_m)) = (
                exact(schema).or_else(|_| any()),
                exact(table).or_else(|_| any()),
                if column.is_empty() {
                    any()
                } else {
                    exact(column).or_else(|_| any())
                },
            ) else {
                continue;
            };
            globs.push(ColumnGlob {
                schema: Some(schema_m),
                table: table_m,
                column: column_m,
                rule: *rule,
            });
        }
        Self {
            globs,
            opaque_functions: self.opaque_functions.clone(),
        }
    }

    /// This matcher plus functions whose results may hold data of any table
    /// (user-defined functions: their bodies read what they like, out of the
    /// statement's sight). A value computed by one, or the rows of one in
    /// `FROM`, is masked whole, like `query_to_xml`'s. Names are matched
    /// unqualified, ignoring case, so every function of that name counts.
    pub fn with_functions(&self, names: &[String]) -> Self {
        let mut opaque = self.opaque_functions.clone();
        opaque.extend(names.iter().map(|n| n.to_lowercase()));
        opaque.sort();
        opaque.dedup();
        Self {
            globs: self.globs.clone(),
            opaque_functions: opaque,
        }
    }

    fn is_opaque_function(&self, fname: &str) -> bool {
        self.opaque_functions.iter().any(|f| f == fname)
    }

    /// The lowest rule index of all: the rule applied to values whose source cannot be
    /// known at all.
    pub fn strongest_rule(&self) -> Option<usize> {
        self.lowest_rule()
    }

    /// The lowest rule index of all, for values whose source cannot be known at all.
    fn lowest_rule(&self) -> Option<usize> {
        self.globs.iter().map(|g| g.rule).min()
    }
}

fn schema_matches(glob: &ColumnGlob, schema: Option<&str>) -> bool {
    match (&glob.schema, schema) {
        (Some(g), Some(s)) => g.is_match(s),
        _ => true,
    }
}

/// A pattern segment: its text and whether it was quoted (then taken literally).
struct Segment {
    text: String,
    quoted: bool,
}

fn split_pattern(pattern: &str) -> Result<Vec<Segment>, MaskPlanError> {
    let shape = |problem| MaskPlanError::PatternShape {
        pattern: pattern.to_owned(),
        problem,
    };
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = pattern.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' if in_quotes => in_quotes = false,
            '"' if current.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => return Err(shape("a quote may only enclose a whole part")),
            '.' if !in_quotes => {
                if current.is_empty() && !quoted {
                    return Err(shape("a part is empty"));
                }
                segments.push(Segment {
                    text: std::mem::take(&mut current),
                    quoted,
                });
                quoted = false;
            }
            _ if quoted && !in_quotes => return Err(shape("text follows a closing quote")),
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(shape("a quote is not closed"));
    }
    if current.is_empty() && !quoted {
        return Err(shape("a part is empty"));
    }
    segments.push(Segment {
        text: current,
        quoted,
    });
    Ok(segments)
}

fn compile_segment(pattern: &str, segment: &Segment) -> Result<GlobMatcher, MaskPlanError> {
    let text = if segment.quoted {
        globset::escape(&segment.text)
    } else {
        segment.text.clone()
    };
    GlobBuilder::new(&text)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| MaskPlanError::PatternGlob {
            pattern: pattern.to_owned(),
            source,
        })
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

// === Lineage model ===

/// Maximum query nesting followed before giving up as uncertain.
const MAX_DEPTH: usize = 64;

/// A reason to mask, before it becomes a [`ColumnMask`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Taint {
    rule: usize,
    reason: MaskReason,
}

type Tainted = Option<Taint>;

/// Keeps the taint of the lowest rule (the first one on ties).
fn join(a: Tainted, b: Tainted) -> Tainted {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.rule < a.rule { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn join_into(acc: &mut Tainted, t: Tainted) {
    *acc = join(acc.take(), t);
}

/// Turns a taint into an uncertainty with this reason, keeping its rule.
fn as_uncertain(t: Tainted, reason: &str) -> Tainted {
    t.map(|t| Taint {
        rule: t.rule,
        reason: MaskReason::Uncertain(reason.to_owned()),
    })
}

/// A base table (or view) reference: its columns are not known here.
#[derive(Clone, Debug)]
struct TableRef {
    schema: Option<String>,
    table: String,
    /// Names given by an alias column list; which columns they rename is unknown.
    renamed: Vec<String>,
    /// Values this statement writes into named columns (visible through RETURNING).
    written: Vec<(String, Taint)>,
    /// Values this statement writes into columns it cannot place.
    written_all: Tainted,
}

impl TableRef {
    fn new(schema: Option<String>, table: String) -> Self {
        Self {
            schema,
            table,
            renamed: Vec::new(),
            written: Vec::new(),
            written_all: None,
        }
    }

    fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.table),
            None => self.table.clone(),
        }
    }

    fn written_taint(&self, column: &str) -> Tainted {
        let mut t = self.written_all.clone();
        for (name, taint) in &self.written {
            if name == column {
                join_into(&mut t, Some(taint.clone()));
            }
        }
        t
    }
}

/// One piece of a relation's output, in order.
#[derive(Clone, Debug)]
enum Slot {
    /// One column. `name: None` when its name is not certain: it then answers every
    /// name lookup. `passthrough` when it is a plain column reference (the server may
    /// report an origin for it).
    Col {
        name: Option<String>,
        taint: Tainted,
        passthrough: bool,
    },
    /// A name that denotes one of the columns of a neighbouring unknown-width slot.
    NameOnly { name: String, taint: Tainted },
    /// The columns of a base table (`*`), unknown in number; they carry origins.
    Table(TableRef),
    /// Columns unknown in number and name. `may_have_origin` when some of them might
    /// be plain column references.
    Opaque {
        taint: Tainted,
        may_have_origin: bool,
    },
}

/// A relation in a FROM scope.
#[derive(Clone, Debug)]
enum Rel {
    Table(TableRef),
    Derived(Vec<Slot>),
}

/// A FROM item under the name queries use to refer to it.
#[derive(Clone, Debug)]
struct Source {
    /// Reference name (alias or table name), lowercased; empty when unnamed.
    name: String,
    /// Schema of a base table referenced without alias, for `schema.table.col`.
    schema: Option<String>,
    rel: Rel,
    /// Whether `*` expands it (false for RETURNING's `old`/`new` and `excluded`).
    in_star: bool,
}

#[derive(Default, Debug)]
struct Scope {
    sources: Vec<Source>,
    /// A USING/NATURAL join merges columns, shifting `*` positions.
    merged_join: bool,
}

/// What a statement returns, as far as the analysis can tell.
enum Shape {
    /// Rows whose columns are these slots.
    Rows(Vec<Slot>),
    /// Output that holds no table data (EXPLAIN, SHOW).
    Metadata,
    /// Rows of a query that is not in this statement.
    External(&'static str),
    /// A statement kind the analysis does not know.
    Unknown,
}

fn norm(id: &Ident) -> String {
    id.value.to_lowercase()
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => norm(id),
            ObjectNamePart::Function(f) => norm(&f.name),
        })
        .collect()
}

/// (schema, table) of a possibly qualified table name; a catalog part is ignored.
fn schema_table(name: &ObjectName) -> (Option<String>, String) {
    let mut parts = name_parts(name);
    let table = parts.pop().unwrap_or_default();
    (parts.pop(), table)
}

fn function_name(name: &ObjectName) -> String {
    name_parts(name).pop().unwrap_or_default()
}

/// Built-in set-returning functions whose rows derive only from their arguments.
const KNOWN_SET_FUNCTIONS: &[&str] = &[
    "generate_series",
    "generate_subscripts",
    "unnest",
    "json_each",
    "json_each_text",
    "jsonb_each",
    "jsonb_each_text",
    "json_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_to_record",
    "json_to_recordset",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "json_populate_record",
    "json_populate_recordset",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_path_query",
    "regexp_matches",
    "regexp_split_to_table",
    "string_to_table",
];

/// Built-ins whose result can hold any table's data besides those of
/// [`crate::sql::SQL_TEXT_FUNCTIONS`] (the one list of functions that run SQL
/// given as text): cursors, server files, logical decoding.
const DYNAMIC_DATA_FUNCTIONS: &[&str] = &[
    "cursor_to_xml",
    "pg_read_file",
    "pg_read_binary_file",
    "load_file",
];
const DYNAMIC_DATA_PREFIXES: &[&str] = &["dblink", "crosstab", "pg_logical_slot_"];

fn is_dynamic_sql(fname: &str) -> bool {
    crate::sql::SQL_TEXT_FUNCTIONS
        .iter()
        .any(|f| f.name == fname)
        || DYNAMIC_DATA_FUNCTIONS.contains(&fname)
        || DYNAMIC_DATA_PREFIXES.iter().any(|p| fname.starts_with(p))
}

/// Catalog columns that hold sample values of other tables' columns (planner statistics).
const STATISTICS_CATALOGS: &[(&str, &[&str])] = &[
    (
        "pg_stats",
        &["most_common_vals", "histogram_bounds", "most_common_elems"],
    ),
    (
        "pg_statistic",
        &[
            "stavalues1",
            "stavalues2",
            "stavalues3",
            "stavalues4",
            "stavalues5",
        ],
    ),
    ("pg_stats_ext", &["most_common_vals"]),
    (
        "pg_stats_ext_exprs",
        &["most_common_vals", "histogram_bounds", "most_common_elems"],
    ),
    ("pg_statistic_ext_data", &["stxdmcv", "stxdexpr"]),
    ("column_statistics", &["histogram"]),
];

/// Whether `column` of this table (any column when None) holds sampled values of
/// arbitrary tables.
fn is_statistics_values(schema: Option<&str>, table: &str, column: Option<&str>) -> bool {
    let schema_ok = match schema {
        None => true,
        Some(s) => {
            let s = s.to_lowercase();
            s == "pg_catalog" || s == "information_schema"
        }
    };
    let table = table.to_lowercase();
    schema_ok
        && STATISTICS_CATALOGS.iter().any(|(t, cols)| {
            *t == table
                && column.is_none_or(|c| {
                    let c = c.to_lowercase();
                    cols.iter().any(|v| *v == c)
                })
        })
}

/// PostgreSQL's `FROM ONLY t` parses as a table named `only` aliased `t`, or as a
/// function `only(t)`: recover the real table (schema, table) and its alias.
fn only_table(tf: &TableFactor) -> Option<(Option<String>, String, Option<&TableAlias>)> {
    let TableFactor::Table {
        name, alias, args, ..
    } = tf
    else {
        return None;
    };
    let [ObjectNamePart::Identifier(only)] = name.0.as_slice() else {
        return None;
    };
    if only.quote_style.is_some() || !only.value.eq_ignore_ascii_case("only") {
        return None;
    }
    match (args, alias) {
        (None, Some(a)) if !a.explicit && a.columns.is_empty() => Some((None, norm(&a.name), None)),
        (Some(args), alias) => match args.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(id)))] => {
                Some((None, norm(id), alias.as_ref()))
            }
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(ids)))] => {
                let mut parts: Vec<String> = ids.iter().map(norm).collect();
                let table = parts.pop()?;
                Some((parts.pop(), table, alias.as_ref()))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The output name of an expression when it is certain in every dialect.
fn certain_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(norm(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(norm),
        Expr::Nested(inner) => certain_name(inner),
        _ => None,
    }
}

fn is_passthrough(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_passthrough(inner),
        _ => false,
    }
}

fn wildcard_modified(opts: &WildcardAdditionalOptions) -> bool {
    opts.opt_ilike.is_some()
        || opts.opt_exclude.is_some()
        || opts.opt_except.is_some()
        || opts.opt_replace.is_some()
        || opts.opt_rename.is_some()
}

fn alias_names(alias: Option<&TableAlias>) -> Vec<String> {
    alias
        .map(|a| a.columns.iter().map(|c| norm(&c.name)).collect())
        .unwrap_or_default()
}

/// Renames the leading columns of `slots` after an alias column list.
fn apply_aliases(
    slots: Vec<Slot>,
    aliases: &[String],
    whole: impl Fn(&[Slot]) -> Tainted,
) -> Vec<Slot> {
    if aliases.is_empty() {
        return slots;
    }
    let mut out = Vec::with_capacity(slots.len() + aliases.len());
    let mut next = 0;
    for (i, slot) in slots.iter().enumerate() {
        if next >= aliases.len() {
            out.push(slot.clone());
            continue;
        }
        match slot {
            Slot::Col {
                taint, passthrough, ..
            } => {
                out.push(Slot::Col {
                    name: Some(aliases[next].clone()),
                    taint: taint.clone(),
                    passthrough: *passthrough,
                });
                next += 1;
            }
            Slot::NameOnly { .. } => {}
            Slot::Table(_) | Slot::Opaque { .. } => {
                // The remaining names fall somewhere in this slot or after it. Function
                // results (a lone opaque slot) keep their own reason.
                let rest = if matches!(&slots[i..], [Slot::Opaque { .. }]) {
                    whole(&slots[i..])
                } else {
                    as_uncertain(
                        whole(&slots[i..]),
                        "an alias column list renames columns of unknown position",
                    )
                };
                for name in &aliases[next..] {
                    out.push(Slot::NameOnly {
                        name: name.clone(),
                        taint: rest.clone(),
                    });
                }
                next = aliases.len();
                out.push(slot.clone());
            }
        }
    }
    out
}

// === impl Analyzer ===

/// Walks one statement, computing each output column's lineage.
struct Analyzer<'m> {
    matcher: &'m ColumnMatcher,
    /// Lowest rule of any table the statement references (for uncertainty).
    risk: Option<usize>,
    ctes: Vec<(String, Vec<Slot>)>,
    scopes: Vec<Scope>,
    /// Names of CTEs and derived tables (an origin naming one is not trusted).
    derived_names: HashSet<String>,
    depth: usize,
    /// Looking for writes and side effects of masked values (see
    /// [`laundering`]): every clause is analysed, not only output ones.
    effects: bool,
    /// What [`laundering`] found, in the order found.
    findings: Vec<String>,
}

impl<'m> Analyzer<'m> {
    fn new(stmt: &Statement, matcher: &'m ColumnMatcher) -> Self {
        Self {
            matcher,
            risk: statement_risk(stmt, matcher),
            ctes: Vec::new(),
            scopes: Vec::new(),
            derived_names: HashSet::new(),
            depth: 0,
            effects: false,
            findings: Vec::new(),
        }
    }

    /// Records that the statement writes `taint` somewhere the workload can
    /// read back: `what` says where.
    fn note_write(&mut self, what: &str, taint: &Tainted) {
        if let (true, Some(t)) = (self.effects, taint) {
            self.findings
                .push(format!("{what} {}", describe_taint(&t.reason)));
        }
    }

    /// A value written into `table.column`: laundering unless that column is
    /// itself masked by a rule at least as strong (rules are ordered
    /// strongest first) as the one the value's source is masked by.
    fn note_column_write(&mut self, table: &TableRef, column: &str, taint: &Taint) {
        let covered = self
            .matcher
            .match_column(table.schema.as_deref(), &table.table, column)
            .is_some_and(|rule| rule <= taint.rule);
        if !covered {
            self.note_write(
                &format!("writes into {}.{column}", table.display()),
                &Some(taint.clone()),
            );
        }
    }

    /// In [`laundering`] analyses, runs the taint analysis over clauses that
    /// produce no output (WHERE, JOIN … ON, GROUP BY, …) so that side-effecting
    /// calls in them are seen.
    fn scan_effects<V: Visit + ?Sized>(&mut self, node: &V) {
        if self.effects {
            let _ = self.taint_of(node);
        }
    }

    fn uncertain(&self, reason: &str) -> Tainted {
        self.risk.map(|rule| Taint {
            rule,
            reason: MaskReason::Uncertain(reason.to_owned()),
        })
    }

    /// For values that may come from any table (SQL text, session variables, statistics).
    fn dynamic(&self, what: &str) -> Tainted {
        self.matcher.lowest_rule().map(|rule| Taint {
            rule,
            reason: MaskReason::Uncertain(format!(
                "{what} may hold data of any table, including masked columns"
            )),
        })
    }

    fn column_taint(&self, schema: Option<&str>, table: &str, column: &str) -> Tainted {
        if is_statistics_values(schema, table, Some(column)) {
            return self.dynamic(&format!("{table}.{column}"));
        }
        self.matcher
            .match_column(schema, table, column)
            .map(|rule| Taint {
                rule,
                reason: MaskReason::DerivedFrom(match schema {
                    Some(s) => format!("{s}.{table}.{column}"),
                    None => format!("{table}.{column}"),
                }),
            })
    }

    fn table_whole(&self, t: &TableRef) -> Tainted {
        let mut acc = self
            .matcher
            .table_may_have_masked(t.schema.as_deref(), &t.table)
            .map(|rule| Taint {
                rule,
                reason: MaskReason::DerivedFrom(format!("{}.*", t.display())),
            });
        if is_statistics_values(t.schema.as_deref(), &t.table, None) {
            join_into(&mut acc, self.dynamic(&t.table));
        }
        join_into(&mut acc, t.written_all.clone());
        for (_, w) in &t.written {
            join_into(&mut acc, Some(w.clone()));
        }
        acc
    }

    fn table_column(&self, t: &TableRef, column: &str) -> Tainted {
        let mut acc = if t.renamed.iter().any(|r| r == column) {
            as_uncertain(
                self.table_whole(t),
                &format!("{column} renames an unknown column of {}", t.display()),
            )
        } else {
            self.column_taint(t.schema.as_deref(), &t.table, column)
        };
        join_into(&mut acc, t.written_taint(column));
        acc
    }

    fn slot_whole(&self, slot: &Slot) -> Tainted {
        match slot {
            Slot::Col { taint, .. } | Slot::NameOnly { taint, .. } | Slot::Opaque { taint, .. } => {
                taint.clone()
            }
            Slot::Table(t) => self.table_whole(t),
        }
    }

    fn slots_whole(&self, slots: &[Slot]) -> Tainted {
        slots
            .iter()
            .fold(None, |acc, s| join(acc, self.slot_whole(s)))
    }

    fn rel_whole(&self, rel: &Rel) -> Tainted {
        match rel {
            Rel::Table(t) => self.table_whole(t),
            Rel::Derived(slots) => self.slots_whole(slots),
        }
    }

    /// The taint of column `name` of `rel`, or None when `rel` certainly lacks it; the
    /// flag tells whether `rel` certainly has it (a column named so).
    fn rel_column(&self, rel: &Rel, name: &str) -> Option<(Tainted, bool)> {
        match rel {
            Rel::Table(t) => Some((self.table_column(t, name), false)),
            Rel::Derived(slots) => {
                let mut found = false;
                let mut definite = false;
                let mut acc = None;
                for slot in slots {
                    let hit = match slot {
                        Slot::Col { name: n, taint, .. } => match n {
                            Some(n) if n != name => None,
                            Some(_) => {
                                definite = true;
                                Some(taint.clone())
                            }
                            None => Some(taint.clone()),
                        },
                        Slot::NameOnly { name: n, taint } => (n == name).then(|| {
                            definite = true;
                            taint.clone()
                        }),
                        Slot::Table(t) => Some(self.table_column(t, name)),
                        Slot::Opaque { taint, .. } => Some(taint.clone()),
                    };
                    if let Some(t) = hit {
                        found = true;
                        join_into(&mut acc, t);
                    }
                }
                found.then_some((acc, definite))
            }
        }
    }

    fn all_sources(&self) -> impl Iterator<Item = &Source> {
        self.scopes.iter().rev().flat_map(|s| s.sources.iter())
    }

    fn everything_in_scope(&self) -> Tainted {
        self.all_sources()
            .fold(None, |acc, s| join(acc, self.rel_whole(&s.rel)))
    }

    /// An unqualified name: a column of any in-scope relation, or a whole-row reference.
    fn resolve_unqualified(&self, id: &Ident) -> Tainted {
        let name = norm(id);
        if id.quote_style.is_none() && name == "default" {
            return None;
        }
        if name.starts_with('@') && !name.starts_with("@@") {
            // MySQL user variables can carry values selected from masked columns earlier.
            return self.dynamic(&format!("user variable {name}"));
        }
        let mut found = false;
        let mut acc = None;
        // Innermost query level first; a level where the name certainly is a column
        // ends the search, as it does for the server.
        for scope in self.scopes.iter().rev() {
            let mut definite = false;
            for src in &scope.sources {
                if let Some((t, d)) = self.rel_column(&src.rel, &name) {
                    found = true;
                    definite |= d;
                    join_into(&mut acc, t);
                }
                if !src.name.is_empty() && src.name == name {
                    found = true;
                    join_into(&mut acc, self.rel_whole(&src.rel));
                }
            }
            if definite {
                break;
            }
        }
        if found {
            return acc;
        }
        let reason = format!("column {name} was not found in any FROM item");
        join(
            as_uncertain(self.everything_in_scope(), &reason),
            self.uncertain(&reason),
        )
    }

    fn find_sources<'s>(
        &'s self,
        schema: Option<&'s str>,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Source> {
        self.all_sources().filter(move |s| {
            s.name == name
                && match (schema, &s.schema) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }

    /// `rel.col` or `schema.rel.col`.
    fn resolve_qualified(&self, ids: &[Ident]) -> Tainted {
        let (col, qualifier) = ids.split_last()?;
        let Some((rel_name, rest)) = qualifier.split_last() else {
            return self.resolve_unqualified(col);
        };
        let column = norm(col);
        let rel_name = norm(rel_name);
        let schema = rest.last().map(norm);
        let mut found = false;
        let mut acc = None;
        for src in self.find_sources(schema.as_deref(), &rel_name) {
            found = true;
            let t = match self.rel_column(&src.rel, &column) {
                Some((t, _)) => t,
                None => as_uncertain(
                    self.rel_whole(&src.rel),
                    &format!("column {column} was not found in {rel_name}"),
                ),
            };
            join_into(&mut acc, t);
        }
        if found {
            return acc;
        }
        join(
            self.column_taint(schema.as_deref(), &rel_name, &column),
            self.resolve_unqualified(col),
        )
    }

    fn resolve_whole_row(&self, name: &ObjectName) -> Tainted {
        let (schema, table) = schema_table(name);
        let mut found = false;
        let mut acc = None;
        for src in self.find_sources(schema.as_deref(), &table) {
            found = true;
            join_into(&mut acc, self.rel_whole(&src.rel));
        }
        if found {
            return acc;
        }
        let mut t = self
            .matcher
            .table_may_have_masked(schema.as_deref(), &table)
            .map(|rule| Taint {
                rule,
                reason: MaskReason::DerivedFrom(format!("{table}.*")),
            });
        join_into(
            &mut t,
            self.uncertain(&format!("{table}.* was not found in any FROM item")),
        );
        t
    }

    /// Everything an AST node's expressions read (subqueries analysed in the current scope).
    fn taint_of<V: Visit + ?Sized>(&mut self, node: &V) -> Tainted {
        let mut v = TaintVisitor {
            an: self,
            taint: None,
            nested: 0,
            skip_next_query: false,
            skip_until: None,
        };
        let _ = node.visit(&mut v);
        v.taint
    }

    fn function_args_taint(&mut self, fname: &str, args: &[FunctionArg]) -> Tainted {
        let mut acc = None;
        for arg in args {
            let arg = match arg {
                FunctionArg::ExprNamed { name, arg, .. } => {
                    let t = self.taint_of(name);
                    join_into(&mut acc, t);
                    arg
                }
                FunctionArg::Named { arg, .. } | FunctionArg::Unnamed(arg) => arg,
            };
            let t = match arg {
                FunctionArgExpr::Expr(e) => self.taint_of(e),
                FunctionArgExpr::QualifiedWildcard(name) => self.resolve_whole_row(name),
                FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
                    if fname == "count" {
                        None
                    } else {
                        self.everything_in_scope()
                    }
                }
            };
            join_into(&mut acc, t);
        }
        acc
    }

    // --- queries ---

    fn query(&mut self, q: &Query) -> Vec<Slot> {
        if self.depth >= MAX_DEPTH {
            return vec![Slot::Opaque {
                taint: self.uncertain("the query nests too deeply to follow"),
                may_have_origin: true,
            }];
        }
        self.depth += 1;
        let mark = self.ctes.len();
        if let Some(with) = &q.with {
            if with.recursive {
                self.recursive_ctes(&with.cte_tables);
            } else {
                for cte in &with.cte_tables {
                    let slots = self.cte_slots(cte);
                    self.ctes.push((norm(&cte.alias.name), slots));
                }
            }
        }
        let mut slots = self.set_expr(&q.body);
        self.scan_effects(&q.order_by);
        self.scan_effects(&q.limit_clause);
        if q.for_clause.is_some() || !q.pipe_operators.is_empty() {
            let t = join(
                self.slots_whole(&slots),
                self.uncertain("the query reshapes its result (FOR/pipe clause)"),
            );
            slots = vec![Slot::Opaque {
                taint: t,
                may_have_origin: false,
            }];
        }
        self.ctes.truncate(mark);
        self.depth -= 1;
        slots
    }

    fn cte_slots(&mut self, cte: &Cte) -> Vec<Slot> {
        self.derived_names.insert(norm(&cte.alias.name));
        let slots = self.query(&cte.query);
        apply_aliases(slots, &alias_names(Some(&cte.alias)), |s| {
            self.slots_whole(s)
        })
    }

    /// `WITH RECURSIVE`: any CTE may read itself or a later one. All are registered
    /// first (as untainted columns of unknown shape) and re-analysed until the rule of
    /// every column is stable; taints only grow, so this settles.
    fn recursive_ctes(&mut self, ctes: &[Cte]) {
        let base = self.ctes.len();
        for cte in ctes {
            self.ctes.push((
                norm(&cte.alias.name),
                vec![Slot::Opaque {
                    taint: None,
                    may_have_origin: false,
                }],
            ));
        }
        let mut last: Option<Vec<Vec<Option<usize>>>> = None;
        for _ in 0..16 {
            let mut signature = Vec::with_capacity(ctes.len());
            for (i, cte) in ctes.iter().enumerate() {
                let slots = self.cte_slots(cte);
                signature.push(
                    slots
                        .iter()
                        .map(|s| self.slot_whole(s).map(|t| t.rule))
                        .collect::<Vec<_>>(),
                );
                if let Some(entry) = self.ctes.get_mut(base + i) {
                    entry.1 = slots;
                }
            }
            if last.as_ref() == Some(&signature) {
                return;
            }
            last = Some(signature);
        }
        for i in base..self.ctes.len() {
            let t = join(
                self.slots_whole(&self.ctes[i].1),
                self.uncertain("a recursive CTE did not settle"),
            );
            self.ctes[i].1 = vec![Slot::Opaque {
                taint: t,
                may_have_origin: false,
            }];
        }
    }

    fn set_expr(&mut self, body: &SetExpr) -> Vec<Slot> {
        match body {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left);
                let r = self.set_expr(right);
                self.set_operation(l, r)
            }
            SetExpr::Values(values) => {
                let mut cols: Vec<Tainted> = Vec::new();
                let mut same_width = true;
                for row in &values.rows {
                    if !cols.is_empty() && cols.len() != row.len() {
                        same_width = false;
                    }
                    for (i, e) in row.iter().enumerate() {
                        let t = self.taint_of(e);
                        if i < cols.len() {
                            join_into(&mut cols[i], t);
                        } else {
                            cols.push(t);
                        }
                    }
                }
                if !same_width {
                    let t = cols.into_iter().fold(None, join);
                    return vec![Slot::Opaque {
                        taint: t,
                        may_have_origin: false,
                    }];
                }
                cols.into_iter()
                    .map(|taint| Slot::Col {
                        name: None,
                        taint,
                        passthrough: false,
                    })
                    .collect()
            }
            SetExpr::Insert(stmt)
            | SetExpr::Update(stmt)
            | SetExpr::Delete(stmt)
            | SetExpr::Merge(stmt) => match self.statement(stmt) {
                Shape::Rows(slots) => slots,
                _ => vec![Slot::Opaque {
                    taint: self.uncertain("a data-modifying statement of unknown shape"),
                    may_have_origin: true,
                }],
            },
            SetExpr::Table(t) => {
                let Some(table) = t.table_name.as_ref().map(|n| n.to_lowercase()) else {
                    return vec![Slot::Opaque {
                        taint: self.uncertain("TABLE without a name"),
                        may_have_origin: true,
                    }];
                };
                let schema = t.schema_name.as_ref().map(|s| s.to_lowercase());
                match self.lookup_cte(schema.as_deref(), &table) {
                    Some(slots) => slots,
                    None => vec![Slot::Table(TableRef::new(schema, table))],
                }
            }
        }
    }

    fn set_operation(&self, l: Vec<Slot>, r: Vec<Slot>) -> Vec<Slot> {
        let known = |s: &[Slot]| -> Option<Vec<(Option<String>, Tainted)>> {
            s.iter()
                .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                .map(|s| match s {
                    Slot::Col { name, taint, .. } => Some((name.clone(), taint.clone())),
                    _ => None,
                })
                .collect()
        };
        if let (Some(lk), Some(rk)) = (known(&l), known(&r))
            && lk.len() == rk.len()
        {
            return lk
                .into_iter()
                .zip(rk)
                .map(|((name, lt), (_, rt))| Slot::Col {
                    name,
                    taint: join(lt, rt),
                    passthrough: false,
                })
                .collect();
        }
        let t = join(self.slots_whole(&l), self.slots_whole(&r));
        vec![Slot::Opaque {
            taint: as_uncertain(t, "a set operation over columns of unknown position (*)"),
            may_have_origin: false,
        }]
    }

    fn lookup_cte(&self, schema: Option<&str>, name: &str) -> Option<Vec<Slot>> {
        if schema.is_some() {
            return None;
        }
        self.ctes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, slots)| slots.clone())
    }

    fn select(&mut self, s: &Select) -> Vec<Slot> {
        self.scopes.push(Scope::default());
        for twj in &s.from {
            self.table_with_joins(twj);
        }
        let mut out = Vec::new();
        for item in &s.projection {
            self.select_item(item, &mut out);
        }
        if self.effects {
            self.scan_effects(&s.from);
            self.scan_effects(&s.selection);
            self.scan_effects(&s.group_by);
            self.scan_effects(&s.having);
            self.scan_effects(&s.qualify);
            self.scan_effects(&s.named_window);
            if let Some(into) = &s.into {
                let t = self.slots_whole(&out);
                self.note_write(
                    &format!(
                        "SELECT … INTO {} writes",
                        into.targets
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &t,
                );
            }
        }
        if s.exclude.is_some() || !s.lateral_views.is_empty() {
            let t = self.slots_whole(&out);
            out = vec![Slot::Opaque {
                taint: join(
                    t,
                    self.uncertain("unsupported SELECT clause (EXCLUDE/LATERAL VIEW)"),
                ),
                may_have_origin: true,
            }];
        }
        self.scopes.pop();
        out
    }

    fn push_source(&mut self, src: Source) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.sources.push(src);
        }
    }

    fn table_with_joins(&mut self, twj: &TableWithJoins) {
        self.table_factor(&twj.relation);
        for join in &twj.joins {
            let constraint = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c)
                | JoinOperator::StraightJoin(c)
                | JoinOperator::AsOf { constraint: c, .. } => Some(c),
                _ => None,
            };
            if matches!(
                constraint,
                Some(JoinConstraint::Using(_) | JoinConstraint::Natural)
            ) && let Some(scope) = self.scopes.last_mut()
            {
                scope.merged_join = true;
            }
            self.table_factor(&join.relation);
        }
    }

    fn derived_source(&mut self, name: String, alias: Option<&TableAlias>, slots: Vec<Slot>) {
        if !name.is_empty() {
            self.derived_names.insert(name.clone());
        }
        let slots = apply_aliases(slots, &alias_names(alias), |s| self.slots_whole(s));
        self.push_source(Source {
            name,
            schema: None,
            rel: Rel::Derived(slots),
            in_star: true,
        });
    }

    fn function_source(&mut self, fname: &str, arg_taint: Tainted, alias: Option<&TableAlias>) {
        let taint = if is_dynamic_sql(fname) {
            join(arg_taint, self.dynamic(&format!("{fname}()")))
        } else if self.matcher.is_opaque_function(fname) {
            join(
                arg_taint,
                self.dynamic(&format!("user-defined function {fname}()")),
            )
        } else if KNOWN_SET_FUNCTIONS.contains(&fname) {
            arg_taint
        } else {
            join(
                arg_taint,
                self.uncertain(&format!(
                    "the rows of function {fname}() come from an unknown source"
                )),
            )
        };
        // Without an alias PostgreSQL names a function's FROM item after the function.
        let name = alias
            .map(|a| norm(&a.name))
            .unwrap_or_else(|| fname.to_owned());
        let slots = vec![Slot::Opaque {
            taint,
            may_have_origin: false,
        }];
        self.derived_source(name, alias, slots);
    }

    fn table_factor(&mut self, tf: &TableFactor) {
        if let Some((schema, table, alias)) = only_table(tf) {
            let mut t = TableRef::new(schema.clone(), table.clone());
            t.renamed = alias_names(alias);
            let (name, schema) = match alias {
                Some(a) => (norm(&a.name), None),
                None => (table, schema),
            };
            self.push_source(Source {
                name,
                schema,
                rel: Rel::Table(t),
                in_star: true,
            });
            return;
        }
        match tf {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let (schema, table) = schema_table(name);
                if let Some(slots) = self.lookup_cte(schema.as_deref(), &table) {
                    let alias_name = alias.as_ref().map(|a| norm(&a.name)).unwrap_or(table);
                    let slots =
                        apply_aliases(slots, &alias_names(alias.as_ref()), |s| self.slots_whole(s));
                    self.push_source(Source {
                        name: alias_name,
                        schema: None,
                        rel: Rel::Derived(slots),
                        in_star: true,
                    });
                    return;
                }
                let mut t = TableRef::new(schema.clone(), table.clone());
                t.renamed = alias_names(alias.as_ref());
                let (name, schema) = match alias {
                    Some(a) => (norm(&a.name), None),
                    None => (table, schema),
                };
                self.push_source(Source {
                    name,
                    schema,
                    rel: Rel::Table(t),
                    in_star: true,
                });
            }
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                ..
            } => {
                let fname = function_name(name);
                let t = self.function_args_taint(&fname, &args.args);
                self.function_source(&fname, t, alias.as_ref());
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                let fname = function_name(name);
                let t = self.function_args_taint(&fname, args);
                self.function_source(&fname, t, alias.as_ref());
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                // Without LATERAL a subquery cannot see the FROM items before it.
                let siblings = if *lateral {
                    Vec::new()
                } else {
                    self.scopes
                        .last_mut()
                        .map(|s| std::mem::take(&mut s.sources))
                        .unwrap_or_default()
                };
                let slots = self.query(subquery);
                if let Some(scope) = self.scopes.last_mut()
                    && !*lateral
                {
                    scope.sources = siblings;
                }
                let name = alias.as_ref().map(|a| norm(&a.name)).unwrap_or_default();
                self.derived_source(name, alias.as_ref(), slots);
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                let t = self.taint_of(array_exprs);
                self.function_source("unnest", t, alias.as_ref());
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                self.scopes.push(Scope::default());
                self.table_with_joins(table_with_joins);
                let inner = self.scopes.pop().unwrap_or_default();
                match alias {
                    None => {
                        if let Some(scope) = self.scopes.last_mut() {
                            scope.merged_join |= inner.merged_join;
                            scope.sources.extend(inner.sources);
                        }
                    }
                    Some(a) => {
                        let slots = Self::expand_all(
                            inner.sources.iter().filter(|s| s.in_star).map(|s| &s.rel),
                            inner.merged_join,
                        );
                        self.derived_source(norm(&a.name), Some(a), slots);
                    }
                }
            }
            other => {
                // JSON_TABLE, XMLTABLE, PIVOT, ...: read what they read, and stay uncertain.
                let t = join(
                    self.taint_of(other),
                    self.uncertain("an unsupported FROM item (table function or pivot)"),
                );
                let alias = match other {
                    TableFactor::TableFunction { alias, .. }
                    | TableFactor::JsonTable { alias, .. }
                    | TableFactor::OpenJsonTable { alias, .. }
                    | TableFactor::Pivot { alias, .. }
                    | TableFactor::Unpivot { alias, .. }
                    | TableFactor::MatchRecognize { alias, .. }
                    | TableFactor::XmlTable { alias, .. }
                    | TableFactor::SemanticView { alias, .. } => alias.as_ref(),
                    _ => None,
                };
                let name = alias.map(|a| norm(&a.name)).unwrap_or_default();
                self.derived_source(
                    name,
                    alias,
                    vec![Slot::Opaque {
                        taint: t,
                        may_have_origin: true,
                    }],
                );
            }
        }
    }

    /// The slots `rel.*` expands to.
    fn expand(rel: &Rel) -> Vec<Slot> {
        match rel {
            Rel::Table(t) => vec![Slot::Table(t.clone())],
            Rel::Derived(slots) => slots
                .iter()
                .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                .cloned()
                .collect(),
        }
    }

    /// The slots `*` over these relations expands to. A USING/NATURAL join moves the
    /// merged columns first, so then the positions inside are marked unknown: empty
    /// unknown-width slots around them make every column inside ambiguous.
    fn expand_all<'r>(rels: impl Iterator<Item = &'r Rel>, merged_join: bool) -> Vec<Slot> {
        let marker = || Slot::Opaque {
            taint: None,
            may_have_origin: false,
        };
        let mut slots = Vec::new();
        if merged_join {
            slots.push(marker());
        }
        for rel in rels {
            slots.extend(Self::expand(rel));
        }
        if merged_join {
            slots.push(marker());
        }
        slots
    }

    fn select_item(&mut self, item: &SelectItem, out: &mut Vec<Slot>) {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let taint = self.taint_of(e);
                out.push(Slot::Col {
                    name: certain_name(e),
                    taint,
                    passthrough: is_passthrough(e),
                });
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let taint = self.taint_of(expr);
                out.push(Slot::Col {
                    name: Some(norm(alias)),
                    taint,
                    passthrough: is_passthrough(expr),
                });
            }
            SelectItem::ExprWithAliases { expr, aliases } => {
                let taint = self.taint_of(expr);
                for alias in aliases {
                    out.push(Slot::Col {
                        name: Some(norm(alias)),
                        taint: taint.clone(),
                        passthrough: false,
                    });
                }
            }
            SelectItem::Wildcard(opts) => {
                let Some(scope) = self.scopes.last() else {
                    return;
                };
                let merged = scope.merged_join;
                let rels: Vec<Rel> = scope
                    .sources
                    .iter()
                    .filter(|s| s.in_star)
                    .map(|s| s.rel.clone())
                    .collect();
                if rels.is_empty() {
                    out.push(Slot::Opaque {
                        taint: self.uncertain("* with no FROM item"),
                        may_have_origin: true,
                    });
                    return;
                }
                let slots = Self::expand_all(rels.iter(), merged);
                out.extend(self.modified_wildcard(opts, slots));
            }
            SelectItem::QualifiedWildcard(kind, opts) => {
                let slots = match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        let (schema, table) = schema_table(name);
                        let rels: Vec<Rel> = self
                            .find_sources(schema.as_deref(), &table)
                            .map(|s| s.rel.clone())
                            .collect();
                        match rels.as_slice() {
                            [rel] => Self::expand(rel),
                            _ => vec![Slot::Opaque {
                                taint: join(
                                    self.resolve_whole_row(name),
                                    self.uncertain(&format!(
                                        "{table}.* does not name exactly one FROM item"
                                    )),
                                ),
                                may_have_origin: true,
                            }],
                        }
                    }
                    SelectItemQualifiedWildcardKind::Expr(e) => vec![Slot::Opaque {
                        taint: self.taint_of(e),
                        may_have_origin: false,
                    }],
                };
                out.extend(self.modified_wildcard(opts, slots));
            }
        }
    }

    /// `* EXCLUDE (...)` and friends change which columns appear: keep only the taint.
    fn modified_wildcard(&self, opts: &WildcardAdditionalOptions, slots: Vec<Slot>) -> Vec<Slot> {
        if !wildcard_modified(opts) {
            return slots;
        }
        vec![Slot::Opaque {
            taint: as_uncertain(
                self.slots_whole(&slots),
                "* with EXCLUDE/EXCEPT/REPLACE/RENAME",
            ),
            may_have_origin: true,
        }]
    }

    // --- statements ---

    fn statement(&mut self, stmt: &Statement) -> Shape {
        match stmt {
            Statement::Query(q) => Shape::Rows(self.query(q)),
            Statement::Insert(ins) => {
                let TableObject::TableName(name) = &ins.table else {
                    return Shape::Unknown;
                };
                let (schema, table) = schema_table(name);
                let mut target = TableRef::new(schema.clone(), table.clone());
                if let Some(source) = &ins.source {
                    let slots = self.query(source);
                    let cols: Vec<String> = ins
                        .columns
                        .iter()
                        .filter_map(|c| name_parts(c).pop())
                        .collect();
                    let placed: Option<Vec<Tainted>> = slots
                        .iter()
                        .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                        .map(|s| match s {
                            Slot::Col { taint, .. } => Some(taint.clone()),
                            _ => None,
                        })
                        .collect();
                    match placed {
                        Some(taints) if !cols.is_empty() && taints.len() == cols.len() => {
                            for (col, t) in cols.into_iter().zip(taints) {
                                if let Some(t) = t {
                                    self.note_column_write(&target, &col, &t);
                                    target.written.push((col, t));
                                }
                            }
                        }
                        _ => {
                            target.written_all = self.slots_whole(&slots);
                            let all = target.written_all.clone();
                            self.note_write(
                                &format!("INSERT INTO {} writes", target.display()),
                                &all,
                            );
                        }
                    }
                }
                let ref_name = ins
                    .table_alias
                    .as_ref()
                    .map(|a| norm(&a.alias))
                    .unwrap_or(table);
                self.scopes.push(Scope::default());
                self.push_source(Source {
                    name: ref_name,
                    schema: if ins.table_alias.is_some() {
                        None
                    } else {
                        schema
                    },
                    rel: Rel::Table(target.clone()),
                    in_star: true,
                });
                // ON CONFLICT's `excluded` is the proposed row.
                self.push_source(Source {
                    name: "excluded".to_owned(),
                    schema: None,
                    rel: Rel::Table(target),
                    in_star: false,
                });
                let on_update = match &ins.on {
                    Some(OnInsert::DuplicateKeyUpdate(a)) => a.as_slice(),
                    Some(OnInsert::OnConflict(c)) => match &c.action {
                        OnConflictAction::DoUpdate(u) => u.assignments.as_slice(),
                        OnConflictAction::DoNothing => &[],
                    },
                    _ => &[],
                };
                self.record_assignments(ins.assignments.iter().chain(on_update));
                let shape = self.returning_in_scope(ins.returning.as_deref(), ins.output.as_ref());
                self.scopes.pop();
                shape
            }
            Statement::Update(up) => {
                self.scopes.push(Scope::default());
                self.table_with_joins(&up.table);
                if let Some(from) = &up.from {
                    let (sqlparser::ast::UpdateTableFromKind::BeforeSet(v)
                    | sqlparser::ast::UpdateTableFromKind::AfterSet(v)) = from;
                    for twj in v {
                        self.table_with_joins(twj);
                    }
                }
                self.record_assignments(up.assignments.iter());
                self.scan_effects(&up.selection);
                let shape = self.returning_in_scope(up.returning.as_deref(), up.output.as_ref());
                self.scopes.pop();
                shape
            }
            Statement::Delete(del) => {
                self.scopes.push(Scope::default());
                let (sqlparser::ast::FromTable::WithFromKeyword(from)
                | sqlparser::ast::FromTable::WithoutKeyword(from)) = &del.from;
                for twj in from {
                    self.table_with_joins(twj);
                }
                if let Some(using) = &del.using {
                    for twj in using {
                        self.table_with_joins(twj);
                    }
                }
                self.scan_effects(&del.selection);
                let shape = self.returning_in_scope(del.returning.as_deref(), del.output.as_ref());
                self.scopes.pop();
                shape
            }
            Statement::Merge(m) => {
                self.scopes.push(Scope::default());
                self.table_factor(&m.table);
                self.table_factor(&m.source);
                let t = self.taint_of(&m.clauses);
                self.scan_effects(&m.on);
                let (_, table) = match &m.table {
                    TableFactor::Table { name, .. } => schema_table(name),
                    _ => (None, String::new()),
                };
                self.note_write(&format!("MERGE INTO {table} writes"), &t);
                if let Some(Source {
                    rel: Rel::Table(target),
                    ..
                }) = self.scopes.last_mut().and_then(|s| s.sources.first_mut())
                {
                    join_into(&mut target.written_all, t);
                }
                let shape = self.returning_in_scope(None, m.output.as_ref());
                self.scopes.pop();
                shape
            }
            Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCreate { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowObjects(_)
            | Statement::ShowCatalogs { .. } => Shape::Metadata,
            Statement::Fetch { .. } => {
                Shape::External("FETCH returns rows of a cursor declared by an earlier statement")
            }
            Statement::Execute { .. } => Shape::External(
                "EXECUTE runs a statement prepared earlier, whose text is not known here",
            ),
            Statement::Call(_) => {
                Shape::External("CALL may return rows of queries inside a procedure")
            }
            _ => Shape::Unknown,
        }
    }

    /// Records what `SET col = value` writes into the statement's target, the first
    /// FROM item of the current scope (values are read before any is written).
    fn record_assignments<'a>(&mut self, assignments: impl Iterator<Item = &'a Assignment>) {
        let mut written = Vec::new();
        for a in assignments {
            let t = self.taint_of(&a.value);
            if let Some(t) = t {
                for col in assignment_columns(&a.target) {
                    written.push((col, t.clone()));
                }
            }
        }
        if self.effects
            && let Some(Source {
                rel: Rel::Table(target),
                ..
            }) = self.scopes.last().and_then(|s| s.sources.first()).cloned()
        {
            for (col, t) in &written {
                self.note_column_write(&target, col, t);
            }
        }
        if let Some(Source {
            rel: Rel::Table(target),
            ..
        }) = self.scopes.last_mut().and_then(|s| s.sources.first_mut())
        {
            target.written.extend(written);
        }
    }

    /// RETURNING evaluated in the current scope; PostgreSQL 18's `old` and `new`
    /// name the target (the first FROM item).
    fn returning_in_scope(
        &mut self,
        returning: Option<&[SelectItem]>,
        output: Option<&OutputClause>,
    ) -> Shape {
        let items = match (returning, output) {
            (Some(items), _) => items,
            (
                None,
                Some(
                    OutputClause::Returning { select_items, .. }
                    | OutputClause::Output { select_items, .. },
                ),
            ) => select_items.as_slice(),
            (None, None) => return Shape::Rows(Vec::new()),
        };
        if let Some(target) = self.scopes.last().and_then(|s| s.sources.first()).cloned() {
            for name in ["old", "new"] {
                self.push_source(Source {
                    name: name.to_owned(),
                    schema: None,
                    rel: target.rel.clone(),
                    in_star: false,
                });
            }
        }
        let mut out = Vec::new();
        for item in items {
            self.select_item(item, &mut out);
        }
        Shape::Rows(out)
    }

    // --- mapping to the server's columns ---

    /// What the server's origin alone says about a column.
    fn origin_taint(&self, col: &OutputColumn) -> Tainted {
        let mut acc = None;
        if let Some(o) = &col.origin {
            let column = (!o.column.is_empty()).then_some(o.column.as_str());
            if is_statistics_values(o.schema.as_deref(), &o.table, column) {
                join_into(&mut acc, self.dynamic(&format!("{}.{}", o.table, o.column)));
            }
            if o.column.is_empty() {
                let t = self
                    .matcher
                    .table_may_have_masked(o.schema.as_deref(), &o.table)
                    .map(|rule| Taint {
                        rule,
                        reason: MaskReason::DerivedFrom(format!("{}.*", o.table)),
                    });
                join_into(&mut acc, t);
            } else if let Some(rule) =
                self.matcher
                    .match_column(o.schema.as_deref(), &o.table, &o.column)
            {
                join_into(
                    &mut acc,
                    Some(Taint {
                        rule,
                        reason: MaskReason::Origin,
                    }),
                );
            }
        }
        acc
    }

    fn decide(&self, col: &OutputColumn, candidates: &[&Slot], ambiguous: bool) -> ColumnMask {
        let mut acc = self.origin_taint(col);
        let trusted = col.origin.as_ref().filter(|o| {
            !o.column.is_empty() && !self.derived_names.contains(&o.table.to_lowercase())
        });
        for slot in candidates {
            let t = match slot {
                Slot::Col {
                    taint, passthrough, ..
                } => {
                    if ambiguous && trusted.is_some() && !passthrough {
                        None
                    } else {
                        taint.clone()
                    }
                }
                Slot::Opaque {
                    taint,
                    may_have_origin,
                } => {
                    if ambiguous && trusted.is_some() && !may_have_origin {
                        None
                    } else {
                        taint.clone()
                    }
                }
                Slot::Table(t) => match trusted {
                    Some(o) => t.written_taint(&o.column.to_lowercase()),
                    None if t.renamed.is_empty() => self.table_column(t, &col.name.to_lowercase()),
                    None => as_uncertain(
                        self.table_whole(t),
                        "a column of a table whose columns were renamed came back without origin",
                    ),
                },
                Slot::NameOnly { .. } => None,
            };
            join_into(&mut acc, t);
        }
        to_mask(acc)
    }

    /// For a column the analysis cannot place: its origin, what the statement reads,
    /// and the statement's risk, as uncertainty.
    fn fallback(&self, col: &OutputColumn, extra: Tainted, reason: &str) -> ColumnMask {
        let t = join(as_uncertain(extra, reason), self.uncertain(reason));
        to_mask(join(self.origin_taint(col), t))
    }

    fn plan_slots(&self, slots: &[Slot], output: &[OutputColumn]) -> MaskPlan {
        let items: Vec<&Slot> = slots
            .iter()
            .filter(|s| !matches!(s, Slot::NameOnly { .. }))
            .collect();
        let n = output.len();
        let runs: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Slot::Col { .. }))
            .map(|(i, _)| i)
            .collect();
        let mismatch = |why: String| {
            let everything = self.slots_whole(slots);
            MaskPlan {
                columns: output
                    .iter()
                    .map(|c| self.fallback(c, everything.clone(), &why))
                    .collect(),
            }
        };
        let (Some(&first), Some(&last)) = (runs.first(), runs.last()) else {
            if items.len() != n {
                return mismatch(format!(
                    "the server returned {n} columns but the statement selects {}",
                    items.len()
                ));
            }
            return MaskPlan {
                columns: output
                    .iter()
                    .zip(&items)
                    .map(|(c, s)| self.decide(c, &[*s], false))
                    .collect(),
            };
        };
        let prefix = first;
        let suffix = items.len() - last - 1;
        if prefix + suffix > n {
            return mismatch(format!(
                "the server returned {n} columns but the statement selects at least {}",
                prefix + suffix
            ));
        }
        let columns = output
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < prefix {
                    self.decide(c, &[items[i]], false)
                } else if i >= n - suffix {
                    self.decide(c, &[items[items.len() - (n - i)]], false)
                } else if first == last {
                    self.decide(c, &[items[first]], false)
                } else {
                    self.decide(c, &items[first..=last], true)
                }
            })
            .collect();
        MaskPlan { columns }
    }
}

fn to_mask(t: Tainted) -> ColumnMask {
    match t {
        Some(Taint { rule, reason }) => ColumnMask::Mask { rule, reason },
        None => ColumnMask::Clear,
    }
}

fn assignment_columns(target: &sqlparser::ast::AssignmentTarget) -> Vec<String> {
    match target {
        sqlparser::ast::AssignmentTarget::ColumnName(n) => {
            name_parts(n).pop().into_iter().collect()
        }
        sqlparser::ast::AssignmentTarget::Tuple(names) => {
            names.iter().filter_map(|n| name_parts(n).pop()).collect()
        }
    }
}

/// The lowest rule of any table the statement names (table functions excluded).
fn statement_risk(stmt: &Statement, matcher: &ColumnMatcher) -> Option<usize> {
    struct Risk<'m> {
        matcher: &'m ColumnMatcher,
        rule: Option<usize>,
        skip_next: bool,
    }
    impl Visitor for Risk<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
            if let Some((schema, table, _)) = only_table(tf) {
                self.add(schema.as_deref(), &table);
                self.skip_next = true;
            } else if let TableFactor::Table { args: Some(_), .. } = tf {
                self.skip_next = true;
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            if std::mem::take(&mut self.skip_next) {
                return ControlFlow::Continue(());
            }
            let (schema, table) = schema_table(name);
            self.add(schema.as_deref(), &table);
            ControlFlow::Continue(())
        }
    }
    impl Risk<'_> {
        fn add(&mut self, schema: Option<&str>, table: &str) {
            let rule = if is_statistics_values(schema, table, None) {
                self.matcher.lowest_rule()
            } else {
                self.matcher.table_may_have_masked(schema, table)
            };
            if let Some(rule) = rule {
                self.rule = Some(self.rule.map_or(rule, |r| r.min(rule)));
            }
        }
    }
    let mut v = Risk {
        matcher,
        rule: None,
        skip_next: false,
    };
    let _ = stmt.visit(&mut v);
    v.rule
}

// === impl TaintVisitor ===

/// Collects what an expression reads. Subqueries inside it are analysed as queries
/// with the current scope as their outer scope; their own insides are skipped here.
struct TaintVisitor<'a, 'm> {
    an: &'a mut Analyzer<'m>,
    taint: Tainted,
    nested: usize,
    skip_next_query: bool,
    /// A subtree already accounted for (by identity), skipped until left.
    skip_until: Option<*const Expr>,
}

impl Visitor for TaintVisitor<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.nested == 0 && self.skip_until.is_none() {
            // EXISTS yields a boolean about its rows, not their values.
            if !std::mem::take(&mut self.skip_next_query) {
                let slots = self.an.query(query);
                let t = self.an.slots_whole(&slots);
                join_into(&mut self.taint, t);
            }
        }
        self.nested += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.nested = self.nested.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.nested > 0 || self.skip_until.is_some() {
            return ControlFlow::Continue(());
        }
        let t = match expr {
            Expr::Function(f)
                if f.over.is_some() || f.filter.is_some() || function_name(&f.name) == "count" =>
            {
                let t = self.function_values(f);
                self.skip_until = Some(expr as *const Expr);
                t
            }
            Expr::Identifier(id) => self.an.resolve_unqualified(id),
            Expr::CompoundIdentifier(ids) => self.an.resolve_qualified(ids),
            Expr::QualifiedWildcard(name, _) => self.an.resolve_whole_row(name),
            Expr::Wildcard(_) => self.an.everything_in_scope(),
            Expr::Function(f) => self.function(f),
            Expr::Exists { subquery, .. } => {
                // Its rows' values do not flow out, but side effects in it
                // happen all the same.
                if self.an.effects {
                    let _ = self.an.query(subquery);
                }
                self.skip_next_query = true;
                None
            }
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::Placeholder(p)
                    if p.starts_with('@') && !p.starts_with("@@") =>
                {
                    self.an.dynamic(&format!("user variable {p}"))
                }
                _ => None,
            },
            _ => None,
        };
        join_into(&mut self.taint, t);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.skip_until == Some(expr as *const Expr) {
            self.skip_until = None;
        }
        ControlFlow::Continue(())
    }
}

impl TaintVisitor<'_, '_> {
    /// What flows into the value of a window or filtered aggregate, or a count:
    /// `OVER (PARTITION BY/ORDER BY)` and `FILTER (WHERE)` only select and order rows
    /// (like WHERE and ORDER BY), and a count carries no value of its argument.
    /// `WITHIN GROUP (ORDER BY x)` does count: `percentile_disc`/`mode` return x.
    fn function_values(&mut self, f: &Function) -> Tainted {
        if function_name(&f.name) == "count" {
            return None;
        }
        let mut t = self.function(f);
        let args = self.an.taint_of(&f.args);
        join_into(&mut t, args);
        let parameters = self.an.taint_of(&f.parameters);
        join_into(&mut t, parameters);
        let within_group = self.an.taint_of(&f.within_group);
        join_into(&mut t, within_group);
        t
    }

    /// Wildcard arguments are not expressions, so the visitor would not see them.
    fn function(&mut self, f: &Function) -> Tainted {
        let fname = function_name(&f.name);
        if self.an.effects && is_side_effect_function(&fname) {
            let args = self.an.taint_of(&f.args);
            self.an.note_write(
                &format!(
                    "passes to {fname}(), whose effect (a setting, notification, sequence, \
                     lock, large object or remote call) the workload can read back unmasked,"
                ),
                &args,
            );
        }
        let mut t = if is_dynamic_sql(&fname) {
            self.an.dynamic(&format!("{fname}()"))
        } else if self.an.matcher.is_opaque_function(&fname) {
            self.an.dynamic(&format!("user-defined function {fname}()"))
        } else if fname == "current_setting" && !is_builtin_setting(f) {
            // Custom settings (names with a dot) can carry values set from masked columns.
            self.an.dynamic("a custom setting")
        } else {
            None
        };
        if let FunctionArguments::List(list) = &f.args {
            for arg in &list.args {
                let (FunctionArg::Named { arg, .. }
                | FunctionArg::ExprNamed { arg, .. }
                | FunctionArg::Unnamed(arg)) = arg;
                let w = match arg {
                    FunctionArgExpr::QualifiedWildcard(name) => self.an.resolve_whole_row(name),
                    FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_)
                        if fname != "count" =>
                    {
                        self.an.everything_in_scope()
                    }
                    _ => None,
                };
                join_into(&mut t, w);
            }
        }
        t
    }
}

/// `current_setting('name')` of a built-in setting: built-in names have no dot.
fn is_builtin_setting(f: &Function) -> bool {
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(name) => !name.contains('.'),
            _ => false,
        },
        _ => false,
    }
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
        sqlparser::ast::CopySource::Table {
            table_name,
            columns,
        } => {
            let (schema, table) = schema_table(table_name);
            let names: Vec<String> = if !columns.is_empty() {
                columns.iter().map(norm).collect()
            } else if let Some(cols) = table_columns {
                cols.to_vec()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One PostgreSQL statement.
    fn pg_statement(sql: &str) -> Statement {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    fn matcher(globs: &[(&str, usize)]) -> ColumnMatcher {
        let globs: Vec<(String, usize)> =
            globs.iter().map(|(g, r)| ((*g).to_owned(), *r)).collect();
        ColumnMatcher::new(&globs).unwrap()
    }

    #[test]
    fn table_column_glob_matches_any_schema_and_case() {
        let m = matcher(&[("customers.ssn", 3)]);
        assert_eq!(m.match_column(None, "customers", "ssn"), Some(3));
        assert_eq!(m.match_column(Some("public"), "customers", "ssn"), Some(3));
        assert_eq!(m.match_column(Some("archive"), "Customers", "SSN"), Some(3));
        assert_eq!(m.match_column(Some("public"), "customers", "name"), None);
        assert_eq!(m.match_column(Some("public"), "customers2", "ssn"), None);
        assert!(!m.is_empty());
    }

    #[test]
    fn schema_glob_requires_the_schema_when_known() {
        let m = matcher(&[("billing.cards.number", 0)]);
        assert_eq!(m.match_column(Some("billing"), "cards", "number"), Some(0));
        assert_eq!(m.match_column(Some("BILLING"), "cards", "number"), Some(0));
        assert_eq!(m.match_column(Some("archive"), "cards", "number"), None);
        // Unknown schema (search_path): it might be billing.
        assert_eq!(m.match_column(None, "cards", "number"), Some(0));
    }

    #[test]
    fn star_globs_per_segment() {
        let m = matcher(&[
            ("*.password_hash", 1),
            ("public.customers.*", 2),
            ("secret_*.*", 4),
        ]);
        assert_eq!(m.match_column(None, "users", "password_hash"), Some(1));
        assert_eq!(
            m.match_column(Some("x"), "admins", "password_hash"),
            Some(1)
        );
        assert_eq!(m.match_column(Some("public"), "customers", "name"), Some(2));
        assert_eq!(m.match_column(Some("other"), "customers", "name"), None);
        assert_eq!(m.match_column(None, "secret_keys", "k"), Some(4));
        assert_eq!(m.match_column(None, "users", "login"), None);
        // A `*` never spans a dot: `*.password_hash` does not read as "any prefix".
        let m = matcher(&[("*.hash", 0)]);
        assert_eq!(m.match_column(None, "users", "password_hash"), None);
    }

    #[test]
    fn view_columns_come_from_the_view_definition() {
        let names = |cols: &[&str]| cols.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        let m = matcher(&[("customers.ssn", 1), ("*.pin", 0)]);
        // What pg_get_viewdef gives: `*` expanded, names qualified.
        let def = pg_statement(
            "SELECT customers.id, upper(customers.ssn) AS s, customers.name, to_jsonb(c.*) AS j \
             FROM customers c",
        );
        assert_eq!(
            plan_view(&def, &names(&["id", "s", "name", "j"]), &m),
            vec![("s".to_owned(), 1), ("j".to_owned(), 0)]
        );
        // A definition whose shape does not match the columns masks them all.
        let def = pg_statement("SELECT customers.id FROM customers");
        assert_eq!(
            plan_view(&def, &names(&["id", "x"]), &m),
            vec![("id".to_owned(), 0), ("x".to_owned(), 0)]
        );
        // A view over that view: its columns join the matcher.
        let extended = m.with_columns(&[
            ("public".into(), "v".into(), "s".into(), 1),
            ("other".into(), "Odd*View".into(), String::new(), 0),
        ]);
        assert_eq!(extended.match_column(Some("public"), "v", "s"), Some(1));
        assert_eq!(extended.match_column(Some("public"), "V", "S"), Some(1));
        assert_eq!(extended.match_column(Some("public"), "v", "id"), None);
        assert_eq!(extended.match_column(Some("other"), "v", "s"), None);
        // (`*.pin`, rule 0, could match a column of any table.)
        assert_eq!(extended.table_may_have_masked(Some("public"), "v"), Some(0));
        let only_views =
            ColumnMatcher::default().with_columns(&[("public".into(), "v".into(), "s".into(), 1)]);
        assert_eq!(
            only_views.table_may_have_masked(Some("public"), "v"),
            Some(1)
        );
        assert_eq!(only_views.table_may_have_masked(Some("public"), "w"), None);
        // Names are literal, not globs; an empty column is every column.
        assert_eq!(
            extended.match_column(Some("other"), "Odd*View", "a"),
            Some(0)
        );
        assert_eq!(extended.match_column(Some("other"), "OddView", "a"), None);
        let def = pg_statement("SELECT v.id, lower(v.s) AS t FROM v");
        assert_eq!(
            plan_view(&def, &names(&["id", "t"]), &extended),
            vec![("t".to_owned(), 1)]
        );
    }

    #[test]
    fn results_of_opaque_functions_are_masked_whole() {
        let out = |names: &[&str]| {
            names
                .iter()
                .map(|n| OutputColumn {
                    name: (*n).to_owned(),
                    origin: None,
                })
                .collect::<Vec<_>>()
        };
        let m = matcher(&[("customers.ssn", 2)]).with_functions(&["F_Ssn".to_owned()]);
        let masked = |sql: &str, cols: &[&str]| -> Vec<bool> {
            plan_rows(&pg_statement(sql), &out(cols), &m)
                .columns
                .iter()
                .map(|c| matches!(c, ColumnMask::Mask { rule: 2, .. }))
                .collect()
        };
        assert_eq!(masked("SELECT f_ssn(), 1", &["f_ssn", "x"]), [true, false]);
        assert_eq!(
            masked("SELECT upper(public.F_SSN(id)) FROM t", &["u"]),
            [true]
        );
        assert_eq!(masked("SELECT a FROM f_ssn() AS r(a)", &["a"]), [true]);
        // Only in WHERE: it selects rows, it gives no value.
        assert_eq!(
            masked("SELECT name FROM t WHERE f_ssn() = 'x'", &["name"]),
            [false]
        );
        assert_eq!(masked("SELECT other_fn(name) FROM t", &["o"]), [false]);
    }

    #[test]
    fn lowest_rule_wins() {
        let m = matcher(&[("customers.*", 5), ("*.ssn", 2), ("customers.ssn", 7)]);
        assert_eq!(m.match_column(None, "customers", "ssn"), Some(2));
        assert_eq!(m.match_column(None, "customers", "name"), Some(5));
        assert_eq!(m.table_may_have_masked(None, "customers"), Some(2));
        assert_eq!(m.lowest_rule(), Some(2));
    }

    #[test]
    fn table_may_have_masked_follows_table_and_schema() {
        let m = matcher(&[("customers.ssn", 0), ("billing.cards.number", 1)]);
        assert_eq!(
            m.table_may_have_masked(Some("public"), "customers"),
            Some(0)
        );
        assert_eq!(m.table_may_have_masked(None, "orders"), None);
        assert_eq!(m.table_may_have_masked(Some("billing"), "cards"), Some(1));
        assert_eq!(m.table_may_have_masked(Some("public"), "cards"), None);
        assert_eq!(m.table_may_have_masked(None, "cards"), Some(1));
        let wide = matcher(&[("*.password_hash", 0)]);
        assert_eq!(wide.table_may_have_masked(None, "anything"), Some(0));
    }

    #[test]
    fn quoted_segments_are_literal() {
        let m = matcher(&[(r#""my.table"."we*rd""#, 0), (r#"public."Mixed".col"#, 1)]);
        assert_eq!(m.match_column(None, "my.table", "we*rd"), Some(0));
        assert_eq!(m.match_column(None, "my.table", "weird"), None);
        assert_eq!(m.match_column(Some("public"), "mixed", "col"), Some(1));
        let m = matcher(&[(r#""a""b".c"#, 0)]);
        assert_eq!(m.match_column(None, "a\"b", "c"), Some(0));
    }

    #[test]
    fn empty_matcher() {
        let m = ColumnMatcher::new(&[]).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.match_column(None, "customers", "ssn"), None);
        assert_eq!(m.table_may_have_masked(None, "customers"), None);
    }

    #[test]
    fn invalid_patterns_are_named_in_the_error() {
        for bad in [
            "ssn",
            "a.b.c.d",
            "a..b",
            ".b",
            "a.",
            "",
            r#""unclosed.b"#,
            r#""a"x.b"#,
            r#"a"b".c"#,
        ] {
            let err = ColumnMatcher::new(&[(bad.to_owned(), 0)]).unwrap_err();
            assert!(
                matches!(err, MaskPlanError::PatternShape { ref pattern, .. } if pattern == bad),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        let err = ColumnMatcher::new(&[("customers.[ssn".to_owned(), 0)]).unwrap_err();
        assert!(matches!(err, MaskPlanError::PatternGlob { .. }), "{err:?}");
        assert!(err.to_string().contains("customers.[ssn"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn nesting_beyond_the_limit_is_uncertain_not_a_crash() {
        use sqlparser::dialect::PostgreSqlDialect;
        use sqlparser::parser::Parser;
        let depth = MAX_DEPTH + 6;
        let sql = format!(
            "SELECT {}name{} FROM customers",
            "(SELECT ".repeat(depth),
            ")".repeat(depth)
        );
        let run = move || {
            let stmts = Parser::new(&PostgreSqlDialect {})
                .with_recursion_limit(10 * depth)
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_statements())
                .unwrap();
            let m = matcher(&[("customers.ssn", 0)]);
            let out = [OutputColumn {
                name: "name".into(),
                origin: None,
            }];
            plan_rows(&stmts[0], &out, &m)
        };
        let plan = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
        match &plan.columns[..] {
            [
                ColumnMask::Mask {
                    rule: 0,
                    reason: MaskReason::Uncertain(why),
                },
            ] => assert!(why.contains("nests too deeply"), "{why}"),
            other => panic!("expected an uncertain mask, got {other:?}"),
        }
    }

    #[test]
    fn join_keeps_lowest_rule() {
        let t = |rule| {
            Some(Taint {
                rule,
                reason: MaskReason::Origin,
            })
        };
        assert_eq!(join(t(3), t(1)), t(1));
        assert_eq!(join(t(1), t(3)), t(1));
        assert_eq!(join(None, t(2)), t(2));
        assert_eq!(join(None, None), None);
    }
}
