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
//! labels) are the operator's interfaces (docs/DESIGN.md §5, §8); the CLI does not
//! link the operator, so they are repeated below.
//!
//! One file a group of checks, in the order they run: [`pre`] (before
//! installing), then [`crds`], [`operator`], [`pods`], [`resources`]; [`tls`]
//! reads caBundles and probes the operator.

mod crds;
mod operator;
mod pods;
mod pre;
mod resources;
#[cfg(test)]
mod tests;
mod tls;

use crate::approvals::ApprovalsError;
use crate::approvals::ClusterArgs;
use crate::approvals::connect_with;
use crate::approvals::runtime;
use clap::{Args, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

use crds::crds;
use operator::operator;
use pods::pods;
use pre::{api_server, pre};
use resources::resources;

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
/// The oldest Kubernetes with native sidecars (docs/DESIGN.md §5).
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
