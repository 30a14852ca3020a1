//! The HTTPS API every replica serves (DESIGN §3, §4, §5, §7, §8): identity
//! exchange, policy bundles, JWKS, audit intake, the pod injection webhook,
//! and `/metrics`, `/healthz`, `/readyz`.
//!
//! Handlers are thin: they read the request, call the pure modules
//! ([`crate::gateway::token_exchange`], [`crate::injection::token_holder`], [`crate::gateway::token`],
//! [`crate::catalog`], [`crate::injection::admission`]) and map their errors to an
//! [`ErrorBody`] with a stable CamelCase reason.

pub mod audit_intake;
pub mod auth;
pub mod checkpoint_history;
pub mod compiled;
pub mod holders;
pub mod overload;
pub mod refusal;
pub mod revisions;
pub mod serve;
pub mod token;
pub mod token_exchange;
pub mod verified;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::PostParams;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Deserialize;
use sluice_policy::engine::Identity;

pub use auth::{Gateway, GatewaySettings, MAX_WAIT, Refusal, parse_wait};

use crate::gateway::token::GatewayClaims;
use crate::gateway::token_exchange::{ExchangeError, subject_from_review, token_review};
use crate::injection::admission::review_pod;
use crate::injection::inject::{InjectConfig, service_account_of};
use crate::wire::{AuditBatch, AuditReceipt, TokenRequest, TokenResponse};
use auth::{Waiting, authenticate, check_held, check_holder, holder_pod, internal, pod_deleted};

/// Largest request body taken (audit batches are the big ones).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The router of every route. The handlers share one [`Gateway`] behind an
/// [`Arc`]: axum clones the state for every request, and a `Gateway` clone
/// is some twenty reference counts touched (and dropped) on the hot path
/// (#25: 4-5 % of the operator's CPU in the audit phase).
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/token", post(exchange_token))
        .route("/v1/bundle", get(bundle))
        .route("/v1/jwks", get(jwks))
        .route("/v1/audit", post(audit))
        .route(
            crate::identity::webhook_config::POD_INJECTION_PATH,
            post(mutate_pod),
        )
        .merge(crate::approvals::api::routes())
        .merge(crate::approvals::admission::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.metrics.clone(),
            crate::metrics::timed,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(gateway))
}

// === /v1/token ===

async fn exchange_token(State(g): State<Arc<Gateway>>, body: Bytes) -> Response {
    match exchange(&g, &body).await {
        Ok(answer) => {
            g.metrics.request("token", "ok");
            axum::Json(answer).into_response()
        }
        Err(refusal) => {
            g.metrics.request("token", refusal.reason_label());
            tracing::info!(reason = refusal.reason, message = %refusal.message, "token exchange refused");
            refusal.into_response()
        }
    }
}

async fn exchange(g: &Gateway, body: &[u8]) -> Result<TokenResponse, Refusal> {
    let _working = g.limits.enter()?;
    let request: TokenRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the body is not {{\"subjectToken\": \"...\"}}: {e}"),
        )
    })?;
    let review = token_review(&request.subject_token).map_err(exchange_refusal)?;
    let reviews = Api::<TokenReview>::all(g.client.clone());
    let reviewed = g
        .limits
        .api(
            "TokenReview",
            reviews.create(&PostParams::default(), &review),
        )
        .await?;
    let status = reviewed.status.unwrap_or_default();
    let subject = subject_from_review(&status).map_err(exchange_refusal)?;
    let pod = holder_pod(g, &subject.namespace, &subject.pod, &subject.pod_uid)
        .await?
        .ok_or_else(|| pod_deleted(&subject))?;
    check_held(g, &pod, &subject.pod_uid)?;
    let now = SystemTime::now();
    let keys = g.keys.get();
    let claims = GatewayClaims::new(&g.settings.issuer, &subject, now, g.settings.token_ttl)
        .map_err(|e| internal("sign the gateway token", &e))?;
    let token = keys
        .sign(&claims)
        .map_err(|e| internal("sign the gateway token", &e))?;
    Ok(TokenResponse {
        token,
        expires_at: rfc3339(claims.expires_at()),
    })
}

fn exchange_refusal(error: ExchangeError) -> Refusal {
    let reason = match &error {
        ExchangeError::BadSubjectToken => "BadSubjectToken",
        ExchangeError::NotAuthenticated { reason } => {
            // The API server says why only in words; these are kube's.
            let r = reason.to_ascii_lowercase();
            if r.contains("expired") {
                "Expired"
            } else if r.contains("audience") {
                "WrongAudience"
            } else if r.contains("token has been invalidated")
                || r.contains("pod uid")
                || (r.contains("pod") && (r.contains("deleted") || r.contains("not found")))
            {
                // kube's words for a token whose bound pod is gone or replaced
                // (pkg/serviceaccount/claims.go); exchanged tokens are always pod-bound.
                "PodDeleted"
            } else if r.contains("service account") || r.contains("serviceaccount") {
                "ServiceAccountDeleted"
            } else {
                "NotAuthenticated"
            }
        }
        ExchangeError::WrongAudience { .. } => "WrongAudience",
        ExchangeError::NotAServiceAccount { .. } => "NotAServiceAccount",
        ExchangeError::NotBoundToPod => "NotBoundToPod",
    };
    Refusal::new(StatusCode::UNAUTHORIZED, reason, error.to_string())
}

// === /v1/bundle ===

/// Query of `GET /v1/bundle`.
#[derive(Debug, Deserialize)]
pub struct BundleQuery {
    /// Long-poll: wait up to this long (`30s`, `1m`, or seconds) for a
    /// revision other than the one in `If-None-Match`.
    wait: Option<String>,
    /// The revision the caller has, instead of `If-None-Match`.
    revision: Option<String>,
}

async fn bundle(
    State(g): State<Arc<Gateway>>,
    Query(query): Query<BundleQuery>,
    headers: HeaderMap,
) -> Response {
    match serve_bundle(&g, &query, headers).await {
        Ok(response) => response,
        Err(refusal) => {
            g.metrics.request("bundle", refusal.reason_label());
            refusal.into_response()
        }
    }
}

async fn serve_bundle(
    g: &Gateway,
    query: &BundleQuery,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    // Held while this request works, not while it waits for a change.
    let mut working = Some(g.limits.enter()?);
    let claims = authenticate(g, &headers).await?;
    check_holder(g, &claims).await?;
    let wait = match &query.wait {
        Some(text) => parse_wait(text).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("wait={text:?} is not a duration like 30s or 1m"),
            )
        })?,
        None => Duration::ZERO,
    };
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        })
        .or_else(|| query.revision.clone());
    // The header values are slices of the connection's read buffer: held
    // while waiting, they keep that buffer from being used again, and hyper
    // allocates another to watch the connection (#25: 8 KiB per waiting
    // long-poll, one per sidecar).
    drop(headers);
    let identity = Identity {
        namespace: claims.namespace.clone(),
        service_account: claims.service_account.clone(),
        groups: claims.groups.clone(),
        pod: Some(claims.pod.clone()),
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Only changes in the caller's namespace can change its bundle.
    let mut changes = g.catalog.subscribe_namespace(&claims.namespace);
    let mut woken = false;
    loop {
        let expires_at = rfc3339(SystemTime::now() + g.settings.bundle_ttl);
        let entries = g.compiled.get(&g.catalog, &claims.namespace);
        // The caller's bundle is built only when it may have changed.
        let revision = match g.revisions.get(&entries, &identity, &claims.pod) {
            Some(revision) if known.as_deref() == Some(revision.as_str()) => revision,
            _ => {
                g.metrics.bundle_builds.inc();
                let bundle =
                    g.catalog
                        .bundle_with(&entries, &identity, &claims.pod, expires_at.clone());
                g.revisions
                    .remember(&entries, &identity, &claims.pod, &bundle.revision);
                if known.as_deref() != Some(bundle.revision.as_str()) {
                    if woken {
                        // The pod may be what changed hands while waiting; a deleted
                        // pod gets no further bundles.
                        check_holder(g, &claims).await?;
                    }
                    return Ok(bundle_response(g, bundle));
                }
                bundle.revision
            }
        };
        drop(working.take());
        let changed = {
            let _waiting = Waiting::new(&g.metrics.bundle_waiting);
            let mut draining = g.draining.clone();
            tokio::select! {
                r = changes.changed() => r.is_ok(),
                () = tokio::time::sleep_until(deadline) => false,
                // Not modified (as far as this replica will tell): the sidecar
                // keeps its bundle and asks again, reaching a replica that stays.
                () = crate::gateway::serve::drained(&mut draining) => false,
            }
        };
        if !changed {
            g.metrics.request("bundle", "not_modified");
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{revision}\"")) {
                headers.insert(header::ETAG, v);
            }
            // A 304 still vouches for the bundle the caller has: its validity moves on.
            if let Ok(v) = HeaderValue::from_str(&expires_at) {
                headers.insert("sluice-bundle-expires-at", v);
            }
            return Ok(response);
        }
        // Rebuilding is local; the API is asked (check_holder) only when the
        // bundle did change.
        woken = true;
        g.metrics.bundle_wakeups.inc();
    }
}

/// `200` with `bundle`, its revision as the ETag.
fn bundle_response(g: &Gateway, bundle: crate::wire::Bundle) -> Response {
    g.metrics.request("bundle", "ok");
    let etag = format!("\"{}\"", bundle.revision);
    let mut response = axum::Json(bundle).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// === /v1/jwks ===

async fn jwks(State(g): State<Arc<Gateway>>) -> Response {
    g.metrics.request("jwks", "ok");
    axum::Json(g.keys.get().jwks()).into_response()
}

// === /v1/audit ===

async fn audit(State(g): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let _working = g.limits.enter()?;
        let claims = authenticate(&g, &headers).await?;
        check_holder(&g, &claims).await?;
        let batch: AuditBatch = serde_json::from_slice(&body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "the body is not an audit batch ({{\"events\": [...], \"heads\": [...]}}): {e}"
                ),
            )
        })?;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let taken = g
            .audit
            .record(
                &g.client,
                &crate::gateway::audit_intake::Caller {
                    catalog: &g.catalog,
                    entries: &g.compiled.get(&g.catalog, &claims.namespace),
                    keys: &g.keys.get(),
                    claims: &claims,
                    now: &now,
                },
                &batch,
            )
            .await
            .map_err(|e| match e {
                crate::gateway::audit_intake::IntakeError::Sign(inner) => {
                    internal("sign the chain head", &inner)
                }
                e @ crate::gateway::audit_intake::IntakeError::HistoryUnavailable { .. } => {
                    tracing::warn!(error = %crate::error_chain(&e), "audit batch not taken");
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ApiServerUnavailable",
                        e.to_string(),
                    )
                    .retry_after(crate::gateway::overload::RETRY_AFTER)
                }
                other => Refusal::new(StatusCode::BAD_REQUEST, "BadBatch", other.to_string()),
            })?;
        g.metrics.audit_events.inc_by(taken.accepted);
        Ok::<_, Refusal>(AuditReceipt {
            accepted: taken.accepted,
            checkpoints: taken.checkpoints,
            acknowledged: taken.acknowledged,
        })
    }
    .await;
    match result {
        Ok(receipt) => {
            g.metrics.request("audit", "ok");
            axum::Json(receipt).into_response()
        }
        Err(refusal) => {
            g.metrics.request("audit", refusal.reason_label());
            refusal.into_response()
        }
    }
}

// === /mutate/pods ===

async fn mutate_pod(State(g): State<Arc<Gateway>>, body: Bytes) -> Response {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            g.metrics.request("mutate_pods", "bad_request");
            return Refusal::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the body is not an AdmissionReview of a Pod: {e}"),
            )
            .into_response();
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            g.metrics.request("mutate_pods", "bad_request");
            return axum::Json(AdmissionResponse::invalid(e.to_string()).into_review())
                .into_response();
        }
    };
    let response = match &request.object {
        Some(pod) => {
            let namespace = request.namespace.clone().unwrap_or_default();
            let service_account = service_account_of(pod).to_string();
            let cfg = InjectConfig {
                connections: g.catalog.inject_targets(&namespace, &service_account),
                service_account,
                ca_pem: g.certs.ca_bundle_pem(),
                native_sidecars: g.native_sidecars.current(),
                ..g.settings.inject.clone()
            };
            review_pod(&request, &cfg)
        }
        None => AdmissionResponse::from(&request),
    };
    g.metrics.request(
        "mutate_pods",
        if response.allowed {
            "allowed"
        } else {
            "denied"
        },
    );
    axum::Json(response.into_review()).into_response()
}

// === /metrics, /readyz ===

async fn metrics(State(g): State<Arc<Gateway>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        g.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(g): State<Arc<Gateway>>) -> Response {
    if g.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the caches are still filling, or the operator is shutting down",
        )
            .into_response()
    }
}

/// RFC 3339 text of `time`, seconds precision.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_durations_parse_and_are_capped() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_wait("10m"), Some(MAX_WAIT));
        assert_eq!(parse_wait(&format!("{}m", u64::MAX)), None);
        for bad in ["", "s", "-1s", "1h", "1.5s", "30 s"] {
            assert_eq!(parse_wait(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_is_seconds_precision_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn refusal_reasons_follow_the_api_servers_words() {
        let reason = |text: &str| {
            exchange_refusal(ExchangeError::NotAuthenticated {
                reason: text.to_string(),
            })
            .reason
        };
        assert_eq!(
            reason("invalid bearer token, service account token has expired"),
            "Expired"
        );
        assert_eq!(
            reason("invalid bearer token, token audiences don't match the requested audiences"),
            "WrongAudience"
        );
        assert_eq!(reason("pod shop/report has been deleted"), "PodDeleted");
        assert_eq!(
            reason("[invalid bearer token, service account token has been invalidated]"),
            "PodDeleted"
        );
        assert_eq!(
            reason(
                "[invalid bearer token, pod UID (b) does not match service account pod ref claim (a)]"
            ),
            "PodDeleted"
        );
        assert_eq!(
            reason("service account shop/report-job has been deleted"),
            "ServiceAccountDeleted"
        );
        assert_eq!(reason("invalid bearer token"), "NotAuthenticated");
    }
}
