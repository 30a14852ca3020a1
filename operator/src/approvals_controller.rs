//! The AccessRequest controller (leader only): moves each request's phase as
//! [`crate::approvals::next_phase`] says, records an Event and a notification
//! per transition, counts approvals on the AccessPolicy, and requeues at the
//! request's expiry.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sluice_crds::{AccessPolicy, AccessRequest, RequestPhase};

use crate::approvals::next_phase;
use crate::approvals_gateway::publish;
use crate::approvals_notify::Notifier;

/// Field manager of the approval counters on AccessPolicy status.
pub const COUNTER_FIELD_MANAGER: &str = "sluice-operator-approvals";
/// How often a settled request is looked at again anyway.
const RESYNC: Duration = Duration::from_secs(600);

/// What the controller shares between reconciles.
pub struct ApprovalContext {
    /// API server client (the operator's identity).
    pub client: Client,
    /// Records Events.
    pub recorder: Recorder,
    /// Outgoing notifications.
    pub notifier: Option<Notifier>,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The phase could not be written.
    #[error("could not write the phase of AccessRequest {namespace}/{name}")]
    WriteStatus {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// Runs the controller until dropped.
pub async fn run(ctx: Arc<ApprovalContext>) {
    Controller::new(
        Api::<AccessRequest>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

fn error_policy(_: Arc<AccessRequest>, error: &ApprovalError, _: Arc<ApprovalContext>) -> Action {
    let ApprovalError::WriteStatus { source, .. } = error;
    match source {
        kube::Error::Api(s) if s.code == 409 => Action::requeue(Duration::from_millis(200)),
        kube::Error::Api(s) if s.code == 404 => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

async fn reconcile(
    ar: Arc<AccessRequest>,
    ctx: Arc<ApprovalContext>,
) -> Result<Action, ApprovalError> {
    let namespace = ar.namespace().unwrap_or_default();
    let name = ar.name_any();
    let (change, until_expiry) = next_phase(&ar, Timestamp::now());
    let action_for = |d: Option<Duration>| match d {
        // A little past the expiry, so the clock has surely passed it.
        Some(d) => Action::requeue((d + Duration::from_millis(100)).min(RESYNC)),
        None => Action::requeue(RESYNC),
    };
    let Some(change) = change else {
        return Ok(action_for(until_expiry));
    };
    let mut updated = (*ar).clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.phase = Some(change.to);
    status.observed_generation = ar.metadata.generation;
    let ready = matches!(change.to, RequestPhase::Approved | RequestPhase::Executed);
    let condition = Condition {
        type_: "Ready".to_string(),
        status: if ready { "True" } else { "False" }.to_string(),
        reason: change.reason.to_string(),
        message: change.note.clone(),
        observed_generation: ar.metadata.generation,
        last_transition_time: Time(Timestamp::now()),
    };
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(condition);
    // A compare-and-swap on the resourceVersion read: a decision or another
    // writer in between makes this a conflict, and the next reconcile sees it.
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let stored = api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(|source| ApprovalError::WriteStatus {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    let type_ = match change.to {
        RequestPhase::Denied | RequestPhase::Expired => EventType::Warning,
        _ => EventType::Normal,
    };
    let note = if change.to == RequestPhase::Pending {
        crate::approvals_gateway::requested_note(&stored)
    } else {
        change.note.clone()
    };
    publish(&ctx.recorder, &stored, type_, change.reason, note.clone()).await;
    let tally = match change.to {
        RequestPhase::Approved => Some(Tally::Granted),
        RequestPhase::Denied | RequestPhase::Expired => Some(Tally::Denied),
        _ => None,
    };
    if let Some(tally) = tally {
        count(
            ctx.client.clone(),
            namespace.clone(),
            stored.spec.policy.clone(),
            tally,
        );
    }
    if let Some(n) = &ctx.notifier
        && change.to != RequestPhase::Pending
    {
        n.notify(format!(
            "AccessRequest {name} in {namespace} is {:?}: {note}",
            change.to
        ));
    }
    Ok(action_for(next_phase(&stored, Timestamp::now()).1))
}

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

/// Leader only: writes the mutating and validating webhook configurations on
/// AccessRequests when different (and, unless `adopt`, when missing).
pub async fn register_webhooks(
    client: Client,
    settings: &crate::webhook_config::WebhookSettings,
    adopt: bool,
) -> Result<[crate::webhook_config::Written; 2], kube::Error> {
    use crate::webhook_config::{
        APPROVALS_CONFIGURATION_NAME, approvals_mutating_configuration,
        approvals_validating_configuration, mutating_needs_apply, validating_needs_apply,
        write_configuration,
    };
    let mutating = write_configuration(
        &Api::all(client.clone()),
        APPROVALS_CONFIGURATION_NAME,
        &approvals_mutating_configuration(settings),
        adopt,
        mutating_needs_apply,
    )
    .await?;
    let validating = write_configuration(
        &Api::all(client),
        APPROVALS_CONFIGURATION_NAME,
        &approvals_validating_configuration(settings),
        adopt,
        validating_needs_apply,
    )
    .await?;
    Ok([mutating, validating])
}

/// The user the operator's client is authenticated as, from a
/// SelfSubjectReview: the only user allowed to create AccessRequests and move
/// their phase.
pub async fn operator_user(client: &Client) -> Result<String, kube::Error> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}
