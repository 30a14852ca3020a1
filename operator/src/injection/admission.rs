//! Admission reviews: the thin layer between the API server's AdmissionReview
//! and the pure [`crate::injection::inject`] function.

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::injection::inject::{InjectConfig, check_ephemeral_containers, inject};

/// Prefix of every refusal, so a user reading a ReplicaSet's events knows who refused.
const REFUSAL_PREFIX: &str = "sluice sidecar injection";

/// Answers a pod admission request: allowed with the injection patch and its
/// warnings, allowed unchanged, or denied with the injector's message. Updates
/// of the `ephemeralcontainers` subresource are checked, never patched.
///
/// The caller resolves `cfg` for the pod's namespace (`request.namespace`) and
/// service account ([`crate::injection::inject::service_account_of`]).
pub fn review_pod(request: &AdmissionRequest<Pod>, cfg: &InjectConfig) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(pod) = &request.object else {
        return response;
    };
    if request.sub_resource.as_deref() == Some("ephemeralcontainers")
        && let Err(error) = check_ephemeral_containers(pod)
    {
        return response.deny(format!("{REFUSAL_PREFIX}: {error}"));
    }
    // Changes to an injected pod (an UPDATE, or its ephemeral containers) keep
    // its sidecar what the webhook wrote (issue #18, `crate::injection::pod_guard`).
    if matches!(request.operation, Operation::Update) {
        return match request
            .old_object
            .as_ref()
            .map(|old| crate::injection::pod_guard::check_update(old, pod))
        {
            Some(Err(error)) => response.deny(format!("{REFUSAL_PREFIX}: {error}")),
            _ => response,
        };
    }
    // Only creation is mutated: a pod's spec is immutable afterwards.
    if !matches!(request.operation, Operation::Create) || request.sub_resource.is_some() {
        return response;
    }
    let injection = match inject(pod, cfg) {
        Ok(injection) => injection,
        Err(error) => return response.deny(format!("{REFUSAL_PREFIX}: {error}")),
    };
    let warnings = injection.warnings;
    let mut response = if injection.patch.0.is_empty() {
        response
    } else {
        match response.with_patch(injection.patch) {
            Ok(patched) => patched,
            Err(error) => {
                let refusal = AdmissionResponse::from(request);
                return refusal.deny(format!(
                    "{REFUSAL_PREFIX}: could not encode the patch: {error}"
                ));
            }
        }
    };
    if !warnings.is_empty() {
        response.warnings = Some(
            warnings
                .into_iter()
                .map(|w| format!("{REFUSAL_PREFIX}: {w}"))
                .collect(),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::inject::{ConnectionTarget, default_sidecar_resources};
    use kube::core::admission::AdmissionReview;
    use sluice_crds::Protocol;

    fn config() -> InjectConfig {
        InjectConfig {
            options: Default::default(),
            sidecar_env: Vec::new(),
            shutdown_grace_seconds:
                crate::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
            revision: "r1".into(),
            image: "sidecar:1".into(),
            image_pull_policy: None,
            gateway_url: "https://gw:8443".into(),
            ca_pem: "PEM".into(),
            admin_port: 15020,
            native_sidecars: true,
            resources: default_sidecar_resources(),
            service_account: "default".into(),
            connections: vec![ConnectionTarget {
                name: "orders-db".into(),
                protocol: Protocol::Postgres,
                listen_port: 15432,
                database: Some("orders".into()),
                inject_env: Some("DATABASE_URL".into()),
                bound: true,
            }],
        }
    }

    fn admission_request(operation: &str, pod: serde_json::Value) -> AdmissionRequest<Pod> {
        subresource_request(operation, None, pod)
    }

    fn subresource_request(
        operation: &str,
        sub_resource: Option<&str>,
        pod: serde_json::Value,
    ) -> AdmissionRequest<Pod> {
        let review: AdmissionReview<Pod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "subResource": sub_resource,
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn pod(annotations: serde_json::Value, share_process_namespace: bool) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "web-", "annotations": annotations},
            "spec": {
                "shareProcessNamespace": share_process_namespace,
                "containers": [{"name": "web", "image": "web:1"}]
            }
        })
    }

    #[test]
    fn injected_pod_gets_a_json_patch() {
        let request = admission_request(
            "CREATE",
            pod(serde_json::json!({"sluice.dev/inject": "true"}), false),
        );
        let response = review_pod(&request, &config());
        assert!(response.allowed);
        assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["patchType"], "JSONPatch");
        let patch: json_patch::Patch = serde_json::from_slice(&response.patch.unwrap()).unwrap();
        assert!(patch.0.len() > 3);
    }

    #[test]
    fn refusal_denies_with_the_reason() {
        let request = admission_request(
            "CREATE",
            pod(serde_json::json!({"sluice.dev/inject": "true"}), true),
        );
        let response = review_pod(&request, &config());
        assert!(!response.allowed);
        assert!(response.patch.is_none());
        assert!(
            response
                .result
                .message
                .starts_with("sluice sidecar injection: pod sets spec.shareProcessNamespace"),
            "{}",
            response.result.message
        );
    }

    #[test]
    fn pods_not_opted_in_and_updates_pass_unchanged() {
        let request = admission_request("CREATE", pod(serde_json::json!({}), false));
        let response = review_pod(&request, &config());
        assert!(response.allowed);
        assert!(response.patch.is_none());

        let request = admission_request(
            "UPDATE",
            pod(serde_json::json!({"sluice.dev/inject": "true"}), true),
        );
        let response = review_pod(&request, &config());
        assert!(response.allowed, "updates are not reviewed");
        assert!(response.patch.is_none());
    }

    #[test]
    fn debug_container_on_the_sidecar_is_denied() {
        let created = admission_request(
            "CREATE",
            pod(serde_json::json!({"sluice.dev/inject": "true"}), false),
        );
        let injected =
            crate::injection::inject::inject(created.object.as_ref().unwrap(), &config())
                .unwrap()
                .pod;
        let mut object = serde_json::to_value(&injected).unwrap();
        object["spec"]["ephemeralContainers"] = serde_json::json!([
            {"name": "debugger", "image": "busybox", "targetContainerName": "sluice-sidecar"}
        ]);
        let request = subresource_request("UPDATE", Some("ephemeralcontainers"), object.clone());
        let response = review_pod(&request, &config());
        assert!(!response.allowed);
        assert!(
            response
                .result
                .message
                .contains("targets the Sluice sidecar"),
            "{}",
            response.result.message
        );

        object["spec"]["ephemeralContainers"][0]["targetContainerName"] = serde_json::json!("web");
        let request = subresource_request("UPDATE", Some("ephemeralcontainers"), object);
        let response = review_pod(&request, &config());
        assert!(response.allowed);
        assert!(response.patch.is_none());
    }

    #[test]
    fn warnings_reach_the_response() {
        let annotations = serde_json::json!({"sluice.dev/inject": "true"});
        let mut object = pod(annotations, false);
        object["spec"]["containers"][0]["env"] =
            serde_json::json!([{"name": "DATABASE_URL", "value": "postgres://elsewhere/db"}]);
        let response = review_pod(&admission_request("CREATE", object), &config());
        assert!(response.allowed);
        let warnings = response.warnings.unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("already sets DATABASE_URL"),
            "{warnings:?}"
        );
    }
}
