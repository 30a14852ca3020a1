//! Strategic merge patch (for the built-in kinds served here) and
//! server-side apply with field managers.

use super::error::ApiError;
use super::registry::ResourceType;
use serde_json::{Map, Value, json};

/// Merge keys of built-in list fields (the `patchMergeKey` of kube's types).
fn builtin_merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims" => "name",
        "hostAliases" => "ip",
        "readinessGates" => "conditionType",
        "envFrom" | "tolerations" | "args" | "command" => return None,
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "webhooks" => "name",
        _ => return None,
    })
}

/// The merge key of the list at `path` (object keys from the root, `.spec.ports`) of a
/// `kind`: the same field name can carry different keys in different types. Service
/// `spec.ports` merge by `port` (k8s.io/api core/v1 types.go `ServiceSpec.Ports`
/// `patchMergeKey:"port"`), container `ports` by `containerPort`.
fn merge_key(kind: &str, path: &str) -> Option<&'static str> {
    if kind == "Service" && path == ".spec.ports" {
        return Some("port");
    }
    builtin_merge_key(path.rsplit('.').next().unwrap_or_default())
}

/// Applies a strategic merge patch to a built-in object (its `kind` picks the merge keys).
pub fn strategic_merge(cur: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    }
    let kind = cur["kind"].as_str().unwrap_or_default();
    Ok(smp(cur, patch, kind, ""))
}

fn smp(orig: &Value, patch: &Value, kind: &str, path: &str) -> Value {
    let Some(pmap) = patch.as_object() else {
        return patch.clone();
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut out = pmap.clone();
        out.remove("$patch");
        return Value::Object(out);
    }
    let mut out = orig.as_object().cloned().unwrap_or_default();
    for (k, pv) in pmap {
        if let Some(list_field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(cur), Some(del)) = (
                out.get_mut(list_field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let child = format!("{path}.{k}");
        let merged = match (out.get(k), pv) {
            (Some(ov @ Value::Object(_)), Value::Object(_)) => {
                if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(k);
                    continue;
                }
                smp(ov, pv, kind, &child)
            }
            (Some(Value::Array(ov)), Value::Array(pl)) => merge_list(ov, pl, kind, &child),
            (None, Value::Object(_)) => smp(&Value::Null, pv, kind, &child),
            _ => strip_directives(pv),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_list(orig: &[Value], patch: &[Value], kind: &str, path: &str) -> Value {
    if path == ".metadata.finalizers" {
        let mut out = orig.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(kind, path) else {
        return Value::Array(patch.iter().map(strip_directives).collect());
    };
    let mut out = orig.to_vec();
    for p in patch {
        let id = &p[key];
        let pos = out.iter().position(|o| &o[key] == id);
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                out.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => out[i] = smp(&out[i], p, kind, path),
            None => out.push(strip_directives(p)),
        }
    }
    Value::Array(out)
}

/// One step of a managed-fields path: `f:name` or `k:{"type":"Ready"}`.
type Path = Vec<String>;

/// List-map keys of a list field, from the CRD schema or kube's built-in types.
fn list_keys(rt: &ResourceType, path: &[String]) -> Option<Vec<String>> {
    if let Some(schema) = rt.crd.as_ref().and_then(|c| c.schema.as_ref()) {
        let mut node = schema;
        for step in path {
            if let Some(f) = step.strip_prefix("f:") {
                node = &node["properties"][f];
            } else {
                node = &node["items"];
            }
        }
        if node["x-kubernetes-list-type"].as_str() == Some("map") {
            return Some(
                node["x-kubernetes-list-map-keys"]
                    .as_array()?
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
            );
        }
        return None;
    }
    let field = path.last()?.strip_prefix("f:")?;
    builtin_merge_key(field).map(|k| vec![k.to_string()])
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let m: Map<String, Value> = keys.iter().map(|k| (k.clone(), item[k].clone())).collect();
    format!("k:{}", Value::Object(m))
}

fn leaf_paths(rt: &ResourceType, v: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(format!("f:{k}"));
                leaf_paths(rt, child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list_keys(rt, prefix) {
            Some(keys) if items.iter().all(Value::is_object) => {
                for item in items {
                    prefix.push(item_key(item, &keys));
                    leaf_paths(rt, item, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        },
        _ => out.push(prefix.clone()),
    }
}

fn to_trie(paths: &[Path]) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for step in p {
            let entry = node.entry(step.clone()).or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

fn from_trie(trie: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
    let Some(m) = trie.as_object() else { return };
    let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix.clone());
        }
        return;
    }
    for (k, v) in children {
        prefix.push(k.clone());
        from_trie(v, prefix, out);
        prefix.pop();
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for step in path {
        if let Some(f) = step.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = step.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|item| want.iter().all(|(wk, wv)| &item[wk] == wv))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for step in parent_path {
        let next = if let Some(f) = step.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = step.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| want.iter().all(|(wk, wv)| &item[wk] == wv))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:")
        && let Ok(want) = serde_json::from_str::<Map<String, Value>>(k)
        && let Some(a) = cur.as_array_mut()
    {
        a.retain(|item| !want.iter().all(|(wk, wv)| &item[wk] == wv));
    }
}

fn merge(rt: &ResourceType, cur: &Value, applied: &Value, prefix: &mut Path) -> Value {
    match (cur, applied) {
        (Value::Object(c), Value::Object(a)) => {
            let mut out = c.clone();
            for (k, av) in a {
                prefix.push(format!("f:{k}"));
                let merged = match c.get(k) {
                    Some(cv) => merge(rt, cv, av, prefix),
                    None => av.clone(),
                };
                prefix.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(c), Value::Array(a)) => match list_keys(rt, prefix) {
            Some(keys) if a.iter().all(Value::is_object) => {
                let mut out = c.clone();
                for item in a {
                    let id = item_key(item, &keys);
                    match out
                        .iter()
                        .position(|o| o.is_object() && item_key(o, &keys) == id)
                    {
                        Some(i) => {
                            prefix.push(id);
                            out[i] = merge(rt, &out[i], item, prefix);
                            prefix.pop();
                        }
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
            _ => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// The part of an apply configuration a manager owns fields in.
fn owned_part(applied: &Value, sub: Option<&str>, rt: &ResourceType) -> Value {
    let mut v = applied.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "name",
                "namespace",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "generation",
            ] {
                meta.remove(k);
            }
            if meta.is_empty() {
                m.remove("metadata");
            }
        }
        match sub {
            Some("status") => {
                let status = m.remove("status");
                m.clear();
                if let Some(s) = status {
                    m.insert("status".into(), s);
                }
            }
            _ if rt.status => {
                m.remove("status");
            }
            _ => {}
        }
    }
    v
}

/// The managedFields list after `manager` applied `applied` to an object with `existing` entries.
pub fn apply_managed(
    rt: &ResourceType,
    existing: &Value,
    manager: &str,
    sub: Option<&str>,
    applied: &Value,
) -> Value {
    let mut paths = Vec::new();
    leaf_paths(
        rt,
        &owned_part(applied, sub, rt),
        &mut Vec::new(),
        &mut paths,
    );
    let mut entries: Vec<Value> = existing.as_array().cloned().unwrap_or_default();
    set_entry(
        &mut entries,
        manager,
        sub,
        applied["apiVersion"].as_str().unwrap_or_default(),
        &paths,
    );
    Value::Array(entries)
}

/// Records a non-apply write by `manager`: it takes ownership of the fields it
/// changed (others lose them), and fields it removed are no longer owned by anyone.
pub fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: Option<&str>,
) {
    let new_part = owned_part(new, sub, rt);
    let old_part = old
        .map(|o| owned_part(o, sub, rt))
        .unwrap_or_else(|| json!({}));
    let mut new_paths = Vec::new();
    leaf_paths(rt, &new_part, &mut Vec::new(), &mut new_paths);
    let mut old_paths = Vec::new();
    leaf_paths(rt, &old_part, &mut Vec::new(), &mut old_paths);
    let changed: Vec<Path> = new_paths
        .into_iter()
        .filter(|p| lookup(&old_part, p) != lookup(&new_part, p))
        .collect();
    let removed: Vec<Path> = old_paths
        .into_iter()
        .filter(|p| lookup(&new_part, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    let mut entries: Vec<Value> = new["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for e in entries
        .iter_mut()
        .filter(|e| e["subresource"].as_str() == sub)
    {
        let mut theirs = Vec::new();
        from_trie(&e["fieldsV1"], &mut Vec::new(), &mut theirs);
        let before = theirs.len();
        theirs.retain(|p| !changed.iter().chain(&removed).any(|c| prefix_related(c, p)));
        if theirs.len() != before {
            e["fieldsV1"] = to_trie(&theirs);
        }
    }
    let mut mine = Vec::new();
    if let Some(e) = entries
        .iter()
        .find(|e| is_op_entry(e, manager, "Update", sub))
    {
        from_trie(&e["fieldsV1"], &mut Vec::new(), &mut mine);
    }
    for p in changed {
        if !mine.contains(&p) {
            mine.push(p);
        }
    }
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
    put_entry(&mut entries, manager, "Update", sub, &api_version, &mine);
    entries.retain(|e| e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));
    new["metadata"]["managedFields"] = Value::Array(entries);
}

fn set_entry(
    entries: &mut Vec<Value>,
    manager: &str,
    sub: Option<&str>,
    api_version: &str,
    paths: &[Path],
) {
    put_entry(entries, manager, "Apply", sub, api_version, paths);
}

fn put_entry(
    entries: &mut Vec<Value>,
    manager: &str,
    operation: &str,
    sub: Option<&str>,
    api_version: &str,
    paths: &[Path],
) {
    entries.retain(|e| !is_op_entry(e, manager, operation, sub));
    let mut e = json!({
        "manager": manager, "operation": operation, "apiVersion": api_version,
        "time": super::store::now(), "fieldsType": "FieldsV1", "fieldsV1": to_trie(paths),
    });
    if let Some(s) = sub {
        e["subresource"] = json!(s);
    }
    entries.push(e);
}

fn is_entry(e: &Value, manager: &str, sub: Option<&str>) -> bool {
    is_op_entry(e, manager, "Apply", sub)
}

fn is_op_entry(e: &Value, manager: &str, operation: &str, sub: Option<&str>) -> bool {
    e["manager"].as_str() == Some(manager)
        && e["operation"].as_str() == Some(operation)
        && e["subresource"].as_str() == sub
}

fn prefix_related(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// What kube refuses in an apply configuration for object `name` of
/// namespace `namespace` (the URL's) before applying it: one of another
/// group, version or kind than the endpoint's, whatever object it lands on,
/// and one that carries `metadata.managedFields` (k8s.io/apimachinery
/// fieldmanager `versionCheckManager.Apply`, `structuredMergeManager.Apply`);
/// one that names another object (k8s.io/apiserver handlers/patch.go
/// `checkName`).
pub fn check_apply_configuration(
    rt: &ResourceType,
    name: &str,
    namespace: &str,
    applied: &Value,
) -> Result<(), ApiError> {
    let api_version = applied["apiVersion"].as_str().unwrap_or_default();
    let kind = applied["kind"].as_str().unwrap_or_default();
    if api_version != rt.api_version() || kind != rt.kind {
        // schema.GroupVersionKind's String().
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        return Err(ApiError::bad_request(format!(
            "invalid object type: {group}/{version}, Kind={kind}"
        )));
    }
    if !applied["metadata"]["managedFields"].is_null() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    if let Some(named) = applied["metadata"]["name"].as_str()
        && named != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({named}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(named) = applied["metadata"]["namespace"].as_str()
        && !namespace.is_empty()
        && !named.is_empty()
        && named != namespace
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({named}) does not match the namespace on the request ({namespace})"
        )));
    }
    Ok(())
}

/// Server-side apply of `applied` by `manager` onto the current object.
pub fn apply(
    cur: &Value,
    applied: &Value,
    manager: &str,
    sub: Option<&str>,
    force: bool,
    rt: &ResourceType,
) -> Result<Value, ApiError> {
    let name = cur["metadata"]["name"].as_str().unwrap_or_default();
    let owned = owned_part(applied, sub, rt);
    let mut new_paths = Vec::new();
    leaf_paths(rt, &owned, &mut Vec::new(), &mut new_paths);
    let mut entries: Vec<Value> = cur["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut prev_paths = Vec::new();
    if let Some(e) = entries.iter().find(|e| is_entry(e, manager, sub)) {
        from_trie(&e["fieldsV1"], &mut Vec::new(), &mut prev_paths);
    }
    let preview = merge(rt, cur, &owned, &mut Vec::new());
    let last_applied: Option<Value> =
        cur["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok());
    let mut conflicts = Vec::new();
    let mut others_paths: Vec<Path> = Vec::new();
    for e in entries.iter_mut() {
        // A manager never conflicts with itself, whatever operation it used before.
        if e["manager"].as_str() == Some(manager) || e["subresource"].as_str() != sub {
            continue;
        }
        let mut theirs = Vec::new();
        from_trie(&e["fieldsV1"], &mut Vec::new(), &mut theirs);
        let other = e["manager"].as_str().unwrap_or_default().to_string();
        let clashing: Vec<Path> = theirs
            .iter()
            .filter(|p| {
                new_paths.iter().any(|n| prefix_related(n, p))
                    && lookup(cur, p) != lookup(&preview, p)
            })
            .cloned()
            .collect();
        if clashing.is_empty() {
            others_paths.extend(theirs);
            continue;
        }
        // Like kube's last-applied manager: fields that kubectl's client-side
        // apply set (they are in its last-applied annotation) pass to the
        // server-side applier without a conflict.
        let from_csa = other == "kubectl-client-side-apply"
            && last_applied
                .as_ref()
                .is_some_and(|la| clashing.iter().all(|p| lookup(la, p).is_some()));
        if force || from_csa {
            let kept: Vec<Path> = theirs
                .into_iter()
                .filter(|p| !clashing.contains(p))
                .collect();
            e["fieldsV1"] = to_trie(&kept);
            others_paths.extend(kept);
        } else {
            for p in clashing {
                let dotted: String = p
                    .iter()
                    .map(|s| format!(".{}", s.trim_start_matches("f:")))
                    .collect();
                conflicts.push(format!("conflict with \"{other}\": {dotted}"));
            }
            others_paths.extend(theirs);
        }
    }
    if !conflicts.is_empty() {
        let n = conflicts.len();
        let msg = if n == 1 {
            format!("Apply failed with 1 conflict: {}", conflicts[0])
        } else {
            format!("Apply failed with {n} conflicts: {}", conflicts.join("\n"))
        };
        return Err(ApiError::custom(409, "Conflict", msg).with_name(rt, name));
    }
    let mut out = cur.clone();
    for p in prev_paths.iter().filter(|p| !new_paths.contains(p)) {
        let shared = others_paths.iter().any(|o| o == p);
        if !shared {
            remove_path(&mut out, p);
        }
    }
    let mut out = merge(rt, &out, &owned, &mut Vec::new());
    set_entry(
        &mut entries,
        manager,
        sub,
        applied["apiVersion"].as_str().unwrap_or_default(),
        &new_paths,
    );
    out["metadata"]["managedFields"] = Value::Array(entries);
    if let Some(rv) = applied["metadata"]["resourceVersion"].as_str() {
        out["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
            "metadata": {"finalizers": ["f1"]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]},
            "metadata": {"finalizers": ["f2"]}});
        let out = strategic_merge(&cur, &p).ok();
        let out = out.as_ref();
        assert_eq!(
            out.map(|o| o["spec"]["containers"].as_array().map(Vec::len)),
            Some(Some(3))
        );
        assert_eq!(
            out.map(|o| o["spec"]["containers"][1]["image"].clone()),
            Some(json!("z"))
        );
        assert_eq!(
            out.map(|o| o["metadata"]["finalizers"].clone()),
            Some(json!(["f1", "f2"]))
        );
    }

    /// The same field name merges by a different key in a Service and in a container
    /// (kube's `patchMergeKey` tags); merging Service ports by `containerPort` (absent)
    /// would collapse or duplicate them.
    #[test]
    fn strategic_merge_uses_each_lists_own_merge_key() {
        let svc = json!({"kind": "Service", "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}]}});
        let p = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}, {"name": "admin", "port": 9000}]}});
        let out = strategic_merge(&svc, &p).unwrap_or_default();
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 9443},
                {"name": "admin", "port": 9000}
            ])
        );
        let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "name": "web"}]}]}});
        let p = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}});
        let out = strategic_merge(&pod, &p).unwrap_or_default();
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "web", "protocol": "TCP"}])
        );
        // A `finalizers` list elsewhere than metadata is not a set union.
        let ns = json!({"kind": "Namespace", "spec": {"finalizers": ["kubernetes"]}, "metadata": {"finalizers": ["a"]}});
        let p = json!({"spec": {"finalizers": ["other"]}, "metadata": {"finalizers": ["b"]}});
        let out = strategic_merge(&ns, &p).unwrap_or_default();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["finalizers"], json!(["other"]));
    }

    /// kube-apiserver refuses an apply configuration of another version or
    /// kind than its endpoint's (the test server applied it to the stored
    /// object's version and kind), one that carries managedFields, and one
    /// that names another object than the URL.
    #[test]
    fn apply_configurations_of_another_type_or_with_managed_fields_are_refused() {
        let rt = super::super::registry::builtins()
            .into_iter()
            .find(|t| t.kind == "ConfigMap" && t.group.is_empty());
        let Some(rt) = rt else {
            panic!("configmaps are built in")
        };
        let refused = |applied: Value| {
            check_apply_configuration(&rt, "c", "default", &applied)
                .err()
                .map(|e| (e.code, e.message))
        };
        assert_eq!(
            refused(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}})),
            None
        );
        assert_eq!(
            refused(json!({"apiVersion": "v2", "kind": "ConfigMap"})),
            Some((400, "invalid object type: /v2, Kind=ConfigMap".to_string()))
        );
        assert_eq!(
            refused(json!({"apiVersion": "apps/v1", "kind": "ConfigMap"})),
            Some((
                400,
                "invalid object type: apps/v1, Kind=ConfigMap".to_string()
            ))
        );
        assert_eq!(
            refused(json!({"apiVersion": "v1", "kind": "Secret"})),
            Some((400, "invalid object type: /v1, Kind=Secret".to_string()))
        );
        assert_eq!(
            refused(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"managedFields": [{"manager": "m", "operation": "Apply"}]}})),
            Some((400, "metadata.managedFields must be nil".to_string()))
        );
        assert_eq!(
            refused(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default"}})),
            None
        );
        assert_eq!(
            refused(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}})),
            Some((
                400,
                "the name of the object (d) does not match the name on the URL (c)".to_string()
            ))
        );
        assert_eq!(
            refused(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "kube-system"}})
            ),
            Some((
                400,
                "the namespace of the object (kube-system) does not match the namespace on the request (default)"
                    .to_string()
            ))
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let rt = super::super::registry::builtins()
            .into_iter()
            .find(|t| t.kind == "ConfigMap");
        let Some(rt) = rt else {
            panic!("configmaps are built in")
        };
        let cur =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        let first = apply(
            &cur,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1", "b": "2"}}),
            "m",
            None,
            false,
            &rt,
        );
        let first = first.unwrap_or_default();
        assert_eq!(first["data"], json!({"a": "1", "b": "2"}));
        let second = apply(
            &first,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "3"}}),
            "m",
            None,
            false,
            &rt,
        );
        assert_eq!(
            second.map(|o| o["data"].clone()).ok(),
            Some(json!({"a": "3"}))
        );
        let other = apply(
            &first,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "9"}}),
            "other",
            None,
            false,
            &rt,
        );
        assert_eq!(other.err().map(|e| e.code), Some(409));
    }
}
