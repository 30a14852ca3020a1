//! A sidecar that crashed mid-write and restarted on the same audit file
//! (#21): its audit log (the sidecar's own writer, `AuditLog::open`) begins
//! on a new line after the torn one, and `kubectl-sluice audit verify`
//! reports the torn line as torn (exit 3), neither success nor tampering.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use sluice_policy::audit::{AuditCommand, AuditDecision, AuditKind};
use sluice_policy::engine::Identity;
use sluice_sidecar::audit::{AuditLog, SessionInfo};

/// One run of a sidecar on `path` (appended): a session and `statements`
/// decisions, each written before it would be forwarded.
fn run_sidecar(path: &Path, stream: &str, statements: usize) {
    let log = AuditLog::open(stream, false, Some(path)).unwrap();
    let identity = Identity::service_account("shop", "report-job");
    let s = SessionInfo::for_identity(&identity, "orders-db", "127.0.0.1:40000".parse().unwrap());
    log.session_start(&s, false, false).unwrap();
    let allow: AuditDecision =
        serde_json::from_value(serde_json::json!({"action": "allow", "policy": "reporting"}))
            .unwrap();
    for i in 0..statements {
        log.event(
            &s,
            AuditKind::Statement,
            Some(AuditCommand {
                text: format!("SELECT * FROM orders WHERE id = ? -- {i}"),
                fingerprint: "f".into(),
                kind: Some("select".into()),
            }),
            Some(allow.clone()),
            None,
            true,
        )
        .unwrap();
    }
    log.flush().unwrap();
}

fn verify(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["audit", "verify"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

/// Boot 1 writes, crashes while writing its last line (the line is cut:
/// after its first character, and half-way), boot 2 starts on the same
/// file. Its first line stands alone, and verify says TORN (3) naming the
/// torn line, with every other event of both streams verified.
#[test]
fn a_restart_after_a_crash_begins_on_a_new_line_and_the_torn_line_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for cut in ["first character", "half"] {
        let path = dir
            .path()
            .join(format!("audit-{}.jsonl", cut.replace(' ', "-")));
        run_sidecar(&path, "sidecar:shop/report-job:boot-1", 3);
        let whole = std::fs::read_to_string(&path).unwrap();
        let first_run: Vec<&str> = whole.lines().collect();
        let last = first_run.last().unwrap();
        let keep = if cut == "half" { last.len() / 2 } else { 1 };
        // The crash: the last line's write stopped after `keep` bytes.
        std::fs::write(&path, &whole[..whole.len() - last.len() - 1 + keep]).unwrap();
        run_sidecar(&path, "sidecar:shop/report-job:boot-2", 2);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let torn = first_run.len(); // 1-based: boot 1's last line
        assert_eq!(
            lines[torn - 1],
            &last[..keep],
            "{cut}: the torn line as the crash left it"
        );
        let next: serde_json::Value = serde_json::from_str(lines[torn]).unwrap_or_else(|e| {
            panic!("{cut}: boot 2's first line is not a line of its own ({e}): {text}")
        });
        assert_eq!(
            (next["stream"].as_str(), next["seq"].as_u64()),
            (Some("sidecar:shop/report-job:boot-2"), Some(1)),
            "{cut}"
        );
        let events = (first_run.len() - 1) + (lines.len() - torn);

        let out = verify(&path, &[]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(3), "{cut}: {stdout}{stderr}");
        assert!(
            stdout.starts_with(&format!("TORN: {events} events in 2 stream(s) verified;")),
            "{cut}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("1 line(s) inside the log are torn (line {torn}): an incomplete write, after which the writer started again")),
            "{cut}: {stdout}"
        );
        assert!(
            stderr.contains(&format!(
                "TORN: audit log line {torn}: a line inside the log is torn"
            )),
            "{cut}: {stderr}"
        );
        let json = verify(&path, &["--json"]);
        assert_eq!(json.status.code(), Some(3), "{cut}");
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["events"], events, "{report}");
        assert_eq!(
            report["tornWithin"]["lines"],
            serde_json::json!([torn]),
            "{report}"
        );
        assert!(report["torn"].is_null(), "{report}");

        // An edit after the torn line is still tampering (1), named.
        let edited = text.replacen("-- 1", "-- 7", 1);
        let edited_path = dir.path().join("edited.jsonl");
        std::fs::write(&edited_path, edited).unwrap();
        let out = verify(&edited_path, &[]);
        assert_eq!(out.status.code(), Some(1), "{cut}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("edited"),
            "{cut}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A torn line that its own stream goes on after is no crash's tear: the
/// writer did not die there. It fails (1), naming the line and the stream.
#[test]
fn a_torn_line_its_stream_goes_on_after_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    run_sidecar(&path, "sidecar:shop/report-job:boot-1", 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // A line is cut to its first character, and boot 2 follows; but boot
    // 1's next line comes after it.
    let cut = lines[2].clone();
    lines[2] = "{".to_string();
    let tail = std::mem::take(&mut lines[3]);
    lines.truncate(3);
    let path2 = dir.path().join("boot-2.jsonl");
    run_sidecar(&path2, "sidecar:shop/report-job:boot-2", 1);
    lines.extend(
        std::fs::read_to_string(&path2)
            .unwrap()
            .lines()
            .map(str::to_string),
    );
    lines.push(tail);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = verify(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("audit log line 3: malformed")
            && stderr.contains("stream sidecar:shop/report-job:boot-1 goes on after it"),
        "{stderr} (cut line was {cut})"
    );
}
