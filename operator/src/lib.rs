//! The Sluice operator: admission webhooks, the gateway API and the
//! controllers for Connection and AccessPolicy (AccessRequest to come).
//!
//! The modules here are the pure, testable parts the servers are wired from:
//! - [`inject`]: the sidecar injector behind the mutating webhook on pods,
//!   [`pod_guard`], which keeps an injected pod's sidecar as written on pod
//!   updates, and [`admission`], which turns their results into an AdmissionResponse;
//! - [`pki`]: the operator's own CA and hot-swappable serving certificate;
//! - [`gateway_token`]: the gateway JWT, its signing keys, rotation and JWKS;
//! - [`status`]: the Connection and AccessPolicy status the controllers write;
//! - [`token_exchange`]: the TokenReview behind `POST /v1/token` and the subject it yields;
//! - [`token_holder`]: which pods may exchange their token for a gateway token;
//! - [`webhook_config`]: the webhook configurations the operator registers;
//! - [`approvals`]: the rules of just-in-time approvals (who may decide, which phase next);
//! - [`config`]: the settings file the Helm chart writes (sidecar, audit, notifications).
//!
//! The running parts, composed by [`run::start`]:
//! - [`catalog`]: watched Connections, AccessPolicies and Secrets, and who is bound to what;
//! - [`gateway`] served by [`serve`]: `/v1/token`, `/v1/bundle`, `/v1/jwks`,
//!   `/v1/audit` ([`audit_intake`]), `/mutate/pods`, `/metrics`, `/healthz`, `/readyz`;
//!   request and answer bodies in [`wire`];
//! - [`controller`]: the Connection and AccessPolicy reconcilers, run by the
//!   leader elected in [`leader`];
//! - [`certs`] and [`keys`]: the serving certificates and gateway signing keys
//!   kept in Secrets, hot-reloaded, renewed by the leader;
//! - [`metrics`]: Prometheus metrics with bounded labels;
//! - [`approvals_gateway`], [`approvals_controller`], [`approvals_notify`]: the
//!   approval API and admission webhooks, the AccessRequest controller, and
//!   outgoing notifications.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod approvals;
pub mod approvals_controller;
pub mod approvals_gateway;
pub mod approvals_notify;
pub mod audit_intake;
pub mod catalog;
pub mod certs;
pub mod checkpoint_history;
pub mod config;
pub mod controller;
pub mod gateway;
pub mod gateway_token;
pub mod inject;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod metrics_watch;
pub mod native_sidecars;
pub mod pki;
pub mod pod_guard;
pub mod run;
pub mod serve;
pub mod status;
pub mod token_exchange;
pub mod token_holder;
pub mod webhook_config;
/// The gateway API's JSON lives in the policy crate (it crosses a process boundary).
pub use sluice_policy::wire;

/// Everything that can go wrong in the operator, by component.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod was refused by the injector.
    #[error("sidecar injection refused")]
    Inject(#[from] inject::InjectError),
    /// The operator's certificates could not be made, read or served.
    #[error("operator certificates")]
    Pki(#[from] pki::PkiError),
    /// A gateway token could not be issued, or a key set could not be loaded.
    #[error("gateway token")]
    GatewayToken(#[from] gateway_token::TokenError),
    /// The operator could not start.
    #[error("the operator could not start")]
    Start(#[from] run::StartError),
}

impl Error {
    /// A bounded label for metrics: never an error's text.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Inject(_) => "inject",
            Error::Pki(_) => "pki",
            Error::GatewayToken(_) => "gateway_token",
            Error::Start(_) => "start",
        }
    }
}

/// `error: cause: cause`, for logs: an error's whole `source()` chain on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
