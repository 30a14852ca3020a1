//! The Sluice operator: admission webhooks, the gateway API and (to come) the
//! controllers for Connection, AccessPolicy and AccessRequest.
//!
//! The modules here are the pure, testable parts the servers are wired from:
//! - [`inject`]: the sidecar injector behind the mutating webhook on pods, and
//!   [`admission`], which turns its result into an AdmissionResponse;
//! - [`pki`]: the operator's own CA and hot-swappable serving certificate;
//! - [`gateway_token`]: the gateway JWT, its signing keys, rotation and JWKS;
//! - [`status`]: the Connection and AccessPolicy status the controllers write;
//! - [`token_exchange`]: the TokenReview behind `POST /v1/token` and the subject it yields;
//! - [`token_holder`]: which pods may exchange their token for a gateway token;
//! - [`webhook_config`]: the MutatingWebhookConfiguration the operator registers.
//!
//! How the servers (not built yet) put them together:
//! - start-up: read the certificate Secret into [`pki::OperatorPki`] (or none),
//!   [`pki::ensure`] it for the names of `--webhook-url` / the Service, write it
//!   back unless [`pki::Renewal::UpToDate`], serve through a
//!   [`pki::HotCertResolver`] and [`pki::HotCertResolver::swap`] on renewal; the
//!   leader applies [`webhook_config::pod_injection_configuration`] when
//!   [`webhook_config::ca_bundle_differs`]. Same for the signing keys:
//!   [`gateway_token::KeySet::from_secret_data`], rotate, prune, write back.
//! - `POST /mutate/pods`: namespace from the request, service account from
//!   [`inject::service_account_of`], one [`inject::ConnectionTarget`] per
//!   Connection of the namespace (bound when a compiled policy `binds` the
//!   identity and names the Connection), then [`admission::review_pod`].
//! - `POST /v1/token`: [`token_exchange::token_review`], TokenReview create,
//!   [`token_exchange::subject_from_review`], get the pod,
//!   [`token_holder::check_token_holder`], [`gateway_token::GatewayClaims::new`],
//!   [`gateway_token::KeySet::sign`]. `GET /v1/jwks`: [`gateway_token::KeySet::jwks`].
//!   Bearer tokens on the other routes: [`gateway_token::KeySet::verify`].
//! - reconcilers: [`status::connection_status`] / [`status::access_policy_status`],
//!   apply when changed, one Event per [`status::transitions`] entry.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod gateway_token;
pub mod inject;
pub mod pki;
pub mod status;
pub mod token_exchange;
pub mod token_holder;
pub mod webhook_config;

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
}

impl Error {
    /// A bounded label for metrics: never an error's text.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Inject(_) => "inject",
            Error::Pki(_) => "pki",
            Error::GatewayToken(_) => "gateway_token",
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
