//! The AccessPolicy CRD refuses a rule whose match is empty, also when the
//! emptiness comes from the API server pruning a misspelt field (a client
//! that does not ask for strict field validation gets unknown fields
//! dropped, not refused). A catch-all is written `match: {any: true}`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::common;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use sluice_e2e::{Options, TestCluster};

#[tokio::test]
async fn an_empty_or_pruned_match_is_refused_by_the_crd() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default()).await.unwrap();
    let client = cluster.client().await.unwrap();
    common::install_crds(&client, &["accesspolicies"]).await;
    let resource = ApiResource {
        group: "sluice.dev".into(),
        version: "v1alpha1".into(),
        api_version: "sluice.dev/v1alpha1".into(),
        kind: "AccessPolicy".into(),
        plural: "accesspolicies".into(),
    };
    let api: Api<DynamicObject> = Api::default_namespaced_with(client, &resource);
    let create = |name: &str, m: serde_json::Value| {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name},
            "spec": {
                "subjects": [{"serviceAccount": "app"}], "connections": ["db"],
                "defaultAction": "deny",
                "rules": [{"name": "reads", "match": m, "action": "allow"}],
            }
        }))
        .unwrap();
        let api = api.clone();
        async move { api.create(&PostParams::default(), &object).await }
    };
    for (name, m) in [
        ("pruned", json!({"statments": ["select"]})),
        ("empty", json!({})),
        ("empty-lists", json!({"statements": [], "tables": []})),
        ("any-false", json!({"any": false})),
    ] {
        let err = create(name, m).await.expect_err(name);
        let kube::Error::Api(status) = &err else {
            panic!("{name}: {err}")
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
    }
    for (name, m) in [
        ("catch-all", json!({"any": true})),
        ("selects", json!({"statements": ["select"]})),
        ("http", json!({"paths": ["/v1/**"]})),
    ] {
        create(name, m)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
