//! The AccessRequest controller (leader only): moves each request's phase as
//! [`crate::approvals::rules::next_phase`] says, records an Event and a notification
//! per transition, counts approvals on the AccessPolicy, and requeues at the
//! request's expiry.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sluice_crds::{AccessRequest, RequestPhase};

use crate::approvals::events::publish;
use crate::approvals::notify::{self, Notifier};
use crate::approvals::rules::next_phase;
use crate::approvals::rules::requested_note;
use crate::approvals::tally::{Tally, count};

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
    /// Failed delivery attempts per request and notification, for the backoff.
    pub attempts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// How long a settled request (Denied, Expired, Executed, NotRun) is kept, from
    /// its last phase change, before it is deleted (`--access-request-retention`).
    pub retention: Duration,
    /// Reconciles are timed and counted as the other controllers' are
    /// (`sluice_reconcile_duration_seconds{controller="accessRequest"}`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the approval counters are added up: the replica's audit
    /// intake, which writes them ([`crate::approvals::tally`]).
    pub counters: Arc<crate::gateway::audit_intake::AuditIntake>,
}

/// The controller's name in the reconcile metrics.
const CONTROLLER: &str = "accessrequest";

/// Default of `--access-request-retention`: decided requests are evidence.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

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
    /// A settled request past its retention could not be deleted.
    #[error(
        "could not delete AccessRequest {namespace}/{name} past its retention; the operator's ClusterRole needs delete on accessrequests"
    )]
    Delete {
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
    let (ApprovalError::WriteStatus { source, .. } | ApprovalError::Delete { source, .. }) = error;
    tracing::warn!(error = %crate::error_chain(error), "AccessRequest not reconciled; retrying");
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
    let timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let result = settle_and_notify(ar, &ctx).await;
    drop(timer);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApprovalError::WriteStatus { .. }) => "writeStatus",
        Err(ApprovalError::Delete { .. }) => "delete",
    };
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ReconcileLabels {
            controller: CONTROLLER,
            outcome,
        })
        .inc();
    result
}

async fn settle_and_notify(
    ar: Arc<AccessRequest>,
    ctx: &Arc<ApprovalContext>,
) -> Result<Action, ApprovalError> {
    let ctx = ctx.clone();
    let action = settle(ar.clone(), &ctx).await?;
    let Some(notifier) = &ctx.notifier else {
        return Ok(action);
    };
    match notify(&ar, notifier, &ctx).await {
        Ok(()) => Ok(action),
        Err(retry) => {
            // A failed delivery is tried again soon, but never after the
            // request's expiry is due.
            let until_expiry = next_phase(&ar, Timestamp::now()).1;
            Ok(Action::requeue(match until_expiry {
                Some(d) => retry.min(d + Duration::from_millis(100)),
                None => retry,
            }))
        }
    }
}

/// Sends the notifications `ar` is due ([`notify::due`]) and records each
/// delivered one on the request. `Err`: the wait before trying again.
async fn notify(
    ar: &AccessRequest,
    notifier: &Notifier,
    ctx: &ApprovalContext,
) -> Result<(), Duration> {
    let namespace = ar.namespace().unwrap_or_default();
    let name = ar.name_any();
    let uid = ar.uid().unwrap_or_default();
    let mut current = ar.clone();
    for event in notify::due(ar, Timestamp::now()) {
        let key = format!("{uid}/{}", event.word());
        let outcome = match notifier.deliver(&current, event).await {
            Ok(false) => return Ok(()),
            Ok(true) => record_delivery(&mut current, event, &ctx.client).await,
            Err(error) => Err(error),
        };
        let mut attempts = ctx
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                attempts.remove(&key);
                tracing::info!(%namespace, %name, event = event.word(), "approval notification delivered");
            }
            Err(error) => {
                let attempt = attempts.entry(key).or_insert(0);
                let wait = notify::backoff(*attempt);
                *attempt = attempt.saturating_add(1);
                tracing::warn!(
                    %namespace, %name, event = event.word(), attempt = *attempt, %error,
                    retry_in_seconds = wait.as_secs(),
                    "approval notification not delivered; retrying"
                );
                return Err(wait);
            }
        }
    }
    Ok(())
}

/// Records `event` as delivered in [`notify::NOTIFIED_ANNOTATION`].
async fn record_delivery(
    ar: &mut AccessRequest,
    event: notify::NotifyEvent,
    client: &Client,
) -> Result<(), String> {
    let value = notify::notified_value(ar, event);
    let namespace = ar.namespace().unwrap_or_default();
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), &namespace);
    let body = json!({"metadata": {"annotations": {notify::NOTIFIED_ANNOTATION: value}}});
    *ar = api
        .patch(&ar.name_any(), &PatchParams::default(), &Patch::Merge(body))
        .await
        .map_err(|e| {
            format!(
                "delivered, but could not record it in {} (it will be sent again): {}",
                notify::NOTIFIED_ANNOTATION,
                crate::error_chain(&e)
            )
        })?;
    Ok(())
}

/// Moves the request to the phase [`next_phase`] says, or deletes it past
/// its retention.
async fn settle(ar: Arc<AccessRequest>, ctx: &ApprovalContext) -> Result<Action, ApprovalError> {
    let namespace = ar.namespace().unwrap_or_default();
    let name = ar.name_any();
    let (change, until_expiry) = next_phase(&ar, Timestamp::now());
    let action_for = |d: Option<Duration>| match d {
        // A little past the expiry, so the clock has surely passed it.
        Some(d) => Action::requeue((d + Duration::from_millis(100)).min(RESYNC)),
        None => Action::requeue(RESYNC),
    };
    let Some(change) = change else {
        return match retention_left(&ar, Timestamp::now(), ctx.retention) {
            Some(Duration::ZERO) => delete_settled(&ar, &ctx.client).await,
            Some(left) => Ok(Action::requeue(
                (left + Duration::from_millis(100)).min(RESYNC),
            )),
            None => Ok(action_for(until_expiry)),
        };
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
    // Counted as soon as the phase is stored, before anything awaits: a
    // reconcile stopped at an await (leadership lost, the drain) never
    // leaves a stored phase change uncounted (the next one sees no change).
    let tally = match change.to {
        RequestPhase::Approved => Some(Tally::Granted),
        RequestPhase::Denied | RequestPhase::Expired => Some(Tally::Denied),
        _ => None,
    };
    if let Some(tally) = tally {
        count(&ctx.counters, &namespace, &stored.spec.policy, tally);
    }
    let type_ = match change.to {
        RequestPhase::Denied | RequestPhase::Expired => EventType::Warning,
        _ => EventType::Normal,
    };
    let note = if change.to == RequestPhase::Pending {
        requested_note(&stored)
    } else {
        change.note.clone()
    };
    publish(&ctx.recorder, &stored, type_, change.reason, note.clone()).await;
    let until_expiry = next_phase(&stored, Timestamp::now()).1;
    Ok(
        match retention_left(&stored, Timestamp::now(), ctx.retention) {
            Some(left) => Action::requeue((left + Duration::from_millis(100)).min(RESYNC)),
            None => action_for(until_expiry),
        },
    )
}

/// How long a settled request (Denied, Expired, Executed, NotRun: no phase
/// follows)
/// is still kept: its retention less the time since its `Ready` condition last
/// changed (the final phase change), zero once past it. `None` for a request
/// that is not settled. A settled request without that condition (written by
/// hand) counts from its creation.
pub fn retention_left(ar: &AccessRequest, now: Timestamp, retention: Duration) -> Option<Duration> {
    let status = ar.status.as_ref()?;
    if !matches!(
        status.phase,
        Some(
            RequestPhase::Denied
                | RequestPhase::Expired
                | RequestPhase::Executed
                | RequestPhase::NotRun
        )
    ) {
        return None;
    }
    let settled_at = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.last_transition_time.0)
        .or_else(|| ar.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let age = now.duration_since(settled_at);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    Some(retention.saturating_sub(age))
}

/// Deletes a settled request past its retention (only that object: the
/// precondition on its UID spares a newer one of the same name).
async fn delete_settled(ar: &AccessRequest, client: &Client) -> Result<Action, ApprovalError> {
    let namespace = ar.namespace().unwrap_or_default();
    let name = ar.name_any();
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams {
        preconditions: ar.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            tracing::info!(%namespace, %name, "deleted a settled AccessRequest past its retention");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(source) => Err(ApprovalError::Delete {
            namespace,
            name,
            source,
        }),
    }
}

/// Leader only: writes the mutating and validating webhook configurations on
/// AccessRequests when different (and, unless `adopt`, when missing).
pub async fn register_webhooks(
    client: Client,
    settings: &crate::identity::webhook_config::WebhookSettings,
    adopt: bool,
) -> Result<[crate::identity::webhook_config::Written; 2], kube::Error> {
    use crate::identity::webhook_config::{
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::fixtures::{in_phase, request, t};

    /// The shared request in `phase`, created at t(0), its Ready condition
    /// changed at t(changed).
    fn settled(phase: RequestPhase, changed: Option<i64>) -> AccessRequest {
        let mut ar = in_phase(request(1), Some(phase), changed.map(|s| (s, "Denied", "")));
        ar.metadata.creation_timestamp = Some(Time(t(0)));
        ar
    }

    #[test]
    fn retention_counts_from_the_last_phase_change_of_settled_requests() {
        let keep = Duration::from_secs(100);
        for phase in [
            RequestPhase::Denied,
            RequestPhase::Expired,
            RequestPhase::Executed,
            RequestPhase::NotRun,
        ] {
            let ar = settled(phase, Some(50));
            assert_eq!(
                retention_left(&ar, t(60), keep),
                Some(Duration::from_secs(90))
            );
            assert_eq!(retention_left(&ar, t(150), keep), Some(Duration::ZERO));
            assert_eq!(retention_left(&ar, t(1000), keep), Some(Duration::ZERO));
        }
        // Without the condition: from creation.
        let ar = settled(RequestPhase::Denied, None);
        assert_eq!(
            retention_left(&ar, t(60), keep),
            Some(Duration::from_secs(40))
        );
        // Not settled: never deleted, however old.
        for phase in [RequestPhase::Pending, RequestPhase::Approved] {
            let ar = settled(phase, Some(0));
            assert_eq!(retention_left(&ar, t(1_000_000), keep), None);
        }
    }
}
