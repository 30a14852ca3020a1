//! The SOC 2 criteria the package supports, and the same mapping as OSCAL
//! assessment results.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::package::hex;

/// A SOC 2 criterion: its name, how Sluice meets it, and the package files
/// that support it.
pub(super) type Criterion = (&'static str, &'static str, Vec<&'static str>);

/// The SOC 2 criteria and the package files that support them.
pub(super) fn soc2_mapping() -> Vec<Criterion> {
    vec![
        (
            "CC6.1",
            "Logical access to protected information assets is restricted: workloads reach databases and APIs only through the sidecar, which holds the credentials, decides every statement against the AccessPolicies and masks the values their masking rules protect (counted by policy).",
            vec![
                "policies/accesspolicies.json",
                "policies/connections.json",
                "grc/masked-values-by-policy.csv",
            ],
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
            "Changes are authorised and traceable: writes that need approval ran only after their AccessRequest was approved; each version of each AccessPolicy a sidecar put in force is in the chained audit with its time, generation, digest and spec.",
            vec![
                "access-requests/accessrequests.json",
                "samples/approved-requests.json",
                "policies/accesspolicies.json",
                "policies/history.json",
            ],
        ),
    ]
}

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
pub(super) fn oscal(
    mapping: &[Criterion],
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
