//! What the approval endpoints share besides the gateway ([`ApprovalSettings`]:
//! the operator's own user, the notifier, the Event recorder), and the Events
//! they and the AccessRequest controller record ([`publish`]; the `Requested` note is [`crate::approvals::rules::requested_note`]).

use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use sluice_crds::AccessRequest;

use crate::approvals::notify::Notifier;

/// What the approval endpoints depend on besides the gateway.
#[derive(Clone)]
pub struct ApprovalSettings {
    /// The Kubernetes user the operator acts as: the only one that creates
    /// AccessRequests and moves their phase.
    pub operator_user: String,
    /// Outgoing notifications, when configured.
    pub notifier: Option<Notifier>,
    /// Records Events on AccessRequests.
    pub recorder: Recorder,
}

impl std::fmt::Debug for ApprovalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalSettings")
            .field("operator_user", &self.operator_user)
            .field("notifier", &self.notifier.is_some())
            .finish_non_exhaustive()
    }
}

impl ApprovalSettings {
    /// Settings for `operator_user`, recording Events as `identity`.
    pub fn new(
        client: kube::Client,
        operator_user: String,
        identity: &str,
        notifier: Option<Notifier>,
    ) -> ApprovalSettings {
        ApprovalSettings {
            operator_user,
            notifier,
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "sluice-operator".to_string(),
                    instance: Some(identity.to_string()),
                },
            ),
        }
    }
}

/// Records an Event on `ar`; failures are logged, never fatal.
pub async fn publish(
    recorder: &Recorder,
    ar: &AccessRequest,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Decide".to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &ar.object_ref(&())).await {
        tracing::warn!(error = %crate::error_chain(&error), "could not publish an Event");
    }
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
