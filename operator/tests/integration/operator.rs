//! The operator in-process against the test control plane (sluice-e2e), with
//! the CRDs and examples/quickstart applied: controllers, webhook, token
//! exchange, bundles, audit intake.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};
use sluice_crds::{AccessPolicy, Connection, find_condition};
use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
use support::{Env, apply_yaml, bounded};

fn condition_is(
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
) -> impl Fn(Option<&AccessPolicy>) -> bool {
    move |p| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| find_condition(&s.conditions, type_))
            .is_some_and(|c| c.status == status && c.reason == reason)
    }
}

fn connection_condition_is(
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
) -> impl Fn(Option<&Connection>) -> bool {
    move |c| {
        c.and_then(|c| c.status.as_ref())
            .and_then(|s| find_condition(&s.conditions, type_))
            .is_some_and(|c| c.status == status && c.reason == reason)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_write_conditions_and_events() {
    let env = Env::start().await;

    // The quickstart reaches Ready.
    bounded(
        "orders-db Ready",
        await_condition(
            env.connections(),
            "orders-db",
            connection_condition_is("Ready", "True", "Ready"),
        ),
    )
    .await
    .unwrap();
    let conn = bounded(
        "orders-db CredentialsResolved",
        await_condition(
            env.connections(),
            "orders-db",
            connection_condition_is("CredentialsResolved", "True", "Resolved"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let status = conn.status.unwrap();
    assert_eq!(status.bound_policies, vec!["reporting".to_string()]);
    assert_eq!(status.observed_generation, conn.metadata.generation);
    let policy = bounded(
        "reporting Ready",
        await_condition(
            env.policies(),
            "reporting",
            condition_is("Ready", "True", "Compiled"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let ready = find_condition(&policy.status.as_ref().unwrap().conditions, "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready.observed_generation, policy.metadata.generation);

    // A policy naming an unknown Connection.
    apply_yaml(
        &env.client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: stray, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [billing-db]
"#,
    )
    .await;
    let stray = bounded(
        "stray UnknownConnection",
        await_condition(
            env.policies(),
            "stray",
            condition_is("Ready", "False", "UnknownConnection"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let invalid = find_condition(&stray.status.unwrap().conditions, "Invalid")
        .unwrap()
        .clone();
    assert_eq!(invalid.status, "True");
    assert!(
        invalid.message.contains("billing-db"),
        "{}",
        invalid.message
    );

    // An invalid pattern.
    apply_yaml(
        &env.client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bad-regex, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [orders-db]
  rules:
    - name: broken
      match: {textPattern: "(unclosed"}
      action: deny
"#,
    )
    .await;
    bounded(
        "bad-regex InvalidPattern",
        await_condition(
            env.policies(),
            "bad-regex",
            condition_is("Ready", "False", "InvalidPattern"),
        ),
    )
    .await
    .unwrap();

    // A Connection whose Secret does not exist, then does.
    apply_yaml(
        &env.client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: billing-db, namespace: shop}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: 5432, database: billing, tls: {mode: disable}}
  credentials: {secretRef: {name: billing-creds}}
  listen: {port: 15433}
"#,
    )
    .await;
    bounded(
        "billing-db SecretNotFound",
        await_condition(
            env.connections(),
            "billing-db",
            connection_condition_is("CredentialsResolved", "False", "SecretNotFound"),
        ),
    )
    .await
    .unwrap();
    // Creating the Connection also fixes the stray policy.
    bounded(
        "stray Ready once billing-db exists",
        await_condition(
            env.policies(),
            "stray",
            condition_is("Ready", "True", "Compiled"),
        ),
    )
    .await
    .unwrap();
    apply_yaml(
        &env.client,
        r#"
apiVersion: v1
kind: Secret
metadata: {name: billing-creds, namespace: shop}
stringData: {username: billing}
"#,
    )
    .await;
    bounded(
        "billing-db MissingKeys",
        await_condition(
            env.connections(),
            "billing-db",
            connection_condition_is("CredentialsResolved", "False", "MissingKeys"),
        ),
    )
    .await
    .unwrap();

    // Many reconciles later (every change above re-ran them), reporting's
    // Ready never flipped, so its lastTransitionTime has not moved.
    let again = env.policies().get("reporting").await.unwrap();
    let ready_again = find_condition(&again.status.unwrap().conditions, "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready_again.last_transition_time, ready.last_transition_time);

    // Events on transitions: one Warning for stray's UnknownConnection, not one per reconcile.
    let events: Api<CoreEvent> = Api::namespaced(env.client.clone(), "shop");
    let list = events
        .list(&ListParams::default().fields("involvedObject.name=stray"))
        .await
        .unwrap();
    let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.iter().any(|r| r == "UnknownConnection"),
        "{reasons:?}"
    );
    let unknown = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("UnknownConnection"))
        .count();
    // Ready and Invalid flipped once each to UnknownConnection (the recorder
    // folds the pair into one Event), however often the policy was reconciled since.
    assert_eq!(unknown, 1, "Events on transitions only: {reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pod_exchanges_its_token_and_fetches_its_bundle() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    env.service_account("intruder").await;

    // The API server calls the webhook: the pod comes back injected.
    let pod = env.injected_pod("report", "report-job").await;
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(
        annotations.contains_key("sluice.dev/injected-revision"),
        "{annotations:?}"
    );
    let spec = pod.spec.clone().unwrap();
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "sluice-sidecar")
        .expect("native sidecar");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    let env_names: Vec<&str> = sidecar
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    for name in ["SLUICE_GATEWAY_URL", "SLUICE_TOKEN_FILE", "SLUICE_CA_PEM"] {
        assert!(env_names.contains(&name), "{name} missing: {env_names:?}");
    }
    let ca = sidecar
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SLUICE_CA_PEM")
        .and_then(|e| e.value.clone())
        .unwrap();
    assert_eq!(ca, env.operator.ca_bundle_pem());
    let app = spec.containers.iter().find(|c| c.name == "app").unwrap();
    let database_url = app
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "DATABASE_URL")
        .and_then(|e| e.value.clone());
    assert_eq!(
        database_url.as_deref(),
        Some("postgres://localhost:15432/orders")
    );
    // The sidecar's own volume (the pod also has the ServiceAccount plugin's kube-api-access-*).
    let projected = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name == "sluice-token")
        .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .find_map(|s| s.service_account_token.clone())
        .expect("projected token");
    assert_eq!(projected.audience.as_deref(), Some("sluice.dev"));

    // A token for the wrong audience is refused.
    let wrong = env
        .pod_token("report-job", &pod, "https://kubernetes.default.svc")
        .await;
    let (status, body) = env.exchange(&wrong).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "WrongAudience", "{body}");
    // A forged one too.
    let (status, body) = env.exchange("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl").await;
    assert_eq!(status, 401, "{body}");

    // The pod's own token is exchanged.
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(body["expiresAt"].as_str().unwrap().ends_with('Z'), "{body}");
    let bearer = format!("Bearer {token}");

    // JWKS publishes the key the token names.
    let (status, _, jwks) = env.call("GET", "/v1/jwks", &[], None).await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_slice(&jwks).unwrap();
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"]),
        "{jwks}"
    );

    // The bundle: orders-db with its credentials, the reporting policy.
    let (status, headers, body) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let bundle: Value = serde_json::from_slice(&body).unwrap();
    let etag = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", bundle["revision"].as_str().unwrap())
    );
    assert_eq!(bundle["identity"]["serviceAccount"], "report-job");
    let orders = &bundle["connections"][0];
    assert_eq!(orders["name"], "orders-db");
    assert_eq!(orders["bound"], true);
    assert_eq!(orders["credentials"]["username"], "orders_app");
    assert_eq!(orders["credentials"]["password"], "change-me-orders-app");
    assert!(orders["hashKey"].is_string(), "{orders}");
    let policies = bundle["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["metadata"]["name"], "reporting");
    // The sidecar can compile what it receives.
    let compiled: AccessPolicy = serde_json::from_value(policies[0].clone()).unwrap();
    assert!(
        sluice_policy::engine::CompiledPolicy::compile(
            &compiled,
            &sluice_policy::engine::NoSecrets
        )
        .is_ok()
    );

    // Unchanged: 304 after the wait.
    let (status, headers, _) = env
        .call(
            "GET",
            "/v1/bundle?wait=1s",
            &[("authorization", &bearer), ("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(status, 304);
    assert!(headers.contains_key("sluice-bundle-expires-at"));

    // A long poll returns when the policy is edited.
    let poll = support::bundle_poll(
        env.operator.addr,
        &env.operator.ca_bundle_pem(),
        &bearer,
        &etag,
        "25s",
    );
    // Whether the edit lands before or during the wait, the answer is the new revision.
    env.policies()
        .patch(
            "reporting",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"defaultAction": "deny"}})),
        )
        .await
        .unwrap();
    let (status, _, body) = bounded("long poll answer", poll).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let edited: Value = serde_json::from_slice(&body).unwrap();
    assert_ne!(edited["revision"], bundle["revision"]);
    assert_eq!(edited["policies"][0]["spec"]["defaultAction"], "deny");

    // Another identity, bound to another Connection only: it sees orders-db
    // without credentials, and only its own policy.
    apply_yaml(
        &env.client,
        r#"
apiVersion: v1
kind: Secret
metadata: {name: billing-creds, namespace: shop}
stringData: {username: billing, password: billing-pw}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: billing-db, namespace: shop}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: 5432, database: billing, tls: {mode: disable}}
  credentials: {secretRef: {name: billing-creds}}
  listen: {port: 15433}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: billing, namespace: shop}
spec:
  subjects: [{serviceAccount: intruder}]
  connections: [billing-db]
"#,
    )
    .await;
    // The Connection's status is computed from the operator's caches: once
    // it names the policy and is Ready, the webhook and bundles see both.
    bounded(
        "billing-db Ready and bound",
        await_condition(env.connections(), "billing-db", |c: Option<&Connection>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.bound_policies == ["billing".to_string()]
                    && find_condition(&s.conditions, "Ready").is_some_and(|r| r.status == "True")
            })
        }),
    )
    .await
    .unwrap();
    let other = env.injected_pod("intruder", "intruder").await;
    let other_token = env.pod_token("intruder", &other, "sluice.dev").await;
    let (status, body) = env.exchange(&other_token).await;
    assert_eq!(status, 200, "{body}");
    let other_bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let (status, _, body) = env
        .call(
            "GET",
            "/v1/bundle",
            &[("authorization", &other_bearer)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    let other_bundle: Value = serde_json::from_slice(&body).unwrap();
    let by_name = |name: &str| {
        other_bundle["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    };
    // Need to know: nothing of orders-db (no credentials, no host or Secret name).
    assert_eq!(by_name("orders-db"), None, "{other_bundle}");
    assert_eq!(other_bundle["connections"].as_array().unwrap().len(), 1);
    let billing = by_name("billing-db").unwrap();
    assert_eq!(billing["bound"], true);
    assert_eq!(billing["credentials"]["password"], "billing-pw");
    let names: Vec<&str> = other_bundle["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["billing"]);
    // It cannot report traffic as someone else.
    let (status, _, body) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", &other_bearer)],
            Some(json!({"events": [denial_event("report-job", 1)]})),
        )
        .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // A bundle without a token, or with a tampered one, is refused.
    let (status, _, _) = env.call("GET", "/v1/bundle", &[], None).await;
    assert_eq!(status, 401);
    let tampered = format!("{bearer}x");
    let (status, _, _) = env
        .call("GET", "/v1/bundle", &[("authorization", &tampered)], None)
        .await;
    assert_eq!(status, 401);

    // Deleting the pod voids both the gateway token and the pod's SA token.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    pods.delete("report", &DeleteParams::default())
        .await
        .unwrap();
    bounded(
        "pod deleted",
        await_condition(
            pods.clone(),
            "report",
            kube::runtime::wait::conditions::is_deleted(pod.metadata.uid.as_deref().unwrap()),
        ),
    )
    .await
    .unwrap();
    let (status, _, body) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["reason"], "PodDeleted", "{body}");
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "PodDeleted", "{body}");

    // Health and metrics.
    let (status, _, _) = env.call("GET", "/readyz", &[], None).await;
    assert_eq!(status, 200);
    let (status, _, metrics) = env.call("GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics
            .contains("sluice_gateway_requests_total{route=\"token\",outcome=\"wrongAudience\"}"),
        "{metrics}"
    );
}

/// The start of the audit streams of pod `report` of `report-job`.
const REPORT_STREAM: &str = "sidecar:shop/report-job:report:";

/// An event's content, as a sidecar drafts it, on orders-db.
fn draft(
    kind: AuditKind,
    service_account: &str,
    command: Option<Value>,
    decision: Option<Value>,
    outcome: Option<Value>,
) -> AuditEventDraft {
    let mut draft = AuditEventDraft::new("2026-01-01T00:00:00Z", kind);
    draft.session = Some("s1".into());
    draft.identity = Some(
        serde_json::from_value(json!({"namespace": "shop", "serviceAccount": service_account}))
            .unwrap(),
    );
    draft.connection = Some("orders-db".into());
    draft.command = command.map(|c| serde_json::from_value(c).unwrap());
    draft.decision = decision.map(|d| serde_json::from_value(d).unwrap());
    draft.outcome = outcome.map(|o| serde_json::from_value(o).unwrap());
    draft
}

fn denial_draft(service_account: &str, policy: &str, rule: &str) -> AuditEventDraft {
    draft(
        AuditKind::Denial,
        service_account,
        Some(json!({"text": "DROP TABLE customers", "fingerprint": "f1", "kind": "drop"})),
        Some(json!({"action": "deny", "policy": policy, "rule": rule, "dryRun": false})),
        None,
    )
}

/// The drafts appended to `chain`, as the JSON a sidecar uploads.
fn chained(chain: &mut AuditChain, drafts: &[AuditEventDraft]) -> Vec<Value> {
    drafts
        .iter()
        .map(|d| serde_json::to_value(chain.append(d.clone()).unwrap()).unwrap())
        .collect()
}

fn denial_event(service_account: &str, seq: u64) -> Value {
    json!({
        "v": 1, "seq": seq, "time": "2026-01-01T00:00:00Z", "type": "denial",
        "stream": "report/boot-1", "session": "s1",
        "identity": {"namespace": "shop", "serviceAccount": service_account},
        "connection": "orders-db",
        "command": {"text": "DROP TABLE customers", "fingerprint": "f1", "kind": "drop"},
        "decision": {"action": "deny", "policy": "reporting", "rule": "no-schema-changes", "dryRun": false},
        "prev": "0000000000000000000000000000000000000000000000000000000000000000",
        "hash": "ab"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_batches_become_counters_and_checkpoints() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());

    let mut chain = AuditChain::new(format!("{REPORT_STREAM}boot-1"));
    let events = chained(
        &mut chain,
        &[
            draft(
                AuditKind::Statement,
                "report-job",
                Some(json!({"text": "SELECT 1", "fingerprint": "f0", "kind": "select"})),
                Some(json!({"action": "allow", "policy": "reporting", "dryRun": false})),
                None,
            ),
            denial_draft("report-job", "reporting", "no-schema-changes"),
            draft(
                AuditKind::Result,
                "report-job",
                None,
                None,
                Some(json!({"rows": 3, "masked": 3})),
            ),
        ],
    );
    let head_hash = events[1]["hash"].as_str().unwrap().to_string();
    let batch = json!({
        "events": events,
        "heads": [{"connection": "orders-db", "stream": chain.head().stream, "seq": 2, "hash": head_hash}]
    });
    let (status, _, body) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", &bearer)],
            Some(batch),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let receipt: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(receipt["accepted"], 3);
    let checkpoint = &receipt["checkpoints"][0];
    assert_eq!(checkpoint["sequence"], 2);
    assert!(checkpoint["signature"].as_str().unwrap().split('.').count() == 3);

    let policy = bounded(
        "counters in status",
        await_condition(env.policies(), "reporting", |p: Option<&AccessPolicy>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.counters.as_ref())
                .is_some_and(|c| c.denied == 1 && c.allowed == 1)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    // Result events name no policy: masked values count for the applicable policy that masks.
    assert_eq!(
        policy
            .status
            .as_ref()
            .unwrap()
            .counters
            .as_ref()
            .unwrap()
            .masked,
        3
    );
    let status = policy.status.unwrap();
    assert_eq!(status.recent_denials.len(), 1);
    assert_eq!(status.recent_denials[0].rule, "no-schema-changes");
    assert_eq!(
        status.recent_denials[0].subject,
        "serviceaccount:shop/report-job"
    );
    // The controller's conditions survive next to the counters.
    assert!(find_condition(&status.conditions, "Ready").is_some());

    let conn = bounded(
        "checkpoint in status",
        await_condition(env.connections(), "orders-db", |c: Option<&Connection>| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.audit_checkpoint.is_some())
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let cp = conn.status.unwrap().audit_checkpoint.unwrap();
    assert_eq!(cp.sequence, 2);
    assert_eq!(cp.hash, head_hash);
    assert_eq!(cp.key_id, checkpoint["keyId"].as_str().unwrap());
    checkpoint_history_holds(&env, &[(2, &head_hash)], Some(checkpoint)).await;

    // Counters add up across flushes.
    let (status, _, _) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", &bearer)],
            Some(json!({"events": chained(&mut chain, &[denial_draft("report-job", "reporting", "no-schema-changes")])})),
        )
        .await;
    assert_eq!(status, 200);
    bounded(
        "counters add up",
        await_condition(env.policies(), "reporting", |p: Option<&AccessPolicy>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.counters.as_ref())
                .is_some_and(|c| c.denied == 2 && c.allowed == 1)
        }),
    )
    .await
    .unwrap();

    // A later head of the stream joins the durable history beside the first.
    let later = chained(
        &mut chain,
        &[denial_draft("report-job", "reporting", "no-schema-changes")],
    );
    let later_hash = later[0]["hash"].as_str().unwrap().to_string();
    let later_seq = later[0]["seq"].as_u64().unwrap();
    let batch = json!({
        "events": later,
        "heads": [{"connection": "orders-db", "stream": chain.head().stream, "seq": later_seq, "hash": later_hash}]
    });
    let (status, _, body) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", &bearer)],
            Some(batch),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let receipt: Value = serde_json::from_slice(&body).unwrap();
    // #25: the stream was signed moments ago, so this head is taken and
    // acknowledged unsigned; the next flush signs it into the history and
    // the stream's next receipt carries that signature. (On a machine slow
    // enough that SIGN_EVERY_SECONDS passed since the first, it is signed now.)
    let signed_now = receipt["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["sequence"] == later_seq)
        .cloned();
    let Some(signed) = signed_now else {
        assert_eq!(receipt["acknowledged"][0]["seq"], later_seq, "{receipt}");
        assert_eq!(receipt["acknowledged"][0]["hash"], later_hash.as_str());
        let flushed =
            checkpoint_history_holds(&env, &[(2, &head_hash), (later_seq, &later_hash)], None)
                .await;
        let next = chained(
            &mut chain,
            &[denial_draft("report-job", "reporting", "no-schema-changes")],
        );
        let batch = json!({
            "events": next,
            "heads": [{"connection": "orders-db", "stream": chain.head().stream,
                "seq": next[0]["seq"], "hash": next[0]["hash"]}]
        });
        let (status, _, body) = env
            .call(
                "POST",
                "/v1/audit",
                &[("authorization", &bearer)],
                Some(batch),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let receipt: Value = serde_json::from_slice(&body).unwrap();
        let handed_back = &receipt["checkpoints"][0];
        assert_eq!(handed_back["sequence"], later_seq, "{receipt}");
        assert_eq!(handed_back["signature"], flushed["signature"]);
        return;
    };
    checkpoint_history_holds(
        &env,
        &[(2, &head_hash), (later_seq, &later_hash)],
        Some(&signed),
    )
    .await;
}

/// Waits until the durable checkpoint history of orders-db (a ConfigMap in
/// the operator's namespace, written under the chart's RBAC) holds exactly
/// `heads` (sequence, hash), oldest first, the last one being `signed` when
/// given, and the key that signed it is published (#18 item 4); returns the
/// last line.
async fn checkpoint_history_holds(
    env: &Env,
    heads: &[(u64, &str)],
    signed: Option<&Value>,
) -> Value {
    use k8s_openapi::api::core::v1::ConfigMap;
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), "sluice-system");
    let lines = |c: &ConfigMap| -> Vec<Value> {
        c.data
            .as_ref()
            .and_then(|d| d.get("checkpoints.jsonl"))
            .map(|t| {
                t.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let history = bounded(
        "the checkpoint history",
        await_condition(
            config_maps.clone(),
            "sluice-checkpoints.shop.orders-db",
            |c: Option<&ConfigMap>| c.is_some_and(|c| lines(c).len() == heads.len()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let entries = lines(&history);
    let found: Vec<(u64, &str)> = entries
        .iter()
        .map(|e| (e["sequence"].as_u64().unwrap(), e["hash"].as_str().unwrap()))
        .collect();
    assert_eq!(found, heads);
    let last = entries.last().unwrap();
    if let Some(signed) = signed {
        assert_eq!(last["signature"], signed["signature"]);
    }
    assert_eq!(last["connection"], "orders-db");
    assert_eq!(last["namespace"], "shop");
    let keys = config_maps.get("sluice-checkpoint-keys").await.unwrap();
    let jwks: Value = serde_json::from_str(&keys.data.unwrap()["jwks.json"]).unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == last["keyId"]),
        "{jwks}"
    );
    last.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_tokens_in_flight_valid() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let before = format!("Bearer {}", body["token"].as_str().unwrap());

    // A day later the leader rotates: a new current key, the old one kept.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(25 * 3600);
    assert!(env.operator.keys.rotate_if_due(later).await.unwrap());
    let (_, _, jwks) = env.call("GET", "/v1/jwks", &[], None).await;
    let jwks: Value = serde_json::from_slice(&jwks).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");

    // The token signed before the rotation still works...
    let (status, _, _) = env
        .call("GET", "/v1/bundle", &[("authorization", &before)], None)
        .await;
    assert_eq!(status, 200);
    // ...and new tokens name the new key.
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let kid = |token: &str| -> Value {
        let header = token.split('.').next().unwrap();
        serde_json::from_slice::<Value>(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap(),
        )
        .unwrap()["kid"]
            .clone()
    };
    let new_kid = kid(body["token"].as_str().unwrap());
    assert_ne!(new_kid, kid(before.trim_start_matches("Bearer ")));
    assert_eq!(jwks["keys"][0]["kid"], new_kid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_failover_while_every_replica_serves() {
    let env = Env::start().await;
    let mut first_leading = env.operator.leading.clone();
    bounded("first replica leads", first_leading.wait_for(|l| *l))
        .await
        .unwrap();

    // A second replica: it shares the Secrets (same CA, same signing keys) but does not lead.
    let second = support::test_settings("second-replica");
    let mut second = sluice_operator::run::start(env.client.clone(), second)
        .await
        .unwrap();
    bounded("second replica caches", second.ready()).await;
    assert_eq!(second.ca_bundle_pem(), env.operator.ca_bundle_pem());
    assert!(!*second.leading.borrow());
    let (status, _, jwks_second) = support::call(
        second.addr,
        &second.ca_bundle_pem(),
        "GET",
        "/v1/jwks",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, jwks_first) = env.call("GET", "/v1/jwks", &[], None).await;
    assert_eq!(jwks_second, jwks_first);

    // The leader goes away; the second replica takes over once the Lease lapses.
    let Env {
        operator,
        client,
        cluster,
    } = env;
    // A graceful stop gives the Lease up: no waiting for it to lapse.
    operator.shutdown().await;
    bounded("second replica leads", second.leading.wait_for(|l| *l))
        .await
        .unwrap();
    // And now runs the controllers: a new policy gets its status from it.
    apply_yaml(
        &client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: after-failover, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [orders-db]
"#,
    )
    .await;
    bounded(
        "after-failover Ready",
        await_condition(
            Api::<AccessPolicy>::namespaced(client.clone(), "shop"),
            "after-failover",
            condition_is("Ready", "True", "Compiled"),
        ),
    )
    .await
    .unwrap();
    drop(second);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_deleted_service_accounts_are_refused() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.client.clone(), "shop");
    accounts
        .delete("report-job", &DeleteParams::default())
        .await
        .unwrap();
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "ServiceAccountDeleted", "{body}");
    // The gateway token issued before is void too, like a deleted pod's,
    // and stays void when an account of the same name is created again.
    for recreated in [false, true] {
        if recreated {
            env.service_account("report-job").await;
        }
        let (status, _, body) = env
            .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
            .await;
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["reason"], "ServiceAccountDeleted", "{body}");
    }
    // An empty or oversized subject token never reaches the API server.
    let (status, body) = env.exchange("").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "BadSubjectToken", "{body}");
    let (status, body) = env.exchange(&"x".repeat(20_000)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "BadSubjectToken", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_refusals_and_fail_closed_bindings() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");

    // A pod without the annotation passes unchanged.
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "spec": {"serviceAccountName": "report-job", "containers": [{"name": "app", "image": "x"}]}
    }))
    .unwrap();
    let plain = pods
        .create(&kube::api::PostParams::default(), &plain)
        .await
        .unwrap();
    assert!(plain.spec.unwrap().init_containers.is_none());

    // A pod sharing its process namespace is refused: the app could read the sidecar's memory.
    let shared: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shared", "annotations": {"sluice.dev/inject": "true"}},
        "spec": {
            "serviceAccountName": "report-job",
            "shareProcessNamespace": true,
            "containers": [{"name": "app", "image": "x"}]
        }
    }))
    .unwrap();
    let err = pods
        .create(&kube::api::PostParams::default(), &shared)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("shareProcessNamespace")),
        "{err:?}"
    );

    // Fail closed: a policy that binds report-job to orders-db but does not
    // compile makes orders-db unbound for it, rather than dropping its rules.
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    apply_yaml(
        &env.client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: broken, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [orders-db]
  rules:
    - name: broken
      match: {textPattern: "(unclosed"}
      action: deny
"#,
    )
    .await;
    bounded(
        "broken InvalidPattern",
        await_condition(
            env.policies(),
            "broken",
            condition_is("Ready", "False", "InvalidPattern"),
        ),
    )
    .await
    .unwrap();
    // orders-db's boundPolicies come from the operator's caches: once they
    // name the broken policy, bundles are built with it too.
    bounded(
        "orders-db names the broken policy",
        await_condition(env.connections(), "orders-db", |c: Option<&Connection>| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.bound_policies.contains(&"broken".to_string()))
        }),
    )
    .await
    .unwrap();
    let (status, _, body) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200);
    let bundle: Value = serde_json::from_slice(&body).unwrap();
    // Unbound, so not in the bundle at all (its credentials least of all).
    assert_eq!(bundle["connections"], json!([]), "{bundle}");
    assert!(!String::from_utf8_lossy(&body).contains("change-me-orders-app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_restores_the_webhook_ca_bundle() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let env = Env::start().await;
    env.webhook_registered().await;
    let api: Api<MutatingWebhookConfiguration> = Api::all(env.client.clone());
    let bogus = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    );
    api.patch(
        "sluice-operator",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bogus}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let expected = env.operator.ca_bundle_pem();
    bounded(
        "caBundle restored by the leader",
        await_condition(
            api,
            "sluice-operator",
            move |w: Option<&MutatingWebhookConfiguration>| {
                w.and_then(|w| w.webhooks.as_ref())
                    .and_then(|h| h[0].client_config.ca_bundle.as_ref())
                    .is_some_and(|b| b.0 == expected.as_bytes())
            },
        ),
    )
    .await
    .unwrap();
}

/// The certificate the operator presents now, in DER.
async fn presented_cert(env: &Env) -> Vec<u8> {
    let config = sluice_e2e::pki::client_config(&env.operator.ca_bundle_pem()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(env.operator.addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(env.operator.addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_serving_certificate_is_served_without_a_restart() {
    use k8s_openapi::api::core::v1::Secret;
    use rustls::pki_types::pem::PemObject as _;
    use sluice_operator::identity::pki::{Ca, SubjectNames};

    let env = Env::start().await;
    let before = presented_cert(&env).await;
    // Another replica (or cert-manager) renews the serving certificate in the Secret.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "sluice-system");
    let mut secret = secrets.get("sluice-operator-tls").await.unwrap();
    let data = secret.data.as_mut().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let ca = Ca::from_pem(&text("ca.crt"), &text("ca.key")).unwrap();
    let names = SubjectNames {
        dns: vec![],
        ips: vec![env.operator.addr.ip()],
    };
    let renewed = ca
        .issue_serving(
            &names,
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(90 * 86400),
        )
        .unwrap();
    data.insert(
        "tls.crt".into(),
        k8s_openapi::ByteString(renewed.cert_pem().as_bytes().to_vec()),
    );
    data.insert(
        "tls.key".into(),
        k8s_openapi::ByteString(renewed.key_pem().as_bytes().to_vec()),
    );
    secrets
        .replace("sluice-operator-tls", &Default::default(), &secret)
        .await
        .unwrap();
    let expected = rustls::pki_types::CertificateDer::from_pem_slice(renewed.cert_pem().as_bytes())
        .unwrap()
        .to_vec();
    assert_ne!(before, expected);
    // The operator re-reads the Secret on its maintenance tick; what a TLS
    // client sees can only be polled. Bounded by WAIT.
    bounded("the renewed certificate is presented", async {
        while presented_cert(&env).await != expected {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// Issue 18 item 1: credentials only for a pod running the genuine sidecar,
/// whatever the pod's author wrote, checked at admission, at every token
/// exchange and at every bundle poll (a running pod's images are mutable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_genuine_sidecar_gets_credentials() {
    const PINNED: &str = "registry.example/sluice-sidecar@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let (cluster, client) = support::cluster_with_crds(Default::default()).await;
    support::apply_quickstart(
        &client,
        &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
    )
    .await;
    let mut settings = support::test_settings("test-operator");
    settings.sidecar_image = PINNED.to_string();
    let env = Env::with_operator(cluster, client, settings).await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");

    let genuine = env.injected_pod("report", "report-job").await;
    let token = env.pod_token("report-job", &genuine, "sluice.dev").await;
    let (status, body) = env.exchange(&token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());

    // Pods that claim to be injected without the webhook (no opt-in
    // annotation, so it is not even called): the injected pod's own spec and
    // annotations, with one change each.
    let forge = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut annotations = serde_json::to_value(&genuine.metadata.annotations).unwrap();
        annotations
            .as_object_mut()
            .unwrap()
            .remove("sluice.dev/inject");
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": serde_json::to_value(genuine.spec.as_ref().unwrap()).unwrap(),
        });
        edit(&mut pod);
        serde_json::from_value::<Pod>(pod).unwrap()
    };
    let sidecar_env = |pod: &mut Value, name: &str, value: &str| {
        for e in pod["spec"]["initContainers"][0]["env"]
            .as_array_mut()
            .unwrap()
        {
            if e["name"] == name {
                e["value"] = json!(value);
            }
        }
    };
    type Case<'a> = (&'static str, &'static str, Box<dyn Fn(&mut Value) + 'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            "elsewhere",
            "SidecarTampered",
            Box::new(|p| sidecar_env(p, "SLUICE_GATEWAY_URL", "https://evil.example:8443")),
        ),
        (
            "hostnet",
            "HostNetwork",
            Box::new(|p| p["spec"]["hostNetwork"] = json!(true)),
        ),
        (
            "stealer",
            "TokenExposed",
            Box::new(|p| {
                p["spec"]["containers"][0]["volumeMounts"] =
                    json!([{"name": "sluice-token", "mountPath": "/stolen"}])
            }),
        ),
        (
            "shell",
            "SidecarTampered",
            Box::new(|p| p["spec"]["initContainers"][0]["command"] = json!(["/bin/sh", "-c"])),
        ),
        (
            "retagged",
            "UntrustedImage",
            Box::new(|p| {
                p["spec"]["initContainers"][0]["image"] =
                    json!("registry.example/sluice-sidecar:latest")
            }),
        ),
        (
            "no-revision",
            "NotInjected",
            Box::new(|p| {
                p["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("sluice.dev/injected-revision");
            }),
        ),
    ];
    for (name, reason, edit) in &cases {
        let created = pods
            .create(&kube::api::PostParams::default(), &forge(name, edit))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let forged_token = env.pod_token("report-job", &created, "sluice.dev").await;
        let (status, body) = env.exchange(&forged_token).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(body["reason"], *reason, "{name}: {body}");
    }
    // What is verified is the content, not who wrote it: an exact copy runs
    // the genuine sidecar, and only it holds the token.
    let copy = pods
        .create(&kube::api::PostParams::default(), &forge("copy", &|_| {}))
        .await
        .unwrap();
    let copy_token = env.pod_token("report-job", &copy, "sluice.dev").await;
    let (status, body) = env.exchange(&copy_token).await;
    assert_eq!(status, 200, "{body}");

    // Admission: a pod that opts in but brings its own sidecar with the
    // revision already written, or mounts the token volume in its app, is refused.
    let mut own = serde_json::to_value(forge("own-sidecar", &|p| {
        sidecar_env(p, "SLUICE_GATEWAY_URL", "https://evil.example:8443")
    }))
    .unwrap();
    own["metadata"]["annotations"]["sluice.dev/inject"] = json!("true");
    let err = pods
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(own).unwrap(),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("already carries sluice.dev/injected-revision")),
        "{err:?}"
    );
    let mounting: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mounting", "annotations": {"sluice.dev/inject": "true"}},
        "spec": {
            "serviceAccountName": "report-job",
            "containers": [{"name": "app", "image": "x",
                "volumeMounts": [{"name": "sluice-token", "mountPath": "/stolen"}]}]
        }
    }))
    .unwrap();
    let err = pods
        .create(&kube::api::PostParams::default(), &mounting)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("mounts volume sluice-token")),
        "{err:?}"
    );

    // After admission: the kubelet reports another image running in the
    // genuine pod's sidecar; the next bundle poll is refused, and so is the
    // next exchange.
    let (status, _, _) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200);
    pods.patch_status(
        "report",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"initContainerStatuses": [{
            "name": "sluice-sidecar", "image": PINNED, "ready": true, "restartCount": 0,
            "imageID": "registry.example/sluice-sidecar@sha256:2222222222222222222222222222222222222222222222222222222222222222"
        }]}})),
    )
    .await
    .unwrap();
    // Refused once the pod watch sees the change (its event may lag the write).
    let (status, body) = refused_once_seen(&env, &bearer).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["reason"], "RunningImageMismatch", "{body}");
    let (status, body) = env.exchange(&token).await;
    assert_eq!(status, 403, "{body}");

    // The spec's image changed in place (kubectl set image) is refused too:
    // at admission (the pod webhook sees updates of injected pods) and, where
    // the webhook is not called (the namespace lost its label), by the gateway.
    let copy_bearer = {
        let (status, body) = env.exchange(&copy_token).await;
        assert_eq!(status, 200, "{body}");
        format!("Bearer {}", body["token"].as_str().unwrap())
    };
    let evil_image = || {
        Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "replace",
                "path": "/spec/initContainers/0/image", "value": "evil.example/sidecar:1"}]))
            .unwrap(),
        )
    };
    let err = pods
        .patch("copy", &PatchParams::default(), &evil_image())
        .await
        .expect_err("refused at admission");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("may not change (image differ)")),
        "{err:?}"
    );
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sluice.dev/injection": null}}})),
        )
        .await
        .unwrap();
    pods.patch("copy", &PatchParams::default(), &evil_image())
        .await
        .unwrap();
    let (status, body) = refused_once_seen(&env, &copy_bearer).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["reason"], "UntrustedImage", "{body}");
}

/// The first answer other than 200 to a bundle poll with `bearer`: the
/// gateway checks the pod the pod watch holds, so a change is refused once
/// its watch event arrives, not necessarily at the next request.
async fn refused_once_seen(env: &Env, bearer: &str) -> (u16, bytes::Bytes) {
    bounded("the changed pod to be refused", async {
        loop {
            let (status, _, body) = env
                .call("GET", "/v1/bundle", &[("authorization", bearer)], None)
                .await;
            if status != 200 {
                return (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

/// `POST /v1/audit` with `bearer`: status and answer.
async fn upload(env: &Env, bearer: &str, events: &[Value], heads: Value) -> (u16, Value) {
    let body = json!({"events": events, "heads": heads});
    let (status, _, answer) = env
        .call(
            "POST",
            "/v1/audit",
            &[("authorization", bearer)],
            Some(body),
        )
        .await;
    (
        status,
        serde_json::from_slice::<Value>(&answer).unwrap_or(Value::Null),
    )
}

/// Issue 18 items 4 and 5: the operator signs only heads of the caller's own
/// streams on Connections it is bound to, of events it was sent, moving
/// forward; the signature names identity and pod; events count only for
/// policies that bind the uploader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_cover_only_the_callers_bound_streams_moving_forward() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    // A policy for someone else, which report-job's uploads may not feed.
    apply_yaml(
        &env.client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  subjects: [{serviceAccount: intruder}]
  connections: [orders-db]
  rules: [{name: no-drop, match: {statements: [drop]}, action: deny}]
"#,
    )
    .await;
    env.policy_ready("elsewhere").await;
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let head = |stream: &str, e: &Value| json!([{"connection": e["connection"], "stream": stream, "seq": e["seq"], "hash": e["hash"]}]);

    let s1 = format!("{REPORT_STREAM}boot-1");
    let mut chain = AuditChain::new(s1.clone());
    let first = chained(
        &mut chain,
        &[
            draft(
                AuditKind::Statement,
                "report-job",
                Some(json!({"text": "SELECT 1", "fingerprint": "f0", "kind": "select"})),
                Some(json!({"action": "allow", "policy": "reporting", "dryRun": false})),
                None,
            ),
            denial_draft("report-job", "elsewhere", "no-drop"),
            denial_draft("report-job", "reporting", "no-schema-changes"),
        ],
    );
    let (status, receipt) = upload(&env, &bearer, &first, head(&s1, &first[2])).await;
    assert_eq!(status, 200, "{receipt}");
    let signed = &receipt["checkpoints"][0];
    assert_eq!(signed["identity"], "system:serviceaccount:shop:report-job");
    assert_eq!(signed["pod"], "report");
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            signed["signature"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["serviceAccount"], "report-job", "{payload}");
    assert_eq!(payload["pod"], "report", "{payload}");
    assert_eq!(payload["podUid"], json!(pod.metadata.uid), "{payload}");
    assert_eq!(
        (&payload["stream"], &payload["sequence"]),
        (&json!(s1), &json!(3))
    );
    // The same head again (a lost receipt) is taken again.
    let (status, receipt) = upload(&env, &bearer, &first, head(&s1, &first[2])).await;
    assert_eq!(status, 200, "{receipt}");

    // Back to seq 1 of the same stream: refused.
    let (status, answer) = upload(&env, &bearer, &first[..1], head(&s1, &first[0])).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("does not move forward"),
        "{answer}"
    );
    // A head that is not one of the uploaded events.
    let mut fake = first[2].clone();
    fake["seq"] = json!(99);
    let (status, answer) = upload(&env, &bearer, &first, head(&s1, &fake)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("not an event of this batch"),
        "{answer}"
    );
    // An edited event under its old hash.
    let mut next = chained(
        &mut chain,
        &[denial_draft("report-job", "reporting", "no-schema-changes")],
    );
    let mut edited = next.clone();
    edited[0]["command"]["text"] = json!("SELECT 1");
    let (status, answer) = upload(&env, &bearer, &edited, head(&s1, &edited[0])).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("does not match its content"),
        "{answer}"
    );
    // Another identity's stream, or another pod's, under this token.
    for stream in [
        "sidecar:shop/intruder:intruder:boot-1",
        "sidecar:shop/report-job:report-2:boot-1",
        "report/boot-1",
    ] {
        let mut other = AuditChain::new(stream);
        let events = chained(
            &mut other,
            &[denial_draft("report-job", "reporting", "no-schema-changes")],
        );
        let (status, answer) = upload(&env, &bearer, &events, head(stream, &events[0])).await;
        assert_eq!(status, 400, "{stream}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("is not this sidecar's"),
            "{answer}"
        );
    }
    // A Connection the identity is not bound to.
    let mut unbound = draft(AuditKind::SessionStart, "report-job", None, None, None);
    unbound.connection = Some("billing-db".into());
    let mut side = AuditChain::new(format!("{REPORT_STREAM}boot-3"));
    let events = chained(&mut side, &[unbound]);
    let (status, answer) = upload(
        &env,
        &bearer,
        &events,
        head(&side.head().stream, &events[0]),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("billing-db"),
        "{answer}"
    );

    // Forward on the stream, and a second stream of the pod (a restarted
    // sidecar) starts its own history.
    next = chained(
        &mut chain,
        &[denial_draft("report-job", "reporting", "no-schema-changes")],
    );
    let (status, answer) = upload(&env, &bearer, &next, head(&s1, &next[0])).await;
    assert_eq!(status, 200, "{answer}");
    let s2 = format!("{REPORT_STREAM}boot-2");
    let mut restarted = AuditChain::new(s2.clone());
    let events = chained(
        &mut restarted,
        &[denial_draft("report-job", "reporting", "no-schema-changes")],
    );
    let (status, answer) = upload(&env, &bearer, &events, head(&s2, &events[0])).await;
    assert_eq!(status, 200, "{answer}");

    // The denial naming `elsewhere` was not counted; reporting's were.
    bounded(
        "reporting's counters",
        await_condition(env.policies(), "reporting", |p: Option<&AccessPolicy>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.counters.as_ref())
                .is_some_and(|c| c.denied >= 3 && c.allowed >= 1)
        }),
    )
    .await
    .unwrap();
    let elsewhere = env.policies().get("elsewhere").await.unwrap();
    let status = elsewhere.status.unwrap();
    assert!(
        status.counters.as_ref().is_none_or(|c| c.denied == 0),
        "{:?}",
        status.counters
    );
    assert!(
        status.recent_denials.is_empty(),
        "{:?}",
        status.recent_denials
    );
}

/// Issue 18 item 4: a stream's signed heads only move forward across an
/// operator restart too. The restarted operator remembers no stream, and the
/// Connection's one status slot holds another stream's head: the stream's last
/// signed head is read from the durable checkpoint history. If that history
/// cannot be read, nothing is signed (the batch is refused, to be sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_not_rewound_after_an_operator_restart() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::rbac::v1::Role;
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let head = |stream: &str, e: &Value| json!([{"connection": e["connection"], "stream": stream, "seq": e["seq"], "hash": e["hash"]}]);
    let denials = |n: usize| vec![denial_draft("report-job", "reporting", "no-schema-changes"); n];

    // Stream boot-1 is signed up to seq 5, then boot-2 takes the Connection's status slot.
    let s1 = format!("{REPORT_STREAM}boot-1");
    let mut chain = AuditChain::new(s1.clone());
    let first = chained(&mut chain, &denials(5));
    let (status, receipt) = upload(&env, &bearer, &first, head(&s1, &first[4])).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["checkpoints"][0]["sequence"], 5);
    let s2 = format!("{REPORT_STREAM}boot-2");
    let mut other = AuditChain::new(s2.clone());
    let events = chained(&mut other, &denials(1));
    let (status, receipt) = upload(&env, &bearer, &events, head(&s2, &events[0])).await;
    assert_eq!(status, 200, "{receipt}");
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), "sluice-system");
    bounded(
        "both streams in the history",
        await_condition(
            config_maps,
            "sluice-checkpoints.shop.orders-db",
            |c: Option<&ConfigMap>| {
                c.and_then(|c| c.data.as_ref()?.get("checkpoints.jsonl"))
                    .is_some_and(|t| t.lines().count() == 2)
            },
        ),
    )
    .await
    .unwrap();
    bounded(
        "boot-2 in the status slot",
        await_condition(env.connections(), "orders-db", |c: Option<&Connection>| {
            c.and_then(|c| c.status.as_ref()?.audit_checkpoint.as_ref())
                .is_some_and(|cp| cp.stream == s2)
        }),
    )
    .await
    .unwrap();

    // The operator restarts at its address (its Service's), under the chart's RBAC.
    let Env {
        operator,
        client,
        cluster,
    } = env;
    let addr = operator.addr;
    operator.shutdown().await;
    let operator_client = support::chart_operator_client(&cluster, &client).await;
    let mut settings = support::test_settings("restarted-operator");
    settings.listen = addr;
    let env = Env::with_operator_as(cluster, client, operator_client, settings).await;

    // Back to seq 3 of boot-1: refused, although the restarted replica never
    // signed boot-1 and the status slot holds boot-2.
    let (status, answer) = upload(&env, &bearer, &first[..3], head(&s1, &first[2])).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("does not move forward from the last signed head 5"),
        "{answer}"
    );
    // Forward from 5: signed, naming 5 as the previous head.
    let next = chained(&mut chain, &denials(1));
    let (status, receipt) = upload(&env, &bearer, &next, head(&s1, &next[0])).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["checkpoints"][0]["sequence"], 6);

    // The history cannot be read (the Role no longer grants ConfigMaps): a
    // stream this replica has not signed gets nothing signed.
    let roles: Api<Role> = Api::namespaced(env.client.clone(), "sluice-system");
    let mut role = roles.get("sluice-operator").await.unwrap();
    role.rules.as_mut().unwrap().retain(|r| {
        !r.resources
            .as_ref()
            .is_some_and(|res| res.iter().any(|x| x == "configmaps"))
    });
    roles
        .replace("sluice-operator", &Default::default(), &role)
        .await
        .unwrap();
    let (status, answer) = upload(&env, &bearer, &events, head(&s2, &events[0])).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("could not read the checkpoint history"),
        "{answer}"
    );
}

/// The value of the unlabelled metric `name` on `/metrics`.
async fn metric(env: &Env, name: &str) -> f64 {
    let (status, _, body) = env.call("GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not in {text}"))
}

/// Only the Secrets that Connections reference are read (#19 item 4): Secrets
/// nobody references (in the caller's namespace or another) and a referenced
/// Secret of another namespace wake no bundle long-poll of `shop`; the
/// Connection's own credentials Secret wakes it once, with the new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_referenced_secrets_in_its_namespace_wake_a_long_poll() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let subject_token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&subject_token).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let (status, headers, body) = env
        .call("GET", "/v1/bundle", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let etag = headers["etag"].to_str().unwrap().to_string();

    // Another namespace with a Connection whose Secret does not exist yet.
    apply_yaml(
        &env.client,
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: elsewhere}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: other-db, namespace: elsewhere}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: 5432, database: other, tls: {mode: disable}}
  credentials: {secretRef: {name: other-creds}}
  listen: {port: 15433}
"#,
    )
    .await;
    let elsewhere: Api<Connection> = Api::namespaced(env.client.clone(), "elsewhere");
    bounded(
        "other-db without its Secret",
        await_condition(
            elsewhere.clone(),
            "other-db",
            connection_condition_is("CredentialsResolved", "False", "SecretNotFound"),
        ),
    )
    .await
    .unwrap();

    let woken_before = metric(&env, "sluice_gateway_bundle_wakeups_total").await;
    let poll = support::waiting_bundle_poll(
        env.operator.addr,
        &env.operator.ca_bundle_pem(),
        &bearer,
        &etag,
    )
    .await;

    // Unreferenced Secrets, in shop and elsewhere, created and changed.
    apply_yaml(
        &env.client,
        r#"
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: shop}
stringData: {token: one}
---
apiVersion: v1
kind: Secret
metadata: {name: stray, namespace: elsewhere}
stringData: {token: one}
"#,
    )
    .await;
    let shop_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), "shop");
    shop_secrets
        .patch(
            "unrelated",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "two"}})),
        )
        .await
        .unwrap();
    // The referenced Secret of elsewhere: seen (other-db resolves), and the
    // barrier that the changes before it were seen too, had they been watched.
    apply_yaml(
        &env.client,
        r#"
apiVersion: v1
kind: Secret
metadata: {name: other-creds, namespace: elsewhere}
stringData: {username: other, password: other-pw}
"#,
    )
    .await;
    bounded(
        "other-db to resolve its Secret",
        await_condition(
            elsewhere,
            "other-db",
            connection_condition_is("CredentialsResolved", "True", "Resolved"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        metric(&env, "sluice_gateway_bundle_wakeups_total").await - woken_before,
        0.0,
        "Secrets that do not feed shop's bundle woke its long-poll"
    );
    assert!(!poll.is_finished());

    // shop's credentials change: the long-poll wakes once with them.
    shop_secrets
        .patch(
            "orders-db-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "rotated"}})),
        )
        .await
        .unwrap();
    let (status, _, body) = bounded("long poll answer", poll).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let bundle: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        bundle["connections"][0]["credentials"]["password"],
        "rotated"
    );
    assert_eq!(
        metric(&env, "sluice_gateway_bundle_wakeups_total").await - woken_before,
        1.0
    );
}

/// With `--adopt-webhook-configurations` (the chart ships the configurations,
/// so `helm uninstall` removes them, #19 item 5) the leader fills caBundle of
/// the configurations that exist and leaves Helm's labels alone, but never
/// creates a missing one: an operator still running during uninstall cannot
/// bring a fail-closed webhook back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_operator_fills_ca_bundles_and_creates_no_configuration() {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let (cluster, client) =
        support::cluster_with_crds(sluice_e2e::Options::default().rbac(true)).await;
    let operator_client = support::chart_operator_client(&cluster, &client).await;
    let mut settings = support::test_settings("adopter");
    settings.adopt_webhook_configurations = true;
    let env = Env::with_operator_as(cluster, client, operator_client, settings).await;
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(env.client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
    // As `helm install` creates it: Helm's labels, no caBundle, another URL.
    let installed: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "sluice-operator-approvals",
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": "sluice"}},
        "webhooks": [{"name": "approvals.sluice.dev", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:1/mutate/accessrequests"},
            "sideEffects": "None",
            "rules": [{"apiGroups": ["sluice.dev"], "apiVersions": ["*"],
                "operations": ["CREATE"], "resources": ["accessrequests"]}]}]
    }))
    .unwrap();
    mutating
        .create(&Default::default(), &installed)
        .await
        .unwrap();
    let ca = env.operator.ca_bundle_pem();
    let filled = |ca: String| {
        move |w: Option<&MutatingWebhookConfiguration>| {
            w.and_then(|w| w.webhooks.as_ref())
                .and_then(|h| h[0].client_config.ca_bundle.as_ref())
                .is_some_and(|b| b.0 == ca.as_bytes())
        }
    };
    let adopted = bounded(
        "caBundle filled by the leader",
        await_condition(
            mutating.clone(),
            "sluice-operator-approvals",
            filled(ca.clone()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let hook = &adopted.webhooks.as_ref().unwrap()[0];
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some(
            format!(
                "{}/mutate/accessrequests",
                env.operator.webhook_base_url.as_deref().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(hook.rules.as_ref().unwrap().len(), 2, "{hook:?}");
    let labels = adopted.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    // One more full maintenance pass after the first: clear the bundle, wait
    // for it to come back. The missing configurations stay missing.
    mutating
        .patch(
            "sluice-operator-approvals",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    bounded(
        "caBundle filled again",
        await_condition(mutating.clone(), "sluice-operator-approvals", filled(ca)),
    )
    .await
    .unwrap();
    assert!(mutating.get_opt("sluice-operator").await.unwrap().is_none());
    assert!(
        validating
            .get_opt("sluice-operator-approvals")
            .await
            .unwrap()
            .is_none()
    );
}
