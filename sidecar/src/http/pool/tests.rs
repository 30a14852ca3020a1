//! The pool against a raw HTTP/1.1 upstream whose connections do what
//! each test needs (answer and stay open, answer and close, read a request
//! and hang up), counting what it sees.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Lease, PoolSettings, UpstreamError, UpstreamPool};
use crate::http::{BoxError, ProxyBody};

/// What the upstream does on each connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers every request and keeps the connection open.
    KeepAlive,
    /// Answers each request, then closes the connection (without saying
    /// so in the response: it just goes away while idle).
    CloseWhenIdle,
    /// Answers the first request; reads the second and closes without
    /// answering it.
    HangUpOnSecond,
}

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Connections the client closed (EOF while waiting for a request).
    closed_by_client: AtomicUsize,
}

async fn upstream(mode: Mode) -> (Authority, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut served = 0;
                loop {
                    // Requests without a body: read up to the blank line.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => {
                                if head.is_empty() {
                                    counts.closed_by_client.fetch_add(1, Ordering::SeqCst);
                                }
                                return;
                            }
                        }
                    }
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    served += 1;
                    if matches!(mode, Mode::HangUpOnSecond) && served == 2 {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                    if matches!(mode, Mode::CloseWhenIdle) {
                        let _ = socket.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (format!("127.0.0.1:{}", addr.port()).parse().unwrap(), seen)
}

fn pool(authority: Authority, max_idle: usize, idle_timeout: Duration) -> UpstreamPool {
    let settings = PoolSettings {
        max_idle,
        idle_timeout,
        connect_timeout: Duration::from_secs(10),
    };
    UpstreamPool::new(Scheme::HTTP, authority, None, settings).unwrap()
}

fn get() -> Request<ProxyBody> {
    let body = Empty::<Bytes>::new()
        .map_err(|e: Infallible| -> BoxError { match e {} })
        .boxed_unsync();
    Request::get("/x")
        .header(header::HOST, "localhost")
        .body(body)
        .unwrap()
}

/// Sends a GET, reads its body to the end; the lease is returned unreleased.
async fn fetch(pool: &UpstreamPool) -> Result<(String, Lease), UpstreamError> {
    let (response, lease) = pool.send(get()).await?;
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(UpstreamError::Http)?
        .to_bytes();
    Ok((String::from_utf8_lossy(&body).into_owned(), lease))
}

/// Polls `done` until it holds, for at most ten seconds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_connection_serves_requests_one_after_another() {
    let (authority, seen) = upstream(Mode::KeepAlive).await;
    let pool = pool(authority, 8, Duration::from_secs(90));
    for _ in 0..5 {
        let (body, mut lease) = fetch(&pool).await.unwrap();
        assert_eq!(body, "ok");
        lease.release();
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 5);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_is_not_shared_while_its_response_is_read() {
    let (authority, seen) = upstream(Mode::KeepAlive).await;
    let pool = pool(authority, 8, Duration::from_secs(90));
    // The first response's lease is held (its body not given back): the
    // second request needs a connection of its own.
    let (_, mut first) = fetch(&pool).await.unwrap();
    let (_, mut second) = fetch(&pool).await.unwrap();
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    first.release();
    second.release();
    assert_eq!(pool.idle_count(), 2);
    // A response dropped before its end closes its connection.
    let (response, lease) = pool.send(get()).await.unwrap();
    drop((response, lease));
    assert_eq!(pool.idle_count(), 1);
    eventually("the dropped response's connection closes", || {
        seen.closed_by_client.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_request_the_closed_connection_did_not_send_goes_on_a_new_one() {
    let (authority, seen) = upstream(Mode::CloseWhenIdle).await;
    let pool = pool(authority, 8, Duration::from_secs(90));
    for i in 1..=3 {
        let (body, mut lease) = fetch(&pool).await.unwrap();
        assert_eq!(body, "ok");
        lease.release();
        // Each request reached the upstream once, each on its own connection.
        assert_eq!(seen.requests.load(Ordering::SeqCst), i);
        assert_eq!(seen.connections.load(Ordering::SeqCst), i);
    }
}

#[tokio::test]
async fn a_request_that_was_sent_is_never_sent_again() {
    let (authority, seen) = upstream(Mode::HangUpOnSecond).await;
    let pool = pool(authority, 8, Duration::from_secs(90));
    let (_, mut lease) = fetch(&pool).await.unwrap();
    lease.release();
    // The upstream reads the second request and hangs up: it may have run,
    // so it is not sent again (the application gets the error).
    let failed = fetch(&pool).await;
    assert!(failed.is_err(), "the request should have failed");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_connections_are_bounded_in_number_and_in_time() {
    let (authority, seen) = upstream(Mode::KeepAlive).await;
    let pool = pool(authority, 1, Duration::from_millis(50));
    let (_, mut first) = fetch(&pool).await.unwrap();
    let (_, mut second) = fetch(&pool).await.unwrap();
    first.release();
    second.release();
    // One kept, the other closed at once.
    assert_eq!(pool.idle_count(), 1);
    // The one kept is closed once idle too long, with no request to notice.
    eventually("both connections close", || {
        seen.closed_by_client.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(pool.idle_count(), 0);
}
