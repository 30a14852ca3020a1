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
}

/// A last line cut mid-write (a crash) is told apart: the lines before it
/// verify, the report says so and names the torn line, and the exit status
/// is 3 — neither success nor tampering. Cut anywhere but at the end, or
/// with a checkpoint past the last whole line, it stays a failure (1).
#[test]
fn a_torn_last_line_is_reported_apart_from_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, head) = log();
    let heads = dir.path().join("heads.jsonl");
    std::fs::write(&heads, &head).unwrap();
    let torn = |at: usize, cut: usize| {
        let mut partial = lines.clone();
        partial[at] = partial[at][..cut].to_string();
        partial
    };
    let last = lines[9].len();
    for cut in [1, last / 2, last - 1] {
        let path = write(dir.path(), "torn", &torn(9, cut), false);
        let out = verify(&path, &[]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "cut at {cut}: {stdout} {stderr}"
        );
        assert!(
            stdout.starts_with("TORN: 9 events in 2 stream(s) verified up to line 9;"),
            "{stdout}"
        );
        assert!(
            stdout.contains("the last line (10) is torn: an incomplete write"),
            "{stdout}"
        );
        assert!(
            stderr.contains("TORN: audit log line 10: the last line is torn"),
            "{stderr}"
        );
        let json = verify(&path, &["--json"]);
        assert_eq!(json.status.code(), Some(3));
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(report["ok"], false);
        assert_eq!(report["torn"]["line"], 10);
        assert_eq!(report["torn"]["verifiedThroughLine"], 9);
        assert_eq!(report["events"], 9);
    }
    // A blank line written after it changes nothing.
    let mut text = torn(9, last / 2).join("\n");
    text.push_str("\n\n");
    let path = dir.path().join("torn-newline");
    std::fs::write(&path, text).unwrap();
    assert_eq!(verify(&path, &[]).status.code(), Some(3));

    // Torn, and a line before it edited: tampering wins.
    let mut edited = torn(9, last / 2);
    edited[4] = edited[4].replace("-- 4", "-- 9");
    let err = failure(&verify(&write(dir.path(), "edited", &edited, false), &[]));
    assert!(err.contains("line 5: edited"), "{err}");

    // The torn line is stream a's last event (line 9, its checkpoint's):
    // the log does not reach the checkpoint.
    let mut cut = torn(8, lines[8].len() / 2);
    cut.truncate(9);
    let path = write(dir.path(), "torn-a", &cut, false);
    assert_eq!(verify(&path, &[]).status.code(), Some(3));
    let err = failure(&verify(&path, &["--checkpoints", heads.to_str().unwrap()]));
    assert!(err.contains("truncated"), "{err}");

    // A line cut in the middle of the log is not a crash's tail.
    let middle = lines[4].len() / 2;
    let err = failure(&verify(
        &write(dir.path(), "middle", &torn(4, middle), true),
        &[],
    ));
    assert!(err.contains("line 5"), "{err}");
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

/// The operator's signed checkpoint for `head`, as Connection status holds it.
fn signed_checkpoint(
    keys: &sluice_operator::gateway::token::KeySet,
    head: &sluice_policy::audit::ChainHead,
) -> String {
    let payload = serde_json::json!({
        "namespace": "shop", "connection": "orders-db", "stream": head.stream,
        "sequence": head.seq, "hash": head.hash, "iat": 1_700_000_000u64,
    });
    let (signature, key_id) = keys.sign_payload(&payload).unwrap();
    serde_json::json!({
        "stream": head.stream, "sequence": head.seq, "hash": head.hash,
        "signature": signature, "keyId": key_id, "time": "2026-11-22T10:01:00Z",
    })
    .to_string()
}

/// With --jwks a checkpoint counts only when the operator signed it: a log
/// rewritten (edited and re-hashed) together with its checkpoint is caught,
/// whether the checkpoint keeps the old signature, is signed by another key,
/// or is unsigned.
#[test]
fn forged_checkpoints_are_refused_with_jwks() {
    use sluice_operator::gateway::token::KeySet;
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    let keys = KeySet::generate(now).unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&keys.jwks()).unwrap()).unwrap();
    let jwks = jwks.to_str().unwrap();

    // Two chains of the same stream: the real one, and one rewritten from
    // line 1 (fresh hashes, so it verifies on its own).
    let chain = |tag: &str| {
        let mut c = AuditChain::new("sidecar-a");
        let lines: Vec<String> = (0..3)
            .map(|i| {
                let mut d =
                    AuditEventDraft::new(format!("2026-11-22T10:00:0{i}Z"), AuditKind::Statement);
                d.command = Some(AuditCommand {
                    text: format!("SELECT {tag} -- {i}"),
                    fingerprint: "f".into(),
                    kind: Some("select".into()),
                });
                c.append(d).unwrap().to_line().unwrap()
            })
            .collect();
        (lines, c.head())
    };
    let (real, real_head) = chain("real");
    let (fake, fake_head) = chain("fake");
    let real_log = write(dir.path(), "real.log", &real, true);
    let fake_log = write(dir.path(), "fake.log", &fake, true);
    let checkpoints = |name: &str, line: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{line}\n")).unwrap();
        path
    };

    // The operator's checkpoint of the real log verifies.
    let genuine = checkpoints("genuine", &signed_checkpoint(&keys, &real_head));
    let out = verify(
        &real_log,
        &["--checkpoints", genuine.to_str().unwrap(), "--jwks", jwks],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 of 1 checkpoint(s) matched, their signatures verified"),
        "{stdout}"
    );
    // Against the rewritten log it mismatches (as without --jwks).
    let err = failure(&verify(
        &fake_log,
        &["--checkpoints", genuine.to_str().unwrap(), "--jwks", jwks],
    ));
    assert!(err.contains("checkpointMismatch"), "{err}");

    // The forger rewrites the checkpoint too.
    let mut kept_signature: serde_json::Value =
        serde_json::from_str(&signed_checkpoint(&keys, &real_head)).unwrap();
    kept_signature["hash"] = fake_head.hash.clone().into();
    let attacker = KeySet::generate(now).unwrap();
    let unsigned = serde_json::to_string(&fake_head).unwrap();
    for (name, line, why) in [
        (
            "kept-signature",
            kept_signature.to_string(),
            "the signature covers",
        ),
        (
            "other-key",
            signed_checkpoint(&attacker, &fake_head),
            "is not in the JWKS",
        ),
        ("unsigned", unsigned.clone(), "carries no signature"),
    ] {
        let path = checkpoints(name, &line);
        // Without --jwks the forgery passes: checkpoints are taken as given.
        let out = verify(&fake_log, &["--checkpoints", path.to_str().unwrap()]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{name}: {stdout}");
        assert!(stdout.contains("not authenticated"), "{stdout}");
        let err = failure(&verify(
            &fake_log,
            &["--checkpoints", path.to_str().unwrap(), "--jwks", jwks],
        ));
        assert!(
            err.contains("checkpoint not authentic") && err.contains(why),
            "{name}: {err}"
        );
    }
    // A signature of another key under the operator's key id does not verify.
    let mut other_kid: serde_json::Value =
        serde_json::from_str(&signed_checkpoint(&attacker, &fake_head)).unwrap();
    let real_kid = keys.current().unwrap().kid().to_string();
    let forged_jws = {
        let parts: Vec<&str> = other_kid["signature"]
            .as_str()
            .unwrap()
            .split('.')
            .collect();
        let header = base64_url(
            &serde_json::json!({"alg": "ES256", "kid": real_kid, "typ": "sluice-checkpoint+jwt"})
                .to_string(),
        );
        format!("{header}.{}.{}", parts[1], parts[2])
    };
    other_kid["signature"] = forged_jws.into();
    other_kid["keyId"] = real_kid.into();
    let path = checkpoints("reused-kid", &other_kid.to_string());
    let err = failure(&verify(
        &fake_log,
        &["--checkpoints", path.to_str().unwrap(), "--jwks", jwks],
    ));
    assert!(err.contains("does not verify"), "{err}");
}

fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The run-mode sidecar logs every receipt the operator signs on stderr
/// (`audit checkpoint signed by the operator`, sidecar/src/run.rs), so
/// `kubectl logs` output carries its own checkpoints: verify uses them,
/// authenticated with --jwks, and a forged one fails.
#[test]
fn receipts_in_a_merged_log_anchor_it() {
    use sluice_operator::gateway::token::KeySet;
    let dir = tempfile::tempdir().unwrap();
    let keys = KeySet::generate(std::time::SystemTime::now()).unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&keys.jwks()).unwrap()).unwrap();
    let jwks = jwks.to_str().unwrap();
    let stream = "sidecar:shop/report-job:report-0:20261206T080000.000Z";
    let mut chain = AuditChain::new(stream);
    let mut events = Vec::new();
    let mut heads = Vec::new();
    for i in 0..4 {
        let mut d = AuditEventDraft::new(format!("2026-12-06T08:00:0{i}Z"), AuditKind::Statement);
        d.connection = Some("orders-db".into());
        events.push(chain.append(d).unwrap().to_line().unwrap());
        heads.push(chain.head());
    }
    let receipt = |keys: &KeySet| {
        let h = &heads[2];
        let payload = serde_json::json!({
            "namespace": "shop", "serviceAccount": "report-job", "pod": "report-0",
            "connection": "orders-db", "stream": h.stream, "sequence": h.seq, "hash": h.hash,
            "iat": 1_800_000_000u64,
        });
        let (signature, key_id) = keys.sign_payload(&payload).unwrap();
        let signed = serde_json::json!({
            "connection": "orders-db", "stream": h.stream, "sequence": h.seq, "hash": h.hash,
            "signature": signature, "keyId": key_id,
            "identity": "system:serviceaccount:shop:report-job", "pod": "report-0",
        });
        serde_json::json!({"timestamp": "2026-12-06T08:00:05Z", "level": "INFO",
            "fields": {"message": "audit checkpoint signed by the operator", "checkpoint": signed.to_string()},
            "target": "sluice_sidecar::run"})
        .to_string()
    };
    let log_line = r#"{"timestamp":"2026-12-06T08:00:00Z","level":"INFO","fields":{"message":"ready"},"target":"sluice_sidecar"}"#;
    let merged = |receipt: String, upto: usize| {
        let mut lines = vec![log_line.to_string()];
        lines.extend(events[..3.min(upto)].iter().cloned());
        lines.push(receipt);
        lines.extend(events[3.min(upto)..upto].iter().cloned());
        lines
    };

    let path = write(dir.path(), "merged.log", &merged(receipt(&keys), 4), true);
    let out = verify(&path, &["--jwks", jwks]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 of 1 checkpoint(s) matched, their signatures verified"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  seq 1..3 anchored by the checkpoint at seq 3 (input line 5"),
        "{stdout}"
    );
    assert!(stdout.contains("  seq 4..4 NOT anchored"), "{stdout}");
    assert!(stdout.contains("1 checkpoint receipt(s)"), "{stdout}");

    // The newest events cut below the receipt: caught.
    let path = write(dir.path(), "cut.log", &merged(receipt(&keys), 2), true);
    let err = failure(&verify(&path, &["--jwks", jwks]));
    assert!(
        err.contains("truncated") && err.contains("covers seq 3"),
        "{err}"
    );

    // A receipt forged with another key fails, naming its line.
    let attacker = KeySet::generate(std::time::SystemTime::now()).unwrap();
    let path = write(
        dir.path(),
        "forged.log",
        &merged(receipt(&attacker), 4),
        true,
    );
    let err = failure(&verify(&path, &["--jwks", jwks]));
    assert!(
        err.contains("input line 5: checkpoint not authentic"),
        "{err}"
    );
}
