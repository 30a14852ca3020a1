//! Issue 23 item 10: the sidecar writes no ANSI colours into a file or pipe
//! (its text logs are read by `kubectl logs`, files and log shippers).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn text_logs_to_a_pipe_carry_no_colours() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("m.yaml");
    std::fs::write(
        &manifests,
        format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: shop}}
stringData: {{username: app, password: not-used-here}}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {{name: db, namespace: shop}}
spec:
  protocol: postgres
  upstream: {{host: 127.0.0.1, port: 1, database: db, tls: {{mode: disable}}}}
  credentials: {{secretRef: {{name: creds}}}}
  listen: {{port: {port}}}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: p, namespace: shop}}
spec:
  subjects: [{{serviceAccount: app}}]
  connections: [db]
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-sidecar"))
        .args([
            "standalone",
            "-f",
            manifests.to_str().unwrap(),
            "--as",
            "shop/app",
        ])
        .args(["--no-audit-stdout", "--log-format", "text"])
        .env("SLUICE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let ready = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let done = line.contains("ready");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(ready, "no ready line:\n{text}");
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in piped logs:\n{text}"
    );
}
