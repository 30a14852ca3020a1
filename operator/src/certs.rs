//! The operator's own CA and serving certificate as the running servers use
//! them (DESIGN §5): kept in a Secret in the operator's namespace, presented
//! through a [`HotCertResolver`] so a renewal reaches new handshakes without a
//! restart, and — by the leader only — trusted in the webhook configuration's
//! `caBundle`, patched when the bytes differ.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::pki::{self, HotCertResolver, Lifetimes, OperatorPki, PkiError, Renewal, SubjectNames};
use crate::webhook_config::{
    CONFIGURATION_NAME, WebhookSettings, ca_bundle_differs, pod_injection_configuration,
};

/// Name of the Secret holding the operator's CA and serving certificate.
pub const TLS_SECRET: &str = "sluice-operator-tls";
/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sluice-operator";

/// Why the certificates could not be read, written, served or registered.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The API server refused or failed.
    #[error("could not {action} (operator namespace {namespace})")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The operator's namespace.
        namespace: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The certificates could not be made or used.
    #[error("the operator certificates in Secret {namespace}/{TLS_SECRET} are unusable")]
    Pki {
        /// The operator's namespace.
        namespace: String,
        /// What is wrong.
        #[source]
        source: PkiError,
    },
}

/// The certificates being served, and how to keep them current.
#[derive(Clone)]
pub struct ServingCerts {
    api: Api<Secret>,
    namespace: String,
    names: SubjectNames,
    current: Arc<ArcSwap<OperatorPki>>,
    resolver: Arc<HotCertResolver>,
}

impl ServingCerts {
    /// Reads the Secret, creating or renewing the certificates for `names`
    /// when needed (and writing them back), and starts serving them.
    pub async fn load_or_create(
        client: Client,
        namespace: &str,
        names: SubjectNames,
    ) -> Result<ServingCerts, CertsError> {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let existing = read(&api, namespace).await?;
        let (pki, renewal) = pki::ensure(
            existing.clone(),
            &names,
            SystemTime::now(),
            &Lifetimes::default(),
        )
        .map_err(|source| pki_error(namespace, source))?;
        let pki = if renewal == Renewal::UpToDate {
            pki
        } else {
            write(&api, namespace, &pki, existing.is_some()).await?
        };
        let key = pki
            .serving
            .certified_key()
            .map_err(|source| pki_error(namespace, source))?;
        Ok(ServingCerts {
            api,
            namespace: namespace.to_string(),
            names,
            current: Arc::new(ArcSwap::from_pointee(pki)),
            resolver: HotCertResolver::new(key),
        })
    }

    /// The resolver the TLS server presents certificates through.
    pub fn resolver(&self) -> Arc<HotCertResolver> {
        self.resolver.clone()
    }

    /// The PEM clients (the API server, sidecars) trust.
    pub fn ca_bundle_pem(&self) -> String {
        self.current.load().ca_bundle_pem()
    }

    /// Re-reads the Secret; the leader (`renew`) also renews what is due and
    /// writes it. Swaps the served certificate when it changed.
    pub async fn refresh(&self, renew: bool) -> Result<(), CertsError> {
        let Some(stored) = read(&self.api, &self.namespace).await? else {
            return Ok(());
        };
        let pki = if renew {
            let (pki, renewal) = pki::ensure(
                Some(stored),
                &self.names,
                SystemTime::now(),
                &Lifetimes::default(),
            )
            .map_err(|source| pki_error(&self.namespace, source))?;
            if renewal == Renewal::UpToDate {
                pki
            } else {
                tracing::info!(?renewal, "renewing the operator certificates");
                write(&self.api, &self.namespace, &pki, true).await?
            }
        } else {
            stored
        };
        if pki.serving.cert_pem() != self.current.load().serving.cert_pem() {
            let key = pki
                .serving
                .certified_key()
                .map_err(|source| pki_error(&self.namespace, source))?;
            self.resolver.swap(key);
        }
        self.current.store(Arc::new(pki));
        Ok(())
    }

    /// Leader only: applies the webhook configuration when it is missing or
    /// trusts other bytes than the current CA bundle. Returns whether it wrote.
    pub async fn register_webhooks(
        &self,
        client: Client,
        settings: &WebhookSettings,
    ) -> Result<bool, CertsError> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client);
        let settings = WebhookSettings {
            ca_bundle_pem: self.ca_bundle_pem(),
            ..settings.clone()
        };
        let desired = pod_injection_configuration(&settings);
        let existing = api
            .get_opt(CONFIGURATION_NAME)
            .await
            .map_err(|source| self.api_error("read the MutatingWebhookConfiguration", source))?;
        if let Some(existing) = &existing
            && !ca_bundle_differs(existing, &settings.ca_bundle_pem)
            && existing.webhooks == desired.webhooks
        {
            return Ok(false);
        }
        let mut body = serde_json::to_value(&desired).unwrap_or_default();
        body["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        body["kind"] = "MutatingWebhookConfiguration".into();
        api.patch(
            CONFIGURATION_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| self.api_error("apply the MutatingWebhookConfiguration", source))?;
        Ok(true)
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> CertsError {
        CertsError::Api {
            action,
            namespace: self.namespace.clone(),
            source,
        }
    }
}

fn pki_error(namespace: &str, source: PkiError) -> CertsError {
    CertsError::Pki {
        namespace: namespace.to_string(),
        source,
    }
}

async fn read(api: &Api<Secret>, namespace: &str) -> Result<Option<OperatorPki>, CertsError> {
    let secret = api
        .get_opt(TLS_SECRET)
        .await
        .map_err(|source| CertsError::Api {
            action: "read the certificate Secret",
            namespace: namespace.to_string(),
            source,
        })?;
    let Some(data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    match OperatorPki::from_secret_data(&data) {
        Ok(pki) => Ok(Some(pki)),
        Err(error) => {
            // Unusable certificates are replaced, as the error message promises.
            tracing::warn!(error = %crate::error_chain(&error), "replacing unusable operator certificates");
            Ok(None)
        }
    }
}

/// Writes `pki`; when another replica wrote first, serves what it wrote instead.
async fn write(
    api: &Api<Secret>,
    namespace: &str,
    pki: &OperatorPki,
    exists: bool,
) -> Result<OperatorPki, CertsError> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(TLS_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        data: Some(pki.to_secret_data()),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    };
    let result = if exists {
        let mut body = serde_json::to_value(&secret).unwrap_or_default();
        body["apiVersion"] = "v1".into();
        body["kind"] = "Secret".into();
        api.patch(
            TLS_SECRET,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map(|_| ())
    } else {
        api.create(&PostParams::default(), &secret)
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(pki.clone()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            read(api, namespace).await?.ok_or_else(|| CertsError::Pki {
                namespace: namespace.to_string(),
                source: PkiError::MissingSecretKey {
                    key: pki::SECRET_CA_CERT,
                },
            })
        }
        Err(source) => Err(CertsError::Api {
            action: "write the certificate Secret",
            namespace: namespace.to_string(),
            source,
        }),
    }
}
