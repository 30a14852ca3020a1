//! Whether an `UPDATE`/`DELETE`/`MERGE` condition certainly restricts the target's rows.

use std::ops::ControlFlow;

use sqlparser::ast::{self, Expr, ObjectNamePart, TableFactor, TableWithJoins, Visit, Visitor};

// === Restricting WHERE clauses ===

/// The tables a write targets and the other relations of its statement, to
/// tell whether a condition restricts the target's rows (see
/// [`WriteScope::restricts`]).
pub(super) struct WriteScope {
    /// Names (last part) and aliases of the target tables, lower case.
    targets: Vec<String>,
    /// Names and aliases of the other relations (`UPDATE … FROM`, `DELETE …
    /// USING`, `MERGE … USING`) that are not the target table and do not read
    /// it: a comparison with their columns restricts the target's rows.
    free: Vec<String>,
}

/// The relations of a FROM item with its joins.
pub(super) fn relations_of(t: &TableWithJoins) -> impl Iterator<Item = &TableFactor> {
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
    pub(super) fn new<'a>(
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
    pub(super) fn restricts(&self, expr: &Expr) -> bool {
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
