use super::upload::{AUDIT_BATCH_BYTES, audit_body, batch_len};
use super::*;
use std::collections::BTreeMap;

use crate::audit::Forwarded;
use crate::bundle_client::test_gateway::TestGateway;
use crate::postgres::bundle::{masking_key, upstream_config};
use crate::standing::BundleSecrets;
use serde_json::json;
use sluice_policy::engine::SecretSource;

fn vars(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut all: Vec<(String, String)> = vec![
        ("SLUICE_GATEWAY_URL".into(), "https://gw:8443".into()),
        ("SLUICE_TOKEN_FILE".into(), "/var/run/token".into()),
        ("SLUICE_CA_PEM".into(), "PEM".into()),
    ];
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    move |name| {
        all.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// The upload body is an `AuditBatch` on the wire: the lines as
/// events, and the last head of each Connection.
#[test]
fn audit_body_is_an_audit_batch() {
    use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
    let mut chain = AuditChain::new("st");
    let mut events = Vec::new();
    let mut forwarded = Vec::new();
    for connection in [Some("a"), Some("b"), Some("a"), None] {
        let mut draft = AuditEventDraft::new("2026-01-02T03:04:05Z", AuditKind::SessionStart);
        draft.connection = connection.map(String::from);
        let event = chain.append(draft).unwrap();
        forwarded.push(Forwarded {
            line: event.to_line().unwrap().into(),
            connection: event.connection.clone(),
            seq: event.seq,
            hash: event.hash.clone(),
        });
        events.push(event);
    }
    let batch: sluice_policy::wire::AuditBatch =
        serde_json::from_slice(&audit_body("st", &forwarded)).unwrap();
    assert_eq!(batch.events, events);
    let heads: Vec<_> = batch
        .heads
        .iter()
        .map(|h| (h.connection.as_str(), h.head.seq, h.head.stream.as_str()))
        .collect();
    assert_eq!(heads, [("a", 3, "st"), ("b", 2, "st")]);
    assert_eq!(batch.heads[0].head.hash, events[2].hash);
    // An empty batch is well-formed too.
    let empty: sluice_policy::wire::AuditBatch =
        serde_json::from_slice(&audit_body("st", &[])).unwrap();
    assert!(empty.events.is_empty() && empty.heads.is_empty());
}

#[test]
fn http_settings_default_when_unset() {
    let cfg = RunConfig::from_vars(vars(&[])).unwrap();
    assert_eq!(
        cfg.planes.http_upstream_timeout,
        crate::http::DEFAULT_UPSTREAM_TIMEOUT
    );
    assert_eq!(
        cfg.planes.http_max_request_body,
        crate::http::DEFAULT_MAX_REQUEST_BODY
    );
    assert!(cfg.planes.http_upstream_http2);
}

#[test]
fn http_settings_come_from_the_environment() {
    let cfg = RunConfig::from_vars(vars(&[
        (env::HTTP_TIMEOUT, "2.5"),
        (env::HTTP_MAX_BODY, "4096"),
        (env::HTTP_UPSTREAM_HTTP1_ONLY, "true"),
    ]))
    .unwrap();
    assert_eq!(
        cfg.planes.http_upstream_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(cfg.planes.http_max_request_body, 4096);
    assert!(!cfg.planes.http_upstream_http2);
    let cfg = RunConfig::from_vars(vars(&[(env::HTTP_UPSTREAM_HTTP1_ONLY, "false")])).unwrap();
    assert!(cfg.planes.http_upstream_http2);
}

#[test]
fn bad_http_settings_are_refused_with_the_variable_named() {
    for (name, value) in [
        (env::HTTP_TIMEOUT, "0"),
        (env::HTTP_TIMEOUT, "-1"),
        (env::HTTP_TIMEOUT, "NaN"),
        (env::HTTP_TIMEOUT, "100000"),
        (env::HTTP_TIMEOUT, "30s"),
        (env::HTTP_MAX_BODY, "-5"),
        (env::HTTP_MAX_BODY, "1MB"),
        (env::HTTP_UPSTREAM_HTTP1_ONLY, "yes"),
    ] {
        let err = RunConfig::from_vars(vars(&[(name, value)])).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, RunError::BadEnv { .. }) && text.contains(name) && text.contains(value),
            "{name}={value}: {text}"
        );
    }
}

fn bundle(rules: serde_json::Value, masking: serde_json::Value, bound: bool) -> Bundle {
    serde_json::from_value(json!({
        "revision": "r1",
        "identity": {"namespace": "shop", "serviceAccount": "report-job", "pod": "report", "groups": []},
        "expiresAt": "2030-01-01T00:00:00Z",
        "connections": [{
            "name": "db",
            "spec": {
                "protocol": "postgres",
                "upstream": {"host": "db.shop", "port": 5432, "database": "orders", "tls": {"mode": "disable"}},
                "credentials": {"secretRef": {"name": "creds"}},
                "listen": {"port": 15432}
            },
            "bound": bound,
            "credentials": if bound { json!({"username": "app", "password": "pw"}) } else { json!(null) }
        }],
        "policies": [{
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"subjects": [{"serviceAccount": "report-job"}], "connections": ["db"],
                     "rules": rules, "masking": masking}
        }],
        "secretKeys": [{"secret": "k", "key": "key", "value": "c2VjcmV0"}]
    }))
    .unwrap()
}

#[test]
fn the_masking_key_follows_masking_not_rules() {
    let deny = json!([{"name": "d", "match": {"statements": ["drop"]}, "action": "deny"}]);
    let ssn = json!([{"columns": ["customers.ssn"], "strategy": "redact"}]);
    let base = masking_key(&bundle(json!([]), ssn.clone(), true), None);
    assert_eq!(base, masking_key(&bundle(deny, ssn.clone(), true), None));
    assert_ne!(
        base,
        masking_key(
            &bundle(
                json!([]),
                json!([{"columns": ["customers.name"], "strategy": "redact"}]),
                true
            ),
            None
        )
    );
    assert_ne!(base, masking_key(&bundle(json!([]), ssn, true), Some(b"k")));
}

#[test]
fn bundle_connections_become_upstreams_and_credentials_are_scrubbed() {
    let mut b = bundle(json!([]), json!([]), true);
    let up = upstream_config(&b.connections[0], 1 << 20).unwrap();
    assert_eq!((up.host.as_str(), up.port), ("db.shop", 5432));
    assert_eq!(
        (up.username.as_str(), up.database.as_str()),
        ("app", "orders")
    );
    assert_eq!(up.password.as_str(), "pw");
    assert_eq!(
        BundleSecrets(&b.secret_keys).secret_key("k", "key"),
        Some(b"secret".to_vec())
    );
    assert_eq!(BundleSecrets(&b.secret_keys).secret_key("k", "other"), None);
    scrub(&mut b);
    let creds = b.connections[0].credentials.as_ref().unwrap();
    assert!(creds.values().all(String::is_empty));
    assert!(b.secret_keys[0].value.is_empty());

    // A bound Connection without a password is an error; an unbound one
    // needs no credentials (its sessions are refused before any upstream).
    let mut b = bundle(json!([]), json!([]), true);
    b.connections[0].credentials = Some(BTreeMap::from([("username".into(), "app".into())]));
    let err = upstream_config(&b.connections[0], 1 << 20).unwrap_err();
    assert!(err.to_string().contains("no password"), "{err}");
    let b = bundle(json!([]), json!([]), false);
    assert!(upstream_config(&b.connections[0], 1 << 20).is_ok());
}

#[test]
fn expiry_times_map_to_instants() {
    let now = Instant::now();
    assert!(instant_of("not a time").is_none());
    let past = instant_of("2001-01-01T00:00:00Z").unwrap();
    assert!(past >= now && past <= Instant::now());
    let future =
        instant_of(&(chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()).unwrap();
    assert!(future > now + Duration::from_secs(3000));
}

/// Renewals of tokens issued together are spread over 70%..85% of the
/// lifetime, not all at one instant.
#[test]
fn token_renewals_are_spread_and_well_before_expiry() {
    let lifetime = Duration::from_secs(900);
    let after: Vec<Duration> = (0..1_000).map(|_| token_refresh_after(lifetime)).collect();
    for d in &after {
        assert!(
            *d >= lifetime.mul_f64(0.70) && *d <= lifetime.mul_f64(0.85),
            "{d:?}"
        );
    }
    let (min, max) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    assert!(
        *max - *min >= lifetime.mul_f64(0.10),
        "renewals spread over {:?} only",
        *max - *min
    );
}

/// Events whose lines add up to more than the operator's 8 MiB body limit go
/// in several requests, each below it; an event too large for any request is
/// not sent (it would be refused forever and hold up the rest).
#[test]
fn audit_uploads_stay_below_the_operators_body_limit() {
    use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
    const OPERATOR_MAX_BODY: usize = 8 * 1024 * 1024;
    let mut chain = AuditChain::new("st");
    let mut event = |text_len: usize| {
        let mut draft = AuditEventDraft::new("2026-01-02T03:04:05Z", AuditKind::Statement);
        draft.connection = Some("db".into());
        draft.command = Some(
            serde_json::from_value(
                json!({"text": "x".repeat(text_len), "fingerprint": "f", "kind": "select"}),
            )
            .unwrap(),
        );
        let event = chain.append(draft).unwrap();
        Forwarded {
            line: event.to_line().unwrap().into(),
            connection: event.connection.clone(),
            seq: event.seq,
            hash: event.hash.clone(),
        }
    };
    // 64 events of 256 KiB: 16 MiB in all.
    let events: Vec<Forwarded> = (0..64).map(|_| event(256 * 1024)).collect();
    let mut rest = &events[..];
    let (mut sent, mut requests) = (0, 0);
    while !rest.is_empty() {
        let take = batch_len(rest);
        assert!(take > 0);
        let body = audit_body("st", &rest[..take]);
        assert!(body.len() < OPERATOR_MAX_BODY, "{} bytes", body.len());
        let batch: sluice_policy::wire::AuditBatch = serde_json::from_slice(&body).unwrap();
        assert_eq!(batch.events.len(), take);
        assert_eq!(batch.heads[0].head.seq, rest[take - 1].seq);
        sent += take;
        requests += 1;
        rest = &rest[take..];
    }
    assert_eq!(sent, 64);
    assert!(requests >= 4, "{requests} requests");
    // Small events still go 1 000 at a time.
    let small: Vec<Forwarded> = (0..1_500).map(|_| event(10)).collect();
    assert_eq!(batch_len(&small), 1_000);
    // One event larger than a request may be.
    let huge = [event(AUDIT_BATCH_BYTES + 1), event(10)];
    assert_eq!(batch_len(&huge), 0);
}

// === Retry-After (#25) ===

/// What the stand-in gateway answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A stand-in for the operator's gateway over HTTPS: answers each request as
/// `answer` says for its path and how many requests of that path came
/// before, and notes when each arrived.
struct MockGateway {
    url: String,
    ca_pem: String,
    seen: Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>,
    _server: TestGateway,
}

impl MockGateway {
    async fn start(answer: fn(&str, usize) -> Answer) -> MockGateway {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = TestGateway::start({
            let seen = seen.clone();
            move |handshake| {
                let seen = seen.clone();
                async move {
                    let Ok(tls) = handshake.await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = request.uri().path().to_string();
                                let before = {
                                    let mut seen = seen.lock().unwrap();
                                    let before = seen.iter().filter(|(p, _)| *p == path).count();
                                    seen.push((path.clone(), std::time::Instant::now()));
                                    before
                                };
                                let (status, headers, body) = answer(&path, before);
                                let mut response = hyper::Response::builder().status(status);
                                for (name, value) in headers {
                                    response = response.header(name, value);
                                }
                                Ok::<_, std::convert::Infallible>(
                                    response
                                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                }
            }
        })
        .await;
        MockGateway {
            url: server.url.clone(),
            ca_pem: server.ca_pem.clone(),
            seen,
            _server: server,
        }
    }

    /// When the requests of `path` arrived.
    fn arrivals(&self, path: &str) -> Vec<std::time::Instant> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Waits (30 s at most) until `n` requests of `path` arrived.
    async fn until(&self, path: &str, n: usize) -> Vec<std::time::Instant> {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let arrivals = self.arrivals(path);
                if arrivals.len() >= n {
                    return arrivals;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} requests of {path} within 30 s"))
    }
}

/// The first answer of `path` is a 429 asking for 2 s; every other is `ok`.
fn overloaded_once(n: usize) -> Option<Answer> {
    (n == 0).then(|| {
        (
            429,
            vec![("retry-after", "2".to_string())],
            r#"{"reason":"Overloaded","message":"the operator is answering 256 requests already"}"#
                .to_string(),
        )
    })
}

/// The gap between the first request of `path` (turned away) and the next.
fn gap(arrivals: &[std::time::Instant]) -> Duration {
    arrivals[1].duration_since(arrivals[0])
}

#[tokio::test]
async fn an_upload_turned_away_with_retry_after_waits_at_least_that_long() {
    let gateway = MockGateway::start(|path, n| match path {
        "/v1/audit" => {
            overloaded_once(n).unwrap_or((200, vec![], r#"{"accepted":1,"checkpoints":[]}"#.into()))
        }
        _ => (404, vec![], String::new()),
    })
    .await;
    let client = GatewayClient::new(&gateway.url, &gateway.ca_pem).unwrap();
    let (_token, token_rx) = watch::channel(Some(Zeroizing::new("t".to_string())));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let audit = Arc::new(AuditLog::open("st", false, None).unwrap());
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    // Without a Retry-After the uploader would send again at its next tick.
    let every = Duration::from_millis(20);
    let uploader = tokio::spawn(super::upload::upload_audit(
        client, token_rx, rx, audit, every, metrics,
    ));
    use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
    let event = AuditChain::new("st")
        .append(AuditEventDraft::new(
            "2026-01-02T03:04:05Z",
            AuditKind::SessionStart,
        ))
        .unwrap();
    tx.send(Forwarded {
        line: event.to_line().unwrap().into(),
        connection: None,
        seq: event.seq,
        hash: event.hash.clone(),
    })
    .await
    .unwrap();
    let arrivals = gateway.until("/v1/audit", 2).await;
    uploader.abort();
    assert!(
        gap(&arrivals) >= Duration::from_secs(2),
        "the upload was sent again {:?} after a 429 asking for 2 s",
        gap(&arrivals)
    );
}

#[tokio::test]
async fn a_bundle_poll_turned_away_with_retry_after_waits_at_least_that_long() {
    let gateway = MockGateway::start(|path, n| match path {
        "/v1/token" => (
            200,
            vec![],
            r#"{"token":"t","expiresAt":"2030-01-01T00:00:00Z"}"#.into(),
        ),
        "/v1/bundle" => overloaded_once(n).unwrap_or_else(|| {
            let bundle = json!({
                "revision": "r1",
                "identity": {"namespace": "shop", "serviceAccount": "report-job", "pod": "report", "groups": []},
                "expiresAt": "2030-01-01T00:00:00Z",
                "connections": [],
                "policies": [],
            });
            (200, vec![("etag", "\"r1\"".into())], bundle.to_string())
        }),
        _ => (404, vec![], String::new()),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "subject").unwrap();
    let mut cfg = RunConfig::new(gateway.url.clone(), token_file, gateway.ca_pem.clone());
    cfg.audit_stdout = false;
    cfg.first_bundle_timeout = Duration::from_secs(30);
    // Without a Retry-After the first retry comes after 125-250 ms.
    let running = start(cfg).await.unwrap();
    let arrivals = gateway.arrivals("/v1/bundle");
    drop(running);
    assert!(
        gap(&arrivals) >= Duration::from_secs(2),
        "the bundle was asked again {:?} after a 429 asking for 2 s",
        gap(&arrivals)
    );
}
