//! The fleet benchmark (#25, `make bench-fleet`): N simulated sidecars against
//! the real `sluice-operator` binary (one replica, or FLEET_REPLICAS) on the
//! test control plane, over loopback. A `[[bench]]` target without the test
//! harness: `cargo bench -p sluice-operator --bench fleet` runs it;
//! `cargo test --benches` only builds it.
//!
//! Each simulated sidecar is an injected pod of `shop/report-job` with its own
//! pod-bound TokenRequest token. It talks to the gateway with the sidecar's own
//! client (`sluice_sidecar::bundle_client::GatewayClient`, one per sidecar as
//! in a real pod, so connections are kept and used again as the sidecar's
//! are: one HTTP/2 connection carrying the long-poll, the uploads and the
//! token exchanges when the operator offers `h2`, else HTTP/1.1 ones): it exchanges its token and renews it when the sidecar would
//! (`sluice_sidecar::run::token_refresh_after`), long-polls its bundle, and in
//! the audit phase uploads hash-chained audit batches at a set rate, sending a
//! batch again when it was not taken (as the sidecar's uploader does). An
//! answer with `Retry-After` (429: the operator is over its in-flight bound or
//! the API server throttles it) is honoured as the sidecar does. With several
//! replicas, sidecar i talks to replica i mod R (as a Service spreads them).
//!
//! Phases: all sidecars start at once (time until all hold a first bundle);
//! unrelated changes (Secrets no Connection uses, in the sidecars' namespace
//! and another), counting the operators' API requests and long-poll wake-ups
//! they cause; a policy edit (time until each sidecar holds the new bundle);
//! the audit phase (operator CPU per accepted event, uploads timed out or
//! refused for an expired token, API requests per poll and upload); then the
//! policy's counters are checked against what the operators accepted. The
//! operators run as the chart's ServiceAccount under the chart's RBAC; the
//! control plane answers 429 beyond kube's default in-flight limits.
//!
//! A benchmark, not a test: it asserts only that the run completed. Knobs
//! (environment): FLEET_SIDECARS (100), FLEET_REPLICAS (1),
//! FLEET_WAIT_SECONDS (long-poll wait, 10), FLEET_TOKEN_TTL_SECONDS (60),
//! FLEET_AUDIT_SECONDS (20), FLEET_UPLOAD_EVERY_MS (2000),
//! FLEET_EVENTS_PER_UPLOAD (6), FLEET_UNRELATED_CHANGES (10),
//! FLEET_OPERATOR_BIN: the operator executable to measure (default: the one
//! cargo built with the bench, e.g. a release build while the harness and
//! the test control plane stay a debug build), and FLEET_AUDIT_HOOK: a shell
//! command run with `start` and then `stop` (and the operators' process IDs
//! in FLEET_OPERATOR_PIDS) around the audit phase, e.g. to turn a profiler's
//! collection on and off (`callgrind_control -i on`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_crds::AccessPolicy;
use sluice_policy::audit::{AuditChain, AuditEventDraft, AuditKind};
use sluice_policy::wire::{AuditBatch, AuditHead};
use sluice_sidecar::bundle_client::{BundlePoll, GatewayClient, GatewayError};
use support::OperatorBinary;
use tokio::sync::watch;

const OPERATOR_USER: &str = "system:serviceaccount:sluice-system:sluice-operator";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Knobs {
    sidecars: usize,
    replicas: usize,
    wait: Duration,
    token_ttl: u64,
    audit: Duration,
    upload_every: Duration,
    events_per_upload: usize,
    unrelated_changes: usize,
}

/// What the simulated sidecars saw.
#[derive(Default)]
struct Tally {
    /// Since the start, per sidecar.
    first_bundle: Mutex<Vec<Duration>>,
    /// Since the policy edit, per sidecar.
    new_bundle: Mutex<Vec<Duration>>,
    /// How much later than asked each 304 came.
    late: Mutex<Vec<Duration>>,
    /// Polls answered (200 or 304).
    polls: AtomicU64,
    /// Answers asking to come back later (429/503 with Retry-After), honoured.
    told_to_wait: AtomicU64,
    polls_timed_out: AtomicU64,
    polls_failed: AtomicU64,
    exchanges: AtomicU64,
    exchanges_failed: AtomicU64,
    uploads: AtomicU64,
    uploads_ok: AtomicU64,
    uploads_timed_out: AtomicU64,
    uploads_expired: AtomicU64,
    uploads_refused: AtomicU64,
    uploads_failed: AtomicU64,
    events_accepted: AtomicU64,
    /// Expected policy counters from accepted batches: allowed, denied, masked.
    allowed: AtomicU64,
    denied: AtomicU64,
    masked: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// A batch of `sent` events with policy `counts` (allowed, denied,
    /// masked) was answered with `accepted` taken: all of them count.
    fn accepted(&self, accepted: u64, sent: u64, counts: [u64; 3]) {
        self.events_accepted.fetch_add(accepted, Ordering::Relaxed);
        if accepted == sent {
            self.allowed.fetch_add(counts[0], Ordering::Relaxed);
            self.denied.fetch_add(counts[1], Ordering::Relaxed);
            self.masked.fetch_add(counts[2], Ordering::Relaxed);
        }
    }

    /// Waits as the sidecar does when the operator asked for it
    /// (`Retry-After`, with jitter); whether it asked.
    async fn honour(&self, e: &GatewayError) -> bool {
        let Some(asked) = e.retry_after() else {
            return false;
        };
        self.told_to_wait.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(sluice_sidecar::bundle_client::honoured(asked)).await;
        true
    }

    fn error(&self, what: &str, e: &GatewayError) {
        let key = match e {
            GatewayError::Refused { status, reason, .. } => format!("{what}: {status} {reason}"),
            GatewayError::Timeout { .. } => format!("{what}: timeout"),
            GatewayError::Transport { why, .. } => {
                format!(
                    "{what}: transport ({})",
                    why.split(':').next().unwrap_or("")
                )
            }
            other => format!("{what}: {other}"),
        };
        *self.errors.lock().unwrap().entry(key).or_default() += 1;
    }
}

/// The phase signals every simulated sidecar follows.
#[derive(Clone)]
struct Phases {
    /// When the policy was edited.
    edit: watch::Receiver<Option<Instant>>,
    /// Audit uploads on.
    audit: watch::Receiver<bool>,
}

/// The gateway token of one sidecar, exchanged when due.
struct Token {
    subject: String,
    held: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Token {
    async fn get(&self, client: &GatewayClient, tally: &Tally) -> Option<(String, Instant)> {
        let mut held = self.held.lock().await;
        if let Some((token, refresh_at)) = held.as_ref()
            && Instant::now() < *refresh_at
        {
            return Some((token.clone(), *refresh_at));
        }
        tally.exchanges.fetch_add(1, Ordering::Relaxed);
        match client.exchange(&self.subject).await {
            Ok(answer) => {
                let expires: k8s_openapi::jiff::Timestamp = answer.expires_at.parse().ok()?;
                let lifetime = Duration::from_secs(
                    u64::try_from(
                        expires.as_second() - k8s_openapi::jiff::Timestamp::now().as_second(),
                    )
                    .unwrap_or(0),
                );
                let refresh_at =
                    Instant::now() + sluice_sidecar::run::token_refresh_after(lifetime);
                *held = Some((answer.token.clone(), refresh_at));
                Some((answer.token, refresh_at))
            }
            Err(e) => {
                tally.exchanges_failed.fetch_add(1, Ordering::Relaxed);
                tally.error("exchange", &e);
                tally.honour(&e).await;
                None
            }
        }
    }

    async fn void(&self) {
        *self.held.lock().await = None;
    }
}

async fn poller(
    client: GatewayClient,
    token: Arc<Token>,
    knobs: Knobs,
    tally: Arc<Tally>,
    start: Instant,
    phases: Phases,
) {
    let mut revision: Option<String> = None;
    let mut saw_edit = false;
    loop {
        let Some((bearer, refresh_at)) = token.get(&client, &tally).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // As the sidecar: wait no longer than until the token is due.
        let wait = knobs
            .wait
            .min(refresh_at.saturating_duration_since(Instant::now()))
            .max(Duration::from_secs(1));
        let wait = Duration::from_secs(wait.as_secs());
        let asked = Instant::now();
        let polled = client.bundle(&bearer, revision.as_deref(), wait).await;
        if polled.is_ok() {
            tally.polls.fetch_add(1, Ordering::Relaxed);
        }
        match polled {
            Ok(BundlePoll::Changed(bundle)) => {
                let now = Instant::now();
                if revision.is_none() {
                    tally.first_bundle.lock().unwrap().push(now - start);
                } else if let Some(edited) = *phases.edit.borrow()
                    && !saw_edit
                {
                    saw_edit = true;
                    tally.new_bundle.lock().unwrap().push(now - edited);
                }
                revision = Some(bundle.revision);
            }
            Ok(BundlePoll::Unchanged(_)) => {
                if revision.is_some() {
                    tally
                        .late
                        .lock()
                        .unwrap()
                        .push(asked.elapsed().saturating_sub(wait));
                }
            }
            Err(e) => {
                tally.error("bundle", &e);
                if tally.honour(&e).await {
                    continue;
                }
                match e {
                    GatewayError::Timeout { .. } => {
                        tally.polls_timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    e if e.is_unauthorized() => token.void().await,
                    _ => {
                        tally.polls_failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

fn draft(kind: AuditKind, decision: Option<Value>, outcome: Option<Value>) -> AuditEventDraft {
    let mut draft = AuditEventDraft::new("2026-01-01T00:00:00Z", kind);
    draft.session = Some("s1".into());
    draft.identity = Some(
        serde_json::from_value(json!({"namespace": "shop", "serviceAccount": "report-job"}))
            .unwrap(),
    );
    draft.connection = Some("orders-db".into());
    draft.command = Some(
        serde_json::from_value(
            json!({"text": "SELECT email FROM customers", "fingerprint": "f1", "kind": "select"}),
        )
        .unwrap(),
    );
    draft.decision = decision.map(|d| serde_json::from_value(d).unwrap());
    draft.outcome = outcome.map(|o| serde_json::from_value(o).unwrap());
    draft
}

/// A sidecar's traffic, in thirds: statements allowed, results with two masked
/// values, denials.
fn drafts(n: usize) -> (Vec<AuditEventDraft>, [u64; 3]) {
    let mut counts = [0u64; 3];
    let drafts = (0..n)
        .map(|i| match i % 3 {
            0 => {
                counts[0] += 1;
                draft(
                    AuditKind::Statement,
                    Some(json!({"action": "allow", "policy": "reporting", "dryRun": false})),
                    None,
                )
            }
            1 => {
                counts[2] += 2;
                draft(AuditKind::Result, None, Some(json!({"masked": 2, "rows": 3})))
            }
            _ => {
                counts[1] += 1;
                draft(
                    AuditKind::Denial,
                    Some(json!({"action": "deny", "policy": "reporting", "rule": "no-schema-changes", "dryRun": false})),
                    None,
                )
            }
        })
        .collect();
    (drafts, counts)
}

#[allow(clippy::too_many_arguments)]
async fn uploader(
    index: usize,
    pod: String,
    client: GatewayClient,
    token: Arc<Token>,
    knobs: Knobs,
    tally: Arc<Tally>,
    mut phases: Phases,
) {
    let stream = format!(
        "{}boot-1",
        sluice_policy::wire::stream_prefix("shop", "report-job", &pod)
    );
    let mut chain = AuditChain::new(stream.clone());
    phases.audit.wait_for(|on| *on).await.unwrap();
    // Spread over the interval, as sidecars started at different times are.
    let phase = knobs
        .upload_every
        .mul_f64(index as f64 / knobs.sidecars.max(1) as f64);
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(knobs.upload_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<(Vec<u8>, [u64; 3], u64)> = None;
    while *phases.audit.borrow() {
        tick.tick().await;
        if !*phases.audit.borrow() {
            break;
        }
        let (body, counts, n) = match pending.take() {
            Some(again) => again,
            None => {
                let (drafts, counts) = drafts(knobs.events_per_upload);
                let events: Vec<_> = drafts
                    .into_iter()
                    .map(|d| chain.append(d).unwrap())
                    .collect();
                let head = AuditHead {
                    connection: "orders-db".into(),
                    head: chain.head(),
                };
                let n = events.len() as u64;
                let body = serde_json::to_vec(&AuditBatch {
                    events,
                    heads: vec![head],
                })
                .unwrap();
                (body, counts, n)
            }
        };
        let Some((bearer, _)) = token.get(&client, &tally).await else {
            pending = Some((body, counts, n));
            continue;
        };
        tally.uploads.fetch_add(1, Ordering::Relaxed);
        match client.audit(&bearer, body.clone()).await {
            Ok(receipt) => {
                tally.uploads_ok.fetch_add(1, Ordering::Relaxed);
                tally.accepted(receipt.accepted, n, counts);
            }
            Err(e) => {
                tally.error("audit", &e);
                match &e {
                    GatewayError::Timeout { .. } => {
                        tally.uploads_timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    GatewayError::Refused { reason, .. } if reason == "Expired" => {
                        tally.uploads_expired.fetch_add(1, Ordering::Relaxed);
                        token.void().await;
                    }
                    GatewayError::Refused { .. } => {
                        tally.uploads_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        tally.uploads_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tally.honour(&e).await;
                pending = Some((body, counts, n));
            }
        }
    }
    // A batch the operator may have taken (its answer timed out) is settled
    // before the counters are compared: sent again until it is answered.
    for _ in 0..10 {
        let Some((body, counts, n)) = pending.take() else {
            break;
        };
        let Some((bearer, _)) = token.get(&client, &tally).await else {
            pending = Some((body, counts, n));
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match client.audit(&bearer, body.clone()).await {
            Ok(receipt) => {
                tally.accepted(receipt.accepted, n, counts);
            }
            Err(e) => {
                if !tally.honour(&e).await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                pending = Some((body, counts, n));
            }
        }
    }
}

/// (utime + stime in clock ticks, VmHWM in KiB) of a process.
fn cpu_and_peak(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks, hwm)
}

fn ticks_per_second() -> u64 {
    // Linux's USER_HZ; getconf would say the same on every kernel this runs on.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The operator's counter `name` from /metrics.
async fn metric(addr: std::net::SocketAddr, ca: &str, name: &str) -> f64 {
    let (_, _, body) = support::call(addr, ca, "GET", "/metrics", &[], None).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs FLEET_AUDIT_HOOK (if set) with `phase` as its argument and the
/// operators' process IDs in FLEET_OPERATOR_PIDS, and waits for it.
fn audit_hook(operators: &Operators, phase: &str) {
    let Some(hook) = std::env::var_os("FLEET_AUDIT_HOOK") else {
        return;
    };
    let pids: Vec<String> = operators
        .replicas
        .iter()
        .map(|r| r.child.0.id().to_string())
        .collect();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} \"$0\"", hook.to_string_lossy()))
        .arg(phase)
        .env("FLEET_OPERATOR_PIDS", pids.join(" "))
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        println!("details: FLEET_AUDIT_HOOK {phase} did not succeed: {status:?}");
    }
}

/// Waits until `done`, at most `limit`; whether it happened.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // there is nothing to measure (the build is the check).
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet bench: built; run it with `make bench-fleet` (cargo bench)");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(fleet());
}

/// The operator replicas of a run.
struct Operators {
    replicas: Vec<OperatorBinary>,
    ca: String,
    log_dir: tempfile::TempDir,
}

impl Operators {
    /// (CPU seconds summed over the replicas, peak RSS of each in KiB).
    fn cpu_and_peaks(&self) -> (f64, Vec<u64>) {
        let mut ticks = 0;
        let mut peaks = Vec::new();
        for r in &self.replicas {
            let (t, peak) = cpu_and_peak(r.child.0.id());
            ticks += t;
            peaks.push(peak);
        }
        (ticks as f64 / ticks_per_second() as f64, peaks)
    }

    /// The counter `name` summed over the replicas.
    async fn metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for r in &self.replicas {
            sum += metric(r.addr, &self.ca, name).await;
        }
        sum
    }
}

/// The operator binaries, as the chart's ServiceAccount under the chart's RBAC.
async fn start_operators(
    cluster: &sluice_e2e::TestCluster,
    client: &kube::Client,
    knobs: &Knobs,
) -> Operators {
    drop(support::chart_operator_client(cluster, client).await);
    let operator_token = sluice_e2e::harness::service_account_token(
        client,
        ("sluice-system", "sluice-operator"),
        None,
        sluice_e2e::apiserver::API_AUDIENCE,
        3600,
    )
    .await;
    let log_dir = tempfile::tempdir().unwrap();
    let mut kubeconfig: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(cluster.kubeconfig_path()).unwrap())
            .unwrap();
    for user in kubeconfig["users"].as_array_mut().unwrap() {
        if user["name"] == "admin" {
            user["user"]["token"] = json!(operator_token);
        }
    }
    let operator_kubeconfig = log_dir.path().join("operator-kubeconfig");
    std::fs::write(&operator_kubeconfig, kubeconfig.to_string()).unwrap();
    let ttl = format!("--token-ttl-seconds={}", knobs.token_ttl);
    // One gateway URL for every replica, as behind a Service: it is the
    // tokens' issuer and what the injected sidecars are given (a replica
    // checks a sidecar against it). The simulated sidecars reach each
    // replica at its own address.
    let service = format!(
        "--gateway-url=https://127.0.0.1:{}",
        sluice_e2e::free_port().unwrap()
    );
    let replicas: Vec<OperatorBinary> = (0..knobs.replicas)
        .map(|i| {
            let identity = format!("--identity=fleet-operator-{i}");
            let log =
                std::fs::File::create(log_dir.path().join(format!("operator-{i}.log"))).unwrap();
            let args = [
                ttl.as_str(),
                "--audit-flush-seconds=5",
                identity.as_str(),
                service.as_str(),
            ];
            let env = [("SLUICE_LOG", "warn")];
            match std::env::var_os("FLEET_OPERATOR_BIN") {
                Some(binary) => OperatorBinary::start_binary(
                    std::path::Path::new(&binary),
                    &operator_kubeconfig,
                    &args,
                    &env,
                    log.into(),
                ),
                None => OperatorBinary::start(&operator_kubeconfig, &args, &env, log.into()),
            }
        })
        .collect();
    let mut ca = String::new();
    for r in &replicas {
        ca = r.ready(client, Duration::from_secs(120)).await;
    }
    Operators {
        replicas,
        ca,
        log_dir,
    }
}

/// The service account, an unrelated Secret, and N injected pods (through
/// the webhook) with their pod-bound `sluice.dev` tokens.
async fn create_pods(client: &kube::Client, n: usize) -> Vec<(String, String)> {
    Api::<ServiceAccount>::namespaced(client.clone(), "shop")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "report-job"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), "shop")
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "unrelated"}, "stringData": {"k": "0"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                let name = format!("sidecar-{i}");
                let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
                let pod = pods
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({
                            "metadata": {"name": name, "annotations": {"sluice.dev/inject": "true"}},
                            "spec": {"serviceAccountName": "report-job",
                                "containers": [{"name": "app", "image": "example/report:1"}]}
                        }))
                        .unwrap(),
                    )
                    .await
                    .unwrap();
                let token = sluice_e2e::harness::service_account_token(
                    &client,
                    ("shop", "report-job"),
                    Some(&pod),
                    "sluice.dev",
                    3600,
                )
                .await;
                (name, token)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Unrelated changes: Secrets no Connection uses, in `shop` and elsewhere.
async fn unrelated_changes(client: &kube::Client, count: usize) {
    for i in 0..count {
        if i % 2 == 0 {
            Api::<Secret>::namespaced(client.clone(), "elsewhere")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(
                        json!({"metadata": {"name": format!("s{i}")}, "stringData": {"k": "v"}}),
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
        } else {
            Api::<Secret>::namespaced(client.clone(), "shop")
                .patch(
                    "unrelated",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"k": i.to_string()}})),
                )
                .await
                .unwrap();
        }
    }
}

/// Waits (60 s at most) until the policy's counters are `want`; what they are.
async fn counters_when(policies: &Api<AccessPolicy>, want: (u64, u64, u64)) -> (u64, u64, u64) {
    let counters = |p: &AccessPolicy| {
        let v = serde_json::to_value(p).unwrap();
        let c = &v["status"]["counters"];
        (
            c["allowed"].as_u64().unwrap_or(0),
            c["denied"].as_u64().unwrap_or(0),
            c["masked"].as_u64().unwrap_or(0),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = counters(&policies.get("reporting").await.unwrap());
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a run measured, for the table.
struct Measured {
    setup: Duration,
    all_first: Option<Duration>,
    edited_all: bool,
    requests_first: u64,
    requests_per_change: f64,
    wakeups_per_change: f64,
    audit_took: Duration,
    cpu: f64,
    peaks_kib: Vec<u64>,
    requests_audit: u64,
    polls_and_uploads_audit: u64,
    holder_reads_audit: f64,
    /// TLS connections the sidecars opened: in all, and in the audit phase.
    connections: (u64, u64),
    /// Bundles the operators built (`sluice_gateway_bundle_builds_total`).
    bundle_builds: f64,
    want: (u64, u64, u64),
    got: (u64, u64, u64),
}

async fn fleet() {
    let knobs = Knobs {
        sidecars: knob("FLEET_SIDECARS", 100) as usize,
        replicas: knob("FLEET_REPLICAS", 1).max(1) as usize,
        wait: Duration::from_secs(knob("FLEET_WAIT_SECONDS", 10)),
        token_ttl: knob("FLEET_TOKEN_TTL_SECONDS", 60),
        audit: Duration::from_secs(knob("FLEET_AUDIT_SECONDS", 20)),
        upload_every: Duration::from_millis(knob("FLEET_UPLOAD_EVERY_MS", 2000)),
        events_per_upload: knob("FLEET_EVENTS_PER_UPLOAD", 6) as usize,
        unrelated_changes: knob("FLEET_UNRELATED_CHANGES", 10) as usize,
    };
    let n = knobs.sidecars;
    let setup_started = Instant::now();
    let (cluster, client) =
        support::cluster_with_crds(sluice_e2e::Options::default().rbac(true)).await;
    support::apply_quickstart(
        &client,
        &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
    )
    .await;
    support::apply_yaml(
        &client,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: elsewhere}\n",
    )
    .await;
    let operators = start_operators(&cluster, &client, &knobs).await;
    let subjects = create_pods(&client, n).await;
    let setup = setup_started.elapsed();

    // All sidecars at once, spread over the replicas.
    let tally = Arc::new(Tally::default());
    let (edit_tx, edit) = watch::channel(None);
    let (audit_tx, audit) = watch::channel(false);
    let phases = Phases { edit, audit };
    // One client per sidecar, as each pod has its own (its kept connections
    // are its own); the poller and the uploader share it as the sidecar's do.
    let mut gateways: Vec<GatewayClient> = Vec::with_capacity(n);
    let requests_before_start = cluster.requests_of(OPERATOR_USER);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut uploaders = tokio::task::JoinSet::new();
    for (i, (pod, subject)) in subjects.into_iter().enumerate() {
        let replica = &operators.replicas[i % operators.replicas.len()];
        let gateway = GatewayClient::new(&replica.url, &operators.ca).unwrap();
        gateways.push(gateway.clone());
        let token = Arc::new(Token {
            subject,
            held: tokio::sync::Mutex::new(None),
        });
        tasks.spawn(poller(
            gateway.clone(),
            token.clone(),
            knobs,
            tally.clone(),
            start,
            phases.clone(),
        ));
        uploaders.spawn(uploader(
            i,
            pod,
            gateway,
            token,
            knobs,
            tally.clone(),
            phases.clone(),
        ));
    }
    let all_hold = until(Duration::from_secs(300), || {
        tally.first_bundle.lock().unwrap().len() == n
    })
    .await;
    let all_first = all_hold.then(|| start.elapsed());
    let requests_first = cluster.requests_of(OPERATOR_USER) - requests_before_start;

    // Unrelated changes: Secrets no Connection uses.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wakeups_name = "sluice_gateway_bundle_wakeups_total";
    let wakeups_before = operators.metric(wakeups_name).await;
    let requests_before = cluster.requests_of(OPERATOR_USER);
    unrelated_changes(&client, knobs.unrelated_changes).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let changes = knobs.unrelated_changes.max(1) as f64;
    let requests_per_change =
        (cluster.requests_of(OPERATOR_USER) - requests_before) as f64 / changes;
    let wakeups_per_change = (operators.metric(wakeups_name).await - wakeups_before) / changes;

    // A policy edit every bundle depends on.
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), "shop");
    edit_tx.send_replace(Some(Instant::now()));
    policies
        .patch(
            "reporting",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"limits": {"statementsPerSecond": 201}}})),
        )
        .await
        .unwrap();
    let edited_all = until(Duration::from_secs(300), || {
        tally.new_bundle.lock().unwrap().len() == n
    })
    .await;

    // Audit load.
    let (cpu_before, _) = operators.cpu_and_peaks();
    let requests_before_audit = cluster.requests_of(OPERATOR_USER);
    let holder_reads_before = operators.metric("sluice_gateway_holder_reads_total").await;
    let calls_before = tally.polls.load(Ordering::Relaxed) + tally.uploads.load(Ordering::Relaxed);
    let opened = || {
        gateways
            .iter()
            .map(GatewayClient::connections_opened)
            .sum::<u64>()
    };
    let connections_before_audit = opened();
    audit_hook(&operators, "start");
    let audit_started = Instant::now();
    audit_tx.send_replace(true);
    tokio::time::sleep(knobs.audit).await;
    audit_tx.send_replace(false);
    while uploaders.join_next().await.is_some() {}
    let audit_took = audit_started.elapsed();
    audit_hook(&operators, "stop");
    let (cpu_after, _) = operators.cpu_and_peaks();
    let requests_audit = cluster.requests_of(OPERATOR_USER) - requests_before_audit;
    let holder_reads_audit =
        operators.metric("sluice_gateway_holder_reads_total").await - holder_reads_before;
    let polls_and_uploads_audit =
        tally.polls.load(Ordering::Relaxed) + tally.uploads.load(Ordering::Relaxed) - calls_before;
    let connections = (opened(), opened() - connections_before_audit);

    // The counters the operators wrote match what they accepted.
    let want = (
        tally.allowed.load(Ordering::Relaxed),
        tally.denied.load(Ordering::Relaxed),
        tally.masked.load(Ordering::Relaxed),
    );
    let got = counters_when(&policies, want).await;
    let bundle_builds = operators.metric("sluice_gateway_bundle_builds_total").await;
    let (_, peaks_kib) = operators.cpu_and_peaks();
    tasks.abort_all();
    let measured = Measured {
        setup,
        all_first,
        edited_all,
        requests_first,
        requests_per_change,
        wakeups_per_change,
        audit_took,
        cpu: cpu_after - cpu_before,
        peaks_kib,
        requests_audit,
        polls_and_uploads_audit,
        holder_reads_audit,
        connections,
        bundle_builds,
        want,
        got,
    };
    print_table(&knobs, &tally, &measured);
    assert!(
        !tally.first_bundle.lock().unwrap().is_empty(),
        "no sidecar got a bundle; see the logs in {}",
        operators.log_dir.path().display()
    );
    if std::env::var_os("FLEET_KEEP_LOGS").is_some() {
        println!(
            "details: operator logs kept in {}",
            operators.log_dir.keep().display()
        );
    }
}

fn print_table(knobs: &Knobs, tally: &Tally, m: &Measured) {
    let n = knobs.sidecars;
    let first = tally.first_bundle.lock().unwrap().clone();
    let edited = tally.new_bundle.lock().unwrap().clone();
    let late = tally.late.lock().unwrap().clone();
    let events = tally.events_accepted.load(Ordering::Relaxed);
    println!();
    println!(
        "fleet bench: {n} sidecars, {} operator replica(s), long-poll wait {:?}, gateway token TTL {} s, audit {:?} at {} events per {:?} per sidecar (setup {:.1} s)",
        knobs.replicas,
        knobs.wait,
        knobs.token_ttl,
        knobs.audit,
        knobs.events_per_upload,
        knobs.upload_every,
        m.setup.as_secs_f64()
    );
    println!(
        "| sidecars | replicas | all hold a first bundle | policy edit → new bundle p99 | operator peak RSS | operator CPU per audit event | uploads timed out | expired-token uploads | long-poll lateness p99 | API-server requests per unrelated change | per poll or upload | counters |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let peaks: Vec<String> = m
        .peaks_kib
        .iter()
        .map(|k| format!("{} MB", k / 1024))
        .collect();
    println!(
        "| {n} | {} | {} | {} | {} | {:.1} µs | {} | {} | {:.2} s | {:.1} | {:.3} | {} |",
        knobs.replicas,
        match m.all_first {
            Some(t) => format!("{:.2} s", t.as_secs_f64()),
            None => format!("> 300 s ({} of {n})", first.len()),
        },
        if m.edited_all {
            format!("{:.2} s", percentile(&edited, 0.99).as_secs_f64())
        } else {
            format!("> 300 s ({} of {n})", edited.len())
        },
        peaks.join(" + "),
        if events == 0 {
            0.0
        } else {
            m.cpu * 1e6 / events as f64
        },
        tally.uploads_timed_out.load(Ordering::Relaxed),
        tally.uploads_expired.load(Ordering::Relaxed),
        percentile(&late, 0.99).as_secs_f64(),
        m.requests_per_change,
        m.requests_audit as f64 / m.polls_and_uploads_audit.max(1) as f64,
        if m.want == m.got {
            "exact"
        } else {
            "NOT EXACT"
        },
    );
    println!(
        "details: first bundle p50 {:.2} s; edit p50 {:.2} s max {:.2} s; long-poll wake-ups per unrelated change {:.1}; lateness max {:.2} s over {} 304s",
        percentile(&first, 0.5).as_secs_f64(),
        percentile(&edited, 0.5).as_secs_f64(),
        percentile(&edited, 1.0).as_secs_f64(),
        m.wakeups_per_change,
        percentile(&late, 1.0).as_secs_f64(),
        late.len(),
    );
    println!(
        "details: audit {:.1} s: {} uploads, {} ok, {} refused, {} failed; {} events accepted ({:.0}/s), operator CPU {:.2} s; counters want {:?} got {:?}",
        m.audit_took.as_secs_f64(),
        tally.uploads.load(Ordering::Relaxed),
        tally.uploads_ok.load(Ordering::Relaxed),
        tally.uploads_refused.load(Ordering::Relaxed),
        tally.uploads_failed.load(Ordering::Relaxed),
        events,
        events as f64 / m.audit_took.as_secs_f64(),
        m.cpu,
        m.want,
        m.got,
    );
    println!(
        "details: operator API requests: {} for the first bundles, {} during the audit phase over {} polls and uploads ({} pod/account reads the watches could not answer); token exchanges {} ({} failed); answers with Retry-After honoured {}; polls timed out {}, failed {}",
        m.requests_first,
        m.requests_audit,
        m.polls_and_uploads_audit,
        m.holder_reads_audit,
        tally.exchanges.load(Ordering::Relaxed),
        tally.exchanges_failed.load(Ordering::Relaxed),
        tally.told_to_wait.load(Ordering::Relaxed),
        tally.polls_timed_out.load(Ordering::Relaxed),
        tally.polls_failed.load(Ordering::Relaxed),
    );
    println!(
        "details: TLS connections the sidecars opened: {} in all, {} during the audit phase; bundles built {} for {} polls answered",
        m.connections.0,
        m.connections.1,
        m.bundle_builds,
        tally.polls.load(Ordering::Relaxed),
    );
    for (what, count) in tally.errors.lock().unwrap().iter() {
        println!("details: error {what}: {count}");
    }
}
