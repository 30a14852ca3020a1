//! The checks [`super::inject`] makes before it mutates a pod: its shape,
//! the Connections it asks for, their ports and variables.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodSpec;

use super::{
    CONNECTIONS_ANNOTATION, ConnectionTarget, InjectConfig, InjectError, SIDECAR_CONTAINER_NAME,
    TOKEN_VOLUME_NAME,
};

/// Refuses pod shapes in which the sidecar cannot keep its secrets.
pub(super) fn check_pod(spec: &PodSpec) -> Result<(), InjectError> {
    if spec.share_process_namespace == Some(true) {
        return Err(InjectError::SharedProcessNamespace {
            field: "shareProcessNamespace",
        });
    }
    if spec.host_pid == Some(true) {
        return Err(InjectError::SharedProcessNamespace { field: "hostPID" });
    }
    if spec.host_network == Some(true) {
        return Err(InjectError::HostNetwork);
    }
    if spec.containers.is_empty() {
        return Err(InjectError::NoContainers);
    }
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    if all
        .map(|c| c.name.as_str())
        .any(|n| n == SIDECAR_CONTAINER_NAME)
    {
        return Err(InjectError::ReservedName {
            kind: "container",
            name: SIDECAR_CONTAINER_NAME,
        });
    }
    // A mount of the not-yet-existing token volume would become valid once
    // the webhook adds the volume, handing the app the sidecar's token.
    let mounting = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == TOKEN_VOLUME_NAME)
        });
    if let Some(container) = mounting {
        return Err(InjectError::TokenVolumeMounted {
            container: container.name.clone(),
        });
    }
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == TOKEN_VOLUME_NAME)
    {
        return Err(InjectError::ReservedName {
            kind: "volume",
            name: TOKEN_VOLUME_NAME,
        });
    }
    Ok(())
}

/// The Connections the sidecar will serve: those named by the annotation, in
/// its order, or else every bound one, by name.
pub(super) fn select_connections<'a>(
    requested: Option<&String>,
    cfg: &'a InjectConfig,
) -> Result<Vec<&'a ConnectionTarget>, InjectError> {
    let Some(requested) = requested else {
        let mut bound: Vec<&ConnectionTarget> =
            cfg.connections.iter().filter(|c| c.bound).collect();
        bound.sort_by(|a, b| a.name.cmp(&b.name));
        bound.dedup_by(|a, b| a.name == b.name);
        if bound.is_empty() {
            return Err(InjectError::NoBoundConnections {
                service_account: cfg.service_account.clone(),
            });
        }
        return Ok(bound);
    };
    let mut seen = BTreeSet::new();
    let mut selected = Vec::new();
    for name in requested
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if !seen.insert(name) {
            continue;
        }
        let Some(target) = cfg.connections.iter().find(|c| c.name == name) else {
            let mut known: Vec<&str> = cfg.connections.iter().map(|c| c.name.as_str()).collect();
            known.sort_unstable();
            return Err(InjectError::UnknownConnection {
                name: name.to_string(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        };
        if !target.bound {
            return Err(InjectError::ConnectionNotBound {
                name: name.to_string(),
                service_account: cfg.service_account.clone(),
            });
        }
        selected.push(target);
    }
    if selected.is_empty() {
        return Err(InjectError::InvalidAnnotation {
            annotation: CONNECTIONS_ANNOTATION,
            value: requested.clone(),
            reason: "expected a comma-separated list of Connection names; omit the annotation to get every Connection the service account is bound to",
        });
    }
    Ok(selected)
}

/// Every port binds in the pod's one network namespace, so a listener, the
/// admin server and an app container port must all differ.
pub(super) fn check_ports(
    spec: &PodSpec,
    selected: &[&ConnectionTarget],
    admin_port: u16,
) -> Result<(), InjectError> {
    let mut claimed: BTreeMap<u16, String> = BTreeMap::new();
    let mut claim = |port: u16, who: String| match claimed.get(&port) {
        Some(first) => Err(InjectError::PortClash {
            port,
            first: first.clone(),
            second: who,
        }),
        None => {
            claimed.insert(port, who);
            Ok(())
        }
    };
    claim(admin_port, "the Sluice sidecar's admin server".to_string())?;
    for target in selected {
        claim(target.listen_port, format!("Connection {:?}", target.name))?;
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    // App ports are only checked against the sidecar's: whether two app
    // containers may declare the same port is the API server's business.
    for container in containers {
        for port in container.ports.iter().flatten() {
            let tcp = port.protocol.as_deref().is_none_or(|p| p == "TCP");
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            if let (true, Some(first)) = (tcp, claimed.get(&number)) {
                return Err(InjectError::PortClash {
                    port: number,
                    first: first.clone(),
                    second: format!("container {:?}", container.name),
                });
            }
        }
    }
    Ok(())
}

/// Two Connections writing the same variable would leave the app with
/// whichever came last; refuse instead of guessing.
pub(super) fn check_env(selected: &[&ConnectionTarget]) -> Result<(), InjectError> {
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for target in selected {
        let Some(variable) = target.inject_env.as_deref() else {
            continue;
        };
        if let Some(first) = owners.insert(variable, &target.name) {
            return Err(InjectError::EnvClash {
                variable: variable.to_string(),
                first: first.to_string(),
                second: target.name.clone(),
            });
        }
    }
    Ok(())
}
