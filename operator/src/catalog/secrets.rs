//! The Secrets the catalog watches: one watch per Secret a Connection or an
//! AccessPolicy references (never all Secrets of the cluster), at most
//! [`super::MAX_WATCHED_SECRETS`], and the cache their values land in.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sluice_crds::{AccessPolicy, Connection};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use super::{Changes, Lenient, MAX_WATCHED_SECRETS, SecretKey};

/// The referenced Secrets as last seen by their watches.
#[derive(Default)]
pub(super) struct SecretCache {
    entries: RwLock<HashMap<SecretKey, Arc<Secret>>>,
}

impl SecretCache {
    pub(super) fn get(&self, key: &SecretKey) -> Option<Arc<Secret>> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Records what the watch of `key` saw; a change of what bundles and
    /// statuses read (existence, data) is a change of `key`'s namespace.
    /// Nothing is written once the watch was stopped (`alive` false).
    pub(super) fn set(
        &self,
        key: &SecretKey,
        secret: Option<Secret>,
        alive: &AtomicBool,
        changes: &Changes,
    ) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if !alive.load(Ordering::Acquire) {
            return;
        }
        let before = entries.get(key).map(|s| s.data.clone());
        let after = secret.as_ref().map(|s| s.data.clone());
        match secret {
            Some(secret) => entries.insert(key.clone(), Arc::new(secret)),
            None => entries.remove(key),
        };
        drop(entries);
        if before != after {
            changes.bump(Some(&key.0));
        }
    }

    pub(super) fn forget(&self, key: &SecretKey) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The Secrets the decoded Connections and AccessPolicies reference.
fn referenced_secrets(
    connections: &Store<Lenient<Connection>>,
    policies: &Store<Lenient<AccessPolicy>>,
) -> BTreeSet<SecretKey> {
    let mut wanted = BTreeSet::new();
    for c in connections.state() {
        let Some(c) = c.decoded() else { continue };
        let namespace = c.namespace().unwrap_or_default();
        let spec = &c.spec;
        let names = std::iter::once(&spec.credentials.secret_ref.name)
            .chain(
                spec.credentials
                    .hash_key_secret_ref
                    .as_ref()
                    .map(|r| &r.name),
            )
            .chain(
                spec.upstream
                    .tls
                    .as_ref()
                    .and_then(|t| t.ca_secret_ref.as_ref())
                    .map(|r| &r.name),
            );
        wanted.extend(names.map(|n| (namespace.clone(), n.clone())));
    }
    for p in policies.state() {
        let Some(p) = p.decoded() else { continue };
        let namespace = p.namespace().unwrap_or_default();
        for m in &p.spec.masking {
            if let Some(r) = &m.key_secret_ref {
                wanted.insert((namespace.clone(), r.name.clone()));
            }
        }
    }
    wanted
}

/// One running Secret watch.
struct SecretWatch {
    task: AbortHandle,
    alive: Arc<AtomicBool>,
    synced: watch::Receiver<bool>,
}

/// Keeps one watch per referenced Secret: starts watches for newly referenced
/// Secrets and stops (and forgets) those no longer referenced, after every
/// change of the Connections and AccessPolicies. Publishes `filled` once the
/// first lists of both and of the Secrets they then reference are in.
pub(super) async fn drive_secrets(
    client: Client,
    connections: Store<Lenient<Connection>>,
    policies: Store<Lenient<AccessPolicy>>,
    cache: Arc<SecretCache>,
    changes: Arc<Changes>,
    filled: watch::Sender<bool>,
) {
    let mut changed = changes.all.subscribe();
    if connections.wait_until_ready().await.is_err() || policies.wait_until_ready().await.is_err() {
        // The stores' writers are gone: the catalog is stopping.
        return std::future::pending().await;
    }
    // Dropping the set (the catalog stops) aborts every watch.
    let mut tasks = JoinSet::new();
    let mut running: HashMap<SecretKey, SecretWatch> = HashMap::new();
    let mut capped = false;
    loop {
        changed.mark_unchanged();
        let wanted = referenced_secrets(&connections, &policies);
        running.retain(|key, w| {
            let keep = wanted.contains(key);
            if !keep {
                w.alive.store(false, Ordering::Release);
                w.task.abort();
                cache.forget(key);
            }
            keep
        });
        for key in &wanted {
            if running.contains_key(key) {
                continue;
            }
            if running.len() >= MAX_WATCHED_SECRETS {
                if !capped {
                    tracing::warn!(
                        referenced = wanted.len(),
                        limit = MAX_WATCHED_SECRETS,
                        "more Secrets are referenced than the operator watches; the Connections of the others get no credentials"
                    );
                }
                capped = true;
                break;
            }
            let alive = Arc::new(AtomicBool::new(true));
            let (synced_tx, synced) = watch::channel(false);
            let task = tasks.spawn(watch_secret(
                client.clone(),
                key.clone(),
                cache.clone(),
                changes.clone(),
                alive.clone(),
                synced_tx,
            ));
            running.insert(
                key.clone(),
                SecretWatch {
                    task,
                    alive,
                    synced,
                },
            );
        }
        if !*filled.borrow() {
            for w in running.values_mut() {
                // A stopped watch (aborted) counts as synced: it is no longer wanted.
                let _ = w.synced.wait_for(|s| *s).await;
            }
            filled.send_replace(true);
        }
        while tasks.try_join_next().is_some() {}
        if changed.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Watches the one Secret `key` names (field selector `metadata.name`).
async fn watch_secret(
    client: Client,
    key: SecretKey,
    cache: Arc<SecretCache>,
    changes: Arc<Changes>,
    alive: Arc<AtomicBool>,
    synced: watch::Sender<bool>,
) {
    let (namespace, name) = (&key.0, &key.1);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(Api::<Secret>::namespaced(client, namespace), config).default_backoff();
    futures::pin_mut!(stream);
    // Only the named Secret counts, whatever else a server might send.
    let named = |s: Secret| (s.metadata.name.as_deref() == Some(name.as_str())).then_some(s);
    let mut listed: Option<Secret> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = None,
            Ok(watcher::Event::InitApply(s)) => listed = named(s).or(listed),
            Ok(watcher::Event::InitDone) => {
                cache.set(&key, listed.take(), &alive, &changes);
                synced.send_replace(true);
            }
            Ok(watcher::Event::Apply(s)) => {
                if let Some(s) = named(s) {
                    cache.set(&key, Some(s), &alive, &changes);
                }
            }
            Ok(watcher::Event::Delete(s)) => {
                if named(s).is_some() {
                    cache.set(&key, None, &alive, &changes);
                }
            }
            Err(error) => {
                tracing::warn!(%namespace, secret = %name, %error, "watch of a referenced Secret failed; retrying");
            }
        }
    }
}
