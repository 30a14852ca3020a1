//! The test control plane is as strict as kube-apiserver 1.33 where Sluice, kubectl or a
//! user depends on it (issue #19): the ServiceAccount admission plugin, pod and Deployment
//! validation, TokenRequest binding, and garbage collection. Each test names the upstream
//! behaviour it pins; each fails against the lenient server it replaced.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::cluster;

fn status(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("a pod")
}

async fn create_pod(client: &Client, v: Value) -> Result<Value, (u16, String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod(v))
        .await
        .map(|p| serde_json::to_value(p).unwrap())
        .map_err(status)
}

const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn access_volume_name(p: &Value) -> Option<String> {
    p["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .map(str::to_string)
}

/// plugin/pkg/admission/serviceaccount/admission.go: the projected token volume and its
/// read-only mount in every init container and container, the default service account,
/// opt-outs on the pod and on the account, and a 403 for a missing account.
#[tokio::test]
async fn service_account_plugin_mounts_the_api_access_volume() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let p = create_pod(
        &client,
        json!({"metadata": {"name": "app"}, "spec": {
            "initContainers": [{"name": "migrate", "image": "m:1"}],
            "containers": [{"name": "app", "image": "a:1"},
                {"name": "own", "image": "o:1", "volumeMounts": [{"name": "mine", "mountPath": SA_PATH}]}],
            "volumes": [{"name": "mine", "emptyDir": {}}]}}),
    )
    .await
    .expect("pod created");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert_eq!(p["spec"]["serviceAccount"], "default");
    let vol = access_volume_name(&p).unwrap_or_else(|| panic!("no kube-api-access volume: {p:#}"));
    let suffix = vol.trim_start_matches("kube-api-access-");
    assert!(
        suffix.len() == 5
            && suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{vol}"
    );
    let volume = p["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vol.as_str())
        .unwrap();
    assert_eq!(
        volume["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]})
    );
    let mount = json!({"name": vol, "readOnly": true, "mountPath": SA_PATH});
    assert_eq!(
        p["spec"]["initContainers"][0]["volumeMounts"],
        json!([mount])
    );
    assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(
        p["spec"]["containers"][1]["volumeMounts"],
        json!([{"name": "mine", "mountPath": SA_PATH}]),
        "an existing mount at the path wins"
    );

    let off = create_pod(
        &client,
        json!({"metadata": {"name": "off"}, "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect("pod created");
    assert_eq!(access_volume_name(&off), None, "{off:#}");
    assert!(off["spec"]["containers"][0]["volumeMounts"].is_null());

    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "quiet"},
        "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "regcred"}]}))
    .unwrap();
    sas.create(&PostParams::default(), &sa).await.expect("sa");
    let quiet = create_pod(
        &client,
        json!({"metadata": {"name": "quiet"}, "spec": {"serviceAccountName": "quiet",
            "containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect("pod created");
    assert_eq!(access_volume_name(&quiet), None, "the account opts out");
    assert_eq!(
        quiet["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    let loud = create_pod(
        &client,
        json!({"metadata": {"name": "loud"}, "spec": {"serviceAccountName": "quiet",
            "automountServiceAccountToken": true, "containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect("pod created");
    assert!(access_volume_name(&loud).is_some(), "the pod's choice wins");

    let (code, reason, message) = create_pod(
        &client,
        json!({"metadata": {"name": "ghost"}, "spec": {"serviceAccountName": "ghost",
            "containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect_err("a missing service account is refused");
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "pods \"ghost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"
    );
}

/// pkg/apis/core/validation/validation.go: probes and lifecycle only on restartable init
/// containers (`validateInitContainers`), projected token lifetime at least 10 minutes
/// (`validateProjectionSources`).
#[tokio::test]
async fn pod_create_validation_like_kube() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let probe = json!({"exec": {"command": ["true"]}});
    let (code, _, message) = create_pod(
        &client,
        json!({"metadata": {"name": "p1"}, "spec": {
            "initContainers": [{"name": "init", "image": "i:1", "readinessProbe": probe, "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}],
            "containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect_err("probes on a plain init container");
    assert_eq!(code, 422);
    for field in ["lifecycle", "readinessProbe"] {
        assert!(
            message.contains(&format!("spec.initContainers[0].{field}: Forbidden: may not be set for init containers without restartPolicy=Always")),
            "{message}"
        );
    }
    create_pod(
        &client,
        json!({"metadata": {"name": "p2"}, "spec": {
            "initContainers": [{"name": "sidecar", "image": "s:1", "restartPolicy": "Always", "readinessProbe": probe, "startupProbe": probe}],
            "containers": [{"name": "app", "image": "a:1", "livenessProbe": probe}]}}),
    )
    .await
    .expect("probes on a sidecar and a regular container are fine");

    let token_volume = |exp: i64| {
        json!({"metadata": {"name": format!("t{exp}")}, "spec": {
            "containers": [{"name": "app", "image": "a:1", "volumeMounts": [{"name": "tok", "mountPath": "/tok"}]}],
            "volumes": [{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"audience": "x", "expirationSeconds": exp, "path": "t"}}]}}]}})
    };
    let (code, _, message) = create_pod(&client, token_volume(599))
        .await
        .expect_err("a token shorter than 10 minutes");
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"),
        "{message}"
    );
    create_pod(&client, token_volume(600))
        .await
        .expect("600 s is the minimum");
}

/// pkg/apis/core/validation/validation.go `ValidatePodUpdate`: after creation only images,
/// activeDeadlineSeconds, added tolerations (and a few more) may change.
#[tokio::test]
async fn pod_spec_is_immutable_but_for_the_allowed_fields() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(
        &client,
        json!({"metadata": {"name": "web"}, "spec": {
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect("pod created");
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();
    pods.patch(
        "web",
        &pp,
        &merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .expect("metadata changes");
    pods.patch(
        "web",
        &pp,
        &merge(json!({"spec": {"serviceAccount": null}})),
    )
    .await
    .expect("the deprecated alias is not part of the spec kube compares");
    let alias = pods.get("web").await.unwrap().spec.unwrap().service_account;
    assert_eq!(
        alias.as_deref(),
        Some("default"),
        "v1 output carries the alias"
    );
    let strategic = |v: Value| Patch::Strategic(v);
    let p = pods
        .patch(
            "web",
            &pp,
            &strategic(json!({"spec": {"containers": [{"name": "app", "image": "a:2"}],
                "activeDeadlineSeconds": 300,
                "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}})),
        )
        .await
        .expect("image, deadline and an added toleration may change");
    assert_eq!(
        p.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("a:2")
    );
    // kubectl-style full replace of what was read, unchanged, is fine too.
    let cur = pods.get("web").await.unwrap();
    pods.replace("web", &PostParams::default(), &cur)
        .await
        .expect("an unchanged replace");

    let refused = [
        json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]}}),
        json!({"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}),
        json!({"spec": {"serviceAccountName": "other"}}),
        json!({"spec": {"restartPolicy": "Never"}}),
    ];
    for patch in refused {
        let (code, _, message) = status(
            pods.patch("web", &pp, &strategic(patch.clone()))
                .await
                .expect_err("spec change refused"),
        );
        assert_eq!(code, 422, "{patch}");
        assert!(
            message.contains("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)"),
            "{patch}: {message}"
        );
    }
    let (code, _, message) = status(
        pods.patch(
            "web",
            &pp,
            &merge(json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}})),
        )
        .await
        .expect_err("a removed toleration"),
    );
    assert_eq!(code, 422);
    assert!(message.contains("spec.tolerations: Forbidden"), "{message}");
    let (code, _, message) = status(
        pods.patch(
            "web",
            &pp,
            &merge(json!({"spec": {"activeDeadlineSeconds": 600}})),
        )
        .await
        .expect_err("a raised deadline"),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.activeDeadlineSeconds: Invalid value: 600: must be less than or equal to previous value"),
        "{message}"
    );
}

/// pkg/apis/apps/validation/validation.go: a Deployment's selector is required, matches
/// the template's labels, and is immutable.
#[tokio::test]
async fn deployment_selector_matches_its_template_and_is_immutable() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deploy = |name: &str, selector: Value, labels: Value| -> Deployment {
        let mut v = json!({"metadata": {"name": name}, "spec": {
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        if !selector.is_null() {
            v["spec"]["selector"] = selector;
        }
        serde_json::from_value(v).unwrap()
    };
    let pp = PostParams::default();
    let (code, _, message) = status(
        deploys
            .create(
                &pp,
                &deploy(
                    "d1",
                    json!({"matchLabels": {"app": "web"}}),
                    json!({"app": "api"}),
                ),
            )
            .await
            .expect_err("selector does not match"),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"),
        "{message}"
    );
    let (code, _, message) = status(
        deploys
            .create(&pp, &deploy("d2", Value::Null, json!({"app": "web"})))
            .await
            .expect_err("no selector"),
    );
    assert_eq!(code, 422);
    // k8s-openapi sends the required selector as `{}`.
    assert!(
        message
            .contains("spec.selector: Invalid value: {}: empty selector is invalid for deployment"),
        "{message}"
    );
    deploys
        .create(
            &pp,
            &deploy(
                "d3",
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}),
                json!({"app": "web"}),
            ),
        )
        .await
        .expect("a matching expression selector is accepted");
    let d = deploys
        .create(
            &pp,
            &deploy(
                "web",
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "web", "tier": "x"}),
            ),
        )
        .await
        .expect("a matching selector");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1), "defaulted");
    let (code, _, message) = status(
        deploys
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "x"}}}}),
                ),
            )
            .await
            .expect_err("selector is immutable"),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.selector: Invalid value:"),
        "{message}"
    );
    assert!(message.contains("field is immutable"), "{message}");
}

/// pkg/registry/core/serviceaccount/storage/token.go `Create`: a token of one service
/// account cannot be bound to a pod that runs as another.
#[tokio::test]
async fn token_request_refuses_a_pod_of_another_service_account() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let other: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    sas.create(&PostParams::default(), &other)
        .await
        .expect("sa");
    create_pod(
        &client,
        json!({"metadata": {"name": "app"}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}}),
    )
    .await
    .expect("pod runs as default");
    let request = |sa: &str| -> TokenRequest {
        serde_json::from_value(json!({"spec": {"audiences": ["sluice.dev"], "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "app"}}, "metadata": {"name": sa}}))
        .unwrap()
    };
    let (code, reason, message) = status(
        sas.create_subresource::<TokenRequest, TokenRequest>(
            "token",
            "other",
            &PostParams::default(),
            &request("other"),
        )
        .await
        .expect_err("bound to a pod of another account"),
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        message,
        "cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name."
    );
    let ok = sas
        .create_subresource::<TokenRequest, TokenRequest>(
            "token",
            "default",
            &PostParams::default(),
            &request("default"),
        )
        .await
        .expect("the pod's own account");
    assert!(!ok.status.unwrap().token.is_empty());
}

fn owned_cm(name: &str, owner: &Deployment, block: bool, finalizer: bool) -> ConfigMap {
    let mut v = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": owner.name_any(), "uid": owner.uid().unwrap(), "blockOwnerDeletion": block}]}});
    if finalizer {
        v["metadata"]["finalizers"] = json!(["test.sluice.dev/hold"]);
    }
    serde_json::from_value(v).unwrap()
}

async fn owner(deploys: &Api<Deployment>, name: &str, finalizer: bool) -> Deployment {
    let mut v = json!({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
    if finalizer {
        v["metadata"]["finalizers"] = json!(["test.sluice.dev/hold"]);
    }
    deploys
        .create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .expect("owner")
}

/// The garbage collector (pkg/controller/garbagecollector) and the generic store
/// (k8s.io/apiserver pkg/registry/generic/registry/store.go): Orphan strips owner
/// references, Foreground holds the owner with the `foregroundDeletion` finalizer until
/// its blocking dependents are gone, Background deletes dependents, and marking an
/// object for deletion bumps its generation.
#[tokio::test]
async fn garbage_collection_policies_like_kube() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Orphan: the dependent stays and loses its owner reference.
    let o = owner(&deploys, "orphaner", false).await;
    cms.create(&pp, &owned_cm("orphan-dep", &o, false, false))
        .await
        .unwrap();
    deploys
        .delete(
            "orphaner",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .expect("delete");
    assert!(deploys.get_opt("orphaner").await.unwrap().is_none());
    let dep = cms.get("orphan-dep").await.expect("the dependent stays");
    assert!(
        dep.metadata.owner_references.is_none(),
        "{:?}",
        dep.metadata.owner_references
    );

    // Foreground: the owner waits for its blocking dependent.
    let f = owner(&deploys, "fg", false).await;
    assert_eq!(f.metadata.generation, Some(1));
    cms.create(&pp, &owned_cm("fg-dep", &f, true, true))
        .await
        .unwrap();
    deploys
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete");
    let held = deploys.get("fg").await.expect("the owner is held");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), ["foregroundDeletion"]);
    assert_eq!(
        held.metadata.generation,
        Some(2),
        "deletion bumps the generation"
    );
    let dep = cms.get("fg-dep").await.expect("held by its own finalizer");
    assert!(
        dep.metadata.deletion_timestamp.is_some(),
        "the dependent is being deleted"
    );
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the dependent");
    assert!(cms.get_opt("fg-dep").await.unwrap().is_none());
    assert!(
        deploys.get_opt("fg").await.unwrap().is_none(),
        "the owner goes with its last blocking dependent"
    );

    // Background with a finalizer on the owner: deletionTimestamp bumps the generation.
    let b = owner(&deploys, "bg", true).await;
    cms.create(&pp, &owned_cm("bg-dep", &b, false, false))
        .await
        .unwrap();
    deploys
        .delete("bg", &DeleteParams::background())
        .await
        .expect("delete");
    let marked = deploys.get("bg").await.expect("held by its finalizer");
    assert_eq!(marked.metadata.generation, Some(2));
    deploys
        .patch(
            "bg",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release");
    assert!(deploys.get_opt("bg").await.unwrap().is_none());
    assert!(
        cms.get_opt("bg-dep").await.unwrap().is_none(),
        "background deletes dependents"
    );

    let (code, _, message) = status(
        deploys
            .delete(
                "nothing",
                &DeleteParams {
                    propagation_policy: None,
                    ..Default::default()
                },
            )
            .await
            .expect_err("missing"),
    );
    assert_eq!(code, 404, "{message}");
}

/// k8s.io/api core/v1 `ServiceSpec.Ports` merges by `port` in a strategic merge patch
/// (kubectl patch / kubectl apply), not by a container port's `containerPort`.
#[tokio::test]
async fn strategic_merge_patch_merges_service_ports_by_port() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443, "targetPort": 8443}]}}))
    .unwrap();
    svcs.create(&PostParams::default(), &svc)
        .await
        .expect("service");
    let out = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}})),
        )
        .await
        .expect("patch");
    let ports: Vec<(i32, String)> = out
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.port, p.name.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        ports,
        vec![(80, "http".to_string()), (443, "https".to_string())]
    );
    let svc = svcs.get("web").await.unwrap();
    let https = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.port == 443)
        .unwrap();
    assert_eq!(
        serde_json::to_value(https.target_port).unwrap(),
        json!(9443)
    );
}

/// k8s.io/apimachinery fieldmanager `versionCheckManager.Apply` and
/// `structuredMergeManager.Apply`, k8s.io/apiserver handlers/patch.go
/// `checkName`: a server-side apply configuration must be of its endpoint's
/// group, version and kind (on an existing object as on a new one, on the
/// status subresource as on the object), carry no managedFields and name
/// the URL's object; each is 400 `BadRequest`, and nothing is written. (The
/// server applied such a configuration to the stored object as if it were
/// of its type, and created the object the body named: a client applying
/// the wrong version or name passed here only.)
#[tokio::test]
async fn server_side_apply_refuses_another_type_and_managed_fields() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let me = PatchParams::apply("me");
    let apply = |name: &'static str, body: Value| {
        let cms = cms.clone();
        let me = me.clone();
        async move { cms.patch(name, &me, &Patch::Apply(body)).await }
    };
    apply(
        "c",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}}),
    )
    .await
    .expect("an apply of the endpoint's type");
    for (name, body, message) in [
        (
            "c",
            json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "data": {"a": "2"}}),
            "invalid object type: apps/v1, Kind=ConfigMap",
        ),
        (
            "c",
            json!({"apiVersion": "v1", "kind": "Secret", "data": {"a": "2"}}),
            "invalid object type: /v1, Kind=Secret",
        ),
        (
            "new",
            json!({"apiVersion": "v2", "kind": "ConfigMap", "data": {"a": "2"}}),
            "invalid object type: /v2, Kind=ConfigMap",
        ),
        (
            "c",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "2"},
                "metadata": {"managedFields": [{"manager": "me", "operation": "Apply",
                    "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]}}),
            "metadata.managedFields must be nil",
        ),
        (
            "new",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}),
            "the name of the object (other) does not match the name on the URL (new)",
        ),
    ] {
        let refused = apply(name, body).await.map(|_| ()).map_err(status);
        assert_eq!(
            refused,
            Err((400, "BadRequest".to_string(), message.to_string())),
            "{name}"
        );
    }
    let stored = cms.get("c").await.unwrap();
    assert_eq!(stored.data.unwrap()["a"], "1");
    assert!(cms.get_opt("new").await.unwrap().is_none());
    assert!(cms.get_opt("other").await.unwrap().is_none());

    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &pod(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "a:1"}]}})),
    )
    .await
    .expect("pod");
    let refused = pods
        .patch_status(
            "p",
            &PatchParams::apply("me").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "status": {"message": "m"}})),
        )
        .await
        .map(|_| ())
        .map_err(status);
    assert_eq!(
        refused,
        Err((
            400,
            "BadRequest".to_string(),
            "invalid object type: /v1, Kind=ConfigMap".to_string()
        ))
    );
}
