//! SIGTERM stops every plane's listeners, not only PostgreSQL's
//! (sidecar/tests/pg/lifecycle_shutdown.rs): on an HTTP and a MySQL Connection
//! a new connection is refused at once while the request or statement in
//! flight finishes, then the sidecar exits 0 with every session's end on
//! record. The grace period is far longer than the tests wait: a listener
//! that still accepts is seen accepting, not closed by the exit.
//!
//! Real clients (a raw HTTP/1.1 client, PyMySQL) through
//! `sluice-sidecar standalone` to a real upstream (a plain HTTP server that
//! answers when the test says so; MariaDB).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;
use crate::mysql_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use common::Sidecar;
use sluice_e2e::harness::{http_manifests, http_upstream};

/// Polls `check` every 20 ms until it holds, for at most 20 s.
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// New connections to the sidecar's listener are refused (polled: the
/// listener closes as its accept loop is stopped).
fn until_refused(sidecar: &Sidecar) {
    until("new connections are refused", || {
        TcpStream::connect(("127.0.0.1", sidecar.port)).is_err()
    });
}

/// The audit trail verifies and every session started also ended; at least
/// `sessions` started (HTTP records decisions, not sessions).
fn every_session_ended_on_record(sidecar: &Sidecar, sessions: usize) {
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
    let events = sidecar.audit_events();
    let ids = |kind: &str| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["session"].as_str().unwrap().to_string())
            .collect()
    };
    let started = ids("sessionStart");
    assert!(started.len() >= sessions, "{text}");
    assert_eq!(ids("sessionEnd"), started, "{text}");
}

#[test]
fn sigterm_stops_the_http_listener_while_the_request_in_flight_finishes() {
    // `/slow` is answered once `release` says so, anything else at once.
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let up = http_upstream(move |head| {
        if head.starts_with(b"GET /slow ") {
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
            ("text/plain", "slow and done")
        } else {
            ("text/plain", "quick")
        }
    });
    let mut sidecar = Sidecar::start_with(
        &http_manifests(up, "{PORT}", ""),
        "shop/app",
        &["--shutdown-grace", "600"],
    );
    let mut busy = TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: api\r\n\r\n")
        .unwrap();
    // In flight once decided (the audit is write-ahead).
    until("the request is in flight", || {
        std::fs::read_to_string(&sidecar.audit)
            .unwrap_or_default()
            .contains("/slow")
    });
    sidecar.signal("TERM");

    until_refused(&sidecar);
    release.send(()).unwrap();
    let mut answer = String::new();
    busy.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("slow and done"), "{answer}");

    let status = sidecar.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_text());
    every_session_ended_on_record(&sidecar, 0);
    assert!(sidecar.audit_text().contains("/slow"));
}

#[test]
fn sigterm_stops_the_mysql_listener_while_the_statement_in_flight_finishes() {
    let m = mysql_support::maria();
    let db = "sigterm_planes";
    m.database(db);
    let mut sidecar = Sidecar::start_with(
        &mysql_support::manifests(m, db, "  defaultAction: allow\n"),
        "shop/report-job",
        &["--shutdown-grace", "600"],
    );
    // A PyMySQL session: the statement's row is printed, then the session
    // stays open until stdin closes.
    let script = "import os, sys, pymysql\n\
                  c = pymysql.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='workload', password='', connect_timeout=10)\n\
                  cur = c.cursor()\n\
                  cur.execute(\"SELECT SLEEP(2), 'slept'\")\n\
                  print(cur.fetchone()[1], flush=True)\n\
                  sys.stdin.readline()\n\
                  c.close()\n";
    let mut client = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PORT", sidecar.port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (PyMySQL: `pip install pymysql`)");
    until("the statement is in flight", || {
        std::fs::read_to_string(&sidecar.audit)
            .unwrap_or_default()
            .to_lowercase()
            .contains("sleep(")
    });
    sidecar.signal("TERM");

    until_refused(&sidecar);
    let mut row = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut row)
        .unwrap();
    assert_eq!(row.trim(), "slept", "the statement in flight finishes");
    drop(client.stdin.take());
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = sidecar.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_text());
    every_session_ended_on_record(&sidecar, 1);
}
