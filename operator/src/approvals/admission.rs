//! The admission webhooks on AccessRequests: creation only by the operator,
//! status updates only as [`crate::approvals::rules::bind_decisions`] allows,
//! and a new decision only under the rule as it stands when it is made.

use std::sync::Arc;

/// Prefix of every admission refusal, so the approver knows who refused.
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::jiff::Timestamp;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::json;
use sluice_crds::{AccessRequest, Verdict};

use crate::approvals::rules::{Approver, bind_decisions, check_create, rule_as_it_stands};
use crate::gateway::auth::{Gateway, bad_request};
use crate::identity::webhook_config::{MUTATE_PATH, VALIDATE_PATH};

/// The admission routes, merged into [`crate::gateway::router`].
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
}

const REFUSAL_PREFIX: &str = "sluice approvals";

/// [`rule_as_it_stands`] with the policy from the operator's cache.
pub(crate) fn check_rule(g: &Gateway, ar: &AccessRequest) -> Result<(), String> {
    let namespace = ar.metadata.namespace.as_deref().unwrap_or_default();
    let policy = g
        .catalog
        .policies_in(namespace)
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(ar.spec.policy.as_str()));
    rule_as_it_stands(ar, policy.as_deref()).map_err(|changed| {
        format!(
            "AccessRequest {namespace}/{} was filed under a rule that has changed since ({changed}); the statement did not run, send it again to ask under the rule as it stands",
            ar.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

async fn mutate(State(g): State<Arc<Gateway>>, body: Bytes) -> Response {
    admit(&g, &body, true)
}

async fn validate(State(g): State<Arc<Gateway>>, body: Bytes) -> Response {
    admit(&g, &body, false)
}

fn admit(g: &Gateway, body: &[u8], mutating: bool) -> Response {
    let route = if mutating {
        "mutate_accessrequests"
    } else {
        "validate_accessrequests"
    };
    let review: AdmissionReview<AccessRequest> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            g.metrics.request(route, "bad_request");
            return bad_request(format!(
                "the body is not an AdmissionReview of an AccessRequest: {e}"
            ))
            .into_response();
        }
    };
    let request: AdmissionRequest<AccessRequest> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            g.metrics.request(route, "bad_request");
            return axum::Json(AdmissionResponse::invalid(e.to_string()).into_review())
                .into_response();
        }
    };
    let mut response = review_request(
        &request,
        &g.approvals.operator_user,
        Timestamp::now(),
        mutating,
    );
    // A new decision is checked against the rule as it stands when it is made.
    if response.allowed
        && let (Some(old), Some(new)) = (&request.old_object, &request.object)
    {
        let count = |ar: &AccessRequest| ar.status.as_ref().map_or(0, |s| s.decisions.len());
        if count(new) > count(old)
            && let Err(message) = check_rule(g, new)
        {
            response =
                AdmissionResponse::from(&request).deny(format!("{REFUSAL_PREFIX}: {message}"));
        }
    }
    g.metrics.request(
        route,
        if response.allowed {
            "allowed"
        } else {
            "denied"
        },
    );
    axum::Json(response.into_review()).into_response()
}

/// Answers an admission request on an AccessRequest: creation only by the
/// operator; status updates as [`bind_decisions`] says. `mutating` answers
/// with the patch binding the new decision; the validating pass checks it is
/// bound.
pub fn review_request(
    request: &AdmissionRequest<AccessRequest>,
    operator_user: &str,
    now: Timestamp,
    mutating: bool,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let who = Approver {
        user: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
    };
    let deny = |response: AdmissionResponse, message: String| {
        response.deny(format!("{REFUSAL_PREFIX}: {message}"))
    };
    match (&request.operation, request.sub_resource.as_deref()) {
        (Operation::Create, None) => match check_create(&who, operator_user) {
            Ok(()) => response,
            Err(refusal) => deny(response, refusal.to_string()),
        },
        (Operation::Update, Some("status")) => {
            let (Some(old), Some(new)) = (&request.old_object, &request.object) else {
                return response;
            };
            let decisions = match bind_decisions(old, new, &who, operator_user, now) {
                Ok(d) => d,
                Err(refusal) => return deny(response, refusal.to_string()),
            };
            let stored = new
                .status
                .as_ref()
                .map(|s| s.decisions.clone())
                .unwrap_or_default();
            if mutating {
                if decisions == stored {
                    return response;
                }
                let patch = json_patch::Patch(vec![json_patch::PatchOperation::Replace(
                    json_patch::ReplaceOperation {
                        path: json_patch::jsonptr::PointerBuf::parse("/status/decisions")
                            .unwrap_or_default(),
                        value: json!(decisions),
                    },
                )]);
                match response.with_patch(patch) {
                    Ok(patched) => patched,
                    Err(error) => deny(
                        AdmissionResponse::from(request),
                        format!("could not encode the patch: {error}"),
                    ),
                }
            } else {
                let unbound = stored
                    .iter()
                    .zip(decisions.iter())
                    .any(|(s, d)| s.user != d.user || s.groups != d.groups);
                if unbound {
                    deny(
                        response,
                        format!(
                            "the new decision must be recorded as {} (the user making the change); the mutating webhook was bypassed",
                            who.user
                        ),
                    )
                } else {
                    response
                }
            }
        }
        _ => response,
    }
}

/// The verdict word for messages.
pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approved",
        Verdict::Deny => "denied",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn review(user: &str, groups: &[&str], new_user: &str) -> AdmissionRequest<AccessRequest> {
        let old = json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {
                "connection": "orders-db", "policy": "p", "rule": "bulk",
                "requester": {"serviceAccount": "job", "namespace": "shop"},
                "command": {"text": "DELETE FROM t", "fingerprint": "f", "sha256": "a".repeat(64)},
                "approvers": {"groups": ["dba"]},
                "expiresAt": "2099-01-01T00:00:00Z"
            },
            "status": {"phase": "Pending", "decisions": []}
        });
        let mut new = old.clone();
        // As the mutating pass leaves it when the typed user is the caller.
        let typed_groups: Vec<&str> = if new_user == user {
            groups.to_vec()
        } else {
            vec![]
        };
        new["status"]["decisions"] = json!([{"user": new_user, "groups": typed_groups,
            "verdict": "approve", "time": "2020-01-01T00:00:00Z"}]);
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "sluice.dev", "version": "v1alpha1", "kind": "AccessRequest"},
                "resource": {"group": "sluice.dev", "version": "v1alpha1", "resource": "accessrequests"},
                "subResource": "status",
                "name": "r", "namespace": "shop", "operation": "UPDATE",
                "userInfo": {"username": user, "groups": groups},
                "object": new, "oldObject": old, "dryRun": false
            }
        });
        let review: AdmissionReview<AccessRequest> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn mutation_binds_the_decision_and_validation_insists_on_it() {
        let now = Timestamp::from_second(1_900_000_000).unwrap();
        let mutated = review_request(&review("alice", &["dba"], "bob"), "op", now, true);
        assert!(mutated.allowed);
        let patch: Value = serde_json::from_slice(mutated.patch.as_deref().unwrap()).unwrap();
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/status/decisions");
        assert_eq!(patch[0]["value"][0]["user"], "alice");
        assert_eq!(patch[0]["value"][0]["groups"], json!(["dba"]));

        // The validating pass refuses a decision not bound to the caller.
        let unbound = review_request(&review("alice", &["dba"], "bob"), "op", now, false);
        assert!(!unbound.allowed);
        assert!(unbound.result.message.contains("must be recorded as alice"));
        let bound = review_request(&review("alice", &["dba"], "alice"), "op", now, false);
        assert!(bound.allowed, "{:?}", bound.result);

        let outsider = review_request(&review("bob", &["dev"], "bob"), "op", now, true);
        assert!(!outsider.allowed);
        assert!(
            outsider
                .result
                .message
                .starts_with("sluice approvals: bob is not an approver of AccessRequest shop/r")
        );
    }
}
