//! The gateway signing keys as every replica holds them: read from (or first
//! written to) a Secret in the operator's namespace, re-read periodically so
//! a rotation by the leader reaches every replica, rotated and pruned by the
//! leader only.
//!
//! Rotation never breaks tokens in flight: the old key stays in the Secret
//! (and so in every replica's [`KeySet`]) for longer than a token lives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::gateway::token::{KeySet, TokenError};

/// Name of the Secret holding the gateway signing keys.
pub const KEYS_SECRET: &str = "sluice-gateway-keys";
/// Age at which the leader adds a new signing key.
pub const ROTATE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long a replaced key keeps verifying: more than a gateway token lives,
/// plus the time replicas take to re-read the Secret.
pub const RETAIN_REPLACED: Duration = Duration::from_secs(3600);

/// Why the keys could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The API server refused or failed.
    #[error("could not read or write Secret {namespace}/{KEYS_SECRET}")]
    Api {
        /// The operator's namespace.
        namespace: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The Secret holds something unusable, or a key could not be made.
    #[error("the gateway signing keys in Secret {namespace}/{KEYS_SECRET} are unusable")]
    Keys {
        /// The operator's namespace.
        namespace: String,
        /// What is wrong.
        #[source]
        source: TokenError,
    },
}

/// The key set every request handler reads; swapped whole on change.
#[derive(Clone)]
pub struct GatewayKeys {
    current: Arc<ArcSwap<KeySet>>,
    api: Api<Secret>,
    namespace: String,
}

impl GatewayKeys {
    /// Reads the key Secret, creating it with a fresh key when there is none.
    pub async fn load_or_create(client: Client, namespace: &str) -> Result<GatewayKeys, KeysError> {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let keys = GatewayKeys {
            current: Arc::new(ArcSwap::from_pointee(KeySet::default())),
            api,
            namespace: namespace.to_string(),
        };
        keys.refresh().await?;
        if keys.get().current().is_none() {
            let fresh =
                KeySet::generate(SystemTime::now()).map_err(|source| keys.keys_error(source))?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(KEYS_SECRET.to_string()),
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                },
                data: Some(fresh.to_secret_data()),
                type_: Some("Opaque".to_string()),
                ..Default::default()
            };
            match keys.api.create(&PostParams::default(), &secret).await {
                Ok(_) => keys.current.store(Arc::new(fresh)),
                // Another replica created it first: use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => keys.refresh().await?,
                Err(source) => return Err(keys.api_error(source)),
            }
        }
        Ok(keys)
    }

    /// The keys now.
    pub fn get(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Re-reads the Secret (another replica may have rotated).
    pub async fn refresh(&self) -> Result<(), KeysError> {
        let Some(secret) = self
            .api
            .get_opt(KEYS_SECRET)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let data: BTreeMap<String, ByteString> = secret.data.unwrap_or_default();
        let set = KeySet::from_secret_data(&data).map_err(|source| self.keys_error(source))?;
        // The same keys keep their set: the tokens verified under it stay
        // remembered (`crate::gateway::verified`), where a new set had every
        // sidecar's token verified again after each periodic re-read (#25).
        if !self.get().same_keys(&set) {
            self.current.store(Arc::new(set));
        }
        Ok(())
    }

    /// Leader only: adds a key when the current one is old, drops keys
    /// replaced long ago, and writes the Secret when anything changed.
    pub async fn rotate_if_due(&self, now: SystemTime) -> Result<bool, KeysError> {
        let mut set = (*self.get()).clone();
        let mut changed = false;
        if set.needs_rotation(now, ROTATE_AFTER) {
            set.rotate(now).map_err(|source| self.keys_error(source))?;
            changed = true;
        }
        changed |= set.prune(now, RETAIN_REPLACED);
        if !changed {
            return Ok(false);
        }
        let mut secret = self
            .api
            .get(KEYS_SECRET)
            .await
            .map_err(|e| self.api_error(e))?;
        secret.data = Some(set.to_secret_data());
        secret.string_data = None;
        // Replace with the resourceVersion read: a concurrent writer makes this fail, not overwrite.
        self.api
            .replace(KEYS_SECRET, &PostParams::default(), &secret)
            .await
            .map_err(|e| self.api_error(e))?;
        self.current.store(Arc::new(set));
        Ok(true)
    }

    fn api_error(&self, source: kube::Error) -> KeysError {
        KeysError::Api {
            namespace: self.namespace.clone(),
            source,
        }
    }

    fn keys_error(&self, source: TokenError) -> KeysError {
        KeysError::Keys {
            namespace: self.namespace.clone(),
            source,
        }
    }
}
