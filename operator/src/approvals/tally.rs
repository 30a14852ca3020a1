//! The approval counters on an AccessPolicy's status (`status.counters`:
//! `approvalsRequested`, `approvalsGranted`, `approvalsDenied`): how many
//! requests were asked, granted, and denied or left to expire under it.
//! Counted by the AccessRequest controller and the approval API into the
//! replica's audit intake, which writes them with the audit counters
//! ([`AuditIntake::add_counters`]): at once, as a read-modify-write guarded
//! by resourceVersion, kept and tried again when a write fails, and written
//! by the drain at SIGTERM — a count is never dropped with a detached write.

use sluice_crds::PolicyCounters;

use crate::gateway::audit_intake::AuditIntake;

/// Which approval counter of an AccessPolicy to add one to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    /// A request was created.
    Requested,
    /// A request was approved.
    Granted,
    /// A request was denied or expired.
    Denied,
}

/// Adds one to a counter of AccessPolicy `namespace/policy`; written by
/// `intake`'s flush (see the module).
pub fn count(intake: &AuditIntake, namespace: &str, policy: &str, tally: Tally) {
    let mut add = PolicyCounters::default();
    match tally {
        Tally::Requested => add.approvals_requested = 1,
        Tally::Granted => add.approvals_granted = 1,
        Tally::Denied => add.approvals_denied = 1,
    }
    intake.add_counters(namespace, policy, &add);
}
