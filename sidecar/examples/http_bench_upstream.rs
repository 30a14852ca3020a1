//! The HTTPS upstream of `sidecar/bench/http_bench.sh` (the same server the
//! HTTP tests use, sidecar/tests/http_support): writes `port` and `ca.pem`
//! into the directory given as its argument (or `$SLUICE_BENCH_UPSTREAM_DIR`)
//! and serves until `stop` appears there (or an hour passes).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/http_support/mod.rs"]
mod http_support;

use std::path::PathBuf;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SLUICE_BENCH_UPSTREAM_DIR").ok())
        .map(PathBuf::from)
        .expect("usage: http_bench_upstream DIR (or SLUICE_BENCH_UPSTREAM_DIR)");
    let (addr, ca) = http_support::start_upstream(tls()).await;
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("port"), addr.port().to_string()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while !dir.join("stop").exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA and a server certificate for `localhost`/`127.0.0.1` (as the tests'
/// `common::tls_upstream_acceptor`, which this binary cannot include).
fn tls() -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice http bench CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)),
        ca_cert.pem(),
    )
}
