//! The Connection and AccessPolicy controllers (DESIGN §8).
//!
//! A reconcile reads top to bottom: gather the facts from the [`Catalog`],
//! compute the status with [`crate::status`], apply it by server-side apply
//! under [`FIELD_MANAGER`] when it differs from what is stored, emit one Event
//! per condition that flipped, requeue. Running it twice changes nothing and
//! emits nothing. Both controllers re-run every object when anything in the
//! catalog changes, since a Secret, a Connection or a policy elsewhere in the
//! namespace can change an object's status.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use sluice_crds::{AccessPolicy, AccessPolicyStatus, Conditions, Connection, ConnectionStatus};

use crate::catalog::{Catalog, Lenient};
use crate::certs::FIELD_MANAGER;
use crate::metrics::{Metrics, ReconcileLabels};
use crate::status::{
    ConnectionFacts, PolicyProblem, Transition, access_policy_status, connection_status,
    transitions,
};

/// How often an object is reconciled when nothing happens.
const RESYNC: Duration = Duration::from_secs(300);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Writing status failed.
    #[error("could not apply the status of {kind} {namespace}/{name}")]
    ApplyStatus {
        /// `Connection` or `AccessPolicy`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::ApplyStatus { source, .. } => match source {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
        }
    }

    /// How long to wait before retrying, by kind.
    fn backoff(&self) -> Duration {
        match self.metric_label() {
            "conflict" => Duration::from_secs(1),
            "not_found" => Duration::from_secs(30),
            "api" => Duration::from_secs(10),
            _ => Duration::from_secs(5),
        }
    }
}

/// What the reconcilers share.
pub struct Context {
    /// API server client.
    pub client: Client,
    /// Watched objects.
    pub catalog: Catalog,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The conditions last applied, by object UID. The controller's cache can
    /// lag its own writes; computing from it would move `lastTransitionTime`
    /// and repeat Events, so the newer of the two is the previous state.
    pub applied: Mutex<HashMap<String, Conditions>>,
}

impl Context {
    /// A context with nothing applied yet.
    pub fn new(
        client: Client,
        catalog: Catalog,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Context {
        Context {
            client,
            catalog,
            recorder,
            metrics,
            applied: Mutex::new(HashMap::new()),
        }
    }

    /// `stored`, with the conditions this replica applied last when it has them.
    fn previous<S: Clone>(
        &self,
        uid: &str,
        stored: &S,
        conditions: impl Fn(&mut S) -> &mut Conditions,
    ) -> S {
        let mut previous = stored.clone();
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = applied.get(uid) {
            *conditions(&mut previous) = c.clone();
        }
        previous
    }

    fn remember(&self, uid: &str, conditions: &Conditions) {
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        applied.insert(uid.to_string(), conditions.clone());
    }
}

/// Runs both controllers until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let connections = Controller::new(
        Api::<Lenient<Connection>>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(ctx.catalog.change_stream())
    .run(reconcile_connection, error_policy_connection, ctx.clone())
    .for_each(|_| async {});
    let policies = Controller::new(
        Api::<Lenient<AccessPolicy>>::all(client),
        watcher::Config::default(),
    )
    .reconcile_all_on(ctx.catalog.change_stream())
    .run(reconcile_policy, error_policy_policy, ctx.clone())
    .for_each(|_| async {});
    futures::join!(connections, policies);
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

// === Connection ===

async fn reconcile_connection(
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
    let owned = owned_connection_status(&status);
    if owned != owned_connection_status(&stored) {
        let body = json!({
            "apiVersion": sluice_crds::API_VERSION,
            "kind": "Connection",
            "status": owned,
        });
        Api::<Connection>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(|source| ReconcileError::ApplyStatus {
                kind: "Connection",
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        ctx.remember(&uid, &status.conditions);
        publish(
            &ctx,
            connection,
            &transitions(&previous.conditions, &status.conditions),
        )
        .await;
    }
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: "connection",
            outcome: "ok",
        })
        .inc();
    Ok(Action::requeue(RESYNC))
}

/// The fields the controller owns; sidecar-fed ones belong to the audit intake's manager.
fn owned_connection_status(status: &ConnectionStatus) -> serde_json::Value {
    json!({
        "conditions": status.conditions,
        "observedGeneration": status.observed_generation,
        "boundPolicies": status.bound_policies,
    })
}

fn error_policy_connection(
    _: Arc<Lenient<Connection>>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    error_policy("connection", error, &ctx)
}

// === AccessPolicy ===

async fn reconcile_policy(
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
    let name = policy.name_any();
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
    let owned = owned_policy_status(&status);
    if owned != owned_policy_status(&stored) {
        let body = json!({
            "apiVersion": sluice_crds::API_VERSION,
            "kind": "AccessPolicy",
            "status": owned,
        });
        Api::<AccessPolicy>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(|source| ReconcileError::ApplyStatus {
                kind: "AccessPolicy",
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        ctx.remember(&uid, &status.conditions);
        publish(
            &ctx,
            policy,
            &transitions(&previous.conditions, &status.conditions),
        )
        .await;
    }
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: "accesspolicy",
            outcome: "ok",
        })
        .inc();
    Ok(Action::requeue(RESYNC))
}

fn owned_policy_status(status: &AccessPolicyStatus) -> serde_json::Value {
    json!({
        "conditions": status.conditions,
        "observedGeneration": status.observed_generation,
        "subjects": status.subjects,
    })
}

fn error_policy_policy(
    _: Arc<Lenient<AccessPolicy>>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    error_policy("accesspolicy", error, &ctx)
}

// === shared ===

/// An object that does not decode: logged, and its status conditions set to
/// `Ready=False` (and `Invalid=True` for policies) with reason `Undecodable`,
/// written through the untyped API (the typed one could not read the reply).
/// The catalog already leaves it out (policies fail closed).
async fn mark_undecodable<K>(
    object: &Lenient<K>,
    ctx: &Context,
    controller: &'static str,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()>,
{
    let Lenient::Undecodable {
        metadata,
        raw,
        error,
    } = object
    else {
        return Ok(Action::requeue(RESYNC));
    };
    let kind: &'static str = if K::kind(&()) == "Connection" {
        "Connection"
    } else {
        "AccessPolicy"
    };
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let name = metadata.name.clone().unwrap_or_default();
    tracing::warn!(kind, %namespace, %name, %error, "skipping an object the operator cannot decode");
    let uid = metadata.uid.clone().unwrap_or_default();
    let stored: Conditions =
        serde_json::from_value(raw["status"]["conditions"].clone()).unwrap_or_default();
    let previous = ctx.previous(&uid, &stored, |c| c);
    let conditions =
        crate::status::undecodable_conditions(kind, error, metadata.generation, &previous, &now());
    if conditions != stored {
        let body = json!({
            "apiVersion": sluice_crds::API_VERSION,
            "kind": kind,
            "status": {"conditions": conditions, "observedGeneration": metadata.generation},
        });
        let resource = kube::discovery::ApiResource::erase::<K>(&());
        Api::<kube::api::DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(|source| ReconcileError::ApplyStatus {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        ctx.remember(&uid, &conditions);
        publish(ctx, object, &transitions(&previous, &conditions)).await;
    }
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller,
            outcome: "undecodable",
        })
        .inc();
    Ok(Action::requeue(RESYNC))
}

fn error_policy(controller: &'static str, error: &ReconcileError, ctx: &Context) -> Action {
    tracing::warn!(error = %crate::error_chain(error), controller, "reconcile failed");
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller,
            outcome: error.metric_label(),
        })
        .inc();
    Action::requeue(error.backoff())
}

/// events.k8s.io/v1 refuses notes over 1 KiB (k8s.io/kubernetes
/// pkg/apis/core/validation/events.go `NoteLengthLimit = 1024`, counted in
/// bytes); longer notes are cut at a character boundary and marked, as
/// kube-scheduler does with its messages. The condition keeps the whole text.
pub fn event_note(text: &str) -> String {
    const LIMIT: usize = 1024;
    const MARK: &str = " …(truncated)";
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// One Event per flipped condition: `Ready` going true is Normal, anything
/// else going to a bad state is a Warning. Event failures are logged, not
/// retried: the status already says it.
async fn publish<K>(ctx: &Context, object: &K, flips: &[Transition])
where
    K: Resource<DynamicType = ()>,
{
    let reference = object.object_ref(&());
    for t in flips {
        let good = match t.type_.as_str() {
            crate::status::INVALID => t.to == "False",
            _ => t.to == "True",
        };
        let event = Event {
            type_: if good {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: t.reason.clone(),
            note: Some(event_note(&format!(
                "{} is {}: {}",
                t.type_, t.to, t.message
            ))),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %crate::error_chain(&error), "could not publish an Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_note;

    #[test]
    fn event_notes_fit_the_api_limit() {
        assert_eq!(event_note("short"), "short");
        let exact = "a".repeat(1024);
        assert_eq!(event_note(&exact), exact);
        // Multi-byte characters across the cut: still within 1024 bytes, valid UTF-8.
        let long = "é".repeat(2000);
        let note = event_note(&long);
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.ends_with("…(truncated)"));
        assert!(note.starts_with("éé"));
    }
}
