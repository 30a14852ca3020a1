//! `limits.maxRowsAffected` (issue #15 item 6): a write runs inside a
//! transaction or savepoint the sidecar controls, and is rolled back with
//! an error naming the limit, the policy and the counts when the server
//! reports more rows changed than allowed. Syntax cannot know how many rows
//! `WHERE id = id` or a MERGE touches; the server's count does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::frontend::*;
use common::*;

/// Allows everything; writes change at most 3 rows each.
const POLICY: &str = r#"  defaultAction: allow
  limits: {maxRowsAffected: 3}
"#;

/// A database with `t` (10 rows, ids 1..10) and a sidecar under [`POLICY`].
async fn setup(test: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE t (id int primary key, v text NOT NULL DEFAULT 'orig');
             INSERT INTO t (id) SELECT g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    );
    (sidecar, admin)
}

/// Rows of `t`, and how many of them were changed from `orig`.
async fn state(admin: &tokio_postgres::Client) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE v <> 'orig') FROM t",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn limit_error(e: &tokio_postgres::Error) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(db.code().code(), "54000", "{}", message(e));
    assert!(db.message().contains("maxRowsAffected"), "{}", message(e));
    assert!(db.message().contains("\"reporting\""), "{}", message(e));
    assert!(db.message().contains("rolled back"), "{}", message(e));
}

fn sqlstate(bytes: &[u8], code: &str) -> bool {
    contains(bytes, &format!("C{code}\0"))
}

#[tokio::test]
async fn autocommit_writes_over_the_limit_are_rolled_back() {
    let (sidecar, admin) = setup("rows_autocommit").await;
    let client = sidecar.connect().await;
    // Tautologies the syntactic withoutWhere check cannot see.
    for sql in [
        "UPDATE t SET v = 'x' WHERE id = id",
        "UPDATE t SET v = 'x' WHERE true OR id = 1",
        "DELETE FROM t WHERE (SELECT true)",
        "DELETE FROM t WHERE EXISTS (SELECT 1)",
        "INSERT INTO t (id) SELECT g FROM generate_series(11, 20) g",
    ] {
        let e = client.batch_execute(sql).await.unwrap_err();
        limit_error(&e);
        let db = e.as_db_error().unwrap();
        assert!(
            db.detail().unwrap_or("").contains("10 rows changed"),
            "{sql}: {}",
            message(&e)
        );
        assert_eq!(state(&admin).await, (10, 0), "{sql} was not rolled back");
    }
    // Under the limit, writes commit (and the session is idle again).
    client
        .batch_execute("UPDATE t SET v = 'x' WHERE id <= 3")
        .await
        .unwrap();
    assert_eq!(state(&admin).await, (10, 3));
    client
        .batch_execute("DELETE FROM t WHERE id = 10")
        .await
        .unwrap();
    assert_eq!(state(&admin).await, (9, 3));
    // A multi-statement string is one write per statement, all rolled back together.
    let e = client
        .batch_execute("DELETE FROM t WHERE id = 9; DELETE FROM t WHERE id < 9")
        .await
        .unwrap_err();
    limit_error(&e);
    assert_eq!(state(&admin).await, (9, 3));
    // The refusal is on record.
    sidecar
        .audit_events_until("a maxRowsAffected refusal", |e| {
            e.to_string().contains("maxRowsAffected")
        })
        .await;
}

#[tokio::test]
async fn psql_gets_the_error_and_the_position_of_its_own_text() {
    let (sidecar, admin) = setup("rows_psql").await;
    let (ok, _, err) = psql(sidecar.port, &["-c", "UPDATE t SET v = 'x'"]);
    assert!(!ok);
    assert!(err.contains("maxRowsAffected"), "{err}");
    assert_eq!(state(&admin).await, (10, 0));
    // A syntax error points into the client's own text, not the sidecar's BEGIN.
    let (ok, _, err) = psql(
        sidecar.port,
        &["-c", "UPDATE t SET v = 'x' WHERE id = 1 AND AND"],
    );
    assert!(!ok);
    assert!(err.contains("syntax error"), "{err}");
    assert!(!err.contains("BEGIN"), "{err}");
    assert!(err.contains("LINE 1: UPDATE t SET"), "{err}");
    let (ok, out, err) = psql(
        sidecar.port,
        &["-c", "UPDATE t SET v = 'y' WHERE id IN (1, 2) RETURNING id"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("UPDATE 2"), "{out}");
    assert_eq!(state(&admin).await, (10, 2));
}

#[tokio::test]
async fn inside_a_client_transaction_earlier_work_survives_a_refused_write() {
    let (sidecar, admin) = setup("rows_in_tx").await;
    let client = sidecar.connect().await;
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO t (id) VALUES (100)")
        .await
        .unwrap();
    let e = client
        .batch_execute("UPDATE t SET v = 'x' WHERE id > 0")
        .await
        .unwrap_err();
    limit_error(&e);
    // The transaction goes on: its own earlier INSERT is there, the update is not.
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE v <> 'orig') FROM t",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (11, 0));
    // The client's own savepoints work beside the sidecar's.
    client
        .batch_execute("SAVEPOINT a; DELETE FROM t WHERE id = 1")
        .await
        .unwrap_err();
    client.batch_execute("SAVEPOINT a").await.unwrap();
    client
        .batch_execute("DELETE FROM t WHERE id = 1")
        .await
        .unwrap();
    client
        .batch_execute("ROLLBACK TO SAVEPOINT a")
        .await
        .unwrap();
    client
        .batch_execute("UPDATE t SET v = 'x' WHERE id = 2")
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(state(&admin).await, (11, 1));
    // A failed statement inside the transaction fails it, as without Sluice.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("UPDATE t SET id = 1 WHERE id = 2")
        .await
        .unwrap_err();
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "25P02", "{}", message(&e));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(state(&admin).await, (11, 1));
}

#[tokio::test]
async fn extended_protocol_writes_are_counted() {
    let (sidecar, admin) = setup("rows_extended").await;
    let client = sidecar.connect().await;
    let e = client
        .execute("DELETE FROM t WHERE id > $1", &[&0i32])
        .await
        .unwrap_err();
    limit_error(&e);
    assert_eq!(state(&admin).await, (10, 0));
    assert_eq!(
        client
            .execute("UPDATE t SET v = $1 WHERE id <= $2", &[&"x", &2i32])
            .await
            .unwrap(),
        2
    );
    assert_eq!(state(&admin).await, (10, 2));
    // Prepared once, executed twice with other parameters.
    let stmt = client
        .prepare("DELETE FROM t WHERE id >= $1")
        .await
        .unwrap();
    limit_error(&client.execute(&stmt, &[&5i32]).await.unwrap_err());
    assert_eq!(client.execute(&stmt, &[&9i32]).await.unwrap(), 2);
    assert_eq!(state(&admin).await, (8, 2));
    // In a client transaction, with the extended protocol.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO t (id) VALUES ($1)", &[&200i32])
        .await
        .unwrap();
    limit_error(
        &client
            .execute("UPDATE t SET v = $1", &[&"z"])
            .await
            .unwrap_err(),
    );
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(state(&admin).await, (9, 2));
    // SQL-level PREPARE/EXECUTE is counted at EXECUTE.
    client
        .batch_execute("PREPARE wipe AS DELETE FROM t")
        .await
        .unwrap();
    limit_error(&client.batch_execute("EXECUTE wipe").await.unwrap_err());
    assert_eq!(state(&admin).await, (9, 2));
}

#[tokio::test]
async fn pipelined_answers_stay_in_order() {
    let (sidecar, admin) = setup("rows_pipelined").await;
    let mut raw = RawClient::connect(sidecar.port);
    raw.send(&[
        query("UPDATE t SET v = 'x' WHERE id = id RETURNING id"),
        query("SELECT 'after-one'"),
        parse("DELETE FROM t WHERE id > 0 RETURNING v"),
        bind(),
        execute(),
        sync(),
        query("UPDATE t SET v = 'ok' WHERE id = 1 RETURNING 'returned-' || id"),
        parse("SELECT 'after-two'"),
        bind(),
        execute(),
        sync(),
    ]);
    let answers: Vec<Vec<u8>> = (0..5).map(|_| raw.read_until_ready()).collect();
    let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
    assert!(sqlstate(&answers[0], "54000"), "{}", text(&answers[0]));
    assert!(
        !contains(&answers[0], "D\0"),
        "rows of a refused write: {}",
        text(&answers[0])
    );
    assert!(contains(&answers[1], "after-one"), "{}", text(&answers[1]));
    assert!(sqlstate(&answers[2], "54000"), "{}", text(&answers[2]));
    assert!(
        !contains(&answers[2], "orig"),
        "rows of a refused write: {}",
        text(&answers[2])
    );
    assert!(contains(&answers[3], "returned-1"), "{}", text(&answers[3]));
    assert!(contains(&answers[3], "UPDATE 1"), "{}", text(&answers[3]));
    assert!(contains(&answers[4], "after-two"), "{}", text(&answers[4]));
    // Every answer ends idle: nothing of the sidecar's transactions is left open.
    for a in &answers {
        assert_eq!(&a[a.len() - 6..], b"Z\0\0\0\x05I", "{}", text(a));
    }
    assert_eq!(state(&admin).await, (10, 1));
    // tokio-postgres pipelines concurrent queries on one connection.
    let client = sidecar.connect().await;
    let (a, b, c) = tokio::join!(
        client.execute("UPDATE t SET v = 'p' WHERE id > $1", &[&0i32]),
        client.query_one("SELECT count(*) FROM t", &[]),
        client.execute("UPDATE t SET v = 'p' WHERE id = $1", &[&2i32]),
    );
    limit_error(&a.unwrap_err());
    assert_eq!(b.unwrap().get::<_, i64>(0), 10);
    assert_eq!(c.unwrap(), 1);
    assert_eq!(state(&admin).await, (10, 2));
}

#[tokio::test]
async fn returning_rows_of_a_refused_write_never_reach_the_client() {
    let (sidecar, admin) = setup("rows_returning").await;
    admin
        .batch_execute("UPDATE t SET v = 'secret-' || id")
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    let bytes = raw.simple("DELETE FROM t RETURNING v");
    assert!(
        sqlstate(&bytes, "54000"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        !contains(&bytes, "secret-"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = raw.extended("UPDATE t SET v = v || '!' RETURNING v", false);
    assert!(
        sqlstate(&bytes, "54000"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        !contains(&bytes, "secret-"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let count: i64 = admin
        .query_one(
            "SELECT count(*) FROM t WHERE v LIKE 'secret-%' AND v NOT LIKE '%!'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 10);
    // Under the limit, RETURNING rows come with the committed write.
    let bytes = raw.simple("DELETE FROM t WHERE id = 4 RETURNING v");
    assert!(
        contains(&bytes, "secret-4"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        contains(&bytes, "DELETE 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

#[tokio::test]
async fn merge_and_copy_are_counted() {
    let (sidecar, admin) = setup("rows_merge").await;
    let client = sidecar.connect().await;
    limit_error(
        &client
            .batch_execute("MERGE INTO t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE")
            .await
            .unwrap_err(),
    );
    assert_eq!(state(&admin).await, (10, 0));
    client
        .batch_execute(
            "MERGE INTO t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = 'm'",
        )
        .await
        .unwrap();
    assert_eq!(state(&admin).await, (10, 1));
    // COPY FROM STDIN through psql: 5 rows are over the limit, 2 are not.
    let copy = |rows: std::ops::Range<i32>| {
        let data: String = rows.map(|i| format!("{i}\tc\n")).collect();
        let mut child = std::process::Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user=app dbname=x",
                sidecar.port
            ))
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "COPY t (id, v) FROM STDIN",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(data.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = copy(20..25);
    assert!(!ok);
    assert!(err.contains("maxRowsAffected"), "{err}");
    assert_eq!(state(&admin).await, (10, 1));
    let (ok, err) = copy(30..32);
    assert!(ok, "{err}");
    assert_eq!(state(&admin).await, (12, 3));
    // A data-modifying WITH is not counted by the server: refused, nothing ran.
    let e = client
        .batch_execute("WITH d AS (DELETE FROM t RETURNING 1) SELECT count(*) FROM d")
        .await
        .unwrap_err();
    assert!(
        message(&e).contains("data-modifying WITH"),
        "{}",
        message(&e)
    );
    // Transaction control in the same string would end the sidecar's transaction.
    let e = client
        .batch_execute("DELETE FROM t WHERE id = 1; COMMIT")
        .await
        .unwrap_err();
    assert!(message(&e).contains("COMMIT"), "{}", message(&e));
    assert_eq!(state(&admin).await, (12, 3));
}

#[tokio::test]
async fn error_positions_point_into_the_clients_own_text() {
    let (sidecar, admin) = setup("rows_position").await;
    let client = sidecar.connect().await;
    let position = |e: tokio_postgres::Error| match e.as_db_error().and_then(|d| d.position()) {
        Some(tokio_postgres::error::ErrorPosition::Original(n)) => *n,
        other => panic!("no position: {other:?} {}", message(&e)),
    };
    for sql in [
        "UPDATE t SET v = 'x' WHERE id = 1 AND nosuchcolumn = 2",
        "DELETE FROM t WHERE id = 'not a number'",
    ] {
        // Inside the client's transaction too (the sidecar's SAVEPOINT is
        // longer than its BEGIN).
        for in_tx in [false, true] {
            if in_tx {
                client.batch_execute("BEGIN").await.unwrap();
            }
            let through = position(client.batch_execute(sql).await.unwrap_err());
            let direct = position(admin.batch_execute(sql).await.unwrap_err());
            assert_eq!(through, direct, "{sql} (in a transaction: {in_tx})");
            if in_tx {
                client.batch_execute("ROLLBACK").await.unwrap();
            }
        }
    }
}

/// A pipeline binding the unnamed portal twice before one Sync, to two
/// named statements: each Execute runs the statement of the Bind just
/// before it. The write bound first is counted under the limit (and on
/// record as the DELETE it is), though the group's last Bind of the portal
/// is a SELECT.
#[tokio::test]
async fn each_execute_runs_the_statement_of_the_bind_before_it() {
    let (sidecar, admin) = setup("rows_rebound").await;
    let named = |name: &str, sql: &str| {
        let mut b = format!("{name}\0{sql}\0").into_bytes();
        b.extend_from_slice(&[0, 0]);
        (b'P', b)
    };
    let bind_to = |statement: &str| {
        let mut b = format!("\0{statement}\0").into_bytes();
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        (b'B', b)
    };
    let mut raw = RawClient::connect(sidecar.port);
    raw.send(&[
        named("wipe", "DELETE FROM t WHERE id > 0"),
        named("look", "SELECT 'looked'"),
        bind_to("wipe"),
        execute(),
        bind_to("look"),
        execute(),
        sync(),
    ]);
    let bytes = raw.read_until_ready();
    let text = String::from_utf8_lossy(&bytes);
    assert!(sqlstate(&bytes, "54000"), "{text}");
    assert_eq!(state(&admin).await, (10, 0), "{text}");
    let events = sidecar
        .audit_events_until("the SELECT's statement event", |e| {
            e["type"] == "statement" && e["command"]["kind"] == "select"
        })
        .await;
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "statement")
        .filter_map(|e| e["command"]["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["delete", "select"], "{events:?}");
}

/// Writes whose rows the server's answer does not count: TRUNCATE (no
/// count at all) and a procedure's writes (`CALL` answers `CALL`). Refused under the limit, simple and
/// extended; nothing of `t` is lost. (An application function's writes in
/// a SELECT, a trigger's and a cascade's are not counted either: see the
/// module docs of `rows_affected`.)
#[tokio::test]
async fn writes_the_server_does_not_count_are_refused() {
    let (sidecar, admin) = setup("rows_uncounted").await;
    admin
        .batch_execute("CREATE PROCEDURE purge() LANGUAGE sql AS $$DELETE FROM t$$;")
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "TRUNCATE t",
        "TRUNCATE TABLE ONLY t RESTART IDENTITY",
        "CALL purge()",
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                sqlstate(&bytes, "0A000") && contains(&bytes, "maxRowsAffected"),
                "{sql}: not refused: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(state(&admin).await, (10, 0), "{sql}");
    }
}

/// Rows the command tag does not count are counted by the server's
/// per-transaction statistics: a DELETE of one row whose `ON DELETE
/// CASCADE` removes 5 more, an INSERT whose trigger writes 4 rows, an
/// UPDATE calling a function that deletes, each over the limit of 3 with
/// what it changed elsewhere: rolled back and refused, in autocommit and
/// inside the client's transaction (whose earlier rows are not charged to
/// the write), through simple and extended query. Writes whose hidden rows
/// keep them within the limit run.
#[tokio::test]
async fn rows_changed_by_triggers_cascades_and_functions_are_counted() {
    let (sidecar, admin) = setup("rows_hidden").await;
    admin
        .batch_execute(
            "CREATE TABLE parent (id int primary key);
             CREATE TABLE child (id serial primary key, p int REFERENCES parent ON DELETE CASCADE);
             INSERT INTO parent VALUES (1), (2);
             INSERT INTO child (p) SELECT 1 FROM generate_series(1, 5);
             INSERT INTO child (p) VALUES (2);
             CREATE TABLE log (id serial, note text);
             CREATE FUNCTION fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO log (note) SELECT 'x' FROM generate_series(1, 4); RETURN NEW; END $$;
             CREATE TABLE fanned (id int);
             CREATE TRIGGER fan AFTER INSERT ON fanned FOR EACH ROW EXECUTE FUNCTION fan_out();
             CREATE FUNCTION purge() RETURNS text LANGUAGE sql AS $$ DELETE FROM t WHERE id > 2 RETURNING 'gone' $$;",
        )
        .await
        .unwrap();
    let before = counts(&admin).await;
    assert_eq!(before, "2,6,0,0,10");
    let hidden = [
        "DELETE FROM parent WHERE id = 1",
        "INSERT INTO fanned VALUES (1)",
        "UPDATE t SET v = purge() WHERE id = 1",
    ];
    let mut raw = RawClient::connect(sidecar.port);
    for sql in hidden {
        for (how, bytes) in [
            ("simple", raw.simple(sql)),
            ("extended", raw.extended(sql, false)),
        ] {
            assert!(
                sqlstate(&bytes, "54000") && contains(&bytes, "triggers, cascades or functions"),
                "{sql} ({how}): {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        // Inside the client's transaction, after earlier writes of 3 rows.
        raw.simple("BEGIN");
        raw.simple("UPDATE t SET v = 'early' WHERE id <= 3");
        let bytes = raw.simple(sql);
        assert!(
            sqlstate(&bytes, "54000"),
            "{sql} (in a transaction): {}",
            String::from_utf8_lossy(&bytes)
        );
        let bytes = raw.simple("COMMIT");
        assert!(
            contains(&bytes, "COMMIT"),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(counts(&admin).await, before, "{sql}");
    }
    assert_eq!(
        state(&admin).await,
        (10, 3),
        "the client's earlier writes stand"
    );
    // Within the limit with what they change elsewhere: they run, also
    // inside a transaction whose earlier writes are over the limit in all.
    let bytes = raw.simple("DELETE FROM parent WHERE id = 2");
    assert!(
        contains(&bytes, "DELETE 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    for sql in [
        "BEGIN",
        "UPDATE t SET v = 'a' WHERE id <= 3",
        "UPDATE t SET v = 'b' WHERE id > 7",
        "UPDATE t SET v = 'c' WHERE id = 5",
        "COMMIT",
    ] {
        let bytes = raw.simple(sql);
        assert!(
            !contains(&bytes, "SERROR"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(counts(&admin).await, "1,5,0,0,10");
}

/// Rows of the tables of [`rows_changed_by_triggers_cascades_and_functions_are_counted`].
async fn counts(admin: &tokio_postgres::Client) -> String {
    admin
        .query_one(
            "SELECT (SELECT count(*) FROM parent) || ',' || (SELECT count(*) FROM child) \
             || ',' || (SELECT count(*) FROM log) || ',' || (SELECT count(*) FROM fanned) \
             || ',' || (SELECT count(*) FROM t)",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
}
