//! Before installing (`--pre`): the API server answers, the installer may
//! do what the chart does, no leftovers of an earlier install.

use super::{APPROVALS_CONFIGURATION, INJECTION_CONFIGURATION, NATIVE_SIDECAR_MINOR, Report};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReviewSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;
use kube::api::PostParams;

/// Reads the API server's version; `None` (after an error line) when it cannot be reached.
pub(super) async fn api_server(client: &Client, report: &mut Report) -> Option<u32> {
    const CAT: &str = "kubernetes-api";
    match client.apiserver_version().await {
        Ok(info) => {
            report.ok(
                CAT,
                format!("the API server answers ({})", info.git_version),
            );
            // Minor versions may carry a `+` (managed clusters).
            Some(info.minor.trim_end_matches('+').parse().unwrap_or(0))
        }
        Err(e) => {
            report.error(
                CAT,
                format!("the API server does not answer: {e}"),
                "check the context (kubectl config current-context) and that kubectl get ns works",
            );
            None
        }
    }
}

// === --pre ===

pub(super) async fn pre(client: &Client) -> Report {
    let mut report = Report::default();
    let Some(minor) = api_server(client, &mut report).await else {
        return report;
    };
    const CAT: &str = "pre-install";
    if minor >= NATIVE_SIDECAR_MINOR {
        report.ok(
            CAT,
            format!("Kubernetes 1.{minor} runs the sidecar as a native sidecar"),
        );
    } else {
        report.warn(
            CAT,
            format!("Kubernetes 1.{minor} has no native sidecars (1.{NATIVE_SIDECAR_MINOR}+)"),
            "the sidecar is injected as a regular container: Jobs with it do not complete on their own; upgrade the cluster when you can",
        );
    }
    // What `helm install` creates, cluster-wide.
    let needed = [
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        ),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("", "namespaces"),
    ];
    for (group, resource) in needed {
        match can(client, "create", group, resource).await {
            Ok(true) => report.ok(CAT, format!("you can create {resource}")),
            Ok(false) => report.error(
                CAT,
                format!("you cannot create {resource}"),
                "install as a cluster admin (the chart creates cluster-wide objects)",
            ),
            Err(e) => report.error(
                CAT,
                format!("could not ask whether you can create {resource}: {e}"),
                "the API server must serve authorization.k8s.io/v1 SelfSubjectAccessReview",
            ),
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sluice_crds::all_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        match crds.get_opt(&name).await {
            Ok(None) => report.ok(CAT, format!("no {name} yet")),
            Ok(Some(_)) => report.warn(
                CAT,
                format!("{name} is already installed"),
                "an earlier install is there: upgrade it (helm upgrade) rather than install beside it, or run kubectl sluice check",
            ),
            Err(e) => report.error(CAT, format!("could not read {name}: {e}"), "check your permissions"),
        }
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for (kind, found) in [
        (
            "mutatingwebhookconfiguration",
            mutating
                .get_opt(INJECTION_CONFIGURATION)
                .await
                .map(|o| o.is_some()),
        ),
        (
            "mutatingwebhookconfiguration",
            mutating
                .get_opt(APPROVALS_CONFIGURATION)
                .await
                .map(|o| o.is_some()),
        ),
        (
            "validatingwebhookconfiguration",
            validating
                .get_opt(APPROVALS_CONFIGURATION)
                .await
                .map(|o| o.is_some()),
        ),
    ]
    .into_iter()
    .zip([
        INJECTION_CONFIGURATION,
        APPROVALS_CONFIGURATION,
        APPROVALS_CONFIGURATION,
    ])
    .map(|((kind, found), name)| (format!("{kind}/{name}"), found))
    .collect::<Vec<_>>()
    {
        match found {
            Ok(false) => report.ok(CAT, format!("no {kind} left from an earlier install")),
            Ok(true) => report.warn(
                CAT,
                format!("{kind} is already there (failurePolicy Fail)"),
                format!("if no operator answers it, it refuses what it matches: delete it (kubectl delete {kind}) or upgrade the existing install"),
            ),
            Err(e) => report.error(CAT, format!("could not read {kind}: {e}"), "check your permissions"),
        }
    }
    report
}

pub(super) async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
