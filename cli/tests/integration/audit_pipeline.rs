//! The audit pipelines as documented, on artefacts the real sidecar binary
//! writes: `kubectl logs POD -c sluice-sidecar | kubectl sluice audit verify -`
//! on a merged container log, and a standalone sidecar's own signed
//! checkpoints; each artefact tampered with must fail, naming the problem.
//!
//! The sidecar binary is the workspace's `target/…/sluice-sidecar`, beside
//! this crate's binary (`cargo test --workspace` builds it; with `-p
//! kubectl-sluice` alone, build it first: `cargo build -p sluice-sidecar`).
//! A missing binary fails the tests, it never skips them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::harness::{binary_beside, http_manifests, json_upstream, stdout_ok};
use sluice_policy::audit::{AuditChain, AuditCommand, AuditEventDraft, AuditKind};

const WAIT: Duration = Duration::from_secs(30);

fn kubectl_sluice(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"));
    cmd.args(args);
    if let Some(path) = stdin {
        cmd.stdin(std::fs::File::open(path).unwrap());
    }
    cmd.output().expect("run kubectl-sluice")
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn free_port() -> u16 {
    sluice_e2e::free_port().expect("a free loopback port")
}

/// A standalone sidecar serving an HTTP Connection for shop/app.
struct Sidecar {
    child: Child,
    port: u16,
}

impl Sidecar {
    /// Starts the sidecar with `args`, stdout and stderr both into `log`
    /// (one file, the way the kubelet's runtime writes a container's log).
    fn start(dir: &Path, log: &Path, args: &[&str]) -> Sidecar {
        let upstream = json_upstream(r#"{"orders":[{"id":1}]}"#);
        let port = free_port();
        let manifests = dir.join("manifests.yaml");
        let policy = "  rules:\n    - name: no-deletes\n      match: {methods: [DELETE]}\n      action: deny\n";
        std::fs::write(
            &manifests,
            http_manifests(upstream, &port.to_string(), policy),
        )
        .unwrap();
        let file = std::fs::File::create(log).unwrap();
        let sidecar = binary_beside(
            env!("CARGO_BIN_EXE_kubectl-sluice"),
            "sluice-sidecar",
            "sluice-sidecar",
        );
        let child = Command::new(sidecar)
            .args(["standalone", "-f"])
            .arg(&manifests)
            .args(["--as", "shop/app", "--shutdown-grace", "5"])
            .args(args)
            .env("SLUICE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let sidecar = Sidecar { child, port };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sidecar never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        sidecar
    }

    /// Sends `method path` with curl; returns the status code.
    fn request(&self, method: &str, path: &str) -> String {
        let out = Command::new("/usr/bin/curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                method,
            ])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// SIGTERM, as the kubelet stops a container; waits for the exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the sidecar exited {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn traffic(sidecar: &Sidecar) {
    assert_eq!(sidecar.request("GET", "/orders"), "200");
    assert_eq!(sidecar.request("DELETE", "/orders/1"), "403");
    assert_eq!(sidecar.request("GET", "/orders?page=2"), "200");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// 1-based numbers of the lines that are audit events (they carry a `prev`).
fn audit_line_numbers(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("prev").is_some()))
        .map(|(i, _)| i + 1)
        .collect()
}

/// `kubectl logs POD -c sluice-sidecar` prints the container's stdout and
/// stderr merged, with the CRI prefix (`TIMESTAMP stream F`) stripped: that
/// is what this log is (the sidecar's two streams written to one file). The
/// verifier takes the audit events in it and reports the rest; a broken
/// event still fails.
#[test]
fn the_documented_pipeline_verifies_a_merged_container_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("container.log");
    let sidecar = Sidecar::start(dir.path(), &log, &["--log-format", "json"]);
    traffic(&sidecar);
    sidecar.stop();

    let merged = lines(&log);
    let audit = audit_line_numbers(&merged);
    let logs = merged
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("level").is_some()))
        .count();
    // The log really is merged: sidecar logs before the first event and after the last.
    assert!(audit.len() >= 5, "{merged:#?}");
    assert!(audit[0] > 1, "{merged:#?}");
    assert!(
        (audit[0]..merged.len()).any(|i| !audit.contains(&(i + 1))),
        "{merged:#?}"
    );
    assert_eq!(audit.len() + logs, merged.len(), "{merged:#?}");

    // Exactly the documented command shape: the log on stdin, `-`.
    let out = stdout_ok(&kubectl_sluice(&["audit", "verify", "-"], Some(&log)));
    assert!(
        out.starts_with(&format!(
            "OK: {} events in 1 stream(s) verified",
            audit.len()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "note: {logs} line(s) are not audit events and were not verified ({logs} JSON log line(s), 0 text line(s), 0 checkpoint receipt(s)); first at line(s) 1,"
        )),
        "{out}"
    );
    assert!(out.contains("NOT anchored"), "{out}");
    let report: Value = serde_json::from_slice(
        &kubectl_sluice(&["audit", "verify", "-", "--json"], Some(&log)).stdout,
    )
    .unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["events"], audit.len());
    assert_eq!(report["otherLines"]["count"], logs);
    assert_eq!(report["anchoring"][0]["unanchored"]["from"], 1);

    // An edited event (the denied DELETE turned into a GET) fails at its line.
    let denial = merged
        .iter()
        .position(|l| l.contains("\"prev\"") && l.contains("\"type\":\"denial\""))
        .unwrap();
    let mut edited = merged.clone();
    edited[denial] = edited[denial].replacen("DELETE", "GET", 1);
    assert_ne!(edited[denial], merged[denial]);
    let path = dir.path().join("edited.log");
    write_lines(&path, &edited);
    let err = failed(&kubectl_sluice(&["audit", "verify", "-"], Some(&path)));
    assert!(
        err.contains(&format!("line {}: edited", denial + 1)),
        "{err}"
    );

    // A line that is an audit event but broken (cut mid-way, mid-file) fails.
    let mut torn = merged.clone();
    let cut = audit[2] - 1;
    torn[cut] = torn[cut][..torn[cut].len() / 2].to_string();
    let path = dir.path().join("torn.log");
    write_lines(&path, &torn);
    let err = failed(&kubectl_sluice(&["audit", "verify", "-"], Some(&path)));
    assert!(
        err.contains(&format!("line {}: malformed", cut + 1)),
        "{err}"
    );

    // An event removed from the middle: dropped.
    let mut dropped = merged.clone();
    dropped.remove(audit[1] - 1);
    let path = dir.path().join("dropped.log");
    write_lines(&path, &dropped);
    let err = failed(&kubectl_sluice(&["audit", "verify", "-"], Some(&path)));
    assert!(err.contains("dropped"), "{err}");

    // Logs with no audit event at all prove nothing: a failure, not an OK.
    let only_logs: Vec<String> = merged
        .iter()
        .enumerate()
        .filter(|(i, _)| !audit.contains(&(i + 1)))
        .map(|(_, l)| l.clone())
        .collect();
    let path = dir.path().join("only-logs.log");
    write_lines(&path, &only_logs);
    let err = failed(&kubectl_sluice(&["audit", "verify", "-"], Some(&path)));
    assert!(err.contains("noEvents"), "{err}");
}

/// A fresh chain for `stream` of `n` events: what a forger who rewrote the
/// whole log would hand over (it verifies on its own).
fn recomputed(stream: &str, n: usize) -> Vec<String> {
    let mut chain = AuditChain::new(stream);
    (0..n)
        .map(|i| {
            let mut d =
                AuditEventDraft::new(format!("2026-12-06T08:00:{i:02}Z"), AuditKind::Statement);
            d.connection = Some("api".into());
            d.command = Some(AuditCommand {
                text: format!("GET /orders?page={i}"),
                fingerprint: "f".into(),
                kind: Some("get".into()),
            });
            chain.append(d).unwrap().to_line().unwrap()
        })
        .collect()
}

/// Standalone mode anchors its own stream: with --checkpoint-key it signs
/// the audit file's heads, and `audit verify` checks them with the public
/// key written beside it. Every tampering fails naming what it found.
#[test]
fn standalone_checkpoints_anchor_the_audit_file() {
    let dir = tempfile::tempdir().unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let key = dir.path().join("checkpoint.pem");
    let sidecar = Sidecar::start(
        dir.path(),
        &dir.path().join("sidecar.log"),
        &[
            "--audit-file",
            audit_file.to_str().unwrap(),
            "--no-audit-stdout",
            "--checkpoint-key",
            key.to_str().unwrap(),
            "--generate-checkpoint-key",
        ],
    );
    traffic(&sidecar);
    sidecar.stop();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by others");
    }
    let checkpoints = dir.path().join("audit.jsonl.checkpoints.jsonl");
    let jwks = dir.path().join("checkpoint.pem.jwks.json");
    let (cps, jwks) = (checkpoints.to_str().unwrap(), jwks.to_str().unwrap());
    let events = lines(&audit_file);
    let stream = serde_json::from_str::<Value>(&events[0]).unwrap()["stream"]
        .as_str()
        .unwrap()
        .to_string();
    let last = events.len();
    let verify = |log: &Path, cps: &str| {
        kubectl_sluice(
            &[
                "audit",
                "verify",
                log.to_str().unwrap(),
                "--checkpoints",
                cps,
                "--jwks",
                jwks,
            ],
            None,
        )
    };

    // Untouched: every event anchored by the final checkpoint, signature verified.
    let out = stdout_ok(&verify(&audit_file, cps));
    assert!(out.contains("their signatures verified"), "{out}");
    assert!(
        out.contains(&format!(
            "  seq 1..{last} anchored by the checkpoint at seq {last}"
        )),
        "{out}"
    );
    assert!(!out.contains("NOT"), "{out}");

    // The newest events cut: the checkpoint covers more than the log holds.
    let path = dir.path().join("cut.jsonl");
    write_lines(&path, &events[..last - 2]);
    let err = failed(&verify(&path, cps));
    assert!(
        err.contains("truncated") && err.contains(&format!("covers seq {last}")),
        "{err}"
    );
    // Without the checkpoints the cut is invisible, and the report says so.
    let out = stdout_ok(&kubectl_sluice(
        &["audit", "verify", path.to_str().unwrap()],
        None,
    ));
    assert!(
        out.contains(&format!("seq 1..{} NOT anchored", last - 2)),
        "{out}"
    );

    // An edited event.
    let at = events.iter().position(|l| l.contains("/orders")).unwrap();
    let mut edited = events.clone();
    edited[at] = edited[at].replacen("/orders", "/refunds", 1);
    let path = dir.path().join("edited.jsonl");
    write_lines(&path, &edited);
    let err = failed(&verify(&path, cps));
    assert!(err.contains(&format!("line {}: edited", at + 1)), "{err}");

    // The whole chain recomputed (it verifies alone): the checkpoint disagrees.
    let path = dir.path().join("recomputed.jsonl");
    write_lines(&path, &recomputed(&stream, last));
    stdout_ok(&kubectl_sluice(
        &["audit", "verify", path.to_str().unwrap()],
        None,
    ));
    assert!(failed(&verify(&path, cps)).contains("checkpointMismatch"));

    // Checkpoints forged for the recomputed chain: signed by another key...
    let attacker =
        sluice_operator::gateway::token::KeySet::generate(std::time::SystemTime::now()).unwrap();
    let fake_last = serde_json::from_str::<Value>(&recomputed(&stream, last)[last - 1]).unwrap();
    let sign = |keys: &sluice_operator::gateway::token::KeySet, payload: Value| {
        let (signature, key_id) = keys.sign_payload(&payload).unwrap();
        json!({"stream": payload["stream"], "sequence": payload["sequence"], "hash": payload["hash"],
               "signature": signature, "keyId": key_id})
        .to_string()
    };
    let forged = dir.path().join("forged.jsonl");
    std::fs::write(
        &forged,
        sign(
            &attacker,
            json!({"stream": stream, "sequence": last, "hash": fake_last["hash"], "iat": 1}),
        ),
    )
    .unwrap();
    let err = failed(&verify(&path, forged.to_str().unwrap()));
    assert!(
        err.contains("checkpointForged") && err.contains("is not in the JWKS"),
        "{err}"
    );

    // ...or a genuine checkpoint of another stream relabelled as this one's.
    let genuine = lines(&checkpoints);
    let mut relabelled: Value = serde_json::from_str(genuine.last().unwrap()).unwrap();
    relabelled["stream"] = json!("sidecar:shop/app:another-run");
    let other_stream = dir.path().join("other-stream.jsonl");
    std::fs::write(&other_stream, relabelled.to_string()).unwrap();
    let err = failed(&verify(&audit_file, other_stream.to_str().unwrap()));
    assert!(err.contains("a checkpoint of another stream"), "{err}");

    // A rewound checkpoint: signed later than one of a higher seq of the
    // same stream (both by the trusted key, which here is the operator's).
    let operator =
        sluice_operator::gateway::token::KeySet::generate(std::time::SystemTime::now()).unwrap();
    let operator_jwks = dir.path().join("operator-jwks.json");
    std::fs::write(
        &operator_jwks,
        serde_json::to_string(&operator.jwks()).unwrap(),
    )
    .unwrap();
    let head =
        |seq: usize| serde_json::from_str::<Value>(&events[seq - 1]).unwrap()["hash"].clone();
    let rewound = dir.path().join("rewound.jsonl");
    std::fs::write(
        &rewound,
        format!(
            "{}\n{}\n",
            sign(
                &operator,
                json!({"stream": stream, "sequence": last, "hash": head(last), "iat": 100})
            ),
            sign(
                &operator,
                json!({"stream": stream, "sequence": last - 1, "hash": head(last - 1), "iat": 200})
            ),
        ),
    )
    .unwrap();
    let out = kubectl_sluice(
        &[
            "audit",
            "verify",
            audit_file.to_str().unwrap(),
            "--checkpoints",
            rewound.to_str().unwrap(),
            "--jwks",
            operator_jwks.to_str().unwrap(),
        ],
        None,
    );
    let err = failed(&out);
    assert!(
        err.contains("checkpointRewound") && err.contains("was rewound"),
        "{err}"
    );
}
