//! A test control plane with the CRDs and examples/quickstart applied, and
//! the operator running in-process against it; an HTTPS client for the gateway.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedContext};
use kube::runtime::wait::await_condition;
use kube::{Client, Config, Resource};
use serde_json::{Value, json};
use sluice_crds::{AccessPolicy, AccessRequest, Connection};
use sluice_e2e::{Options, TestCluster};
use sluice_operator::leader::LeaseTimings;
use sluice_operator::run::{Running, Settings, WebhookTarget, start};

/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test with `what` when it takes longer than [`WAIT`].
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// The cluster, a client, and the operator.
pub struct Env {
    // Dropped first: its watches must close before the cluster stops.
    pub operator: Running,
    pub client: Client,
    pub cluster: TestCluster,
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Settings for an operator replica in these tests: fast lease and flushes.
pub fn test_settings(identity: &str) -> Settings {
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), WebhookTarget::Listener);
    settings.audit_flush_every = Duration::from_millis(200);
    settings.maintenance_every = Duration::from_secs(2);
    settings.lease = LeaseTimings {
        duration: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
    };
    settings.identity = identity.into();
    settings
}

impl Env {
    /// Cluster + CRDs + quickstart + operator, caches filled.
    pub async fn start() -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        // RBAC on: the operator runs as the chart's ServiceAccount under the chart's
        // rendered RBAC, so an API call the chart does not allow fails these tests.
        let (cluster, client) = cluster_with_crds(Options::default().rbac(true)).await;
        apply_quickstart(
            &client,
            &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
        )
        .await;
        let operator_client = chart_operator_client(&cluster, &client).await;
        Env::with_operator_as(
            cluster,
            client,
            operator_client,
            test_settings("test-operator"),
        )
        .await
    }

    /// Like [`Env::start`], the operator started with `settings`.
    pub async fn start_with(settings: Settings) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (cluster, client) = cluster_with_crds(Options::default().rbac(true)).await;
        apply_quickstart(
            &client,
            &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
        )
        .await;
        let operator_client = chart_operator_client(&cluster, &client).await;
        Env::with_operator_as(cluster, client, operator_client, settings).await
    }

    /// Starts an operator replica with `settings` against `cluster`, caches filled.
    pub async fn with_operator(cluster: TestCluster, client: Client, settings: Settings) -> Env {
        let operator_client = client.clone();
        Env::with_operator_as(cluster, client, operator_client, settings).await
    }

    /// Like [`Env::with_operator`], the operator authenticated by `operator_client`.
    pub async fn with_operator_as(
        cluster: TestCluster,
        client: Client,
        operator_client: Client,
        settings: Settings,
    ) -> Env {
        let operator = start(operator_client, settings)
            .await
            .expect("operator starts");
        bounded("caches", operator.ready()).await;
        Env {
            cluster,
            client,
            operator,
        }
    }

    /// Waits until the policy `name` in `shop` is Ready for its generation.
    pub async fn policy_ready(&self, name: &str) {
        bounded(
            "the policy to be Ready",
            await_condition(self.policies(), name, is_ready),
        )
        .await
        .expect("watch");
    }

    /// Replaces the rules of the AccessPolicy `name` (a JSON array) and waits
    /// until it is Ready again: a policy edit, as `kubectl apply` makes one.
    pub async fn set_rules(&self, name: &str, rules: Value) {
        self.policies()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"rules": rules}})),
            )
            .await
            .unwrap();
        self.policy_ready(name).await;
    }

    /// Creates the service account `sa`, an injected pod `pod` of it, and
    /// writes the pod's `sluice.dev` token to `dir`/token.
    pub async fn pod_token_file(&self, sa: &str, pod: &str, dir: &Path) -> (Pod, PathBuf) {
        self.service_account(sa).await;
        let pod = self.injected_pod(pod, sa).await;
        let token = self.pod_token(sa, &pod, "sluice.dev").await;
        let token_file = dir.join("token");
        std::fs::write(&token_file, &token).expect("write the token file");
        (pod, token_file)
    }

    /// Waits until the leader registered the injection webhook.
    pub async fn webhook_registered(&self) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        bounded(
            "the webhook configuration",
            await_condition(
                api,
                "sluice-operator",
                |w: Option<&MutatingWebhookConfiguration>| w.is_some(),
            ),
        )
        .await
        .expect("watch");
    }

    /// Creates a service account in `shop`.
    pub async fn service_account(&self, name: &str) {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "shop");
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &sa)
            .await
            .expect("create sa");
    }

    /// Creates an annotated pod of `sa` in `shop` (through the webhook).
    pub async fn injected_pod(&self, name: &str, sa: &str) -> Pod {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "shop");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"sluice.dev/inject": "true"}},
            "spec": {
                "serviceAccountName": sa,
                "containers": [{"name": "app", "image": "example/report:1"}]
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// A projected-style token for `sa`, bound to `pod`, for `audience`.
    pub async fn pod_token(&self, sa: &str, pod: &Pod, audience: &str) -> String {
        sluice_e2e::harness::service_account_token(
            &self.client,
            ("shop", sa),
            Some(pod),
            audience,
            600,
        )
        .await
    }

    /// `POST /v1/token`.
    pub async fn exchange(&self, subject_token: &str) -> (u16, Value) {
        let (status, _, body) = self
            .call(
                "POST",
                "/v1/token",
                &[],
                Some(json!({"subjectToken": subject_token})),
            )
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// One HTTPS request to the operator.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, hyper::HeaderMap, Bytes) {
        call(
            self.operator.addr,
            &self.operator.ca_bundle_pem(),
            method,
            path,
            headers,
            body,
        )
        .await
    }

    /// A gateway token (`Bearer …`) for a new injected pod `pod` of
    /// service account `service_account`.
    pub async fn gateway_bearer(&self, service_account: &str, pod: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (_, token_file) = self.pod_token_file(service_account, pod, dir.path()).await;
        let (status, answer) = self
            .exchange(&std::fs::read_to_string(token_file).unwrap())
            .await;
        assert_eq!(status, 200, "{answer}");
        format!("Bearer {}", answer["token"].as_str().unwrap())
    }

    pub fn policies(&self) -> Api<AccessPolicy> {
        Api::namespaced(self.client.clone(), "shop")
    }

    pub fn connections(&self) -> Api<Connection> {
        Api::namespaced(self.client.clone(), "shop")
    }
}

/// Whether the policy is Ready for its current generation.
pub fn is_ready(p: Option<&AccessPolicy>) -> bool {
    let Some(p) = p else { return false };
    let v = serde_json::to_value(p).unwrap();
    v["status"]["observedGeneration"].as_i64() == p.metadata.generation
        && v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A test control plane with `options` (its users) and the CRDs, nothing else.
pub async fn cluster_with_crds(options: Options) -> (TestCluster, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(options).await.expect("cluster starts");
    let client = cluster.client().await.expect("client");
    apply_crds(&client).await;
    (cluster, client)
}

/// Creates the given files of examples/quickstart.
pub async fn apply_quickstart(client: &Client, files: &[&str]) {
    for file in files {
        let path = repo_root().join("examples/quickstart").join(file);
        apply_file(client, &path).await;
    }
}

/// What `kubectl sluice approve|deny` sends: one decision appended to the
/// status of AccessRequest `shop/name` (with `groups` when not empty).
pub async fn decide(
    client: &Client,
    name: &str,
    verdict: &str,
    comment: &str,
    groups: &[&str],
) -> Result<AccessRequest, String> {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), "shop");
    let current = api.get(name).await.map_err(|e| e.to_string())?;
    let mut entry = json!({"user": "typed-by-the-approver", "verdict": verdict,
        "time": "2020-01-01T00:00:00Z", "comment": comment});
    if !groups.is_empty() {
        entry["groups"] = json!(groups);
    }
    let empty = current
        .status
        .as_ref()
        .is_none_or(|s| s.decisions.is_empty());
    let ops = if empty {
        json!([{"op": "add", "path": "/status/decisions", "value": [entry]}])
    } else {
        json!([{"op": "add", "path": "/status/decisions/-", "value": entry}])
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    })
}

/// A kube client authenticated with `token` (e.g. a workload's own identity).
pub async fn client_with_token(cluster: &TestCluster, token: &str) -> Client {
    let mut kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let cluster_name = kubeconfig.contexts[0]
        .context
        .as_ref()
        .unwrap()
        .cluster
        .clone();
    kubeconfig.auth_infos.push(NamedAuthInfo {
        name: "workload".into(),
        auth_info: Some(AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        }),
        other: Default::default(),
    });
    kubeconfig.contexts.push(NamedContext {
        name: "workload".into(),
        context: Some(Context {
            cluster: cluster_name,
            user: Some("workload".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        }),
        other: Default::default(),
    });
    let config = Config::from_custom_kubeconfig(
        kubeconfig,
        &KubeConfigOptions {
            context: Some("workload".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

/// Kills the child process when the test ends, however it ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bundle long-poll (`?wait=` `wait`) with `bearer` for a bundle newer
/// than `etag`, to the gateway at `addr`, spawned. Joined, its answer.
pub fn bundle_poll(
    addr: SocketAddr,
    ca_pem: &str,
    bearer: &str,
    etag: &str,
    wait: &str,
) -> tokio::task::JoinHandle<(u16, hyper::HeaderMap, Bytes)> {
    let (ca, bearer, etag) = (ca_pem.to_string(), bearer.to_string(), etag.to_string());
    let path = format!("/v1/bundle?wait={wait}");
    tokio::spawn(async move {
        call(
            addr,
            &ca,
            "GET",
            &path,
            &[("authorization", &bearer), ("if-none-match", &etag)],
            None,
        )
        .await
    })
}

/// A [`bundle_poll`] of a minute, returned once the gateway counts it
/// waiting (`sluice_gateway_bundle_waiting` at least 1).
pub async fn waiting_bundle_poll(
    addr: SocketAddr,
    ca_pem: &str,
    bearer: &str,
    etag: &str,
) -> tokio::task::JoinHandle<(u16, hyper::HeaderMap, Bytes)> {
    let poll = bundle_poll(addr, ca_pem, bearer, etag, "60s");
    bounded("the long-poll to wait", async {
        loop {
            let (_, _, body) = call(addr, ca_pem, "GET", "/metrics", &[], None).await;
            let waiting = String::from_utf8_lossy(&body).lines().find_map(|l| {
                l.strip_prefix("sluice_gateway_bundle_waiting ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            });
            if waiting.is_some_and(|n| n >= 1.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    poll
}

/// One HTTPS request, trusting `ca_pem`.
pub async fn call(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, hyper::HeaderMap, Bytes) {
    let config: Arc<rustls::ClientConfig> = sluice_e2e::pki::client_config(ca_pem).expect("tls");
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.expect("tls handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            request = request.header("content-type", "application/json");
            Full::new(Bytes::from(serde_json::to_vec(&v).unwrap()))
        }
        None => Full::new(Bytes::new()),
    };
    let response = sender
        .send_request(request.body(body).unwrap())
        .await
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes)
}

/// Creates the three CRDs and waits until they are established.
pub async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "connections.yaml",
        "accesspolicies.yaml",
        "accessrequests.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join("crds").join(file)).expect("crd yaml");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("crd parses");
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd)
            .await
            .expect("create crd");
        bounded(
            "CRD established",
            await_condition(
                api.clone(),
                &name,
                kube::runtime::wait::conditions::is_crd_established(),
            ),
        )
        .await
        .expect("watch");
    }
}

/// Creates every document of a YAML file (the kinds the quickstart uses).
pub async fn apply_file(client: &Client, path: &Path) {
    let text = std::fs::read_to_string(path).expect("yaml file");
    apply_yaml(client, &text).await;
}

/// Creates every document of `text`.
pub async fn apply_yaml(client: &Client, text: &str) {
    for value in serde_saphyr::from_multiple::<Value>(text).expect("yaml") {
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let pp = PostParams::default();
        match value["kind"].as_str().unwrap_or_default() {
            "Namespace" => {
                create::<Namespace>(Api::all(client.clone()), value, &pp).await;
            }
            "Secret" => create::<Secret>(Api::namespaced(client.clone(), &ns), value, &pp).await,
            "Connection" => {
                create::<Connection>(Api::namespaced(client.clone(), &ns), value, &pp).await
            }
            "AccessPolicy" => {
                create::<AccessPolicy>(Api::namespaced(client.clone(), &ns), value, &pp).await
            }
            other => panic!("apply_yaml: kind {other} not supported by the test helper"),
        }
    }
}

async fn create<K>(api: Api<K>, value: Value, pp: &PostParams)
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(pp, &obj).await.expect("create");
}

/// Applies the chart's RBAC and ServiceAccount (as `admin`, unless there) and returns a
/// client authenticated as `system:serviceaccount:sluice-system:sluice-operator`
/// (a TokenRequest token), which is what the operator runs as in a release.
pub async fn chart_operator_client(cluster: &TestCluster, admin: &Client) -> Client {
    let ns = "sluice-system";
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    if namespaces
        .get_opt(ns)
        .await
        .expect("namespace lookup")
        .is_none()
    {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .expect("create sluice-system");
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    // A restarted operator: the account and its RBAC are there, a new token is all it needs.
    let exists = accounts
        .get_opt("sluice-operator")
        .await
        .expect("service account lookup")
        .is_some();
    let rbac = if exists {
        Vec::new()
    } else {
        sluice_e2e::chart::rbac(&repo_root()).expect("the chart's RBAC renders")
    };
    if !exists {
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "sluice-operator"}})).unwrap(),
            )
            .await
            .expect("create the operator's ServiceAccount");
    }
    for object in rbac {
        let kind = object["kind"].as_str().expect("kind").to_string();
        let resource = kube::discovery::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            plural: format!("{}s", kind.to_lowercase()),
            kind,
        };
        let api: Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(admin.clone(), namespace, &resource),
            None => Api::all_with(admin.clone(), &resource),
        };
        api.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .expect("create the chart's RBAC object");
    }
    let token = sluice_e2e::harness::service_account_token(
        admin,
        (ns, "sluice-operator"),
        None,
        sluice_e2e::apiserver::API_AUDIENCE,
        3600,
    )
    .await;
    client_with_token(cluster, &token).await
}

// === the operator binary ===

/// The `sluice-operator` binary on a free loopback port (`--listen` and
/// `--webhook-url` on it), as `make e2e` runs it; killed when dropped.
pub struct OperatorBinary {
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https://` + `addr`: its webhook and gateway URL.
    pub url: String,
}

impl OperatorBinary {
    /// Starts the binary with `kubeconfig`, the `extra` flags and
    /// environment, stdout discarded and stderr to `stderr`.
    pub fn start(
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> OperatorBinary {
        // Set for the operator's own tests and benches; other crates share
        // this module (sidecar/tests) but never start the binary.
        let Some(binary) = option_env!("CARGO_BIN_EXE_sluice-operator") else {
            panic!("only sluice-operator's tests and benches start its binary");
        };
        OperatorBinary::start_binary(Path::new(binary), kubeconfig, extra, env, stderr)
    }

    /// Like [`OperatorBinary::start`], with the executable at `binary`
    /// (e.g. a release build for the fleet bench).
    pub fn start_binary(
        binary: &Path,
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> OperatorBinary {
        let port = sluice_e2e::free_port().expect("a free port");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let url = format!("https://{addr}");
        let listen = addr.to_string();
        let child = std::process::Command::new(binary)
            .args(["--listen", &listen, "--webhook-url", &url])
            .args(extra)
            .envs(env.iter().copied())
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start sluice-operator");
        OperatorBinary {
            child: Child(child),
            addr,
            url,
        }
    }

    /// Sends it SIGTERM (a pod's termination).
    pub fn sigterm(&self) {
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM failed: {kill}");
    }

    /// Waits until it exits (failing the test after [`WAIT`]); how it exited.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        bounded("the operator to exit", async {
            loop {
                if let Some(status) = self.child.0.try_wait().expect("wait for the operator") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// Waits (`within`) until the pod webhook is registered with a CA bundle
    /// (by whichever replica leads) and this replica's `/readyz` answers 200;
    /// the CA PEM its clients trust.
    pub async fn ready(&self, client: &Client, within: Duration) -> String {
        let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let ready = async {
            let registered = await_condition(
                webhooks,
                "sluice-operator",
                |w: Option<&MutatingWebhookConfiguration>| {
                    w.and_then(|w| w.webhooks.as_ref())
                        .and_then(|w| w.first())
                        .is_some_and(|w| w.client_config.ca_bundle.is_some())
                },
            )
            .await
            .expect("watch the webhook configuration")
            .expect("registered");
            let ca = registered.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .clone()
                .unwrap()
                .0;
            let ca = String::from_utf8(ca).expect("PEM");
            while call(self.addr, &ca, "GET", "/readyz", &[], None).await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ca
        };
        tokio::time::timeout(within, ready)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the operator at {} is not ready within {within:?}",
                    self.url
                )
            })
    }
}
