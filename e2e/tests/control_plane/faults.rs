//! Faults a test arms on the test control plane
//! (`TestCluster::fail_status_writes`): the next status writes of one object
//! are answered as kube-apiserver answers a write that lost a race (409
//! `Conflict`) or failed in storage (500), and nothing else changes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice_e2e::apiserver::faults::{FaultCode, StatusWriteFault};
use support::cluster;

fn code_and_reason(result: Result<Pod, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn phase(message: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"status": {"message": message}}))
}

#[tokio::test]
async fn armed_status_write_faults_answer_only_the_writes_they_name() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["app", "other"] {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "a", "image": "a:1"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    c.fail_status_writes(StatusWriteFault::conflicts("pods", "default", "app", 2).by("me"));
    c.fail_status_writes(
        StatusWriteFault::conflicts("pods", "default", "app", 1)
            .by("me")
            .answering(FaultCode::InternalError),
    );
    // A fault on an object that does not exist answers nothing: 404 as ever.
    c.fail_status_writes(StatusWriteFault::conflicts("pods", "default", "gone", 1));

    let me = PatchParams::apply("me");
    let someone = PatchParams::apply("someone");
    // Other writers, other objects, the main resource and reads are served.
    pods.patch_status("app", &someone, &phase("by someone"))
        .await
        .unwrap();
    pods.patch_status("other", &me, &phase("other"))
        .await
        .unwrap();
    pods.patch(
        "app",
        &me,
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
    pods.get_status("app").await.unwrap();
    let (code, reason, _) = code_and_reason(pods.patch_status("gone", &me, &phase("x")).await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(c.faulted_requests(), 0);

    // The named writes: two conflicts in kube's words, then a 500, then served.
    for _ in 0..2 {
        let (code, reason, message) =
            code_and_reason(pods.patch_status("app", &me, &phase("by me")).await);
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
        assert_eq!(
            message,
            "Operation cannot be fulfilled on pods \"app\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }
    let mut pod = pods.get_status("app").await.unwrap();
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.message.as_deref()),
        Some("by someone"),
        "a faulted write changes nothing"
    );
    // A PUT of the status by `me` is a status write too.
    pod.metadata.managed_fields = None;
    let by_me = PostParams {
        field_manager: Some("me".into()),
        ..Default::default()
    };
    let (code, reason, _) = code_and_reason(pods.replace_status("app", &by_me, &pod).await);
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    assert_eq!(c.faulted_requests(), 3);
    let served = pods
        .patch_status("app", &me, &phase("by me"))
        .await
        .unwrap();
    assert_eq!(
        served.status.and_then(|s| s.message).as_deref(),
        Some("by me")
    );
    assert_eq!(c.faulted_requests(), 3);
}
