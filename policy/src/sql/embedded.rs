//! Functions that run SQL given as text (`query_to_xml`, `dblink`, ...): which argument holds the SQL.

use sqlparser::ast::{Expr, Ident, ObjectName, ObjectNamePart, Value};
use sqlparser::tokenizer::{Token, Tokenizer};

use super::SqlDialect;

// === Functions that run SQL given as text ===

/// Where a function of [`SQL_TEXT_FUNCTIONS`] takes the SQL it runs.
#[derive(Clone, Copy, Debug)]
pub enum SqlTextArgument {
    /// The argument at this 0-based position, when the call has `arity`
    /// arguments (any number when `None`).
    At {
        /// 0-based position.
        position: usize,
        /// The only arity with SQL text (`ts_rewrite(query, select)` has it,
        /// `ts_rewrite(query, target, substitute)` does not).
        arity: Option<usize>,
    },
    /// The last argument, or the one before a trailing `TRUE`/`FALSE`
    /// (dblink's `fail_on_error`).
    Last,
    /// Every argument that is not a number (crosstab's source and category
    /// queries).
    EveryText,
    /// The argument at this position names a table (`regclass`), which is
    /// read whole.
    Relation(usize),
    /// Cannot be decided: why.
    Refused(&'static str),
}

/// A function that runs SQL given as text, or reads tables named in text.
#[derive(Clone, Copy, Debug)]
pub struct SqlTextFunction {
    /// Its name, lower case (matched against the last part of a call's name,
    /// ignoring case, so `pg_catalog.query_to_xml` and a look-alike in
    /// another schema are both covered).
    pub name: &'static str,
    /// Where its SQL is.
    pub argument: SqlTextArgument,
}

const fn sql_at(name: &'static str, position: usize) -> SqlTextFunction {
    SqlTextFunction {
        name,
        argument: SqlTextArgument::At {
            position,
            arity: None,
        },
    }
}

const fn sql_text(name: &'static str, argument: SqlTextArgument) -> SqlTextFunction {
    SqlTextFunction { name, argument }
}

/// The one list of functions whose arguments carry SQL (or table names) that
/// the server runs (or reads) out of the statement's own sight: PostgreSQL's
/// built-ins and the contrib extensions that do so (functions of `pg_proc`
/// with a `text` argument that is executed as a query). A call is classified
/// with the statements of its SQL text: their kinds, tables, functions and
/// missing WHERE clauses count for every rule, exactly as if the client had
/// sent them. When the SQL is not a string literal (a parameter, a column,
/// a concatenation), is named by argument name, does not parse, or nests
/// deeper than [`MAX_EMBEDDING_DEPTH`], the statement is refused
/// ([`Statement::refused`](super::Statement::refused)) whatever the policies say, with the reason.
/// Their results may hold any table's data; the mask planner masks them
/// whole (see `mask_plan`).
///
/// Not here: `cursor_to_xml` (reads a cursor whose query was decided when it
/// was declared), user-defined functions (opaque bodies, masked whole),
/// procedural `DO` blocks (do not parse), and extensions outside contrib
/// (e.g. `cron.schedule`, `pg_background_launch` is covered).
pub const SQL_TEXT_FUNCTIONS: &[SqlTextFunction] = &[
    sql_at("query_to_xml", 0),
    sql_at("query_to_xmlschema", 0),
    sql_at("query_to_xml_and_xmlschema", 0),
    sql_at("ts_stat", 0),
    sql_text(
        "ts_rewrite",
        SqlTextArgument::At {
            position: 1,
            arity: Some(2),
        },
    ),
    sql_text("table_to_xml", SqlTextArgument::Relation(0)),
    sql_text("table_to_xmlschema", SqlTextArgument::Relation(0)),
    sql_text("table_to_xml_and_xmlschema", SqlTextArgument::Relation(0)),
    sql_text(
        "schema_to_xml",
        SqlTextArgument::Refused("reads every table of a schema"),
    ),
    sql_text(
        "schema_to_xmlschema",
        SqlTextArgument::Refused("reads every table of a schema"),
    ),
    sql_text(
        "schema_to_xml_and_xmlschema",
        SqlTextArgument::Refused("reads every table of a schema"),
    ),
    sql_text(
        "database_to_xml",
        SqlTextArgument::Refused("reads every table of the database"),
    ),
    sql_text(
        "database_to_xmlschema",
        SqlTextArgument::Refused("reads every table of the database"),
    ),
    sql_text(
        "database_to_xml_and_xmlschema",
        SqlTextArgument::Refused("reads every table of the database"),
    ),
    // contrib dblink: SQL run over another connection.
    sql_text("dblink", SqlTextArgument::Last),
    sql_text("dblink_exec", SqlTextArgument::Last),
    sql_text("dblink_send_query", SqlTextArgument::Last),
    sql_text("dblink_open", SqlTextArgument::Last),
    // contrib tablefunc.
    sql_text("crosstab", SqlTextArgument::EveryText),
    sql_text("crosstab2", SqlTextArgument::EveryText),
    sql_text("crosstab3", SqlTextArgument::EveryText),
    sql_text("crosstab4", SqlTextArgument::EveryText),
    sql_text(
        "connectby",
        SqlTextArgument::Refused(
            "builds and runs SQL from table and column names given as text, unquoted",
        ),
    ),
    // pg_background: SQL run by a background worker.
    sql_at("pg_background_launch", 0),
];

/// How many levels of SQL text inside SQL text are classified
/// (`query_to_xml('select query_to_xml(''…'', …)', …)`); deeper is refused.
pub const MAX_EMBEDDING_DEPTH: usize = 3;

/// The entry of [`SQL_TEXT_FUNCTIONS`] for a called name.
pub fn sql_text_function(name: &ObjectName) -> Option<&'static SqlTextFunction> {
    let last = match name.0.last()? {
        ObjectNamePart::Identifier(id) => id.value.to_lowercase(),
        ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
    };
    SQL_TEXT_FUNCTIONS.iter().find(|f| f.name == last)
}

/// The text of a string literal argument (also through parentheses and a
/// cast, `'select 1'::text`).
pub(super) fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s),
            Value::DollarQuotedString(d) => Some(&d.value),
            _ => None,
        },
        Expr::Nested(inner) => string_literal(inner),
        Expr::Cast { expr, .. } => string_literal(expr),
        _ => None,
    }
}

pub(super) fn is_boolean_keyword(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(v.value, Value::Boolean(_)))
}

pub(super) fn is_number_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => is_number_literal(expr),
        _ => false,
    }
}

/// A table name written as text (`'public.customers'`, `'"Odd"'`), read the
/// way PostgreSQL reads a `regclass` literal: identifiers separated by dots.
pub(super) fn relation_name(text: &str, dialect: SqlDialect) -> Option<ObjectName> {
    let tokens = dialect
        .with_parser_dialect(|d| Tokenizer::new(d, text).tokenize())
        .ok()?;
    let mut parts = Vec::new();
    let mut want_ident = true;
    for token in tokens {
        match token {
            Token::Whitespace(_) => {}
            Token::Word(w) if want_ident => {
                parts.push(ObjectNamePart::Identifier(Ident {
                    value: w.value,
                    quote_style: w.quote_style,
                    span: sqlparser::tokenizer::Span::empty(),
                }));
                want_ident = false;
            }
            Token::Period if !want_ident => want_ident = true,
            _ => return None,
        }
    }
    (!want_ident && !parts.is_empty()).then_some(ObjectName(parts))
}
