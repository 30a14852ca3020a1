//! `kubectl sluice check`: is this cluster's Sluice healthy? (like `linkerd check`)
//!
//! Each check prints one line, `✔` (fine), `‼` (works, but look at it) or
//! `✖` (broken), and a broken or doubtful line says what to do next. The exit
//! code is 0 when nothing is broken (warnings allowed) and 1 otherwise, so
//! scripts can gate on it. `--pre` checks a cluster before installing:
//! the API server, the installer's permissions, and leftovers of an earlier
//! install. `-o json` prints the same results as one JSON document.
//!
//! The names checked here (webhook configurations, Secrets, annotations,
//! labels) are the operator's interfaces (DESIGN §5, §8); the CLI does not
//! link the operator, so they are repeated below.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use sluice_crds::{AccessPolicy, Connection};

use crate::approvals::{ApprovalsError, ClusterArgs, connect_with, runtime};

/// The pod injection webhook's configuration (operator `webhook_config::CONFIGURATION_NAME`).
const INJECTION_CONFIGURATION: &str = "sluice-operator";
/// The injection webhook inside it.
const INJECTION_WEBHOOK: &str = "sidecar-injection.sluice.dev";
/// The approval webhooks' configurations (mutating and validating).
const APPROVALS_CONFIGURATION: &str = "sluice-operator-approvals";
/// The pod annotation that asks for a sidecar.
const INJECT_ANNOTATION: &str = "sluice.dev/inject";
/// Written by the webhook on the pods it injected.
const INJECTED_REVISION_ANNOTATION: &str = "sluice.dev/injected-revision";
/// The namespace label that opts in when no webhook configuration says otherwise.
const DEFAULT_NAMESPACE_LABEL: (&str, &str) = ("sluice.dev/injection", "enabled");
/// The operator's Deployment label.
const OPERATOR_APP: (&str, &str) = ("app.kubernetes.io/name", "sluice-operator");
/// The gateway signing keys (`key-<created>-<kid>.pem` entries).
const KEYS_SECRET: &str = "sluice-gateway-keys";
/// The leader adds a signing key at this age (operator `keys::ROTATE_AFTER`);
/// an hour more is room for its maintenance loop.
const KEY_ROTATION: Duration = Duration::from_secs(25 * 3600);
/// Warn when a certificate expires within this.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// Namespaces the webhook never injects, besides the operator's.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// How long one probe of the operator may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most objects one check names; the rest are counted.
const MAX_LISTED: usize = 10;
/// The oldest Kubernetes with native sidecars (DESIGN §5).
const NATIVE_SIDECAR_MINOR: u32 = 29;

/// Output formats of `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per check.
    Text,
    /// One JSON document.
    Json,
}

/// `kubectl sluice check`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  # Is Sluice healthy in the current context's cluster? (exit 1 when not)
  kubectl sluice check

  # Before installing: API server, permissions, leftovers of an earlier install
  kubectl sluice check --pre

  # Only the pods and policies of one namespace, as JSON for a script
  kubectl sluice check -n shop -o json")]
pub struct CheckArgs {
    /// Check the cluster before installing Sluice instead.
    #[arg(long)]
    pub pre: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// The operator's namespace (default: where its webhooks point, else sluice-system).
    #[arg(long, value_name = "NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Cluster flags; `-n` limits the pod and policy checks to one namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Works, but look at it.
    Warning,
    /// Broken.
    Error,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The group it belongs to, e.g. `sluice-operator`.
    pub category: &'static str,
    /// What was found.
    pub description: String,
    /// How it came out.
    pub result: Outcome,
    /// What to do next, for warnings and errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Every line of a run, in order.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
    /// No check failed.
    pub success: bool,
}

impl Report {
    fn ok(&mut self, category: &'static str, description: impl Into<String>) {
        self.push(category, Outcome::Ok, description.into(), None);
    }

    fn warn(
        &mut self,
        category: &'static str,
        description: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            category,
            Outcome::Warning,
            description.into(),
            Some(hint.into()),
        );
    }

    fn error(
        &mut self,
        category: &'static str,
        description: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            category,
            Outcome::Error,
            description.into(),
            Some(hint.into()),
        );
    }

    fn push(
        &mut self,
        category: &'static str,
        result: Outcome,
        description: String,
        hint: Option<String>,
    ) {
        self.checks.push(Check {
            category,
            description,
            result,
            hint,
        });
    }

    fn finish(mut self) -> Self {
        self.success = !self.checks.iter().any(|c| c.result == Outcome::Error);
        self
    }

    /// The text form: categories as headings, one line per check, a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut category = "";
        for check in &self.checks {
            if check.category != category {
                if !category.is_empty() {
                    out.push('\n');
                }
                category = check.category;
                out.push_str(category);
                out.push('\n');
                out.push_str(&"-".repeat(category.chars().count()));
                out.push('\n');
            }
            let mark = match check.result {
                Outcome::Ok => '✔',
                Outcome::Warning => '‼',
                Outcome::Error => '✖',
            };
            out.push_str(&format!("{mark} {}\n", check.description));
            if let Some(hint) = &check.hint {
                out.push_str(&format!("    {hint}\n"));
            }
        }
        let errors = self
            .checks
            .iter()
            .filter(|c| c.result == Outcome::Error)
            .count();
        let warnings = self
            .checks
            .iter()
            .filter(|c| c.result == Outcome::Warning)
            .count();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "\nStatus check results are {} ({}, {})\n",
            if errors == 0 { '✔' } else { '✖' },
            plural(errors, "error"),
            plural(warnings, "warning"),
        ));
        out
    }
}

/// Runs `check`: prints the report; exit 0 when nothing is broken, 1 otherwise.
pub fn run(args: &CheckArgs) -> Result<ExitCode, ApprovalsError> {
    let report = runtime()?.block_on(async {
        let (client, _) = connect_with(&args.cluster, false).await?;
        Ok::<_, ApprovalsError>(if args.pre {
            pre(&client).await
        } else {
            installed(&client, args).await
        })
    })?;
    let report = report.finish();
    match args.output {
        Format::Text => print!("{}", report.text()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| ApprovalsError::Usage(format!("could not encode the report: {e}")))?
        ),
    }
    Ok(if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// === the API server ===

/// Reads the API server's version; `None` (after an error line) when it cannot be reached.
async fn api_server(client: &Client, report: &mut Report) -> Option<u32> {
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

async fn pre(client: &Client) -> Report {
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

async fn can(
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

// === after installing ===

async fn installed(client: &Client, args: &CheckArgs) -> Report {
    let mut report = Report::default();
    if api_server(client, &mut report).await.is_none() {
        return report;
    }
    crds(client, &mut report).await;
    let injection = operator(client, args, &mut report).await;
    pods(client, args, &injection, &mut report).await;
    resources(client, args, &mut report).await;
    report
}

async fn crds(client: &Client, report: &mut Report) {
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

/// What the pod checks need from the webhook configuration.
struct Injection {
    /// The namespace label that opts in.
    label: (String, String),
    /// Namespaces the webhook never injects.
    excluded: BTreeSet<String>,
}

/// The webhook configurations, the operator's reachability and readiness,
/// its certificates and signing keys.
async fn operator(client: &Client, args: &CheckArgs, report: &mut Report) -> Injection {
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
    let mut hooks: Vec<(String, String, WebhookClientConfig)> = vec![];
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

    // Every caBundle must be there, parse and be valid now.
    let now = Timestamp::now().as_second();
    let mut bundles_ok = !hooks.is_empty();
    for (config, name, cc) in &hooks {
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

    // Where the operator is: the namespace its webhooks exclude or point at.
    let from_service = hooks
        .iter()
        .find_map(|(_, _, cc)| cc.service.as_ref().map(|s| s.namespace.clone()));
    let from_selector = injection
        .excluded
        .iter()
        .find(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()))
        .cloned();
    let namespace = args
        .operator_namespace
        .clone()
        .or(from_service)
        .or(from_selector)
        .unwrap_or_else(|| "sluice-system".to_string());

    // The operator answers, with a certificate its webhooks' caBundle
    // verifies: asked through the injection webhook, or another whose
    // caBundle is usable (a missing one is reported above).
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
    let uses_url = hooks.iter().any(|(_, _, cc)| cc.url.is_some());
    deployment(client, &namespace, uses_url, report).await;
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
    signing_keys(client, &namespace, report).await;
    injection
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

// === pods ===

async fn pods(client: &Client, args: &CheckArgs, injection: &Injection, report: &mut Report) {
    const CAT: &str = "sluice-injection";
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
            return;
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
    let mut unlabelled: Vec<String> = vec![];
    let mut not_injected: Vec<String> = vec![];
    let mut old: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut injected = 0;
    let current = env!("CARGO_PKG_VERSION");
    for pod in &pods {
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

// === Connections and AccessPolicies ===

async fn resources(client: &Client, args: &CheckArgs, report: &mut Report) {
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

// === helpers ===

fn count(n: usize, word: &str) -> String {
    if n == 1 || word.ends_with('s') || word.ends_with("ies") {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Up to [`MAX_LISTED`] names, then how many more.
fn listed(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    let mut out = names
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        out.push_str(&format!(" and {} more", names.len() - MAX_LISTED));
    }
    out
}

fn date(unix: i64) -> String {
    Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// The earliest `notAfter` of the certificates in a caBundle, or what is wrong with it.
pub fn ca_bundle_expiry(pem: &[u8]) -> Result<i64, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Err("no caBundle".to_string());
    }
    let mut earliest: Option<i64> = None;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("a caBundle that is not PEM ({e})"))?;
        let not_after = not_after(&cert)
            .map_err(|e| format!("a caBundle certificate that does not parse ({e})"))?;
        earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
    }
    earliest.ok_or_else(|| "a caBundle without a certificate".to_string())
}

fn not_after(der: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

/// What the operator's `/readyz` answered.
struct Probe {
    /// `https://HOST:PORT`.
    base: String,
    /// The HTTP status.
    status: u16,
    /// The serving certificate's `notAfter`.
    not_after: i64,
}

/// GETs `/readyz` from the webhook URL's host over TLS, trusting only the
/// webhook's caBundle (what the API server does when it calls the webhook).
async fn probe(url: &str, ca_pem: &[u8]) -> Result<Probe, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the webhook URL does not parse ({e})"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the webhook URL is not https".to_string());
    }
    let host = uri
        .host()
        .ok_or("the webhook URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let base = format!("https://{authority}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("the caBundle is not PEM ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the caBundle holds an unusable certificate ({e})"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed ({e})"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        ServerName::try_from(host.clone()).map_err(|e| format!("bad host {host:?} ({e})"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect ({e})"))?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| {
            format!("TLS handshake failed ({e}); is caBundle the CA of the serving certificate?")
        })?;
        let not_after = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no serving certificate".to_string())
            .and_then(|c| not_after(c))?;
        tls.write_all(
            format!("GET /readyz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| format!("cannot send ({e})"))?;
        // The status line is all we need; read a bounded head.
        let mut head = vec![0u8; 1024];
        let mut filled = 0;
        while filled < head.len() && !head[..filled].contains(&b'\n') {
            let n = tls
                .read(&mut head[filled..])
                .await
                .map_err(|e| format!("cannot read ({e})"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let line = String::from_utf8_lossy(&head[..filled]);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| "no HTTP answer".to_string())?;
        Ok::<_, String>((status, not_after))
    };
    let (status, not_after) = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))??;
    Ok(Probe {
        base,
        status,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_marks_each_line_and_sums_up() {
        let mut report = Report::default();
        report.ok("a", "fine");
        report.warn("a", "hmm", "look");
        report.error("b", "broken", "fix it");
        let report = report.finish();
        assert!(!report.success);
        assert_eq!(
            report.text(),
            "a\n-\n✔ fine\n‼ hmm\n    look\n\nb\n-\n✖ broken\n    fix it\n\nStatus check results are ✖ (1 error, 1 warning)\n"
        );
        let mut fine = Report::default();
        fine.warn("a", "hmm", "look");
        assert!(fine.finish().success);
    }

    #[test]
    fn a_ca_bundle_says_what_is_wrong_with_it() {
        assert_eq!(ca_bundle_expiry(b""), Err("no caBundle".to_string()));
        assert_eq!(
            ca_bundle_expiry(b"hello"),
            Err("a caBundle without a certificate".to_string())
        );
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            ca_bundle_expiry(bad)
                .unwrap_err()
                .starts_with("a caBundle certificate that does not parse")
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let names = (0..12).map(|i| format!("p{i}"));
        assert_eq!(
            listed(names),
            "p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 2 more"
        );
        assert_eq!(count(1, "pod"), "1 pod");
        assert_eq!(count(2, "pod"), "2 pods");
    }
}
