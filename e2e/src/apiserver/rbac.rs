//! Role-based access control, enforced only when the cluster is started with
//! `rbac` on (otherwise every authenticated request is allowed).
//!
//! Roles, ClusterRoles and their bindings are always served and stored, so
//! manifests that carry them (a chart's) apply either way.

use super::UserInfo;
use super::store::Store;
use serde_json::{Value, json};

/// What a request wants to do, in RBAC terms.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group (empty for core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace, empty for cluster scope.
    pub namespace: String,
    /// Object name, if the request names one.
    pub name: String,
}

const ROLE: &str = "rbac.authorization.k8s.io/roles";
const CLUSTER_ROLE: &str = "rbac.authorization.k8s.io/clusterroles";
const BINDING: &str = "rbac.authorization.k8s.io/rolebindings";
const CLUSTER_BINDING: &str = "rbac.authorization.k8s.io/clusterrolebindings";

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    if !strings(&rule["apiGroups"])
        .iter()
        .any(|g| *g == "*" || *g == a.group)
    {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = strings(&rule["resources"]).iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(&rule["resourceNames"]);
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => name == user.username,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_rules<'a>(store: &'a Store, role_ref: &Value, binding_ns: &str) -> Vec<&'a Value> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str().unwrap_or_default() {
        "ClusterRole" => store.get(CLUSTER_ROLE, "", name),
        "Role" => store.get(ROLE, binding_ns, name),
        _ => None,
    };
    role.and_then(|r| r["rules"].as_array())
        .map(|rules| rules.iter().collect())
        .unwrap_or_default()
}

/// Whether `user` may do `a`.
pub fn allowed(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    if always_allowed(user, a) {
        return true;
    }
    for binding in store.list(CLUSTER_BINDING, None) {
        let subjects = binding["subjects"].as_array().into_iter().flatten();
        if subjects.clone().any(|s| subject_matches(s, user, ""))
            && role_rules(store, &binding["roleRef"], "")
                .iter()
                .any(|r| rule_allows(r, a))
        {
            return true;
        }
    }
    if a.namespace.is_empty() {
        return false;
    }
    for binding in store.list(BINDING, Some(&a.namespace)) {
        let subjects = binding["subjects"].as_array().into_iter().flatten();
        if subjects
            .clone()
            .any(|s| subject_matches(s, user, &a.namespace))
            && role_rules(store, &binding["roleRef"], &a.namespace)
                .iter()
                .any(|r| rule_allows(r, a))
        {
            return true;
        }
    }
    false
}

/// What kube's bootstrap `system:basic-user` role grants every authenticated user.
fn always_allowed(user: &UserInfo, a: &Attributes) -> bool {
    let authenticated = user.groups.iter().any(|g| g == "system:authenticated");
    authenticated
        && a.verb == "create"
        && (a.group == "authorization.k8s.io" || a.group == "authentication.k8s.io")
        && matches!(
            a.resource.as_str(),
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "selfsubjectreviews"
        )
}

/// kube's "forbidden" message for a refused request.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let what = if a.group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{}", a.group)
    };
    let object = if a.name.is_empty() {
        what
    } else {
        format!("{what} \"{}\"", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{object} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.username, a.verb, a.group
    )
}

/// The bootstrap ClusterRoles kube ships that tests most often bind.
pub fn bootstrap_roles() -> Vec<Value> {
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules})
    };
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:auth-delegator",
            json!([
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn rules_match_verbs_resources_subresources_and_names() {
        let rule =
            json!({"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &attrs("get", "pods", "", "p")));
        assert!(!rule_allows(&rule, &attrs("delete", "pods", "", "p")));
        assert!(!rule_allows(&rule, &attrs("get", "pods", "log", "p")));
        assert!(rule_allows(
            &rule,
            &attrs("get", "configmaps", "status", "c")
        ));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]});
        assert!(rule_allows(&named, &attrs("get", "secrets", "", "one")));
        assert!(!rule_allows(&named, &attrs("get", "secrets", "", "two")));
        let mut a = attrs("list", "pods", "", "");
        a.namespace = String::new();
        assert_eq!(
            forbidden_message(
                &UserInfo {
                    username: "u".into(),
                    ..Default::default()
                },
                &a
            ),
            "pods is forbidden: User \"u\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
        );
    }
}
