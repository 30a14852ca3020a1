//! Connections and AccessPolicies: each one Ready, or why not.

use super::{CheckArgs, Report, count};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::Client;
use kube::api::ListParams;
use sluice_crds::AccessPolicy;
use sluice_crds::Connection;

pub(super) async fn resources(client: &Client, args: &CheckArgs, report: &mut Report) {
    let ns = args.cluster.namespace.as_deref();
    list_readiness::<Connection>(client, ns, report, "connection", "Connections", |c| {
        c.status.as_ref().map(|s| s.conditions.as_slice())
    })
    .await;
    list_readiness::<AccessPolicy>(client, ns, report, "accesspolicy", "AccessPolicies", |p| {
        p.status.as_ref().map(|s| s.conditions.as_slice())
    })
    .await;
}

/// Lists every `K` (in `ns`, or all namespaces) and reports its readiness
/// ([`readiness`]), or that it could not be listed.
async fn list_readiness<K>(
    client: &Client,
    ns: Option<&str>,
    report: &mut Report,
    kind: &str,
    plural: &str,
    conditions: impl Fn(&K) -> Option<&[Condition]>,
) where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    const CAT: &str = "sluice-resources";
    let api: Api<K> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default()).await {
        Ok(list) => readiness(
            report,
            CAT,
            kind,
            list.items.iter().map(|o| (o.meta(), conditions(o))),
        ),
        Err(e) => report.error(
            CAT,
            format!("could not list {plural}: {e}"),
            "are the CRDs installed? see sluice-crds above",
        ),
    }
}

/// One error line per object whose `Ready` is not `True` (with its reason and
/// message), or one line saying all are Ready.
fn readiness<'a>(
    report: &mut Report,
    category: &'static str,
    kind: &str,
    objects: impl Iterator<
        Item = (
            &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            Option<&'a [Condition]>,
        ),
    >,
) {
    let mut total = 0;
    let mut bad = 0;
    for (meta, conditions) in objects {
        total += 1;
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let ready = conditions.and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => {
                bad += 1;
                report.error(
                    category,
                    format!("{kind} {ns}/{name} is not Ready: {}: {}", c.reason, c.message),
                    format!("fix what the message names, then kubectl get {kind} -n {ns} {name}; kubectl describe {kind} -n {ns} {name} shows its events"),
                );
            }
            None => {
                bad += 1;
                report.error(
                    category,
                    format!("{kind} {ns}/{name} has no Ready condition yet"),
                    "the operator has not reconciled it: is the operator running? (see sluice-operator above)",
                );
            }
        }
    }
    if bad == 0 {
        report.ok(
            category,
            format!("{} Ready", count(total, kind_plural(kind, total))),
        );
    }
}

fn kind_plural(kind: &str, n: usize) -> &'static str {
    match (kind, n == 1) {
        ("connection", true) => "Connection",
        ("connection", false) => "Connections",
        (_, true) => "AccessPolicy",
        (_, false) => "AccessPolicies",
    }
}
