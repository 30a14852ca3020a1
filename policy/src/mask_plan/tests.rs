//! Unit tests of the planner's internals.

use sqlparser::ast::Statement;

use super::lineage::{MAX_DEPTH, Taint, join};
use super::matcher::ColumnMatcher;
use super::{ColumnMask, MaskPlanError, MaskReason, OutputColumn, plan_rows, plan_view};

/// One PostgreSQL statement.
fn pg_statement(sql: &str) -> Statement {
    sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
        .unwrap()
        .remove(0)
}

fn matcher(globs: &[(&str, usize)]) -> ColumnMatcher {
    let globs: Vec<(String, usize)> = globs.iter().map(|(g, r)| ((*g).to_owned(), *r)).collect();
    ColumnMatcher::new(&globs).unwrap()
}

#[test]
fn table_column_glob_matches_any_schema_and_case() {
    let m = matcher(&[("customers.ssn", 3)]);
    assert_eq!(m.match_column(None, "customers", "ssn"), Some(3));
    assert_eq!(m.match_column(Some("public"), "customers", "ssn"), Some(3));
    assert_eq!(m.match_column(Some("archive"), "Customers", "SSN"), Some(3));
    assert_eq!(m.match_column(Some("public"), "customers", "name"), None);
    assert_eq!(m.match_column(Some("public"), "customers2", "ssn"), None);
    assert!(!m.is_empty());
}

#[test]
fn schema_glob_requires_the_schema_when_known() {
    let m = matcher(&[("billing.cards.number", 0)]);
    assert_eq!(m.match_column(Some("billing"), "cards", "number"), Some(0));
    assert_eq!(m.match_column(Some("BILLING"), "cards", "number"), Some(0));
    assert_eq!(m.match_column(Some("archive"), "cards", "number"), None);
    // Unknown schema (search_path): it might be billing.
    assert_eq!(m.match_column(None, "cards", "number"), Some(0));
}

#[test]
fn star_globs_per_segment() {
    let m = matcher(&[
        ("*.password_hash", 1),
        ("public.customers.*", 2),
        ("secret_*.*", 4),
    ]);
    assert_eq!(m.match_column(None, "users", "password_hash"), Some(1));
    assert_eq!(
        m.match_column(Some("x"), "admins", "password_hash"),
        Some(1)
    );
    assert_eq!(m.match_column(Some("public"), "customers", "name"), Some(2));
    assert_eq!(m.match_column(Some("other"), "customers", "name"), None);
    assert_eq!(m.match_column(None, "secret_keys", "k"), Some(4));
    assert_eq!(m.match_column(None, "users", "login"), None);
    // A `*` never spans a dot: `*.password_hash` does not read as "any prefix".
    let m = matcher(&[("*.hash", 0)]);
    assert_eq!(m.match_column(None, "users", "password_hash"), None);
}

#[test]
fn view_columns_come_from_the_view_definition() {
    let names = |cols: &[&str]| cols.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    let m = matcher(&[("customers.ssn", 1), ("*.pin", 0)]);
    // What pg_get_viewdef gives: `*` expanded, names qualified.
    let def = pg_statement(
        "SELECT customers.id, upper(customers.ssn) AS s, customers.name, to_jsonb(c.*) AS j \
         FROM customers c",
    );
    assert_eq!(
        plan_view(&def, &names(&["id", "s", "name", "j"]), &m),
        vec![("s".to_owned(), 1), ("j".to_owned(), 0)]
    );
    // A definition whose shape does not match the columns masks them all.
    let def = pg_statement("SELECT customers.id FROM customers");
    assert_eq!(
        plan_view(&def, &names(&["id", "x"]), &m),
        vec![("id".to_owned(), 0), ("x".to_owned(), 0)]
    );
    // A view over that view: its columns join the matcher.
    let extended = m.with_columns(&[
        ("public".into(), "v".into(), "s".into(), 1),
        ("other".into(), "Odd*View".into(), String::new(), 0),
    ]);
    assert_eq!(extended.match_column(Some("public"), "v", "s"), Some(1));
    assert_eq!(extended.match_column(Some("public"), "V", "S"), Some(1));
    assert_eq!(extended.match_column(Some("public"), "v", "id"), None);
    assert_eq!(extended.match_column(Some("other"), "v", "s"), None);
    // (`*.pin`, rule 0, could match a column of any table.)
    assert_eq!(extended.table_may_have_masked(Some("public"), "v"), Some(0));
    let only_views =
        ColumnMatcher::default().with_columns(&[("public".into(), "v".into(), "s".into(), 1)]);
    assert_eq!(
        only_views.table_may_have_masked(Some("public"), "v"),
        Some(1)
    );
    assert_eq!(only_views.table_may_have_masked(Some("public"), "w"), None);
    // Names are literal, not globs; an empty column is every column.
    assert_eq!(
        extended.match_column(Some("other"), "Odd*View", "a"),
        Some(0)
    );
    assert_eq!(extended.match_column(Some("other"), "OddView", "a"), None);
    let def = pg_statement("SELECT v.id, lower(v.s) AS t FROM v");
    assert_eq!(
        plan_view(&def, &names(&["id", "t"]), &extended),
        vec![("t".to_owned(), 1)]
    );
}

#[test]
fn shown_custom_settings_are_masked_like_current_setting() {
    let m = matcher(&[("customers.ssn", 2)]);
    let masked = |sql: &str, cols: &[&str]| -> Vec<bool> {
        let out: Vec<OutputColumn> = cols
            .iter()
            .map(|n| OutputColumn {
                name: (*n).to_owned(),
                origin: None,
            })
            .collect();
        plan_rows(&pg_statement(sql), &out, &m)
            .columns
            .iter()
            .map(|c| matches!(c, ColumnMask::Mask { rule: 2, .. }))
            .collect()
    };
    // A function another role defined may have set it from a masked column.
    assert_eq!(masked("SHOW my.x", &["my.x"]), [true]);
    assert_eq!(
        masked("SHOW ALL", &["name", "setting", "description"]),
        [true, true, true]
    );
    // Built-in settings, as current_setting of them.
    assert_eq!(masked("SHOW search_path", &["search_path"]), [false]);
    assert_eq!(
        masked(
            "SHOW TRANSACTION ISOLATION LEVEL",
            &["transaction_isolation"]
        ),
        [false]
    );
}

/// Whether `m` plans each of the output columns `cols` (no origins) of the
/// PostgreSQL statement `sql` masked by rule `rule`.
fn masked_by_rule(m: &ColumnMatcher, rule: usize, sql: &str, cols: &[&str]) -> Vec<bool> {
    let out: Vec<OutputColumn> = cols
        .iter()
        .map(|n| OutputColumn {
            name: (*n).to_owned(),
            origin: None,
        })
        .collect();
    plan_rows(&pg_statement(sql), &out, m)
        .columns
        .iter()
        .map(|c| matches!(c, ColumnMask::Mask { rule: r, .. } if *r == rule))
        .collect()
}

#[test]
fn results_of_opaque_functions_are_masked_whole() {
    let m = matcher(&[("customers.ssn", 2)]).with_functions(&["F_Ssn".to_owned()]);
    let masked = |sql: &str, cols: &[&str]| masked_by_rule(&m, 2, sql, cols);
    assert_eq!(masked("SELECT f_ssn(), 1", &["f_ssn", "x"]), [true, false]);
    assert_eq!(
        masked("SELECT upper(public.F_SSN(id)) FROM t", &["u"]),
        [true]
    );
    assert_eq!(masked("SELECT a FROM f_ssn() AS r(a)", &["a"]), [true]);
    // Only in WHERE: it selects rows, it gives no value.
    assert_eq!(
        masked("SELECT name FROM t WHERE f_ssn() = 'x'", &["name"]),
        [false]
    );
    assert_eq!(masked("SELECT other_fn(name) FROM t", &["o"]), [false]);
}

#[test]
fn lowest_rule_wins() {
    let m = matcher(&[("customers.*", 5), ("*.ssn", 2), ("customers.ssn", 7)]);
    assert_eq!(m.match_column(None, "customers", "ssn"), Some(2));
    assert_eq!(m.match_column(None, "customers", "name"), Some(5));
    assert_eq!(m.table_may_have_masked(None, "customers"), Some(2));
    assert_eq!(m.lowest_rule(), Some(2));
}

#[test]
fn table_may_have_masked_follows_table_and_schema() {
    let m = matcher(&[("customers.ssn", 0), ("billing.cards.number", 1)]);
    assert_eq!(
        m.table_may_have_masked(Some("public"), "customers"),
        Some(0)
    );
    assert_eq!(m.table_may_have_masked(None, "orders"), None);
    assert_eq!(m.table_may_have_masked(Some("billing"), "cards"), Some(1));
    assert_eq!(m.table_may_have_masked(Some("public"), "cards"), None);
    assert_eq!(m.table_may_have_masked(None, "cards"), Some(1));
    let wide = matcher(&[("*.password_hash", 0)]);
    assert_eq!(wide.table_may_have_masked(None, "anything"), Some(0));
}

#[test]
fn quoted_segments_are_literal() {
    let m = matcher(&[(r#""my.table"."we*rd""#, 0), (r#"public."Mixed".col"#, 1)]);
    assert_eq!(m.match_column(None, "my.table", "we*rd"), Some(0));
    assert_eq!(m.match_column(None, "my.table", "weird"), None);
    assert_eq!(m.match_column(Some("public"), "mixed", "col"), Some(1));
    let m = matcher(&[(r#""a""b".c"#, 0)]);
    assert_eq!(m.match_column(None, "a\"b", "c"), Some(0));
}

#[test]
fn empty_matcher() {
    let m = ColumnMatcher::new(&[]).unwrap();
    assert!(m.is_empty());
    assert_eq!(m.match_column(None, "customers", "ssn"), None);
    assert_eq!(m.table_may_have_masked(None, "customers"), None);
}

#[test]
fn invalid_patterns_are_named_in_the_error() {
    for bad in [
        "ssn",
        "a.b.c.d",
        "a..b",
        ".b",
        "a.",
        "",
        r#""unclosed.b"#,
        r#""a"x.b"#,
        r#"a"b".c"#,
    ] {
        let err = ColumnMatcher::new(&[(bad.to_owned(), 0)]).unwrap_err();
        assert!(
            matches!(err, MaskPlanError::PatternShape { ref pattern, .. } if pattern == bad),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
    let err = ColumnMatcher::new(&[("customers.[ssn".to_owned(), 0)]).unwrap_err();
    assert!(matches!(err, MaskPlanError::PatternGlob { .. }), "{err:?}");
    assert!(err.to_string().contains("customers.[ssn"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn nesting_beyond_the_limit_is_uncertain_not_a_crash() {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    let depth = MAX_DEPTH + 6;
    let sql = format!(
        "SELECT {}name{} FROM customers",
        "(SELECT ".repeat(depth),
        ")".repeat(depth)
    );
    let run = move || {
        let stmts = Parser::new(&PostgreSqlDialect {})
            .with_recursion_limit(10 * depth)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_statements())
            .unwrap();
        let m = matcher(&[("customers.ssn", 0)]);
        let out = [OutputColumn {
            name: "name".into(),
            origin: None,
        }];
        plan_rows(&stmts[0], &out, &m)
    };
    let plan = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
    match &plan.columns[..] {
        [
            ColumnMask::Mask {
                rule: 0,
                reason: MaskReason::Uncertain(why),
            },
        ] => assert!(why.contains("nests too deeply"), "{why}"),
        other => panic!("expected an uncertain mask, got {other:?}"),
    }
}

#[test]
fn join_keeps_lowest_rule() {
    let t = |rule| {
        Some(Taint {
            rule,
            reason: MaskReason::Origin,
        })
    };
    assert_eq!(join(t(3), t(1)), t(1));
    assert_eq!(join(t(1), t(3)), t(1));
    assert_eq!(join(None, t(2)), t(2));
    assert_eq!(join(None, None), None);
}

#[test]
fn columns_equated_with_masked_values_are_masked() {
    let m = matcher(&[("customers.ssn", 2)]);
    let masked = |sql: &str, cols: &[&str]| masked_by_rule(&m, 2, sql, cols);
    // One statement returns every number: the series' values that equal one.
    for sql in [
        "SELECT s.seq FROM seq s JOIN customers c ON s.seq = CAST(REPLACE(c.ssn, '-', '') AS INT)",
        "SELECT g FROM generate_series(1, 999999999) g, customers c WHERE replace(c.ssn, '-', '')::int = g",
        "SELECT g FROM generate_series(1, 9) g JOIN customers c ON (g IS NOT DISTINCT FROM length(c.ssn))",
        "SELECT g FROM generate_series(1, 9) g WHERE g IN (SELECT length(ssn) FROM customers)",
        "SELECT g FROM t g, customers c WHERE g.id > 0 AND (g.v = c.ssn OR false)",
        "SELECT upper(o.k) FROM o, p, customers c WHERE o.k = p.k AND p.k = c.ssn",
        "SELECT g FROM t GROUP BY g HAVING g IN (SELECT ssn FROM customers)",
        "SELECT s FROM seq s JOIN customers c ON s.seq = length(c.ssn)",
        "SELECT s.seq FROM seq s WHERE EXISTS (SELECT 1 FROM customers c WHERE length(c.ssn) = s.seq)",
        "SELECT s.seq FROM seq s WHERE s.id > 0 AND s.seq IN (SELECT id FROM customers c WHERE c.ssn = s.seq)",
        "SELECT seq FROM seq WHERE (SELECT count(*) FROM customers c WHERE c.ssn = seq) > 0",
        "SELECT g.ssn FROM guesses g JOIN customers c USING (ssn)",
        "SELECT g.ssn FROM guesses g NATURAL JOIN customers c",
        "SELECT g.v FROM guesses g, customers c WHERE g.v = ANY (ARRAY[c.ssn])",
    ] {
        assert_eq!(masked(sql, &["x"]), [true], "{sql}");
    }
    // A `*` holds the equated column under its own name, the rest as is.
    assert_eq!(
        masked(
            "SELECT s.* FROM seq s JOIN customers c ON s.seq = length(c.ssn)",
            &["seq", "other"]
        ),
        [true, false]
    );
    // A NATURAL join with a derived table equates the names it has.
    assert_eq!(
        masked(
            "SELECT g.* FROM guesses g NATURAL JOIN (SELECT ssn AS v FROM customers) s",
            &["v", "other"]
        ),
        [true, false]
    );
    // Comparisons with constants, other columns, and ranges give no value.
    for sql in [
        "SELECT name FROM customers WHERE ssn = '123-45-6789'",
        "SELECT o.id FROM orders o JOIN customers c ON o.customer_id = c.id",
        "SELECT g FROM generate_series(1, 9) g JOIN customers c ON g < length(c.ssn)",
        "SELECT g FROM generate_series(1, 9) g WHERE g NOT IN (SELECT length(ssn) FROM customers)",
    ] {
        assert_eq!(masked(sql, &["x"]), [false], "{sql}");
    }
}
