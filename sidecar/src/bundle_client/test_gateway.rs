//! Test equipment: a stand-in for the operator's gateway over HTTPS, with a
//! CA of its own, for the tests of [`super::GatewayClient`] and of run mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::Accept;

/// A TLS listener on a loopback port whose certificate its own CA signed;
/// it accepts until dropped.
pub(crate) struct TestGateway {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// PEM of the CA the client is to trust.
    pub ca_pem: String,
    task: JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestGateway {
    /// Accepts connections until dropped: `connection` is called as each
    /// is accepted, with its TLS handshake to await, and the future it
    /// returns runs on a task of its own.
    pub async fn start<F, Fut>(connection: F) -> TestGateway
    where
        F: Fn(Accept<TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::start_offering(&[], connection).await
    }

    /// As [`TestGateway::start`], offering `alpn` in the TLS handshake.
    pub async fn start_offering<F, Fut>(alpn: &[&[u8]], connection: F) -> TestGateway
    where
        F: Fn(Accept<TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(connection(acceptor.accept(tcp)));
            }
        });
        TestGateway {
            url,
            ca_pem: ca_cert.pem(),
            task,
        }
    }
}
