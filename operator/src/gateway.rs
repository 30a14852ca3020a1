//! The HTTPS API every replica serves (DESIGN §3, §4, §5, §7, §8): identity
//! exchange, policy bundles, JWKS, audit intake, the pod injection webhook,
//! and `/metrics`, `/healthz`, `/readyz`.
//!
//! Handlers are thin: they read the request, call the pure modules
//! ([`crate::token_exchange`], [`crate::token_holder`], [`crate::gateway_token`],
//! [`crate::catalog`], [`crate::admission`]) and map their errors to an
//! [`ErrorBody`] with a stable CamelCase reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::{Api, Client};
use serde::Deserialize;
use sluice_policy::engine::Identity;

use crate::admission::review_pod;
use crate::audit_intake::AuditIntake;
use crate::catalog::Catalog;
use crate::certs::ServingCerts;
use crate::gateway_token::{GatewayClaims, Subject, VerifyError};
use crate::inject::{InjectConfig, service_account_of};
use crate::keys::GatewayKeys;
use crate::metrics::Metrics;
use crate::token_exchange::{ExchangeError, subject_from_review, token_review};
use crate::token_holder::{HolderError, check_token_holder};
use crate::wire::{AuditBatch, AuditReceipt, ErrorBody, TokenRequest, TokenResponse};

/// Longest `?wait=` a bundle request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Largest request body taken (audit batches are the big ones).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the gateway's behaviour depends on.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// The gateway URL: the `iss` of gateway tokens.
    pub issuer: String,
    /// How long a gateway token lives.
    pub token_ttl: Duration,
    /// How long a bundle may be used without a newer one.
    pub bundle_ttl: Duration,
    /// Image repositories a token holder's sidecar may run.
    pub allowed_sidecar_repositories: Vec<String>,
    /// The injector's settings; `connections`, `service_account` and `ca_pem`
    /// are filled in per request.
    pub inject: InjectConfig,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct Gateway {
    /// API server client.
    pub client: Client,
    /// Watched Connections, AccessPolicies and Secrets.
    pub catalog: Catalog,
    /// Gateway signing keys.
    pub keys: GatewayKeys,
    /// Serving certificates (for the CA bundle given to injected pods).
    pub certs: ServingCerts,
    /// Settings.
    pub settings: Arc<GatewaySettings>,
    /// Audit batches not yet written.
    pub audit: Arc<AuditIntake>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the caches are filled.
    pub ready: Arc<AtomicBool>,
    /// Just-in-time approvals: the operator's own user and the notifier.
    pub approvals: Arc<crate::approvals_gateway::ApprovalSettings>,
    /// True once the operator drains (SIGTERM): waiting bundle long-polls
    /// answer 304 at once, so their sidecars poll again (another replica).
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Native or classic sidecars: for the next pod, and where a pod's is expected.
    pub native_sidecars: crate::native_sidecars::NativeSidecars,
}

/// An error answer.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refusal {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            reason: self.reason.to_string(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        response
    }
}

/// The router of every route.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/token", post(exchange_token))
        .route("/v1/bundle", get(bundle))
        .route("/v1/jwks", get(jwks))
        .route("/v1/audit", post(audit))
        .route(crate::webhook_config::POD_INJECTION_PATH, post(mutate_pod))
        .merge(crate::approvals_gateway::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.metrics.clone(),
            crate::metrics::timed,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(gateway)
}

// === /v1/token ===

async fn exchange_token(State(g): State<Gateway>, body: Bytes) -> Response {
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

impl Refusal {
    pub(crate) fn reason_label(&self) -> &'static str {
        self.reason
    }
}

async fn exchange(g: &Gateway, body: &[u8]) -> Result<TokenResponse, Refusal> {
    let request: TokenRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the body is not {{\"subjectToken\": \"...\"}}: {e}"),
        )
    })?;
    let review = token_review(&request.subject_token).map_err(exchange_refusal)?;
    let reviewed = Api::<TokenReview>::all(g.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| unavailable("TokenReview", &e))?;
    let status = reviewed.status.unwrap_or_default();
    let subject = subject_from_review(&status).map_err(exchange_refusal)?;
    let pod = Api::<Pod>::namespaced(g.client.clone(), &subject.namespace)
        .get_opt(&subject.pod)
        .await
        .map_err(|e| unavailable("pod lookup", &e))?
        .ok_or_else(|| pod_deleted(&subject))?;
    check_token_holder(
        &pod,
        &subject.pod_uid,
        &sidecar_config(g, &pod),
        &g.settings.allowed_sidecar_repositories,
    )
    .map_err(holder_refusal)?;
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

fn pod_deleted(subject: &Subject) -> Refusal {
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "PodDeleted",
        format!(
            "pod {}/{} the token is bound to no longer exists; the token is void",
            subject.namespace, subject.pod
        ),
    )
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

fn holder_refusal(error: HolderError) -> Refusal {
    let (status, reason) = match &error {
        HolderError::PodReplaced { .. } => (StatusCode::UNAUTHORIZED, "PodDeleted"),
        HolderError::NotInjected => (StatusCode::FORBIDDEN, "NotInjected"),
        HolderError::SidecarCount { .. } => (StatusCode::FORBIDDEN, "SidecarCount"),
        HolderError::UntrustedImage { .. } => (StatusCode::FORBIDDEN, "UntrustedImage"),
        HolderError::RunningImageMismatch { .. } => (StatusCode::FORBIDDEN, "RunningImageMismatch"),
        HolderError::UntrustedCa => (StatusCode::FORBIDDEN, "UntrustedCa"),
        HolderError::SidecarTampered { .. } => (StatusCode::FORBIDDEN, "SidecarTampered"),
        HolderError::TokenExposed { .. } | HolderError::TokenVolume { .. } => {
            (StatusCode::FORBIDDEN, "TokenExposed")
        }
        HolderError::ProcessNamespaceShared { .. } => {
            (StatusCode::FORBIDDEN, "ProcessNamespaceShared")
        }
        HolderError::HostNetwork => (StatusCode::FORBIDDEN, "HostNetwork"),
    };
    Refusal::new(status, reason, error.to_string())
}

pub(crate) fn unavailable(what: &str, error: &kube::Error) -> Refusal {
    tracing::warn!(error = %crate::error_chain(error), what, "API server call failed");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ApiServerUnavailable",
        format!("the operator could not complete the {what} with the API server; retry shortly"),
    )
}

pub(crate) fn internal(what: &str, error: &(dyn std::error::Error + 'static)) -> Refusal {
    tracing::error!(error = %crate::error_chain(error), what, "internal error");
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal",
        format!("the operator could not {what}; see its logs"),
    )
}

// === bearer tokens ===

/// Verifies the bearer gateway token, re-reading the keys once when it names
/// a key this replica has not seen yet (another replica rotated).
pub(crate) async fn authenticate(
    g: &Gateway,
    headers: &HeaderMap,
) -> Result<GatewayClaims, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "MissingToken",
                "send the gateway token from POST /v1/token as Authorization: Bearer <token>",
            )
        })?;
    let verify = |keys: &crate::gateway_token::KeySet| {
        keys.verify(token, &g.settings.issuer, SystemTime::now())
    };
    let result = match verify(&g.keys.get()) {
        Err(VerifyError::UnknownKey { .. }) => {
            if let Err(error) = g.keys.refresh().await {
                tracing::warn!(error = %crate::error_chain(&error), "could not re-read the gateway keys");
            }
            verify(&g.keys.get())
        }
        other => other,
    };
    result.map_err(|e| {
        let reason = match e {
            VerifyError::Expired { .. } => "Expired",
            VerifyError::BadSignature => "BadSignature",
            VerifyError::UnknownKey { .. } => "UnknownKey",
            VerifyError::WrongAudience => "WrongAudience",
            VerifyError::WrongIssuer { .. } => "WrongIssuer",
            VerifyError::NotYetValid { .. } => "NotYetValid",
            VerifyError::Malformed(_)
            | VerifyError::MissingKeyId
            | VerifyError::WrongAlgorithm { .. } => "Malformed",
        };
        Refusal::new(StatusCode::UNAUTHORIZED, reason, e.to_string())
    })
}

/// What a genuine sidecar looks like to this replica: the injector's
/// settings with the operator's current CA bundle.
fn sidecar_config(g: &Gateway, pod: &Pod) -> InjectConfig {
    InjectConfig {
        ca_pem: g.certs.ca_bundle_pem(),
        native_sidecars: g.native_sidecars.for_pod(pod),
        ..g.settings.inject.clone()
    }
}

/// The pod a gateway token was issued to must still exist and still run the
/// genuine sidecar ([`crate::token_holder::check_genuine`]): deleting the pod
/// voids its tokens at once, not when they expire, and so does editing its
/// sidecar (a running pod's images are mutable). Checked on every bundle
/// poll, approval call and executed report.
pub(crate) async fn check_holder(g: &Gateway, claims: &GatewayClaims) -> Result<(), Refusal> {
    let pod = Api::<Pod>::namespaced(g.client.clone(), &claims.namespace)
        .get_opt(&claims.pod)
        .await
        .map_err(|e| unavailable("pod lookup", &e))?;
    let Some(pod) = pod.filter(|p| p.metadata.uid.as_deref() == Some(claims.pod_uid.as_str()))
    else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "PodDeleted",
            format!(
                "pod {}/{} the gateway token was issued to no longer exists; the token is void",
                claims.namespace, claims.pod
            ),
        ));
    };
    check_token_holder(
        &pod,
        &claims.pod_uid,
        &sidecar_config(g, &pod),
        &g.settings.allowed_sidecar_repositories,
    )
    .map_err(holder_refusal)?;
    // A deleted (or deleted and re-created) service account voids its tokens
    // as a deleted pod does.
    let account = Api::<ServiceAccount>::namespaced(g.client.clone(), &claims.namespace)
        .get_opt(&claims.service_account)
        .await
        .map_err(|e| unavailable("service account lookup", &e))?;
    let same = account.is_some_and(|a| {
        claims.service_account_uid.is_empty()
            || a.metadata.uid.as_deref() == Some(claims.service_account_uid.as_str())
    });
    if !same {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "ServiceAccountDeleted",
            format!(
                "service account {}/{} the gateway token was issued to was deleted (or deleted and created again); the token is void",
                claims.namespace, claims.service_account
            ),
        ));
    }
    Ok(())
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
    State(g): State<Gateway>,
    Query(query): Query<BundleQuery>,
    headers: HeaderMap,
) -> Response {
    match serve_bundle(&g, &query, &headers).await {
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
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let claims = authenticate(g, headers).await?;
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
        let expires = SystemTime::now() + g.settings.bundle_ttl;
        let bundle = g
            .catalog
            .bundle_for(&identity, &claims.pod, rfc3339(expires));
        if known.as_deref() != Some(bundle.revision.as_str()) {
            if woken {
                // The pod may be what changed hands while waiting; a deleted
                // pod gets no further bundles.
                check_holder(g, &claims).await?;
            }
            g.metrics.request("bundle", "ok");
            let etag = format!("\"{}\"", bundle.revision);
            let mut response = axum::Json(bundle).into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, v);
            }
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(response);
        }
        let changed = {
            let _waiting = Waiting::new(&g.metrics.bundle_waiting);
            let mut draining = g.draining.clone();
            tokio::select! {
                r = changes.changed() => r.is_ok(),
                () = tokio::time::sleep_until(deadline) => false,
                // Not modified (as far as this replica will tell): the sidecar
                // keeps its bundle and asks again, reaching a replica that stays.
                () = crate::serve::drained(&mut draining) => false,
            }
        };
        if !changed {
            g.metrics.request("bundle", "not_modified");
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", bundle.revision)) {
                headers.insert(header::ETAG, v);
            }
            // A 304 still vouches for the bundle the caller has: its validity moves on.
            if let Ok(v) = HeaderValue::from_str(&bundle.expires_at) {
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

/// Counts a waiting long-poll for as long as it lives (also when the caller
/// hangs up and the request future is dropped).
pub(crate) struct Waiting<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Waiting<'a> {
    pub(crate) fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Parses `30s`, `1m`, `500ms` or plain seconds, capped at [`MAX_WAIT`].
pub fn parse_wait(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    Some(d.min(MAX_WAIT))
}

// === /v1/jwks ===

async fn jwks(State(g): State<Gateway>) -> Response {
    g.metrics.request("jwks", "ok");
    axum::Json(g.keys.get().jwks()).into_response()
}

// === /v1/audit ===

async fn audit(State(g): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
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
        let (accepted, checkpoints) = g
            .audit
            .record(&g.client, &g.catalog, &g.keys.get(), &claims, &batch, &now)
            .await
            .map_err(|e| match e {
                crate::audit_intake::IntakeError::Sign(inner) => {
                    internal("sign the chain head", &inner)
                }
                e @ crate::audit_intake::IntakeError::HistoryUnavailable { .. } => {
                    tracing::warn!(error = %crate::error_chain(&e), "audit batch not taken");
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ApiServerUnavailable",
                        e.to_string(),
                    )
                }
                other => Refusal::new(StatusCode::BAD_REQUEST, "BadBatch", other.to_string()),
            })?;
        g.metrics.audit_events.inc_by(accepted);
        Ok::<_, Refusal>(AuditReceipt {
            accepted,
            checkpoints,
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

async fn mutate_pod(State(g): State<Gateway>, body: Bytes) -> Response {
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

async fn metrics(State(g): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        g.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(g): State<Gateway>) -> Response {
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
