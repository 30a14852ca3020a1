//! SQL classification: what a statement is, what it touches, and how to show it
//! without leaking data.
//!
//! [`parse`] splits a (possibly multi-statement) string into [`Statement`]s, each
//! with its kind(s), the tables and functions it references anywhere (joins,
//! subqueries, CTEs, DML inside CTEs, `EXPLAIN ANALYZE`, `PREPARE`…), whether
//! some `UPDATE`/`DELETE` in it has no `WHERE`, a redacted text and a
//! fingerprint. [`redact`] works on any text, even text that does not parse, so
//! the audit log never has to store a literal.
//!
//! # Decisions worth knowing when writing rules
//! - **Match rules against [`Statement::kinds`], not only [`Statement::kind`].**
//!   `kinds` is a conservative superset: every statement nested anywhere in the
//!   AST adds its kind (DML in CTEs, the inner statement of `EXPLAIN` even
//!   without `ANALYZE`, statements in procedural bodies), and every `SELECT`
//!   that reads (subqueries, `INSERT … SELECT`, `CREATE TABLE … AS`) adds
//!   `select`. `SELECT … INTO new_table` (Postgres) is `create`. `COPY t TO`
//!   also reads `t` (`select`) and `COPY t FROM` inserts into it (`insert`),
//!   an upsert (`ON CONFLICT DO UPDATE`, `ON DUPLICATE KEY UPDATE`) also
//!   updates (`update`), MySQL's `REPLACE` also deletes (`delete`),
//!   MariaDB's `CREATE OR REPLACE TABLE` also drops (`drop`), a write with
//!   `RETURNING` also reads (`select`) and a
//!   `MERGE` has the kind of each of its actions, as the server's privileges
//!   say. `kinds` is sorted in [`StatementKind`]'s
//!   order.
//! - `without_where` is also true when a `WHERE` clause does not certainly
//!   restrict the target's rows (read conservatively, see
//!   `WriteScope::restricts`): constants (`WHERE true`, `1 = 1`, `NOT
//!   false`, `$1 = $1`), subqueries (`(SELECT true)`, `EXISTS (SELECT 1)`),
//!   self-comparisons (`id = id`), `OR` with anything that does not restrict,
//!   negations, `LIKE`, and comparisons with unqualified names inside
//!   subqueries (PostgreSQL may resolve them to the target's own column:
//!   qualify them) or with a relation that reads the target table. `MERGE …
//!   WHEN MATCHED THEN UPDATE/DELETE` without a restricting `ON` (or clause
//!   condition), and `WHEN NOT MATCHED BY SOURCE THEN UPDATE/DELETE`, count
//!   too. It is set for nested statements, including under a plain
//!   `EXPLAIN`. Value-level tautologies (`id > -1`) are beyond syntax.
//! - `set` is for session state only. MySQL `SET GLOBAL …`, `SET @@global.…`
//!   and `SET PASSWORD` are `alter` (they change the server or an account);
//!   MySQL `RESET MASTER/REPLICA/…` is `other`. `COMMENT ON` is `alter`.
//! - Identifiers: unquoted ones are lower-cased; in Postgres quoted ones keep
//!   their case (`"Orders"` is another table than `orders`). In MySQL every
//!   identifier is lower-cased, quoted or not, because MySQL's case
//!   sensitivity depends on the server (`lower_case_table_names`) and function
//!   names are never case-sensitive: lower-casing errs toward matching a rule.
//! - Names are kept qualified as written (`public.orders`,
//!   `pg_catalog.pg_read_file`); relating qualified and unqualified names (the
//!   search_path) is left to the rule engine.
//! - CTE names are not tables, with SQL scoping: in a non-recursive `WITH`, a
//!   CTE body sees only the CTEs declared before it, so in
//!   `WITH orders AS (SELECT * FROM orders) …` the inner `orders` is the real
//!   table and is reported. The target of `INSERT`, `UPDATE`, `DELETE`,
//!   `MERGE` and `SELECT … INTO` is always a table, even when a CTE has its
//!   name.
//! - Table functions in `FROM` (`generate_series(…)`, `dblink(…)`,
//!   `unnest(…)`, `json_table`, `xmltable`) are functions, not tables. The
//!   procedure of `CALL p(…)` and the function a `CREATE TRIGGER` executes are
//!   reported as functions too.
//! - SQL given as text to the functions of [`SQL_TEXT_FUNCTIONS`]
//!   (`query_to_xml('select …')`, `ts_stat`, `dblink`, `table_to_xml('t')`,
//!   …) is parsed and classified with the statement (kinds, tables, functions,
//!   WHERE), or the statement is [`Statement::refused`] when that text is not
//!   a string literal or does not parse. Other names inside string literals
//!   (`'t'::regclass` elsewhere, `EXECUTE` of dynamic SQL in function bodies)
//!   are not visible; function bodies written as strings are opaque.
//! - Hostile input is an error, never a crash: inputs over [`MAX_SQL_BYTES`],
//!   statements with more than [`MAX_OPERATORS_PER_STATEMENT`] chaining
//!   operators or nested deeper than [`MAX_NESTING_DEPTH`] are refused with
//!   [`SqlError::TooLarge`] / [`SqlError::TooComplex`].
//! - Statements sqlparser 0.63 cannot parse (for example Postgres `DO`,
//!   `TABLE t`, `REFRESH MATERIALIZED VIEW`, `CLUSTER`, `VACUUM (…)`, MySQL
//!   `LOAD DATA INFILE`, `SELECT … INTO OUTFILE`, `UPDATE a, b SET …`) are a
//!   [`SqlError`]; the policy's `onParseError` decides what happens to them.
//!   `DO` gets its own [`SqlError::Unsupported`]. The test
//!   `sql_known_gaps_are_parse_errors` in `policy/tests/sql_cases.rs` lists
//!   the ones we know of.

mod bounds; // bounds on hostile input, checked on tokens
mod collect; // kinds, tables, functions referenced anywhere
mod embedded; // built-ins that run SQL given as text
mod kind; // a statement's kind
mod literal; // whether a statement's meaning depends on its literals
mod mysql_functions; // MySQL/MariaDB built-in functions, and stored ones
mod parse; // tokenizing, parsing, parse errors without literals
mod rewrite; // token rewrites for statements sqlparser refuses
#[cfg(test)]
mod tests;
mod text; // names, positions, redaction, fingerprint
mod unparsed; // the words of a MySQL text the parser cannot read
mod write_scope; // whether a WHERE restricts a write's target

pub use embedded::{
    MAX_EMBEDDING_DEPTH, SQL_TEXT_FUNCTIONS, SqlTextArgument, SqlTextFunction, sql_text_function,
};
pub use literal::literal_dependent;
pub use mysql_functions::{MYSQL_BUILTINS, MYSQL_SPACE_SENSITIVE, mysql_builtin};
pub(crate) use text::normalize_name;
pub use unparsed::{mysql_dynamic, mysql_kinds, mysql_words};

use std::fmt;

use sluice_crds::StatementKind;
use sqlparser::ast::{self, Visit};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::ParserError;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, TokenizerError};

use collect::Collector;
use kind::statement_kind;
use parse::parse_with;
use text::{LineIndex, fingerprint, normalize_ident, render_redacted};

/// Which SQL grammar to parse with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL (and MariaDB).
    Mysql,
}

impl SqlDialect {
    fn with_parser_dialect<R>(self, f: impl FnOnce(&dyn Dialect) -> R) -> R {
        match self {
            SqlDialect::Postgres => f(&PostgreSqlDialect {}),
            SqlDialect::Mysql => f(&MySqlDialect {}),
        }
    }

    /// Whether quoted identifiers are lower-cased too (see the module docs).
    fn folds_quoted_identifiers(self) -> bool {
        matches!(self, SqlDialect::Mysql)
    }
}

impl fmt::Display for SqlDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SqlDialect::Postgres => "postgres",
            SqlDialect::Mysql => "mysql",
        })
    }
}

/// One classified statement.
#[derive(Clone, Debug)]
pub struct Statement {
    /// The kind of the top-level statement (`EXPLAIN ANALYZE x` and
    /// `PREPARE n AS x` take `x`'s kind; a plain `EXPLAIN` is `select`).
    pub kind: StatementKind,
    /// `kind` plus the kind of every statement nested anywhere in it, sorted and
    /// deduplicated. Conservative: see the module docs. Rules should match this.
    pub kinds: Vec<StatementKind>,
    /// Every table or view referenced anywhere, normalised (see the module
    /// docs), qualified as written, CTE names excluded, sorted, deduplicated.
    pub tables: Vec<String>,
    /// Every function called anywhere (expressions, table functions in `FROM`,
    /// `CALL`'s procedure), normalised like tables, sorted, deduplicated.
    pub functions: Vec<String>,
    /// Some `UPDATE` or `DELETE`, top level or nested, has no `WHERE` (or a
    /// constant one).
    pub without_where: bool,
    /// This statement's own SQL text, without the separating `;`.
    pub text: String,
    /// `text` with every literal replaced by `?` and comments dropped; safe for
    /// the audit log.
    pub redacted: String,
    /// 16 hex characters identifying the statement's shape: literals, the
    /// length of literal lists, whitespace, comments and keyword case do not
    /// change it.
    pub fingerprint: String,
    /// `PREPARE name AS …`: the name; kind, tables and functions are the
    /// prepared statement's.
    pub prepare_name: Option<String>,
    /// `EXECUTE name`: the name (kind `other`; the caller maps it to what was
    /// prepared under that name).
    pub execute_name: Option<String>,
    /// Whether what Sluice decides or masks for this statement may depend on
    /// the *values* of its literals, not only on where they are: see
    /// [`literal_dependent`]. A cache that folds literal values (the
    /// sidecar's decision cache) must key such a statement by its exact text.
    pub literal_dependent: bool,
    /// Set when Sluice refuses the statement whatever the policies say, and
    /// why: it calls a function of [`SQL_TEXT_FUNCTIONS`] whose SQL is not a
    /// string literal, does not parse, or cannot be decided at all.
    pub refused: Option<String>,
    /// The statements in the SQL-text arguments of [`SQL_TEXT_FUNCTIONS`]
    /// calls (`query_to_xml('select …')`), classified like top-level
    /// statements. Their kinds, tables, functions and missing WHERE clauses
    /// are already merged into this statement's; they are kept for analyses
    /// that need their trees (writes of masked values).
    pub embedded: Vec<Statement>,
    /// The parsed statement, at most [`MAX_NESTING_DEPTH`] levels deep.
    pub ast: ast::Statement,
}

/// Why SQL text could not be classified. Messages never contain a literal value
/// from the SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text could not even be split into tokens (an unterminated string,
    /// quoted identifier or comment, usually).
    #[error(
        "the SQL text could not be tokenized ({dialect}): {message}; check quoting and comments \
         (statements Sluice cannot classify are handled by the policy's onParseError)"
    )]
    Tokenize {
        /// Grammar used.
        dialect: SqlDialect,
        /// What went wrong and where.
        message: String,
        /// The tokenizer's error.
        #[source]
        source: TokenizerError,
    },
    /// A statement did not parse.
    #[error(
        "SQL statement #{number} could not be parsed ({dialect}): {message} \
         (statements Sluice cannot classify are handled by the policy's onParseError)"
    )]
    Parse {
        /// 1-based position of the statement in a multi-statement string.
        number: usize,
        /// Grammar used.
        dialect: SqlDialect,
        /// What went wrong and where (line and column), literals redacted.
        message: String,
        /// The parser's error.
        #[source]
        source: ParserError,
    },
    /// The input is longer than [`MAX_SQL_BYTES`].
    #[error(
        "the SQL text is {bytes} bytes, more than the {limit} bytes Sluice classifies ({dialect}); \
         send bulk data with COPY or in smaller statements"
    )]
    TooLarge {
        /// Grammar used.
        dialect: SqlDialect,
        /// Size of the input.
        bytes: usize,
        /// [`MAX_SQL_BYTES`].
        limit: usize,
    },
    /// A statement is too long a chain, too deeply nested, or (with the rest
    /// of its text) has too many tokens to classify safely (see
    /// [`MAX_OPERATORS_PER_STATEMENT`], [`MAX_NESTING_DEPTH`],
    /// [`MAX_TOKENS`]). Refused whatever the policy's onParseError says
    /// (PostgreSQL's 54001, statement too complex).
    #[error(
        "SQL statement #{number} (from line {line}) has more {what} than the {limit} Sluice \
         classifies ({dialect}); use IN lists, arrays or ANY($1) instead of long AND/OR/UNION \
         chains, bind parameters or COPY instead of long inline literal lists, or split the \
         statement"
    )]
    TooComplex {
        /// 1-based position of the statement in a multi-statement string.
        number: usize,
        /// Grammar used.
        dialect: SqlDialect,
        /// Line where the statement starts (1-based).
        line: u64,
        /// What exceeded the limit.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A statement Sluice knows exists but its parser does not support.
    #[error(
        "SQL statement #{number} is a {what} statement (line {line}, column {column}), which \
         Sluice's SQL parser does not support ({dialect}); the policy's onParseError decides \
         whether it may run"
    )]
    Unsupported {
        /// 1-based position of the statement in a multi-statement string.
        number: usize,
        /// Grammar used.
        dialect: SqlDialect,
        /// The statement's keyword, e.g. `DO`.
        what: &'static str,
        /// Line of the statement's start (1-based).
        line: u64,
        /// Column of the statement's start (1-based).
        column: u64,
    },
}

/// Parses and classifies a (possibly multi-statement) SQL string. Empty input
/// or input with only comments and `;` gives `Ok(vec![])`.
pub fn parse(sql: &str, dialect: SqlDialect) -> Result<Vec<Statement>, SqlError> {
    dialect.with_parser_dialect(|d| parse_with(sql, dialect, d, 0))
}

/// Redacts SQL text for the audit log, even text that does not parse: every
/// literal token becomes `?` and comments are dropped. If the text cannot even
/// be tokenized, returns `<unparseable statement: N bytes>`, never the text.
pub fn redact(sql: &str, dialect: SqlDialect) -> String {
    if sql.len() > MAX_SQL_BYTES {
        return format!("<unparseable statement: {} bytes>", sql.len());
    }
    dialect.with_parser_dialect(|d| match Tokenizer::new(d, sql).tokenize_with_location() {
        Ok(tokens) => render_redacted(&tokens),
        Err(_) => format!("<unparseable statement: {} bytes>", sql.len()),
    })
}

/// Inputs longer than this are refused before tokenizing: tokens take several
/// times the text's size in memory. Bulk loads belong in `COPY`.
pub const MAX_SQL_BYTES: usize = 8 * 1024 * 1024;

/// Most tokens a SQL text may have, counted before it is tokenized by an
/// upper bound (`check_token_bound`): every byte that is not part of a
/// word or number (operators, punctuation, whitespace, quotes and the
/// characters of string literals alike), every word or number, and every
/// non-ASCII character. Tokens and the syntax tree take up to about 500
/// bytes per token together (release build, measured): at the bound, the
/// worst shape, `select 1,1,…` (400 kB), peaks at +202 MiB and 0.6 s; 2 MB
/// of it took +1005 MiB and 12.7 s before the bound, and is now refused at
/// no cost. The bound admits a 20,000-row, 4-column `INSERT … VALUES`. Large data belongs in
/// bind parameters or COPY, which are never parsed.
pub const MAX_TOKENS: usize = 400_000;

/// Most chaining operators (`AND`, `OR`, `+`, `||`, `::`, `UNION`, `[`…) one
/// statement may contain. Chains parse into trees as deep as they are long,
/// and deep trees overflow the stack when dropped or walked; this bound keeps
/// even a rejected statement's tree safe to drop.
pub const MAX_OPERATORS_PER_STATEMENT: usize = 10_000;

/// Deepest nesting of expressions, subqueries and set operations a classified
/// statement may have. Every [`Statement::ast`] is at most this deep (plus the
/// parser's own limit of 50 parenthesised levels), so code that walks or
/// clones it recursively needs a bounded stack: a derived `Clone` of an AST
/// this deep takes about 1 MiB of stack in a debug build.
pub const MAX_NESTING_DEPTH: usize = 256;

fn classify(
    sql: &str,
    lines: &LineIndex,
    tokens: &[TokenWithSpan],
    ast: ast::Statement,
    dialect: SqlDialect,
    number: usize,
    embedding: usize,
) -> Result<Statement, SqlError> {
    let significant = trim_whitespace(tokens);
    let text = match (significant.first(), significant.last()) {
        (Some(first), Some(last)) => {
            let from = lines.byte_offset(sql, first.span.start);
            let to = lines.byte_offset(sql, last.span.end);
            sql.get(from..to).unwrap_or(sql).to_string()
        }
        _ => String::new(),
    };

    let mut collector = Collector::new(dialect, embedding);
    let _ = ast.visit(&mut collector);
    collector.absorb_embedded();
    if collector.max_depth > MAX_NESTING_DEPTH {
        return Err(SqlError::TooComplex {
            number,
            dialect,
            line: significant.first().map_or(1, |t| t.span.start.line),
            what: "levels of nesting",
            limit: MAX_NESTING_DEPTH,
        });
    }

    let (prepare_name, execute_name) = match &ast {
        ast::Statement::Prepare { name, .. } => (
            Some(normalize_ident(name, dialect.folds_quoted_identifiers())),
            None,
        ),
        ast::Statement::Execute {
            name: Some(name), ..
        } => (None, Some(collector.name(name))),
        _ => (None, None),
    };
    let kind = statement_kind(&ast, dialect);
    collector.kinds.insert(kind);
    // MariaDB's CREATE OR REPLACE TABLE drops the table it replaces, rows
    // and all: rules naming `drop` hold for it.
    if matches!(&ast, ast::Statement::CreateTable(ct) if ct.or_replace) {
        collector.kinds.insert(StatementKind::Drop);
    }
    // A write with RETURNING reads the rows it writes (DELETE … RETURNING
    // in a transaction rolled back reads a whole table): rules naming
    // `select` hold for it.
    if match &ast {
        ast::Statement::Insert(i) => i.returning.is_some(),
        ast::Statement::Update(u) => u.returning.is_some(),
        ast::Statement::Delete(d) => d.returning.is_some(),
        _ => false,
    } {
        collector.kinds.insert(StatementKind::Select);
    }

    Ok(Statement {
        kind,
        kinds: collector.kinds.into_iter().collect(),
        tables: collector.tables.into_iter().collect(),
        functions: collector.functions.into_iter().collect(),
        without_where: collector.without_where,
        text,
        redacted: render_redacted(significant),
        fingerprint: fingerprint(significant),
        prepare_name,
        execute_name,
        literal_dependent: literal_dependent(&ast, significant),
        refused: collector.refused,
        embedded: collector.embedded,
        ast,
    })
}

fn trim_whitespace(tokens: &[TokenWithSpan]) -> &[TokenWithSpan] {
    let is_blank = |t: &TokenWithSpan| matches!(t.token, Token::Whitespace(_) | Token::EOF);
    let start = tokens
        .iter()
        .position(|t| !is_blank(t))
        .unwrap_or(tokens.len());
    let end = tokens
        .iter()
        .rposition(|t| !is_blank(t))
        .map_or(start, |i| i + 1);
    tokens.get(start..end).unwrap_or_default()
}
