//! RBAC enforcement (opt-in), driven by kubectl and kube-rs.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use crate::support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{cluster_with_rbac, kubectl, kubectl_in};

/// `kubectl auth can-i` (exits 1 on "no"), returning its answer.
async fn can_i(c: &sluice_e2e::TestCluster, args: &[&str]) -> String {
    kubectl_in(c, args, None).await.stdout.trim().to_string()
}

#[tokio::test]
async fn rbac_refuses_until_a_binding_allows() {
    let c = cluster_with_rbac(true).await;
    let out = kubectl_in(&c, &["--context", "alice", "get", "configmaps"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(r#"configmaps is forbidden: User "alice" cannot list resource "configmaps" in API group "" in the namespace "default""#),
        "{}",
        out.stderr
    );
    assert_eq!(
        can_i(
            &c,
            &["--context", "alice", "auth", "can-i", "list", "configmaps"]
        )
        .await,
        "no"
    );
    kubectl(
        &c,
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list,watch",
            "--resource=configmaps",
            "-n",
            "default",
        ],
    )
    .await;
    kubectl(
        &c,
        &[
            "create",
            "rolebinding",
            "ops-read",
            "--role=reader",
            "--group=ops",
            "-n",
            "default",
        ],
    )
    .await;
    assert_eq!(
        can_i(
            &c,
            &["--context", "alice", "auth", "can-i", "list", "configmaps"]
        )
        .await,
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &[
                "--context",
                "alice",
                "auth",
                "can-i",
                "list",
                "configmaps",
                "-n",
                "kube-system"
            ]
        )
        .await,
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &[
                "--context",
                "alice",
                "auth",
                "can-i",
                "delete",
                "configmaps"
            ]
        )
        .await,
        "no"
    );
    let names = kubectl(
        &c,
        &["--context", "alice", "get", "configmaps", "-o", "name"],
    )
    .await;
    assert!(names.contains("configmap/kube-root-ca.crt"), "{names}");
    // kube-rs sees 403 Forbidden for what the role does not grant.
    let alice = c.client_for("alice").await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    cms.list(&ListParams::default())
        .await
        .expect("allowed list");
    let err = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm"),
        )
        .await
        .expect_err("create is not granted");
    let kube::Error::Api(s) = err else {
        panic!("api error")
    };
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    let other: Api<ConfigMap> = Api::namespaced(alice, "kube-system");
    assert!(
        other.list(&ListParams::default()).await.is_err(),
        "the RoleBinding only covers its namespace"
    );
}

#[tokio::test]
async fn service_account_token_review_needs_auth_delegator() {
    let c = cluster_with_rbac(true).await;
    kubectl(&c, &["create", "serviceaccount", "operator"]).await;
    let token = kubectl(&c, &["create", "token", "operator"]).await;
    let review =
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"x"}}"#;
    let out = kubectl_in(
        &c,
        &["--token", token.trim(), "create", "-f", "-", "-o", "name"],
        Some(review),
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("cannot create resource \"tokenreviews\""),
        "{}",
        out.stderr
    );
    kubectl(
        &c,
        &[
            "create",
            "clusterrolebinding",
            "operator-auth",
            "--clusterrole=system:auth-delegator",
            "--serviceaccount=default:operator",
        ],
    )
    .await;
    let out = kubectl_in(
        &c,
        &[
            "--token",
            token.trim(),
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.authenticated}",
        ],
        Some(review),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "false", "the reviewed token is garbage");
}

/// Impersonation as kube-apiserver does it (k8s.io/apiserver
/// pkg/endpoints/filters/impersonation.go): the admin may act as anyone; another user needs
/// the `impersonate` verb; the impersonated identity is then authorized as itself.
#[tokio::test]
async fn kubectl_as_impersonates_under_rbac() {
    let c = cluster_with_rbac(true).await;
    kubectl(&c, &["create", "namespace", "shop"]).await;
    kubectl(&c, &["create", "serviceaccount", "job", "-n", "shop"]).await;
    let sa = "system:serviceaccount:shop:job";
    // The admin impersonates the service account, which may not list pods.
    let out = kubectl_in(&c, &["--as", sa, "get", "pods", "-n", "shop"], None).await;
    assert!(
        !out.ok
            && out.stderr.contains(r#"pods is forbidden: User "system:serviceaccount:shop:job" cannot list resource "pods" in API group "" in the namespace "shop""#),
        "{}",
        out.stderr
    );
    assert_eq!(
        can_i(
            &c,
            &["--as", sa, "auth", "can-i", "list", "pods", "-n", "shop"]
        )
        .await,
        "no"
    );
    kubectl(
        &c,
        &[
            "create",
            "role",
            "pods",
            "--verb=list",
            "--resource=pods",
            "-n",
            "shop",
        ],
    )
    .await;
    kubectl(
        &c,
        &[
            "create",
            "rolebinding",
            "job-pods",
            "--role=pods",
            "--serviceaccount=shop:job",
            "-n",
            "shop",
        ],
    )
    .await;
    kubectl(&c, &["--as", sa, "get", "pods", "-n", "shop"]).await;
    // The service-account groups come with the impersonated service account.
    let whoami = kubectl(&c, &["--as", sa, "auth", "whoami", "-o", "json"]).await;
    let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    let groups = whoami["status"]["userInfo"]["groups"].to_string();
    assert!(
        groups.contains("system:serviceaccounts:shop") && groups.contains("system:authenticated"),
        "{whoami}"
    );
    // alice may not impersonate until a role grants it.
    let out = kubectl_in(
        &c,
        &["--context", "alice", "--as", "bob", "get", "pods"],
        None,
    )
    .await;
    assert!(
        !out.ok
            && out.stderr.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{}",
        out.stderr
    );
    kubectl(
        &c,
        &[
            "create",
            "clusterrole",
            "imp",
            "--verb=impersonate",
            "--resource=users",
            "--resource-name=bob",
        ],
    )
    .await;
    kubectl(
        &c,
        &[
            "create",
            "clusterrolebinding",
            "alice-imp",
            "--clusterrole=imp",
            "--user=alice",
        ],
    )
    .await;
    let out = kubectl_in(
        &c,
        &["--context", "alice", "--as", "bob", "get", "pods"],
        None,
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains(r#"User "bob" cannot list resource "pods""#),
        "{}",
        out.stderr
    );
    // Groups without a user are a bad request.
    let out = kubectl_in(&c, &["--as-group", "dev", "get", "pods"], None).await;
    assert!(!out.ok, "{}", out.stdout);
}
