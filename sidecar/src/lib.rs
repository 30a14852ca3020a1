//! Sluice sidecar: protocol proxies that decide, mask and audit.
//!
//! - [`standalone`]: runs from local manifests (`sluice-sidecar standalone`);
//! - [`run`]: runs in a pod from the operator's bundle (`sluice-sidecar run`),
//!   through [`bundle_client`];
//! - [`postgres`]: the PostgreSQL data plane (framing, messages, upstream,
//!   sessions, masking);
//! - [`http`]: the HTTP API data plane (decide, inject credentials, mask JSON);
//! - [`enforcement`]: the only caller of the policy engine;
//! - [`approval`]: just-in-time approvals through the operator (run mode);
//! - [`audit`], [`metrics`], [`admin`]: the audit trail, metrics and the admin port;
//! - [`shutdown`]: SIGTERM and SIGINT end the sessions on record;
//! - [`limits`]: connection caps, descriptor shares, startup and HTTP timeouts;
//! - [`rate`]: `statementsPerSecond`, one bucket per identity and Connection.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approval;
pub mod audit;
pub mod bundle_client;
pub mod enforcement;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod postgres;
pub mod rate;
pub mod run;
pub mod shutdown;
pub mod standalone;
pub mod tls;

pub use standalone::{StandaloneConfig, StandaloneError};
