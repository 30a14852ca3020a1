//! The package being written: each file with its hash for the manifest,
//! and the small text helpers (hex, CSV) its files are made with.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{EvidenceError, io};

/// A package being written: each file's hash for the manifest.
pub(super) struct Package {
    pub(super) dir: PathBuf,
    pub(super) files: Vec<Value>,
}

impl Package {
    pub(super) fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), EvidenceError> {
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

    pub(super) fn json(&mut self, name: &str, value: &Value) -> Result<(), EvidenceError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
        self.write(name, text.as_bytes())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
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

pub(super) fn csv_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = header.join(",") + "\n";
    for row in rows {
        out.push_str(&row.iter().map(|f| csv(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// An object as exported: no managedFields, no last-applied annotation.
pub(super) fn clean(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    v
}
