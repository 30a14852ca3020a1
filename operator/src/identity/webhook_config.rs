//! The operator's MutatingWebhookConfiguration, built as typed structs.
//!
//! In a cluster the webhook points at the operator's Service; run from a laptop
//! or a test (`--webhook-url https://HOST:PORT`) it points at that URL. Either
//! way `caBundle` is the operator's own CA ([`crate::identity::pki`]), and the leader
//! rewrites it when [`ca_bundle_differs`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::injection::inject::{INJECT_ANNOTATION, TOKEN_VOLUME_NAME};

/// HTTPS path of the pod injection webhook.
pub const POD_INJECTION_PATH: &str = "/mutate/pods";
/// Path of the mutating webhook on AccessRequests.
pub const MUTATE_PATH: &str = "/mutate/accessrequests";
/// Path of the validating webhook on AccessRequests.
pub const VALIDATE_PATH: &str = "/validate/accessrequests";
/// Name of the webhook inside the configuration (must be fully qualified).
pub const POD_INJECTION_WEBHOOK: &str = "sidecar-injection.sluice.dev";
/// Name of the MutatingWebhookConfiguration the operator owns.
pub const CONFIGURATION_NAME: &str = "sluice-operator";
/// Namespaces never injected, whatever their labels say.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// Pods carrying this label with value [`OPERATOR_APP_NAME`] are never sent to the webhook,
/// so the operator cannot block its own start.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// The operator's `app.kubernetes.io/name`.
pub const OPERATOR_APP_NAME: &str = "sluice-operator";

/// Where the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEndpoint {
    /// The operator's Service, in a cluster.
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Its HTTPS port.
        port: u16,
    },
    /// A base URL (`https://HOST:PORT`), when the operator runs outside the cluster.
    Url(String),
}

/// What the configuration depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where the webhook is served.
    pub endpoint: WebhookEndpoint,
    /// PEM bundle the API server trusts for the serving certificate.
    pub ca_bundle_pem: String,
    /// Namespace label that opts a namespace in, e.g. (`sluice.dev/injection`, `enabled`).
    pub namespace_label: (String, String),
    /// The operator's own namespace, never injected.
    pub operator_namespace: String,
    /// Whether the API server is asked to skip pods without the annotation
    /// (a CEL `matchConditions`). Off only for API servers whose CEL cannot
    /// evaluate it; the webhook passes such pods through unchanged anyway.
    pub match_conditions: bool,
    /// `NAMESPACE/NAME` of a cert-manager Certificate (`--cert-manager-certificate`):
    /// the configurations carry `cert-manager.io/inject-ca-from` and no
    /// `caBundle`, which cert-manager's cainjector fills in.
    pub ca_injection_from: Option<String>,
}

/// The annotation cert-manager's cainjector fills `caBundle` from.
pub const INJECT_CA_FROM_ANNOTATION: &str = "cert-manager.io/inject-ca-from";

fn configuration_metadata(name: &str, settings: &WebhookSettings) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            OPERATOR_APP_NAME.to_string(),
        )])),
        annotations: settings
            .ca_injection_from
            .as_ref()
            .map(|from| BTreeMap::from([(INJECT_CA_FROM_ANNOTATION.to_string(), from.clone())])),
        ..Default::default()
    }
}

fn ca_bundle_of(settings: &WebhookSettings) -> Option<ByteString> {
    match settings.ca_injection_from {
        Some(_) => None,
        None => Some(ByteString(settings.ca_bundle_pem.as_bytes().to_vec())),
    }
}

/// Whether `existing` must be (re)applied to become `desired`: it is missing,
/// a webhook differs, or the cainjector annotation differs. A `caBundle` the
/// desired configuration leaves to cainjector is not compared.
pub fn needs_apply<W: PartialEq + Clone>(
    existing: Option<(&ObjectMeta, &Option<Vec<W>>)>,
    desired: (&ObjectMeta, &Option<Vec<W>>),
    strip_ca_bundle: impl Fn(&mut W),
) -> bool {
    let Some((meta, webhooks)) = existing else {
        return true;
    };
    let annotation = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(INJECT_CA_FROM_ANNOTATION).cloned())
    };
    if annotation(meta) != annotation(desired.0) {
        return true;
    }
    let mut webhooks = webhooks.clone();
    if desired
        .0
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECT_CA_FROM_ANNOTATION))
    {
        for w in webhooks.iter_mut().flatten() {
            strip_ca_bundle(w);
        }
    }
    &webhooks != desired.1
}

/// What writing a webhook configuration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// It was as desired.
    Unchanged,
    /// It was created or changed.
    Written,
    /// It does not exist, and adopting (the chart owns it) does not create it.
    MissingNotCreated,
}

/// Makes the configuration `name` what `desired` says when `needs` finds it
/// different.
///
/// `adopt` (`--adopt-webhook-configurations`, set by the chart, which ships the
/// configurations so that `helm uninstall` removes them): only an existing
/// configuration is changed, with a merge patch of its webhooks (caBundle
/// included) and of the cainjector annotation, leaving Helm's labels and
/// annotations alone; a missing one is not created, so an operator still
/// running during uninstall cannot bring a fail-closed webhook back.
/// Otherwise (operator run outside the chart) it is server-side applied.
pub async fn write_configuration<K>(
    api: &kube::Api<K>,
    name: &str,
    desired: &K,
    adopt: bool,
    needs: impl Fn(Option<&K>, &K) -> bool,
) -> Result<Written, kube::Error>
where
    K: kube::Resource<DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    use kube::api::{Patch, PatchParams};
    let existing = api.get_opt(name).await?;
    if !needs(existing.as_ref(), desired) {
        return Ok(Written::Unchanged);
    }
    let mut body = serde_json::to_value(desired).unwrap_or_default();
    if adopt {
        if existing.is_none() {
            return Ok(Written::MissingNotCreated);
        }
        let ca_from = desired
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECT_CA_FROM_ANNOTATION).cloned());
        let patch = serde_json::json!({
            "metadata": {"annotations": {INJECT_CA_FROM_ANNOTATION: ca_from}},
            "webhooks": body["webhooks"].take(),
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    } else {
        body["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        body["kind"] = K::kind(&()).into();
        api.patch(
            name,
            &PatchParams::apply(crate::FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    }
    Ok(Written::Written)
}

/// The defaults kube-apiserver fills into admissionregistration.k8s.io/v1
/// webhooks (k8s.io/kubernetes pkg/apis/admissionregistration/v1/defaults.go:
/// `SetDefaults_ValidatingWebhook`/`SetDefaults_MutatingWebhook`, `SetDefaults_Rule`,
/// `SetDefaults_ServiceReference`). Both sides of a comparison are defaulted,
/// so an unset field we leave to the server does not read as a difference.
fn default_common(
    failure_policy: &mut Option<String>,
    match_policy: &mut Option<String>,
    namespace_selector: &mut Option<LabelSelector>,
    object_selector: &mut Option<LabelSelector>,
    timeout_seconds: &mut Option<i32>,
    rules: &mut Option<Vec<RuleWithOperations>>,
    client_config: &mut WebhookClientConfig,
) {
    failure_policy.get_or_insert_with(|| "Fail".to_string());
    match_policy.get_or_insert_with(|| "Equivalent".to_string());
    namespace_selector.get_or_insert_with(LabelSelector::default);
    object_selector.get_or_insert_with(LabelSelector::default);
    timeout_seconds.get_or_insert(10);
    for rule in rules.iter_mut().flatten() {
        rule.scope.get_or_insert_with(|| "*".to_string());
    }
    if let Some(service) = client_config.service.as_mut() {
        service.port.get_or_insert(443);
    }
}

fn default_mutating(w: &mut MutatingWebhook) {
    default_common(
        &mut w.failure_policy,
        &mut w.match_policy,
        &mut w.namespace_selector,
        &mut w.object_selector,
        &mut w.timeout_seconds,
        &mut w.rules,
        &mut w.client_config,
    );
    w.reinvocation_policy
        .get_or_insert_with(|| "Never".to_string());
}

fn default_validating(w: &mut ValidatingWebhook) {
    default_common(
        &mut w.failure_policy,
        &mut w.match_policy,
        &mut w.namespace_selector,
        &mut w.object_selector,
        &mut w.timeout_seconds,
        &mut w.rules,
        &mut w.client_config,
    );
}

fn defaulted<W: Clone>(webhooks: &Option<Vec<W>>, default: impl Fn(&mut W)) -> Option<Vec<W>> {
    let mut out = webhooks.clone();
    for w in out.iter_mut().flatten() {
        default(w);
    }
    out
}

/// [`needs_apply`] for a MutatingWebhookConfiguration, both sides defaulted.
pub fn mutating_needs_apply(
    existing: Option<&MutatingWebhookConfiguration>,
    desired: &MutatingWebhookConfiguration,
) -> bool {
    let existing_webhooks = existing.map(|e| defaulted(&e.webhooks, default_mutating));
    needs_apply(
        existing
            .zip(existing_webhooks.as_ref())
            .map(|(e, w)| (&e.metadata, w)),
        (
            &desired.metadata,
            &defaulted(&desired.webhooks, default_mutating),
        ),
        |w: &mut MutatingWebhook| w.client_config.ca_bundle = None,
    )
}

/// [`needs_apply`] for a ValidatingWebhookConfiguration, both sides defaulted.
pub fn validating_needs_apply(
    existing: Option<&ValidatingWebhookConfiguration>,
    desired: &ValidatingWebhookConfiguration,
) -> bool {
    let existing_webhooks = existing.map(|e| defaulted(&e.webhooks, default_validating));
    needs_apply(
        existing
            .zip(existing_webhooks.as_ref())
            .map(|(e, w)| (&e.metadata, w)),
        (
            &desired.metadata,
            &defaulted(&desired.webhooks, default_validating),
        ),
        |w: &mut ValidatingWebhook| w.client_config.ca_bundle = None,
    )
}

/// The MutatingWebhookConfiguration for sidecar injection.
///
/// Narrow on purpose, since `failurePolicy: Fail` makes an unreachable operator
/// block pod creation wherever the webhook applies: only pod CREATE (and
/// updates of injected pods and their ephemeral containers, which are checked
/// by [`crate::injection::pod_guard`], not mutated), only in
/// labelled non-system namespaces other than the operator's, never the
/// operator's own pods, and only pods carrying the `sluice.dev/inject`
/// annotation (a match condition, so the API server does not even call the
/// webhook for the rest).
pub fn pod_injection_configuration(settings: &WebhookSettings) -> MutatingWebhookConfiguration {
    let client_config = match &settings.endpoint {
        WebhookEndpoint::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(POD_INJECTION_PATH.to_string()),
                port: Some(i32::from(*port)),
            }),
            ..Default::default()
        },
        WebhookEndpoint::Url(base) => WebhookClientConfig {
            url: Some(format!(
                "{}{POD_INJECTION_PATH}",
                base.trim_end_matches('/')
            )),
            ..Default::default()
        },
    };
    let client_config = WebhookClientConfig {
        ca_bundle: ca_bundle_of(settings),
        ..client_config
    };
    let mut excluded_namespaces: Vec<String> =
        SYSTEM_NAMESPACES.iter().map(|n| n.to_string()).collect();
    excluded_namespaces.push(settings.operator_namespace.clone());
    let (label_key, label_value) = settings.namespace_label.clone();

    MutatingWebhookConfiguration {
        metadata: configuration_metadata(CONFIGURATION_NAME, settings),
        webhooks: Some(vec![MutatingWebhook {
            name: POD_INJECTION_WEBHOOK.to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config,
            failure_policy: Some("Fail".to_string()),
            match_policy: Some("Equivalent".to_string()),
            // An injected pod is not re-examined: injection is idempotent anyway.
            reinvocation_policy: Some("Never".to_string()),
            side_effects: "None".to_string(),
            timeout_seconds: Some(10),
            rules: Some(vec![
                pod_rule("CREATE", "pods"),
                // `kubectl debug` on an injected pod: refused when it would
                // reach the sidecar's memory or token.
                pod_rule("UPDATE", "pods/ephemeralcontainers"),
                // `kubectl set image`, annotate...: refused when it would change
                // what the webhook wrote (`crate::injection::pod_guard`).
                pod_rule("UPDATE", "pods"),
            ]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(label_key, label_value)])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".to_string(),
                    operator: "NotIn".to_string(),
                    values: Some(excluded_namespaces),
                }]),
            }),
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: APP_NAME_LABEL.to_string(),
                    operator: "NotIn".to_string(),
                    values: Some(vec![OPERATOR_APP_NAME.to_string()]),
                }]),
                match_labels: None,
            }),
            match_conditions: settings.match_conditions.then(|| {
                vec![MatchCondition {
                    name: "opted-in".to_string(),
                    expression: pod_match_condition(),
                }]
            }),
        }]),
    }
}

/// The pod webhook's match condition: a pod created with the opt-in
/// annotation, or a change to a pod that was injected, judged by its old
/// object's `sluice-token` volume (volumes cannot change, annotations can: an
/// update removing the annotations first must not hide the next one). The
/// chart's `templates/webhooks.yaml` carries the same text.
pub fn pod_match_condition() -> String {
    format!(
        "(has(object.metadata.annotations) && '{INJECT_ANNOTATION}' in object.metadata.annotations) || (request.operation == 'UPDATE' && has(oldObject.spec.volumes) && oldObject.spec.volumes.exists(v, v.name == '{TOKEN_VOLUME_NAME}'))"
    )
}

/// Name of the configurations (mutating and validating) on AccessRequests.
pub const APPROVALS_CONFIGURATION_NAME: &str = "sluice-operator-approvals";
/// Name of the webhook that binds and checks approval decisions.
pub const APPROVALS_WEBHOOK: &str = "approvals.sluice.dev";

fn client_config_for(settings: &WebhookSettings, path: &str) -> WebhookClientConfig {
    let config = match &settings.endpoint {
        WebhookEndpoint::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.to_string()),
                port: Some(i32::from(*port)),
            }),
            ..Default::default()
        },
        WebhookEndpoint::Url(base) => WebhookClientConfig {
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            ..Default::default()
        },
    };
    WebhookClientConfig {
        ca_bundle: ca_bundle_of(settings),
        ..config
    }
}

fn access_request_rules() -> Vec<RuleWithOperations> {
    let rule = |operation: &str, resource: &str| RuleWithOperations {
        api_groups: Some(vec!["sluice.dev".to_string()]),
        api_versions: Some(vec!["*".to_string()]),
        operations: Some(vec![operation.to_string()]),
        resources: Some(vec![resource.to_string()]),
        scope: Some("Namespaced".to_string()),
    };
    vec![
        rule("CREATE", "accessrequests"),
        rule("UPDATE", "accessrequests/status"),
    ]
}

/// The mutating webhook on AccessRequest creation and status updates: it
/// binds each new decision to the user making the change (DESIGN §2).
pub fn approvals_mutating_configuration(
    settings: &WebhookSettings,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: configuration_metadata(APPROVALS_CONFIGURATION_NAME, settings),
        webhooks: Some(vec![MutatingWebhook {
            name: APPROVALS_WEBHOOK.to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config_for(settings, MUTATE_PATH),
            failure_policy: Some("Fail".to_string()),
            match_policy: Some("Equivalent".to_string()),
            reinvocation_policy: Some("Never".to_string()),
            side_effects: "None".to_string(),
            timeout_seconds: Some(10),
            rules: Some(access_request_rules()),
            ..Default::default()
        }]),
    }
}

/// The validating webhook on the same operations: refuses what the rules of
/// [`crate::approvals::rules::bind_decisions`] refuse, after every mutation.
pub fn approvals_validating_configuration(
    settings: &WebhookSettings,
) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: configuration_metadata(APPROVALS_CONFIGURATION_NAME, settings),
        webhooks: Some(vec![ValidatingWebhook {
            name: APPROVALS_WEBHOOK.to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config_for(settings, VALIDATE_PATH),
            failure_policy: Some("Fail".to_string()),
            match_policy: Some("Equivalent".to_string()),
            side_effects: "None".to_string(),
            timeout_seconds: Some(10),
            rules: Some(access_request_rules()),
            ..Default::default()
        }]),
    }
}

fn pod_rule(operation: &str, resource: &str) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".to_string()]),
        operations: Some(vec![operation.to_string()]),
        resources: Some(vec![resource.to_string()]),
        scope: Some("Namespaced".to_string()),
    }
}

/// Whether any webhook of `existing` trusts other bytes than `ca_bundle_pem`,
/// so the leader patches only when something changed.
pub fn ca_bundle_differs(existing: &MutatingWebhookConfiguration, ca_bundle_pem: &str) -> bool {
    existing.webhooks.iter().flatten().any(|w| {
        w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_bundle_pem.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: WebhookEndpoint) -> WebhookSettings {
        WebhookSettings {
            endpoint,
            ca_bundle_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
            namespace_label: ("sluice.dev/injection".into(), "enabled".into()),
            operator_namespace: "sluice-system".into(),
            match_conditions: true,
            ca_injection_from: None,
        }
    }

    #[test]
    fn in_cluster_configuration_is_narrow_and_fails_closed() {
        let cfg = pod_injection_configuration(&settings(WebhookEndpoint::Service {
            namespace: "sluice-system".into(),
            name: "sluice-operator".into(),
            port: 8443,
        }));
        let json = serde_json::to_value(&cfg).unwrap();
        let hook = &json["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["timeoutSeconds"], 10);
        assert_eq!(
            hook["rules"][0]["operations"],
            serde_json::json!(["CREATE"])
        );
        assert_eq!(hook["rules"][0]["resources"], serde_json::json!(["pods"]));
        assert_eq!(
            hook["rules"][1]["operations"],
            serde_json::json!(["UPDATE"])
        );
        assert_eq!(
            hook["rules"][1]["resources"],
            serde_json::json!(["pods/ephemeralcontainers"])
        );
        assert_eq!(hook["clientConfig"]["service"]["path"], POD_INJECTION_PATH);
        assert_eq!(hook["clientConfig"]["service"]["port"], 8443);
        assert!(hook["clientConfig"].get("url").is_none());
        assert_eq!(
            hook["namespaceSelector"]["matchLabels"]["sluice.dev/injection"],
            "enabled"
        );
        let excluded = &hook["namespaceSelector"]["matchExpressions"][0]["values"];
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "sluice-system",
        ] {
            assert!(
                excluded.as_array().unwrap().iter().any(|v| v == ns),
                "{ns} not excluded"
            );
        }
        assert_eq!(
            hook["objectSelector"]["matchExpressions"][0]["values"][0],
            OPERATOR_APP_NAME
        );
        assert!(
            hook["matchConditions"][0]["expression"]
                .as_str()
                .unwrap()
                .contains("'sluice.dev/inject' in object.metadata.annotations")
        );
    }

    /// The chart ships the pod webhook (`templates/webhooks.yaml`); the
    /// adopting operator would otherwise patch it back on every install.
    #[test]
    fn the_chart_ships_the_same_pod_rules_and_condition() {
        let chart = include_str!("../../../charts/sluice/templates/webhooks.yaml");
        assert!(
            chart.contains(&format!("expression: \"{}\"", pod_match_condition())),
            "the chart's matchConditions differ from pod_match_condition()"
        );
        let cfg = pod_injection_configuration(&settings(WebhookEndpoint::Url("https://x".into())));
        let rules = cfg.webhooks.unwrap()[0].rules.clone().unwrap();
        for rule in &rules {
            let (op, resource) = (
                &rule.operations.as_ref().unwrap()[0],
                &rule.resources.as_ref().unwrap()[0],
            );
            assert!(
                chart.contains(&format!(
                    "operations: [{op}]\n        resources: [{resource}]\n"
                )),
                "the chart lacks the rule {op} {resource}"
            );
        }
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn out_of_cluster_configuration_uses_the_url() {
        let cfg = pod_injection_configuration(&settings(WebhookEndpoint::Url(
            "https://127.0.0.1:8443/".into(),
        )));
        let client = &cfg.webhooks.as_ref().unwrap()[0].client_config;
        assert_eq!(
            client.url.as_deref(),
            Some("https://127.0.0.1:8443/mutate/pods")
        );
        assert!(client.service.is_none());
    }

    #[test]
    fn approval_webhooks_cover_creation_and_status_and_fail_closed() {
        let s = settings(WebhookEndpoint::Url("https://127.0.0.1:8443".into()));
        let m = serde_json::to_value(approvals_mutating_configuration(&s)).unwrap();
        let v = serde_json::to_value(approvals_validating_configuration(&s)).unwrap();
        for (hook, path) in [
            (&m["webhooks"][0], "/mutate/accessrequests"),
            (&v["webhooks"][0], "/validate/accessrequests"),
        ] {
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(
                hook["clientConfig"]["url"],
                format!("https://127.0.0.1:8443{path}")
            );
            assert_eq!(
                hook["rules"][0]["resources"],
                serde_json::json!(["accessrequests"])
            );
            assert_eq!(
                hook["rules"][0]["operations"],
                serde_json::json!(["CREATE"])
            );
            assert_eq!(
                hook["rules"][1]["resources"],
                serde_json::json!(["accessrequests/status"])
            );
            assert_eq!(
                hook["rules"][1]["operations"],
                serde_json::json!(["UPDATE"])
            );
        }
    }

    #[test]
    fn ca_bundle_change_is_detected() {
        let s = settings(WebhookEndpoint::Url("https://127.0.0.1:8443".into()));
        let cfg = pod_injection_configuration(&s);
        assert!(!ca_bundle_differs(&cfg, &s.ca_bundle_pem));
        assert!(ca_bundle_differs(&cfg, "another bundle"));
        let mut stripped = cfg.clone();
        stripped.webhooks.as_mut().unwrap()[0]
            .client_config
            .ca_bundle = None;
        assert!(ca_bundle_differs(&stripped, &s.ca_bundle_pem));
    }

    #[test]
    fn cert_manager_mode_leaves_ca_bundle_to_cainjector() {
        let own = settings(WebhookEndpoint::Url("https://127.0.0.1:8443".into()));
        let injected = WebhookSettings {
            ca_injection_from: Some("sluice-system/sluice-operator-serving".into()),
            ..own.clone()
        };
        let cfg = pod_injection_configuration(&injected);
        let approvals = approvals_validating_configuration(&injected);
        for (meta, bundle) in [
            (
                &cfg.metadata,
                &cfg.webhooks.as_ref().unwrap()[0].client_config.ca_bundle,
            ),
            (
                &approvals.metadata,
                &approvals.webhooks.as_ref().unwrap()[0]
                    .client_config
                    .ca_bundle,
            ),
        ] {
            assert_eq!(
                meta.annotations.as_ref().unwrap()[INJECT_CA_FROM_ANNOTATION],
                "sluice-system/sluice-operator-serving"
            );
            assert!(bundle.is_none());
        }
        // cainjector filled caBundle in: nothing to re-apply.
        let mut filled = cfg.clone();
        filled.webhooks.as_mut().unwrap()[0].client_config.ca_bundle =
            Some(ByteString(b"injected".to_vec()));
        assert!(!mutating_needs_apply(Some(&filled), &cfg));
        assert!(mutating_needs_apply(None, &cfg));
        // The operator's own CA mode: the bundle is compared, the annotation goes.
        let ours = pod_injection_configuration(&own);
        assert!(mutating_needs_apply(Some(&filled), &ours));
        assert!(!mutating_needs_apply(Some(&ours), &ours));
        assert!(
            mutating_needs_apply(Some(&ours), &cfg),
            "annotation missing"
        );
        let mut other = approvals.clone();
        other.webhooks.as_mut().unwrap()[0].timeout_seconds = Some(5);
        assert!(validating_needs_apply(Some(&other), &approvals));
        assert!(!validating_needs_apply(Some(&approvals), &approvals));
    }
}
