//! Queries: `WITH`, set operations and `SELECT` bodies.

use sqlparser::ast::{Cte, Query, Select, SetExpr};

use super::Analyzer;
use crate::mask_plan::lineage::{
    MAX_DEPTH, Scope, Shape, Slot, TableRef, Tainted, alias_names, apply_aliases, as_uncertain,
    join, join_into, norm,
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
        let mut out = Vec::new();
        for item in &s.projection {
            self.select_item(item, &mut out);
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
