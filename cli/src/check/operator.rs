//! The operator: its webhook configurations and their caBundles, its
//! Deployment, whether it answers, its certificates and signing keys.

use super::tls::{ca_bundle_expiry, probe};
use super::{
    APPROVALS_CONFIGURATION, CheckArgs, DEFAULT_NAMESPACE_LABEL, EXPIRY_WARNING,
    INJECTION_CONFIGURATION, INJECTION_WEBHOOK, KEY_ROTATION, KEYS_SECRET, OPERATOR_APP, Report,
    SYSTEM_NAMESPACES, date,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::Client;
use kube::api::ListParams;
use std::collections::BTreeSet;

/// What the pod checks need from the webhook configuration.
pub(super) struct Injection {
    /// The namespace label that opts in.
    pub(super) label: (String, String),
    /// Namespaces the webhook never injects.
    pub(super) excluded: BTreeSet<String>,
}

/// A Sluice webhook: its configuration, its name and how it is called.
type Hook = (String, String, WebhookClientConfig);

/// The webhook configurations, the operator's reachability and readiness,
/// its certificates and signing keys.
pub(super) async fn operator(client: &Client, args: &CheckArgs, report: &mut Report) -> Injection {
    let (injection, hooks) = webhooks(client, report).await;
    // Every caBundle must be there, parse and be valid now.
    let now = Timestamp::now().as_second();
    ca_bundles(&hooks, now, report);
    let namespace = operator_namespace(args, &hooks, &injection);
    let uses_url = hooks.iter().any(|(_, _, cc)| cc.url.is_some());
    deployment(client, &namespace, uses_url, report).await;
    answers(client, &hooks, now, report).await;
    signing_keys(client, &namespace, report).await;
    injection
}

/// The three webhook configurations: present, and what the injection
/// webhook selects; every Sluice webhook found.
async fn webhooks(client: &Client, report: &mut Report) -> (Injection, Vec<Hook>) {
    const CAT: &str = "sluice-operator";
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut injection = Injection {
        label: (
            DEFAULT_NAMESPACE_LABEL.0.to_string(),
            DEFAULT_NAMESPACE_LABEL.1.to_string(),
        ),
        excluded: SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect(),
    };
    // (configuration, webhook name, client config) of every Sluice webhook.
    let mut hooks: Vec<Hook> = vec![];
    let missing_hint = "the operator writes it at start (the chart ships it): is the operator running? kubectl get deploy -A -l app.kubernetes.io/name=sluice-operator";
    match mutating.get_opt(INJECTION_CONFIGURATION).await {
        Ok(Some(config)) => {
            let webhooks = config.webhooks.unwrap_or_default();
            match webhooks.iter().find(|w| w.name == INJECTION_WEBHOOK) {
                Some(hook) => {
                    if let Some(selector) = &hook.namespace_selector {
                        if let Some((k, v)) = selector.match_labels.as_ref().and_then(|m| m.iter().next()) {
                            injection.label = (k.clone(), v.clone());
                        }
                        for expr in selector.match_expressions.iter().flatten() {
                            if expr.key == "kubernetes.io/metadata.name" && expr.operator == "NotIn" {
                                injection.excluded.extend(expr.values.iter().flatten().cloned());
                            }
                        }
                    }
                    report.ok(CAT, format!("mutatingwebhookconfiguration/{INJECTION_CONFIGURATION} is present"));
                }
                None => report.error(
                    CAT,
                    format!("mutatingwebhookconfiguration/{INJECTION_CONFIGURATION} has no webhook {INJECTION_WEBHOOK}"),
                    "no pod gets a sidecar: restart the operator so it writes its configuration again, or helm upgrade",
                ),
            }
            for hook in webhooks {
                hooks.push((format!("mutatingwebhookconfiguration/{INJECTION_CONFIGURATION}"), hook.name, hook.client_config));
            }
        }
        Ok(None) => report.error(
            CAT,
            format!("mutatingwebhookconfiguration/{INJECTION_CONFIGURATION} is missing: no pod gets a sidecar"),
            missing_hint,
        ),
        Err(e) => report.error(CAT, format!("could not read mutatingwebhookconfiguration/{INJECTION_CONFIGURATION}: {e}"), "check your permissions"),
    }
    match mutating.get_opt(APPROVALS_CONFIGURATION).await {
        Ok(Some(config)) => {
            report.ok(CAT, format!("mutatingwebhookconfiguration/{APPROVALS_CONFIGURATION} is present"));
            for hook in config.webhooks.unwrap_or_default() {
                hooks.push((format!("mutatingwebhookconfiguration/{APPROVALS_CONFIGURATION}"), hook.name, hook.client_config));
            }
        }
        Ok(None) => report.error(CAT, format!("mutatingwebhookconfiguration/{APPROVALS_CONFIGURATION} is missing: approvals are not recorded"), missing_hint),
        Err(e) => report.error(CAT, format!("could not read mutatingwebhookconfiguration/{APPROVALS_CONFIGURATION}: {e}"), "check your permissions"),
    }
    match validating.get_opt(APPROVALS_CONFIGURATION).await {
        Ok(Some(config)) => {
            report.ok(CAT, format!("validatingwebhookconfiguration/{APPROVALS_CONFIGURATION} is present"));
            for hook in config.webhooks.unwrap_or_default() {
                hooks.push((format!("validatingwebhookconfiguration/{APPROVALS_CONFIGURATION}"), hook.name, hook.client_config));
            }
        }
        Ok(None) => report.error(CAT, format!("validatingwebhookconfiguration/{APPROVALS_CONFIGURATION} is missing: anyone could decide AccessRequests"), missing_hint),
        Err(e) => report.error(CAT, format!("could not read validatingwebhookconfiguration/{APPROVALS_CONFIGURATION}: {e}"), "check your permissions"),
    }

    (injection, hooks)
}

/// Every webhook's caBundle is there, parses and is valid at `now`.
fn ca_bundles(hooks: &[Hook], now: i64, report: &mut Report) {
    const CAT: &str = "sluice-operator";
    let mut bundles_ok = !hooks.is_empty();
    for (config, name, cc) in hooks {
        let pem = cc
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone())
            .unwrap_or_default();
        match ca_bundle_expiry(&pem) {
            Err(why) => {
                bundles_ok = false;
                report.error(
                    CAT,
                    format!("webhook {name} in {config} has {why}: the API server cannot call it, so what it matches is refused"),
                    "the operator's leader writes caBundle (with cert-manager, its cainjector does from cert-manager.io/inject-ca-from): check the operator's logs, or the Certificate's Ready condition",
                );
            }
            Ok(not_after) if not_after <= now => {
                bundles_ok = false;
                report.error(
                    CAT,
                    format!("webhook {name} in {config} has a caBundle that expired at {}", date(not_after)),
                    "the operator renews its CA at start: restart it (kubectl rollout restart -n NS deploy/sluice-operator)",
                );
            }
            Ok(_) => {}
        }
    }
    if bundles_ok {
        report.ok(
            CAT,
            format!("all {} webhooks carry a valid caBundle", hooks.len()),
        );
    }
}

/// Where the operator is: as told, else the namespace its webhooks point
/// at or exclude, else `sluice-system`.
fn operator_namespace(args: &CheckArgs, hooks: &[Hook], injection: &Injection) -> String {
    let from_service = hooks
        .iter()
        .find_map(|(_, _, cc)| cc.service.as_ref().map(|s| s.namespace.clone()));
    let from_selector = injection
        .excluded
        .iter()
        .find(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()))
        .cloned();
    args.operator_namespace
        .clone()
        .or(from_service)
        .or(from_selector)
        .unwrap_or_else(|| "sluice-system".to_string())
}

/// The operator answers, with a certificate its webhooks' caBundle
/// verifies: asked through the injection webhook, or another whose caBundle
/// is usable (a missing one is reported by [`ca_bundles`]).
async fn answers(client: &Client, hooks: &[Hook], now: i64, report: &mut Report) {
    const CAT: &str = "sluice-operator";
    let usable = |cc: &WebhookClientConfig| {
        ca_bundle_expiry(
            &cc.ca_bundle
                .as_ref()
                .map(|b| b.0.clone())
                .unwrap_or_default(),
        )
        .is_ok()
    };
    let injection_hook = hooks
        .iter()
        .filter(|(_, _, cc)| usable(cc))
        .min_by_key(|(_, name, _)| name != INJECTION_WEBHOOK);
    if injection_hook.is_none() && !hooks.is_empty() {
        report.error(
            CAT,
            "cannot check that the operator answers: no webhook has a usable caBundle",
            "fix the caBundle errors above first",
        );
    }
    if let Some((_, _, cc)) = injection_hook {
        let pem = cc
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone())
            .unwrap_or_default();
        if let Some(url) = &cc.url {
            match probe(url, &pem).await {
                Ok(probe) if probe.status == 200 => {
                    report.ok(
                        CAT,
                        format!("the operator answers at {} (readyz 200) with a certificate the webhooks' caBundle verifies", probe.base),
                    );
                    certificate_expiry(report, "the operator's serving certificate", probe.not_after, now);
                }
                Ok(probe) => report.error(
                    CAT,
                    format!("the operator at {} is not ready (readyz {})", probe.base, probe.status),
                    "its caches or leader election have not settled: see its logs",
                ),
                Err(e) => report.error(
                    CAT,
                    format!("the operator does not answer at {url}: {e}"),
                    "the API server cannot call the webhooks either: start the operator, or fix the URL it registered (--webhook-url)",
                ),
            }
        } else if let Some(service) = &cc.service {
            service_probe(client, service, report).await;
        }
        if let Ok(not_after) = ca_bundle_expiry(&pem) {
            certificate_expiry(report, "the webhooks' CA", not_after, now);
        }
    }
}

async fn deployment(client: &Client, namespace: &str, uses_url: bool, report: &mut Report) {
    const CAT: &str = "sluice-operator";
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={}", OPERATOR_APP.0, OPERATOR_APP.1);
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) if list.items.is_empty() && uses_url => report.ok(
            CAT,
            format!("no operator Deployment in {namespace}: its webhooks point at a URL (the operator runs outside the cluster)"),
        ),
        Ok(list) if list.items.is_empty() => report.error(
            CAT,
            format!("no operator Deployment ({selector}) in namespace {namespace}"),
            "install the chart (helm upgrade --install sluice charts/sluice -n sluice-system), or pass --operator-namespace",
        ),
        Ok(list) => {
            for d in list.items {
                let name = d.metadata.name.unwrap_or_default();
                let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                if ready >= 1 {
                    report.ok(CAT, format!("deployment {namespace}/{name} has {ready}/{want} replicas ready"));
                } else {
                    report.error(
                        CAT,
                        format!("deployment {namespace}/{name} has no ready replica (0/{want})"),
                        format!("kubectl describe deploy -n {namespace} {name}; kubectl logs -n {namespace} deploy/{name}"),
                    );
                }
            }
        }
        Err(e) => report.warn(
            CAT,
            format!("could not list Deployments in {namespace}: {e}"),
            "check your permissions (list deployments), or pass --operator-namespace",
        ),
    }
}

/// In a cluster the webhooks name a Service: ask its `/readyz` through the
/// API server's service proxy (the API server verifies nothing there; the
/// caBundle is checked above).
async fn service_probe(
    client: &Client,
    service: &k8s_openapi::api::admissionregistration::v1::ServiceReference,
    report: &mut Report,
) {
    const CAT: &str = "sluice-operator";
    let port = service.port.unwrap_or(443);
    let path = format!(
        "/api/v1/namespaces/{}/services/https:{}:{port}/proxy/readyz",
        service.namespace, service.name
    );
    let request = match http::Request::get(&path).body(Vec::new()) {
        Ok(r) => r,
        Err(e) => {
            report.error(
                CAT,
                format!("could not build the request {path}: {e}"),
                "report this as a bug",
            );
            return;
        }
    };
    match client.request_text(request).await {
        Ok(_) => report.ok(
            CAT,
            format!(
                "the operator answers through service {}/{} (readyz)",
                service.namespace, service.name
            ),
        ),
        Err(e) => report.error(
            CAT,
            format!(
                "the operator does not answer through service {}/{}: {e}",
                service.namespace, service.name
            ),
            format!(
                "kubectl get endpoints -n {} {}; kubectl logs -n {} deploy/sluice-operator",
                service.namespace, service.name, service.namespace
            ),
        ),
    }
}

fn certificate_expiry(report: &mut Report, what: &str, not_after: i64, now: i64) {
    const CAT: &str = "sluice-operator";
    let left = not_after - now;
    if left <= 0 {
        report.error(
            CAT,
            format!("{what} expired at {}", date(not_after)),
            "the operator renews it on its own: restart it, and look for renewal errors in its logs",
        );
    } else if left < EXPIRY_WARNING.as_secs() as i64 {
        report.warn(
            CAT,
            format!("{what} expires at {} (in {})", date(not_after), crate::approvals::age(left)),
            "the operator renews it 30 days ahead, so it is not renewing: look for renewal errors in its logs",
        );
    } else {
        report.ok(CAT, format!("{what} is valid until {}", date(not_after)));
    }
}

async fn signing_keys(client: &Client, namespace: &str, report: &mut Report) {
    const CAT: &str = "sluice-operator";
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(KEYS_SECRET).await {
        Ok(Some(secret)) => {
            // Only the entry names are read (`key-<created>-<kid>.pem`); the keys stay untouched.
            let newest = secret
                .data
                .unwrap_or_default()
                .keys()
                .filter_map(|k| k.strip_prefix("key-")?.split('-').next()?.parse::<i64>().ok())
                .max();
            let now = Timestamp::now().as_second();
            match newest {
                None => report.error(
                    CAT,
                    format!("secret {namespace}/{KEYS_SECRET} holds no signing key"),
                    "no sidecar can get a gateway token: delete the Secret and restart the operator, which creates a key",
                ),
                Some(created) if now - created > KEY_ROTATION.as_secs() as i64 => report.warn(
                    CAT,
                    format!("the gateway signing key was created {} ago; it should rotate every 24h", crate::approvals::age(now - created)),
                    "the leader rotates it: is there a leader? kubectl get lease -n NAMESPACE; see the operator's logs",
                ),
                Some(created) => report.ok(
                    CAT,
                    format!("the gateway signing key is {} old (rotates at 24h)", crate::approvals::age(now - created)),
                ),
            }
        }
        Ok(None) => report.error(
            CAT,
            format!("secret {namespace}/{KEYS_SECRET} (the gateway signing keys) is missing"),
            "the operator creates it at start: is it running in this namespace? (--operator-namespace)",
        ),
        Err(kube::Error::Api(s)) if s.code == 403 => report.warn(
            CAT,
            format!("may not read secret {namespace}/{KEYS_SECRET}, so the signing key's age is unknown"),
            "run the check as a cluster admin to see it",
        ),
        Err(e) => report.error(CAT, format!("could not read secret {namespace}/{KEYS_SECRET}: {e}"), "check the connection to the API server"),
    }
}
