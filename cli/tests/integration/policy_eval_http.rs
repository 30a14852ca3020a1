//! `kubectl-sluice policy eval --http` says what the sidecar does with a
//! request: the refusals before any rule decides it (ambiguous paths,
//! disguised parameters, query parameters standing for judged body fields)
//! and the readings the sidecar decides (HEAD as GET, paths in any case).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use serde_json::Value;

const MANIFESTS: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: api, namespace: ns}
spec:
  protocol: http
  upstream: {baseURL: "https://api.example.com"}
  credentials: {secretRef: {name: api-creds}}
  listen: {port: 18080}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: api, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api]
  defaultAction: allow
  rules:
    - {name: no-export, match: {methods: [GET], paths: ["/v1/export/**"]}, action: deny}
    - {name: no-admin, match: {paths: ["/v1/Admin/**"]}, action: deny}
    - {name: no-debug, match: {methods: [GET], paths: ["/v1/**"], query: {debug: "1"}}, action: deny}
    - name: big-refunds
      match: {methods: [POST], paths: ["/v1/refunds"], jsonBody: [{path: "$.amount", greaterThan: 100}]}
      action: deny
"#;

/// A request line, its body, and the `action`, `error` and `limit` the
/// sidecar gives it.
type Case = (
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// A request as `policy eval` decides it.
fn decide(dir: &str, line: &str, body: Option<&str>) -> Value {
    let mut args = vec![
        "policy",
        "eval",
        "-f",
        dir,
        "--as",
        "ns/app",
        "--connection",
        "api",
        "--http",
        line,
    ];
    if let Some(b) = body {
        args.extend(["--body", b]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(&args)
        .output()
        .expect("run kubectl-sluice");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sidecar refuses or denies each of these (`sidecar/tests/http/http_attacks.rs`:
/// `query_parameters_cannot_stand_for_body_fields`,
/// `globs_with_capitals_hold_in_any_case`,
/// `query_parameters_are_read_as_servers_read_them`, and the HEAD and
/// any-case readings); `policy eval` allowed all but the padded path (which
/// it denied without naming the sidecar's refusal).
#[test]
fn eval_refuses_and_decides_as_the_sidecar_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.yaml"), MANIFESTS).unwrap();
    let dir = dir.path().to_str().unwrap();
    let mut wrong = Vec::new();
    let cases: [Case; 14] = [
        // HEAD runs GET's handler.
        ("HEAD /v1/export/x", None, "deny", None, None),
        ("head /v1/export/x", None, "deny", None, None),
        // Servers that route in any case.
        ("GET /V1/EXPORT/x", None, "deny", None, None),
        ("GET /v1/admin/x", None, "deny", None, None),
        ("DELETE /V1/ADMIN", None, "deny", None, None),
        // Query parameters merged into the body a rule judges.
        (
            "POST /v1/refunds?amount=500",
            Some("{}"),
            "deny",
            Some("queryRefused"),
            Some("bodyField"),
        ),
        (
            "POST /V1/REFUNDS?AMOUNT=500",
            Some("{}"),
            "deny",
            Some("queryRefused"),
            Some("bodyField"),
        ),
        // Another spelling of a parameter a rule names.
        (
            "GET /v1/ok?DEBUG=1",
            None,
            "deny",
            Some("queryRefused"),
            Some("parameterSpelling"),
        ),
        // A padded segment: some servers drop the padding.
        (
            "GET /v1/export%20/x",
            None,
            "deny",
            Some("ambiguousPath"),
            None,
        ),
        // What passes the sidecar passes here.
        (
            "POST /v1/refunds?page=2",
            Some(r#"{"amount":50}"#),
            "allow",
            None,
            None,
        ),
        ("GET /v1/ok?debug=2", None, "allow", None, None),
        ("HEAD /v1/ok", None, "allow", None, None),
        ("GET /v1/exports", None, "allow", None, None),
        ("POST /v1/ok?amount=500", Some("{}"), "allow", None, None),
    ];
    for (line, body, action, error, limit) in cases {
        let v = decide(dir, line, body);
        let got = (
            v["action"].as_str(),
            v["error"].as_str(),
            v["limit"].as_str(),
        );
        if got != (Some(action), error, limit) {
            wrong.push(format!("{line} {body:?}: {v}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not as the sidecar:\n{}",
        wrong.join("\n")
    );
    // The reasons are the sidecar's.
    let v = decide(dir, "POST /v1/refunds?amount=500", Some("{}"));
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("query parameter \"amount\""), "{reason}");
    let v = decide(dir, "HEAD /v1/export/x", None);
    assert_eq!(v["rule"], "no-export", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("decided as GET /v1/export/x"), "{reason}");
}
