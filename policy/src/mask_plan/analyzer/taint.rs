//! The [`TaintVisitor`]: what one expression reads.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Query, Visitor,
};

use super::Analyzer;
use crate::mask_plan::is_side_effect_function;
use crate::mask_plan::lineage::{Tainted, function_name, is_dynamic_sql, join_into};

// === impl TaintVisitor ===

/// Collects what an expression reads. Subqueries inside it are analysed as queries
/// with the current scope as their outer scope; their own insides are skipped here.
pub(super) struct TaintVisitor<'a, 'm> {
    pub(super) an: &'a mut Analyzer<'m>,
    pub(super) taint: Tainted,
    pub(super) nested: usize,
    pub(super) skip_next_query: bool,
    /// A subtree already accounted for (by identity), skipped until left.
    pub(super) skip_until: Option<*const Expr>,
}

impl Visitor for TaintVisitor<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.nested == 0 && self.skip_until.is_none() {
            // EXISTS yields a boolean about its rows, not their values.
            if !std::mem::take(&mut self.skip_next_query) {
                let slots = self.an.query(query);
                let t = self.an.slots_whole(&slots);
                join_into(&mut self.taint, t);
            }
        }
        self.nested += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.nested = self.nested.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.nested > 0 || self.skip_until.is_some() {
            return ControlFlow::Continue(());
        }
        let t = match expr {
            // A cast, an operator or a call may run a user-defined function
            // the database attaches to it: computed values are masked
            // whole (a column's own value is planned below).
            e if self.an.matcher.implicit_code() && computes(e) => {
                let t = self.an.dynamic(
                    "a computed value (the database's casts or operators run user-defined functions)",
                );
                join_into(&mut self.taint, t);
                return ControlFlow::Continue(());
            }
            Expr::Function(f)
                if f.over.is_some() || f.filter.is_some() || function_name(&f.name) == "count" =>
            {
                let t = self.function_values(f);
                self.skip_until = Some(expr as *const Expr);
                t
            }
            Expr::Identifier(id) => self.an.resolve_unqualified(id),
            Expr::CompoundIdentifier(ids) => self.an.resolve_qualified(ids),
            Expr::QualifiedWildcard(name, _) => self.an.resolve_whole_row(name),
            Expr::Wildcard(_) => self.an.everything_in_scope(),
            Expr::Function(f) => self.function(f),
            Expr::Exists { subquery, .. } => {
                // Its rows' values do not flow out, but side effects in it
                // happen all the same.
                if self.an.effects {
                    let _ = self.an.query(subquery);
                }
                self.skip_next_query = true;
                None
            }
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::Placeholder(p)
                    if p.starts_with('@') && !p.starts_with("@@") =>
                {
                    self.an.dynamic(&format!("user variable {p}"))
                }
                _ => None,
            },
            _ => None,
        };
        join_into(&mut self.taint, t);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.skip_until == Some(expr as *const Expr) {
            self.skip_until = None;
        }
        ControlFlow::Continue(())
    }
}

impl TaintVisitor<'_, '_> {
    /// What flows into the value of a window or filtered aggregate, or a count:
    /// `OVER (PARTITION BY/ORDER BY)` and `FILTER (WHERE)` only select and order rows
    /// (like WHERE and ORDER BY), and a count carries no value of its argument.
    /// `WITHIN GROUP (ORDER BY x)` does count: `percentile_disc`/`mode` return x.
    fn function_values(&mut self, f: &Function) -> Tainted {
        if function_name(&f.name) == "count" {
            return None;
        }
        let mut t = self.function(f);
        let args = self.an.taint_of(&f.args);
        join_into(&mut t, args);
        let parameters = self.an.taint_of(&f.parameters);
        join_into(&mut t, parameters);
        let within_group = self.an.taint_of(&f.within_group);
        join_into(&mut t, within_group);
        t
    }

    /// Wildcard arguments are not expressions, so the visitor would not see them.
    fn function(&mut self, f: &Function) -> Tainted {
        let fname = function_name(&f.name);
        if self.an.effects && is_side_effect_function(&fname) {
            let args = self.an.taint_of(&f.args);
            self.an.note_write(
                &format!(
                    "passes to {fname}(), whose effect (a setting, notification, sequence, \
                     lock, large object or remote call) the workload can read back unmasked,"
                ),
                &args,
            );
        }
        let mut t = if is_dynamic_sql(&fname) {
            self.an.dynamic(&format!("{fname}()"))
        } else if self.an.matcher.is_opaque_function(&fname) {
            self.an.dynamic(&format!("user-defined function {fname}()"))
        } else if fname == "current_setting" && !is_builtin_setting(f) {
            // Custom settings (names with a dot) can carry values set from masked columns.
            self.an.dynamic("a custom setting")
        } else {
            None
        };
        if let FunctionArguments::List(list) = &f.args {
            for arg in &list.args {
                let (FunctionArg::Named { arg, .. }
                | FunctionArg::ExprNamed { arg, .. }
                | FunctionArg::Unnamed(arg)) = arg;
                let w = match arg {
                    FunctionArgExpr::QualifiedWildcard(name) => self.an.resolve_whole_row(name),
                    FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_)
                        if fname != "count" =>
                    {
                        self.an.everything_in_scope()
                    }
                    _ => None,
                };
                join_into(&mut t, w);
            }
        }
        t
    }
}

/// Whether `e` computes a value from others (a cast, an operator, a call,
/// a CASE…), where a user-defined function the database attaches to a
/// type or an operator may run: not a column, a constant, a parameter, a
/// subquery (planned as a query of its own) or parentheses.
fn computes(e: &Expr) -> bool {
    if let Expr::Function(f) = e
        && function_name(&f.name) == "count"
    {
        // A count of rows or values: a built-in's number.
        return false;
    }
    !matches!(
        e,
        Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::QualifiedWildcard(..)
            | Expr::Wildcard(_)
            | Expr::Value(_)
            | Expr::Nested(_)
            | Expr::Exists { .. }
            | Expr::Subquery(_)
    )
}

/// `current_setting('name')` of a built-in setting: built-in names have no dot.
fn is_builtin_setting(f: &Function) -> bool {
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(name) => !name.contains('.'),
            _ => false,
        },
        _ => false,
    }
}
