//! The checkpoint history's writes (#25): a flush appends its checkpoints to
//! the history ConfigMap it last wrote without reading it back, under the
//! chart's RBAC, so what a flush costs the operator and the API server does
//! not grow with the lines signed so far; a write by anyone else since is
//! caught by the resourceVersion (nothing of theirs is lost), and a history
//! written before this change reads and grows as it did.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};
use sluice_operator::gateway::checkpoint_history::{self, HistoryEntry};
use sluice_operator::wire::SignedHead;
use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
use support::{Env, bounded};

/// The operator's user on the test control plane.
const OPERATOR: &str = "system:serviceaccount:sluice-system:sluice-operator";
/// orders-db's history ConfigMap.
const HISTORY: &str = "sluice-checkpoints.shop.orders-db";
/// Its path on the API server.
const HISTORY_PATH: &str =
    "/api/v1/namespaces/sluice-system/configmaps/sluice-checkpoints.shop.orders-db";
/// Lines in the history before the operator starts.
const OLD_LINES: u64 = 1_500;

/// A line of another writer's (not the operator's signature: the operator
/// does not check what it appends to).
fn foreign_entry(stream: &str, sequence: u64) -> HistoryEntry {
    HistoryEntry {
        head: SignedHead {
            connection: "orders-db".into(),
            stream: stream.into(),
            sequence,
            hash: format!("{sequence:064x}"),
            signature: "e30.e30.c2ln".into(),
            key_id: "old-key".into(),
            identity: "system:serviceaccount:shop:other".into(),
            pod: "other-0".into(),
        },
        namespace: "shop".into(),
        time: "2026-12-01T08:00:00Z".into(),
    }
}

/// The history's lines as (stream, sequence).
async fn history(config_maps: &Api<ConfigMap>) -> Vec<(String, u64)> {
    let cm = config_maps.get(HISTORY).await.unwrap();
    lines(&cm)
}

fn lines(cm: &ConfigMap) -> Vec<(String, u64)> {
    cm.data
        .as_ref()
        .and_then(|d| d.get("checkpoints.jsonl"))
        .map(|t| {
            t.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .map(|v| {
                    (
                        v["stream"].as_str().unwrap().to_string(),
                        v["sequence"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Uploads one more event of `chain` with its head and waits until the
/// history holds that head.
async fn one_more_head(env: &Env, bearer: &str, chain: &mut AuditChain) -> u64 {
    let mut draft = AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Statement);
    draft.identity = Some(
        serde_json::from_value(json!({"namespace": "shop", "serviceAccount": "report-job"}))
            .unwrap(),
    );
    draft.connection = Some("orders-db".into());
    draft.decision = Some(
        serde_json::from_value(json!({"action": "allow", "policy": "reporting", "dryRun": false}))
            .unwrap(),
    );
    let event = chain.append(draft).unwrap();
    let seq = event.seq;
    let batch = json!({
        "events": [serde_json::to_value(&event).unwrap()],
        "heads": [{"connection": "orders-db", "stream": chain.head().stream,
            "seq": seq, "hash": chain.head().hash}],
    });
    let (status, _, body) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", bearer)],
            Some(batch),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let stream = chain.head().stream.clone();
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), "sluice-system");
    bounded(
        "the head in the history",
        await_condition(config_maps, HISTORY, move |c: Option<&ConfigMap>| {
            c.is_some_and(|c| lines(c).contains(&(stream.clone(), seq)))
        }),
    )
    .await
    .unwrap();
    seq
}

/// A history of 1,500 lines written as before this change is there when the
/// operator starts. Ten flushes, each with one new checkpoint, read it once
/// (the first; the other read is the new stream's floor) and then only
/// write: before, every flush read (and parsed) the whole history first.
/// Then another writer appends a line: the operator's next write, under the
/// version it last wrote, is refused, and it reads, merges and writes — the
/// other's line and every checkpoint are there, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_append_without_reading_the_history_back_and_keep_other_writers_lines() {
    let (cluster, client) =
        support::cluster_with_crds(sluice_e2e::Options::default().rbac(true)).await;
    support::apply_quickstart(
        &client,
        &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
    )
    .await;
    let operator_client = support::chart_operator_client(&cluster, &client).await;
    let old: Vec<HistoryEntry> = (1..=OLD_LINES)
        .map(|s| foreign_entry("sidecar:shop/other:other-0:boot-1", s))
        .collect();
    checkpoint_history::append(&client, "sluice-system", "shop", "orders-db", &old)
        .await
        .unwrap();
    let env = Env::with_operator_as(
        cluster,
        client,
        operator_client,
        support::test_settings("test-operator"),
    )
    .await;
    env.policy_ready("reporting").await;
    let bearer = env.gateway_bearer("report-job", "report").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), "sluice-system");
    let requests = |method: &str| env.cluster.requests_to(OPERATOR, method, HISTORY_PATH);

    let mut chain = AuditChain::new("sidecar:shop/report-job:report:boot-1".to_string());
    for _ in 0..10 {
        one_more_head(&env, &bearer, &mut chain).await;
    }
    let (reads, writes) = (requests("GET"), requests("PUT"));
    assert!(
        reads <= 2,
        "{reads} reads of the history for 10 flushes (the stream's floor and the first flush's)"
    );
    assert!(writes >= 10, "{writes} writes for 10 flushes");
    let stream = chain.head().stream.clone();
    let mine = |from: u64, to: u64| -> Vec<(String, u64)> {
        (from..=to).map(|s| (stream.clone(), s)).collect()
    };
    let old_lines: Vec<(String, u64)> = old
        .iter()
        .map(|e| (e.head.stream.clone(), e.head.sequence))
        .collect();
    assert_eq!(
        history(&config_maps).await,
        [old_lines.clone(), mine(1, 10)].concat()
    );

    // Another writer (a replica, an auditor's tool) appends a line.
    let other = foreign_entry("sidecar:shop/other:other-0:boot-2", 1);
    checkpoint_history::append(
        &env.client,
        "sluice-system",
        "shop",
        "orders-db",
        std::slice::from_ref(&other),
    )
    .await
    .unwrap();
    // And a data key of its own (not the operator's: kept as it is).
    let mut cm = config_maps.get(HISTORY).await.unwrap();
    cm.data
        .as_mut()
        .unwrap()
        .insert("note".into(), "kept".into());
    config_maps
        .replace(HISTORY, &Default::default(), &cm)
        .await
        .unwrap();
    let conflicts_before = requests("PUT");
    for _ in 0..3 {
        one_more_head(&env, &bearer, &mut chain).await;
    }
    assert_eq!(
        history(&config_maps).await,
        [
            old_lines,
            mine(1, 10),
            vec![("sidecar:shop/other:other-0:boot-2".to_string(), 1)],
            mine(11, 13),
        ]
        .concat(),
        "the other writer's line was kept"
    );
    let cm = config_maps.get(HISTORY).await.unwrap();
    assert_eq!(cm.data.unwrap()["note"], "kept");
    // The refused write, the read after it, and the next flush's read
    // (which shows the operator's own last write: the one after writes without).
    let reads = requests("GET") - reads;
    assert!(reads <= 2, "{reads} reads after another writer");
    assert!(requests("PUT") - conflicts_before >= 4);
}
