//! The cluster's Connections, AccessPolicies and Secrets as the operator sees
//! them: watched caches (kube-runtime reflectors) that the gateway API, the
//! injection webhook and the controllers read, and change counters that
//! long-polls (per namespace) and controllers (all) wait on.
//!
//! Secrets are not listed cluster-wide: only the Secrets that a Connection or
//! an AccessPolicy references are read, each by its own watch selected with
//! `fieldSelector=metadata.name=NAME` in its namespace (kube-apiserver supports
//! `metadata.name` as a field selector for every resource). An unrelated
//! Secret's change therefore reaches the operator not at all, wakes no
//! long-poll and re-runs no reconcile; readiness waits for the referenced
//! Secrets' first lists only. At most [`MAX_WATCHED_SECRETS`] are watched.
//!
//! Which Connections an identity is bound to is decided here, once, for the
//! bundle and for the injector alike, and it fails closed: an AccessPolicy that
//! binds the identity and names the Connection but does not compile makes the
//! Connection unbound (no credentials, sessions refused) rather than silently
//! dropping that policy's restrictions.

mod secrets;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};
use sluice_crds::{AccessPolicy, Connection, Protocol};
use sluice_policy::engine::{CompileError, CompiledPolicy, Identity, SecretSource};
use tokio::sync::watch;

use crate::injection::inject::ConnectionTarget;
use crate::wire::{Bundle, BundleConnection, BundleIdentity, BundleSecretKey};
use secrets::{SecretCache, drive_secrets};

/// An object of kind `K` as listed or watched: decoded, or, when it does not
/// decode (stored under a laxer schema, written straight to etcd, a value out
/// of the field's range), its metadata, its raw JSON and the decoding error.
///
/// kube-client decodes a list page as a whole, so one undecodable object would
/// fail every list and keep the caches (and readiness, and the fail-closed
/// webhooks) from ever filling, cluster-wide. Decoding item by item confines
/// the damage to that object: it is skipped, logged, and marked `Invalid`.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // the common variant is the large one; boxing it costs every object
pub enum Lenient<K> {
    /// The object decoded.
    Decoded(K),
    /// The object did not decode.
    Undecodable {
        /// Its metadata (name, namespace, uid, generation).
        metadata: ObjectMeta,
        /// Its JSON as stored.
        raw: serde_json::Value,
        /// Why it did not decode.
        error: String,
    },
}

impl<K> Lenient<K> {
    /// The decoded object, if it decoded.
    pub fn decoded(&self) -> Option<&K> {
        match self {
            Lenient::Decoded(k) => Some(k),
            Lenient::Undecodable { .. } => None,
        }
    }
}

impl<'de, K: serde::de::DeserializeOwned> serde::Deserialize<'de> for Lenient<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(d)?;
        match K::deserialize(&raw) {
            Ok(k) => Ok(Lenient::Decoded(k)),
            Err(error) => {
                let metadata = ObjectMeta::deserialize(&raw["metadata"]).unwrap_or_default();
                Ok(Lenient::Undecodable {
                    metadata,
                    raw,
                    error: error.to_string(),
                })
            }
        }
    }
}

impl<K: kube::Resource<DynamicType = ()>> kube::Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Decoded(k) => k.meta(),
            Lenient::Undecodable { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Decoded(k) => k.meta_mut(),
            Lenient::Undecodable { metadata, .. } => metadata,
        }
    }
}

/// How many referenced Secrets are watched at most. Each is one watch (one
/// long-lived request to the API server, HTTP/1.1 as kube-client speaks it);
/// beyond this the further Secrets are not read (their Connections get no
/// credentials, failing closed) and a warning says so.
pub const MAX_WATCHED_SECRETS: usize = 1024;

/// A referenced Secret: namespace and name.
type SecretKey = (String, String);

/// Watched caches of the objects policy distribution depends on.
#[derive(Clone)]
pub struct Catalog {
    connections: Store<Lenient<Connection>>,
    policies: Store<Lenient<AccessPolicy>>,
    secrets: Arc<SecretCache>,
    changes: Arc<Changes>,
    filled: watch::Receiver<bool>,
}

/// Change counters: one for everything (controllers), one per namespace with
/// a waiting long-poll (a bundle is built from its namespace's objects only).
struct Changes {
    all: watch::Sender<u64>,
    by_namespace: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Changes {
    fn new() -> Changes {
        Changes {
            all: watch::channel(0).0,
            by_namespace: Mutex::new(HashMap::new()),
        }
    }

    /// A change in `namespace`, or in any (`None`: a relist).
    fn bump(&self, namespace: Option<&str>) {
        let next = |n: &mut u64| *n = n.wrapping_add(1);
        self.all.send_modify(next);
        let map = self
            .by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match namespace {
            Some(ns) => {
                if let Some(tx) = map.get(ns) {
                    tx.send_modify(next);
                }
            }
            None => map.values().for_each(|tx| tx.send_modify(next)),
        }
    }

    /// A change no namespace's bundles depend on (a status-only write).
    fn bump_all(&self) {
        self.all.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe_namespace(&self, namespace: &str) -> watch::Receiver<u64> {
        let mut map = self
            .by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Namespaces nobody waits on any more are forgotten (bounded by waiters).
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(namespace.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

/// A policy of one namespace, compiled (or not).
pub struct PolicyEntry {
    /// The object as stored.
    pub policy: Arc<AccessPolicy>,
    /// The compiler's verdict.
    pub compiled: Result<CompiledPolicy, CompileError>,
}

impl Catalog {
    /// A catalog that watches nothing and holds no object (unit tests).
    #[cfg(test)]
    pub(crate) fn empty() -> Catalog {
        let (_filled_tx, filled) = watch::channel(false);
        Catalog {
            connections: reflector::store().0,
            policies: reflector::store().0,
            secrets: Arc::new(SecretCache::default()),
            changes: Arc::new(Changes::new()),
            filled,
        }
    }

    /// Starts watching all namespaces through `client`. The returned future
    /// drives the watches and must be polled (spawned) for the caches to fill.
    pub fn watch(client: &Client) -> (Catalog, impl Future<Output = ()> + Send + 'static) {
        let (filled_tx, filled) = watch::channel(false);
        let changes = Arc::new(Changes::new());
        let secrets = Arc::new(SecretCache::default());
        let (connections, connections_writer) = reflector::store();
        let (policies, policies_writer) = reflector::store();
        let drive = {
            let c = counted(
                reflector::reflector(
                    connections_writer,
                    watcher(
                        Api::<Lenient<Connection>>::all(client.clone()),
                        watcher::Config::default(),
                    ),
                ),
                changes.clone(),
            );
            let p = counted(
                reflector::reflector(
                    policies_writer,
                    watcher(
                        Api::<Lenient<AccessPolicy>>::all(client.clone()),
                        watcher::Config::default(),
                    ),
                ),
                changes.clone(),
            );
            let s = drive_secrets(
                client.clone(),
                connections.clone(),
                policies.clone(),
                secrets.clone(),
                changes.clone(),
                filled_tx,
            );
            async move {
                futures::join!(c, p, s);
            }
        };
        (
            Catalog {
                connections,
                policies,
                secrets,
                changes,
                filled,
            },
            drive,
        )
    }

    /// Waits until the Connection and AccessPolicy caches have their first full
    /// list and the Secrets they reference theirs (false if the watches stopped).
    pub async fn ready(&self) -> bool {
        self.filled.clone().wait_for(|f| *f).await.is_ok()
    }

    /// A receiver that sees a new value after every change to a watched object.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.all.subscribe()
    }

    /// A receiver that sees a new value after every change to a watched object
    /// of `namespace` (and after a relist), e.g. for a bundle long-poll.
    pub fn subscribe_namespace(&self, namespace: &str) -> watch::Receiver<u64> {
        self.changes.subscribe_namespace(namespace)
    }

    /// One `()` per change (coalesced), e.g. to re-run every reconciler.
    pub fn change_stream(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// The Connections of `namespace` that decode, by name.
    pub fn connections_in(&self, namespace: &str) -> Vec<Arc<Connection>> {
        decoded_in(&self.connections, namespace)
    }

    /// The audit checkpoint stored in the status of Connection
    /// `namespace/name`, when it decodes and has one: one lookup, without
    /// copying the namespace's Connections as [`Catalog::connections_in`]
    /// does (the audit intake asks this for every signed head).
    pub fn stored_checkpoint(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<sluice_crds::AuditCheckpoint> {
        let object = self
            .connections
            .get(&reflector::ObjectRef::new(name).within(namespace))?;
        object.decoded()?.status.as_ref()?.audit_checkpoint.clone()
    }

    /// The AccessPolicies of `namespace` that decode, by name.
    pub fn policies_in(&self, namespace: &str) -> Vec<Arc<AccessPolicy>> {
        decoded_in(&self.policies, namespace)
    }

    /// The raw JSON of the AccessPolicies of `namespace` that do not decode.
    fn undecodable_policies_in(&self, namespace: &str) -> Vec<serde_json::Value> {
        self.policies
            .state_filter(|p| p.namespace().as_deref() == Some(namespace))
            .iter()
            .filter_map(|p| match p.as_ref() {
                Lenient::Undecodable { raw, .. } => Some(raw.clone()),
                Lenient::Decoded(_) => None,
            })
            .collect()
    }

    /// A Secret that a Connection or AccessPolicy references, when it exists.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    /// The bytes of one key of a Secret.
    pub fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        let secret = self.secret(namespace, name)?;
        secret.data.as_ref()?.get(key).map(|v| v.0.clone())
    }

    /// Compiles `policy` with its namespace's Secrets.
    pub fn compile(&self, policy: &AccessPolicy) -> Result<CompiledPolicy, CompileError> {
        // The schema refuses an empty match since it was tightened, but an
        // object stored before then (or written around the schema) would
        // match everything: such a policy is Invalid and withheld (#15 item 8).
        if let Some((index, rule, problem)) = sluice_crds::manifests::empty_match(&policy.spec) {
            return Err(CompileError::InvalidRule {
                field: format!("spec.rules[{index}].match"),
                message: format!(
                    "the match of rule {rule:?} {problem}; write the conditions, or match: {{any: true}} for a catch-all"
                ),
            });
        }
        let source = NamespaceSecrets {
            catalog: self,
            namespace: policy.namespace().unwrap_or_default(),
        };
        CompiledPolicy::compile(policy, &source)
    }

    /// Every AccessPolicy of `namespace`, compiled.
    pub fn compiled_in(&self, namespace: &str) -> Vec<PolicyEntry> {
        self.policies_in(namespace)
            .into_iter()
            .map(|policy| PolicyEntry {
                compiled: self.compile(&policy),
                policy,
            })
            .collect()
    }

    /// Whether `identity` may use `connection`, given the compiled policies of
    /// its namespace and the raw JSON of those that do not decode.
    fn bound(
        entries: &[PolicyEntry],
        undecodable: &[serde_json::Value],
        identity: &Identity,
        connection: &str,
    ) -> bool {
        // Fail closed: a policy the operator cannot read blocks the Connections it
        // may name for the subjects it may name (when even that cannot be read: all).
        if undecodable
            .iter()
            .any(|raw| raw_names_subject_and_connection(raw, identity, connection))
        {
            return false;
        }
        let mut granted = false;
        for entry in entries {
            match &entry.compiled {
                Ok(compiled) => {
                    granted |= compiled.binds(identity) && compiled.names_connection(connection);
                }
                Err(_) => {
                    // Fail closed: a broken policy that would apply here blocks the binding.
                    if names_subject_and_connection(&entry.policy, identity, connection) {
                        return false;
                    }
                }
            }
        }
        granted
    }

    /// What the injector needs for a pod of `service_account` in `namespace`.
    pub fn inject_targets(&self, namespace: &str, service_account: &str) -> Vec<ConnectionTarget> {
        let identity = Identity::service_account(namespace, service_account);
        let entries = self.compiled_in(namespace);
        let undecodable = self.undecodable_policies_in(namespace);
        self.connections_in(namespace)
            .iter()
            .map(|c| {
                ConnectionTarget::from_connection(
                    c,
                    Catalog::bound(&entries, &undecodable, &identity, &c.name_any()),
                )
            })
            .collect()
    }

    /// Everything `identity` needs, valid until `expires_at` (RFC 3339).
    pub fn bundle_for(&self, identity: &Identity, pod: &str, expires_at: String) -> Bundle {
        let entries = self.compiled_in(&identity.namespace);
        self.bundle_with(&entries, identity, pod, expires_at)
    }

    /// [`Catalog::bundle_for`] with the namespace's policies already compiled
    /// (`entries`, from [`Catalog::compiled_in`] or a cache of it).
    pub fn bundle_with(
        &self,
        entries: &[PolicyEntry],
        identity: &Identity,
        pod: &str,
        expires_at: String,
    ) -> Bundle {
        let namespace = identity.namespace.as_str();
        let undecodable = self.undecodable_policies_in(namespace);
        // Need to know (issue 18): only Connections the identity is bound to.
        let connections: Vec<BundleConnection> = self
            .connections_in(namespace)
            .iter()
            .filter(|c| Catalog::bound(entries, &undecodable, identity, &c.name_any()))
            .map(|c| {
                let mut out = BundleConnection {
                    name: c.name_any(),
                    spec: c.spec.clone(),
                    bound: true,
                    credentials: None,
                    ca_pem: None,
                    hash_key: None,
                };
                self.fill_secrets(namespace, c, &mut out);
                out
            })
            .collect();
        let mut secret_keys = Vec::new();
        let policies: Vec<AccessPolicy> = entries
            .iter()
            .filter_map(|e| match &e.compiled {
                Ok(compiled) if compiled.binds(identity) => Some(&e.policy),
                _ => None,
            })
            .map(|p| {
                for m in &p.spec.masking {
                    if let Some(r) = &m.key_secret_ref
                        && let Some(value) = self.secret_key(namespace, &r.name, &r.key)
                    {
                        secret_keys.push(BundleSecretKey {
                            secret: r.name.clone(),
                            key: r.key.clone(),
                            value: base64::engine::general_purpose::STANDARD.encode(value),
                        });
                    }
                }
                AccessPolicy {
                    metadata: ObjectMeta {
                        name: p.metadata.name.clone(),
                        namespace: p.metadata.namespace.clone(),
                        generation: p.metadata.generation,
                        uid: p.metadata.uid.clone(),
                        ..Default::default()
                    },
                    spec: p.spec.clone(),
                    status: None,
                }
            })
            .collect();
        secret_keys.sort_by(|a, b| (&a.secret, &a.key).cmp(&(&b.secret, &b.key)));
        secret_keys.dedup();
        let bundle_identity = BundleIdentity {
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            pod: pod.to_string(),
            groups: identity.groups.clone(),
        };
        let revision = revision_of(&bundle_identity, &connections, &policies, &secret_keys);
        Bundle {
            revision,
            identity: bundle_identity,
            expires_at,
            connections,
            policies,
            secret_keys,
        }
    }

    fn fill_secrets(&self, namespace: &str, c: &Connection, out: &mut BundleConnection) {
        let spec = &c.spec;
        if let Some(secret) = self.secret(namespace, &spec.credentials.secret_ref.name) {
            let data = secret.data.clone().unwrap_or_default();
            let text = |v: &k8s_openapi::ByteString| String::from_utf8_lossy(&v.0).into_owned();
            let credentials: BTreeMap<String, String> = match spec.protocol {
                Protocol::Http => data
                    .iter()
                    .filter(|(k, _)| {
                        spec.credentials
                            .headers
                            .as_ref()
                            .is_none_or(|h| h.iter().any(|n| n == *k))
                    })
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
                _ => data
                    .iter()
                    .filter(|(k, _)| *k == "username" || *k == "password")
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
            };
            out.credentials = Some(credentials);
        }
        if let Some(ca) = spec
            .upstream
            .tls
            .as_ref()
            .and_then(|t| t.ca_secret_ref.as_ref())
        {
            out.ca_pem = self
                .secret_key(namespace, &ca.name, &ca.key)
                .map(|v| String::from_utf8_lossy(&v).into_owned());
        }
        if let Some(h) = &spec.credentials.hash_key_secret_ref {
            out.hash_key = self
                .secret_key(namespace, &h.name, &h.key)
                .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
        }
    }
}

/// Whether a (possibly uncompilable) policy names `identity` and `connection`,
/// read straight from its spec.
fn names_subject_and_connection(
    policy: &AccessPolicy,
    identity: &Identity,
    connection: &str,
) -> bool {
    let namespace = policy.namespace().unwrap_or_default();
    policy.spec.connections.iter().any(|c| c == connection)
        && policy
            .spec
            .subjects
            .iter()
            .any(|s| match (&s.service_account, &s.group) {
                (Some(sa), _) => {
                    *sa == identity.service_account
                        && s.namespace.as_deref().unwrap_or(&namespace) == identity.namespace
                }
                (None, Some(g)) => identity.groups.iter().any(|ig| ig == g),
                (None, None) => false,
            })
}

/// [`names_subject_and_connection`] on an AccessPolicy that does not decode:
/// every part that cannot be read counts as naming (fail closed).
fn raw_names_subject_and_connection(
    raw: &serde_json::Value,
    identity: &Identity,
    connection: &str,
) -> bool {
    let namespace = raw["metadata"]["namespace"].as_str().unwrap_or_default();
    let names_connection = match raw["spec"]["connections"].as_array() {
        Some(list) => list
            .iter()
            .any(|c| c.as_str().is_none_or(|c| c == connection)),
        None => true,
    };
    let names_subject = match raw["spec"]["subjects"].as_array() {
        Some(list) => list.iter().any(|s| {
            match (
                s.get("serviceAccount").map(serde_json::Value::as_str),
                s.get("group").map(serde_json::Value::as_str),
            ) {
                (Some(Some(sa)), _) => {
                    sa == identity.service_account
                        && s["namespace"].as_str().unwrap_or(namespace) == identity.namespace
                }
                (None, Some(Some(g))) => identity.groups.iter().any(|ig| ig == g),
                (None, None) => false,
                _ => true,
            }
        }),
        None => true,
    };
    names_connection && names_subject
}

/// The decoded objects of `namespace` in `store`, by name.
fn decoded_in<K>(store: &Store<Lenient<K>>, namespace: &str) -> Vec<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut found: Vec<Arc<K>> = store
        .state_filter(|o| o.namespace().as_deref() == Some(namespace))
        .iter()
        .filter_map(|o| o.decoded().cloned().map(Arc::new))
        .collect();
    found.sort_by_key(|o| o.name_any());
    found
}

fn revision_of(
    identity: &BundleIdentity,
    connections: &[BundleConnection],
    policies: &[AccessPolicy],
    secret_keys: &[BundleSecretKey],
) -> String {
    let mut h = Sha256::new();
    for part in [
        serde_json::to_vec(identity),
        serde_json::to_vec(connections),
        serde_json::to_vec(policies),
        serde_json::to_vec(secret_keys),
    ] {
        // Serialising plain data cannot fail; an empty part still changes the hash.
        h.update(part.unwrap_or_default());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..12])
}

struct NamespaceSecrets<'a> {
    catalog: &'a Catalog,
    namespace: String,
}

impl SecretSource for NamespaceSecrets<'_> {
    fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        self.catalog.secret_key(&self.namespace, name, key)
    }
}

/// Drives a reflector stream, bumping the change counters on every event (the
/// object's namespace; all of them after a relist); watch errors are retried
/// with kube-runtime's default backoff.
async fn counted<S, K>(stream: S, changes: Arc<Changes>)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: kube::Resource,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    // A write that keeps the generation changed only status (or metadata),
    // which no bundle carries: it moves the cluster-wide counter (controllers)
    // but wakes no long-poll (#25; the audit flush's own status writes did).
    let mut generations: HashMap<(Option<String>, Option<String>), i64> = HashMap::new();
    let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => generations.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(generation) = o.meta().generation {
                    generations.insert(key(&o), generation);
                }
            }
            Ok(watcher::Event::InitDone) => {
                tracing::debug!(kind = std::any::type_name::<K>(), "cache filled");
                changes.bump(None);
            }
            Ok(watcher::Event::Apply(o)) => {
                let generation = o.meta().generation;
                let previous = match generation {
                    Some(g) => generations.insert(key(&o), g),
                    None => generations.remove(&key(&o)),
                };
                if generation.is_some() && previous == generation {
                    changes.bump_all();
                } else {
                    changes.bump(o.meta().namespace.as_deref());
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                generations.remove(&key(&o));
                changes.bump(o.meta().namespace.as_deref());
            }
            Err(error) => tracing::warn!(%error, "watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct NoSecrets;
    impl SecretSource for NoSecrets {
        fn secret_key(&self, _: &str, _: &str) -> Option<Vec<u8>> {
            None
        }
    }

    /// An AccessPolicy the operator cannot decode fails closed for the
    /// subjects and Connections it may name, and only for those.
    #[test]
    fn undecodable_policies_block_what_they_might_name() {
        let policy = |spec: serde_json::Value| {
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": "p", "namespace": "shop"}, "spec": spec})
        };
        let grant: AccessPolicy = serde_json::from_value(policy(
            json!({"subjects": [{"serviceAccount": "job"}, {"serviceAccount": "other"}], "connections": ["db", "other-db"]}),
        ))
        .unwrap();
        let entries = vec![PolicyEntry {
            compiled: CompiledPolicy::compile(&grant, &NoSecrets),
            policy: Arc::new(grant),
        }];
        assert!(entries[0].compiled.is_ok());
        let job = Identity::service_account("shop", "job");
        let other = Identity::service_account("shop", "other");
        assert!(Catalog::bound(&entries, &[], &job, "db"));
        let broken = policy(
            json!({"subjects": [{"serviceAccount": "job"}], "connections": ["db"],
            "limits": {"statementsPerSecond": 4294967296u64}}),
        );
        let broken = [broken];
        assert!(!Catalog::bound(&entries, &broken, &job, "db"));
        assert!(Catalog::bound(&entries, &broken, &other, "db"));
        assert!(Catalog::bound(&entries, &broken, &job, "other-db"));
        // Unreadable subjects or connections count as naming everyone / everything.
        let garbled = [policy(json!({"subjects": "job", "connections": [7]}))];
        assert!(!Catalog::bound(&entries, &garbled, &other, "other-db"));
    }
}
