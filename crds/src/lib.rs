//! The Sluice API: custom resources of group `sluice.dev`, version `v1alpha1`.
//!
//! These types are the contract between users (who apply YAML), the operator
//! (which validates and compiles them), the sidecar (which enforces them) and the
//! CLI. Field names are the API: see DESIGN §2.
#![forbid(unsafe_code)]

mod access_policy;
mod access_request;
mod condition;
mod connection;
pub mod manifests;
pub mod yaml;

pub use access_policy::*;
pub use access_request::*;
pub use condition::*;
pub use connection::*;

/// The API group of every Sluice resource.
pub const GROUP: &str = "sluice.dev";
/// The API version served today.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Sluice resource.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";

/// Every CustomResourceDefinition this crate defines, in a stable order.
pub fn all_crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    let mut crds = vec![Connection::crd(), AccessPolicy::crd(), AccessRequest::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                bound_integers(schema);
            }
        }
    }
    crds
}

/// Gives every integer of a schema the `minimum`/`maximum` of its format where
/// the type does not set a tighter one. kube-apiserver does not range-check
/// integer formats (apiextensions-apiserver pkg/apiserver/validation/formats.go
/// strips them), so without bounds `statementsPerSecond: 4294967296` is stored
/// and no client decoding a `u32` can read the object. 64-bit fields stop at
/// ±(2^53 - 1), the largest integers a JSON number (kube stores the bound as a
/// float64) holds exactly; it also keeps the YAML plain (no exponent, which
/// YAML 1.1 tools such as kubernetes-validate would read as a string).
const MAX_EXACT: f64 = 9_007_199_254_740_991.0;

fn bound_integers(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };
    if schema.type_.as_deref() == Some("integer") {
        let (min, max) = match schema.format.as_deref() {
            Some("uint8") => (0.0, f64::from(u8::MAX)),
            Some("uint16") => (0.0, f64::from(u16::MAX)),
            Some("uint32") => (0.0, f64::from(u32::MAX)),
            Some("int8") => (f64::from(i8::MIN), f64::from(i8::MAX)),
            Some("int16") => (f64::from(i16::MIN), f64::from(i16::MAX)),
            Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
            Some("uint64") | Some("uint") => (0.0, MAX_EXACT),
            _ => (-MAX_EXACT, MAX_EXACT),
        };
        schema.minimum = Some(schema.minimum.map_or(min, |m| m.max(min)));
        schema.maximum = Some(schema.maximum.map_or(max, |m| m.min(max)));
    }
    for sub in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        bound_integers(sub);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        bound_integers(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(ap)) = schema.additional_properties.as_mut() {
        bound_integers(ap);
    }
}

/// A reference to a Secret in the same namespace as the referring object.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to one key of a Secret in the same namespace as the referring object.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };

    fn integers(
        s: &JSONSchemaProps,
        path: &str,
        out: &mut Vec<(String, Option<f64>, Option<f64>)>,
    ) {
        if s.type_.as_deref() == Some("integer") {
            out.push((path.to_string(), s.minimum, s.maximum));
        }
        for (k, sub) in s.properties.iter().flatten() {
            integers(sub, &format!("{path}.{k}"), out);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(items)) = &s.items {
            integers(items, &format!("{path}[]"), out);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(ap)) = &s.additional_properties {
            integers(ap, &format!("{path}{{}}"), out);
        }
    }

    #[test]
    fn every_integer_is_bounded() {
        let mut found = Vec::new();
        for crd in super::all_crds() {
            for v in &crd.spec.versions {
                let schema = v
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref());
                integers(schema.expect("schema"), &crd.spec.names.kind, &mut found);
            }
        }
        assert!(found.len() > 10, "{found:?}");
        for (path, min, max) in &found {
            assert!(
                min.is_some() && max.is_some(),
                "{path} is unbounded: {min:?}..{max:?}"
            );
        }
        let rate = found
            .iter()
            .find(|(p, _, _)| p == "AccessPolicy.spec.limits.statementsPerSecond")
            .expect("statementsPerSecond");
        assert_eq!((rate.1, rate.2), (Some(1.0), Some(4294967295.0)));
    }
}
