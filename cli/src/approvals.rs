//! `approve`, `deny` and `requests`: deciding AccessRequests (DESIGN §2, §6).
//!
//! A decision is one new entry appended to `status.decisions` with a JSON
//! Patch. The entry's `user` is a placeholder: the operator's admission
//! webhook replaces it with the Kubernetes user making the change, and
//! refuses the change when that user may not decide (the message is printed
//! as is).

use std::process::ExitCode;

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use sluice_crds::{AccessRequest, RequestPhase, Verdict};

/// Where to find the cluster: the kubectl flags the plugin honours.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Path to the kubeconfig (default: `KUBECONFIG`, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Username to impersonate for the operation (as kubectl's `--as`).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate for the operation; repeat for several (as
    /// kubectl's `--as-group`; needs `--as`).
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// Bearer token for authentication to the API server, instead of the
    /// context's credentials (as kubectl's `--token`). A token may begin
    /// with `-` (base64url), so the next argument is always the value, as
    /// kubectl takes it.
    #[arg(long, value_name = "TOKEN", allow_hyphen_values = true)]
    pub token: Option<String>,
}

/// `kubectl sluice approve|deny NAME`.
#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The AccessRequest's name.
    pub name: String,
    /// Why, recorded with the decision.
    #[arg(long)]
    pub reason: Option<String>,
    /// Cluster flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Output formats of `requests` (as kubectl's `-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RequestsFormat {
    /// The table with the whole statement, the Connection and the expiry.
    Wide,
    /// A kubectl-style `List` (with `--watch`: one object per change).
    Json,
    /// As `json`, in YAML (with `--watch`: documents separated by `---`).
    Yaml,
}

/// `kubectl sluice requests`.
#[derive(Args, Debug)]
pub struct RequestsArgs {
    /// List requests of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format (default: the table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<RequestsFormat>,
    /// After listing, print each request as it is created or changes, until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Cluster flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What went wrong, for one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalsError {
    /// The kubeconfig could not be read.
    #[error("could not read the kubeconfig: {0}; set KUBECONFIG or pass --kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// The kubeconfig has no such context (`--context`, or its current-context).
    #[error(
        "the kubeconfig has no context {0:?}; list them with kubectl config get-contexts, and pass one with --context"
    )]
    NoContext(String),
    /// The client could not be built.
    #[error("could not connect to the cluster: {0}")]
    Client(#[source] kube::Error),
    /// The request does not exist.
    #[error(
        "AccessRequest {namespace}/{name} not found; list them with kubectl sluice requests -n {namespace}"
    )]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The API server (or the operator's webhook) refused.
    #[error("{0}")]
    Refused(String),
    /// The API server could not be reached.
    #[error("the API server call failed: {0}")]
    Api(#[source] kube::Error),
    /// The flags do not go together.
    #[error("{0}")]
    Usage(String),
    /// No async runtime.
    #[error("could not start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

pub(crate) fn api_error(error: kube::Error) -> ApprovalsError {
    match error {
        kube::Error::Api(s) => ApprovalsError::Refused(s.message.clone()),
        other => ApprovalsError::Api(other),
    }
}

pub(crate) async fn connect(args: &ClusterArgs) -> Result<(Client, String), ApprovalsError> {
    connect_with(args, true).await
}

/// [`connect`]; without `retry`, a 429/503/504 is an answer at once instead
/// of kube's backoff of up to 15 tries (a pod proxy answers 503 for a pod it
/// cannot reach, and `status` must say so, not wait minutes).
pub(crate) async fn connect_with(
    args: &ClusterArgs,
    retry: bool,
) -> Result<(Client, String), ApprovalsError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(ApprovalsError::Kubeconfig)?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| match e {
        kube::config::KubeconfigError::LoadContext(name) => ApprovalsError::NoContext(name),
        other => ApprovalsError::Kubeconfig(other),
    })?;
    let mut config = config;
    config.default_retry = retry;
    if let Some(token) = &args.token {
        // As kubectl: the token replaces the context's credentials.
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        };
    }
    if !args.as_group.is_empty() && args.as_user.is_none() {
        return Err(ApprovalsError::Usage(
            "--as-group needs --as: name the user to impersonate".to_string(),
        ));
    }
    // Sent as Impersonate-User / Impersonate-Group headers; the API server
    // checks the caller may impersonate, and admission sees the impersonated user.
    if let Some(user) = &args.as_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!args.as_group.is_empty()).then(|| args.as_group.clone());
    }
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(ApprovalsError::Client)?;
    Ok((client, namespace))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ApprovalsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ApprovalsError::Runtime)
}

/// Runs `approve` (`Verdict::Approve`) or `deny`.
pub fn decide(args: &DecideArgs, verdict: Verdict) -> Result<ExitCode, ApprovalsError> {
    runtime()?.block_on(async {
        let (client, namespace) = connect(&args.cluster).await?;
        let api: Api<AccessRequest> = Api::namespaced(client, &namespace);
        let ar = api
            .get_opt(&args.name)
            .await
            .map_err(api_error)?
            .ok_or_else(|| ApprovalsError::NotFound {
                namespace: namespace.clone(),
                name: args.name.clone(),
            })?;
        let mut entry = json!({
            // Replaced by the operator's webhook with the user making this change.
            "user": "-",
            "verdict": match verdict { Verdict::Approve => "approve", Verdict::Deny => "deny" },
            "time": Timestamp::now().to_string(),
        });
        if let Some(reason) = &args.reason {
            entry["comment"] = json!(reason);
        }
        let has_decisions = ar.status.as_ref().is_some_and(|s| !s.decisions.is_empty());
        let operations = if ar.status.is_none() {
            json!([{"op": "add", "path": "/status", "value": {"decisions": [entry]}}])
        } else if has_decisions {
            json!([{"op": "add", "path": "/status/decisions/-", "value": entry}])
        } else {
            json!([{"op": "add", "path": "/status/decisions", "value": [entry]}])
        };
        let patch: json_patch::Patch = serde_json::from_value(operations)
            .map_err(|e| ApprovalsError::Refused(e.to_string()))?;
        let stored = api
            .patch_status(
                &args.name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
            .map_err(api_error)?;
        let recorded = stored
            .status
            .as_ref()
            .and_then(|s| s.decisions.last())
            .map(|d| d.user.clone())
            .unwrap_or_default();
        let word = match verdict {
            Verdict::Approve => "approved",
            Verdict::Deny => "denied",
        };
        println!("accessrequest/{} {word} by {recorded}", args.name);
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `requests`: a table, pending first, newest first within a phase.
pub fn requests(args: &RequestsArgs) -> Result<ExitCode, ApprovalsError> {
    runtime()?.block_on(async {
        let (client, namespace) = connect(&args.cluster).await?;
        let api: Api<AccessRequest> = if args.all_namespaces {
            Api::all(client)
        } else {
            Api::namespaced(client, &namespace)
        };
        let list = api.list(&ListParams::default()).await.map_err(api_error)?;
        let now = Timestamp::now();
        let wide = args.output == Some(RequestsFormat::Wide);
        match args.output {
            None | Some(RequestsFormat::Wide) => {
                print!("{}", table_with(&list.items, args.all_namespaces, wide, now))
            }
            Some(format) => {
                let mut items: Vec<&AccessRequest> = list.items.iter().collect();
                sort(&mut items);
                let items: Vec<serde_json::Value> = items
                    .into_iter()
                    .map(with_kind)
                    .collect::<Result<_, _>>()?;
                print!(
                    "{}",
                    encode(
                        &json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}),
                        format
                    )?
                );
            }
        }
        if args.watch {
            let version = list.metadata.resource_version.clone().unwrap_or_default();
            return watch(&api, version, args, wide).await;
        }
        if list.items.is_empty() {
            eprintln!(
                "No AccessRequests found{}.",
                if args.all_namespaces {
                    String::new()
                } else {
                    format!(" in {namespace} namespace")
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Follows the requests from `version` on, printing a row (or an object)
/// per change, until interrupted; re-lists when the API server has
/// compacted past the version (410 Gone), as kubectl does.
async fn watch(
    api: &Api<AccessRequest>,
    mut version: String,
    args: &RequestsArgs,
    wide: bool,
) -> Result<ExitCode, ApprovalsError> {
    use futures::TryStreamExt;
    use kube::api::{WatchEvent, WatchParams};
    use std::io::Write;
    loop {
        let stream = api
            .watch(&WatchParams::default().timeout(290), &version)
            .await
            .map_err(api_error)?;
        futures::pin_mut!(stream);
        while let Some(event) = stream.try_next().await.map_err(api_error)? {
            let changed = match event {
                WatchEvent::Added(ar) | WatchEvent::Modified(ar) | WatchEvent::Deleted(ar) => ar,
                WatchEvent::Bookmark(b) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(e) if e.code == 410 => {
                    let list = api.list(&ListParams::default()).await.map_err(api_error)?;
                    version = list.metadata.resource_version.unwrap_or_default();
                    break;
                }
                WatchEvent::Error(e) => return Err(ApprovalsError::Refused(e.message)),
            };
            if let Some(v) = &changed.metadata.resource_version {
                version = v.clone();
            }
            let text = match args.output {
                None | Some(RequestsFormat::Wide) => {
                    let table = table_with(
                        std::slice::from_ref(&changed),
                        args.all_namespaces,
                        wide,
                        Timestamp::now(),
                    );
                    // The row without its header, as kubectl get --watch prints it.
                    table.lines().skip(1).map(|l| format!("{l}\n")).collect()
                }
                Some(RequestsFormat::Json) => encode(&with_kind(&changed)?, RequestsFormat::Json)?,
                Some(RequestsFormat::Yaml) => {
                    format!(
                        "---\n{}",
                        encode(&with_kind(&changed)?, RequestsFormat::Yaml)?
                    )
                }
            };
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

/// An AccessRequest as JSON with its apiVersion and kind (the API server
/// leaves them out of list items).
fn with_kind(ar: &AccessRequest) -> Result<serde_json::Value, ApprovalsError> {
    let mut v = serde_json::to_value(ar)
        .map_err(|e| ApprovalsError::Usage(format!("could not encode an AccessRequest: {e}")))?;
    v["apiVersion"] = json!(sluice_crds::API_VERSION);
    v["kind"] = json!("AccessRequest");
    Ok(v)
}

fn encode(v: &serde_json::Value, format: RequestsFormat) -> Result<String, ApprovalsError> {
    match format {
        RequestsFormat::Yaml => serde_saphyr::to_string(v)
            .map_err(|e| ApprovalsError::Usage(format!("could not encode YAML: {e}"))),
        _ => serde_json::to_string_pretty(v)
            .map(|s| s + "\n")
            .map_err(|e| ApprovalsError::Usage(format!("could not encode JSON: {e}"))),
    }
}

fn phase_of(ar: &AccessRequest) -> RequestPhase {
    ar.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(RequestPhase::Pending)
}

/// Characters of a statement the `requests` table shows (`kubectl describe ar`
/// and `kubectl get ar NAME -o yaml` show the whole of it).
const COMMAND_WIDTH: usize = 100;

/// Pending first, newest first within a phase.
fn sort(items: &mut [&AccessRequest]) {
    items.sort_by_key(|ar| {
        (
            phase_of(ar) != RequestPhase::Pending,
            std::cmp::Reverse(
                ar.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or_default(),
            ),
        )
    });
}

/// The `requests` table (pure, for tests).
#[cfg(test)]
pub fn table(items: &[AccessRequest], with_namespace: bool, now: Timestamp) -> String {
    table_with(items, with_namespace, false, now)
}

/// The table; `wide` adds the Connection and expiry and keeps the whole statement.
pub fn table_with(
    items: &[AccessRequest],
    with_namespace: bool,
    wide: bool,
    now: Timestamp,
) -> String {
    let mut sorted: Vec<&AccessRequest> = items.iter().collect();
    sort(&mut sorted);
    let mut rows: Vec<Vec<String>> = vec![];
    let mut header = vec![];
    if with_namespace {
        header.push("NAMESPACE".to_string());
    }
    header.extend(
        ["AGE", "NAME", "REQUESTER", "RULE", "COMMAND", "PHASE"]
            .iter()
            .map(|s| s.to_string()),
    );
    if wide {
        header.extend(["CONNECTION", "EXPIRES"].iter().map(|s| s.to_string()));
    }
    rows.push(header);
    for ar in sorted {
        let mut row = vec![];
        if with_namespace {
            row.push(ar.metadata.namespace.clone().unwrap_or_default());
        }
        let age = ar
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| age(now.as_second() - t.0.as_second()))
            .unwrap_or_else(|| "-".into());
        // Approvers decide on the exact statement (literals included) when
        // the AccessRequest carries it; the redacted text otherwise.
        let shown = ar
            .spec
            .command
            .statement
            .as_deref()
            .unwrap_or(&ar.spec.command.text);
        let width = if wide { usize::MAX } else { COMMAND_WIDTH };
        let mut command: String = shown.chars().take(width).collect();
        if command.len() < shown.len() {
            command.push('…');
        }
        row.extend([
            age,
            ar.metadata.name.clone().unwrap_or_default(),
            format!(
                "{}/{}",
                ar.spec.requester.namespace, ar.spec.requester.service_account
            ),
            format!("{}/{}", ar.spec.policy, ar.spec.rule),
            command.replace(['\n', '\t'], " "),
            format!("{:?}", phase_of(ar)),
        ]);
        if wide {
            let expires = ar.spec.expires_at.0.as_second() - now.as_second();
            row.push(ar.spec.connection.clone());
            row.push(if expires > 0 {
                format!("in {}", self::age(expires))
            } else {
                "expired".to_string()
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    if items.is_empty() {
        return out;
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// kubectl-style age: `45s`, `12m`, `3h`, `2d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ar(name: &str, phase: RequestPhase, created: i64) -> AccessRequest {
        let mut ar: AccessRequest = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "connection": "orders-db", "policy": "reporting", "rule": "bulk",
                "requester": {"serviceAccount": "report-job", "namespace": "shop"},
                "command": {"text": "DELETE FROM orders", "fingerprint": "f", "sha256": "a".repeat(64)},
                "approvers": {"groups": ["dba"]},
                "expiresAt": "2030-01-01T00:00:00Z"
            },
            "status": {"phase": format!("{phase:?}")}
        }))
        .unwrap();
        ar.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        ar
    }

    #[test]
    fn pending_requests_come_first_newest_first() {
        let items = vec![
            ar("old-pending", RequestPhase::Pending, 1000),
            ar("approved", RequestPhase::Approved, 2000),
            ar("new-pending", RequestPhase::Pending, 1500),
        ];
        let text = table(&items, false, Timestamp::from_second(2030).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AGE   NAME"), "{text}");
        assert!(lines[0].contains("REQUESTER") && lines[0].ends_with("PHASE"));
        assert!(
            lines[1].contains("new-pending") && lines[1].starts_with("8m"),
            "{text}"
        );
        assert!(lines[2].contains("old-pending"));
        assert!(lines[3].contains("approved") && lines[3].ends_with("Approved"));
        assert!(lines[1].contains("shop/report-job") && lines[1].contains("reporting/bulk"));
        assert!(lines[1].contains("DELETE FROM orders"));
        let all = table(&items, true, Timestamp::from_second(2030).unwrap());
        assert!(all.starts_with("NAMESPACE"));
        assert_eq!(table(&[], false, Timestamp::from_second(0).unwrap()), "");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7300), "2h");
        assert_eq!(age(200_000), "2d");
        assert_eq!(age(-3), "0s");
    }
}
