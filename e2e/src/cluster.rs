//! [`TestCluster`]: start the test control plane in-process, with a kubeconfig.

use crate::apiserver::{Inner, UserInfo};
use crate::pki::{Ca, CertifiedKey, PkiError, TokenSigner, random_token};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a test cluster could not start or hand out a client.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Certificates or keys could not be made.
    #[error("could not set up the cluster's certificates: {0}")]
    Pki(#[from] PkiError),
    /// The state directory or kubeconfig could not be written.
    #[error("could not write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No free loopback port.
    #[error("could not listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
    /// A `--user` entry was not `NAME:GROUP1,GROUP2`.
    #[error("invalid user {0:?}: expected NAME or NAME:GROUP1,GROUP2")]
    BadUser(String),
    /// The kubeconfig has no context by that name.
    #[error("the kubeconfig has no context {0:?}; pass \"admin\" or a name given as a user")]
    NoContext(String),
    /// kube-rs could not build a client from the kubeconfig.
    #[error("could not build a kube client for context {context:?}: {source}")]
    Client {
        /// The context.
        context: String,
        /// kube's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A user to put in the kubeconfig, besides `admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The username.
    pub name: String,
    /// Groups (`system:authenticated` is added).
    pub groups: Vec<String>,
}

impl std::str::FromStr for User {
    type Err = ClusterError;

    /// Parses `NAME:GROUP1,GROUP2` (groups optional).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, groups) = s.split_once(':').unwrap_or((s, ""));
        if name.is_empty() || name == "admin" {
            return Err(ClusterError::BadUser(s.to_string()));
        }
        let groups = groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Self {
            name: name.to_string(),
            groups,
        })
    }
}

/// How to start a [`TestCluster`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where to write `kubeconfig` and `ready`; a temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// Extra users, each with a kubeconfig context named after it.
    pub users: Vec<User>,
    /// Enforce RBAC (Roles, ClusterRoles and bindings). Off: every
    /// authenticated request is allowed.
    pub rbac: bool,
    /// Most (non-mutating, mutating) requests in flight before 429;
    /// kube-apiserver's defaults (400, 200) when `None`.
    pub max_in_flight: Option<(usize, usize)>,
}

impl Options {
    /// Adds a user with a kubeconfig context named after it.
    pub fn user(mut self, name: &str, groups: &[&str]) -> Self {
        self.users.push(User {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        });
        self
    }

    /// Turns RBAC enforcement on or off.
    pub fn rbac(mut self, on: bool) -> Self {
        self.rbac = on;
        self
    }

    /// Answers 429 `TooManyRequests` beyond `read` non-mutating or `mutating`
    /// mutating requests in flight (kube's defaults are 400 and 200).
    pub fn max_in_flight(mut self, read: usize, mutating: usize) -> Self {
        self.max_in_flight = Some((read, mutating));
        self
    }

    /// Writes `kubeconfig` and `ready` into `dir` instead of a temporary directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
}

/// A running test control plane. It stops when dropped.
pub struct TestCluster {
    inner: Arc<Inner>,
    /// Stops the server thread when sent to or dropped.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    base_url: String,
    ca: Ca,
}

const ADMIN: &str = "admin";

impl TestCluster {
    /// Starts a cluster on a free loopback port and writes its kubeconfig.
    pub async fn start(opts: Options) -> Result<Self, ClusterError> {
        let (tmp, dir) = match &opts.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("sluice-testcluster-")
                    .tempdir()
                    .map_err(|source| ClusterError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| ClusterError::Io {
            path: dir.clone(),
            source,
        })?;
        let ca = Ca::new("sluice-testcluster-ca")?;
        let serving =
            ca.issue_server_cert(&["127.0.0.1", "localhost", "kubernetes.default.svc"])?;
        let mut tokens = HashMap::new();
        let mut contexts = Vec::new();
        let admin_token = random_token();
        tokens.insert(
            admin_token.clone(),
            UserInfo {
                username: ADMIN.into(),
                uid: uuid::Uuid::new_v4().to_string(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                extra: Default::default(),
            },
        );
        contexts.push((ADMIN.to_string(), admin_token));
        for user in &opts.users {
            let token = random_token();
            let mut groups = user.groups.clone();
            groups.push("system:authenticated".into());
            tokens.insert(
                token.clone(),
                UserInfo {
                    username: user.name.clone(),
                    uid: uuid::Uuid::new_v4().to_string(),
                    groups,
                    extra: Default::default(),
                },
            );
            contexts.push((user.name.clone(), token));
        }
        let inner = Inner::with_limits(
            tokens,
            ca.cert_pem().to_string(),
            TokenSigner::new()?,
            opts.rbac,
            opts.max_in_flight.unwrap_or((
                crate::apiserver::MAX_READS_IN_FLIGHT,
                crate::apiserver::MAX_MUTATING_IN_FLIGHT,
            )),
        );
        let _ = inner.pod_log_root.set(dir.join("pods"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(ClusterError::Listen)?;
        listener
            .set_nonblocking(true)
            .map_err(ClusterError::Listen)?;
        let port = listener.local_addr().map_err(ClusterError::Listen)?.port();
        let base_url = format!("https://127.0.0.1:{port}");
        let tls = serving.server_config()?;
        // The server runs on its own thread and runtime, so a test that blocks
        // its own runtime (std::process, a current-thread #[tokio::test]) or
        // ends it cannot stall the cluster.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-testcluster")
            .enable_all()
            .build()
            .map_err(ClusterError::Listen)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = inner.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-testcluster".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = server.serve(listener, tls) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends the connection and watch tasks.
            })
            .map_err(ClusterError::Listen)?;
        let cluster = Self {
            inner,
            stop: Some(stop),
            thread: Some(thread),
            _tmp: tmp,
            dir,
            base_url,
            ca,
        };
        cluster.write_kubeconfig(&contexts)?;
        let ready = cluster.dir.join("ready");
        std::fs::write(&ready, &cluster.base_url).map_err(|source| ClusterError::Io {
            path: ready,
            source,
        })?;
        Ok(cluster)
    }

    fn write_kubeconfig(&self, contexts: &[(String, String)]) -> Result<(), ClusterError> {
        use base64::Engine as _;
        let ca_data = base64::engine::general_purpose::STANDARD.encode(self.ca.cert_pem());
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": ADMIN, "preferences": {},
            "clusters": [{"name": "sluice-testcluster", "cluster": {"server": self.base_url, "certificate-authority-data": ca_data}}],
            "users": contexts.iter().map(|(n, t)| json!({"name": n, "user": {"token": t}})).collect::<Vec<_>>(),
            "contexts": contexts.iter().map(|(n, _)| json!({"name": n, "context": {"cluster": "sluice-testcluster", "user": n, "namespace": "default"}})).collect::<Vec<_>>(),
        });
        let text = serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string());
        let path = self.kubeconfig_path();
        std::fs::write(&path, text).map_err(|source| ClusterError::Io { path, source })
    }

    /// The kubeconfig file (context `admin` current, one context per user).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Where the test writes the log of `container` of pod `ns/name` (uid
    /// `uid`), which `pods/NAME/log` serves (the kubelet's `/var/log/pods` layout).
    pub fn pod_log_path(&self, ns: &str, name: &str, uid: &str, container: &str) -> PathBuf {
        crate::apiserver::pod_log_path(&self.dir.join("pods"), ns, name, uid, container)
    }

    /// The directory holding `kubeconfig` and `ready`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Issues a serving certificate from the cluster CA (for webhook servers in tests).
    pub fn issue_server_cert(&self, names: &[&str]) -> Result<CertifiedKey, ClusterError> {
        Ok(self.ca.issue_server_cert(names)?)
    }

    /// A kube client acting as `admin` (system:masters).
    pub async fn client(&self) -> Result<kube::Client, ClusterError> {
        self.client_for(ADMIN).await
    }

    /// A kube client for the kubeconfig context `context` (a user's name, or `admin`).
    pub async fn client_for(&self, context: &str) -> Result<kube::Client, ClusterError> {
        let path = self.kubeconfig_path();
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&path).map_err(|e| ClusterError::Client {
                context: context.into(),
                source: Box::new(e),
            })?;
        if !kubeconfig.contexts.iter().any(|c| c.name == context) {
            return Err(ClusterError::NoContext(context.to_string()));
        }
        let options = kube::config::KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| ClusterError::Client {
                context: context.into(),
                source: Box::new(e),
            })?;
        kube::Client::try_from(config).map_err(|e| ClusterError::Client {
            context: context.into(),
            source: Box::new(e),
        })
    }

    /// Requests the user `user` has sent (e.g. the operator's service
    /// account, `system:serviceaccount:NS:NAME`), answered or refused.
    pub fn requests_of(&self, user: &str) -> u64 {
        self.inner.requests_of(user)
    }

    /// Requests `user` has sent with `method` (`GET`, `PUT`…) to `path`
    /// (without the query), answered or refused.
    pub fn requests_to(&self, user: &str, method: &str, path: &str) -> u64 {
        self.inner.requests_to(user, method, path)
    }

    /// Answers the next status writes `fault` names with its error (409
    /// `Conflict` or 500 `InternalError`) instead of serving them; see
    /// [`crate::apiserver::faults`].
    pub fn fail_status_writes(&self, fault: crate::apiserver::faults::StatusWriteFault) {
        self.inner.arm_fault(fault);
    }

    /// Requests answered by a fault armed with [`TestCluster::fail_status_writes`] so far.
    pub fn faulted_requests(&self) -> u64 {
        self.inner.faulted_requests()
    }

    /// Forgets the watch history, so watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.inner.compact();
    }

    /// Stores an object bypassing admission and validation (a raw etcd write); see
    /// [`Inner::store_raw`]. `storage` is `group/plural` (`plural` for the core group).
    pub fn store_raw(&self, storage: &str, obj: serde_json::Value) -> serde_json::Value {
        self.inner.store_raw(storage, obj)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
