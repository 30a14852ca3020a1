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
//!   `select`. `SELECT … INTO new_table` (Postgres) is `create`. `kinds` is
//!   sorted in [`StatementKind`]'s order.
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

use std::collections::BTreeSet;
use std::fmt;
use std::ops::ControlFlow;

use sha2::{Digest, Sha256};
use sluice_crds::StatementKind;
use sqlparser::ast::{
    self, CommentObject, CopySource, CreateTableLikeKind, Expr, FromTable, GrantObjects, Ident,
    ObjectName, ObjectNamePart, ObjectType, Query, Select, SetExpr, ShowCreateObject, TableFactor,
    TableWithJoins, UtilityOption, Value, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, TokenizerError};

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
/// upper bound ([`check_token_bound`]): every byte that is not part of a
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

fn tokenize(
    sql: &str,
    dialect: SqlDialect,
    d: &dyn Dialect,
) -> Result<Vec<TokenWithSpan>, SqlError> {
    Tokenizer::new(d, sql)
        .tokenize_with_location()
        .map_err(|source| SqlError::Tokenize {
            dialect,
            message: source.to_string(),
            source,
        })
}

/// Where parsing stopped: statement number, index of its first token, error.
type ParseFailure = (usize, usize, ParserError);

/// `embedding`: how many SQL-text arguments deep this text is (0: the
/// client's own text; see [`SQL_TEXT_FUNCTIONS`]).
fn parse_with(
    sql: &str,
    dialect: SqlDialect,
    d: &dyn Dialect,
    embedding: usize,
) -> Result<Vec<Statement>, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::TooLarge {
            dialect,
            bytes: sql.len(),
            limit: MAX_SQL_BYTES,
        });
    }
    check_token_bound(sql, dialect)?;
    let mut tokens = tokenize(sql, dialect, d)?;
    check_operator_counts(&tokens, dialect)?;
    if dialect == SqlDialect::Postgres {
        if let Some((number, start)) = copy_from_stdin_not_last(&tokens) {
            let source = ParserError::ParserError(
                "COPY … FROM STDIN must be the last statement of a query string: Sluice's SQL \
                 parser would read the statements after it as COPY data and could not classify \
                 them; send them in a separate query"
                    .to_string(),
            );
            return Err(parse_error(number, dialect, &tokens, start, source));
        }
        normalise_copy_booleans(&mut tokens);
    }
    // The parser takes the tokens; they are produced again afterwards rather
    // than cloned, so a large input is held in memory once.
    let mut parser = Parser::new(d).with_tokens_with_locations(tokens);
    let parsed = parse_all(&mut parser);
    drop(parser);
    let tokens = tokenize(sql, dialect, d)?;
    let parsed = parsed
        .map_err(|(number, start, source)| parse_error(number, dialect, &tokens, start, source))?;
    let lines = LineIndex::new(sql);
    parsed
        .into_iter()
        .enumerate()
        .map(|(i, (ast, start, end))| {
            let range = tokens.get(start..end).unwrap_or_default();
            classify(sql, &lines, range, ast, dialect, i + 1, embedding)
        })
        .collect()
}

/// Rewrites the value of a boolean `FREEZE` or `HEADER` option in the option
/// list of a PostgreSQL `COPY` to the `TRUE` / `FALSE` keyword, in place.
///
/// PostgreSQL takes `on`, `off`, `true`, `false`, `1`, `0` (bare or quoted)
/// for a boolean option, and `pgbench -i` sends `COPY … FROM STDIN WITH
/// (FREEZE ON)`; sqlparser 0.63 only knows `TRUE` and `FALSE` there, so the
/// statement would not parse and would be refused. The rewrite cannot change
/// what is decided: it touches only a value token that directly follows
/// `FREEZE` or `HEADER` as a whole item of the parenthesised option list
/// (the first parenthesis at the statement's top level after its `FROM` /
/// `TO`, before any `WHERE`), where PostgreSQL reads exactly that boolean;
/// the token count stays the same, so token ranges (redaction, fingerprint)
/// are those of the original text, and the text forwarded is the client's.
fn normalise_copy_booleans(tokens: &mut [TokenWithSpan]) {
    let mut i = 0;
    while i < tokens.len() {
        // The start of a statement: its first significant token.
        let Some(first) = next_significant(tokens, i) else {
            return;
        };
        let end = statement_end(tokens, first);
        if is_word(&tokens[first].token, "copy")
            && let Some(open) = copy_option_list(tokens, first + 1, end)
        {
            normalise_option_items(tokens, open + 1, end);
        }
        if is_word(&tokens[first].token, "vacuum") {
            normalise_vacuum_options(tokens, first + 1, end);
        }
        i = end + 1;
    }
}

/// A `COPY … FROM STDIN` followed by another statement in the same text:
/// its 1-based number and first token. sqlparser takes everything after such
/// a COPY's `;` as inline data, so the statements after it would vanish from
/// the classification while PostgreSQL runs them once the copy ends.
fn copy_from_stdin_not_last(tokens: &[TokenWithSpan]) -> Option<(usize, usize)> {
    let mut i = 0;
    let mut number = 0;
    while let Some(first) = next_significant(tokens, i) {
        let end = statement_end(tokens, first);
        if tokens[first].token != Token::SemiColon {
            number += 1;
        }
        if is_word(&tokens[first].token, "copy") && reads_stdin(tokens, first + 1, end) {
            let more = tokens
                .iter()
                .skip(end)
                .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon));
            return more.then_some((number, first));
        }
        i = end + 1;
    }
    None
}

/// Whether the COPY statement in `from..end` is `… FROM STDIN`.
fn reads_stdin(tokens: &[TokenWithSpan], from: usize, end: usize) -> bool {
    let mut depth = 0usize;
    for j in from..end {
        match &tokens[j].token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            tok if depth == 0 && is_word(tok, "from") => {
                return next_significant(tokens, j + 1)
                    .is_some_and(|k| k < end && is_word(&tokens[k].token, "stdin"));
            }
            _ => {}
        }
    }
    false
}

/// `VACUUM [FULL] [FREEZE] [VERBOSE] [ANALYZE] table`, PostgreSQL's older
/// option syntax (`pgbench -i` sends `vacuum analyze pgbench_branches`):
/// sqlparser 0.63 knows only `FULL`, and would read `ANALYZE` as the table.
/// The other three options are blanked (same token count). That cannot
/// change what is decided: `FREEZE`, `VERBOSE` and `ANALYZE` are reserved
/// words in PostgreSQL, so there they are options, never the table; and
/// VACUUM and ANALYZE are both of kind `other`, on the same table.
fn normalise_vacuum_options(tokens: &mut [TokenWithSpan], from: usize, end: usize) {
    let mut j = from;
    while let Some(k) = next_significant(tokens, j).filter(|&k| k < end) {
        let token = &tokens[k].token;
        if is_word(token, "full") {
        } else if is_word(token, "freeze") || is_word(token, "verbose") || is_word(token, "analyze")
        {
            tokens[k].token = Token::Whitespace(sqlparser::tokenizer::Whitespace::Space);
        } else {
            return;
        }
        j = k + 1;
    }
}

/// Index of the first non-whitespace token at or after `from`.
fn next_significant(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
}

/// Index of the `;` (or the end) closing the statement starting at `from`.
fn statement_end(tokens: &[TokenWithSpan], from: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(from) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::SemiColon if depth == 0 => return j,
            _ => {}
        }
    }
    tokens.len()
}

/// The `(` opening a COPY's option list: the first top-level parenthesis
/// after the top-level `FROM` or `TO`, unless a `WHERE` comes first.
fn copy_option_list(tokens: &[TokenWithSpan], from: usize, end: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut after_direction = false;
    for (j, t) in tokens.iter().enumerate().take(end).skip(from) {
        match &t.token {
            Token::LParen if depth == 0 && after_direction => return Some(j),
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            tok if depth == 0 && (is_word(tok, "from") || is_word(tok, "to")) => {
                after_direction = true;
            }
            tok if depth == 0 && is_word(tok, "where") => return None,
            _ => {}
        }
    }
    None
}

/// Within an option list starting at `from`: each top-level item that is
/// exactly `FREEZE <bool>` or `HEADER <bool>` gets its value rewritten.
fn normalise_option_items(tokens: &mut [TokenWithSpan], from: usize, end: usize) {
    let mut depth = 0usize;
    let mut item: Vec<usize> = Vec::new();
    for j in from..end {
        match tokens[j].token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => {
                rewrite_boolean_item(tokens, &item);
                return;
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                rewrite_boolean_item(tokens, &item);
                item.clear();
                continue;
            }
            Token::Whitespace(_) => continue,
            _ => {}
        }
        item.push(j);
    }
}

fn rewrite_boolean_item(tokens: &mut [TokenWithSpan], item: &[usize]) {
    let [name, value] = item else { return };
    if !(is_word(&tokens[*name].token, "freeze") || is_word(&tokens[*name].token, "header")) {
        return;
    }
    let text = match &tokens[*value].token {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
        Token::SingleQuotedString(s) => s.to_ascii_lowercase(),
        Token::Number(n, false) => n.clone(),
        _ => return,
    };
    let keyword = match text.as_str() {
        "on" | "true" | "1" => "TRUE",
        "off" | "false" | "0" => "FALSE",
        _ => return,
    };
    tokens[*value].token = Token::make_keyword(keyword);
}

/// Whether `token` is the unquoted word `word` (any case).
fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Parses statement after statement, remembering each one's token range.
fn parse_all(parser: &mut Parser<'_>) -> Result<Vec<(ast::Statement, usize, usize)>, ParseFailure> {
    let mut parsed = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token_ref().token == Token::EOF {
            return Ok(parsed);
        }
        let number = parsed.len() + 1;
        let start = parser.index();
        let ast = parser
            .parse_statement()
            .map_err(|source| (number, start, source))?;
        let end = parser.index();
        let next = parser.peek_token_ref();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            let found = if is_literal(&next.token) {
                "a literal".to_string()
            } else {
                next.token.to_string()
            };
            let source = ParserError::ParserError(format!(
                "Expected: end of statement, found: {found} at {}",
                next.span.start
            ));
            return Err((number, start, source));
        }
        parsed.push((ast, start, end));
    }
}

/// Refuses a text whose token count may exceed [`MAX_TOKENS`], before any
/// token is allocated. The count is an upper bound of what sqlparser's
/// tokenizer produces (a token starts at a non-word byte, at the start of a
/// word, or where digits and letters meet, `0x1F` being two tokens), so no
/// quoting or comment can hide tokens from it: it does not try to read
/// quotes at all.
fn check_token_bound(sql: &str, dialect: SqlDialect) -> Result<(), SqlError> {
    let mut count = 0usize;
    let mut number = 1;
    let mut line = 1u64;
    let mut statement_line = 1u64;
    let mut previous: Option<u8> = None;
    for &b in sql.as_bytes() {
        let word = b.is_ascii_alphanumeric() || b == b'_';
        let starts = match previous {
            _ if b >= 0x80 => b & 0xC0 != 0x80,
            Some(p) if word && (p.is_ascii_alphanumeric() || p == b'_') => {
                p.is_ascii_digit() != b.is_ascii_digit()
            }
            _ => true,
        };
        if starts {
            count += 1;
            if count > MAX_TOKENS {
                return Err(SqlError::TooComplex {
                    number,
                    dialect,
                    line: statement_line,
                    what: "tokens (words, numbers, operators, spaces and string characters)",
                    limit: MAX_TOKENS,
                });
            }
        }
        match b {
            b'\n' => line += 1,
            b';' => {
                number += 1;
                statement_line = line;
            }
            _ => {}
        }
        previous = Some(b);
    }
    Ok(())
}

/// Refuses statements with more chaining operators than
/// [`MAX_OPERATORS_PER_STATEMENT`], before they are parsed into deep trees.
/// Statements are approximated by `;`-separated segments (a procedural body
/// is counted per inner statement, which is where its expressions are).
fn check_operator_counts(tokens: &[TokenWithSpan], dialect: SqlDialect) -> Result<(), SqlError> {
    let mut number = 1;
    let mut count = 0usize;
    let mut line = 1;
    let mut previous: Option<&Token> = None;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => {
                if previous.is_some() {
                    number += 1;
                }
                count = 0;
                previous = None;
            }
            token => {
                if previous.is_none() {
                    line = t.span.start.line;
                }
                if is_chaining(token) && ends_operand(previous) {
                    count += 1;
                    if count > MAX_OPERATORS_PER_STATEMENT {
                        return Err(SqlError::TooComplex {
                            number,
                            dialect,
                            line,
                            what: "chained operators",
                            limit: MAX_OPERATORS_PER_STATEMENT,
                        });
                    }
                }
                previous = Some(token);
            }
        }
    }
    Ok(())
}

/// Keywords that join two operands and so can chain without parentheses.
const CHAINING_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "xor",
    "not",
    "is",
    "like",
    "ilike",
    "rlike",
    "regexp",
    "similar",
    "between",
    "in",
    "collate",
    "at",
    "overlaps",
    "union",
    "except",
    "intersect",
    "minus",
    "div",
    "mod",
    "escape",
    "operator",
    "isnull",
    "notnull",
    "member",
];

/// Tokens that may build a left-deep chain (`a + b + c`, `a[1][2]`):
/// operators and the keywords above. Identifiers, literals, placeholders,
/// separators and closing brackets do not.
fn is_chaining(token: &Token) -> bool {
    match token {
        Token::Word(w) => {
            w.quote_style.is_none()
                && CHAINING_KEYWORDS
                    .iter()
                    .any(|k| w.value.eq_ignore_ascii_case(k))
        }
        Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::Period
        | Token::SemiColon
        | Token::Placeholder(_)
        | Token::Whitespace(_)
        | Token::EOF => false,
        other => !is_literal(other),
    }
}

/// Reserved words after which `-`, `+` or `*` are a sign or a wildcard. Only
/// reserved words: a column may be called `first` or `next`, and the `+` in
/// `first + first` must count.
const PREFIX_CONTEXT_KEYWORDS: &[&str] = &[
    "select",
    "where",
    "and",
    "or",
    "xor",
    "not",
    "then",
    "else",
    "when",
    "case",
    "limit",
    "offset",
    "having",
    "on",
    "returning",
    "distinct",
    "all",
    "any",
    "some",
    "array",
    "fetch",
    "in",
    "is",
    "like",
    "ilike",
    "between",
];

/// Whether the previous token ends an operand, so that an operator after it is
/// binary (`a - 1`) rather than a prefix (`(-1`, `= -1`, `SELECT *`), which
/// the parser bounds itself. In doubt, an operand: counting too much only
/// lowers the limit, counting too little would let a deep chain through.
fn ends_operand(previous: Option<&Token>) -> bool {
    match previous {
        None
        | Some(
            Token::LParen
            | Token::LBracket
            | Token::LBrace
            | Token::Comma
            | Token::Period
            | Token::SemiColon,
        ) => false,
        Some(Token::Word(w)) => {
            w.quote_style.is_some()
                || !PREFIX_CONTEXT_KEYWORDS
                    .iter()
                    .any(|k| w.value.eq_ignore_ascii_case(k))
        }
        Some(
            Token::RParen | Token::RBracket | Token::RBrace | Token::Placeholder(_) | Token::EOF,
        ) => true,
        Some(token) => is_literal(token),
    }
}

/// Builds a parse error whose message names the offending token unless it is a
/// literal, and recognises statements we know the parser lacks.
fn parse_error(
    number: usize,
    dialect: SqlDialect,
    tokens: &[TokenWithSpan],
    start: usize,
    source: ParserError,
) -> SqlError {
    let first = tokens
        .get(start..)
        .unwrap_or_default()
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)));
    if let Some(first) = first
        && let Token::Word(w) = &first.token
        && w.quote_style.is_none()
        && w.value.eq_ignore_ascii_case("do")
    {
        return SqlError::Unsupported {
            number,
            dialect,
            what: "DO",
            line: first.span.start.line,
            column: first.span.start.column,
        };
    }
    let source = scrub_parser_error(source, tokens);
    let message = source.to_string();
    SqlError::Parse {
        number,
        dialect,
        message,
        source,
    }
}

/// sqlparser's messages can quote what they stopped at (`found: 'secret'`,
/// `Could not parse '123' as u64`): every literal of the input, as printed
/// and as its bare value, is replaced by `?` in the message. The location
/// suffix (`at Line: 1, Column: 8`) is kept as is.
fn scrub_parser_error(error: ParserError, tokens: &[TokenWithSpan]) -> ParserError {
    match error {
        ParserError::ParserError(m) => ParserError::ParserError(scrub_message(&m, tokens)),
        ParserError::TokenizerError(m) => ParserError::TokenizerError(scrub_message(&m, tokens)),
        ParserError::RecursionLimitExceeded => ParserError::RecursionLimitExceeded,
    }
}

fn scrub_message(message: &str, tokens: &[TokenWithSpan]) -> String {
    let (head, tail) = match message.rfind(" at Line: ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let mut head = head.to_string();
    for token in tokens.iter().map(|t| &t.token).filter(|t| is_literal(t)) {
        let printed = token.to_string();
        let value = literal_value(token).unwrap_or_default();
        let debug = format!("{value:?}");
        // Longest first, so a quoted form goes whole rather than leaving quotes.
        let mut needles = [debug.as_str(), printed.as_str(), value];
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for needle in needles {
            // One-character values are left alone: they cannot hide much and
            // replacing them would mangle the rest of the message.
            if needle.chars().count() > 1 && head.contains(needle) {
                head = head.replace(needle, "?");
            }
        }
    }
    head + tail
}

/// The value a literal token carries, as sqlparser stores it.
fn literal_value(token: &Token) -> Option<&str> {
    match token {
        Token::Number(v, _)
        | Token::SingleQuotedString(v)
        | Token::DoubleQuotedString(v)
        | Token::TripleSingleQuotedString(v)
        | Token::TripleDoubleQuotedString(v)
        | Token::SingleQuotedByteStringLiteral(v)
        | Token::DoubleQuotedByteStringLiteral(v)
        | Token::TripleSingleQuotedByteStringLiteral(v)
        | Token::TripleDoubleQuotedByteStringLiteral(v)
        | Token::SingleQuotedRawStringLiteral(v)
        | Token::DoubleQuotedRawStringLiteral(v)
        | Token::TripleSingleQuotedRawStringLiteral(v)
        | Token::TripleDoubleQuotedRawStringLiteral(v)
        | Token::NationalStringLiteral(v)
        | Token::EscapedStringLiteral(v)
        | Token::UnicodeStringLiteral(v)
        | Token::HexStringLiteral(v) => Some(v),
        Token::DollarQuotedString(d) => Some(&d.value),
        Token::QuoteDelimitedStringLiteral(q) | Token::NationalQuoteDelimitedStringLiteral(q) => {
            Some(&q.value)
        }
        _ => None,
    }
}

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

// === Kinds ===

/// The kind of one statement, not looking at what is nested in it (the
/// collector adds nested kinds). Exhaustive on purpose: a new sqlparser variant
/// must be classified by a person, not fall into `Other` silently.
fn statement_kind(stmt: &ast::Statement, dialect: SqlDialect) -> StatementKind {
    use StatementKind as K;
    use ast::Statement as S;
    match stmt {
        S::Query(q) => query_kind(q, dialect),
        S::Explain {
            analyze,
            options,
            statement,
            ..
        } => {
            if explain_runs(*analyze, options.as_deref()) {
                statement_kind(statement, dialect)
            } else {
                K::Select
            }
        }
        S::Prepare { statement, .. } => statement_kind(statement, dialect),

        // Reads and introspection.
        S::ExplainTable { .. }
        | S::ShowFunctions { .. }
        | S::ShowVariable { .. }
        | S::ShowStatus { .. }
        | S::ShowVariables { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowCatalogs { .. }
        | S::ShowDatabases { .. }
        | S::ShowProcessList { .. }
        | S::ShowSchemas { .. }
        | S::ShowCharset(_)
        | S::ShowObjects(_)
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowCollation { .. }
        // FETCH reads rows of a cursor; DECLARE … CURSOR FOR <query> defines the read.
        | S::Fetch { .. } => K::Select,
        S::Declare { stmts } => {
            if stmts.iter().any(|d| d.for_query.is_some()) {
                K::Select
            } else {
                K::Other
            }
        }

        S::Insert(_) => K::Insert,
        S::Update(_) => K::Update,
        S::Delete(_) => K::Delete,
        S::Merge(_) => K::Merge,

        // Bulk data in or out of the database, or to files.
        S::Copy { .. }
        | S::CopyIntoSnowflake { .. }
        | S::LoadData { .. }
        | S::Directory { .. }
        | S::Unload { .. }
        | S::ExportData(_) => K::Copy,

        S::CreateView(_)
        | S::CreateTable(_)
        | S::CreateVirtualTable { .. }
        | S::CreateIndex(_)
        | S::CreateRole(_)
        | S::CreateSecret { .. }
        | S::CreateServer(_)
        | S::CreatePolicy(_)
        | S::CreateConnector(_)
        | S::CreateOperator(_)
        | S::CreateOperatorFamily(_)
        | S::CreateOperatorClass(_)
        | S::CreateTextSearch(_)
        | S::CreateExtension(_)
        | S::CreateCollation(_)
        | S::CreateSchema { .. }
        | S::CreateDatabase { .. }
        | S::CreateFunction(_)
        | S::CreateTrigger(_)
        | S::CreateProcedure { .. }
        | S::CreateMacro { .. }
        | S::CreateStage { .. }
        | S::CreateFileFormat { .. }
        | S::CreateWarehouse(_)
        | S::CreateSequence { .. }
        | S::CreateDomain(_)
        | S::CreateType { .. }
        | S::CreateUser(_)
        // DuckDB's INSTALL adds an extension, like CREATE EXTENSION.
        | S::Install { .. } => K::Create,

        S::AlterTable(_)
        | S::AlterSchema(_)
        | S::AlterIndex { .. }
        | S::AlterView { .. }
        | S::AlterFunction(_)
        | S::AlterType(_)
        | S::AlterCollation(_)
        | S::AlterOperator(_)
        | S::AlterOperatorFamily(_)
        | S::AlterOperatorClass(_)
        | S::AlterTextSearch(_)
        | S::AlterRole { .. }
        | S::AlterPolicy(_)
        | S::AlterConnector { .. }
        | S::AlterUser(_)
        | S::RenameTable(_)
        // COMMENT ON changes catalog metadata of an existing object.
        | S::Comment { .. } => K::Alter,

        S::Drop { .. }
        | S::DropFunction(_)
        | S::DropDomain(_)
        | S::DropProcedure { .. }
        | S::DropSecret { .. }
        | S::DropPolicy(_)
        | S::DropConnector { .. }
        | S::DropExtension(_)
        | S::DropOperator(_)
        | S::DropOperatorFamily(_)
        | S::DropOperatorClass(_)
        | S::DropTrigger(_) => K::Drop,

        S::Truncate(_) => K::Truncate,
        S::Grant(_) => K::Grant,
        // DENY (SQL Server) takes permissions away, like REVOKE.
        S::Revoke(_) | S::Deny(_) => K::Revoke,

        // Session state: variables, role, authorization, current database.
        S::Set(set) if dialect == SqlDialect::Mysql && mysql_set_is_server_change(set) => K::Alter,
        S::Set(_) | S::Use(_) | S::AlterSession { .. } | S::Discard { .. } => K::Set,
        // Postgres RESET restores a setting; MySQL has no such statement and
        // its RESET MASTER / REPLICA / PERSIST are administration (deleting
        // binary logs, replication state).
        S::Reset(_) => match dialect {
            SqlDialect::Postgres => K::Set,
            SqlDialect::Mysql => K::Other,
        },

        S::Call(_) => K::Call,

        S::StartTransaction { .. } | S::Savepoint { .. } => K::Begin,
        S::Commit { .. } | S::ReleaseSavepoint { .. } => K::Commit,
        S::Rollback { .. } => K::Rollback,

        // Everything below has no StatementKind of its own. Rules can still
        // name `other`; nested statements (procedural blocks) add their kinds.
        S::Execute { .. }
        | S::Deallocate { .. }
        | S::Analyze(_)
        | S::Msck(_)
        | S::Load { .. }
        | S::Case(_)
        | S::If(_)
        | S::While(_)
        | S::Raise(_)
        | S::Open(_)
        | S::Close { .. }
        | S::AttachDatabase { .. }
        | S::AttachDuckDBDatabase { .. }
        | S::DetachDuckDBDatabase { .. }
        | S::Flush { .. }
        | S::Assert { .. }
        | S::Kill { .. }
        | S::Cache { .. }
        | S::UNCache { .. }
        | S::Pragma { .. }
        | S::Lock(_)
        | S::LockTables { .. }
        | S::UnlockTables
        | S::OptimizeTable { .. }
        | S::LISTEN { .. }
        | S::UNLISTEN { .. }
        | S::NOTIFY { .. }
        | S::List(_)
        | S::Put { .. }
        | S::Remove(_)
        | S::RaisError { .. }
        | S::Throw(_)
        | S::Print(_)
        | S::WaitFor(_)
        | S::Return(_)
        | S::Vacuum(_) => K::Other,
    }
}

/// MySQL `SET GLOBAL x = …` / `SET @@global.x = …` change the server for
/// everyone and `SET PASSWORD` changes an account: `alter`, not a session
/// setting.
fn mysql_set_is_server_change(set: &ast::Set) -> bool {
    let global = |scope: Option<&ast::ContextModifier>, name: &ObjectName| {
        let name = normalize_name(name, true);
        matches!(scope, Some(ast::ContextModifier::Global))
            || name.starts_with("@@global.")
            || name.starts_with("@@persist")
            || name == "password"
    };
    match set {
        ast::Set::SingleAssignment {
            scope, variable, ..
        } => global(scope.as_ref(), variable),
        ast::Set::MultipleAssignments { assignments } => assignments
            .iter()
            .any(|a| global(a.scope.as_ref(), &a.name)),
        ast::Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().any(|v| global(None, v))
        }
        _ => false,
    }
}

/// The kind of a query statement: its body decides (`WITH … DELETE` is a
/// delete, `SELECT … INTO t` in Postgres a create).
fn query_kind(query: &Query, dialect: SqlDialect) -> StatementKind {
    set_expr_kind(&query.body, dialect)
}

fn set_expr_kind(body: &SetExpr, dialect: SqlDialect) -> StatementKind {
    match body {
        SetExpr::Select(select) => {
            if creates_table(select, dialect) {
                StatementKind::Create
            } else {
                StatementKind::Select
            }
        }
        SetExpr::Query(q) => query_kind(q, dialect),
        SetExpr::SetOperation { left, .. } => set_expr_kind(left, dialect),
        SetExpr::Values(_) | SetExpr::Table(_) => StatementKind::Select,
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            statement_kind(s, dialect)
        }
    }
}

/// `SELECT … INTO x` creates table `x` in Postgres; in MySQL the targets are
/// variables.
fn creates_table(select: &Select, dialect: SqlDialect) -> bool {
    select.into.is_some() && dialect == SqlDialect::Postgres
}

/// Whether an EXPLAIN executes its statement: `EXPLAIN ANALYZE …` or
/// `EXPLAIN (ANALYZE [value]) …` with a value that is not clearly false.
fn explain_runs(analyze: bool, options: Option<&[UtilityOption]>) -> bool {
    analyze
        || options.unwrap_or_default().iter().any(|o| {
            o.name.value.eq_ignore_ascii_case("analyze") && !is_false_option(o.arg.as_ref())
        })
}

fn is_false_option(arg: Option<&Expr>) -> bool {
    let falsy = |s: &str| {
        ["false", "off", "0", "no"]
            .iter()
            .any(|f| s.eq_ignore_ascii_case(f))
    };
    match arg {
        None => false,
        Some(Expr::Identifier(id)) => falsy(&id.value),
        Some(Expr::Value(v)) => match &v.value {
            Value::Boolean(b) => !b,
            Value::Number(n, _) => falsy(n),
            Value::SingleQuotedString(s) => falsy(s),
            _ => false,
        },
        Some(_) => false,
    }
}

// === Collector ===

/// The CTEs a query declares, and how many of them are visible right now (a
/// non-recursive CTE body sees only the CTEs declared before it).
struct CteScope {
    names: Vec<String>,
    /// The CTE bodies, to recognise them when the visitor enters them. The
    /// pointers only identify nodes of the tree being visited: they are
    /// compared, never dereferenced.
    bodies: Vec<*const Query>,
    recursive: bool,
    visible: usize,
}

/// Walks a statement with sqlparser's visitor and collects kinds, tables,
/// functions and missing WHERE clauses.
struct Collector {
    dialect: SqlDialect,
    kinds: BTreeSet<StatementKind>,
    tables: BTreeSet<String>,
    functions: BTreeSet<String>,
    without_where: bool,
    scopes: Vec<CteScope>,
    /// Names the visitor reports as relations that are not tables: table
    /// functions (`FROM f(…)`) and the database of `SHOW TABLES FROM db`.
    non_table_relations: Vec<*const ObjectName>,
    /// Current and deepest nesting of statements, queries, expressions and
    /// table factors (see [`MAX_NESTING_DEPTH`]).
    depth: usize,
    max_depth: usize,
    /// How many SQL-text arguments deep the statement is.
    embedding: usize,
    /// Statements found in SQL-text arguments.
    embedded: Vec<Statement>,
    /// Why the statement is refused whatever the policies say.
    refused: Option<String>,
}

impl Collector {
    fn new(dialect: SqlDialect, embedding: usize) -> Self {
        Self {
            embedding,
            embedded: Vec::new(),
            refused: None,
            dialect,
            kinds: BTreeSet::new(),
            tables: BTreeSet::new(),
            functions: BTreeSet::new(),
            without_where: false,
            scopes: Vec::new(),
            non_table_relations: Vec::new(),
            depth: 0,
            max_depth: 0,
        }
    }

    fn enter(&mut self) {
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn name(&self, name: &ObjectName) -> String {
        normalize_name(name, self.dialect.folds_quoted_identifiers())
    }

    fn ident(&self, ident: &Ident) -> String {
        normalize_ident(ident, self.dialect.folds_quoted_identifiers())
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return false;
        };
        let wanted = self.ident(ident);
        self.scopes
            .iter()
            .any(|s| s.names.iter().take(s.visible).any(|n| *n == wanted))
    }

    fn add_table(&mut self, name: &ObjectName) {
        if !self.is_cte(name) {
            let name = self.name(name);
            self.tables.insert(name);
        }
    }

    /// A table that is written to: never a CTE reference.
    fn add_target(&mut self, name: &ObjectName) {
        let name = self.name(name);
        self.tables.insert(name);
    }

    fn add_target_factor(&mut self, factor: &TableFactor) {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        {
            match alias {
                Some(alias) if self.dialect == SqlDialect::Postgres && is_bare_only(name) => {
                    self.add_target(&ObjectName::from(vec![alias.name.clone()]));
                }
                _ => self.add_target(name),
            }
        }
    }

    /// Foreign keys reference another table, outside the visitor's reach.
    fn note_column(&mut self, column: &ast::ColumnDef) {
        for option in &column.options {
            if let ast::ColumnOption::ForeignKey(fk) = &option.option {
                self.add_table(&fk.foreign_table);
            }
        }
    }

    fn note_constraint(&mut self, constraint: &ast::TableConstraint) {
        if let ast::TableConstraint::ForeignKey(fk) = constraint {
            self.add_table(&fk.foreign_table);
        }
    }

    fn add_tables<'a>(&mut self, names: impl IntoIterator<Item = &'a ObjectName>) {
        for name in names {
            self.add_table(name);
        }
    }

    fn add_function(&mut self, name: &ObjectName) {
        // Function names are case-insensitive unless quoted in Postgres, and
        // never case-sensitive in MySQL.
        let name = self.name(name);
        self.functions.insert(name);
    }

    /// Refuses the statement (the first reason is kept).
    fn refuse(&mut self, why: String) {
        self.refused.get_or_insert(why);
    }

    /// A call of `name` with `args`: when it is one of [`SQL_TEXT_FUNCTIONS`],
    /// the SQL (or table) it is given is classified as part of this statement,
    /// or the statement is refused.
    fn note_sql_text_call(&mut self, name: &ObjectName, args: &[ast::FunctionArg]) {
        let Some(function) = sql_text_function(name) else {
            return;
        };
        let shown = self.name(name);
        let mut exprs = Vec::with_capacity(args.len());
        for arg in args {
            match arg {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => exprs.push(e),
                _ => {
                    return self.refuse(format!(
                        "{shown}() runs SQL given as text; Sluice decides that SQL only when the \
                         arguments are given by position, not by name or as a wildcard"
                    ));
                }
            }
        }
        let texts: Vec<&Expr> = match function.argument {
            SqlTextArgument::Refused(why) => {
                return self.refuse(format!("{shown}() {why}; Sluice refuses it"));
            }
            SqlTextArgument::At { position, arity } => {
                if arity.is_some_and(|a| a != exprs.len()) {
                    return;
                }
                exprs.get(position).copied().into_iter().collect()
            }
            SqlTextArgument::Last => {
                let mut rest = exprs.as_slice();
                if let [head @ .., last] = rest
                    && is_boolean_keyword(last)
                {
                    rest = head;
                }
                rest.last().copied().into_iter().collect()
            }
            SqlTextArgument::EveryText => exprs
                .iter()
                .copied()
                .filter(|e| !is_number_literal(e))
                .collect(),
            SqlTextArgument::Relation(position) => {
                let Some(arg) = exprs.get(position) else {
                    return;
                };
                match string_literal(arg).and_then(|text| relation_name(text, self.dialect)) {
                    Some(table) => self.add_table(&table),
                    None => self.refuse(format!(
                        "{shown}() reads the table named by its argument {}, which is not a \
                         string literal holding a table name; Sluice decides it only when it \
                         is (write it as '{shown}(''schema.table'', …)')",
                        position + 1
                    )),
                }
                return;
            }
        };
        for text in texts {
            let Some(sql) = string_literal(text) else {
                return self.refuse(format!(
                    "{shown}() runs SQL given as text, and here that text is computed (a \
                     parameter, column or expression); Sluice decides such SQL only when it \
                     is a string literal, so write the query into the call"
                ));
            };
            if self.embedding >= MAX_EMBEDDING_DEPTH {
                return self.refuse(format!(
                    "{shown}() runs SQL given as text nested more than {MAX_EMBEDDING_DEPTH} \
                     levels deep in other SQL text"
                ));
            }
            let parsed = self
                .dialect
                .with_parser_dialect(|d| parse_with(sql, self.dialect, d, self.embedding + 1));
            match parsed {
                Ok(statements) if statements.is_empty() => {}
                Ok(statements) => self.embedded.extend(statements),
                Err(e) => {
                    return self.refuse(format!(
                        "{shown}() runs SQL given as text, and Sluice could not classify that \
                         SQL: {e}"
                    ));
                }
            }
        }
    }

    /// Merges what the embedded statements do into this statement.
    fn absorb_embedded(&mut self) {
        for inner in &self.embedded {
            self.kinds.extend(inner.kinds.iter().copied());
            self.tables.extend(inner.tables.iter().cloned());
            self.functions.extend(inner.functions.iter().cloned());
            self.without_where |= inner.without_where;
            if let Some(why) = &inner.refused {
                self.refused.get_or_insert_with(|| why.clone());
            }
        }
    }

    fn note_where(&mut self, selection: Option<&Expr>, scope: &WriteScope) {
        if !selection.is_some_and(|e| scope.restricts(e)) {
            self.without_where = true;
        }
    }

    /// `MERGE … WHEN MATCHED THEN UPDATE/DELETE` writes the target rows the
    /// `ON` condition (and the clause's own `AND`) matches: without a
    /// restricting one, every row. `WHEN NOT MATCHED BY SOURCE THEN
    /// UPDATE/DELETE` writes the rows that match nothing: always bulk.
    fn note_merge(&mut self, merge: &ast::Merge) {
        let scope = WriteScope::new(
            std::iter::once(&merge.table),
            std::iter::once(&merge.source),
        );
        let on_restricts = scope.restricts(&merge.on);
        for clause in &merge.clauses {
            if !matches!(
                clause.action,
                ast::MergeAction::Update(_) | ast::MergeAction::Delete { .. }
            ) {
                continue;
            }
            let bulk = match clause.clause_kind {
                ast::MergeClauseKind::Matched => {
                    !on_restricts
                        && !clause
                            .predicate
                            .as_ref()
                            .is_some_and(|p| scope.restricts(p))
                }
                _ => true,
            };
            if bulk {
                self.without_where = true;
            }
        }
    }

    /// A query starts: if it is the body of a CTE of the enclosing query, the
    /// CTEs visible inside it change; then its own CTEs open a scope.
    fn enter_query(&mut self, query: &Query) {
        if let Some(scope) = self.scopes.last_mut()
            && let Some(i) = scope.bodies.iter().position(|b| std::ptr::eq(*b, query))
        {
            scope.visible = if scope.recursive {
                scope.names.len()
            } else {
                i
            };
        }
        let (names, bodies, recursive) = match &query.with {
            Some(with) => (
                with.cte_tables
                    .iter()
                    .map(|c| self.ident(&c.alias.name))
                    .collect(),
                with.cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                with.recursive,
            ),
            None => (Vec::new(), Vec::new(), false),
        };
        self.scopes.push(CteScope {
            names,
            bodies,
            recursive,
            visible: 0,
        });
        self.note_table_exprs(&query.body);
        // Set operations nest without a visitor hook of their own.
        let chain = set_operation_depth(&query.body);
        self.max_depth = self.max_depth.max(self.depth + chain);
    }

    fn leave_query(&mut self, query: &Query) {
        self.scopes.pop();
        // After a CTE body, the rest of the enclosing query sees all its CTEs.
        if let Some(scope) = self.scopes.last_mut()
            && scope.bodies.iter().any(|b| std::ptr::eq(*b, query))
        {
            scope.visible = scope.names.len();
        }
    }

    /// `TABLE t` inside a set operation is not visited as a relation.
    ///
    /// Iterative: a chain of set operations is as deep as it is long (up
    /// to [`MAX_OPERATORS_PER_STATEMENT`] before the depth check refuses
    /// it), and recursing over 4,000 `UNION`s overflowed a 2 MiB stack
    /// (found by tests/fuzz_sql.rs).
    fn note_table_exprs(&mut self, body: &SetExpr) {
        let mut pending = vec![body];
        while let Some(body) = pending.pop() {
            match body {
                SetExpr::Table(table) => {
                    if let Some(name) = &table.table_name {
                        let ident = |v: &str| Ident::new(v);
                        let mut parts = Vec::new();
                        if let Some(schema) = &table.schema_name {
                            parts.push(ObjectNamePart::Identifier(ident(schema)));
                        }
                        parts.push(ObjectNamePart::Identifier(ident(name)));
                        self.add_table(&ObjectName(parts));
                    }
                    self.kinds.insert(StatementKind::Select);
                }
                SetExpr::SetOperation { left, right, .. } => {
                    // Right first onto the stack: left is noted first, as before.
                    pending.push(right);
                    pending.push(left);
                }
                _ => {}
            }
        }
    }

    /// Tables a statement names outside of the places sqlparser's visitor
    /// reports as relations, plus WHERE checks and procedure calls.
    fn note_statement(&mut self, stmt: &ast::Statement) {
        use ast::Statement as S;
        match stmt {
            // The target of INSERT, UPDATE, DELETE and MERGE is always a real
            // table, even when a CTE has the same name
            // (`WITH t AS (…) DELETE FROM t` deletes from table t).
            S::Insert(insert) => {
                if let ast::TableObject::TableName(name) = &insert.table {
                    self.add_target(name);
                }
            }
            S::Merge(merge) => {
                self.add_target_factor(&merge.table);
                self.note_merge(merge);
            }
            S::Update(update) => {
                let targets = std::iter::once(&update.table.relation)
                    .chain(update.table.joins.iter().map(|j| &j.relation));
                let from = match &update.from {
                    Some(
                        ast::UpdateTableFromKind::BeforeSet(v)
                        | ast::UpdateTableFromKind::AfterSet(v),
                    ) => v.as_slice(),
                    None => &[],
                };
                let scope = WriteScope::new(targets, from.iter().flat_map(relations_of));
                self.note_where(update.selection.as_ref(), &scope);
                self.add_target_factor(&update.table.relation);
                for join in &update.table.joins {
                    self.add_target_factor(&join.relation);
                }
            }
            S::Delete(delete) => {
                let from = match &delete.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t.as_slice(),
                };
                let scope = WriteScope::new(
                    from.iter().flat_map(relations_of),
                    delete.using.iter().flatten().flat_map(relations_of),
                );
                self.note_where(delete.selection.as_ref(), &scope);
                if delete.tables.is_empty() {
                    for t in from {
                        self.add_target_factor(&t.relation);
                    }
                }
                // MySQL multi-table DELETE names its targets, often by alias;
                // an alias is not a table (its table is in FROM anyway).
                let aliases = table_aliases(from.iter().chain(delete.using.iter().flatten()));
                for name in &delete.tables {
                    let is_alias = match name.0.as_slice() {
                        [ObjectNamePart::Identifier(id)] => aliases.contains(&self.ident(id)),
                        _ => false,
                    };
                    if !is_alias {
                        self.add_target(name);
                    }
                }
            }
            S::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => self.add_table(table_name),
            S::LockTables { tables } => {
                for t in tables {
                    self.add_table(&ObjectName::from(vec![t.table.clone()]));
                }
            }
            S::Drop {
                object_type,
                names,
                table,
                ..
            } => {
                if matches!(
                    object_type,
                    ObjectType::Table | ObjectType::View | ObjectType::MaterializedView
                ) {
                    self.add_tables(names);
                }
                self.add_tables(table);
            }
            S::CreateTable(ct) => {
                self.add_table(&ct.name);
                if let Some(
                    CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like),
                ) = &ct.like
                {
                    self.add_table(&like.name);
                }
                self.add_tables(&ct.clone);
                for column in &ct.columns {
                    self.note_column(column);
                }
                for constraint in &ct.constraints {
                    self.note_constraint(constraint);
                }
                self.add_tables(ct.inherits.iter().flatten());
                self.add_tables(&ct.partition_of);
            }
            S::CreateView(view) => self.add_table(&view.name),
            S::AlterTable(alter) => {
                for operation in &alter.operations {
                    match operation {
                        ast::AlterTableOperation::AddConstraint { constraint, .. } => {
                            self.note_constraint(constraint);
                        }
                        ast::AlterTableOperation::AddColumn { column_def, .. } => {
                            self.note_column(column_def);
                        }
                        _ => {}
                    }
                }
            }
            S::RenameTable(renames) => {
                for r in renames {
                    self.add_table(&r.old_name);
                    self.add_table(&r.new_name);
                }
            }
            S::Grant(ast::Grant {
                objects: Some(objects),
                ..
            })
            | S::Revoke(ast::Revoke {
                objects: Some(objects),
                ..
            }) => {
                if let GrantObjects::Tables(names) | GrantObjects::Views(names) = objects {
                    self.add_tables(names);
                }
            }
            S::Comment {
                object_type,
                object_name,
                ..
            } => match object_type {
                CommentObject::Table | CommentObject::View | CommentObject::MaterializedView => {
                    self.add_table(object_name);
                }
                CommentObject::Column => {
                    if let Some((_, table)) = object_name.0.split_last()
                        && !table.is_empty()
                    {
                        self.add_table(&ObjectName(table.to_vec()));
                    }
                }
                _ => {}
            },
            S::ShowCreate {
                obj_type: ShowCreateObject::Table | ShowCreateObject::View,
                obj_name,
            } => self.add_table(obj_name),
            S::LoadData { table_name, .. } => self.add_table(table_name),
            S::Vacuum(v) => self.add_tables(&v.table_name),
            S::Flush { tables, .. } => self.add_tables(tables),
            S::OptimizeTable { name, .. } => self.add_table(name),
            S::Call(function) => self.add_function(&function.name),
            // `SHOW TABLES FROM shop` names a database or schema, which the
            // visitor would report as a relation; only SHOW COLUMNS names a table.
            S::ShowTables { show_options, .. }
            | S::ShowViews { show_options, .. }
            | S::ShowSchemas { show_options, .. }
            | S::ShowDatabases { show_options, .. }
            | S::ShowCatalogs { show_options, .. }
            | S::ShowObjects(ast::ShowObjects { show_options, .. }) => {
                if let Some(ast::ShowStatementIn {
                    parent_name: Some(parent),
                    ..
                }) = &show_options.show_in
                {
                    self.non_table_relations.push(parent);
                }
            }
            S::CreateTrigger(trigger) => {
                if let Some(body) = &trigger.exec_body {
                    self.add_function(&body.func_desc.name);
                }
                self.add_table(&trigger.table_name);
                self.add_tables(&trigger.referenced_table_name);
            }
            _ => {}
        }
    }
}

impl Visitor for Collector {
    type Break = std::convert::Infallible;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Self::Break> {
        self.enter();
        self.enter_query(query);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<Self::Break> {
        self.leave();
        self.leave_query(query);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Self::Break> {
        self.kinds.insert(StatementKind::Select);
        if creates_table(select, self.dialect)
            && let Some(into) = &select.into
        {
            self.kinds.insert(StatementKind::Create);
            for target in &into.targets {
                match target {
                    Expr::Identifier(id) => self.add_target(&ObjectName::from(vec![id.clone()])),
                    Expr::CompoundIdentifier(ids) => {
                        self.add_target(&ObjectName::from(ids.clone()));
                    }
                    _ => {}
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Self::Break> {
        if !self
            .non_table_relations
            .iter()
            .any(|f| std::ptr::eq(*f, relation))
        {
            self.add_table(relation);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<Self::Break> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Self::Break> {
        self.enter();
        match factor {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                self.non_table_relations.push(name);
                self.add_function(name);
                self.note_sql_text_call(name, &args.args);
            }
            // sqlparser 0.63 reads Postgres `FROM ONLY t` / `UPDATE ONLY t` as
            // table `only` aliased `t`. ONLY is reserved in Postgres, so it
            // cannot be a table name there: the alias is the table.
            TableFactor::Table {
                name,
                alias: Some(alias),
                args: None,
                ..
            } if self.dialect == SqlDialect::Postgres && is_bare_only(name) => {
                self.non_table_relations.push(name);
                self.add_table(&ObjectName::from(vec![alias.name.clone()]));
            }
            TableFactor::Function { name, args, .. } => {
                self.add_function(name);
                self.note_sql_text_call(name, args);
            }
            TableFactor::UNNEST { .. } => {
                self.functions.insert("unnest".to_string());
            }
            TableFactor::JsonTable { .. } => {
                self.functions.insert("json_table".to_string());
            }
            TableFactor::OpenJsonTable { .. } => {
                self.functions.insert("openjson".to_string());
            }
            TableFactor::XmlTable { .. } => {
                self.functions.insert("xmltable".to_string());
            }
            // Tables, subqueries, joins, expressions (visited separately) and
            // dialect-specific forms whose names the visitor reports.
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Self::Break> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Self::Break> {
        self.enter();
        if let Expr::Function(function) = expr {
            self.add_function(&function.name);
            match &function.args {
                ast::FunctionArguments::List(list) => {
                    self.note_sql_text_call(&function.name, &list.args);
                }
                ast::FunctionArguments::None => self.note_sql_text_call(&function.name, &[]),
                ast::FunctionArguments::Subquery(_) => {
                    if sql_text_function(&function.name).is_some() {
                        self.refuse(format!(
                            "{}() runs SQL given as text, and here its argument is a subquery; \
                             Sluice decides that SQL only when it is a string literal",
                            self.name(&function.name)
                        ));
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _stmt: &ast::Statement) -> ControlFlow<Self::Break> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, stmt: &ast::Statement) -> ControlFlow<Self::Break> {
        self.enter();
        let kind = statement_kind(stmt, self.dialect);
        self.kinds.insert(kind);
        self.note_statement(stmt);
        ControlFlow::Continue(())
    }
}

/// How deeply set operations nest in a query body (`a UNION b UNION c` is a
/// left-deep chain), without recursion.
fn set_operation_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(body, 0usize)];
    while let Some((expr, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if let SetExpr::SetOperation { left, right, .. } = expr {
            pending.push((left, depth + 1));
            pending.push((right, depth + 1));
        }
    }
    deepest
}

fn is_bare_only(name: &ObjectName) -> bool {
    matches!(
        name.0.as_slice(),
        [ObjectNamePart::Identifier(id)] if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("only")
    )
}

/// Aliases given to tables in FROM/USING lists (and their joins).
fn table_aliases<'a>(tables: impl Iterator<Item = &'a TableWithJoins>) -> BTreeSet<String> {
    let mut aliases = BTreeSet::new();
    for t in tables {
        for factor in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table {
                alias: Some(alias), ..
            } = factor
            {
                // Aliases resolve case-insensitively in MySQL, the only dialect
                // with multi-table DELETE targets.
                aliases.insert(alias.name.value.to_lowercase());
            }
        }
    }
    aliases
}

// === Restricting WHERE clauses ===

/// The tables a write targets and the other relations of its statement, to
/// tell whether a condition restricts the target's rows (see
/// [`WriteScope::restricts`]).
struct WriteScope {
    /// Names (last part) and aliases of the target tables, lower case.
    targets: Vec<String>,
    /// Names and aliases of the other relations (`UPDATE … FROM`, `DELETE …
    /// USING`, `MERGE … USING`) that are not the target table and do not read
    /// it: a comparison with their columns restricts the target's rows.
    free: Vec<String>,
}

/// The relations of a FROM item with its joins.
fn relations_of(t: &TableWithJoins) -> impl Iterator<Item = &TableFactor> {
    std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation))
}

fn factor_names(factor: &TableFactor) -> Vec<String> {
    let mut names = Vec::new();
    match factor {
        TableFactor::Table { name, alias, .. } => {
            if let Some(alias) = alias {
                names.push(alias.name.value.to_lowercase());
            }
            if let Some(last) = name.0.last().and_then(ObjectNamePart::as_ident) {
                names.push(last.value.to_lowercase());
            }
        }
        TableFactor::Derived {
            alias: Some(alias), ..
        }
        | TableFactor::Function {
            alias: Some(alias), ..
        }
        | TableFactor::UNNEST {
            alias: Some(alias), ..
        } => names.push(alias.name.value.to_lowercase()),
        _ => {}
    }
    names
}

impl WriteScope {
    fn new<'a>(
        targets: impl Iterator<Item = &'a TableFactor>,
        others: impl Iterator<Item = &'a TableFactor>,
    ) -> Self {
        let mut scope = WriteScope {
            targets: Vec::new(),
            free: Vec::new(),
        };
        for t in targets {
            scope.targets.extend(factor_names(t));
            // `UPDATE ONLY t` reads as table `only` aliased `t`.
            scope.targets.retain(|n| n != "only");
        }
        for o in others {
            if scope.reads_no_target(o) {
                scope.free.extend(factor_names(o));
            }
        }
        scope
    }

    /// Whether `node` names no target table anywhere (a self-join or a
    /// subquery over the target can match every row).
    fn reads_no_target<V: Visit>(&self, node: &V) -> bool {
        let mut clean = true;
        let _ = ast::visit_relations(node, |name| {
            let last = name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            if self.targets.contains(&last) {
                clean = false;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        clean
    }

    /// Whether `expr` certainly restricts which target rows are written, read
    /// conservatively: a conjunction restricts when one of its parts does, a
    /// disjunction when all do, and the only restricting atoms are
    /// comparisons (`=`, `<`, `>`, `<=`, `>=`, `IS NOT DISTINCT FROM`,
    /// `= ANY`, `IN`, `BETWEEN`, `IS NULL`) of a bare target column with an
    /// expression that reads no target column. Everything else counts as no
    /// WHERE: constants (`true`, `1 = 1`, `NOT false`), subqueries (`(SELECT
    /// true)`, `EXISTS (…)`), self-comparisons (`id = id`), negations,
    /// `LIKE`, and columns that could belong to the target (unqualified names,
    /// inside subqueries too, where PostgreSQL may resolve them to the
    /// target's row). Value-level tautologies (`id > -1`) are beyond syntax.
    fn restricts(&self, expr: &Expr) -> bool {
        use ast::BinaryOperator as B;
        match expr {
            Expr::Nested(inner) => self.restricts(inner),
            Expr::BinaryOp { left, op, right } => match op {
                B::And => self.restricts(left) || self.restricts(right),
                B::Or => self.restricts(left) && self.restricts(right),
                B::Eq | B::Lt | B::Gt | B::LtEq | B::GtEq => {
                    (self.is_target_column(left) && self.is_free(right))
                        || (self.is_target_column(right) && self.is_free(left))
                }
                _ => false,
            },
            Expr::IsNotDistinctFrom(left, right) => {
                (self.is_target_column(left) && self.is_free(right))
                    || (self.is_target_column(right) && self.is_free(left))
            }
            Expr::AnyOp {
                left,
                compare_op: B::Eq,
                right,
                ..
            } => self.is_target_column(left) && self.is_free(right),
            Expr::InList {
                expr,
                list,
                negated: false,
            } => self.is_target_column(expr) && list.iter().all(|e| self.is_free(e)),
            Expr::InSubquery {
                expr,
                subquery,
                negated: false,
            } => self.is_target_column(expr) && self.is_free(subquery.as_ref()),
            Expr::InUnnest {
                expr,
                array_expr,
                negated: false,
            } => self.is_target_column(expr) && self.is_free(array_expr),
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => self.is_target_column(expr) && self.is_free(low) && self.is_free(high),
            Expr::IsNull(e) => self.is_target_column(e),
            _ => false,
        }
    }

    /// A bare column of a target table: an unqualified name, or one
    /// qualified by a target's name or alias (through parentheses and casts).
    fn is_target_column(&self, expr: &Expr) -> bool {
        match expr {
            Expr::Nested(inner) => self.is_target_column(inner),
            Expr::Cast { expr, .. } => self.is_target_column(expr),
            Expr::Identifier(_) => true,
            Expr::CompoundIdentifier(ids) if ids.len() >= 2 => {
                let qualifier = ids[ids.len() - 2].value.to_lowercase();
                self.targets.contains(&qualifier)
            }
            _ => false,
        }
    }

    /// Whether `node` reads no column of a target: every column it names is
    /// qualified by a free relation or by a relation of its own subqueries
    /// that is not a target, and no subquery of it reads a target table.
    fn is_free<V: Visit>(&self, node: &V) -> bool {
        if !self.reads_no_target(node) {
            return false;
        }
        // Relations its own subqueries bring into scope.
        struct Local(Vec<String>);
        impl Visitor for Local {
            type Break = ();
            fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
                self.0.extend(factor_names(factor));
                ControlFlow::Continue(())
            }
        }
        let mut local = Local(Vec::new());
        let _ = node.visit(&mut local);
        let mut free = true;
        let _ = ast::visit_expressions(node, |e| {
            let ok = match e {
                Expr::Identifier(_) => false,
                Expr::CompoundIdentifier(ids) => {
                    let qualifier = ids
                        .len()
                        .checked_sub(2)
                        .map(|i| ids[i].value.to_lowercase());
                    qualifier.is_some_and(|q| {
                        !self.targets.contains(&q)
                            && (self.free.contains(&q) || local.0.contains(&q))
                    })
                }
                Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => false,
                _ => true,
            };
            if ok {
                ControlFlow::Continue(())
            } else {
                free = false;
                ControlFlow::Break(())
            }
        });
        free
    }
}

fn normalize_ident(ident: &Ident, fold_quoted: bool) -> String {
    if ident.quote_style.is_none() || fold_quoted {
        ident.value.to_lowercase()
    } else {
        ident.value.clone()
    }
}

fn normalize_name(name: &ObjectName, fold_quoted: bool) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => normalize_ident(ident, fold_quoted),
            ObjectNamePart::Function(function) => function.to_string().to_lowercase(),
        })
        .collect();
    parts.join(".")
}

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
/// ([`Statement::refused`]) whatever the policies say, with the reason.
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
fn string_literal(expr: &Expr) -> Option<&str> {
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

fn is_boolean_keyword(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(v.value, Value::Boolean(_)))
}

fn is_number_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => is_number_literal(expr),
        _ => false,
    }
}

/// A table name written as text (`'public.customers'`, `'"Odd"'`), read the
/// way PostgreSQL reads a `regclass` literal: identifiers separated by dots.
fn relation_name(text: &str, dialect: SqlDialect) -> Option<ObjectName> {
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

// === Literal dependence ===

/// Functions whose literal arguments are only values to compute with: no part
/// of Sluice reads them (they are not names, settings, formats or SQL text),
/// so the decision and the mask plan of a statement calling them do not depend
/// on those literals' values. Anything else a statement calls with a literal
/// somewhere in it makes the statement [`literal_dependent`]; adding a
/// function here is a promise that no decision or plan will ever read its
/// arguments' values.
const VALUE_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_length",
    "array_position",
    "array_to_string",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "convert_from",
    "convert_to",
    "count",
    "current_date",
    "date_part",
    "date_trunc",
    "decode",
    "encode",
    "every",
    "extract",
    "floor",
    "generate_series",
    "greatest",
    "initcap",
    "json_agg",
    "json_build_array",
    "json_build_object",
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_set",
    "least",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nullif",
    "octet_length",
    "position",
    "power",
    "random",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_to_json",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "unnest",
    "upper",
];

/// Whether a statement's decision or mask plan may depend on the values of
/// its literals, so that a cache keyed by the statement with its literal
/// values folded (the sidecar's decision cache) would hand one text the
/// decision of another. Literal values are read, or could be, in:
/// - `COPY` options (`FORMAT 'csv'` decides whether masked rows can be masked);
/// - `EXPLAIN` options (`ANALYZE 'off'` decides whether the statement runs);
/// - settings (`SET`, `RESET`, `SHOW`): their values change how the server
///   reads later statements;
/// - arguments of any function not in [`VALUE_FUNCTIONS`]: names of settings
///   (`current_setting('my.secret')` is masked, `current_setting('TimeZone')`
///   is not), SQL text (`query_to_xml('select …')`), object names
///   (`nextval('s')`, `table_to_xml('customers', …)`), and functions
///   Sluice knows nothing of;
/// - casts of text to object identifiers (`'customers'::regclass`).
///
/// The answer depends only on the statement's shape (its kinds, function and
/// type names, and whether it has a literal at all), never on a literal's
/// value, so every text of one shape gets the same answer: a statement
/// without literals is never dependent.
pub fn literal_dependent(stmt: &ast::Statement, tokens: &[TokenWithSpan]) -> bool {
    struct Reads(bool);
    impl Reads {
        fn function(&mut self, name: &ObjectName) {
            let last = name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            if !VALUE_FUNCTIONS.contains(&last.as_str()) {
                self.0 = true;
            }
        }
        fn data_type(&mut self, data_type: &ast::DataType) {
            let names_object = match data_type {
                ast::DataType::Regclass => true,
                ast::DataType::Custom(name, _) => name
                    .0
                    .last()
                    .and_then(ObjectNamePart::as_ident)
                    .is_some_and(|i| i.value.to_lowercase().starts_with("reg")),
                _ => false,
            };
            if names_object {
                self.0 = true;
            }
        }
    }
    impl Visitor for Reads {
        type Break = ();
        fn pre_visit_statement(&mut self, stmt: &ast::Statement) -> ControlFlow<()> {
            use ast::Statement as S;
            match stmt {
                S::Copy { .. }
                | S::Set(_)
                | S::Reset(_)
                | S::ShowVariable { .. }
                | S::ShowVariables { .. } => self.0 = true,
                S::Explain {
                    options: Some(options),
                    ..
                } if !options.is_empty() => self.0 = true,
                _ => {}
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                }
                | TableFactor::Function { name, .. } => self.function(name),
                TableFactor::JsonTable { .. }
                | TableFactor::OpenJsonTable { .. }
                | TableFactor::XmlTable { .. } => self.0 = true,
                _ => {}
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f) => self.function(&f.name),
                Expr::Cast { data_type, .. } => self.data_type(data_type),
                Expr::TypedString(ts) => self.data_type(&ts.data_type),
                _ => {}
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    if !tokens.iter().any(|t| is_literal(&t.token)) {
        return false;
    }
    let mut reads = Reads(false);
    let _ = stmt.visit(&mut reads);
    reads.0
}

// === Text: positions, redaction, fingerprint ===

/// Maps sqlparser's 1-based (line, column-in-characters) locations to byte
/// offsets.
struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    fn new(sql: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { line_starts }
    }

    fn byte_offset(&self, sql: &str, location: Location) -> usize {
        let line = usize::try_from(location.line.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(&start) = self.line_starts.get(line) else {
            return sql.len();
        };
        let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(usize::MAX);
        let rest = sql.get(start..).unwrap_or_default();
        rest.char_indices()
            .nth(column)
            .map_or(sql.len(), |(i, _)| start + i)
    }
}

/// Tokens that carry a value from the statement. `TRUE`, `FALSE` and `NULL`
/// are keywords, and placeholders (`$1`, `?`) carry no value: both are kept.
fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// One significant token for redaction and fingerprinting.
enum Piece<'a> {
    /// A literal (including a word glued to a number, see below).
    Literal,
    /// Any other token.
    Token(&'a Token),
}

/// Significant tokens with whether whitespace preceded each. A word glued to a
/// number (`0x1F` in Postgres is `0` then `x1F`; `1_000`) is part of the
/// literal, so no digit of it survives.
fn pieces(tokens: &[TokenWithSpan]) -> Vec<(bool, Piece<'_>)> {
    let mut out: Vec<(bool, Piece<'_>)> = Vec::new();
    let mut space = false;
    let mut after_number = false;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) | Token::EOF => {
                space = true;
                after_number = false;
            }
            Token::Word(w) if after_number && !space && w.quote_style.is_none() => {}
            Token::Number(..) if after_number && !space => {}
            token if is_literal(token) => {
                after_number = matches!(token, Token::Number(..));
                out.push((space, Piece::Literal));
                space = false;
            }
            token => {
                after_number = false;
                out.push((space, Piece::Token(token)));
                space = false;
            }
        }
    }
    out
}

fn render_redacted(tokens: &[TokenWithSpan]) -> String {
    let mut out = String::new();
    for (space, piece) in pieces(tokens) {
        if space && !out.is_empty() {
            out.push(' ');
        }
        match piece {
            Piece::Literal => out.push('?'),
            Piece::Token(token) => out.push_str(&token.to_string()),
        }
    }
    out
}

/// Normalised token for fingerprints.
#[derive(PartialEq, Eq)]
enum Norm {
    Literal,
    Text(String),
}

impl Norm {
    fn is(&self, text: &str) -> bool {
        matches!(self, Norm::Text(t) if t == text)
    }
}

/// Keywords after which a `-` or `+` is a sign, not an operator.
const EXPRESSION_STARTS: &[&str] = &[
    "select",
    "where",
    "and",
    "or",
    "not",
    "then",
    "else",
    "when",
    "case",
    "limit",
    "offset",
    "between",
    "having",
    "on",
    "values",
    "return",
    "returning",
    "like",
    "ilike",
    "is",
    "in",
    "interval",
    "by",
    "fetch",
    "first",
    "next",
    "array",
    "distinct",
    "all",
    "any",
    "some",
];

const OPERATORS: &[&str] = &[
    "(", ",", "[", "=", "==", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||",
    "::", ":=", "=>",
];

fn is_sign_context(previous: Option<&Norm>) -> bool {
    match previous {
        None => true,
        Some(Norm::Literal) => false,
        Some(Norm::Text(t)) => {
            OPERATORS.contains(&t.as_str()) || EXPRESSION_STARTS.contains(&t.as_str())
        }
    }
}

fn fingerprint(tokens: &[TokenWithSpan]) -> String {
    let mut out: Vec<Norm> = Vec::new();
    for (_, piece) in pieces(tokens) {
        match piece {
            Piece::Literal => {
                // A sign before a literal is part of it: `-5` and `5` share a shape.
                let n = out.len();
                if n >= 1
                    && (out[n - 1].is("-") || out[n - 1].is("+"))
                    && is_sign_context(n.checked_sub(2).and_then(|i| out.get(i)))
                {
                    out.pop();
                }
                out.push(Norm::Literal);
                // `?, ?` → `?`: lists of literals of any length share a shape.
                let n = out.len();
                if n >= 3 && out[n - 2].is(",") && out[n - 3] == Norm::Literal {
                    out.truncate(n - 2);
                }
            }
            Piece::Token(token) => {
                let text = match token {
                    Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
                    other => other.to_string(),
                };
                out.push(Norm::Text(text));
                // `(?), (?)` → `(?)`: VALUES rows of literals.
                let n = out.len();
                if n >= 7
                    && out[n - 1].is(")")
                    && out[n - 2] == Norm::Literal
                    && out[n - 3].is("(")
                    && out[n - 4].is(",")
                    && out[n - 5].is(")")
                    && out[n - 6] == Norm::Literal
                    && out[n - 7].is("(")
                {
                    out.truncate(n - 4);
                }
            }
        }
    }
    let mut normalised = String::new();
    for (i, norm) in out.iter().enumerate() {
        if i > 0 {
            normalised.push(' ');
        }
        match norm {
            Norm::Literal => normalised.push('?'),
            Norm::Text(t) => normalised.push_str(t),
        }
    }
    let digest = Sha256::digest(normalised.as_bytes());
    hex::encode(digest).chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = parse(sql, SqlDialect::Postgres).unwrap();
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0)
    }

    #[test]
    fn sql_text_of_each_statement_is_its_own() {
        let v = parse("  SELECT 1 ;\n -- c\n DROP TABLE t;;", SqlDialect::Postgres).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].text, "SELECT 1");
        assert_eq!(v[1].text, "DROP TABLE t");
    }

    #[test]
    fn sql_text_positions_handle_multibyte_characters() {
        let v = parse("SELECT 'é€'; SELECT \"ü\" FROM t", SqlDialect::Postgres).unwrap();
        assert_eq!(v[0].text, "SELECT 'é€'");
        assert_eq!(v[1].text, "SELECT \"ü\" FROM t");
    }

    #[test]
    fn sql_redacts_glued_number_suffixes() {
        assert_eq!(redact("SELECT 0x1F2E", SqlDialect::Postgres), "SELECT ?");
        assert!(!one("SELECT 1_000_123").redacted.contains("123"));
    }

    #[test]
    fn sql_parse_error_messages_are_scrubbed_of_literals() {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, "SELECT 'hunter2', 8675309")
            .tokenize_with_location()
            .unwrap();
        let scrubbed = scrub_message(
            "Expect a char, found \"hunter2\" near 8675309 at Line: 1, Column: 8",
            &tokens,
        );
        assert_eq!(
            scrubbed,
            "Expect a char, found ? near ? at Line: 1, Column: 8"
        );
        let err = parse(
            "SELECT 'top secret' 'more secret' garbage",
            SqlDialect::Postgres,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn sql_operator_count_skips_prefix_signs_and_stars() {
        let count = |sql: &str| {
            let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
                .tokenize_with_location()
                .unwrap();
            let mut previous = None;
            let mut n = 0;
            for t in tokens
                .iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            {
                if is_chaining(&t.token) && ends_operand(previous) {
                    n += 1;
                }
                previous = Some(&t.token);
            }
            n
        };
        assert_eq!(count("SELECT *, t.*, count(*) FROM t"), 0);
        assert_eq!(count("VALUES (-1, -2), (+3, -4)"), 0);
        assert_eq!(
            count("SELECT a - 1, b * -2 FROM t WHERE c = -1 AND d OR NOT e"),
            5
        );
        assert_eq!(count("SELECT 1 UNION SELECT 2"), 1);
    }
}
