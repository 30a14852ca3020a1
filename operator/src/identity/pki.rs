//! The operator's own PKI (DESIGN §5, webhook TLS): a CA, the serving certificate
//! it signs for the webhooks and the gateway API, the Secret they are kept in,
//! and a rustls server whose certificate is swapped without a restart.
//!
//! The CA's certificate is public: it goes into the webhook configurations'
//! `caBundle` and into every injected sidecar as `SLUICE_CA_PEM`. Because pods
//! keep the CA they were injected with, the CA lives long (ten years by default)
//! and only the serving certificate rotates often. When the CA itself is
//! renewed, the previous CA stays in [`OperatorPki::ca_bundle_pem`] so clients
//! that still hold it keep working until they are restarted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// Secret key of the current CA certificate (PEM).
pub const SECRET_CA_CERT: &str = "ca.crt";
/// Secret key of the current CA private key (PKCS#8 PEM).
pub const SECRET_CA_KEY: &str = "ca.key";
/// Secret key of the CA certificate replaced at the last CA renewal, if any.
pub const SECRET_PREVIOUS_CA_CERT: &str = "ca-previous.crt";
/// Secret key of the serving certificate (PEM), as in a `kubernetes.io/tls` Secret.
pub const SECRET_TLS_CERT: &str = "tls.crt";
/// Secret key of the serving private key (PKCS#8 PEM), as in a `kubernetes.io/tls` Secret.
pub const SECRET_TLS_KEY: &str = "tls.key";

/// Why a certificate could not be made, read or served.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key or certificate generation failed.
    #[error("could not generate the {what}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The generator's error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM block could not be read.
    #[error(
        "the {what} is not valid PEM; delete the Secret to have the operator create new certificates"
    )]
    Pem {
        /// Which PEM.
        what: &'static str,
        /// The PEM reader's error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate's DER could not be parsed.
    #[error(
        "the {what} is not a valid X.509 certificate; delete the Secret to have the operator create new certificates"
    )]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// A Secret lacks a key this module writes.
    #[error(
        "the certificate Secret has no key {key:?}; delete the Secret to have the operator create new certificates"
    )]
    MissingSecretKey {
        /// The missing key.
        key: &'static str,
    },
    /// A Secret value is not text.
    #[error("the certificate Secret's key {key:?} is not UTF-8 PEM")]
    NotUtf8 {
        /// The key.
        key: &'static str,
        /// The decoder's error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// The operating system gave no randomness.
    #[error("the operating system's random number generator failed")]
    Random {
        /// ring's (opaque) error.
        #[source]
        source: ring::error::Unspecified,
    },
    /// rustls refused the key or the configuration.
    #[error("TLS could not use the {what}")]
    Tls {
        /// What rustls was given.
        what: &'static str,
        /// Its error.
        #[source]
        source: rustls::Error,
    },
}

/// How long certificates live and when they are renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Validity of a new CA.
    pub ca_validity: Duration,
    /// Renew the CA when it expires within this.
    pub ca_renew_before: Duration,
    /// Validity of a new serving certificate.
    pub serving_validity: Duration,
    /// Renew the serving certificate when it expires within this.
    pub serving_renew_before: Duration,
}

impl Default for Lifetimes {
    /// Ten-year CA renewed a year ahead; 90-day serving certificate renewed 30 days ahead.
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Lifetimes {
            ca_validity: Duration::from_secs(3650 * DAY),
            ca_renew_before: Duration::from_secs(365 * DAY),
            serving_validity: Duration::from_secs(90 * DAY),
            serving_renew_before: Duration::from_secs(30 * DAY),
        }
    }
}

/// The names a serving certificate must cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectNames {
    /// DNS names, e.g. `sluice-operator.sluice-system.svc`.
    pub dns: Vec<String>,
    /// IP addresses, e.g. `127.0.0.1` when run from a laptop.
    pub ips: Vec<IpAddr>,
}

/// A certificate authority: its certificate and key, both PEM.
#[derive(Clone)]
pub struct Ca {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new self-signed CA (ECDSA P-256) valid from `now` for `validity`.
    pub fn generate(
        common_name: &str,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "CA key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, now, validity);
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from its PEM certificate and PKCS#8 PEM key, checking both
    /// parse and belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let ca = Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        certified_pair(cert_pem, key_pem, "CA certificate")?;
        ca.issuer()?;
        Ok(ca)
    }

    /// The CA certificate, PEM (public).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM (secret).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|source| PkiError::Generate {
            what: "CA key from its PEM",
            source,
        })?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|source| PkiError::Generate {
            what: "CA issuer from its certificate",
            source,
        })
    }

    /// Issues a serving certificate (ECDSA P-256, server auth) for `names`.
    pub fn issue_serving(
        &self,
        names: &SubjectNames,
        now: SystemTime,
        validity: Duration,
    ) -> Result<ServingCert, PkiError> {
        let issuer = self.issuer()?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "serving key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let common_name = names
            .dns
            .first()
            .cloned()
            .unwrap_or_else(|| "sluice-operator".into());
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for dns in &names.dns {
            let name = dns
                .clone()
                .try_into()
                .map_err(|source| PkiError::Generate {
                    what: "serving certificate's DNS name",
                    source,
                })?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(names.ips.iter().copied().map(SanType::IpAddress));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, now, validity);
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| PkiError::Generate {
                what: "serving certificate",
                source,
            })?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A serving certificate and its key, both PEM.
#[derive(Clone)]
pub struct ServingCert {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Wraps PEM read back from a Secret; [`ServingCert::certified_key`] checks it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> ServingCert {
        ServingCert {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        }
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 PEM (secret).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate and key in the form a rustls server presents; fails when
    /// the key is not the certificate's.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, PkiError> {
        certified_pair(&self.cert_pem, &self.key_pem, "serving certificate")
    }
}

/// Why [`ensure`] changed (or kept) the certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Everything is valid long enough and covers the names; nothing to write.
    UpToDate,
    /// There were no usable certificates: a new CA and serving certificate.
    Created,
    /// The CA was close to expiry: a new CA, and a serving certificate from it.
    NewCa,
    /// The serving certificate was close to expiry or lacked a name: reissued.
    NewServingCert,
}

/// Everything the operator keeps in its certificate Secret.
#[derive(Clone, Debug)]
pub struct OperatorPki {
    /// The current CA.
    pub ca: Ca,
    /// The CA replaced at the last CA renewal, trusted until clients restart.
    pub previous_ca_cert_pem: Option<String>,
    /// The serving certificate of the webhooks and the gateway API.
    pub serving: ServingCert,
}

impl OperatorPki {
    /// The PEM for `caBundle` and for clients: the current CA, then the previous one.
    pub fn ca_bundle_pem(&self) -> String {
        let mut bundle = self.ca.cert_pem().to_string();
        if let Some(previous) = &self.previous_ca_cert_pem {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(previous);
        }
        bundle
    }

    /// The Secret `data` holding these certificates (keys `SECRET_*`).
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_string(), ByteString(value.as_bytes().to_vec()));
        };
        put(SECRET_CA_CERT, self.ca.cert_pem());
        put(SECRET_CA_KEY, self.ca.key_pem());
        put(SECRET_TLS_CERT, self.serving.cert_pem());
        put(SECRET_TLS_KEY, self.serving.key_pem());
        if let Some(previous) = &self.previous_ca_cert_pem {
            put(SECRET_PREVIOUS_CA_CERT, previous);
        }
        data
    }

    /// Reads what [`OperatorPki::to_secret_data`] wrote, checking that it parses.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<OperatorPki, PkiError> {
        let text = |key: &'static str| -> Result<Option<String>, PkiError> {
            data.get(key)
                .map(|v| {
                    String::from_utf8(v.0.clone())
                        .map_err(|source| PkiError::NotUtf8 { key, source })
                })
                .transpose()
        };
        let required = |key: &'static str| text(key)?.ok_or(PkiError::MissingSecretKey { key });
        let ca = Ca::from_pem(&required(SECRET_CA_CERT)?, &required(SECRET_CA_KEY)?)?;
        let serving =
            ServingCert::from_pem(&required(SECRET_TLS_CERT)?, &required(SECRET_TLS_KEY)?);
        serving.certified_key()?;
        Ok(OperatorPki {
            ca,
            previous_ca_cert_pem: text(SECRET_PREVIOUS_CA_CERT)?,
            serving,
        })
    }
}

/// Brings the certificates to a usable state for `names` at `now`: creates them
/// when there are none, renews the CA or the serving certificate when close to
/// expiry, reissues the serving certificate when it lacks a name. The caller
/// writes the Secret (and patches `caBundle`) unless the result is
/// [`Renewal::UpToDate`].
pub fn ensure(
    existing: Option<OperatorPki>,
    names: &SubjectNames,
    now: SystemTime,
    lifetimes: &Lifetimes,
) -> Result<(OperatorPki, Renewal), PkiError> {
    const CA_NAME: &str = "sluice-operator-ca";
    let Some(current) = existing else {
        let ca = Ca::generate(CA_NAME, now, lifetimes.ca_validity)?;
        let serving = ca.issue_serving(names, now, lifetimes.serving_validity)?;
        let pki = OperatorPki {
            ca,
            previous_ca_cert_pem: None,
            serving,
        };
        return Ok((pki, Renewal::Created));
    };
    if needs_rotation(current.ca.cert_pem(), now, lifetimes.ca_renew_before)? {
        let ca = Ca::generate(CA_NAME, now, lifetimes.ca_validity)?;
        let serving = ca.issue_serving(names, now, lifetimes.serving_validity)?;
        let pki = OperatorPki {
            previous_ca_cert_pem: Some(current.ca.cert_pem().to_string()),
            ca,
            serving,
        };
        return Ok((pki, Renewal::NewCa));
    }
    let serving_pem = current.serving.cert_pem();
    if needs_rotation(serving_pem, now, lifetimes.serving_renew_before)?
        || !covers(serving_pem, names)?
    {
        let serving = current
            .ca
            .issue_serving(names, now, lifetimes.serving_validity)?;
        return Ok((OperatorPki { serving, ..current }, Renewal::NewServingCert));
    }
    Ok((current, Renewal::UpToDate))
}

/// Whether the first certificate in `cert_pem` expires within `renew_before` of
/// `now` (or already has, or is not yet valid).
pub fn needs_rotation(
    cert_pem: &str,
    now: SystemTime,
    renew_before: Duration,
) -> Result<bool, PkiError> {
    let der = first_cert(cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Certificate {
            what: "certificate",
            source: x509_error(e),
        })?;
    let validity = cert.validity();
    let now = OffsetDateTime::from(now);
    let renew_at = validity.not_after.to_datetime() - renew_before;
    Ok(now >= renew_at || now < validity.not_before.to_datetime())
}

/// Whether the first certificate in `cert_pem` names every DNS name and IP in `names`.
pub fn covers(cert_pem: &str, names: &SubjectNames) -> Result<bool, PkiError> {
    use x509_parser::extensions::GeneralName;
    let der = first_cert(cert_pem)?;
    let what = "serving certificate";
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Certificate {
            what,
            source: x509_error(e),
        })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|source| PkiError::Certificate { what, source })?;
    let general_names = san
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    let has_dns = |name: &str| {
        general_names
            .iter()
            .any(|g| matches!(g, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name)))
    };
    let has_ip = |ip: &IpAddr| {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        general_names
            .iter()
            .any(|g| matches!(g, GeneralName::IPAddress(bytes) if *bytes == octets.as_slice()))
    };
    Ok(names.dns.iter().all(|d| has_dns(d)) && names.ips.iter().all(has_ip))
}

/// The certificate a TLS server presents, swapped atomically while serving:
/// handshakes already under way keep the key they started with, new ones get
/// the new one.
#[derive(Debug)]
pub struct HotCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl HotCertResolver {
    /// Starts serving `initial`.
    pub fn new(initial: Arc<CertifiedKey>) -> Arc<HotCertResolver> {
        Arc::new(HotCertResolver {
            current: ArcSwap::new(initial),
        })
    }

    /// Serves `next` from the next handshake on.
    pub fn swap(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }

    /// The certificate presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
    /// authentication) presenting this resolver's certificate, advertising `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| PkiError::Tls {
                what: "protocol versions",
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for HotCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads a certificate chain and its key, and checks the key is the first
/// certificate's.
fn certified_pair(
    cert_pem: &str,
    key_pem: &str,
    what: &'static str,
) -> Result<Arc<CertifiedKey>, PkiError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PkiError::Pem { what, source })?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| PkiError::Pem {
            what: "private key",
            source,
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|source| PkiError::Tls { what, source })?;
    Ok(Arc::new(certified))
}

fn first_cert(cert_pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| PkiError::Pem {
        what: "certificate",
        source,
    })
}

fn x509_error(
    e: x509_parser::nom::Err<x509_parser::error::X509Error>,
) -> x509_parser::error::X509Error {
    match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => x509_parser::error::X509Error::InvalidCertificate,
    }
}

/// Backdates by five minutes so a client whose clock is slightly behind still
/// accepts a certificate made a moment ago.
fn set_validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    let now = OffsetDateTime::from(now);
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + validity;
}

/// A positive 16-byte serial, random so two certificates never share one.
fn random_serial() -> Result<SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|source| PkiError::Random { source })?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests;
