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
//! The caches only ever vouch: a pod or account they do not hold (not seen
//! yet, deleted, another UID), or any lookup while a watch is not in step
//! (before its first list, after an error until it hears from the API server
//! again), is read from the API server as before, and refused when it is
//! gone. What a watch can lag by is the time its event takes to arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

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

/// Injected pods and every service account's UID, from watches.
pub struct Holders {
    pods: Followed<Arc<Pod>>,
    accounts: Followed<String>,
}

impl Default for Holders {
    /// Empty and never in step: every lookup goes to the API server.
    fn default() -> Self {
        Holders {
            pods: Followed::new(),
            accounts: Followed::new(),
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
    pub fn pod(&self, namespace: &str, name: &str, uid: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(namespace, name)
            .filter(|p| p.metadata.uid.as_deref() == Some(uid))
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
fn injected_pod(pod: Lenient<Pod>) -> (Key, Option<Arc<Pod>>) {
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
    (key, Some(Arc::new(pod)))
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
