//! Literal dependence: whether a statement's meaning depends on the values of its literals.

use std::ops::ControlFlow;

use sqlparser::ast::{self, Expr, ObjectName, ObjectNamePart, TableFactor, Visit, Visitor};
use sqlparser::tokenizer::TokenWithSpan;

use super::text::is_literal;

// === Literal dependence ===

/// Functions whose literal arguments are only values to compute with: no part
/// of Sluice reads them (they are not names, settings, formats or SQL text),
/// so the decision and the mask plan of a statement calling them do not depend
/// on those literals' values. Anything else a statement calls with a literal
/// somewhere in it makes the statement [`literal_dependent`]; adding a
/// function here is a promise that no decision or plan will ever read its
/// arguments' values.
const VALUE_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_length",
    "array_position",
    "array_to_string",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "convert_from",
    "convert_to",
    "count",
    "current_date",
    "date_part",
    "date_trunc",
    "decode",
    "encode",
    "every",
    "extract",
    "floor",
    "generate_series",
    "greatest",
    "initcap",
    "json_agg",
    "json_build_array",
    "json_build_object",
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_set",
    "least",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nullif",
    "octet_length",
    "position",
    "power",
    "random",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_to_json",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "unnest",
    "upper",
];

/// Whether a statement's decision or mask plan may depend on the values of
/// its literals, so that a cache keyed by the statement with its literal
/// values folded (the sidecar's decision cache) would hand one text the
/// decision of another. Literal values are read, or could be, in:
/// - `COPY` options (`FORMAT 'csv'` decides whether masked rows can be masked);
/// - `EXPLAIN` options (`ANALYZE 'off'` decides whether the statement runs);
/// - settings (`SET`, `RESET`, `SHOW`): their values change how the server
///   reads later statements;
/// - arguments of any function not in `VALUE_FUNCTIONS`: names of settings
///   (`current_setting('my.secret')` is masked, `current_setting('TimeZone')`
///   is not), SQL text (`query_to_xml('select …')`), object names
///   (`nextval('s')`, `table_to_xml('customers', …)`), and functions
///   Sluice knows nothing of;
/// - casts of text to object identifiers (`'customers'::regclass`).
///
/// The answer depends only on the statement's shape (its kinds, function and
/// type names, and whether it has a literal at all), never on a literal's
/// value, so every text of one shape gets the same answer: a statement
/// without literals is never dependent.
pub fn literal_dependent(stmt: &ast::Statement, tokens: &[TokenWithSpan]) -> bool {
    struct Reads(bool);
    impl Reads {
        fn function(&mut self, name: &ObjectName) {
            let last = name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            if !VALUE_FUNCTIONS.contains(&last.as_str()) {
                self.0 = true;
            }
        }
        fn data_type(&mut self, data_type: &ast::DataType) {
            let names_object = match data_type {
                ast::DataType::Regclass => true,
                ast::DataType::Custom(name, _) => name
                    .0
                    .last()
                    .and_then(ObjectNamePart::as_ident)
                    .is_some_and(|i| i.value.to_lowercase().starts_with("reg")),
                _ => false,
            };
            if names_object {
                self.0 = true;
            }
        }
    }
    impl Visitor for Reads {
        type Break = ();
        fn pre_visit_statement(&mut self, stmt: &ast::Statement) -> ControlFlow<()> {
            use ast::Statement as S;
            match stmt {
                S::Copy { .. }
                | S::Set(_)
                | S::Reset(_)
                | S::ShowVariable { .. }
                | S::ShowVariables { .. } => self.0 = true,
                S::Explain {
                    options: Some(options),
                    ..
                } if !options.is_empty() => self.0 = true,
                _ => {}
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                }
                | TableFactor::Function { name, .. } => self.function(name),
                TableFactor::JsonTable { .. }
                | TableFactor::OpenJsonTable { .. }
                | TableFactor::XmlTable { .. } => self.0 = true,
                _ => {}
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f) => self.function(&f.name),
                Expr::Cast { data_type, .. } => self.data_type(data_type),
                Expr::TypedString(ts) => self.data_type(&ts.data_type),
                _ => {}
            }
            if self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    if !tokens.iter().any(|t| is_literal(&t.token)) {
        return false;
    }
    let mut reads = Reads(false);
    let _ = stmt.visit(&mut reads);
    reads.0
}
