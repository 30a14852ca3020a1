//! The test control plane driven by the real kubectl binary.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use crate::support;

use std::time::Duration;
use support::{apply_sluice_crds, cluster, kubectl, kubectl_in, kubectl_stdin, repo_root};
use tokio::io::{AsyncBufReadExt, BufReader};

const CONNECTION: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: orders-db, namespace: shop}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: 5432, database: orders, tls: {}}
  credentials: {secretRef: {name: creds}}
  listen: {port: 15432}
"#;

async fn shop_with_connection(c: &sluice_e2e::TestCluster) {
    apply_sluice_crds(c).await;
    kubectl(c, &["create", "namespace", "shop"]).await;
    let out = kubectl_stdin(c, &["apply", "-f", "-"], CONNECTION).await;
    assert!(
        out.contains("connection.sluice.dev/orders-db created"),
        "{out}"
    );
}

#[tokio::test]
async fn apply_get_describe_and_printer_columns() {
    let c = cluster().await;
    shop_with_connection(&c).await;
    // The CRD is Established, as kube reports it.
    kubectl(
        &c,
        &[
            "wait",
            "--for=condition=Established",
            "crd/connections.sluice.dev",
            "--timeout=10s",
        ],
    )
    .await;
    let yaml = kubectl(
        &c,
        &["get", "connection", "orders-db", "-n", "shop", "-o", "yaml"],
    )
    .await;
    assert!(yaml.contains("generation: 1"), "{yaml}");
    assert!(yaml.contains("uid: "), "{yaml}");
    // Defaults from the schema are filled in (upstream.tls.mode defaults to verify-full).
    let mode = kubectl(
        &c,
        &[
            "get",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.upstream.tls.mode}",
        ],
    )
    .await;
    assert_eq!(
        mode, "verify-full",
        "schema default of upstream.tls.mode applied"
    );
    let table = kubectl(&c, &["get", "connections", "-n", "shop"]).await;
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "PROTOCOL", "HOST", "LISTEN", "READY", "AGE"] {
        assert!(header.contains(col), "printer column {col} in {table}");
    }
    assert!(
        table.contains("postgres") && table.contains("15432"),
        "{table}"
    );
    let described = kubectl(&c, &["describe", "connection", "orders-db", "-n", "shop"]).await;
    assert!(described.contains("Protocol:  postgres"), "{described}");
    // Re-applying the same manifest is a no-op.
    let out = kubectl_stdin(&c, &["apply", "-f", "-"], CONNECTION).await;
    assert!(out.contains("unchanged"), "{out}");
    let explain = kubectl(&c, &["explain", "connection.spec.upstream"]).await;
    assert!(explain.contains("host"), "{explain}");
    let quickstart = repo_root().join("examples/quickstart");
    if quickstart.is_dir() {
        kubectl(
            &c,
            &["apply", "-f", quickstart.to_str().unwrap_or_default()],
        )
        .await;
    }
}

#[tokio::test]
async fn status_subresource_patch_and_wait_for_condition() {
    let c = cluster().await;
    shop_with_connection(&c).await;
    // The main endpoint ignores status.
    kubectl(
        &c,
        &[
            "patch",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"status":{"observedGeneration":7}}"#,
        ],
    )
    .await;
    let og = kubectl(
        &c,
        &[
            "get",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status}",
        ],
    )
    .await;
    assert_eq!(og, "", "status must not change through the main endpoint");
    let waiter = tokio::spawn({
        let kubeconfig = c.kubeconfig_path();
        let cache = c.dir().join("kube-cache");
        async move {
            tokio::process::Command::new("kubectl")
                .env("KUBECONFIG", kubeconfig)
                .env("KUBECACHEDIR", cache)
                .args([
                    "wait",
                    "--for=condition=Ready",
                    "connection/orders-db",
                    "-n",
                    "shop",
                    "--timeout=20s",
                ])
                .kill_on_drop(true)
                .output()
                .await
        }
    });
    let status = r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"Serving","message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    // The status endpoint ignores everything but status.
    let patch = format!(r#"{{"spec":{{"protocol":"mysql"}},{}"#, &status[1..]);
    kubectl(
        &c,
        &[
            "patch",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(25), waiter)
        .await
        .expect("wait ends")
        .expect("join")
        .expect("kubectl wait runs");
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    let got = kubectl(
        &c,
        &[
            "get",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.protocol} {.metadata.generation} {.status.conditions[0].reason}",
        ],
    )
    .await;
    assert_eq!(got, "postgres 1 Serving");
    // A spec change moves generation; a label change does not.
    kubectl(
        &c,
        &["label", "connection", "orders-db", "-n", "shop", "team=a"],
    )
    .await;
    kubectl(
        &c,
        &[
            "patch",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"spec":{"listen":{"port":15433}}}"#,
        ],
    )
    .await;
    let generation = kubectl(
        &c,
        &[
            "get",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    )
    .await;
    assert_eq!(generation, "2");
}

#[tokio::test]
async fn replace_with_stale_object_conflicts() {
    let c = cluster().await;
    shop_with_connection(&c).await;
    let stale = kubectl(
        &c,
        &["get", "connection", "orders-db", "-n", "shop", "-o", "json"],
    )
    .await;
    kubectl(
        &c,
        &[
            "annotate",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "touched=yes",
        ],
    )
    .await;
    let out = kubectl_in(&c, &["replace", "-f", "-"], Some(&stale)).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Conflict") && out.stderr.contains("the object has been modified"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let c = cluster().await;
    shop_with_connection(&c).await;
    kubectl(
        &c,
        &[
            "patch",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["sluice.dev/cleanup"]}}"#,
        ],
    )
    .await;
    kubectl(
        &c,
        &[
            "delete",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--wait=false",
        ],
    )
    .await;
    let ts = kubectl(
        &c,
        &[
            "get",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    )
    .await;
    assert!(
        !ts.is_empty(),
        "deletionTimestamp set while the finalizer holds the object"
    );
    let adding = kubectl_in(
        &c,
        &[
            "patch",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/finalizers/-","value":"x/y"}]"#,
        ],
        None,
    )
    .await;
    assert!(
        !adding.ok && adding.stderr.contains("no new finalizers"),
        "{}",
        adding.stderr
    );
    kubectl(
        &c,
        &[
            "patch",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    )
    .await;
    let gone = kubectl_in(&c, &["get", "connection", "orders-db", "-n", "shop"], None).await;
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
}

#[tokio::test]
async fn schema_and_cel_validation() {
    let c = cluster().await;
    shop_with_connection(&c).await;
    let unknown = CONNECTION
        .replace("listen: {port: 15432}", "listen: {port: 15432}\n  bogus: 1")
        .replace("orders-db", "other");
    let out = kubectl_in(&c, &["apply", "-f", "-"], Some(&unknown)).await;
    assert!(
        !out.ok && out.stderr.contains(r#"unknown field "spec.bogus""#),
        "{}",
        out.stderr
    );
    // Without strict validation the field is pruned.
    kubectl_stdin(&c, &["apply", "--validate=false", "-f", "-"], &unknown).await;
    let spec = kubectl(
        &c,
        &[
            "get",
            "connection",
            "other",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec}",
        ],
    )
    .await;
    assert!(!spec.contains("bogus"), "{spec}");
    // A root CEL rule: http connections need baseURL.
    let http = CONNECTION
        .replace("protocol: postgres", "protocol: http")
        .replace("orders-db", "api");
    let out = kubectl_in(&c, &["apply", "-f", "-"], Some(&http)).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("spec.upstream.baseURL is required for http connections"),
        "{}",
        out.stderr
    );
    // OpenAPI validation.
    let low = CONNECTION
        .replace("15432", "80")
        .replace("orders-db", "low");
    let out = kubectl_in(&c, &["apply", "-f", "-"], Some(&low)).await;
    assert!(
        !out.ok && out.stderr.contains("spec.listen.port"),
        "{}",
        out.stderr
    );
}

const ACCESS_REQUEST: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"AccessRequest",
 "metadata":{"name":"r1","namespace":"shop"},
 "spec":{"approvers":{"groups":["dba"]},
  "command":{"fingerprint":"DELETE FROM t","sha256":"0000000000000000000000000000000000000000000000000000000000000000","text":"DELETE FROM t"},
  "connection":"orders-db","expiresAt":"2030-01-01T00:00:00Z","policy":"reporting",
  "requester":{"namespace":"shop","serviceAccount":"job"},"rule":"bulk"}}"#;

#[tokio::test]
async fn cel_rules_with_old_self_guard_access_requests() {
    let c = cluster().await;
    apply_sluice_crds(&c).await;
    kubectl(&c, &["create", "namespace", "shop"]).await;
    // Required fields are reported like kube does.
    let empty = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"AccessRequest","metadata":{"name":"r0","namespace":"shop"},"spec":{}}"#;
    let out = kubectl_in(&c, &["create", "-f", "-"], Some(empty)).await;
    assert!(
        !out.ok && out.stderr.contains("spec.approvers: Required value"),
        "{}",
        out.stderr
    );
    // A CEL rule on a nested object (after defaults fill users: []).
    let no_approvers = ACCESS_REQUEST.replace(r#"{"groups":["dba"]}"#, "{}");
    let out = kubectl_in(&c, &["create", "-f", "-"], Some(&no_approvers)).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("approvers needs at least one user or group"),
        "{}",
        out.stderr
    );
    let created = kubectl_stdin(
        &c,
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.spec.mode} {.spec.minApprovals}",
        ],
        ACCESS_REQUEST,
    )
    .await;
    assert_eq!(created, "hold 1", "defaults applied");
    // Transition rule `self == oldSelf`: the spec cannot change.
    let out = kubectl_in(
        &c,
        &[
            "patch",
            "accessrequest",
            "r1",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"spec":{"rule":"other"}}"#,
        ],
        None,
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("an AccessRequest's spec cannot be changed"),
        "{}",
        out.stderr
    );
    // Decisions may be appended through status but never removed.
    let decide = r#"{"status":{"decisions":[{"user":"ann","verdict":"approve","time":"2030-01-01T00:00:00Z"}]}}"#;
    kubectl(
        &c,
        &[
            "patch",
            "accessrequest",
            "r1",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            decide,
        ],
    )
    .await;
    let out = kubectl_in(
        &c,
        &[
            "patch",
            "accessrequest",
            "r1",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"decisions":[]}}"#,
        ],
        None,
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("recorded decisions cannot be edited or removed"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn get_watch_streams_changes() {
    let c = cluster().await;
    kubectl(&c, &["create", "configmap", "w1", "--from-literal=a=1"]).await;
    let mut child = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig_path())
        .env("KUBECACHEDIR", c.dir().join("kube-cache"))
        .args([
            "get",
            "configmaps",
            "-w",
            "--request-timeout=20s",
            "-o",
            "name",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("w1")) {
        seen.push(next_line(&mut lines).await.expect("a line"));
    }
    kubectl(&c, &["create", "configmap", "w2", "--from-literal=a=2"]).await;
    loop {
        let line = next_line(&mut lines).await.expect("a line");
        if line.contains("w2") {
            break;
        }
    }
    child.kill().await.expect("stop the watch");
}

#[tokio::test]
async fn create_token_and_token_review() {
    let c = cluster().await;
    kubectl(&c, &["create", "namespace", "apps"]).await;
    kubectl(&c, &["create", "serviceaccount", "worker", "-n", "apps"]).await;
    let token = kubectl(
        &c,
        &[
            "create",
            "token",
            "worker",
            "-n",
            "apps",
            "--audience=sluice",
            "--duration=15m",
        ],
    )
    .await;
    let review = |token: &str, aud: &str| {
        format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{}","audiences":["{aud}"]}}}}"#,
            token.trim()
        )
    };
    let out = kubectl_stdin(
        &c,
        &["create", "-f", "-", "-o", "json"],
        &review(&token, "sluice"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["status"]["authenticated"], true, "{out}");
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:apps:worker"
    );
    assert_eq!(v["status"]["audiences"], serde_json::json!(["sluice"]));
    let groups = v["status"]["user"]["groups"].to_string();
    assert!(groups.contains("system:serviceaccounts:apps"), "{groups}");
    // Wrong audience.
    let out = kubectl_stdin(
        &c,
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.authenticated}",
        ],
        &review(&token, "other"),
    )
    .await;
    assert_eq!(out, "false");
    // A token for the API audience authenticates kubectl itself.
    let api_token = kubectl(&c, &["create", "token", "worker", "-n", "apps"]).await;
    let who = kubectl(
        &c,
        &[
            "--token",
            api_token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .await;
    assert_eq!(who, "system:serviceaccount:apps:worker");
    // Deleting the service account invalidates its tokens.
    kubectl(&c, &["delete", "serviceaccount", "worker", "-n", "apps"]).await;
    let out = kubectl_stdin(
        &c,
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.authenticated}",
        ],
        &review(&token, "sluice"),
    )
    .await;
    assert_eq!(out, "false");
    // Users from --user get their own context and groups.
    let who = kubectl(&c, &["--context", "alice", "auth", "whoami", "-o", "json"]).await;
    assert!(
        who.contains("\"alice\"") && who.contains("\"dev\"") && who.contains("\"ops\""),
        "{who}"
    );
}

#[tokio::test]
async fn bound_pod_token_dies_with_the_pod() {
    let c = cluster().await;
    kubectl(&c, &["run", "web", "--image=nginx:1.27"]).await;
    let token = kubectl(
        &c,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
        ],
    )
    .await;
    let who = kubectl(
        &c,
        &["--token", token.trim(), "auth", "whoami", "-o", "json"],
    )
    .await;
    assert!(
        who.contains("authentication.kubernetes.io/pod-name"),
        "{who}"
    );
    kubectl(&c, &["delete", "pod", "web", "--wait=false"]).await;
    let out = kubectl_in(&c, &["--token", token.trim(), "auth", "whoami"], None).await;
    assert!(!out.ok, "token of a deleted pod must not authenticate");
    // TokenReview says it in kube-apiserver's words (pkg/serviceaccount/claims.go podValidate).
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{}"}}}}"#,
        token.trim()
    );
    let answer = kubectl_stdin(&c, &["create", "-f", "-", "-o", "json"], &review).await;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
    assert_eq!(
        answer["status"]["error"],
        "[invalid bearer token, service account token has been invalidated]",
        "{answer}"
    );
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("watch line in time")
        .expect("read")
}

#[tokio::test]
async fn server_side_apply_events_can_i_and_namespace_deletion() {
    let c = cluster().await;
    shop_with_connection(&c).await;
    let ssa = CONNECTION.replace("orders-db", "ssa-db");
    let out = kubectl_stdin(
        &c,
        &[
            "apply",
            "--server-side",
            "--field-manager=team-a",
            "-f",
            "-",
        ],
        &ssa,
    )
    .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let managers = kubectl(
        &c,
        &[
            "get",
            "connection",
            "ssa-db",
            "-n",
            "shop",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    )
    .await;
    assert_eq!(managers, "team-a");
    // Another manager changing the same field conflicts unless forced.
    let other = ssa.replace("port: 15432", "port: 15999");
    let out = kubectl_in(
        &c,
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "-f",
            "-",
        ],
        Some(&other),
    )
    .await;
    assert!(!out.ok && out.stderr.contains("conflict"), "{}", out.stderr);
    kubectl_stdin(
        &c,
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &other,
    )
    .await;
    let port = kubectl(
        &c,
        &[
            "get",
            "connection",
            "ssa-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.listen.port}",
        ],
    )
    .await;
    assert_eq!(port, "15999");
    // An event about the Connection shows up in describe and get events.
    let uid = kubectl(
        &c,
        &[
            "get",
            "connection",
            "orders-db",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    )
    .await;
    let event = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"orders-db.1","namespace":"shop"}},
        "involvedObject":{{"apiVersion":"sluice.dev/v1alpha1","kind":"Connection","name":"orders-db","namespace":"shop","uid":"{uid}"}},
        "reason":"Compiled","message":"policy compiled","type":"Normal","source":{{"component":"sluice-operator"}},
        "firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z","count":1}}"#
    );
    kubectl_stdin(&c, &["create", "-f", "-"], &event).await;
    let described = kubectl(&c, &["describe", "connection", "orders-db", "-n", "shop"]).await;
    assert!(
        described.contains("Compiled") && described.contains("policy compiled"),
        "{described}"
    );
    let events = kubectl(
        &c,
        &[
            "get",
            "events",
            "-n",
            "shop",
            "--field-selector",
            "reason=Compiled",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(events.trim(), "event/orders-db.1");
    // No RBAC: everything is allowed, and the review says so.
    assert_eq!(
        kubectl(
            &c,
            &["--context", "alice", "auth", "can-i", "delete", "secrets"]
        )
        .await
        .trim(),
        "yes"
    );
    // Deleting a namespace deletes what is in it.
    kubectl(&c, &["delete", "namespace", "shop", "--timeout=10s"]).await;
    let left = kubectl(&c, &["get", "connections", "-A", "-o", "name"]).await;
    assert_eq!(left, "");
}

#[tokio::test]
async fn blocking_callers_do_not_stall_the_cluster() {
    // The cluster serves from its own thread, so even a blocking std::process
    // call inside a current-thread test runtime gets its answer.
    let c = cluster().await;
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig_path())
        .env("KUBECACHEDIR", c.dir().join("kube-cache"))
        .args([
            "get",
            "namespace",
            "default",
            "-o",
            "name",
            "--request-timeout=20s",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default"
    );
}

/// Lease validation as kube-apiserver's (pkg/apis/coordination/validation):
/// durations must be positive, transitions non-negative, times MicroTime.
#[tokio::test]
async fn lease_fields_are_validated() {
    let c = cluster().await;
    let lease = |duration: i64, transitions: i64, renew: &str| {
        format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"l","namespace":"default"}},
               "spec":{{"holderIdentity":"a","leaseDurationSeconds":{duration},"leaseTransitions":{transitions},"renewTime":"{renew}"}}}}"#
        )
    };
    let out = kubectl_in(
        &c,
        &["create", "-f", "-"],
        Some(&lease(0, -1, "2026-01-01T00:00:00.000000Z")),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
        ),
        "{}",
        out.stderr
    );
    let out = kubectl_in(&c, &["create", "-f", "-"], Some(&lease(15, 0, "yesterday"))).await;
    assert!(
        !out.ok && out.stderr.contains("cannot be handled as a Lease"),
        "{}",
        out.stderr
    );
    kubectl_stdin(
        &c,
        &["create", "-f", "-"],
        &lease(15, 0, "2026-01-01T00:00:00.000000Z"),
    )
    .await;
}
