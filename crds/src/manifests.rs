//! The multi-document YAML a user applies (Namespace, Secret, Connection,
//! AccessPolicy), read from a file or a folder.
//!
//! The CLI's `policy eval` and the sidecar's standalone mode read exactly what a
//! user would `kubectl apply`, so a policy can be tried before it is applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::{AccessPolicy, Connection};

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or not a valid object of its kind.
    #[error("{path}: document {index}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// The parse error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A document lacks apiVersion/kind or a name.
    #[error("{path}: document {index}: {message}")]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// What is missing.
        message: String,
    },
    /// A folder holds no YAML at all.
    #[error("{path}: no .yaml or .yml files found")]
    Empty {
        /// The folder.
        path: PathBuf,
    },
}

/// Everything read from a set of manifests. Objects without a namespace get the
/// default namespace given to [`ManifestSet::load`], as `kubectl apply -n` would.
#[derive(Debug, Default, Clone)]
pub struct ManifestSet {
    /// Namespace names declared.
    pub namespaces: Vec<String>,
    /// Secrets by (namespace, name): key to decoded bytes (`data` and `stringData` merged).
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// Connections.
    pub connections: Vec<Connection>,
    /// AccessPolicies.
    pub policies: Vec<AccessPolicy>,
    /// Kinds that were skipped (neither of the above), as `kind/name`.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

impl ManifestSet {
    /// Reads a file, or every `.yaml`/`.yml` file of a folder (sorted, not recursive).
    pub fn load(path: &Path, default_namespace: &str) -> Result<Self, ManifestError> {
        let read_err = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mut files = Vec::new();
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(read_err)? {
                let p = entry.map_err(read_err)?.path();
                if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(ManifestError::Empty {
                    path: path.to_path_buf(),
                });
            }
        } else {
            files.push(path.to_path_buf());
        }
        let mut set = ManifestSet::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                path: file.clone(),
                source,
            })?;
            set.add_str(&text, &file, default_namespace)?;
        }
        Ok(set)
    }

    /// Adds the documents of one YAML text; `source` names it in errors.
    pub fn add_str(
        &mut self,
        text: &str,
        source: &Path,
        default_namespace: &str,
    ) -> Result<(), ManifestError> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let index = i + 1;
            let invalid = |e| ManifestError::Invalid {
                path: source.to_path_buf(),
                index,
                source: e,
            };
            let value = serde_yaml::Value::deserialize(doc).map_err(invalid)?;
            if value.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            let tm: TypeMeta = serde_yaml::from_value(value.clone()).map_err(invalid)?;
            let (Some(api_version), Some(kind)) = (tm.api_version, tm.kind) else {
                return Err(ManifestError::Incomplete {
                    path: source.to_path_buf(),
                    index,
                    message: "apiVersion and kind are required".into(),
                });
            };
            let incomplete = |message: String| ManifestError::Incomplete {
                path: source.to_path_buf(),
                index,
                message,
            };
            match (api_version.as_str(), kind.as_str()) {
                ("v1", "Namespace") => {
                    let name = value
                        .get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(|n| n.as_str())
                        .ok_or_else(|| incomplete("Namespace without metadata.name".into()))?;
                    self.namespaces.push(name.to_string());
                }
                ("v1", "Secret") => {
                    let secret: Secret = serde_yaml::from_value(value).map_err(invalid)?;
                    let name = secret
                        .metadata
                        .name
                        .clone()
                        .ok_or_else(|| incomplete("Secret without metadata.name".into()))?;
                    let ns = secret
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| default_namespace.into());
                    let mut data: BTreeMap<String, Vec<u8>> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    for (k, v) in secret.string_data.unwrap_or_default() {
                        data.insert(k, v.into_bytes());
                    }
                    self.secrets.insert((ns, name), data);
                }
                (crate::API_VERSION, "Connection") => {
                    let mut c: Connection = serde_yaml::from_value(value).map_err(invalid)?;
                    if c.metadata.name.is_none() {
                        return Err(incomplete("Connection without metadata.name".into()));
                    }
                    c.metadata
                        .namespace
                        .get_or_insert_with(|| default_namespace.into());
                    self.connections.push(c);
                }
                (crate::API_VERSION, "AccessPolicy") => {
                    let mut p: AccessPolicy = serde_yaml::from_value(value).map_err(invalid)?;
                    if p.metadata.name.is_none() {
                        return Err(incomplete("AccessPolicy without metadata.name".into()));
                    }
                    p.metadata
                        .namespace
                        .get_or_insert_with(|| default_namespace.into());
                    self.policies.push(p);
                }
                (_, kind) => {
                    let name = value
                        .get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(|n| n.as_str())
                        .unwrap_or("?");
                    self.skipped.push(format!("{kind}/{name}"));
                }
            }
        }
        Ok(())
    }

    /// The Connection `name` in `namespace`.
    pub fn connection(&self, namespace: &str, name: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.metadata.namespace.as_deref() == Some(namespace)
        })
    }

    /// The AccessPolicies of `namespace`.
    pub fn policies_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a AccessPolicy> + 'a {
        self.policies
            .iter()
            .filter(move |p| p.metadata.namespace.as_deref() == Some(namespace))
    }

    /// One key of a Secret.
    pub fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Option<&[u8]> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|d| d.get(key))
            .map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
data: {username: YXBw}
stringData: {password: s3cret}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: db}
spec:
  protocol: postgres
  upstream: {host: localhost, port: 5432, database: orders, tls: {mode: disable}}
  credentials: {secretRef: {name: creds}}
  listen: {port: 15432}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
"#;

    #[test]
    fn reads_every_kind_and_defaults_the_namespace() {
        let mut set = ManifestSet::default();
        set.add_str(DOCS, Path::new("t.yaml"), "shop").unwrap();
        assert_eq!(set.namespaces, vec!["shop"]);
        assert_eq!(
            set.secret_key("shop", "creds", "username"),
            Some(&b"app"[..])
        );
        assert_eq!(
            set.secret_key("shop", "creds", "password"),
            Some(&b"s3cret"[..])
        );
        assert!(set.connection("shop", "db").is_some());
        assert_eq!(set.skipped, vec!["Deployment/web"]);
    }

    #[test]
    fn names_the_bad_document() {
        let mut set = ManifestSet::default();
        let err = set
            .add_str(
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n",
                Path::new("x.yaml"),
                "d",
            )
            .unwrap_err();
        assert!(err.to_string().starts_with("x.yaml: document 2:"), "{err}");
        let err = set
            .add_str("apiVersion: sluice.dev/v1alpha1\nkind: Connection\nmetadata: {name: c}\nspec: {protocol: ftp}\n", Path::new("y.yaml"), "d")
            .unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
    }
}
