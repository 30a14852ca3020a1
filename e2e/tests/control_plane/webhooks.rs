//! Admission webhooks: a tiny HTTPS webhook server in the test, called by the
//! test control plane with AdmissionReview v1.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use crate::support;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cluster;

type Seen = Arc<Mutex<Vec<Value>>>;

/// Answers AdmissionReviews: `/mutate` labels pods, `/deny` refuses, `/slow` answers late.
async fn answer(path: &str, review: Value, seen: Seen) -> Value {
    let req = review["request"].clone();
    seen.lock().expect("lock").push(req.clone());
    let uid = req["uid"].clone();
    let response = match path {
        "/mutate" => {
            let mut ops = Vec::new();
            if req["object"]["metadata"]["labels"].is_null() {
                ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
            }
            ops.push(json!({"op": "add", "path": "/metadata/labels/injected", "value": "true"}));
            let patch = base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&ops).expect("json"));
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch,
                "warnings": ["labelled by the test webhook"]})
        }
        "/deny" => {
            json!({"uid": uid, "allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "configmap is frozen by policy"}})
        }
        "/kube-rs" => {
            // Answer with kube-rs' own admission types, as the operator will.
            let review: kube::core::admission::AdmissionReview<DynamicObject> =
                serde_json::from_value(review).expect("kube-rs parses the AdmissionReview");
            let request: kube::core::admission::AdmissionRequest<DynamicObject> =
                review.try_into().expect("the review carries a request");
            let response = kube::core::admission::AdmissionResponse::from(&request);
            let response = if request.user_info.username.as_deref() == Some("alice") {
                let op: json_patch::PatchOperation = serde_json::from_value(
                    json!({"op": "add", "path": "/metadata/annotations", "value": {"seen-by": "kube-rs"}}),
                )
                .expect("op");
                response
                    .with_patch(json_patch::Patch(vec![op]))
                    .expect("patch")
            } else {
                response.deny("only alice may create these")
            };
            return serde_json::to_value(response.into_review()).expect("json");
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(20)).await;
            json!({"uid": uid, "allowed": true})
        }
        _ => json!({"uid": uid, "allowed": true}),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Starts the webhook server; returns its port and what it saw.
async fn webhook_server(cert: sluice_e2e::pki::CertifiedKey) -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config().expect("tls config"));
    let seen: Seen = Arc::default();
    let seen_srv = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen_srv.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let review: Value =
                                serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let out = answer(&path, review, seen).await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(out.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, seen)
}

fn webhook(name: &str, url: String, ca: &str, rule: Value, extra: Value) -> Value {
    let mut w = json!({
        "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)},
        "rules": [rule],
    });
    if let (Some(w), Some(e)) = (w.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            w.insert(k.clone(), v.clone());
        }
    }
    w
}

async fn install(client: &kube::Client, kind: &str, plural: &str, name: &str, hooks: Vec<Value>) {
    let ar = kube::api::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut obj = DynamicObject::new(name, &ar);
    obj.data = json!({"webhooks": hooks});
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create webhook configuration");
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})).expect("pod")
}

#[tokio::test]
async fn webhooks_mutate_deny_and_see_the_caller() {
    let c = cluster().await;
    let admin = c.client().await.expect("admin");
    let alice = c.client_for("alice").await.expect("alice");
    let (port, seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    let base = format!("https://127.0.0.1:{port}");
    let nss: Api<Namespace> = Api::all(admin.clone());
    for (name, labels) in [("hooked", json!({"webhooks": "on"})), ("plain", json!({}))] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("ns");
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }
    let pods_rule = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]});
    install(&admin, "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "inject", vec![webhook(
        "inject.test.sluice.dev",
        format!("{base}/mutate"),
        c.ca_pem(),
        pods_rule,
        json!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}, "failurePolicy": "Fail", "timeoutSeconds": 5}),
    )])
    .await;
    let cm_rule = json!({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]});
    install(
        &admin,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "freeze",
        vec![webhook(
            "deny.test.sluice.dev",
            format!("{base}/deny"),
            c.ca_pem(),
            cm_rule,
            json!({"objectSelector": {"matchLabels": {"frozen": "true"}}}),
        )],
    )
    .await;

    // A pod in the selected namespace is mutated; elsewhere it is not.
    let hooked: Api<Pod> = Api::namespaced(alice.clone(), "hooked");
    let created = hooked
        .create(&PostParams::default(), &pod("p1"))
        .await
        .expect("create pod");
    assert_eq!(
        created
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("injected"))
            .map(String::as_str),
        Some("true")
    );
    let stored = Api::<Pod>::namespaced(admin.clone(), "hooked")
        .get("p1")
        .await
        .expect("get");
    assert_eq!(
        stored
            .metadata
            .labels
            .and_then(|l| l.get("injected").cloned())
            .as_deref(),
        Some("true")
    );
    let plain: Api<Pod> = Api::namespaced(alice.clone(), "plain");
    let p2 = plain
        .create(&PostParams::default(), &pod("p2"))
        .await
        .expect("create pod");
    assert!(
        p2.metadata
            .labels
            .unwrap_or_default()
            .contains_key("injected")
            .eq(&false)
    );

    // Webhook warnings reach the client as Warning headers.
    let out = support::kubectl_in(
        &c,
        &["run", "p3", "-n", "hooked", "--image=busybox:1.36"],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning: labelled by the test webhook"),
        "{}",
        out.stderr
    );

    // The webhook saw who asked.
    let request = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|r| r["name"] == "p1")
        .cloned()
        .expect("webhook called for p1");
    assert_eq!(request["userInfo"]["username"], "alice");
    let groups = request["userInfo"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for g in ["dev", "ops", "system:authenticated"] {
        assert!(groups.contains(&json!(g)), "group {g} in {groups:?}");
    }
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["namespace"], "hooked");
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );

    // A denied update is refused with the webhook's message and not stored.
    let cms: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "locked", "labels": {"frozen": "true"}}, "data": {"v": "1"}}),
    )
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create is not covered by the rule");
    let err = cms
        .patch(
            "locked",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await
        .expect_err("denied");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert_eq!(
                s.message,
                "admission webhook \"deny.test.sluice.dev\" denied the request: configmap is frozen by policy"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let current = cms.get("locked").await.expect("get");
    assert_eq!(
        current.data.and_then(|d| d.get("v").cloned()).as_deref(),
        Some("1")
    );
    let update = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|r| r["name"] == "locked")
        .cloned()
        .expect("deny webhook called");
    assert_eq!(update["operation"], "UPDATE");
    assert_eq!(update["oldObject"]["data"]["v"], "1");
    assert_eq!(update["object"]["data"]["v"], "2");
}

#[tokio::test]
async fn failure_policy_and_timeout() {
    let c = cluster().await;
    let admin = c.client().await.expect("admin");
    let (port, _seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    // A port nobody listens on: bind and drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let rule = |res: &str| json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": [res]});
    install(
        &admin,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "policies",
        vec![
            webhook(
                "fail.test.sluice.dev",
                format!("https://127.0.0.1:{dead}/x"),
                c.ca_pem(),
                rule("secrets"),
                json!({"failurePolicy": "Fail"}),
            ),
            webhook(
                "ignore.test.sluice.dev",
                format!("https://127.0.0.1:{dead}/x"),
                c.ca_pem(),
                rule("configmaps"),
                json!({"failurePolicy": "Ignore"}),
            ),
            webhook(
                "slow.test.sluice.dev",
                format!("https://127.0.0.1:{port}/slow"),
                c.ca_pem(),
                rule("serviceaccounts"),
                json!({"failurePolicy": "Fail", "timeoutSeconds": 1}),
            ),
        ],
    )
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(admin.clone(), "default");
    let s = serde_json::from_value(json!({"metadata": {"name": "s"}})).expect("secret");
    match secrets.create(&PostParams::default(), &s).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 500);
            assert!(
                e.message
                    .contains("failed calling webhook \"fail.test.sluice.dev\""),
                "{}",
                e.message
            );
        }
        other => panic!("expected failurePolicy Fail to refuse, got {other:?}"),
    }
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("cm"),
    )
    .await
    .expect("failurePolicy Ignore lets it through");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin, "default");
    let started = std::time::Instant::now();
    match sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "sa"}})).expect("sa"),
        )
        .await
    {
        Err(kube::Error::Api(e)) => assert!(e.message.contains("deadline"), "{}", e.message),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "timeoutSeconds bounds the call"
    );
}

#[tokio::test]
async fn match_conditions_select_requests() {
    let c = cluster().await;
    let admin = c.client().await.expect("admin");
    let (port, seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    let rule = json!({"operations": ["CREATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]});
    install(
        &admin,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "conditional",
        vec![webhook(
            "cond.test.sluice.dev",
            format!("https://127.0.0.1:{port}/deny"),
            c.ca_pem(),
            rule,
            json!({"matchConditions": [
                {"name": "only-guarded", "expression": "request.operation == 'DELETE' || object.metadata.name.startsWith('guarded-') || (has(object.metadata.annotations) && 'test.sluice.dev/guard' in object.metadata.annotations)"},
                {"name": "not-admin-deletes", "expression": "!(request.operation == 'DELETE' && request.userInfo.username == 'nobody')"},
            ]}),
        )],
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(admin, "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm")
    };
    cms.create(&PostParams::default(), &cm("free"))
        .await
        .expect("condition false: webhook not called");
    let err = cms
        .create(&PostParams::default(), &cm("guarded-1"))
        .await
        .expect_err("condition true: denied");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    // Annotation keys are map keys, not escaped field names.
    let annotated: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "annotated", "annotations": {"test.sluice.dev/guard": "yes"}}}),
    )
    .expect("cm");
    let err = cms
        .create(&PostParams::default(), &annotated)
        .await
        .expect_err("annotation condition true: denied");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    // DELETE sends the old object and no object.
    let err = cms
        .delete("free", &Default::default())
        .await
        .expect_err("delete denied");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    let del = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|r| r["operation"] == "DELETE")
        .cloned()
        .expect("delete reviewed");
    assert!(del["object"].is_null());
    assert_eq!(del["oldObject"]["metadata"]["name"], "free");
    assert_eq!(del["options"]["kind"], "DeleteOptions");
    let free_creates = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r["operation"] == "CREATE" && r["name"] == "free")
        .count();
    assert_eq!(
        free_creates, 0,
        "matchConditions false: the webhook is not called"
    );
}

#[tokio::test]
async fn status_subresource_webhooks_see_status_updates() {
    let c = cluster().await;
    let admin = c.client().await.expect("admin");
    let alice = c.client_for("alice").await.expect("alice");
    let (port, seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.test.sluice.dev"},
        "spec": {"group": "test.sluice.dev", "scope": "Namespaced",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}});
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).expect("crd"),
    )
    .await
    .expect("crd");
    let rule = json!({"operations": ["UPDATE"], "apiGroups": ["test.sluice.dev"], "apiVersions": ["v1"], "resources": ["gizmos/status"]});
    install(
        &admin,
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "status-hook",
        vec![webhook(
            "status.test.sluice.dev",
            format!("https://127.0.0.1:{port}/mutate"),
            c.ca_pem(),
            rule,
            json!({}),
        )],
    )
    .await;
    let ar = kube::api::ApiResource {
        group: "test.sluice.dev".into(),
        version: "v1".into(),
        api_version: "test.sluice.dev/v1".into(),
        kind: "Gizmo".into(),
        plural: "gizmos".into(),
    };
    let gizmos: Api<DynamicObject> = Api::namespaced_with(alice, "default", &ar);
    let mut g = DynamicObject::new("g1", &ar);
    g.data = json!({"spec": {"size": 1}});
    gizmos
        .create(&PostParams::default(), &g)
        .await
        .expect("create");
    // Main-endpoint updates do not match a `gizmos/status` rule.
    gizmos
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .expect("spec");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the status webhook saw a main-endpoint update"
    );
    let out = gizmos
        .patch_status(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Approved"}})),
        )
        .await
        .expect("status");
    let req = seen
        .lock()
        .expect("lock")
        .first()
        .cloned()
        .expect("status webhook called");
    assert_eq!(req["subResource"], "status");
    assert_eq!(req["userInfo"]["username"], "alice");
    assert_eq!(req["object"]["status"]["phase"], "Approved");
    // The webhook's label patch is outside status, so the status endpoint drops it.
    assert!(
        out.metadata
            .labels
            .unwrap_or_default()
            .get("injected")
            .is_none_or(|v| v.is_empty())
    );
    assert_eq!(out.data["status"]["phase"], "Approved");
}

#[tokio::test]
async fn kube_rs_admission_types_understand_the_reviews() {
    let c = cluster().await;
    let admin = c.client().await.expect("admin");
    let alice = c.client_for("alice").await.expect("alice");
    let (port, _seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    let rule = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]});
    install(
        &admin,
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "kube-rs",
        vec![webhook(
            "kube-rs.test.sluice.dev",
            format!("https://127.0.0.1:{port}/kube-rs"),
            c.ca_pem(),
            rule,
            json!({"objectSelector": {"matchLabels": {"hook": "kube-rs"}}}),
        )],
    )
    .await;
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"hook": "kube-rs"}}}))
            .expect("cm")
    };
    let made = Api::<ConfigMap>::namespaced(alice, "default")
        .create(&PostParams::default(), &cm("a"))
        .await
        .expect("alice");
    assert_eq!(
        made.metadata
            .annotations
            .and_then(|a| a.get("seen-by").cloned())
            .as_deref(),
        Some("kube-rs")
    );
    let err = Api::<ConfigMap>::namespaced(admin, "default")
        .create(&PostParams::default(), &cm("b"))
        .await
        .expect_err("admin denied");
    let kube::Error::Api(s) = err else {
        panic!("api error")
    };
    assert_eq!(s.code, 403);
    assert!(
        s.message
            .ends_with("denied the request: only alice may create these"),
        "{}",
        s.message
    );
}

/// Webhook configurations are defaulted and validated as kube-apiserver does
/// (pkg/apis/admissionregistration/v1/defaults.go, .../validation/validation.go).
#[tokio::test]
async fn webhook_configurations_are_defaulted_and_validated() {
    let c = support::cluster().await;
    let config = |name: &str, side_effects: &str| {
        format!(
            r#"{{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingWebhookConfiguration",
              "metadata":{{"name":"check"}},
              "webhooks":[{{"name":"{name}","admissionReviewVersions":["v1"],{side_effects}
                "clientConfig":{{"service":{{"namespace":"x","name":"y","path":"/v"}}}},
                "rules":[{{"operations":["CREATE"],"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"]}}]}}]}}"#
        )
    };
    let out = support::kubectl_in(
        &c,
        &["create", "-f", "-"],
        Some(&config("check.example", "")),
    )
    .await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains(r#"webhooks[0].name: Invalid value: "check.example": should be a domain with at least three segments separated by dots"#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"
        ),
        "{}",
        out.stderr
    );
    support::kubectl_stdin(
        &c,
        &["create", "-f", "-"],
        &config("check.example.com", r#""sideEffects":"None","#),
    )
    .await;
    let stored = support::kubectl(
        &c,
        &[
            "get",
            "validatingwebhookconfiguration",
            "check",
            "-o",
            "json",
        ],
    )
    .await;
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let w = &stored["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail", "{w}");
    assert_eq!(w["matchPolicy"], "Equivalent");
    assert_eq!(w["namespaceSelector"], serde_json::json!({}));
    assert_eq!(w["objectSelector"], serde_json::json!({}));
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(w["rules"][0]["scope"], "*");
    assert_eq!(w["clientConfig"]["service"]["port"], 443);
}

/// `generateName` names are generated after mutating admission, as kube-apiserver
/// does (handlers/create.go admits, then rest.BeforeCreate generates): the mutating
/// webhook sees an empty `name`, the stored object gets a generated one.
#[tokio::test]
async fn generate_name_is_applied_after_mutating_admission() {
    let c = cluster().await;
    let admin = c.client().await.expect("admin");
    let (port, seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    let rule = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]});
    install(
        &admin,
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "inject",
        vec![webhook(
            "inject.test.sluice.dev",
            format!("https://127.0.0.1:{port}/mutate"),
            c.ca_pem(),
            rule,
            json!({}),
        )],
    )
    .await;
    let mut p = pod("unused");
    p.metadata.name = None;
    p.metadata.generate_name = Some("web-".into());
    let created = Api::<Pod>::namespaced(admin, "default")
        .create(&PostParams::default(), &p)
        .await
        .expect("create");
    let name = created.metadata.name.expect("generated name");
    assert!(name.starts_with("web-") && name.len() > 4, "{name}");
    let requests = seen.lock().expect("lock").clone();
    let request = requests
        .iter()
        .find(|r| r["kind"]["kind"] == "Pod")
        .expect("the webhook saw the pod");
    assert_eq!(
        request["name"].as_str().unwrap_or_default(),
        "",
        "{request}"
    );
    assert!(
        request["object"]["metadata"]["name"].is_null(),
        "{}",
        request["object"]["metadata"]
    );
    assert_eq!(request["object"]["metadata"]["generateName"], "web-");
}

/// Pod UPDATEs and the `pods/ephemeralcontainers` subresource reach webhooks
/// as kube-apiserver sends them (k8s.io/kubernetes pkg/registry/core/pod/storage/storage.go
/// `EphemeralContainersREST`, pkg/registry/core/pod/strategy.go
/// `dropNonEphemeralContainerUpdates`, pkg/apis/core/validation/validation.go
/// `ValidatePodEphemeralContainersUpdate`): real `kubectl debug` and `kubectl set
/// image`, RBAC on the subresource, only ephemeral containers taken from the body,
/// none on create, none removed or changed, a target that exists.
#[tokio::test]
async fn pod_updates_and_ephemeral_containers_reach_webhooks() {
    let c = support::cluster_with_rbac(true).await;
    let admin = c.client().await.expect("admin");
    let (port, seen) = webhook_server(c.issue_server_cert(&["127.0.0.1"]).expect("cert")).await;
    let rule = |resource: &str| json!({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": [resource]});
    install(
        &admin,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "pod-updates",
        vec![
            webhook(
                "pods.test.sluice.dev",
                format!("https://127.0.0.1:{port}/pods"),
                c.ca_pem(),
                rule("pods"),
                json!({}),
            ),
            webhook(
                "debug.test.sluice.dev",
                format!("https://127.0.0.1:{port}/debug"),
                c.ca_pem(),
                rule("pods/ephemeralcontainers"),
                json!({}),
            ),
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .expect("create");
    // Ephemeral containers are never set on create.
    let with_debugger: Pod = serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {
        "containers": [{"name": "c", "image": "busybox:1.36"}],
        "ephemeralContainers": [{"name": "d", "image": "busybox:1.36"}]}}))
    .expect("pod");
    let err = pods
        .create(&PostParams::default(), &with_debugger)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.ephemeralContainers: Forbidden: cannot be set on create")),
        "{err:?}"
    );

    // alice may read and patch pods, but not yet their ephemeral containers.
    for args in [
        &[
            "create",
            "role",
            "pods",
            "--verb=get,list,patch",
            "--resource=pods",
            "-n",
            "default",
        ][..],
        &[
            "create",
            "rolebinding",
            "alice-pods",
            "--role=pods",
            "--user=alice",
            "-n",
            "default",
        ],
    ] {
        support::kubectl(&c, args).await;
    }
    let debug = [
        "--context",
        "alice",
        "debug",
        "p",
        "-n",
        "default",
        "--image=busybox:1.36",
        "--target=c",
        "--container=dbg",
    ];
    let out = support::kubectl_in(&c, &debug, None).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains(r#"User "alice" cannot patch resource "pods/ephemeralcontainers""#),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a forbidden request reached a webhook"
    );
    for args in [
        &[
            "create",
            "role",
            "debug",
            "--verb=get,patch",
            "--resource=pods/ephemeralcontainers",
            "-n",
            "default",
        ][..],
        &[
            "create",
            "rolebinding",
            "alice-debug",
            "--role=debug",
            "--user=alice",
            "-n",
            "default",
        ],
    ] {
        support::kubectl(&c, args).await;
    }
    let out = support::kubectl_in(&c, &debug, None).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let req = seen
        .lock()
        .expect("lock")
        .pop()
        .expect("the debug webhook was called");
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(req["subResource"], "ephemeralcontainers");
    assert_eq!(req["kind"]["kind"], "Pod");
    assert_eq!(req["userInfo"]["username"], "alice");
    assert_eq!(
        req["object"]["spec"]["ephemeralContainers"][0]["name"],
        "dbg"
    );
    assert_eq!(
        req["object"]["spec"]["ephemeralContainers"][0]["targetContainerName"],
        "c"
    );
    assert!(
        req["oldObject"]["spec"]["ephemeralContainers"].is_null(),
        "{req}"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        0,
        "one call, to the subresource's webhook only"
    );
    let stored = pods.get("p").await.expect("get");
    let debuggers = stored
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.clone())
        .unwrap_or_default();
    assert_eq!(debuggers.len(), 1);
    assert_eq!(
        debuggers[0].termination_message_policy.as_deref(),
        Some("File"),
        "defaulted"
    );

    // `kubectl set image` is an UPDATE of the pod itself.
    support::kubectl(
        &c,
        &[
            "--context",
            "alice",
            "set",
            "image",
            "pod/p",
            "c=busybox:1.37",
            "-n",
            "default",
        ],
    )
    .await;
    let req = seen
        .lock()
        .expect("lock")
        .pop()
        .expect("the pods webhook was called");
    assert_eq!(req["operation"], "UPDATE");
    assert!(req["subResource"].is_null(), "{req}");
    assert_eq!(
        req["object"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    assert_eq!(
        req["oldObject"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );

    // Through the subresource only ephemeral containers change: the image and
    // the label in the same body are dropped.
    let sub = |p: Patch<Value>| {
        let pods = pods.clone();
        async move {
            pods.patch_subresource("ephemeralcontainers", "p", &PatchParams::default(), &p)
                .await
        }
    };
    let out = sub(Patch::Strategic(
        json!({"metadata": {"labels": {"sneaked": "in"}}, "spec": {
        "containers": [{"name": "c", "image": "evil:1"}],
        "ephemeralContainers": [{"name": "dbg2", "image": "busybox:1.36"}]}}),
    ))
    .await
    .expect("patch");
    let spec = out.spec.expect("spec");
    assert_eq!(spec.containers[0].image.as_deref(), Some("busybox:1.37"));
    assert_eq!(spec.ephemeral_containers.map(|e| e.len()), Some(2));
    assert!(
        !out.metadata
            .labels
            .unwrap_or_default()
            .contains_key("sneaked")
    );
    // Existing ones can be neither removed nor changed; targets must exist;
    // ports are not for ephemeral containers.
    for (patch, needle) in [
        (
            Patch::Json(serde_json::from_value(json!([{"op": "remove", "path": "/spec/ephemeralContainers/0"}])).expect("patch")),
            "existing ephemeral containers \"dbg\" may not be removed",
        ),
        (
            Patch::Json(serde_json::from_value(json!([{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "evil:1"}])).expect("patch")),
            "existing ephemeral containers \"dbg\" may not be changed",
        ),
        (
            Patch::Strategic(json!({"spec": {"ephemeralContainers": [{"name": "dbg3", "image": "busybox:1.36", "targetContainerName": "nope"}]}})),
            "targetContainerName: Not found: \"nope\"",
        ),
        (
            Patch::Strategic(json!({"spec": {"ephemeralContainers": [{"name": "dbg4", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}})),
            "ports: Forbidden: cannot be set for an Ephemeral Container",
        ),
        (
            Patch::Strategic(json!({"spec": {"ephemeralContainers": [{"name": "c", "image": "busybox:1.36"}]}})),
            "name: Duplicate value: \"c\"",
        ),
    ] {
        let err = sub(patch).await.expect_err(needle);
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains(needle)),
            "{needle}: {err:?}"
        );
    }
    // The main endpoint does not add them either.
    let err = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"ephemeralContainers": [{"name": "dbg5", "image": "busybox:1.36"}]}})))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.ephemeralContainers")),
        "{err:?}"
    );
}
