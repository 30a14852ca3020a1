//! `sluice-sidecar standalone` refuses manifests that mean something else than
//! they say: a misspelt field, a misspelt kind, an empty rule match. Each one
//! stops the sidecar before it listens, naming the file, the object and the field.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: ns}
stringData: {username: app, password: pw}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: db, namespace: ns}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: 1, database: app, tls: {mode: disable}}
  credentials: {secretRef: {name: creds}}
  listen: {port: 0}
---
apiVersion: sluice.dev/v1alpha1
kind: KIND
metadata: {name: p, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
  defaultAction: deny
  rules:
    - {name: reads, match: MATCH, action: allow}
"#;

/// Runs standalone on `text`; returns its exit status and stderr once it
/// exits (it must exit on its own: it never gets to listen).
fn standalone(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("manifests.yaml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-sidecar"))
        .args(["standalone", "--as", "ns/app", "--no-audit-stdout", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("standalone kept running on {text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn misspelt_fields_kinds_and_empty_matches_stop_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "AccessPolicy",
            "{statments: [select]}",
            &[
                "manifests.yaml",
                "document 3",
                "AccessPolicy ns/p",
                "unknown field spec.rules[0].match.statments",
            ][..],
        ),
        (
            "AccessPolicy",
            "{}",
            &[
                "manifests.yaml",
                "document 3",
                "spec.rules[0].match",
                "match: {any: true}",
            ][..],
        ),
        (
            "AccesPolicy",
            "{statements: [select]}",
            &[
                "manifests.yaml",
                "document 3",
                "unknown kind \"AccesPolicy\"",
            ][..],
        ),
    ];
    for (kind, m, needles) in cases {
        let text = MANIFESTS.replace("KIND", kind).replace("MATCH", m);
        let (code, stderr) = standalone(dir.path(), &text);
        assert_ne!(code, Some(0), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        }
    }
}
