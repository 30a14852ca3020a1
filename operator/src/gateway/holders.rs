//! The pods and service accounts gateway tokens are bound to, as two watches
//! see them (#25): every token exchange, bundle poll, audit upload and
//! approval call checks that the token's pod still exists, is the same pod
//! (UID) and still runs the genuine sidecar, and that its service account
//! still exists with the same UID ([`crate::gateway::auth::check_holder`]).
//! Reading both from the API server made two requests per poll and upload —
//! thousands a minute for a fleet, and N per change that woke N long-polls.
//!
//! - **Pods:** one cluster-wide watch (`list`/`watch` on pods). Only pods the
//!   webhook injected (`sluice.dev/injected-revision`) are kept, without
//!   their `managedFields` and conditions, which the checks do not read; the
//!   others are decoded and dropped. A deleted pod leaves the cache as soon
//!   as the watch sees it, and its tokens stop working then.
//! - **Service accounts:** one cluster-wide watch; only each account's UID is
//!   kept.
//!
//! - **Genuineness, once per pod version:** the sidecar check
//!   ([`crate::injection::token_holder::check_token_holder`]) of a watched
//!   pod is remembered with the pod ([`HeldPod`]), under the CA bundle it was
//!   made with. A change of the pod reaches the cache as a new [`HeldPod`],
//!   which remembers nothing, so the next request checks it again; so does a
//!   request after the operator's CA bundle changed. Only a pass is
//!   remembered.
//!
//! The caches only ever vouch: a pod or account they do not hold (not seen
//! yet, deleted, another UID), or any lookup while a watch is not in step
//! (before its first list, after an error until it hears from the API server
//! again), is read from the API server as before, and refused when it is
//! gone. What a watch can lag by is the time its event takes to arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::catalog::Lenient;
use crate::injection::sidecar::INJECTED_REVISION_ANNOTATION;

/// Namespace and name.
type Key = (String, String);

/// One watched cache: what the watch last said, and whether it is in step.
struct Followed<V> {
    entries: RwLock<HashMap<Key, V>>,
    in_step: AtomicBool,
}

impl<V: Clone> Followed<V> {
    fn new() -> Self {
        Followed {
            entries: RwLock::new(HashMap::new()),
            in_step: AtomicBool::new(false),
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<V> {
        if !self.in_step.load(Ordering::Acquire) {
            return None;
        }
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn set(&self, key: Key, value: Option<V>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match value {
            Some(v) => entries.insert(key, v),
            None => entries.remove(&key),
        };
    }

    fn replace(&self, all: HashMap<Key, V>) {
        *self.entries.write().unwrap_or_else(PoisonError::into_inner) = all;
    }

    fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A pod a token is bound to, and the CA bundle under which it was last
/// found to run the genuine sidecar (none yet for a pod just seen or read).
///
/// The pod is held as its JSON text and decoded only when a check must run
/// (once per pod version and CA bundle): its decoded form took about 15 KiB
/// per injected pod (k8s-openapi's containers are mostly inline options),
/// the text a few (#25: one pod per sidecar). The decoded pod is exactly the
/// one given: nothing the check reads is dropped on the way.
#[derive(Clone)]
pub struct HeldPod {
    uid: Option<Arc<str>>,
    json: Arc<[u8]>,
    genuine_under: Arc<Mutex<Option<Arc<str>>>>,
}

impl HeldPod {
    /// A pod no check has passed yet.
    pub fn new(pod: &Pod) -> Result<HeldPod, serde_json::Error> {
        Ok(HeldPod {
            uid: pod.metadata.uid.as_deref().map(Arc::from),
            json: serde_json::to_vec(pod)?.into(),
            genuine_under: Arc::default(),
        })
    }

    /// The pod's UID.
    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// The pod, decoded (for a check).
    pub fn pod(&self) -> Result<Pod, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// Whether this very pod version, bound to `uid`, passed the sidecar
    /// check under the CA bundle `ca_pem`.
    pub fn vouched(&self, uid: &str, ca_pem: &str) -> bool {
        self.uid() == Some(uid)
            && self
                .genuine_under
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_deref()
                == Some(ca_pem)
    }

    /// Remembers that the sidecar check passed under `ca_pem`.
    pub fn vouch(&self, ca_pem: Arc<str>) {
        *self
            .genuine_under
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ca_pem);
    }
}

/// Injected pods and every service account's UID, from watches.
pub struct Holders {
    pods: Followed<HeldPod>,
    accounts: Followed<String>,
    /// The CA bundle checks passed under, shared by every pod that passed
    /// under it (one copy, not one per pod).
    ca_pem: Mutex<Option<Arc<str>>>,
}

impl Default for Holders {
    /// Empty and never in step: every lookup goes to the API server.
    fn default() -> Self {
        Holders {
            pods: Followed::new(),
            accounts: Followed::new(),
            ca_pem: Mutex::new(None),
        }
    }
}

impl Holders {
    /// Starts both watches through `client`; the returned future drives them
    /// and must be polled (spawned) for the caches to fill.
    pub fn watch(client: &Client) -> (Arc<Holders>, impl Future<Output = ()> + Send + 'static) {
        let holders = Arc::new(Holders::default());
        let pods = follow(
            watcher(
                Api::<Lenient<Pod>>::all(client.clone()),
                watcher::Config::default(),
            ),
            holders.clone(),
            |h| &h.pods,
            injected_pod,
        );
        let accounts = follow(
            watcher(
                Api::<Lenient<ServiceAccount>>::all(client.clone()),
                watcher::Config::default(),
            ),
            holders.clone(),
            |h| &h.accounts,
            account_uid,
        );
        let drive = async move {
            futures::join!(pods, accounts);
        };
        (holders, drive)
    }

    /// The pod `namespace/name` when the watch holds it with `uid` (and is
    /// in step); `None` means "ask the API server", never "gone".
    pub fn pod(&self, namespace: &str, name: &str, uid: &str) -> Option<HeldPod> {
        self.pods
            .get(namespace, name)
            .filter(|p| p.uid() == Some(uid))
    }

    /// `ca_pem` as one shared copy: the same [`Arc`] for the same bundle.
    pub fn shared_ca(&self, ca_pem: &str) -> Arc<str> {
        let mut held = self.ca_pem.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_ref() {
            Some(same) if **same == *ca_pem => same.clone(),
            _ => {
                let fresh: Arc<str> = Arc::from(ca_pem);
                *held = Some(fresh.clone());
                fresh
            }
        }
    }

    /// The UID of service account `namespace/name` as the watch last saw it
    /// (when in step); `None` means "ask the API server", never "gone".
    pub fn account_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.accounts.get(namespace, name)
    }

    /// How many pods and accounts are held (for the logs and tests).
    pub fn sizes(&self) -> (usize, usize) {
        (self.pods.len(), self.accounts.len())
    }
}

/// What the cache keeps of a pod: an injected one, without the fields the
/// checks do not read.
fn injected_pod(pod: Lenient<Pod>) -> (Key, Option<HeldPod>) {
    let key = key_of(kube::Resource::meta(&pod));
    let Lenient::Decoded(mut pod) = pod else {
        return (key, None);
    };
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_REVISION_ANNOTATION));
    if !injected {
        return (key, None);
    }
    pod.metadata.managed_fields = None;
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
    }
    // A pod that cannot be held (never seen: a decoded pod encodes) is read
    // from the API server when asked for, as one the watch has not seen.
    (key, HeldPod::new(&pod).ok())
}

fn account_uid(account: Lenient<ServiceAccount>) -> (Key, Option<String>) {
    let meta = kube::Resource::meta(&account);
    (key_of(meta), meta.uid.clone())
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Follows one watch into the cache `pick` chooses: a relist replaces the
/// cache whole once complete; an error takes the cache out of step until the
/// watch hears from the API server again.
async fn follow<S, K, V>(
    stream: S,
    holders: Arc<Holders>,
    pick: fn(&Holders) -> &Followed<V>,
    keep: fn(K) -> (Key, Option<V>),
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: kube::Resource + Clone + Send,
    V: Clone,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    let cache = pick(&holders);
    let mut relisted: HashMap<Key, V> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                if let (key, Some(v)) = keep(o) {
                    relisted.insert(key, v);
                }
            }
            Ok(watcher::Event::InitDone) => {
                cache.replace(std::mem::take(&mut relisted));
                cache.in_step.store(true, Ordering::Release);
                tracing::debug!(
                    kind = std::any::type_name::<K>(),
                    held = cache.len(),
                    "holder cache filled"
                );
            }
            Ok(watcher::Event::Apply(o)) => {
                let (key, value) = keep(o);
                cache.set(key, value);
                cache.in_step.store(true, Ordering::Release);
            }
            Ok(watcher::Event::Delete(o)) => {
                let (key, _) = keep(o);
                cache.set(key, None);
                cache.in_step.store(true, Ordering::Release);
            }
            Err(error) => {
                // Events may be missing until the watch resumes: ask the API
                // server meanwhile.
                cache.in_step.store(false, Ordering::Release);
                tracing::warn!(%error, kind = std::any::type_name::<K>(), "holder watch failed; reading from the API server until it resumes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, image: &str) -> watcher::Event<Lenient<Pod>> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "shop", "name": "report", "uid": uid,
                "annotations": {INJECTED_REVISION_ANNOTATION: "1"}},
            "spec": {"containers": [{"name": "sluice-sidecar", "image": image}]}
        }))
        .unwrap();
        watcher::Event::Apply(Lenient::Decoded(pod))
    }

    /// Feeds `events` to the pod cache of a fresh [`Holders`].
    async fn fed(events: Vec<watcher::Event<Lenient<Pod>>>) -> Arc<Holders> {
        let holders = Arc::new(Holders::default());
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        follow(stream, holders.clone(), |h| &h.pods, injected_pod).await;
        holders
    }

    #[tokio::test]
    async fn a_pass_is_remembered_for_that_pod_version_and_ca_bundle_only() {
        let holders = fed(vec![pod("uid-1", "sluice:1")]).await;
        let held = holders.pod("shop", "report", "uid-1").unwrap();
        assert!(!held.vouched("uid-1", "ca-a"), "nothing passed yet");
        held.vouch(holders.shared_ca("ca-a"));
        // Every lookup of the same version sees the pass.
        let again = holders.pod("shop", "report", "uid-1").unwrap();
        assert!(again.vouched("uid-1", "ca-a"));
        // Not under another CA bundle, nor for another UID.
        assert!(!again.vouched("uid-1", "ca-b"));
        assert!(!again.vouched("uid-2", "ca-a"));
        // One copy of the bundle, shared.
        assert!(Arc::ptr_eq(
            &holders.shared_ca("ca-a"),
            &holders.shared_ca(&String::from("ca-a"))
        ));
    }

    #[tokio::test]
    async fn a_changed_pod_is_checked_again() {
        // The watch sees the pod, then the same pod (same UID) with its
        // sidecar's image changed.
        let holders = Arc::new(Holders::default());
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let driver = tokio::spawn(follow(
            rx.map(Ok),
            holders.clone(),
            |h: &Holders| &h.pods,
            injected_pod,
        ));
        tx.unbounded_send(pod("uid-1", "sluice:1")).unwrap();
        let within =
            |what: &'static str| move |_| panic!("the cache did not take {what} within 10 s");
        let held = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Some(held) = holders.pod("shop", "report", "uid-1") {
                    return held;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(within("the pod"));
        held.vouch(holders.shared_ca("ca-a"));
        tx.unbounded_send(pod("uid-1", "evil:1")).unwrap();
        let changed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let now = holders.pod("shop", "report", "uid-1").unwrap();
                let image = now.pod().unwrap().spec.unwrap().containers[0].image.clone();
                if image.as_deref() == Some("evil:1") {
                    return now;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(within("the change"));
        assert!(
            !changed.vouched("uid-1", "ca-a"),
            "the changed pod was vouched for by its earlier version's pass"
        );
        drop(tx);
        driver.await.unwrap();
    }
}
