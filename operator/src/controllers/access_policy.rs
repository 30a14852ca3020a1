//! The AccessPolicy controller: `Ready` when the policy compiles and every
//! Connection it names exists, with the subjects it binds.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::json;
use sluice_crds::{AccessPolicy, AccessPolicyStatus};

use super::{Context, OwnedStatus, ReconcileError, apply_owned_status, mark_undecodable, now};
use crate::catalog::Lenient;
use crate::status::{PolicyProblem, access_policy_status};

/// Compiles an AccessPolicy against the catalog and applies its status.
pub(crate) async fn reconcile(
    object: Arc<Lenient<AccessPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.reconcile_timer("accesspolicy");
    let policy = match object.as_ref() {
        Lenient::Decoded(p) => p,
        Lenient::Undecodable { .. } => {
            return mark_undecodable(&object, &ctx, "accesspolicy").await;
        }
    };
    let namespace = policy.namespace().unwrap_or_default();
    let compiled = ctx
        .catalog
        .compile(policy)
        .map(|_| ())
        .map_err(|e| PolicyProblem {
            reason: e.reason(),
            message: e.to_string(),
        });
    let known: BTreeSet<String> = ctx
        .catalog
        .connections_in(&namespace)
        .iter()
        .map(|c| c.name_any())
        .collect();
    let uid = policy.uid().unwrap_or_default();
    let stored = policy.status.clone().unwrap_or_default();
    let previous = ctx.previous(&uid, &stored, |s| &mut s.conditions);
    let status = access_policy_status(policy, compiled, &known, Some(&previous), &now());
    let owned = owned_status(&status);
    let changed = owned != owned_status(&stored);
    apply_owned_status(
        &ctx,
        policy,
        OwnedStatus {
            kind: "AccessPolicy",
            controller: "accesspolicy",
            outcome: "ok",
            changed,
            status: owned,
            previous: &previous.conditions,
            conditions: &status.conditions,
        },
    )
    .await
}

fn owned_status(status: &AccessPolicyStatus) -> serde_json::Value {
    json!({
        "conditions": status.conditions,
        "observedGeneration": status.observed_generation,
        "subjects": status.subjects,
    })
}

pub(crate) fn error_policy(
    _: Arc<Lenient<AccessPolicy>>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    super::error_policy("accesspolicy", error, &ctx)
}
