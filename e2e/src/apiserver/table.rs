//! The `meta.k8s.io/v1` Table format kubectl asks for, with CRD printer columns.

use super::registry::{ResourceType, Special};
use super::request::Req;
use serde_json::{Value, json};

fn col(name: &str, ty: &str, format: &str, description: &str, priority: u8) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// Human age like kubectl prints it ("5s", "3m", "2d").
fn age(ts: &Value) -> String {
    let Some(t) = ts
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Evaluates the JSONPath subset used by printer columns:
/// `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur = vec![obj.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let sel = &r[..end];
            rest = &r[end + 1..];
            let items: Vec<Value> = cur
                .iter()
                .filter_map(|v| v.as_array().cloned())
                .flatten()
                .collect();
            cur = if sel == "*" {
                items
            } else if let Ok(i) = sel.parse::<usize>() {
                cur.iter().filter_map(|v| v.get(i).cloned()).collect()
            } else if let Some(f) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = match f.split_once("==") {
                    Some((a, b)) => (a.trim(), Some(b.trim().trim_matches(['"', '\'']))),
                    None => (f.trim(), None),
                };
                items
                    .into_iter()
                    .filter(|it| {
                        let got = jsonpath(it, &format!(".{field}"));
                        match want {
                            Some(w) => got.first().is_some_and(|g| {
                                g.as_str().map(str::to_string).unwrap_or(g.to_string()) == w
                            }),
                            None => !got.is_empty(),
                        }
                    })
                    .collect()
            } else {
                return Vec::new();
            };
        } else {
            return Vec::new();
        }
    }
    cur
}

fn cell(v: Option<&Value>, ty: &str) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(v) if ty == "date" => json!(age(v)),
        Some(Value::String(s)) => json!(s),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(v) => json!(v.to_string()),
    }
}

fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    );
    let age_col = col(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
    if let Some(crd) = &rt.crd {
        if crd.columns.is_empty() {
            return vec![name, age_col];
        }
        let mut cols = vec![name];
        for c in &crd.columns {
            cols.push(col(
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or("string"),
                c["format"].as_str().unwrap_or_default(),
                c["description"].as_str().unwrap_or_default(),
                c["priority"].as_u64().unwrap_or(0) as u8,
            ));
        }
        return cols;
    }
    match (rt.special, rt.kind.as_str()) {
        (Special::Namespace, _) => vec![
            name,
            col("Status", "string", "", "The status of the namespace", 0),
            age_col,
        ],
        (Special::Pod, _) => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            col(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted.",
                0,
            ),
            age_col,
        ],
        (_, "Secret") => vec![
            name,
            col("Type", "string", "", "The type of secret", 0),
            col(
                "Data",
                "string",
                "",
                "The number of entries in the data.",
                0,
            ),
            age_col,
        ],
        (_, "ConfigMap") => vec![
            name,
            col("Data", "string", "", "Number of data in configmap", 0),
            age_col,
        ],
        (_, "ServiceAccount") => vec![
            name,
            col("Secrets", "string", "", "Number of secrets", 0),
            age_col,
        ],
        (_, "Lease") => vec![
            name,
            col("Holder", "string", "", "The holder of the lease", 0),
            age_col,
        ],
        (_, "Event") => vec![
            col(
                "Last Seen",
                "string",
                "",
                "Time since the event was last seen",
                0,
            ),
            col("Type", "string", "", "Type of the event", 0),
            col("Reason", "string", "", "Reason of the event", 0),
            col("Object", "string", "", "The object the event is about", 0),
            col("Message", "string", "", "The message of the event", 0),
        ],
        (_, "CustomResourceDefinition") => {
            vec![name, col("Created At", "date", "", "Creation time", 0)]
        }
        _ => vec![name, age_col],
    }
}

fn row_cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = o["metadata"]["name"].clone();
    let created = age(&o["metadata"]["creationTimestamp"]);
    let len = |v: &Value| {
        v.as_object()
            .map(|m| m.len())
            .or(v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    if let Some(crd) = &rt.crd {
        if crd.columns.is_empty() {
            return vec![name, json!(created)];
        }
        let mut cells = vec![name];
        for c in &crd.columns {
            let found = jsonpath(o, c["jsonPath"].as_str().unwrap_or_default());
            cells.push(cell(found.first(), c["type"].as_str().unwrap_or("string")));
        }
        return cells;
    }
    match (rt.special, rt.kind.as_str()) {
        (Special::Namespace, _) => vec![name, o["status"]["phase"].clone(), json!(created)],
        (Special::Pod, _) => {
            let total = o["spec"]["containers"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            let ready = o["status"]["containerStatuses"]
                .as_array()
                .map(|a| a.iter().filter(|c| c["ready"] == json!(true)).count())
                .unwrap_or(0);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                o["status"]["phase"].clone(),
                json!(0),
                json!(created),
            ]
        }
        (_, "Secret") => vec![
            name,
            o["type"].clone(),
            json!(len(&o["data"])),
            json!(created),
        ],
        (_, "ConfigMap") => vec![
            name,
            json!(len(&o["data"]) + len(&o["binaryData"])),
            json!(created),
        ],
        (_, "ServiceAccount") => vec![name, json!(len(&o["secrets"])), json!(created)],
        (_, "Lease") => vec![name, o["spec"]["holderIdentity"].clone(), json!(created)],
        (_, "Event") => {
            let core = rt.special == Special::CoreEvent;
            let last = [
                o["lastTimestamp"].clone(),
                o["deprecatedLastTimestamp"].clone(),
                o["eventTime"].clone(),
                o["metadata"]["creationTimestamp"].clone(),
            ]
            .into_iter()
            .find(|v| v.is_string())
            .unwrap_or(Value::Null);
            let regarding = if core {
                &o["involvedObject"]
            } else {
                &o["regarding"]
            };
            let message = if core { &o["message"] } else { &o["note"] };
            let object = format!(
                "{}/{}",
                regarding["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase(),
                regarding["name"].as_str().unwrap_or_default()
            );
            vec![
                json!(age(&last)),
                o["type"].clone(),
                o["reason"].clone(),
                json!(object),
                message.clone(),
            ]
        }
        (_, "CustomResourceDefinition") => vec![name, o["metadata"]["creationTimestamp"].clone()],
        _ => vec![name, json!(created)],
    }
}

/// Converts a list (`items`) into a Table.
pub fn table(rt: &ResourceType, list: &Value, req: &Req) -> Value {
    table_with(rt, list, req.q("includeObject").unwrap_or("Metadata"), true)
}

/// Converts a list into a Table; `headers` false leaves out the column definitions (watch events after the first).
pub fn table_with(rt: &ResourceType, list: &Value, include: &str, headers: bool) -> Value {
    let rows: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": row_cells(rt, o), "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": list["metadata"]["resourceVersion"]});
    if let Some(c) = list["metadata"].get("continue") {
        meta["continue"] = c.clone();
    }
    let cols = if headers {
        Value::Array(columns(rt))
    } else {
        Value::Null
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_conditions() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[0].type"), vec![json!("A")]);
        assert_eq!(jsonpath(&o, ".status.missing"), Vec::<Value>::new());
    }
}
