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

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SSN: &str = "123-45-6789";

async fn setup(test: &str, masking: bool) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text);
             INSERT INTO customers VALUES (1, 'Alice', '{SSN}'), (2, 'Bob', '987-65-4321');"
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
