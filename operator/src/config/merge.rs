//! How the settings file meets the flags: flags first, then the file, then
//! the defaults of [`Settings::new`] ([`OperatorConfig::merge_into`]); and the
//! resolved settings as `--check-config` prints them ([`describe`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, NativeSidecars, OperatorConfig};
use crate::identity::certs::CertSource;
use crate::run::{Settings, WebhookTarget};

/// The flags that take precedence over the settings file (`None`: not given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--sidecar-image`.
    pub sidecar_image: Option<String>,
    /// `--sidecar-shutdown-grace-seconds`.
    pub sidecar_shutdown_grace_seconds: Option<u64>,
    /// `--native-sidecars`.
    pub native_sidecars: Option<NativeSidecars>,
    /// `--audit-flush-seconds`.
    pub audit_flush_seconds: Option<u64>,
    /// `--notify-url`.
    pub notify_url: Option<String>,
    /// `--cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// `--cert-manager-certificate` (`NAME` or `NAMESPACE/NAME`).
    pub cert_manager_certificate: Option<String>,
    /// `--namespace`: the operator's own, for a bare certificate name.
    pub namespace: String,
}

impl OperatorConfig {
    /// Fills `settings` from `flags` first, then from this file; what neither
    /// sets keeps the default of [`Settings::new`].
    pub fn merge_into(
        &self,
        flags: &Overrides,
        settings: &mut Settings,
    ) -> Result<(), ConfigError> {
        if let Some(image) = flags.sidecar_image.clone().or(self.sidecar.image.clone()) {
            settings.sidecar_image = image;
        }
        settings.sidecar_image_pull_policy = self
            .sidecar
            .image_pull_policy
            .map(|p| p.as_str().to_string());
        if let Some(resources) = &self.sidecar.resources {
            settings.sidecar_resources = resources.to_requirements();
        }
        settings.sidecar_env = self.sidecar.env();
        settings.sidecar_options = self.sidecar.options();
        settings.sidecar_shutdown_grace_seconds = flags
            .sidecar_shutdown_grace_seconds
            .or(self.sidecar.shutdown_grace_seconds)
            .unwrap_or(crate::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS);
        settings.native_sidecars = flags
            .native_sidecars
            .or(self.sidecar.native_sidecars)
            .unwrap_or(NativeSidecars::Auto)
            .decided();
        let flush = flags
            .audit_flush_seconds
            .or(self.audit.flush_seconds)
            .unwrap_or(10);
        settings.audit_flush_every = Duration::from_secs(flush.max(1));
        settings.notify_url = match &flags.notify_url {
            Some(url) => Some(url.clone()),
            None => self.notify_url()?,
        };
        settings.notify_format = self.notifications.webhook.format;
        settings.notify_routes = self.notify_routes()?;
        if let Some(dir) = &flags.cert_dir {
            let ca_injection_from = flags.cert_manager_certificate.as_ref().map(|c| {
                if c.contains('/') {
                    c.clone()
                } else {
                    format!("{}/{c}", flags.namespace)
                }
            });
            settings.cert_source = CertSource::Dir {
                dir: dir.clone(),
                ca_injection_from,
            };
        }
        Ok(())
    }
}

/// Where the settings `--check-config` prints came from, beyond [`Settings`].
#[derive(Clone, Debug)]
pub struct Provenance<'a> {
    /// The settings file, if one was named.
    pub settings_file: Option<&'a Path>,
    /// Where the notification URL comes from (never the URL: it may carry a secret).
    pub notifications: String,
    /// The log format.
    pub log_format: String,
}

/// Every resolved setting, one `name: value` line each.
pub fn describe(
    settings: &Settings,
    provenance: &Provenance<'_>,
) -> Result<String, serde_json::Error> {
    let resources = serde_json::to_string(&settings.sidecar_resources)?;
    let certs = describe_certs(&settings.cert_source);
    let webhook = describe_webhook(settings);
    let sidecar_env = describe_env(&settings.sidecar_env);
    let annotation_bounds = describe_bounds(&settings.sidecar_options.annotation_bounds);
    let security_context = serde_json::to_string(&settings.sidecar_options.security_context)?;
    let native = match settings.native_sidecars {
        Some(true) => "true (always)",
        Some(false) => "false (never)",
        None => "auto (when the API server and every node's kubelet are 1.29+)",
    };
    let on = |b: bool| if b { "on" } else { "off" };
    let lines: Vec<(&str, String)> = vec![
        ("listen", settings.listen.to_string()),
        ("webhook", webhook),
        (
            "gateway url",
            settings
                .gateway_url
                .clone()
                .unwrap_or_else(|| "(the webhook URL, else the Service)".to_string()),
        ),
        ("namespace", settings.namespace.clone()),
        (
            "settings file",
            provenance
                .settings_file
                .map_or("(none)".to_string(), |p| p.display().to_string()),
        ),
        ("sidecar image", settings.sidecar_image.clone()),
        (
            "sidecar imagePullPolicy",
            settings
                .sidecar_image_pull_policy
                .clone()
                .unwrap_or_else(|| "(cluster default)".to_string()),
        ),
        ("sidecar resources", resources),
        ("sidecar env", sidecar_env),
        ("sidecar annotation bounds", annotation_bounds),
        ("sidecar securityContext", security_context),
        (
            "sidecar shutdown grace",
            seconds(Duration::from_secs(settings.sidecar_shutdown_grace_seconds)),
        ),
        ("native sidecars", native.to_string()),
        (
            "injection namespace label",
            format!(
                "{}={}",
                settings.namespace_label.0, settings.namespace_label.1
            ),
        ),
        (
            "webhook matchConditions",
            on(settings.webhook_match_conditions).to_string(),
        ),
        (
            "adopt webhook configurations",
            on(settings.adopt_webhook_configurations).to_string(),
        ),
        ("token ttl", seconds(settings.token_ttl)),
        ("bundle ttl", seconds(settings.bundle_ttl)),
        ("audit flush", seconds(settings.audit_flush_every)),
        ("drain delay", seconds(settings.drain_delay)),
        ("drain grace", seconds(settings.drain_grace)),
        (
            "access request retention",
            retention(settings.access_request_retention),
        ),
        ("notifications", provenance.notifications.clone()),
        ("certificates", certs),
        ("identity", settings.identity.clone()),
        ("log format", provenance.log_format.clone()),
    ];
    Ok(lines
        .into_iter()
        .map(|(name, value)| format!("{name}: {value}\n"))
        .collect())
}

/// Where the webhook and gateway certificates come from.
fn describe_certs(source: &CertSource) -> String {
    match source {
        CertSource::SelfManaged => "the operator's own CA (Secret sluice-operator-tls)".to_string(),
        CertSource::Dir {
            dir,
            ca_injection_from,
        } => format!(
            "{} (caBundle: {})",
            dir.display(),
            ca_injection_from
                .as_ref()
                .map_or("ca.crt, written by the operator".to_string(), |c| format!(
                    "cert-manager cainjector from {c}"
                ))
        ),
    }
}

/// Where the API server calls the webhooks.
fn describe_webhook(settings: &Settings) -> String {
    match &settings.webhook {
        WebhookTarget::Url(url) => url.clone(),
        WebhookTarget::Service { name, port } => {
            format!("Service {}/{name} port {port}", settings.namespace)
        }
        WebhookTarget::Listener => "this listener".to_string(),
    }
}

/// The sidecar's extra environment, `K=V` separated by spaces.
fn describe_env(env: &[(String, String)]) -> String {
    if env.is_empty() {
        return "(defaults)".to_string();
    }
    env.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What pods may ask of their sidecar by annotation.
fn describe_bounds(bounds: &crate::injection::pod_settings::AnnotationBounds) -> String {
    let range = |b: &Option<crate::injection::pod_settings::QuantityBounds>| {
        b.as_ref().map_or("refused".to_string(), |b| {
            format!(
                "{}..{}",
                b.min.as_ref().map_or("0", |m| m.0.as_str()),
                b.max.0
            )
        })
    };
    let levels: Vec<&str> = bounds.log_levels.iter().map(|l| l.as_str()).collect();
    format!(
        "cpu {}, memory {}, log levels {}",
        range(&bounds.cpu),
        range(&bounds.memory),
        if levels.is_empty() {
            "refused".to_string()
        } else {
            levels.join("/")
        }
    )
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// A retention in the unit it was most likely given in (`90d`, `36h`, …).
fn retention(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}
