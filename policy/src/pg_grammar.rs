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

use std::cell::Cell;
use std::fmt;

use pg_query::NodeEnum;
use pg_query::protobuf::{self, TransactionStmtKind};
use sluice_crds::{Action, StatementKind};

use crate::engine::{Decision, SqlDecision};
use crate::sql::{SqlDialect, Statement};

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

// === Kinds ===

/// The kinds of one top-level statement node, mirroring sqlparser's
/// classification in [`crate::sql`] (`EXPLAIN ANALYZE x` and `PREPARE n AS
/// x` take `x`'s kind, a plain `EXPLAIN` is `select`, `SELECT … INTO` is
/// `create`, `SHOW`/`FETCH`/`DECLARE … CURSOR` are `select`).
fn node_kinds(node: &NodeEnum) -> Kinds {
    use StatementKind as K;
    let inner = |n: &Option<Box<protobuf::Node>>| {
        n.as_ref()
            .and_then(|n| n.node.as_ref())
            .map_or_else(|| vec![K::Other], node_kinds)
    };
    match node {
        NodeEnum::SelectStmt(s) => {
            if s.into_clause.is_some() {
                vec![K::Create]
            } else {
                vec![K::Select]
            }
        }
        NodeEnum::ExplainStmt(e) => match explain_analyze(&e.options) {
            Some(false) => vec![K::Select],
            Some(true) => inner(&e.query),
            None => {
                let mut kinds = inner(&e.query);
                kinds.push(K::Select);
                kinds
            }
        },
        NodeEnum::PrepareStmt(p) => inner(&p.query),
        NodeEnum::FetchStmt(f) if f.ismove => vec![K::Select, K::Other],
        NodeEnum::GrantStmt(g) => vec![if g.is_grant { K::Grant } else { K::Revoke }],
        NodeEnum::GrantRoleStmt(g) => vec![if g.is_grant { K::Grant } else { K::Revoke }],
        NodeEnum::TransactionStmt(t) => match TransactionStmtKind::try_from(t.kind) {
            Ok(TransactionStmtKind::TransStmtBegin)
            | Ok(TransactionStmtKind::TransStmtStart)
            | Ok(TransactionStmtKind::TransStmtSavepoint) => vec![K::Begin],
            Ok(TransactionStmtKind::TransStmtCommit)
            | Ok(TransactionStmtKind::TransStmtRelease) => vec![K::Commit],
            Ok(TransactionStmtKind::TransStmtRollback)
            | Ok(TransactionStmtKind::TransStmtRollbackTo) => vec![K::Rollback],
            Ok(TransactionStmtKind::TransStmtCommitPrepared) => vec![K::Commit, K::Other],
            Ok(TransactionStmtKind::TransStmtRollbackPrepared) => vec![K::Rollback, K::Other],
            _ => vec![K::Begin, K::Commit, K::Other],
        },
        other => tag_kinds(node_tag(other)),
    }
}

/// Whether `EXPLAIN`'s options make it run the statement: `Some(true)` for
/// `ANALYZE` (no value, or a true one), `Some(false)` without it or with a
/// false value, `None` when the value is not a plain constant.
fn explain_analyze(options: &[protobuf::Node]) -> Option<bool> {
    let mut runs = Some(false);
    for o in options {
        let Some(NodeEnum::DefElem(d)) = o.node.as_ref() else {
            continue;
        };
        if !d.defname.eq_ignore_ascii_case("analyze") {
            continue;
        }
        let falsy = |s: &str| {
            ["false", "off", "0", "no"]
                .iter()
                .any(|f| s.eq_ignore_ascii_case(f))
        };
        runs = match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
            None => Some(true),
            Some(NodeEnum::String(s)) => Some(!falsy(&s.sval)),
            Some(NodeEnum::Boolean(b)) => Some(b.boolval),
            Some(NodeEnum::Integer(i)) => Some(i.ival != 0),
            Some(_) => None,
        };
    }
    runs
}

/// The node's type name as libpg_query's summary spells it, for the
/// statement nodes [`tag_kinds`] knows (others: `""`, kind `other`).
fn node_tag(node: &NodeEnum) -> &'static str {
    macro_rules! tags {
        ($($v:ident),* $(,)?) => {
            match node {
                $(NodeEnum::$v(_) => stringify!($v),)*
                _ => "",
            }
        };
    }
    tags!(
        InsertStmt,
        UpdateStmt,
        DeleteStmt,
        MergeStmt,
        SelectStmt,
        DeclareCursorStmt,
        VariableShowStmt,
        FetchStmt,
        CopyStmt,
        CreateStmt,
        CreateTableAsStmt,
        ViewStmt,
        IndexStmt,
        CreateFunctionStmt,
        CreateTrigStmt,
        CreateDomainStmt,
        CreatePolicyStmt,
        RuleStmt,
        CreateRoleStmt,
        CreateSchemaStmt,
        CreatedbStmt,
        CreateSeqStmt,
        CompositeTypeStmt,
        CreateEnumStmt,
        CreateRangeStmt,
        DefineStmt,
        CreateExtensionStmt,
        CreateForeignServerStmt,
        CreateForeignTableStmt,
        CreateFdwStmt,
        CreateUserMappingStmt,
        CreateAmStmt,
        CreateCastStmt,
        CreateConversionStmt,
        CreateEventTrigStmt,
        CreateOpClassStmt,
        CreateOpFamilyStmt,
        CreatePlangStmt,
        CreatePublicationStmt,
        CreateSubscriptionStmt,
        CreateStatsStmt,
        CreateTableSpaceStmt,
        CreateTransformStmt,
        ImportForeignSchemaStmt,
        AlterTableStmt,
        AlterDomainStmt,
        AlterObjectSchemaStmt,
        AlterOwnerStmt,
        AlterPolicyStmt,
        AlterStatsStmt,
        CommentStmt,
        RenameStmt,
        SecLabelStmt,
        AlterCollationStmt,
        AlterDatabaseStmt,
        AlterDatabaseSetStmt,
        AlterDatabaseRefreshCollStmt,
        AlterDefaultPrivilegesStmt,
        AlterEnumStmt,
        AlterEventTrigStmt,
        AlterExtensionStmt,
        AlterExtensionContentsStmt,
        AlterFdwStmt,
        AlterForeignServerStmt,
        AlterFunctionStmt,
        AlterObjectDependsStmt,
        AlterOpFamilyStmt,
        AlterOperatorStmt,
        AlterPublicationStmt,
        AlterRoleSetStmt,
        AlterRoleStmt,
        AlterSeqStmt,
        AlterSubscriptionStmt,
        AlterSystemStmt,
        AlterTableMoveAllStmt,
        AlterTableSpaceOptionsStmt,
        AlterTsconfigurationStmt,
        AlterTsdictionaryStmt,
        AlterTypeStmt,
        AlterUserMappingStmt,
        ReassignOwnedStmt,
        ReplicaIdentityStmt,
        DropStmt,
        DropRoleStmt,
        DropdbStmt,
        DropOwnedStmt,
        DropTableSpaceStmt,
        DropSubscriptionStmt,
        DropUserMappingStmt,
        TruncateStmt,
        GrantStmt,
        GrantRoleStmt,
        VariableSetStmt,
        DiscardStmt,
        ConstraintsSetStmt,
        CallStmt,
        DoStmt,
        TransactionStmt,
        ExplainStmt,
        PrepareStmt,
    )
}

/// The kinds of a statement type by name (the precise reading refines the
/// ones that depend on fields: see [`node_kinds`]).
fn tag_kinds(tag: &str) -> Kinds {
    use StatementKind as K;
    match tag {
        "InsertStmt" => vec![K::Insert],
        "UpdateStmt" => vec![K::Update],
        "DeleteStmt" => vec![K::Delete],
        "MergeStmt" => vec![K::Merge],
        "SelectStmt" => vec![K::Select, K::Create],
        "DeclareCursorStmt" | "VariableShowStmt" | "FetchStmt" => vec![K::Select],
        "CopyStmt" => vec![K::Copy],
        "CreateStmt"
        | "CreateTableAsStmt"
        | "ViewStmt"
        | "IndexStmt"
        | "CreateFunctionStmt"
        | "CreateTrigStmt"
        | "CreateDomainStmt"
        | "CreatePolicyStmt"
        | "RuleStmt"
        | "CreateRoleStmt"
        | "CreateSchemaStmt"
        | "CreatedbStmt"
        | "CreateSeqStmt"
        | "CompositeTypeStmt"
        | "CreateEnumStmt"
        | "CreateRangeStmt"
        | "DefineStmt"
        | "CreateExtensionStmt"
        | "CreateForeignServerStmt"
        | "CreateForeignTableStmt"
        | "CreateFdwStmt"
        | "CreateUserMappingStmt"
        | "CreateAmStmt"
        | "CreateCastStmt"
        | "CreateConversionStmt"
        | "CreateEventTrigStmt"
        | "CreateOpClassStmt"
        | "CreateOpFamilyStmt"
        | "CreatePlangStmt"
        | "CreatePLangStmt"
        | "CreatePublicationStmt"
        | "CreateSubscriptionStmt"
        | "CreateStatsStmt"
        | "CreateTableSpaceStmt"
        | "CreateTransformStmt"
        | "ImportForeignSchemaStmt" => {
            vec![K::Create]
        }
        "AlterDefaultPrivilegesStmt" => vec![K::Alter, K::Grant, K::Revoke],
        "AlterTableStmt"
        | "AlterDomainStmt"
        | "AlterObjectSchemaStmt"
        | "AlterOwnerStmt"
        | "AlterPolicyStmt"
        | "AlterStatsStmt"
        | "CommentStmt"
        | "RenameStmt"
        | "SecLabelStmt"
        | "AlterCollationStmt"
        | "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt"
        | "AlterEnumStmt"
        | "AlterEventTrigStmt"
        | "AlterExtensionStmt"
        | "AlterExtensionContentsStmt"
        | "AlterFdwStmt"
        | "AlterForeignServerStmt"
        | "AlterFunctionStmt"
        | "AlterObjectDependsStmt"
        | "AlterOpFamilyStmt"
        | "AlterOperatorStmt"
        | "AlterPublicationStmt"
        | "AlterRoleSetStmt"
        | "AlterRoleStmt"
        | "AlterSeqStmt"
        | "AlterSubscriptionStmt"
        | "AlterSystemStmt"
        | "AlterTableMoveAllStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterTsconfigurationStmt"
        | "AlterTSConfigurationStmt"
        | "AlterTsdictionaryStmt"
        | "AlterTSDictionaryStmt"
        | "AlterTypeStmt"
        | "AlterUserMappingStmt"
        | "ReassignOwnedStmt"
        | "ReplicaIdentityStmt" => vec![K::Alter],
        "DropStmt"
        | "DropRoleStmt"
        | "DropdbStmt"
        | "DropOwnedStmt"
        | "DropTableSpaceStmt"
        | "DropSubscriptionStmt"
        | "DropUserMappingStmt" => vec![K::Drop],
        "TruncateStmt" => vec![K::Truncate],
        "GrantStmt" | "GrantRoleStmt" => vec![K::Grant, K::Revoke],
        "VariableSetStmt" | "DiscardStmt" => vec![K::Set],
        "ConstraintsSetStmt" => vec![K::Set, K::Other],
        "CallStmt" => vec![K::Call],
        "DoStmt" => vec![K::Do],
        "TransactionStmt" => vec![K::Begin, K::Commit, K::Rollback, K::Other],
        // Run their statement (ANALYZE) or prepare it: any kind.
        "ExplainStmt" | "PrepareStmt" => vec![
            K::Select,
            K::Insert,
            K::Update,
            K::Delete,
            K::Merge,
            K::Create,
            K::Other,
        ],
        _ => vec![K::Other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse;

    fn check(sql: &str) -> Option<Disagreement> {
        let statements = parse(sql, SqlDialect::Postgres).expect("sqlparser reads it");
        disagreement(sql, &statements)
    }

    #[test]
    fn agrees_on_ordinary_statements() {
        for sql in [
            "SELECT 1",
            "select a, b from t where c = 'x''y' and d = $1",
            "INSERT INTO t (a) VALUES (1) RETURNING a",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "WITH d AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM d)",
            "UPDATE t SET a = 1 WHERE b = 2; DELETE FROM t WHERE a = 3",
            "SELECT a INTO new_t FROM t",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE DELETE FROM t WHERE a = 1",
            "EXPLAIN (ANALYZE false) DELETE FROM t WHERE a = 1",
            "PREPARE p AS UPDATE t SET a = 1 WHERE b = $1",
            "EXECUTE p(1)",
            "BEGIN; SAVEPOINT s; RELEASE s; ROLLBACK TO s; COMMIT",
            "START TRANSACTION READ ONLY; ROLLBACK",
            "SET search_path = public; RESET ALL; SHOW search_path; DISCARD ALL",
            "GRANT SELECT ON t TO r; REVOKE SELECT ON t FROM r",
            "CREATE TABLE t2 (a int); ALTER TABLE t2 ADD COLUMN b int; DROP TABLE t2",
            "CREATE TABLE t3 AS SELECT 1; TRUNCATE t3; COMMENT ON TABLE t3 IS 'x'",
            "COPY t TO STDOUT; COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)",
            "CALL p(1); LISTEN c; NOTIFY c; UNLISTEN c",
            "DECLARE c CURSOR FOR SELECT 1; FETCH 1 FROM c; CLOSE c",
            "VALUES (1), (2)",
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
            "/* only a comment */ ;;",
            "SELECT $$a; DROP TABLE t$$, $x$b$x$",
            "SELECT extract(year FROM now()), substring('abc' FROM 2), trim(' a '), position('a' IN 'ba')",
            "SELECT count(*), lower(a) FROM public.t JOIN s.u ON t.a = u.a WHERE b LIKE 'x%'",
            "SELECT * FROM generate_series(1, 3) g, LATERAL unnest(ARRAY[1]) x",
            "WITH w AS (SELECT 1 AS a) SELECT a FROM w",
            "SELECT query_to_xml('select a from t', true, false, '')",
            "INSERT INTO t SELECT * FROM u ON CONFLICT DO NOTHING",
            "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN UPDATE SET b = u.b",
            "SELECT now() AT TIME ZONE 'UTC', 'a' SIMILAR TO 'b'",
        ] {
            assert_eq!(check(sql), None, "{sql}");
        }
    }

    /// A string continued on the next line keeps the first part's escapes
    /// for PostgreSQL (`E'a'` then `'b\\'…'`); sqlparser reads the second
    /// part as a plain string. Same count and kinds, another table.
    #[test]
    fn names_only_postgres_reads_are_a_disagreement() {
        let sql = "SELECT E'a'\n'b\\'; SELECT 1 AS x, '; SELECT ssn FROM customers; --'";
        assert_eq!(
            check(sql),
            Some(Disagreement::Unseen(NameKind::Table)),
            "{sql}"
        );
        // Calls sqlparser reads as syntax are no disagreement.
        assert_eq!(check("SELECT substr(a, 2), ceil(b) FROM t"), None);
    }

    #[test]
    fn deep_trees_are_read_without_decoding_them() {
        // 120 left-deep `||` levels: past the protobuf decoder's recursion
        // limit, within sqlparser's nesting bound.
        let deep = format!("SELECT a{} FROM t", " || a".repeat(120));
        assert!(matches!(
            pg_query::parse(&deep, pg_query::ParserOptions::DEFAULT),
            Err(pg_query::Error::Decode(_))
        ));
        assert_eq!(check(&deep), None);
        let two = format!("{deep}; DELETE FROM t WHERE a = 1");
        assert_eq!(check(&two), None);
        let kinds = kinds(&two).expect("PostgreSQL reads it");
        assert_eq!(kinds.len(), 2);
        assert!(kinds[1].contains(&StatementKind::Delete));
    }

    #[test]
    fn kinds_of_texts_only_postgres_reads() {
        let k = kinds("DO $$BEGIN PERFORM 1; END$$; SELECT xmlelement(name foo)").expect("reads");
        assert_eq!(
            k,
            vec![vec![StatementKind::Do], vec![StatementKind::Select]]
        );
        assert!(kinds("SELEKT 1").is_err());
    }

    #[test]
    fn rejection_messages_hold_no_token() {
        let e = kinds("SELECT 'secret-value' 'more' FROM").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(e, "syntax error");
    }

    fn policy_set(spec: &str) -> crate::engine::PolicySet {
        use std::sync::Arc;

        use crate::engine::{CompiledPolicy, Identity, NoSecrets, PolicySet};
        let yaml = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  subjects: [{{serviceAccount: app}}]\n  connections: [db]\n{spec}"
        );
        let ap: sluice_crds::AccessPolicy = serde_saphyr::from_str(&yaml).expect("yaml");
        let p = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).expect("compiles"));
        PolicySet::select(&[p], &Identity::service_account("shop", "app"), "db", None)
            .expect("bound")
    }

    fn action(set: &crate::engine::PolicySet, sql: &str) -> Action {
        set.decide_sql(sql, SqlDialect::Postgres).decision.enforced
    }

    /// Texts only PostgreSQL's grammar reads: onParseError, made stricter by
    /// the deny and requireApproval rules naming a kind PostgreSQL reads.
    #[test]
    fn kinds_postgres_reads_meet_restrictive_rules_under_on_parse_error() {
        let allow = policy_set(
            "  onParseError: allow\n  rules:\n    - {name: no-do, action: deny, match: {statements: [do]}}\n    - {name: no-drop, action: deny, match: {statements: [drop], tables: [other]}}\n",
        );
        assert_eq!(action(&allow, "DO $$BEGIN PERFORM 1; END$$"), Action::Deny);
        // A DROP behind what sqlparser cannot read meets the drop rule, its
        // table condition taken to match.
        let only_drop = policy_set(
            "  onParseError: allow\n  rules:\n    - {name: no-drop, action: deny, match: {statements: [drop], tables: [other]}}\n",
        );
        let d = only_drop.decide_sql(
            "DO $$BEGIN PERFORM 1; END$$; DROP TABLE victims",
            SqlDialect::Postgres,
        );
        assert_eq!(d.decision.enforced, Action::Deny);
        assert_eq!(d.decision.rule.as_deref(), Some("no-drop"));
        assert_eq!(
            action(&only_drop, "DO $$BEGIN PERFORM 1; END$$"),
            Action::Allow
        );
        assert_eq!(
            action(&only_drop, "SELECT xmlelement(name foo)"),
            Action::Allow
        );
        // Allow rules never loosen onParseError: deny.
        let deny = policy_set(
            "  onParseError: deny\n  rules:\n    - {name: do-ok, action: allow, match: {statements: [do]}}\n",
        );
        assert_eq!(action(&deny, "DO $$BEGIN PERFORM 1; END$$"), Action::Deny);
        // Rules without statements: are not used (nothing else is known).
        let tables = policy_set(
            "  onParseError: allow\n  rules:\n    - {name: no-t, action: deny, match: {tables: [victims]}}\n",
        );
        assert_eq!(
            action(&tables, "DO $$BEGIN PERFORM 1; END$$"),
            Action::Allow
        );
    }

    /// A disagreement is refused whatever the policies say, dryRun too, and
    /// its reason says the two read the text differently.
    #[test]
    fn disagreements_are_refused_whatever_the_policies_say() {
        // sqlparser reads `#-` (a jsonb operator) where PostgreSQL ends the
        // operator before `--`, a comment: one statement for sqlparser,
        // three with a DROP for PostgreSQL.
        let hidden = "SELECT 1 #-- '\n2; DROP TABLE victims; SELECT '\n' || ' --'";
        for spec in [
            "  defaultAction: allow\n  onParseError: allow\n",
            "  mode: dryRun\n  defaultAction: allow\n",
        ] {
            let set = policy_set(spec);
            let d = set.decide_sql(hidden, SqlDialect::Postgres);
            assert_eq!(
                d.disagreement,
                Some(Disagreement::Count {
                    sluice: 1,
                    postgres: 3
                })
            );
            assert_eq!(d.decision.enforced, Action::Deny, "{spec}");
            assert!(
                d.decision.reason.contains("read this text differently"),
                "{}",
                d.decision.reason
            );
            assert!(d.literal_dependent());
        }
    }

    #[test]
    fn parses_are_counted_on_the_thread() {
        let before = parses_on_this_thread();
        let _ = check("SELECT 1");
        assert_eq!(parses_on_this_thread(), before + 1);
    }
}
