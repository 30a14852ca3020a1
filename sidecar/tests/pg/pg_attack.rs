//! The PostgreSQL plane's adversarial corpus (#15): variants of the issue's
//! classes that the other test files do not cover, each seeding PII and
//! proving it never reaches the client (not in what a driver decodes, not
//! anywhere in the raw bytes) or that the statement is refused.
//!
//! The masking rule here names one column only (`customers.ssn`) and no
//! detector can recognise its values: what reaches the client unmasked is
//! a leak of the column plan itself, not something a detector happened to
//! catch on the way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SSN: &str = "123-45-6789";

/// Every form of the SSN a leak could take.
fn ssn_forms() -> Vec<String> {
    vec![
        SSN.to_string(),
        "123456789".to_string(),
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

const POLICY: &str = r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

async fn setup(test: &str, sql: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text);
             INSERT INTO customers VALUES (1, 'Alice', '{SSN}');
             {sql}"
        ))
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    );
    (sidecar, admin)
}

/// Parse of statement `name`, no parameter types.
fn parse_named(name: &str, sql: &str) -> (u8, Vec<u8>) {
    let mut b = name.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.extend_from_slice(&[0, 0, 0]);
    (b'P', b)
}

/// Bind of the unnamed portal to statement `name`, results in `format`.
fn bind_named(name: &str, format: u8) -> (u8, Vec<u8>) {
    let mut b = vec![0];
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 0, format]);
    (b'B', b)
}

/// Every way a statement's answer reaches a client here: simple, extended
/// (text and binary, parsed anew each time), and a statement prepared
/// under `name` before (bound and executed in text and in binary).
fn answers(raw: &mut RawClient, sql: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("simple".to_string(), raw.simple(sql)),
        ("extended text".to_string(), raw.extended(sql, false)),
        ("extended binary".to_string(), raw.extended(sql, true)),
    ];
    for format in [0, 1] {
        raw.send(&[
            bind_named(name, format),
            frontend::execute(),
            frontend::sync(),
        ]);
        out.push((
            format!("prepared {name}, format {format}"),
            raw.read_until_ready(),
        ));
    }
    out
}

/// A statement answered (rows or an error) before a catalog change and
/// judged then; the change; the same statement after it. Errors quote the
/// value they choke on (`invalid input syntax for type integer: "…"`).
struct Staleness {
    /// Run by the admin before the session starts.
    before: &'static str,
    sql: &'static str,
    /// Run by the admin (another session) between the two runs.
    change: &'static str,
    /// Rows, or an error, come back.
    error: bool,
}

const STALENESS: &[Staleness] = &[
    // `CREATE OR REPLACE VIEW` keeps the view's OID, column names and
    // types: the same RowDescription as before.
    Staleness {
        before: "CREATE VIEW v_col AS SELECT id, name AS x FROM customers;",
        sql: "SELECT x FROM v_col",
        change: "CREATE OR REPLACE VIEW v_col AS SELECT id, ssn AS x FROM customers;",
        error: false,
    },
    Staleness {
        before: "CREATE VIEW v_star AS SELECT id, name AS x FROM customers;",
        sql: "SELECT * FROM v_star",
        change: "CREATE OR REPLACE VIEW v_star AS SELECT id, ssn AS x FROM customers;",
        error: false,
    },
    Staleness {
        before: "CREATE VIEW v_expr AS SELECT id, name AS x FROM customers;",
        sql: "SELECT upper(x) FROM v_expr",
        change: "CREATE OR REPLACE VIEW v_expr AS SELECT id, ssn AS x FROM customers;",
        error: false,
    },
    // A view over a replaced view: the outer one is unchanged.
    Staleness {
        before: "CREATE VIEW v_inner AS SELECT id, name AS x FROM customers;
                 CREATE VIEW v_outer AS SELECT x FROM v_inner;",
        sql: "SELECT x FROM v_outer",
        change: "CREATE OR REPLACE VIEW v_inner AS SELECT id, ssn AS x FROM customers;",
        error: false,
    },
    // A table replaced by a view of the same name, read through an
    // expression (OID 0 both times).
    Staleness {
        before: "CREATE TABLE t_expr (x text); INSERT INTO t_expr VALUES ('plain');",
        sql: "SELECT lower(x) FROM t_expr",
        change: "DROP TABLE t_expr; CREATE VIEW t_expr AS SELECT ssn AS x FROM customers;",
        error: false,
    },
    Staleness {
        before: "CREATE TABLE t_cte (x text); INSERT INTO t_cte VALUES ('plain');",
        sql: "WITH w AS (SELECT x FROM t_cte) SELECT x || '' FROM w",
        change: "DROP TABLE t_cte; CREATE VIEW t_cte AS SELECT ssn AS x FROM customers;",
        error: false,
    },
    // A user-defined function replaced (held: always masked whole).
    Staleness {
        before: "CREATE FUNCTION f_late() RETURNS text LANGUAGE sql AS $$SELECT 'plain'$$;",
        sql: "SELECT f_late()",
        change: "CREATE OR REPLACE FUNCTION f_late() RETURNS text LANGUAGE sql
                   AS $$SELECT ssn FROM customers LIMIT 1$$;",
        error: false,
    },
    // Errors: judged "reads no masked column" before the change.
    Staleness {
        before: "CREATE TABLE t_err (x text); INSERT INTO t_err VALUES ('plain');",
        sql: "SELECT 1 FROM t_err WHERE x::int > 0",
        change: "DROP TABLE t_err; CREATE VIEW t_err AS SELECT ssn AS x FROM customers;",
        error: true,
    },
    Staleness {
        before: "CREATE VIEW v_err AS SELECT id, name AS x FROM customers;",
        sql: "SELECT x::int FROM v_err",
        change: "CREATE OR REPLACE VIEW v_err AS SELECT id, ssn AS x FROM customers;",
        error: true,
    },
    Staleness {
        before: "CREATE VIEW v_err_date AS SELECT id, name AS x FROM customers;",
        sql: "SELECT id FROM v_err_date WHERE x::date IS NULL",
        change: "CREATE OR REPLACE VIEW v_err_date AS SELECT id, ssn AS x FROM customers;",
        error: true,
    },
];

/// What a statement's answer was planned from (is it masked, may its error
/// texts quote a masked value) must not outlive a change of what its names
/// are: a view replaced with the same columns, a table replaced by a view,
/// in another session. Every answer after the change is planned from what
/// the names are then: simple, extended, and a statement prepared before
/// the change and bound after it.
#[tokio::test]
async fn answers_judged_before_a_catalog_change_are_judged_again() {
    let before: String = STALENESS.iter().map(|c| c.before).collect();
    let (sidecar, admin) = setup("attack_staleness", &before).await;
    let mut raw = RawClient::connect(sidecar.port);
    for (i, case) in STALENESS.iter().enumerate() {
        let name = format!("s{i}");
        raw.send(&[parse_named(&name, case.sql), frontend::sync()]);
        let parsed = raw.read_until_ready();
        assert!(
            !contains(&parsed, "SERROR"),
            "{}: {}",
            case.sql,
            String::from_utf8_lossy(&parsed)
        );
        // Before: values pass (nothing masked yet), or the error quotes one.
        for (how, bytes) in answers(&mut raw, case.sql, &name) {
            assert_eq!(
                contains(&bytes, "SERROR"),
                case.error,
                "{} ({how}), before: {}",
                case.sql,
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    for case in STALENESS {
        admin.batch_execute(case.change).await.unwrap();
    }
    for (i, case) in STALENESS.iter().enumerate() {
        let name = format!("s{i}");
        for (how, bytes) in answers(&mut raw, case.sql, &name) {
            let what = format!("{} ({how}), after the change", case.sql);
            assert_no_leak(&bytes, &what);
            assert_eq!(
                contains(&bytes, "SERROR"),
                case.error,
                "{what}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// Values read through a view or a user-defined function of a masked column
/// and written where the workload can read them back, or handed to a
/// side-effecting function, are refused (the statement alone reads no
/// masked column: only the catalog tells). Statements that read the view
/// but store nothing of it still run. Nothing of the SSN is in the tables,
/// settings or sequences afterwards.
#[tokio::test]
async fn masked_values_stored_through_views_and_functions_are_refused() {
    let (sidecar, admin) = setup(
        "attack_launder_views",
        "CREATE TABLE notes (id int, t text);
         INSERT INTO notes VALUES (1, 'first');
         CREATE VIEW v_ssn AS SELECT id, ssn AS x FROM customers;
         CREATE VIEW v_nested AS SELECT id, upper(x) AS y FROM v_ssn;
         CREATE SCHEMA other;
         CREATE VIEW other.v_far AS SELECT id, ssn AS x FROM customers;
         CREATE FUNCTION f_ssn() RETURNS text LANGUAGE sql AS $$SELECT ssn FROM customers LIMIT 1$$;
         CREATE SEQUENCE seq;",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    assert!(!contains(&raw.simple("LISTEN c"), "SERROR"));
    for sql in [
        "INSERT INTO notes SELECT id, x FROM v_ssn",
        "INSERT INTO notes SELECT id, y FROM v_nested",
        "INSERT INTO notes SELECT id, x FROM other.v_far",
        "INSERT INTO notes VALUES (2, (SELECT x FROM v_ssn LIMIT 1))",
        "INSERT INTO notes VALUES (3, f_ssn())",
        "UPDATE notes SET t = (SELECT translate(x, '-', '') FROM v_ssn LIMIT 1)",
        "UPDATE notes SET t = f_ssn()",
        "UPDATE notes n SET t = v.x FROM v_ssn v WHERE v.id = n.id",
        "MERGE INTO notes n USING v_ssn v ON n.id = v.id WHEN MATCHED THEN UPDATE SET t = v.x",
        "CREATE TABLE stolen AS SELECT x FROM v_ssn",
        "SELECT x INTO stolen2 FROM v_ssn",
        "WITH w AS (INSERT INTO notes SELECT id, x FROM v_ssn RETURNING 1) SELECT count(*) FROM w",
        "SELECT set_config('application_name', x, false) FROM v_ssn",
        "SELECT set_config('application_name', f_ssn(), false)",
        "SELECT pg_notify('c', x) FROM v_ssn",
        "SELECT setval('seq', replace(x, '-', '')::bigint) FROM v_ssn",
        "PREPARE p_launder AS INSERT INTO notes SELECT id, x FROM v_ssn",
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert_no_leak(&bytes, sql);
            assert!(
                contains(&bytes, "C42501") && contains(&bytes, "refused by Sluice"),
                "{sql}: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // Reading the view without storing its values runs.
    for sql in [
        "INSERT INTO notes SELECT id, 'constant' FROM v_ssn",
        "UPDATE notes SET t = 'y' WHERE id IN (SELECT id FROM v_ssn)",
        "INSERT INTO notes VALUES (4, upper('z'))",
    ] {
        let bytes = raw.simple(sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let stored = admin
        .query_one(
            "SELECT coalesce(string_agg(t, ','), '') || ',' || \
                    (SELECT last_value::text FROM seq) || ',' || \
                    (SELECT count(*) FROM pg_class WHERE relname IN ('stolen', 'stolen2'))::text \
             FROM notes",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_no_leak(stored.as_bytes(), "what the refused statements stored");
    assert!(stored.ends_with(",1,0"), "{stored}");
    let shown = raw.simple("SHOW application_name");
    assert_no_leak(&shown, "SHOW application_name");
}

/// A write prepared while the view it reads was clean, run after the view
/// was replaced to read a masked column: SQL `PREPARE`/`EXECUTE`, a second
/// `PREPARE` of the same name that the server refuses (the first stays),
/// `EXECUTE` of a protocol-level statement, and that statement bound again.
/// Each run is refused, and nothing of the SSN is stored.
#[tokio::test]
async fn writes_prepared_before_a_view_changed_are_judged_when_run() {
    let (sidecar, admin) = setup(
        "attack_launder_prepared",
        "CREATE TABLE notes (id int, t text);
         CREATE VIEW v_late AS SELECT id, name AS x FROM customers;",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    let write = "INSERT INTO notes SELECT id, x FROM v_late";
    for sql in [
        format!("PREPARE p_sql AS {write}"),
        format!("PREPARE \"P_Quoted\" AS {write}"),
        format!("PREPARE p_twice AS {write}"),
    ] {
        let bytes = raw.simple(&sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Refused by the server (the name exists): p_twice stays the write.
    let bytes = raw.simple("PREPARE p_twice AS SELECT 1");
    assert!(
        contains(&bytes, "C42P05"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    raw.send(&[parse_named("s_proto", write), frontend::sync()]);
    let bytes = raw.read_until_ready();
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    admin
        .batch_execute("CREATE OR REPLACE VIEW v_late AS SELECT id, ssn AS x FROM customers;")
        .await
        .unwrap();
    for sql in [
        "EXECUTE p_sql",
        "EXECUTE P_SQL",
        "EXECUTE \"P_Quoted\"",
        "EXECUTE p_twice",
        "EXECUTE s_proto",
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                contains(&bytes, "C42501") && contains(&bytes, "refused by Sluice"),
                "{sql}: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // Parsed again under its name: the server refuses that (42P05) and
    // keeps the write, so Sluice must not take the new text for it.
    raw.send(&[parse_named("s_proto", "SELECT 1"), frontend::sync()]);
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "C42P05"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    raw.send(&[
        bind_named("s_proto", 0),
        frontend::execute(),
        frontend::sync(),
    ]);
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "C42501"),
        "Bind/Execute s_proto: not refused: {}",
        String::from_utf8_lossy(&bytes)
    );
    // A statement of SQL PREPARE, bound through the protocol.
    for name in ["p_sql", "p_twice"] {
        raw.send(&[bind_named(name, 0), frontend::execute(), frontend::sync()]);
        let bytes = raw.read_until_ready();
        assert!(
            contains(&bytes, "C42501"),
            "Bind/Execute {name}: not refused: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // A Parse the server failed leaves no statement: the same name parses
    // again (as drivers that name statements by their text do).
    raw.send(&[
        parse_named("s_retry", "SELECT * FROM not_yet"),
        frontend::sync(),
    ]);
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "C42P01"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    admin
        .batch_execute("CREATE TABLE not_yet (id int);")
        .await
        .unwrap();
    raw.send(&[
        parse_named("s_retry", "SELECT * FROM not_yet"),
        frontend::sync(),
    ]);
    let bytes = raw.read_until_ready();
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let stored = admin
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(stored, 0, "a refused write stored rows");
}

/// Statements that change `standard_conforming_strings` or `client_encoding`
/// without saying so in their text: a function, a trigger, a procedure.
const HIDDEN_SETTERS: &str = "
    CREATE TABLE t (id int);
    CREATE FUNCTION f_scs_off() RETURNS text LANGUAGE sql
      AS $$SELECT set_config('standard_conforming_strings', 'off', false)$$;
    CREATE FUNCTION f_sjis() RETURNS text LANGUAGE sql
      AS $$SELECT set_config('client_encoding', 'SJIS', false)$$;
    CREATE PROCEDURE p_scs_off() LANGUAGE sql
      AS $$SELECT set_config('standard_conforming_strings', 'off', false)$$;
    CREATE TABLE trig (id int);
    CREATE FUNCTION trg_scs_off() RETURNS trigger LANGUAGE plpgsql
      AS $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN NEW; END$$;
    CREATE TRIGGER trig_scs BEFORE INSERT ON trig FOR EACH ROW EXECUTE FUNCTION trg_scs_off();";

/// Read with `standard_conforming_strings` on (Sluice): one string literal.
/// Off (the server): a literal, then `lower(ssn)` of customers (or a DROP).
const SCS_SMUGGLED_READ: &str = r"SELECT 'a\'', lower(ssn) FROM customers --'";
const SCS_SMUGGLED_DROP: &str = r"SELECT 'a\'' ; DROP TABLE t; --'";
/// Read as UTF-8 (Sluice): one E'' literal. As SJIS (the server): U+0095's
/// second byte 0x95 and the backslash are one character (表), so the quote
/// after it ends the literal.
const SJIS_SMUGGLED_READ: &str = "SELECT E'\u{95}\\', lower(ssn) FROM customers --'";
const SJIS_SMUGGLED_DROP: &str = "SELECT E'\u{95}\\' ; DROP TABLE t; --'";

/// A statement that changes the settings through user code, pipelined with
/// a statement the server then reads otherwise than Sluice did: in one
/// write, as two simple queries, in one extended-protocol group, and as two
/// groups. The second statement is decided on the server's reading
/// (refused: the session is in a state Sluice does not model) or refused
/// for coming after an Execute in its group; no masked value comes back,
/// and the deny rule's DROP TABLE never runs.
#[tokio::test]
async fn settings_changed_by_user_code_do_not_change_a_pipelined_reading() {
    let pg = server();
    let db = db_name("attack_hidden_setters");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text);
             INSERT INTO customers VALUES (1, 'Alice', '{SSN}');
             {HIDDEN_SETTERS}"
        ))
        .await
        .unwrap();
    let policy_lines = format!(
        "{POLICY}  rules:\n    - name: no-drops\n      match: {{statements: [drop]}}\n      action: deny\n"
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(&policy_lines)),
        "shop/report-job",
    );
    let scs = [SCS_SMUGGLED_READ, SCS_SMUGGLED_DROP];
    let sjis = [SJIS_SMUGGLED_READ, SJIS_SMUGGLED_DROP];
    let cases = [
        ("SELECT f_scs_off()", scs),
        ("INSERT INTO trig VALUES (1)", scs),
        ("CALL p_scs_off()", scs),
        ("SELECT f_sjis()", sjis),
    ];
    for (setter, smuggled) in cases {
        for smuggle in smuggled {
            let what = format!("{setter} then {smuggle:?}");
            // Two simple queries in one write.
            let mut raw = RawClient::connect(sidecar.port);
            raw.send(&[frontend::query(setter), frontend::query(smuggle)]);
            let mut bytes = raw.read_until_ready();
            bytes.extend(raw.read_until_ready());
            assert_no_leak(&bytes, &format!("{what}, simple"));
            assert!(
                contains(&bytes, "C0A000"),
                "{what}, simple: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
            // The extended protocol takes one statement per Parse.
            if smuggle.contains("DROP") {
                continue;
            }
            // One group, and two groups, in one write.
            for groups in [1, 2] {
                let mut raw = RawClient::connect(sidecar.port);
                let mut messages = vec![
                    frontend::parse(setter),
                    frontend::bind(),
                    frontend::execute(),
                ];
                if groups == 2 {
                    messages.push(frontend::sync());
                }
                messages.extend([
                    frontend::parse(smuggle),
                    frontend::bind(),
                    frontend::execute(),
                    frontend::sync(),
                ]);
                raw.send(&messages);
                let mut bytes = raw.read_until_ready();
                if groups == 2 {
                    bytes.extend(raw.read_until_ready());
                }
                assert_no_leak(&bytes, &format!("{what}, extended in {groups} groups"));
                assert!(
                    contains(&bytes, "C0A000"),
                    "{what}, extended in {groups} groups: not refused: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
        let exists: bool = admin
            .query_one("SELECT to_regclass('public.t') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(exists, "{setter}: the smuggled DROP TABLE ran");
    }
}

/// Bind plans the statement, and planning evaluates immutable functions of
/// constants: an application function declared `IMMUTABLE` that raises (or
/// notices) what it read does so in the answer to Bind, not to Execute.
/// Those texts are scrubbed like the statement's own.
#[tokio::test]
async fn errors_and_notices_raised_while_planning_at_bind_are_scrubbed() {
    let (sidecar, _admin) = setup(
        "attack_bind_planning",
        "CREATE FUNCTION leak_error() RETURNS int IMMUTABLE LANGUAGE plpgsql AS
           $$BEGIN RAISE EXCEPTION 'value %', (SELECT ssn FROM customers LIMIT 1); END$$;
         CREATE FUNCTION leak_notice() RETURNS int IMMUTABLE LANGUAGE plpgsql AS
           $$BEGIN RAISE NOTICE 'value %', (SELECT ssn FROM customers LIMIT 1); RETURN 1; END$$;
         CREATE FUNCTION leak_warning(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
           $$BEGIN RAISE WARNING USING MESSAGE = (SELECT ssn FROM customers LIMIT 1), ERRCODE = '01007'; RETURN $1; END$$;",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    for (sql, code) in [
        ("SELECT leak_error()", "P0001"),
        ("SELECT leak_notice()", "00000"),
        ("SELECT 1 WHERE leak_warning(2) = 2", "01007"),
        (
            "SELECT id FROM customers WHERE id = leak_warning(1)",
            "01007",
        ),
    ] {
        for bytes in [
            raw.simple(sql),
            raw.extended(sql, false),
            raw.extended(sql, true),
        ] {
            assert_no_leak(&bytes, sql);
            assert!(
                contains(&bytes, &format!("C{code}\0")),
                "{sql}: PostgreSQL's {code} did not arrive: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        // Prepared once, bound again (a custom plan each time).
        raw.send(&[parse_named("p_plan", sql), frontend::sync()]);
        raw.read_until_ready();
        for _ in 0..2 {
            raw.send(&[
                bind_named("p_plan", 0),
                frontend::execute(),
                frontend::sync(),
            ]);
            let bytes = raw.read_until_ready();
            assert_no_leak(&bytes, &format!("{sql}, prepared"));
        }
        raw.simple("DEALLOCATE p_plan");
    }
}

/// Rows planned before a view changed and read after it: a cursor `WITH
/// HOLD` keeps its rows as the view was at `DECLARE`, while the server
/// names the view's column as their origin. A view that read the SSN then
/// and reads a clean column now must not make those rows pass. (A portal
/// or a cursor without HOLD keeps the view locked: no session can replace
/// it meanwhile, and its own is refused by the server.)
#[tokio::test]
async fn rows_planned_before_a_view_changed_are_masked_as_planned() {
    let (sidecar, admin) = setup(
        "attack_cursor_staleness",
        "CREATE VIEW v_cur AS SELECT id, ssn AS x FROM customers;",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "DECLARE c_hold CURSOR WITH HOLD FOR SELECT x FROM v_cur",
        "DECLARE c_hold_star CURSOR WITH HOLD FOR SELECT * FROM v_cur",
    ] {
        let bytes = raw.simple(sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    admin
        .batch_execute("CREATE OR REPLACE VIEW v_cur AS SELECT id, name AS x FROM customers;")
        .await
        .unwrap();
    for sql in [
        "FETCH 10 FROM c_hold",
        "FETCH FORWARD 10 FROM c_hold_star",
        "FETCH BACKWARD 10 FROM c_hold",
    ] {
        let bytes = raw.simple(sql);
        assert_no_leak(&bytes, sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    for sql in ["FETCH FIRST FROM c_hold_star", "FETCH FIRST FROM c_hold"] {
        let bytes = raw.extended(sql, false);
        assert_no_leak(&bytes, &format!("{sql}, extended"));
    }
}

/// Another backend's notification carries what that backend (or an
/// application trigger it fired) put in it; the statement at hand in this
/// session says nothing about it. A trigger `pg_notify('c', NEW.ssn)` fired
/// by another session's UPDATE reaches a listener at the end of whatever
/// it runs then (before its ReadyForQuery), judged so far by that
/// statement: a plain read of an unmasked table passed the payload.
#[tokio::test]
async fn other_backends_notifications_do_not_carry_masked_values() {
    let (sidecar, admin) = setup(
        "attack_foreign_notify",
        "CREATE FUNCTION tell() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN PERFORM pg_notify('c', NEW.ssn); RETURN NEW; END$$;
         CREATE TRIGGER tell AFTER UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION tell();
         CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 3000) g;",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    assert!(!contains(&raw.simple("LISTEN c"), "SERROR"));
    // A plain read long enough for the other session's UPDATE to commit
    // while it runs.
    let slow = "SELECT a.id FROM big a CROSS JOIN big b OFFSET 9000000";
    for _ in 0..2 {
        raw.send(&[frontend::query(slow)]);
        admin
            .batch_execute("UPDATE customers SET name = name WHERE id = 1")
            .await
            .unwrap();
        let mut bytes = raw.read_until_ready();
        // Delivered at the next statement's end if not at this one's.
        bytes.extend(raw.simple("SELECT 2"));
        assert_no_leak(&bytes, slow);
        assert!(
            contains(&bytes, "hidden by Sluice"),
            "no notification came: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// Reads whose values come from somewhere the column plan must not miss:
/// plans that print the constants the planner folded (an application's
/// `IMMUTABLE` function reading the masked column), and other shapes.
#[tokio::test]
async fn reads_of_values_folded_or_printed_elsewhere_are_masked() {
    let (sidecar, _admin) = setup(
        "attack_folded",
        "CREATE FUNCTION f_imm() RETURNS text IMMUTABLE LANGUAGE sql
           AS $$SELECT ssn FROM customers LIMIT 1$$;
         CREATE VIEW v_imm AS SELECT id, f_imm() AS x FROM customers;",
    )
    .await;
    let mut raw = RawClient::connect(sidecar.port);
    let bytes = raw.simple("PREPARE p_imm AS SELECT f_imm()");
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    for sql in [
        "EXPLAIN VERBOSE EXECUTE p_imm",
        "EXPLAIN VERBOSE SELECT f_imm()",
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM customers WHERE name = f_imm()",
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM v_imm",
        "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) SELECT upper(f_imm())",
        "SELECT f_imm()",
        "SELECT * FROM v_imm",
        "SELECT ssn FROM customers AS c(a, b, s)",
        "SELECT s FROM customers AS c(a, b, s)",
        "TABLE customers",
        "SELECT c FROM customers c",
        "SELECT (c).ssn FROM (SELECT c FROM customers c) sub",
        "SELECT j.value FROM customers c, LATERAL jsonb_each_text(to_jsonb(c)) j",
    ] {
        for bytes in [
            raw.simple(sql),
            raw.extended(sql, false),
            raw.extended(sql, true),
        ] {
            assert_no_leak(&bytes, sql);
        }
    }
}

/// Server-side code the workload defines runs out of the sidecar's sight: a
/// function (or procedure) whose body copies `customers.ssn` into a table,
/// a trigger that does so on every later write. Under column masking each
/// definition is refused, through simple and extended query, also when it
/// is run as text by `query_to_xml`; nothing is created and nothing stored.
/// (`CREATE PROCEDURE … AS $$…$$` does not parse: `onParseError` denies it
/// here.) Without masking rules the same definitions run.
#[tokio::test]
async fn server_side_code_defined_under_masking_is_refused() {
    let (sidecar, admin) = setup(
        "attack_define_code",
        "CREATE TABLE notes (id int, t text);
         CREATE TABLE t2 (a int);
         CREATE FUNCTION admin_trg() RETURNS trigger LANGUAGE plpgsql
           AS $$BEGIN RETURN NEW; END$$;",
    )
    .await;
    let copy = "INSERT INTO notes SELECT id, ssn FROM customers";
    let definitions = [
        format!("CREATE FUNCTION steal() RETURNS int LANGUAGE sql AS $$ {copy}; SELECT 1 $$"),
        format!(
            "CREATE OR REPLACE FUNCTION admin_trg() RETURNS trigger LANGUAGE plpgsql \
             AS $$BEGIN {copy}; RETURN NEW; END$$"
        ),
        format!("CREATE PROCEDURE steal_p() LANGUAGE sql AS $$ {copy} $$"),
        "CREATE TRIGGER tt AFTER INSERT ON t2 FOR EACH ROW EXECUTE FUNCTION admin_trg()"
            .to_string(),
        "SELECT query_to_xml('CREATE FUNCTION f2() RETURNS int LANGUAGE sql AS ''SELECT 1''', \
         true, false, '')"
            .to_string(),
    ];
    let mut raw = RawClient::connect(sidecar.port);
    for sql in &definitions {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                contains(&bytes, "C42501") && contains(&bytes, "by Sluice"),
                "{sql}: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // Had any run, these would store the SSN.
    for sql in [
        "SELECT steal()",
        "CALL steal_p()",
        "INSERT INTO t2 VALUES (1)",
    ] {
        raw.simple(sql);
    }
    let stored = admin
        .query_one(
            "SELECT coalesce(string_agg(t, ','), '') || ',' || \
                    (SELECT count(*) FROM pg_proc WHERE proname IN ('steal', 'steal_p', 'f2'))::text || ',' || \
                    (SELECT count(*) FROM pg_trigger WHERE tgname = 'tt')::text || ',' || \
                    (SELECT prosrc FROM pg_proc WHERE proname = 'admin_trg') \
             FROM notes",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_no_leak(stored.as_bytes(), "what the refused definitions stored");
    assert_eq!(stored, ",0,0,BEGIN RETURN NEW; END");
    // The refusal comes from the masking rules: without them, code is defined.
    let db = db_name("attack_define_code");
    let unmasked = Sidecar::start(
        &manifests(
            server(),
            &db,
            ADMIN,
            "disable",
            &policy("  defaultAction: allow\n"),
        ),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(unmasked.port);
    let bytes = raw.simple("CREATE FUNCTION plain() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$");
    assert!(
        contains(&bytes, "CREATE FUNCTION"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// The masking rules match names: DDL that renames a masked column or its
/// table, or adds a column generated from a masked one, would make the same
/// values readable unmasked under another name. Each is refused (simple and
/// extended query) and the names stay as they were; a rename of an unmasked
/// column runs.
#[tokio::test]
async fn ddl_that_renames_or_derives_masked_columns_is_refused() {
    let (sidecar, admin) = setup("attack_ddl_names", "").await;
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "ALTER TABLE customers RENAME COLUMN ssn TO s2",
        "ALTER TABLE customers RENAME ssn TO s3",
        "ALTER TABLE customers RENAME TO k1",
        "ALTER TABLE public.customers RENAME TO k2",
        "ALTER TABLE customers ADD COLUMN leak text GENERATED ALWAYS AS (ssn) STORED",
        "ALTER TABLE customers ADD COLUMN leak2 text GENERATED ALWAYS AS (translate(customers.ssn, '-', '')) STORED",
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                contains(&bytes, "C42501") && contains(&bytes, "refused by Sluice"),
                "{sql}: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let read = raw.simple("SELECT * FROM customers");
        assert_no_leak(&read, sql);
    }
    let bytes = raw.simple("ALTER TABLE customers RENAME COLUMN name TO full_name");
    assert!(
        contains(&bytes, "ALTER TABLE"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let columns = admin
        .query_one(
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 'public.customers'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(columns, "id,full_name,ssn");
}

/// Partitions and inheritance children hold their parent's rows under
/// another name (and a parent reads its children's): a rule naming one
/// masks the same column read through the other, at any depth, in rows,
/// expressions, views, COPY and cursors, simple and extended; writing such
/// a value elsewhere is refused as laundering. Before, a rule on
/// `customers.ssn` left `SELECT * FROM customers_p1` raw.
#[tokio::test]
async fn partitions_and_inheritance_children_are_masked_like_their_relatives() {
    let pg = server();
    let db = db_name("attack_inheritance");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int, name text, ssn text) PARTITION BY RANGE (id);
             CREATE TABLE customers_p1 PARTITION OF customers FOR VALUES FROM (0) TO (100);
             CREATE TABLE customers_p2 PARTITION OF customers FOR VALUES FROM (100) TO (200)
               PARTITION BY RANGE (id);
             CREATE TABLE customers_p2a PARTITION OF customers_p2 FOR VALUES FROM (100) TO (150);
             INSERT INTO customers VALUES (1, 'Alice', '{SSN}'), (120, 'Bob', '{SSN}');
             CREATE TABLE people (id int, ssn text);
             CREATE TABLE people_child () INHERITS (people);
             INSERT INTO people_child VALUES (1, '{SSN}');
             CREATE TABLE family (id int, secret text);
             CREATE TABLE kid () INHERITS (family);
             INSERT INTO kid VALUES (1, '{SSN}');
             CREATE TABLE notes (id int, t text);
             CREATE VIEW vp AS SELECT id, ssn AS s FROM customers_p1;"
        ))
        .await
        .unwrap();
    let policy = policy(
        r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn", "people.ssn", "kid.secret"]
      strategy: redact"#,
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "SELECT * FROM customers_p1",
        "SELECT upper(ssn) FROM customers_p1",
        "SELECT ssn FROM public.customers_p1",
        "SELECT * FROM customers_p2",
        "SELECT s.ssn || '' FROM customers_p2a s",
        "SELECT * FROM people_child",
        "SELECT * FROM vp",
        "SELECT secret FROM family",
        "SELECT * FROM family",
        "SELECT (SELECT ssn FROM customers_p1 LIMIT 1)",
    ] {
        assert_no_leak(&raw.simple(sql), sql);
        assert_no_leak(&raw.extended(sql, false), sql);
        assert_no_leak(&raw.extended(sql, true), sql);
    }
    for sql in [
        "COPY customers_p1 TO STDOUT",
        "COPY customers_p2a TO STDOUT (FORMAT csv)",
        "COPY (SELECT ssn FROM people_child) TO STDOUT",
        "BEGIN; DECLARE c CURSOR FOR SELECT ssn FROM customers_p1; FETCH ALL FROM c; COMMIT",
    ] {
        assert_no_leak(&raw.simple(sql), sql);
    }
    // tokio-postgres: a prepared statement with a parameter.
    let client = connect(&sidecar.url()).await;
    let rows = client
        .query("SELECT ssn FROM customers_p1 WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "[redacted]");
    // Laundering through a partition is refused like through its table.
    let sql = "INSERT INTO notes SELECT id, ssn FROM customers_p1";
    let bytes = raw.simple(sql);
    assert!(
        contains(&bytes, "C42501") && contains(&bytes, "customers_p1.ssn"),
        "{sql}: {}",
        String::from_utf8_lossy(&bytes)
    );
    // Unmasked columns of a partition stay readable.
    let bytes = raw.simple("SELECT name FROM customers_p1");
    assert!(
        contains(&bytes, "Alice"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// A `schema.table.column` rule matches the schema's name: `ALTER SCHEMA
/// fin RENAME TO fin2` took every masked column of the schema out of it
/// (`SELECT * FROM fin2.acct` returned the SSN raw). Refused, simple and
/// extended; a schema no rule names renames.
#[tokio::test]
async fn schema_renames_that_unmask_are_refused() {
    let pg = server();
    let db = db_name("attack_schema_rename");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA fin; CREATE TABLE fin.acct (id int, ssn text);
             INSERT INTO fin.acct VALUES (1, '{SSN}'); CREATE SCHEMA scratch;"
        ))
        .await
        .unwrap();
    let policy = policy(
        r#"  defaultAction: allow
  masking:
    - columns: ["fin.acct.ssn"]
      strategy: redact"#,
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "ALTER SCHEMA fin RENAME TO fin2",
        "ALTER SCHEMA \"fin\" RENAME TO other",
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                contains(&bytes, "C42501") && contains(&bytes, "renames schema fin"),
                "{sql}: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    assert_no_leak(&raw.simple("SELECT * FROM fin.acct"), "fin.acct");
    let bytes = raw.simple("ALTER SCHEMA scratch RENAME TO scratch2");
    assert!(
        contains(&bytes, "ALTER SCHEMA"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let schemas = admin
        .query_one(
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace \
             WHERE nspname IN ('fin', 'fin2', 'other', 'scratch', 'scratch2')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(schemas, "fin,scratch2");
}

/// A table rule that denies holds for every name the table's rows are
/// reached by: a partition (any depth), an `INHERITS` child or parent, an
/// auto-updatable view (and a view over it). Before, `DELETE FROM cv` and
/// `TRUNCATE customers_p1` ran under a rule denying writes to `customers`.
/// A view whose definition Sluice cannot parse is refused (it cannot tell
/// which table it writes); allow rules are not widened; unrelated tables
/// and reads stay as they were.
#[tokio::test]
async fn table_rules_hold_through_partitions_children_and_views() {
    let pg = server();
    let db = db_name("attack_rules_through");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, name text) PARTITION BY RANGE (id);
             CREATE TABLE customers_p1 PARTITION OF customers FOR VALUES FROM (0) TO (100);
             CREATE TABLE customers_p2 PARTITION OF customers FOR VALUES FROM (100) TO (200)
               PARTITION BY RANGE (id);
             CREATE TABLE customers_p2a PARTITION OF customers_p2 FOR VALUES FROM (100) TO (150);
             INSERT INTO customers VALUES (1, 'a'), (2, 'b'), (120, 'c');
             CREATE VIEW cv AS SELECT * FROM customers;
             CREATE VIEW cvv AS SELECT id, name FROM cv WHERE id > 0;
             CREATE VIEW xv AS SELECT id, xmlelement(name x, name) AS e FROM customers;
             CREATE TABLE family (id int);
             CREATE TABLE kid () INHERITS (family);
             INSERT INTO kid VALUES (1);
             CREATE TABLE notes (id int);
             INSERT INTO notes VALUES (1);",
        )
        .await
        .unwrap();
    let policy = policy(
        r#"  defaultAction: allow
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny
    - name: protect-kids
      match: {statements: [delete], tables: [public.kid]}
      action: deny"#,
    );
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    // The reason names the rule and the name that reaches what it names.
    for (sql, why, through) in [
        (
            "DELETE FROM customers_p1 WHERE id = 1",
            "protect-customers",
            "customers_p1 reaches public.customers",
        ),
        (
            "UPDATE customers_p2a SET name = 'x'",
            "protect-customers",
            "customers_p2a reaches public.customers",
        ),
        (
            "UPDATE customers_p2 SET name = 'x'",
            "protect-customers",
            "customers_p2 reaches public.customers",
        ),
        (
            "TRUNCATE customers_p1",
            "protect-customers",
            "customers_p1 reaches public.customers",
        ),
        (
            "INSERT INTO customers_p1 VALUES (5, 'e')",
            "protect-customers",
            "customers_p1 reaches public.customers",
        ),
        (
            "DELETE FROM cv WHERE id = 2",
            "protect-customers",
            "cv reaches customers",
        ),
        (
            "DELETE FROM public.cvv",
            "protect-customers",
            "public.cvv reaches customers",
        ),
        (
            "DELETE FROM family",
            "protect-kids",
            "family reaches public.kid",
        ),
        ("DELETE FROM xv", "cannot tell which tables", "xv"),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                contains(&bytes, "C42501") && contains(&bytes, why) && contains(&bytes, through),
                "{sql}: not refused by {why} ({through}): {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    let counts = admin
        .query_one(
            "SELECT (SELECT count(*) FROM customers WHERE name <> 'x'), (SELECT count(*) FROM family)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (counts.get::<_, i64>(0), counts.get::<_, i64>(1)),
        (3, 1),
        "a refused write ran"
    );
    // Reads through them, and writes elsewhere, run as before.
    for (sql, tag) in [
        ("SELECT count(*) FROM cvv", "SELECT 1"),
        ("SELECT * FROM customers_p1", "SELECT 2"),
        ("DELETE FROM notes", "DELETE 1"),
    ] {
        let bytes = raw.simple(sql);
        assert!(
            contains(&bytes, tag),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
