//! What every gateway handler stands on: the shared state ([`Gateway`]), the
//! error answer ([`Refusal`]), and the authentication of a caller's bearer
//! gateway token and of the pod that holds it ([`authenticate`],
//! [`check_holder`]). The handlers (here in `gateway` and in
//! [`crate::approvals::api`]) sit above it; it imports none of them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode, header};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{Api, Client};

use crate::approvals::events::ApprovalSettings;
use crate::catalog::Catalog;
use crate::gateway::audit_intake::AuditIntake;
use crate::gateway::holders::HeldPod;
use crate::gateway::token::{GatewayClaims, Subject, VerifyError};
use crate::identity::certs::ServingCerts;
use crate::identity::keys::GatewayKeys;
use crate::injection::inject::InjectConfig;
use crate::injection::token_holder::{HolderError, check_token_holder};
use crate::metrics::Metrics;

pub use crate::gateway::refusal::Refusal;
pub(crate) use crate::gateway::refusal::{bad_request, unavailable};

/// Longest `?wait=` a bundle request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

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
    pub approvals: Arc<ApprovalSettings>,
    /// True once the operator drains (SIGTERM): waiting bundle long-polls
    /// answer 304 at once, so their sidecars poll again (another replica).
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Native or classic sidecars: for the next pod, and where a pod's is expected.
    pub native_sidecars: crate::injection::native_sidecars::NativeSidecars,
    /// Each namespace's AccessPolicies, compiled once per change.
    pub compiled: Arc<crate::gateway::compiled::CompiledPolicies>,
    /// Each caller's bundle revision, while its namespace does not change.
    pub revisions: Arc<crate::gateway::revisions::BundleRevisions>,
    /// Gateway tokens already verified.
    pub verified: Arc<crate::gateway::verified::VerifiedTokens>,
    /// The pods and service accounts tokens are bound to, from watches.
    pub holders: Arc<crate::gateway::holders::Holders>,
    /// Bounds on concurrent work and API-server calls (429 past them).
    pub limits: crate::gateway::overload::Limits,
}

pub(crate) fn pod_deleted(subject: &Subject) -> Refusal {
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "PodDeleted",
        format!(
            "pod {}/{} the token is bound to no longer exists; the token is void",
            subject.namespace, subject.pod
        ),
    )
}

pub(crate) fn holder_refusal(error: HolderError) -> Refusal {
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

pub(crate) fn internal(what: &str, error: &(dyn std::error::Error + 'static)) -> Refusal {
    tracing::error!(error = %crate::error_chain(error), what, "internal error");
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal",
        format!("the operator could not {what}; see its logs"),
    )
}

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
    let verify = |keys: &Arc<crate::gateway::token::KeySet>| {
        g.verified
            .verify(keys, token, &g.settings.issuer, SystemTime::now())
    };
    let result = match verify(&g.keys.get()) {
        Err(VerifyError::UnknownKey { .. }) => {
            // Boxed: a rare API read, kept out of every request's future.
            if let Err(error) = Box::pin(g.keys.refresh()).await {
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
/// settings with the operator's CA bundle `ca_pem` (its current one).
pub(crate) fn sidecar_config(g: &Gateway, pod: &Pod, ca_pem: String) -> InjectConfig {
    InjectConfig {
        ca_pem,
        native_sidecars: g.native_sidecars.for_pod(pod),
        ..g.settings.inject.clone()
    }
}

/// Checks that `held` is the pod bound to `uid` and runs the genuine sidecar
/// ([`check_token_holder`]) under the operator's current CA bundle. A pod
/// version that passed under the same bundle is not checked again
/// ([`crate::gateway::holders::HeldPod`]: the pod watch hands over a new one
/// when the pod changes).
pub(crate) fn check_held(g: &Gateway, held: &HeldPod, uid: &str) -> Result<(), Refusal> {
    let ca_pem = g.certs.ca_bundle_pem();
    if held.vouched(uid, &ca_pem) {
        return Ok(());
    }
    let shared = g.holders.shared_ca(&ca_pem);
    let pod = held
        .pod()
        .map_err(|e| internal("decode the pod the token is bound to", &e))?;
    check_token_holder(
        &pod,
        uid,
        &sidecar_config(g, &pod, ca_pem),
        &g.settings.allowed_sidecar_repositories,
    )
    .map_err(holder_refusal)?;
    held.vouch(shared);
    Ok(())
}

/// The pod a gateway token was issued to must still exist and still run the
/// genuine sidecar ([`crate::injection::token_holder::check_genuine`]): deleting the pod
/// voids its tokens as soon as the pod watch sees it, not when they expire,
/// and so does editing its sidecar (a running pod's images are mutable).
/// Checked on every bundle poll, audit upload, approval call and executed
/// report, against the watches' caches ([`crate::gateway::holders`]); the
/// sidecar check itself once per pod version ([`check_held`]).
pub(crate) async fn check_holder(g: &Gateway, claims: &GatewayClaims) -> Result<(), Refusal> {
    let pod = holder_pod(g, &claims.namespace, &claims.pod, &claims.pod_uid).await?;
    let Some(pod) = pod.filter(|p| p.uid() == Some(claims.pod_uid.as_str())) else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "PodDeleted",
            format!(
                "pod {}/{} the gateway token was issued to no longer exists; the token is void",
                claims.namespace, claims.pod
            ),
        ));
    };
    check_held(g, &pod, &claims.pod_uid)?;
    // A deleted (or deleted and re-created) service account voids its tokens
    // as a deleted pod does.
    let same_account = |uid: Option<&str>| {
        uid.is_some_and(|uid| {
            claims.service_account_uid.is_empty() || uid == claims.service_account_uid
        })
    };
    let cached = g
        .holders
        .account_uid(&claims.namespace, &claims.service_account);
    // The watch's answer when it vouches for the account; otherwise (not
    // seen yet, or gone from the watch) the API server's.
    let same = same_account(cached.as_deref()) || {
        g.metrics.holder_reads.inc();
        let api = Api::<ServiceAccount>::namespaced(g.client.clone(), &claims.namespace);
        let account = g
            .limits
            .api(
                "service account lookup",
                api.get_opt(&claims.service_account),
            )
            .await?;
        same_account(account.as_ref().and_then(|a| a.metadata.uid.as_deref()))
    };
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

/// The pod `namespace/name` a token with `uid` is bound to: from the pod
/// watch when it holds that very pod, else read from the API server (a pod
/// the watch has not seen yet, one it saw deleted, or a watch that is not in
/// step). `None` when the API server has no such pod.
pub(crate) async fn holder_pod(
    g: &Gateway,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Option<HeldPod>, Refusal> {
    if let Some(pod) = g.holders.pod(namespace, name, uid) {
        return Ok(Some(pod));
    }
    g.metrics.holder_reads.inc();
    let api = Api::<Pod>::namespaced(g.client.clone(), namespace);
    let pod = g.limits.api("pod lookup", api.get_opt(name)).await?;
    // Read, not watched: what a check of it passes is not remembered.
    pod.map(|p| HeldPod::new(&p))
        .transpose()
        .map_err(|e| internal("hold the pod the token is bound to", &e))
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

impl Refusal {
    pub(crate) fn reason_label(&self) -> &'static str {
        self.reason
    }
}
