//! Recordings of prepared statements (#21): a driver describes a statement
//! once, at prepare, and each Execute of it returns rows without a
//! RowDescription of their own. The recording names those rows' columns
//! after the statement's Describe, as the driver did — with the sidecar's
//! own Describe under masking, and with the client's Describe without it.
//! Checked through `kubectl sluice replay -o json`, with tokio-postgres
//! (Parse/Describe at prepare, Bind/Execute at each query).
//!
//! `kubectl sluice` is the workspace's `target/…/kubectl-sluice`, beside the
//! sidecar binary (build it first: `cargo build -p kubectl-sluice`). A
//! missing binary fails the tests, it never skips them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SSN: &str = "123-45-6789";
/// An int4 whose four bytes in binary are the letters "ABCD": valid UTF-8
/// without a NUL, so only its format says it is not text.
const ABCD: i32 = 0x4142_4344;
/// "BCDE", likewise.
const BCDE: i32 = 0x4243_4445;

async fn setup(test: &str, masking: bool) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text, code int);
             INSERT INTO customers VALUES
               (1, 'Alice', '{SSN}', {ABCD}), (2, 'Bob', '987-65-4321', {BCDE});"
        ))
        .await
        .unwrap();
    let masking = if masking {
        "  masking:\n    - columns: [\"customers.ssn\"]\n      strategy: redact\n"
    } else {
        ""
    };
    let policy = policy(&format!(
        "  recording: results\n  defaultAction: allow\n{masking}"
    ));
    Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    )
}

fn kubectl_sluice() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sluice-sidecar")).with_file_name("kubectl-sluice");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p kubectl-sluice)",
        path.display()
    );
    path
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The audit events once a session ended.
async fn session_ended(sidecar: &Sidecar) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<Value> = std::fs::read_to_string(&sidecar.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if events.iter().any(|e| e["type"] == "sessionEnd") {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not end within 20s: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn executes_of_a_prepared_statement_are_recorded_with_its_column_names() {
    for masking in [true, false] {
        let sidecar = setup(&format!("rec_prepared_{masking}"), masking).await;
        let client = sidecar.connect().await;
        let stmt = client
            // Text columns: tokio-postgres asks for binary results, and a
            // text value's binary form is its text.
            .prepare("SELECT id::text AS id, name, ssn FROM customers WHERE id = $1")
            .await
            .unwrap();
        let mut received = Vec::new();
        for id in [1i32, 2] {
            let row = client.query_one(&stmt, &[&id]).await.unwrap();
            received.push(vec![
                Some(row.get::<_, String>(0)),
                Some(row.get::<_, String>(1)),
                Some(row.get::<_, String>(2)),
            ]);
        }
        // An Execute that returns no row still names its columns.
        assert!(client.query(&stmt, &[&99i32]).await.unwrap().is_empty());
        drop(client);
        if masking {
            assert_eq!(received[0][2].as_deref(), Some("[redacted]"));
        }

        let events = session_ended(&sidecar).await;
        let session = events
            .iter()
            .find(|e| e["type"] == "sessionStart")
            .and_then(|e| e["session"].as_str())
            .expect("a sessionStart with its session")
            .to_string();
        let out = Command::new(kubectl_sluice())
            .args(["replay", &session, "--audit"])
            .arg(&sidecar.audit)
            .args(["-o", "json"])
            .output()
            .expect("run kubectl-sluice");
        let replay: Value = serde_json::from_str(&stdout_ok(&out)).unwrap();
        let sets: Vec<Value> = replay["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "result")
            .map(|e| e["outcome"]["recorded"]["sets"].clone())
            .collect();
        let columns = json!(["id", "name", "ssn"]);
        assert_eq!(
            sets,
            vec![
                json!([{"columns": columns, "rows": [received[0]]}]),
                json!([{"columns": columns, "rows": [received[1]]}]),
                json!([{"columns": columns}]),
            ],
            "masking {masking}: each Execute's recording names the statement's columns and holds what the client received"
        );
    }
}

/// Frontend messages for a pipeline of Binds of a named statement.
mod wire {
    pub fn parse(name: &str, sql: &str) -> (u8, Vec<u8>) {
        let mut b = format!("{name}\0{sql}\0").into_bytes();
        b.extend_from_slice(&[0, 0]);
        (b'P', b)
    }

    pub fn describe_statement(name: &str) -> (u8, Vec<u8>) {
        (b'D', format!("S{name}\0").into_bytes())
    }

    /// Bind of the unnamed portal to `statement`, no parameters, these result formats.
    pub fn bind(statement: &str, formats: &[i16]) -> (u8, Vec<u8>) {
        let mut b = format!("\0{statement}\0").into_bytes();
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        (b'B', b)
    }

    pub fn execute() -> (u8, Vec<u8>) {
        (b'E', vec![0, 0, 0, 0, 0])
    }

    pub fn sync() -> (u8, Vec<u8>) {
        (b'S', vec![])
    }
}

/// #21: an Execute's values are recorded in the result formats its Bind
/// asked for, not the text formats of the Describe of its statement: a
/// binary int4 is recorded as the hex of its four bytes also when they
/// spell letters ("ABCD"), a binary text as its text, a masked value
/// masked. tokio-postgres asks for every result in binary; a raw client
/// pipelines three Binds of the unnamed portal (all binary, none, one per
/// column) before one Sync, the statement described only at Parse.
#[tokio::test]
async fn values_are_recorded_in_the_result_formats_their_bind_asked_for() {
    for masking in [true, false] {
        let sidecar = setup(&format!("rec_formats_{masking}"), masking).await;
        let client = sidecar.connect().await;
        let stmt = client
            .prepare("SELECT id, code, name, ssn FROM customers WHERE id = $1")
            .await
            .unwrap();
        let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(1), ABCD);
        let ssn = row.get::<_, String>(3);
        assert_eq!(ssn, if masking { "[redacted]" } else { SSN });
        drop(client);

        let mut raw = RawClient::connect(sidecar.port);
        raw.send(&[
            wire::parse("codes", "SELECT code, name, ssn FROM customers ORDER BY id"),
            wire::describe_statement("codes"),
            wire::sync(),
        ]);
        raw.read_until_ready();
        raw.send(&[
            wire::bind("codes", &[1]),
            wire::execute(),
            wire::bind("codes", &[]),
            wire::execute(),
            wire::bind("codes", &[1, 0, 1]),
            wire::execute(),
            wire::sync(),
        ]);
        let answer = raw.read_until_ready();
        if masking {
            assert!(!contains(&answer, SSN), "the client got the SSN");
        }
        drop(raw);

        let deadline = Instant::now() + Duration::from_secs(20);
        let events = loop {
            let events: Vec<Value> = std::fs::read_to_string(&sidecar.audit)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if events.iter().filter(|e| e["type"] == "sessionEnd").count() == 2 {
                break events;
            }
            assert!(
                Instant::now() < deadline,
                "two sessions did not end within 20s: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if masking {
            let audit = std::fs::read_to_string(&sidecar.audit).unwrap();
            assert!(!audit.contains(SSN), "the SSN is in the audit stream");
        }
        // Each session's recorded results in order (the driver's session first).
        let mut sessions: Vec<(String, Vec<Value>)> = Vec::new();
        for e in events.iter().filter(|e| e["type"] == "result") {
            let session = e["session"].as_str().unwrap_or_default().to_string();
            let sets = e["outcome"]["recorded"]["sets"].clone();
            match sessions.iter_mut().find(|(s, _)| *s == session) {
                Some((_, results)) => results.push(sets),
                None => sessions.push((session, vec![sets])),
            }
        }
        sessions.sort_by_key(|(_, results)| results.len());
        let sets: Vec<Value> = sessions.into_iter().flat_map(|(_, r)| r).collect();
        let (ssn1, ssn2) = if masking {
            ("[redacted]", "[redacted]")
        } else {
            (SSN, "987-65-4321")
        };
        let hex = |v: i32| format!("\\x{v:08x}");
        let columns = json!(["code", "name", "ssn"]);
        assert_eq!(
            sets,
            vec![
                json!([{
                    "columns": ["id", "code", "name", "ssn"],
                    "rows": [[hex(1), hex(ABCD), "Alice", ssn1]],
                }]),
                json!([{"columns": columns, "rows": [
                    [hex(ABCD), "Alice", ssn1],
                    [hex(BCDE), "Bob", ssn2],
                ]}]),
                json!([{"columns": columns, "rows": [
                    [ABCD.to_string(), "Alice", ssn1],
                    [BCDE.to_string(), "Bob", ssn2],
                ]}]),
                json!([{"columns": columns, "rows": [
                    [hex(ABCD), "Alice", ssn1],
                    [hex(BCDE), "Bob", ssn2],
                ]}]),
            ],
            "masking {masking}: each Execute's values are recorded in its Bind's formats"
        );
    }
}
