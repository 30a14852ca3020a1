//! The resource types the server knows: built-in kinds and those defined by
//! CustomResourceDefinitions, plus the discovery documents describing them.

use serde_json::{Value, json};
use std::sync::Arc;

/// Behaviour that sets a built-in kind apart from plain storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// Plain storage.
    None,
    /// Namespaces: cluster-scoped, cascade deletion of their contents.
    Namespace,
    /// Pods: phase Pending on create, default service account.
    Pod,
    /// Service accounts: `token` subresource.
    ServiceAccount,
    /// core/v1 events (storage form of every event).
    CoreEvent,
    /// events.k8s.io/v1 events: converted from and to the core form.
    EventsV1,
    /// CustomResourceDefinitions: serve new resource types.
    Crd,
    /// TokenReview: create-only, never stored.
    TokenReview,
    /// SelfSubjectReview: create-only, answers who the caller is.
    SelfSubjectReview,
    /// SubjectAccessReview and friends: create-only; everything is allowed.
    AccessReview,
    /// Webhook configurations (their changes are read on each admission).
    Webhook,
}

/// One served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name (URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (`all`, ...).
    pub categories: Vec<String>,
    /// Whether a `status` subresource exists (main endpoint then ignores status).
    pub status: bool,
    /// Whether `metadata.generation` is maintained.
    pub generation: bool,
    /// Whether PUT without resourceVersion is allowed.
    pub unconditional_update: bool,
    /// Storage key shared by all versions of the resource.
    pub storage: String,
    /// Special behaviour.
    pub special: Special,
    /// The schema and columns of a custom resource version.
    pub crd: Option<Arc<CrdVersion>>,
    /// Field selector labels accepted besides metadata.name/namespace.
    pub fields: Vec<String>,
}

/// What a CRD says about one of its versions.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    /// `openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<Value>,
    /// The CRD's name, for messages.
    pub crd_name: String,
}

impl ResourceType {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        match self.special {
            Special::TokenReview | Special::SelfSubjectReview | Special::AccessReview => {
                vec!["create"]
            }
            _ => vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    generation: bool,
    special: Special,
    fields: &[&str],
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status,
        generation,
        unconditional_update: true,
        storage: if special == Special::EventsV1 {
            "/events".into()
        } else {
            format!("{group}/{plural}")
        },
        special,
        crd: None,
        fields: fields.iter().map(|s| s.to_string()).collect(),
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
];

/// The built-in kinds.
pub fn builtins() -> Vec<ResourceType> {
    use Special as S;
    let mut all = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
            S::Namespace,
            &["status.phase"],
        ),
        // Nodes: cluster-scoped, status (`nodeInfo.kubeletVersion`) written by
        // kubelets (here: by tests, on create or through `nodes/status`).
        // k8s.io/kubernetes pkg/registry/core/node/strategy.go keeps status on
        // create and ignores it on main-endpoint updates.
        builtin(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            &["no"],
            true,
            false,
            S::None,
            &["spec.unschedulable"],
        ),
        builtin(
            "",
            "v1",
            "pods",
            "Pod",
            true,
            &["po"],
            true,
            true,
            S::Pod,
            &[
                "status.phase",
                "spec.nodeName",
                "spec.serviceAccountName",
                "spec.restartPolicy",
                "status.podIP",
            ],
        ),
        builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            &[],
            false,
            false,
            S::None,
            &["type"],
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
            S::None,
            &[],
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
            S::ServiceAccount,
            &[],
        ),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            true,
            false,
            S::None,
            &[],
        ),
        builtin(
            "",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
            S::CoreEvent,
            EVENT_FIELDS,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
            S::EventsV1,
            EVENT_FIELDS,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
            S::None,
            &[],
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
            S::None,
            &[],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            &[],
            false,
            true,
            S::Webhook,
            &[],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            false,
            true,
            S::Webhook,
            &[],
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            true,
            S::Crd,
            &[],
        ),
        builtin(
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "TokenReview",
            false,
            &[],
            false,
            false,
            S::TokenReview,
            &[],
        ),
        builtin(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
            &[],
            false,
            false,
            S::SelfSubjectReview,
            &[],
        ),
    ];
    for (plural, kind, namespaced) in [
        ("subjectaccessreviews", "SubjectAccessReview", false),
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
        (
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
    ] {
        all.push(builtin(
            "authorization.k8s.io",
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            false,
            S::AccessReview,
            &[],
        ));
    }
    for (plural, kind, namespaced) in [
        ("roles", "Role", true),
        ("rolebindings", "RoleBinding", true),
        ("clusterroles", "ClusterRole", false),
        ("clusterrolebindings", "ClusterRoleBinding", false),
    ] {
        all.push(builtin(
            "rbac.authorization.k8s.io",
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            false,
            S::None,
            &[],
        ));
    }
    for rt in &mut all {
        if matches!(rt.plural.as_str(), "pods" | "services" | "deployments") {
            rt.categories = vec!["all".into()];
        }
    }
    all
}

/// Builds the resource types served by one CRD object (only if Established).
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let crd_name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut out = Vec::new();
    for version in spec["versions"].as_array().into_iter().flatten() {
        if version["served"].as_bool() != Some(true) {
            continue;
        }
        let selectable: Vec<String> = version["selectableFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                f["jsonPath"]
                    .as_str()
                    .map(|p| p.trim_start_matches('.').to_string())
            })
            .collect();
        out.push(ResourceType {
            group: group.into(),
            version: version["name"].as_str().unwrap_or_default().into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced: spec["scope"].as_str() == Some("Namespaced"),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: version["subresources"].get("status").is_some(),
            generation: true,
            unconditional_update: false,
            storage: format!("{group}/{plural}"),
            special: Special::None,
            crd: Some(Arc::new(CrdVersion {
                schema: version["schema"].get("openAPIV3Schema").cloned(),
                columns: version["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                crd_name: crd_name.clone(),
            })),
            fields: selectable,
        });
    }
    out
}

/// All served types: built-ins first, then custom resources.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Every served group/version/resource.
    pub types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// The registry for the given CRD objects.
    pub fn new(crds: &[Value]) -> Self {
        let mut types: Vec<Arc<ResourceType>> = builtins().into_iter().map(Arc::new).collect();
        for crd in crds {
            types.extend(from_crd(crd).into_iter().map(Arc::new));
        }
        Self { types }
    }

    /// Finds a type by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Any version of a storage (used for cascades and admission lookups).
    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceType>> {
        self.types.iter().find(|t| t.storage == storage).cloned()
    }

    /// Finds the type for an apiVersion and kind (for owner references).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    /// Whether a group/version is served.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// Groups in order with their versions (preferred first).
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            if t.group.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        for (_, versions) in &mut groups {
            // A CRD lists versions in its own order; kube sorts by version priority.
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }

    /// `/apis` (APIGroupList).
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(g, versions)| {
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/{group}` (APIGroup).
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let (g, versions) = self.groups().into_iter().find(|(g, _)| g == group)?;
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
            .collect();
        Some(
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": vs, "preferredVersion": vs[0]}),
        )
    }

    /// `/api/v1` or `/apis/{group}/{version}` (APIResourceList).
    pub fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.serves(group, version) {
            return None;
        }
        let mut resources = Vec::new();
        for t in self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
        {
            let mut r = json!({
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                "kind": t.kind, "verbs": t.verbs(),
            });
            if !t.short_names.is_empty() {
                r["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                r["categories"] = json!(t.categories);
            }
            resources.push(r);
            if t.status {
                resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"]}));
            }
            if t.special == Special::Pod {
                resources.push(json!({"name": "pods/ephemeralcontainers", "singularName": "", "namespaced": true,
                    "kind": "Pod", "verbs": ["get", "patch", "update"]}));
            }
            if t.special == Special::ServiceAccount {
                resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                    "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major: u64 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, n) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, n.parse().unwrap_or(0))
}

impl Registry {
    /// Aggregated discovery (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList)
    /// for `/api` (`core`) or `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".to_string()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|version| {
                        let resources: Vec<Value> = self
                            .types
                            .iter()
                            .filter(|t| t.group == group && t.version == *version)
                            .map(|t| aggregated_resource(t))
                            .collect();
                        json!({"version": version, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}

fn aggregated_resource(t: &ResourceType) -> Value {
    let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
    let mut subresources = Vec::new();
    if t.status {
        subresources.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if t.special == Special::Pod {
        subresources.push(json!({"subresource": "ephemeralcontainers", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if t.special == Special::ServiceAccount {
        subresources.push(json!({"subresource": "token",
            "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}, "verbs": ["create"]}));
    }
    let mut r = json!({
        "resource": t.plural, "responseKind": kind, "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular, "verbs": t.verbs(),
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}
