//! The proxy with nothing to refuse or mask: real clients (tokio-postgres,
//! psql, pgbench) through the sidecar to a real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const ALLOW_ALL: &str = "  defaultAction: allow\n";

async fn setup(test: &str) -> (String, Sidecar) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(ALLOW_ALL)),
        "shop/report-job",
    );
    (db, sidecar)
}

#[tokio::test]
async fn simple_and_extended_queries_pass_through() {
    let (_db, sidecar) = setup("simple_extended").await;
    let c = sidecar.connect().await;
    c.batch_execute(
        "CREATE TABLE items (id int primary key, name text, price numeric, seen timestamptz default now());
         INSERT INTO items VALUES (1, 'apple', 1.5), (2, 'pear', 2.25);",
    )
    .await
    .unwrap();
    // Simple protocol, several statements in one string.
    let msgs = c
        .simple_query("SELECT count(*) FROM items; SELECT name FROM items ORDER BY id")
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["2", "apple", "pear"]);
    // Extended protocol, binary results, parameters.
    let row = c
        .query_one(
            "SELECT id, name, price::float8 FROM items WHERE id = $1",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, &str>(1), "pear");
    assert_eq!(row.get::<_, f64>(2), 2.25);
    // A named prepared statement reused, then closed.
    let stmt = c
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    for (id, name) in [(1i32, "apple"), (2, "pear"), (1, "apple")] {
        let r = c.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(r.get::<_, &str>(0), name);
    }
    drop(stmt);
    // Errors keep the session usable.
    let err = c
        .simple_query("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    let err = c.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    let n: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // Transactions.
    c.batch_execute("BEGIN; INSERT INTO items VALUES (3, 'fig', 1); ROLLBACK")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn pipelined_extended_queries() {
    let (_db, sidecar) = setup("pipelined").await;
    let c = sidecar.connect().await;
    c.batch_execute("CREATE TABLE n (i int)").await.unwrap();
    // tokio-postgres pipelines concurrent queries on one connection.
    let futures: Vec<_> = (0..50)
        .map(|i| {
            let c = &c;
            async move {
                c.query_one("SELECT $1::int * 2", &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0))
            }
        })
        .collect();
    let results = futures_join(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i32 * 2);
    }
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    // Poll all at once on this task: the queries are in flight together.
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(o) => outputs[i] = Some(o),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}

#[tokio::test]
async fn large_rows_and_copy_pass_through() {
    let (_db, sidecar) = setup("large_copy").await;
    let c = sidecar.connect().await;
    c.batch_execute("CREATE TABLE big (id int, body text)")
        .await
        .unwrap();
    let body = "x".repeat(8 * 1024 * 1024);
    c.execute("INSERT INTO big VALUES (1, $1)", &[&body])
        .await
        .unwrap();
    let r = c.query_one("SELECT body FROM big", &[]).await.unwrap();
    assert_eq!(r.get::<_, &str>(0).len(), body.len());
    // COPY in and out through psql.
    let (ok, _, err) = psql(
        sidecar.port,
        &[
            "-c",
            "CREATE TABLE c (a int, b text)",
            "-c",
            "\\copy c FROM PROGRAM 'printf \"1\\tone\\n2\\ttwo\\n\"'",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = psql(sidecar.port, &["-c", "COPY c TO STDOUT"]);
    assert!(ok, "{err}");
    assert_eq!(out, "1\tone\n2\ttwo\n");
}

#[tokio::test]
async fn oversized_message_is_a_clear_error() {
    let pg = server();
    let db = db_name("oversized");
    pg.create_database(&db).await;
    let sidecar = Sidecar::start_with(
        &manifests(pg, &db, ADMIN, "disable", &policy(ALLOW_ALL)),
        "shop/report-job",
        &["--max-message-size", "65536"],
    );
    let c = sidecar.connect().await;
    let q = format!("SELECT '{}'", "y".repeat(100_000));
    let err = c.simple_query(&q).await.unwrap_err();
    let text = message(&err);
    assert!(text.contains("above the maximum of 65536 bytes"), "{text}");
    assert!(text.contains("--max-message-size"), "{text}");
    // The sidecar itself is fine.
    let c = sidecar.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn md5_and_cleartext_upstream_auth() {
    let pg = server();
    let db = db_name("md5");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'md5';
             DROP ROLE IF EXISTS md5user; CREATE ROLE md5user LOGIN PASSWORD '{PASSWORD}';
             DROP ROLE IF EXISTS clearuser; CREATE ROLE clearuser LOGIN PASSWORD '{PASSWORD}';"
        ))
        .await
        .unwrap();
    for user in ["md5user", "clearuser"] {
        let sidecar = Sidecar::start(
            &manifests(pg, &db, user, "disable", &policy(ALLOW_ALL)),
            "shop/report-job",
        );
        let c = sidecar.connect().await;
        let who: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
}

#[tokio::test]
async fn wrong_upstream_password_is_reported() {
    let pg = server();
    let db = db_name("wrongpw");
    pg.create_database(&db).await;
    let m = manifests(pg, &db, ADMIN, "disable", &policy(ALLOW_ALL))
        .replace(PASSWORD, "not-the-password");
    let sidecar = Sidecar::start(&m, "shop/report-job");
    let Err(err) = try_connect(&sidecar.url()).await else {
        panic!("the session must be refused")
    };
    let text = message(&err);
    assert!(
        text.contains("could not open a session to the upstream"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"));
    // The refusal is on record (so the check below reads a written file).
    sidecar
        .audit_events_until("the session's denial", |e| e["type"] == "denial")
        .await;
    assert!(!sidecar.audit_text().contains("not-the-password"));
    assert!(!sidecar.log_text().contains("not-the-password"));
}

#[tokio::test]
async fn cancel_request_reaches_the_upstream() {
    let (_db, sidecar) = setup("cancel").await;
    let c = sidecar.connect().await;
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = c.simple_query("SELECT pg_sleep(20)").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    canceller.await.unwrap().unwrap();
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn notices_and_parameter_status_reach_the_client() {
    let (_db, sidecar) = setup("notices").await;
    let (ok, _out, err) = psql(
        sidecar.port,
        &[
            "-c",
            "CREATE TABLE IF NOT EXISTS t (a int)",
            "-c",
            "CREATE TABLE IF NOT EXISTS t (a int)",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("already exists, skipping"), "{err}");
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-c",
            "SET application_name = 'via-sluice'",
            "-c",
            "SHOW application_name",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("via-sluice"));
}

#[tokio::test]
async fn ssl_request_is_answered_no() {
    let (_db, sidecar) = setup("sslrequest").await;
    // psql with sslmode=prefer asks for TLS first, gets 'N', goes on in plain text.
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app dbname=x sslmode=prefer",
            sidecar.port
        ))
        .args(["-X", "-t", "-c", "SELECT 42"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("42"));
    // sslmode=require cannot be satisfied on loopback.
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app dbname=x sslmode=require",
            sidecar.port
        ))
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn pgbench(port: u16, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("pgbench")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .arg("-U")
        .arg("app")
        .args(args)
        .arg("x")
        .output()
        .expect("run pgbench (install postgresql-contrib / postgresql-client)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn pgbench_simple_extended_prepared() {
    let (db, sidecar) = setup("pgbench").await;
    // Initialised directly: pgbench -i sends `COPY … WITH (FREEZE ON)`, which
    // the policy engine's SQL parser cannot parse (onParseError would deny it).
    let out = std::process::Command::new("pgbench")
        .args([
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &server().port.to_string(),
            "-U",
            ADMIN,
            &db,
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for protocol in ["simple", "extended", "prepared"] {
        let (ok, out) = pgbench(sidecar.port, &["-M", protocol, "-c", "2", "-t", "50"]);
        assert!(ok, "{protocol}: {out}");
        assert!(
            out.contains("number of transactions actually processed: 100/100"),
            "{protocol}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{protocol}: {out}"
        );
    }
}

#[tokio::test]
async fn tls_verify_full_with_channel_binding() {
    let pg = tls_server();
    let db = db_name("tls");
    pg.create_database(&db).await;
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "verify-full", &policy(ALLOW_ALL)),
        "shop/report-job",
    );
    let c = sidecar.connect().await;
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the upstream session must be TLS");
    let audit = sidecar.audit_text();
    assert!(audit.contains("scram channel binding on"), "{audit}");
}

#[tokio::test]
async fn tls_verify_full_refuses_an_unknown_ca() {
    let pg = tls_server();
    let db = db_name("tls_bad_ca");
    pg.create_database(&db).await;
    // verify-full without the test CA: the system roots do not trust it.
    let m = manifests(pg, &db, ADMIN, "verify-full", &policy(ALLOW_ALL))
        .replace(", caSecretRef: {name: db-ca}", "");
    let sidecar = Sidecar::start(&m, "shop/report-job");
    let Err(err) = try_connect(&sidecar.url()).await else {
        panic!("the session must fail")
    };
    assert!(message(&err).contains("TLS handshake"), "{}", message(&err));
    // require: encrypted, certificate not checked.
    let m = manifests(pg, &db, ADMIN, "require", &policy(ALLOW_ALL))
        .replace(", caSecretRef: {name: db-ca}", "");
    let sidecar = Sidecar::start(&m, "shop/report-job");
    let c = sidecar.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn admin_endpoints() {
    let (_db, sidecar) = setup("admin").await;
    let c = sidecar.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
    let metrics = http_get(sidecar.admin_port, "/metrics").await;
    assert!(
        metrics.contains("sluice_statements_total{connection=\"orders-db\",decision=\"allow\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_active_sessions"), "{metrics}");
    assert!(
        metrics.contains("sluice_upstream_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        http_get(sidecar.admin_port, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(sidecar.admin_port, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn run_subcommand_outside_a_pod_says_what_is_missing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-sidecar"))
        .arg("run")
        .env_remove("SLUICE_GATEWAY_URL")
        .env_remove("SLUICE_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SLUICE_GATEWAY_URL is not set"), "{err}");
    assert!(err.contains("standalone"), "{err}");
}

#[tokio::test]
async fn tls_verify_ca_accepts_a_name_mismatch_but_verify_full_does_not() {
    let pg = tls_server();
    let db = db_name("tls_verify_ca");
    pg.create_database(&db).await;
    // The certificate names localhost and 127.0.0.1; 127.0.0.2 reaches the same server.
    let m = manifests(pg, &db, ADMIN, "verify-ca", &policy(ALLOW_ALL))
        .replace("host: localhost", "host: 127.0.0.2");
    let sidecar = Sidecar::start(&m, "shop/report-job");
    let c = sidecar.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
    let m = manifests(pg, &db, ADMIN, "verify-full", &policy(ALLOW_ALL))
        .replace("host: localhost", "host: 127.0.0.2");
    let sidecar = Sidecar::start(&m, "shop/report-job");
    let Err(err) = try_connect(&sidecar.url()).await else {
        panic!("verify-full must refuse a certificate for another name")
    };
    assert!(message(&err).contains("TLS handshake"), "{}", message(&err));
}

#[tokio::test]
async fn upstream_termination_is_reported_to_the_client() {
    let (db, sidecar) = setup("upstream_gone").await;
    let c = sidecar.connect().await;
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = connect(&server().admin_url(&db)).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    // The server's own FATAL (57P01) or the sidecar's 08006: either way the client is told.
    let text = message(&err);
    assert!(
        text.contains("terminating connection")
            || text.contains("closed the session")
            || err.is_closed(),
        "{text}"
    );
    // The sidecar serves new sessions.
    let c = sidecar.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
}

/// A session's log lines carry its span (#20): the Connection, the identity
/// and the session id of its audit events, once for the session rather than
/// repeated in each log call.
#[tokio::test]
async fn a_sessions_log_lines_carry_its_span() {
    let (_db, sidecar) = setup("log_span").await;
    let mut raw = RawClient::connect(sidecar.port);
    // A message type with no meaning ends the session (FATAL 08P01); the
    // end is logged at debug (test sidecars log at debug).
    raw.send(&[(b'!', Vec::new())]);
    let (tags, bytes) = raw.read_messages(1);
    assert_eq!(tags, vec![b'E'], "{}", String::from_utf8_lossy(&bytes));
    let events = sidecar
        .audit_events_until("the session's end", |e| e["type"] == "sessionEnd")
        .await;
    let id = events
        .iter()
        .find(|e| e["type"] == "sessionStart")
        .and_then(|e| e["session"].as_str())
        .expect("the session's id")
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        let log = sidecar.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("session ended with an error"))
        {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session's end was not logged: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for field in [
        id.as_str(),
        "shop/report-job",
        "orders-db",
        "invalid frontend message type",
    ] {
        assert!(line.contains(field), "{field:?} not in {line}");
    }
}
