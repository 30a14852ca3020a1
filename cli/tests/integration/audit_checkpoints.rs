//! `kubectl sluice audit checkpoints` and `audit verify --jwks-from-cluster`
//! against the test control plane: the history the operator keeps (written
//! here with the operator's own functions) comes back in the format verify
//! reads, and anchors the log of the stream it covers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;
use sluice_e2e::{Options, TestCluster};
use sluice_operator::gateway::checkpoint_history::{self, HistoryEntry};
use sluice_operator::gateway::token::KeySet;
use sluice_policy::audit::{AuditChain, AuditCommand, AuditEventDraft, AuditKind, ChainHead};
use sluice_policy::wire::{SignedHead, stream_prefix};

fn kubectl_sluice(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl-sluice")
}

/// `n` events of `stream`, and the chain's heads after each.
fn log(stream: &str, n: usize) -> (Vec<String>, Vec<ChainHead>) {
    let mut chain = AuditChain::new(stream);
    let mut heads = Vec::new();
    let lines = (0..n)
        .map(|i| {
            let mut d =
                AuditEventDraft::new(format!("2026-12-06T08:00:{i:02}Z"), AuditKind::Statement);
            d.connection = Some("orders-db".into());
            d.command = Some(AuditCommand {
                text: format!("SELECT * FROM orders WHERE id = ? -- {i}"),
                fingerprint: "f".into(),
                kind: Some("select".into()),
            });
            let line = chain.append(d).unwrap().to_line().unwrap();
            heads.push(chain.head());
            line
        })
        .collect();
    (lines, heads)
}

/// The operator's checkpoint of `head` for pod `pod` (as audit_intake signs it).
fn entry(
    keys: &KeySet,
    head: &ChainHead,
    pod: &str,
    previous: Option<u64>,
    iat: i64,
) -> HistoryEntry {
    let payload = json!({
        "namespace": "shop", "serviceAccount": "report-job", "pod": pod, "podUid": "u",
        "connection": "orders-db", "stream": head.stream, "sequence": head.seq,
        "hash": head.hash, "previous": previous, "iat": iat,
    });
    let (signature, key_id) = keys.sign_payload(&payload).unwrap();
    HistoryEntry {
        head: SignedHead {
            connection: "orders-db".into(),
            stream: head.stream.clone(),
            sequence: head.seq,
            hash: head.hash.clone(),
            signature,
            key_id,
            identity: "system:serviceaccount:shop:report-job".into(),
            pod: pod.into(),
        },
        namespace: "shop".into(),
        time: "2026-12-06T08:01:00Z".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_history_and_keys_anchor_a_pods_log() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default()).await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "sluice-system"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let kubeconfig = cluster.kubeconfig_path();

    // Two pods' streams on orders-db; this pod's log has 6 events, anchored at 3 and 5.
    let keys = KeySet::generate(std::time::SystemTime::now()).unwrap();
    let mine = format!("{}boot-1", stream_prefix("shop", "report-job", "report-0"));
    let other = format!("{}boot-1", stream_prefix("shop", "report-job", "report-1"));
    let (lines, heads) = log(&mine, 6);
    let (_, other_heads) = log(&other, 2);
    checkpoint_history::append(
        &client,
        "sluice-system",
        "shop",
        "orders-db",
        &[
            entry(&keys, &heads[2], "report-0", None, 100),
            entry(&keys, &other_heads[1], "report-1", None, 110),
        ],
    )
    .await
    .unwrap();
    // A later flush appends.
    checkpoint_history::append(
        &client,
        "sluice-system",
        "shop",
        "orders-db",
        &[entry(&keys, &heads[4], "report-0", Some(3), 120)],
    )
    .await
    .unwrap();
    checkpoint_history::publish_keys(&client, "sluice-system", &keys.jwks().keys)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = kubectl_sluice(
        &kubeconfig,
        &["audit", "checkpoints", "orders-db", "-n", "shop"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = String::from_utf8(out.stdout).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");
    let cps = dir.path().join("checkpoints.jsonl");
    std::fs::write(&cps, &history).unwrap();
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(&audit, lines.join("\n") + "\n").unwrap();
    let (audit, cps) = (audit.to_str().unwrap(), cps.to_str().unwrap());

    let out = kubectl_sluice(
        &kubeconfig,
        &[
            "audit",
            "verify",
            audit,
            "--checkpoints",
            cps,
            "--jwks-from-cluster",
        ],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 of 2 checkpoint(s) matched, their signatures verified"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  seq 1..3 anchored by the checkpoint at seq 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  seq 4..5 anchored by the checkpoint at seq 5"),
        "{stdout}"
    );
    assert!(stdout.contains("  seq 6..6 NOT anchored"), "{stdout}");
    assert!(
        stdout.contains("with no event in this log were not used (other pods'"),
        "{stdout}"
    );
    assert!(stdout.contains(&other), "{stdout}");

    // Demanding every stream of the history turns the other pod's into a failure.
    let out = kubectl_sluice(
        &kubeconfig,
        &[
            "audit",
            "verify",
            audit,
            "--checkpoints",
            cps,
            "--jwks-from-cluster",
            "--require-every-stream",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("stream {other} has no event in the log"))
    );

    // `audit jwks` prints the same keys for offline use.
    let out = kubectl_sluice(&kubeconfig, &["audit", "jwks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &out.stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args([
            "audit",
            "verify",
            audit,
            "--checkpoints",
            cps,
            "--jwks",
            jwks.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Keys of another operator do not verify the history.
    let stranger = KeySet::generate(std::time::SystemTime::now()).unwrap();
    std::fs::write(&jwks, serde_json::to_string(&stranger.jwks()).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args([
            "audit",
            "verify",
            audit,
            "--checkpoints",
            cps,
            "--jwks",
            jwks.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the JWKS"));

    // No history for a Connection: a clear error, exit 2.
    let out = kubectl_sluice(
        &kubeconfig,
        &["audit", "checkpoints", "payments-db", "-n", "shop"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no ConfigMap sluice-checkpoints.shop.payments-db in namespace sluice-system"),
        "{err}"
    );
}
