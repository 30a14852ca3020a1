//! Decoding of the few protobuf request bodies kubectl sends.
//!
//! kubectl's typed client posts built-in kinds as
//! `application/vnd.kubernetes.protobuf` (`kubectl create token`,
//! `create namespace|secret|configmap|serviceaccount`). This decodes those
//! kinds into JSON; other protobuf bodies are refused with 415.

use base64::Engine as _;
use serde_json::{Map, Value, json};

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = pos.checked_add(8)?;
                continue;
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let slice = buf.get(pos..end)?;
                pos = end;
                Wire::Bytes(slice)
            }
            5 => {
                pos = pos.checked_add(4)?;
                continue;
            }
            _ => return None,
        };
        out.push((tag >> 3, wire));
    }
    Some(out)
}

fn text(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, w) in fields(b)? {
        if let Wire::Bytes(x) = w {
            match n {
                1 => key = String::from_utf8_lossy(x).into_owned(),
                2 if bytes_value => {
                    value = json!(base64::engine::general_purpose::STANDARD.encode(x))
                }
                2 => value = text(x),
                _ => {}
            }
        }
    }
    Some((key, value))
}

fn insert_map(
    obj: &mut Map<String, Value>,
    field: &str,
    b: &[u8],
    bytes_value: bool,
) -> Option<()> {
    let (k, v) = map_entry(b, bytes_value)?;
    obj.entry(field.to_string()).or_insert_with(|| json!({}))[k] = v;
    Some(())
}

fn push(obj: &mut Map<String, Value>, field: &str, v: Value) {
    if let Some(a) = obj
        .entry(field.to_string())
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        a.push(v);
    }
}

fn owner_ref(b: &[u8]) -> Option<Value> {
    let mut o = Map::new();
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => o.insert("kind".into(), text(x)),
            (3, Wire::Bytes(x)) => o.insert("name".into(), text(x)),
            (4, Wire::Bytes(x)) => o.insert("uid".into(), text(x)),
            (5, Wire::Bytes(x)) => o.insert("apiVersion".into(), text(x)),
            (6, Wire::Varint(x)) => o.insert("controller".into(), json!(x != 0)),
            (7, Wire::Varint(x)) => o.insert("blockOwnerDeletion".into(), json!(x != 0)),
            _ => None,
        };
    }
    Some(Value::Object(o))
}

fn meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => {
                m.insert("name".into(), text(x));
            }
            (2, Wire::Bytes(x)) => {
                m.insert("generateName".into(), text(x));
            }
            (3, Wire::Bytes(x)) => {
                m.insert("namespace".into(), text(x));
            }
            (6, Wire::Bytes(x)) => {
                m.insert("resourceVersion".into(), text(x));
            }
            (11, Wire::Bytes(x)) => insert_map(&mut m, "labels", x, false)?,
            (12, Wire::Bytes(x)) => insert_map(&mut m, "annotations", x, false)?,
            (13, Wire::Bytes(x)) => push(&mut m, "ownerReferences", owner_ref(x)?),
            (14, Wire::Bytes(x)) => push(&mut m, "finalizers", text(x)),
            _ => {}
        }
    }
    Some(Value::Object(m))
}

fn token_request_spec(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => push(&mut s, "audiences", text(x)),
            (3, Wire::Bytes(x)) => {
                let mut r = Map::new();
                for (rn, rw) in fields(x)? {
                    if let Wire::Bytes(y) = rw {
                        let key = match rn {
                            1 => "kind",
                            2 => "apiVersion",
                            3 => "name",
                            4 => "uid",
                            _ => continue,
                        };
                        r.insert(key.into(), text(y));
                    }
                }
                s.insert("boundObjectRef".into(), Value::Object(r));
            }
            (4, Wire::Varint(x)) => {
                s.insert("expirationSeconds".into(), json!(x));
            }
            _ => {}
        }
    }
    Some(Value::Object(s))
}

fn access_review_spec(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => {
                let mut r = Map::new();
                for (rn, rw) in fields(x)? {
                    if let Wire::Bytes(y) = rw {
                        let key = match rn {
                            1 => "namespace",
                            2 => "verb",
                            3 => "group",
                            4 => "version",
                            5 => "resource",
                            6 => "subresource",
                            7 => "name",
                            _ => continue,
                        };
                        r.insert(key.into(), text(y));
                    }
                }
                s.insert("resourceAttributes".into(), Value::Object(r));
            }
            (3, Wire::Bytes(x)) => {
                s.insert("user".into(), text(x));
            }
            (4, Wire::Bytes(x)) => push(&mut s, "groups", text(x)),
            (6, Wire::Bytes(x)) => {
                s.insert("uid".into(), text(x));
            }
            _ => {}
        }
    }
    Some(Value::Object(s))
}

/// A message whose fields are all strings: (field number, JSON name, repeated).
fn strings_msg(b: &[u8], spec: &[(u64, &str, bool)]) -> Option<Value> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        let (Some((_, key, repeated)), Wire::Bytes(x)) = (spec.iter().find(|(f, _, _)| *f == n), w)
        else {
            continue;
        };
        if *repeated {
            push(&mut m, key, text(x));
        } else if !x.is_empty() {
            m.insert(key.to_string(), text(x));
        }
    }
    Some(Value::Object(m))
}

const POLICY_RULE: &[(u64, &str, bool)] = &[
    (1, "verbs", true),
    (2, "apiGroups", true),
    (3, "resources", true),
    (4, "resourceNames", true),
    (5, "nonResourceURLs", true),
];
const SUBJECT: &[(u64, &str, bool)] = &[
    (1, "kind", false),
    (2, "apiGroup", false),
    (3, "name", false),
    (4, "namespace", false),
];
const ROLE_REF: &[(u64, &str, bool)] = &[
    (1, "apiGroup", false),
    (2, "kind", false),
    (3, "name", false),
];

/// Decodes a `k8s\0`-enveloped protobuf body of a supported kind into JSON.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(b"k8s\0")
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut object: &[u8] = &[];
    for (n, w) in fields(raw).ok_or("the protobuf envelope is malformed")? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm).ok_or("the protobuf type meta is malformed")? {
                    match (tn, tw) {
                        (1, Wire::Bytes(x)) => {
                            api_version = String::from_utf8_lossy(x).into_owned()
                        }
                        (2, Wire::Bytes(x)) => kind = String::from_utf8_lossy(x).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => object = x,
            _ => {}
        }
    }
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    let malformed = || format!("the protobuf {kind} is malformed");
    let supported = kind.ends_with("SubjectAccessReview")
        || matches!(
            kind.as_str(),
            "TokenRequest"
                | "Namespace"
                | "Secret"
                | "ConfigMap"
                | "ServiceAccount"
                | "Role"
                | "ClusterRole"
                | "RoleBinding"
                | "ClusterRoleBinding"
        );
    if !supported {
        return Err(format!(
            "protobuf bodies are only decoded for TokenRequest, Namespace, Secret, ConfigMap, ServiceAccount, RBAC and access-review kinds, not {kind}; send JSON"
        ));
    }
    for (n, w) in fields(object).ok_or_else(malformed)? {
        match (kind.as_str(), n, w) {
            (_, 1, Wire::Bytes(x)) => {
                out.insert("metadata".into(), meta(x).ok_or_else(malformed)?);
            }
            (k, 2, Wire::Bytes(x)) if k.ends_with("SubjectAccessReview") => {
                out.insert("spec".into(), access_review_spec(x).ok_or_else(malformed)?);
            }
            ("Role" | "ClusterRole", 2, Wire::Bytes(x)) => {
                push(
                    &mut out,
                    "rules",
                    strings_msg(x, POLICY_RULE).ok_or_else(malformed)?,
                );
            }
            ("RoleBinding" | "ClusterRoleBinding", 2, Wire::Bytes(x)) => {
                push(
                    &mut out,
                    "subjects",
                    strings_msg(x, SUBJECT).ok_or_else(malformed)?,
                );
            }
            ("RoleBinding" | "ClusterRoleBinding", 3, Wire::Bytes(x)) => {
                out.insert(
                    "roleRef".into(),
                    strings_msg(x, ROLE_REF).ok_or_else(malformed)?,
                );
            }
            ("TokenRequest", 2, Wire::Bytes(x)) => {
                out.insert("spec".into(), token_request_spec(x).ok_or_else(malformed)?);
            }
            ("Secret", 2, Wire::Bytes(x)) => {
                insert_map(&mut out, "data", x, true).ok_or_else(malformed)?
            }
            ("Secret", 3, Wire::Bytes(x)) => {
                out.insert("type".into(), text(x));
            }
            ("Secret", 4, Wire::Bytes(x)) => {
                insert_map(&mut out, "stringData", x, false).ok_or_else(malformed)?
            }
            ("Secret", 5, Wire::Varint(x)) | ("ConfigMap", 4, Wire::Varint(x)) => {
                out.insert("immutable".into(), json!(x != 0));
            }
            ("ConfigMap", 2, Wire::Bytes(x)) => {
                insert_map(&mut out, "data", x, false).ok_or_else(malformed)?
            }
            ("ConfigMap", 3, Wire::Bytes(x)) => {
                insert_map(&mut out, "binaryData", x, true).ok_or_else(malformed)?
            }
            ("ServiceAccount", 4, Wire::Varint(x)) => {
                out.insert("automountServiceAccountToken".into(), json!(x != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_token_request() {
        let meta = field(1, b"sa");
        let spec = [field(1, b"aud"), vec![4 << 3, 0xd0, 0x0f]].concat(); // expirationSeconds 2000
        let object = [field(1, &meta), field(2, &spec)].concat();
        let type_meta = [
            field(1, b"authentication.k8s.io/v1"),
            field(2, b"TokenRequest"),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &object)].concat();
        let v = decode(&body).expect("decodes");
        assert_eq!(v["kind"], "TokenRequest");
        assert_eq!(v["metadata"]["name"], "sa");
        assert_eq!(
            v["spec"],
            json!({"audiences": ["aud"], "expirationSeconds": 2000})
        );
        assert!(decode(b"not protobuf").is_err());
        assert!(
            decode(b"k8s\0\x0a\xff").is_err(),
            "a length past the end is refused"
        );
    }
}
