//! Masking on the wire. Each case seeds PII and proves it never reaches the
//! client: not in what the driver decodes, and not anywhere in the raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SSN: &str = "123-45-6789";
const HASH: &str = "pbkdf2$deadbeefcafebabe";
const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "alice.wonder@example.com";

const MASKING: &str = r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn", "*.password_hash", "customers.pin"]
      strategy: redact
    - detectors: [creditCard, email]
      strategy: partial
"#;

/// Every form of the SSN a leak could take.
fn ssn_forms() -> Vec<String> {
    vec![
        SSN.to_string(),
        "123456789".to_string(),
        SSN.chars().rev().collect(),
        "bcd-ef-ghij".to_string(), // translate(ssn, '0123456789', 'abcdefghij')
        "MTIzLTQ1LTY3ODk".to_string(), // base64
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
    assert!(!contains(bytes, HASH), "{what}: password hash leaked");
    assert!(!contains(bytes, "deadbeef"), "{what}: password hash leaked");
    assert!(!contains(bytes, CARD), "{what}: card leaked");
    assert!(!contains(bytes, "4111111111111111"), "{what}: card leaked");
    assert!(!contains(bytes, EMAIL), "{what}: email leaked");
}

/// `sql`'s answers, simple and extended (text and binary results): no error,
/// a row (unless `rows` is false), and nothing masked in them.
fn assert_masked_answers(raw: &mut RawClient, sql: &str, rows: bool) {
    for bytes in [
        raw.simple(sql),
        raw.extended(sql, false),
        raw.extended(sql, true),
    ] {
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_no_leak(&bytes, sql);
        if rows {
            assert!(has_row(&bytes), "{sql}: no row");
        }
    }
}

/// Whether a DataRow message is among the messages in `bytes`.
fn has_row(bytes: &[u8]) -> bool {
    messages(bytes).iter().any(|(tag, _)| *tag == b'D')
}

async fn setup(test: &str) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text unique, password_hash text,
                                     note text, pin int, tags text[], card_big bigint);
             INSERT INTO customers VALUES
               (1, 'Alice', '{SSN}', '{HASH}', 'card {CARD}, mail {EMAIL}', 4321, ARRAY['x', '{EMAIL}'], 4111111111111111);
             CREATE TABLE orders (id int, customer_id int, amount int);
             INSERT INTO orders VALUES (10, 1, 99);"
        ))
        .await
        .unwrap();
    Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(MASKING)),
        "shop/report-job",
    )
}

/// Statements whose results must not reveal the SSN (or other masked data).
const CASES: &[&str] = &[
    "SELECT * FROM customers",
    "SELECT ssn FROM customers",
    "SELECT ssn AS x FROM customers",
    "SELECT c.ssn AS \"Ssn\" FROM customers c",
    "SELECT lower(ssn) FROM customers",
    "SELECT ssn || '' FROM customers",
    "SELECT reverse(ssn) FROM customers",
    "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers",
    "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers",
    "SELECT ssn::varchar(20) FROM customers",
    "SELECT CAST(ssn AS char(11)) FROM customers",
    "SELECT substr(ssn, 8) FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT json_agg(c) FROM customers c",
    "SELECT to_jsonb(c.*) FROM customers c",
    "SELECT array_agg(ssn) FROM customers",
    "SELECT string_agg(ssn, ',') FROM customers",
    "SELECT (SELECT ssn FROM customers LIMIT 1) AS s",
    "SELECT x FROM (SELECT ssn AS x FROM customers) sub",
    "WITH t AS (SELECT ssn, password_hash FROM customers) SELECT * FROM t",
    "SELECT o.amount, c.* FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT name, note, tags FROM customers",
    "SELECT password_hash FROM customers",
    "SELECT pin FROM customers",
    "SELECT * FROM customers WHERE ssn = '123-45-6789'",
    "SELECT ssn FROM customers UNION ALL SELECT 'x'",
];

#[tokio::test]
async fn simple_protocol_text_results_are_masked() {
    let sidecar = setup("mask_simple").await;
    let mut raw = RawClient::connect(sidecar.port);
    for sql in CASES {
        let bytes = raw.simple(sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_no_leak(&bytes, sql);
        // The row still arrives (masked, not dropped).
        assert!(has_row(&bytes), "{sql}: no row");
    }
    // SQL-level PREPARE / EXECUTE: the EXECUTE's text says nothing of the
    // query, so its computed columns must still be masked.
    for (i, query) in [
        "SELECT ssn FROM customers",
        "SELECT lower(ssn) || '' FROM customers",
    ]
    .iter()
    .enumerate()
    {
        let bytes = raw.simple(&format!("PREPARE p{i} AS {query}"));
        assert!(
            !contains(&bytes, "SERROR"),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let bytes = raw.simple(&format!("EXECUTE p{i}"));
        assert_no_leak(&bytes, &format!("EXECUTE of {query}"));
    }
    // Unmasked data still flows.
    let bytes = raw.simple("SELECT name, id FROM customers");
    assert!(contains(&bytes, "Alice"));
}

#[tokio::test]
async fn extended_protocol_text_and_binary_results_are_masked() {
    let sidecar = setup("mask_extended").await;
    let mut raw = RawClient::connect(sidecar.port);
    for sql in CASES {
        // No error, a row, nothing masked: simple, extended text and binary.
        assert_masked_answers(&mut raw, sql, true);
    }
    let bytes = raw.extended("SELECT name FROM customers", true);
    assert!(contains(&bytes, "Alice"));
}

#[tokio::test]
async fn driver_sees_masked_values_of_the_right_shape() {
    let sidecar = setup("mask_driver").await;
    let c = sidecar.connect().await;
    // tokio-postgres: extended protocol, binary results.
    let row = c
        .query_one("SELECT name, ssn, pin, note, tags FROM customers", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Alice");
    let ssn: &str = row.get(1);
    assert_eq!(
        ssn, "[redacted]",
        "the redact strategy's marker, nothing else"
    );
    // A masked int in binary format cannot hold a marker: it is NULL.
    assert_eq!(row.get::<_, Option<i32>>(2), None);
    let note: &str = row.get(3);
    assert!(!note.contains(CARD) && !note.contains(EMAIL), "{note}");
    assert!(note.starts_with("card "), "{note}");
    let card: Option<i64> = c
        .query_one("SELECT card_big FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        card, None,
        "a card number stored as bigint is found by the detectors"
    );
    let tags: Vec<String> = row.get(4);
    assert_eq!(tags[0], "x");
    assert!(!tags[1].contains(EMAIL), "{tags:?}");
    // A text value computed from a masked column is masked whole.
    let text: String = c
        .query_one("SELECT to_jsonb(c)::text FROM customers c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(text, "[redacted]");
    // A jsonb value stays valid JSON (text format, simple protocol).
    let rows = c
        .simple_query("SELECT to_jsonb(c) FROM customers c")
        .await
        .unwrap();
    let text = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row");
    let v: serde_json::Value = serde_json::from_str(&text).expect("masked jsonb is valid JSON");
    // Computed from a masked column, the whole value is masked: as a JSON
    // string, so a jsonb reader still parses it.
    assert_eq!(v, serde_json::json!("[redacted]"), "{text}");
    // psql (simple protocol, text).
    let (ok, out, err) = psql(
        sidecar.port,
        &["-t", "-A", "-c", "SELECT ssn, name FROM customers"],
    );
    assert!(ok, "{err}");
    assert!(!out.contains(SSN) && out.contains("Alice"), "{out}");
}

/// The server names a view, not its base table, as a view column's origin;
/// the sidecar reads the view's definition to follow the masked column.
#[tokio::test]
async fn masked_columns_read_through_views_are_masked() {
    let sidecar = setup("mask_views").await;
    let pg = server();
    let admin = connect(&pg.admin_url(&db_name("mask_views"))).await;
    admin
        .batch_execute(
            "CREATE VIEW v_all AS SELECT * FROM customers;
             CREATE VIEW v_expr AS SELECT id, upper(ssn) AS s, name FROM customers;
             CREATE VIEW v_nested AS SELECT id, s AS t FROM v_expr;
             CREATE VIEW v_row AS SELECT id, to_jsonb(c) AS j FROM customers c;
             CREATE VIEW v_clean AS SELECT id, name FROM customers;
             CREATE SCHEMA other;
             CREATE VIEW other.\"Mixed View\" AS SELECT id, ssn FROM customers;
             CREATE MATERIALIZED VIEW mv AS SELECT id, ssn, password_hash FROM customers;",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "SELECT ssn FROM v_all",
        "SELECT * FROM v_all",
        "SELECT lower(ssn) FROM v_all",
        "SELECT v FROM v_all v",
        "SELECT row_to_json(v) FROM v_all v",
        "SELECT s FROM v_expr",
        "SELECT reverse(s) FROM v_expr",
        "SELECT * FROM v_nested",
        "SELECT j FROM v_row",
        "SELECT ssn FROM other.\"Mixed View\"",
        "SELECT * FROM mv",
        "SELECT x FROM (SELECT t AS x FROM v_nested) sub",
        "COPY (SELECT id, t FROM v_nested) TO STDOUT",
    ] {
        assert_masked_answers(&mut raw, sql, !sql.starts_with("COPY"));
    }
    // Views the sidecar's own catalog session would not find by name: a
    // temporary view of the client's session, and a view found through the
    // client's own search_path.
    for setup_sql in [
        "CREATE TEMP VIEW tv AS SELECT id, upper(ssn) AS u FROM customers",
        "SET search_path = other, public",
    ] {
        let bytes = raw.simple(setup_sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{setup_sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    for sql in [
        "SELECT u FROM tv",
        "SELECT lower(u) FROM tv",
        "SELECT ssn FROM \"Mixed View\"",
        "SELECT reverse(ssn) FROM \"Mixed View\"",
    ] {
        assert_masked_answers(&mut raw, sql, true);
    }
    // A view that reads no masked column is not masked.
    let (ok, out, err) = psql(sidecar.port, &["-At", "-c", "SELECT id, name FROM v_clean"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|Alice");
    let (ok, out, err) = psql(sidecar.port, &["-At", "-c", "SELECT id, name FROM v_expr"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|Alice");
}

/// A user-defined function reads what it likes, out of the statement's
/// sight: what it returns is masked whole.
#[tokio::test]
async fn results_of_user_defined_functions_are_masked() {
    let sidecar = setup("mask_functions").await;
    let pg = server();
    let admin = connect(&pg.admin_url(&db_name("mask_functions"))).await;
    admin
        .batch_execute(
            "CREATE FUNCTION f_ssn() RETURNS text LANGUAGE sql
               AS 'SELECT ssn FROM customers ORDER BY id LIMIT 1';
             CREATE FUNCTION f_rows() RETURNS SETOF customers LANGUAGE sql
               AS 'SELECT * FROM customers';
             CREATE FUNCTION f_plpgsql(n int) RETURNS text LANGUAGE plpgsql
               AS $$ BEGIN RETURN (SELECT ssn FROM customers WHERE id = n); END $$;
             CREATE SCHEMA other;
             CREATE FUNCTION other.\"Odd\"() RETURNS TABLE (a text) LANGUAGE sql
               AS 'SELECT ssn FROM customers';
             CREATE VIEW v_fn AS SELECT id, f_ssn() AS x FROM customers;",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "SELECT f_ssn()",
        "SELECT reverse(f_ssn()) AS r",
        "SELECT * FROM f_rows()",
        "SELECT r.ssn FROM f_rows() r",
        "SELECT f_plpgsql(1)",
        "SELECT * FROM other.\"Odd\"()",
        "SELECT x FROM v_fn",
        "SELECT (SELECT f_ssn()) AS s",
    ] {
        assert_masked_answers(&mut raw, sql, true);
    }
    // A function that only selects rows masks nothing; built-ins are not
    // user-defined.
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-At",
            "-c",
            "SELECT name, upper(name) FROM customers WHERE f_ssn() IS NOT NULL",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Alice|ALICE");
}

#[tokio::test]
async fn copy_to_stdout_is_masked_or_refused() {
    let sidecar = setup("mask_copy").await;
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "COPY customers TO STDOUT",
        "COPY customers (ssn, name) TO STDOUT",
        "COPY (SELECT ssn, note FROM customers) TO STDOUT",
        "COPY (SELECT lower(ssn) FROM customers) TO STDOUT",
    ] {
        let bytes = raw.simple(sql);
        assert_no_leak(&bytes, sql);
        assert!(
            contains(&bytes, "COPY 1"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let bytes = raw.simple("COPY customers TO STDOUT WITH (FORMAT csv)");
    assert_no_leak(&bytes, "csv");
    assert!(
        contains(&bytes, "42501"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let (ok, out, err) = psql(
        sidecar.port,
        &["-c", "COPY customers (id, name, ssn) TO STDOUT"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("1\tAlice\t"), "{out}");
    assert!(!out.contains(SSN), "{out}");
}

#[tokio::test]
async fn errors_and_notices_do_not_echo_masked_values() {
    let sidecar = setup("mask_errors").await;
    // Application functions that raise the SSN, created by the admin.
    let admin = connect(&server().admin_url(&db_name("mask_errors"))).await;
    admin
        .batch_execute(
            "CREATE FUNCTION raise_exception() RETURNS int LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'value %', (SELECT ssn FROM customers LIMIT 1); END $$;
             CREATE FUNCTION raise_notice() RETURNS int LANGUAGE plpgsql AS
               $$ BEGIN RAISE NOTICE 'value %', (SELECT ssn FROM customers LIMIT 1); RETURN 1; END $$;
             CREATE FUNCTION raise_warning() RETURNS int LANGUAGE plpgsql AS
               $$ BEGIN RAISE WARNING 'value %', (SELECT ssn FROM customers LIMIT 1); RETURN 1; END $$;
             CREATE FUNCTION raise_as_message() RETURNS int LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION USING MESSAGE = (SELECT ssn FROM customers LIMIT 1), ERRCODE = '22023'; END $$;
             CREATE FUNCTION raise_in_detail() RETURNS int LANGUAGE plpgsql AS
               $$ BEGIN RAISE WARNING 'see detail' USING DETAIL = (SELECT ssn FROM customers LIMIT 1), ERRCODE = '01007'; RETURN 1; END $$;",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    // (statement, the message type that must come, PostgreSQL's SQLSTATE)
    for (sql, tag, code) in [
        // unique violation: DETAIL Key (ssn)=(123-45-6789) already exists.
        (
            "INSERT INTO customers (id, ssn) VALUES (2, '123-45-6789')",
            b'E',
            "23505",
        ),
        // invalid input syntax for type integer: "123-45-6789"
        ("SELECT ssn::int FROM customers", b'E', "22P02"),
        ("SELECT 1 / (ssn::int) FROM customers", b'E', "22P02"),
        // Failing row contains (…)
        (
            "INSERT INTO customers (id, ssn) SELECT NULL, ssn FROM customers",
            b'E',
            "23502",
        ),
        // relation "123-45-6789" does not exist
        ("SELECT ssn::regclass FROM customers", b'E', "42P01"),
        // unrecognized configuration parameter "123-45-6789"
        ("SELECT current_setting(ssn) FROM customers", b'E', "42704"),
        ("SELECT raise_exception()", b'E', "P0001"),
        ("SELECT raise_as_message()", b'E', "22023"),
        ("SELECT raise_notice()", b'N', "00000"),
        ("SELECT raise_warning()", b'N', "01000"),
        ("SELECT raise_in_detail()", b'N', "01007"),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert_no_leak(&bytes, sql);
            let messages = messages(&bytes);
            assert!(
                messages
                    .iter()
                    .any(|(t, body)| *t == tag && contains(body, &format!("C{code}\0"))),
                "{sql}: PostgreSQL's {code} did not arrive: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(
                !contains(&bytes, "C42501"),
                "{sql}: refused by the sidecar instead of run"
            );
            assert!(
                contains(&bytes, "hidden by Sluice"),
                "{sql}: not marked as scrubbed: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // The session still works.
    let bytes = raw.simple("SELECT 1");
    assert!(contains(&bytes, "SELECT 1"));
}

/// The messages in `bytes`: type and body.
fn messages(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        let len = i32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
            as usize;
        out.push((bytes[at], bytes[at + 5..at + 1 + len].to_vec()));
        at += 1 + len;
    }
    out
}

#[tokio::test]
async fn notifications_and_parameter_status_do_not_carry_masked_values() {
    let sidecar = setup("mask_channels").await;
    let mut raw = RawClient::connect(sidecar.port);
    assert!(!contains(&raw.simple("LISTEN c"), "SERROR"));
    for sql in [
        "SELECT pg_notify('c', ssn) FROM customers",
        "SELECT set_config('application_name', ssn, false) FROM customers",
        "SELECT set_config('application_name', translate(ssn, '0123456789', 'abcdefghij'), false) FROM customers",
    ] {
        for extended in [false, true] {
            // A change is reported only when the value differs.
            raw.simple("SET application_name = 'before'");
            let bytes = if extended {
                raw.extended(sql, false)
            } else {
                raw.simple(sql)
            };
            assert_no_leak(&bytes, sql);
            // Either the channel message came, scrubbed, or the statement
            // was refused as a whole; nothing else.
            let channel = messages(&bytes)
                .iter()
                .any(|(t, body)| matches!(t, b'A' | b'S') && contains(body, "hidden by Sluice"));
            assert!(
                channel || contains(&bytes, "C42501"),
                "{sql}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        // Also in a transaction: the notification comes at COMMIT.
        assert!(!contains(&raw.simple("BEGIN"), "SERROR"));
        let bytes = raw.simple(sql);
        assert_no_leak(&bytes, sql);
        let bytes = raw.simple("COMMIT");
        assert_no_leak(&bytes, &format!("COMMIT after {sql}"));
    }
    // (`SHOW application_name` afterwards is a read of the setting, not a
    // channel: refusing the write itself is the lineage check's, #15 item 5.)
}

/// The session's catalog caches what it looked up (views by name, a
/// view's definition, which functions are user-defined). A view or a
/// function that appears or changes after the lookup — created in the same
/// session, or by another session through another pod or straight on the
/// server — must still be masked: a result whose columns are not all plain
/// table columns is planned on a fresh lookup.
#[tokio::test]
async fn views_and_functions_changed_after_a_lookup_are_masked() {
    let sidecar = setup("mask_view_changes").await;
    let pg = server();
    let admin = connect(&pg.admin_url(&db_name("mask_view_changes"))).await;
    admin
        .batch_execute("CREATE VIEW v_replaced AS SELECT id, name FROM customers;")
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    // Looked up before: names that are no views yet (refused by the server,
    // whose errors are scrubbed with the catalog's help), a clean view, a
    // function that does not exist yet.
    for sql in [
        "SELECT * FROM public.v_same_session",
        "SELECT * FROM v_other_session",
        "SELECT id, name FROM public.v_replaced",
        "SELECT f_late(name) FROM customers",
        "INSERT INTO orders (id) SELECT u::int FROM v_other_session",
    ] {
        raw.simple(sql);
    }
    // Created in this session, and by another one.
    let bytes = raw.simple("CREATE VIEW v_same_session AS SELECT id, ssn FROM customers");
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    admin
        .batch_execute(
            "CREATE VIEW v_other_session AS SELECT id, upper(ssn) AS u FROM customers;
             CREATE OR REPLACE VIEW v_replaced AS SELECT id, name, ssn AS extra FROM customers;
             CREATE FUNCTION f_late(text) RETURNS text LANGUAGE sql AS 'SELECT $1';",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM public.v_same_session",
        "SELECT ssn FROM public.v_same_session",
        "SELECT lower(ssn) FROM public.v_same_session",
        "SELECT * FROM v_other_session",
        "SELECT reverse(u) FROM v_other_session",
        "SELECT * FROM public.v_replaced",
        "SELECT extra || '' FROM public.v_replaced",
        "SELECT f_late(ssn) FROM customers",
        "COPY (SELECT id, u FROM v_other_session) TO STDOUT",
        "COPY (SELECT extra FROM public.v_replaced) TO STDOUT",
    ] {
        assert_masked_answers(&mut raw, sql, !sql.starts_with("COPY"));
    }
    // An error that quotes a value (`invalid input syntax for type integer:
    // "123-45-6789"`) and comes without a result (no RowDescription to plan
    // from) is scrubbed: the same text was judged before the view existed,
    // and that judgement must not stand.
    let sql = "INSERT INTO orders (id) SELECT u::int FROM v_other_session";
    let bytes = raw.simple(sql);
    assert!(
        contains(&bytes, "SERROR"),
        "{sql}: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert_no_leak(&bytes, sql);
}

#[tokio::test]
async fn masked_values_are_counted_in_audit_and_metrics() {
    let sidecar = setup("mask_audit").await;
    let c = sidecar.connect().await;
    c.simple_query("SELECT ssn FROM customers").await.unwrap();
    drop(c);
    sidecar
        .audit_events_until("sessionEnd", |e| e["type"] == "sessionEnd")
        .await;
    let text = sidecar.audit_text_without_ids();
    for form in ssn_forms() {
        assert!(!text.contains(&form), "audit leaked {form}");
    }
    let events = sidecar.audit_events();
    let result = events
        .iter()
        .find(|e| e["type"] == "result")
        .expect("result event");
    assert_eq!(result["outcome"]["masked"], 1, "{result}");
    // And in the metrics: one series for the Connection, counting that value.
    let metrics = sidecar.metrics().await;
    let counted: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_masked_values_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        counted,
        vec![1.0],
        "sluice_masked_values_total in\n{metrics}"
    );
}

/// A setting a function another role defined set from a masked column
/// (`set_config('my.x', ssn, false)` in its body, out of Sluice's sight):
/// `SHOW my.x` and `SHOW ALL` read it back masked, as `current_setting`
/// does; built-in settings read as they are. Before, `SHOW my.x` gave the
/// SSN in clear.
#[tokio::test]
async fn custom_settings_set_by_functions_are_shown_masked() {
    let test = "masking_custom_settings";
    let sidecar = setup(test).await;
    let admin = connect(&server().admin_url(&db_name(test))).await;
    admin
        .batch_execute(
            "CREATE FUNCTION keep_ssn() RETURNS int LANGUAGE sql AS $$ \
             SELECT set_config('my.x', (SELECT ssn FROM customers LIMIT 1), false); SELECT 1 $$",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    let ran = raw.simple("SELECT keep_ssn()");
    assert!(
        !contains(&ran, "SERROR"),
        "{}",
        String::from_utf8_lossy(&ran)
    );
    for sql in ["SHOW my.x", "SHOW \"my.x\"", "SHOW ALL"] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert_no_leak(&bytes, sql);
            assert!(
                contains(&bytes, "[redacted]"),
                "{sql}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    let bytes = raw.simple("SHOW search_path");
    assert!(
        contains(&bytes, "public") && !contains(&bytes, "[redacted]"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}
