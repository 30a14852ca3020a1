//! Queries: `WITH`, set operations and `SELECT` bodies.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Cte, Expr, JoinConstraint, JoinOperator, Query, Select, SetExpr, UnaryOperator,
    Visit, Visitor,
};

use super::Analyzer;
use crate::mask_plan::lineage::{
    MAX_DEPTH, Rel, Scope, Shape, Slot, TableRef, Taint, Tainted, alias_names, apply_aliases,
    as_uncertain, join, join_into, norm,
};

impl<'m> Analyzer<'m> {
    // --- queries ---

    pub(in crate::mask_plan) fn query(&mut self, q: &Query) -> Vec<Slot> {
        if self.depth >= MAX_DEPTH {
            return vec![Slot::Opaque {
                taint: self.uncertain("the query nests too deeply to follow"),
                may_have_origin: true,
            }];
        }
        self.depth += 1;
        let mark = self.ctes.len();
        if let Some(with) = &q.with {
            if with.recursive {
                self.recursive_ctes(&with.cte_tables);
            } else {
                for cte in &with.cte_tables {
                    let slots = self.cte_slots(cte);
                    self.ctes.push((norm(&cte.alias.name), slots));
                }
            }
        }
        let mut slots = self.set_expr(&q.body);
        self.scan_effects(&q.order_by);
        self.scan_effects(&q.limit_clause);
        if q.for_clause.is_some() || !q.pipe_operators.is_empty() {
            let t = join(
                self.slots_whole(&slots),
                self.uncertain("the query reshapes its result (FOR/pipe clause)"),
            );
            slots = vec![Slot::Opaque {
                taint: t,
                may_have_origin: false,
            }];
        }
        self.ctes.truncate(mark);
        self.depth -= 1;
        slots
    }

    fn cte_slots(&mut self, cte: &Cte) -> Vec<Slot> {
        self.derived_names.insert(norm(&cte.alias.name));
        let slots = self.query(&cte.query);
        apply_aliases(slots, &alias_names(Some(&cte.alias)), |s| {
            self.slots_whole(s)
        })
    }

    /// `WITH RECURSIVE`: any CTE may read itself or a later one. All are registered
    /// first (as untainted columns of unknown shape) and re-analysed until the rule of
    /// every column is stable; taints only grow, so this settles.
    fn recursive_ctes(&mut self, ctes: &[Cte]) {
        let base = self.ctes.len();
        for cte in ctes {
            self.ctes.push((
                norm(&cte.alias.name),
                vec![Slot::Opaque {
                    taint: None,
                    may_have_origin: false,
                }],
            ));
        }
        let mut last: Option<Vec<Vec<Option<usize>>>> = None;
        for _ in 0..16 {
            let mut signature = Vec::with_capacity(ctes.len());
            for (i, cte) in ctes.iter().enumerate() {
                let slots = self.cte_slots(cte);
                signature.push(
                    slots
                        .iter()
                        .map(|s| self.slot_whole(s).map(|t| t.rule))
                        .collect::<Vec<_>>(),
                );
                if let Some(entry) = self.ctes.get_mut(base + i) {
                    entry.1 = slots;
                }
            }
            if last.as_ref() == Some(&signature) {
                return;
            }
            last = Some(signature);
        }
        for i in base..self.ctes.len() {
            let t = join(
                self.slots_whole(&self.ctes[i].1),
                self.uncertain("a recursive CTE did not settle"),
            );
            self.ctes[i].1 = vec![Slot::Opaque {
                taint: t,
                may_have_origin: false,
            }];
        }
    }

    fn set_expr(&mut self, body: &SetExpr) -> Vec<Slot> {
        match body {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left);
                let r = self.set_expr(right);
                self.set_operation(l, r)
            }
            SetExpr::Values(values) => {
                let mut cols: Vec<Tainted> = Vec::new();
                let mut same_width = true;
                for row in &values.rows {
                    if !cols.is_empty() && cols.len() != row.len() {
                        same_width = false;
                    }
                    for (i, e) in row.iter().enumerate() {
                        let t = self.taint_of(e);
                        if i < cols.len() {
                            join_into(&mut cols[i], t);
                        } else {
                            cols.push(t);
                        }
                    }
                }
                if !same_width {
                    let t = cols.into_iter().fold(None, join);
                    return vec![Slot::Opaque {
                        taint: t,
                        may_have_origin: false,
                    }];
                }
                cols.into_iter()
                    .map(|taint| Slot::Col {
                        name: None,
                        taint,
                        passthrough: false,
                    })
                    .collect()
            }
            SetExpr::Insert(stmt)
            | SetExpr::Update(stmt)
            | SetExpr::Delete(stmt)
            | SetExpr::Merge(stmt) => match self.statement(stmt) {
                Shape::Rows(slots) => slots,
                _ => vec![Slot::Opaque {
                    taint: self.uncertain("a data-modifying statement of unknown shape"),
                    may_have_origin: true,
                }],
            },
            SetExpr::Table(t) => {
                let Some(table) = t.table_name.as_ref().map(|n| n.to_lowercase()) else {
                    return vec![Slot::Opaque {
                        taint: self.uncertain("TABLE without a name"),
                        may_have_origin: true,
                    }];
                };
                let schema = t.schema_name.as_ref().map(|s| s.to_lowercase());
                match self.lookup_cte(schema.as_deref(), &table) {
                    Some(slots) => slots,
                    None => vec![Slot::Table(TableRef::new(schema, table))],
                }
            }
        }
    }

    fn set_operation(&self, l: Vec<Slot>, r: Vec<Slot>) -> Vec<Slot> {
        let known = |s: &[Slot]| -> Option<Vec<(Option<String>, Tainted)>> {
            s.iter()
                .filter(|s| !matches!(s, Slot::NameOnly { .. }))
                .map(|s| match s {
                    Slot::Col { name, taint, .. } => Some((name.clone(), taint.clone())),
                    _ => None,
                })
                .collect()
        };
        if let (Some(lk), Some(rk)) = (known(&l), known(&r))
            && lk.len() == rk.len()
        {
            return lk
                .into_iter()
                .zip(rk)
                .map(|((name, lt), (_, rt))| Slot::Col {
                    name,
                    taint: join(lt, rt),
                    passthrough: false,
                })
                .collect();
        }
        let t = join(self.slots_whole(&l), self.slots_whole(&r));
        vec![Slot::Opaque {
            taint: as_uncertain(t, "a set operation over columns of unknown position (*)"),
            may_have_origin: false,
        }]
    }

    pub(super) fn lookup_cte(&self, schema: Option<&str>, name: &str) -> Option<Vec<Slot>> {
        if schema.is_some() {
            return None;
        }
        self.ctes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, slots)| slots.clone())
    }

    fn select(&mut self, s: &Select) -> Vec<Slot> {
        self.scopes.push(Scope::default());
        for twj in &s.from {
            self.table_with_joins(twj);
        }
        self.equate(s);
        let mut out = Vec::new();
        for item in &s.projection {
            self.select_item(item, &mut out);
        }
        // A `*` holds the equated columns too: a table's by their names
        // (every column for `*` entries), anything else whole.
        let equated: Vec<(Vec<String>, Taint)> = self
            .scopes
            .last()
            .map(|sc| sc.equated.clone())
            .unwrap_or_default();
        if !equated.is_empty() {
            let all = equated
                .iter()
                .fold(None, |acc, (_, t)| join(acc, Some(t.clone())));
            for slot in &mut out {
                match slot {
                    Slot::Table(table) => {
                        for (parts, t) in &equated {
                            match parts.last().map(String::as_str) {
                                Some("*") | None => {
                                    join_into(&mut table.written_all, Some(t.clone()))
                                }
                                Some(column) => table.written.push((column.to_owned(), t.clone())),
                            }
                        }
                    }
                    Slot::Opaque { taint, .. } => join_into(taint, all.clone()),
                    _ => {}
                }
            }
        }
        if self.effects {
            self.scan_effects(&s.from);
            self.scan_effects(&s.selection);
            self.scan_effects(&s.group_by);
            self.scan_effects(&s.having);
            self.scan_effects(&s.qualify);
            self.scan_effects(&s.named_window);
            if let Some(into) = &s.into {
                let t = self.slots_whole(&out);
                self.note_write(
                    &format!(
                        "SELECT … INTO {} writes",
                        into.targets
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &t,
                );
            }
        }
        if s.exclude.is_some() || !s.lateral_views.is_empty() {
            let t = self.slots_whole(&out);
            out = vec![Slot::Opaque {
                taint: join(
                    t,
                    self.uncertain("unsupported SELECT clause (EXCLUDE/LATERAL VIEW)"),
                ),
                may_have_origin: true,
            }];
        }
        self.scopes.pop();
        out
    }
}

// --- values equated with masked ones ---

impl Analyzer<'_> {
    /// Records the columns this level's predicates (WHERE, JOIN … ON,
    /// HAVING) equate with a masked value: `SELECT s.seq FROM seq s JOIN
    /// customers c ON s.seq = CAST(REPLACE(c.ssn, '-', '') AS INT)` returns
    /// every number in one statement, though `s.seq` reads no masked
    /// column. A column compared for equality (`=`, `<=>`, `IS NOT
    /// DISTINCT FROM`, `IN` a list or a subquery) with an expression that
    /// carries a masked value carries it too, through chains of such
    /// equalities (a few rounds). Other inference (ranges, counts, a
    /// correlated `EXISTS`) is not followed: see the READMEs.
    fn equate(&mut self, s: &Select) {
        let mut predicates: Vec<&Expr> = Vec::new();
        predicates.extend(s.selection.iter());
        predicates.extend(s.having.iter());
        for twj in &s.from {
            for j in &twj.joins {
                match join_constraint(&j.join_operator) {
                    Some(JoinConstraint::On(e)) => predicates.push(e),
                    Some(JoinConstraint::Using(columns)) => {
                        // `JOIN customers USING (ssn)`: every relation's
                        // `ssn` equals the masked one.
                        for c in columns {
                            let Some(name) = c.0.last().and_then(|p| p.as_ident()) else {
                                continue;
                            };
                            let name = norm(name);
                            let t = self.scope_column(&name);
                            if let Some(t) = t {
                                self.note_parts(vec![name], &t);
                            }
                        }
                    }
                    Some(JoinConstraint::Natural) => self.equate_natural(),
                    _ => {}
                }
            }
        }
        if predicates.is_empty() {
            return;
        }
        let mut pairs: Vec<(&Expr, Side<'_>)> = Vec::new();
        for p in &predicates {
            equalities(p, &mut pairs);
        }
        // A correlated subquery's equalities: `WHERE EXISTS (SELECT 1 FROM
        // customers c WHERE c.ssn = s.seq)` equates `s.seq` too.
        let mut inner: Vec<&Select> = Vec::new();
        for p in &predicates {
            subqueries(p, &mut inner);
        }
        for sel in inner {
            self.equate_correlated(sel);
        }
        if pairs.is_empty() {
            return;
        }
        for _ in 0..3 {
            let before = self.scopes.last().map_or(0, |sc| sc.equated.len());
            for (a, b) in &pairs {
                let tb = match b {
                    Side::Expr(e) => self.taint_of(*e),
                    Side::Query(q) => self.taint_of(*q),
                };
                let ta = self.taint_of(*a);
                if let Some(t) = tb {
                    self.note_equated(a, &t);
                }
                if let (Some(t), Side::Expr(e)) = (ta, b) {
                    self.note_equated(e, &t);
                }
            }
            if self.scopes.last().map_or(0, |sc| sc.equated.len()) == before {
                break;
            }
        }
    }

    /// The equalities of a subquery `sel` of this level's predicates,
    /// read in a scope of its own FROM items over this level's: what they
    /// equate with a masked value is recorded at this level (an outer
    /// column compared with one: the rows the outer query keeps carry it).
    fn equate_correlated(&mut self, sel: &Select) {
        let mut pairs: Vec<(&Expr, Side<'_>)> = Vec::new();
        for p in sel.selection.iter().chain(sel.having.iter()) {
            equalities(p, &mut pairs);
        }
        if pairs.is_empty() || self.depth >= MAX_DEPTH {
            return;
        }
        self.depth += 1;
        self.scopes.push(Scope::default());
        for twj in &sel.from {
            self.table_with_joins(twj);
        }
        let mut found: Vec<(&Expr, Taint)> = Vec::new();
        for (a, b) in &pairs {
            let tb = match b {
                Side::Expr(e) => self.taint_of(*e),
                Side::Query(q) => self.taint_of(*q),
            };
            if let Some(t) = tb {
                found.push((a, t));
            }
            if let (Some(t), Side::Expr(e)) = (self.taint_of(*a), b) {
                found.push((e, t));
            }
        }
        self.scopes.pop();
        self.depth -= 1;
        for (e, t) in found {
            self.note_equated(e, &t);
        }
    }

    /// Marks the columns `e` reads (outside subqueries) as equal to `t`.
    fn note_equated(&mut self, e: &Expr, t: &Taint) {
        let mut columns: Vec<Vec<String>> = Vec::new();
        columns_of(e, &mut columns);
        for parts in columns {
            self.note_parts(parts, t);
        }
    }

    /// Marks the column `parts` (`["*"]`: every column) as equal to `t`.
    fn note_parts(&mut self, parts: Vec<String>, t: &Taint) {
        let Some(scope) = self.scopes.last_mut() else {
            return;
        };
        if !scope.equated.iter().any(|(p, _)| *p == parts) {
            scope.equated.push((parts, t.clone()));
        }
    }

    /// A NATURAL join equates the columns its relations share, which may
    /// be masked ones. When all but one relation are derived tables whose
    /// column names are known, those names are the shared candidates;
    /// otherwise (tables' columns are not known here) every column may
    /// equal a masked one.
    fn equate_natural(&mut self) {
        let Some(scope) = self.scopes.last() else {
            return;
        };
        let mut tables = 0;
        let mut names: Option<Vec<String>> = Some(Vec::new());
        for src in &scope.sources {
            match &src.rel {
                Rel::Table(_) => tables += 1,
                Rel::Derived(slots) => {
                    for slot in slots {
                        match (slot, names.as_mut()) {
                            (
                                Slot::Col { name: Some(n), .. } | Slot::NameOnly { name: n, .. },
                                Some(v),
                            ) => {
                                v.push(n.clone());
                            }
                            _ => names = None,
                        }
                    }
                }
            }
        }
        match names.filter(|_| tables <= 1) {
            Some(names) => {
                for n in names {
                    if let Some(t) = self.scope_column(&n) {
                        self.note_parts(vec![n], &t);
                    }
                }
            }
            None => {
                let t = scope
                    .sources
                    .iter()
                    .fold(None, |acc, src| join(acc, self.rel_whole(&src.rel)));
                if let Some(t) = t {
                    self.note_parts(vec!["*".to_owned()], &t);
                }
            }
        }
    }

    /// What the column `name` carries in the relations of this level that
    /// have one.
    fn scope_column(&self, name: &str) -> Tainted {
        let scope = self.scopes.last()?;
        scope
            .sources
            .iter()
            .filter_map(|src| self.rel_column(&src.rel, name))
            .fold(None, |acc, (t, _)| join(acc, t))
    }

    /// The taint a predicate gave any column of the relation referred to
    /// as `name` (a whole row: `SELECT g FROM t g`), or any column written
    /// unqualified.
    pub(super) fn equated_of_relation(&self, name: &str) -> Tainted {
        let mut acc = None;
        for scope in &self.scopes {
            for (p, t) in &scope.equated {
                let qualifier = p.len().checked_sub(2).and_then(|i| p.get(i));
                if qualifier.is_none_or(|q| q == name) {
                    join_into(&mut acc, Some(t.clone()));
                }
            }
        }
        acc
    }

    /// The taint a predicate gave the column `parts` (as written: `x`,
    /// `s.x`), from every level in scope: a column named the same, with the
    /// same qualifier when both have one.
    pub(super) fn equated_taint(&self, parts: &[String]) -> Tainted {
        let (column, qualifier) = parts.split_last()?;
        let mut acc = None;
        for scope in &self.scopes {
            for (p, t) in &scope.equated {
                let Some((c, q)) = p.split_last() else {
                    continue;
                };
                let same_qualifier = match (q.last(), qualifier.last()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if (c == column || c == "*") && same_qualifier {
                    join_into(&mut acc, Some(t.clone()));
                }
            }
        }
        acc
    }
}

/// The other side of an equality: an expression, or a subquery (`IN`).
enum Side<'a> {
    Expr(&'a Expr),
    Query(&'a Query),
}

/// The equalities of a predicate, through AND, OR, NOT and parentheses.
fn equalities<'a>(e: &'a Expr, out: &mut Vec<(&'a Expr, Side<'a>)>) {
    match e {
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor => {
                equalities(left, out);
                equalities(right, out);
            }
            BinaryOperator::Eq | BinaryOperator::Spaceship => {
                out.push((left, Side::Expr(right)));
            }
            _ => {}
        },
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } => out.push((left, Side::Expr(right))),
        Expr::IsNotDistinctFrom(a, b) => out.push((a, Side::Expr(b))),
        Expr::Nested(inner) => equalities(inner, out),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => equalities(expr, out),
        Expr::InList {
            expr,
            list,
            negated: false,
        } => {
            for item in list {
                out.push((expr, Side::Expr(item)));
            }
        }
        Expr::InSubquery {
            expr,
            subquery,
            negated: false,
        } => out.push((expr, Side::Query(subquery))),
        _ => {}
    }
}

/// The single-SELECT subqueries of a predicate (`EXISTS`, `IN`, scalar),
/// not nested in other subqueries.
fn subqueries<'a>(e: &'a Expr, out: &mut Vec<&'a Select>) {
    let take = |q: &'a Query, out: &mut Vec<&'a Select>| {
        if let SetExpr::Select(sel) = q.body.as_ref() {
            out.push(sel);
        }
    };
    match e {
        Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => take(subquery, out),
        Expr::InSubquery { expr, subquery, .. } => {
            subqueries(expr, out);
            take(subquery, out);
        }
        Expr::BinaryOp { left, right, .. } => {
            subqueries(left, out);
            subqueries(right, out);
        }
        Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } => subqueries(inner, out),
        _ => {}
    }
}

/// The columns an expression reads itself (not in subqueries), as
/// written, lowercased.
fn columns_of(e: &Expr, out: &mut Vec<Vec<String>>) {
    struct Columns<'o> {
        out: &'o mut Vec<Vec<String>>,
        nested: usize,
    }
    impl Visitor for Columns<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.nested += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.nested -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.nested > 0 {
                return ControlFlow::Continue(());
            }
            match e {
                Expr::Identifier(id) => self.out.push(vec![norm(id)]),
                Expr::CompoundIdentifier(ids) => self.out.push(ids.iter().map(norm).collect()),
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let _ = e.visit(&mut Columns { out, nested: 0 });
}

/// The constraint of a join, if its operator has one.
pub(super) fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::AsOf { constraint: c, .. } => Some(c),
        _ => None,
    }
}
