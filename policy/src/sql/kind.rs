//! A statement's kind, from its AST.

use sluice_crds::StatementKind;
use sqlparser::ast::{self, Expr, ObjectName, Query, Select, SetExpr, UtilityOption, Value};

use super::SqlDialect;
use super::text::normalize_name;

// === Kinds ===

/// The kind of one statement, not looking at what is nested in it (the
/// collector adds nested kinds). Exhaustive on purpose: a new sqlparser variant
/// must be classified by a person, not fall into `Other` silently.
pub(super) fn statement_kind(stmt: &ast::Statement, dialect: SqlDialect) -> StatementKind {
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
pub(super) fn creates_table(select: &Select, dialect: SqlDialect) -> bool {
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
