//! `kubectl sluice approve|deny|requests`: the real binary against the test
//! control plane, with the operator (and its decision webhooks) in-process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use sluice_crds::{AccessRequest, RequestPhase};
use sluice_e2e::{Options, TestCluster};
use sluice_operator::run::{Running, Settings, WebhookTarget};

const WAIT: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

struct Env {
    _operator: Running,
    client: Client,
    cluster: TestCluster,
}

async fn start() -> Env {
    start_with(false).await
}

/// As [`start`], with RBAC enforced when `rbac` (the admin is system:masters;
/// the operator runs as the admin).
async fn start_with(rbac: bool) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(
        Options::default()
            .user("alice", &["dba"])
            .user("bob", &["dev"])
            .rbac(rbac),
    )
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    // Every CRD and the quickstart's policy: decisions are checked against
    // the rule as it stands, so the policy a request names must exist.
    common::install_crds(&client, &common::CRDS).await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/reporting-policy.yaml"),
    )
    .unwrap();
    let policy: sluice_crds::AccessPolicy = serde_saphyr::from_str(&text).unwrap();
    Api::<sluice_crds::AccessPolicy>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), WebhookTarget::Listener);
    settings.maintenance_every = Duration::from_secs(2);
    let operator = sluice_operator::run::start(client.clone(), settings)
        .await
        .unwrap();
    bounded("the operator's caches", operator.ready()).await;
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    bounded(
        "approval webhooks",
        await_condition(
            hooks,
            "sluice-operator-approvals",
            |w: Option<&ValidatingWebhookConfiguration>| w.is_some(),
        ),
    )
    .await
    .unwrap();
    Env {
        _operator: operator,
        client,
        cluster,
    }
}

/// Creates a request as the operator would (the admin client is the operator's user here).
async fn request(env: &Env, name: &str, text: &str) {
    let ar: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "connection": "orders-db", "policy": "reporting", "rule": "bulk-writes-need-a-human",
            "requester": {"serviceAccount": "report-job", "namespace": "shop", "pod": "report"},
            "command": {"text": text, "fingerprint": "f", "sha256": "a".repeat(64)},
            "approvers": {"groups": ["dba"]},
            "expiresAt": "2099-01-01T00:00:00Z"
        }
    }))
    .unwrap();
    let api: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    api.create(&PostParams::default(), &ar).await.unwrap();
    phase_becomes(env, name, RequestPhase::Pending).await;
}

async fn phase_becomes(env: &Env, name: &str, phase: RequestPhase) {
    let api: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    bounded(
        "the phase",
        await_condition(api, name, move |ar: Option<&AccessRequest>| {
            ar.and_then(|a| a.status.as_ref()).and_then(|s| s.phase) == Some(phase)
        }),
    )
    .await
    .unwrap();
}

fn sluice(env: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(args)
        .env("KUBECONFIG", env.cluster.kubeconfig_path())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_decide_with_the_plugin_and_others_are_refused() {
    let env = start().await;
    request(&env, "orders-db-one", "DELETE FROM orders").await;
    request(&env, "orders-db-two", "UPDATE orders SET paid = ?").await;

    let out = sluice(&env, &["requests", "-n", "shop", "--context", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("AGE") && lines[0].contains("REQUESTER"),
        "{table}"
    );
    assert!(
        table.contains("orders-db-one") && table.contains("shop/report-job"),
        "{table}"
    );
    assert!(table.contains("reporting/bulk-writes-need-a-human") && table.contains("Pending"));

    // bob is refused with the webhook's one-line message, exit 1.
    let out = sluice(
        &env,
        &["approve", "orders-db-one", "-n", "shop", "--context", "bob"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("bob is not an approver of AccessRequest shop/orders-db-one"),
        "{stderr}"
    );

    // alice approves one and denies the other.
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-one",
            "-n",
            "shop",
            "--context",
            "alice",
            "--reason",
            "checked",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "accessrequest/orders-db-one approved by alice"
    );
    phase_becomes(&env, "orders-db-one", RequestPhase::Approved).await;
    let api: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    let stored = api.get("orders-db-one").await.unwrap();
    let decision = &stored.status.unwrap().decisions[0];
    assert_eq!(decision.comment.as_deref(), Some("checked"));
    assert_eq!(decision.user, "alice");

    let out = sluice(
        &env,
        &["deny", "orders-db-two", "-n", "shop", "--context", "alice"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    phase_becomes(&env, "orders-db-two", RequestPhase::Denied).await;

    // Decided: a second decision is refused.
    let out = sluice(
        &env,
        &["deny", "orders-db-one", "-n", "shop", "--context", "alice"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is Approved, not Pending"),
        "{}",
        text(&out.stderr)
    );

    // Unknown names and -A.
    let out = sluice(
        &env,
        &["approve", "nope", "-n", "shop", "--context", "alice"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("AccessRequest shop/nope not found"));
    let out = sluice(&env, &["requests", "-A", "--context", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains("Approved") && all.contains("Denied"), "{all}");
}

/// Issue 18 item 10: kubectl's `--token` acts as the token's user whatever
/// the context says; `--as-group` needs `--as`. (`--as` itself: see
/// `as_flags_decide_as_the_impersonated_user`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flag_acts_as_the_tokens_user() {
    let env = start().await;
    request(&env, "orders-db-token", "DELETE FROM orders").await;
    let kubeconfig: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(env.cluster.kubeconfig_path()).unwrap())
            .unwrap();
    let user_of = |context: &str| {
        kubeconfig["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == context)
            .map(|c| c["context"]["user"].clone())
            .unwrap()
    };
    let token_of = |context: &str| {
        let user = user_of(context);
        kubeconfig["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == user)
            .and_then(|u| u["user"]["token"].as_str())
            .expect("test users authenticate with tokens")
            .to_string()
    };
    // bob's token from alice's context: refused as bob.
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-token",
            "-n",
            "shop",
            "--context",
            "alice",
            "--token",
            &token_of("bob"),
        ],
    );
    assert!(
        !out.status.success(),
        "approved as alice, not as the token's bob"
    );
    assert!(
        text(&out.stderr).contains("bob is not an approver"),
        "{}",
        text(&out.stderr)
    );
    // alice's token from bob's context: recorded as alice.
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-token",
            "-n",
            "shop",
            "--context",
            "bob",
            "--token",
            &token_of("alice"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let api: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    let decisions = api
        .get("orders-db-token")
        .await
        .unwrap()
        .status
        .unwrap()
        .decisions;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].user, "alice");

    let out = sluice(&env, &["requests", "-n", "shop", "--as-group", "dba"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--as-group needs --as"),
        "{}",
        text(&out.stderr)
    );
}

/// Applies `objects` (RBAC kinds) as the admin.
async fn apply_rbac(env: &Env, objects: serde_json::Value) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    for object in objects.as_array().unwrap() {
        match object["kind"].as_str().unwrap() {
            "ClusterRole" => {
                let role: ClusterRole = serde_json::from_value(object.clone()).unwrap();
                Api::<ClusterRole>::all(env.client.clone())
                    .create(&PostParams::default(), &role)
                    .await
                    .unwrap();
            }
            _ => {
                let binding: ClusterRoleBinding = serde_json::from_value(object.clone()).unwrap();
                Api::<ClusterRoleBinding>::all(env.client.clone())
                    .create(&PostParams::default(), &binding)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Issue 18 item 10: `--as` / `--as-group` make the API server (here the
/// test control plane, enforcing RBAC and impersonation as kube-apiserver
/// does) act as the impersonated user: the decision is recorded for, and
/// judged as, that user; an impersonation the caller may not do is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_flags_decide_as_the_impersonated_user() {
    let env = start_with(true).await;
    apply_rbac(
        &env,
        json!([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "sluice-approver"},
             "rules": [
                {"apiGroups": ["sluice.dev"], "resources": ["accessrequests"], "verbs": ["get", "list"]},
                {"apiGroups": ["sluice.dev"], "resources": ["accessrequests/status"], "verbs": ["get", "patch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "sluice-approvers"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sluice-approver"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]},
            // alice may impersonate bob, and nobody else.
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "impersonate-bob"},
             "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "alice-impersonates-bob"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonate-bob"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}
        ]),
    )
    .await;
    request(&env, "orders-db-as", "DELETE FROM orders").await;
    let api: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    let decisions = || async {
        api.get("orders-db-as")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
            .decisions
    };

    // alice (an approver) acting as bob is judged as bob: refused, and
    // nothing is recorded for alice.
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-as",
            "-n",
            "shop",
            "--context",
            "alice",
            "--as",
            "bob",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("bob is not an approver of AccessRequest shop/orders-db-as"),
        "{}",
        text(&out.stderr)
    );
    assert!(decisions().await.is_empty());

    // An impersonation alice may not do is refused by the API server.
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-as",
            "-n",
            "shop",
            "--context",
            "alice",
            "--as",
            "carol",
            "--as-group",
            "dba",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("cannot impersonate"),
        "{}",
        text(&out.stderr)
    );
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-as",
            "-n",
            "shop",
            "--context",
            "bob",
            "--as",
            "alice",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("cannot impersonate"),
        "{}",
        text(&out.stderr)
    );
    assert!(decisions().await.is_empty());

    // The admin may impersonate anyone: carol of group dba approves, and the
    // decision is carol's, with the impersonated groups.
    let out = sluice(
        &env,
        &[
            "approve",
            "orders-db-as",
            "-n",
            "shop",
            "--as",
            "carol",
            "--as-group",
            "dba",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "accessrequest/orders-db-as approved by carol"
    );
    let recorded = decisions().await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].user, "carol");
    assert!(
        recorded[0].groups.contains(&"dba".to_string())
            && !recorded[0].groups.contains(&"system:masters".to_string()),
        "{:?}",
        recorded[0].groups
    );
    phase_becomes(&env, "orders-db-as", RequestPhase::Approved).await;
}

/// Issue 23 item 7: `requests -o json|yaml|wide` and `--watch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_print_as_json_yaml_wide_and_follow_changes() {
    let env = start().await;
    let long = format!("DELETE FROM orders WHERE note = '{}'", "x".repeat(150));
    request(&env, "orders-db-out", &long).await;

    let out = sluice(&env, &["requests", "-n", "shop", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "AccessRequest");
    assert_eq!(list["items"][0]["apiVersion"], "sluice.dev/v1alpha1");
    assert_eq!(list["items"][0]["metadata"]["name"], "orders-db-out");
    assert_eq!(list["items"][0]["spec"]["command"]["text"], long.as_str());

    let out = sluice(&env, &["requests", "-n", "shop", "-o", "yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml: serde_json::Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(yaml, list);

    // The default table cuts the statement; wide keeps it and adds columns.
    let out = sluice(&env, &["requests", "-n", "shop"]);
    assert!(!text(&out.stdout).contains(&long), "{}", text(&out.stdout));
    let out = sluice(&env, &["requests", "-n", "shop", "-o", "wide"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wide = text(&out.stdout);
    let lines: Vec<&str> = wide.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header[header.len() - 3..],
        ["PHASE", "CONNECTION", "EXPIRES"],
        "{wide}"
    );
    assert!(lines[1].contains(&long), "{wide}");
    assert!(
        lines[1].contains("orders-db") && lines[1].contains(" in "),
        "{wide}"
    );

    // --watch: the list, then a row for each change, until stopped.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["requests", "-n", "shop", "--watch"])
        .env("KUBECONFIG", env.cluster.kubeconfig_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line_with = |needle: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} within {WAIT:?}"),
            }
        }
    };
    next_line_with("orders-db-out");
    request(&env, "orders-db-watched", "UPDATE orders SET paid = ?").await;
    let row = next_line_with("orders-db-watched");
    assert!(!row.starts_with("AGE"), "{row}");
    let out = sluice(
        &env,
        &[
            "deny",
            "orders-db-watched",
            "-n",
            "shop",
            "--context",
            "alice",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = next_line_with("Denied");
    assert!(row.contains("orders-db-watched"), "{row}");
    child.kill().unwrap();
    child.wait().unwrap();
}
