//! The [`Analyzer`]: walks one statement and computes each output column's lineage.

mod dml; // statements: INSERT/UPDATE/DELETE/MERGE and what they write
mod from; // FROM: tables, joins, derived tables, table functions, `*`
mod output; // slots mapped onto the server's output columns
mod query; // WITH, set operations, SELECT bodies
mod taint; // what one expression reads

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    FunctionArg, FunctionArgExpr, Ident, ObjectName, Statement, TableFactor, Visit, Visitor,
};

use super::lineage::{
    Rel, Scope, Slot, Source, TableRef, Taint, Tainted, as_uncertain, is_statistics_values, join,
    join_into, name_parts, norm, only_table, schema_table,
};
use super::matcher::ColumnMatcher;
use super::{ColumnMask, MaskReason, describe_taint};
use taint::TaintVisitor;

// === impl Analyzer ===

/// Walks one statement, computing each output column's lineage.
pub(super) struct Analyzer<'m> {
    matcher: &'m ColumnMatcher,
    /// Lowest rule of any table the statement references (for uncertainty).
    risk: Option<usize>,
    ctes: Vec<(String, Vec<Slot>)>,
    scopes: Vec<Scope>,
    /// Names of CTEs and derived tables (an origin naming one is not trusted).
    derived_names: HashSet<String>,
    depth: usize,
    /// Looking for writes and side effects of masked values (see
    /// [`laundering`]): every clause is analysed, not only output ones.
    pub(super) effects: bool,
    /// What [`laundering`] found, in the order found.
    pub(super) findings: Vec<String>,
}

impl<'m> Analyzer<'m> {
    pub(super) fn new(stmt: &Statement, matcher: &'m ColumnMatcher) -> Self {
        Self {
            matcher,
            risk: statement_risk(stmt, matcher),
            ctes: Vec::new(),
            scopes: Vec::new(),
            derived_names: HashSet::new(),
            depth: 0,
            effects: false,
            findings: Vec::new(),
        }
    }

    /// Records that the statement writes `taint` somewhere the workload can
    /// read back: `what` says where.
    pub(super) fn note_write(&mut self, what: &str, taint: &Tainted) {
        if let (true, Some(t)) = (self.effects, taint) {
            self.findings
                .push(format!("{what} {}", describe_taint(&t.reason)));
        }
    }

    /// A value written into `table.column`: laundering unless that column is
    /// itself masked by a rule at least as strong (rules are ordered
    /// strongest first) as the one the value's source is masked by.
    fn note_column_write(&mut self, table: &TableRef, column: &str, taint: &Taint) {
        let covered = self
            .matcher
            .match_column(table.schema.as_deref(), &table.table, column)
            .is_some_and(|rule| rule <= taint.rule);
        if !covered {
            self.note_write(
                &format!("writes into {}.{column}", table.display()),
                &Some(taint.clone()),
            );
        }
    }

    /// In [`laundering`] analyses, runs the taint analysis over clauses that
    /// produce no output (WHERE, JOIN … ON, GROUP BY, …) so that side-effecting
    /// calls in them are seen.
    fn scan_effects<V: Visit + ?Sized>(&mut self, node: &V) {
        if self.effects {
            let _ = self.taint_of(node);
        }
    }

    fn uncertain(&self, reason: &str) -> Tainted {
        self.risk.map(|rule| Taint {
            rule,
            reason: MaskReason::Uncertain(reason.to_owned()),
        })
    }

    /// For values that may come from any table (SQL text, session variables, statistics).
    fn dynamic(&self, what: &str) -> Tainted {
        self.matcher.lowest_rule().map(|rule| Taint {
            rule,
            reason: MaskReason::Uncertain(format!(
                "{what} may hold data of any table, including masked columns"
            )),
        })
    }

    fn column_taint(&self, schema: Option<&str>, table: &str, column: &str) -> Tainted {
        if is_statistics_values(schema, table, Some(column)) {
            return self.dynamic(&format!("{table}.{column}"));
        }
        self.matcher
            .match_column(schema, table, column)
            .map(|rule| Taint {
                rule,
                reason: MaskReason::DerivedFrom(match schema {
                    Some(s) => format!("{s}.{table}.{column}"),
                    None => format!("{table}.{column}"),
                }),
            })
    }

    pub(super) fn table_whole(&self, t: &TableRef) -> Tainted {
        let mut acc = self
            .matcher
            .table_may_have_masked(t.schema.as_deref(), &t.table)
            .map(|rule| Taint {
                rule,
                reason: MaskReason::DerivedFrom(format!("{}.*", t.display())),
            });
        if is_statistics_values(t.schema.as_deref(), &t.table, None) {
            join_into(&mut acc, self.dynamic(&t.table));
        }
        join_into(&mut acc, t.written_all.clone());
        for (_, w) in &t.written {
            join_into(&mut acc, Some(w.clone()));
        }
        acc
    }

    fn table_column(&self, t: &TableRef, column: &str) -> Tainted {
        let mut acc = if t.renamed.iter().any(|r| r == column) {
            as_uncertain(
                self.table_whole(t),
                &format!("{column} renames an unknown column of {}", t.display()),
            )
        } else {
            self.column_taint(t.schema.as_deref(), &t.table, column)
        };
        join_into(&mut acc, t.written_taint(column));
        acc
    }

    fn slot_whole(&self, slot: &Slot) -> Tainted {
        match slot {
            Slot::Col { taint, .. } | Slot::NameOnly { taint, .. } | Slot::Opaque { taint, .. } => {
                taint.clone()
            }
            Slot::Table(t) => self.table_whole(t),
        }
    }

    pub(super) fn slots_whole(&self, slots: &[Slot]) -> Tainted {
        slots
            .iter()
            .fold(None, |acc, s| join(acc, self.slot_whole(s)))
    }

    fn rel_whole(&self, rel: &Rel) -> Tainted {
        match rel {
            Rel::Table(t) => self.table_whole(t),
            Rel::Derived(slots) => self.slots_whole(slots),
        }
    }

    /// The taint of column `name` of `rel`, or None when `rel` certainly lacks it; the
    /// flag tells whether `rel` certainly has it (a column named so).
    fn rel_column(&self, rel: &Rel, name: &str) -> Option<(Tainted, bool)> {
        match rel {
            Rel::Table(t) => Some((self.table_column(t, name), false)),
            Rel::Derived(slots) => {
                let mut found = false;
                let mut definite = false;
                let mut acc = None;
                for slot in slots {
                    let hit = match slot {
                        Slot::Col { name: n, taint, .. } => match n {
                            Some(n) if n != name => None,
                            Some(_) => {
                                definite = true;
                                Some(taint.clone())
                            }
                            None => Some(taint.clone()),
                        },
                        Slot::NameOnly { name: n, taint } => (n == name).then(|| {
                            definite = true;
                            taint.clone()
                        }),
                        Slot::Table(t) => Some(self.table_column(t, name)),
                        Slot::Opaque { taint, .. } => Some(taint.clone()),
                    };
                    if let Some(t) = hit {
                        found = true;
                        join_into(&mut acc, t);
                    }
                }
                found.then_some((acc, definite))
            }
        }
    }

    fn all_sources(&self) -> impl Iterator<Item = &Source> {
        self.scopes.iter().rev().flat_map(|s| s.sources.iter())
    }

    fn everything_in_scope(&self) -> Tainted {
        self.all_sources()
            .fold(None, |acc, s| join(acc, self.rel_whole(&s.rel)))
    }

    /// An unqualified name: a column of any in-scope relation, or a whole-row reference.
    fn resolve_unqualified(&self, id: &Ident) -> Tainted {
        let name = norm(id);
        if id.quote_style.is_none() && name == "default" {
            return None;
        }
        if name.starts_with('@') && !name.starts_with("@@") {
            // MySQL user variables can carry values selected from masked columns earlier.
            return self.dynamic(&format!("user variable {name}"));
        }
        let mut found = false;
        let mut acc = self.equated_taint(std::slice::from_ref(&name));
        // Innermost query level first; a level where the name certainly is a column
        // ends the search, as it does for the server.
        for scope in self.scopes.iter().rev() {
            let mut definite = false;
            for src in &scope.sources {
                if let Some((t, d)) = self.rel_column(&src.rel, &name) {
                    found = true;
                    definite |= d;
                    join_into(&mut acc, t);
                }
                if !src.name.is_empty() && src.name == name {
                    found = true;
                    join_into(&mut acc, self.rel_whole(&src.rel));
                    join_into(&mut acc, self.equated_of_relation(&name));
                }
            }
            if definite {
                break;
            }
        }
        if found {
            return acc;
        }
        let reason = format!("column {name} was not found in any FROM item");
        join(
            as_uncertain(self.everything_in_scope(), &reason),
            self.uncertain(&reason),
        )
    }

    fn find_sources<'s>(
        &'s self,
        schema: Option<&'s str>,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Source> {
        self.all_sources().filter(move |s| {
            s.name == name
                && match (schema, &s.schema) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }

    /// `rel.col` or `schema.rel.col`.
    fn resolve_qualified(&self, ids: &[Ident]) -> Tainted {
        let (col, qualifier) = ids.split_last()?;
        let Some((rel_name, rest)) = qualifier.split_last() else {
            return self.resolve_unqualified(col);
        };
        let column = norm(col);
        let rel_name = norm(rel_name);
        let schema = rest.last().map(norm);
        let mut found = false;
        let mut acc = self.equated_taint(&[rel_name.clone(), column.clone()]);
        for src in self.find_sources(schema.as_deref(), &rel_name) {
            found = true;
            let t = match self.rel_column(&src.rel, &column) {
                Some((t, _)) => t,
                None => as_uncertain(
                    self.rel_whole(&src.rel),
                    &format!("column {column} was not found in {rel_name}"),
                ),
            };
            join_into(&mut acc, t);
        }
        if found {
            return acc;
        }
        join(
            self.column_taint(schema.as_deref(), &rel_name, &column),
            self.resolve_unqualified(col),
        )
    }

    fn resolve_whole_row(&self, name: &ObjectName) -> Tainted {
        let (schema, table) = schema_table(name);
        let mut found = false;
        let mut acc = None;
        for src in self.find_sources(schema.as_deref(), &table) {
            found = true;
            join_into(&mut acc, self.rel_whole(&src.rel));
        }
        if found {
            return acc;
        }
        let mut t = self
            .matcher
            .table_may_have_masked(schema.as_deref(), &table)
            .map(|rule| Taint {
                rule,
                reason: MaskReason::DerivedFrom(format!("{table}.*")),
            });
        join_into(
            &mut t,
            self.uncertain(&format!("{table}.* was not found in any FROM item")),
        );
        t
    }

    /// Everything an AST node's expressions read (subqueries analysed in the current scope).
    pub(super) fn taint_of<V: Visit + ?Sized>(&mut self, node: &V) -> Tainted {
        let mut v = TaintVisitor {
            an: self,
            taint: None,
            nested: 0,
            skip_next_query: false,
            skip_until: None,
        };
        let _ = node.visit(&mut v);
        v.taint
    }

    fn function_args_taint(&mut self, fname: &str, args: &[FunctionArg]) -> Tainted {
        let mut acc = None;
        for arg in args {
            let arg = match arg {
                FunctionArg::ExprNamed { name, arg, .. } => {
                    let t = self.taint_of(name);
                    join_into(&mut acc, t);
                    arg
                }
                FunctionArg::Named { arg, .. } | FunctionArg::Unnamed(arg) => arg,
            };
            let t = match arg {
                FunctionArgExpr::Expr(e) => self.taint_of(e),
                FunctionArgExpr::QualifiedWildcard(name) => self.resolve_whole_row(name),
                FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
                    if fname == "count" {
                        None
                    } else {
                        self.everything_in_scope()
                    }
                }
            };
            join_into(&mut acc, t);
        }
        acc
    }
}

pub(super) fn to_mask(t: Tainted) -> ColumnMask {
    match t {
        Some(Taint { rule, reason }) => ColumnMask::Mask { rule, reason },
        None => ColumnMask::Clear,
    }
}

fn assignment_columns(target: &sqlparser::ast::AssignmentTarget) -> Vec<String> {
    match target {
        sqlparser::ast::AssignmentTarget::ColumnName(n) => {
            name_parts(n).pop().into_iter().collect()
        }
        sqlparser::ast::AssignmentTarget::Tuple(names) => {
            names.iter().filter_map(|n| name_parts(n).pop()).collect()
        }
    }
}

/// The lowest rule of any table the statement names (table functions excluded).
fn statement_risk(stmt: &Statement, matcher: &ColumnMatcher) -> Option<usize> {
    struct Risk<'m> {
        matcher: &'m ColumnMatcher,
        rule: Option<usize>,
        skip_next: bool,
    }
    impl Visitor for Risk<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
            if let Some((schema, table, _)) = only_table(tf) {
                self.add(schema.as_deref(), &table);
                self.skip_next = true;
            } else if let TableFactor::Table { args: Some(_), .. } = tf {
                self.skip_next = true;
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            if std::mem::take(&mut self.skip_next) {
                return ControlFlow::Continue(());
            }
            let (schema, table) = schema_table(name);
            self.add(schema.as_deref(), &table);
            ControlFlow::Continue(())
        }
    }
    impl Risk<'_> {
        fn add(&mut self, schema: Option<&str>, table: &str) {
            let rule = if is_statistics_values(schema, table, None) {
                self.matcher.lowest_rule()
            } else {
                self.matcher.table_may_have_masked(schema, table)
            };
            if let Some(rule) = rule {
                self.rule = Some(self.rule.map_or(rule, |r| r.min(rule)));
            }
        }
    }
    let mut v = Risk {
        matcher,
        rule: None,
        skip_next: false,
    };
    let _ = stmt.visit(&mut v);
    v.rule
}
