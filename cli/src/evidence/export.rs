//! `evidence export`: read the cluster and the audit files for the period,
//! and write the package.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_crds::{AccessPolicy, AccessRequest, Connection};
use tempfile::TempDir;

use super::history::policy_history;
use super::package::{Package, clean, csv_table, hex};
use super::report::html;
use super::soc2::{Criterion, oscal, soc2_mapping};
use super::stats::Stats;
use super::verify::verify_audit;
use super::{EvidenceError, ExportArgs, FORMAT, SAMPLES, archive, io};

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

/// The period exported, in whole seconds.
#[derive(Clone, Copy)]
struct Period {
    since: Timestamp,
    until: Timestamp,
}

impl Period {
    /// `--since` and `--until`, read and checked.
    fn of(args: &ExportArgs) -> Result<Self, EvidenceError> {
        let until = match &args.until {
            Some(t) => t.parse::<Timestamp>().map_err(|e| {
                EvidenceError::Usage(format!("--until {t:?} is not an RFC 3339 time ({e})"))
            })?,
            None => Timestamp::now(),
        };
        let since = parse_since(&args.since, until)?;
        // Whole seconds: the period is read by people. The end is rounded
        // up, so that events of its last second (of now) are in it.
        let whole = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
        let up = |t: Timestamp| {
            let second = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
            Timestamp::from_second(second).unwrap_or(t)
        };
        let (since, until) = (whole(since), up(until));
        if since >= until {
            return Err(EvidenceError::Usage(format!(
                "--since {since} is not before --until {until}"
            )));
        }
        Ok(Period { since, until })
    }

    fn contains(self, t: Option<Timestamp>) -> bool {
        t.is_some_and(|t| t >= self.since && t <= self.until)
    }
}

/// The cluster's objects in scope.
struct Objects {
    policies: Vec<Value>,
    connections: Vec<Value>,
    /// In the period, without their statements (see [`redacted_requests`]).
    requests: Vec<Value>,
    namespace: String,
}

/// Exports the package.
pub fn export(args: &ExportArgs) -> Result<ExitCode, EvidenceError> {
    let period = Period::of(args)?;
    let tarball = check_output(&args.output)?;
    let objects = read_cluster(args, period)?;
    // An archive is written from a staging directory beside it, removed after.
    let staging = staging_dir(&args.output, tarball)?;
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
        &Value::Array(objects.policies.clone()),
    )?;
    pkg.json(
        "policies/connections.json",
        &Value::Array(objects.connections.clone()),
    )?;
    let mut latencies = write_requests(&mut pkg, &objects.requests)?;
    let (stats, all_ok) = write_audit(&mut pkg, args, period)?;
    pkg.json(
        "policies/history.json",
        &policy_history(&stats.policy_changes, &objects.policies, period.since),
    )?;
    write_samples(&mut pkg, &objects.requests, &stats)?;
    latencies.sort_unstable();
    let summary = summary(args, period, &objects, &latencies, &stats, all_ok);
    pkg.json("summary.json", &summary)?;
    write_grc(&mut pkg, &stats)?;
    let mapping = soc2_mapping();
    write_mapping(&mut pkg, &mapping)?;
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
        &oscal(&mapping, &files, period.since, period.until, all_ok),
    )?;
    write_manifest(&pkg, period)?;
    deliver(&pkg, &args.output, tarball, period, all_ok)?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `-o` names an archive; refuses an existing archive or a
/// directory that is not empty.
fn check_output(output: &Path) -> Result<bool, EvidenceError> {
    let tarball = archive::is_archive(output);
    if tarball && output.exists() {
        return Err(EvidenceError::Usage(format!(
            "{} exists; give a new file name",
            output.display()
        )));
    }
    if !tarball
        && output.exists()
        && std::fs::read_dir(output)
            .map_err(io("cannot read", output))?
            .next()
            .is_some()
    {
        return Err(EvidenceError::Usage(format!(
            "{} exists and is not empty; give a new directory",
            output.display()
        )));
    }
    Ok(tarball)
}

/// The AccessPolicies, Connections and AccessRequests of the namespace (or
/// of all), cleaned; the requests are those created in the period.
fn read_cluster(args: &ExportArgs, period: Period) -> Result<Objects, EvidenceError> {
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
    Ok(Objects {
        policies,
        connections,
        requests: redacted_requests(requests, period),
        namespace,
    })
}

/// The requests created in the period, without their statements. The
/// statement with its literals is for the approvers in the cluster; the
/// package keeps the redacted text and the sha256 that binds it, as the
/// audit does (a literal can be a value masking protects).
fn redacted_requests(requests: Vec<Value>, period: Period) -> Vec<Value> {
    requests
        .into_iter()
        .filter(|r| period.contains(time_of(r, "/metadata/creationTimestamp")))
        .map(|mut r| {
            if let Some(c) = r
                .pointer_mut("/spec/command")
                .and_then(Value::as_object_mut)
            {
                c.remove("statement");
            }
            r
        })
        .collect()
}

/// For an archive, a staging directory beside it (removed when dropped).
fn staging_dir(output: &Path, tarball: bool) -> Result<Option<TempDir>, EvidenceError> {
    if !tarball {
        return Ok(None);
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".sluice-evidence-")
        .tempdir_in(&parent)
        .map(Some)
        .map_err(io("cannot create a staging directory in", &parent))
}

/// The columns of `access-requests/accessrequests.csv`.
const REQUEST_COLUMNS: [&str; 11] = [
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
];

/// The AccessRequests as JSON and CSV (the trail of each); returns their
/// approval latencies.
fn write_requests(pkg: &mut Package, requests: &[Value]) -> Result<Vec<i64>, EvidenceError> {
    let mut latencies = Vec::new();
    let mut rows = Vec::new();
    for r in requests {
        let (row, latency) = request_row(r);
        latencies.extend(latency);
        rows.push(row);
    }
    pkg.json(
        "access-requests/accessrequests.json",
        &Value::Array(requests.to_vec()),
    )?;
    pkg.write(
        "access-requests/accessrequests.csv",
        csv_table(&REQUEST_COLUMNS, &rows).as_bytes(),
    )
    .map(|()| latencies)
}

/// One request's CSV row ([`REQUEST_COLUMNS`]), and its approval latency in
/// seconds (creation to first decision).
fn request_row(r: &Value) -> (Vec<String>, Option<i64>) {
    let created = time_of(r, "/metadata/creationTimestamp");
    let decisions = r
        .pointer("/status/decisions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let first = decisions.iter().filter_map(|d| time_of(d, "/time")).min();
    let latency = created.zip(first).map(|(c, f)| (f - c).get_seconds());
    let s = |p: &str| {
        r.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let row = vec![
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
    ];
    (row, latency)
}

/// The audit files as given, each verified with the checkpoints and keys
/// (packaged too); returns the statistics of their events in the period and
/// whether every file verified.
fn write_audit(
    pkg: &mut Package,
    args: &ExportArgs,
    period: Period,
) -> Result<(Stats, bool), EvidenceError> {
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
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if event.get("prev").is_none() {
                continue;
            }
            let time = time_of(&event, "/time");
            if event["type"] == "policy" {
                stats.policy_in_force(&event);
                if time.is_some_and(|t| t <= period.until) {
                    // The versions in force before the period count too.
                    stats.policy_changes.push(event.clone());
                }
            }
            if period.contains(time) {
                stats.add(&event);
            }
        }
    }
    pkg.json(
        "audit/verification.json",
        &json!({"ok": all_ok, "files": reports}),
    )?;
    Ok((stats, all_ok))
}

/// Samples: approved requests, chosen by the hash of their name, each with
/// its audit trail.
fn write_samples(
    pkg: &mut Package,
    requests: &[Value],
    stats: &Stats,
) -> Result<(), EvidenceError> {
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
    }))
}

/// `summary.json`: the period's figures (`latencies` sorted).
fn summary(
    args: &ExportArgs,
    period: Period,
    objects: &Objects,
    latencies: &[i64],
    stats: &Stats,
    all_ok: bool,
) -> Value {
    let (since, until, namespace) = (period.since, period.until, &objects.namespace);
    let median = latencies.get(latencies.len() / 2).copied();
    json!({
        "period": {"since": since.to_string(), "until": until.to_string()},
        "scope": if args.all_namespaces { "all namespaces".to_string() } else { format!("namespace {namespace}") },
        "accessPolicies": objects.policies.len(), "connections": objects.connections.len(),
        "accessRequests": objects.requests.len(),
        "approvalLatencySeconds": {"count": latencies.len(), "median": median, "max": latencies.last()},
        "auditEvents": stats.events, "auditVerified": all_ok,
        "decisionsPerDay": stats.per_day, "denialsByRule": stats.denials_by_rule,
        "maskedValuesByConnection": stats.masked_by_connection,
        "maskedValuesByPolicy": stats.masked_by_policy, "approvalSteps": stats.approvals,
    })
}

/// The GRC tables: decisions per day, denials by rule, masked values by policy.
fn write_grc(pkg: &mut Package, stats: &Stats) -> Result<(), EvidenceError> {
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
    let mask_rows: Vec<Vec<String>> = stats
        .masked_by_policy
        .iter()
        .map(|(p, n)| vec![p.clone(), n.to_string()])
        .collect();
    pkg.write(
        "grc/masked-values-by-policy.csv",
        csv_table(&["policy", "maskedValues"], &mask_rows).as_bytes(),
    )
}

/// The SOC 2 mapping as JSON and as a GRC table.
fn write_mapping(pkg: &mut Package, mapping: &[Criterion]) -> Result<(), EvidenceError> {
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
    )
}

/// `manifest.json`: the hash and size of every other file.
fn write_manifest(pkg: &Package, period: Period) -> Result<(), EvidenceError> {
    let manifest = json!({
        "format": FORMAT, "generatedAt": Timestamp::now().to_string(),
        "period": {"since": period.since.to_string(), "until": period.until.to_string()},
        "files": pkg.files,
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
    let path = pkg.dir.join("manifest.json");
    std::fs::write(&path, text).map_err(io("cannot write", &path))
}

/// Packs the archive when one was asked for, and says where the package is.
fn deliver(
    pkg: &Package,
    output: &Path,
    tarball: bool,
    period: Period,
    all_ok: bool,
) -> Result<(), EvidenceError> {
    let (since, until) = (period.since, period.until);
    let audit = if all_ok {
        "verified"
    } else {
        "FAILED verification, see audit/verification.json"
    };
    if tarball {
        archive::pack(&pkg.dir, output)?;
        println!(
            "evidence for {since} .. {until} written to {} ({} files; audit {audit}); \
             report.html is {}/report.html in it (tar xzf {} to open it)",
            output.display(),
            pkg.files.len() + 1,
            archive::top_dir(output),
            output.display(),
        );
    } else {
        println!(
            "evidence for {since} .. {until} written to {} ({} files; audit {audit}); open {}",
            pkg.dir.display(),
            pkg.files.len() + 1,
            pkg.dir.join("report.html").display()
        );
    }
    Ok(())
}
