//! `evidence export`: read the cluster and the audit files for the period,
//! and write the package.

use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_crds::{AccessPolicy, AccessRequest, Connection};

use super::package::{Package, clean, csv_table, hex};
use super::report::html;
use super::soc2::{oscal, soc2_mapping};
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
