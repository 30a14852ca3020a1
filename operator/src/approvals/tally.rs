//! The approval counters on an AccessPolicy's status (`status.approvals`):
//! how many requests were asked, granted, and denied or left to expire under it.
//! Written by the AccessRequest controller and the approval API under their
//! own field manager, as a read-modify-write guarded by resourceVersion.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use sluice_crds::AccessPolicy;

/// The field manager of the approval counters.
pub const COUNTER_FIELD_MANAGER: &str = "sluice-operator-approvals";

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

/// Adds one to a counter of AccessPolicy `namespace/policy`, in the
/// background: read, add, write with the resourceVersion read (as the audit
/// intake does), retried on conflict, so concurrent writers never lose a count.
pub fn count(client: Client, namespace: String, policy: String, tally: Tally) {
    tokio::spawn(async move {
        let api: Api<AccessPolicy> = Api::namespaced(client, &namespace);
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match add_one(&api, &policy, tally).await {
                Ok(()) => return,
                Err(kube::Error::Api(s)) if s.code == 404 => return,
                Err(error) => {
                    tracing::debug!(error = %crate::error_chain(&error), policy, "approval counter not written; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::warn!(
            policy,
            namespace,
            ?tally,
            "gave up writing an approval counter"
        );
    });
}

async fn add_one(api: &Api<AccessPolicy>, policy: &str, tally: Tally) -> Result<(), kube::Error> {
    let current = api.get_status(policy).await?;
    let mut counters = current.status.and_then(|s| s.counters).unwrap_or_default();
    match tally {
        Tally::Requested => counters.approvals_requested += 1,
        Tally::Granted => counters.approvals_granted += 1,
        Tally::Denied => counters.approvals_denied += 1,
    }
    let body = json!({
        "apiVersion": sluice_crds::API_VERSION,
        "kind": "AccessPolicy",
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "status": {"counters": counters},
    });
    api.patch_status(
        policy,
        &PatchParams::apply(COUNTER_FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}
