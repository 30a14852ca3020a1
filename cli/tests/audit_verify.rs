//! `kubectl-sluice audit verify` on real chained logs, intact and tampered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use sluice_policy::audit::{AuditChain, AuditCommand, AuditEventDraft, AuditKind};

fn verify(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["audit", "verify"])
        .arg(file)
        .args(extra)
        .output()
        .expect("run kubectl-sluice")
}

/// Ten events of two interleaved streams, one JSON line each.
fn log() -> (Vec<String>, String) {
    let mut a = AuditChain::new("sidecar-a");
    let mut b = AuditChain::new("sidecar-b");
    let mut lines = Vec::new();
    for i in 0..10 {
        let chain = if i % 3 == 0 { &mut b } else { &mut a };
        let mut d = AuditEventDraft::new(format!("2026-11-22T10:00:{i:02}Z"), AuditKind::Statement);
        d.session = Some(format!("s{}", i % 2));
        d.connection = Some("orders-db".into());
        d.command = Some(AuditCommand {
            text: format!("SELECT * FROM t WHERE id = ? -- {i}"),
            fingerprint: "f".into(),
            kind: Some("select".into()),
        });
        lines.push(chain.append(d).unwrap().to_line().unwrap());
    }
    let head = serde_json::to_string(&a.head()).unwrap();
    (lines, head)
}

fn write(dir: &Path, name: &str, lines: &[String], trailing_newline: bool) -> std::path::PathBuf {
    let mut text = lines.join("\n");
    if trailing_newline {
        text.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn failure(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn intact_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, head) = log();
    let path = write(dir.path(), "audit.log", &lines, true);
    let heads = dir.path().join("heads.jsonl");
    std::fs::write(&heads, head).unwrap();
    let out = verify(&path, &["--checkpoints", heads.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("OK: 10 events in 2 stream(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 1 checkpoint(s) matched"), "{stdout}");
}

#[test]
fn tampering_is_detected_at_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, head) = log();
    let heads = dir.path().join("heads.jsonl");
    std::fs::write(&heads, &head).unwrap();

    let mut edited = lines.clone();
    edited[4] = edited[4].replace("-- 4", "-- 9");
    let out = verify(&write(dir.path(), "edited", &edited, true), &[]);
    let err = failure(&out);
    assert!(err.contains("line 5: edited"), "{err}");

    let mut swapped = lines.clone();
    swapped.swap(1, 2); // both of stream a
    let err = failure(&verify(&write(dir.path(), "swapped", &swapped, true), &[]));
    assert!(err.contains("line 2"), "{err}");
    assert!(
        err.contains("reordered") || err.contains("dropped"),
        "{err}"
    );

    let mut dropped = lines.clone();
    dropped.remove(5); // stream a's 4th event; the next line of stream a is now line 7
    let err = failure(&verify(&write(dir.path(), "dropped", &dropped, true), &[]));
    assert!(err.contains("line 7: dropped"), "{err}");

    // Whole lines cut from the end: only a checkpoint can tell.
    let cut = &lines[..8];
    let path = write(dir.path(), "cut", cut, true);
    assert!(verify(&path, &[]).status.success());
    let err = failure(&verify(&path, &["--checkpoints", heads.to_str().unwrap()]));
    assert!(err.contains("truncated"), "{err}");

    // A line cut in the middle.
    let mut partial = lines.clone();
    let last = partial.pop().unwrap();
    partial.push(last[..last.len() / 2].to_string());
    let err = failure(&verify(&write(dir.path(), "partial", &partial, false), &[]));
    assert!(err.contains("line 10: truncated"), "{err}");
}

#[test]
fn unreadable_input_exits_2() {
    let out = verify(Path::new("/nonexistent/audit.log"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/audit.log"));
}

/// A log with a recorded outage of the audit sink (events written late,
/// then an `outage` event) verifies and says so; editing the outage record
/// is an edit like any other.
#[test]
fn a_recorded_outage_is_told_from_an_edit() {
    use sluice_policy::audit::AuditOutage;
    let dir = tempfile::tempdir().unwrap();
    let mut chain = AuditChain::new("sidecar-a");
    let mut lines = Vec::new();
    for i in 0..4 {
        let d = AuditEventDraft::new(format!("2026-11-22T10:00:0{i}Z"), AuditKind::Statement);
        lines.push(chain.append(d).unwrap().to_line().unwrap());
    }
    let outage = AuditOutage {
        dropped: 0,
        error: "writing the audit event to /var/log/a failed: No space left on device".into(),
        failed_writes: 2,
        from_seq: 2,
        since: "2026-11-22T10:00:01Z".into(),
        to_seq: 4,
    };
    let mut line = Vec::new();
    chain
        .append_outage_line("2026-11-22T10:05:00Z", outage, &mut line)
        .unwrap();
    lines.push(String::from_utf8(line).unwrap().trim_end().to_string());
    let path = write(dir.path(), "outage.log", &lines, true);
    let out = verify(&path, &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("OK: 5 events"), "{stdout}");
    assert!(
        stdout.contains("line 5: recorded audit outage in stream sidecar-a")
            && stdout.contains("seq 2 to 4 were written late")
            && stdout.contains("No space left on device"),
        "{stdout}"
    );
    let out = verify(&path, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outages"][0]["fromSeq"], 2, "{v}");
    assert_eq!(v["outages"][0]["toSeq"], 4, "{v}");

    let mut edited = lines.clone();
    edited[4] = edited[4].replace("\"toSeq\":4", "\"toSeq\":3");
    let err = failure(&verify(&write(dir.path(), "edited", &edited, true), &[]));
    assert!(err.contains("line 5: edited"), "{err}");
}
