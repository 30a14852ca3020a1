//! Mapping the analysed slots onto the server's output columns.

use super::{Analyzer, to_mask};
use crate::mask_plan::lineage::{
    Slot, Taint, Tainted, as_uncertain, is_statistics_values, join, join_into,
};
use crate::mask_plan::{ColumnMask, MaskPlan, MaskReason, OutputColumn};

impl<'m> Analyzer<'m> {
    // --- mapping to the server's columns ---

    /// What the server's origin alone says about a column.
    fn origin_taint(&self, col: &OutputColumn) -> Tainted {
        let mut acc = None;
        if let Some(o) = &col.origin {
            let column = (!o.column.is_empty()).then_some(o.column.as_str());
            if is_statistics_values(o.schema.as_deref(), &o.table, column) {
                join_into(&mut acc, self.dynamic(&format!("{}.{}", o.table, o.column)));
            }
            if o.column.is_empty() {
                let t = self
                    .matcher
                    .table_may_have_masked(o.schema.as_deref(), &o.table)
                    .map(|rule| Taint {
                        rule,
                        reason: MaskReason::DerivedFrom(format!("{}.*", o.table)),
                    });
                join_into(&mut acc, t);
            } else if let Some(rule) =
                self.matcher
                    .match_column(o.schema.as_deref(), &o.table, &o.column)
            {
                join_into(
                    &mut acc,
                    Some(Taint {
                        rule,
                        reason: MaskReason::Origin,
                    }),
                );
            }
        }
        acc
    }

    pub(in crate::mask_plan) fn decide(
        &self,
        col: &OutputColumn,
        candidates: &[&Slot],
        ambiguous: bool,
    ) -> ColumnMask {
        let mut acc = self.origin_taint(col);
        let trusted = col.origin.as_ref().filter(|o| {
            !o.column.is_empty() && !self.derived_names.contains(&o.table.to_lowercase())
        });
        for slot in candidates {
            let t = match slot {
                Slot::Col {
                    taint, passthrough, ..
                } => {
                    if ambiguous && trusted.is_some() && !passthrough {
                        None
                    } else {
                        taint.clone()
                    }
                }
                Slot::Opaque {
                    taint,
                    may_have_origin,
                } => {
                    if ambiguous && trusted.is_some() && !may_have_origin {
                        None
                    } else {
                        taint.clone()
                    }
                }
                Slot::Table(t) => match trusted {
                    Some(o) => t.written_taint(&o.column.to_lowercase()),
                    None if t.renamed.is_empty() => self.table_column(t, &col.name.to_lowercase()),
                    None => as_uncertain(
                        self.table_whole(t),
                        "a column of a table whose columns were renamed came back without origin",
                    ),
                },
                Slot::NameOnly { .. } => None,
            };
            join_into(&mut acc, t);
        }
        to_mask(acc)
    }

    /// For a column the analysis cannot place: its origin, what the statement reads,
    /// and the statement's risk, as uncertainty.
    pub(in crate::mask_plan) fn fallback(
        &self,
        col: &OutputColumn,
        extra: Tainted,
        reason: &str,
    ) -> ColumnMask {
        let t = join(as_uncertain(extra, reason), self.uncertain(reason));
        to_mask(join(self.origin_taint(col), t))
    }

    pub(in crate::mask_plan) fn plan_slots(
        &self,
        slots: &[Slot],
        output: &[OutputColumn],
    ) -> MaskPlan {
        let items: Vec<&Slot> = slots
            .iter()
            .filter(|s| !matches!(s, Slot::NameOnly { .. }))
            .collect();
        let n = output.len();
        let runs: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Slot::Col { .. }))
            .map(|(i, _)| i)
            .collect();
        let mismatch = |why: String| {
            let everything = self.slots_whole(slots);
            MaskPlan {
                columns: output
                    .iter()
                    .map(|c| self.fallback(c, everything.clone(), &why))
                    .collect(),
            }
        };
        let (Some(&first), Some(&last)) = (runs.first(), runs.last()) else {
            if items.len() != n {
                return mismatch(format!(
                    "the server returned {n} columns but the statement selects {}",
                    items.len()
                ));
            }
            return MaskPlan {
                columns: output
                    .iter()
                    .zip(&items)
                    .map(|(c, s)| self.decide(c, &[*s], false))
                    .collect(),
            };
        };
        let prefix = first;
        let suffix = items.len() - last - 1;
        if prefix + suffix > n {
            return mismatch(format!(
                "the server returned {n} columns but the statement selects at least {}",
                prefix + suffix
            ));
        }
        let columns = output
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < prefix {
                    self.decide(c, &[items[i]], false)
                } else if i >= n - suffix {
                    self.decide(c, &[items[items.len() - (n - i)]], false)
                } else if first == last {
                    self.decide(c, &[items[first]], false)
                } else {
                    self.decide(c, &items[first..=last], true)
                }
            })
            .collect();
        MaskPlan { columns }
    }
}
