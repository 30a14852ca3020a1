//! Resolves result columns to their origin (schema, table, column) from the
//! table OID and attribute number in RowDescription.
//!
//! The lookups run on upstream sessions the sidecar opens for itself
//! (lazily, only when column masking applies), never on the client's: a side
//! query there would change the client's transaction state, fail inside an
//! aborted transaction, and mix its results into the client's stream. The
//! price is that a table created inside the client's still-open transaction
//! is not visible yet: such columns resolve to "unknown" and are masked whole.
//! Results are cached for the client session.
//!
//! The catalog sessions are shared by every client session of a Connection
//! ([`CatalogPool`]): at most [`PoolSettings::sessions`] of them (default 2,
//! `SLUICE_CATALOG_SESSIONS`), so 20 clients take 20 backends plus the pool,
//! not 40. A lookup waits its turn at most [`PoolSettings::wait`] (default
//! 5 s, `SLUICE_CATALOG_WAIT`). When no catalog session can be had (the
//! server refuses one, e.g. the role's connection limit, or the pool stays
//! busy) the lookup fails with [`CatalogError::Unavailable`], and the
//! statement fails with SQLSTATE 53300 naming the cause: data is never
//! altered (masked whole) because a lookup could not run. The lookups
//! match views and functions by name in any schema, temporary ones of other
//! sessions included, so a shared session sees what each client's would.
//!
//! It also looks up the views (and materialized views) a statement reads, so
//! that masking follows a masked column through a view: the server names the
//! view, not its base table, as a view column's origin (see
//! [`Catalog::extended_matcher`]). Likewise the inheritance relatives of the
//! tables it reads (partitions and their partitioned tables, `INHERITS`
//! children and parents): a partition's rows are its partitioned table's,
//! read under another name, so a rule naming either masks both.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_policy::engine::Reach;
use sluice_policy::mask_plan::{self, ColumnMatcher};
use sluice_policy::sql::{self, SqlDialect};

mod bodies;
mod implicit;
mod lookup;
mod pool;
mod related;
mod user_code;

pub use bodies::function_key;
pub use implicit::Implicit;
pub use pool::{CatalogError, CatalogPool, PoolSettings, TOO_MANY_CONNECTIONS, env};

/// How deep views over views are followed; deeper ones are masked whole.
const MAX_VIEW_DEPTH: usize = 16;

/// A view or materialized view, as the catalog session sees it.
#[derive(Debug)]
struct View {
    schema: String,
    name: String,
    /// Its columns in order (empty when they could not be read).
    columns: Vec<String>,
    /// Its definition (`pg_get_viewdef`), parsed, and the relation names it
    /// reads; `None` when it did not parse as one statement.
    definition: Option<(sql::Statement, Vec<RelName>)>,
}

/// A column of a view that carries masked values: (schema, view, column, rule).
pub type ViewColumn = (String, String, String, usize);

/// How deep inheritance (partitions of partitions, `INHERITS` chains) is
/// followed from a table a statement reads, up and down.
const MAX_INHERITANCE_DEPTH: usize = 32;

/// How many inheritance relatives of the tables one lookup names are read;
/// beyond, the tables are masked whole (strongest rule) rather than
/// planned from a partial list.
const MAX_RELATIVES: usize = 10_000;

/// A relation in the inheritance tree of a table a statement names: an
/// ancestor (its rows include the table's) or a descendant (the table's
/// rows include its). The same stored values are read under either name,
/// so a masking rule matching a column of one masks that column of the
/// other.
#[derive(Debug, Clone)]
struct Relative {
    /// The table named: (schema, name) as the catalog has it.
    table: RelName,
    /// The relative (schema, name), or `None` when there were more than
    /// [`MAX_RELATIVES`] (then every column of `table` is masked).
    relative: Option<RelName>,
    /// The relative's columns.
    columns: Vec<String>,
}

/// A relation: (schema, name); the schema is "" for a name written unqualified.
type RelName = (String, String);

/// Whether relations of this schema are the server's own (their views are
/// not followed by [`Catalog::related_names`]).
fn is_system_schema(schema: &str) -> bool {
    matches!(schema, "pg_catalog" | "information_schema")
}

/// `v` as an SQL string literal.
fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The rows of a `VALUES` list of string literals: `('a', 'b'), ('c', 'd')`.
fn values_list<'a>(rows: impl Iterator<Item = Vec<&'a str>>) -> String {
    rows.map(|row| {
        let cells: Vec<String> = row.into_iter().map(sql_literal).collect();
        format!("({})", cells.join(", "))
    })
    .collect::<Vec<_>>()
    .join(",")
}

/// The condition that the function `p` (an alias of `pg_proc`, in the
/// namespace `n`) is user-defined: outside the system schemas and no
/// extension's.
fn user_defined_function(p: &str, n: &str) -> String {
    format!(
        "{n}.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend x \
           WHERE x.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
           AND x.objid = {p}.oid AND x.deptype = 'e')"
    )
}

/// The lookup key of a relation name as written: (schema or "", name).
/// Names come normalised from the SQL classifier (unquoted ones lower-cased,
/// quoted ones as written, qualified as written); a catalog part is ignored.
fn name_key(written: &str) -> RelName {
    let mut parts = written.rsplit('.');
    let name = parts.next().unwrap_or_default().to_string();
    let schema = parts.next().unwrap_or_default().to_string();
    (schema, name)
}

/// Where a result column comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Schema of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// A table's name, its kind and its columns by attribute number.
#[derive(Debug, Clone, Default)]
struct TableInfo {
    schema: String,
    table: String,
    /// `pg_class.relkind`: `r` a table, `p` a partitioned table, `f` a
    /// foreign table, `v` a view, `m` a materialized view, …
    kind: String,
    columns: HashMap<i16, String>,
}

/// Whether rows of a relation of this `relkind` are the relation's own
/// stored columns (the masking rules name them as they are), not computed
/// from other relations as a view's are.
fn stores_its_columns(kind: &str) -> bool {
    matches!(kind, "r" | "p" | "f")
}

/// A client session's catalog: its caches of table OIDs, views and
/// functions; lookups borrow a session of the Connection's [`CatalogPool`].
pub struct Catalog {
    pool: Arc<CatalogPool>,
    tables: HashMap<u32, Option<TableInfo>>,
    /// Views by relation name as written ((schema or "", name)): every view
    /// or materialized view of that name (in that schema, or in any schema,
    /// temporary ones of other sessions included, when unqualified), by
    /// (schema, name). Matching names rather than resolving them with the
    /// catalog session's `search_path`, which may not be the client's, errs
    /// toward planning more views, never fewer.
    names: HashMap<RelName, Vec<RelName>>,
    views: HashMap<RelName, View>,
    /// Inheritance relatives of the tables of a relation name as written
    /// (same keys as `names`).
    relatives: HashMap<RelName, Vec<Relative>>,
    /// Names of `names` that stood for no relation when looked up (a
    /// relation of that name may be created, as a view, at any time): looked
    /// up again by [`Catalog::related_names`].
    absent: HashSet<RelName>,
    /// What the user-defined functions of a name (unqualified, lower case)
    /// may call (see [`bodies`]).
    bodies: HashMap<String, bodies::Body>,
    /// Function names (unqualified): whether a user-defined function has it.
    functions: HashMap<String, bool>,
    /// Relation names as written (keys of `names`) whose tables run
    /// user-defined code a statement does not name (see [`UserCode`]).
    user_code: HashMap<RelName, user_code::UserCode>,
    /// Whether the last [`Catalog::extended_matcher`] found a user-defined
    /// function called (by the statement or a view it reads).
    user_functions_called: bool,
    /// The user-defined functions the database runs without a statement
    /// naming them (see [`implicit`]), once read.
    implicit: Option<Vec<implicit::Implicit>>,
    /// Bumped whenever what this cache knows about names changes (a lookup
    /// of names it did not hold, a body read, an entry dropped, everything
    /// forgotten; not a lookup answered from the cache): a
    /// session that found a decision's names all known tables and
    /// built-ins may take that again without asking while it is unchanged
    /// (see `ClientLoop::decide`).
    revision: Arc<AtomicU64>,
}

impl Catalog {
    /// A catalog that borrows sessions of `pool` when it needs one.
    pub fn new(pool: Arc<CatalogPool>) -> Self {
        Catalog {
            pool,
            tables: HashMap::new(),
            names: HashMap::new(),
            views: HashMap::new(),
            relatives: HashMap::new(),
            absent: HashSet::new(),
            bodies: HashMap::new(),
            functions: HashMap::new(),
            user_code: HashMap::new(),
            user_functions_called: false,
            implicit: None,
            revision: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The counter of changes to what this cache knows about names (see
    /// the field), to be read without the catalog's lock.
    pub fn revision(&self) -> Arc<AtomicU64> {
        self.revision.clone()
    }

    /// Counts a change to what this cache knows about names.
    fn revised(&self) {
        self.revision.fetch_add(1, Ordering::Release);
    }

    /// Runs one lookup on a session of the pool.
    async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
        self.pool.acquire().await?.query(sql).await
    }

    /// The origin of each (table OID, attnum); `None` where the column is an
    /// expression (OID 0) or the table cannot be seen.
    pub async fn resolve(
        &mut self,
        columns: &[(u32, i16)],
    ) -> Result<Vec<Option<Origin>>, CatalogError> {
        // A relation seen before is asked again when it has a column this
        // cache does not know (`CREATE OR REPLACE VIEW` adds columns under
        // the same OID).
        let missing: HashSet<u32> = columns
            .iter()
            .filter(|(oid, attnum)| {
                *oid != 0
                    && match self.tables.get(oid) {
                        None => true,
                        Some(None) => false,
                        Some(Some(info)) => !info.columns.contains_key(attnum),
                    }
            })
            .map(|(oid, _)| *oid)
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            // Only integers are interpolated: no quoting issue.
            let sql = format!(
                "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, c.relkind \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                 WHERE c.oid IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped"
            );
            let rows = self.query(&sql).await?;
            for oid in &missing {
                self.tables.insert(*oid, None);
            }
            for row in rows {
                let [
                    Some(oid),
                    Some(schema),
                    Some(table),
                    Some(attnum),
                    Some(name),
                    Some(kind),
                ] = <[Option<String>; 6]>::try_from(row).unwrap_or_default()
                else {
                    continue;
                };
                let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
                    continue;
                };
                let info = self
                    .tables
                    .entry(oid)
                    .or_insert(None)
                    .get_or_insert_with(|| TableInfo {
                        schema: schema.clone(),
                        table: table.clone(),
                        kind: kind.clone(),
                        columns: HashMap::new(),
                    });
                info.columns.insert(attnum, name);
            }
        }
        Ok(columns
            .iter()
            .map(|(oid, attnum)| {
                let info = self.tables.get(oid)?.as_ref()?;
                Some(Origin {
                    schema: info.schema.clone(),
                    table: info.table.clone(),
                    column: info.columns.get(attnum)?.clone(),
                })
            })
            .collect())
    }

    /// Whether a result with these columns (table OID, attnum) reads
    /// anything but stored columns of tables: an expression (OID 0), a
    /// column of a view or materialized view, or of a relation the catalog
    /// session cannot see. Its plan must not rest on what this cache looked
    /// up before (call [`Catalog::forget_names`] first): a view or function
    /// created or replaced since — in this session, another one, another
    /// pod's, or on the server directly — changes what it computes, and a
    /// cached "no view of that name" or an old definition would leave its
    /// masked columns unmasked. A result of stored columns only is planned
    /// from the columns themselves, so cached names cannot hide anything
    /// from it. Call after [`Catalog::resolve`] of the same columns.
    pub fn reads_beyond_tables(&self, columns: &[(u32, i16)]) -> bool {
        columns.iter().any(|(oid, _)| {
            *oid == 0
                || self
                    .tables
                    .get(oid)
                    .and_then(Option::as_ref)
                    .is_none_or(|info| !stores_its_columns(&info.kind))
        })
    }

    /// Forgets the views and user-defined functions looked up by name (not
    /// the tables by OID: an OID names one relation for its lifetime, and
    /// its kind with it), so that the next plan looks them up again.
    pub fn forget_names(&mut self) {
        self.revised();
        self.names.clear();
        self.views.clear();
        self.relatives.clear();
        self.absent.clear();
        self.bodies.clear();
        self.functions.clear();
        self.user_code.clear();
        self.implicit = None;
    }

    /// The masking rules' `matcher` extended with what `statement` reads
    /// out of its own sight, or `None` when it reads nothing of the kind:
    /// - the columns that carry masked values of every view (or materialized
    ///   view) among the relations it names and `origins` (schema, table, from
    ///   the result's columns), views read by those views included: each
    ///   definition is planned with the matcher extended by the views it
    ///   reads. A definition that cannot be parsed, or views nested deeper
    ///   than [`MAX_VIEW_DEPTH`], mask every column of the view;
    /// - the user-defined functions it and those views call (see
    ///   [`ColumnMatcher::with_functions`]).
    pub async fn extended_matcher(
        &mut self,
        statement: Option<&sql::Statement>,
        origins: &[(&str, &str)],
        matcher: &ColumnMatcher,
    ) -> Result<Option<ColumnMatcher>, CatalogError> {
        let roots: Vec<RelName> = statement
            .iter()
            .flat_map(|s| s.tables.iter().map(|t| name_key(t)))
            .chain(origins.iter().map(|(s, t)| (s.to_string(), t.to_string())))
            .collect();
        let mut called: Vec<String> = statement.map(|s| s.functions.clone()).unwrap_or_default();
        // Look up the views by name, then the names their definitions read.
        let mut seen: HashSet<RelName> = HashSet::new();
        let mut wanted = roots.clone();
        let mut visited: Vec<RelName> = Vec::new();
        let mut depth = 0;
        while !wanted.is_empty() && depth <= MAX_VIEW_DEPTH {
            self.lookup(&wanted).await?;
            visited.extend(wanted.iter().cloned());
            let mut next = Vec::new();
            for id in wanted.iter().flat_map(|k| self.names.get(k)).flatten() {
                if !seen.insert(id.clone()) {
                    continue;
                }
                if let Some(View {
                    definition: Some((statement, reads)),
                    ..
                }) = self.views.get(id)
                {
                    called.extend(statement.functions.iter().cloned());
                    next.extend(reads.iter().cloned());
                }
            }
            wanted = next;
            depth += 1;
        }
        let opaque = self.user_functions(&called).await?;
        self.user_functions_called = !opaque.is_empty();
        let inherited = self.inherited_columns(&visited, matcher);
        let base = match (opaque.is_empty(), inherited.is_empty()) {
            (true, true) => None,
            (false, true) => Some(matcher.with_functions(&opaque)),
            (true, false) => Some(matcher.with_columns(&inherited)),
            (false, false) => Some(matcher.with_functions(&opaque).with_columns(&inherited)),
        };
        let base_ref = base.as_ref().unwrap_or(matcher);
        // Plan each view after the views it reads.
        let mut views = Vec::new();
        let mut planned: HashMap<RelName, Vec<ViewColumn>> = HashMap::new();
        for root in &roots {
            for id in self.names.get(root).into_iter().flatten() {
                self.plan_view(id, base_ref, &mut planned, 0);
                if let Some(columns) = planned.get(id) {
                    views.extend(columns.iter().cloned());
                }
            }
        }
        views.sort();
        views.dedup();
        let extended = if views.is_empty() {
            base
        } else {
            Some(base_ref.with_columns(&views))
        };
        // Casts and operators that run user-defined functions: any value
        // computed may be one's (see `implicit`).
        let implicit = match self.implicit_values() {
            Some(values) => values,
            None => self.implicit_code().await?.iter().any(|i| i.values),
        };
        Ok(if implicit {
            Some(extended.as_ref().unwrap_or(matcher).with_implicit_code())
        } else {
            extended
        })
    }

    /// The columns of the tables named by `keys` that a masking rule
    /// matches under the name of one of their inheritance relatives:
    /// (schema, table, column, rule), an empty column for every column
    /// (too many relatives to read).
    fn inherited_columns(&self, keys: &[RelName], matcher: &ColumnMatcher) -> Vec<ViewColumn> {
        let mut out: Vec<ViewColumn> = Vec::new();
        for r in keys.iter().flat_map(|k| self.relatives.get(k)).flatten() {
            let (schema, table) = r.table.clone();
            match &r.relative {
                Some((rs, rn)) => {
                    for column in &r.columns {
                        if let Some(rule) = matcher.match_column(Some(rs), rn, column) {
                            out.push((schema.clone(), table.clone(), column.clone(), rule));
                        }
                    }
                }
                None => {
                    if let Some(rule) = matcher.strongest_rule() {
                        out.push((schema, table, String::new(), rule));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Whether the last [`Catalog::extended_matcher`] found a user-defined
    /// function among what the statement (or a view it reads) calls.
    pub fn user_functions_called(&self) -> bool {
        self.user_functions_called
    }

    /// [`Catalog::user_functions`] from the cache alone: `None` when a name
    /// was not looked up in this session.
    pub fn user_functions_cached(&self, functions: &[String]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for f in functions {
            let name = f.rsplit('.').next().unwrap_or(f);
            if *self.functions.get(name)? {
                out.push(name.to_lowercase());
            }
        }
        Some(out)
    }

    /// Which of `functions` (names as the SQL classifier gives them) are
    /// user-defined: a function of that (unqualified) name exists outside
    /// `pg_catalog` and `information_schema` and belongs to no extension.
    /// Unqualified names, lower-cased.
    pub async fn user_functions(
        &mut self,
        functions: &[String],
    ) -> Result<Vec<String>, CatalogError> {
        let names: HashSet<String> = functions
            .iter()
            .filter_map(|f| f.rsplit('.').next())
            .map(str::to_string)
            .collect();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !self.functions.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            self.revised();
            let values = values_list(missing.iter().map(|n| vec![n.as_str()]));
            // Names are compared ignoring case: more functions count as
            // user-defined, never fewer.
            let sql = format!(
                "SELECT DISTINCT q.name FROM (VALUES {values}) AS q(name) \
                 JOIN pg_catalog.pg_proc p ON pg_catalog.lower(p.proname) = pg_catalog.lower(q.name) \
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE {user}",
                user = user_defined_function("p", "n"),
            );
            let rows = self.query(&sql).await?;
            for name in &missing {
                self.functions.insert((*name).clone(), false);
            }
            for mut row in rows {
                if let Some(Some(name)) = row.pop() {
                    self.functions.insert(name, true);
                }
            }
        }
        let mut out: Vec<String> = names
            .into_iter()
            .filter(|n| self.functions.get(n).copied().unwrap_or(true))
            .map(|n| n.to_lowercase())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Plans view `id` (and, first, the views it reads) into `planned`.
    fn plan_view(
        &self,
        id: &RelName,
        matcher: &ColumnMatcher,
        planned: &mut HashMap<RelName, Vec<ViewColumn>>,
        depth: usize,
    ) {
        if planned.contains_key(id) {
            return;
        }
        let Some(view) = self.views.get(id) else {
            return;
        };
        // Marks the view while its reads are planned (PostgreSQL has no
        // cyclic views; this only guards the walk).
        planned.insert(id.clone(), Vec::new());
        let found = match &view.definition {
            Some((statement, reads)) if depth < MAX_VIEW_DEPTH && !view.columns.is_empty() => {
                let mut inner = Vec::new();
                for read in reads {
                    for inner_id in self.names.get(read).into_iter().flatten() {
                        self.plan_view(inner_id, matcher, planned, depth + 1);
                        if let Some(c) = planned.get(inner_id) {
                            inner.extend(c.iter().cloned());
                        }
                    }
                }
                let extended = matcher.with_columns(&inner);
                mask_plan::plan_view(&statement.ast, &view.columns, &extended)
                    .into_iter()
                    .map(|(c, rule)| (view.schema.clone(), view.name.clone(), c, rule))
                    .collect()
            }
            // Not parsed, columns unknown, or too deep: every column (an
            // empty column name), with the strongest rule.
            _ => matcher
                .strongest_rule()
                .map(|rule| vec![(view.schema.clone(), view.name.clone(), String::new(), rule)])
                .unwrap_or_default(),
        };
        planned.insert(id.clone(), found);
    }

    /// Looks up the views, and the inheritance relatives of the tables, of
    /// the names in `keys` not seen yet (one query).
    async fn lookup(&mut self, keys: &[RelName]) -> Result<(), CatalogError> {
        let missing: HashSet<&RelName> = keys
            .iter()
            .filter(|k| !self.names.contains_key(*k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.revised();
        let values = values_list(
            missing
                .iter()
                .map(|(schema, name)| vec![schema.as_str(), name.as_str()]),
        );
        let rows = self.query(&lookup::lookup_sql(&values)).await?;
        for key in &missing {
            self.user_code
                .insert((*key).clone(), user_code::UserCode::default());
            self.names.insert((*key).clone(), Vec::new());
            self.relatives.insert((*key).clone(), Vec::new());
            self.absent.insert((*key).clone());
        }
        let mut counts: HashMap<RelName, usize> = HashMap::new();
        for row in rows {
            let [
                Some(kind),
                Some(q_schema),
                Some(q_name),
                Some(schema),
                Some(name),
                definition,
                other_schema,
                other_name,
                columns,
            ] = <[Option<String>; 9]>::try_from(row).unwrap_or_default()
            else {
                continue;
            };
            let key = (q_schema, q_name);
            self.absent.remove(&key);
            if kind == "t" || kind == "c" {
                // The table's (or a view's: `INSTEAD OF` triggers, rules)
                // code rides in the other columns' places.
                self.read_code(key, definition, other_schema, other_name, columns);
                continue;
            }
            // Unreadable column names: no columns, which masks every column
            // of a view (see `plan_view`).
            let columns: Vec<String> = columns
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default();
            if kind == "i" {
                let count = counts.entry(key.clone()).or_default();
                *count += 1;
                let entry = Relative {
                    table: (schema, name),
                    // One more than the bound (or a name missing): every column.
                    relative: other_schema
                        .zip(other_name)
                        .filter(|_| *count <= MAX_RELATIVES),
                    columns,
                };
                self.relatives.entry(key).or_default().push(entry);
                continue;
            }
            let Some(definition) = definition else {
                continue;
            };
            // Parsed once per session; a definition that is not one
            // statement masks every column of the view (see `plan_view`).
            let definition = sql::parse(&definition, SqlDialect::Postgres)
                .ok()
                .filter(|s| s.len() == 1)
                .and_then(|mut s| s.pop())
                .map(|s| {
                    let reads = s.tables.iter().map(|t| name_key(t)).collect();
                    (s, reads)
                });
            let id = (schema.clone(), name.clone());
            self.names.entry(key).or_default().push(id.clone());
            self.views.insert(
                id,
                View {
                    schema,
                    name,
                    columns,
                    definition,
                },
            );
        }
        Ok(())
    }

    /// The columns of a table in order with their type OIDs, looked up by
    /// name (for `COPY t TO STDOUT`). `None` when the table cannot be seen.
    pub async fn table_columns(
        &mut self,
        schema: Option<&str>,
        table: &str,
    ) -> Result<Option<Vec<(String, u32)>>, CatalogError> {
        let quote_ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let qualified = match schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(table)),
            None => quote_ident(table),
        };
        let literal = sql_literal(&qualified);
        let sql = format!(
            "SELECT a.attname, a.atttypid FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = pg_catalog.to_regclass({literal}) AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum"
        );
        let rows = self.query(&sql).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .filter_map(|mut r| {
                    // A type OID that does not read as one is unknown: 0,
                    // which is no text-like type, so its masks are NULL.
                    let type_oid = r.pop().flatten().and_then(|t| t.parse().ok()).unwrap_or(0);
                    Some((r.pop().flatten()?, type_oid))
                })
                .collect(),
        ))
    }
}
