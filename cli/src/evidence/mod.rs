//! `kubectl sluice evidence export` and `evidence verify` (#21 item 3): a
//! self-contained package an auditor can take away and re-check offline.
//!
//! The package (a directory) holds:
//!
//! | file | what | SOC 2 |
//! |---|---|---|
//! | `policies/accesspolicies.json` | the AccessPolicies in force (spec, generation, conditions) | CC6.1 CC6.2 CC6.3 CC8.1 |
//! | `policies/connections.json` | the Connections (upstreams and Secret *names*; never a Secret's data) | CC6.1 CC6.6 |
//! | `access-requests/accessrequests.json`, `.csv` | requester, approvers, decisions with user, comment and time, phase, latency | CC6.2 CC6.3 CC8.1 |
//! | `samples/approved-requests.json` | up to 25 approved requests chosen by hash of their name (not by the exporter), with their audit trail | CC6.3 CC8.1 |
//! | `audit/*.jsonl`, `audit/verification.json` | the audit files as given, and `audit verify`'s report on each | CC7.2 CC7.3 |
//! | `audit/checkpoints.jsonl`, `audit/jwks.json` | the checkpoints and keys used | CC7.2 |
//! | `summary.json`, `grc/*.csv` | statistics for the period (decisions per day, denials by rule, masked values by Connection, approvals) | CC7.2 CC7.3 |
//! | `soc2-mapping.json`, `grc/soc2-mapping.csv` | each criterion and the files that support it | — |
//! | `report.html` | one offline page with the charts (inline SVG) | — |
//! | `oscal-assessment-results.json` | OSCAL 1.1.2 assessment results: an observation and a finding per criterion | — |
//! | `manifest.json` | SHA-256 and size of every other file | — |
//!
//! With `-o FILE.tar.gz` the same files are written as one archive, under a
//! directory named after it (see [`archive`]).
//!
//! `evidence verify DIR|FILE.tar.gz` recomputes every hash of the manifest (an altered,
//! missing or unlisted file fails, named) and verifies the audit files again
//! with the packaged checkpoints and keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_crds::{AccessPolicy, AccessRequest, Connection};

use crate::approvals::ClusterArgs;
use crate::audit_verify;

mod archive;

/// The package format written into the manifest.
const FORMAT: &str = "sluice-evidence/v1";
/// How many approved requests are sampled.
const SAMPLES: usize = 25;

/// `kubectl sluice evidence export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Start of the period: a duration back from --until (`90d`, `12h`,
    /// `30m`) or an RFC 3339 time.
    #[arg(long, default_value = "90d")]
    since: String,
    /// End of the period (RFC 3339; default: now).
    #[arg(long)]
    until: Option<String>,
    /// Every namespace (default: the one of -n or the context).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Audit files to include (the sidecars' JSON lines, or `kubectl logs` output).
    #[arg(long, num_args = 1.., required = true)]
    audit: Vec<PathBuf>,
    /// Checkpoints for the audit files (`kubectl sluice audit checkpoints`).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// The keys the checkpoints are signed by (`kubectl sluice audit jwks`).
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Where to write the package: a directory (created; must not exist or
    /// be empty), or a `FILE.tar.gz` (must not exist).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Cluster flags.
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `kubectl sluice evidence verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The package: its directory, or its `.tar.gz`.
    dir: PathBuf,
}

/// Why an export or a verification could not be done (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The cluster could not be read.
    #[error(transparent)]
    Cluster(#[from] crate::approvals::ApprovalsError),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Bad flags.
    #[error("{0}")]
    Usage(String),
    /// The audit files could not be verified at all.
    #[error(transparent)]
    Audit(#[from] audit_verify::VerifyInputError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EvidenceError + 'a {
    move |source| EvidenceError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Parses `--since`: a duration back from `until`, or a time.
fn parse_since(text: &str, until: Timestamp) -> Result<Timestamp, EvidenceError> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let bad = || {
        EvidenceError::Usage(format!(
            "--since {text:?} is neither a duration (90d, 12h, 30m, 45s) nor an RFC 3339 time"
        ))
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let span = match unit {
        "d" => n.checked_mul(24).ok_or_else(bad)?.hours(),
        "h" => n.hours(),
        "m" => n.minutes(),
        "s" => n.seconds(),
        _ => return Err(bad()),
    };
    until.checked_sub(span).map_err(|_| bad())
}

fn time_of(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// A package being written: each file's hash for the manifest.
struct Package {
    dir: PathBuf,
    files: Vec<Value>,
}

impl Package {
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), EvidenceError> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        std::fs::write(&path, bytes).map_err(io("cannot write", &path))?;
        self.files.push(json!({
            "path": name, "bytes": bytes.len(), "sha256": hex(&Sha256::digest(bytes)),
        }));
        Ok(())
    }

    fn json(&mut self, name: &str, value: &Value) -> Result<(), EvidenceError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
        self.write(name, text.as_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn csv_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = header.join(",") + "\n";
    for row in rows {
        out.push_str(&row.iter().map(|f| csv(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// An object as exported: no managedFields, no last-applied annotation.
fn clean(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    v
}

/// Statistics of the audit events in the period.
#[derive(Default)]
struct Stats {
    /// day → action → count.
    per_day: BTreeMap<String, BTreeMap<String, u64>>,
    denials_by_rule: BTreeMap<String, u64>,
    masked_by_connection: BTreeMap<String, u64>,
    approvals: BTreeMap<String, u64>,
    events: u64,
    /// Approval audit events by request name.
    trail: BTreeMap<String, Vec<Value>>,
}

impl Stats {
    fn add(&mut self, event: &Value) {
        self.events += 1;
        let day = event["time"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(10)
            .collect::<String>();
        let rule = || {
            format!(
                "{}/{}",
                event
                    .pointer("/decision/policy")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                event
                    .pointer("/decision/rule")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
            )
        };
        match event["type"].as_str().unwrap_or("") {
            "statement" => {
                let action = event
                    .pointer("/decision/action")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                *self
                    .per_day
                    .entry(day)
                    .or_default()
                    .entry(action.to_string())
                    .or_default() += 1;
            }
            "denial" => {
                *self
                    .per_day
                    .entry(day)
                    .or_default()
                    .entry("deny".into())
                    .or_default() += 1;
                *self.denials_by_rule.entry(rule()).or_default() += 1;
            }
            "result" | "mask" => {
                if let Some(m) = event.pointer("/outcome/masked").and_then(Value::as_u64)
                    && m > 0
                {
                    let c = event["connection"].as_str().unwrap_or("-").to_string();
                    *self.masked_by_connection.entry(c).or_default() += m;
                }
            }
            "approval" => {
                let phase = event
                    .pointer("/approval/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("-");
                *self.approvals.entry(phase.to_string()).or_default() += 1;
                if let Some(r) = event.pointer("/approval/request").and_then(Value::as_str) {
                    self.trail
                        .entry(r.to_string())
                        .or_default()
                        .push(event.clone());
                }
            }
            _ => {}
        }
    }
}

/// The SOC 2 criteria and the package files that support them.
fn soc2_mapping() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "CC6.1",
            "Logical access to protected information assets is restricted: workloads reach databases and APIs only through the sidecar, which holds the credentials and decides every statement against the AccessPolicies.",
            vec!["policies/accesspolicies.json", "policies/connections.json"],
        ),
        (
            "CC6.2",
            "Access is granted to registered, authorised identities only: each policy names its subjects (service accounts); exceptional access is requested and approved.",
            vec![
                "policies/accesspolicies.json",
                "access-requests/accessrequests.json",
            ],
        ),
        (
            "CC6.3",
            "Access follows least privilege and is changed only with approval: rules allow, deny or require approval per statement; approvals name approvers and decisions.",
            vec![
                "policies/accesspolicies.json",
                "access-requests/accessrequests.json",
                "samples/approved-requests.json",
            ],
        ),
        (
            "CC6.6",
            "Access from outside the system boundary is restricted: the upstream is reached only through a Connection the sidecar serves; the denials show refused attempts.",
            vec!["policies/connections.json", "summary.json"],
        ),
        (
            "CC7.2",
            "System components are monitored: every statement is audited before it runs, in hash-chained logs anchored by signed checkpoints, verified in this package.",
            vec![
                "audit/verification.json",
                "audit/checkpoints.jsonl",
                "summary.json",
            ],
        ),
        (
            "CC7.3",
            "Security events are evaluated: denials by rule and the verification report (tampering, gaps) are summarised for review.",
            vec![
                "summary.json",
                "audit/verification.json",
                "grc/denials-by-rule.csv",
            ],
        ),
        (
            "CC8.1",
            "Changes are authorised: writes that need approval ran only after their AccessRequest was approved; policy changes carry their generation.",
            vec![
                "access-requests/accessrequests.json",
                "samples/approved-requests.json",
                "policies/accesspolicies.json",
            ],
        ),
    ]
}

/// Exports the package.
pub fn export(args: &ExportArgs) -> Result<ExitCode, EvidenceError> {
    let until = match &args.until {
        Some(t) => t.parse::<Timestamp>().map_err(|e| {
            EvidenceError::Usage(format!("--until {t:?} is not an RFC 3339 time ({e})"))
        })?,
        None => Timestamp::now(),
    };
    let since = parse_since(&args.since, until)?;
    // Whole seconds: the period is read by people.
    let whole = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
    let (since, until) = (whole(since), whole(until));
    if since >= until {
        return Err(EvidenceError::Usage(format!(
            "--since {since} is not before --until {until}"
        )));
    }
    let tarball = archive::is_archive(&args.output);
    if tarball && args.output.exists() {
        return Err(EvidenceError::Usage(format!(
            "{} exists; give a new file name",
            args.output.display()
        )));
    }
    if !tarball
        && args.output.exists()
        && std::fs::read_dir(&args.output)
            .map_err(io("cannot read", &args.output))?
            .next()
            .is_some()
    {
        return Err(EvidenceError::Usage(format!(
            "{} exists and is not empty; give a new directory",
            args.output.display()
        )));
    }
    let in_period = |t: Option<Timestamp>| t.is_some_and(|t| t >= since && t <= until);

    // The cluster's objects.
    let (policies, connections, requests, namespace) =
        crate::approvals::runtime()?.block_on(async {
            let (client, namespace) = crate::approvals::connect(&args.cluster).await?;
            let lp = ListParams::default();
            let list = |e| crate::approvals::ApprovalsError::Api(e);
            macro_rules! objects {
                ($kind:ty) => {{
                    let api: Api<$kind> = if args.all_namespaces {
                        Api::all(client.clone())
                    } else {
                        Api::namespaced(client.clone(), &namespace)
                    };
                    api.list(&lp)
                        .await
                        .map_err(list)?
                        .items
                        .into_iter()
                        .map(|o| clean(serde_json::to_value(o).unwrap_or_default()))
                        .collect::<Vec<Value>>()
                }};
            }
            let policies = objects!(AccessPolicy);
            let connections = objects!(Connection);
            let requests = objects!(AccessRequest);
            Ok::<_, EvidenceError>((policies, connections, requests, namespace))
        })?;
    // The statement with its literals is for the approvers in the cluster;
    // the package keeps the redacted text and the sha256 that binds it, as
    // the audit does (a literal can be a value masking protects).
    let requests: Vec<Value> = requests
        .into_iter()
        .filter(|r| in_period(time_of(r, "/metadata/creationTimestamp")))
        .map(|mut r| {
            if let Some(c) = r
                .pointer_mut("/spec/command")
                .and_then(Value::as_object_mut)
            {
                c.remove("statement");
            }
            r
        })
        .collect();

    // An archive is written from a staging directory beside it, removed after.
    let staging = if tarball {
        let parent = match args.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(
            tempfile::Builder::new()
                .prefix(".sluice-evidence-")
                .tempdir_in(&parent)
                .map_err(io("cannot create a staging directory in", &parent))?,
        )
    } else {
        None
    };
    let mut pkg = Package {
        dir: match &staging {
            Some(s) => s.path().join("package"),
            None => args.output.clone(),
        },
        files: Vec::new(),
    };
    std::fs::create_dir_all(&pkg.dir).map_err(io("cannot create", &pkg.dir))?;
    pkg.json(
        "policies/accesspolicies.json",
        &Value::Array(policies.clone()),
    )?;
    pkg.json(
        "policies/connections.json",
        &Value::Array(connections.clone()),
    )?;

    // AccessRequests: the trail of each, and its approval latency.
    let mut latencies = Vec::new();
    let mut rows = Vec::new();
    for r in &requests {
        let created = time_of(r, "/metadata/creationTimestamp");
        let decisions = r
            .pointer("/status/decisions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let first = decisions.iter().filter_map(|d| time_of(d, "/time")).min();
        let latency = created.zip(first).map(|(c, f)| (f - c).get_seconds());
        if let Some(l) = latency {
            latencies.push(l);
        }
        let s = |p: &str| {
            r.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        rows.push(vec![
            s("/metadata/namespace"),
            s("/metadata/name"),
            format!(
                "{}/{}",
                s("/spec/requester/namespace"),
                s("/spec/requester/serviceAccount")
            ),
            s("/spec/requester/pod"),
            s("/spec/connection"),
            format!("{}/{}", s("/spec/policy"), s("/spec/rule")),
            s("/spec/command/text"),
            s("/status/phase"),
            s("/metadata/creationTimestamp"),
            decisions
                .iter()
                .map(|d| {
                    format!(
                        "{} {} {} {}",
                        d["time"].as_str().unwrap_or(""),
                        d["user"].as_str().unwrap_or(""),
                        d["verdict"].as_str().unwrap_or(""),
                        d["comment"].as_str().unwrap_or("")
                    )
                    .trim_end()
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("; "),
            latency.map(|l| l.to_string()).unwrap_or_default(),
        ]);
    }
    pkg.json(
        "access-requests/accessrequests.json",
        &Value::Array(requests.clone()),
    )?;
    pkg.write(
        "access-requests/accessrequests.csv",
        csv_table(
            &[
                "namespace",
                "name",
                "requester",
                "pod",
                "connection",
                "rule",
                "command",
                "phase",
                "created",
                "decisions",
                "approvalLatencySeconds",
            ],
            &rows,
        )
        .as_bytes(),
    )?;

    // The audit files, verified, and the statistics of their events in the period.
    let checkpoints = match &args.checkpoints {
        Some(p) => Some(std::fs::read_to_string(p).map_err(io("cannot read", p))?),
        None => None,
    };
    let jwks_text = match &args.jwks {
        Some(p) => Some(std::fs::read_to_string(p).map_err(io("cannot read", p))?),
        None => None,
    };
    if let Some(c) = &checkpoints {
        pkg.write("audit/checkpoints.jsonl", c.as_bytes())?;
    }
    if let Some(j) = &jwks_text {
        pkg.write("audit/jwks.json", j.as_bytes())?;
    }
    let mut stats = Stats::default();
    let mut reports = Vec::new();
    let mut all_ok = true;
    for (i, path) in args.audit.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(io("cannot read", path))?;
        let name = format!(
            "audit/{:02}-{}",
            i + 1,
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        pkg.write(&name, text.as_bytes())?;
        let report = verify_audit(&text, checkpoints.as_deref(), jwks_text.as_deref())?;
        all_ok &= report["ok"] == true;
        reports.push(json!({"file": name, "report": report}));
        for line in text.lines() {
            if let Ok(event) = serde_json::from_str::<Value>(line)
                && event.get("prev").is_some()
                && in_period(time_of(&event, "/time"))
            {
                stats.add(&event);
            }
        }
    }
    pkg.json(
        "audit/verification.json",
        &json!({"ok": all_ok, "files": reports}),
    )?;

    // Samples: approved requests, chosen by the hash of their name.
    let mut approved: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            matches!(
                r.pointer("/status/phase").and_then(Value::as_str),
                Some("Approved" | "Executed")
            )
        })
        .collect();
    approved.sort_by_key(|r| {
        hex(&Sha256::digest(
            r.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .as_bytes(),
        ))
    });
    let samples: Vec<Value> = approved
        .iter()
        .take(SAMPLES)
        .map(|r| {
            let name = r
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({"request": r, "auditTrail": stats.trail.get(name).cloned().unwrap_or_default()})
        })
        .collect();
    pkg.json("samples/approved-requests.json", &json!({
        "chosenBy": "the first 25 approved or executed requests ordered by sha256 of their name",
        "samples": samples,
    }))?;

    latencies.sort_unstable();
    let median = latencies.get(latencies.len() / 2).copied();
    let summary = json!({
        "period": {"since": since.to_string(), "until": until.to_string()},
        "scope": if args.all_namespaces { "all namespaces".to_string() } else { format!("namespace {namespace}") },
        "accessPolicies": policies.len(), "connections": connections.len(),
        "accessRequests": requests.len(),
        "approvalLatencySeconds": {"count": latencies.len(), "median": median, "max": latencies.last()},
        "auditEvents": stats.events, "auditVerified": all_ok,
        "decisionsPerDay": stats.per_day, "denialsByRule": stats.denials_by_rule,
        "maskedValuesByConnection": stats.masked_by_connection, "approvalSteps": stats.approvals,
    });
    pkg.json("summary.json", &summary)?;
    let day_rows: Vec<Vec<String>> = stats
        .per_day
        .iter()
        .flat_map(|(day, actions)| {
            actions
                .iter()
                .map(move |(a, n)| vec![day.clone(), a.clone(), n.to_string()])
        })
        .collect();
    pkg.write(
        "grc/decisions-per-day.csv",
        csv_table(&["day", "action", "count"], &day_rows).as_bytes(),
    )?;
    let rule_rows: Vec<Vec<String>> = stats
        .denials_by_rule
        .iter()
        .map(|(r, n)| vec![r.clone(), n.to_string()])
        .collect();
    pkg.write(
        "grc/denials-by-rule.csv",
        csv_table(&["policy/rule", "denials"], &rule_rows).as_bytes(),
    )?;
    let mapping = soc2_mapping();
    pkg.json(
        "soc2-mapping.json",
        &Value::Array(
            mapping
                .iter()
                .map(|(c, d, f)| json!({"criterion": c, "how": d, "evidence": f}))
                .collect(),
        ),
    )?;
    let map_rows: Vec<Vec<String>> = mapping
        .iter()
        .map(|(c, d, f)| vec![c.to_string(), d.to_string(), f.join(" ")])
        .collect();
    pkg.write(
        "grc/soc2-mapping.csv",
        csv_table(&["criterion", "how", "evidence"], &map_rows).as_bytes(),
    )?;
    pkg.write(
        "report.html",
        html(&summary, &stats, &latencies, &mapping, all_ok).as_bytes(),
    )?;
    let files: Vec<String> = pkg
        .files
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    pkg.json(
        "oscal-assessment-results.json",
        &oscal(&mapping, &files, since, until, all_ok),
    )?;

    let manifest = json!({
        "format": FORMAT, "generatedAt": Timestamp::now().to_string(),
        "period": {"since": since.to_string(), "until": until.to_string()},
        "files": pkg.files,
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
    let path = pkg.dir.join("manifest.json");
    std::fs::write(&path, text).map_err(io("cannot write", &path))?;
    let audit = if all_ok {
        "verified"
    } else {
        "FAILED verification, see audit/verification.json"
    };
    if tarball {
        archive::pack(&pkg.dir, &args.output)?;
        println!(
            "evidence for {since} .. {until} written to {} ({} files; audit {audit}); \
             report.html is {}/report.html in it (tar xzf {} to open it)",
            args.output.display(),
            pkg.files.len() + 1,
            archive::top_dir(&args.output),
            args.output.display(),
        );
    } else {
        println!(
            "evidence for {since} .. {until} written to {} ({} files; audit {audit}); open {}",
            pkg.dir.display(),
            pkg.files.len() + 1,
            pkg.dir.join("report.html").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_audit(
    text: &str,
    checkpoints: Option<&str>,
    jwks: Option<&str>,
) -> Result<Value, EvidenceError> {
    let jwks: Option<jsonwebtoken::jwk::JwkSet> = match jwks {
        Some(j) => Some(serde_json::from_str(j).map_err(|e| {
            EvidenceError::Usage(format!("the JWKS is not a JSON Web Key Set ({e})"))
        })?),
        None => None,
    };
    let options = audit_verify::Options {
        checkpoints: checkpoints.map(|c| (PathBuf::from("checkpoints.jsonl"), c.to_string())),
        jwks: jwks.as_ref(),
        require_every_stream: false,
    };
    Ok(match audit_verify::verify(text, &options)? {
        Ok(v) => v.to_json(),
        Err(f) => f.to_json(),
    })
}

// === OSCAL ===

/// A name-based UUID (SHA-256 of `name`, shaped as a version 5 UUID), so
/// the same package always gets the same IDs.
fn uuid(name: &str) -> String {
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&Sha256::digest(name.as_bytes())[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// OSCAL 1.1 assessment results: one observation per criterion (the files
/// that support it) and one finding, `satisfied` when every file is in the
/// package (and, for CC7.2/CC7.3, the audit verified). This is the
/// exporter's automated check, not an auditor's opinion.
fn oscal(
    mapping: &[(&'static str, &'static str, Vec<&'static str>)],
    files: &[String],
    since: Timestamp,
    until: Timestamp,
    audit_ok: bool,
) -> Value {
    let seed = format!("{since}/{until}");
    let mut observations = Vec::new();
    let mut findings = Vec::new();
    for (criterion, how, evidence) in mapping {
        let present = evidence.iter().all(|f| files.iter().any(|p| p == f));
        let satisfied = present && (!criterion.starts_with("CC7") || audit_ok);
        let observation = uuid(&format!("{seed}/observation/{criterion}"));
        observations.push(json!({
            "uuid": observation,
            "title": format!("{criterion} evidence"),
            "description": how,
            "methods": ["EXAMINE"],
            "collected": until.to_string(),
            "relevant-evidence": evidence.iter().map(|f| json!({
                "href": f, "description": format!("{f} (SHA-256 in manifest.json)")})).collect::<Vec<_>>(),
        }));
        findings.push(json!({
            "uuid": uuid(&format!("{seed}/finding/{criterion}")),
            "title": criterion,
            "description": if satisfied { "The evidence files are present and the audit verified." }
                           else { "Evidence is missing or the audit did not verify; see audit/verification.json." },
            "target": {"type": "objective-id", "target-id": criterion.to_lowercase(),
                       "status": {"state": if satisfied { "satisfied" } else { "not-satisfied" }}},
            "related-observations": [{"observation-uuid": observation}],
        }));
    }
    json!({"assessment-results": {
        "uuid": uuid(&format!("{seed}/assessment-results")),
        "metadata": {"title": format!("Sluice access evidence {since} .. {until}"),
                     "last-modified": Timestamp::now().to_string(), "version": "1", "oscal-version": "1.1.2"},
        "import-ap": {"href": "#"},
        "results": [{
            "uuid": uuid(&format!("{seed}/result")),
            "title": "SOC 2 common criteria supported by Sluice",
            "description": "Automated evidence collection by kubectl sluice evidence export.",
            "start": since.to_string(), "end": until.to_string(),
            "reviewed-controls": {"control-selections": [{"include-controls":
                mapping.iter().map(|(c, _, _)| json!({"control-id": c.to_lowercase()})).collect::<Vec<_>>()}]},
            "observations": observations,
            "findings": findings,
        }],
    }})
}

// === the HTML report ===

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG.
fn bars(title: &str, data: &[(String, u64)]) -> String {
    let mut out = format!("<h2>{}</h2>", escape(title));
    if data.is_empty() {
        out.push_str("<p class=\"none\">none in the period</p>");
        return out;
    }
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1);
    let height = data.len() * 26 + 10;
    let _ = write!(
        out,
        "<svg width=\"760\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    for (i, (label, value)) in data.iter().enumerate() {
        let y = i * 26 + 5;
        let w = (*value as f64 / max as f64 * 420.0).round().max(1.0);
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text><rect x=\"260\" y=\"{y}\" width=\"{w}\" height=\"20\" fill=\"#3b6ea5\"/><text x=\"{}\" y=\"{}\" font-size=\"13\">{value}</text>",
            y + 15,
            escape(label),
            266.0 + w,
            y + 15
        );
    }
    out.push_str("</svg>");
    out
}

/// Decisions per day as stacked columns (allow, deny, requireApproval).
fn per_day(data: &BTreeMap<String, BTreeMap<String, u64>>) -> String {
    let mut out = "<h2>Decisions over time</h2>".to_string();
    if data.is_empty() {
        out.push_str("<p class=\"none\">none in the period</p>");
        return out;
    }
    let colours = [
        ("allow", "#4c9a5b"),
        ("deny", "#c0392b"),
        ("requireApproval", "#e0a030"),
    ];
    let max = data
        .values()
        .map(|a| a.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let width = (data.len() * 40 + 60).max(300);
    let _ = write!(
        out,
        "<svg width=\"{width}\" height=\"260\" role=\"img\" aria-label=\"Decisions over time\">"
    );
    for (i, (day, actions)) in data.iter().enumerate() {
        let x = 40 + i * 40;
        let mut top = 220.0;
        for (action, colour) in colours {
            let n = actions.get(action).copied().unwrap_or(0);
            let h = n as f64 / max as f64 * 200.0;
            top -= h;
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{top:.1}\" width=\"28\" height=\"{h:.1}\" fill=\"{colour}\"><title>{day} {action}: {n}</title></rect>"
            );
        }
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"240\" font-size=\"10\">{}</text>",
            escape(day.get(5..).unwrap_or(day))
        );
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"20\" font-size=\"11\">{max}</text><line x1=\"36\" y1=\"220\" x2=\"{width}\" y2=\"220\" stroke=\"#888\"/></svg>"
    );
    out.push_str("<p class=\"legend\"><span style=\"color:#4c9a5b\">■</span> allow <span style=\"color:#c0392b\">■</span> deny <span style=\"color:#e0a030\">■</span> requireApproval</p>");
    out
}

fn html(
    summary: &Value,
    stats: &Stats,
    latencies: &[i64],
    mapping: &[(&'static str, &'static str, Vec<&'static str>)],
    audit_ok: bool,
) -> String {
    let mut buckets: BTreeMap<usize, u64> = BTreeMap::new();
    let labels = ["< 1 min", "1–10 min", "10–60 min", "1–24 h", "> 24 h"];
    for l in latencies {
        let b = match *l {
            ..60 => 0,
            60..600 => 1,
            600..3600 => 2,
            3600..86400 => 3,
            _ => 4,
        };
        *buckets.entry(b).or_default() += 1;
    }
    let latency: Vec<(String, u64)> = buckets
        .iter()
        .map(|(b, n)| (labels[*b].to_string(), *n))
        .collect();
    let to_list =
        |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>();
    let mut rows = String::new();
    for (c, d, f) in mapping {
        let _ = write!(
            rows,
            "<tr><td>{c}</td><td>{}</td><td>{}</td></tr>",
            escape(d),
            escape(&f.join(", "))
        );
    }
    let s = |p: &str| {
        summary
            .pointer(p)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sluice evidence {since} .. {until}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:900px;color:#222}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}} .ok{{color:#2e7d32}} .bad{{color:#c62828}} .none{{color:#777}} .legend{{font-size:12px}}</style>
</head><body>
<h1>Sluice access evidence</h1>
<p>Period {since} .. {until}, {scope}. Audit: <b class="{class}">{audit}</b> ({events} events in the period). {policies} AccessPolicies, {connections} Connections, {requests} AccessRequests.</p>
{per_day}
{denials}
{masked}
{latency}
<h2>SOC 2 mapping</h2>
<table><tr><th>Criterion</th><th>How Sluice supports it</th><th>Evidence in this package</th></tr>{rows}</table>
<p class="none">Files and their SHA-256 are in manifest.json; re-check with <code>kubectl sluice evidence verify DIR</code>.</p>
</body></html>
"#,
        since = escape(
            summary
                .pointer("/period/since")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        until = escape(
            summary
                .pointer("/period/until")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        scope = escape(summary["scope"].as_str().unwrap_or("")),
        class = if audit_ok { "ok" } else { "bad" },
        audit = if audit_ok {
            "verified"
        } else {
            "FAILED verification"
        },
        events = stats.events,
        policies = s("/accessPolicies"),
        connections = s("/connections"),
        requests = s("/accessRequests"),
        per_day = per_day(&stats.per_day),
        denials = bars("Denials by rule", &to_list(&stats.denials_by_rule)),
        masked = bars(
            "Masked values by Connection",
            &to_list(&stats.masked_by_connection)
        ),
        latency = bars(
            "Approval latency (first decision after the request)",
            &latency
        ),
    )
}

// === evidence verify ===

/// Re-checks a package offline: every file's hash, no file missing or
/// added, and the audit files against the packaged checkpoints and keys.
pub fn verify(args: &VerifyArgs) -> Result<ExitCode, EvidenceError> {
    if !args.dir.is_file() {
        return verify_dir(&args.dir);
    }
    let scratch = tempfile::Builder::new()
        .prefix("sluice-evidence-verify-")
        .tempdir()
        .map_err(io("cannot create a directory to unpack", &args.dir))?;
    let dir = archive::unpack(&args.dir, scratch.path())?;
    verify_dir(&dir)
}

/// [`verify`] of a package directory.
fn verify_dir(dir: &Path) -> Result<ExitCode, EvidenceError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| EvidenceError::Usage(format!("{}: not a manifest ({e})", path.display())))?;
    if manifest["format"] != FORMAT {
        return Err(EvidenceError::Usage(format!(
            "{}: not a {FORMAT} manifest",
            path.display()
        )));
    }
    let mut problems = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for f in manifest["files"].as_array().cloned().unwrap_or_default() {
        let name = f["path"].as_str().unwrap_or("").to_string();
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
            problems.push(format!("the manifest lists an unsafe path {name:?}"));
            continue;
        }
        listed.insert(name.clone());
        match std::fs::read(dir.join(&name)) {
            Err(_) => problems.push(format!("{name}: missing")),
            Ok(bytes) => {
                if f["sha256"].as_str() != Some(hex(&Sha256::digest(&bytes)).as_str()) {
                    problems.push(format!(
                        "{name}: altered (its SHA-256 differs from the manifest's)"
                    ));
                }
            }
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(sub) = stack.pop() {
        for entry in std::fs::read_dir(&sub).map_err(io("cannot read", &sub))? {
            let entry = entry.map_err(io("cannot read", &sub))?;
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if rel != "manifest.json" && !listed.contains(&rel) {
                    problems.push(format!("{rel}: not in the manifest (added)"));
                }
            }
        }
    }
    // The audit files again, offline, with the packaged checkpoints and keys.
    if problems.is_empty() {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let checkpoints = read("audit/checkpoints.jsonl");
        let jwks = read("audit/jwks.json");
        let not_logs = [
            "audit/checkpoints.jsonl",
            "audit/jwks.json",
            "audit/verification.json",
        ];
        for name in listed
            .iter()
            .filter(|n| n.starts_with("audit/") && !not_logs.contains(&n.as_str()))
        {
            let text = read(name).unwrap_or_default();
            let report = verify_audit(&text, checkpoints.as_deref(), jwks.as_deref())?;
            if report["ok"] != true {
                problems.push(format!(
                    "{name}: the audit does not verify: {} {}",
                    report["kind"], report["detail"]
                ));
            }
        }
    }
    if problems.is_empty() {
        println!(
            "OK: {} files match the manifest; the audit files verify",
            listed.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        Ok(ExitCode::from(1))
    }
}
