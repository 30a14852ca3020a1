//! The e2e scenario (`make e2e`, and `make test` on the test control plane):
//! the built `sluice-operator` and `sluice-sidecar` binaries, real kubectl and
//! psql, and a real PostgreSQL, against the cluster in `KUBECONFIG` when set,
//! else a fresh test control plane.
//!
//! 1. `kubectl apply` the CRDs and examples/quickstart (pointed at a throwaway
//!    PostgreSQL with the quickstart's data); start the operator with
//!    `--listen` and `--webhook-url`; `kubectl wait --for=condition=Ready`.
//! 2. A policy naming an unknown connection: Ready=False, reason `UnknownConnection`.
//! 3. An annotated pod in the labelled namespace comes back injected (native
//!    sidecar, projected token with audience sluice.dev, the operator's CA, env).
//! 4. The sidecar binary started with that pod's environment and a
//!    TokenRequest bound to the pod serves psql: allowed, masked, denied.
//! 5. A `kubectl patch` of the policy changes the next statement's decision in
//!    a psql session that stays connected.
//! 6. `kubectl describe accesspolicy` shows the counters and recent denials.
//! 7. Deleting the pod makes its token useless: the operator refuses the
//!    exchange and the sidecar refuses new sessions.
//!
//! The binaries are taken from the target directory this test was built into
//! (`cargo test --workspace` builds them; `make e2e` builds them first) or
//! from `SLUICE_E2E_BIN_DIR`. On an external cluster the API server must reach
//! the operator's webhook on this machine: set `SLUICE_E2E_OPERATOR_HOST` to an
//! address it can reach (default 127.0.0.1, right for the test control plane).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sluice_e2e::{ClusterUnderTest, Options};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use support::{Out, free_port, kubectl_with, repo_root};

/// Upper bound of every wait and every command.
const WAIT: Duration = Duration::from_secs(60);
const SSN: &str = "123-45-6789";

// === binaries ===

/// A built binary of the workspace; fails when it is missing or older than
/// the sources it is built from, saying how to build it.
fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SLUICE_E2E_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        // target/debug/deps/scenario-HASH → target/debug
        None => std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_path_buf(),
    };
    let path = dir.join(name);
    let build = "cargo build --locked -p sluice-operator -p sluice-sidecar (make e2e does)";
    let Ok(meta) = std::fs::metadata(&path) else {
        panic!("{} is missing: build it with `{build}`", path.display());
    };
    if std::env::var_os("SLUICE_E2E_BIN_DIR").is_none() {
        let built = meta.modified().unwrap();
        // The crate the binary is built from and the workspace crates it
        // depends on (cargo does not relink one binary for another's sources).
        let own = name.strip_prefix("sluice-").unwrap_or(name);
        for dir in ["crds/src", "policy/src", &format!("{own}/src")] {
            if let Some((newest, file)) = newest_file(&repo_root().join(dir)) {
                assert!(
                    newest <= built,
                    "{} is older than {}: rebuild it with `{build}`",
                    path.display(),
                    file.display()
                );
            }
        }
    }
    path
}

fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().ok()?.modified().ok().map(|t| (t, path))
        };
        if let Some(found) = found
            && newest.as_ref().is_none_or(|(t, _)| found.0 > *t)
        {
            newest = Some(found);
        }
    }
    newest
}

/// Kills the process when the scenario ends, however it ends.
struct Process {
    child: std::process::Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === kubectl ===

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        kubectl_with(&self.kubeconfig, &self.cache, args, stdin, WAIT).await
    }

    /// Runs kubectl, asserting success; returns stdout.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args, None).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed: {}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// `kubectl apply -f -` with `yaml`.
    async fn apply(&self, yaml: &str) -> String {
        let out = self.try_run(&["apply", "-f", "-"], Some(yaml)).await;
        assert!(out.ok, "kubectl apply failed: {}{}", out.stdout, out.stderr);
        out.stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&args).await).unwrap()
    }

    /// Polls `kubectl get ... -o json` until `done` holds.
    async fn get_until(&self, what: &str, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
        bounded(what, async {
            loop {
                let mut a = args.to_vec();
                a.extend(["-o", "json"]);
                let out = self.try_run(&a, None).await;
                if out.ok {
                    let v: Value = serde_json::from_str(&out.stdout).unwrap();
                    if done(&v) {
                        return v;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
    }
}

/// Applies the chart's ServiceAccount and rendered RBAC and writes a kubeconfig
/// that authenticates as that ServiceAccount (a TokenRequest token), as a
/// release runs the operator.
async fn chart_operator_kubeconfig(kubectl: &Kubectl, dir: &Path) -> PathBuf {
    use sluice_e2e::chart::{OPERATOR_ACCOUNT, RELEASE_NAMESPACE};
    let ns = RELEASE_NAMESPACE;
    kubectl
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {OPERATOR_ACCOUNT}, namespace: {ns}}}\n"
        ))
        .await;
    for object in sluice_e2e::chart::rbac(repo_root()).expect("the chart's RBAC renders") {
        kubectl
            .apply(&serde_json::to_string(&object).unwrap())
            .await;
    }
    let token = kubectl
        .run(&[
            "create",
            "token",
            OPERATOR_ACCOUNT,
            "-n",
            ns,
            "--duration=1h",
        ])
        .await;
    let path = dir.join("operator-kubeconfig");
    std::fs::copy(&kubectl.kubeconfig, &path).unwrap();
    let as_operator = Kubectl {
        kubeconfig: path.clone(),
        cache: kubectl.cache.clone(),
    };
    let cluster = as_operator
        .run(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].name}",
        ])
        .await;
    as_operator
        .run(&[
            "config",
            "set-credentials",
            "chart-operator",
            &format!("--token={}", token.trim()),
        ])
        .await;
    as_operator
        .run(&[
            "config",
            "set-context",
            "chart-operator",
            &format!("--cluster={}", cluster.trim()),
            "--user=chart-operator",
        ])
        .await;
    as_operator
        .run(&["config", "use-context", "chart-operator"])
        .await;
    path
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

// === PostgreSQL (through sidecar/demo/pg.sh, as the demo starts it) ===

/// A throwaway PostgreSQL with the quickstart's database `orders`.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_sh(script: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}/sidecar/demo/pg.sh && {script}",
            repo_root().display()
        ))
        .arg("pg")
        .args(args)
        .output()
        .expect("bash runs")
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-pg-")
            .tempdir()
            .unwrap();
        // initdb runs as an unprivileged user when we are root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let pg = Postgres { dir, port };
        let out = pg_sh(
            r#"pg_start "$1/pg" "$2" postgres e2e-superuser-pw && demo_data "$2" e2e-superuser-pw"#,
            &[pg.dir.path().to_str().unwrap(), &port.to_string()],
        );
        assert!(
            out.status.success(),
            "PostgreSQL did not start (install postgresql: apt-get install postgresql postgresql-client): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_sh(r#"pg_stop "$1/pg""#, &[self.dir.path().to_str().unwrap()]);
    }
}

// === psql ===

fn psql_bin() -> String {
    let out = pg_sh("pg_bin psql", &[]);
    assert!(
        out.status.success(),
        "psql not found: install postgresql-client"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `psql -c SQL` through the sidecar: (exit ok, stdout and stderr in order).
async fn psql(port: u16, sql: &str) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"exec "$0" "$@" 2>&1"#)
        .arg(psql_bin())
        .args([
            "-X",
            "-v",
            "VERBOSITY=verbose",
            "-h",
            "127.0.0.1",
            "-U",
            "app",
        ])
        .args(["-p", &port.to_string(), "-d", "orders", "-c", sql])
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = bounded("psql", cmd.output()).await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One psql process kept open: statements go to its stdin one at a time.
struct PsqlSession {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    output: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    n: u32,
}

impl PsqlSession {
    async fn open(port: u16) -> PsqlSession {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 2>&1"#)
            .arg(psql_bin())
            .args(["-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose"])
            .args(["-h", "127.0.0.1", "-U", "app", "-d", "orders"])
            .args(["-p", &port.to_string()])
            .env_remove("PGPASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("psql runs");
        let stdin = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap()).lines();
        PsqlSession {
            child,
            stdin,
            output,
            n: 0,
        }
    }

    /// Sends one statement; returns what psql printed for it.
    async fn run(&mut self, sql: &str) -> String {
        self.n += 1;
        let mark = format!("--end-of-statement-{}--", self.n);
        let input = format!("{sql};\n\\echo {mark}\n");
        self.stdin.write_all(input.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        bounded("psql's answer", async {
            let mut out = String::new();
            loop {
                match self.output.next_line().await.unwrap() {
                    Some(line) if line == mark => return out,
                    Some(line) => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                    None => panic!("psql exited: {out}"),
                }
            }
        })
        .await
    }

    /// The backend process id: the same before and after means the same session.
    async fn backend_pid(&mut self) -> String {
        self.run("SELECT pg_backend_pid()").await.trim().to_string()
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

// === the gateway ===

/// `POST /v1/token` to the operator, trusting `ca_pem`: the HTTP status.
async fn exchange(addr: &str, ca_pem: &str, subject_token: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config: Arc<rustls::ClientConfig> = sluice_e2e::pki::client_config(ca_pem).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let url = addr.trim_start_matches("https://");
    let (host, _) = url.rsplit_once(':').unwrap();
    let tcp = tokio::net::TcpStream::connect(url).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = serde_json::to_vec(&json!({"subjectToken": subject_token})).unwrap();
    let request = hyper::Request::builder()
        .method("POST")
        .uri("/v1/token")
        .header("host", url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

// === the scenario ===

/// What the scenario leaves in an external cluster is removed at the end.
struct ExternalCleanup(Option<PathBuf>);

impl Drop for ExternalCleanup {
    fn drop(&mut self) {
        let Some(kubeconfig) = &self.0 else { return };
        for args in [
            &[
                "delete",
                "namespace",
                "shop",
                "--ignore-not-found",
                "--wait=false",
            ][..],
            &[
                "delete",
                "namespace",
                "sluice-system",
                "--ignore-not-found",
                "--wait=false",
            ],
            &[
                "delete",
                "mutatingwebhookconfiguration/sluice-operator",
                "mutatingwebhookconfiguration/sluice-operator-approvals",
                "validatingwebhookconfiguration/sluice-operator-approvals",
                "--ignore-not-found",
            ],
        ] {
            let _ = std::process::Command::new("kubectl")
                .env("KUBECONFIG", kubeconfig)
                .args(args)
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sidecar_and_kubectl_end_to_end() {
    let started = Instant::now();
    let mut laps = Vec::new();
    let mut lap = |what: &str| {
        laps.push(format!("{what}: {:.1?}", started.elapsed()));
    };
    let operator_bin = binary("sluice-operator");
    let sidecar_bin = binary("sluice-sidecar");
    // RBAC on: the operator below runs as the chart's ServiceAccount under the
    // chart's rendered RBAC, so an API call the chart does not allow fails here.
    let cluster = ClusterUnderTest::from_env(Options::default().rbac(true))
        .await
        .expect("the cluster under test");
    let work = tempfile::Builder::new()
        .prefix("sluice-e2e-")
        .tempdir()
        .unwrap();
    let kubectl = Kubectl {
        kubeconfig: cluster.kubeconfig_path(),
        cache: work.path().join("kube-cache"),
    };
    let _cleanup = ExternalCleanup(match &cluster {
        ClusterUnderTest::External { kubeconfig } => {
            let out = kubectl.try_run(&["get", "namespace", "shop"], None).await;
            assert!(
                !out.ok,
                "namespace shop exists in the cluster of KUBECONFIG; the scenario applies examples/quickstart there and deletes it afterwards: use another cluster or delete it"
            );
            Some(kubeconfig.clone())
        }
        ClusterUnderTest::Local(_) => None,
    });
    let pg = Postgres::start();
    lap("cluster and PostgreSQL");

    // 1. CRDs, the quickstart, the operator; everything Ready.
    let crds = repo_root().join("crds");
    kubectl.run(&["apply", "-f", crds.to_str().unwrap()]).await;
    kubectl
        .run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/connections.sluice.dev",
            "crd/accesspolicies.sluice.dev",
            "crd/accessrequests.sluice.dev",
        ])
        .await;
    let quickstart = repo_root().join("examples/quickstart");
    let listen_port = free_port();
    let read = |f: &str| std::fs::read_to_string(quickstart.join(f)).unwrap();
    kubectl.apply(&read("namespace.yaml")).await;
    kubectl.apply(&read("reporting-policy.yaml")).await;
    let orders_db = read("orders-db.yaml")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace(
            "listen: {port: 15432}",
            &format!("listen: {{port: {listen_port}}}"),
        );
    assert!(orders_db.contains(&format!("port: {}", pg.port)));
    kubectl.apply(&orders_db).await;

    let host = std::env::var("SLUICE_E2E_OPERATOR_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let op_port = free_port();
    let listen = if host == "127.0.0.1" {
        format!("127.0.0.1:{op_port}")
    } else {
        format!("0.0.0.0:{op_port}")
    };
    let gateway = format!("https://{host}:{op_port}");
    let operator_kubeconfig = chart_operator_kubeconfig(&kubectl, work.path()).await;
    let operator_log = work.path().join("operator.log");
    let operator = Process {
        child: std::process::Command::new(&operator_bin)
            .args(["--listen", &listen, "--webhook-url", &gateway])
            .args(["--audit-flush-seconds", "1"])
            .env("KUBECONFIG", &operator_kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&operator_log).unwrap())
            .spawn()
            .expect("sluice-operator starts"),
        log: operator_log,
    };
    let out = kubectl
        .try_run(
            &[
                "wait",
                "--for=condition=Ready",
                "--timeout=60s",
                "-n",
                "shop",
                "connection/orders-db",
                "accesspolicy/reporting",
            ],
            None,
        )
        .await;
    assert!(
        out.ok,
        "not Ready: {}{}\noperator log:\n{}",
        out.stdout,
        out.stderr,
        operator.log()
    );
    lap("CRDs, quickstart and operator Ready");

    // 2. A policy naming a connection that does not exist.
    kubectl
        .apply(
            "apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: points-nowhere, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [no-such-db]
",
        )
        .await;
    kubectl
        .run(&[
            "wait",
            "--for=condition=Ready=False",
            "--timeout=60s",
            "-n",
            "shop",
            "accesspolicy/points-nowhere",
        ])
        .await;
    let broken = kubectl
        .json(&["get", "accesspolicy", "points-nowhere", "-n", "shop"])
        .await;
    let ready = condition(&broken, "Ready").unwrap();
    assert_eq!(ready["reason"], "UnknownConnection", "{ready}");
    assert!(
        ready["message"].as_str().unwrap().contains("no-such-db"),
        "{ready}"
    );
    // The good policy is unaffected.
    let good = kubectl
        .json(&["get", "accesspolicy", "reporting", "-n", "shop"])
        .await;
    assert_eq!(condition(&good, "Ready").unwrap()["status"], "True");
    lap("unknown connection reported");

    // 3. An annotated pod in the labelled namespace comes back injected.
    kubectl
        .get_until(
            "the operator's pod webhook",
            &["get", "mutatingwebhookconfiguration", "sluice-operator"],
            |w| w["webhooks"][0]["clientConfig"]["caBundle"].is_string(),
        )
        .await;
    kubectl
        .run(&["create", "serviceaccount", "report-job", "-n", "shop"])
        .await;
    kubectl
        .apply(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: report
  namespace: shop
  annotations: {sluice.dev/inject: "true"}
spec:
  serviceAccountName: report-job
  containers: [{name: app, image: example/report:1}]
"#,
        )
        .await;
    let pod = kubectl.json(&["get", "pod", "report", "-n", "shop"]).await;
    let init = pod["spec"]["initContainers"]
        .as_array()
        .unwrap_or_else(|| panic!("the pod was not injected: {pod:#}"));
    let sidecar = init
        .iter()
        .find(|c| c["name"] == "sluice-sidecar")
        .unwrap_or_else(|| panic!("no sluice-sidecar init container: {pod:#}"));
    assert_eq!(
        sidecar["restartPolicy"], "Always",
        "not a native sidecar: {sidecar:#}"
    );
    assert!(sidecar["startupProbe"].is_object(), "{sidecar:#}");
    assert_eq!(sidecar["args"], json!(["run"]));
    // As on a real cluster the pod also carries the ServiceAccount admission plugin's
    // kube-api-access-* volume (added before the webhook, so mounted in the app only).
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let token_volume = volumes
        .iter()
        .find(|v| v["name"] == "sluice-token")
        .and_then(|v| v["projected"]["sources"][0]["serviceAccountToken"].as_object())
        .unwrap_or_else(|| panic!("no projected sluice-token volume: {pod:#}"));
    assert_eq!(token_volume["audience"], "sluice.dev");
    let api_access = volumes
        .iter()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no kube-api-access volume: {pod:#}"));
    let mounts = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        mounts(&pod["spec"]["containers"][0]).contains(&api_access.to_string()),
        "{pod:#}"
    );
    assert!(
        !mounts(sidecar).contains(&api_access.to_string()),
        "the sidecar holds only its own token: {sidecar:#}"
    );
    let env = sidecar["env"].as_array().unwrap();
    let env_value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("the sidecar has no {name}: {sidecar:#}"))
            .to_string()
    };
    let ca_pem = env_value("SLUICE_CA_PEM");
    assert!(ca_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(env_value("SLUICE_GATEWAY_URL"), gateway);
    assert_eq!(env_value("SLUICE_CONNECTIONS"), "orders-db");
    let app_env = &pod["spec"]["containers"][0]["env"];
    assert_eq!(
        app_env,
        &json!([{"name": "DATABASE_URL", "value": format!("postgres://localhost:{listen_port}/orders")}]),
        "{pod:#}"
    );
    lap("pod injected");

    // 4. The sidecar as the pod would run it: its env, a token bound to the pod.
    let token = kubectl
        .run(&[
            "create",
            "token",
            "report-job",
            "-n",
            "shop",
            "--audience",
            "sluice.dev",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "report",
            "--duration",
            "10m",
        ])
        .await;
    let token = token.trim().to_string();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let sidecar_log = work.path().join("sidecar.log");
    let audit_file = work.path().join("audit.jsonl");
    let mut cmd = std::process::Command::new(&sidecar_bin);
    cmd.args(["run"]).env_clear().env("PATH", "/usr/bin:/bin");
    for e in env {
        let name = e["name"].as_str().unwrap();
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            // What the kubelet would fill in from the pod.
            Some("metadata.name") => pod["metadata"]["name"].as_str().unwrap(),
            Some("metadata.namespace") => pod["metadata"]["namespace"].as_str().unwrap(),
            Some("metadata.uid") => pod["metadata"]["uid"].as_str().unwrap(),
            Some("spec.serviceAccountName") => pod["spec"]["serviceAccountName"].as_str().unwrap(),
            Some(other) => {
                panic!("the sidecar env {name} needs field {other} the test does not know")
            }
            None => e["value"].as_str().unwrap(),
        };
        cmd.env(name, value);
    }
    // The token's mount path and the admin port are the pod's; here they are local.
    cmd.env("SLUICE_TOKEN_FILE", &token_file)
        .env("SLUICE_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()));
    let sidecar = Process {
        child: cmd
            .stdout(std::fs::File::create(&audit_file).unwrap())
            .stderr(std::fs::File::create(&sidecar_log).unwrap())
            .spawn()
            .expect("sluice-sidecar starts"),
        log: sidecar_log,
    };
    bounded(
        "the sidecar's listener (after the token exchange and the first bundle)",
        async {
            while tokio::net::TcpStream::connect(("127.0.0.1", listen_port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;

    let (ok, out) = psql(listen_port, "SELECT id, amount FROM orders ORDER BY id").await;
    assert!(
        ok && out.contains("25.50") && out.contains("(3 rows)"),
        "{out}\n{}",
        sidecar.log()
    );
    let (ok, out) = psql(
        listen_port,
        "SELECT name, email, ssn FROM customers WHERE id = 1",
    )
    .await;
    assert!(ok && out.contains("Alice Martin"), "{out}");
    assert!(!out.contains(SSN), "the ssn reached the client: {out}");
    assert!(
        !out.contains("alice@example.com"),
        "the email reached the client: {out}"
    );
    let (ok, out) = psql(listen_port, "DROP TABLE customers").await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("42501") && out.contains("no-schema-changes"),
        "{out}"
    );
    let (ok, out) = psql(listen_port, "SELECT count(*) FROM customers").await;
    assert!(ok && out.contains(" 2\n"), "the table is gone: {out}");
    lap("psql: allowed, masked, denied");

    // 5. A policy edit changes the next statement of a live session.
    let mut session = PsqlSession::open(listen_port).await;
    let pid = session.backend_pid().await;
    let out = session.run("SELECT count(*) FROM orders").await;
    assert_eq!(out.trim(), "3", "{out}");
    kubectl
        .run(&[
            "patch",
            "accesspolicy",
            "reporting",
            "-n",
            "shop",
            "--type",
            "json",
            "-p",
            r#"[{"op": "add", "path": "/spec/rules/0", "value": {"name": "no-order-reads", "match": {"statements": ["select"], "tables": ["orders"]}, "action": "deny"}}]"#,
        ])
        .await;
    let refused = bounded("the edit to reach the live session", async {
        loop {
            let out = session.run("SELECT count(*) FROM orders").await;
            if out.contains("ERROR") {
                return out;
            }
            assert_eq!(out.trim(), "3", "{out}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        refused.contains("42501") && refused.contains("no-order-reads"),
        "{refused}"
    );
    assert_eq!(
        session.backend_pid().await,
        pid,
        "the session was reconnected"
    );
    let out = session.run("SELECT count(*) FROM customers").await;
    assert_eq!(out.trim(), "2", "{out}");
    drop(session);
    lap("policy edit applied to the live session");

    // 6. Counters and recent denials, in status and in kubectl describe.
    kubectl
        .get_until(
            "the policy's counters",
            &["get", "accesspolicy", "reporting", "-n", "shop"],
            |p| {
                let c = &p["status"]["counters"];
                c["allowed"].as_u64() >= Some(3)
                    && c["denied"].as_u64() >= Some(2)
                    && c["masked"].as_u64() >= Some(1)
                    && p["status"]["recentDenials"]
                        .as_array()
                        .is_some_and(|d| d.len() >= 2)
            },
        )
        .await;
    let described = kubectl
        .run(&["describe", "accesspolicy", "reporting", "-n", "shop"])
        .await;
    for expected in [
        "Counters:",
        "Denied:",
        "Masked:",
        "Recent Denials:",
        "no-schema-changes",
        "no-order-reads",
    ] {
        assert!(
            described.contains(expected),
            "no {expected:?} in:\n{described}"
        );
    }
    lap("counters and recent denials");

    // 7. Deleting the pod makes its token useless.
    let (status, body) = exchange(&gateway, &ca_pem, &token).await;
    assert_eq!(status, 200, "{body}");
    kubectl
        .run(&["delete", "pod", "report", "-n", "shop", "--wait=true"])
        .await;
    let (status, body) = exchange(&gateway, &ca_pem, &token).await;
    assert_eq!(status, 401, "{body}");
    let refused = bounded("the sidecar to drop the deleted pod's bundle", async {
        loop {
            let (ok, out) = psql(listen_port, "SELECT 1").await;
            if !ok {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        refused.contains("no longer accepts this pod's identity"),
        "{refused}"
    );
    lap("deleted pod's token refused");

    // The audit stream on the sidecar's stdout recorded the denials.
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let denials = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "denial")
        .count();
    assert!(denials >= 2, "{audit}");
    assert!(
        !sidecar.log().contains("change-me-orders-app"),
        "the password reached the log"
    );
    // Everything the operator asked for, the chart's RBAC allowed.
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || has_status_403(l))
        .collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator something:\n{}",
        refused.join("\n")
    );
    drop(sidecar);
    drop(operator);
    eprintln!(
        "e2e scenario on {}: {:.1?} in all\n  {}",
        match &cluster {
            ClusterUnderTest::External { .. } => "the cluster in KUBECONFIG",
            ClusterUnderTest::Local(_) => "the test control plane",
        },
        started.elapsed(),
        laps.join("\n  ")
    );
}

/// Whether `line` holds 403 as a number of its own (a status code), not as
/// digits of a longer one: the operator's start-up line names its port, and
/// a random port such as 44403 is no refusal (a run failed on exactly that).
fn has_status_403(line: &str) -> bool {
    line.match_indices("403").any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + 3..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn a_port_with_403_in_it_is_no_refusal() {
    assert!(!has_status_403(
        "serving addr=127.0.0.1:44403 gateway_url=https://127.0.0.1:44403"
    ));
    assert!(!has_status_403("port 4030"));
    assert!(has_status_403("request refused: 403 Forbidden"));
    assert!(has_status_403("status=403"));
}
