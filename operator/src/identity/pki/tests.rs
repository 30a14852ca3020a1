use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn names() -> SubjectNames {
    SubjectNames {
        dns: vec![
            "localhost".into(),
            "sluice-operator.sluice-system.svc".into(),
        ],
        ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

#[test]
fn serving_cert_covers_its_names_only() {
    let ca = Ca::generate("test-ca", start(), 365 * DAY).unwrap();
    let serving = ca.issue_serving(&names(), start(), 90 * DAY).unwrap();
    assert!(covers(serving.cert_pem(), &names()).unwrap());
    let mut more = names();
    more.dns.push("other.example".into());
    assert!(!covers(serving.cert_pem(), &more).unwrap());
    let mut other_ip = names();
    other_ip.ips = vec!["10.0.0.1".parse().unwrap()];
    assert!(!covers(serving.cert_pem(), &other_ip).unwrap());
    assert!(serving.certified_key().is_ok());
}

#[test]
fn needs_rotation_at_the_renewal_point() {
    let ca = Ca::generate("test-ca", start(), 365 * DAY).unwrap();
    let serving = ca.issue_serving(&names(), start(), 90 * DAY).unwrap();
    let pem = serving.cert_pem();
    let renew_at = start() + 60 * DAY;
    assert!(!needs_rotation(pem, start(), 30 * DAY).unwrap());
    assert!(!needs_rotation(pem, renew_at - Duration::from_secs(1), 30 * DAY).unwrap());
    assert!(needs_rotation(pem, renew_at, 30 * DAY).unwrap());
    assert!(
        needs_rotation(pem, start() + 100 * DAY, 30 * DAY).unwrap(),
        "expired"
    );
    assert!(
        needs_rotation(pem, start() - DAY, 30 * DAY).unwrap(),
        "not yet valid"
    );
}

#[test]
fn garbage_is_a_clear_error() {
    let error = needs_rotation("not a certificate", start(), DAY).unwrap_err();
    assert!(matches!(error, PkiError::Pem { .. }), "{error:?}");
    let error = Ca::from_pem(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "x",
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            PkiError::Pem {
                what: "private key",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("delete the Secret"), "{error}");
}

#[test]
fn key_of_another_certificate_is_refused() {
    let ca = Ca::generate("test-ca", start(), 365 * DAY).unwrap();
    let other = Ca::generate("other-ca", start(), 365 * DAY).unwrap();
    let error = Ca::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
    assert!(
        matches!(
            error,
            PkiError::Tls {
                what: "CA certificate",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(Ca::from_pem(ca.cert_pem(), ca.key_pem()).is_ok());

    let a = ca.issue_serving(&names(), start(), DAY).unwrap();
    let b = ca.issue_serving(&names(), start(), DAY).unwrap();
    let mixed = ServingCert::from_pem(a.cert_pem(), b.key_pem());
    assert!(mixed.certified_key().is_err());
}

#[test]
fn ensure_creates_then_keeps_then_renews() {
    let lifetimes = Lifetimes::default();
    let (pki, renewal) = ensure(None, &names(), start(), &lifetimes).unwrap();
    assert_eq!(renewal, Renewal::Created);
    assert!(pki.previous_ca_cert_pem.is_none());

    let (same, renewal) = ensure(Some(pki.clone()), &names(), start() + DAY, &lifetimes).unwrap();
    assert_eq!(renewal, Renewal::UpToDate);
    assert_eq!(same.serving.cert_pem(), pki.serving.cert_pem());

    // Close to the serving certificate's expiry: reissued by the same CA.
    let later = start() + 61 * DAY;
    let (renewed, renewal) = ensure(Some(pki.clone()), &names(), later, &lifetimes).unwrap();
    assert_eq!(renewal, Renewal::NewServingCert);
    assert_eq!(renewed.ca.cert_pem(), pki.ca.cert_pem());
    assert_ne!(renewed.serving.cert_pem(), pki.serving.cert_pem());
    assert!(
        !needs_rotation(
            renewed.serving.cert_pem(),
            later,
            lifetimes.serving_renew_before
        )
        .unwrap()
    );

    // A new name (say --webhook-url changed host): reissued.
    let mut more = names();
    more.dns.push("operator.example".into());
    let (renamed, renewal) = ensure(Some(pki.clone()), &more, start() + DAY, &lifetimes).unwrap();
    assert_eq!(renewal, Renewal::NewServingCert);
    assert!(covers(renamed.serving.cert_pem(), &more).unwrap());

    // Close to the CA's expiry: a new CA, the old one kept in the bundle.
    let much_later = start() + 3300 * DAY;
    let (rotated, renewal) = ensure(Some(pki.clone()), &names(), much_later, &lifetimes).unwrap();
    assert_eq!(renewal, Renewal::NewCa);
    assert_ne!(rotated.ca.cert_pem(), pki.ca.cert_pem());
    assert_eq!(
        rotated.previous_ca_cert_pem.as_deref(),
        Some(pki.ca.cert_pem())
    );
    let bundle = rotated.ca_bundle_pem();
    assert_eq!(CertificateDer::pem_slice_iter(bundle.as_bytes()).count(), 2);
}

#[test]
fn secret_data_round_trip() {
    let (pki, _) = ensure(None, &names(), start(), &Lifetimes::default()).unwrap();
    let pki = OperatorPki {
        previous_ca_cert_pem: Some(pki.ca.cert_pem().to_string()),
        ..pki
    };
    let data = pki.to_secret_data();
    for key in [
        SECRET_CA_CERT,
        SECRET_CA_KEY,
        SECRET_TLS_CERT,
        SECRET_TLS_KEY,
        SECRET_PREVIOUS_CA_CERT,
    ] {
        assert!(data.contains_key(key), "{key} missing");
    }
    let loaded = OperatorPki::from_secret_data(&data).unwrap();
    assert_eq!(loaded.ca.cert_pem(), pki.ca.cert_pem());
    assert_eq!(loaded.ca.key_pem(), pki.ca.key_pem());
    assert_eq!(loaded.serving.cert_pem(), pki.serving.cert_pem());
    assert_eq!(loaded.previous_ca_cert_pem, pki.previous_ca_cert_pem);

    let mut partial = data.clone();
    partial.remove(SECRET_TLS_KEY);
    let error = OperatorPki::from_secret_data(&partial).unwrap_err();
    assert!(
        matches!(
            error,
            PkiError::MissingSecretKey {
                key: SECRET_TLS_KEY
            }
        ),
        "{error:?}"
    );
}

/// Connects to `addr` trusting only `ca_pem`, and returns the certificate
/// the server presented and the bytes it sent.
async fn handshake(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> Result<(CertificateDer<'static>, Vec<u8>), std::io::Error> {
    use tokio::io::AsyncReadExt;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await?;
    Ok((presented, body))
}

#[tokio::test]
async fn swapped_certificate_is_served_from_the_next_handshake() {
    use tokio::io::AsyncWriteExt;
    let now = SystemTime::now();
    let ca = Ca::generate("test-ca", now, 365 * DAY).unwrap();
    let first = ca.issue_serving(&names(), now, 90 * DAY).unwrap();
    let second = ca.issue_serving(&names(), now, 90 * DAY).unwrap();

    let resolver = HotCertResolver::new(first.certified_key().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(resolver.server_config(&[]).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hello").await;
                let _ = tls.shutdown().await;
            }
        }
    });

    let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (presented, body) = handshake(addr, ca.cert_pem()).await.unwrap();
    assert_eq!(presented, der(first.cert_pem()));
    assert_eq!(body, b"hello");

    resolver.swap(second.certified_key().unwrap());
    let (presented, body) = handshake(addr, ca.cert_pem()).await.unwrap();
    assert_eq!(presented, der(second.cert_pem()));
    assert_eq!(body, b"hello");

    // A client that trusts another CA refuses the server.
    let stranger = Ca::generate("other-ca", now, 365 * DAY).unwrap();
    assert!(handshake(addr, stranger.cert_pem()).await.is_err());
    server.abort();
}
