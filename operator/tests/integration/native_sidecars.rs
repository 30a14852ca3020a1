//! Issue #19 item 7: `nativeSidecars: auto` follows the kubelets of the
//! cluster's Nodes, not only the API server (the operator under the chart's
//! RBAC, Nodes of mixed versions in the test control plane).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice_e2e::Options;
use support::{Env, WAIT};

/// A Node as a kubelet of `version` registers it.
fn node(name: &str, version: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"nodeInfo": {
            "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.0",
            "kernelVersion": "6.1.0", "kubeProxyVersion": version, "kubeletVersion": version,
            "machineID": "m", "operatingSystem": "linux", "osImage": "Debian", "systemUUID": "u"}}
    }))
    .expect("node")
}

async fn set_kubelet(nodes: &Api<Node>, name: &str, version: &str) {
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nodeInfo": {"kubeletVersion": version}}})),
        )
        .await
        .expect("kubelet upgrade");
}

/// Where the webhook puts the sidecar of a new pod: true when native (a dry
/// run: nothing is stored).
async fn next_pod_is_native(env: &Env) -> bool {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe", "annotations": {"sluice.dev/inject": "true"}},
        "spec": {"serviceAccountName": "report-job",
            "containers": [{"name": "app", "image": "example/report:1"}]}
    }))
    .expect("pod");
    let created = pods
        .create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &pod,
        )
        .await
        .expect("dry-run create");
    let spec = created.spec.expect("spec");
    let init = spec
        .init_containers
        .unwrap_or_default()
        .iter()
        .any(|c| c.name == "sluice-sidecar");
    let regular = spec.containers.iter().any(|c| c.name == "sluice-sidecar");
    assert!(init != regular, "exactly one sidecar, native or classic");
    init
}

/// Polls until the next pod's sidecar is `native`, within [`WAIT`].
async fn until_next_pod_is(env: &Env, native: bool, why: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while next_pod_is_native(env).await != native {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new pods did not get {} sidecars after {why}",
            if native { "native" } else { "classic" }
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Cluster with RBAC, the quickstart, `nodes`, and the chart's operator account.
async fn cluster_with_nodes(
    nodes: &[(&str, &str)],
) -> (sluice_e2e::TestCluster, kube::Client, kube::Client) {
    let (cluster, client) = support::cluster_with_crds(Options::default().rbac(true)).await;
    support::apply_quickstart(
        &client,
        &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
    )
    .await;
    let api: Api<Node> = Api::all(client.clone());
    for (name, version) in nodes {
        api.create(&PostParams::default(), &node(name, version))
            .await
            .expect("create node");
    }
    let operator_client = support::chart_operator_client(&cluster, &client).await;
    (cluster, client, operator_client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_native_sidecars_only_while_every_kubelet_is_1_29_or_newer() {
    let (cluster, client, operator_client) =
        cluster_with_nodes(&[("node-a", "v1.33.1"), ("node-b", "v1.28.9-eks-1a2b3c")]).await;
    let env = Env::with_operator_as(
        cluster,
        client,
        operator_client,
        support::test_settings("nodes"),
    )
    .await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    // One kubelet is 1.28: from the first pod on, classic sidecars.
    assert!(!next_pod_is_native(&env).await, "node-b runs kubelet 1.28");
    let classic = env.injected_pod("classic", "report-job").await;
    let classic_token = env.pod_token("report-job", &classic, "sluice.dev").await;
    let (status, body) = env.exchange(&classic_token).await;
    assert_eq!(status, 200, "{body}");

    // node-b's kubelet is upgraded: the next pods get native sidecars, and the
    // classic pod keeps its credentials (either place is the injector's).
    let nodes: Api<Node> = Api::all(env.client.clone());
    set_kubelet(&nodes, "node-b", "v1.29.2").await;
    until_next_pod_is(&env, true, "node-b's kubelet became 1.29").await;
    let (status, body) = env.exchange(&classic_token).await;
    assert_eq!(status, 200, "a classic pod after the switch: {body}");
    let native = env.injected_pod("native", "report-job").await;
    let native_token = env.pod_token("report-job", &native, "sluice.dev").await;
    let (status, body) = env.exchange(&native_token).await;
    assert_eq!(status, 200, "{body}");

    // An old node joins: classic again; it leaves: native again.
    nodes
        .create(&PostParams::default(), &node("node-c", "v1.27.16"))
        .await
        .expect("node-c joins");
    until_next_pod_is(&env, false, "node-c (kubelet 1.27) joined").await;
    let (status, body) = env.exchange(&native_token).await;
    assert_eq!(status, 200, "a native pod after the switch back: {body}");
    nodes
        .delete("node-c", &DeleteParams::default())
        .await
        .expect("node-c leaves");
    until_next_pod_is(&env, true, "node-c left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_the_operator_cannot_read_mean_classic_sidecars() {
    let (cluster, client, operator_client) = cluster_with_nodes(&[("node-a", "v1.33.1")]).await;
    // The chart's ClusterRole without its `nodes` rule.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut role = roles
        .get("sluice-operator")
        .await
        .expect("the chart's ClusterRole");
    let rules = role.rules.as_mut().expect("rules");
    let before = rules.len();
    rules.retain(|r| !r.resources.iter().flatten().any(|res| res == "nodes"));
    assert_eq!(
        rules.len(),
        before - 1,
        "the chart grants list/watch on nodes"
    );
    roles
        .replace("sluice-operator", &PostParams::default(), &role)
        .await
        .expect("replace the ClusterRole");
    let env = Env::with_operator_as(
        cluster,
        client,
        operator_client,
        support::test_settings("no-nodes"),
    )
    .await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    assert!(
        !next_pod_is_native(&env).await,
        "every kubelet is 1.33, but the operator cannot know"
    );
}
