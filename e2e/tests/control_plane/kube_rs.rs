//! The test control plane driven by kube-rs: Api CRUD, errors, watch,
//! server-side apply of status, a kube-runtime Controller and the event Recorder.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use crate::support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference};
use k8s_openapi::api::events::v1::Event as EventsV1;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::cluster;

const WAIT: Duration = Duration::from_secs(20);

/// A toy custom resource for controller tests.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "test.sluice.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
#[kube(printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#)]
pub struct WidgetSpec {
    size: i64,
    #[serde(default)]
    color: Option<String>,
}

/// Status of a Widget.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct WidgetStatus {
    observed_size: Option<i64>,
    observed_generation: Option<i64>,
}

fn api_err(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn install_widgets(client: &Client) -> Api<Widget> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("create CRD");
    let established = await_condition(
        crds,
        "widgets.test.sluice.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established)
        .await
        .expect("CRD established in time")
        .expect("wait");
    Api::namespaced(client.clone(), "default")
}

#[tokio::test]
async fn api_crud_with_kube_errors() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "one", "labels": {"app": "x"}}, "data": {"k": "v"}
    }))
    .expect("configmap");
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    assert_eq!(
        api_err(
            cms.create(&PostParams::default(), &cm)
                .await
                .expect_err("exists")
        ),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_err(cms.get("missing").await.expect_err("missing")),
        (404, "NotFound".into())
    );
    // Update with the current resourceVersion works; with a stale one it conflicts.
    cm.metadata.resource_version = created.metadata.resource_version.clone();
    cm.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = cms
        .replace("one", &PostParams::default(), &cm)
        .await
        .expect("replace");
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        api_err(
            cms.replace("one", &PostParams::default(), &cm)
                .await
                .expect_err("stale")
        ),
        (409, "Conflict".into())
    );
    // Label selectors.
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "two", "labels": {"app": "y"}}}))
            .expect("cm"),
    )
    .await
    .expect("create two");
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("app=x"))
                .await
                .expect("list")
        ),
        vec!["one"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("app in (x,y)"))
                .await
                .expect("list")
        ),
        vec!["one", "two"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=two"))
                .await
                .expect("list")
        ),
        vec!["two"]
    );
    // Pagination.
    let page = cms
        .list(&ListParams::default().limit(1))
        .await
        .expect("page");
    assert_eq!(page.items.len(), 1);
    assert!(page.metadata.continue_.is_some());
    // Patches: merge, JSON, strategic, apply.
    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"m": "1"}})),
    )
    .await
    .expect("merge");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}]))
            .expect("patch");
    cms.patch("one", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .expect("json patch");
    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Strategic(json!({"data": {"s": "3"}})),
    )
    .await
    .expect("smp");
    let applied = cms
        .patch(
            "one",
            &PatchParams::apply("test-manager"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "4"}})),
        )
        .await
        .expect("apply");
    let data = applied.data.unwrap_or_default();
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        vec!["a", "j", "k", "m", "s"]
    );
    assert!(
        applied
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("test-manager"))
    );
    cms.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        api_err(cms.get("one").await.expect_err("deleted")),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn watch_replays_from_resource_version_with_bookmarks_and_gone() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = cms.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.clone().expect("list rv");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "w"}})).expect("cm"),
    )
    .await
    .expect("create");
    let mut stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default().timeout(10)
            },
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    let mut added = false;
    let mut bookmark = false;
    while !(added && bookmark) {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("event in time")
            .expect("ok")
        {
            Some(WatchEvent::Added(cm)) if cm.name_any() == "w" => added = true,
            Some(WatchEvent::Bookmark(_)) => bookmark = true,
            Some(_) => {}
            None => panic!("watch ended early"),
        }
    }
    c.compact();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("event in time")
        .expect("ok")
    {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn custom_resource_status_generation_and_apply() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let widgets = install_widgets(&client).await;
    let w = Widget::new(
        "w1",
        WidgetSpec {
            size: 3,
            color: None,
        },
    );
    let created = widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    // Status through server-side apply with a field manager, as controllers do.
    let status = json!({"apiVersion": "test.sluice.dev/v1", "kind": "Widget", "status": {"observed_size": 3, "observed_generation": 1}});
    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status apply");
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.observed_size),
        Some(3)
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status changes keep generation"
    );
    // The main endpoint ignores status; spec changes bump generation.
    let p = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}, "status": {"observed_size": 99}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(p.metadata.generation, Some(2));
    assert_eq!(p.status.as_ref().and_then(|s| s.observed_size), Some(3));
    // Server-side apply of the spec, then a conflicting apply by another manager.
    let spec = json!({"apiVersion": "test.sluice.dev/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 5, "color": "red"}});
    // The creator (an Update manager) owns `color: null`; taking it over needs force.
    let err = widgets
        .patch("w1", &PatchParams::apply("owner"), &Patch::Apply(&spec))
        .await
        .expect_err("conflict with the creator");
    assert_eq!(api_err(err).0, 409);
    widgets
        .patch(
            "w1",
            &PatchParams::apply("owner").force(),
            &Patch::Apply(&spec),
        )
        .await
        .expect("apply spec");
    let other = json!({"apiVersion": "test.sluice.dev/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 5, "color": "blue"}});
    let err = widgets
        .patch("w1", &PatchParams::apply("intruder"), &Patch::Apply(&other))
        .await
        .expect_err("conflict");
    assert_eq!(api_err(err).0, 409);
    let forced = widgets
        .patch(
            "w1",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("forced");
    assert_eq!(forced.spec.color.as_deref(), Some("blue"));
    // Apply creates missing objects.
    let fresh = json!({"apiVersion": "test.sluice.dev/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 1}});
    let made = widgets
        .patch("w2", &PatchParams::apply("owner"), &Patch::Apply(&fresh))
        .await
        .expect("apply create");
    assert_eq!(made.spec.size, 1);
    // Unknown fields are pruned.
    widgets
        .patch(
            "w2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"extra": true}})),
        )
        .await
        .expect("prunes");
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<Widget>(&()),
    );
    assert!(
        raw.get("w2").await.expect("get").data["spec"]
            .get("extra")
            .is_none()
    );
}

struct Ctx {
    widgets: Api<Widget>,
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let status = json!({"apiVersion": "test.sluice.dev/v1", "kind": "Widget",
        "status": {"observed_size": w.spec.size, "observed_generation": w.metadata.generation}});
    ctx.widgets
        .patch_status(
            &w.name_any(),
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(&status),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_reconciles_changes() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let widgets = install_widgets(&client).await;
    widgets
        .create(
            &PostParams::default(),
            &Widget::new(
                "a",
                WidgetSpec {
                    size: 1,
                    color: None,
                },
            ),
        )
        .await
        .expect("create");
    let ctx = Arc::new(Ctx {
        widgets: widgets.clone(),
    });
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    let observed = |size: i64| {
        move |w: Option<&Widget>| {
            w.and_then(|w| w.status.as_ref())
                .and_then(|s| s.observed_size)
                == Some(size)
        }
    };
    tokio::time::timeout(WAIT, await_condition(widgets.clone(), "a", observed(1)))
        .await
        .expect("reconciled")
        .expect("wait");
    widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 7}})),
        )
        .await
        .expect("change");
    let w = tokio::time::timeout(WAIT, await_condition(widgets.clone(), "a", observed(7)))
        .await
        .expect("reconciled again")
        .expect("wait");
    assert_eq!(
        w.and_then(|w| w.status).and_then(|s| s.observed_generation),
        Some(2)
    );
    handle.abort();
}

#[tokio::test]
async fn recorder_events_are_listed_by_involved_object() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "evt"}})).expect("cm"),
        )
        .await
        .expect("create");
    let reference: ObjectReference = cm.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sluice-test".into(),
            instance: Some("t-1".into()),
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("all good".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.expect("publish");
    recorder
        .publish(&ev, &reference)
        .await
        .expect("publish again (series patch)");
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let uid = cm.metadata.uid.clone().unwrap_or_default();
    let fields =
        format!("involvedObject.kind=ConfigMap,involvedObject.name=evt,involvedObject.uid={uid}");
    let list = core
        .list(&ListParams::default().fields(&fields))
        .await
        .expect("list core events");
    assert_eq!(list.items.len(), 1, "one event with a series");
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("all good"));
    assert_eq!(e.reason.as_deref(), Some("Synced"));
    assert_eq!(e.reporting_component.as_deref(), Some("sluice-test"));
    let v1: Api<EventsV1> = Api::namespaced(client, "default");
    let list = v1
        .list(&ListParams::default().fields("regarding.name=evt"))
        .await
        .expect("list events.k8s.io");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let none = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .expect("list");
    assert!(none.items.is_empty());
}

#[tokio::test]
async fn users_from_the_kubeconfig_authenticate() {
    let c = cluster().await;
    let alice = c.client_for("alice").await.expect("alice's client");
    let review: Api<kube::api::DynamicObject> = Api::all_with(
        alice,
        &kube::api::ApiResource {
            group: "authentication.k8s.io".into(),
            version: "v1".into(),
            api_version: "authentication.k8s.io/v1".into(),
            kind: "SelfSubjectReview".into(),
            plural: "selfsubjectreviews".into(),
        },
    );
    let mut obj = kube::api::DynamicObject::new("", &review_resource());
    obj.data = json!({"spec": {}});
    let who = review
        .create(&PostParams::default(), &obj)
        .await
        .expect("self review");
    assert_eq!(who.data["status"]["userInfo"]["username"], "alice");
    assert!(c.client_for("nobody").await.is_err());
}

fn review_resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "authentication.k8s.io".into(),
        version: "v1".into(),
        api_version: "authentication.k8s.io/v1".into(),
        kind: "SelfSubjectReview".into(),
        plural: "selfsubjectreviews".into(),
    }
}

#[tokio::test]
async fn cascades_metadata_api_dry_run_and_immutable() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).expect("ns"),
    )
    .await
    .expect("namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    // A new namespace gets the default service account and the root CA ConfigMap.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "tmp");
    sas.get("default").await.expect("default service account");
    let root = cms.get("kube-root-ca.crt").await.expect("kube-root-ca.crt");
    assert_eq!(
        root.data.and_then(|d| d.get("ca.crt").cloned()).as_deref(),
        Some(c.ca_pem())
    );
    // Garbage collection through ownerReferences.
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).expect("cm"),
        )
        .await
        .expect("owner");
    let child = json!({"metadata": {"name": "child", "labels": {"part": "yes"}, "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(child).expect("cm"),
    )
    .await
    .expect("child");
    // The metadata-only API.
    let metas = cms
        .list_metadata(&ListParams::default().labels("part=yes"))
        .await
        .expect("list metadata");
    assert_eq!(
        metas.items.iter().map(|m| m.name_any()).collect::<Vec<_>>(),
        vec!["child"]
    );
    assert_eq!(
        cms.get_metadata("owner")
            .await
            .expect("get metadata")
            .metadata
            .uid,
        owner.metadata.uid
    );
    // Server-side dry run stores nothing.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    cms.create(
        &dry,
        &serde_json::from_value(json!({"metadata": {"name": "ghost"}})).expect("cm"),
    )
    .await
    .expect("dry run");
    assert_eq!(
        api_err(cms.get("ghost").await.expect_err("not stored")).0,
        404
    );
    // An object with a resourceVersion cannot be created.
    let mut again = owner.clone();
    again.metadata.name = Some("copy".into());
    assert_eq!(
        api_err(
            cms.create(&PostParams::default(), &again)
                .await
                .expect_err("rv set")
        )
        .0,
        500
    );
    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    assert_eq!(
        api_err(cms.get("child").await.expect_err("collected")).0,
        404
    );
    // Immutable ConfigMaps.
    let frozen = json!({"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": true});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(frozen).expect("cm"),
    )
    .await
    .expect("create");
    let err = cms
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await
        .expect_err("immutable");
    assert_eq!(api_err(err), (422, "Invalid".into()));
    // Deleting the namespace deletes its content, then the namespace.
    let dc = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("none=here"),
        )
        .await
        .expect("deletecollection");
    assert!(dc.left().is_some_and(|l| l.items.is_empty()));
    nss.delete("tmp", &DeleteParams::default())
        .await
        .expect("delete namespace");
    assert_eq!(api_err(nss.get("tmp").await.expect_err("gone")).0, 404);
    assert!(
        cms.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn streaming_list_watcher_and_selector_transitions() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = |name: &str, tier: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": tier}}}))
            .expect("cm")
    };
    cms.create(&PostParams::default(), &cm("a", "web"))
        .await
        .expect("a");
    let config = watcher::Config::default()
        .labels("tier=web")
        .streaming_lists();
    let mut events = watcher(cms.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("event in time")
            .expect("ok")
        {
            Some(watcher::Event::InitApply(o)) => initial.push(o.name_any()),
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    assert_eq!(initial, vec!["a"]);
    // Leaving the selector is a deletion for this watch; entering it an addition.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "db"}}})),
    )
    .await
    .expect("relabel");
    cms.create(&PostParams::default(), &cm("b", "web"))
        .await
        .expect("b");
    let mut deleted = None;
    let mut applied = None;
    while deleted.is_none() || applied.is_none() {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("event in time")
            .expect("ok")
        {
            Some(watcher::Event::Delete(o)) => deleted = Some(o.name_any()),
            Some(watcher::Event::Apply(o)) => applied = Some(o.name_any()),
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    assert_eq!(
        (deleted.as_deref(), applied.as_deref()),
        (Some("a"), Some("b"))
    );
}

#[tokio::test]
async fn discovery_legacy_and_aggregated_agree() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    install_widgets(&client).await;
    let legacy = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("legacy discovery");
    let aggregated = kube::Discovery::new(client)
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    for d in [&legacy, &aggregated] {
        let (widget, caps) = d
            .groups()
            .flat_map(|g| g.recommended_resources())
            .find(|(r, _)| r.kind == "Widget")
            .expect("Widget discovered");
        assert_eq!(widget.plural, "widgets");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(s, _)| s.plural == "widgets/status" || s.plural == "status"),
            "{:?}",
            caps.subresources
        );
        assert!(d.has_group("coordination.k8s.io") && d.has_group("events.k8s.io"));
    }
}

#[tokio::test]
async fn builtin_validation_matches_kube() {
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let long = "x".repeat(64);
    let bad = json!({"metadata": {"name": "bad", "labels": {"app": long}}});
    let err = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(bad).expect("cm"),
        )
        .await
        .expect_err("label too long");
    let kube::Error::Api(s) = err else {
        panic!("api error")
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("metadata.labels: Invalid value"),
        "{}",
        s.message
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({"metadata": {"name": "p"}, "spec": {
        "initContainers": [{"name": "proxy", "image": "sluice", "restartPolicy": "Always"}],
        "containers": [{"name": "proxy", "image": "app", "volumeMounts": [{"name": "missing", "mountPath": "/x"}]}, {"name": "b"}]}});
    let err = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("pod"),
        )
        .await
        .expect_err("invalid pod");
    let kube::Error::Api(s) = err else {
        panic!("api error")
    };
    assert_eq!(s.code, 422);
    for part in [
        "spec.containers[0].name: Duplicate value",
        "spec.containers[0].volumeMounts[0].name: Not found",
        "spec.containers[1].image: Required value",
    ] {
        assert!(s.message.contains(part), "{part} in {}", s.message);
    }
    // A native sidecar (init container with restartPolicy Always) is valid.
    let ok = json!({"metadata": {"name": "ok"}, "spec": {
        "initContainers": [{"name": "proxy", "image": "sluice", "restartPolicy": "Always"}],
        "containers": [{"name": "app", "image": "app"}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(ok).expect("pod"),
    )
    .await
    .expect("valid pod");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "default");
    let raw = kube::api::Request::new("/api/v1/namespaces/default/secrets");
    let req = raw
        .create(&PostParams::default(), serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}})).expect("json"))
        .expect("request");
    let err = secrets
        .clone()
        .into_client()
        .request::<k8s_openapi::api::core::v1::Secret>(req)
        .await
        .expect_err("bad base64");
    let kube::Error::Api(s) = err else {
        panic!("api error")
    };
    assert_eq!(s.code, 400);
    // events.k8s.io/v1 requires what its API requires.
    let events: Api<EventsV1> = Api::namespaced(c.client().await.expect("client"), "default");
    let partial = json!({"metadata": {"name": "e1"}, "reason": "Tested", "regarding": {"kind": "Pod", "name": "ok", "namespace": "other"}});
    let err = events
        .create(
            &PostParams::default(),
            &serde_json::from_value(partial).expect("event"),
        )
        .await
        .expect_err("incomplete event");
    let kube::Error::Api(s) = err else {
        panic!("api error")
    };
    assert_eq!(s.code, 422);
    for part in [
        "eventTime: Required value",
        "reportingController: Required value",
        "regarding.namespace: Invalid value",
    ] {
        assert!(s.message.contains(part), "{part} in {}", s.message);
    }
}

#[tokio::test]
async fn cluster_under_test_defaults_to_a_test_cluster() {
    let under_test = sluice_e2e::ClusterUnderTest::from_env(sluice_e2e::Options::default())
        .await
        .expect("cluster");
    let client = under_test.client().await.expect("client");
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
    assert!(under_test.kubeconfig_path().is_file());
    if std::env::var_os("KUBECONFIG").is_none() {
        assert!(
            under_test.local().is_some(),
            "without KUBECONFIG the scenario runs on a TestCluster"
        );
    }
}

#[tokio::test]
async fn token_request_and_review_with_typed_clients() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({"metadata": {"name": "app"}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    let pod = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("pod"),
        )
        .await
        .expect("pod");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": ["sluice.dev"], "expirationSeconds": 600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "app", "uid": pod.metadata.uid}}}))
    .expect("token request");
    let issued = sas
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .expect("token");
    let status = issued.status.expect("status");
    assert!(status.token.split('.').count() == 3, "a JWT");
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review: TokenReview = serde_json::from_value(
        json!({"spec": {"token": status.token, "audiences": ["sluice.dev"]}}),
    )
    .expect("review");
    let out = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("review")
        .status
        .expect("status");
    assert_eq!(out.authenticated, Some(true));
    assert_eq!(out.audiences, Some(vec!["sluice.dev".to_string()]));
    let user = out.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:default")
    );
    let extra = user.extra.expect("extra");
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["app".to_string()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-uid"),
        pod.metadata.uid.map(|u| vec![u]).as_ref()
    );
    // Too short an expiry is refused like kube does.
    let short: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["x"], "expirationSeconds": 60}}))
            .expect("tr");
    let err = sas
        .create_token_request("default", &PostParams::default(), &short)
        .await
        .expect_err("too short");
    assert_eq!(api_err(err).0, 422);
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    let c = cluster().await;
    let client = c.client().await.expect("client");
    let widgets = install_widgets(&client).await;
    widgets
        .create(
            &PostParams::default(),
            &Widget::new(
                "f",
                WidgetSpec {
                    size: 1,
                    color: None,
                },
            ),
        )
        .await
        .expect("create");
    let cleaned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = |obj: Widget| {
        let widgets = widgets.clone();
        let cleaned = cleaned.clone();
        async move {
            finalizer(
                &widgets,
                "test.sluice.dev/cleanup",
                Arc::new(obj),
                |event| async move {
                    if let Finalizer::Cleanup(_) = event {
                        cleaned.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok::<_, ReconcileError>(Action::await_change())
                },
            )
            .await
        }
    };
    // First pass adds the finalizer (JSON patch with a `test` of the missing list).
    run(widgets.get("f").await.expect("get"))
        .await
        .expect("adds the finalizer");
    let w = widgets.get("f").await.expect("get");
    assert_eq!(
        w.metadata.finalizers.clone().unwrap_or_default(),
        vec!["test.sluice.dev/cleanup"]
    );
    run(w).await.expect("apply pass");
    widgets
        .delete("f", &DeleteParams::default())
        .await
        .expect("delete");
    let held = widgets.get("f").await.expect("held by the finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    run(held).await.expect("cleanup pass removes the finalizer");
    assert!(cleaned.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(api_err(widgets.get("f").await.expect_err("gone")).0, 404);
}
