//! The lineage model: taints, table references, slots, sources and scopes, and small name helpers.

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, ObjectNamePart, TableAlias, TableFactor,
    WildcardAdditionalOptions,
};

use super::MaskReason;

// === Lineage model ===

/// Maximum query nesting followed before giving up as uncertain.
pub(super) const MAX_DEPTH: usize = 64;

/// A reason to mask, before it becomes a [`ColumnMask`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Taint {
    pub(super) rule: usize,
    pub(super) reason: MaskReason,
}

pub(super) type Tainted = Option<Taint>;

/// Keeps the taint of the lowest rule (the first one on ties).
pub(super) fn join(a: Tainted, b: Tainted) -> Tainted {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.rule < a.rule { b } else { a }),
        (a, b) => a.or(b),
    }
}

pub(super) fn join_into(acc: &mut Tainted, t: Tainted) {
    *acc = join(acc.take(), t);
}

/// Turns a taint into an uncertainty with this reason, keeping its rule.
pub(super) fn as_uncertain(t: Tainted, reason: &str) -> Tainted {
    t.map(|t| Taint {
        rule: t.rule,
        reason: MaskReason::Uncertain(reason.to_owned()),
    })
}

/// A base table (or view) reference: its columns are not known here.
#[derive(Clone, Debug)]
pub(super) struct TableRef {
    pub(super) schema: Option<String>,
    pub(super) table: String,
    /// Names given by an alias column list; which columns they rename is unknown.
    pub(super) renamed: Vec<String>,
    /// Values this statement writes into named columns (visible through RETURNING).
    pub(super) written: Vec<(String, Taint)>,
    /// Values this statement writes into columns it cannot place.
    pub(super) written_all: Tainted,
}

impl TableRef {
    pub(super) fn new(schema: Option<String>, table: String) -> Self {
        Self {
            schema,
            table,
            renamed: Vec::new(),
            written: Vec::new(),
            written_all: None,
        }
    }

    pub(super) fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.table),
            None => self.table.clone(),
        }
    }

    pub(super) fn written_taint(&self, column: &str) -> Tainted {
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
pub(super) enum Slot {
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
pub(super) enum Rel {
    Table(TableRef),
    Derived(Vec<Slot>),
}

/// A FROM item under the name queries use to refer to it.
#[derive(Clone, Debug)]
pub(super) struct Source {
    /// Reference name (alias or table name), lowercased; empty when unnamed.
    pub(super) name: String,
    /// Schema of a base table referenced without alias, for `schema.table.col`.
    pub(super) schema: Option<String>,
    pub(super) rel: Rel,
    /// Whether `*` expands it (false for RETURNING's `old`/`new` and `excluded`).
    pub(super) in_star: bool,
}

#[derive(Default, Debug)]
pub(super) struct Scope {
    pub(super) sources: Vec<Source>,
    /// A USING/NATURAL join merges columns, shifting `*` positions.
    pub(super) merged_join: bool,
    /// Columns a predicate of this level equates with masked values
    /// (`s.seq = CAST(c.ssn AS INT)`): (the column as written, its parts
    /// lowercased, the taint of what it equals). Reading one returns that
    /// value (see `Analyzer::equate`).
    pub(super) equated: Vec<(Vec<String>, Taint)>,
}

/// What a statement returns, as far as the analysis can tell.
pub(super) enum Shape {
    /// Rows whose columns are these slots.
    Rows(Vec<Slot>),
    /// Output that holds no table data (EXPLAIN, SHOW).
    Metadata,
    /// Rows of a query that is not in this statement.
    External(&'static str),
    /// A statement kind the analysis does not know.
    Unknown,
}

pub(super) fn norm(id: &Ident) -> String {
    id.value.to_lowercase()
}

pub(super) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => norm(id),
            ObjectNamePart::Function(f) => norm(&f.name),
        })
        .collect()
}

/// (schema, table) of a possibly qualified table name; a catalog part is ignored.
pub(super) fn schema_table(name: &ObjectName) -> (Option<String>, String) {
    let mut parts = name_parts(name);
    let table = parts.pop().unwrap_or_default();
    (parts.pop(), table)
}

pub(super) fn function_name(name: &ObjectName) -> String {
    name_parts(name).pop().unwrap_or_default()
}

/// Built-in set-returning functions whose rows derive only from their arguments.
pub(super) const KNOWN_SET_FUNCTIONS: &[&str] = &[
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

pub(super) fn is_dynamic_sql(fname: &str) -> bool {
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
pub(super) fn is_statistics_values(
    schema: Option<&str>,
    table: &str,
    column: Option<&str>,
) -> bool {
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
pub(super) fn only_table(
    tf: &TableFactor,
) -> Option<(Option<String>, String, Option<&TableAlias>)> {
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
pub(super) fn certain_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(norm(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(norm),
        Expr::Nested(inner) => certain_name(inner),
        _ => None,
    }
}

pub(super) fn is_passthrough(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_passthrough(inner),
        _ => false,
    }
}

pub(super) fn wildcard_modified(opts: &WildcardAdditionalOptions) -> bool {
    opts.opt_ilike.is_some()
        || opts.opt_exclude.is_some()
        || opts.opt_except.is_some()
        || opts.opt_replace.is_some()
        || opts.opt_rename.is_some()
}

pub(super) fn alias_names(alias: Option<&TableAlias>) -> Vec<String> {
    alias
        .map(|a| a.columns.iter().map(|c| norm(&c.name)).collect())
        .unwrap_or_default()
}

/// Renames the leading columns of `slots` after an alias column list.
pub(super) fn apply_aliases(
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
