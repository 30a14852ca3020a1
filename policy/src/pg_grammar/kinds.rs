//! PostgreSQL's statement kinds, in the vocabulary of the rules'
//! `statements:` match: from a parse tree's top-level node, or from the
//! command tags of a text only PostgreSQL's grammar reads.

use pg_query::NodeEnum;
use pg_query::protobuf::{self, TransactionStmtKind};
use sluice_crds::StatementKind;

use super::Kinds;

/// The kinds of one top-level statement node, mirroring sqlparser's
/// classification in [`crate::sql`] (`EXPLAIN ANALYZE x` and `PREPARE n AS
/// x` take `x`'s kind, a plain `EXPLAIN` is `select`, `SELECT … INTO` is
/// `create`, `SHOW`/`FETCH`/`DECLARE … CURSOR` are `select`).
pub(super) fn node_kinds(node: &NodeEnum) -> Kinds {
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
pub(super) fn node_tag(node: &NodeEnum) -> &'static str {
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
pub(super) fn tag_kinds(tag: &str) -> Kinds {
    use StatementKind as K;
    match tag {
        "InsertStmt" => vec![K::Insert],
        "UpdateStmt" => vec![K::Update],
        "DeleteStmt" => vec![K::Delete],
        "MergeStmt" => vec![K::Merge],
        "SelectStmt" => vec![K::Select, K::Create],
        "DeclareCursorStmt" | "VariableShowStmt" | "FetchStmt" => vec![K::Select],
        // From a table it reads (TO) or inserts (FROM): see sql::collect.
        "CopyStmt" => vec![K::Copy, K::Insert, K::Select],
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
