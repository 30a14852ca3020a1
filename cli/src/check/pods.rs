//! Pods: every pod of an opted-in namespace has its sidecar, of the
//! revision in force.

use super::operator::Injection;
use super::{CheckArgs, INJECT_ANNOTATION, INJECTED_REVISION_ANNOTATION, Report, count, listed};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::Client;
use kube::api::ListParams;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

const CAT: &str = "sluice-injection";

/// Every pod that asks for a sidecar has one, of this release's revision.
pub(super) async fn pods(
    client: &Client,
    args: &CheckArgs,
    injection: &Injection,
    report: &mut Report,
) {
    let (key, value) = &injection.label;
    let Some(opted_in) = opted_in(client, injection, report).await else {
        return;
    };
    let api: Api<Pod> = match &args.cluster.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            report.error(
                CAT,
                format!("could not list pods: {e}"),
                "check your permissions (list pods)",
            );
            return;
        }
    };
    let current = env!("CARGO_PKG_VERSION");
    let Sorted {
        unlabelled,
        not_injected,
        old,
        injected,
    } = sort(&pods, &opted_in, current);
    if unlabelled.is_empty() && not_injected.is_empty() {
        report.ok(
            CAT,
            format!("every pod that asks for a sidecar has one ({injected} injected)"),
        );
    }
    if !unlabelled.is_empty() {
        let namespaces: BTreeSet<&str> = unlabelled
            .iter()
            .filter_map(|p| p.split('/').next())
            .collect();
        report.error(
            CAT,
            format!(
                "{} annotated {INJECT_ANNOTATION}=true in a namespace not labelled {key}={value}, so without a sidecar: {}",
                count(unlabelled.len(), "pod"),
                listed(unlabelled.iter().cloned())
            ),
            format!(
                "label the namespace (kubectl label namespace {} {key}={value}), then recreate the pods (kubectl rollout restart for their workloads)",
                namespaces.into_iter().collect::<Vec<_>>().join(" ")
            ),
        );
    }
    if !not_injected.is_empty() {
        report.error(
            CAT,
            format!(
                "{} annotated {INJECT_ANNOTATION}=true in an opted-in namespace but without a sidecar (created before the webhook was there?): {}",
                count(not_injected.len(), "pod"),
                listed(not_injected.iter().cloned())
            ),
            "recreate them (kubectl rollout restart for their workloads, or delete the pods)",
        );
    }
    if old.is_empty() {
        report.ok(CAT, format!("every injected sidecar is revision {current}"));
    }
    for (revision, names) in old {
        report.warn(
            CAT,
            format!(
                "{} with a sidecar of revision {revision}, not {current}: {}",
                count(names.len(), "pod"),
                listed(names.into_iter())
            ),
            "restart their workloads to get the current sidecar: kubectl rollout restart -n NAMESPACE deploy/NAME",
        );
    }
}

/// The namespaces labelled for injection (the webhook's exclusions aside),
/// said in the report; `None` (after an error line) when they cannot be listed.
async fn opted_in(
    client: &Client,
    injection: &Injection,
    report: &mut Report,
) -> Option<BTreeSet<String>> {
    let (key, value) = &injection.label;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let opted_in: BTreeSet<String> = match namespaces
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await
    {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| !injection.excluded.contains(n))
            .collect(),
        Err(e) => {
            report.error(
                CAT,
                format!("could not list namespaces: {e}"),
                "check your permissions (list namespaces)",
            );
            return None;
        }
    };
    if opted_in.is_empty() {
        report.warn(
            CAT,
            format!("no namespace is labelled {key}={value}, so no pod gets a sidecar"),
            format!("opt a namespace in: kubectl label namespace NAMESPACE {key}={value}"),
        );
    } else {
        report.ok(
            CAT,
            format!(
                "{} labelled {key}={value}: {}",
                count(opted_in.len(), "namespace"),
                listed(opted_in.iter().cloned())
            ),
        );
    }
    Some(opted_in)
}

/// The pods that ask for a sidecar, sorted by what they lack.
struct Sorted {
    /// In a namespace not labelled for injection.
    unlabelled: Vec<String>,
    /// In an opted-in namespace, yet without a sidecar.
    not_injected: Vec<String>,
    /// With a sidecar of another revision, by revision.
    old: BTreeMap<String, Vec<String>>,
    /// How many have a sidecar.
    injected: usize,
}

fn sort(pods: &[Pod], opted_in: &BTreeSet<String>, current: &str) -> Sorted {
    let mut unlabelled: Vec<String> = vec![];
    let mut not_injected: Vec<String> = vec![];
    let mut old: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut injected = 0;
    for pod in pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = format!("{ns}/{}", pod.metadata.name.clone().unwrap_or_default());
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        if let Some(revision) = annotations.get(INJECTED_REVISION_ANNOTATION) {
            injected += 1;
            if revision != current {
                old.entry(revision.clone()).or_default().push(name);
            }
            continue;
        }
        if annotations.get(INJECT_ANNOTATION).map(String::as_str) != Some("true") {
            continue;
        }
        if opted_in.contains(&ns) {
            not_injected.push(name);
        } else {
            unlabelled.push(name);
        }
    }
    Sorted {
        unlabelled,
        not_injected,
        old,
        injected,
    }
}
