//! What masking a statement's result would get, from the statement alone (no
//! server): `kubectl sluice policy eval` shows it before a policy is applied.
//!
//! The sidecar decides per output column with the server's column descriptions
//! ([`super::plan_rows`]). Without a server the same analysis gives, for each
//! part of the result the statement's text shows, the decision the sidecar makes
//! when the server reports no origin for it; a `*` over a table is one entry
//! for all of the table's columns (their number and names come from the server),
//! masked when a masking rule may name any of them. It never says "clear" for
//! something the sidecar would mask: the server's origins only add masking.

use sqlparser::ast::Statement;

use super::analyzer::{Analyzer, to_mask};
use super::lineage::{Shape, Slot};
use super::{ColumnMask, ColumnMatcher, MaskReason, OutputColumn};

/// One part of a statement's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreviewItem {
    /// One output column; `name` when the statement's text gives it.
    Column {
        /// The column's name, if certain.
        name: Option<String>,
        /// What the sidecar does with it (when the server reports no origin).
        mask: ColumnMask,
    },
    /// The columns of a table or view (`*`, `t.*`), unknown in number here. The
    /// sidecar masks those the server reports as masked columns; `mask` is the
    /// strongest rule that may apply to one of them (clear: none can).
    TableColumns {
        /// `schema.table` or `table`.
        table: String,
        /// The strongest masking any of its columns may get.
        mask: ColumnMask,
    },
    /// Columns unknown in number and name (rows of a function, of a subquery's `*`).
    Unknown {
        /// Masking for all of them.
        mask: ColumnMask,
    },
}

/// What a statement's result would get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preview {
    /// A result whose parts the statement shows, in output order (empty when the
    /// statement returns no rows, e.g. an INSERT without RETURNING).
    Rows(Vec<PreviewItem>),
    /// Output holding no table data (EXPLAIN, SHOW).
    NoTableData,
    /// Rows of a query not in the statement (FETCH, EXECUTE): every column is
    /// masked with `mask` unless the server names its origin.
    Elsewhere {
        /// The masking of each column the server gives no origin for.
        mask: ColumnMask,
    },
}

/// The masking of `stmt`'s result under `matcher`, as far as the statement shows it.
pub fn preview(stmt: &Statement, matcher: &ColumnMatcher) -> Preview {
    let mut an = Analyzer::new(stmt, matcher);
    match an.statement(stmt) {
        Shape::Rows(slots) => Preview::Rows(
            slots
                .iter()
                .filter_map(|slot| match slot {
                    Slot::Col { name, taint, .. } => Some(PreviewItem::Column {
                        name: name.clone(),
                        mask: to_mask(taint.clone()),
                    }),
                    Slot::Table(t) => Some(PreviewItem::TableColumns {
                        table: t.display(),
                        mask: to_mask(an.table_whole(t)),
                    }),
                    Slot::Opaque { taint, .. } => Some(PreviewItem::Unknown {
                        mask: to_mask(taint.clone()),
                    }),
                    // A name for one of a neighbouring `*`'s columns: not a column itself.
                    Slot::NameOnly { .. } => None,
                })
                .collect(),
        ),
        Shape::Metadata => Preview::NoTableData,
        Shape::External(why) => Preview::Elsewhere {
            mask: match matcher.lowest_rule() {
                Some(rule) => ColumnMask::Mask {
                    rule,
                    reason: MaskReason::Uncertain(why.to_owned()),
                },
                None => ColumnMask::Clear,
            },
        },
        Shape::Unknown => {
            let unplaced = OutputColumn {
                name: String::new(),
                origin: None,
            };
            Preview::Rows(vec![PreviewItem::Unknown {
                mask: an.fallback(
                    &unplaced,
                    None,
                    "the statement's kind is not analysed for masking",
                ),
            }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn preview_of(sql: &str, globs: &[&str]) -> Preview {
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap();
        let globs: Vec<(String, usize)> = globs.iter().map(|g| (g.to_string(), 0)).collect();
        preview(&stmt, &ColumnMatcher::new(&globs).unwrap())
    }

    fn masked(m: &ColumnMask) -> bool {
        matches!(m, ColumnMask::Mask { .. })
    }

    #[test]
    fn columns_derived_from_masked_ones_are_masked_and_others_clear() {
        let Preview::Rows(items) = preview_of(
            "SELECT id, lower(ssn) AS s, name FROM customers",
            &["customers.ssn"],
        ) else {
            panic!("rows expected")
        };
        let got: Vec<(Option<String>, bool)> = items
            .iter()
            .map(|i| match i {
                PreviewItem::Column { name, mask } => (name.clone(), masked(mask)),
                other => panic!("a column expected, got {other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("id".into()), false),
                (Some("s".into()), true),
                (Some("name".into()), false)
            ]
        );
    }

    #[test]
    fn a_star_over_a_table_with_masked_columns_is_masked() {
        let Preview::Rows(items) = preview_of("SELECT * FROM customers", &["customers.ssn"]) else {
            panic!("rows expected")
        };
        assert!(
            matches!(&items[..], [PreviewItem::TableColumns { table, mask }] if table == "customers" && masked(mask)),
            "{items:?}"
        );
        let Preview::Rows(items) = preview_of("SELECT * FROM orders", &["customers.ssn"]) else {
            panic!("rows expected")
        };
        assert!(
            matches!(
                &items[..],
                [PreviewItem::TableColumns {
                    mask: ColumnMask::Clear,
                    ..
                }]
            ),
            "{items:?}"
        );
    }

    #[test]
    fn rows_from_elsewhere_are_masked_when_any_rule_exists() {
        assert!(matches!(
            preview_of("FETCH 10 FROM c", &["customers.ssn"]),
            Preview::Elsewhere {
                mask: ColumnMask::Mask { .. }
            }
        ));
    }
}
