//! Renames that move a table out of its rules' sight, and databases
//! dropped whole with the tables rules name.
//!
//! Rules match names: a rule denying `delete` on `orders` does not match
//! `DELETE FROM o2` once `RENAME TABLE orders TO o2` (or `ALTER TABLE
//! orders RENAME TO o2`) ran, and `RENAME TABLE orders TO o2, t TO orders`
//! swaps another table in under the protected name. A rename is therefore
//! refused when a rule that denies or holds a statement of any kind on the
//! renamed table would match one on it (asked of the policies with one
//! statement per kind on that name, as written) and not on any other name
//! (a rule without `tables`, or whose glob matches every name, holds
//! under the new name too), unless a rule already decides the rename
//! itself. Renames of tables no such rule names run.
//!
//! `DROP DATABASE x` (`DROP SCHEMA x`) drops every table of `x` without
//! naming one: while a rule that denies or holds statements on tables
//! applies, it is refused (a rule denying drops of `orders` did not match
//! it).

use sluice_policy::engine::Decision;
use sluice_policy::sql::Statement;
use sqlparser::ast::{AlterTableOperation, ObjectName, ObjectType, Statement as Ast};

use super::*;

/// One statement per kind a rule may name, on the table `{t}`.
const PROBES: &[&str] = &[
    "SELECT * FROM {t}",
    "INSERT INTO {t} VALUES (1)",
    "UPDATE {t} SET c = 1",
    "DELETE FROM {t}",
    "TRUNCATE TABLE {t}",
    "DROP TABLE {t}",
    "ALTER TABLE {t} ADD COLUMN c int",
];

/// A table name no rule names unless it names every table.
const ELSEWHERE: &str = "`sluice rename probe`.`no such table`";

/// The tables statement `s` renames (their old names, as written).
fn renamed(s: &Statement) -> Vec<&ObjectName> {
    match &s.ast {
        Ast::RenameTable(renames) => renames.iter().map(|r| &r.old_name).collect(),
        Ast::AlterTable(at)
            if at
                .operations
                .iter()
                .any(|op| matches!(op, AlterTableOperation::RenameTable { .. })) =>
        {
            vec![&at.name]
        }
        _ => Vec::new(),
    }
}

/// The database (schema) statement `s` drops, if any (`DROP DATABASE x`,
/// `DROP SCHEMA x`).
fn dropped_schema(s: &Statement) -> Option<String> {
    match &s.ast {
        Ast::Drop {
            object_type: ObjectType::Schema | ObjectType::Database,
            names,
            ..
        } => names.first().map(ToString::to_string),
        _ => None,
    }
}

/// `decided` made stricter when it renames a table that a rule denying or
/// holding statements names (see the module's docs): decided as that rule
/// decides the statement it would no longer match, the reason saying so.
/// `None` when no rename escapes a rule (or one already decides it).
pub(super) fn escape(set: &PolicySet, decided: &SqlDecision) -> Option<SqlDecision> {
    if decided.decision.enforced != Action::Allow {
        return None;
    }
    if set.has_restrictive_table_rules()
        && let Some(schema) = decided
            .statements
            .iter()
            .find_map(|(s, _)| dropped_schema(s))
    {
        let d = Decision::refused_by_sluice(&format!(
            "it drops the database {schema} whole, tables and all, while rules that deny or hold statements on tables apply (they match table names, and may name one of its tables); drop its tables one by one"
        ));
        let mut stricter = decided.clone();
        for (_, each) in &mut stricter.statements {
            *each = d.clone();
        }
        stricter.decision = d;
        return Some(stricter);
    }
    let (i, table, mut d) = decided
        .statements
        .iter()
        .enumerate()
        .find_map(|(i, (s, _))| {
            renamed(s)
                .into_iter()
                .find_map(|name| held(set, &name.to_string()).map(|d| (i, name, d)))
        })?;
    d.reason = format!(
        "{}: it renames {table}, out of the sight of the rule that names it (rules match names)",
        d.reason
    );
    let mut stricter = decided.clone();
    stricter.statements[i].1 = d.clone();
    stricter.decision = d;
    Some(stricter)
}

/// The decision of the first rule that refuses or holds a statement on
/// `table` (one per kind) and not on every other name.
fn held(set: &PolicySet, table: &str) -> Option<Decision> {
    PROBES.iter().find_map(|probe| {
        let on = |t: &str| set.decide_sql(&probe.replace("{t}", t), SqlDialect::Mysql);
        let d = on(table).decision;
        let rule = d.enforced_rule.as_deref()?;
        if d.enforced == Action::Allow {
            return None;
        }
        // A rule that holds on any name (no `tables`, or a glob matching
        // this one too) holds under the new name as well.
        (on(ELSEWHERE).decision.enforced_rule.as_deref() != Some(rule)).then_some(d)
    })
}
