//! OpenAPI v3 documents, as far as kubectl needs them: the per group-version
//! documents list every path with its `fieldValidation` parameter (kubectl
//! then validates on the server) and carry the CRD schemas (for `explain`).

use super::registry::{Registry, ResourceType};
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_name(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() {
        "core".to_string()
    } else {
        rt.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", rt.version, rt.kind)
}

fn operation(rt: &ResourceType, action: &str, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    json!({
        "operationId": format!("{action}{}", rt.kind),
        "parameters": parameters,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(rt))}}}}},
    })
}

/// The document for one group/version, or `None` if it is not served.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.serves(group, version) {
        return None;
    }
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in registry
        .types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let collection = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": operation(rt, "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"]), "post": operation(rt, "post", &write)}),
        );
        let item = json!({
            "get": operation(rt, "get", &["pretty"]), "put": operation(rt, "put", &write),
            "patch": operation(rt, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
            "delete": operation(rt, "delete", &["dryRun", "propagationPolicy"]),
        });
        paths.insert(format!("{collection}/{{name}}"), item.clone());
        if rt.status {
            paths.insert(format!("{collection}/{{name}}/status"), item);
        }
        let mut schema = rt
            .crd
            .as_ref()
            .and_then(|c| c.schema.clone())
            .unwrap_or_else(|| json!({"type": "object", "description": format!("{} is served by the Sluice test control plane.", rt.kind)}));
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
        if rt.crd.is_some() {
            // CRD schemas describe metadata only loosely; kube substitutes ObjectMeta here.
            schema["properties"]["metadata"] =
                json!({"type": "object", "description": "Standard object's metadata."});
            schema["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
            schema["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
        }
        schemas.insert(schema_name(rt), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v3`: where each group/version document lives (with a content hash).
pub fn root(registry: &Registry) -> Value {
    let mut gvs: Vec<(String, String)> = Vec::new();
    for t in &registry.types {
        let gv = (t.group.clone(), t.version.clone());
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    let mut paths = Map::new();
    for (g, v) in gvs {
        let doc = document(registry, &g, &v).unwrap_or(Value::Null);
        let digest = ring::digest::digest(&ring::digest::SHA512, doc.to_string().as_bytes());
        let hash: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let path = gv_path(&g, &v);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}
