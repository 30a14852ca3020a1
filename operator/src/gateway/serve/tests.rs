//! Tests of [`super::serve_tls`]: HTTP/2 multiplexing and its bounds, and
//! HTTP/1.1 clients still served.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluice_sidecar::bundle_client::{BundlePoll, GatewayClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::{ALPN, H2_MAX_STREAMS, serve_tls};

/// [`serve_tls`] on a loopback port behind a TCP relay that counts the
/// connections it accepted; a CA of its own signed the certificate.
struct Served {
    /// The relay's address.
    addr: std::net::SocketAddr,
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    accepted: Arc<AtomicUsize>,
    /// Answers the waiting `/v1/bundle`.
    release: Arc<Notify>,
    _draining: watch::Sender<bool>,
}

impl Served {
    async fn start() -> Served {
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
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let release = Arc::new(Notify::new());
        let app = Router::new()
            .route(
                "/v1/bundle",
                get({
                    let release = release.clone();
                    move || async move {
                        release.notified().await;
                        StatusCode::NOT_MODIFIED
                    }
                }),
            )
            .route(
                "/v1/audit",
                post(|| async { r#"{"accepted":1,"checkpoints":[]}"# }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route("/wait", get(std::future::pending::<&'static str>));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (draining, draining_rx) = watch::channel(false);
        tokio::spawn(serve_tls(listener, Arc::new(tls), app, draining_rx));
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = relay.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let accepted = accepted.clone();
            async move {
                while let Ok((mut inbound, _)) = relay.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut outbound = TcpStream::connect(target).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                }
            }
        });
        Served {
            addr,
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            accepted,
            release,
            _draining: draining,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A TLS connection to the server offering `alpn`.
    async fn tls(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_sidecars_long_poll_and_upload_share_one_connection() {
    let served = Served::start().await;
    let client = GatewayClient::new(&served.url(), &served.ca_pem).unwrap();
    let poll = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .bundle("t", Some("r1"), Duration::from_secs(30))
                .await
        }
    });
    // The upload goes while the long-poll waits (twice, the second once
    // the first is answered).
    for _ in 0..2 {
        let receipt = client.audit("t", b"{}".to_vec()).await.unwrap();
        assert_eq!(receipt.accepted, 1);
    }
    assert!(!poll.is_finished());
    served.release.notify_one();
    let polled = poll.await.unwrap().unwrap();
    assert!(matches!(polled, BundlePoll::Unchanged(_)), "{polled:?}");
    assert_eq!(
        (
            served.accepted.load(Ordering::SeqCst),
            client.connections_opened()
        ),
        (1, 1),
        "the long-poll and the uploads took more than one connection"
    );
}

/// `GET /healthz` over HTTP/1.1 on a connection offering `alpn`.
async fn health_over_http1(served: &Served, alpn: &[&[u8]]) -> (StatusCode, Bytes) {
    let tls = served.tls(alpn).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/healthz")
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

#[tokio::test]
async fn http1_clients_are_still_served() {
    let served = Served::start().await;
    // One offering only http/1.1 (as curl --http1.1), one offering no ALPN.
    for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
        let (status, body) = health_over_http1(&served, alpn).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"ok"[..]),
            "ALPN {alpn:?}"
        );
    }
}

/// An HTTP/2 frame header: length, type, flags, stream.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn more_concurrent_streams_than_the_bound_are_refused() {
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const REFUSED_STREAM: u32 = 0x7;
    let served = Served::start().await;
    let mut tls = served.tls(&[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // A client that ignores the server's SETTINGS: the bound and 3 more
    // requests that are never answered, then a PING. The server reads
    // frames in order and sends a refusal before it reads the next frame,
    // so every refusal comes before the PING's answer.
    let extra = 3;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // :method GET, :scheme https, :path /wait, :authority 127.0.0.1 (HPACK,
    // static-table names, literal values).
    let mut block = vec![0x82, 0x87, 0x04, 5];
    block.extend_from_slice(b"/wait");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"127.0.0.1");
    for i in 0..H2_MAX_STREAMS + extra {
        // END_STREAM | END_HEADERS.
        out.extend(frame(HEADERS, 0x5, 2 * i + 1, &block));
    }
    out.extend(frame(PING, 0, 0, b"sluice!!"));
    tls.write_all(&out).await.unwrap();
    let mut refused = Vec::new();
    loop {
        let mut head = [0u8; 9];
        tls.read_exact(&mut head).await.unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).await.unwrap();
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match head[3] {
            SETTINGS if head[4] & 0x1 == 0 => {
                tls.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
            }
            RST_STREAM
                if u32::from_be_bytes(payload[..4].try_into().unwrap()) == REFUSED_STREAM =>
            {
                refused.push(stream);
            }
            PING if head[4] & 0x1 == 0x1 => break,
            _ => {}
        }
    }
    let expected: Vec<u32> = (H2_MAX_STREAMS..H2_MAX_STREAMS + extra)
        .map(|i| 2 * i + 1)
        .collect();
    assert_eq!(
        refused, expected,
        "streams beyond the bound were not refused"
    );
}

#[tokio::test]
async fn an_http2_connection_is_idle_only_once_no_request_was_open_for_the_bound() {
    use super::{Activity, Open};
    let bound = Duration::from_millis(100);
    let activity = Arc::new(Activity::new());
    let open = Open::new(activity.clone());
    let idle = tokio::spawn(activity.clone().idle_for(bound));
    // A request open for several bounds (a long-poll) keeps it in use.
    tokio::time::sleep(bound * 5).await;
    assert!(!idle.is_finished(), "idle while a request was open");
    drop(open);
    tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("idle a bound after the last request ended")
        .unwrap();
}
