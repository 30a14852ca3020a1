//! The Connection controller: `Ready` when the credentials, the CA and the
//! hash key it names are present and usable, with the AccessPolicies bound to it.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::json;
use sluice_crds::{Connection, ConnectionStatus};

use super::{Context, OwnedStatus, ReconcileError, apply_owned_status, mark_undecodable, now};
use crate::catalog::Lenient;
use crate::status::{ConnectionFacts, connection_status};

/// Computes a Connection's status from the catalog and applies it.
pub(crate) async fn reconcile(
    object: Arc<Lenient<Connection>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.reconcile_timer("connection");
    let connection = match object.as_ref() {
        Lenient::Decoded(c) => c,
        Lenient::Undecodable { .. } => return mark_undecodable(&object, &ctx, "connection").await,
    };
    let namespace = connection.namespace().unwrap_or_default();
    let name = connection.name_any();
    let spec = &connection.spec;
    let credentials = ctx
        .catalog
        .secret(&namespace, &spec.credentials.secret_ref.name);
    let ca_secret = spec
        .upstream
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
        .and_then(|r| ctx.catalog.secret(&namespace, &r.name));
    let hash_key_secret = spec
        .credentials
        .hash_key_secret_ref
        .as_ref()
        .and_then(|r| ctx.catalog.secret(&namespace, &r.name));
    let facts = ConnectionFacts {
        credentials: credentials.as_deref(),
        ca_secret: ca_secret.as_deref(),
        hash_key_secret: hash_key_secret.as_deref(),
        bound_policies: ctx
            .catalog
            .policies_in(&namespace)
            .iter()
            .filter(|p| p.spec.connections.contains(&name))
            .map(|p| p.name_any())
            .collect(),
    };
    let uid = connection.uid().unwrap_or_default();
    let stored = connection.status.clone().unwrap_or_default();
    let previous = ctx.previous(&uid, &stored, |s| &mut s.conditions);
    let status = connection_status(connection, &facts, Some(&previous), &now());
    let owned = owned_status(&status);
    let changed = owned != owned_status(&stored);
    apply_owned_status(
        &ctx,
        connection,
        OwnedStatus {
            kind: "Connection",
            controller: "connection",
            outcome: "ok",
            changed,
            status: owned,
            previous: &previous.conditions,
            conditions: &status.conditions,
        },
    )
    .await
}

/// The fields the controller owns; sidecar-fed ones belong to the audit intake's manager.
fn owned_status(status: &ConnectionStatus) -> serde_json::Value {
    json!({
        "conditions": status.conditions,
        "observedGeneration": status.observed_generation,
        "boundPolicies": status.bound_policies,
    })
}

pub(crate) fn error_policy(
    _: Arc<Lenient<Connection>>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    super::error_policy("connection", error, &ctx)
}
