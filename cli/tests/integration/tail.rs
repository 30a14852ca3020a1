//! `kubectl sluice tail` (issue 23 item 4) and the test control plane's
//! `pods/log` it reads: real kubectl (`kubectl logs -f`, and kubectl running
//! the plugin) against the test control plane; the test writes the sidecar
//! container's log file as the container would, while the commands run.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use sluice_e2e::{Options, TestCluster};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

/// Upper bound on any wait (a hang fails instead of blocking the suite).
const WAIT: Duration = Duration::from_secs(60);

fn kubectl(cluster: &TestCluster, args: &[&str]) -> tokio::process::Command {
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
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(cluster: &TestCluster, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(WAIT, kubectl(cluster, args).output())
        .await
        .expect("kubectl hung")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn(
    cluster: &TestCluster,
    args: &[&str],
) -> (
    Child,
    Lines<BufReader<ChildStdout>>,
    Lines<BufReader<ChildStderr>>,
) {
    let mut child = kubectl(cluster, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap()).lines();
    let err = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, out, err)
}

async fn next<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    what: &str,
) -> Option<String> {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no line within {WAIT:?} waiting for {what}"))
        .unwrap()
}

/// Reads stderr until a line containing `needle`.
async fn wait_err(err: &mut Lines<BufReader<ChildStderr>>, needle: &str) {
    let seen = async {
        let mut seen = Vec::new();
        loop {
            match err.next_line().await.unwrap() {
                Some(l) if l.contains(needle) => return,
                Some(l) => seen.push(l),
                None => panic!("stderr ended before {needle:?}: {seen:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, seen)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} on stderr within {WAIT:?}"));
}

async fn create_pod(client: &kube::Client, ns: &str, name: &str, injected: bool) -> Pod {
    let mut annotations = json!({});
    if injected {
        annotations["sluice.dev/injected-revision"] = json!("rev-1");
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app"}, {"name": "sluice-sidecar", "image": "sluice"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

fn log_file(cluster: &TestCluster, pod: &Pod, container: &str) -> PathBuf {
    let path = cluster.pod_log_path(
        pod.metadata.namespace.as_deref().unwrap(),
        pod.metadata.name.as_deref().unwrap(),
        pod.metadata.uid.as_deref().unwrap(),
        container,
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    path
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// An audit event as the sidecar writes it (the chain is not checked by `tail`).
fn event(seq: u64, time: &str, connection: &str, action: &str, text: &str) -> String {
    let kind = if action == "allow" {
        "statement"
    } else {
        "denial"
    };
    json!({"v": 1, "seq": seq, "time": time, "type": kind, "stream": "report-boot1",
        "session": "s1", "identity": {"namespace": "shop", "serviceAccount": "report"},
        "connection": connection,
        "command": {"fingerprint": "f", "kind": "select", "text": text},
        "decision": {"action": action, "policy": "orders-policy", "rule": "no-drops"},
        "prev": "0".repeat(64), "hash": format!("{seq:064}")})
    .to_string()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn cluster_with_shop(opts: Options) -> (TestCluster, kube::Client) {
    let cluster = TestCluster::start(opts).await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    (cluster, client)
}

async fn apply(cluster: &TestCluster, doc: Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("obj.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let (code, _, err) = run(cluster, &["apply", "-f", file.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follows_the_pod_log_endpoint_like_kube() {
    let (cluster, client) = cluster_with_shop(
        Options::default()
            .rbac(true)
            .user("viewer", &[])
            .user("reader", &[]),
    )
    .await;
    // viewer may get pods but not their logs; reader may get both.
    for (user, resources) in [
        ("viewer", json!(["pods"])),
        ("reader", json!(["pods", "pods/log"])),
    ] {
        apply(
            &cluster,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": user, "namespace": "shop"},
            "rules": [{"apiGroups": [""], "resources": resources, "verbs": ["get"]}]}),
        )
        .await;
        apply(
            &cluster,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": user, "namespace": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]}),
        )
        .await;
    }
    let pod = create_pod(&client, "shop", "report", true).await;
    let path = log_file(&cluster, &pod, "sluice-sidecar");
    append(&path, &["one".into(), "two".into()]);

    let (code, out, err) = run(
        &cluster,
        &["logs", "report", "-n", "shop", "-c", "sluice-sidecar"],
    )
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "one\ntwo\n"), "{err}");
    let (code, out, _) = run(
        &cluster,
        &[
            "logs",
            "report",
            "-n",
            "shop",
            "-c",
            "sluice-sidecar",
            "--tail=1",
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "two\n"));
    let (code, _, err) = run(&cluster, &["logs", "report", "-n", "shop", "-c", "nope"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("container nope is not valid for pod report"),
        "{err}"
    );
    // kubectl checks the container itself; the API server must too.
    for (query, message) in [
        (
            "container=nope",
            "container nope is not valid for pod report",
        ),
        (
            "",
            "a container name must be specified for pod report, choose one of: [app sluice-sidecar]",
        ),
    ] {
        let url = format!("/api/v1/namespaces/shop/pods/report/log?{query}");
        let (code, _, err) = run(&cluster, &["get", "--raw", &url]).await;
        assert_eq!(code, Some(1));
        assert!(err.contains(&format!("(BadRequest): {message}")), "{err}");
    }
    let (code, _, err) = run(&cluster, &["logs", "gone", "-n", "shop", "-c", "app"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("pods \"gone\" not found"), "{err}");
    let (code, _, err) = run(
        &cluster,
        &[
            "--context",
            "viewer",
            "logs",
            "report",
            "-n",
            "shop",
            "-c",
            "sluice-sidecar",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot get resource \"pods/log\""), "{err}");
    let (code, out, err) = run(
        &cluster,
        &[
            "--context",
            "reader",
            "logs",
            "report",
            "-n",
            "shop",
            "-c",
            "sluice-sidecar",
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "one\ntwo\n"), "{err}");

    // -f: the old lines, then lines appended while it runs; it ends when the
    // container's log is gone (as the kubelet ends it when the container stops).
    let (mut child, mut out, _err) = spawn(
        &cluster,
        &["logs", "-f", "report", "-n", "shop", "-c", "sluice-sidecar"],
    );
    assert_eq!(next(&mut out, "one").await.as_deref(), Some("one"));
    assert_eq!(next(&mut out, "two").await.as_deref(), Some("two"));
    append(&path, &["three".into()]);
    assert_eq!(next(&mut out, "three").await.as_deref(), Some("three"));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(next(&mut out, "the end").await, None);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_shows_live_decisions_of_every_injected_pod_with_filters() {
    let (cluster, client) = cluster_with_shop(Options::default()).await;
    let report = create_pod(&client, "shop", "report", true).await;
    let plain = create_pod(&client, "shop", "plain", false).await;
    let report_log = log_file(&cluster, &report, "sluice-sidecar");
    // History from before `tail` started is not shown.
    append(&report_log, &[
        event(1, "2026-01-01T00:00:00Z", "orders-db", "deny", "DROP TABLE history"),
        r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","fields":{"message":"bundle received"}}"#.into(),
    ]);
    let (child, mut out, mut err) = spawn(
        &cluster,
        &[
            "sluice",
            "tail",
            "-n",
            "shop",
            "--decision",
            "deny,requireApproval",
            "--connection",
            "orders-db",
        ],
    );
    wait_err(&mut err, "following pod shop/report").await;
    // Not injected: never followed, whatever its log holds.
    append(
        &log_file(&cluster, &plain, "sluice-sidecar"),
        &[event(1, &now(), "orders-db", "deny", "DROP TABLE plain")],
    );
    append(
        &report_log,
        &[
            "a plain text log line".into(),
            event(2, &now(), "orders-db", "allow", "SELECT 1"),
            event(3, &now(), "billing-api", "deny", "POST /v1/refunds"),
            event(4, &now(), "orders-db", "deny", "DROP TABLE orders"),
        ],
    );
    let line = next(&mut out, "the deny on orders-db").await.unwrap();
    let cols: Vec<&str> = line.split("  ").collect();
    assert_eq!(
        cols[1..],
        [
            "shop/report",
            "orders-db",
            "shop/report",
            "deny",
            "orders-policy/no-drops",
            "DROP TABLE orders"
        ],
        "{line}"
    );

    // A pod that appears later is followed too.
    let late = create_pod(&client, "shop", "late", true).await;
    append(
        &log_file(&cluster, &late, "sluice-sidecar"),
        &[event(
            1,
            &now(),
            "orders-db",
            "requireApproval",
            "DELETE FROM orders",
        )],
    );
    let line = next(&mut out, "the late pod's event").await.unwrap();
    assert!(line.contains("  shop/late  orders-db  shop/report  requireApproval  orders-policy/no-drops  DELETE FROM orders"), "{line}");

    // The report container restarts (its log replaced): the stream ends, is
    // re-opened, and what was shown before is not shown again.
    let fresh = report_log.with_extension("new");
    append(
        &fresh,
        &[
            event(4, &now(), "orders-db", "deny", "DROP TABLE orders"),
            event(5, &now(), "orders-db", "deny", "TRUNCATE orders"),
        ],
    );
    std::fs::rename(&fresh, &report_log).unwrap();
    wait_err(
        &mut err,
        "the log stream of pod shop/report ended; re-opening it",
    )
    .await;
    let line = next(&mut out, "the event after the re-open").await.unwrap();
    assert!(
        line.ends_with(
            "  shop/report  orders-db  shop/report  deny  orders-policy/no-drops  TRUNCATE orders"
        ),
        "{line}"
    );

    // A deleted pod is said to be gone.
    Api::<Pod>::namespaced(client.clone(), "shop")
        .delete("late", &Default::default())
        .await
        .unwrap();
    wait_err(&mut err, "pod shop/late is gone; no longer following it").await;
    // The pod without a sidecar was never followed: nothing of its log was shown.
    drop(child);
    while let Some(line) = next(&mut out, "the end of the output").await {
        assert!(!line.contains("shop/plain"), "{line}");
    }
}
