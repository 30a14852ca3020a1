//! `kubectl-sluice policy eval` driven as a user would: the binary, the quickstart
//! manifests, JSON on stdout, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart")
}

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["policy", "eval"])
        .args(args)
        .output()
        .expect("run kubectl-sluice")
}

fn decide_with(dir: &Path, identity: &str, connection: &str, sql: &str) -> Value {
    let dir = dir.to_str().unwrap();
    let out = eval(&[
        "-f",
        dir,
        "--as",
        identity,
        "--connection",
        connection,
        "--sql",
        sql,
    ]);
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

fn decide(sql: &str) -> Value {
    decide_with(&quickstart(), "shop/report-job", "orders-db", sql)
}

#[test]
fn quickstart_decisions() {
    // (sql, action, rule)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("SELECT id, total FROM orders WHERE id = 7", "allow", None),
        ("SELECT name FROM customers", "allow", None),
        (
            "INSERT INTO orders (id, total) VALUES (1, 2.5)",
            "allow",
            None,
        ),
        ("UPDATE orders SET total = 0 WHERE id = 1", "allow", None),
        ("DELETE FROM orders WHERE id = 1", "allow", None),
        ("DROP TABLE customers", "deny", Some("no-schema-changes")),
        (
            "drop table if exists public.customers cascade",
            "deny",
            Some("no-schema-changes"),
        ),
        ("TRUNCATE orders", "deny", Some("no-schema-changes")),
        (
            "ALTER TABLE orders ADD COLUMN x int",
            "deny",
            Some("no-schema-changes"),
        ),
        ("CREATE TABLE t (id int)", "deny", Some("no-schema-changes")),
        (
            "SELECT * INTO backup FROM orders",
            "deny",
            Some("no-schema-changes"),
        ),
        (
            "CREATE TABLE copy AS SELECT * FROM customers",
            "deny",
            Some("no-schema-changes"),
        ),
        (
            "DELETE FROM orders",
            "requireApproval",
            Some("bulk-writes-need-a-human"),
        ),
        (
            "UPDATE customers SET email = NULL",
            "requireApproval",
            Some("bulk-writes-need-a-human"),
        ),
        (
            "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone",
            "requireApproval",
            Some("bulk-writes-need-a-human"),
        ),
        (
            "EXPLAIN ANALYZE DELETE FROM orders",
            "requireApproval",
            Some("bulk-writes-need-a-human"),
        ),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "deny",
            Some("no-server-files"),
        ),
        (
            "SELECT * FROM orders WHERE note = (SELECT pg_read_file('/etc/shadow'))",
            "deny",
            Some("no-server-files"),
        ),
        (
            "WITH x AS (SELECT (SELECT pg_catalog.pg_ls_dir('.')) AS f) SELECT * FROM x",
            "deny",
            Some("no-server-files"),
        ),
        (
            "SELECT lo_import('/etc/hosts')",
            "deny",
            Some("no-server-files"),
        ),
        (
            "INSERT INTO files VALUES (lo_export(1, '/tmp/x'))",
            "deny",
            Some("no-server-files"),
        ),
        // A string is as strict as its strictest statement.
        (
            "SELECT 1; DROP TABLE orders",
            "deny",
            Some("no-schema-changes"),
        ),
        (
            "SELECT 1; DELETE FROM orders; DROP TABLE x",
            "deny",
            Some("no-schema-changes"),
        ),
        (
            "SELECT 1; DELETE FROM orders",
            "requireApproval",
            Some("bulk-writes-need-a-human"),
        ),
        // Unparseable: onParseError deny.
        ("SELEKT * FROM orders", "deny", None),
    ];
    for (sql, action, rule) in cases {
        let v = decide(sql);
        assert_eq!(v["action"], *action, "{sql}: {v}");
        assert_eq!(v["rule"].as_str(), *rule, "{sql}: {v}");
        assert_eq!(v["dryRun"], false, "{sql}: {v}");
        if v["action"] != "allow" {
            assert_eq!(v["policy"], "reporting", "{sql}: {v}");
        }
    }
}

#[test]
fn statements_are_listed_with_kind_tables_functions() {
    let v = decide(
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id; DROP TABLE orders",
    );
    let st = v["statements"].as_array().unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0]["kind"], "select");
    assert_eq!(st[0]["tables"], serde_json::json!(["customers", "orders"]));
    assert_eq!(st[0]["action"], "allow");
    assert_eq!(st[1]["kind"], "drop");
    assert_eq!(st[1]["action"], "deny");
    let v = decide("SELECT upper(name), pg_read_file('x') FROM customers");
    let functions = v["statements"][0]["functions"].as_array().unwrap();
    assert!(functions.contains(&Value::from("upper")), "{v}");
    assert!(functions.contains(&Value::from("pg_read_file")), "{v}");
}

#[test]
fn group_subjects_bind_across_namespaces() {
    let qs = quickstart();
    let out = eval(&[
        "-f",
        qs.to_str().unwrap(),
        "-n",
        "shop",
        "--as",
        "ci/deployer",
        "--connection",
        "orders-db",
        "--sql",
        "DROP TABLE orders",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Bound through group system:serviceaccounts:ci, so the policy's rules apply.
    assert_eq!(
        (v["action"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("no-schema-changes"))
    );
    // Without -n the Connection is looked up in the identity's namespace: not there.
    let out = eval(&[
        "-f",
        qs.to_str().unwrap(),
        "--as",
        "ci/deployer",
        "--connection",
        "orders-db",
        "--sql",
        "SELECT 1",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unbound_identity_is_denied_with_a_reason() {
    let v = decide_with(&quickstart(), "shop/web", "orders-db", "SELECT 1");
    assert_eq!(v["action"], "deny");
    assert_eq!(v["policy"], Value::Null);
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("serviceaccount:shop/web") && reason.contains("orders-db"),
        "{reason}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const CONN: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: db, namespace: ns}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, database: app, tls: {mode: disable}}
  credentials: {secretRef: {name: creds}}
  listen: {port: 15432}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: api, namespace: ns}
spec:
  protocol: http
  upstream: {baseURL: "https://api.example.com"}
  credentials: {secretRef: {name: api-creds}}
  listen: {port: 18080}
"#;

#[test]
fn most_restrictive_across_policies_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conn.yaml", CONN);
    write(
        dir.path(),
        "policies.yaml",
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: a-permissive, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
  rules:
    - {name: reads, match: {statements: [select]}, action: allow}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: b-strict, namespace: ns}
spec:
  subjects: [{group: "system:serviceaccounts:ns"}]
  connections: [db]
  rules:
    - {name: no-audit-table, match: {tables: ["audit_*"]}, action: deny}
    - name: writes-approved
      match: {statements: [insert, update, delete]}
      action: requireApproval
      approval: {approvers: {users: [alice]}}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: c-rollout, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
  mode: dryRun
  rules:
    - {name: no-secrets, match: {tables: ["secrets"]}, action: deny}
"#,
    );
    let d = |sql: &str| decide_with(dir.path(), "ns/app", "db", sql);
    let v = d("SELECT * FROM audit_log");
    assert_eq!(
        (v["action"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("no-audit-table"))
    );
    assert_eq!(v["policy"], "b-strict");
    let v = d("INSERT INTO t VALUES (1)");
    assert_eq!(v["action"], "requireApproval");
    assert_eq!(v["enforced"], "requireApproval");
    // dryRun: recorded as deny, but what happens is allow.
    let v = d("SELECT * FROM secrets");
    assert_eq!(v["action"], "deny", "{v}");
    assert_eq!(v["dryRun"], true, "{v}");
    assert_eq!(v["enforced"], "allow", "{v}");
    assert_eq!(v["policy"], "c-rollout");
    // dryRun deny over an enforced requireApproval: still held for approval.
    let v = d("UPDATE secrets SET v = 1 WHERE id = 2");
    assert_eq!(v["action"], "deny", "{v}");
    assert_eq!(v["enforced"], "requireApproval", "{v}");
}

#[test]
fn http_requests() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conn.yaml", CONN);
    write(
        dir.path(),
        "policy.yaml",
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: payments, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api]
  defaultAction: deny
  rules:
    - {name: reads, match: {methods: [GET], paths: ["/v1/**"]}, action: allow}
    - name: big-refunds
      match: {methods: [POST], paths: ["/v1/refunds"], jsonBody: [{path: "$.amount", greaterThan: 1000}]}
      action: requireApproval
      approval: {approvers: {groups: [finance]}, mode: retry}
    - {name: refunds, match: {methods: [POST], paths: ["/v1/refunds"]}, action: allow}
"#,
    );
    let dirs = dir.path().to_str().unwrap();
    let run = |line: &str, body: Option<&str>| {
        let mut args = vec![
            "-f",
            dirs,
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
        let out = eval(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(run("GET /v1/charges/ch_1", None)["action"], "allow");
    assert_eq!(run("DELETE /v1/charges/ch_1", None)["action"], "deny");
    let v = run("POST /v1/refunds", Some(r#"{"amount": 5000}"#));
    assert_eq!(
        (v["action"].as_str(), v["rule"].as_str()),
        (Some("requireApproval"), Some("big-refunds"))
    );
    assert_eq!(
        run("POST /v1/refunds", Some(r#"{"amount": 50}"#))["rule"],
        "refunds"
    );
    // Encoded traversal cannot dodge the path rules.
    assert_eq!(run("GET /v1/../admin/users", None)["action"], "deny");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let qs = quickstart();
    let qs = qs.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let bad = dir.path().join("bad.yaml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "-f",
                "/nonexistent/x.yaml",
                "--as",
                "shop/a",
                "--connection",
                "c",
                "--sql",
                "SELECT 1",
            ],
            "/nonexistent/x.yaml",
        ),
        (
            vec![
                "-f",
                bad.to_str().unwrap(),
                "--as",
                "shop/a",
                "--connection",
                "c",
                "--sql",
                "SELECT 1",
            ],
            "bad.yaml",
        ),
        (
            vec![
                "-f",
                qs,
                "--as",
                "shop/report-job",
                "--connection",
                "nope",
                "--sql",
                "SELECT 1",
            ],
            "nope",
        ),
        (
            vec![
                "-f",
                qs,
                "--as",
                "noslash",
                "--connection",
                "orders-db",
                "--sql",
                "SELECT 1",
            ],
            "NAMESPACE/SERVICEACCOUNT",
        ),
        (
            vec![
                "-f",
                qs,
                "--as",
                "shop/report-job",
                "--connection",
                "orders-db",
                "--http",
                "GET /",
            ],
            "--sql",
        ),
    ];
    for (args, needle) in cases {
        let out = eval(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// A misspelt match field used to be dropped: the match became empty, and
/// an allow rule in a default-deny policy allowed `DROP TABLE`. Misspelt
/// fields, misspelt kinds and empty matches are refused (exit 2), naming
/// the file, the object and the field.
#[test]
fn misspelt_fields_and_kinds_are_refused() {
    let policy = |rule: &str, kind: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: p, namespace: ns}}\n\
             spec:\n  subjects: [{{serviceAccount: app}}]\n  connections: [db]\n  \
             defaultAction: deny\n  rules:\n    - {rule}\n"
        )
    };
    let run = |policy: &str| {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "conn.yaml", CONN);
        write(dir.path(), "policy.yaml", policy);
        let out = eval(&[
            "-f",
            dir.path().to_str().unwrap(),
            "--as",
            "ns/app",
            "--connection",
            "db",
            "--sql",
            "DROP TABLE customers",
        ]);
        (
            out.status.code(),
            String::from_utf8(out.stderr).unwrap(),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    // Spelt right, the rule allows selects only: the DROP is denied by default.
    let (code, _, stdout) = run(&policy(
        "{name: reads, match: {statements: [select]}, action: allow}",
        "AccessPolicy",
    ));
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["action"],
        "deny"
    );
    let cases = [
        (
            policy(
                "{name: reads, match: {statments: [select]}, action: allow}",
                "AccessPolicy",
            ),
            &[
                "policy.yaml",
                "AccessPolicy ns/p",
                "unknown field spec.rules[0].match.statments",
            ][..],
        ),
        (
            policy("{name: reads, match: {}, action: allow}", "AccessPolicy"),
            &[
                "policy.yaml",
                "spec.rules[0].match",
                "\"reads\"",
                "any: true",
            ][..],
        ),
        (
            policy(
                "{name: reads, match: {statements: [select]}, action: allow}",
                "AccesPolicy",
            ),
            &["policy.yaml", "unknown kind \"AccesPolicy\"", "object p"][..],
        ),
    ];
    for (text, needles) in cases {
        let (code, stderr, stdout) = run(&text);
        assert_eq!(code, Some(2), "{text}\nstdout {stdout}");
        assert_eq!(stdout, "", "no decision is printed");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        }
    }
}

/// Issue #16: `policy eval --body` reads a body as the sidecar does. Where an
/// enforced rule inspects the request's body, a body outside the strict
/// grammar (deep nesting, `NaN`, `1e400`, a byte-order mark, a lone
/// surrogate, a duplicate key) is refused with the sidecar's error, limit
/// and reason, not decided (a lenient reader let `amount: 100000` through or
/// took the last duplicate key); a query a rule inspects likewise.
#[test]
fn bodies_are_read_under_the_sidecars_strict_grammar() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conn.yaml", CONN);
    write(
        dir.path(),
        "policy.yaml",
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: payments, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api]
  defaultAction: deny
  rules:
    - name: big-refunds
      match: {methods: [POST], paths: ["/v1/refunds"], jsonBody: [{path: "$.amount", greaterThan: 1000}]}
      action: deny
    - {name: refunds, match: {methods: [POST], paths: ["/v1/refunds"]}, action: allow}
    - {name: export, match: {methods: [GET], paths: ["/v1/export"], query: {format: csv}}, action: deny}
    - {name: reads, match: {methods: [GET], paths: ["/v1/**"]}, action: allow}
"#,
    );
    let dirs = dir.path().to_str().unwrap();
    let run = |line: &str, body: Option<&str>| {
        let mut args = vec![
            "-f",
            dirs,
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
        let out = eval(&args);
        assert!(
            out.status.success(),
            "{line} {body:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let deep = format!(
        "{}{{\"amount\": 100000}}{}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let bodies: Vec<(&str, String, &str)> = vec![
        ("deep nesting", deep, "depth"),
        ("NaN", r#"{"amount": NaN}"#.into(), "number"),
        ("1e400", r#"{"amount": 1e400}"#.into(), "number"),
        (
            "2^60",
            r#"{"amount": 1152921504606846976}"#.into(),
            "number",
        ),
        (
            "byte-order mark",
            "\u{feff}{\"amount\": 100000}".into(),
            "encoding",
        ),
        (
            "lone surrogate",
            r#"{"amount": 100000, "note": "\ud800"}"#.into(),
            "encoding",
        ),
        (
            "duplicate key",
            r#"{"amount": 100000, "amount": 1}"#.into(),
            "duplicateKey",
        ),
        ("not JSON", "amount=100000".into(), "syntax"),
    ];
    for (what, body, limit) in &bodies {
        let v = run("POST /v1/refunds", Some(body));
        let expected = sluice_policy::http::parse_body(body.as_bytes()).unwrap_err();
        assert_eq!(v["action"], "deny", "{what}: {v}");
        assert_eq!(v["enforced"], "deny", "{what}: {v}");
        assert_eq!(v["error"], "bodyRefused", "{what}: {v}");
        assert_eq!(v["limit"], *limit, "{what}: {v}");
        assert_eq!(
            v["reason"],
            sluice_policy::http::body_refusal(&expected),
            "{what}: the sidecar's reason"
        );
        assert_eq!(v["rule"], Value::Null, "{what}: no rule decided it");
    }
    // Inside the grammar the rules decide as before.
    let v = run("POST /v1/refunds", Some(r#"{"amount": 100000}"#));
    assert_eq!(
        (&v["action"], &v["rule"]),
        (&"deny".into(), &"big-refunds".into())
    );
    assert_eq!(v.get("error"), None);
    let v = run("POST /v1/refunds", Some(r#"{"amount": 50}"#));
    assert_eq!(
        (&v["action"], &v["rule"]),
        (&"allow".into(), &"refunds".into())
    );
    // A body no enforced rule reads is forwarded by the sidecar and decided
    // without it: the same here.
    let v = run("GET /v1/charges", Some(r#"{"amount": NaN}"#));
    assert_eq!(
        (&v["action"], &v["rule"]),
        (&"allow".into(), &"reads".into())
    );
    // A query the rules inspect must read the same to every server.
    let v = run("GET /v1/export?format=json&format=csv", None);
    assert_eq!(
        (&v["action"], &v["error"], &v["limit"]),
        (
            &"deny".into(),
            &"queryRefused".into(),
            &"repeatedParameter".into()
        ),
        "{v}"
    );
    let e =
        sluice_policy::http::check_query("format=json&format=csv", &["format".into()]).unwrap_err();
    assert_eq!(v["reason"], sluice_policy::http::query_refusal(&e));
    let v = run("GET /v1/export?format=csv", None);
    assert_eq!(
        (&v["action"], &v["rule"]),
        (&"deny".into(), &"export".into())
    );
}

/// `masks` of a statement: each part of the result with the strategy, the
/// policy and the index of its masking rule (spec order, not strength order),
/// and the detectors.
#[test]
fn the_mask_plan_names_columns_strategies_policies_and_detectors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conn.yaml", CONN);
    write(
        dir.path(),
        "policies.yaml",
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: a-partial, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db, api]
  rules:
    - {name: reads, match: {statements: [select]}, action: allow}
  masking:
    - {columns: ["customers.email"], strategy: partial}
    - {columns: ["customers.ssn"], strategy: redact}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: b-detect, namespace: ns}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db, api]
  masking:
    - {columns: ["payments.card"], strategy: fixed, value: "****"}
    - {detectors: [email, creditCard], strategy: partial}
    - {jsonPaths: ["$.customer.email"], strategy: redact}
"#,
    );
    let v = decide_with(
        dir.path(),
        "ns/app",
        "db",
        "SELECT id, lower(email) AS e, ssn, name FROM customers; SELECT * FROM customers; SELECT p.card FROM payments p",
    );
    let masks = |i: usize| v["statements"][i]["masks"].clone();
    let columns = |i: usize| -> Vec<Value> {
        masks(i)["columns"]
            .as_array()
            .unwrap_or_else(|| panic!("statement {i} has no masks.columns: {v}"))
            .clone()
    };
    let first = columns(0);
    // column, masked, strategy, policy, index in spec.masking
    type ColumnMask<'a> = (&'a str, bool, Option<&'a str>, Option<&'a str>, Option<u64>);
    let summary: Vec<ColumnMask> = first
        .iter()
        .map(|c| {
            (
                c["column"].as_str().unwrap(),
                c["masked"].as_bool().unwrap(),
                c["strategy"].as_str(),
                c["policy"].as_str(),
                c["maskingRule"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("id", false, None, None, None),
            ("e", true, Some("partial"), Some("a-partial"), Some(0)),
            ("ssn", true, Some("redact"), Some("a-partial"), Some(1)),
            ("name", false, None, None, None),
        ],
        "{v}"
    );
    assert_eq!(
        first[1]["reason"], "derived from masked column customers.email",
        "{v}"
    );
    // A star: one entry for the table's columns, masked with the strongest rule
    // that names one of them.
    let star = columns(1);
    assert_eq!(star.len(), 1, "{v}");
    assert_eq!(star[0]["column"], "customers.*", "{v}");
    assert_eq!(star[0]["masked"], true, "{v}");
    assert_eq!(star[0]["strategy"], "redact", "{v}");
    // Through an alias, in another policy.
    let card = columns(2);
    assert_eq!(
        (
            card[0]["column"].as_str(),
            card[0]["strategy"].as_str(),
            card[0]["policy"].as_str(),
            card[0]["maskingRule"].as_u64()
        ),
        (Some("card"), Some("fixed"), Some("b-detect"), Some(0)),
        "{v}"
    );
    // Detectors run on every text value, with their rule.
    let detectors = &masks(0)["detectors"];
    assert_eq!(
        detectors["detectors"],
        serde_json::json!(["creditCard", "email"]),
        "{v}"
    );
    assert_eq!(
        (
            detectors["strategy"].as_str(),
            detectors["policy"].as_str(),
            detectors["maskingRule"].as_u64()
        ),
        (Some("partial"), Some("b-detect"), Some(1)),
        "{v}"
    );

    // HTTP: the JSONPaths and detectors of the response.
    let out = eval(&[
        "-f",
        dir.path().to_str().unwrap(),
        "--as",
        "ns/app",
        "--connection",
        "api",
        "--http",
        "GET /v1/customers/1",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["masks"]["jsonPaths"],
        serde_json::json!([{"path": "$.customer.email", "strategy": "redact", "policy": "b-detect", "maskingRule": 2}]),
        "{v}"
    );
    assert_eq!(
        v["masks"]["detectors"]["detectors"],
        serde_json::json!(["creditCard", "email"]),
        "{v}"
    );
}
