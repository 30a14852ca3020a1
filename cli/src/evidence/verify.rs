//! `evidence verify`: a package re-checked offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::package::hex;
use super::{EvidenceError, FORMAT, VerifyArgs, archive, audit_verify, io};

pub(super) fn verify_audit(
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
