//! Issue #18: changes to a running injected pod go through the pod webhook
//! too (pod UPDATE and the `pods/ephemeralcontainers` subresource), with real
//! kubectl against the test control plane, the operator under the chart's RBAC.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::Env;

/// Runs kubectl as the cluster's admin; (success, stdout + stderr).
async fn kubectl(env: &Env, args: &[&str]) -> (bool, String) {
    let out = support::bounded(
        "kubectl",
        tokio::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", env.cluster.kubeconfig_path())
            .env("KUBECACHEDIR", env.cluster.dir().join("kube-cache"))
            .env("KUBECTL_DEBUG_CUSTOM_PROFILE", "true")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn sidecar_image(pods: &Api<Pod>) -> Option<String> {
    let pod = pods.get("report").await.expect("get the pod");
    pod.spec?
        .init_containers?
        .into_iter()
        .find(|c| c.name == "sluice-sidecar")?
        .image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_would_make_an_injected_pod_non_genuine_are_refused() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let (status, body) = env.exchange(&token).await;
    assert_eq!(status, 200, "{body}");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    let original = sidecar_image(&pods).await.expect("the injected sidecar");
    let written = |pod: &Pod| {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        [
            "sluice.dev/injected-revision",
            "sluice.dev/injected-connections",
        ]
        .map(|k| annotations.get(k).cloned())
    };
    let original_annotations = written(&pod);
    assert!(
        original_annotations.iter().all(Option::is_some),
        "{original_annotations:?}"
    );

    // A rollout of the app's image is fine.
    let (ok, out) = kubectl(
        &env,
        &[
            "set",
            "image",
            "pod/report",
            "app=example/report:2",
            "-n",
            "shop",
        ],
    )
    .await;
    assert!(ok, "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let custom = dir.path().join("steal-token.json");
    std::fs::write(
        &custom,
        json!({"volumeMounts": [{"name": "sluice-token", "mountPath": "/stolen"}]}).to_string(),
    )
    .expect("write the debug profile");
    let custom = format!("--custom={}", custom.display());
    let refused: [(&[&str], &str); 5] = [
        (
            &[
                "set",
                "image",
                "pod/report",
                "sluice-sidecar=evil.example/sidecar:1",
            ],
            "the sluice-sidecar container of an injected pod may not change (image differ)",
        ),
        (
            &[
                "annotate",
                "pod",
                "report",
                "--overwrite",
                "sluice.dev/injected-connections=orders-db,billing-db",
            ],
            "annotation sluice.dev/injected-connections of an injected pod is written by the Sluice webhook",
        ),
        (
            &["annotate", "pod", "report", "sluice.dev/injected-revision-"],
            "annotation sluice.dev/injected-revision of an injected pod",
        ),
        (
            &[
                "debug",
                "report",
                "--image=busybox:1.36",
                "--target=sluice-sidecar",
                "--container=peek",
            ],
            "ephemeral container \"peek\" targets the Sluice sidecar",
        ),
        (
            &[
                "debug",
                "report",
                "--image=busybox:1.36",
                "--container=thief",
                custom.as_str(),
            ],
            "\"thief\" ",
        ),
    ];
    for (args, needle) in refused {
        let mut args = args.to_vec();
        args.extend(["-n", "shop"]);
        let (ok, out) = kubectl(&env, &args).await;
        assert!(
            !ok && out.contains("sluice sidecar injection") && out.contains(needle),
            "kubectl {args:?} was not refused with {needle:?}: {out}"
        );
        if args[0] == "debug" && args.contains(&custom.as_str()) {
            assert!(out.contains("sluice-token"), "{out}");
        }
    }
    assert_eq!(
        sidecar_image(&pods).await.as_deref(),
        Some(original.as_str())
    );
    let stored = pods.get("report").await.expect("get");
    assert_eq!(written(&stored), original_annotations);
    assert!(
        stored
            .spec
            .and_then(|s| s.ephemeral_containers)
            .is_none_or(|e| e.is_empty()),
        "a refused debug container was added"
    );

    // Debugging the app reaches what the app reaches: allowed, and the pod
    // keeps its credentials.
    let (ok, out) = kubectl(
        &env,
        &[
            "debug",
            "report",
            "--image=busybox:1.36",
            "--target=app",
            "--container=dbg",
            "-n",
            "shop",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (status, body) = env.exchange(&token).await;
    assert_eq!(status, 200, "the pod is still genuine: {body}");

    // Where the webhook is not called (the namespace lost its injection
    // label), the gateway still refuses the edited pod on the next exchange.
    Api::<Namespace>::all(env.client.clone())
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sluice.dev/injection": Value::Null}}})),
        )
        .await
        .expect("unlabel the namespace");
    let (ok, out) = kubectl(
        &env,
        &[
            "set",
            "image",
            "pod/report",
            "sluice-sidecar=evil.example/sidecar:1",
            "-n",
            "shop",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (status, body) = env.exchange(&token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "UntrustedImage", "{body}");
}

/// The annotations the webhook read when it injected a pod (`sluice.dev/inject`,
/// `sluice.dev/connections`, `sluice.dev/sidecar-*`) are refused on a running
/// pod with a message to roll the workload: the sidecar was built from them
/// and would not follow a change. Other annotations stay free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sidecar_setting_on_a_running_pod_is_refused_with_roll_the_workload() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    env.injected_pod("report", "report-job").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");

    let refused: [(&[&str], &str); 4] = [
        (
            &[
                "annotate",
                "pod",
                "report",
                "sluice.dev/sidecar-log-level=debug",
            ],
            "annotation sluice.dev/sidecar-log-level of a running injected pod was read when its sidecar was injected, so adding it now would change nothing; set it in the workload's pod template and roll the workload",
        ),
        (
            &[
                "annotate",
                "pod",
                "report",
                "sluice.dev/sidecar-memory-limit=256Mi",
            ],
            "annotation sluice.dev/sidecar-memory-limit of a running injected pod",
        ),
        (
            &[
                "annotate",
                "pod",
                "report",
                "sluice.dev/connections=orders-db",
            ],
            "annotation sluice.dev/connections of a running injected pod",
        ),
        (
            &["annotate", "pod", "report", "sluice.dev/inject-"],
            "so removing it now would change nothing",
        ),
    ];
    for (args, needle) in refused {
        let mut args = args.to_vec();
        args.extend(["-n", "shop"]);
        let (ok, out) = kubectl(&env, &args).await;
        assert!(
            !ok && out.contains("sluice sidecar injection") && out.contains(needle),
            "kubectl {args:?} was not refused with {needle:?}: {out}"
        );
    }
    let stored = pods.get("report").await.expect("get");
    let annotations = stored.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("sluice.dev/inject").map(String::as_str),
        Some("true")
    );
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("sluice.dev/sidecar-") || k == "sluice.dev/connections"),
        "a refused annotation was stored: {annotations:?}"
    );

    // Annotations the webhook does not read still change freely.
    let (ok, out) = kubectl(
        &env,
        &["annotate", "pod", "report", "team=reporting", "-n", "shop"],
    )
    .await;
    assert!(ok, "{out}");
}
