//! Just-in-time approvals (DESIGN §2 AccessRequest, §6): a sidecar asks, a
//! person decides, the operator moves the AccessRequest through its phases.
//!
//! - [`rules`]: the pure rules: who may decide, what a decision binds to, the
//!   next phase, the AccessRequest the gateway creates;
//! - [`api`]: the `/v1/approvals` API the sidecars call;
//! - [`admission`]: the admission webhooks on AccessRequests;
//! - [`controller`]: the AccessRequest controller (phases, expiry, retention);
//! - [`events`]: the settings the approval endpoints share, and the Events
//!   they record;
//! - [`tally`]: the per-policy approval counters;
//! - [`notify`]: the outgoing notifications.

pub mod admission;
pub mod api;
pub mod controller;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod notify;
pub mod rules;
pub mod tally;
