//! The CRDs: installed, and of the version this CLI was built with.

use super::Report;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;

pub(super) async fn crds(client: &Client, report: &mut Report) {
    const CAT: &str = "sluice-crds";
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let hint = "install or upgrade the CRDs with the chart (helm upgrade --install sluice charts/sluice -n sluice-system), or kubectl apply -f crds/";
    for expected in sluice_crds::all_crds() {
        let name = expected.metadata.name.clone().unwrap_or_default();
        let found = match api.get_opt(&name).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                report.error(CAT, format!("{name} is not installed"), hint);
                continue;
            }
            Err(e) => {
                report.error(
                    CAT,
                    format!("could not read {name}: {e}"),
                    "check your permissions (get customresourcedefinitions)",
                );
                continue;
            }
        };
        let established = found
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if !established {
            report.error(
                CAT,
                format!("{name} is not Established"),
                format!("kubectl describe crd {name} shows why (NamesAccepted, a conflict with another CRD)"),
            );
            continue;
        }
        let served = |crd: &CustomResourceDefinition, version: &str| {
            crd.spec
                .versions
                .iter()
                .find(|v| v.name == version && v.served)
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
        };
        let Some(found_schema) = served(&found, sluice_crds::VERSION) else {
            report.error(
                CAT,
                format!("{name} does not serve {}", sluice_crds::VERSION),
                hint,
            );
            continue;
        };
        if served(&expected, sluice_crds::VERSION).as_ref() == Some(&found_schema) {
            report.ok(
                CAT,
                format!(
                    "{name} serves {} as this kubectl-sluice expects",
                    sluice_crds::VERSION
                ),
            );
        } else {
            report.warn(
                CAT,
                format!(
                    "{name} serves {} with a schema other than this kubectl-sluice's ({})",
                    sluice_crds::VERSION,
                    env!("CARGO_PKG_VERSION")
                ),
                format!("the CRDs come from another release: upgrade them ({hint}), or use the kubectl-sluice of the installed release"),
            );
        }
    }
}
