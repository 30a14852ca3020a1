//! TLS from the sidecar to the upstream PostgreSQL server, per the
//! Connection's `spec.upstream.tls.mode`, with rustls (ring).
//!
//! - `disable`: plain TCP.
//! - `require`: TLS; the certificate is not checked (the handshake signatures are).
//! - `verify-ca`: the chain must lead to the CA; the host name is not checked.
//! - `verify-full`: chain and host name are checked.
//!
//! The CA is the PEM bundle of the Secret named by `caSecretRef`, or the
//! system's trust roots when there is none.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::Digest;
use sluice_crds::TlsMode;

/// Why TLS to the upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle holds no usable certificate.
    #[error(
        "the CA bundle for connection {connection} holds no PEM certificate; put the CA in the Secret key named by caSecretRef"
    )]
    EmptyCa {
        /// The Connection.
        connection: String,
    },
    /// The CA bundle is not valid PEM.
    #[error("the CA bundle for connection {connection} is not valid PEM")]
    BadCa {
        /// The Connection.
        connection: String,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A CA certificate was refused by rustls.
    #[error("a CA certificate for connection {connection} is invalid")]
    BadCaCert {
        /// The Connection.
        connection: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The verifier could not be built.
    #[error("cannot build the certificate verifier for connection {connection}")]
    Verifier {
        /// The Connection.
        connection: String,
        /// The builder error.
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    /// The protocol versions could not be set.
    #[error("cannot configure TLS for connection {connection}")]
    Config {
        /// The Connection.
        connection: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// No system trust roots could be loaded and no CA was given.
    #[error(
        "connection {connection} uses tls mode {mode} without caSecretRef, and no system CA certificates could be loaded"
    )]
    NoRoots {
        /// The Connection.
        connection: String,
        /// The mode.
        mode: &'static str,
    },
}

/// The mode's name as written in the API.
pub fn mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Disable => "disable",
        TlsMode::Require => "require",
        TlsMode::VerifyCa => "verify-ca",
        TlsMode::VerifyFull => "verify-full",
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for a mode, or `None` for `disable`.
pub fn client_config(
    connection: &str,
    mode: TlsMode,
    ca_pem: Option<&[u8]>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            connection: connection.into(),
            source,
        })?;
    let config = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = Arc::new(roots(connection, mode, ca_pem)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|source| TlsError::Verifier {
                    connection: connection.into(),
                    source,
                })?;
            if mode == TlsMode::VerifyCa {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner: webpki }))
                    .with_no_client_auth()
            } else {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            }
        }
    };
    Ok(Some(Arc::new(config)))
}

fn roots(
    connection: &str,
    mode: TlsMode,
    ca_pem: Option<&[u8]>,
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|source| TlsError::BadCa {
                    connection: connection.into(),
                    source,
                })?;
                store.add(cert).map_err(|source| TlsError::BadCaCert {
                    connection: connection.into(),
                    source,
                })?;
            }
            if store.is_empty() {
                return Err(TlsError::EmptyCa {
                    connection: connection.into(),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoRoots {
                    connection: connection.into(),
                    mode: mode_name(mode),
                });
            }
        }
    }
    Ok(store)
}

/// The name the certificate is checked against (and sent as SNI).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// The `tls-server-end-point` channel binding (RFC 5929) of a server
/// certificate: its hash with the hash function of its signature algorithm
/// (SHA-256 for MD5 and SHA-1). `None` when the algorithm has no defined hash
/// (e.g. Ed25519), in which case channel binding is not used.
pub fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let oid = parsed.signature_algorithm.algorithm.to_id_string();
    match oid.as_str() {
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Some(sha2::Sha256::digest(cert).to_vec()),
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => {
            Some(sha2::Sha384::digest(cert).to_vec())
        }
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => {
            Some(sha2::Sha512::digest(cert).to_vec())
        }
        _ => None,
    }
}

// === impl AnyCertificate ===

/// `require`: any certificate, but the handshake must be signed by its key.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl ChainOnly ===

/// `verify-ca`: the chain is verified; a name mismatch alone is accepted.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
