//! The `sluice-operator` binary against the test control plane, as `make e2e`
//! runs it: `--listen` and `--webhook-url`, KUBECONFIG from the cluster.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::process::Stdio;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use sluice_crds::AccessPolicy;
use support::{OperatorBinary, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_registers_its_webhook_and_serves_the_gateway() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = sluice_e2e::TestCluster::start(sluice_e2e::Options::default())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let operator = OperatorBinary::start(&cluster.kubeconfig_path(), &[], &[], Stdio::inherit());
    let url = operator.url.clone();
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let registered = bounded(
        "webhook configuration",
        await_condition(
            webhooks,
            "sluice-operator",
            |w: Option<&MutatingWebhookConfiguration>| w.is_some(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let webhook = &registered.webhooks.unwrap()[0];
    assert_eq!(
        webhook.client_config.url.as_deref(),
        Some(format!("{url}/mutate/pods").as_str())
    );
    let ca_bundle = String::from_utf8(webhook.client_config.ca_bundle.clone().unwrap().0).unwrap();
    let secret = Api::<Secret>::namespaced(client, "sluice-system")
        .get("sluice-operator-tls")
        .await
        .unwrap();
    let ca = String::from_utf8(secret.data.unwrap()["ca.crt"].0.clone()).unwrap();
    assert_eq!(ca_bundle, ca);

    let addr = operator.addr;
    let (status, _, body) = support::call(addr, &ca_bundle, "GET", "/healthz", &[], None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = support::call(addr, &ca_bundle, "GET", "/v1/jwks", &[], None).await;
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
}

/// An AccessPolicy that no client can decode (here `statementsPerSecond` beyond
/// `u32`, stored by a raw write as under a laxer schema) must not stop the
/// operator: it starts with it in the first list, becomes ready, reconciles the
/// other policies, and marks the broken one `Invalid` (reason `Undecodable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_policy_is_skipped_and_marked_invalid() {
    let (cluster, client) = support::cluster_with_crds(sluice_e2e::Options::default()).await;
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let policy = |name: &str, rate: u64| {
        serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"subjects": [{"serviceAccount": "job"}], "connections": ["orders-db"],
                "mode": "enforce", "defaultAction": "allow", "onParseError": "deny",
                "limits": {"statementsPerSecond": rate, "onMaxRows": "refuse"}}})
    };
    // The schema refuses it now; a raw write is how such an object exists.
    let refused = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "shop",
        &kube::discovery::ApiResource::erase::<sluice_crds::AccessPolicy>(&()),
    )
    .create(
        &Default::default(),
        &serde_json::from_value(policy("broken", 4294967296)).unwrap(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("spec.limits.statementsPerSecond in body should be less than or equal to 4.294967295e+09"),
        "{refused}"
    );
    cluster.store_raw("sluice.dev/accesspolicies", policy("broken", 4294967296));
    // A rule whose match is empty (a misspelt field pruned by a client that
    // does not ask for strict validation, stored before the schema refused
    // it) would match everything: the policy is Invalid, not a catch-all.
    let mut pruned = policy("pruned", 10);
    pruned["spec"]["defaultAction"] = "deny".into();
    pruned["spec"]["rules"] =
        serde_json::json!([{"name": "reads", "match": {}, "action": "allow"}]);
    cluster.store_raw("sluice.dev/accesspolicies", pruned);
    // The Connection the policies name exists, so the empty match is the
    // pruned policy's only problem.
    support::apply_yaml(
        &client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Connection\nmetadata: {name: orders-db, namespace: shop}\nspec:\n  protocol: postgres\n  upstream: {host: 127.0.0.1, port: 5432, database: orders, tls: {mode: disable}}\n  credentials: {secretRef: {name: orders-db}}\n  listen: {port: 15432}\n",
    )
    .await;
    support::apply_yaml(
        &client,
        &serde_saphyr::to_string(&policy("fine", 10)).unwrap(),
    )
    .await;

    let operator = OperatorBinary::start(&cluster.kubeconfig_path(), &[], &[], Stdio::inherit());
    let policies = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "shop",
        &kube::discovery::ApiResource::erase::<sluice_crds::AccessPolicy>(&()),
    );
    let condition = |o: &kube::api::DynamicObject, type_: &str| {
        o.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
    };
    let broken = bounded(
        "the broken policy marked Invalid",
        await_condition(
            policies.clone(),
            "broken",
            |o: Option<&kube::api::DynamicObject>| {
                o.and_then(|o| condition(o, "Invalid"))
                    .is_some_and(|c| c["status"] == "True")
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let invalid = condition(&broken, "Invalid").unwrap();
    assert_eq!(invalid["reason"], "Undecodable");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("statementsPerSecond")
            || invalid["message"].as_str().unwrap().contains("4294967296"),
        "{invalid}"
    );
    assert_eq!(condition(&broken, "Ready").unwrap()["status"], "False");
    let pruned = bounded(
        "the policy with an empty match marked Invalid",
        await_condition(
            policies.clone(),
            "pruned",
            |o: Option<&kube::api::DynamicObject>| {
                o.and_then(|o| condition(o, "Invalid"))
                    .is_some_and(|c| c["status"] == "True")
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let invalid = condition(&pruned, "Invalid").unwrap();
    assert_eq!(invalid["reason"], "InvalidRule", "{invalid}");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[0].match"),
        "{invalid}"
    );
    // The other policy is reconciled.
    bounded(
        "the other policy reconciled",
        await_condition(policies, "fine", |o: Option<&kube::api::DynamicObject>| {
            o.is_some_and(|o| o.data["status"]["observedGeneration"].as_i64() == Some(1))
        }),
    )
    .await
    .unwrap();
    // And the operator is ready (its caches filled despite the broken object).
    let secret = Api::<Secret>::namespaced(client, "sluice-system");
    let tls = bounded(
        "serving certificate",
        await_condition(secret, "sluice-operator-tls", |s: Option<&Secret>| {
            s.is_some()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let ca = String::from_utf8(tls.data.unwrap()["ca.crt"].0.clone()).unwrap();
    let addr = operator.addr;
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (status, _, body) = support::call(addr, &ca, "GET", "/readyz", &[], None).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The approvals webhook configurations, as the API server stores them
/// (defaulted: selectors `{}`, rule scope, service port...), compare equal to
/// what the operator wants, so the leader does not re-apply them every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_webhook_configurations_need_no_reapply() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use sluice_operator::identity::webhook_config::{
        WebhookEndpoint, WebhookSettings, approvals_mutating_configuration,
        approvals_validating_configuration, mutating_needs_apply, pod_injection_configuration,
        validating_needs_apply,
    };
    let (_cluster, client) = support::cluster_with_crds(sluice_e2e::Options::default()).await;
    for endpoint in [
        WebhookEndpoint::Url("https://127.0.0.1:9443".into()),
        WebhookEndpoint::Service {
            namespace: "sluice-system".into(),
            name: "sluice-operator".into(),
            port: 443,
        },
    ] {
        let settings = WebhookSettings {
            endpoint,
            ca_bundle_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            namespace_label: ("sluice.dev/injection".into(), "enabled".into()),
            operator_namespace: "sluice-system".into(),
            match_conditions: false,
            ca_injection_from: None,
        };
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        for desired in [
            approvals_mutating_configuration(&settings),
            pod_injection_configuration(&settings),
        ] {
            let name = desired.metadata.name.clone().unwrap();
            let _ = mutating.delete(&name, &Default::default()).await;
            let stored = mutating
                .create(&Default::default(), &desired)
                .await
                .unwrap();
            assert!(
                !mutating_needs_apply(Some(&stored), &desired),
                "{name}: stored {:?}\nwanted {:?}",
                stored.webhooks,
                desired.webhooks
            );
        }
        let desired = approvals_validating_configuration(&settings);
        let name = desired.metadata.name.clone().unwrap();
        let _ = validating.delete(&name, &Default::default()).await;
        let stored = validating
            .create(&Default::default(), &desired)
            .await
            .unwrap();
        assert!(
            !validating_needs_apply(Some(&stored), &desired),
            "{name}: stored {:?}",
            stored.webhooks
        );
    }
}

/// SIGTERM drains the gateway: a waiting bundle long-poll is answered 304 at
/// once, a waiting approval long-poll with the request's phase, an audit upload whose body is still on its way is finished,
/// acknowledged and its events counted (the periodic flush is an hour away:
/// only the drain writes them), and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_long_polls_and_uploads_and_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Drained {
        cluster: _cluster,
        client,
        mut operator,
        ca,
    } = Drained::start().await;
    let addr = operator.addr;

    let bearer = report_job_bearer(&client, addr, &ca).await;
    let (status, headers, _) = support::call(
        addr,
        &ca,
        "GET",
        "/v1/bundle",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();

    // A long-poll that would wait a minute.
    let poll = support::waiting_bundle_poll(addr, &ca, &bearer, &etag).await;

    // An approval long-poll that would wait a minute for a decision.
    let ticket = ask_approval(addr, &ca, &bearer).await;
    let request = ticket["name"].as_str().unwrap().to_string();
    let approval_poll = {
        let (ca, bearer) = (ca.clone(), bearer.clone());
        let path = format!("/v1/approvals/{request}?wait=60s");
        tokio::spawn(async move {
            support::call(addr, &ca, "GET", &path, &[("authorization", &bearer)], None).await
        })
    };
    bounded("the approval long-poll to wait", async {
        loop {
            let (_, _, metrics) = support::call(addr, &ca, "GET", "/metrics", &[], None).await;
            if String::from_utf8_lossy(&metrics).contains("sluice_gateway_approval_waiting 1") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;

    // An upload whose head is in and whose body is not: `Expect: 100-continue`
    // makes the server say when the handler started reading the body.
    let batch = serde_json::to_vec(&denials_batch(3)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(sluice_e2e::pki::client_config(&ca).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut upload = connector
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    upload
        .write_all(
            format!(
                "POST /v1/audit HTTP/1.1\r\nhost: {addr}\r\nauthorization: {bearer}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
                batch.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    upload.flush().await.unwrap();
    let mut answer = Vec::new();
    bounded("100 Continue", async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = upload.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before 100 Continue");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    operator.sigterm();

    // The long-poll is answered at once (well before its 60 s): not modified.
    let (status, headers, _) = bounded("the long-poll answer", poll).await.unwrap();
    assert_eq!(status, 304);
    assert_eq!(headers["etag"].to_str().unwrap(), etag);

    // So is the approval long-poll: the request's phase as it stands.
    let (status, _, body) = bounded("the approval long-poll answer", approval_poll)
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["phase"], "Pending", "{answer}");

    // The rest of the upload still goes in, and is acknowledged; then the
    // connection closes (draining: no keep-alive).
    upload.write_all(&batch).await.unwrap();
    upload.flush().await.unwrap();
    let mut rest = Vec::new();
    bounded("the upload's answer", upload.read_to_end(&mut rest))
        .await
        .unwrap();
    let rest = String::from_utf8_lossy(&rest).to_string();
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{rest}");
    let receipt: serde_json::Value =
        serde_json::from_str(rest.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(receipt["accepted"], 3, "{rest}");

    // Written by the drain (the periodic flush was an hour away).
    let counters = counters_after_exit(&mut operator, &client).await;
    assert_eq!(counters.denied, 3, "{counters:?}");
}

/// A gateway token (`Bearer ...`) for a new injected pod `report` of
/// `shop/report-job`, exchanged at the operator at `addr`.
async fn report_job_bearer(client: &kube::Client, addr: std::net::SocketAddr, ca: &str) -> String {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use kube::api::PostParams;

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "report-job"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let pod: Pod = Api::namespaced(client.clone(), "shop")
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "report", "annotations": {"sluice.dev/inject": "true"}},
                "spec": {"serviceAccountName": "report-job",
                    "containers": [{"name": "app", "image": "example/report:1"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let subject = sluice_e2e::harness::service_account_token(
        client,
        ("shop", "report-job"),
        Some(&pod),
        "sluice.dev",
        600,
    )
    .await;
    let (status, _, body) = support::call(
        addr,
        ca,
        "POST",
        "/v1/token",
        &[],
        Some(serde_json::json!({"subjectToken": subject})),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    format!("Bearer {}", token["token"].as_str().unwrap())
}

/// An audit batch (`{"events": [...]}`) of `n` chained denials of the
/// `report` pod's stream, each decided by policy `reporting`.
fn denials_batch(n: usize) -> serde_json::Value {
    use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};

    let mut chain = AuditChain::new("sidecar:shop/report-job:report:boot-1".to_string());
    let mut denial = AuditEventDraft::new("2026-01-01T00:00:00Z", AuditKind::Denial);
    denial.session = Some("s1".into());
    denial.identity = Some(
        serde_json::from_value(
            serde_json::json!({"namespace": "shop", "serviceAccount": "report-job"}),
        )
        .unwrap(),
    );
    denial.connection = Some("orders-db".into());
    denial.command = Some(
        serde_json::from_value(
            serde_json::json!({"text": "DROP TABLE customers", "fingerprint": "f1", "kind": "drop"}),
        )
        .unwrap(),
    );
    denial.decision = Some(
        serde_json::from_value(serde_json::json!({"action": "deny", "policy": "reporting",
            "rule": "no-schema-changes", "dryRun": false}))
        .unwrap(),
    );
    let events: Vec<serde_json::Value> = (0..n)
        .map(|_| serde_json::to_value(chain.append(denial.clone()).unwrap()).unwrap())
        .collect();
    serde_json::json!({"events": events})
}

/// The drain's counter write meets what another writer of the policy's
/// status causes when it wins the race between the flush's read and its
/// write (the controller, another replica's flush: the flush writes under the
/// resourceVersion it read), here a 409 `Conflict`, then a 500 from the API
/// server: the counts taken in still land before the operator exits 0.
/// (`sigterm_drains_long_polls_and_uploads_and_exits_zero` saw them lost once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drains_counter_write_is_tried_again_after_a_conflict() {
    use sluice_e2e::apiserver::faults::{FaultCode, StatusWriteFault};
    use sluice_operator::gateway::audit_intake::AUDIT_FIELD_MANAGER;

    let (mut d, bearer) = Drained::policy_ready().await;
    let (status, _, body) = support::call(
        d.operator.addr,
        &d.ca,
        "POST",
        "/v1/audit",
        &[("authorization", &bearer)],
        Some(denials_batch(3)),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let receipt: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(receipt["accepted"], 3, "{receipt}");

    // The next two writes of the counters fail: a conflict, then a 500.
    d.cluster.fail_status_writes(
        StatusWriteFault::conflicts("accesspolicies", "shop", "reporting", 1)
            .by(AUDIT_FIELD_MANAGER),
    );
    d.cluster.fail_status_writes(
        StatusWriteFault::conflicts("accesspolicies", "shop", "reporting", 1)
            .by(AUDIT_FIELD_MANAGER)
            .answering(FaultCode::InternalError),
    );
    d.operator.sigterm();
    let counters = counters_after_exit(&mut d.operator, &d.client).await;
    assert_eq!(counters.denied, 3, "{counters:?}");
    assert_eq!(
        d.cluster.faulted_requests(),
        2,
        "both faults answered a write"
    );
}

/// An approval request filed just before SIGTERM is counted
/// (`approvalsRequested`) even when the write of that count loses races: the
/// first six status writes of the policy answer 409 `Conflict`, and the
/// drain keeps trying until the count is in, then exits 0. (The count was a
/// detached write, retried with backoff and lost with the process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_counted_just_before_sigterm_is_written_by_the_drain() {
    use sluice_e2e::apiserver::faults::StatusWriteFault;
    use sluice_operator::gateway::audit_intake::AUDIT_FIELD_MANAGER;

    let (mut d, bearer) = Drained::policy_ready().await;
    d.cluster.fail_status_writes(
        StatusWriteFault::conflicts("accesspolicies", "shop", "reporting", 6)
            .by(AUDIT_FIELD_MANAGER),
    );
    ask_approval(d.operator.addr, &d.ca, &bearer).await;
    d.operator.sigterm();
    let counters = counters_after_exit(&mut d.operator, &d.client).await;
    assert_eq!(counters.approvals_requested, 1, "{counters:?}");
    assert_eq!(
        d.cluster.faulted_requests(),
        6,
        "every fault answered a write"
    );
}

/// A cluster with the quickstart's namespace, Connection and policy, and the
/// binary against it, for the drain tests: the periodic audit flush an hour
/// away (only the drain writes the counters taken in), the drain at once on
/// SIGTERM (the delay has its own test); `ca` once it is ready.
struct Drained {
    // Dropped first (killed if still running), before the cluster stops.
    operator: OperatorBinary,
    ca: String,
    client: kube::Client,
    cluster: sluice_e2e::TestCluster,
}

impl Drained {
    async fn start() -> Drained {
        let (cluster, client) = support::cluster_with_crds(sluice_e2e::Options::default()).await;
        support::apply_quickstart(
            &client,
            &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
        )
        .await;
        let operator = OperatorBinary::start(
            &cluster.kubeconfig_path(),
            &[
                "--audit-flush-seconds=3600",
                "--drain-grace-seconds=25",
                "--drain-delay-seconds=0",
            ],
            &[],
            Stdio::inherit(),
        );
        let ca = operator.ready(&client, support::WAIT).await;
        Drained {
            cluster,
            client,
            operator,
            ca,
        }
    }

    /// [`Drained::start`] until `shop/reporting` is Ready (its controller's
    /// status writes done), and a gateway token of the `report` pod.
    async fn policy_ready() -> (Drained, String) {
        let drained = Drained::start().await;
        bounded(
            "the policy to be Ready",
            await_condition(
                Api::<AccessPolicy>::namespaced(drained.client.clone(), "shop"),
                "reporting",
                support::is_ready,
            ),
        )
        .await
        .unwrap();
        let bearer = report_job_bearer(&drained.client, drained.operator.addr, &drained.ca).await;
        (drained, bearer)
    }
}

/// Once the binary exited 0: the counters of `shop/reporting`.
async fn counters_after_exit(
    operator: &mut OperatorBinary,
    client: &kube::Client,
) -> sluice_crds::PolicyCounters {
    let exit = operator.exited().await;
    assert_eq!(exit.code(), Some(0), "{exit}");
    Api::<AccessPolicy>::namespaced(client.clone(), "shop")
        .get("reporting")
        .await
        .unwrap()
        .status
        .unwrap()
        .counters
        .unwrap_or_default()
}

/// The ticket of an approval asked with `bearer` (the `report` pod's) under
/// rule `bulk-writes-need-a-human` of `reporting`.
async fn ask_approval(addr: std::net::SocketAddr, ca: &str, bearer: &str) -> serde_json::Value {
    let (status, _, body) = support::call(
        addr,
        ca,
        "POST",
        "/v1/approvals",
        &[("authorization", bearer)],
        Some(serde_json::json!({
            "connection": "orders-db", "policy": "reporting", "rule": "bulk-writes-need-a-human",
            "command": {"text": "DELETE FROM orders", "fingerprint": "fp-a", "sha256": "a".repeat(64)},
        })),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Issue #19: between SIGTERM and the drain the operator keeps serving for
/// `--drain-delay-seconds`, `/readyz` failing so the endpoints drop it: a
/// webhook call and a gateway request arriving on new connections during the
/// delay are answered (without the delay the listener closes at SIGTERM and
/// the fail-closed webhook call fails). Then it drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_the_drain_delay_are_served() {
    let (cluster, client) = support::cluster_with_crds(sluice_e2e::Options::default()).await;
    let mut operator = OperatorBinary::start(
        &cluster.kubeconfig_path(),
        // Ample for the requests below on a loaded machine.
        &["--drain-delay-seconds=10"],
        &[],
        Stdio::inherit(),
    );
    let ca = operator.ready(&client, support::WAIT).await;
    let addr = operator.addr;
    let readyz = |ca: String| async move {
        support::call(addr, &ca, "GET", "/readyz", &[], None)
            .await
            .0
    };
    bounded("readyz", async {
        while readyz(ca.clone()).await != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    operator.sigterm();
    // SIGTERM is handled: /readyz fails, on a new connection.
    bounded("readyz to fail", async {
        while readyz(ca.clone()).await != 503 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // A webhook call, as the API server makes it, is still answered.
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "3c3f9e4c-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "dryRun": false}
    });
    let (status, _, body) =
        support::call(addr, &ca, "POST", "/mutate/pods", &[], Some(review)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(
        answer["response"]["uid"], "3c3f9e4c-0000-4000-8000-000000000001",
        "{answer}"
    );
    let (status, _, _) = support::call(addr, &ca, "GET", "/v1/jwks", &[], None).await;
    assert_eq!(status, 200);

    let exit = operator.exited().await;
    assert_eq!(exit.code(), Some(0), "{exit}");
}
