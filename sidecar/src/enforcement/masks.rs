//! The masks of a PostgreSQL result: which masking rule (if any) applies
//! to each column of a row, and to each column of `COPY … TO STDOUT`, from
//! the statement's mask plan and the columns' resolved origins.

use sluice_policy::mask_plan::{
    ColumnMask, ColumnMatcher, ColumnOrigin, CopyPlan, MaskReason, OutputColumn, copy_column_names,
};
use sluice_policy::sql::Statement;

use super::{Decided, Refusal};
use crate::masking::Masking;
use crate::postgres::catalog::Origin;
use crate::postgres::masking::{CopyMask, RowMask};
use crate::postgres::messages::row_description::Column;

impl Masking {
    /// The mask of a result: `stmt` is the statement that produced it (when
    /// known), `origins` the resolved origin of each column (`None` when the
    /// lookup failed: every column is then masked). `views`: the masking
    /// rules' matcher as the catalog extended it (views, user-defined
    /// functions), in place of the rules' own.
    pub fn row_mask(
        &self,
        stmt: Option<(&Decided, usize)>,
        columns: &[Column],
        origins: Option<&[Option<Origin>]>,
        views: Option<&ColumnMatcher>,
    ) -> RowMask {
        let strongest = 0;
        // Every column masked by the strongest rule, for `why`.
        let whole = |why: &str| {
            RowMask::new(
                columns,
                columns
                    .iter()
                    .map(|_| Some((strongest, why.to_string())))
                    .collect(),
                self.detectors,
            )
        };
        let Some(origins) = origins else {
            return whole("the result's columns could not be resolved to tables");
        };
        let statement = stmt.and_then(|(d, i)| d.statement(i));
        let Some(statement) = statement else {
            if !self.column_rules {
                return RowMask::new(columns, vec![None; columns.len()], self.detectors);
            }
            // No statement to reason about (e.g. a portal whose statement the
            // sidecar never saw): mask what comes from a masked column, and
            // every computed column, since it could be derived from one.
            return whole("the statement behind this result is unknown to Sluice");
        };
        let output: Vec<OutputColumn> = columns
            .iter()
            .zip(origins)
            .map(|(c, o)| OutputColumn {
                name: c.name.clone(),
                origin: o.as_ref().map(|o| ColumnOrigin {
                    schema: Some(o.schema.clone()),
                    table: o.table.clone(),
                    column: o.column.clone(),
                }),
            })
            .collect();
        let matcher = views.unwrap_or_else(|| self.set.column_matcher());
        let plan = self.set.mask_plan(statement, &output, matcher);
        let masks = plan
            .columns
            .iter()
            .map(|c| match c {
                ColumnMask::Clear => None,
                ColumnMask::Mask { rule, reason } => Some((*rule, describe_reason(reason))),
            })
            .collect();
        RowMask::new(columns, masks, self.detectors)
    }

    /// The mask of `COPY … TO STDOUT` (statement `index` of `decided`), given
    /// the table's columns and their type OIDs when it copies a table; `Err`
    /// when it must be refused.
    pub fn copy_mask(
        &self,
        decided: &Decided,
        index: usize,
        table_columns: Option<&[(String, u32)]>,
        views: Option<&ColumnMatcher>,
    ) -> Result<Option<CopyMask>, Refusal> {
        let Some(stmt) = decided.statement(index) else {
            return Ok(None);
        };
        let matcher = views.unwrap_or_else(|| self.set.column_matcher());
        let names: Option<Vec<String>> =
            table_columns.map(|c| c.iter().map(|(name, _)| name.clone()).collect());
        // Each written column's type, where known (a table's columns): a
        // masked value of a non-text type is written as NULL.
        let types = copy_column_names(&stmt.ast, names.as_deref())
            .zip(table_columns)
            .map(|(written, table)| {
                written
                    .iter()
                    .map(|w| table.iter().find(|(n, _)| n == w).map(|(_, t)| *t))
                    .collect()
            })
            .unwrap_or_default();
        match self.set.copy_plan(stmt, names.as_deref(), matcher) {
            CopyPlan::Deny(why) => Err(Refusal::plain(&format!(
                "COPY refused by Sluice: masking applies and {why}"
            ))),
            CopyPlan::Columns(plan) => {
                let columns: Vec<Option<usize>> = plan
                    .columns
                    .iter()
                    .map(|c| match c {
                        ColumnMask::Clear => None,
                        ColumnMask::Mask { rule, .. } => Some(*rule),
                    })
                    .collect();
                if columns.iter().all(Option::is_none) && !self.detectors {
                    return Ok(None);
                }
                if copy_is_not_text(stmt) {
                    return Err(Refusal::plain(
                        "COPY refused by Sluice: masking applies, and Sluice masks COPY only in text format (not csv or binary)",
                    ));
                }
                Ok(Some(CopyMask {
                    columns,
                    types,
                    detectors: self.detectors,
                }))
            }
        }
    }
}

fn describe_reason(reason: &MaskReason) -> String {
    match reason {
        MaskReason::Origin => "a masked column".to_string(),
        MaskReason::DerivedFrom(c) => format!("derived from masked column {c}"),
        MaskReason::Uncertain(why) => format!("masked whole: {why}"),
    }
}

/// Whether a COPY asks for anything but the plain text format (csv, binary,
/// another delimiter or NULL string), which the sidecar's COPY masking does not read.
fn copy_is_not_text(stmt: &Statement) -> bool {
    use sqlparser::ast;
    match &stmt.ast {
        ast::Statement::Copy {
            options,
            legacy_options,
            ..
        } => !legacy_options.is_empty()
            || !options.iter().all(
                |o| matches!(o, ast::CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text")),
            ),
        _ => true,
    }
}
