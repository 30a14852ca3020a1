//! Structural-schema handling for custom resources: pruning of unknown
//! fields, defaults, OpenAPI value validation and `x-kubernetes-validations`
//! CEL rules (through the `kube-cel` crate, including transition rules).

use super::error::Cause;
use super::registry::ResourceType;
use serde_json::{Value, json};

const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops fields the schema does not declare; returns their paths.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    let Some(map) = obj.as_object_mut() else {
        return pruned;
    };
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        let unknown: Vec<String> = meta
            .keys()
            .filter(|k| !META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            meta.remove(&k);
            pruned.push(format!("metadata.{k}"));
        }
    }
    let props = schema["properties"].as_object();
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(sub) if drops_null(sub, map.get(&k)) => {
                map.remove(&k);
            }
            Some(sub) => {
                if let Some(v) = map.get_mut(&k) {
                    prune_node(sub, v, &k, &mut pruned);
                }
            }
            None if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true) => {}
            None => {
                map.remove(&k);
                pruned.push(k);
            }
        }
    }
    pruned
}

/// kube drops `null` values of fields that are not `nullable` before defaulting.
fn drops_null(schema: &Value, v: Option<&Value>) -> bool {
    v.is_some_and(Value::is_null) && schema["nullable"].as_bool() != Some(true)
}

fn prune_node(schema: &Value, value: &mut Value, path: &str, pruned: &mut Vec<String>) {
    let preserve = schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true);
    let embedded = schema["x-kubernetes-embedded-resource"].as_bool() == Some(true);
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    match props.get(&k) {
                        Some(sub) if drops_null(sub, map.get(&k)) => {
                            map.remove(&k);
                        }
                        Some(sub) => {
                            if let Some(v) = map.get_mut(&k) {
                                prune_node(sub, v, &join(path, &k), pruned);
                            }
                        }
                        None if preserve
                            || (embedded
                                && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) => {}
                        None => {
                            map.remove(&k);
                            pruned.push(join(path, &k));
                        }
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for (k, v) in map.iter_mut() {
                    prune_node(&schema["additionalProperties"], v, &join(path, k), pruned);
                }
            } else if !preserve && !embedded && schema["type"].as_str() == Some("object") {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    map.remove(&k);
                    pruned.push(join(path, &k));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, v) in items.iter_mut().enumerate() {
                prune_node(&schema["items"], v, &format!("{path}[{i}]"), pruned);
            }
        }
        _ => {}
    }
}

/// Fills schema defaults (also inside nested objects, arrays and maps).
pub fn defaults(schema: &Value, obj: &Value) -> Value {
    kube_cel::apply_defaults(schema, obj)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value at a kube field path such as `spec.rules[0].name`.
fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for idx in rest.split('[').filter(|i| !i.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx.trim_matches(['"', '\''].as_ref()))?,
            };
        }
    }
    Some(cur)
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn cause(reason: &'static str, field: &str, message: String) -> Cause {
    Cause {
        reason,
        field: field.to_string(),
        message,
    }
}

/// Validates values against the OpenAPI schema, then the CEL rules.
pub fn validate(schema: &Value, rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(v) = obj.get(k) {
                check(sub, v, k, &mut causes);
            }
        }
    }
    for req in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if obj.get(req).is_none_or(Value::is_null) {
            causes.push(cause("FieldValueRequired", req, "Required value".into()));
        }
    }
    // Validation ratcheting (CRDValidationRatcheting, GA and always on in 1.33:
    // k8s.io/apiextensions-apiserver pkg/apiserver/schema/validation/ratcheting.go): on update,
    // a schema error in a value equal to the old object's is not reported, so an object stored
    // under a laxer schema can still have its status written.
    if let Some(old) = old {
        causes.retain(|c| value_at(obj, &c.field) != value_at(old, &c.field));
    }
    if !causes.is_empty() {
        return causes;
    }
    let ctx = kube_cel::RootContext {
        api_version: rt.api_version(),
        api_group: rt.group.clone(),
        kind: rt.kind.clone(),
    };
    let validator = kube_cel::Validator::new();
    // CEL sees the object without server-managed metadata noise, like kube.
    if let Err(errors) = validator.validate_with_context(schema, obj, old, Some(&ctx)) {
        for e in errors.into_vec() {
            // Ratcheting covers CEL rules too (KEP-4008): a rule that does not
            // read oldSelf and fails on a value equal to the old object's is
            // not reported, so the status of an object stored under a laxer
            // schema can still be written. Transition rules stay enforced.
            if let Some(old) = old
                && !e.field_path.is_empty()
                && !e.rule.contains("oldSelf")
                && value_at(obj, &e.field_path) == value_at(old, &e.field_path)
            {
                continue;
            }
            let field = if e.field_path.is_empty() {
                "<nil>".to_string()
            } else {
                e.field_path.clone()
            };
            let shown = type_name(value_at(obj, &e.field_path).unwrap_or(obj));
            let (reason, message) = match (e.kind.clone(), e.reason.as_deref()) {
                (kube_cel::ErrorKind::ValidationFailure, Some("FieldValueForbidden")) => {
                    ("FieldValueForbidden", format!("Forbidden: {}", e.message))
                }
                (kube_cel::ErrorKind::ValidationFailure, Some("FieldValueRequired")) => (
                    "FieldValueRequired",
                    format!("Required value: {}", e.message),
                ),
                (kube_cel::ErrorKind::ValidationFailure, Some("FieldValueDuplicate")) => (
                    "FieldValueDuplicate",
                    format!("Duplicate value: {}", e.message),
                ),
                (kube_cel::ErrorKind::ValidationFailure, _) => (
                    "FieldValueInvalid",
                    format!("Invalid value: \"{shown}\": {}", e.message),
                ),
                _ => (
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: \"{shown}\": rule {:?} could not be evaluated: {}",
                        e.rule, e.message
                    ),
                ),
            };
            causes.push(cause(reason, &field, message));
        }
    }
    causes
}

/// A float64 as Go's `%v` prints it (kube-openapi's "should be less than or equal to %v"
/// messages): shortest digits, in `%e` form with a signed two-digit exponent when the
/// exponent is below -4 or at least 6 (Go's fmt uses 'g' with `eprec = 6` for the shortest
/// precision: src/fmt/format.go fmtFloat, src/strconv/ftoa.go), e.g. `1024`, `0.5`,
/// `4.294967295e+09`.
fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..6).contains(&exp) {
        return format!("{f}");
    }
    let sci = format!("{f:e}");
    let (mantissa, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    let sign = if e < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", e.abs())
}

/// Checks `v` against the structural `schema` at `path`, as kube-openapi
/// validates a custom resource: one cause per violation, in its wording.
fn check(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema["nullable"].as_bool() != Some(true) && schema["type"].is_string() {
            causes.push(cause(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        if !matches!(type_name(v), "integer" | "string") {
            causes.push(cause(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body must be of type integer or string",
                    short(v)
                ),
            ));
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let got = type_name(v);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            causes.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""
                ),
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        let supported: Vec<String> = options.iter().map(short).collect();
        causes.push(cause(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                short(v),
                supported.join(", ")
            ),
        ));
    }
    match v {
        Value::Number(n) => check_number(schema, v, n.as_f64().unwrap_or(0.0), path, causes),
        Value::String(s) => check_string(schema, s, path, causes),
        Value::Array(items) => check_array(schema, items, path, causes),
        Value::Object(map) => check_object(schema, map, path, causes),
        _ => {}
    }
}

/// `minimum` and `maximum` (exclusive or not) of a number `v` (`x` as a float).
fn check_number(schema: &Value, v: &Value, x: f64, path: &str, causes: &mut Vec<Cause>) {
    if let Some(min) = schema["minimum"].as_f64() {
        let exclusive = schema["exclusiveMinimum"].as_bool() == Some(true);
        if x < min || (exclusive && x == min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(cause(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {v}: {path} in body should be {rel} {}",
                    go_float(min)
                ),
            ));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        let exclusive = schema["exclusiveMaximum"].as_bool() == Some(true);
        if x > max || (exclusive && x == max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(cause(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {v}: {path} in body should be {rel} {}",
                    go_float(max)
                ),
            ));
        }
    }
}

/// `minLength`, `maxLength` and `pattern` of a string.
fn check_string(schema: &Value, s: &str, path: &str, causes: &mut Vec<Cause>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema["minLength"].as_u64()
        && len < min
    {
        causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {s:?}: {path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(max) = schema["maxLength"].as_u64()
        && len > max
    {
        causes.push(cause(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(pattern) = schema["pattern"].as_str()
        && let Ok(re) = regex::Regex::new(pattern)
        && !re.is_match(s)
    {
        causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {s:?}: {path} in body should match '{pattern}'"),
        ));
    }
}

/// `minItems`, `maxItems`, the list type, and each item against `items`.
fn check_array(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(min) = schema["minItems"].as_u64()
        && n < min
    {
        causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = schema["maxItems"].as_u64()
        && n > max
    {
        causes.push(cause(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    check_list_type(schema, items, path, causes);
    if schema["items"].is_object() {
        for (i, item) in items.iter().enumerate() {
            check(&schema["items"], item, &format!("{path}[{i}]"), causes);
        }
    }
}

/// `x-kubernetes-list-type`: no duplicate item in a `set`, no two items with
/// the same `x-kubernetes-list-map-keys` in a `map`.
fn check_list_type(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    if schema["x-kubernetes-list-type"].as_str() == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                causes.push(cause(
                    "FieldValueDuplicate",
                    &format!("{path}[{i}]"),
                    format!("Duplicate value: {}", short(item)),
                ));
            }
        }
    }
    if schema["x-kubernetes-list-type"].as_str() == Some("map") {
        let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (i, item) in items.iter().enumerate() {
            let key: Vec<&Value> = keys.iter().map(|k| &item[*k]).collect();
            if items[..i]
                .iter()
                .any(|o| keys.iter().map(|k| &o[*k]).collect::<Vec<_>>() == key)
            {
                let shown: serde_json::Map<String, Value> = keys
                    .iter()
                    .map(|k| (k.to_string(), item[*k].clone()))
                    .collect();
                causes.push(cause(
                    "FieldValueDuplicate",
                    &format!("{path}[{i}]"),
                    format!("Duplicate value: {}", json!(shown)),
                ));
            }
        }
    }
}

/// `required`, each property against `properties` (or
/// `additionalProperties`), and `minProperties`.
fn check_object(
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    for req in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if map.get(req).is_none_or(Value::is_null) {
            causes.push(cause(
                "FieldValueRequired",
                &join(path, req),
                "Required value".into(),
            ));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            if let Some(child) = map.get(k) {
                check(sub, child, &join(path, k), causes);
            }
        }
    } else if schema["additionalProperties"].is_object() {
        for (k, child) in map {
            check(
                &schema["additionalProperties"],
                child,
                &join(path, k),
                causes,
            );
        }
    }
    if let Some(min) = schema["minProperties"].as_u64()
        && (map.len() as u64) < min
    {
        causes.push(cause(
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body should have at least {min} properties",
                map.len()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["port"], "properties": {
                "port": {"type": "integer", "minimum": 1024},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "note": {"type": "string"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}},
                "x-kubernetes-validations": [{"rule": "self.port != 2000", "message": "port 2000 is reserved"}]}}})
    }

    fn rt() -> ResourceType {
        let mut rt = super::super::registry::builtins().remove(0);
        rt.group = "test.sluice.dev".into();
        rt.kind = "Thing".into();
        rt
    }

    #[test]
    fn prune_drops_unknown_fields_and_non_nullable_nulls() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "Thing", "metadata": {"name": "t", "bogus": 1},
            "spec": {"port": 2001, "note": null, "nope": 1, "extra": {"kept": true}, "items": [{"name": "a", "drop": 1}]},
            "top": 1});
        let mut pruned = prune(&schema(), &mut obj);
        pruned.sort();
        assert_eq!(
            pruned,
            vec!["metadata.bogus", "spec.items[0].drop", "spec.nope", "top"]
        );
        assert_eq!(
            obj["spec"],
            json!({"port": 2001, "extra": {"kept": true}, "items": [{"name": "a"}]})
        );
    }

    #[test]
    fn defaults_then_openapi_then_cel() {
        let obj = defaults(&schema(), &json!({"spec": {"port": 2001}}));
        assert_eq!(obj["spec"]["mode"], "a");
        assert!(validate(&schema(), &rt(), &obj, None).is_empty());
        let bad = json!({"spec": {"port": 80, "mode": "c"}});
        let msgs: Vec<String> = validate(&schema(), &rt(), &bad, None)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert!(msgs.contains(&"spec.port: Invalid value: 80: spec.port in body should be greater than or equal to 1024".to_string()), "{msgs:?}");
        assert!(
            msgs.contains(
                &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string()
            ),
            "{msgs:?}"
        );
        let missing = validate(&schema(), &rt(), &json!({"spec": {}}), None);
        assert_eq!(
            missing.first().map(|c| (c.field.as_str(), c.reason)),
            Some(("spec.port", "FieldValueRequired"))
        );
        let reserved = validate(&schema(), &rt(), &json!({"spec": {"port": 2000}}), None);
        assert_eq!(reserved.len(), 1);
        assert_eq!(reserved[0].field, "spec");
        assert!(
            reserved[0].message.contains("port 2000 is reserved"),
            "{}",
            reserved[0].message
        );
    }

    #[test]
    fn bounds_print_like_go() {
        assert_eq!(go_float(1024.0), "1024");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(4294967295.0), "4.294967295e+09");
        assert_eq!(go_float(i64::MAX as f64), "9.223372036854776e+18");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn kubernetes_cel_libraries_are_available() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "url": {"type": "string", "x-kubernetes-validations": [{"rule": "isURL(self) && url(self).getScheme() == 'https'", "message": "https URL"}]},
            "cpu": {"type": "string", "x-kubernetes-validations": [{"rule": "quantity(self).isLessThan(quantity('2'))", "message": "under 2 CPUs"}]},
            "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]+$') && self.lowerAscii() == self", "message": "lowercase"}]}}}}});
        let good = json!({"spec": {"url": "https://example.com/x", "cpu": "500m", "name": "abc"}});
        assert!(validate(&schema, &rt(), &good, None).is_empty());
        let bad = json!({"spec": {"url": "http://example.com", "cpu": "3", "name": "ABC"}});
        let fields: Vec<String> = validate(&schema, &rt(), &bad, None)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields.len(), 3, "{fields:?}");
    }
}
