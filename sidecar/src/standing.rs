//! What is in force for one identity on one Connection, shared by every data
//! plane ([`Standing`]), and a PostgreSQL session's live view of it
//! ([`Binding`]).

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use sluice_crds::Protocol;
use sluice_policy::engine::{
    CompileError, CompiledPolicy, Decision, Identity, PolicySet, SecretSource,
};
use sluice_policy::wire::{Bundle, BundleConnection, BundleSecretKey};
use zeroize::Zeroizing;

use crate::rate::RateLimit;

/// An identity's standing on one Connection: its applicable policies, or none.
///
/// In run mode the standing changes while sessions run (a new bundle, or the
/// bundle expired): [`Binding::live`] follows a watch channel, and every
/// session's [`crate::enforcement::Enforcer`] picks the change up before its next statement.
pub struct Binding {
    identity: Identity,
    connection: String,
    pub(crate) standing: tokio::sync::watch::Receiver<Standing>,
    /// Keeps a standalone binding's channel open (nothing ever changes it).
    _fixed: Option<tokio::sync::watch::Sender<Standing>>,
    /// `statementsPerSecond`: the bucket every session of the identity on
    /// the Connection shares; it outlives policy edits (see [`crate::rate`]).
    rate: Arc<RateLimit>,
}

/// What is in force for one identity on one Connection, on every data
/// plane: the applicable policies and the plane's own parts built from them
/// (`P`: [`SqlParts`] for PostgreSQL, `crate::http::HttpParts` for HTTP), or
/// why nothing may run. Run mode publishes it on a watch channel per
/// Connection, so a policy change reaches running sessions.
#[derive(Clone)]
pub enum Standing<P = SqlParts> {
    /// Policies bind the identity to the Connection.
    Bound {
        /// The applicable policies.
        set: Arc<PolicySet>,
        /// What the plane builds from them.
        plane: P,
    },
    /// No policy binds the identity to the Connection.
    NotBound,
    /// No valid policies (no bundle yet, or it expired): nothing may run.
    /// The text says why, for the client.
    Unavailable(String),
}

/// The PostgreSQL plane's part of a bound [`Standing`].
#[derive(Clone, Debug)]
pub struct SqlParts {
    /// Whether any rule has a `textPattern` (see
    /// [`crate::enforcement::Enforcer`]).
    pub literal_sensitive: bool,
    /// Identifies the masking rules and limits in force. A change of this
    /// key gives running sessions a new [`crate::masking::Masking`]: their
    /// next statement is masked by the new rules (see
    /// [`crate::enforcement::Enforcer::refresh`]).
    pub masking_key: Arc<str>,
}

impl<P> Standing<P> {
    /// The one lookup of what is in force: the policies of `policies` that
    /// bind `identity` to `connection` (`hash_key`: the Connection's masking
    /// hash key), with the plane's parts `plane` builds from them; `NotBound`
    /// when none binds. `Err` is the plane's, when it cannot build its parts.
    pub fn select_with<E>(
        policies: &[Arc<CompiledPolicy>],
        identity: &Identity,
        connection: &str,
        hash_key: Option<&[u8]>,
        plane: impl FnOnce(&Arc<PolicySet>) -> Result<P, E>,
    ) -> Result<Self, E> {
        match PolicySet::select(policies, identity, connection, hash_key) {
            Some(set) => {
                let set = Arc::new(set);
                let plane = plane(&set)?;
                Ok(Standing::Bound { set, plane })
            }
            None => Ok(Standing::NotBound),
        }
    }

    /// What is in force on `conn`, a Connection of a bundle, for every
    /// plane: `NotBound` when the bundle says no policy binds the identity
    /// to it (`conn.bound`), else the policies of `policies` that bind
    /// `identity` to it (see [`Standing::select_with`]) under the
    /// Connection's decoded masking hash key, with the parts `plane` builds
    /// from them and that key. `Err` when the hash key is not base64 (bound
    /// or not: such a Connection is not served), or the plane's own.
    pub fn for_connection<E: From<HashKeyError>>(
        policies: &[Arc<CompiledPolicy>],
        identity: &Identity,
        conn: &BundleConnection,
        plane: impl FnOnce(&Arc<PolicySet>, Option<&[u8]>) -> Result<P, E>,
    ) -> Result<Self, E> {
        let key = hash_key(conn).map_err(|what| HashKeyError {
            connection: conn.name.clone(),
            what,
        })?;
        if !conn.bound {
            return Ok(Standing::NotBound);
        }
        let key = key.as_deref().map(Vec::as_slice);
        Self::select_with(policies, identity, &conn.name, key, |set| plane(set, key))
    }

    /// The applicable policies, when bound.
    pub fn set(&self) -> Option<&Arc<PolicySet>> {
        match self {
            Standing::Bound { set, .. } => Some(set),
            _ => None,
        }
    }

    /// Whether policies bind the identity to the Connection.
    pub fn is_bound(&self) -> bool {
        self.set().is_some()
    }

    /// Why nothing may run on `connection`, as the client is told; `None`
    /// when bound.
    pub fn refusal(&self, identity: &Identity, connection: &str) -> Option<String> {
        match self {
            Standing::Bound { .. } => None,
            Standing::NotBound => Some(Decision::not_bound(identity, connection).reason),
            Standing::Unavailable(why) => Some(why.clone()),
        }
    }

    /// Logs what a (new) standing puts in force on `connection`: the
    /// policies' warnings and whether the identity is bound; `refused` names
    /// what an unbound identity gets refused (sessions, requests).
    pub fn log_in_force(
        &self,
        connection: &str,
        revision: Option<&str>,
        identity: &Identity,
        refused: &str,
    ) {
        match self.set() {
            Some(set) => {
                for w in set.warnings() {
                    tracing::warn!(connection, "{w}");
                }
                tracing::info!(connection, revision, policies = ?set.policy_names(), "identity bound");
            }
            None => {
                tracing::warn!(connection, identity = %identity.subject(), "no AccessPolicy binds the identity to this Connection: {refused} will be refused");
            }
        }
    }
}

impl Standing<SqlParts> {
    /// The PostgreSQL standing for `policies` on `connection`.
    pub fn select(
        policies: &[Arc<CompiledPolicy>],
        identity: &Identity,
        connection: &str,
        hash_key: Option<&[u8]>,
        literal_sensitive: bool,
    ) -> Self {
        let parts = |_: &Arc<PolicySet>| Ok::<_, Infallible>(SqlParts::new(literal_sensitive, ""));
        match Self::select_with(policies, identity, connection, hash_key, parts) {
            Ok(standing) => standing,
            Err(never) => match never {},
        }
    }

    /// Sets the masking key (see [`SqlParts`]); other standings are unchanged.
    pub fn with_masking_key(mut self, key: &str) -> Self {
        if let Standing::Bound { plane, .. } = &mut self {
            plane.masking_key = Arc::from(key);
        }
        self
    }
}

impl SqlParts {
    /// The parts of a SQL plane's bound standing (see the fields).
    pub fn new(literal_sensitive: bool, masking_key: &str) -> Self {
        SqlParts {
            literal_sensitive,
            masking_key: Arc::from(masking_key),
        }
    }
}

impl Binding {
    /// Selects the policies that bind `identity` to `connection`.
    /// `literal_sensitive` must be true when any rule of them has a
    /// `textPattern` (a decision may then depend on literal values).
    pub fn new(
        policies: &[Arc<CompiledPolicy>],
        identity: Identity,
        connection: &str,
        hash_key: Option<&[u8]>,
        literal_sensitive: bool,
    ) -> Self {
        let standing =
            Standing::select(policies, &identity, connection, hash_key, literal_sensitive);
        let (tx, rx) = tokio::sync::watch::channel(standing);
        Binding {
            identity,
            connection: connection.to_string(),
            standing: rx,
            _fixed: Some(tx),
            rate: Arc::new(RateLimit::new()),
        }
    }

    /// A binding whose standing follows `standing` (run mode).
    pub fn live(
        identity: Identity,
        connection: &str,
        standing: tokio::sync::watch::Receiver<Standing>,
    ) -> Self {
        Binding {
            identity,
            connection: connection.to_string(),
            standing,
            _fixed: None,
            rate: Arc::new(RateLimit::new()),
        }
    }

    /// The binding with `rate` as its rate bucket: run mode hands every
    /// binding of a Connection (one per bundle) the same bucket, so a policy
    /// edit does not reset it.
    pub fn with_rate(mut self, rate: Arc<RateLimit>) -> Self {
        self.rate = rate;
        self
    }

    /// The rate bucket the sessions of this binding share.
    pub fn rate(&self) -> Arc<RateLimit> {
        self.rate.clone()
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether any policy binds the identity to the Connection.
    pub fn is_bound(&self) -> bool {
        self.standing.borrow().is_bound()
    }

    /// Names of the applicable policies.
    pub fn policy_names(&self) -> Vec<String> {
        self.standing
            .borrow()
            .set()
            .map(|s| s.policy_names().into_iter().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Warnings from building the policy set (e.g. a masker that fell back to redact).
    pub fn warnings(&self) -> Vec<String> {
        self.standing
            .borrow()
            .set()
            .map(|s| s.warnings().to_vec())
            .unwrap_or_default()
    }
    /// What a client of an unbound identity is told.
    pub fn not_bound_message(&self, connection: &str) -> String {
        if let Standing::Unavailable(why) = &*self.standing.borrow() {
            return format!("Sluice refused the session: {why}");
        }
        format!(
            "Sluice refused the session: {}",
            Decision::not_bound(&self.identity, connection).reason
        )
    }

    /// What a client of an unbound identity can do about it: bind the
    /// identity, or (run mode, no valid bundle) look at the sidecar and the
    /// operator, since no policy edit helps while the bundle is unavailable.
    pub fn not_bound_hint(&self) -> &'static str {
        if let Standing::Unavailable(_) = &*self.standing.borrow() {
            return "the sidecar has no valid policy bundle from the Sluice operator (pod deleted, token refused, or operator unreachable); see the sidecar's log and the operator's /readyz";
        }
        "bind the service account to this Connection with an AccessPolicy (spec.subjects and spec.connections)"
    }

    /// The Connection.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// Whether the standing follows a run-mode watch channel (it can change
    /// while sessions run), rather than standing fixed (standalone).
    pub(crate) fn is_live(&self) -> bool {
        self._fixed.is_none()
    }
}

/// A policy of a bundle that does not compile.
#[derive(Debug)]
pub struct PolicyError {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why.
    pub source: Box<CompileError>,
}

/// The policies of `bundle`, compiled (the Secret keys they name come with
/// the bundle): what every standing of the bundle is selected from.
pub fn compile_policies(bundle: &Bundle) -> Result<Vec<Arc<CompiledPolicy>>, PolicyError> {
    let secrets = BundleSecrets(&bundle.secret_keys);
    let mut policies = Vec::new();
    for ap in &bundle.policies {
        let compiled = CompiledPolicy::compile(ap, &secrets).map_err(|source| PolicyError {
            namespace: ap.metadata.namespace.clone().unwrap_or_default(),
            name: ap.metadata.name.clone().unwrap_or_default(),
            source: Box::new(source),
        })?;
        policies.push(Arc::new(compiled));
    }
    Ok(policies)
}

/// The Secret keys a bundle carries (base64), as the policy compiler asks.
pub(crate) struct BundleSecrets<'a>(pub(crate) &'a [BundleSecretKey]);

impl SecretSource for BundleSecrets<'_> {
    fn secret_key(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let k = self.0.iter().find(|k| k.secret == name && k.key == key)?;
        base64::engine::general_purpose::STANDARD
            .decode(&k.value)
            .ok()
    }
}

/// The Connections of `bundle` that `protocol`'s plane serves: all of them,
/// or those named in `only` (`SLUICE_CONNECTIONS`).
pub fn plane_connections<'a>(
    bundle: &'a Bundle,
    protocol: Protocol,
    only: Option<&'a [String]>,
) -> impl Iterator<Item = &'a BundleConnection> + 'a {
    bundle.connections.iter().filter(move |c| {
        c.spec.protocol == protocol && only.is_none_or(|only| only.iter().any(|o| o == &c.name))
    })
}

/// A Connection whose masking hash key (`hashKeySecretRef`) is unusable:
/// it is not served.
#[derive(Debug, thiserror::Error)]
#[error("Connection {connection}: {what}")]
pub struct HashKeyError {
    /// The Connection.
    pub connection: String,
    /// Why the key is unusable.
    pub what: String,
}

/// A Connection's masking hash key, decoded (held in zeroizing memory);
/// `Err` says why it is unusable.
fn hash_key(conn: &BundleConnection) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    conn.hash_key
        .as_ref()
        .map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Zeroizing::new)
                .map_err(|e| format!("hashKey is not base64: {e}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `alpha` binds `shop/app` to `db-a`, `beta` to `db-b`; `gamma` binds
    /// another identity to `db-a`.
    fn policies() -> Vec<Arc<CompiledPolicy>> {
        [
            ("alpha", "app", "db-a"),
            ("beta", "app", "db-b"),
            ("gamma", "other", "db-a"),
        ]
        .into_iter()
        .map(|(name, sa, conn)| {
            let ap: sluice_crds::AccessPolicy = serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"subjects": [{"serviceAccount": sa}], "connections": [conn],
                         "defaultAction": "allow"}
            }))
            .unwrap();
            Arc::new(CompiledPolicy::compile(&ap, &sluice_policy::engine::NoSecrets).unwrap())
        })
        .collect()
    }

    fn connection(name: &str, bound: bool, hash_key: Option<&str>) -> BundleConnection {
        serde_json::from_value(json!({
            "name": name,
            "spec": {
                "protocol": "postgres",
                "upstream": {"host": "db.shop", "port": 5432, "database": "orders"},
                "credentials": {"secretRef": {"name": "creds"}},
                "listen": {"port": 15432}
            },
            "bound": bound,
            "hashKey": hash_key
        }))
        .unwrap()
    }

    /// The standing `for_connection` selects, as (policy names, the hash key
    /// the plane was handed), or `None` when not bound.
    fn picked(conn: &BundleConnection) -> Option<(Vec<String>, Option<Vec<u8>>)> {
        let standing = Standing::for_connection(
            &policies(),
            &Identity::service_account("shop", "app"),
            conn,
            |_, key| Ok::<_, HashKeyError>(key.map(<[u8]>::to_vec)),
        )
        .unwrap();
        match standing {
            Standing::Bound { set, plane } => Some((
                set.policy_names().into_iter().map(String::from).collect(),
                plane,
            )),
            Standing::NotBound => None,
            Standing::Unavailable(why) => panic!("unavailable: {why}"),
        }
    }

    #[test]
    fn for_connection_picks_the_policies_binding_the_identity_to_that_connection() {
        // base64 of "key-a"
        let a = connection("db-a", true, Some("a2V5LWE="));
        assert_eq!(
            picked(&a),
            Some((vec!["alpha".to_string()], Some(b"key-a".to_vec())))
        );
        assert_eq!(
            picked(&connection("db-b", true, None)),
            Some((vec!["beta".to_string()], None))
        );
        // The bundle says unbound: nothing is selected, whatever the policies say.
        assert_eq!(picked(&connection("db-a", false, None)), None);
        // Bound by the bundle, but no policy here binds the identity.
        assert_eq!(picked(&connection("db-c", true, None)), None);
    }

    #[test]
    fn for_connection_refuses_a_hash_key_that_is_not_base64_bound_or_not() {
        for bound in [true, false] {
            let Err(err) = Standing::for_connection(
                &policies(),
                &Identity::service_account("shop", "app"),
                &connection("db-a", bound, Some("not base64!")),
                |_, _| Ok::<_, HashKeyError>(SqlParts::new(false, "")),
            ) else {
                panic!("a hashKey that is not base64 was taken (bound: {bound})");
            };
            let text = err.to_string();
            assert!(
                text.starts_with("Connection db-a: hashKey is not base64: "),
                "{text}"
            );
        }
    }
}
