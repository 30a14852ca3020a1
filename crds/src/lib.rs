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
    vec![Connection::crd(), AccessPolicy::crd(), AccessRequest::crd()]
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
