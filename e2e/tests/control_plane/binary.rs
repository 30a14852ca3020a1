//! The `sluice-testcluster` binary: kubeconfig, ready file, users, until killed.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn binary_writes_kubeconfig_and_ready_then_serves_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-testcluster"))
        .args([
            "--dir",
            dir.path().to_str().expect("utf-8"),
            "--user",
            "bob:devs,qa",
            "--user",
            "carol",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sluice-testcluster");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("starts in time")
        .expect("read")
        .expect("a line");
    let kubeconfig = dir.path().join("kubeconfig");
    assert_eq!(first, format!("export KUBECONFIG={}", kubeconfig.display()));
    let ready = std::fs::read_to_string(dir.path().join("ready")).expect("ready file");
    assert!(ready.starts_with("https://127.0.0.1:"), "{ready}");
    let config = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    assert!(config.contains("current-context: admin"), "{config}");
    let run = |args: Vec<&'static str>| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(30),
                tokio::process::Command::new("kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .env("KUBECACHEDIR", kubeconfig.with_file_name("kube-cache"))
                    .args(args)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("kubectl in time")
            .expect("kubectl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let contexts = run(vec!["config", "get-contexts", "-o", "name"]).await;
    assert_eq!(
        contexts.lines().collect::<Vec<_>>(),
        vec!["admin", "bob", "carol"]
    );
    let who = run(vec![
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.groups}",
    ])
    .await;
    assert!(who.contains("system:masters"), "{who}");
    let bob = run(vec![
        "--context",
        "bob",
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.groups}",
    ])
    .await;
    assert_eq!(bob, r#"["devs","qa","system:authenticated"]"#);
    let ns = run(vec!["get", "namespaces", "-o", "name"]).await;
    assert!(
        ns.contains("namespace/default") && ns.contains("namespace/kube-system"),
        "{ns}"
    );
    child.kill().await.expect("kill");
}
