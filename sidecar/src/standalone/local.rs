//! The bundle standalone mode serves: built from local manifests in the
//! shape the operator's bundle has (docs/DESIGN.md §4), so that both modes
//! put their Connections in force the same way. Every Connection of the
//! identity's namespace comes with its credentials (its Secret must be in
//! the manifests), and is bound or not as its policies say.

use base64::Engine as _;
use sluice_crds::manifests::ManifestSet;
use sluice_crds::{Connection, Protocol};
use sluice_policy::engine::Identity;
use sluice_policy::wire::{Bundle, BundleConnection, BundleIdentity, BundleSecretKey};

use super::StandaloneError;

/// The revision of a bundle built from local manifests (they never change
/// while it runs).
const LOCAL_REVISION: &str = "local";

/// The bundle of `identity` from `set`.
pub(super) fn local_bundle(
    set: &ManifestSet,
    identity: &Identity,
) -> Result<Bundle, StandaloneError> {
    let namespace = identity.namespace.as_str();
    let mut connections = Vec::new();
    for conn in set.connections.iter().filter(|c| {
        matches!(
            c.spec.protocol,
            Protocol::Postgres | Protocol::Http | Protocol::Mysql
        ) && c.metadata.namespace.as_deref() == Some(namespace)
    }) {
        connections.push(connection(set, namespace, conn)?);
    }
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    // Policies of the namespace may name any of its Secrets' keys.
    let secret_keys = set
        .secrets
        .iter()
        .filter(|((ns, _), _)| ns == namespace)
        .flat_map(|((_, secret), data)| {
            data.iter().map(move |(key, value)| BundleSecretKey {
                secret: secret.clone(),
                key: key.clone(),
                value: b64(value),
            })
        })
        .collect();
    Ok(Bundle {
        revision: LOCAL_REVISION.to_string(),
        identity: BundleIdentity {
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            pod: String::new(),
            groups: identity.groups.clone(),
        },
        // Local manifests do not expire (only run mode reads this).
        expires_at: "9999-12-31T23:59:59Z".to_string(),
        connections,
        // Policies name Connections of their own namespace: only those of
        // the identity's namespace can apply to the Connections served here.
        policies: set.policies_in(namespace).cloned().collect(),
        secret_keys,
    })
}

/// One Connection of the bundle, with its credentials, CA and hash key
/// from the manifests' Secrets; `Err` names what is missing.
fn connection(
    set: &ManifestSet,
    namespace: &str,
    conn: &Connection,
) -> Result<BundleConnection, StandaloneError> {
    let name = conn.metadata.name.clone().unwrap_or_default();
    let missing = |what: String| StandaloneError::Credentials {
        namespace: namespace.to_string(),
        connection: name.clone(),
        what,
    };
    let secret = &conn.spec.credentials.secret_ref.name;
    let key = |k: &str, why: &str| {
        set.secret_key(namespace, secret, k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| missing(format!("Secret {namespace}/{secret} has no key {k:?}{why}")))
    };
    let mut credentials = std::collections::BTreeMap::new();
    if conn.spec.protocol == Protocol::Http {
        if conn.spec.upstream.base_url.is_none() {
            return Err(missing(
                "spec.upstream.baseURL is not set (http Connections need it)".into(),
            ));
        }
        let keys: Vec<String> = match &conn.spec.credentials.headers {
            Some(headers) => headers.clone(),
            None => set
                .secrets
                .get(&(namespace.to_string(), secret.clone()))
                .map(|data| data.keys().cloned().collect())
                .ok_or_else(|| missing(format!("Secret {namespace}/{secret} is missing")))?,
        };
        for k in keys {
            let v = key(&k, " (named by spec.credentials.headers)")?;
            credentials.insert(k, v);
        }
    } else {
        for k in ["username", "password"] {
            credentials.insert(k.to_string(), key(k, "")?);
        }
        if conn.spec.upstream.host.is_none() {
            return Err(StandaloneError::NoHost {
                namespace: namespace.to_string(),
                connection: name,
            });
        }
    }
    let ca_pem = match conn
        .spec
        .upstream
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
    {
        None => None,
        Some(r) => Some(
            set.secret_key(namespace, &r.name, &r.key)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .ok_or_else(|| {
                    missing(format!(
                        "the CA Secret {namespace}/{} (key {:?}) named by spec.upstream.tls.caSecretRef is missing",
                        r.name, r.key
                    ))
                })?,
        ),
    };
    let hash_key = conn
        .spec
        .credentials
        .hash_key_secret_ref
        .as_ref()
        .and_then(|r| set.secret_key(namespace, &r.name, &r.key))
        .map(|k| base64::engine::general_purpose::STANDARD.encode(k));
    Ok(BundleConnection {
        name,
        spec: conn.spec.clone(),
        // Whether a policy binds the identity is for the policies to say.
        bound: true,
        credentials: Some(credentials),
        ca_pem,
        hash_key,
    })
}
