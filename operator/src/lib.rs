//! The Sluice operator: admission webhooks, the gateway API, and the
//! controllers for Connection, AccessPolicy and AccessRequest.
//!
//! The wings, each a folder:
//! - [`injection`]: the pure sidecar injector, the pod-update guard, the
//!   native-sidecar decision and the AdmissionResponse they become;
//! - [`identity`]: the operator's CA and serving certificate, the gateway
//!   signing keys, and the webhook configurations carrying its CA bundle;
//! - [`gateway`]: the HTTPS API every replica serves (`/v1/token`,
//!   `/v1/bundle`, `/v1/jwks`, `/v1/audit`, `/mutate/pods`, `/metrics`,
//!   `/healthz`, `/readyz`) and the authentication below its handlers: token
//!   exchange, token holders, the gateway token, audit intake and the
//!   checkpoint history; request and answer bodies in [`wire`];
//! - [`approvals`]: just-in-time approvals: the pure rules, the `/v1/approvals`
//!   API and admission, the AccessRequest controller, and notifications;
//! - [`controllers`]: the Connection and AccessPolicy reconcilers.
//!
//! On the ground floor: [`config`] (the settings file the Helm chart writes),
//! [`catalog`] (watched Connections, AccessPolicies and Secrets, and who is
//! bound to what), [`status`] (the pure status the controllers write),
//! [`leader`] (the elected replica that runs the controllers), [`metrics`]
//! (Prometheus metrics with bounded labels); [`run::start`] composes them.
//!
//! Errors are typed per module (thiserror, `#[source]` on every wrapped
//! error); there is no crate-wide error enum, because no caller handles
//! errors of different modules alike. `anyhow` is used in `main.rs` only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod approvals;
pub mod catalog;
pub mod config;
pub mod controllers;
pub mod gateway;
pub mod identity;
pub mod injection;
pub mod leader;
pub mod metrics;
pub mod metrics_watch;
pub mod run;
pub mod status;
/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sluice-operator";

/// The gateway API's JSON lives in the policy crate (it crosses a process boundary).
pub use sluice_policy::wire;

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
