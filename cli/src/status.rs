//! `kubectl sluice status [POD]`: what each injected pod's sidecar holds
//! (like `istioctl proxy-status`), read from its admin port's read-only,
//! secret-free `/debug/standing` through the API server's `pods/proxy`; the
//! recent denials of its identity come from its AccessPolicies' status.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use sluice_crds::AccessPolicy;

use crate::approvals::{ApprovalsError, ClusterArgs, age, connect_with, runtime};

/// Written by the webhook on the pods it injected (operator `inject::INJECTED_REVISION_ANNOTATION`).
const INJECTED_REVISION_ANNOTATION: &str = "sluice.dev/injected-revision";
/// The injected container (operator `inject::SIDECAR_CONTAINER_NAME`).
const SIDECAR_CONTAINER: &str = "sluice-sidecar";
/// Its admin port's name (operator `inject::ADMIN_PORT_NAME`).
const ADMIN_PORT_NAME: &str = "sluice-admin";
/// The admin port when the pod does not declare it.
const DEFAULT_ADMIN_PORT: i32 = 15020;
/// Recent denials shown per pod.
const MAX_DENIALS: usize = 5;

/// Output formats of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table (one pod: a description).
    Text,
    /// One JSON document.
    Json,
}

/// `kubectl sluice status`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  # Every injected pod of the current namespace: bundle revision, refresh, expiry
  kubectl sluice status

  # Every injected pod of the cluster
  kubectl sluice status -A

  # One pod in detail: Connections, policies, sessions, recent denials
  kubectl sluice status report-7d9f -n shop

  # For a script: exit 1 when a sidecar cannot be read or holds no bundle
  kubectl sluice status -A -o json")]
pub struct StatusArgs {
    /// One pod (default: every injected pod).
    pub pod: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Cluster flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What a sidecar's `/debug/standing` says (the sidecar's `StandingReport`;
/// unknown fields are ignored, so an older or newer sidecar still reads).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Standing {
    /// The sidecar's version.
    pub version: String,
    /// `NAMESPACE/SERVICEACCOUNT`.
    pub identity: Option<String>,
    /// The pod the bundle is for.
    pub pod: Option<String>,
    /// The bundle in force.
    pub bundle: Option<BundleStanding>,
    /// When the operator last answered a poll.
    pub last_refresh: Option<String>,
    /// The last poll's error, or why the bundle was withdrawn.
    pub last_error: Option<String>,
    /// The bundle's Connections.
    pub connections: Vec<ConnectionStanding>,
    /// The bundle's AccessPolicies.
    pub policies: Vec<PolicyStanding>,
    /// Sessions open now.
    pub open_sessions: i64,
    /// Statements refused since start.
    pub statements_refused: u64,
}

/// The bundle in force.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BundleStanding {
    /// Its revision.
    pub revision: String,
    /// Its expiry.
    pub expires_at: String,
    /// When the sidecar received it.
    pub received_at: String,
}

/// One Connection.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectionStanding {
    /// Name.
    pub name: String,
    /// Protocol.
    pub protocol: String,
    /// Loopback port.
    pub port: u16,
    /// Bound by a policy.
    pub bound: bool,
}

/// One AccessPolicy.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyStanding {
    /// `NAMESPACE/NAME`.
    pub name: String,
    /// Mode.
    pub mode: String,
    /// Its Connections.
    pub connections: Vec<String>,
}

/// A denial of this pod's identity recorded in an AccessPolicy's status.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    /// When.
    pub time: String,
    /// The policy.
    pub policy: String,
    /// The Connection.
    pub connection: String,
    /// The rule (empty: the default action).
    pub rule: String,
    /// The command, literals redacted.
    pub command: String,
}

/// One pod's row.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The revision that injected it.
    pub injected_revision: String,
    /// What its sidecar holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standing: Option<Standing>,
    /// Recent denials of its identity.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_denials: Vec<Denial>,
    /// Why the sidecar could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PodStatus {
    fn healthy(&self) -> bool {
        self.error.is_none() && self.standing.as_ref().is_some_and(|s| s.bundle.is_some())
    }
}

/// Runs `status`: exit 0 when every sidecar was read and holds a bundle, 1 otherwise.
pub fn run(args: &StatusArgs) -> Result<ExitCode, ApprovalsError> {
    let rows = runtime()?.block_on(async {
        let (client, namespace) = connect_with(&args.cluster, false).await?;
        let api: Api<Pod> = if args.all_namespaces && args.pod.is_none() {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), &namespace)
        };
        let pods = match &args.pod {
            Some(name) => {
                let pod = api
                    .get_opt(name)
                    .await
                    .map_err(crate::approvals::api_error)?
                    .ok_or_else(|| {
                        ApprovalsError::Usage(format!(
                            "pod {namespace}/{name} not found; list the injected pods with kubectl sluice status -n {namespace}"
                        ))
                    })?;
                if revision_of(&pod).is_none() {
                    return Err(ApprovalsError::Usage(format!(
                        "pod {namespace}/{name} has no Sluice sidecar (no {INJECTED_REVISION_ANNOTATION}); kubectl sluice check says why"
                    )));
                }
                vec![pod]
            }
            None => api
                .list(&ListParams::default())
                .await
                .map_err(crate::approvals::api_error)?
                .items
                .into_iter()
                .filter(|p| revision_of(p).is_some())
                .collect(),
        };
        let mut rows = Vec::with_capacity(pods.len());
        for pod in &pods {
            rows.push(pod_status(&client, pod).await);
        }
        if args.pod.is_none() && rows.is_empty() {
            eprintln!(
                "No injected pods found{}.",
                if args.all_namespaces {
                    String::new()
                } else {
                    format!(" in {namespace} namespace")
                }
            );
        }
        Ok::<_, ApprovalsError>(rows)
    })?;
    let now = Timestamp::now();
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows)
                .map_err(|e| ApprovalsError::Usage(format!("could not encode: {e}")))?
        ),
        Format::Text if args.pod.is_some() => {
            for row in &rows {
                print!("{}", describe(row, now));
            }
        }
        Format::Text => print!("{}", table(&rows, now)),
    }
    Ok(if rows.iter().all(PodStatus::healthy) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn revision_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(INJECTED_REVISION_ANNOTATION)
        .cloned()
}

/// The admin port the sidecar container declares (native sidecar or not).
fn admin_port(pod: &Pod) -> i32 {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .filter(|c| c.name == SIDECAR_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .map(|p| p.container_port)
        .unwrap_or(DEFAULT_ADMIN_PORT)
}

async fn pod_status(client: &Client, pod: &Pod) -> PodStatus {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut row = PodStatus {
        namespace: namespace.clone(),
        pod: name.clone(),
        injected_revision: revision_of(pod).unwrap_or_default(),
        standing: None,
        recent_denials: vec![],
        error: None,
    };
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods/{name}:{}/proxy/debug/standing",
        admin_port(pod)
    );
    let answer = match http::Request::get(&path).body(Vec::new()) {
        Ok(request) => client.request_text(request).await,
        Err(e) => {
            row.error = Some(format!("could not build the request: {e}"));
            return row;
        }
    };
    let standing: Standing = match answer {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                row.error = Some(format!(
                    "the sidecar's /debug/standing is not what this kubectl-sluice reads ({e}); is the sidecar older than {}?",
                    env!("CARGO_PKG_VERSION")
                ));
                return row;
            }
        },
        Err(kube::Error::Api(s)) => {
            row.error = Some(format!(
                "could not read the sidecar through pods/proxy: {}{}",
                s.message,
                if s.code == 403 {
                    " (you need get on pods/proxy)"
                } else {
                    ""
                }
            ));
            return row;
        }
        Err(e) => {
            row.error = Some(format!(
                "could not read the sidecar through pods/proxy: {e}"
            ));
            return row;
        }
    };
    row.recent_denials = denials(client, &standing).await;
    row.standing = Some(standing);
    row
}

/// The recent denials of the sidecar's identity on its Connections, newest first.
async fn denials(client: &Client, standing: &Standing) -> Vec<Denial> {
    let Some(identity) = &standing.identity else {
        return vec![];
    };
    let subject = format!("serviceaccount:{identity}");
    let mut out = vec![];
    for p in &standing.policies {
        let Some((ns, name)) = p.name.split_once('/') else {
            continue;
        };
        let api: Api<AccessPolicy> = Api::namespaced(client.clone(), ns);
        // A policy we may not read shows no denials; the rest of the row stands.
        let Ok(Some(policy)) = api.get_opt(name).await else {
            continue;
        };
        for d in policy.status.iter().flat_map(|s| s.recent_denials.iter()) {
            if d.subject == subject && standing.connections.iter().any(|c| c.name == d.connection) {
                out.push(Denial {
                    time: d.time.0.to_string(),
                    policy: p.name.clone(),
                    connection: d.connection.clone(),
                    rule: d.rule.clone(),
                    command: d.command.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| b.time.cmp(&a.time));
    out.truncate(MAX_DENIALS);
    out
}

/// `12s ago` / `in 14m` from an RFC 3339 time.
fn relative(time: &str, now: Timestamp) -> String {
    match time.parse::<Timestamp>() {
        Ok(t) => {
            let d = now.as_second() - t.as_second();
            if d >= 0 {
                format!("{} ago", age(d))
            } else {
                format!("in {}", age(-d))
            }
        }
        Err(_) => time.to_string(),
    }
}

/// The table of every pod.
pub fn table(rows: &[PodStatus], now: Timestamp) -> String {
    let mut lines: Vec<Vec<String>> = vec![
        [
            "NAMESPACE",
            "POD",
            "BUNDLE",
            "REFRESHED",
            "EXPIRES",
            "CONNECTIONS",
            "POLICIES",
            "SESSIONS",
            "REFUSED",
            "ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for row in rows {
        let mut line = vec![row.namespace.clone(), row.pod.clone()];
        match &row.standing {
            Some(s) => {
                let (revision, expires) = match &s.bundle {
                    Some(b) => (b.revision.clone(), relative(&b.expires_at, now)),
                    None => ("none".to_string(), "-".to_string()),
                };
                line.extend([
                    revision,
                    s.last_refresh
                        .as_deref()
                        .map(|t| relative(t, now))
                        .unwrap_or_else(|| "never".into()),
                    expires,
                    join_or_dash(s.connections.iter().map(|c| c.name.clone())),
                    join_or_dash(s.policies.iter().map(|p| p.name.clone())),
                    s.open_sessions.to_string(),
                    s.statements_refused.to_string(),
                    s.last_error.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            None => {
                line.extend(
                    ["-", "-", "-", "-", "-", "-", "-"]
                        .iter()
                        .map(|s| s.to_string()),
                );
                line.push(row.error.clone().unwrap_or_default());
            }
        }
        lines.push(line);
    }
    if rows.is_empty() {
        return String::new();
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn join_or_dash(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(",")
    }
}

/// One pod in detail.
pub fn describe(row: &PodStatus, now: Timestamp) -> String {
    let mut out = format!("Pod:           {}/{}\n", row.namespace, row.pod);
    out.push_str(&format!("Injected by:   {}\n", row.injected_revision));
    let Some(s) = &row.standing else {
        out.push_str(&format!(
            "Error:         {}\n",
            row.error.as_deref().unwrap_or("unknown")
        ));
        return out;
    };
    out.push_str(&format!("Sidecar:       {}\n", s.version));
    out.push_str(&format!(
        "Identity:      {}\n",
        s.identity.as_deref().unwrap_or("-")
    ));
    match &s.bundle {
        Some(b) => out.push_str(&format!(
            "Bundle:        revision {}, received {}, expires {} ({})\n",
            b.revision,
            b.received_at,
            b.expires_at,
            relative(&b.expires_at, now)
        )),
        None => out.push_str("Bundle:        none in force: new sessions are refused\n"),
    }
    out.push_str(&format!(
        "Last refresh:  {}\n",
        s.last_refresh
            .as_deref()
            .map(|t| format!("{t} ({})", relative(t, now)))
            .unwrap_or_else(|| "never".into())
    ));
    if let Some(e) = &s.last_error {
        out.push_str(&format!("Last error:    {e}\n"));
    }
    out.push_str("Connections:\n");
    for c in &s.connections {
        out.push_str(&format!(
            "  {} ({}, localhost:{}){}\n",
            c.name,
            c.protocol,
            c.port,
            if c.bound {
                ""
            } else {
                ": no policy binds this identity, everything is refused"
            }
        ));
    }
    out.push_str("Policies:\n");
    for p in &s.policies {
        out.push_str(&format!(
            "  {} ({}; {})\n",
            p.name,
            p.mode,
            p.connections.join(", ")
        ));
    }
    out.push_str(&format!("Sessions:      {} open\n", s.open_sessions));
    out.push_str(&format!(
        "Refused:       {} statements since the sidecar started\n",
        s.statements_refused
    ));
    if !row.recent_denials.is_empty() {
        out.push_str("Recent denials:\n");
        for d in &row.recent_denials {
            let rule = if d.rule.is_empty() {
                "default action"
            } else {
                d.rule.as_str()
            };
            out.push_str(&format!(
                "  {} {} {} ({}): {}\n",
                d.time, d.connection, rule, d.policy, d.command
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(standing: Option<Standing>) -> PodStatus {
        PodStatus {
            namespace: "shop".into(),
            pod: "report-0".into(),
            injected_revision: "0.1.0".into(),
            standing,
            recent_denials: vec![],
            error: None,
        }
    }

    #[test]
    fn the_table_shows_the_bundle_relative_to_now() {
        let now: Timestamp = "2030-01-01T00:10:00Z".parse().unwrap();
        let standing = Standing {
            version: "0.1.0".into(),
            identity: Some("shop/report-job".into()),
            bundle: Some(BundleStanding {
                revision: "r7".into(),
                expires_at: "2030-01-01T00:25:00Z".into(),
                received_at: "2030-01-01T00:09:00Z".into(),
            }),
            last_refresh: Some("2030-01-01T00:09:48Z".into()),
            connections: vec![ConnectionStanding {
                name: "orders-db".into(),
                protocol: "postgres".into(),
                port: 15432,
                bound: true,
            }],
            policies: vec![PolicyStanding {
                name: "shop/reporting".into(),
                mode: "enforce".into(),
                connections: vec!["orders-db".into()],
            }],
            open_sessions: 2,
            statements_refused: 3,
            ..Default::default()
        };
        let text = table(&[row(Some(standing.clone()))], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   POD"), "{text}");
        for cell in [
            "r7",
            "12s ago",
            "in 15m",
            "orders-db",
            "shop/reporting",
            "2",
            "3",
        ] {
            assert!(lines[1].contains(cell), "{cell} in {text}");
        }
        assert!(row(Some(standing)).healthy());
        let mut broken = row(None);
        broken.error = Some("connection refused".into());
        assert!(!broken.healthy());
        assert!(table(&[broken.clone()], now).contains("connection refused"));
        assert!(describe(&broken, now).contains("Error:         connection refused"));
    }
}
