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
#![forbid(unsafe_code)]

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
