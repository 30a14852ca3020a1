//! What the `kubectl sluice` tests against the test control plane share:
//! the control plane with Sluice's CRDs established, the plugin binary run
//! with a kubeconfig, and `evidence export` of an audit file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use sluice_e2e::{Options, TestCluster};

/// A test control plane with Sluice's CRDs (crds/*.yaml) established, and
/// a client of it.
pub async fn cluster_with_crds() -> (TestCluster, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default()).await.unwrap();
    let client = cluster.client().await.unwrap();
    install_crds(&client, &CRDS).await;
    (cluster, client)
}

/// Every CRD of Sluice, by its plural.
pub const CRDS: [&str; 3] = ["accessrequests", "accesspolicies", "connections"];

/// Creates the CRDs `kinds` (plurals: crds/KIND.yaml) through `client`, and
/// waits (30 s at most) until each is established.
pub async fn install_crds(client: &kube::Client, kinds: &[&str]) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in kinds {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../crds/{kind}.yaml")),
        )
        .unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(
                crds.clone(),
                &format!("{kind}.sluice.dev"),
                kube::runtime::wait::conditions::is_crd_established(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

/// Runs `kubectl-sluice` with `args` (and `--kubeconfig`, when given; never
/// the environment's `KUBECONFIG`).
pub fn kubectl_sluice(kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"));
    cmd.args(args).env_remove("KUBECONFIG");
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.output().expect("run kubectl-sluice")
}

/// `kubectl sluice evidence export` in `shop` of the period `since` (the
/// command's default when `None`), from the audit file `audit` to `out`
/// (a folder, or a `.tar.gz`).
pub fn export(kubeconfig: &Path, since: Option<&str>, audit: &Path, out: &Path) -> Output {
    let mut args = vec!["evidence", "export", "-n", "shop"];
    if let Some(since) = since {
        args.extend(["--since", since]);
    }
    args.extend(["--audit", audit.to_str().unwrap()]);
    args.extend(["-o", out.to_str().unwrap()]);
    kubectl_sluice(Some(kubeconfig), &args)
}
