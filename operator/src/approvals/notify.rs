//! Outgoing notifications of approval requests and decisions: Slack-compatible
//! JSON (`{"text": ...}`) POSTed to one URL (`--notify-url`).
//!
//! Sending happens in a background task fed by a bounded queue: a slow or
//! broken receiver delays nothing and blocks no decision. Failures are logged
//! and retried with exponential backoff; when the queue is full, the newest
//! message is dropped (and logged).

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// Messages waiting to be sent, at most.
pub const QUEUE: usize = 256;
/// Attempts per message.
pub const ATTEMPTS: u32 = 6;

/// Why the notifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL is not an http(s) URL.
    // The value is not shown: webhook URLs usually carry a token.
    #[error(
        "the notification URL (--notify-url, or notifications.webhook in the settings file) is not an http:// or https:// URL; its value is not shown since it usually carries a token"
    )]
    BadUrl {
        /// The URL given.
        url: String,
    },
}

/// The sending end; cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    queue: mpsc::Sender<String>,
}

impl Notifier {
    /// Starts the background sender to `url`. Must be called within a Tokio runtime.
    pub fn start(url: &str) -> Result<Notifier, NotifyError> {
        let uri: hyper::Uri = url.parse().map_err(|_| NotifyError::BadUrl {
            url: url.to_string(),
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(NotifyError::BadUrl {
                url: url.to_string(),
            });
        }
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(uri, rx));
        Ok(Notifier { queue })
    }

    /// Queues `text`; never waits.
    pub fn notify(&self, text: String) {
        if let Err(error) = self.queue.try_send(text) {
            tracing::warn!(%error, "approval notification dropped: the queue is full or closed");
        }
    }
}

/// The JSON body of a notification.
pub fn body_of(text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
}

async fn send_all(uri: hyper::Uri, mut rx: mpsc::Receiver<String>) {
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(error) => {
            tracing::warn!(%error, "no system trust roots: approval notifications disabled");
            return;
        }
    };
    let client: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new()).build(https);
    while let Some(text) = rx.recv().await {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let request = hyper::Request::post(uri.clone())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body_of(&text))));
            let outcome = match request {
                Ok(r) => tokio::time::timeout(Duration::from_secs(10), client.request(r))
                    .await
                    .map_err(|_| "timed out".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .and_then(|r| {
                        if r.status().is_success() {
                            Ok(())
                        } else {
                            Err(format!("status {}", r.status()))
                        }
                    }),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => break,
                Err(error) if attempt < ATTEMPTS => {
                    tracing::info!(%error, attempt, "approval notification failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(error) => {
                    tracing::warn!(%error, "approval notification failed; giving up on it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_slack_compatible() {
        let v: serde_json::Value = serde_json::from_slice(&body_of("a \"b\"")).unwrap();
        assert_eq!(v, serde_json::json!({"text": "a \"b\""}));
    }

    #[tokio::test]
    async fn only_http_urls_are_taken() {
        assert!(Notifier::start("ftp://x").is_err());
        let error = Notifier::start("htps://hooks.example/T0/B0/secret-token").unwrap_err();
        assert!(!error.to_string().contains("secret-token"), "{error}");
        assert!(Notifier::start("not a url").is_err());
        assert!(Notifier::start("http://127.0.0.1:9/hook").is_ok());
    }

    /// A receiver that fails the first request gets the message on a retry,
    /// and a message sent meanwhile is not lost.
    #[tokio::test]
    async fn failures_are_retried_in_the_background() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, mut rx) = mpsc::unbounded_channel::<(u32, String)>();
        tokio::spawn(async move {
            let mut served = 0u32;
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                served += 1;
                let mut buf = vec![0u8; 8192];
                let mut data = Vec::new();
                while !String::from_utf8_lossy(&data).contains("}") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&data).to_string();
                let body = text
                    .split("\r\n\r\n")
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let status = if served == 1 {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                stream.write_all(reply.as_bytes()).await.unwrap();
                tx.send((served, body)).unwrap();
            }
        });
        let notifier = Notifier::start(&url).unwrap();
        notifier.notify("first".into());
        notifier.notify("second".into());
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(rx.recv().await.unwrap());
        }
        assert_eq!(seen[0].0, 1);
        assert!(seen[0].1.contains("first"), "{seen:?}");
        assert!(seen[1].1.contains("first"), "retried: {seen:?}");
        assert!(seen[2].1.contains("second"), "{seen:?}");
    }
}
