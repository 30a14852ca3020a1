//! Session settings that change how PostgreSQL reads a statement's bytes
//! (`standard_conforming_strings`, `client_encoding`): the sidecar never
//! decides a statement on another reading than the server's. While the
//! session is in a state the sidecar does not model, statements are refused
//! (except the ones that bring it back), and a statement that may change
//! these settings is a barrier for what is pipelined after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::frontend::*;
use common::*;

const SSN: &str = "123-45-6789";

const POLICY: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

/// The report's statement: one harmless SELECT with the setting on, a
/// SELECT and a DROP TABLE (which the deny rule would refuse) with it off.
const SMUGGLED_DROP: &str = r"SELECT 'a\'' ; DROP TABLE t; --'";

async fn setup(test: &str, user: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE t (id int);
             CREATE TABLE customers (id int primary key, ssn text, note text);
             INSERT INTO customers VALUES (1, '{SSN}', 'café');"
        ))
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, user, "disable", &policy(POLICY)),
        "shop/report-job",
    );
    (sidecar, admin)
}

async fn t_exists(admin: &tokio_postgres::Client) -> bool {
    admin
        .query_one("SELECT to_regclass('public.t') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The refusal of a statement read under a setting the sidecar does not model.
fn assert_refused_for(bytes: &[u8], setting: &str) {
    assert!(contains(bytes, "C0A000"), "{}", text(bytes));
    assert!(contains(bytes, setting), "{}", text(bytes));
}

#[tokio::test]
async fn standard_conforming_strings_off_refuses_until_back_on() {
    let (sidecar, admin) = setup("scs_psql", ADMIN).await;
    // psql, one statement per -c (one Query each).
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-c",
            "SET standard_conforming_strings = off",
            "-c",
            SMUGGLED_DROP,
        ],
    );
    assert!(!ok, "{out}{err}");
    assert!(err.contains("standard_conforming_strings"), "{err}");
    assert!(t_exists(&admin).await, "the smuggled DROP TABLE ran");

    // Raw wire, pipelined in one write: the SET is a barrier, so the next
    // statement is read under what the server reports.
    for set in [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO 'off'",
        "SET SESSION standard_conforming_strings = false",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)",
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "SET \"standard_conforming_strings\" = off",
    ] {
        let mut raw = RawClient::connect(sidecar.port);
        raw.send(&[query(set), query(SMUGGLED_DROP), query("SELECT 'x' || 'y'")]);
        let first = raw.read_until_ready();
        assert!(!contains(&first, "SERROR"), "{set}: {}", text(&first));
        assert_refused_for(&raw.read_until_ready(), "standard_conforming_strings");
        assert_refused_for(&raw.read_until_ready(), "standard_conforming_strings");
        assert!(t_exists(&admin).await, "{set}: the smuggled DROP TABLE ran");
        // Back on: statements run again.
        let back = raw.simple("SET standard_conforming_strings = on");
        assert!(!contains(&back, "SERROR"), "{}", text(&back));
        let bytes = raw.simple("SELECT 'x' || 'y'");
        assert!(contains(&bytes, "xy"), "{}", text(&bytes));
    }

    // SET LOCAL in a transaction; ROLLBACK brings the session back.
    let mut raw = RawClient::connect(sidecar.port);
    assert!(!contains(&raw.simple("BEGIN"), "SERROR"));
    raw.send(&[
        query("SET LOCAL standard_conforming_strings = off"),
        query(SMUGGLED_DROP),
    ]);
    raw.read_until_ready();
    assert_refused_for(&raw.read_until_ready(), "standard_conforming_strings");
    assert!(!contains(&raw.simple("ROLLBACK"), "SERROR"));
    assert!(contains(&raw.simple("SELECT 'back'"), "back"));

    // RESET after a SET.
    let mut raw = RawClient::connect(sidecar.port);
    raw.simple("SET standard_conforming_strings = off");
    assert_refused_for(&raw.simple("SELECT 1"), "standard_conforming_strings");
    assert!(!contains(
        &raw.simple("RESET standard_conforming_strings"),
        "SERROR"
    ));
    assert!(contains(&raw.simple("SELECT 'reset'"), "reset"));
    assert!(t_exists(&admin).await);
}

#[tokio::test]
async fn a_settings_change_must_come_alone() {
    let (sidecar, admin) = setup("scs_alone", ADMIN).await;
    let mut raw = RawClient::connect(sidecar.port);
    // In one string: refused whole (nothing of it runs).
    let bytes = raw.simple("SET standard_conforming_strings = off; SELECT 1");
    assert!(contains(&bytes, "C0A000"), "{}", text(&bytes));
    assert!(contains(&bytes, "must be sent alone"), "{}", text(&bytes));
    let bytes = raw.simple("SHOW standard_conforming_strings");
    assert!(contains(&bytes, "on"), "{}", text(&bytes));

    // Extended protocol: the SET must end its Sync group.
    raw.send(&[
        parse("SET standard_conforming_strings = off"),
        bind(),
        execute(),
        parse("SELECT 1"),
        bind(),
        execute(),
        sync(),
    ]);
    let bytes = raw.read_until_ready();
    assert!(contains(&bytes, "must be sent alone"), "{}", text(&bytes));

    // Alone in its group, pipelined with the next group in one write: the
    // next group is decided after the server's answer.
    raw.send(&[
        parse("SET standard_conforming_strings = off"),
        bind(),
        execute(),
        sync(),
        parse(r"SELECT 'a\'' "),
        bind(),
        execute(),
        sync(),
    ]);
    let first = raw.read_until_ready();
    assert!(!contains(&first, "SERROR"), "{}", text(&first));
    assert_refused_for(&raw.read_until_ready(), "standard_conforming_strings");
    assert!(t_exists(&admin).await);
}

#[tokio::test]
async fn settings_from_the_role_and_the_startup_packet() {
    let pg = server();
    let admin = connect(&pg.admin_url("postgres")).await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS lexer;
             CREATE ROLE lexer LOGIN SUPERUSER PASSWORD '{PASSWORD}';
             ALTER ROLE lexer SET standard_conforming_strings = off;"
        ))
        .await
        .unwrap();
    let (sidecar, db_admin) = setup("scs_role", "lexer").await;
    // `ALTER ROLE … SET` is in force from the start.
    let mut raw = RawClient::connect(sidecar.port);
    assert_refused_for(&raw.simple(SMUGGLED_DROP), "standard_conforming_strings");
    assert!(t_exists(&db_admin).await, "the smuggled DROP TABLE ran");
    assert!(!contains(
        &raw.simple("SET standard_conforming_strings = on"),
        "SERROR"
    ));
    let bytes = raw.simple(SMUGGLED_DROP);
    assert!(!contains(&bytes, "SERROR"), "{}", text(&bytes));
    assert!(t_exists(&db_admin).await);
    drop(sidecar);

    // `options` in the startup packet never reaches the server: the
    // statement is one harmless SELECT for both.
    let (sidecar, db_admin) = setup("scs_options", ADMIN).await;
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app dbname=x",
            sidecar.port
        ))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            "SHOW standard_conforming_strings",
            "-c",
        ])
        .arg(SMUGGLED_DROP)
        .env("PGOPTIONS", "-c standard_conforming_strings=off")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("on\n"), "{stdout}");
    assert!(t_exists(&db_admin).await, "the smuggled DROP TABLE ran");
    admin
        .batch_execute("DROP OWNED BY lexer; DROP ROLE lexer;")
        .await
        .ok();
}

#[tokio::test]
async fn a_non_utf8_client_encoding_is_refused() {
    let (sidecar, _admin) = setup("enc_latin1", ADMIN).await;
    // From the startup packet (psql with PGCLIENTENCODING).
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app dbname=x",
            sidecar.port
        ))
        .args([
            "-X",
            "-At",
            "-c",
            "SELECT ssn, note, translate(ssn, '0123456789', 'ÀÁÂÃÄÅÆÇÈÉ') FROM customers",
        ])
        .env("PGCLIENTENCODING", "LATIN1")
        .output()
        .unwrap();
    let all = [out.stdout.clone(), out.stderr.clone()].concat();
    assert!(!out.status.success(), "{}", text(&all));
    assert!(
        !contains(&all, SSN) && !contains(&all, "6789"),
        "{}",
        text(&all)
    );
    assert!(contains(&all, "client_encoding"), "{}", text(&all));

    // SET in the session, pipelined with a read of the masked column.
    for set in [
        "SET client_encoding = 'LATIN1'",
        "SET NAMES 'WIN1252'",
        "SELECT set_config('client_encoding', 'SJIS', false)",
    ] {
        let mut raw = RawClient::connect(sidecar.port);
        raw.send(&[
            query(set),
            query("SELECT ssn, note FROM customers"),
            query("SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers"),
        ]);
        let first = raw.read_until_ready();
        assert!(!contains(&first, "SERROR"), "{set}: {}", text(&first));
        for _ in 0..2 {
            let bytes = raw.read_until_ready();
            assert_refused_for(&bytes, "client_encoding");
            assert!(!contains(&bytes, "6789"), "{}", text(&bytes));
        }
        assert!(!contains(
            &raw.simple("SET client_encoding = 'UTF8'"),
            "SERROR"
        ));
        let bytes = raw.simple("SELECT ssn, note FROM customers");
        assert!(contains(&bytes, "café"), "{}", text(&bytes));
        assert!(!contains(&bytes, SSN), "{}", text(&bytes));
    }
}
