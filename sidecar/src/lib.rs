//! Sluice sidecar: protocol proxies that decide, mask and audit.
//!
//! How it runs:
//! - [`standalone`]: from local manifests (`sluice-sidecar standalone`);
//! - [`run`]: in a pod, from the operator's bundle (`sluice-sidecar run`),
//!   through [`bundle_client`]; [`run_env`]: its settings from the environment;
//! - [`plane`]: the [`plane::Plane`] trait (`prepare` / `commit` /
//!   `withdraw`) every data plane implements ([`postgres::bundle`],
//!   [`http::bundle`]); [`planes`]: all of them, as both modes hold them;
//! - [`shutdown`]: SIGTERM and SIGINT end the sessions on record;
//! - [`anchor`]: standalone mode's own signed checkpoints of the audit file.
//!
//! The data planes:
//! - [`postgres`]: the PostgreSQL plane (framing, messages, upstream,
//!   sessions, row masks), with [`enforcement`], its side of the policy
//!   engine (decisions on SQL texts, refusals, result masks, statement
//!   records), and [`parse_pool`], which decides large texts off the
//!   runtime thread;
//! - [`http`]: the HTTP API plane (decide requests, inject credentials,
//!   mask JSON and text responses).
//!
//! The spine every plane shares:
//! - [`standing`]: what is in force for the identity on a Connection;
//! - [`approval`]: just-in-time approvals through the operator, one flow and
//!   one audit shape;
//! - [`masking`]: the maskers, detectors and result limits in force;
//! - [`tls`]: TLS to the upstream;
//! - [`audit`], [`metrics`], [`admin`]: the audit trail, metrics and the
//!   admin port ([`debug_standing`]: its `/debug/standing` page);
//! - [`recording`]: what a recorded session's workload received, for replay;
//! - [`limits`]: connection caps, descriptor shares, startup and HTTP
//!   timeouts; [`rate`]: `statementsPerSecond`, one bucket per identity and
//!   Connection.
#![forbid(unsafe_code)]

pub mod admin;
pub mod anchor;
pub mod approval;
pub mod audit;
pub mod bundle_client;
pub mod debug_standing;
pub mod enforcement;
pub mod http;
pub mod limits;
pub mod masking;
pub mod metrics;
pub mod mysql;
pub mod parse_pool;
pub mod plane;
pub mod planes;
pub mod policy_history;
pub mod postgres;
pub mod rate;
pub mod recording;
pub mod run;
pub mod run_env;
pub mod shutdown;
pub mod standalone;
pub mod standing;
pub mod tls;

pub use standalone::{StandaloneConfig, StandaloneError};
