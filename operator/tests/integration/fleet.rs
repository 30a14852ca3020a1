//! Fleet scale (#25), the behaviours (performance is `make bench-fleet`'s):
//! a status-only write wakes no bundle long-poll, the policies compiled
//! once per namespace change are never stale for audit intake, token holders
//! are checked in the watches' caches (and a deleted pod is cut off once the
//! watch sees it, a changed one checked again), and the gateway answers 429 with `Retry-After` past its bound.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use sluice_crds::{AccessPolicy, Connection};
use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
use support::{Env, bounded};

/// A gateway token for a new injected pod `report` of `report-job`.
async fn bearer(env: &Env) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    let (status, answer) = env
        .exchange(&std::fs::read_to_string(token_file).unwrap())
        .await;
    assert_eq!(status, 200, "{answer}");
    format!("Bearer {}", answer["token"].as_str().unwrap())
}

/// The value of an unlabelled metric (0 when absent).
async fn metric(env: &Env, name: &str) -> f64 {
    let (_, _, body) = env.call("GET", "/metrics", &[], None).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_only_writes_wake_no_long_poll() {
    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    let (status, headers, _) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let wakeups = metric(&env, "sluice_gateway_bundle_wakeups_total").await;

    // A long-poll waits for a newer bundle.
    let poll = support::waiting_bundle_poll(
        env.operator.addr,
        &env.operator.ca_bundle_pem(),
        &bearer,
        &etag,
    )
    .await;

    // Status-only writes of what bundles are built from (the audit flush and
    // the controllers make these all the time), each awaited in the cache
    // before the next write.
    let status_patch = |n: u64| {
        Patch::Merge(
            json!({"status": {"counters": {"allowed": n, "denied": 0, "masked": 0,
            "approvalsRequested": 0, "approvalsGranted": 0, "approvalsDenied": 0}}}),
        )
    };
    let params = PatchParams::default();
    for n in 1..=3u64 {
        env.policies()
            .patch_status("reporting", &params, &status_patch(n))
            .await
            .unwrap();
        env.connections()
            .patch_status(
                "orders-db",
                &params,
                &Patch::Merge(
                    json!({"status": {"lastActivityTime": format!("2026-01-01T00:00:0{n}Z")}}),
                ),
            )
            .await
            .unwrap();
    }
    // Then a spec edit, which changes the bundle: the long-poll answers it,
    // woken once (by the edit). Watch events of one kind arrive in order, so
    // the status writes before it have reached the operator by then.
    env.policies()
        .patch(
            "reporting",
            &params,
            &Patch::Merge(json!({"spec": {"limits": {"statementsPerSecond": 201}}})),
        )
        .await
        .unwrap();
    let (status, headers, body) = bounded("the long-poll's answer", poll).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_ne!(headers["etag"].to_str().unwrap(), etag);
    let bundle: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        bundle["policies"][0]["spec"]["limits"]["statementsPerSecond"],
        201
    );
    assert_eq!(
        metric(&env, "sluice_gateway_bundle_wakeups_total").await - wakeups,
        1.0,
        "only the spec edit woke the long-poll"
    );
    // The status writes are stored all the same (only the wake-up is skipped).
    let stored: AccessPolicy = env.policies().get("reporting").await.unwrap();
    let counters = serde_json::to_value(&stored).unwrap()["status"]["counters"]["allowed"].clone();
    assert!(counters.as_u64().is_some_and(|n| n >= 3), "{counters}");
    let stored: Connection = env.connections().get("orders-db").await.unwrap();
    assert!(stored.status.unwrap().last_activity_time.is_some());
}

/// A poll whose caller already holds the current bundle builds none: its
/// revision is remembered while the namespace does not change. A change of
/// what the bundle is built from (here the Connection's credentials Secret,
/// rotated) is a new bundle at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_of_an_unchanged_bundle_build_none_until_it_changes() {
    use k8s_openapi::api::core::v1::Secret;

    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    let (status, headers, _) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let builds = metric(&env, "sluice_gateway_bundle_builds_total").await;
    assert!(builds >= 1.0, "the first poll built the bundle");
    let poll = async || {
        env.call(
            "GET",
            "/v1/bundle",
            &[("authorization", &bearer), ("if-none-match", &etag)],
            None,
        )
        .await
    };
    for _ in 0..3 {
        let (status, headers, _) = poll().await;
        assert_eq!(status, 304);
        assert_eq!(headers["etag"].to_str().unwrap(), etag);
        assert!(headers.contains_key("sluice-bundle-expires-at"));
    }
    assert_eq!(
        metric(&env, "sluice_gateway_bundle_builds_total").await,
        builds,
        "no poll of the unchanged bundle built it"
    );

    // The credentials rotate: the next poll after the catalog sees it is the new bundle.
    Api::<Secret>::namespaced(env.client.clone(), "shop")
        .patch(
            "orders-db-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "rotated"}})),
        )
        .await
        .unwrap();
    let body = bounded("the rotated credentials in a new bundle", async {
        loop {
            let (status, headers, body) = poll().await;
            if status == 200 {
                assert_ne!(headers["etag"].to_str().unwrap(), etag);
                return body;
            }
            assert_eq!(status, 304);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let bundle: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        bundle["connections"][0]["credentials"]["password"], "rotated",
        "{bundle}"
    );
}

/// Result events with masked values (and batched statement events that
/// carry their result's) count for the policies that mask; the
/// compiled policies audit intake uses are the namespace's current ones: an
/// edit that drops masking is in force for the very next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_intake_counts_with_the_current_policies() {
    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    let mut chain = AuditChain::new("sidecar:shop/report-job:report:boot-1".to_string());
    let masked_result = |chain: &mut AuditChain| {
        let mut draft = AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Result);
        draft.identity = Some(
            serde_json::from_value(json!({"namespace": "shop", "serviceAccount": "report-job"}))
                .unwrap(),
        );
        draft.connection = Some("orders-db".into());
        draft.outcome = Some(serde_json::from_value(json!({"masked": 2, "rows": 1})).unwrap());
        serde_json::to_value(chain.append(draft).unwrap()).unwrap()
    };
    let upload = |events: Vec<Value>| {
        let bearer = bearer.clone();
        let env = &env;
        async move {
            let (status, _, body) = env
                .call(
                    "POST",
                    "/v1/audit",
                    &[("authorization", &bearer)],
                    Some(json!({ "events": events })),
                )
                .await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        }
    };
    let masked = || async {
        let p: AccessPolicy = env.policies().get("reporting").await.unwrap();
        serde_json::to_value(&p).unwrap()["status"]["counters"]["masked"]
            .as_u64()
            .unwrap_or(0)
    };
    // Batched mode: a statement event that carries its result's outcome
    // (decision and result in one) counts its masked values too.
    let masked_statement = |chain: &mut AuditChain| {
        let mut draft = AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Statement);
        draft.identity = Some(
            serde_json::from_value(json!({"namespace": "shop", "serviceAccount": "report-job"}))
                .unwrap(),
        );
        draft.connection = Some("orders-db".into());
        draft.decision = Some(
            serde_json::from_value(json!({"action": "allow", "policy": "reporting"})).unwrap(),
        );
        draft.outcome = Some(serde_json::from_value(json!({"masked": 2, "rows": 1})).unwrap());
        serde_json::to_value(chain.append(draft).unwrap()).unwrap()
    };
    // Three batches (the policies compiled once, then from the cache).
    for i in 0..3 {
        let event = if i == 2 {
            masked_statement(&mut chain)
        } else {
            masked_result(&mut chain)
        };
        upload(vec![event]).await;
    }
    bounded("masked counted", async {
        while masked().await != 6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // The policy stops masking; the next batch counts nothing masked.
    env.policies()
        .patch(
            "reporting",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"masking": []}})),
        )
        .await
        .unwrap();
    env.policy_ready("reporting").await;
    upload(vec![masked_result(&mut chain)]).await;
    // A denial after it, to know the batch before was flushed.
    let mut denial = AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Denial);
    denial.identity = Some(
        serde_json::from_value(json!({"namespace": "shop", "serviceAccount": "report-job"}))
            .unwrap(),
    );
    denial.connection = Some("orders-db".into());
    denial.decision = Some(
        serde_json::from_value(
            json!({"action": "deny", "policy": "reporting", "rule": "no-schema-changes", "dryRun": false}),
        )
        .unwrap(),
    );
    upload(vec![
        serde_json::to_value(chain.append(denial).unwrap()).unwrap(),
    ])
    .await;
    bounded("the denial counted", async {
        loop {
            let p: AccessPolicy = env.policies().get("reporting").await.unwrap();
            let v = serde_json::to_value(&p).unwrap();
            if v["status"]["counters"]["denied"].as_u64() == Some(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        masked().await,
        6,
        "a policy that no longer masks counts no masked values"
    );
}

/// A batch sent again (its receipt was lost: the upload timed out on the
/// sidecar's side, but the operator took it) is taken again, and its head
/// acknowledged again (signed moments ago, so the next flush signs it), but
/// its events are not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_is_counted_once() {
    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    let mut chain = AuditChain::new("sidecar:shop/report-job:report:boot-1".to_string());
    let draft = |kind: AuditKind, decision: Value| {
        let mut draft = AuditEventDraft::new("2026-01-01T00:00:00Z", kind);
        draft.identity = Some(
            serde_json::from_value(json!({"namespace": "shop", "serviceAccount": "report-job"}))
                .unwrap(),
        );
        draft.connection = Some("orders-db".into());
        draft.decision = Some(serde_json::from_value(decision).unwrap());
        draft
    };
    let denial = || {
        draft(
            AuditKind::Denial,
            json!({"action": "deny", "policy": "reporting", "rule": "no-schema-changes", "dryRun": false}),
        )
    };
    let events: Vec<Value> = [denial(), denial()]
        .into_iter()
        .map(|d| serde_json::to_value(chain.append(d).unwrap()).unwrap())
        .collect();
    let head = json!([{"connection": "orders-db", "stream": chain.head().stream,
        "seq": chain.head().seq, "hash": chain.head().hash}]);
    let batch = json!({"events": events, "heads": head});
    for sent in 0..2 {
        let (status, _, body) = env
            .call(
                "POST",
                "/v1/audit",
                &[("authorization", &bearer)],
                Some(batch.clone()),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let receipt: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(receipt["accepted"], 2);
        let (signed, waiting) = if sent == 0 { (1, 0) } else { (0, 1) };
        assert_eq!(
            receipt["checkpoints"].as_array().unwrap().len(),
            signed,
            "{receipt}"
        );
        assert_eq!(
            receipt["acknowledged"].as_array().map_or(0, Vec::len),
            waiting,
            "{receipt}"
        );
    }
    // The next batch (one allowed statement) tells when the ones before are flushed.
    let allowed = chain
        .append(draft(
            AuditKind::Statement,
            json!({"action": "allow", "policy": "reporting", "dryRun": false}),
        ))
        .unwrap();
    let (status, _, _) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", &bearer)],
            Some(json!({"events": [allowed]})),
        )
        .await;
    assert_eq!(status, 200);
    let counters = bounded("the statement counted", async {
        loop {
            let p: AccessPolicy = env.policies().get("reporting").await.unwrap();
            let v = serde_json::to_value(&p).unwrap();
            if v["status"]["counters"]["allowed"].as_u64() == Some(1) {
                return v["status"]["counters"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(counters["denied"], 2, "{counters}");
}

/// Pods and service accounts read from the API server because the watches
/// did not hold them.
const HOLDER_READS: &str = "sluice_gateway_holder_reads_total";

/// Polls the bundle until a poll is answered without reading the pod or the
/// service account from the API server: the watches hold both.
async fn held_by_the_watches(env: &Env, bearer: &str) {
    bounded("the watches to hold the token's pod and account", async {
        loop {
            let before = metric(env, HOLDER_READS).await;
            let (status, _, _) = env
                .call("GET", "/v1/bundle", &[("authorization", bearer)], None)
                .await;
            assert_eq!(status, 200);
            if metric(env, HOLDER_READS).await == before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Bundle polls and audit uploads check the token's pod and service account
/// in the watches' caches: no API-server read per request (#25: two per poll
/// and upload before, thousands a minute for a fleet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_and_uploads_check_the_holder_without_reading_the_api_server() {
    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    held_by_the_watches(&env, &bearer).await;
    let reads = metric(&env, HOLDER_READS).await;
    for _ in 0..10 {
        let (status, _, _) = env
            .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
            .await;
        assert_eq!(status, 200);
    }
    let (status, _, body) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", &bearer)],
            Some(json!({"events": []})),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        metric(&env, HOLDER_READS).await,
        reads,
        "ten polls and an upload read the pod or the account from the API server"
    );
}

/// A deleted pod's token stops working as soon as the pod watch sees the
/// deletion (the cache does not keep vouching for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pods_token_stops_working_once_the_watch_sees_it() {
    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    held_by_the_watches(&env, &bearer).await;
    Api::<Pod>::namespaced(env.client.clone(), "shop")
        .delete("report", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let refusal =
        first_refused_poll(&env, &bearer, 401, "the deleted pod's token to be refused").await;
    assert_eq!(refusal["reason"], "PodDeleted", "{refusal}");
}

/// Polls the bundle with `bearer` until a poll is refused, which must be
/// with `status`; its body.
async fn first_refused_poll(env: &Env, bearer: &str, status: u16, what: &str) -> Value {
    let body = bounded(what, async {
        loop {
            let (got, _, body) = env
                .call("GET", "/v1/bundle", &[("authorization", bearer)], None)
                .await;
            if got != 200 {
                assert_eq!(got, status, "{}", String::from_utf8_lossy(&body));
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    serde_json::from_slice(&body).unwrap()
}

/// The sidecar check a pod passed is remembered only for that version of
/// the pod: once the watch sees its sidecar's image changed in place (where
/// the webhook is not called to refuse it), the next poll is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_changed_after_its_check_passed_is_checked_again() {
    let env = Env::start().await;
    env.policy_ready("reporting").await;
    let bearer = bearer(&env).await;
    // Polls pass (and the pass is remembered) from the watch's copy.
    held_by_the_watches(&env, &bearer).await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sluice.dev/injection": null}}})),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(env.client.clone(), "shop");
    let pod = pods.get("report").await.unwrap();
    let spec = pod.spec.unwrap();
    let sidecar = |list: &[k8s_openapi::api::core::v1::Container]| {
        list.iter().position(|c| c.name == "sluice-sidecar")
    };
    let path = match sidecar(spec.init_containers.as_deref().unwrap_or_default()) {
        Some(i) => format!("/spec/initContainers/{i}/image"),
        None => format!(
            "/spec/containers/{}/image",
            sidecar(&spec.containers).unwrap()
        ),
    };
    pods.patch(
        "report",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(
                json!([{"op": "replace", "path": path, "value": "evil.example/sidecar:1"}]),
            )
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let refusal =
        first_refused_poll(&env, &bearer, 403, "the changed pod's polls to be refused").await;
    assert_eq!(refusal["reason"], "UntrustedImage", "{refusal}");
}

/// Past its bound on requests doing work the gateway answers 429 with
/// `Retry-After` (counted under the route), and the sidecar's client reads
/// the time asked; a waiting long-poll holds no slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_bound_the_gateway_answers_429_with_retry_after() {
    let mut settings = support::test_settings("test-operator");
    settings.gateway_max_in_flight = 0;
    let env = Env::start_with(settings).await;
    let client = sluice_sidecar::bundle_client::GatewayClient::new(
        &format!("https://{}", env.operator.addr),
        &env.operator.ca_bundle_pem(),
    )
    .unwrap();
    let error = client.exchange("any subject token").await.unwrap_err();
    assert!(
        matches!(&error, sluice_sidecar::bundle_client::GatewayError::Refused { status: 429, reason, .. } if reason == "Overloaded"),
        "{error}"
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    let error = client.audit("a token", b"{}".to_vec()).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)), "{error}");
    let (_, _, body) = env.call("GET", "/metrics", &[], None).await;
    let text = String::from_utf8_lossy(&body);
    for route in ["token", "audit"] {
        let series =
            format!("sluice_gateway_requests_total{{route=\"{route}\",outcome=\"overloaded\"}} 1");
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }
}
