//! Decisions on the wire: unbound identities, denials (simple and extended),
//! approvals without an operator, dry run, limits, and the audit trail.
//! Every denial test proves the data is untouched afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const RULES: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
    - name: bulk-writes-need-a-human
      match: {statements: [update, delete], withoutWhere: true}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: hold, minApprovals: 1}
    - name: no-server-files
      match: {functions: ["pg_read_file", "pg_ls_dir", "lo_*"]}
      action: deny
"#;

async fn setup(test: &str, policy_spec: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id int primary key, amount int);
             INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 5) g;",
        )
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(policy_spec)),
        "shop/report-job",
    );
    (sidecar, admin)
}

async fn order_count(admin: &tokio_postgres::Client) -> i64 {
    row_count(admin, "orders").await
}

#[tokio::test]
async fn unbound_identity_gets_no_session() {
    let (sidecar, _admin) = setup("unbound", RULES).await;
    drop(sidecar);
    let pg = server();
    let sidecar = Sidecar::start(
        &manifests(pg, &db_name("unbound"), ADMIN, "disable", &policy(RULES)),
        "shop/someone-else",
    );
    let Err(err) = try_connect(&sidecar.url()).await else {
        panic!("the session must be refused")
    };
    let db = err.as_db_error().expect("a server-style error");
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("someone-else"), "{}", db.message());
    assert!(db.message().contains("orders-db"), "{}", db.message());
    let audit = sidecar.audit_events();
    // The policy in force is on record first (#21's policy history), then
    // the refusal: nothing else.
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["type"], "policy", "{audit:?}");
    assert_eq!(audit[0]["policy"]["name"], "reporting", "{audit:?}");
    assert_eq!(audit[1]["type"], "denial");
}

/// An audit record the sink cannot take is logged, never dropped in silence
/// (#20): here the refusal of an unbound identity's session, whose record
/// was dropped without a trace before.
#[tokio::test]
async fn an_audit_record_that_cannot_be_written_is_logged() {
    let pg = server();
    let db = db_name("audit_unrecorded");
    pg.create_database(&db).await;
    // /dev/full takes the open but fails every write.
    let sidecar = Sidecar::start_with(
        &manifests(pg, &db, ADMIN, "disable", &policy(RULES)),
        "shop/someone-else",
        &["--audit-file", "/dev/full"],
    );
    let Err(err) = try_connect(&sidecar.url()).await else {
        panic!("the session must be refused")
    };
    let db = err.as_db_error().expect("a server-style error");
    assert_eq!(db.code().code(), "28000", "{}", db.message());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        let log = sidecar.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("writing an audit record failed"))
        {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed write was not logged: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for field in ["sessionRefused", "shop/someone-else", "/dev/full"] {
        assert!(line.contains(field), "{field:?} not in {line}");
    }
}

#[tokio::test]
async fn simple_query_denied_and_session_lives_on() {
    let (sidecar, admin) = setup("deny_simple", RULES).await;
    let c = sidecar.connect().await;
    let err = c.simple_query("DROP TABLE orders").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("no-schema-changes"),
        "{}",
        db.message()
    );
    assert!(db.message().contains("reporting"), "{}", db.message());
    // The session goes on, the table is there.
    let rows = c.simple_query("SELECT count(*) FROM orders").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("5"))
    );
    assert_eq!(order_count(&admin).await, 5);
}

#[tokio::test]
async fn a_string_with_a_denied_statement_is_refused_whole() {
    let (sidecar, admin) = setup("deny_multi", RULES).await;
    let c = sidecar.connect().await;
    let err = c
        .simple_query("INSERT INTO orders VALUES (100, 1); DROP TABLE orders; SELECT 1")
        .await
        .unwrap_err();
    let msg = message(&err);
    assert!(msg.contains("whole query string was refused"), "{msg}");
    assert!(msg.contains("statement 2 of 3"), "{msg}");
    // Nothing of it ran: the INSERT before the DROP did not happen.
    assert_eq!(order_count(&admin).await, 5);
    // psql, same thing.
    let (ok, _out, err) = psql(
        sidecar.port,
        &["-c", "INSERT INTO orders VALUES (101, 1); TRUNCATE orders"],
    );
    assert!(!ok);
    assert!(
        err.contains("42501") || err.contains("denied by Sluice"),
        "{err}"
    );
    assert_eq!(order_count(&admin).await, 5);
}

#[tokio::test]
async fn extended_query_denied_at_parse() {
    let (sidecar, admin) = setup("deny_extended", RULES).await;
    let c = sidecar.connect().await;
    let err = c.execute("DELETE FROM orders", &[]).await.unwrap_err();
    let msg = message(&err);
    assert!(msg.contains("approval"), "{msg}");
    assert!(msg.contains("operator"), "{msg}");
    assert_eq!(err.code().unwrap().code(), "42501");
    let err = c
        .query("SELECT pg_read_file('/etc/passwd')", &[])
        .await
        .unwrap_err();
    assert!(
        message(&err).contains("no-server-files"),
        "{}",
        message(&err)
    );
    // Prepared statements with parameters work, and the session is usable.
    let r = c
        .query_one("SELECT amount FROM orders WHERE id = $1", &[&3i32])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i32>(0), 30);
    let n = c
        .execute("UPDATE orders SET amount = 0 WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(order_count(&admin).await, 5);
    let total: i64 = admin
        .query_one("SELECT sum(amount) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 140);
}

#[tokio::test]
async fn denied_statement_in_a_pipeline_leaves_the_others_alone() {
    let (sidecar, admin) = setup("deny_pipeline", RULES).await;
    let c = sidecar.connect().await;
    let drop = c.execute("DROP TABLE orders", &[]);
    let select = c.query_one("SELECT count(*) FROM orders WHERE id <= 5", &[]);
    let insert = c.execute("INSERT INTO orders VALUES (6, 60)", &[]);
    let (d, s, i) = tokio::join!(drop, select, insert);
    assert_eq!(d.unwrap_err().code().unwrap().code(), "42501");
    assert_eq!(s.unwrap().get::<_, i64>(0), 5);
    assert_eq!(i.unwrap(), 1);
    assert_eq!(order_count(&admin).await, 6);
}

#[tokio::test]
async fn update_without_where_needs_approval_and_nothing_changes() {
    let (sidecar, admin) = setup("approval", RULES).await;
    let (ok, _out, err) = psql(sidecar.port, &["-c", "UPDATE orders SET amount = 0"]);
    assert!(!ok);
    assert!(err.contains("needs approval"), "{err}");
    assert!(err.contains("operator"), "{err}");
    let zeroes: i64 = admin
        .query_one("SELECT count(*) FROM orders WHERE amount = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(zeroes, 0);
}

#[tokio::test]
async fn dry_run_records_but_runs() {
    let spec = RULES.replace(
        "  defaultAction: allow",
        "  mode: dryRun\n  defaultAction: allow",
    );
    let (sidecar, admin) = setup("dry_run", &spec).await;
    let c = sidecar.connect().await;
    c.simple_query("CREATE TABLE made_in_dry_run (a int)")
        .await
        .unwrap();
    let exists: bool = admin
        .query_one("SELECT to_regclass('made_in_dry_run') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(exists);
    let events = sidecar.audit_events();
    let stmt = events
        .iter()
        .find(|e| e["type"] == "statement" && e["command"]["kind"] == "create")
        .expect("statement event");
    assert_eq!(stmt["decision"]["action"], "deny");
    assert_eq!(stmt["decision"]["dryRun"], true);
}

#[tokio::test]
async fn audit_chain_is_complete_redacted_and_verifies() {
    let (sidecar, _admin) = setup("audit", RULES).await;
    let c = sidecar.connect().await;
    c.simple_query("SELECT * FROM orders WHERE amount = 4242")
        .await
        .unwrap();
    let _ = c.simple_query("DROP TABLE orders").await;
    c.query("SELECT amount FROM orders WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    drop(c);
    sidecar
        .audit_events_until("sessionEnd", |e| e["type"] == "sessionEnd")
        .await;
    let text = sidecar.audit_text();
    assert!(
        !sidecar.audit_text_without_ids().contains("4242"),
        "literals must be redacted: {text}"
    );
    assert!(!text.contains(PASSWORD));
    let report = sluice_policy::audit::verify_lines(text.lines(), &[]).expect("chain verifies");
    assert!(report.events >= 7, "{report:?}");
    let events = sidecar.audit_events();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // The policy in force is on record before anything decided under it.
    assert_eq!(kinds.first(), Some(&"policy"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"sessionStart"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"sessionEnd"), "{kinds:?}");
    // Each forwarded statement: its decision before its result.
    let first_stmt = kinds.iter().position(|k| *k == "statement").unwrap();
    let first_result = kinds.iter().position(|k| *k == "result").unwrap();
    assert!(first_stmt < first_result, "{kinds:?}");
    assert!(kinds.contains(&"denial"), "{kinds:?}");
    let result = &events[first_result];
    assert_eq!(result["outcome"]["rows"], 0);
    // Editing a line breaks the chain.
    let edited = text.replacen("orders", "ORDERS", 1);
    assert!(sluice_policy::audit::verify_lines(edited.lines(), &[]).is_err());
}

#[tokio::test]
async fn refused_fast_path_function_call_is_audited() {
    let (sidecar, _admin) = setup("fastpath_audit", RULES).await;
    let mut raw = RawClient::connect(sidecar.port);
    // FunctionCall of OID 2026 (pg_backend_pid), no arguments, text result.
    let mut body = 2026u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    raw.send(&[(b'F', body)]);
    let bytes = raw.read_until_ready();
    assert_eq!(tags(&bytes), b"EZ".to_vec());
    assert!(
        contains(&bytes, "C42501"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let events = sidecar
        .audit_events_until("the FunctionCall denial", |e| {
            e["type"] == "denial" && e["command"]["kind"] == "functionCall"
        })
        .await;
    let denial = events
        .iter()
        .find(|e| e["command"]["kind"] == "functionCall")
        .unwrap();
    assert_eq!(denial["decision"]["action"], "deny", "{denial}");
    assert!(
        denial["command"]["text"]
            .as_str()
            .unwrap()
            .contains("OID 2026"),
        "{denial}"
    );
    // The session goes on.
    assert!(contains(&raw.simple("SELECT 1"), "SELECT 1"));
}

#[tokio::test]
async fn audit_is_write_ahead() {
    let pg = server();
    let db = db_name("audit_full");
    pg.create_database(&db).await;
    // /dev/full takes the open but fails every write: no session may start.
    let sidecar = Sidecar::start_with(
        &manifests(pg, &db, ADMIN, "disable", &policy(RULES)),
        "shop/report-job",
        &["--audit-file", "/dev/full"],
    );
    let Err(err) = try_connect(&sidecar.url()).await else {
        panic!("the session must be refused")
    };
    assert!(message(&err).contains("audit"), "{}", message(&err));
}

/// Write-ahead per statement: once the audit sink fails (a FIFO whose reader
/// went away after the session's start record), a statement is refused and
/// does not reach the server.
#[tokio::test]
async fn a_statement_whose_audit_record_cannot_be_written_does_not_run() {
    let (sidecar, admin) = setup("audit_fifo", RULES).await;
    drop(sidecar);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    // The reader takes lines up to the session's start record, then leaves.
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let f = std::fs::File::open(&path).expect("open the FIFO");
        let mut lines = std::io::BufReader::new(f).lines();
        loop {
            let line = lines.next().expect("a line").expect("read");
            if line.contains("\"sessionStart\"") {
                return line;
            }
        }
    });
    let sidecar = Sidecar::start_with(
        &manifests(
            server(),
            &db_name("audit_fifo"),
            ADMIN,
            "disable",
            &policy(RULES),
        ),
        "shop/report-job",
        &["--audit-file", fifo.to_str().unwrap()],
    );
    let c = sidecar.connect().await;
    let start = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(start.contains("sessionStart"));
    let err = c
        .simple_query("UPDATE orders SET amount = 0 WHERE id = 1")
        .await
        .unwrap_err();
    assert!(message(&err).contains("audit"), "{}", message(&err));
    let amount: i32 = admin
        .query_one("SELECT amount FROM orders WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, 10, "the UPDATE ran without its audit record");
    // Extended protocol too.
    let err = c
        .execute("UPDATE orders SET amount = 0 WHERE id = $1", &[&2i32])
        .await
        .unwrap_err();
    assert!(message(&err).contains("audit"), "{}", message(&err));
    let amount: i32 = admin
        .query_one("SELECT amount FROM orders WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, 20, "the UPDATE ran without its audit record");
}

#[tokio::test]
async fn max_rows_truncates_or_refuses() {
    let spec = "  limits: {maxRows: 3}\n";
    let (sidecar, _admin) = setup("max_rows_truncate", spec).await;
    let (ok, out, err) = psql(
        sidecar.port,
        &["-t", "-A", "-c", "SELECT id FROM orders ORDER BY id"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1\n2\n3");
    assert!(err.contains("truncated to 3 rows"), "{err}");
    let c = sidecar.connect().await;
    let rows = c
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);

    let spec = "  limits: {maxRows: 3, onMaxRows: refuse}\n";
    let (sidecar, _admin) = setup("max_rows_refuse", spec).await;
    let c = sidecar.connect().await;
    let err = c.query("SELECT id FROM orders", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "54000", "{}", message(&err));
    let err = c.simple_query("SELECT id FROM orders").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "54000", "{}", message(&err));
    // Under the limit, fine; the session goes on.
    let rows = c.query("SELECT id FROM orders LIMIT 2", &[]).await.unwrap();
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn statements_per_second_limit() {
    let spec = "  limits: {statementsPerSecond: 2}\n";
    let (sidecar, _admin) = setup("rate", spec).await;
    let c = sidecar.connect().await;
    // The bucket holds 2 and earns 2 per second: over the loop's `elapsed`
    // it admits at most 2 * (1 + elapsed) of the 10, and a full bucket
    // admits the first two (test-honesty #14: a lower bound alone let a
    // limiter that refuses everything pass).
    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        match c.simple_query("SELECT 1").await {
            Ok(_) => outcomes.push(true),
            Err(e) => {
                assert!(
                    message(&e).contains("statementsPerSecond"),
                    "{}",
                    message(&e)
                );
                outcomes.push(false);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(outcomes[..2], [true, true], "a full bucket admits two");
    let allowed = outcomes.iter().filter(|ran| **ran).count();
    assert!(
        allowed as f64 <= 2.0 * (1.0 + elapsed),
        "{allowed} of 10 ran in {elapsed} s at 2 per second"
    );
}

#[tokio::test]
async fn text_pattern_decisions_are_not_shared_between_literals() {
    // With a textPattern, two texts differing only in a literal may be decided
    // differently: the decision cache must not let one vouch for the other.
    let spec = r#"  defaultAction: allow
  rules:
    - name: not-the-big-one
      match: {textPattern: "amount\\s*=\\s*666"}
      action: deny
"#;
    let (sidecar, _admin) = setup("text_pattern", spec).await;
    let c = sidecar.connect().await;
    c.simple_query("SELECT id FROM orders WHERE amount = 10")
        .await
        .unwrap();
    let err = c
        .simple_query("SELECT id FROM orders WHERE amount = 666")
        .await
        .unwrap_err();
    assert!(
        message(&err).contains("not-the-big-one"),
        "{}",
        message(&err)
    );
    c.simple_query("SELECT id FROM orders WHERE amount = 20")
        .await
        .unwrap();
}

#[tokio::test]
async fn literal_variants_share_a_decision_but_not_a_denial_of_another_shape() {
    let (sidecar, admin) = setup("literal_cache", RULES).await;
    let c = sidecar.connect().await;
    for i in 1..=5 {
        let rows = c
            .simple_query(&format!("SELECT amount FROM orders WHERE id = {i}"))
            .await
            .unwrap();
        assert!(
            matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(&*(i * 10).to_string()))
        );
    }
    // Same tables, other shape: decided on its own.
    let err = c.simple_query("DELETE FROM orders").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    assert_eq!(order_count(&admin).await, 5);
}

fn parse(name: &str, sql: &str) -> (u8, Vec<u8>) {
    let mut b = name.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.extend_from_slice(&[0, 0, 0]);
    (b'P', b)
}

fn bind(portal: &str, stmt: &str) -> (u8, Vec<u8>) {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(stmt.as_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    (b'B', b)
}

fn execute(portal: &str) -> (u8, Vec<u8>) {
    let mut b = portal.as_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 0, 0]);
    (b'E', b)
}

#[tokio::test]
async fn flush_then_denied_statement_in_the_same_sync_group() {
    let (sidecar, admin) = setup("flush_group", RULES).await;
    let mut raw = RawClient::connect(sidecar.port);
    // Group part 1, flushed: runs and answers at once.
    raw.send(&[
        parse("s1", "SELECT count(*) FROM orders"),
        bind("", "s1"),
        execute(""),
        (b'H', vec![]),
    ]);
    let (first, _) = raw.read_messages(4);
    assert_eq!(first, b"12DC".to_vec());
    // Part 2 holds a denied statement: refused, discarded until Sync, then
    // one error and one ReadyForQuery; the DROP never reaches the server.
    raw.send(&[
        parse("s2", "DROP TABLE orders"),
        bind("", "s2"),
        execute(""),
        (b'S', vec![]),
    ]);
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "42501"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(tags(&bytes), b"EZ".to_vec(), "one error, one ReadyForQuery");
    assert_eq!(order_count(&admin).await, 5);
    // The session goes on, and s1 (which reached the server) still works.
    raw.send(&[bind("", "s1"), execute(""), (b'S', vec![])]);
    let bytes = raw.read_until_ready();
    assert!(
        contains(&bytes, "SELECT 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // A denied statement in a pipeline of Sync groups leaves the next group alone.
    raw.send(&[
        parse("", "TRUNCATE orders"),
        bind("", ""),
        execute(""),
        (b'S', vec![]),
        parse("", "SELECT 42"),
        bind("", ""),
        execute(""),
        (b'S', vec![]),
    ]);
    let first = raw.read_until_ready();
    assert!(contains(&first, "42501"));
    let second = raw.read_until_ready();
    assert!(
        contains(&second, "42"),
        "{}",
        String::from_utf8_lossy(&second)
    );
    assert_eq!(order_count(&admin).await, 5);
}

#[tokio::test]
async fn malformed_message_gets_a_protocol_error() {
    let (sidecar, _admin) = setup("malformed", RULES).await;
    let mut raw = RawClient::connect(sidecar.port);
    // A Bind whose statement name is not terminated.
    raw.send(&[(b'B', b"\0s1".to_vec()), (b'S', vec![])]);
    let (tags, bytes) = raw.read_messages(1);
    assert_eq!(tags, vec![b'E']);
    assert!(
        contains(&bytes, "08P01"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        contains(&bytes, "malformed Bind"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// The type bytes of the messages in `bytes`.
fn tags(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        out.push(bytes[at]);
        let len = i32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        at += 1 + len as usize;
    }
    out
}
