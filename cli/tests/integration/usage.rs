//! Issue 23 item 7: the plugin reads like a kubectl plugin (usage as
//! `kubectl sluice …`, `Examples:` in every help) and `policy eval` serves
//! CI (`--expect` with an exit code, a file of statements).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn quickstart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart")
}

#[test]
fn every_help_reads_as_kubectl_sluice_with_examples() {
    let commands: &[&[&str]] = &[
        &[],
        &["check"],
        &["status"],
        &["requests"],
        &["approve"],
        &["deny"],
        &["policy", "eval"],
        &["audit", "verify"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = sluice(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        let usage = format!("Usage: kubectl sluice {}", command.join(" "));
        assert!(help.contains(usage.trim_end()), "{args:?}:\n{help}");
        assert!(
            help.contains("\nExamples:\n"),
            "{args:?} has no Examples:\n{help}"
        );
        assert!(!help.contains("kubectl-sluice"), "{args:?}:\n{help}");
    }
}

fn eval(extra: &[&str]) -> Output {
    let dir = quickstart();
    let mut args = vec![
        "policy",
        "eval",
        "-f",
        dir.to_str().unwrap(),
        "--as",
        "shop/report-job",
        "--connection",
        "orders-db",
    ];
    args.extend_from_slice(extra);
    sluice(&args)
}

#[test]
fn expect_sets_the_exit_code_for_ci() {
    let out = eval(&["--sql", "DROP TABLE orders", "--expect", "deny"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let out = eval(&[
        "--sql",
        "UPDATE orders SET paid = true",
        "--expect",
        "requireApproval",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = eval(&["--sql", "DROP TABLE orders", "--expect", "allow"]);
    assert_eq!(out.status.code(), Some(1));
    // The decision is still printed; stderr says what differed.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["action"], "deny");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("expected allow, got deny by rule no-schema-changes of reporting: "),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("1 decision did not match --expect allow\n"),
        "{stderr}"
    );

    let out = eval(&["--sql", "DROP TABLE orders", "--expect", "alow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("possible values: allow, deny, requireApproval"));
}

#[test]
fn a_file_of_statements_is_decided_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.sql");
    std::fs::write(
        &file,
        "-- a day of statements\nSELECT id FROM orders\n\nDROP TABLE orders\nSELECT 1; TRUNCATE orders\n",
    )
    .unwrap();
    let out = eval(&["--sql-file", file.to_str().unwrap(), "--expect", "allow"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", text(&out.stdout));
    assert_eq!(
        (lines[0]["line"].as_u64(), lines[0]["action"].as_str()),
        (Some(2), Some("allow"))
    );
    assert_eq!(
        (lines[1]["line"].as_u64(), lines[1]["action"].as_str()),
        (Some(4), Some("deny"))
    );
    assert_eq!(
        (lines[2]["line"].as_u64(), lines[2]["action"].as_str()),
        (Some(5), Some("deny"))
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 4: expected allow, got deny"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: expected allow, got deny"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("2 decisions did not match --expect allow\n"),
        "{stderr}"
    );

    // Without --expect: every decision, exit 0.
    let out = eval(&["--sql-file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    // From stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args([
            "policy",
            "eval",
            "-f",
            quickstart().to_str().unwrap(),
            "--as",
            "shop/report-job",
            "--connection",
            "orders-db",
            "--sql-file",
            "-",
            "--expect",
            "allow",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT id FROM orders\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A file that is not there: exit 2 with the path.
    let out = eval(&["--sql-file", "/nonexistent/day.sql"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read --sql-file /nonexistent/day.sql"));
}

#[test]
fn an_unknown_context_is_named_with_the_right_hint() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["requests", "--context", "nosuch"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: the kubeconfig has no context \"nosuch\"; list them with kubectl config get-contexts, and pass one with --context\n"
    );
}
