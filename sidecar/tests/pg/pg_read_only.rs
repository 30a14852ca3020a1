//! `spec.readOnly` (issue #15 item 7): the upstream session is read-only,
//! enforced by PostgreSQL (`default_transaction_read_only = on` from the
//! session's start), and every way to undo it is refused by the sidecar. A
//! policy that allows only reads then cannot write through a function that
//! deletes, nor through `nextval`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::frontend::*;
use common::*;

/// Allows reads (and the statements clients send around them), denies the rest.
const RULES: &str = r#"  defaultAction: deny
  rules:
    - name: reads
      match: {statements: [select, set, begin, commit, rollback]}
      action: allow
"#;

/// Every form that could turn the session (or its transaction) read-write.
const UNDO: &[&str] = &[
    "SET default_transaction_read_only = off",
    "SET SESSION default_transaction_read_only TO 'off'",
    "SET LOCAL default_transaction_read_only = off",
    "set default_transaction_read_only=false",
    "SET transaction_read_only = off",
    "SET LOCAL transaction_read_only = off",
    "RESET default_transaction_read_only",
    "RESET transaction_read_only",
    "RESET ALL",
    "DISCARD ALL",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config(lower('DEFAULT_TRANSACTION_READ_ONLY'), 'off', false)",
    "SELECT pg_catalog.set_config('transaction_read_only', 'off', true)",
    "SET TRANSACTION READ WRITE",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "BEGIN READ WRITE",
    "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ WRITE",
    "START TRANSACTION READ /* x */ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "UPDATE pg_settings SET setting = 'off' WHERE name = 'default_transaction_read_only'",
    "SET \"default_transaction_read_only\" = off",
    "SET U&\"default_transaction_read_onl\\0079\" = off",
    "DO $$BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); END$$",
    "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
];

async fn setup(test: &str, read_only: bool) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE holds (id int primary key);
             INSERT INTO holds VALUES (1), (2), (3);
             CREATE SEQUENCE s;
             CREATE FUNCTION purge_holds() RETURNS int LANGUAGE plpgsql AS $$
               BEGIN DELETE FROM holds; RETURN 0; END $$;",
        )
        .await
        .unwrap();
    let extra = if read_only {
        format!("{RULES}  readOnly: true\n")
    } else {
        RULES.to_string()
    };
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(&extra)),
        "shop/report-job",
    );
    (sidecar, admin)
}

async fn holds(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one("SELECT count(*) FROM holds", &[])
        .await
        .unwrap()
        .get(0)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The server's own refusal of a write in a read-only transaction.
fn assert_server_refused(bytes: &[u8], what: &str) {
    assert!(contains(bytes, "C25006"), "{what}: {}", text(bytes));
    assert!(
        contains(bytes, "read-only transaction"),
        "{what}: {}",
        text(bytes)
    );
}

/// The sidecar's refusal of an undo, naming the policy and readOnly.
fn assert_undo_refused(bytes: &[u8], what: &str) {
    assert!(contains(bytes, "C25006"), "{what}: {}", text(bytes));
    assert!(contains(bytes, "readOnly"), "{what}: {}", text(bytes));
    assert!(contains(bytes, "\"reporting\""), "{what}: {}", text(bytes));
}

#[tokio::test]
async fn read_only_the_server_refuses_writes_in_functions_and_nextval() {
    let (sidecar, admin) = setup("ro_server", true).await;
    let client = sidecar.connect().await;
    let e = client
        .query_one("SELECT purge_holds()", &[])
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{}",
        message(&e)
    );
    assert!(
        message(&e).contains("read-only transaction"),
        "{}",
        message(&e)
    );
    assert_eq!(holds(&admin).await, 3, "purge_holds() deleted rows");
    let e = client
        .query_one("SELECT nextval('s')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{}",
        message(&e)
    );
    // Inside an explicit transaction too.
    client.batch_execute("BEGIN").await.unwrap();
    let e = client
        .query_one("SELECT purge_holds()", &[])
        .await
        .unwrap_err();
    assert!(
        message(&e).contains("read-only transaction"),
        "{}",
        message(&e)
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    let row = client
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
    // Reads run.
    let row = client
        .query_one("SELECT count(*) FROM holds", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    // psql: the same.
    let (ok, out, err) = psql(sidecar.port, &["-c", "SELECT purge_holds()"]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("read-only transaction"), "{err}");
    assert_eq!(holds(&admin).await, 3);
}

#[tokio::test]
async fn read_only_every_undo_is_refused_simple_extended_and_pipelined() {
    let (sidecar, admin) = setup("ro_undo", true).await;
    for undo in UNDO {
        // Simple protocol, then the write: still refused by the server.
        let mut raw = RawClient::connect(sidecar.port);
        assert_undo_refused(&raw.simple(undo), undo);
        assert_server_refused(&raw.simple("SELECT purge_holds()"), undo);
        // Extended protocol.
        let mut raw = RawClient::connect(sidecar.port);
        assert_undo_refused(&raw.extended(undo, false), undo);
        assert_server_refused(&raw.extended("SELECT purge_holds()", false), undo);
        // Inside a transaction.
        let mut raw = RawClient::connect(sidecar.port);
        assert!(!contains(&raw.simple("BEGIN"), "SERROR"));
        assert_undo_refused(&raw.simple(undo), undo);
        assert!(!contains(&raw.simple("ROLLBACK"), "SERROR"));
        assert_server_refused(&raw.simple("SELECT purge_holds()"), undo);
    }
    // Pipelined in one write: every undo, then the write.
    let mut raw = RawClient::connect(sidecar.port);
    let mut messages: Vec<(u8, Vec<u8>)> = UNDO.iter().map(|u| query(u)).collect();
    messages.push(query("SELECT purge_holds()"));
    messages.push(query("SELECT nextval('s')"));
    raw.send(&messages);
    for undo in UNDO {
        assert_undo_refused(&raw.read_until_ready(), undo);
    }
    assert_server_refused(&raw.read_until_ready(), "pipelined purge_holds()");
    assert_server_refused(&raw.read_until_ready(), "pipelined nextval");
    assert_eq!(holds(&admin).await, 3, "rows were deleted");
    let s: i64 = admin
        .query_one("SELECT last_value FROM s", &[])
        .await
        .unwrap()
        .get(0);
    let called: bool = admin
        .query_one("SELECT is_called FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert!(s == 1 && !called, "nextval ran");
    // The audit has the refusals.
    assert!(sidecar.audit_text().contains("readOnly"));
}

/// The same function runs without readOnly: the policy alone (select only)
/// does not stop it, which is what readOnly is for.
#[tokio::test]
async fn without_read_only_the_function_deletes() {
    let (sidecar, admin) = setup("ro_off", false).await;
    let client = sidecar.connect().await;
    client.query_one("SELECT purge_holds()", &[]).await.unwrap();
    assert_eq!(holds(&admin).await, 0);
    client.query_one("SELECT nextval('s')", &[]).await.unwrap();
}

/// An application function that turns the session's default read-write
/// (`set_config('default_transaction_read_only', 'off', false)` inside it:
/// nothing in the statement's text says so), pipelined with a write in the
/// next transaction: two simple queries, and two extended groups, in one
/// write. The write must still meet a read-only transaction (the session
/// is closed once the server reports the change; nothing after it runs).
#[tokio::test]
async fn read_only_undone_inside_a_function_does_not_reach_a_pipelined_write() {
    let (sidecar, admin) = setup("ro_hidden_undo", true).await;
    admin
        .batch_execute(
            "CREATE FUNCTION app_settings(name text, value text) RETURNS text LANGUAGE sql
               AS $$SELECT set_config(name, value, false)$$;",
        )
        .await
        .unwrap();
    let undo = "SELECT app_settings('default_transaction_read_only', 'off')";
    let write = "SELECT purge_holds()";
    let simple = vec![query(undo), query(write)];
    let extended = vec![
        parse(undo),
        bind(),
        execute(),
        sync(),
        parse(write),
        bind(),
        execute(),
        sync(),
    ];
    for messages in [simple, extended] {
        let mut raw = RawClient::connect(sidecar.port);
        raw.send(&messages);
        // Whatever comes back (the session may end: the reads may fail),
        // nothing was deleted.
        let _ = std::thread::spawn(move || {
            raw.read_until_ready();
            raw.read_until_ready();
        })
        .join();
        assert_eq!(holds(&admin).await, 3, "the pipelined write ran read-write");
    }
}
