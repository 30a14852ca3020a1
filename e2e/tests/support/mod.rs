//! Helpers shared by the test-control-plane tests.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use sluice_e2e::{Options, TestCluster};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Upper bound for any single kubectl invocation.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a cluster with user `alice` (groups dev, ops).
pub async fn cluster() -> TestCluster {
    cluster_with_rbac(false).await
}

/// Starts a cluster with user `alice` (groups dev, ops), RBAC enforced or not.
pub async fn cluster_with_rbac(rbac: bool) -> TestCluster {
    TestCluster::start(Options::default().user("alice", &["dev", "ops"]).rbac(rbac))
        .await
        .expect("cluster starts")
}

/// Output of a kubectl run.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs kubectl against the cluster, with optional stdin, bounded in time.
pub async fn kubectl_in(c: &TestCluster, args: &[&str], stdin: Option<&str>) -> Out {
    let cache = c.dir().join("kube-cache");
    kubectl_with(&c.kubeconfig_path(), &cache, args, stdin, KUBECTL_TIMEOUT).await
}

/// Runs kubectl with `kubeconfig` and the discovery cache `cache`, with
/// optional stdin, failing the test when it takes longer than `timeout`.
pub async fn kubectl_with(
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Out {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", cache)
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
    let mut child = cmd.spawn().expect("kubectl is installed and on PATH");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {timeout:?}"))
        .expect("kubectl runs");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    sluice_e2e::free_port().expect("a free loopback port")
}

/// Runs kubectl and asserts success, returning stdout.
pub async fn kubectl(c: &TestCluster, args: &[&str]) -> String {
    let out = kubectl_in(c, args, None).await;
    assert!(
        out.ok,
        "kubectl {args:?} failed: {}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// Runs kubectl with stdin and asserts success.
pub async fn kubectl_stdin(c: &TestCluster, args: &[&str], stdin: &str) -> String {
    let out = kubectl_in(c, args, Some(stdin)).await;
    assert!(
        out.ok,
        "kubectl {args:?} failed: {}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The repository root (for crds/ and examples/).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the repository")
}

/// Applies the Sluice CRDs from crds/*.yaml.
pub async fn apply_sluice_crds(c: &TestCluster) {
    let dir = repo_root().join("crds");
    let out = kubectl(c, &["apply", "-f", dir.to_str().expect("utf-8 path")]).await;
    assert!(out.contains("connections.sluice.dev created"), "{out}");
}
