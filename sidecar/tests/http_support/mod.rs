//! The HTTPS upstream of the HTTP tests (sidecar/tests/http/http.rs) and of
//! `sidecar/bench/http_bench.sh` (through `examples/http_bench_upstream.rs`):
//! its own CA, HTTP/2 or HTTP/1.1 by ALPN, JSON with card numbers and
//! e-mails, chunked bodies of any size, stalls, and an echo of the request.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const CARD: &str = "4111111111111111";
pub const EMAIL: &str = "ann@example.com";

// === the upstream ===

/// A body of `items` JSON objects `{"i":N,"card":"…","note":"…"}` in an array,
/// produced chunk by chunk (chunked encoding, no Content-Length).
struct BigBody {
    next: usize,
    items: usize,
    done: bool,
}

impl Body for BigBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut chunk = String::new();
        if self.next == 0 {
            chunk.push('[');
        }
        let end = (self.next + 500).min(self.items);
        for i in self.next..end {
            if i > 0 {
                chunk.push(',');
            }
            chunk.push_str(&format!(
                r#"{{"i":{i},"card":"{CARD}","note":"item number {i} with some padding text to make it longer"}}"#
            ));
        }
        self.next = end;
        if end == self.items {
            chunk.push(']');
            self.done = true;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// Half a JSON array, then nothing for an hour.
struct StallBody {
    sent: bool,
    never: Pin<Box<tokio::time::Sleep>>,
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"[{\"i\":1},")))));
        }
        self.never.as_mut().poll(cx).map(|()| None)
    }
}

type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn full(ct: &str, body: impl Into<Bytes>) -> Response<UpBody> {
    Response::builder()
        .header("content-type", ct)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("test upstream")
}

async fn upstream_handle(req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        "/customer" => full(
            "application/json",
            format!(
                r#"{{"id":1,"customer":{{"email":"{EMAIL}","name":"Ann"}},"payment":{{"card":"{CARD}"}},"comment":"card {CARD} on file"}}"#
            ),
        ),
        "/text" => full("text/plain", format!("card {CARD} and {EMAIL}")),
        // JSON under another label.
        "/json-as-text" => full(
            "text/plain; charset=utf-8",
            format!(r#"  {{"customer":{{"email":"{EMAIL}"}},"note":"card {CARD}"}}"#),
        ),
        // Half a body, then nothing (the connection stays open).
        "/stall" => Response::builder()
            .header("content-type", "application/json")
            .body(
                StallBody {
                    sent: false,
                    never: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
                }
                .boxed_unsync(),
            )
            .expect("test upstream"),
        "/small" => full(
            "application/json",
            format!(r#"{{"id":1,"name":"Ann","email":"{EMAIL}","tags":["a","b"],"total":12.5}}"#),
        ),
        "/gzip" => Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from_static(b"\x1f\x8b not really")).boxed_unsync())
            .expect("test upstream"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            full("application/json", "{}")
        }
        p if p.starts_with("/big/") => {
            let items: usize = p["/big/".len()..].parse().expect("test upstream");
            Response::builder()
                .header("content-type", "application/json")
                .body(
                    BigBody {
                        next: 0,
                        items,
                        done: false,
                    }
                    .boxed_unsync(),
                )
                .expect("test upstream")
        }
        _ => {
            // Echo what arrived (as text: the echo is not masked).
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                headers.insert(
                    k.as_str().to_string(),
                    serde_json::Value::String(v.to_str().unwrap_or("?").to_string()),
                );
            }
            let version = format!("{:?}", req.version());
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            // The credentials as digests: the values themselves are scrubbed
            // on the way back (issue 16), the digests show what arrived.
            let digests: serde_json::Map<_, _> = ["authorization", "x-api-key"]
                .iter()
                .filter_map(|h| {
                    Some((
                        h.to_string(),
                        serde_json::json!(digest(req.headers().get(*h)?.as_bytes())),
                    ))
                })
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .expect("test upstream")
                .to_bytes();
            let echo = serde_json::json!({
                "digests": digests,
                "method": method,
                "uri": uri,
                "version": version,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            full("text/plain", echo.to_string())
        }
    })
}

/// Starts the HTTPS upstream; returns its address and its CA (PEM).
/// `tls`: the acceptor and its CA (PEM) of `tls_upstream_acceptor` in
/// sidecar/tests/common, for `localhost` and `127.0.0.1` with ALPN `h2` and
/// `http/1.1`.
pub async fn start_upstream(tls: (tokio_rustls::TlsAcceptor, String)) -> (SocketAddr, String) {
    let (addr, ca, _) = start_counted_upstream(tls).await;
    (addr, ca)
}

/// [`start_upstream`], also returning how many requests it has received.
pub async fn start_counted_upstream(
    (acceptor, ca_pem): (tokio_rustls::TlsAcceptor, String),
) -> (SocketAddr, String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test upstream");
    let addr = listener.local_addr().expect("test upstream");
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                let service = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    upstream_handle(req)
                });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    (addr, ca_pem, hits)
}

/// SHA-256 of `b`, hex.
pub fn digest(b: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(b))
}
