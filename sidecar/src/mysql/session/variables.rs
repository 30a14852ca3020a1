//! Server variables as a way around masking. MySQL's `SET` takes any
//! expression, subqueries included, and a session's variables are read back
//! with `SELECT @@name` or `SHOW VARIABLES`, whose values have no origin to
//! mask by: `SET @@session.default_master_connection = (SELECT ssn FROM
//! customers)` then `SELECT @@default_master_connection` gave the SSN in
//! clear, and numeric variables carry eight bytes at a time
//! (`group_concat_max_len`, `auto_increment_increment`, `timestamp` read
//! back through `NOW()`, `insert_id` through the next row's id).
//!
//! So while column rules apply, a `SET` of any variable but a user variable
//! (`@v`: what it holds is masked as any table's data when read) to a value
//! the masking's lineage analysis finds may carry masked data (a masked
//! column, a user variable, a stored function, `LOAD_FILE`, …) is refused,
//! as a write of such a value into a table is
//! ([`sluice_policy::mask_plan::laundering`]). A value is analysed as the
//! column of `SELECT <value>`: a SET has no tables of its own in scope.

use sluice_policy::mask_plan::{ColumnMask, ColumnMatcher, MaskReason, Preview, PreviewItem};
use sqlparser::ast::{Expr, SelectItem, Set, SetExpr, Statement as Ast};

use super::*;

impl Session<'_> {
    /// Why `decided` must be refused because it sets a server variable to
    /// a value that may carry masked data, when so (see the module docs).
    /// Asked by `laundering_through` only while column rules apply.
    pub(super) fn variable_laundering(
        &self,
        decided: &SqlDecision,
        unseen: &Unseen,
    ) -> Option<String> {
        let matcher = unseen
            .matcher
            .as_ref()
            .unwrap_or_else(|| self.masking.column_matcher());
        decided
            .statements
            .iter()
            .find_map(|(s, _)| laundered_variable(&s.ast, matcher))
            .map(|(name, why)| {
                let name = bare(&name);
                format!(
                    "statement refused by Sluice: it sets the server variable {name} to a value that may carry masked columns ({why}), and server variables are read back unmasked (SELECT @@{name}); set it from values that do not come from masked columns, or keep such a value in a user variable (@v)"
                )
            })
    }
}

/// The variable `stmt` (a SET) sets to a value that may carry masked data
/// under `matcher`, and why; `None` for any other statement.
fn laundered_variable(stmt: &Ast, matcher: &ColumnMatcher) -> Option<(String, String)> {
    let Ast::Set(set) = stmt else {
        return None;
    };
    assignments(set).into_iter().find_map(|(name, value)| {
        if is_user_variable(&name) {
            return None;
        }
        value_taint(value, matcher).map(|why| (name, why))
    })
}

/// The variables a SET assigns, by name as written, with their values.
fn assignments(set: &Set) -> Vec<(String, &Expr)> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => values.iter().map(|v| (variable.to_string(), v)).collect(),
        Set::ParenthesizedAssignments { variables, values } => variables
            .iter()
            .map(ToString::to_string)
            .zip(values.iter())
            .collect(),
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .map(|a| (a.name.to_string(), &a.value))
            .collect(),
        Set::SetTimeZone { value, .. } => vec![("time_zone".to_string(), value)],
        // Names, roles, transaction modes: keywords and literals only.
        _ => Vec::new(),
    }
}

/// A server variable's name without `@@` and scope (`@@session.x`: `x`).
fn bare(name: &str) -> &str {
    let name = name.trim_start_matches('@');
    ["session.", "local."]
        .iter()
        .find_map(|scope| {
            name.get(..scope.len())
                .filter(|p| p.eq_ignore_ascii_case(scope))
                .map(|_| &name[scope.len()..])
        })
        .unwrap_or(name)
}

/// `@name` (not `@@name`): a user variable, whose reads the lineage
/// analysis masks already.
fn is_user_variable(name: &str) -> bool {
    name.starts_with('@') && !name.starts_with("@@")
}

/// Why `value` may carry masked data under `matcher` (the masking of
/// `SELECT <value>`'s column), or `None`. A value that cannot be analysed
/// is taken to carry it.
fn value_taint(value: &Expr, matcher: &ColumnMatcher) -> Option<String> {
    let Some(select) = select_of(value) else {
        return Some("Sluice could not analyse it".into());
    };
    let masked = |m: &ColumnMask| match m {
        ColumnMask::Clear => None,
        ColumnMask::Mask { reason, .. } => Some(match reason {
            MaskReason::Origin => "a masked column".to_string(),
            MaskReason::DerivedFrom(column) => format!("it derives from {column}"),
            MaskReason::Uncertain(why) => why.clone(),
        }),
    };
    match sluice_policy::mask_plan::preview(&select, matcher) {
        Preview::Rows(items) => items.iter().find_map(|i| match i {
            PreviewItem::Column { mask, .. }
            | PreviewItem::TableColumns { mask, .. }
            | PreviewItem::Unknown { mask } => masked(mask),
        }),
        Preview::Elsewhere { mask } => masked(&mask),
        Preview::NoTableData => None,
    }
}

/// `SELECT <value>` (built from `SELECT 1`'s tree: no rendering and
/// parsing again).
fn select_of(value: &Expr) -> Option<Ast> {
    let dialect = sqlparser::dialect::MySqlDialect {};
    let mut stmt = sqlparser::parser::Parser::parse_sql(&dialect, "SELECT 1")
        .ok()?
        .pop()?;
    let Ast::Query(query) = &mut stmt else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    select.projection = vec![SelectItem::UnnamedExpr(value.clone())];
    Some(stmt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn laundered(sql: &str) -> Option<String> {
        let matcher = ColumnMatcher::new(&[("customers.ssn".to_owned(), 0)]).unwrap();
        let dialect = sqlparser::dialect::MySqlDialect {};
        let stmt = sqlparser::parser::Parser::parse_sql(&dialect, sql)
            .unwrap()
            .pop()
            .unwrap();
        laundered_variable(&stmt, &matcher).map(|(name, _)| name)
    }

    #[test]
    fn server_variables_set_from_masked_data_are_found() {
        for (sql, name) in [
            (
                "SET @@session.default_master_connection = (SELECT ssn FROM customers)",
                "@@session.default_master_connection",
            ),
            (
                "SET SESSION group_concat_max_len = (SELECT length(ssn) FROM customers)",
                "group_concat_max_len",
            ),
            ("SET timestamp = (SELECT ssn FROM customers)", "timestamp"),
            (
                "SET @x = 1, @@max_sort_length = (SELECT ssn FROM customers)",
                "@@max_sort_length",
            ),
            ("SET insert_id = @v", "insert_id"),
            ("SET time_zone = LOAD_FILE('/tmp/x')", "time_zone"),
            (
                "SET sql_select_limit = (SELECT x FROM (SELECT ssn AS x FROM customers) d)",
                "sql_select_limit",
            ),
        ] {
            assert_eq!(laundered(sql).as_deref(), Some(name), "{sql}");
        }
    }

    #[test]
    fn names_are_shown_bare() {
        assert_eq!(
            bare("@@session.default_master_connection"),
            "default_master_connection"
        );
        assert_eq!(bare("@@SESSION.x"), "x");
        assert_eq!(bare("@@x"), "x");
        assert_eq!(bare("timestamp"), "timestamp");
    }

    #[test]
    fn other_sets_are_not() {
        for sql in [
            "SET @v = (SELECT ssn FROM customers)",
            "SET autocommit = ON",
            "SET sql_mode = DEFAULT",
            "SET SESSION sql_mode = 'ANSI_QUOTES'",
            "SET sql_mode = (SELECT 'ANSI_QUOTES')",
            "SET group_concat_max_len = (SELECT count(*) FROM customers)",
            "SET @@session.max_sort_length = (SELECT length(name) FROM customers)",
            "SET NAMES utf8mb4",
            "SET SESSION TRANSACTION READ ONLY",
            "SET sql_mode = @@global.sql_mode",
            "SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
            "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'ONLY_FULL_GROUP_BY', '')",
            "SET time_zone = 'UTC', autocommit = 0, SESSION wait_timeout = 600",
            "SET sql_mode = (SELECT name FROM customers)",
            "SELECT ssn FROM customers",
        ] {
            assert_eq!(laundered(sql), None, "{sql}");
        }
    }
}
