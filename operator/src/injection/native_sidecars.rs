//! Whether the injector writes a native sidecar (a restartable init
//! container) or a classic one (a regular container), issue #19 item 7.
//!
//! `--native-sidecars always|never` fixes it. Without the flag (`auto`) it
//! follows the cluster: native sidecars only when the API server *and every
//! node's kubelet* are at least 1.29, where the `SidecarContainers` feature
//! gate is on by default (beta in 1.29, GA in 1.33; alpha and off in 1.28:
//! k8s.io/kubernetes pkg/features/kube_features.go). Kubelets may be up to
//! three minor versions older than the API server (the version-skew policy),
//! and an old kubelet runs a restartable init container as a plain init
//! container that never exits: the pod hangs in `Init`.
//!
//! The node versions come from a watch of Nodes
//! (`status.nodeInfo.kubeletVersion`), so a node joining or upgrading changes
//! the decision for the next pod. Until the first list, and whenever the
//! Nodes cannot be read (no `list`/`watch` on `nodes`, a failing watch),
//! the decision is the safe one: classic sidecars. A version that cannot be
//! read counts as old. With no Node at all, no old kubelet is known and the
//! API server's version decides.
//!
//! Under `auto` the decision may change while pods run, so the gateway accepts
//! a sidecar in either place the injector may have put it
//! ([`NativeSidecars::for_pod`]); with a fixed setting only that place.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::injection::inject::SIDECAR_CONTAINER_NAME;

/// The first minor version of Kubernetes 1 whose kubelet runs native sidecars by default.
pub const MIN_NATIVE_MINOR: u32 = 29;

/// `major.minor` of a Kubernetes version (`v1.29.3`, `v1.28.15-eks-1a2b`,
/// `1.30+`, `v1.31.0+k3s1`), if it has one.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let major = digits(parts.next()?)?;
    let minor = digits(parts.next()?)?;
    Some((major, minor))
}

/// Whether a component of `version` runs native sidecars by default; an
/// unreadable version does not.
pub fn supports_native(version: &str) -> bool {
    major_minor(version)
        .is_some_and(|(major, minor)| major > 1 || (major == 1 && minor >= MIN_NATIVE_MINOR))
}

/// What the Node watch knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Not listed yet: decide the safe way.
    NotYet,
    /// The watch fails (no RBAC, say): decide the safe way.
    Unreadable,
    /// Every Node's kubelet version, by Node name.
    Nodes(BTreeMap<String, String>),
}

/// The decision for the next injection, and how the gateway judges placement.
#[derive(Clone, Debug)]
pub struct NativeSidecars {
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Mode {
    Fixed(bool),
    Auto {
        api_server: bool,
        known: watch::Receiver<Known>,
    },
}

impl NativeSidecars {
    /// `--native-sidecars always` (`true`) or `never` (`false`).
    pub fn fixed(native: bool) -> NativeSidecars {
        NativeSidecars {
            mode: Mode::Fixed(native),
        }
    }

    /// `auto`: `api_server` says whether the API server is recent enough; the
    /// returned future watches Nodes (run it for as long as the operator runs).
    pub fn auto(
        client: Client,
        api_server: bool,
    ) -> (NativeSidecars, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(Known::NotYet);
        let decider = NativeSidecars {
            mode: Mode::Auto {
                api_server,
                known: rx,
            },
        };
        let drive = watch_nodes(Api::all(client), Arc::new(tx), decider.clone());
        (decider, drive)
    }

    /// Whether the next pod gets a native sidecar.
    pub fn current(&self) -> bool {
        match &self.mode {
            Mode::Fixed(native) => *native,
            Mode::Auto { api_server, known } => decide(*api_server, &known.borrow()),
        }
    }

    /// Whether this is `auto` (the decision follows the nodes).
    pub fn is_auto(&self) -> bool {
        matches!(self.mode, Mode::Auto { .. })
    }

    /// Resolves once the first decision is made (at once for a fixed
    /// setting; under `auto` when Nodes were listed, or could not be).
    pub async fn decided(&self) {
        if let Mode::Auto { known, .. } = &self.mode {
            let mut known = known.clone();
            let _ = known.wait_for(|k| *k != Known::NotYet).await;
        }
    }

    /// Where the gateway expects `pod`'s sidecar: with a fixed setting,
    /// there; under `auto`, where the pod has it (the decision may have
    /// changed since the pod was injected; either place is the injector's).
    pub fn for_pod(&self, pod: &Pod) -> bool {
        match &self.mode {
            Mode::Fixed(native) => *native,
            Mode::Auto { .. } => pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|init| init.iter().any(|c| c.name == SIDECAR_CONTAINER_NAME)),
        }
    }
}

fn decide(api_server: bool, known: &Known) -> bool {
    match known {
        Known::NotYet | Known::Unreadable => false,
        Known::Nodes(nodes) => api_server && nodes.values().all(|v| supports_native(v)),
    }
}

fn kubelet_version(node: &Node) -> (String, String) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let version = node
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.clone())
        .unwrap_or_default();
    (name, version)
}

/// Keeps the known kubelet versions current; logs each change of decision.
async fn watch_nodes(api: Api<Node>, tx: Arc<watch::Sender<Known>>, decider: NativeSidecars) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: BTreeMap<String, String> = BTreeMap::new();
    let mut last = decider.current();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(node)) => {
                let (name, version) = kubelet_version(&node);
                listing.insert(name, version);
            }
            Ok(watcher::Event::InitDone) => {
                tx.send_replace(Known::Nodes(std::mem::take(&mut listing)));
            }
            Ok(watcher::Event::Apply(node)) => {
                let (name, version) = kubelet_version(&node);
                tx.send_modify(|k| {
                    if let Known::Nodes(nodes) = k {
                        nodes.insert(name, version);
                    }
                });
            }
            Ok(watcher::Event::Delete(node)) => {
                let (name, _) = kubelet_version(&node);
                tx.send_modify(|k| {
                    if let Known::Nodes(nodes) = k {
                        nodes.remove(&name);
                    }
                });
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot read the cluster's Nodes; injecting classic sidecars until they can be read (nativeSidecars: auto needs list and watch on nodes)");
                tx.send_replace(Known::Unreadable);
            }
        }
        let now = decider.current();
        if now != last {
            let oldest = match &*tx.borrow() {
                Known::Nodes(nodes) => nodes
                    .iter()
                    .filter(|(_, v)| !supports_native(v))
                    .map(|(n, v)| format!("{n} ({v})"))
                    .next(),
                Known::NotYet | Known::Unreadable => Some("(Nodes unreadable)".to_string()),
            };
            tracing::info!(
                native = now,
                node_with_older_kubelet = oldest.as_deref().unwrap_or("none"),
                "nativeSidecars auto: new pods get {} sidecars",
                if now { "native" } else { "classic" }
            );
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_kubelets_report_them() {
        assert_eq!(major_minor("v1.29.3"), Some((1, 29)));
        assert_eq!(major_minor("v1.28.15-eks-1a2b3c"), Some((1, 28)));
        assert_eq!(major_minor("v1.31.0+k3s1"), Some((1, 31)));
        assert_eq!(major_minor("1.30+"), Some((1, 30)));
        assert_eq!(major_minor(""), None);
        assert_eq!(major_minor("v1"), None);
        assert!(supports_native("v1.29.0"));
        assert!(supports_native("v2.0.0"));
        assert!(!supports_native("v1.28.9"));
        assert!(!supports_native("garbage"));
    }

    #[test]
    fn every_kubelet_must_be_recent_and_unknown_is_classic() {
        let nodes = |vs: &[&str]| {
            Known::Nodes(
                vs.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("n{i}"), v.to_string()))
                    .collect(),
            )
        };
        assert!(!decide(true, &Known::NotYet));
        assert!(!decide(true, &Known::Unreadable));
        assert!(decide(true, &nodes(&[])));
        assert!(!decide(false, &nodes(&[])));
        assert!(decide(true, &nodes(&["v1.33.1", "v1.29.0"])));
        assert!(!decide(true, &nodes(&["v1.33.1", "v1.28.9"])));
        assert!(!decide(true, &nodes(&["v1.33.1", ""])));
    }
}
