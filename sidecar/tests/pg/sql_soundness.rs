//! The SQL front end on the wire: what the sidecar decides and masks is what
//! the server runs, whatever the literals, the functions that run SQL text,
//! the writes that could launder masked values, or the size of the text.
//! Each case seeds PII, goes through `sluice-sidecar standalone` to a real
//! PostgreSQL with real clients (a raw protocol client, tokio-postgres,
//! psql), and checks both the answer's SQLSTATE and that no form of a masked
//! value is anywhere in the bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SSN: &str = "123-45-6789";

const MASKING: &str = r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

/// Every form of the SSN a leak could take.
fn ssn_forms() -> Vec<String> {
    vec![
        SSN.to_string(),
        "123456789".to_string(),
        "123x45x6789".to_string(), // translate(ssn, '-', 'x')
        SSN.chars().rev().collect(),
        "45-67".to_string(),
        "6789".to_string(),
    ]
}

fn assert_no_leak(bytes: &[u8], what: &str) {
    for form in ssn_forms() {
        assert!(
            !contains(bytes, &form),
            "{what}: {form:?} reached the client: {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// The message tags and the SQLSTATEs of ErrorResponses in a raw answer.
fn tags_and_codes(bytes: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut tags = Vec::new();
    let mut codes = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let tag = bytes[i];
        let len =
            u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]) as usize;
        let body = &bytes[i + 5..(i + 1 + len).min(bytes.len())];
        tags.push(tag);
        if tag == b'E' {
            for field in body.split(|b| *b == 0) {
                if let Some((b'C', code)) = field.split_first() {
                    codes.push(String::from_utf8_lossy(code).into_owned());
                }
            }
        }
        i += 1 + len;
    }
    (tags, codes)
}

/// Asserts the answer is a refusal with `code` and no leak.
fn assert_refused(bytes: &[u8], code: &str, what: &str) {
    assert_no_leak(bytes, what);
    let (_, codes) = tags_and_codes(bytes);
    assert_eq!(
        codes,
        vec![code.to_string()],
        "{what}: {}",
        String::from_utf8_lossy(bytes)
    );
}

/// Asserts the answer ran without error, with no leak, and holds a DataRow
/// (`rows`) or copy data.
fn assert_ran(bytes: &[u8], rows: bool, what: &str) {
    assert_no_leak(bytes, what);
    let (tags, codes) = tags_and_codes(bytes);
    assert!(
        codes.is_empty(),
        "{what}: {codes:?} {}",
        String::from_utf8_lossy(bytes)
    );
    if rows {
        assert!(
            tags.contains(&b'D') || tags.contains(&b'd'),
            "{what}: no row: {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// A database with `customers` (one row with the SSN) and `orders`, and a
/// sidecar in front of it with `policy_extra` as the policy's spec lines.
async fn setup_with(test: &str, policy_extra: &str, admin_sql: &str) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text, notes text);
             INSERT INTO customers VALUES (1, 'Alice', '{SSN}', 'none');
             CREATE TABLE orders (id int, customer_id int, amount int);
             INSERT INTO orders VALUES (10, 1, 99), (11, 1, 5);
             CREATE TABLE secrets (x text);
             INSERT INTO secrets VALUES ('{SSN}');
             {admin_sql}"
        ))
        .await
        .unwrap();
    Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(policy_extra)),
        "shop/report-job",
    )
}

// === #15 item 2: literals that decisions and mask plans depend on ===

/// The decision cache folds literal values; texts whose decision or mask plan
/// depends on a literal's value must be decided on their own, in one session.
#[tokio::test]
async fn same_shape_with_other_literals_is_decided_on_its_own() {
    let sidecar = setup_with(
        "sound_literals",
        MASKING,
        "ALTER DATABASE t_sound_literals SET my.secret = '123-45-6789';",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);

    // COPY's format: text is masked, csv and binary cannot be and are refused.
    let copy = |format: &str| {
        format!(
            "COPY (SELECT id, translate(ssn, '-', 'x') FROM customers) TO STDOUT (FORMAT {format})"
        )
    };
    let bytes = raw.simple(&copy("'text'"));
    assert_ran(&bytes, true, "COPY text");
    assert!(contains(&bytes, "COPY 1"));
    for format in ["'csv'", "'binary'", "'CSV'"] {
        let bytes = raw.simple(&copy(format));
        assert_refused(&bytes, "42501", &copy(format));
    }
    // The same with a table copy and a column list.
    let bytes = raw.simple("COPY customers (id, ssn) TO STDOUT (FORMAT 'text')");
    assert_ran(&bytes, true, "COPY table text");
    let bytes = raw.simple("COPY customers (id, ssn) TO STDOUT (FORMAT 'csv')");
    assert_refused(&bytes, "42501", "COPY table csv");

    // current_setting of a built-in setting is clear, of a custom one masked.
    for (clear, custom) in [
        (
            "SELECT current_setting('application_name') AS s",
            "SELECT current_setting('my.secret') AS s",
        ),
        (
            "SELECT id, current_setting('TimeZone') FROM orders WHERE id = 10",
            "SELECT id, current_setting('my.secret') FROM orders WHERE id = 10",
        ),
    ] {
        for extended in [false, true] {
            let run = |raw: &mut RawClient, sql: &str| {
                if extended {
                    raw.extended(sql, false)
                } else {
                    raw.simple(sql)
                }
            };
            let bytes = run(&mut raw, clear);
            assert_ran(&bytes, true, clear);
            let bytes = run(&mut raw, custom);
            assert_ran(&bytes, true, custom);
        }
    }
    // tokio-postgres (extended, binary) and psql (simple, text) alike.
    let c = sidecar.connect().await;
    let a: String = c
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(a.contains("public"), "{a}");
    let b: String = c
        .query_one("SELECT current_setting('my.secret')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(b, "[redacted]");
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-At",
            "-c",
            "SELECT current_setting('DateStyle')",
            "-c",
            "SELECT current_setting('my.secret')",
        ],
    );
    assert!(ok, "{err}");
    assert!(!out.contains(SSN), "{out}");
    assert!(out.contains("[redacted]"), "{out}");
}

/// A text sqlparser cannot parse is decided by onParseError, which must not
/// then stand for a text of the same shape that parses and meets a rule.
#[tokio::test]
async fn a_parse_error_does_not_decide_other_literals() {
    let sidecar = setup_with(
        "sound_parse_literal",
        r#"  defaultAction: allow
  onParseError: allow
  rules:
    - {name: no-secrets, match: {tables: [secrets]}, action: deny}
"#,
        "",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    // sqlparser reads a type length as u64: a larger one does not parse,
    // PostgreSQL refuses it itself (22023).
    let bytes = raw.simple("SELECT x::varchar(99999999999999999999) FROM secrets");
    assert_no_leak(&bytes, "unparseable");
    let bytes = raw.simple("SELECT x::varchar(11) FROM secrets");
    assert_refused(&bytes, "42501", "same shape, parses");
    let bytes = raw.extended("SELECT x::varchar(11) FROM secrets", false);
    assert_refused(&bytes, "42501", "same shape, parses (extended)");
}

// === #15 item 4: built-ins that run SQL given as text ===

const SQL_TEXT_POLICY: &str = r#"  defaultAction: allow
  rules:
    - {name: no-kill, match: {functions: [pg_terminate_backend, pg_cancel_backend]}, action: deny}
    - {name: no-secrets, match: {tables: [secrets]}, action: deny}
    - {name: no-delete, match: {statements: [delete, drop]}, action: deny}
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

/// The SQL inside `query_to_xml`, `ts_stat`, `table_to_xml`, … is decided
/// like a statement of its own: rules see its functions, tables and kinds.
/// SQL that is not a literal, or does not parse, is refused.
#[tokio::test]
async fn sql_given_as_text_is_decided_like_a_statement() {
    let sidecar = setup_with(
        "sound_sql_text",
        SQL_TEXT_POLICY,
        "CREATE TABLE aliases (t tsquery, s tsquery);",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    // (text, what must appear in the refusal)
    let denied: &[(&str, &str)] = &[
        (
            "SELECT query_to_xml('select pg_terminate_backend(pg_backend_pid())', true, false, '')",
            "no-kill",
        ),
        (
            "SELECT pg_catalog.query_to_xml('SELECT pg_cancel_backend(pg_backend_pid())', true, false, '')",
            "no-kill",
        ),
        (
            "SELECT query_to_xml('SELECT x FROM secrets', true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT query_to_xml(E'SELECT x FROM \\x73ecrets', true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT query_to_xml($q$select x from public.secrets$q$, true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT query_to_xml_and_xmlschema('select x from secrets', true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT * FROM query_to_xml('select x from secrets', true, false, '') AS q",
            "no-secrets",
        ),
        (
            "WITH q AS (SELECT query_to_xml('select x from secrets', true, false, '') AS v) SELECT v FROM q",
            "no-secrets",
        ),
        (
            "SELECT query_to_xml('select query_to_xml(''select x from secrets'', true, false, '''')', true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT query_to_xml('delete from orders returning id', true, false, '')",
            "no-delete",
        ),
        (
            "SELECT * FROM ts_stat('select to_tsvector(x) from secrets')",
            "no-secrets",
        ),
        (
            "SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM aliases, secrets')",
            "no-secrets",
        ),
        (
            "SELECT table_to_xml('secrets', true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT table_to_xml('public.secrets'::regclass, true, false, '')",
            "no-secrets",
        ),
        (
            "SELECT table_to_xmlschema('\"secrets\"', true, false, '')",
            "no-secrets",
        ),
        // Not a literal, unparseable, or undecidable: refused by Sluice.
        (
            "SELECT query_to_xml('select x from ' || 'secrets', true, false, '')",
            "string literal",
        ),
        (
            "SELECT query_to_xml(name, true, false, '') FROM customers",
            "string literal",
        ),
        (
            "SELECT query_to_xml((SELECT 'select 1'), true, false, '')",
            "string literal",
        ),
        (
            "SELECT query_to_xml('selec x frm secrets', true, false, '')",
            "could not classify",
        ),
        (
            "SELECT query_to_xml(query => 'select 1', nulls => true, tableforest => false, targetns => '')",
            "by position",
        ),
        (
            "SELECT table_to_xml(relname::regclass, true, false, '') FROM pg_class WHERE relname = 'secrets'",
            "table name",
        ),
        (
            "SELECT schema_to_xml('public', true, false, '')",
            "every table",
        ),
        ("SELECT database_to_xml(true, false, '')", "every table"),
    ];
    for (sql, why) in denied {
        for extended in [false, true] {
            let bytes = if extended {
                raw.extended(sql, false)
            } else {
                raw.simple(sql)
            };
            assert_refused(&bytes, "42501", sql);
            assert!(
                contains(&bytes, why),
                "{sql}: refusal should say {why:?}: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(!contains(&bytes, "<x>"), "{sql} ran");
        }
    }
    // A parameter as the SQL text: the sidecar never sees the SQL.
    let c = sidecar.connect().await;
    let e = c
        .query_one(
            "SELECT query_to_xml($1::text, true, false, '')",
            &[&"select x from secrets"],
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    assert!(message(&e).contains("string literal"), "{}", message(&e));
    // Allowed SQL runs; its result may hold any table's data and is masked
    // whole while masking rules apply.
    let bytes = raw.simple("SELECT query_to_xml('select id, amount from orders', true, false, '')");
    assert_ran(&bytes, true, "allowed query_to_xml");
    assert!(
        contains(&bytes, "[redacted]"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    for sql in [
        "SELECT query_to_xml('select ssn from customers', true, false, '')",
        "SELECT * FROM ts_stat('select to_tsvector(''simple'', ssn) from customers')",
        "SELECT table_to_xml('customers', true, false, '')",
    ] {
        assert_ran(&raw.simple(sql), true, sql);
        assert_ran(&raw.extended(sql, true), true, sql);
    }
}

// === #15 item 5: laundering masked values through writes and side effects ===

/// Statements that write values derived from a masked column where the
/// workload can read them back, or hand them to side-effecting functions,
/// are refused naming the column; nothing of them runs.
#[tokio::test]
async fn masked_values_are_not_laundered_through_writes_or_side_effects() {
    let sidecar = setup_with(
        "sound_launder",
        MASKING,
        "CREATE TABLE scratch (id int, v text); CREATE SEQUENCE s;",
    )
    .await;
    let pg = server();
    let admin = connect(&pg.admin_url(&db_name("sound_launder"))).await;
    let file = std::env::temp_dir().join(format!("sluice_launder_{}", std::process::id()));
    let copy_to_file = format!("COPY (SELECT ssn FROM customers) TO '{}'", file.display());
    let mut raw = RawClient::connect(sidecar.port);
    let bytes = raw.simple("LISTEN c");
    assert_ran(&bytes, false, "LISTEN");
    let laundering: Vec<&str> = vec![
        "UPDATE customers SET notes = translate(ssn, '-', 'x') WHERE id = 1",
        "UPDATE customers SET notes = (SELECT reverse(ssn) FROM customers LIMIT 1) WHERE id = 1",
        "UPDATE scratch SET v = c.ssn FROM customers c WHERE c.id = scratch.id",
        "INSERT INTO scratch SELECT id, ssn FROM customers",
        "INSERT INTO scratch (id, v) SELECT id, substr(ssn, 8) FROM customers",
        "INSERT INTO scratch (v) VALUES ((SELECT ssn FROM customers LIMIT 1))",
        "INSERT INTO scratch SELECT id, ssn FROM customers RETURNING v",
        "CREATE TABLE t2 AS SELECT id, ssn FROM customers",
        "CREATE TABLE t3 AS SELECT * FROM customers",
        "SELECT ssn INTO t4 FROM customers",
        "WITH u AS (UPDATE customers SET notes = ssn RETURNING 1) SELECT count(*) FROM u",
        "MERGE INTO scratch s USING customers c ON s.id = c.id WHEN NOT MATCHED THEN INSERT VALUES (c.id, c.ssn)",
        "PREPARE p AS UPDATE customers SET notes = ssn WHERE id = 1 RETURNING notes",
        "SELECT set_config('my.x', ssn, false) FROM customers",
        "SELECT 1 FROM customers WHERE set_config('application_name', ssn, false) IS NOT NULL",
        "SELECT pg_notify('c', ssn) FROM customers",
        "SELECT pg_notify('c', (SELECT lower(ssn) FROM customers LIMIT 1))",
        "SELECT setval('s', replace(ssn, '-', '')::bigint) FROM customers",
        "SELECT pg_advisory_lock(replace(ssn, '-', '')::bigint) FROM customers",
        "SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM customers",
        "SELECT 1 WHERE EXISTS (SELECT set_config('my.y', ssn, false) FROM customers)",
        "SELECT query_to_xml('update customers set notes = ssn returning 1', true, false, '')",
        &copy_to_file,
    ];
    for sql in &laundering {
        for extended in [false, true] {
            let bytes = if extended {
                raw.extended(sql, false)
            } else {
                raw.simple(sql)
            };
            assert_refused(&bytes, "42501", sql);
            assert!(
                contains(&bytes, "ssn") || contains(&bytes, "customers"),
                "{sql}: the refusal names the masked column: {}",
                String::from_utf8_lossy(&bytes)
            );
            let (tags, _) = tags_and_codes(&bytes);
            assert!(!tags.contains(&b'A'), "{sql}: a notification arrived");
        }
    }
    // Nothing of them ran.
    let bytes = raw.simple("EXECUTE p");
    assert_no_leak(&bytes, "EXECUTE p");
    for (sql, what) in [
        ("SHOW application_name", "application_name"),
        ("SELECT current_setting('my.x', true) AS v", "my.x"),
        ("SELECT last_value FROM s", "sequence"),
        (
            "SELECT objid::text, classid::text FROM pg_locks WHERE locktype = 'advisory'",
            "locks",
        ),
        ("SELECT notes FROM customers", "notes"),
        ("SELECT v FROM scratch", "scratch"),
    ] {
        let bytes = raw.simple(sql);
        assert_ran(&bytes, false, what);
    }
    let notes: String = admin
        .query_one("SELECT notes FROM customers WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, "none");
    let scratch: i64 = admin
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(scratch, 0);
    let tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ('t2', 't3', 't4')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    let objects: i64 = admin
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(objects, 0);
    assert!(!file.exists(), "COPY wrote {}", file.display());
    // Writes of values that are not masked still run.
    for sql in [
        "UPDATE customers SET notes = upper(name) WHERE id = 1",
        "INSERT INTO scratch SELECT id, name FROM customers",
        "SELECT set_config('application_name', name, false) FROM customers",
        "UPDATE customers SET ssn = upper(ssn) WHERE id = 1",
    ] {
        assert_ran(&raw.simple(sql), false, sql);
    }
    let notes: String = admin
        .query_one("SELECT notes FROM customers WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, "ALICE");
}

// === #15 item 6: withoutWhere sees through tautologies and covers MERGE ===

/// A WHERE that does not restrict the target's rows is no WHERE, and MERGE
/// … WHEN MATCHED THEN DELETE/UPDATE is a bulk write too: a `withoutWhere`
/// deny rule refuses them all, and nothing is written.
#[tokio::test]
async fn without_where_sees_through_tautologies_and_merge() {
    let sidecar = setup_with(
        "sound_bulk",
        r#"  defaultAction: allow
  rules:
    - {name: no-bulk-writes, match: {statements: [update, delete, merge], withoutWhere: true}, action: deny}
"#,
        "CREATE TABLE archive (id int, customer_id int, amount int);
         INSERT INTO archive VALUES (10, 1, 99);",
    )
    .await;
    let pg = server();
    let admin = connect(&pg.admin_url(&db_name("sound_bulk"))).await;
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "DELETE FROM orders WHERE id = id",
        "DELETE FROM orders WHERE orders.id = orders.id",
        "DELETE FROM orders WHERE true OR id = 1",
        "DELETE FROM orders WHERE (SELECT true)",
        "DELETE FROM orders WHERE EXISTS (SELECT 1)",
        "DELETE FROM orders WHERE 1 = 1",
        "DELETE FROM orders WHERE NOT false",
        "DELETE FROM orders WHERE id IS NOT NULL",
        "DELETE FROM orders WHERE id IN (SELECT id FROM pg_database)",
        "DELETE FROM orders WHERE id = (SELECT max(id) FROM pg_database)",
        "DELETE FROM orders USING orders o2 WHERE orders.id = o2.id",
        "UPDATE orders SET amount = 0 WHERE amount = amount",
        "UPDATE orders SET amount = 0 WHERE coalesce(id, 0) = coalesce(id, 0)",
        "UPDATE orders SET amount = 0 WHERE id = 1 OR 'a' = 'a'",
        "MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE",
        "MERGE INTO orders o USING orders s ON o.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE INTO orders o USING (SELECT * FROM orders) s ON o.id = s.id WHEN MATCHED THEN UPDATE SET amount = 0",
        "MERGE INTO orders o USING customers c ON c.id = c.id WHEN MATCHED THEN UPDATE SET amount = 0",
        "WITH d AS (DELETE FROM orders WHERE id = id RETURNING 1) SELECT count(*) FROM d",
    ] {
        for extended in [false, true] {
            let bytes = if extended {
                raw.extended(sql, false)
            } else {
                raw.simple(sql)
            };
            assert_refused(&bytes, "42501", sql);
            assert!(contains(&bytes, "no-bulk-writes"), "{sql}");
        }
    }
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM orders WHERE amount <> 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "a bulk write ran");
    // Writes that name their rows run.
    for sql in [
        "UPDATE orders SET amount = 7 WHERE id = 11",
        "DELETE FROM orders WHERE id IN (SELECT a.id FROM archive a WHERE a.amount = 1)",
        "MERGE INTO orders o USING archive a ON o.id = a.id WHEN MATCHED THEN UPDATE SET amount = a.amount",
    ] {
        assert_ran(&raw.simple(sql), false, sql);
    }
    let amount: i32 = admin
        .query_one("SELECT amount FROM orders WHERE id = 11", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, 7);
}

// === #17 item 2: the parse is bounded before it starts ===

/// A 2 MB `select 1,1,…` is refused with 54001 before it is tokenized (it
/// took a gigabyte before), whatever onParseError says, and the session
/// goes on.
#[tokio::test]
async fn huge_statements_are_refused_before_parsing() {
    let sidecar = setup_with(
        "sound_huge",
        r#"  defaultAction: allow
  onParseError: allow
"#,
        "",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    assert_ran(&raw.simple("SELECT 1"), true, "warm-up");
    let before = sidecar_peak_rss_kib(&sidecar);
    for sql in [
        format!("select 1{}", ",1".repeat(1_000_000)),
        format!("select 1{}", " ".repeat(2_000_000)),
        format!("select '{}'", "a b ".repeat(500_000)),
        format!("select 1 -- {}", ",".repeat(2_000_000)),
    ] {
        let bytes = raw.simple(&sql);
        assert_refused(&bytes, "54001", "huge statement");
        assert!(
            contains(&bytes, "tokens"),
            "{}",
            String::from_utf8_lossy(&bytes[..200.min(bytes.len())])
        );
        let bytes = raw.extended(&sql, false);
        assert_refused(&bytes, "54001", "huge statement (extended)");
    }
    let after = sidecar_peak_rss_kib(&sidecar);
    eprintln!("sidecar peak RSS: {before} KiB before, {after} KiB after the huge statements");
    // Each text is 2 MB and is held a few times over (framing, the
    // pending message, the refusal); a parse took ~500 bytes per byte.
    assert!(
        after - before < 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    assert_ran(&raw.simple("SELECT 1"), true, "after");
    // A large statement within the bound still runs.
    let sql = format!(
        "select count(*) from (values (1){}) v",
        ",(1)".repeat(15_000)
    );
    let bytes = raw.simple(&sql);
    assert_ran(&bytes, true, "15k rows of VALUES");
    assert!(
        contains(&bytes, "15001"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

// === #15 item 10: no log level prints literals ===

/// With SLUICE_LOG=debug (as every test sidecar runs), no log line holds a
/// statement's literals or a result's values: the SQL parser's own debug
/// output printed them.
#[tokio::test]
async fn debug_logs_print_no_literals_or_values() {
    let sidecar = setup_with("sound_logs", MASKING, "").await;
    let mut raw = RawClient::connect(sidecar.port);
    let card = "4111 1111 1111 1111";
    for sql in [
        format!("SELECT '{card}' AS c, 8675309 AS n"),
        "SELECT ssn, name FROM customers WHERE ssn = '123-45-6789'".to_string(),
        "SELECT lower(ssn) FROM customers WHERE id IN (1, 2)".to_string(),
        format!("UPDATE orders SET amount = 8675309 WHERE id = 10 AND '{card}' <> ''"),
    ] {
        assert_ran(&raw.simple(&sql), false, &sql);
        assert_ran(&raw.extended(&sql, false), false, &sql);
    }
    let bytes = raw.simple("SELECT 'unterminated");
    assert!(contains(&bytes, "SERROR"));
    assert_ran(&raw.simple("SELECT 1"), true, "the session goes on");
    let log = sidecar.log_text();
    assert!(!log.is_empty(), "the sidecar logged nothing at debug");
    for secret in [card, "8675309", SSN, "Alice", "unterminated"] {
        assert!(
            !log.contains(secret),
            "the debug log holds {secret:?}: {}",
            log.lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// === COPY is the read or the insert it does ===

/// `COPY t FROM STDIN` inserts rows and `COPY t TO STDOUT` reads them, as
/// the server's privileges say: rules naming `insert` or `select` on `t`
/// hold for them (also through a partition), not only rules naming `copy`.
/// Before, `COPY customers FROM STDIN` ran under a rule denying inserts
/// into customers, and `COPY secrets TO STDOUT` under one denying reads of
/// secrets.
#[tokio::test]
async fn copy_meets_the_rules_for_the_rows_it_moves() {
    let pg = server();
    let db = db_name("soundness_copy_rules");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int, name text) PARTITION BY RANGE (id);
             CREATE TABLE customers_p1 PARTITION OF customers FOR VALUES FROM (0) TO (100);
             INSERT INTO customers VALUES (1, 'Alice');
             CREATE TABLE secrets (x text);
             INSERT INTO secrets VALUES ('{SSN}');
             CREATE TABLE notes (x text);"
        ))
        .await
        .unwrap();
    let policy = policy(
        r#"  defaultAction: allow
  rules:
    - name: no-new-customers
      match: {statements: [insert], tables: [customers]}
      action: deny
    - name: no-secrets
      match: {statements: [select], tables: [secrets]}
      action: deny"#,
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for (sql, rule) in [
        ("COPY customers FROM STDIN", "no-new-customers"),
        ("COPY customers (id, name) FROM STDIN", "no-new-customers"),
        (
            "COPY public.customers FROM STDIN WITH (FORMAT csv)",
            "no-new-customers",
        ),
        ("copy \"customers\" from stdin", "no-new-customers"),
        ("COPY customers_p1 FROM STDIN", "no-new-customers"),
        ("COPY secrets TO STDOUT", "no-secrets"),
        ("COPY secrets (x) TO STDOUT (FORMAT binary)", "no-secrets"),
        (
            "COPY public.secrets TO STDOUT WITH CSV HEADER",
            "no-secrets",
        ),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert_refused(&bytes, "42501", sql);
            assert!(
                contains(&bytes, rule),
                "{sql}: not by {rule}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // tokio-postgres's COPY IN: refused before any row is sent.
    let client = sidecar.connect().await;
    let err = client
        .copy_in::<_, bytes::Bytes>("COPY customers FROM STDIN")
        .await
        .err()
        .expect("COPY customers FROM STDIN refused");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    // The same moves elsewhere run: into notes, out of customers.
    raw.send(&[
        (b'Q', b"COPY notes FROM STDIN\0".to_vec()),
        (b'd', b"hello\n".to_vec()),
        (b'c', vec![]),
    ]);
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "COPY 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_ran(&raw.simple("COPY customers_p1 TO STDOUT"), true, "copy out");
    let counts = admin
        .query_one(
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM notes)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (1, 1));
}

/// `INSERT … ON CONFLICT DO UPDATE` updates the rows it meets (PostgreSQL
/// asks for UPDATE privilege): a rule denying updates of `customers` holds
/// for it, also through a partition. `ON CONFLICT DO NOTHING` and plain
/// inserts stay inserts. Before, the upsert renamed Alice under the rule.
#[tokio::test]
async fn upserts_meet_the_rules_for_updates() {
    let pg = server();
    let db = db_name("soundness_upsert_rules");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, name text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
             CREATE TABLE customers_p1 PARTITION OF customers FOR VALUES FROM (0) TO (100);
             INSERT INTO customers VALUES (1, 'Alice');",
        )
        .await
        .unwrap();
    let policy = policy(
        r#"  defaultAction: allow
  rules:
    - name: no-renames
      match: {statements: [update], tables: [customers]}
      action: deny"#,
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "INSERT INTO customers VALUES (1, 'Mallory') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        "INSERT INTO customers AS c VALUES (1, 'Mallory') ON CONFLICT ON CONSTRAINT customers_pkey DO UPDATE SET name = 'x' WHERE c.id = 1",
        "insert into customers_p1 values (1, 'Mallory') on conflict (id) do update set name = excluded.name",
        "WITH u AS (INSERT INTO customers VALUES (1, 'M') ON CONFLICT (id) DO UPDATE SET name = 'M' RETURNING id) SELECT * FROM u",
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert_refused(&bytes, "42501", sql);
            assert!(
                contains(&bytes, "no-renames"),
                "{sql}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    let client = sidecar.connect().await;
    let err = client
        .execute(
            "INSERT INTO customers VALUES ($1, 'Mallory') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
            &[&1i32],
        )
        .await
        .expect_err("tokio-postgres: the upsert is refused");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    for (sql, tag) in [
        (
            "INSERT INTO customers VALUES (1, 'Mallory') ON CONFLICT DO NOTHING",
            "INSERT 0 0",
        ),
        ("INSERT INTO customers VALUES (2, 'Bob')", "INSERT 0 1"),
    ] {
        let bytes = raw.simple(sql);
        assert!(
            contains(&bytes, tag),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let names = admin
        .query_one(
            "SELECT string_agg(name, ',' ORDER BY id) FROM customers",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(names, "Alice,Bob");
}

/// `MERGE` does the writes its actions name (PostgreSQL asks for each
/// one's privilege): rules naming `insert`, `update` or `delete` hold for
/// it, not only rules naming `merge`. Before, `MERGE … WHEN MATCHED THEN
/// DELETE` emptied `customers` under a rule denying deletes from it.
#[tokio::test]
async fn merge_meets_the_rules_for_its_actions() {
    let pg = server();
    let db = db_name("soundness_merge_rules");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text);
             INSERT INTO customers VALUES (1, 'Alice');
             CREATE TABLE notes (id int PRIMARY KEY, name text);",
        )
        .await
        .unwrap();
    let policy = policy(
        r#"  defaultAction: allow
  rules:
    - name: no-deletes
      match: {statements: [delete], tables: [customers]}
      action: deny
    - name: no-new-customers
      match: {statements: [insert], tables: [customers]}
      action: deny"#,
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for (sql, rule) in [
        (
            "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id WHEN MATCHED THEN DELETE",
            "no-deletes",
        ),
        (
            "MERGE INTO customers c USING (SELECT 2 AS id) s ON c.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'Mallory')",
            "no-new-customers",
        ),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert_refused(&bytes, "42501", sql);
            assert!(
                contains(&bytes, rule),
                "{sql}: not by {rule}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // An update by MERGE, and a MERGE into another table, run.
    for sql in [
        "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id WHEN MATCHED THEN UPDATE SET name = 'Alicia'",
        "MERGE INTO notes n USING (SELECT 1 AS id) s ON n.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (1, 'n')",
    ] {
        let bytes = raw.simple(sql);
        assert!(
            contains(&bytes, "MERGE 1"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let names = admin
        .query_one(
            "SELECT string_agg(name, ',' ORDER BY id) FROM customers",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(names, "Alicia");
}
