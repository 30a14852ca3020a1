//! Admission of changes to pods the webhook injected (issue #18): a pod
//! UPDATE, and the `pods/ephemeralcontainers` subresource (`kubectl debug`).
//!
//! The gateway verifies the pod on every token exchange and bundle poll
//! ([`crate::injection::token_holder::check_genuine`]); this refuses earlier, when the
//! change is made, what would make an injected pod's sidecar something the
//! webhook did not write. What the API server lets change on a running pod is
//! little (kube `ValidatePodUpdate`: container images, tolerations, a few
//! timings, metadata; and ephemeral containers through their subresource), so
//! the rule is simple: everything of the pod that bears on the sidecar's
//! secrets stays as it was.
//!
//! - the `sluice-sidecar` container(s), in whatever list, compared whole
//!   (its image included: `kubectl set image` of the sidecar is refused);
//! - the annotations the webhook wrote (`sluice.dev/injected-revision`,
//!   `…/injected-connections`, `…/env-not-injected`);
//! - the annotations the webhook read when it injected the pod
//!   (`sluice.dev/inject`, `sluice.dev/connections`, and every
//!   `sluice.dev/sidecar-*` setting): the sidecar was built from them, so a
//!   change on a running pod would do nothing. Refused, with a message to
//!   set it in the workload's pod template and roll the workload, rather than
//!   accepted and silently ignored;
//! - the volumes and the pod's namespace-sharing fields (`hostNetwork`,
//!   `hostPID`, `shareProcessNamespace`);
//! - no container but the sidecar comes to mount `sluice-token`;
//! - no new ephemeral container targets the sidecar (its process namespace,
//!   hence its memory) or is named like it.
//!
//! App container images may change (a rollout by `kubectl set image`), and so
//! may labels and other annotations; an ephemeral container on an app container
//! is allowed: it reaches what the app already reaches.
//!
//! A pod is injected when it holds the `sluice-token` volume or a container
//! named `sluice-sidecar`: both are fixed at creation (volumes and container
//! names are immutable), unlike annotations, which an update could remove first.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::injection::inject::{
    CONNECTIONS_ANNOTATION, ENV_NOT_INJECTED_ANNOTATION, INJECT_ANNOTATION,
    INJECTED_CONNECTIONS_ANNOTATION, INJECTED_REVISION_ANNOTATION, SIDECAR_CONTAINER_NAME,
    TOKEN_VOLUME_NAME,
};
use crate::injection::pod_settings::SIDECAR_SETTING_PREFIX;

/// The annotations the webhook writes, which no later update may change.
pub const WRITTEN_ANNOTATIONS: [&str; 3] = [
    INJECTED_REVISION_ANNOTATION,
    INJECTED_CONNECTIONS_ANNOTATION,
    ENV_NOT_INJECTED_ANNOTATION,
];

/// Whether the webhook read annotation `key` when it injected a pod: the
/// opt-in, the Connections asked for, and every `sluice.dev/sidecar-*`
/// setting (known or not: a misspelt one is refused as well, rather than
/// ignored).
pub fn read_at_injection(key: &str) -> bool {
    key == INJECT_ANNOTATION
        || key == CONNECTIONS_ANNOTATION
        || key.starts_with(SIDECAR_SETTING_PREFIX)
}

/// Why a change to an injected pod is refused. Each message says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    /// The sidecar container changed (image, or anything else).
    #[error(
        "the {SIDECAR_CONTAINER_NAME} container of an injected pod may not change ({what}); the gateway would stop serving the pod. Change the operator's sidecar image and re-create the pod (a rollout) instead"
    )]
    SidecarChanged {
        /// What changed: `image differ`, or how many there would be.
        what: String,
    },
    /// An annotation the webhook wrote changed or went away.
    #[error(
        "annotation {key} of an injected pod is written by the Sluice webhook and may not be changed or removed; re-create the pod to change what it is injected with"
    )]
    AnnotationChanged {
        /// The annotation.
        key: &'static str,
    },
    /// An annotation the webhook read at injection was added, changed or
    /// removed: the running sidecar would not follow it.
    #[error(
        "annotation {key} of a running injected pod was read when its sidecar was injected, so {change} it now would change nothing; set it in the workload's pod template and roll the workload (e.g. kubectl rollout restart deployment/NAME), or re-create the pod"
    )]
    SettingChanged {
        /// The annotation.
        key: String,
        /// `adding`, `changing` or `removing`.
        change: &'static str,
    },
    /// Volumes or namespace-sharing fields changed.
    #[error(
        "spec.{field} of an injected pod may not change: the Sluice sidecar's secrets depend on it"
    )]
    SpecChanged {
        /// The field.
        field: &'static str,
    },
    /// Another container would mount the sidecar's token.
    #[error(
        "container {container:?} would mount volume {TOKEN_VOLUME_NAME}, the Sluice sidecar's service-account token; only the sidecar may hold it, remove that volumeMount"
    )]
    TokenMounted {
        /// The container.
        container: String,
    },
    /// An ephemeral container would share the sidecar's process namespace.
    #[error(
        "ephemeral container {name:?} targets the Sluice sidecar, whose memory holds the credentials; debug the app container instead (kubectl debug --target=APP_CONTAINER)"
    )]
    DebugsSidecar {
        /// The ephemeral container.
        name: String,
    },
}

/// Whether `pod` was injected, judged by what cannot change after creation.
pub fn is_injected(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.volumes
        .iter()
        .flatten()
        .any(|v| v.name == TOKEN_VOLUME_NAME)
        || containers(pod).any(|(_, name, _)| name == SIDECAR_CONTAINER_NAME)
}

/// Every container of the pod: (list, name, its JSON).
fn containers(pod: &Pod) -> impl Iterator<Item = (&'static str, String, Value)> + '_ {
    let spec = pod.spec.as_ref();
    let regular = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| ("containers", c.name.clone(), to_value(c)));
    let init = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| ("initContainers", c.name.clone(), to_value(c)));
    let ephemeral = spec
        .into_iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|c| ("ephemeralContainers", c.name.clone(), to_value(c)));
    regular.chain(init).chain(ephemeral)
}

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn mounts_token(container: &Value) -> bool {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["name"] == TOKEN_VOLUME_NAME)
}

/// Checks that updating `old` into `new` keeps an injected pod's sidecar what
/// the webhook wrote (see the module documentation). Pods that were not
/// injected pass.
pub fn check_update(old: &Pod, new: &Pod) -> Result<(), GuardError> {
    if !is_injected(old) {
        return Ok(());
    }
    let sidecars = |pod: &Pod| -> Vec<(&'static str, Value)> {
        containers(pod)
            .filter(|(_, name, _)| name == SIDECAR_CONTAINER_NAME)
            .map(|(list, _, json)| (list, json))
            .collect()
    };
    let (before, after) = (sidecars(old), sidecars(new));
    if before != after {
        return Err(GuardError::SidecarChanged {
            what: differing(&before, &after),
        });
    }
    for key in WRITTEN_ANNOTATIONS {
        let get = |pod: &Pod| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
        };
        if get(old) != get(new) {
            return Err(GuardError::AnnotationChanged { key });
        }
    }
    let empty = std::collections::BTreeMap::new();
    let (old_annotations, new_annotations) = (
        old.metadata.annotations.as_ref().unwrap_or(&empty),
        new.metadata.annotations.as_ref().unwrap_or(&empty),
    );
    let changed_setting = old_annotations
        .keys()
        .chain(new_annotations.keys())
        .filter(|key| read_at_injection(key))
        .find_map(|key| {
            let change = match (old_annotations.get(key), new_annotations.get(key)) {
                (None, Some(_)) => "adding",
                (Some(_), None) => "removing",
                (Some(a), Some(b)) if a != b => "changing",
                _ => return None,
            };
            Some((key, change))
        });
    if let Some((key, change)) = changed_setting {
        return Err(GuardError::SettingChanged {
            key: key.clone(),
            change,
        });
    }
    let spec = |pod: &Pod| to_value(&pod.spec);
    let (old_spec, new_spec) = (spec(old), spec(new));
    for (json, field) in [
        ("volumes", "volumes"),
        ("hostNetwork", "hostNetwork"),
        ("hostPID", "hostPID"),
        ("shareProcessNamespace", "shareProcessNamespace"),
    ] {
        if old_spec.get(json) != new_spec.get(json) {
            return Err(GuardError::SpecChanged { field });
        }
    }
    let before: Vec<(&'static str, String, Value)> = containers(old).collect();
    for (list, name, container) in containers(new) {
        if name == SIDECAR_CONTAINER_NAME {
            continue;
        }
        let unchanged = before
            .iter()
            .any(|(l, n, c)| *l == list && *n == name && *c == container);
        if unchanged {
            continue;
        }
        if mounts_token(&container) {
            return Err(GuardError::TokenMounted { container: name });
        }
        if list == "ephemeralContainers"
            && container["targetContainerName"] == SIDECAR_CONTAINER_NAME
        {
            return Err(GuardError::DebugsSidecar { name });
        }
    }
    Ok(())
}

/// What differs between the sidecar lists, for the refusal.
fn differing(before: &[(&'static str, Value)], after: &[(&'static str, Value)]) -> String {
    match (before, after) {
        ([(l1, a)], [(l2, b)]) if l1 == l2 => {
            let keys = a
                .as_object()
                .into_iter()
                .chain(b.as_object())
                .flat_map(|m| m.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>();
            format!("{} differ", keys.into_iter().collect::<Vec<_>>().join(", "))
        }
        _ => format!(
            "containers named {SIDECAR_CONTAINER_NAME}: {} before, {} after, in {}",
            before.len(),
            after.len(),
            after
                .iter()
                .map(|(l, _)| *l)
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn injected() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {
                "sluice.dev/inject": "true",
                "sluice.dev/injected-revision": "1",
                "sluice.dev/injected-connections": "orders-db"}},
            "spec": {
                "initContainers": [{"name": "sluice-sidecar", "image": "sluice-sidecar:1",
                    "restartPolicy": "Always",
                    "volumeMounts": [{"name": "sluice-token", "mountPath": "/t"}]}],
                "containers": [{"name": "app", "image": "app:1"}],
                "volumes": [{"name": "sluice-token", "projected": {"sources": []}}]
            }
        }))
        .unwrap()
    }

    fn edited(edit: impl Fn(&mut Value)) -> Pod {
        let mut pod = serde_json::to_value(injected()).unwrap();
        edit(&mut pod);
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn app_image_labels_and_app_debugging_pass() {
        let old = injected();
        for new in [
            edited(|p| p["spec"]["containers"][0]["image"] = json!("app:2")),
            edited(|p| p["metadata"]["labels"] = json!({"a": "b"})),
            edited(|p| p["metadata"]["annotations"]["other"] = json!("x")),
            // A look-alike outside sluice.dev/sidecar- is not a setting.
            edited(|p| p["metadata"]["annotations"]["sluice.dev/sidecarish"] = json!("x")),
            edited(|p| {
                p["spec"]["ephemeralContainers"] =
                    json!([{"name": "dbg", "image": "busybox", "targetContainerName": "app"}])
            }),
        ] {
            assert_eq!(check_update(&old, &new), Ok(()));
        }
    }

    #[test]
    fn what_bears_on_the_sidecar_is_refused() {
        let old = injected();
        let cases: Vec<(Pod, &str)> = vec![
            (
                edited(|p| p["spec"]["initContainers"][0]["image"] = json!("evil:1")),
                "image differ",
            ),
            (
                edited(|p| {
                    p["metadata"]["annotations"]
                        .as_object_mut()
                        .unwrap()
                        .remove("sluice.dev/injected-revision");
                }),
                "sluice.dev/injected-revision",
            ),
            (
                edited(|p| {
                    p["metadata"]["annotations"]["sluice.dev/injected-connections"] =
                        json!("orders-db,billing")
                }),
                "sluice.dev/injected-connections",
            ),
            (
                edited(|p| {
                    p["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox",
                        "targetContainerName": "sluice-sidecar"}])
                }),
                "targets the Sluice sidecar",
            ),
            (
                edited(|p| {
                    p["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox",
                        "volumeMounts": [{"name": "sluice-token", "mountPath": "/x"}]}])
                }),
                "would mount volume sluice-token",
            ),
            (
                edited(|p| {
                    p["spec"]["ephemeralContainers"] =
                        json!([{"name": "sluice-sidecar", "image": "busybox"}])
                }),
                "containers named sluice-sidecar: 1 before, 2 after, in initContainers and ephemeralContainers",
            ),
            (
                edited(|p| p["spec"]["shareProcessNamespace"] = json!(true)),
                "spec.shareProcessNamespace",
            ),
            (
                edited(|p| {
                    p["metadata"]["annotations"]["sluice.dev/sidecar-log-level"] = json!("debug")
                }),
                "annotation sluice.dev/sidecar-log-level of a running injected pod was read when its sidecar was injected, so adding it now would change nothing; set it in the workload's pod template and roll the workload",
            ),
            (
                edited(|p| {
                    p["metadata"]["annotations"]["sluice.dev/sidecar-memroy-limit"] = json!("1Gi")
                }),
                "annotation sluice.dev/sidecar-memroy-limit of a running injected pod",
            ),
            (
                edited(|p| {
                    p["metadata"]["annotations"]["sluice.dev/connections"] = json!("billing")
                }),
                "annotation sluice.dev/connections of a running injected pod was read when its sidecar was injected, so adding it",
            ),
            (
                edited(|p| p["metadata"]["annotations"]["sluice.dev/inject"] = json!("false")),
                "so changing it now would change nothing",
            ),
            (
                edited(|p| {
                    p["metadata"]["annotations"]
                        .as_object_mut()
                        .unwrap()
                        .remove("sluice.dev/inject");
                }),
                "so removing it now would change nothing",
            ),
        ];
        for (new, needle) in cases {
            let error = check_update(&old, &new).unwrap_err().to_string();
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }

    #[test]
    fn a_pod_stays_injected_when_its_annotations_go() {
        let mut old = injected();
        old.metadata.annotations = None;
        assert!(is_injected(&old));
        let new = {
            let mut p = serde_json::to_value(&old).unwrap();
            p["spec"]["initContainers"][0]["image"] = json!("evil:1");
            serde_json::from_value(p).unwrap()
        };
        assert!(check_update(&old, &new).is_err());
    }

    #[test]
    fn pods_never_injected_pass() {
        let plain: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }))
        .unwrap();
        let mut new = plain.clone();
        new.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
        assert!(!is_injected(&plain));
        assert_eq!(check_update(&plain, &new), Ok(()));
    }
}
