//! A small Kubernetes API server for tests.
//!
//! It keeps everything in memory and serves the parts of the Kubernetes API
//! that kubectl and kube-rs use, with kube-apiserver's observable behaviour:
//! discovery, CRUD and watch with resourceVersions, status subresources,
//! patches, finalizers, service-account tokens, and admission webhooks.

pub mod admission;
pub mod cel_cost;
pub mod error;
pub mod faults;
mod http;
pub use http::{MAX_MUTATING_IN_FLIGHT, MAX_READS_IN_FLIGHT};
mod openapi;
mod ops;
pub mod patch;
mod pod_log;
pub use pod_log::log_path as pod_log_path;
mod pod_proxy;
mod protobuf;
pub mod rbac;
pub mod registry;
mod request;
pub mod schema;
pub mod selectors;
pub mod store;
mod table;
mod tokens;
mod validation;
mod watch;

use crate::pki::TokenSigner;
use registry::Registry;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use store::Store;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// `username` as kube reports it.
    pub username: String,
    /// A stable uid.
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (bound pod of a service-account token, ...).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The JSON form used in AdmissionReview and TokenReview.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "uid": self.uid, "groups": self.groups});
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// Mutable server state behind one lock.
pub(crate) struct State {
    pub store: Store,
    pub registry: Arc<Registry>,
}

/// Shared server internals.
pub struct Inner {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    signer: TokenSigner,
    tokens: HashMap<String, UserInfo>,
    ca_pem: String,
    issuer: String,
    /// Whether RBAC is enforced.
    rbac: bool,
    /// Where containers' logs are, in the kubelet's layout (`pod_log::log_path`).
    pub(crate) pod_log_root: std::sync::OnceLock<std::path::PathBuf>,
    /// Requests in flight (kube's max-in-flight limits) and per user.
    pub(crate) traffic: http::Traffic,
    /// Faults a test armed ([`faults`]).
    pub(crate) faults: faults::Faults,
}

/// Default audience of service-account tokens (kube's `--api-audiences`).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl Inner {
    /// A stored object by storage key (admission's namespace labels, tokens).
    pub(crate) fn stored(&self, storage: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock().store.get(storage, ns, name).cloned()
    }

    /// Every stored object of a storage key (webhook configurations).
    pub(crate) fn stored_all(&self, storage: &str) -> Vec<Value> {
        self.lock()
            .store
            .list(storage, None)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Creates the state with the system namespaces.
    pub fn new(
        tokens: HashMap<String, UserInfo>,
        ca_pem: String,
        signer: TokenSigner,
        rbac: bool,
    ) -> Arc<Self> {
        Self::with_limits(
            tokens,
            ca_pem,
            signer,
            rbac,
            (http::MAX_READS_IN_FLIGHT, http::MAX_MUTATING_IN_FLIGHT),
        )
    }

    /// [`Inner::new`] answering 429 beyond `(read, mutating)` requests in
    /// flight (kube's `--max-requests-inflight`, `--max-mutating-requests-inflight`).
    pub fn with_limits(
        tokens: HashMap<String, UserInfo>,
        ca_pem: String,
        signer: TokenSigner,
        rbac: bool,
        (read, mutating): (usize, usize),
    ) -> Arc<Self> {
        let (changed, _) = tokio::sync::watch::channel(0);
        let inner = Arc::new(Self {
            state: Mutex::new(State {
                store: Store::default(),
                registry: Arc::new(Registry::new(&[])),
            }),
            changed,
            signer,
            tokens,
            ca_pem,
            issuer: API_AUDIENCE.to_string(),
            rbac,
            pod_log_root: Default::default(),
            traffic: http::Traffic::new(read, mutating),
            faults: faults::Faults::default(),
        });
        {
            let mut st = inner.lock();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                ops::seed_namespace(&mut st, ns, &inner.ca_pem);
            }
            for mut role in rbac::bootstrap_roles() {
                role["metadata"]["uid"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
                role["metadata"]["creationTimestamp"] = serde_json::json!(store::now());
                st.store.put("rbac.authorization.k8s.io/clusterroles", role);
            }
            st.store.put(
                "rbac.authorization.k8s.io/clusterrolebindings",
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": "cluster-admin", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": store::now(),
                        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
            );
        }
        inner
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough test state; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refuses a request RBAC does not allow (when RBAC is on).
    pub(crate) fn authorize(
        &self,
        user: &UserInfo,
        a: &rbac::Attributes,
    ) -> Result<(), error::ApiError> {
        if !self.rbac || rbac::allowed(&self.lock().store, user, a) {
            return Ok(());
        }
        let mut err = error::ApiError::forbidden(rbac::forbidden_message(user, a));
        err.details =
            Some(serde_json::json!({"name": a.name, "group": a.group, "kind": a.resource}));
        Err(err)
    }

    /// Whether RBAC is enforced.
    pub(crate) fn rbac_enforced(&self) -> bool {
        self.rbac
    }

    pub(crate) fn notify(&self, rv: u64) {
        self.changed.send_replace(rv);
    }

    /// Drops the watch history so that watches from older resourceVersions get 410 Gone.
    pub fn compact(&self) {
        let rv = {
            let mut st = self.lock();
            st.store.compact();
            st.store.rv
        };
        self.notify(rv);
    }

    /// Stores `obj` under `storage` (e.g. `sluice.dev/accesspolicies`) bypassing admission,
    /// defaulting and validation, like a write straight to etcd (or an object stored under an
    /// older, laxer schema). Missing uid and creationTimestamp are filled in.
    pub fn store_raw(&self, storage: &str, mut obj: Value) -> Value {
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!(store::now());
        }
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]["generation"] = json!(1);
        }
        let (stored, rv) = {
            let mut st = self.lock();
            let stored = st.store.put(storage, obj);
            (stored, st.store.rv)
        };
        self.notify(rv);
        stored
    }

    /// Answers the next status writes `fault` names with its error ([`faults`]).
    pub fn arm_fault(&self, fault: faults::StatusWriteFault) {
        self.faults.arm(fault);
    }

    /// Requests answered by an armed fault so far.
    pub fn faulted_requests(&self) -> u64 {
        self.faults.answered()
    }

    /// Requests the user `name` has sent (to tell what a client costs the API server).
    pub fn requests_of(&self, name: &str) -> u64 {
        self.traffic.requests_of(name)
    }

    /// Requests the user `name` has sent with `method` to `path` (no query).
    pub fn requests_to(&self, name: &str, method: &str, path: &str) -> u64 {
        self.traffic.requests_to(name, method, path)
    }

    /// Serves HTTPS on `listener` until the task is dropped.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) {
        http::serve(self, listener, tls).await
    }
}
