//! CRD admission as kube-apiserver 1.33 does it: the static CEL cost estimate of
//! `x-kubernetes-validations` rules (k8s.io/apiextensions-apiserver
//! pkg/apis/apiextensions/validation/validation.go) refuses CRDs a real cluster refuses.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use support::*;

const HINT: &str = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";

/// The CRDs of commit 1b1352c, whose O(n²) rules over unbounded lists made `helm install` fail.
#[tokio::test]
async fn crds_with_rules_over_unbounded_lists_are_refused_with_the_real_message() {
    let c = cluster().await;
    let fixtures = repo_root().join("e2e/tests/fixtures/crds-1b1352c");
    let out = kubectl_in(
        &c,
        &[
            "apply",
            "-f",
            fixtures.join("accesspolicies.yaml").to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr
            .contains(r#"The CustomResourceDefinition "accesspolicies.sluice.dev" is invalid"#),
        "{}",
        out.stderr
    );
    for expected in [
        format!("spec.validation.openAPIV3Schema.properties[spec].properties[rules].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x {HINT}"),
        // masking items sit in an unbounded list: 12 per rule times 3 MiB / 3 items.
        format!("spec.validation.openAPIV3Schema.properties[spec].properties[masking].items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of 1.258291x {HINT}"),
        format!("spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x {HINT}"),
        "spec.validation.openAPIV3Schema.properties[spec].properties[rules].x-kubernetes-validations[0].rule: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".to_string(),
    ] {
        assert!(out.stderr.contains(&expected), "missing {expected:?} in {}", out.stderr);
    }
    let out = kubectl_in(
        &c,
        &[
            "apply",
            "-f",
            fixtures.join("accessrequests.yaml").to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(
        !out.ok
            && out.stderr.contains(&format!("spec.validation.openAPIV3Schema.properties[status].properties[decisions].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x {HINT}")),
        "{}",
        out.stderr
    );
    // Nothing was stored.
    let out = kubectl_in(&c, &["get", "crd", "accesspolicies.sluice.dev"], None).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);

    // The committed CRDs and the chart's copy fit the budget.
    apply_sluice_crds(&c).await;
    let chart = repo_root().join("charts/sluice/files/crds");
    kubectl(
        &c,
        &["apply", "--dry-run=server", "-f", chart.to_str().unwrap()],
    )
    .await;
}

/// A rule on the items of a list without maxItems is evaluated once per possible item
/// (3 MiB / minimum item size): the cardinality rule, with the factor kube prints for it
/// (same message in kubeblocks#7138, grafana-operator#1729).
#[tokio::test]
async fn cardinality_of_unbounded_lists_multiplies_item_rules() {
    let c = cluster().await;
    let crd = |max_items: &str| {
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.test.sluice.dev}}
spec:
  group: test.sluice.dev
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              parts:
                type: array
                {max_items}
                items:
                  type: object
                  properties:
                    a: {{type: string}}
                    b: {{type: string}}
                  x-kubernetes-validations:
                  - rule: has(self.a) || has(self.b) || has(self.a) || has(self.b) || has(self.a)
"#
        )
    };
    let out = kubectl_in(&c, &["apply", "-f", "-"], Some(&crd(""))).await;
    assert!(
        !out.ok
            && out.stderr.contains(&format!("spec.validation.openAPIV3Schema.properties[spec].properties[parts].items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of 1.048576x {HINT}")),
        "{}",
        out.stderr
    );
    kubectl_stdin(&c, &["apply", "-f", "-"], &crd("maxItems: 1000")).await;
}

/// `spec.rules` is a list keyed by name: the API server refuses duplicates itself.
#[tokio::test]
async fn duplicate_policy_rule_names_are_refused_by_the_list_map() {
    let c = cluster().await;
    apply_sluice_crds(&c).await;
    kubectl(&c, &["create", "namespace", "shop"]).await;
    let policy = r#"apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: shop}
spec:
  subjects: [{serviceAccount: job}]
  connections: [orders-db]
  rules:
  - {name: r, action: deny}
  - {name: r, action: allow}
"#;
    let out = kubectl_in(&c, &["apply", "-f", "-"], Some(policy)).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains(r#"spec.rules[1]: Duplicate value: {"name":"r"}"#),
        "{}",
        out.stderr
    );
}
