//! `kubectl sluice tail`: live decisions as they happen, one line each (like
//! `linkerd viz tap`), from the sidecars' audit streams. Each injected pod's
//! `sluice-sidecar` log is followed through the API server (`pods/NAME/log`
//! with `follow=true`, as `kubectl logs -f` reads it; needs `get` on
//! `pods/log`); audit events are told from the sidecar's own log lines by
//! `audit verify`'s recogniser, and every other line is skipped. Pods that
//! appear later are found by a watch on pods and followed too. A stream that
//! ends is re-opened while its pod lives (events already shown are not shown
//! twice: each stream's sequence numbers are remembered), and every end,
//! failure and unreadable audit line is said on stderr, never dropped silently.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, LogParams, WatchEvent, WatchParams};
use sluice_crds::Action;
use sluice_policy::audit::{AuditEvent, AuditKind};

use crate::approvals::{ApprovalsError, ClusterArgs, api_error, connect_with, runtime};
use crate::audit_verify::input::is_audit_event;

/// Written by the webhook on the pods it injected (operator `inject::INJECTED_REVISION_ANNOTATION`).
const INJECTED_REVISION_ANNOTATION: &str = "sluice.dev/injected-revision";
/// The injected container (operator `inject::SIDECAR_CONTAINER_NAME`).
const SIDECAR_CONTAINER: &str = "sluice-sidecar";
/// Longest log line read; a longer one is skipped and reported.
const MAX_LINE: usize = 1024 * 1024;
/// Longest wait before re-opening a log stream.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A decision to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecisionFilter {
    /// Calls that ran.
    Allow,
    /// Calls refused.
    Deny,
    /// Calls held for (or refused pending) a human approval.
    #[value(name = "requireApproval")]
    RequireApproval,
}

impl DecisionFilter {
    fn matches(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Self::Allow, Action::Allow)
                | (Self::Deny, Action::Deny)
                | (Self::RequireApproval, Action::RequireApproval)
        )
    }
}

/// Output formats of `tail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per decision.
    Text,
    /// The audit event, one JSON object per line.
    Json,
}

/// `kubectl sluice tail`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  # Every decision in the current namespace, as it happens
  kubectl sluice tail

  # Refusals anywhere in the cluster
  kubectl sluice tail -A --decision deny

  # One pod's calls through one Connection, as JSON audit events
  kubectl sluice tail -n shop --pod report-7d9f --connection orders-db -o json")]
pub struct TailArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only this pod.
    #[arg(long)]
    pub pod: Option<String>,
    /// Only calls through this Connection.
    #[arg(long)]
    pub connection: Option<String>,
    /// Only these decisions (repeat, or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub decision: Vec<DecisionFilter>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Cluster flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What to show, shared by the followers.
struct Filter {
    connection: Option<String>,
    decisions: Vec<DecisionFilter>,
    output: Format,
    /// When `tail` started: older events are history, not shown.
    started: Timestamp,
}

/// Runs `tail` until interrupted; exit 1 when the pods cannot be listed or watched.
pub fn run(args: &TailArgs) -> Result<ExitCode, ApprovalsError> {
    let started = Timestamp::now();
    runtime()?.block_on(async {
        let (client, namespace) = connect_with(&args.cluster, false).await?;
        let api: Api<Pod> = if args.all_namespaces {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), &namespace)
        };
        let filter = Arc::new(Filter {
            connection: args.connection.clone(),
            decisions: args.decision.clone(),
            output: args.output,
            started,
        });
        let mut lp = ListParams::default();
        if let Some(pod) = &args.pod {
            lp = lp.fields(&format!("metadata.name={pod}"));
        }
        let mut followed: HashSet<String> = HashSet::new();
        let list = api.list(&lp).await.map_err(api_error)?;
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        for pod in &list.items {
            start(&client, pod, true, &filter, &mut followed);
        }
        if followed.is_empty() {
            let place = if args.all_namespaces {
                "the cluster".to_string()
            } else {
                format!("namespace {namespace}")
            };
            match &args.pod {
                Some(p) => {
                    eprintln!("tail: no injected pod {p} in {place} yet; waiting for it to appear")
                }
                None => eprintln!("tail: no injected pods in {place} yet; waiting for some"),
            }
        }
        let mut wp = WatchParams::default().timeout(290);
        if let Some(pod) = &args.pod {
            wp = wp.fields(&format!("metadata.name={pod}"));
        }
        loop {
            let stream = api.watch(&wp, &version).await.map_err(api_error)?;
            futures::pin_mut!(stream);
            while let Some(event) = stream.try_next().await.map_err(api_error)? {
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        if let Some(v) = &pod.metadata.resource_version {
                            version = v.clone();
                        }
                        start(&client, &pod, false, &filter, &mut followed);
                    }
                    // Its follower sees the stream end and the pod gone.
                    WatchEvent::Deleted(pod) => {
                        if let Some(v) = &pod.metadata.resource_version {
                            version = v.clone();
                        }
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Error(e) if e.code == 410 => {
                        // Compacted past our version: re-list, as kubectl does.
                        let list = api.list(&lp).await.map_err(api_error)?;
                        version = list.metadata.resource_version.clone().unwrap_or_default();
                        for pod in &list.items {
                            start(&client, pod, false, &filter, &mut followed);
                        }
                        break;
                    }
                    WatchEvent::Error(e) => return Err(ApprovalsError::Refused(e.message)),
                }
            }
        }
    })
}

/// Follows `pod`'s sidecar log unless it is not injected or already followed.
/// `present` pods were there when `tail` started: only their new lines count.
fn start(
    client: &kube::Client,
    pod: &Pod,
    present: bool,
    filter: &Arc<Filter>,
    followed: &mut HashSet<String>,
) {
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_REVISION_ANNOTATION));
    let (Some(ns), Some(name), Some(uid)) = (
        pod.metadata.namespace.clone(),
        pod.metadata.name.clone(),
        pod.metadata.uid.clone(),
    ) else {
        return;
    };
    if !injected || pod.metadata.deletion_timestamp.is_some() || !followed.insert(uid.clone()) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let follower = Follower {
        api,
        ns,
        name,
        uid,
        present,
        filter: filter.clone(),
        seen: HashMap::new(),
    };
    tokio::spawn(follower.run());
}

/// One pod's sidecar log.
struct Follower {
    api: Api<Pod>,
    ns: String,
    name: String,
    uid: String,
    present: bool,
    filter: Arc<Filter>,
    /// The highest sequence number shown (or filtered out) per audit stream.
    seen: HashMap<String, u64>,
}

impl Follower {
    async fn run(mut self) {
        let mut first = true;
        let mut backoff = Duration::from_millis(500);
        loop {
            let lp = LogParams {
                container: Some(SIDECAR_CONTAINER.into()),
                follow: true,
                // A pod there at start: from then on, as `linkerd viz tap`
                // (the time of each event is checked too, in [`Self::line`]).
                since_time: self.present.then_some(self.filter.started),
                ..LogParams::default()
            };
            match self.api.log_stream(&self.name, &lp).await {
                Ok(stream) => {
                    if first {
                        eprintln!("tail: following pod {}/{}", self.ns, self.name);
                        first = false;
                    }
                    backoff = Duration::from_millis(500);
                    if let Err(e) = self.read(stream).await {
                        eprintln!(
                            "tail: reading the log of pod {}/{}: {e}",
                            self.ns, self.name
                        );
                    }
                }
                Err(e) => eprintln!(
                    "tail: cannot follow the log of pod {}/{}: {}",
                    self.ns,
                    self.name,
                    api_error(e)
                ),
            }
            match self.api.get_opt(&self.name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(self.uid.as_str()) => {
                    eprintln!(
                        "tail: the log stream of pod {}/{} ended; re-opening it",
                        self.ns, self.name
                    );
                }
                Ok(_) => {
                    eprintln!(
                        "tail: pod {}/{} is gone; no longer following it",
                        self.ns, self.name
                    );
                    return;
                }
                Err(e) => eprintln!(
                    "tail: cannot read pod {}/{}: {}; trying again",
                    self.ns,
                    self.name,
                    api_error(e)
                ),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Reads lines until the stream ends; each line is bounded by [`MAX_LINE`].
    async fn read(&mut self, stream: impl futures::AsyncBufRead) -> std::io::Result<()> {
        futures::pin_mut!(stream);
        let mut line: Vec<u8> = Vec::new();
        let mut oversized = false;
        loop {
            let buf = stream.fill_buf().await?;
            if buf.is_empty() {
                return Ok(());
            }
            let (take, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > MAX_LINE {
                oversized = true;
                line.clear();
            } else if !oversized {
                line.extend_from_slice(&buf[..take]);
            }
            stream.as_mut().consume(take);
            if end {
                if oversized {
                    eprintln!(
                        "tail: pod {}/{}: skipped a log line longer than {MAX_LINE} bytes",
                        self.ns, self.name
                    );
                } else {
                    self.line(&String::from_utf8_lossy(&line));
                }
                line.clear();
                oversized = false;
            }
        }
    }

    fn line(&mut self, raw: &str) {
        if !is_audit_event(raw) {
            return;
        }
        let event: AuditEvent = match serde_json::from_str(raw.trim()) {
            Ok(e) => e,
            Err(e) => {
                eprintln!(
                    "tail: pod {}/{}: an audit line could not be read ({e}); kubectl sluice audit verify tells more",
                    self.ns, self.name
                );
                return;
            }
        };
        let last = self.seen.entry(event.stream.clone()).or_insert(0);
        if event.seq <= *last {
            return; // shown before the stream was re-opened
        }
        *last = event.seq;
        let older = event
            .time
            .parse::<Timestamp>()
            .is_ok_and(|t| t < self.filter.started);
        if self.present && older {
            return; // history, read again after a re-open
        }
        if let Some(text) = render(&self.ns, &self.name, &event, &self.filter) {
            println!("{text}");
        }
    }
}

/// The line for a decision event that passes the filter.
fn render(ns: &str, pod: &str, event: &AuditEvent, filter: &Filter) -> Option<String> {
    if !matches!(event.kind, AuditKind::Statement | AuditKind::Denial) {
        return None;
    }
    let decision = event.decision.as_ref()?;
    if !filter.decisions.is_empty() && !filter.decisions.iter().any(|d| d.matches(decision.action))
    {
        return None;
    }
    let connection = event.connection.as_deref().unwrap_or("-");
    if filter
        .connection
        .as_deref()
        .is_some_and(|c| c != connection)
    {
        return None;
    }
    if filter.output == Format::Json {
        return serde_json::to_string(event).ok();
    }
    let identity = event
        .identity
        .as_ref()
        .map(|i| format!("{}/{}", i.namespace, i.service_account))
        .unwrap_or_else(|| "-".into());
    let mut action = decision.action.as_str().to_string();
    if decision.dry_run {
        action.push_str("(dry-run)");
    }
    let rule = match (&decision.policy, &decision.rule) {
        (Some(p), Some(r)) => format!("{p}/{r}"),
        (Some(p), None) => format!("{p}/(default)"),
        (None, _) => "-".into(),
    };
    let command = event
        .command
        .as_ref()
        .map(|c| c.text.replace(['\n', '\r', '\t'], " "))
        .unwrap_or_else(|| "-".into());
    Some(format!(
        "{}  {ns}/{pod}  {connection}  {identity}  {action}  {rule}  {command}",
        event.time
    ))
}
