//! The injected sidecar: the annotations the injector reads and writes, the
//! settings it is given ([`InjectConfig`]), and the container and token volume
//! it adds ([`sidecar_container`], [`token_volume`]). Both the injector
//! ([`super::inject`]) and the genuineness check ([`super::token_holder`])
//! build from here, so what is injected and what is accepted later are one
//! definition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_crds::{Connection, Protocol};

pub use super::pod_settings::SidecarOptions;

/// Pod annotation that opts a pod in: `sluice.dev/inject: "true"`.
pub const INJECT_ANNOTATION: &str = "sluice.dev/inject";
/// Optional pod annotation naming the Connections to serve, comma separated.
pub const CONNECTIONS_ANNOTATION: &str = "sluice.dev/connections";
/// Written on injection: the revision of the injector that mutated the pod.
/// Its presence is what makes re-admission a no-op.
pub const INJECTED_REVISION_ANNOTATION: &str = "sluice.dev/injected-revision";
/// Written on injection: the Connections the sidecar serves, comma separated.
pub const INJECTED_CONNECTIONS_ANNOTATION: &str = "sluice.dev/injected-connections";
/// Written when an app container already set a variable the webhook would have
/// injected: `container/VARIABLE` entries, comma separated.
pub const ENV_NOT_INJECTED_ANNOTATION: &str = "sluice.dev/env-not-injected";
/// The container `kubectl logs` and `kubectl exec` pick when none is named.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Name of the injected container.
pub const SIDECAR_CONTAINER_NAME: &str = "sluice-sidecar";
/// Name of the projected service-account token volume.
pub const TOKEN_VOLUME_NAME: &str = "sluice-token";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/sluice.dev/serviceaccount";
/// The token file the sidecar reads (`SLUICE_TOKEN_FILE`).
pub const TOKEN_FILE: &str = "/var/run/secrets/sluice.dev/serviceaccount/token";
/// Audience of the projected token; the gateway's TokenReview asks for it.
pub const TOKEN_AUDIENCE: &str = "sluice.dev";
/// Lifetime of the projected token. 600 s is the shortest the API server
/// accepts; the kubelet rotates it at 80 % of its life.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// The sidecar's own user and group: not the app's, so the app cannot read its
/// memory or signal it even when both are non-root.
pub const SIDECAR_UID: i64 = 65532;
/// Name of the sidecar's admin port (probes, metrics). At most 15 characters.
pub const ADMIN_PORT_NAME: &str = "sluice-admin";

/// Environment variables the injected sidecar reads (defined beside the
/// gateway API, which the sidecar shares).
pub use sluice_policy::wire::env;

/// Everything [`inject`] needs besides the pod, resolved by the webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// Revision recorded in `sluice.dev/injected-revision` (e.g. the operator's
    /// version and a hash of its injection settings).
    pub revision: String,
    /// Sidecar image reference.
    pub image: String,
    /// `imagePullPolicy` of the sidecar; the cluster default when `None`.
    pub image_pull_policy: Option<String>,
    /// HTTPS URL of the gateway API, as the sidecar reaches it.
    pub gateway_url: String,
    /// PEM the sidecar trusts for the gateway: the operator's CA bundle
    /// ([`crate::identity::pki::OperatorPki::ca_bundle_pem`], public data).
    pub ca_pem: String,
    /// Port of the sidecar's admin server, bound on all pod addresses because
    /// the kubelet probes it from outside the pod.
    pub admin_port: u16,
    /// Whether the cluster supports native sidecars (1.29+): an init container
    /// with `restartPolicy: Always`. When false, a regular container is used.
    pub native_sidecars: bool,
    /// Resources of the sidecar container (from Helm values).
    pub resources: ResourceRequirements,
    /// The pod's service account, as the webhook read it (`default` when unset);
    /// used in messages only.
    pub service_account: String,
    /// Every Connection in the pod's namespace, and whether the pod's service
    /// account is bound to it by an AccessPolicy.
    pub connections: Vec<ConnectionTarget>,
    /// More environment of the sidecar, `(name, value)`: the optional
    /// settings of the operator's settings file (e.g. `SLUICE_HTTP_TIMEOUT`
    /// from `sidecar.http.timeoutSeconds`).
    pub sidecar_env: Vec<(String, String)>,
    /// The sidecar's shutdown grace in seconds (`SLUICE_SHUTDOWN_GRACE`): how
    /// long its sessions get to end after SIGTERM. The pod's
    /// `terminationGracePeriodSeconds` is raised to exceed it (see [`inject`]).
    pub shutdown_grace_seconds: u64,
    /// What pods may set by annotation, and the sidecar's `securityContext`
    /// (the chart's `sidecar.annotationBounds` and `sidecar.securityContext`).
    pub options: SidecarOptions,
}

/// The sidecar's default shutdown grace, in seconds (the sidecar's own
/// default, `sluice_sidecar::shutdown::DEFAULT_GRACE`).
pub const DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS: u64 = 20;

/// The sidecar's shutdown grace variable (`sluice_sidecar::shutdown::GRACE_ENV`;
/// the operator does not link the sidecar crate).
pub const SHUTDOWN_GRACE_ENV: &str = "SLUICE_SHUTDOWN_GRACE";

/// Seconds a pod's `terminationGracePeriodSeconds` must exceed the sidecar's
/// shutdown grace by: after the grace the sidecar still ends the remaining
/// sessions, writes their `sessionEnd` and flushes before it exits, all before
/// the kubelet's SIGKILL.
pub const TERMINATION_GRACE_MARGIN_SECONDS: i64 = 5;

/// What the injector needs to know about one Connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionTarget {
    /// Name of the Connection.
    pub name: String,
    /// Its protocol, which decides the URL scheme of the injected variable.
    pub protocol: Protocol,
    /// Loopback port the sidecar serves it on (`spec.listen.port`).
    pub listen_port: u16,
    /// Database name for SQL connections (`spec.upstream.database`).
    pub database: Option<String>,
    /// Variable injected into app containers (`spec.inject.env`), if any.
    pub inject_env: Option<String>,
    /// Whether an AccessPolicy binds the pod's service account to it.
    pub bound: bool,
}

impl ConnectionTarget {
    /// Reads the fields the injector needs from a Connection.
    pub fn from_connection(connection: &Connection, bound: bool) -> Self {
        ConnectionTarget {
            name: connection.metadata.name.clone().unwrap_or_default(),
            protocol: connection.spec.protocol,
            listen_port: connection.spec.listen.port,
            database: connection.spec.upstream.database.clone(),
            inject_env: connection.spec.inject.as_ref().map(|i| i.env.clone()),
            bound,
        }
    }

    /// The URL an app uses to reach this Connection through the sidecar.
    ///
    /// MySQL gets `127.0.0.1` rather than `localhost` because libmysqlclient
    /// takes `localhost` to mean its Unix socket, which the sidecar does not serve.
    pub fn local_url(&self) -> String {
        let db = self.database.as_deref().unwrap_or_default();
        match self.protocol {
            Protocol::Postgres => format!("postgres://localhost:{}/{db}", self.listen_port),
            Protocol::Mysql => format!("mysql://127.0.0.1:{}/{db}", self.listen_port),
            Protocol::Http => format!("http://localhost:{}", self.listen_port),
        }
    }
}

/// Sidecar resources used when the Helm values give none: small requests, and a
/// memory limit so a leak cannot starve the app. No CPU limit, to avoid
/// throttling on the data path.
pub fn default_sidecar_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".into())),
            ("memory".to_string(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("128Mi".into()),
        )])),
        ..Default::default()
    }
}

/// The sidecar container the injector adds for `connections` (before a pod's
/// own settings, [`super::pod_settings::PodSettings::apply`]); also what
/// [`crate::injection::token_holder::check_genuine`] compares a running pod's sidecar with.
pub fn sidecar_container(cfg: &InjectConfig, connections: &[String]) -> Container {
    let plain = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_string(),
            }),
            ..Default::default()
        }),
    };
    let probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readyz".to_string()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    Container {
        name: SIDECAR_CONTAINER_NAME.to_string(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(vec!["run".to_string()]),
        // Only a native sidecar (an init container) carries a restart policy.
        restart_policy: cfg.native_sidecars.then(|| "Always".to_string()),
        env: Some(
            vec![
                plain(env::GATEWAY_URL, cfg.gateway_url.clone()),
                plain(env::TOKEN_FILE, TOKEN_FILE.to_string()),
                plain(env::CA_PEM, cfg.ca_pem.clone()),
                plain(env::CONNECTIONS, connections.join(",")),
                plain(env::ADMIN_ADDR, format!("0.0.0.0:{}", cfg.admin_port)),
                field(env::POD_NAME, "metadata.name"),
                field(env::POD_NAMESPACE, "metadata.namespace"),
                field(env::POD_UID, "metadata.uid"),
                field(env::SERVICE_ACCOUNT, "spec.serviceAccountName"),
            ]
            .into_iter()
            // Optional settings from here on (crate::injection::token_holder::OPTIONAL_SIDECAR_ENV):
            // a pod injected before a change of them stays genuine.
            .chain(std::iter::once(plain(
                SHUTDOWN_GRACE_ENV,
                cfg.shutdown_grace_seconds.to_string(),
            )))
            .chain(
                cfg.sidecar_env
                    .iter()
                    .map(|(name, value)| plain(name, value.clone())),
            )
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_string()),
            container_port: i32::from(cfg.admin_port),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        // Two minutes to fetch a first bundle before the kubelet restarts it.
        startup_probe: Some(probe(1, 120)),
        readiness_probe: Some(probe(5, 3)),
        resources: Some(cfg.resources.clone()),
        security_context: Some(cfg.options.security_context.clone()),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME_NAME.to_string(),
            mount_path: TOKEN_MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

/// The projected token volume the injector adds; also what
/// [`crate::injection::token_holder::check_genuine`] compares a running pod's with.
pub fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME_NAME.to_string(),
        projected: Some(ProjectedVolumeSource {
            default_mode: None,
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.to_string()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: "token".to_string(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}
