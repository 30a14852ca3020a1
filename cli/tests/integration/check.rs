//! `kubectl sluice check` (issue 23 item 2): real kubectl runs the plugin
//! against the test control plane, with the operator in-process. A healthy
//! install passes; each fault made with kubectl is named with its hint and
//! fails the exit code; `--pre` checks a cluster before installing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Client;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use sluice_crds::{AccessPolicy, Connection};
use sluice_e2e::{Options, TestCluster};
use sluice_operator::run::{Running, Settings, WebhookTarget};

const WAIT: Duration = Duration::from_secs(30);
const REVISION: &str = env!("CARGO_PKG_VERSION");

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs real kubectl (which finds the plugin on PATH) against the cluster.
async fn kubectl(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> Out {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", cluster.kubeconfig_path())
        .env("KUBECACHEDIR", cluster.dir().join("kube-cache"))
        .env("PATH", path)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl is installed");
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = bounded("kubectl", child.wait_with_output()).await.unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// kubectl that must succeed.
async fn must(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(cluster, args, stdin).await;
    assert_eq!(
        out.code,
        Some(0),
        "kubectl {args:?}: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// `kubectl sluice check ARGS`: (exit code, stdout).
async fn check(cluster: &TestCluster, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["sluice", "check"];
    all.extend_from_slice(args);
    let out = kubectl(cluster, &all, None).await;
    assert!(
        out.stderr.is_empty() || out.code == Some(0) || out.code == Some(1),
        "{}",
        out.stderr
    );
    (out.code, out.stdout)
}

/// The one line that starts with `mark` and contains `text`, and the hint under it.
fn line_with(report: &str, mark: char, text: &str) -> (String, String) {
    let lines: Vec<&str> = report.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(mark) && l.contains(text))
        .unwrap_or_else(|| panic!("no line `{mark} …{text}…` in:\n{report}"));
    let hint = lines
        .get(i + 1)
        .filter(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    (lines[i].to_string(), hint)
}

struct Env {
    operator: Option<Running>,
    client: Client,
    cluster: TestCluster,
}

/// The quickstart installed with kubectl, and the operator running.
async fn installed() -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default()).await.unwrap();
    let client = cluster.client().await.unwrap();
    for crd in ["connections", "accesspolicies", "accessrequests"] {
        let file = repo(&format!("crds/{crd}.yaml"));
        must(&cluster, &["apply", "-f", file.to_str().unwrap()], None).await;
    }
    for crd in ["connections", "accesspolicies", "accessrequests"] {
        must(
            &cluster,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}.sluice.dev"),
                "--timeout=30s",
            ],
            None,
        )
        .await;
    }
    for file in ["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"] {
        let path = repo(&format!("examples/quickstart/{file}"));
        must(&cluster, &["apply", "-f", path.to_str().unwrap()], None).await;
    }
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), WebhookTarget::Listener);
    // The faults below stay until the test repairs them: no maintenance pass
    // (which rewrites the webhooks' caBundle) runs during the test.
    settings.maintenance_every = Duration::from_secs(3600);
    let operator = sluice_operator::run::start(client.clone(), settings)
        .await
        .unwrap();
    bounded("the operator's caches", operator.ready()).await;
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for name in ["sluice-operator", "sluice-operator-approvals"] {
        bounded(
            "the mutating webhooks",
            await_condition(
                mutating.clone(),
                name,
                |w: Option<&MutatingWebhookConfiguration>| w.is_some(),
            ),
        )
        .await
        .unwrap();
    }
    bounded(
        "the validating webhook",
        await_condition(
            validating,
            "sluice-operator-approvals",
            |w: Option<&ValidatingWebhookConfiguration>| w.is_some(),
        ),
    )
    .await
    .unwrap();
    ready::<Connection>(&client, "orders-db", true).await;
    ready::<AccessPolicy>(&client, "reporting", true).await;
    Env {
        operator: Some(operator),
        client,
        cluster,
    }
}

/// Waits until the object's Ready condition is `ready`.
async fn ready<K>(client: &Client, name: &str, ready: bool)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), "shop");
    let want = if ready { "True" } else { "False" };
    bounded(
        "the Ready condition",
        await_condition(api, name, move |o: Option<&K>| {
            o.and_then(|o| serde_json::to_value(o).ok())
                .and_then(|v| {
                    v["status"]["conditions"].as_array().map(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == want)
                    })
                })
                .unwrap_or(false)
        }),
    )
    .await
    .unwrap();
}

const ANNOTATED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: report
  namespace: other
  annotations:
    sluice.dev/inject: "true"
spec:
  containers:
    - name: app
      image: registry.example/report:1
"#;

const OLD_SIDECAR_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: old
  namespace: other
  annotations:
    sluice.dev/inject: "true"
    sluice.dev/injected-revision: "0.0.1"
spec:
  containers:
    - name: app
      image: registry.example/report:1
"#;

const INVALID_POLICY: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: typo
  namespace: shop
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [orders-dbb]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_install_passes_and_each_fault_is_named_with_its_hint() {
    let mut env = installed().await;
    let c = &env.cluster;

    // Healthy: every line ✔, exit 0.
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(0), "{report}");
    for expected in [
        "✔ the API server answers",
        "✔ connections.sluice.dev serves v1alpha1 as this kubectl-sluice expects",
        "✔ accesspolicies.sluice.dev serves v1alpha1 as this kubectl-sluice expects",
        "✔ accessrequests.sluice.dev serves v1alpha1 as this kubectl-sluice expects",
        "✔ mutatingwebhookconfiguration/sluice-operator is present",
        "✔ validatingwebhookconfiguration/sluice-operator-approvals is present",
        "webhooks carry a valid caBundle",
        "✔ the operator answers at https://127.0.0.1:",
        "✔ the operator's serving certificate is valid until",
        "✔ the webhooks' CA is valid until",
        "✔ the gateway signing key is",
        "✔ 1 namespace labelled sluice.dev/injection=enabled: shop",
        "✔ every pod that asks for a sidecar has one",
        "✔ 1 Connection Ready",
        "✔ 1 AccessPolicy Ready",
        "Status check results are ✔ (0 errors",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    assert!(!report.contains('✖'), "{report}");

    // An annotated pod in a namespace that is not labelled: never injected.
    must(c, &["create", "namespace", "other"], None).await;
    must(c, &["apply", "-f", "-"], Some(ANNOTATED_POD)).await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(1), "{report}");
    let (line, hint) = line_with(&report, '✖', "other/report");
    assert_eq!(
        line,
        "✖ 1 pod annotated sluice.dev/inject=true in a namespace not labelled sluice.dev/injection=enabled, so without a sidecar: other/report"
    );
    assert!(
        hint.starts_with(
            "label the namespace (kubectl label namespace other sluice.dev/injection=enabled)"
        ),
        "{hint}"
    );
    // The same as JSON, for scripts.
    let out = kubectl(c, &["sluice", "check", "-o", "json"], None).await;
    assert_eq!(out.code, Some(1));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["success"], false);
    let errors: Vec<&serde_json::Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stdout);
    assert_eq!(errors[0]["category"], "sluice-injection");
    assert!(
        errors[0]["hint"]
            .as_str()
            .unwrap()
            .contains("kubectl label namespace other")
    );
    // Limited to another namespace, the pod is not looked at.
    let (code, report) = check(c, &["-n", "shop"]).await;
    assert_eq!(code, Some(0), "{report}");
    must(c, &["delete", "pod", "-n", "other", "report"], None).await;

    // A sidecar of an older revision: a warning, not a failure.
    must(c, &["apply", "-f", "-"], Some(OLD_SIDECAR_POD)).await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(0), "{report}");
    let (line, hint) = line_with(&report, '‼', "other/old");
    assert_eq!(
        line,
        format!("‼ 1 pod with a sidecar of revision 0.0.1, not {REVISION}: other/old")
    );
    assert!(hint.contains("kubectl rollout restart"), "{hint}");
    must(c, &["delete", "pod", "-n", "other", "old"], None).await;

    // An AccessPolicy that names a Connection that does not exist.
    must(c, &["apply", "-f", "-"], Some(INVALID_POLICY)).await;
    ready::<AccessPolicy>(&env.client, "typo", false).await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(1), "{report}");
    let (line, hint) = line_with(&report, '✖', "accesspolicy shop/typo");
    assert!(
        line.starts_with("✖ accesspolicy shop/typo is not Ready: UnknownConnection: ")
            && line.contains("orders-dbb"),
        "{line}"
    );
    assert!(
        hint.contains("kubectl describe accesspolicy -n shop typo"),
        "{hint}"
    );
    must(c, &["delete", "accesspolicy", "-n", "shop", "typo"], None).await;

    // A webhook whose caBundle is gone: the API server cannot call it.
    let saved = must(
        c,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "sluice-operator",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ],
        None,
    )
    .await;
    assert!(!saved.is_empty());
    must(
        c,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "sluice-operator",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]"#,
        ],
        None,
    )
    .await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(1), "{report}");
    let (line, hint) = line_with(&report, '✖', "sidecar-injection.sluice.dev");
    assert_eq!(
        line,
        "✖ webhook sidecar-injection.sluice.dev in mutatingwebhookconfiguration/sluice-operator has no caBundle: the API server cannot call it, so what it matches is refused"
    );
    assert!(
        hint.starts_with("the operator's leader writes caBundle"),
        "{hint}"
    );
    let restore =
        format!(r#"[{{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"{saved}"}}]"#);
    must(
        c,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "sluice-operator",
            "--type=json",
            "-p",
            &restore,
        ],
        None,
    )
    .await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(0), "repaired:\n{report}");

    // A CRD deleted.
    must(c, &["delete", "crd", "accessrequests.sluice.dev"], None).await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(1), "{report}");
    let (_, hint) = line_with(&report, '✖', "accessrequests.sluice.dev is not installed");
    assert!(
        hint.contains("helm upgrade --install sluice charts/sluice"),
        "{hint}"
    );
    let file = repo("crds/accessrequests.yaml");
    must(c, &["apply", "-f", file.to_str().unwrap()], None).await;
    must(
        c,
        &[
            "wait",
            "--for=condition=Established",
            "crd/accessrequests.sluice.dev",
            "--timeout=30s",
        ],
        None,
    )
    .await;

    // The operator stopped: its webhooks have no one to answer.
    env.operator.take().unwrap().shutdown().await;
    let (code, report) = check(c, &[]).await;
    assert_eq!(code, Some(1), "{report}");
    let (line, hint) = line_with(
        &report,
        '✖',
        "the operator does not answer at https://127.0.0.1:",
    );
    assert!(line.contains("cannot connect"), "{line}");
    assert!(
        hint.starts_with("the API server cannot call the webhooks either"),
        "{hint}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_checks_permissions_and_leftovers_before_installing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default().user("bob", &["dev"]).rbac(true))
        .await
        .unwrap();
    let c = &cluster;

    // A fresh cluster, as its admin: ready.
    let (code, report) = check(c, &["--pre"]).await;
    assert_eq!(code, Some(0), "{report}");
    for expected in [
        "✔ Kubernetes 1.33 runs the sidecar as a native sidecar",
        "✔ you can create customresourcedefinitions",
        "✔ you can create mutatingwebhookconfigurations",
        "✔ no connections.sluice.dev yet",
        "✔ no mutatingwebhookconfiguration/sluice-operator left from an earlier install",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }

    // bob may not install.
    let (code, report) = check(c, &["--pre", "--context", "bob"]).await;
    assert_eq!(code, Some(1), "{report}");
    let (_, hint) = line_with(&report, '✖', "you cannot create customresourcedefinitions");
    assert_eq!(
        hint,
        "install as a cluster admin (the chart creates cluster-wide objects)"
    );

    // A fail-closed webhook left by an earlier install is called out.
    let leftover = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: sluice-operator
webhooks:
  - name: sidecar-injection.sluice.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    clientConfig:
      url: https://127.0.0.1:1/mutate/pods
    rules:
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE]
        resources: [pods]
"#;
    must(c, &["apply", "-f", "-"], Some(leftover)).await;
    let (code, report) = check(c, &["--pre"]).await;
    assert_eq!(code, Some(0), "warnings only:\n{report}");
    let (_, hint) = line_with(
        &report,
        '‼',
        "mutatingwebhookconfiguration/sluice-operator is already there (failurePolicy Fail)",
    );
    assert!(
        hint.contains("kubectl delete mutatingwebhookconfiguration/sluice-operator"),
        "{hint}"
    );
}
