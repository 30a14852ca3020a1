//! Where the two readings agree and where they must not.

use super::*;
use crate::sql::parse;

fn check(sql: &str) -> Option<Disagreement> {
    let statements = parse(sql, SqlDialect::Postgres).expect("sqlparser reads it");
    disagreement(sql, &statements)
}

#[test]
fn agrees_on_ordinary_statements() {
    for sql in [
        "SELECT 1",
        "select a, b from t where c = 'x''y' and d = $1",
        "INSERT INTO t (a) VALUES (1) RETURNING a",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "WITH d AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM d)",
        "UPDATE t SET a = 1 WHERE b = 2; DELETE FROM t WHERE a = 3",
        "SELECT a INTO new_t FROM t",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE DELETE FROM t WHERE a = 1",
        "EXPLAIN (ANALYZE false) DELETE FROM t WHERE a = 1",
        "PREPARE p AS UPDATE t SET a = 1 WHERE b = $1",
        "EXECUTE p(1)",
        "BEGIN; SAVEPOINT s; RELEASE s; ROLLBACK TO s; COMMIT",
        "START TRANSACTION READ ONLY; ROLLBACK",
        "SET search_path = public; RESET ALL; SHOW search_path; DISCARD ALL",
        "GRANT SELECT ON t TO r; REVOKE SELECT ON t FROM r",
        "CREATE TABLE t2 (a int); ALTER TABLE t2 ADD COLUMN b int; DROP TABLE t2",
        "CREATE TABLE t3 AS SELECT 1; TRUNCATE t3; COMMENT ON TABLE t3 IS 'x'",
        "COPY t TO STDOUT; COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)",
        "CALL p(1); LISTEN c; NOTIFY c; UNLISTEN c",
        "DECLARE c CURSOR FOR SELECT 1; FETCH 1 FROM c; CLOSE c",
        "VALUES (1), (2)",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
        "/* only a comment */ ;;",
        "SELECT $$a; DROP TABLE t$$, $x$b$x$",
        "SELECT extract(year FROM now()), substring('abc' FROM 2), trim(' a '), position('a' IN 'ba')",
        "SELECT count(*), lower(a) FROM public.t JOIN s.u ON t.a = u.a WHERE b LIKE 'x%'",
        "SELECT * FROM generate_series(1, 3) g, LATERAL unnest(ARRAY[1]) x",
        "WITH w AS (SELECT 1 AS a) SELECT a FROM w",
        "SELECT query_to_xml('select a from t', true, false, '')",
        "INSERT INTO t SELECT * FROM u ON CONFLICT DO NOTHING",
        "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN UPDATE SET b = u.b",
        "SELECT now() AT TIME ZONE 'UTC', 'a' SIMILAR TO 'b'",
    ] {
        assert_eq!(check(sql), None, "{sql}");
    }
}

/// A string continued on the next line keeps the first part's escapes
/// for PostgreSQL (`E'a'` then `'b\\'…'`); sqlparser reads the second
/// part as a plain string. Same count and kinds, another table.
#[test]
fn names_only_postgres_reads_are_a_disagreement() {
    let sql = "SELECT E'a'\n'b\\'; SELECT 1 AS x, '; SELECT ssn FROM customers; --'";
    assert_eq!(
        check(sql),
        Some(Disagreement::Unseen(NameKind::Table)),
        "{sql}"
    );
    // Calls sqlparser reads as syntax are no disagreement.
    assert_eq!(check("SELECT substr(a, 2), ceil(b) FROM t"), None);
}

#[test]
fn deep_trees_are_read_without_decoding_them() {
    // 120 left-deep `||` levels: past the protobuf decoder's recursion
    // limit, within sqlparser's nesting bound.
    let deep = format!("SELECT a{} FROM t", " || a".repeat(120));
    assert!(matches!(
        pg_query::parse(&deep, pg_query::ParserOptions::DEFAULT),
        Err(pg_query::Error::Decode(_))
    ));
    assert_eq!(check(&deep), None);
    let two = format!("{deep}; DELETE FROM t WHERE a = 1");
    assert_eq!(check(&two), None);
    let kinds = kinds(&two).expect("PostgreSQL reads it");
    assert_eq!(kinds.len(), 2);
    assert!(kinds[1].contains(&StatementKind::Delete));
}

#[test]
fn kinds_of_texts_only_postgres_reads() {
    let k = kinds("DO $$BEGIN PERFORM 1; END$$; SELECT xmlelement(name foo)").expect("reads");
    assert_eq!(
        k,
        vec![vec![StatementKind::Do], vec![StatementKind::Select]]
    );
    assert!(kinds("SELEKT 1").is_err());
}

#[test]
fn rejection_messages_hold_no_token() {
    let e = kinds("SELECT 'secret-value' 'more' FROM").unwrap_err();
    assert!(!e.contains("secret"), "{e}");
    assert_eq!(e, "syntax error");
}

fn policy_set(spec: &str) -> crate::engine::PolicySet {
    use std::sync::Arc;

    use crate::engine::{CompiledPolicy, Identity, NoSecrets, PolicySet};
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  subjects: [{{serviceAccount: app}}]\n  connections: [db]\n{spec}"
    );
    let ap: sluice_crds::AccessPolicy = serde_saphyr::from_str(&yaml).expect("yaml");
    let p = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).expect("compiles"));
    PolicySet::select(&[p], &Identity::service_account("shop", "app"), "db", None).expect("bound")
}

fn action(set: &crate::engine::PolicySet, sql: &str) -> Action {
    set.decide_sql(sql, SqlDialect::Postgres).decision.enforced
}

/// Texts only PostgreSQL's grammar reads: onParseError, made stricter by
/// the deny and requireApproval rules naming a kind PostgreSQL reads.
#[test]
fn kinds_postgres_reads_meet_restrictive_rules_under_on_parse_error() {
    let allow = policy_set(
        "  onParseError: allow\n  rules:\n    - {name: no-do, action: deny, match: {statements: [do]}}\n    - {name: no-drop, action: deny, match: {statements: [drop], tables: [other]}}\n",
    );
    assert_eq!(action(&allow, "DO $$BEGIN PERFORM 1; END$$"), Action::Deny);
    // A DROP behind what sqlparser cannot read meets the drop rule, its
    // table condition taken to match.
    let only_drop = policy_set(
        "  onParseError: allow\n  rules:\n    - {name: no-drop, action: deny, match: {statements: [drop], tables: [other]}}\n",
    );
    let d = only_drop.decide_sql(
        "DO $$BEGIN PERFORM 1; END$$; DROP TABLE victims",
        SqlDialect::Postgres,
    );
    assert_eq!(d.decision.enforced, Action::Deny);
    assert_eq!(d.decision.rule.as_deref(), Some("no-drop"));
    assert_eq!(
        action(&only_drop, "DO $$BEGIN PERFORM 1; END$$"),
        Action::Allow
    );
    assert_eq!(
        action(&only_drop, "SELECT xmlelement(name foo)"),
        Action::Allow
    );
    // Allow rules never loosen onParseError: deny.
    let deny = policy_set(
        "  onParseError: deny\n  rules:\n    - {name: do-ok, action: allow, match: {statements: [do]}}\n",
    );
    assert_eq!(action(&deny, "DO $$BEGIN PERFORM 1; END$$"), Action::Deny);
    // Rules without statements: are not used (nothing else is known).
    let tables = policy_set(
        "  onParseError: allow\n  rules:\n    - {name: no-t, action: deny, match: {tables: [victims]}}\n",
    );
    assert_eq!(
        action(&tables, "DO $$BEGIN PERFORM 1; END$$"),
        Action::Allow
    );
}

/// A disagreement is refused whatever the policies say, dryRun too, and
/// its reason says the two read the text differently.
#[test]
fn disagreements_are_refused_whatever_the_policies_say() {
    // sqlparser reads `#-` (a jsonb operator) where PostgreSQL ends the
    // operator before `--`, a comment: one statement for sqlparser,
    // three with a DROP for PostgreSQL.
    let hidden = "SELECT 1 #-- '\n2; DROP TABLE victims; SELECT '\n' || ' --'";
    for spec in [
        "  defaultAction: allow\n  onParseError: allow\n",
        "  mode: dryRun\n  defaultAction: allow\n",
    ] {
        let set = policy_set(spec);
        let d = set.decide_sql(hidden, SqlDialect::Postgres);
        assert_eq!(
            d.disagreement,
            Some(Disagreement::Count {
                sluice: 1,
                postgres: 3
            })
        );
        assert_eq!(d.decision.enforced, Action::Deny, "{spec}");
        assert!(
            d.decision.reason.contains("read this text differently"),
            "{}",
            d.decision.reason
        );
        assert!(d.literal_dependent());
    }
}

#[test]
fn parses_are_counted_on_the_thread() {
    let before = parses_on_this_thread();
    let _ = check("SELECT 1");
    assert_eq!(parses_on_this_thread(), before + 1);
}
