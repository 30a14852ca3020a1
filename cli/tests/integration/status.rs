//! `kubectl sluice status` (issue 23 item 3): real kubectl runs the plugin,
//! which reads each injected pod's `/debug/standing` through the test
//! control plane's `pods/proxy`. The operator runs in-process under the
//! chart's RBAC; the sidecar runs in-process in run mode as the injected
//! pod's sidecar would, its admin port on the loopback address the test
//! gives the pod as `status.podIP`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sluice_e2e::TestCluster;
use support::{Env, bounded};

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs real kubectl (which finds the plugin on PATH) against the cluster.
async fn kubectl(cluster: &TestCluster, args: &[&str]) -> Out {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = bounded(
        "kubectl",
        tokio::process::Command::new("kubectl")
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("KUBECACHEDIR", cluster.dir().join("kube-cache"))
            .env("PATH", path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A loopback address of its own (127.0.0.0/8 is all local on Linux), so the
/// pod's admin port can be the injected 15020 without clashing with others.
fn own_loopback() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let seed = nanos ^ std::process::id().rotate_left(16);
    format!(
        "127.{}.{}.{}",
        (seed >> 16) % 250 + 2,
        (seed >> 8) % 250 + 2,
        seed % 250 + 2
    )
}

async fn set_pod_ip(env: &Env, pod: &str, ip: &str) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    api.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": ip, "phase": "Running"}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_each_sidecars_standing_through_the_pod_proxy_and_no_secret() {
    let env = Env::start().await;
    env.webhook_registered().await;
    env.policy_ready("reporting").await;
    let dir = tempfile::tempdir().unwrap();
    let (pod, token_file) = env
        .pod_token_file("report-job", "report-0", dir.path())
        .await;
    // The webhook declared the admin port; the test's "pod network" is loopback.
    let ports: Vec<i32> = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .chain(pod.spec.as_ref().unwrap().containers.iter())
        .filter(|c| c.name == "sluice-sidecar")
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.name.as_deref() == Some("sluice-admin"))
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, vec![15020]);
    let ip = own_loopback();
    set_pod_ip(&env, "report-0", &ip).await;

    let mut cfg = sluice_sidecar::run::RunConfig::new(
        format!("https://{}", env.operator.addr),
        token_file.clone(),
        env.operator.ca_bundle_pem(),
    );
    // The standing names every Connection of the bundle; none needs a listener here.
    cfg.connections = Some(vec![]);
    cfg.audit_stdout = false;
    cfg.poll_wait = Duration::from_secs(1);
    cfg.first_bundle_timeout = Duration::from_secs(20);
    cfg.admin_addr = Some(format!("{ip}:15020").parse().unwrap());
    let sidecar = sluice_sidecar::run::start(cfg).await.unwrap();
    let revision = sidecar.bundle_revision().borrow().clone().unwrap();

    // Every injected pod of the namespace: one row.
    let out = kubectl(&env.cluster, &["sluice", "status", "-n", "shop"]).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE   POD"), "{}", out.stdout);
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    for cell in [
        "shop",
        "report-0",
        revision.as_str(),
        "ago",
        "in ",
        "orders-db",
        "shop/reporting",
    ] {
        assert!(lines[1].contains(cell), "{cell:?} in {}", out.stdout);
    }

    // One pod in detail.
    let out = kubectl(
        &env.cluster,
        &["sluice", "status", "report-0", "-n", "shop"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for expected in [
        "Pod:           shop/report-0\n".to_string(),
        format!("Injected by:   {}\n", env!("CARGO_PKG_VERSION")),
        "Identity:      shop/report-job\n".to_string(),
        format!("Bundle:        revision {revision}, received "),
        "Last refresh:  ".to_string(),
        "Connections:\n  orders-db (postgres, localhost:15432)\n".to_string(),
        "Policies:\n  shop/reporting (enforce; orders-db)\n".to_string(),
        "Sessions:      0 open\n".to_string(),
        "Refused:       0 statements since the sidecar started\n".to_string(),
    ] {
        assert!(
            out.stdout.contains(&expected),
            "missing {expected:?} in:\n{}",
            out.stdout
        );
    }

    // No secret anywhere: not in the page the proxy serves, the table, the
    // description or the JSON (the Connection's password, the masking key,
    // the pod's token, a gateway token).
    let raw = kubectl(
        &env.cluster,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/shop/pods/report-0:15020/proxy/debug/standing",
        ],
    )
    .await;
    assert_eq!(raw.code, Some(0), "{}", raw.stderr);
    let page: serde_json::Value = serde_json::from_str(&raw.stdout).unwrap();
    assert_eq!(page["bundle"]["revision"], revision.as_str());
    let json = kubectl(&env.cluster, &["sluice", "status", "-A", "-o", "json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[0]["pod"], "report-0");
    assert_eq!(rows[0]["standing"]["bundle"]["revision"], revision.as_str());
    let token = std::fs::read_to_string(&token_file).unwrap();
    let key = "replace-with-32-random-bytes-in-production";
    let secrets = [
        "change-me-orders-app".to_string(),
        key.to_string(),
        base64_of(key),
        base64_of("change-me-orders-app"),
        token.trim().to_string(),
        "eyJ".to_string(),
    ];
    let detail = kubectl(
        &env.cluster,
        &["sluice", "status", "report-0", "-n", "shop"],
    )
    .await;
    for text in [&raw.stdout, &json.stdout, &detail.stdout] {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret:?} leaked into:\n{text}"
            );
        }
    }

    // A pod whose sidecar does not answer: named with the reason, exit 1.
    env.injected_pod("report-1", "report-job").await;
    set_pod_ip(&env, "report-1", &own_loopback_unused(&ip)).await;
    let out = kubectl(&env.cluster, &["sluice", "status", "-n", "shop"]).await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains("report-1"))
        .unwrap_or_else(|| panic!("no report-1 row:\n{}", out.stdout));
    assert!(
        row.contains("could not read the sidecar through pods/proxy")
            && row.contains("error trying to reach service"),
        "{row}"
    );
    // A pod without a sidecar is refused by name.
    let out = kubectl(&env.cluster, &["sluice", "status", "nope", "-n", "shop"]).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.trim(),
        "error: pod shop/nope not found; list the injected pods with kubectl sluice status -n shop"
    );
    drop(sidecar);
}

/// Another loopback address than `ip`, where nothing listens on 15020.
fn own_loopback_unused(ip: &str) -> String {
    let mut octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    octets[3] = if octets[3] == 1 { 2 } else { 1 };
    format!("{}.{}.{}.{}", octets[0], octets[1], octets[2], octets[3])
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
