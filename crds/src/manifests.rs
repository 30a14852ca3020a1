//! The multi-document YAML a user applies (Namespace, Secret, Connection,
//! AccessPolicy), read from a file or a folder.
//!
//! The CLI's `policy eval` and the sidecar's standalone mode read exactly what a
//! user would `kubectl apply`, so a policy can be tried before it is applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde::de::DeserializeOwned;

use crate::{AccessPolicy, AccessPolicySpec, Connection};

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
    /// A document is not valid YAML.
    #[error("{path}: document {index}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// The parse error (it names the line and column); boxed, as the
        /// parser's error is large and this enum travels in every `Result`.
        #[source]
        source: Box<crate::yaml::Error>,
    },
    /// A field of an object has a value its kind does not accept.
    #[error("{path}: document {index} ({object}): {field}: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// The object, e.g. `AccessPolicy shop/reporting`.
        object: String,
        /// The field, e.g. `spec.rules[0].action`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// An object has a field its kind does not define. Unknown fields are
    /// refused rather than dropped: a misspelt `match` field dropped would
    /// leave a rule matching more than it says.
    #[error(
        "{path}: document {index} ({object}): unknown field {field}; check its spelling \
         (`kubectl explain {explain}` lists the fields)"
    )]
    UnknownField {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// The object, e.g. `AccessPolicy shop/reporting`.
        object: String,
        /// The field, e.g. `spec.rules[0].match.statments`.
        field: String,
        /// What `kubectl explain` takes to list the fields around it.
        explain: String,
    },
    /// A document's kind is neither one Sluice reads nor a Kubernetes kind it
    /// knows to skip (a misspelt `AccessPolicy` is not silently ignored).
    #[error(
        "{path}: document {index}: unknown kind {kind:?} of apiVersion {api_version:?} \
         (object {name}); Sluice reads Namespace and Secret (v1) and Connection and \
         AccessPolicy ({api}); check the spelling",
        api = crate::API_VERSION
    )]
    UnknownKind {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
        /// Its metadata.name, or `?`.
        name: String,
    },
    /// A rule's match names nothing, so it would match everything.
    #[error(
        "{path}: document {index} (AccessPolicy {object}): spec.rules[{rule}].match (rule \
         {name:?}) {problem}; name what the rule matches, or write `match: {{any: true}}` \
         for a catch-all"
    )]
    EmptyMatch {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// `NAMESPACE/NAME` of the policy.
        object: String,
        /// Index of the rule.
        rule: usize,
        /// Name of the rule.
        name: String,
        /// What is wrong with the match.
        problem: &'static str,
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
    /// Objects of other Kubernetes kinds, skipped, as `kind/name`;
    /// readers print them so that nothing is ignored unseen.
    pub skipped: Vec<String>,
}

/// Kinds of the core group (`apiVersion: v1`) that are skipped: a real
/// Kubernetes kind in a folder of manifests is no error, a misspelt one is.
/// `List` is not among them: the objects inside it would be skipped unseen.
const CORE_KINDS_SKIPPED: &[&str] = &[
    "Binding",
    "ConfigMap",
    "Endpoints",
    "Event",
    "LimitRange",
    "Node",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "ResourceQuota",
    "Service",
    "ServiceAccount",
];

/// Kinds of the Sluice API group that are not read from manifests.
const SLUICE_KINDS_SKIPPED: &[&str] = &["AccessRequest"];

/// Why a document did not decode into its kind.
enum Decode {
    /// Fields its kind does not define (paths like `spec.rules[0].match.x`).
    Unknown(Vec<String>),
    /// A field with a value the kind does not accept.
    Field { field: String, message: String },
}

/// The CustomResource types leave apiVersion and kind to the API server.
const TYPE_META: &[&str] = &["apiVersion", "kind"];

/// One document of a manifest file, as errors name it.
struct Document<'a> {
    source: &'a Path,
    /// 1-based.
    index: usize,
    /// `Kind namespace/name` (`Namespace name`).
    object: String,
    /// The namespace of objects that name none.
    default_namespace: &'a str,
}

impl Document<'_> {
    fn incomplete(&self, message: &str) -> ManifestError {
        ManifestError::Incomplete {
            path: self.source.to_path_buf(),
            index: self.index,
            message: message.to_string(),
        }
    }

    /// A decoding error as the user sees it; `explain` is the resource
    /// `kubectl explain` takes.
    fn refused(&self, e: Decode, explain: &str) -> ManifestError {
        match e {
            Decode::Unknown(fields) => ManifestError::UnknownField {
                path: self.source.to_path_buf(),
                index: self.index,
                object: self.object.clone(),
                field: fields.join(", "),
                explain: explain.to_string(),
            },
            Decode::Field { field, message } => ManifestError::Field {
                path: self.source.to_path_buf(),
                index: self.index,
                object: self.object.clone(),
                field,
                message,
            },
        }
    }
}

/// Decodes `value` as `T`, refusing fields `T` does not define (except the
/// top-level `allowed` ones, e.g. `apiVersion` and `kind`, which the
/// CustomResource types leave to the API server).
///
/// `deny_unknown_fields` cannot do this: the CustomResource derive and
/// k8s-openapi's types do not set it, and it does not work through
/// `flatten`. serde_ignored reports every field the types skip, with its
/// path, whatever the types do.
fn decode<T: DeserializeOwned>(value: serde_json::Value, allowed: &[&str]) -> Result<T, Decode> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| {
        let field = field_path(&path);
        if !allowed.contains(&field.as_str()) {
            unknown.push(field);
        }
    };
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    // An unknown field is reported first even when decoding failed too: a
    // misspelt field is the likelier cause of a missing one.
    if !unknown.is_empty() {
        return Err(Decode::Unknown(unknown));
    }
    result.map_err(|e| Decode::Field {
        field: match e.path().to_string() {
            p if p == "." => "(document)".to_string(),
            p => p,
        },
        message: e.into_inner().to_string(),
    })
}

/// `spec.rules[0].match.statments`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// The first rule of `spec` whose match names nothing (it would match every
/// statement and request without saying so), with what is wrong with it.
/// `match: {any: true}` is the explicit catch-all. Every reader of
/// AccessPolicies refuses such a rule; the CRD schema refuses it too.
pub fn empty_match(spec: &AccessPolicySpec) -> Option<(usize, &str, &'static str)> {
    spec.rules.iter().enumerate().find_map(|(i, r)| {
        let m = &r.match_;
        let problem = if m.any == Some(false) {
            "sets any: false, which means nothing (any only takes true)"
        } else if m.any.is_none() && !m.has_sql_fields() && !m.has_http_fields() {
            "is empty"
        } else {
            return None;
        };
        Some((i, r.name.as_str(), problem))
    })
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
        // Empty documents (e.g. after a trailing `---`) are skipped.
        let docs = crate::yaml::documents::<serde_json::Value>(text).map_err(|(index, e)| {
            ManifestError::Invalid {
                path: source.to_path_buf(),
                index,
                source: Box::new(e),
            }
        })?;
        for (i, value) in docs.into_iter().enumerate() {
            self.add_document(value, source, i + 1, default_namespace)?;
        }
        Ok(())
    }

    /// Adds document `index` of `source`: read into its kind, or skipped
    /// and listed, or refused.
    fn add_document(
        &mut self,
        value: serde_json::Value,
        source: &Path,
        index: usize,
        default_namespace: &str,
    ) -> Result<(), ManifestError> {
        let text_of = |field: &str| {
            value
                .get(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let (Some(api_version), Some(kind)) = (text_of("apiVersion"), text_of("kind")) else {
            return Err(ManifestError::Incomplete {
                path: source.to_path_buf(),
                index,
                message: "apiVersion and kind are required (as strings)".into(),
            });
        };
        let meta_name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string();
        let object = {
            let ns = value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(|n| n.as_str())
                .unwrap_or(default_namespace);
            match kind.as_str() {
                "Namespace" => format!("{kind} {meta_name}"),
                _ => format!("{kind} {ns}/{meta_name}"),
            }
        };
        let doc = Document {
            source,
            index,
            object,
            default_namespace,
        };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                let namespace: Namespace =
                    decode(value, &[]).map_err(|e| doc.refused(e, "namespace"))?;
                let name = namespace
                    .metadata
                    .name
                    .ok_or_else(|| doc.incomplete("Namespace without metadata.name"))?;
                self.namespaces.push(name);
            }
            ("v1", "Secret") => self.add_secret(&doc, value)?,
            (crate::API_VERSION, "Connection") => self.add_connection(&doc, value)?,
            (crate::API_VERSION, "AccessPolicy") => self.add_policy(&doc, value)?,
            (crate::API_VERSION, k) if SLUICE_KINDS_SKIPPED.contains(&k) => {
                self.skipped.push(format!("{kind}/{meta_name}"));
            }
            ("v1", k) if CORE_KINDS_SKIPPED.contains(&k) => {
                self.skipped.push(format!("{kind}/{meta_name}"));
            }
            // Sluice's own group and the core group are known whole: any
            // other kind there is a mistake.
            (v, _) if v == "v1" || v.starts_with("sluice.dev/") || v == crate::GROUP => {
                return Err(ManifestError::UnknownKind {
                    path: source.to_path_buf(),
                    index,
                    api_version,
                    kind,
                    name: meta_name,
                });
            }
            // Other groups (apps/v1 Deployments, other operators' kinds)
            // are not Sluice's to judge: skipped, and listed.
            _ => {
                self.skipped.push(format!("{kind}/{meta_name}"));
            }
        }
        Ok(())
    }

    /// A Secret's data and stringData, by namespace and name.
    fn add_secret(
        &mut self,
        doc: &Document<'_>,
        value: serde_json::Value,
    ) -> Result<(), ManifestError> {
        let secret: Secret = decode(value, &[]).map_err(|e| doc.refused(e, "secret"))?;
        let name = secret
            .metadata
            .name
            .clone()
            .ok_or_else(|| doc.incomplete("Secret without metadata.name"))?;
        let ns = secret
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| doc.default_namespace.into());
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
        Ok(())
    }

    fn add_connection(
        &mut self,
        doc: &Document<'_>,
        value: serde_json::Value,
    ) -> Result<(), ManifestError> {
        let mut c: Connection =
            decode(value, TYPE_META).map_err(|e| doc.refused(e, "connection"))?;
        if c.metadata.name.is_none() {
            return Err(doc.incomplete("Connection without metadata.name"));
        }
        c.metadata
            .namespace
            .get_or_insert_with(|| doc.default_namespace.into());
        self.connections.push(c);
        Ok(())
    }

    /// An AccessPolicy, refused when a rule's match is empty.
    fn add_policy(
        &mut self,
        doc: &Document<'_>,
        value: serde_json::Value,
    ) -> Result<(), ManifestError> {
        let mut p: AccessPolicy =
            decode(value, TYPE_META).map_err(|e| doc.refused(e, "accesspolicy"))?;
        if p.metadata.name.is_none() {
            return Err(doc.incomplete("AccessPolicy without metadata.name"));
        }
        p.metadata
            .namespace
            .get_or_insert_with(|| doc.default_namespace.into());
        if let Some((rule, name, problem)) = empty_match(&p.spec) {
            return Err(ManifestError::EmptyMatch {
                path: doc.source.to_path_buf(),
                index: doc.index,
                object: doc
                    .object
                    .split_once(' ')
                    .map_or("", |(_, o)| o)
                    .to_string(),
                rule,
                name: name.to_string(),
                problem,
            });
        }
        self.policies.push(p);
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

    const POLICY: &str = "apiVersion: sluice.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  subjects: [{serviceAccount: a}]\n  connections: [db]\n  defaultAction: deny\n";

    fn load(text: &str) -> Result<ManifestSet, ManifestError> {
        let mut set = ManifestSet::default();
        set.add_str(text, Path::new("p.yaml"), "shop").map(|()| set)
    }

    /// A misspelt field is refused with the file, the document, the object
    /// and the field's path, wherever it is: a dropped `match` field would
    /// turn an allow rule into allow-everything.
    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let typo = format!(
            "{POLICY}  rules: [{{name: reads, match: {{statments: [select]}}, action: allow}}]\n"
        );
        let err = load(&typo).unwrap_err();
        assert!(matches!(err, ManifestError::UnknownField { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "p.yaml: document 1 (AccessPolicy shop/p): unknown field \
             spec.rules[0].match.statments; check its spelling (`kubectl explain \
             accesspolicy` lists the fields)"
        );
        for (doc, field) in [
            (
                format!("{POLICY}  limits: {{maxRows: 5, maxRowz: 1}}\n"),
                "spec.limits.maxRowz",
            ),
            (
                POLICY.replace(
                    "namespace: shop}",
                    "namespace: shop, labels: {a: b}, nmae: x}",
                ),
                "metadata.nmae",
            ),
            (
                format!("{POLICY}  defaultActon: allow\n"),
                "spec.defaultActon",
            ),
            (format!("{POLICY}extra: 1\n"), "extra"),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstrinData: {password: x}\n"
                    .to_string(),
                "strinData",
            ),
            (
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: s}\nspek: {}\n".to_string(),
                "spek",
            ),
            (
                DOCS.replace("listen: {port: 15432}", "listen: {port: 15432, host: x}"),
                "spec.listen.host",
            ),
        ] {
            let err = load(&doc).unwrap_err();
            assert!(
                matches!(&err, ManifestError::UnknownField { field: f, .. } if f == field),
                "{field}: {err}"
            );
        }
    }

    /// A rule's match must name something; `any: true` is the catch-all.
    #[test]
    fn an_empty_match_is_refused_and_a_catch_all_is_explicit() {
        for m in [
            "{}",
            "{statements: []}",
            "{tables: [], paths: []}",
            "{any: false}",
        ] {
            let doc = format!("{POLICY}  rules: [{{name: r, match: {m}, action: allow}}]\n");
            let err = load(&doc).unwrap_err();
            assert!(
                matches!(err, ManifestError::EmptyMatch { rule: 0, .. }),
                "{m}: {err:?}"
            );
            assert!(err.to_string().contains("match: {any: true}"), "{err}");
        }
        let err = load(&format!("{POLICY}  rules: [{{name: r, action: allow}}]\n")).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Field { field, message, .. }
                if field == "spec.rules[0]" && message.contains("match")),
            "{err}"
        );
        let set = load(&format!(
            "{POLICY}  rules: [{{name: r, match: {{any: true}}, action: allow}}]\n"
        ))
        .unwrap();
        assert_eq!(set.policies[0].spec.rules[0].match_.any, Some(true));
    }

    /// A misspelt Sluice or core kind is an error; other groups' kinds are
    /// skipped and listed.
    #[test]
    fn unknown_kinds_are_refused() {
        for (api, kind) in [
            ("sluice.dev/v1alpha1", "AccesPolicy"),
            ("sluice.dev/v1alpha2", "AccessPolicy"),
            ("v1", "Secrets"),
            ("v1", "List"),
        ] {
            let doc = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n");
            let err = load(&doc).unwrap_err();
            assert!(
                matches!(err, ManifestError::UnknownKind { .. }),
                "{kind}: {err:?}"
            );
            assert!(
                err.to_string().contains(&format!("unknown kind {kind:?}")),
                "{err}"
            );
            assert!(err.to_string().contains("(object x)"), "{err}");
        }
        let set = load(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\n",
        )
        .unwrap();
        assert_eq!(set.skipped, vec!["ServiceAccount/a", "Certificate/c"]);
    }
}
