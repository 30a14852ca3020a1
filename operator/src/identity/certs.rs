//! The serving certificate as the running servers use it (DESIGN §5),
//! presented through a [`HotCertResolver`] so a renewal reaches new handshakes
//! without a restart. It comes from one of two [`CertSource`]s:
//!
//! - the operator's own CA (the default): kept in a Secret in the operator's
//!   namespace, renewed by the leader, and trusted in the webhook
//!   configurations' `caBundle`, which the leader patches when the bytes differ;
//! - a directory (`--cert-dir`), typically cert-manager's `kubernetes.io/tls`
//!   Secret mounted into the pod: `tls.crt`, `tls.key` and `ca.crt`, re-read
//!   every few seconds so a renewal is served without a restart. The operator
//!   never writes these. With `--cert-manager-certificate` the webhook
//!   configurations carry `cert-manager.io/inject-ca-from` and their
//!   `caBundle` is left to cert-manager's cainjector; without it the operator
//!   puts `ca.crt` there itself. Either way sidecars get `ca.crt` as the CA of
//!   the gateway.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::FIELD_MANAGER;
use crate::identity::pki::{
    self, HotCertResolver, Lifetimes, OperatorPki, PkiError, Renewal, SubjectNames,
};
use crate::identity::webhook_config::{
    CONFIGURATION_NAME, WebhookSettings, Written, mutating_needs_apply,
    pod_injection_configuration, write_configuration,
};

/// Name of the Secret holding the operator's CA and serving certificate.
pub const TLS_SECRET: &str = "sluice-operator-tls";
/// File of the serving certificate (chain) in a `--cert-dir`, as cert-manager writes it.
pub const DIR_CERT: &str = "tls.crt";
/// File of the serving key in a `--cert-dir`.
pub const DIR_KEY: &str = "tls.key";
/// File of the CA that signed the serving certificate, in a `--cert-dir`.
pub const DIR_CA: &str = "ca.crt";

/// Where the serving certificate comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CertSource {
    /// The operator's own CA, in Secret [`TLS_SECRET`].
    #[default]
    SelfManaged,
    /// Files someone else keeps current (`--cert-dir`).
    Dir {
        /// The directory holding [`DIR_CERT`], [`DIR_KEY`] and [`DIR_CA`].
        dir: PathBuf,
        /// `NAMESPACE/NAME` of the cert-manager Certificate behind the files
        /// (`--cert-manager-certificate`): cainjector fills `caBundle` then.
        ca_injection_from: Option<String>,
    },
}

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
    /// A file of `--cert-dir` could not be read.
    #[error(
        "cannot read {file} in the certificate directory {dir} (--cert-dir); with cert-manager, check the Certificate is Ready and its Secret mounted"
    )]
    DirRead {
        /// The directory.
        dir: PathBuf,
        /// The file name.
        file: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The files of `--cert-dir` are not a usable certificate, key and CA.
    #[error("the certificate files in {dir} (--cert-dir) are unusable: {what}: {reason}")]
    DirUnusable {
        /// The directory.
        dir: PathBuf,
        /// Which file or pair.
        what: &'static str,
        /// The innermost cause.
        reason: String,
    },
}

/// The certificates being served, and how to keep them current.
#[derive(Clone)]
pub struct ServingCerts {
    backing: Backing,
    resolver: Arc<HotCertResolver>,
}

#[derive(Clone)]
// Cloned rarely (once per server part); boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
enum Backing {
    Secret {
        api: Api<Secret>,
        namespace: String,
        names: SubjectNames,
        current: Arc<ArcSwap<OperatorPki>>,
    },
    Dir {
        dir: PathBuf,
        ca_injection_from: Option<String>,
        current: Arc<ArcSwap<DirFiles>>,
    },
}

/// What was read from a `--cert-dir`. The key stays out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
struct DirFiles {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl DirFiles {
    fn read(dir: &Path) -> Result<DirFiles, CertsError> {
        let read = |file: &'static str| {
            std::fs::read_to_string(dir.join(file)).map_err(|source| CertsError::DirRead {
                dir: dir.to_path_buf(),
                file,
                source,
            })
        };
        Ok(DirFiles {
            cert_pem: read(DIR_CERT)?,
            key_pem: read(DIR_KEY)?,
            ca_pem: read(DIR_CA)?,
        })
    }

    /// The pair rustls serves, after checking `ca.crt` holds certificates.
    fn certified_key(&self, dir: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, CertsError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let unusable = |what: &'static str, reason: String| CertsError::DirUnusable {
            dir: dir.to_path_buf(),
            what,
            reason,
        };
        let cas = CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(DIR_CA, e.to_string()))?;
        if cas.is_empty() {
            return Err(unusable(
                DIR_CA,
                "no certificate in it (the issuer must publish its CA; a cert-manager CA or self-signed Issuer does)".into(),
            ));
        }
        pki::ServingCert::from_pem(&self.cert_pem, &self.key_pem)
            .certified_key()
            .map_err(|error| {
                let mut inner: &dyn std::error::Error = &error;
                while let Some(next) = inner.source() {
                    inner = next;
                }
                unusable("tls.crt and tls.key", inner.to_string())
            })
    }
}

impl ServingCerts {
    /// Starts serving from `source`: the Secret (created or renewed as
    /// needed) or the directory's files.
    pub async fn start(
        client: Client,
        namespace: &str,
        names: SubjectNames,
        source: &CertSource,
    ) -> Result<ServingCerts, CertsError> {
        match source {
            CertSource::SelfManaged => Self::load_or_create(client, namespace, names).await,
            CertSource::Dir {
                dir,
                ca_injection_from,
            } => Self::from_dir(dir, ca_injection_from.clone(), &names),
        }
    }

    /// Serves the files in `dir` ([`DIR_CERT`], [`DIR_KEY`], [`DIR_CA`]).
    pub fn from_dir(
        dir: &Path,
        ca_injection_from: Option<String>,
        names: &SubjectNames,
    ) -> Result<ServingCerts, CertsError> {
        let files = DirFiles::read(dir)?;
        let key = files.certified_key(dir)?;
        warn_unless_covered(&files.cert_pem, names);
        Ok(ServingCerts {
            backing: Backing::Dir {
                dir: dir.to_path_buf(),
                ca_injection_from,
                current: Arc::new(ArcSwap::from_pointee(files)),
            },
            resolver: HotCertResolver::new(key),
        })
    }

    /// Whether the files are re-read from a directory (and should be polled).
    pub fn is_dir(&self) -> bool {
        matches!(self.backing, Backing::Dir { .. })
    }

    /// `NAMESPACE/NAME` of the cert-manager Certificate whose CA cainjector
    /// puts into `caBundle`, when it does.
    pub fn ca_injection_from(&self) -> Option<String> {
        match &self.backing {
            Backing::Dir {
                ca_injection_from, ..
            } => ca_injection_from.clone(),
            Backing::Secret { .. } => None,
        }
    }

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
            backing: Backing::Secret {
                api,
                namespace: namespace.to_string(),
                names,
                current: Arc::new(ArcSwap::from_pointee(pki)),
            },
            resolver: HotCertResolver::new(key),
        })
    }

    /// The resolver the TLS server presents certificates through.
    pub fn resolver(&self) -> Arc<HotCertResolver> {
        self.resolver.clone()
    }

    /// The PEM clients (the API server, sidecars) trust: the operator's CA
    /// bundle, or `ca.crt` of the directory.
    pub fn ca_bundle_pem(&self) -> String {
        match &self.backing {
            Backing::Secret { current, .. } => current.load().ca_bundle_pem(),
            Backing::Dir { current, .. } => current.load().ca_pem.clone(),
        }
    }

    /// Re-reads the Secret or the directory; for the Secret, the leader
    /// (`renew`) also renews what is due and writes it. Swaps the served
    /// certificate when it changed. Files that do not make a usable pair
    /// (say, read half-way through an update) leave the current one served.
    pub async fn refresh(&self, renew: bool) -> Result<(), CertsError> {
        let (api, namespace, names, current) = match &self.backing {
            Backing::Secret {
                api,
                namespace,
                names,
                current,
            } => (api, namespace, names, current),
            Backing::Dir { dir, current, .. } => {
                let files = DirFiles::read(dir)?;
                if **current.load() == files {
                    return Ok(());
                }
                let key = files.certified_key(dir)?;
                self.resolver.swap(key);
                tracing::info!(dir = %dir.display(), "serving the renewed certificate from the certificate directory");
                current.store(Arc::new(files));
                return Ok(());
            }
        };
        let Some(stored) = read(api, namespace).await? else {
            return Ok(());
        };
        let pki = if renew {
            let (pki, renewal) = pki::ensure(
                Some(stored),
                names,
                SystemTime::now(),
                &Lifetimes::default(),
            )
            .map_err(|source| pki_error(namespace, source))?;
            if renewal == Renewal::UpToDate {
                pki
            } else {
                tracing::info!(?renewal, "renewing the operator certificates");
                write(api, namespace, &pki, true).await?
            }
        } else {
            stored
        };
        if pki.serving.cert_pem() != current.load().serving.cert_pem() {
            let key = pki
                .serving
                .certified_key()
                .map_err(|source| pki_error(namespace, source))?;
            self.resolver.swap(key);
        }
        current.store(Arc::new(pki));
        Ok(())
    }

    /// The webhook settings with this source's trust: the CA bundle, or the
    /// cainjector annotation.
    pub fn webhook_settings(&self, settings: &WebhookSettings) -> WebhookSettings {
        WebhookSettings {
            ca_bundle_pem: self.ca_bundle_pem(),
            ca_injection_from: self.ca_injection_from(),
            ..settings.clone()
        }
    }

    /// Leader only: writes the webhook configuration when it is missing (unless
    /// `adopt`) or differs, e.g. trusts other bytes than the current CA bundle.
    pub async fn register_webhooks(
        &self,
        client: Client,
        settings: &WebhookSettings,
        adopt: bool,
    ) -> Result<Written, CertsError> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client);
        let settings = self.webhook_settings(settings);
        let desired = pod_injection_configuration(&settings);
        write_configuration(
            &api,
            CONFIGURATION_NAME,
            &desired,
            adopt,
            mutating_needs_apply,
        )
        .await
        .map_err(|source| self.api_error("write the MutatingWebhookConfiguration", source))
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> CertsError {
        let namespace = match &self.backing {
            Backing::Secret { namespace, .. } => namespace.clone(),
            Backing::Dir { dir, .. } => format!("certificates from {}", dir.display()),
        };
        CertsError::Api {
            action,
            namespace,
            source,
        }
    }
}

/// A certificate from elsewhere that lacks a name the API server or sidecars
/// use fails their handshakes; say so at start-up rather than only in their logs.
fn warn_unless_covered(cert_pem: &str, names: &SubjectNames) {
    match pki::covers(cert_pem, names) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            dns = ?names.dns,
            ips = ?names.ips,
            "the certificate in the certificate directory does not name every host the webhooks and the gateway are reached at; handshakes to a missing name fail"
        ),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "could not read the names of the certificate in the certificate directory")
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
