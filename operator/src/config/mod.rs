//! The operator's settings file (`--config-file`, `SLUICE_CONFIG_FILE`): what
//! the Helm chart writes to `/etc/sluice/config.yaml` from its values, so the
//! sidecar image, its resources and the audit and notification settings a
//! platform team chose are the ones the operator uses.
//!
//! The file is typed: an unknown key or a value of the wrong type stops the
//! operator at start-up with the key's path, instead of being ignored. A
//! missing file (when the path came from the environment) means defaults.
//! Command-line flags override the file, which overrides the defaults.
//!
//! ```yaml
//! sidecar:
//!   image: registry.example/sluice-sidecar:0.1.0
//!   imagePullPolicy: IfNotPresent
//!   nativeSidecars: auto
//!   resources:
//!     requests: {cpu: 20m, memory: 32Mi}
//!     limits: {cpu: 500m, memory: 128Mi}
//!   logLevel: info               # SLUICE_LOG of every sidecar; sluice.dev/sidecar-log-level overrides it
//!   annotationBounds:            # what pods may ask by sluice.dev/sidecar-* annotations
//!     cpu: {min: 10m, max: "2"}
//!     memory: {min: 32Mi, max: 1Gi}
//!     logLevels: [error, warn, info, debug]
//!   securityContext:             # the whole container securityContext; omit runAsUser
//!     runAsNonRoot: true         # and runAsGroup to leave them to the platform (OpenShift)
//!     runAsUser: 65532
//!     runAsGroup: 65532
//!     readOnlyRootFilesystem: true
//!     allowPrivilegeEscalation: false
//!     capabilities: {drop: [ALL]}
//!     seccompProfile: {type: RuntimeDefault}
//!   http:                        # http Connections; each key optional
//!     timeoutSeconds: 30
//!     maxRequestBodyBytes: 1048576
//!     upstreamHTTP1Only: false
//! audit:
//!   flushSeconds: 10
//!   sinks: {stdout: true, operator: true}
//!   failClosed: true
//! notifications:
//!   webhook:
//!     urlFile: /etc/sluice-notify/url
//!     format: slack                 # or json
//!   routes:                         # tried first, in order
//!     - namespace: shop
//!       rule: bulk-writes-need-a-human
//!       urlFile: /etc/sluice-notify-routes/shop
//!       format: json
//! ```

pub mod merge;

pub use merge::{Overrides, Provenance, describe};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Capabilities, ResourceRequirements, SeccompProfile, SecurityContext,
};

use crate::injection::pod_settings::{
    AnnotationBounds, LOG_ENV, LogLevel, SidecarOptions, hardened_security_context,
};

use crate::approvals::notify::{Format, Route};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

/// The whole file. Every section is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// The injected sidecar.
    #[serde(default)]
    pub sidecar: SidecarConfig,
    /// Audit events.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Outgoing notifications.
    #[serde(default)]
    pub notifications: NotificationsConfig,
}

/// The longest sidecar shutdown grace (the sidecar's `shutdown::MAX_GRACE`).
pub const MAX_SIDECAR_SHUTDOWN_GRACE_SECONDS: u64 = 3600;

/// How the sidecar is injected.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarConfig {
    /// Image reference (`--sidecar-image` overrides it).
    pub image: Option<String>,
    /// `imagePullPolicy` of the injected container; the cluster's default when unset.
    pub image_pull_policy: Option<PullPolicy>,
    /// `auto`, `always` or `never` (`--native-sidecars` overrides it).
    pub native_sidecars: Option<NativeSidecars>,
    /// Resources of the injected container; [`crate::injection::inject::default_sidecar_resources`] when unset.
    pub resources: Option<SidecarResources>,
    /// Settings of the sidecar's http Connections (the sidecar's defaults when unset).
    #[serde(default)]
    pub http: SidecarHttpConfig,
    /// Seconds the sidecar's sessions get to end after SIGTERM
    /// (`SLUICE_SHUTDOWN_GRACE`; `--sidecar-shutdown-grace-seconds` overrides it).
    pub shutdown_grace_seconds: Option<u64>,
    /// The log level of every injected sidecar (`SLUICE_LOG`; the sidecar's
    /// `info` when unset). A pod's `sluice.dev/sidecar-log-level` overrides
    /// it, within `annotationBounds.logLevels`.
    pub log_level: Option<LogLevel>,
    /// What pods may ask of their sidecar by annotation; nothing when unset.
    #[serde(default)]
    pub annotation_bounds: AnnotationBounds,
    /// The sidecar container's `securityContext`, whole; the hardened
    /// default ([`hardened_security_context`]) when unset.
    pub security_context: Option<SidecarSecurityContext>,
    /// The audit durability of Connections whose `spec.audit.durability` is
    /// unset (`SLUICE_AUDIT_DURABILITY`; the sidecar's `writeAhead` when unset).
    pub audit_durability: Option<sluice_crds::AuditDurability>,
}

/// `sidecar.securityContext`: the injected container's `securityContext` as
/// written (a key left out is left unset, for the platform to fill in). What
/// keeps the sidecar's secrets is not negotiable ([`Self::check`]): it runs as
/// non-root with a read-only root, no privilege escalation, every capability
/// dropped and a seccomp profile. The UID and GID may be left to the platform
/// (OpenShift's restricted SCC assigns one of the namespace's), or changed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSecurityContext {
    /// `runAsUser`; unset leaves it to the platform.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`; unset leaves it to the platform.
    pub run_as_group: Option<i64>,
    /// Must be true.
    pub run_as_non_root: Option<bool>,
    /// Must be true.
    pub read_only_root_filesystem: Option<bool>,
    /// Must be false.
    pub allow_privilege_escalation: Option<bool>,
    /// Must be false or unset.
    pub privileged: Option<bool>,
    /// Must drop `ALL` and add nothing.
    pub capabilities: Option<SidecarCapabilities>,
    /// `RuntimeDefault`, or `Localhost` with a profile.
    pub seccomp_profile: Option<SidecarSeccompProfile>,
}

/// `capabilities` of [`SidecarSecurityContext`].
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarCapabilities {
    /// Capabilities dropped; must include `ALL`.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Capabilities added; must be empty.
    #[serde(default)]
    pub add: Vec<String>,
}

/// `seccompProfile` of [`SidecarSecurityContext`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSeccompProfile {
    /// `RuntimeDefault` or `Localhost`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The profile, for `Localhost`.
    pub localhost_profile: Option<String>,
}

impl SidecarSecurityContext {
    /// Refuses what would weaken the sidecar; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        const KEY: &str = "sidecar.securityContext";
        if self.run_as_non_root != Some(true) {
            return Err(format!(
                "{KEY}.runAsNonRoot must be true: the sidecar holds credentials and never runs as root"
            ));
        }
        if self.run_as_user.is_some_and(|u| u <= 0) {
            return Err(format!(
                "{KEY}.runAsUser must be a non-root UID, or left out for the platform to assign one"
            ));
        }
        if self.run_as_group.is_some_and(|g| g < 0) {
            return Err(format!(
                "{KEY}.runAsGroup must be a GID, or left out for the platform to assign one"
            ));
        }
        if self.read_only_root_filesystem != Some(true) {
            return Err(format!(
                "{KEY}.readOnlyRootFilesystem must be true: the sidecar writes nothing to its image"
            ));
        }
        if self.allow_privilege_escalation != Some(false) {
            return Err(format!(
                "{KEY}.allowPrivilegeEscalation must be false (OpenShift's restricted SCC and the restricted Pod Security Standard require it too)"
            ));
        }
        if self.privileged == Some(true) {
            return Err(format!("{KEY}.privileged must be false or left out"));
        }
        let capabilities = self.capabilities.clone().unwrap_or_default();
        if !capabilities.drop.iter().any(|c| c == "ALL") {
            return Err(format!(
                "{KEY}.capabilities.drop must include ALL: the sidecar needs no capability"
            ));
        }
        if !capabilities.add.is_empty() {
            return Err(format!(
                "{KEY}.capabilities.add must be empty: the sidecar needs no capability"
            ));
        }
        match &self.seccomp_profile {
            Some(p) if p.type_ == "RuntimeDefault" && p.localhost_profile.is_none() => Ok(()),
            Some(p) if p.type_ == "Localhost" && p.localhost_profile.is_some() => Ok(()),
            _ => Err(format!(
                "{KEY}.seccompProfile must be {{type: RuntimeDefault}} or {{type: Localhost, localhostProfile: ...}}"
            )),
        }
    }

    /// As the container spec takes it.
    pub fn to_security_context(&self) -> SecurityContext {
        SecurityContext {
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
            run_as_non_root: self.run_as_non_root,
            read_only_root_filesystem: self.read_only_root_filesystem,
            allow_privilege_escalation: self.allow_privilege_escalation,
            privileged: self.privileged,
            capabilities: self.capabilities.as_ref().map(|c| Capabilities {
                add: None,
                drop: Some(c.drop.clone()),
            }),
            seccomp_profile: self.seccomp_profile.as_ref().map(|p| SeccompProfile {
                type_: p.type_.clone(),
                localhost_profile: p.localhost_profile.clone(),
            }),
            ..Default::default()
        }
    }
}

impl SidecarConfig {
    /// The sidecar's options as the injector takes them.
    pub fn options(&self) -> SidecarOptions {
        SidecarOptions {
            annotation_bounds: self.annotation_bounds.clone(),
            security_context: self
                .security_context
                .as_ref()
                .map_or_else(hardened_security_context, |s| s.to_security_context()),
        }
    }

    /// The sidecar environment this section becomes (see [`SidecarHttpConfig::env`]).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.http.env();
        if let Some(d) = self.audit_durability {
            env.push((
                crate::injection::inject::env::AUDIT_DURABILITY.to_string(),
                d.as_str().to_string(),
            ));
        }
        if let Some(level) = self.log_level {
            // Last: a pod's sluice.dev/sidecar-log-level replaces it
            // (PodSettings::apply).
            env.push((LOG_ENV.to_string(), level.as_str().to_string()));
        }
        env
    }
}

/// `sidecar.http`: how injected sidecars serve http Connections. Each is
/// handed to the sidecar as an environment variable (`sluice-sidecar run`
/// reads `SLUICE_HTTP_TIMEOUT`, `SLUICE_HTTP_MAX_BODY`,
/// `SLUICE_HTTP_UPSTREAM_HTTP1_ONLY`); unset keys keep the sidecar's defaults
/// (30 s, 1 MiB, HTTP/2 offered).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarHttpConfig {
    /// Seconds the upstream has to answer with headers, and at most between
    /// two pieces of a request or response body (a 504 after that).
    pub timeout_seconds: Option<f64>,
    /// Largest request body buffered to decide `jsonBody` rules, in bytes (a
    /// larger body on such a route is refused with 413).
    pub max_request_body_bytes: Option<u64>,
    /// Offer only HTTP/1.1 to upstreams (by default ALPN offers HTTP/2 too).
    #[serde(rename = "upstreamHTTP1Only")]
    pub upstream_http1_only: Option<bool>,
}

impl SidecarHttpConfig {
    /// The sidecar environment these settings become.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(t) = self.timeout_seconds {
            env.push((
                crate::injection::inject::env::HTTP_TIMEOUT.to_string(),
                t.to_string(),
            ));
        }
        if let Some(b) = self.max_request_body_bytes {
            env.push((
                crate::injection::inject::env::HTTP_MAX_BODY.to_string(),
                b.to_string(),
            ));
        }
        if let Some(h) = self.upstream_http1_only {
            env.push((
                crate::injection::inject::env::HTTP_UPSTREAM_HTTP1_ONLY.to_string(),
                h.to_string(),
            ));
        }
        env
    }
}

/// `resources` of the injected container (typed here so a misspelt `limit:` is
/// an error, not an unlimited sidecar).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarResources {
    /// Requests, e.g. `cpu: 20m`.
    pub requests: Option<BTreeMap<String, Quantity>>,
    /// Limits, e.g. `memory: 128Mi`.
    pub limits: Option<BTreeMap<String, Quantity>>,
}

impl SidecarResources {
    /// As the container spec takes them.
    pub fn to_requirements(&self) -> ResourceRequirements {
        ResourceRequirements {
            requests: self.requests.clone(),
            limits: self.limits.clone(),
            ..Default::default()
        }
    }
}

/// A container's `imagePullPolicy`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node does not have it.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Native sidecars (Kubernetes 1.29+).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecars {
    /// Decide from the API server's version.
    Auto,
    /// Always an init container with `restartPolicy: Always`.
    Always,
    /// Always a regular container.
    Never,
}

impl NativeSidecars {
    /// `None` for auto, else whether to use native sidecars.
    pub fn decided(self) -> Option<bool> {
        match self {
            NativeSidecars::Auto => None,
            NativeSidecars::Always => Some(true),
            NativeSidecars::Never => Some(false),
        }
    }
}

/// Where audit events go. Sidecars in run mode always write every event to
/// stdout first (write-ahead: a statement whose event cannot be written does
/// not run) and then upload it to the operator; the file states that so a
/// configuration asking for something else is refused instead of ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the operator writes audit counters to AccessPolicy status, in
    /// seconds (`--audit-flush-seconds` overrides it).
    pub flush_seconds: Option<u64>,
    /// The sinks.
    #[serde(default)]
    pub sinks: AuditSinks,
    /// Write-ahead audit.
    #[serde(default = "yes")]
    pub fail_closed: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            flush_seconds: None,
            sinks: AuditSinks::default(),
            fail_closed: true,
        }
    }
}

/// The audit sinks of injected sidecars.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSinks {
    /// JSON lines on the sidecar's stdout.
    #[serde(default = "yes")]
    pub stdout: bool,
    /// Batches to the operator's `/v1/audit` (status counters, recentDenials,
    /// signed checkpoints).
    #[serde(default = "yes")]
    pub operator: bool,
}

impl Default for AuditSinks {
    fn default() -> Self {
        AuditSinks {
            stdout: true,
            operator: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Outgoing notifications.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsConfig {
    /// The webhook of approval requests and decisions no route selects.
    #[serde(default)]
    pub webhook: WebhookNotifications,
    /// Receivers for some namespaces or rules, tried in order before `webhook`;
    /// the first that selects a request is its only one.
    #[serde(default)]
    pub routes: Vec<NotificationRoute>,
}

/// At most this many `notifications.routes`.
pub const MAX_NOTIFICATION_ROUTES: usize = 64;

/// A receiver for the requests of one namespace, one rule, or both.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationRoute {
    /// Only requests in this namespace.
    pub namespace: Option<String>,
    /// Only requests under a rule of this name.
    pub rule: Option<String>,
    /// The URL itself (only for URLs that are not secret).
    pub url: Option<String>,
    /// A file holding the URL (surrounding whitespace ignored).
    pub url_file: Option<PathBuf>,
    /// `slack` (`{"text": ...}`, the default) or `json` (the structured payload).
    #[serde(default)]
    pub format: Format,
}

/// Where approval notifications are POSTed. The URL usually carries a token,
/// so the chart mounts it from a Secret and names the file here.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookNotifications {
    /// The URL itself (only for URLs that are not secret).
    pub url: Option<String>,
    /// A file holding the URL (surrounding whitespace ignored).
    pub url_file: Option<PathBuf>,
    /// `slack` (`{"text": ...}`, the default) or `json` (the structured payload).
    #[serde(default)]
    pub format: Format,
}

/// Why the settings file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the operator settings file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match [`OperatorConfig`].
    #[error("the operator settings file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what (the YAML reader names the key and the line).
        message: String,
    },
    /// A setting the sidecar cannot honour.
    #[error("the operator settings file {path}: {message}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// The notification URL file could not be read.
    #[error("cannot read the notification URL file {path} (notifications.webhook.urlFile)")]
    UrlFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Both `url` and `urlFile`.
    #[error(
        "the operator settings file {path} sets both notifications.webhook.url and urlFile; keep one"
    )]
    TwoUrls {
        /// The file.
        path: PathBuf,
    },
}

impl OperatorConfig {
    /// Reads `path`. When `required` is false (the path is the default or came
    /// from the environment) a missing file means defaults.
    pub fn load(path: &Path, required: bool) -> Result<OperatorConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(OperatorConfig::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        OperatorConfig::parse(&text, path)
    }

    /// Parses and checks the file's text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<OperatorConfig, ConfigError> {
        let config: OperatorConfig = if text.trim().is_empty() {
            OperatorConfig::default()
        } else {
            sluice_crds::yaml::from_str(text).map_err(|error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?
        };
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let unsupported = |message: &str| ConfigError::Unsupported {
            path: path.to_path_buf(),
            message: message.to_string(),
        };
        let audit = &self.audit;
        if !audit.sinks.stdout {
            return Err(unsupported(
                "audit.sinks.stdout: false is not supported: sidecars always write audit events to stdout, write-ahead",
            ));
        }
        if !audit.sinks.operator {
            return Err(unsupported(
                "audit.sinks.operator: false is not supported: sidecars always upload audit events to the operator (AccessPolicy counters and signed checkpoints depend on it)",
            ));
        }
        if !audit.fail_closed {
            return Err(unsupported(
                "audit.failClosed: false is not supported: a statement whose audit event cannot be written never runs",
            ));
        }
        if audit.flush_seconds == Some(0) {
            return Err(unsupported("audit.flushSeconds must be at least 1"));
        }
        if let Some(t) = self.sidecar.http.timeout_seconds
            && !(t.is_finite() && t > 0.0 && t <= 86_400.0)
        {
            return Err(unsupported(
                "sidecar.http.timeoutSeconds must be more than 0 and at most 86400",
            ));
        }
        if self
            .sidecar
            .shutdown_grace_seconds
            .is_some_and(|g| g > MAX_SIDECAR_SHUTDOWN_GRACE_SECONDS)
        {
            return Err(unsupported(
                "sidecar.shutdownGraceSeconds must be at most 3600 (the sidecar refuses more)",
            ));
        }
        self.sidecar
            .annotation_bounds
            .check()
            .map_err(|m| unsupported(&m))?;
        if let Some(context) = &self.sidecar.security_context {
            context.check().map_err(|m| unsupported(&m))?;
        }
        if let Some(image) = &self.sidecar.image
            && image.trim().is_empty()
        {
            return Err(unsupported(
                "sidecar.image is empty; remove it for the default",
            ));
        }
        let webhook = &self.notifications.webhook;
        if webhook.url.is_some() && webhook.url_file.is_some() {
            return Err(ConfigError::TwoUrls {
                path: path.to_path_buf(),
            });
        }
        let routes = &self.notifications.routes;
        if routes.len() > MAX_NOTIFICATION_ROUTES {
            return Err(unsupported(&format!(
                "notifications.routes has {} entries, more than {MAX_NOTIFICATION_ROUTES}; select by namespace and rule more broadly",
                routes.len()
            )));
        }
        for (i, route) in routes.iter().enumerate() {
            if route.url.is_some() == route.url_file.is_some() {
                return Err(unsupported(&format!(
                    "notifications.routes[{i}] needs exactly one of url and urlFile"
                )));
            }
            if route.namespace.is_none() && route.rule.is_none() {
                return Err(unsupported(&format!(
                    "notifications.routes[{i}] selects every request; give a namespace or a rule (notifications.webhook is the catch-all)"
                )));
            }
        }
        Ok(())
    }

    /// The notification URL the file names, read from `urlFile` when given.
    pub fn notify_url(&self) -> Result<Option<String>, ConfigError> {
        let webhook = &self.notifications.webhook;
        if let Some(url) = &webhook.url {
            return Ok(Some(url.trim().to_string()));
        }
        let Some(path) = &webhook.url_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::UrlFile {
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.trim().to_string()))
    }

    /// The routes of `notifications.routes`, their URLs read from `urlFile`
    /// where given.
    pub fn notify_routes(&self) -> Result<Vec<Route>, ConfigError> {
        self.notifications
            .routes
            .iter()
            .map(|r| {
                let url = match (&r.url, &r.url_file) {
                    (Some(url), _) => url.trim().to_string(),
                    (None, Some(path)) => std::fs::read_to_string(path)
                        .map_err(|source| ConfigError::UrlFile {
                            path: path.clone(),
                            source,
                        })?
                        .trim()
                        .to_string(),
                    (None, None) => String::new(),
                };
                Ok(Route {
                    namespace: r.namespace.clone(),
                    rule: r.rule.clone(),
                    url,
                    format: r.format,
                })
            })
            .collect()
    }

    /// Applies the sidecar section to an injector configuration: image, pull
    /// policy and resources (what flags did not set is taken from here).
    pub fn apply_to_inject(&self, inject: &mut crate::injection::inject::InjectConfig) {
        if let Some(image) = &self.sidecar.image {
            inject.image = image.clone();
        }
        if let Some(policy) = self.sidecar.image_pull_policy {
            inject.image_pull_policy = Some(policy.as_str().to_string());
        }
        if let Some(resources) = &self.sidecar.resources {
            inject.resources = resources.to_requirements();
        }
        inject.sidecar_env = self.sidecar.env();
        if let Some(grace) = self.sidecar.shutdown_grace_seconds {
            inject.shutdown_grace_seconds = grace;
        }
        inject.options = self.sidecar.options();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OperatorConfig, ConfigError> {
        OperatorConfig::parse(text, Path::new("/etc/sluice/config.yaml"))
    }

    #[test]
    fn the_charts_file_parses() {
        let config = parse(
            "sidecar:\n  image: registry.example/sluice-sidecar@sha256:abc\n  imagePullPolicy: Always\n  nativeSidecars: never\n  resources:\n    requests:\n      cpu: 20m\n      memory: 32Mi\n    limits:\n      memory: 128Mi\naudit:\n  flushSeconds: 5\n  sinks:\n    stdout: true\n    operator: true\n  failClosed: true\nnotifications:\n  webhook:\n    urlFile: /etc/sluice-notify/url\n",
        )
        .unwrap();
        assert_eq!(
            config.sidecar.image.as_deref(),
            Some("registry.example/sluice-sidecar@sha256:abc")
        );
        assert_eq!(config.sidecar.image_pull_policy, Some(PullPolicy::Always));
        assert_eq!(config.sidecar.native_sidecars, Some(NativeSidecars::Never));
        let resources = config.sidecar.resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap()["cpu"].0,
            "20m".to_string()
        );
        assert_eq!(config.audit.flush_seconds, Some(5));
        assert_eq!(
            config.notifications.webhook.url_file.as_deref(),
            Some(Path::new("/etc/sluice-notify/url"))
        );
    }

    #[test]
    fn empty_and_missing_files_are_defaults() {
        assert_eq!(parse("").unwrap(), OperatorConfig::default());
        assert_eq!(parse("{}\n").unwrap(), OperatorConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.yaml");
        assert_eq!(
            OperatorConfig::load(&missing, false).unwrap(),
            OperatorConfig::default()
        );
        let error = OperatorConfig::load(&missing, true).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let error = parse("sidecar:\n  resource: {}\n").unwrap_err();
        let text = crate::error_chain(&error);
        assert!(text.contains("unknown field `resource`"), "{text}");
        assert!(text.contains("/etc/sluice/config.yaml"), "{text}");

        let error = parse("sidecars: {}\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `sidecars`"),
            "{error}"
        );

        let error = parse("sidecar:\n  imagePullPolicy: Sometimes\n").unwrap_err();
        assert!(error.to_string().contains("Sometimes"), "{error}");

        let error = parse("sidecar:\n  resources:\n    limit:\n      memory: 1Gi\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `limit`"),
            "{error}"
        );

        let error = parse("audit:\n  sinks:\n    file: /var/log/a.jsonl\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `file`"),
            "{error}"
        );
    }

    #[test]
    fn settings_the_sidecar_cannot_honour_are_refused() {
        for (text, key) in [
            (
                "audit:\n  sinks:\n    stdout: false\n",
                "audit.sinks.stdout",
            ),
            (
                "audit:\n  sinks:\n    operator: false\n",
                "audit.sinks.operator",
            ),
            ("audit:\n  failClosed: false\n", "audit.failClosed"),
            ("audit:\n  flushSeconds: 0\n", "audit.flushSeconds"),
            ("sidecar:\n  image: ' '\n", "sidecar.image"),
            (
                "sidecar:\n  http:\n    timeoutSeconds: 0\n",
                "sidecar.http.timeoutSeconds",
            ),
            (
                "sidecar:\n  http:\n    timeoutSeconds: 100000\n",
                "sidecar.http.timeoutSeconds",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Unsupported { message, .. } if message.starts_with(key)),
                "{text}: {error:?}"
            );
        }
        let error =
            parse("notifications:\n  webhook:\n    url: https://a\n    urlFile: /x\n").unwrap_err();
        assert!(matches!(error, ConfigError::TwoUrls { .. }), "{error:?}");
    }

    #[test]
    fn notify_url_comes_from_the_file_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "https://hooks.example/T0/B0/secret\n").unwrap();
        let config = parse(&format!(
            "notifications:\n  webhook:\n    urlFile: {}\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(
            config.notify_url().unwrap().as_deref(),
            Some("https://hooks.example/T0/B0/secret")
        );
        std::fs::remove_file(&file).unwrap();
        let error = config.notify_url().unwrap_err();
        assert!(matches!(error, ConfigError::UrlFile { .. }), "{error:?}");
        // The message names the file, never its content.
        assert!(!crate::error_chain(&error).contains("secret"));
        assert_eq!(OperatorConfig::default().notify_url().unwrap(), None);
    }

    #[test]
    fn the_sidecar_http_section_becomes_sidecar_environment() {
        let config = parse(
            "sidecar:\n  http:\n    timeoutSeconds: 2.5\n    maxRequestBodyBytes: 65536\n    upstreamHTTP1Only: true\n",
        )
        .unwrap();
        assert_eq!(
            config.sidecar.http.env(),
            vec![
                ("SLUICE_HTTP_TIMEOUT".to_string(), "2.5".to_string()),
                ("SLUICE_HTTP_MAX_BODY".to_string(), "65536".to_string()),
                (
                    "SLUICE_HTTP_UPSTREAM_HTTP1_ONLY".to_string(),
                    "true".to_string()
                ),
            ]
        );
        // Unset: the sidecar's own defaults, nothing in its environment.
        assert!(
            parse("sidecar: {}\n")
                .unwrap()
                .sidecar
                .http
                .env()
                .is_empty()
        );
        let batched = parse("sidecar:\n  auditDurability: batched\n").unwrap();
        assert_eq!(
            batched.sidecar.env(),
            vec![("SLUICE_AUDIT_DURABILITY".to_string(), "batched".to_string())]
        );
        assert!(parse("sidecar:\n  auditDurability: sometimes\n").is_err());
        // A misspelt key is an error, not a silently default timeout.
        assert!(parse("sidecar:\n  http:\n    timeout: 5\n").is_err());
        assert!(parse("sidecar:\n  http:\n    maxRequestBodyBytes: -1\n").is_err());
    }

    #[test]
    fn the_sidecar_section_reaches_the_injector() {
        let config =
            parse("sidecar:\n  image: reg.example/sc:2\n  imagePullPolicy: IfNotPresent\n  resources:\n    limits:\n      memory: 64Mi\n")
                .unwrap();
        let mut inject = crate::injection::inject::InjectConfig {
            sidecar_env: Vec::new(),
            shutdown_grace_seconds:
                crate::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
            revision: "r".into(),
            image: "sluice-sidecar:latest".into(),
            image_pull_policy: None,
            gateway_url: "https://gw".into(),
            ca_pem: String::new(),
            admin_port: 15020,
            native_sidecars: true,
            resources: crate::injection::inject::default_sidecar_resources(),
            service_account: String::new(),
            connections: Vec::new(),
            options: Default::default(),
        };
        config.apply_to_inject(&mut inject);
        assert!(inject.sidecar_env.is_empty());
        assert_eq!(inject.image, "reg.example/sc:2");
        assert_eq!(inject.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            inject.resources.limits.as_ref().unwrap()["memory"].0,
            "64Mi".to_string()
        );
        assert!(inject.resources.requests.is_none());
    }

    const HARDENED: &str = "sidecar:\n  securityContext:\n    runAsNonRoot: true\n    readOnlyRootFilesystem: true\n    allowPrivilegeEscalation: false\n    privileged: false\n    capabilities: {drop: [ALL]}\n    seccompProfile: {type: RuntimeDefault}\n";

    #[test]
    fn the_sidecar_security_context_may_leave_the_uid_to_the_platform() {
        let config = parse(HARDENED).unwrap();
        let context = config.sidecar.options().security_context;
        assert_eq!(context.run_as_user, None);
        assert_eq!(context.run_as_group, None);
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(
            context.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        // Unset: the hardened default with the sidecar's own UID.
        let default = parse("sidecar: {}\n").unwrap().sidecar.options();
        assert_eq!(
            default.security_context,
            crate::injection::pod_settings::hardened_security_context()
        );
        assert_eq!(default.security_context.run_as_user, Some(65532));
        assert_eq!(default.annotation_bounds, AnnotationBounds::default());
    }

    #[test]
    fn a_security_context_that_weakens_the_sidecar_is_refused() {
        for (from, to, key) in [
            ("runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot"),
            ("    runAsNonRoot: true\n", "", "runAsNonRoot"),
            ("privileged: false", "privileged: true", "privileged"),
            (
                "allowPrivilegeEscalation: false",
                "allowPrivilegeEscalation: true",
                "allowPrivilegeEscalation",
            ),
            (
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
                "readOnlyRootFilesystem",
            ),
            ("drop: [ALL]", "drop: [NET_RAW]", "capabilities.drop"),
            (
                "drop: [ALL]",
                "drop: [ALL], add: [NET_ADMIN]",
                "capabilities.add",
            ),
            ("type: RuntimeDefault", "type: Unconfined", "seccompProfile"),
            ("privileged: false", "runAsUser: 0", "runAsUser"),
        ] {
            let text = HARDENED.replace(from, to);
            assert_ne!(text, HARDENED);
            let error = parse(&text).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Unsupported { message, .. }
                    if message.starts_with(&format!("sidecar.securityContext.{key}"))),
                "{text}: {error:?}"
            );
        }
        // A key the type does not know is an error, not ignored.
        let error =
            parse(&HARDENED.replace("privileged: false", "procMount: Unmasked")).unwrap_err();
        assert!(error.to_string().contains("procMount"), "{error}");
    }

    #[test]
    fn annotation_bounds_reach_the_injector_and_bad_ones_stop_the_operator() {
        let config = parse(
            "sidecar:\n  annotationBounds:\n    memory: {min: 32Mi, max: 1Gi}\n    logLevels: [info, debug]\n",
        )
        .unwrap();
        let bounds = config.sidecar.options().annotation_bounds;
        assert_eq!(bounds.memory.unwrap().max.0, "1Gi");
        assert!(bounds.cpu.is_none());
        assert_eq!(bounds.log_levels.len(), 2);
        for (text, needle) in [
            (
                "sidecar:\n  annotationBounds:\n    memory: {min: 2Gi, max: 1Gi}\n",
                "sidecar.annotationBounds.memory.min 2Gi is more than",
            ),
            (
                "sidecar:\n  annotationBounds:\n    cpu: {max: two}\n",
                "sidecar.annotationBounds.cpu.max \"two\"",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
        assert!(parse("sidecar:\n  annotationBounds:\n    logLevels: [verbose]\n").is_err());
        assert!(parse("sidecar:\n  annotationBounds:\n    cpu: {min: 1m}\n").is_err());
    }

    #[test]
    fn the_chart_wide_log_level_reaches_every_sidecar() {
        let config = parse("sidecar:\n  logLevel: warn\n").unwrap();
        assert_eq!(
            config.sidecar.env(),
            vec![(LOG_ENV.to_string(), "warn".to_string())]
        );
        // Unset: no variable, the sidecar's own default (info).
        assert_eq!(parse("sidecar: {}\n").unwrap().sidecar.env(), Vec::new());
        for bad in ["verbose", "sluice=debug", "INFO"] {
            let error = parse(&format!("sidecar:\n  logLevel: {bad}\n")).unwrap_err();
            assert!(error.to_string().contains(bad), "{bad}: {error}");
        }
    }
}
