//! Certificates: a caBundle's expiry, and a probe of the operator's
//! `/readyz` over TLS trusting only that caBundle.

use super::PROBE_TIMEOUT;
use std::sync::Arc;

/// The earliest `notAfter` of the certificates in a caBundle, or what is wrong with it.
pub fn ca_bundle_expiry(pem: &[u8]) -> Result<i64, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Err("no caBundle".to_string());
    }
    let mut earliest: Option<i64> = None;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("a caBundle that is not PEM ({e})"))?;
        let not_after = not_after(&cert)
            .map_err(|e| format!("a caBundle certificate that does not parse ({e})"))?;
        earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
    }
    earliest.ok_or_else(|| "a caBundle without a certificate".to_string())
}

pub(super) fn not_after(der: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

/// What the operator's `/readyz` answered.
pub(super) struct Probe {
    /// `https://HOST:PORT`.
    pub(super) base: String,
    /// The HTTP status.
    pub(super) status: u16,
    /// The serving certificate's `notAfter`.
    pub(super) not_after: i64,
}

/// GETs `/readyz` from the webhook URL's host over TLS, trusting only the
/// webhook's caBundle (what the API server does when it calls the webhook).
pub(super) async fn probe(url: &str, ca_pem: &[u8]) -> Result<Probe, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the webhook URL does not parse ({e})"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the webhook URL is not https".to_string());
    }
    let host = uri
        .host()
        .ok_or("the webhook URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let base = format!("https://{authority}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("the caBundle is not PEM ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the caBundle holds an unusable certificate ({e})"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed ({e})"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        ServerName::try_from(host.clone()).map_err(|e| format!("bad host {host:?} ({e})"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect ({e})"))?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| {
            format!("TLS handshake failed ({e}); is caBundle the CA of the serving certificate?")
        })?;
        let not_after = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no serving certificate".to_string())
            .and_then(|c| not_after(c))?;
        tls.write_all(
            format!("GET /readyz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| format!("cannot send ({e})"))?;
        // The status line is all we need; read a bounded head.
        let mut head = vec![0u8; 1024];
        let mut filled = 0;
        while filled < head.len() && !head[..filled].contains(&b'\n') {
            let n = tls
                .read(&mut head[filled..])
                .await
                .map_err(|e| format!("cannot read ({e})"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let line = String::from_utf8_lossy(&head[..filled]);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| "no HTTP answer".to_string())?;
        Ok::<_, String>((status, not_after))
    };
    let (status, not_after) = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))??;
    Ok(Probe {
        base,
        status,
        not_after,
    })
}
