//! `kubectl sluice evidence export` and `evidence verify` against the test
//! control plane, with real objects and a real chained audit file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;

use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_crds::AccessRequest;
use sluice_policy::audit::AuditChain;

use common::{cluster_with_crds, export, kubectl_sluice};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn apply(client: &kube::Client, file: &str) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file))
        .unwrap();
    for v in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
        match v["kind"].as_str().unwrap() {
            "Namespace" => {
                let ns: Namespace = serde_json::from_value(v).unwrap();
                Api::<Namespace>::all(client.clone())
                    .create(&PostParams::default(), &ns)
                    .await
                    .unwrap();
            }
            "Connection" => {
                let c: sluice_crds::Connection = serde_json::from_value(v).unwrap();
                Api::<sluice_crds::Connection>::namespaced(client.clone(), "shop")
                    .create(&PostParams::default(), &c)
                    .await
                    .unwrap();
            }
            "AccessPolicy" => {
                let p: sluice_crds::AccessPolicy = serde_json::from_value(v).unwrap();
                Api::<sluice_crds::AccessPolicy>::namespaced(client.clone(), "shop")
                    .create(&PostParams::default(), &p)
                    .await
                    .unwrap();
            }
            _ => {} // Secrets are never exported; not needed here
        }
    }
}

/// A request, decided by `user` `verdict` `after` seconds, ending in `phase`.
async fn request(
    client: &kube::Client,
    name: &str,
    user: &str,
    verdict: &str,
    after: i64,
    phase: &str,
) {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), "shop");
    let ar: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "connection": "orders-db", "policy": "reporting", "rule": "bulk-writes-need-a-human",
            "requester": {"serviceAccount": "report-job", "namespace": "shop", "pod": "report-0"},
            "command": {"text": "UPDATE orders SET status = ? WHERE id > ?", "statement": "UPDATE orders SET status = 'card 4111111111111111' WHERE id > 7", "fingerprint": "f", "sha256": "a".repeat(64)},
            "approvers": {"groups": ["dba"]},
            "expiresAt": "2099-01-01T00:00:00Z"
        }
    }))
    .unwrap();
    let stored = api.create(&PostParams::default(), &ar).await.unwrap();
    // The test control plane stamps creation now; the decision is `after` seconds later.
    let created_at: Timestamp = serde_json::to_value(&stored.metadata.creation_timestamp)
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let decided = created_at.checked_add(after.seconds()).unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": phase, "decisions": [
            {"user": user, "groups": ["dba"], "verdict": verdict, "time": decided.to_string(), "comment": "checked the ticket"}
        ]}})),
    )
    .await
    .unwrap();
}

fn audit_log(now: Timestamp) -> Vec<String> {
    let mut chain = AuditChain::new("sidecar:shop/report-job:report-0:boot-1");
    let t = |m: i64| now.checked_sub(m.minutes()).unwrap().to_string();
    let old = now.checked_sub((200 * 24).hours()).unwrap().to_string();
    let events = [
        json!({"time": old, "type": "statement", "connection": "orders-db",
               "decision": {"action": "allow", "policy": "reporting"}}),
        json!({"time": t(50), "type": "statement", "connection": "orders-db",
               "decision": {"action": "allow", "policy": "reporting", "rule": "reads"}}),
        json!({"time": t(40), "type": "denial", "connection": "orders-db",
               "command": {"text": "DROP TABLE customers", "fingerprint": "f1", "kind": "drop"},
               "decision": {"action": "deny", "policy": "reporting", "rule": "no-schema-changes"}}),
        json!({"time": t(39), "type": "denial", "connection": "orders-db",
               "decision": {"action": "deny", "policy": "reporting", "rule": "no-schema-changes"}}),
        json!({"time": t(30), "type": "result", "connection": "orders-db", "outcome": {"rows": 3, "masked": 7}}),
        json!({"time": t(20), "type": "approval", "connection": "orders-db",
               "approval": {"phase": "Approved", "request": "bulk-1", "decidedBy": "alice"}}),
    ];
    events
        .iter()
        .map(|e| {
            let mut draft = sluice_policy::audit::AuditEventDraft::new(
                e["time"].as_str().unwrap(),
                serde_json::from_value(e["type"].clone()).unwrap(),
            );
            draft.connection = Some("orders-db".into());
            draft.decision = e
                .get("decision")
                .map(|d| serde_json::from_value(d.clone()).unwrap());
            draft.command = e
                .get("command")
                .map(|d| serde_json::from_value(d.clone()).unwrap());
            draft.outcome = e
                .get("outcome")
                .map(|d| serde_json::from_value(d.clone()).unwrap());
            draft.approval = e
                .get("approval")
                .map(|d| serde_json::from_value(d.clone()).unwrap());
            chain.append(draft).unwrap().to_line().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_package_holds_the_evidence_and_verifies_offline() {
    let (cluster, client) = cluster_with_crds().await;
    apply(&client, "examples/quickstart/namespace.yaml").await;
    apply(&client, "examples/quickstart/orders-db.yaml").await;
    apply(&client, "examples/quickstart/reporting-policy.yaml").await;
    let now = Timestamp::now();
    request(&client, "bulk-1", "alice", "approve", 90, "Approved").await;
    request(&client, "bulk-2", "bob", "deny", 4000, "Denied").await;

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(&audit, audit_log(now).join("\n") + "\n").unwrap();
    let out_dir = dir.path().join("evidence");
    let kubeconfig = cluster.kubeconfig_path();
    let out = export(&kubeconfig, Some("90d"), &audit, &out_dir);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("report.html"),
        "{}",
        text(&out.stdout)
    );
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();
    let json_of = |name: &str| serde_json::from_str::<Value>(&read(name)).unwrap();

    // The objects in force, no Secret data.
    assert_eq!(
        json_of("policies/accesspolicies.json")[0]["metadata"]["name"],
        "reporting"
    );
    assert_eq!(
        json_of("policies/connections.json")[0]["metadata"]["name"],
        "orders-db"
    );
    // Requests with their trail and latency, without the literals the approvers saw.
    for name in [
        "access-requests/accessrequests.json",
        "samples/approved-requests.json",
    ] {
        assert!(
            !read(name).contains("4111111111111111"),
            "{name} holds a literal"
        );
    }
    // Requests with their trail and latency.
    let csv = read("access-requests/accessrequests.csv");
    assert!(
        csv.contains(
            "bulk-1,shop/report-job,report-0,orders-db,reporting/bulk-writes-need-a-human"
        ),
        "{csv}"
    );
    assert!(
        csv.contains("alice approve checked the ticket,90\n"),
        "{csv}"
    );
    assert!(csv.contains("bob deny checked the ticket,4000\n"), "{csv}");
    // Statistics of the period only (the 200-day-old event is outside).
    let summary = json_of("summary.json");
    assert_eq!(summary["auditEvents"], 5, "{summary}");
    assert_eq!(summary["auditVerified"], true);
    assert_eq!(
        summary["denialsByRule"],
        json!({"reporting/no-schema-changes": 2})
    );
    assert_eq!(summary["maskedValuesByConnection"], json!({"orders-db": 7}));
    assert_eq!(
        summary["approvalLatencySeconds"],
        json!({"count": 2, "median": 4000, "max": 4000})
    );
    assert_eq!(summary["accessRequests"], 2);
    let samples = json_of("samples/approved-requests.json");
    assert_eq!(samples["samples"].as_array().unwrap().len(), 1);
    assert_eq!(
        samples["samples"][0]["auditTrail"][0]["approval"]["decidedBy"],
        "alice"
    );
    let verification = json_of("audit/verification.json");
    assert_eq!(verification["files"][0]["report"]["events"], 6);
    let mapping = json_of("soc2-mapping.json");
    let criteria: Vec<&str> = mapping
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["criterion"].as_str().unwrap())
        .collect();
    assert_eq!(
        criteria,
        [
            "CC6.1", "CC6.2", "CC6.3", "CC6.6", "CC7.2", "CC7.3", "CC8.1"
        ]
    );
    assert!(read("grc/denials-by-rule.csv").contains("reporting/no-schema-changes,2\n"));
    // OSCAL assessment results: one finding per criterion. No checkpoints
    // were given, so CC7.2 (an anchored audit) is not satisfied; the rest are.
    let oscal = json_of("oscal-assessment-results.json");
    let findings = oscal["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap()
        .clone();
    let states: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["target"]["target-id"].as_str().unwrap(),
                f["target"]["status"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("cc6.1", "satisfied"),
            ("cc6.2", "satisfied"),
            ("cc6.3", "satisfied"),
            ("cc6.6", "satisfied"),
            ("cc7.2", "not-satisfied"),
            ("cc7.3", "satisfied"),
            ("cc8.1", "satisfied"),
        ]
    );
    let html = read("report.html");
    assert!(
        html.contains("<svg") && html.contains("Denials by rule"),
        "{html}"
    );
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "the report must open offline"
    );

    // Untouched, the package verifies offline.
    let dir_arg = out_dir.to_str().unwrap();
    let out = kubectl_sluice(None, &["evidence", "verify", dir_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("OK: "),
        "{}",
        text(&out.stdout)
    );

    // The same package as one .tar.gz: verifies; a tampered member is named;
    // a hostile member (a path out of the package, a link) is refused.
    let tarball = dir.path().join("evidence.tar.gz");
    let out = export(&kubeconfig, None, &audit, &tarball);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("report.html is evidence/report.html in it"),
        "{}",
        text(&out.stdout)
    );
    let members = tar_members(&tarball);
    assert!(
        members.iter().any(|(p, _)| p == "evidence/report.html")
            && members.iter().any(|(p, _)| p == "evidence/manifest.json"),
        "{:?}",
        members.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    let tar_arg = tarball.to_str().unwrap();
    let out = kubectl_sluice(None, &["evidence", "verify", tar_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("OK: "),
        "{}",
        text(&out.stdout)
    );
    let tampered = dir.path().join("tampered.tar.gz");
    let edited: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|(p, b)| {
            let b = if p == "evidence/summary.json" {
                String::from_utf8(b.clone())
                    .unwrap()
                    .replace("\"auditEvents\": 5", "\"auditEvents\": 4")
                    .into_bytes()
            } else {
                b.clone()
            };
            (p.clone(), b)
        })
        .collect();
    write_tar(&tampered, &edited, None);
    let out = kubectl_sluice(None, &["evidence", "verify", tampered.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("summary.json: altered"),
        "{}",
        text(&out.stderr)
    );
    // Where the hostile members would land: beside the directory verify
    // unpacks into (the system's temporary directory), and an absolute path.
    let escaped = format!("sluice-escaped-{}.txt", std::process::id());
    let traversal = format!("evidence/../../{escaped}");
    let absolute = std::env::temp_dir().join(format!("abs-{escaped}"));
    let absolute = absolute.to_str().unwrap().to_string();
    for (name, hostile) in [
        ("traversal.tar.gz", traversal.as_str()),
        ("absolute.tar.gz", absolute.as_str()),
    ] {
        let path = dir.path().join(name);
        write_tar(&path, &members, Some(hostile));
        let out = kubectl_sluice(None, &["evidence", "verify", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("member {hostile:?} is refused")),
            "{name}: {err}"
        );
        assert!(
            !std::env::temp_dir().join(&escaped).exists(),
            "{name}: a member escaped"
        );
        assert!(!Path::new(&absolute).exists(), "{name}: a member escaped");
    }

    // An altered file fails, named.
    let summary_path = out_dir.join("summary.json");
    let original = read("summary.json");
    std::fs::write(
        &summary_path,
        original.replace("\"auditEvents\": 5", "\"auditEvents\": 4"),
    )
    .unwrap();
    let out = kubectl_sluice(None, &["evidence", "verify", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("summary.json: altered"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&summary_path, &original).unwrap();
    // A removed file and an added one.
    let csv_path = out_dir.join("grc/denials-by-rule.csv");
    std::fs::rename(&csv_path, out_dir.join("grc/extra.csv")).unwrap();
    let out = kubectl_sluice(None, &["evidence", "verify", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("grc/denials-by-rule.csv: missing")
            && err.contains("grc/extra.csv: not in the manifest"),
        "{err}"
    );
    std::fs::rename(out_dir.join("grc/extra.csv"), &csv_path).unwrap();
    // An audit file edited together with its manifest hash still fails: the chain.
    let audit_name = "audit/01-audit.jsonl";
    let edited = read(audit_name).replacen("DROP TABLE customers", "SELECT 1", 1);
    std::fs::write(out_dir.join(audit_name), &edited).unwrap();
    let mut manifest = json_of("manifest.json");
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["path"] == audit_name {
            use sha2::Digest;
            f["sha256"] = json!(
                sha2::Sha256::digest(edited.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
        }
    }
    std::fs::write(out_dir.join("manifest.json"), manifest.to_string()).unwrap();
    let out = kubectl_sluice(None, &["evidence", "verify", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("audit/01-audit.jsonl: the audit does not verify: \"edited\""),
        "{}",
        text(&out.stderr)
    );
}

/// The members of a .tar.gz (path, bytes), in order.
fn tar_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((path, bytes));
    }
    out
}

/// Writes `members` as a .tar.gz, with one more member named `hostile`
/// (written raw into the header: the tar crate refuses such names itself).
fn write_tar(path: &Path, members: &[(String, Vec<u8>)], hostile: Option<&str>) {
    let file = std::fs::File::create(path).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let raw = &mut header.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, bytes).unwrap();
    };
    if let Some(h) = hostile {
        add(h, b"escaped");
    }
    for (name, bytes) in members {
        add(name, bytes);
    }
    builder.into_inner().unwrap().finish().unwrap();
}
