//! DDL that takes masked values out of the masking rules' sight without a
//! write the lineage analysis could follow:
//! - the rules match names, so renaming a masked column, its table or (for
//!   a `schema.table.column` rule) its schema makes the same values unmasked
//!   under the new name, and a generated column computed from a masked one
//!   stores them again under another;
//! - server-side code (a function, procedure or trigger) runs statements the
//!   sidecar never sees: its body can copy a masked column into a table the
//!   workload reads back (`SELECT f()`, or any write firing the trigger).
//!
//! [`super::laundering`] refuses these like the writes it finds.

use sqlparser::ast::{
    AlterSchemaOperation, AlterTableOperation, ColumnDef, ColumnOption, Expr, ObjectName,
    RenameTableNameKind, Statement, Visit, Visitor,
};
use std::ops::ControlFlow;

use super::ColumnMatcher;
use super::lineage::{norm, schema_table};

/// Why `stmt` renames or derives a masked column, or defines code, if it does.
pub(super) fn finding(stmt: &Statement, matcher: &ColumnMatcher) -> Option<String> {
    let code = |what: &str| {
        Some(format!(
            "defines {what} while column masking applies: code on the server reads and stores what it likes out of Sluice's sight (a masked column copied into a table the workload reads back unmasked); define server-side code as another role (a migration), not through Sluice"
        ))
    };
    match stmt {
        Statement::CreateFunction(_) => code("a function"),
        Statement::CreateProcedure { .. } => code("a procedure"),
        Statement::CreateTrigger(_) => code("a trigger"),
        Statement::AlterTable(at) => at
            .operations
            .iter()
            .find_map(|op| operation(&at.name, op, matcher)),
        Statement::AlterSchema(alter) => alter.operations.iter().find_map(|op| match op {
            AlterSchemaOperation::Rename { name } => schema_renamed(&alter.name, name, matcher),
            _ => None,
        }),
        // MySQL `RENAME TABLE a TO b, …`.
        Statement::RenameTable(renames) => renames
            .iter()
            .find_map(|r| table_renamed(&r.old_name, &r.new_name, matcher)),
        _ => None,
    }
}

fn operation(
    table: &ObjectName,
    op: &AlterTableOperation,
    matcher: &ColumnMatcher,
) -> Option<String> {
    let (schema, name) = schema_table(table);
    let masked = |column: &str| matcher.match_column(schema.as_deref(), &name, column);
    match op {
        AlterTableOperation::RenameColumn {
            old_column_name, ..
        } => column_renamed(&name, &norm(old_column_name), masked),
        AlterTableOperation::RenameTable { table_name } => {
            let (RenameTableNameKind::As(to) | RenameTableNameKind::To(to)) = table_name;
            table_renamed(table, to, matcher)
        }
        // MySQL `CHANGE [COLUMN] old new …`: a rename when the names differ.
        AlterTableOperation::ChangeColumn {
            old_name,
            new_name,
            options,
            ..
        } => {
            if norm(old_name) != norm(new_name)
                && let Some(why) = column_renamed(&name, &norm(old_name), masked)
            {
                return Some(why);
            }
            derived(&name, options.iter(), masked)
        }
        AlterTableOperation::AddColumn { column_def, .. } => {
            derived(&name, options_of(column_def), masked)
        }
        AlterTableOperation::ModifyColumn { options, .. } => derived(&name, options.iter(), masked),
        _ => None,
    }
}

fn options_of(def: &ColumnDef) -> impl Iterator<Item = &ColumnOption> {
    def.options.iter().map(|o| &o.option)
}

fn column_renamed(
    table: &str,
    column: &str,
    masked: impl Fn(&str) -> Option<usize>,
) -> Option<String> {
    masked(column).map(|_| {
        format!(
            "renames {table}.{column}, a masked column: the masking rules match names, so its values would be read unmasked under the new one; ask an administrator to rename it and its masking rule together"
        )
    })
}

fn table_renamed(from: &ObjectName, to: &ObjectName, matcher: &ColumnMatcher) -> Option<String> {
    let (schema, table) = schema_table(from);
    let (to_schema, to_table) = schema_table(to);
    let before = matcher.table_may_have_masked(schema.as_deref(), &table)?;
    // Still matched as strongly under the new name: nothing escapes.
    let after = matcher.table_may_have_masked(to_schema.or(schema).as_deref(), &to_table);
    if after.is_some_and(|rule| rule <= before) {
        return None;
    }
    Some(format!(
        "renames table {table}, which has masked columns: the masking rules match names, so its values would be read unmasked under the new one; ask an administrator to rename it and its masking rules together"
    ))
}

/// `ALTER SCHEMA from RENAME TO to` while a `schema.table.column` rule
/// matches `from` but not `to`: every table of the schema moves out of it.
fn schema_renamed(from: &ObjectName, to: &ObjectName, matcher: &ColumnMatcher) -> Option<String> {
    let (_, from) = schema_table(from);
    let (_, to) = schema_table(to);
    matcher.schema_rename_unmasks(&from, &to)?;
    Some(format!(
        "renames schema {from}, which masking rules name (schema.table.column): its tables' masked values would be read unmasked under the new name; ask an administrator to rename it and its masking rules together"
    ))
}

/// A generated column whose expression reads a masked column of its table.
fn derived<'a>(
    table: &str,
    options: impl Iterator<Item = &'a ColumnOption>,
    masked: impl Fn(&str) -> Option<usize>,
) -> Option<String> {
    for option in options {
        let ColumnOption::Generated {
            generation_expr: Some(expr),
            ..
        } = option
        else {
            continue;
        };
        let mut names = Names(Vec::new());
        let _ = expr.visit(&mut names);
        if let Some(column) = names.0.into_iter().find(|c| masked(c).is_some()) {
            return Some(format!(
                "adds a column generated from {table}.{column}, a masked column, which would store its values unmasked under another name"
            ));
        }
    }
    None
}

/// The column names an expression reads (the last part of each name).
struct Names(Vec<String>);

impl Visitor for Names {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) => self.0.push(norm(id)),
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    self.0.push(norm(last));
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
