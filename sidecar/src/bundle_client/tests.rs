//! Tests of the gateway client and its connections.

use super::test_gateway::TestGateway;
use super::*;
use hyper_util::rt::TokioIo;

#[test]
fn retry_after_is_read_bounded_and_honoured_with_jitter() {
    let refusal = |status: StatusCode, value: Option<&str>| {
        let mut headers = hyper::HeaderMap::new();
        if let Some(v) = value {
            headers.insert(hyper::header::RETRY_AFTER, v.parse().unwrap());
        }
        let body = Bytes::from_static(br#"{"reason":"Overloaded","message":"busy"}"#);
        answer("/v1/audit", status, &headers, &body)
            .unwrap_err()
            .retry_after()
    };
    let secs = Duration::from_secs;
    assert_eq!(
        refusal(StatusCode::TOO_MANY_REQUESTS, Some("3")),
        Some(secs(3))
    );
    assert_eq!(
        refusal(StatusCode::SERVICE_UNAVAILABLE, Some("1")),
        Some(secs(1))
    );
    assert_eq!(
        refusal(StatusCode::TOO_MANY_REQUESTS, Some("86400")),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(
        refusal(StatusCode::TOO_MANY_REQUESTS, Some("soon")),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(refusal(StatusCode::TOO_MANY_REQUESTS, None), None);
    // Only overload and unavailability ask for a pause.
    assert_eq!(refusal(StatusCode::FORBIDDEN, Some("3")), None);
    for _ in 0..100 {
        let wait = honoured(secs(2));
        assert!(wait >= secs(2) && wait <= secs(3), "{wait:?}");
    }
    assert!(honoured(secs(3600)) <= MAX_RETRY_AFTER + MAX_RETRY_AFTER / 2);
}

/// How a [`StandIn`] serves.
#[derive(Clone, Copy)]
enum Mode {
    /// HTTP/1.1 without ALPN: connections are kept alive (closed after
    /// `idle` without a request, when given) unless `keep_alive` is false.
    H1 {
        keep_alive: bool,
        idle: Option<Duration>,
    },
    /// ALPN `h2` and `http/1.1`, served as negotiated; with `close`, an
    /// HTTP/2 connection is shut down (GOAWAY) after its first answer.
    H2 { close: bool },
}

/// A stand-in gateway over HTTPS that counts the connections it
/// accepted and closed. Every answer is an audit receipt; `/v1/bundle`
/// answers only once `release` is notified, `/v1/never` never.
struct StandIn {
    url: String,
    ca_pem: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
    _server: TestGateway,
}

/// Serves one accepted connection as `mode` says.
async fn serve_stand_in(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    mode: Mode,
    release: Arc<tokio::sync::Notify>,
) {
    let answered = Arc::new(tokio::sync::Notify::new());
    let service = hyper::service::service_fn({
        let answered = answered.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let (release, answered) = (release.clone(), answered.clone());
            async move {
                match request.uri().path() {
                    "/v1/bundle" => release.notified().await,
                    "/v1/never" => std::future::pending().await,
                    _ => {}
                }
                answered.notify_one();
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(br#"{"accepted":1,"checkpoints":[]}"#),
                )))
            }
        }
    });
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    match mode {
        Mode::H2 { close } if h2 => {
            let builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = answered.notified(), if close => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        }
        Mode::H2 { .. } => {
            let builder = hyper::server::conn::http1::Builder::new();
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        }
        Mode::H1 { keep_alive, idle } => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.keep_alive(keep_alive);
            if let Some(idle) = idle {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle);
            }
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        }
    }
}

impl StandIn {
    /// An HTTP/1.1 stand-in without ALPN (see [`Mode::H1`]).
    async fn start(keep_alive: bool, idle: Option<Duration>) -> StandIn {
        Self::serving(Mode::H1 { keep_alive, idle }).await
    }

    async fn serving(mode: Mode) -> StandIn {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let alpn: &[&[u8]] = match mode {
            Mode::H1 { .. } => &[],
            Mode::H2 { .. } => &[b"h2", b"http/1.1"],
        };
        let server = TestGateway::start_offering(alpn, {
            let (accepted, closed, release) = (accepted.clone(), closed.clone(), release.clone());
            move |handshake| {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (closed, release) = (closed.clone(), release.clone());
                async move {
                    if let Ok(tls) = handshake.await {
                        serve_stand_in(tls, mode, release).await;
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .await;
        StandIn {
            url: server.url.clone(),
            ca_pem: server.ca_pem.clone(),
            accepted,
            closed,
            release,
            _server: server,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn requests_in_turn_share_one_connection_also_from_clones() {
    let gateway = StandIn::start(true, None).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    for _ in 0..3 {
        client.audit("t", b"{}".to_vec()).await.unwrap();
    }
    // A clone (the uploader's, approvals') shares the kept connection.
    client.clone().audit("t", b"{}".to_vec()).await.unwrap();
    assert_eq!(
        (gateway.accepted(), client.connections_opened()),
        (1, 1),
        "four requests in turn opened more than one connection"
    );
}

#[tokio::test]
async fn a_request_while_another_waits_takes_a_connection_of_its_own() {
    let gateway = StandIn::start(true, None).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    // Warm: one kept connection.
    client.audit("t", b"{}".to_vec()).await.unwrap();
    let poll = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call(
                    Method::GET,
                    "/v1/bundle",
                    Some("t"),
                    &[],
                    None,
                    Duration::from_secs(30),
                )
                .await
        }
    });
    // The long-poll holds the kept connection; the upload does not wait
    // behind it.
    tokio::time::timeout(Duration::from_secs(10), client.audit("t", b"{}".to_vec()))
        .await
        .expect("an upload waited behind a long-poll")
        .unwrap();
    assert_eq!(gateway.accepted(), 2);
    gateway.release.notify_one();
    let (status, _, _) = poll.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    // Both are kept: two more requests at once open nothing new.
    let (a, b) = tokio::join!(
        client.audit("t", b"{}".to_vec()),
        client.audit("t", b"{}".to_vec())
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(gateway.accepted(), 2);
}

#[tokio::test]
async fn a_connection_the_operator_closed_is_not_used_again() {
    // The operator closes connections idle for 200 ms.
    let gateway = StandIn::start(true, Some(Duration::from_millis(200))).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    client.audit("t", b"{}".to_vec()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while gateway.closed() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stand-in closed the idle connection");
    client.audit("t", b"{}".to_vec()).await.unwrap();
    assert_eq!(gateway.accepted(), 2);
    // An operator that closes after every answer.
    let gateway = StandIn::start(false, None).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    for _ in 0..3 {
        client.audit("t", b"{}".to_vec()).await.unwrap();
    }
    assert_eq!(gateway.accepted(), 3);
}

#[test]
fn urls_and_cas_are_checked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = GatewayClient::new("http://op:8443", "x").unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
    let err = GatewayClient::new("https://op:8443", "not a pem").unwrap_err();
    assert!(matches!(err, GatewayError::BadCa(_)), "{err}");
}

/// A long-poll of `client` that waits until the stand-in is released.
fn long_poll(client: &GatewayClient) -> tokio::task::JoinHandle<Result<StatusCode, GatewayError>> {
    let client = client.clone();
    tokio::spawn(async move {
        let (status, _, _) = client
            .call(
                Method::GET,
                "/v1/bundle",
                Some("t"),
                &[],
                None,
                Duration::from_secs(30),
            )
            .await?;
        Ok(status)
    })
}

#[tokio::test]
async fn over_http2_a_long_poll_uploads_and_exchanges_share_one_connection() {
    let gateway = StandIn::serving(Mode::H2 { close: false }).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    let poll = long_poll(&client);
    // While the long-poll waits: uploads, one at a time and together, from
    // the client and its clones, and a token exchange.
    client.audit("t", b"{}".to_vec()).await.unwrap();
    let clone = client.clone();
    let (a, b, c) = tokio::join!(
        client.audit("t", b"{}".to_vec()),
        clone.audit("t", b"{}".to_vec()),
        client.call(
            Method::POST,
            "/v1/token",
            None,
            &[],
            Some(b"{}".to_vec()),
            Duration::from_secs(30)
        ),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    gateway.release.notify_one();
    assert_eq!(poll.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(
        (gateway.accepted(), client.connections_opened()),
        (1, 1),
        "a long-poll and the requests beside it took more than one connection"
    );
}

#[tokio::test]
async fn requests_made_together_before_any_connection_open_one() {
    let gateway = StandIn::serving(Mode::H2 { close: false }).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.audit("t", b"{}".to_vec()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(gateway.accepted(), 1);
}

#[tokio::test]
async fn an_http2_connection_the_operator_shut_down_is_replaced() {
    // The stand-in sends GOAWAY after each connection's first answer.
    let gateway = StandIn::serving(Mode::H2 { close: true }).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    client.audit("t", b"{}".to_vec()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while gateway.closed() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stand-in closed the connection");
    client.audit("t", b"{}".to_vec()).await.unwrap();
    assert_eq!(gateway.accepted(), 2);
}

#[tokio::test]
async fn an_http2_connection_a_request_timed_out_on_takes_no_new_requests() {
    let gateway = StandIn::serving(Mode::H2 { close: false }).await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    let err = client
        .call(
            Method::GET,
            "/v1/never",
            Some("t"),
            &[],
            None,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Timeout { .. }), "{err}");
    client.audit("t", b"{}".to_vec()).await.unwrap();
    assert_eq!(gateway.accepted(), 2);
}

/// #25: on HTTP/2 the sidecar asks the gateway to keep no HPACK table for
/// its answers (SETTINGS_HEADER_TABLE_SIZE 0, in the SETTINGS frame that
/// follows the client preface): the operator held one per sidecar.
#[tokio::test]
async fn h2_asks_the_gateway_to_keep_no_header_table() {
    use tokio::io::AsyncReadExt;
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let held = tokio::spawn(async move {
        let dialed = pool::handshake(client, true).await;
        // Kept open until the test has read the settings.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(dialed);
    });
    let read = async {
        let mut head = [0u8; 24 + 9];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..24], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(head[24 + 3], 4, "a SETTINGS frame follows the preface");
        let len = u32::from_be_bytes([0, head[24], head[25], head[26]]) as usize;
        let mut payload = vec![0u8; len];
        server.read_exact(&mut payload).await.unwrap();
        payload
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect::<Vec<(u16, u32)>>()
    };
    let settings = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap();
    // SETTINGS_HEADER_TABLE_SIZE is setting 0x1.
    assert!(
        settings.contains(&(0x1, pool::H2_HEADER_TABLE)),
        "{settings:?}"
    );
    assert_eq!(pool::H2_HEADER_TABLE, 0);
    held.abort();
}
