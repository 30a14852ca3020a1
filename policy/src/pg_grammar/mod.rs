//! PostgreSQL's own grammar as a second reading of every SQL text the
//! postgres plane decides (issue #15, "the sidecar must see what PostgreSQL
//! sees").
//!
//! Sluice classifies statements with sqlparser, a generic SQL parser; the
//! server executes PostgreSQL's reading of the same bytes. Where the two
//! disagree about where statements begin and end, or what a statement is, a
//! rule can be decided on one statement while the server runs another (a
//! `DROP` hidden in what sqlparser reads as a string or a comment). This
//! module reads the text again with PostgreSQL's parser (libpg_query through
//! the `pg_query` crate, the parser PgDog uses) and reports a
//! [`Disagreement`] when:
//! - PostgreSQL's grammar rejects a text sqlparser accepted (reported, but
//!   the engine leaves it to the server, which rejects it with its own
//!   error and position before running any of it);
//! - the number of statements differs;
//! - PostgreSQL reads a table sqlparser does not see anywhere in the text
//!   (it was, for sqlparser, inside a literal or a comment);
//! - a statement's top-level kind differs, in the vocabulary of the rules'
//!   `statements:` match ([`StatementKind`]). Where the two vocabularies
//!   legitimately differ (`COMMIT PREPARED`, `SET CONSTRAINTS`, `MOVE`, an
//!   `EXPLAIN` whose `ANALYZE` value is an expression) PostgreSQL's reading
//!   is a small set of kinds and sqlparser's kind must be one of them.
//!
//! The engine refuses a text with a disagreement whatever the policies say
//! ([`crate::engine::PolicySet::decide_sql`]). For a text sqlparser cannot
//! parse but PostgreSQL can (`DO`, `xmlelement(name …)`, other grammar gaps)
//! [`kinds`] gives PostgreSQL's kinds, so that restrictive rules naming them
//! apply under `onParseError` too (see the engine).
//!
//! Parser settings: libpg_query parses with `standard_conforming_strings =
//! on` and UTF-8, the only state in which the sidecar lets a session send
//! statements (it refuses statements while a session has
//! `standard_conforming_strings` off or a `client_encoding` other than UTF8),
//! so its reading is the server's. Its grammar is PostgreSQL 18's; older
//! servers accept a subset (e.g. `0x1F` is an integer from PostgreSQL 16 on,
//! `0` followed by the alias `x1F` before), which can change a column's
//! reading but neither statement boundaries nor kinds.
//!
//! Cost: one parse per decision-cache miss (hits do not parse, see the
//! sidecar's `Enforcer`); [`parses_on_this_thread`] counts the parses so
//! tests can prove it. A hit on the cache's shape key skips this reading,
//! which is sound only if every text of a key is split alike by both: the
//! key folds only numbers and plain `'…'` strings, whose extents PostgreSQL
//! (with `standard_conforming_strings` on) and sqlparser read alike, except
//! a plain string continuing an `E'…'` string on the next line, which
//! PostgreSQL reads with backslash escapes: the sidecar keys those by their
//! value.
//!
//! Trees deeper than the protobuf decoder's recursion limit (about 50 levels
//! of left-deep operators such as `a || b || …`) cannot be decoded; for
//! them the statements are counted with [`pg_query::is_utility_stmt`] and
//! their kinds read from [`pg_query::summary`] (both computed by the C
//! library, no deep decoding): the count must match, a statement PostgreSQL
//! reads as a plain query (`SELECT`/DML) must be one for sqlparser too, and
//! every statement type PostgreSQL finds must be among sqlparser's kinds.

mod kinds;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;

use sluice_crds::{Action, StatementKind};

use crate::engine::{Decision, SqlDecision};
use crate::sql::{SqlDialect, Statement};
use kinds::{node_kinds, tag_kinds};

thread_local! {
    static PARSES: Cell<u64> = const { Cell::new(0) };
}

/// How many times this thread ran PostgreSQL's parser through this module
/// (for tests that prove a path never parses).
pub fn parses_on_this_thread() -> u64 {
    PARSES.with(Cell::get)
}

fn count_parse() {
    PARSES.with(|c| c.set(c.get() + 1));
}

/// How PostgreSQL's reading of a text differs from Sluice's. Messages never
/// contain a literal of the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Disagreement {
    /// PostgreSQL's grammar rejects the text.
    #[error(
        "PostgreSQL's grammar rejects the text ({message}) while Sluice's SQL parser accepted it"
    )]
    Rejected {
        /// PostgreSQL's message, cut before any quoted token.
        message: String,
    },
    /// The two read a different number of statements.
    #[error(
        "Sluice's SQL parser reads {sluice} statement(s) and PostgreSQL's grammar reads {postgres}"
    )]
    Count {
        /// Statements sqlparser read.
        sluice: usize,
        /// Statements PostgreSQL read.
        postgres: usize,
    },
    /// A statement is of another kind for each of them.
    #[error(
        "Sluice's SQL parser reads statement #{number} as {} and PostgreSQL's grammar as {postgres}",
        .sluice.as_str()
    )]
    Kind {
        /// 1-based statement number.
        number: usize,
        /// sqlparser's kind.
        sluice: StatementKind,
        /// PostgreSQL's kind(s), e.g. `drop` or `commit or other`.
        postgres: KindsText,
    },
    /// PostgreSQL reads a table Sluice's parser does not
    /// see anywhere in the text (the name is not shown: for Sluice it was
    /// inside a literal or a comment).
    #[error("PostgreSQL's grammar reads a {0} that Sluice's SQL parser does not see in the text")]
    Unseen(NameKind),
}

/// What [`Disagreement::Unseen`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A table, view or other relation.
    Table,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Table => "table",
        })
    }
}

impl Disagreement {
    /// Whether PostgreSQL itself would reject the text (a syntax error for
    /// the client, SQLSTATE 42601), rather than read it otherwise.
    pub fn is_rejection(&self) -> bool {
        matches!(self, Disagreement::Rejected { .. })
    }
}

/// Kinds as shown in a message (`select`, or `commit or other`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindsText(pub Vec<StatementKind>);

impl fmt::Display for KindsText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| k.as_str()).collect();
        f.write_str(&names.join(" or "))
    }
}

/// PostgreSQL's reading of one statement: the kinds it may have in the
/// rules' vocabulary (one, unless the vocabularies differ, see the module
/// docs).
pub type Kinds = Vec<StatementKind>;

/// Compares PostgreSQL's reading of `sql` with sqlparser's `statements`
/// (from [`crate::sql::parse`] of the same text, Postgres dialect).
pub fn disagreement(sql: &str, statements: &[Statement]) -> Option<Disagreement> {
    match read(sql) {
        Ok(Reading::Tree { kinds, names }) => {
            compare_tree(&kinds, statements).or_else(|| compare_names(&names, statements))
        }
        Ok(Reading::Shallow { utility, types }) => compare_shallow(&utility, &types, statements),
        Err(message) => Some(Disagreement::Rejected { message }),
    }
}

/// PostgreSQL's kinds for each statement of `sql`, or why its grammar
/// rejects the text (a message without literals). For a tree too deep to
/// decode, each statement gets every kind PostgreSQL finds in the text.
pub fn kinds(sql: &str) -> Result<Vec<Kinds>, String> {
    match read(sql)? {
        Reading::Tree { kinds, .. } => Ok(kinds),
        Reading::Shallow { utility, types } => {
            let mut all: Kinds = types.iter().flat_map(|t| tag_kinds(t)).collect();
            all.sort();
            all.dedup();
            if all.is_empty() {
                all.push(StatementKind::Other);
            }
            Ok(utility.iter().map(|_| all.clone()).collect())
        }
    }
}

enum Reading {
    /// The parse tree, decoded: each statement's kinds, and the tables
    /// named anywhere in the text.
    Tree { kinds: Vec<Kinds>, names: Names },
    /// A tree too deep to decode: whether each statement is a utility
    /// statement (not SELECT/INSERT/UPDATE/DELETE/MERGE), and the statement
    /// types found anywhere in the text.
    Shallow {
        utility: Vec<bool>,
        types: Vec<String>,
    },
}

fn read(sql: &str) -> Result<Reading, String> {
    count_parse();
    match pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) {
        Ok(tree) => Ok(Reading::Tree {
            kinds: tree
                .protobuf
                .stmts
                .iter()
                .map(|raw| {
                    raw.stmt
                        .as_ref()
                        .and_then(|n| n.node.as_ref())
                        .map_or_else(|| vec![StatementKind::Other], node_kinds)
                })
                .collect(),
            names: Names {
                tables: tree.tables.iter().map(|(t, _)| t.clone()).collect(),
            },
        }),
        // The parser read it; the tree is deeper than the decoder's
        // recursion limit. Read it without decoding the tree.
        Err(pg_query::Error::Decode(_)) => {
            let utility = pg_query::is_utility_stmt(sql).map_err(|e| safe_message(&e))?;
            let summary = pg_query::summary(sql, pg_query::ParserOptions::DEFAULT, -1)
                .map_err(|e| safe_message(&e))?;
            Ok(Reading::Shallow {
                utility,
                types: summary.statement_types,
            })
        }
        Err(e) => Err(safe_message(&e)),
    }
}

/// PostgreSQL's error without the token it quotes (which may be a literal):
/// `syntax error at or near "…"` becomes `syntax error`.
fn safe_message(e: &pg_query::Error) -> String {
    let text = match e {
        pg_query::Error::Parse(m)
        | pg_query::Error::Split(m)
        | pg_query::Error::IsUtility(m)
        | pg_query::Error::Scan(m) => m.as_str(),
        pg_query::Error::Conversion(_) => return "the text contains a NUL byte".to_string(),
        _ => return "PostgreSQL's grammar could not read the text".to_string(),
    };
    let cut = text.split(" at or near ").next().unwrap_or_default().trim();
    if cut.is_empty() || cut.contains(['"', '\'', '$']) || cut.len() > 200 {
        "syntax error".to_string()
    } else {
        cut.to_string()
    }
}

fn compare_tree(postgres: &[Kinds], statements: &[Statement]) -> Option<Disagreement> {
    if postgres.len() != statements.len() {
        return Some(Disagreement::Count {
            sluice: statements.len(),
            postgres: postgres.len(),
        });
    }
    postgres
        .iter()
        .zip(statements)
        .enumerate()
        .find(|(_, (pg, st))| !pg.contains(&st.kind))
        .map(|(i, (pg, st))| Disagreement::Kind {
            number: i + 1,
            sluice: st.kind,
            postgres: KindsText(pg.clone()),
        })
}

/// The tables PostgreSQL's parse tree names (`schema.name` or `name`).
struct Names {
    tables: Vec<String>,
}

/// Every table PostgreSQL reads must be one sqlparser saw somewhere in the
/// text (compared by their last name segment): a table only PostgreSQL
/// reads was, for Sluice, inside a literal or a comment, where no rule or
/// mask plan looked.
fn compare_names(names: &Names, statements: &[Statement]) -> Option<Disagreement> {
    let last = |n: &str| n.rsplit('.').next().unwrap_or(n).to_string();
    let seen_tables: Vec<String> = statements
        .iter()
        .flat_map(|s| {
            s.tables
                .iter()
                .chain(s.embedded.iter().flat_map(|e| e.tables.iter()))
        })
        .map(|t| last(t))
        .collect();
    if names
        .tables
        .iter()
        .any(|t| !seen_tables.iter().any(|s| s.eq_ignore_ascii_case(&last(t))))
    {
        return Some(Disagreement::Unseen(NameKind::Table));
    }
    // Function calls are not compared: sqlparser reads many calls as
    // syntax (`substr(…)`, `trim(…)`, `ceil(…)`), so a call only
    // PostgreSQL reads is not a disagreement by itself.
    None
}

fn compare_shallow(
    utility: &[bool],
    types: &[String],
    statements: &[Statement],
) -> Option<Disagreement> {
    use StatementKind as K;
    if utility.len() != statements.len() {
        return Some(Disagreement::Count {
            sluice: statements.len(),
            postgres: utility.len(),
        });
    }
    let plain = [
        K::Select,
        K::Insert,
        K::Update,
        K::Delete,
        K::Merge,
        K::Create,
    ];
    for (i, (u, st)) in utility.iter().zip(statements).enumerate() {
        if !u && !plain.contains(&st.kind) {
            return Some(Disagreement::Kind {
                number: i + 1,
                sluice: st.kind,
                postgres: KindsText(plain[..5].to_vec()),
            });
        }
    }
    // Every statement type PostgreSQL finds must be one Sluice decided on.
    let decided: Vec<StatementKind> = statements
        .iter()
        .flat_map(|s| s.kinds.iter().copied())
        .collect();
    for t in types {
        let pg = tag_kinds(t);
        if !pg.iter().any(|k| decided.contains(k)) {
            let number = statements.len().min(1);
            return Some(Disagreement::Kind {
                number,
                sluice: statements.first().map_or(K::Other, |s| s.kind),
                postgres: KindsText(pg),
            });
        }
    }
    None
}

// === Engine hooks ===

/// The gate [`crate::engine::PolicySet::decide_sql`] runs on a text
/// sqlparser parsed: PostgreSQL's disagreement with it (Postgres dialect
/// only; MySQL texts are not read twice), except a syntax error.
pub(crate) fn gate(
    sql: &str,
    dialect: SqlDialect,
    statements: &[Statement],
) -> Option<Disagreement> {
    // A text PostgreSQL's grammar rejects is left to the server, which
    // rejects it too (it parses the whole string before running any of
    // it) with its own error and position.
    (dialect == SqlDialect::Postgres)
        .then(|| disagreement(sql, statements))
        .flatten()
        .filter(|d| !d.is_rejection())
}

/// The decision on a text the two grammars read differently: refused by
/// Sluice whatever the policies say (dryRun too). Keyed by its exact text
/// in a decision cache (`parse_error` is set: literal-dependent).
pub(crate) fn refused(sql: &str, dialect: SqlDialect, d: Disagreement) -> SqlDecision {
    let why = format!(
        "Sluice and PostgreSQL read this text differently ({d}), so no decision on it could be \
         trusted; write it plainly (one statement per query, plain quoting, no nested comments), \
         or send values as bind parameters"
    );
    SqlDecision {
        decision: Decision::refused_by_sluice(&why),
        statements: Vec::new(),
        parse_error: Some(d.to_string()),
        redacted: crate::sql::redact(sql, dialect),
        fingerprint: String::new(),
        too_complex: false,
        disagreement: Some(d),
    }
}

/// Every kind PostgreSQL reads in a text sqlparser could not parse (empty
/// when its grammar rejects it too, for MySQL, and for texts refused as
/// too large or complex, which are never handed to a second parser).
pub(crate) fn unparsed_kinds(sql: &str, dialect: SqlDialect, too_complex: bool) -> Kinds {
    if dialect != SqlDialect::Postgres || too_complex {
        return Vec::new();
    }
    let mut all: Kinds = kinds(sql)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The rule that makes onParseError's `base` verdict on a text of `kinds`
/// stricter: among the rules whose `statements:` names one of the kinds and
/// whose action is stricter than `base`, the strictest, the first on ties.
/// Rules without `statements:` are not used: nothing else of an unparsed
/// text is known.
pub(crate) fn strictest_rule<'a, R>(
    rules: impl Iterator<Item = &'a R>,
    parts: impl Fn(&R) -> (Action, &[StatementKind]),
    base: Action,
    kinds: &[StatementKind],
) -> Option<&'a R> {
    let mut best: Option<(&R, Action)> = None;
    for r in rules {
        let (action, statements) = parts(r);
        if action <= base || !statements.iter().any(|k| kinds.contains(k)) {
            continue;
        }
        if best.is_none_or(|(_, a)| action > a) {
            best = Some((r, action));
        }
    }
    best.map(|(r, _)| r)
}
