//! Per-pod sidecar settings by annotation (#23 item 8), within the bounds the
//! platform team set in the chart (`sidecar.annotationBounds`), and the
//! sidecar's deployment-wide options ([`SidecarOptions`]: those bounds and
//! the container's `securityContext`).
//!
//! | annotation                          | sets                              | bounded by                          |
//! |-------------------------------------|-----------------------------------|-------------------------------------|
//! | `sluice.dev/sidecar-cpu-request`    | `resources.requests.cpu`          | `annotationBounds.cpu.{min,max}`    |
//! | `sluice.dev/sidecar-cpu-limit`      | `resources.limits.cpu`            | `annotationBounds.cpu.{min,max}`    |
//! | `sluice.dev/sidecar-memory-request` | `resources.requests.memory`       | `annotationBounds.memory.{min,max}` |
//! | `sluice.dev/sidecar-memory-limit`   | `resources.limits.memory`         | `annotationBounds.memory.{min,max}` |
//! | `sluice.dev/sidecar-log-level`      | `SLUICE_LOG` (the sidecar's log filter) | `annotationBounds.logLevels`  |
//!
//! The names follow the `sluice.dev/` annotations the webhook already reads,
//! with a `sidecar-` prefix for what is the sidecar's (as Istio's
//! `sidecar.istio.io/proxyCPU` and Vault's `agent-limits-cpu` say whose it is).
//!
//! Fail closed, no silent clamp: an annotation that is malformed, outside its
//! bound, not bounded at all (the chart sets no bound for it), or that would
//! put a request above its limit refuses the pod at admission, naming the
//! annotation, its value and the bound. A clamped value would give the pod
//! something its author did not ask for and could not see.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use super::sidecar::SIDECAR_UID;

/// Sets the sidecar's CPU request.
pub const CPU_REQUEST_ANNOTATION: &str = "sluice.dev/sidecar-cpu-request";
/// Sets the sidecar's CPU limit.
pub const CPU_LIMIT_ANNOTATION: &str = "sluice.dev/sidecar-cpu-limit";
/// Sets the sidecar's memory request.
pub const MEMORY_REQUEST_ANNOTATION: &str = "sluice.dev/sidecar-memory-request";
/// Sets the sidecar's memory limit.
pub const MEMORY_LIMIT_ANNOTATION: &str = "sluice.dev/sidecar-memory-limit";
/// Sets the sidecar's log level.
pub const LOG_LEVEL_ANNOTATION: &str = "sluice.dev/sidecar-log-level";
/// What every annotation of this module starts with: the webhook reads them
/// at injection only, so the pod guard refuses a change of any of them on a
/// running pod ([`super::pod_guard`]).
pub const SIDECAR_SETTING_PREFIX: &str = "sluice.dev/sidecar-";
/// Every annotation of this module.
pub const POD_SETTING_ANNOTATIONS: [&str; 5] = [
    CPU_REQUEST_ANNOTATION,
    CPU_LIMIT_ANNOTATION,
    MEMORY_REQUEST_ANNOTATION,
    MEMORY_LIMIT_ANNOTATION,
    LOG_LEVEL_ANNOTATION,
];

/// The sidecar's log filter variable (`sluice-sidecar` reads `SLUICE_LOG`).
pub const LOG_ENV: &str = "SLUICE_LOG";

/// The longest annotation value read (a quantity or a level is short).
const MAX_VALUE_LEN: usize = 32;

/// A log level the sidecar's filter takes. No level prints statement
/// literals, parameters or result values (the sidecar caps other crates'
/// events at `info` whatever the level), so a level changes volume, not what
/// is revealed.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The sidecar's default.
    Info,
    /// Sluice's own debug events.
    Debug,
    /// Sluice's own trace events.
    Trace,
}

impl LogLevel {
    /// Every level, least verbose first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The word, as `SLUICE_LOG` and the annotation spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// The level spelt `word`, exactly.
    pub fn parse(word: &str) -> Option<LogLevel> {
        LogLevel::ALL.into_iter().find(|l| l.as_str() == word)
    }
}

/// `min` and `max` of one resource, for requests and limits alike.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuantityBounds {
    /// The least a pod may ask for (none: anything above zero).
    pub min: Option<Quantity>,
    /// The most a pod may ask for.
    pub max: Quantity,
}

/// What pods may ask of their sidecar by annotation (`sidecar.annotationBounds`
/// of the chart). A resource without bounds, or no log levels, means its
/// annotations are refused.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnotationBounds {
    /// CPU requests and limits.
    pub cpu: Option<QuantityBounds>,
    /// Memory requests and limits.
    pub memory: Option<QuantityBounds>,
    /// The log levels a pod may pick.
    #[serde(default)]
    pub log_levels: Vec<LogLevel>,
}

impl AnnotationBounds {
    /// Checks the bounds themselves (at start-up); the message names the key
    /// under `sidecar.annotationBounds`.
    pub fn check(&self) -> Result<(), String> {
        for (resource, bounds) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            let Some(bounds) = bounds else { continue };
            let key = format!("sidecar.annotationBounds.{resource}");
            let max = parse_quantity(&bounds.max.0)
                .map_err(|why| format!("{key}.max {:?} {why}", bounds.max.0))?;
            if let Some(min) = &bounds.min {
                let low =
                    parse_quantity(&min.0).map_err(|why| format!("{key}.min {:?} {why}", min.0))?;
                if low > max {
                    return Err(format!(
                        "{key}.min {} is more than {key}.max {}",
                        min.0, bounds.max.0
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The sidecar's deployment-wide options beyond image and resources: what
/// pods may set by annotation, and the container's `securityContext`.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarOptions {
    /// What pods may set by annotation.
    pub annotation_bounds: AnnotationBounds,
    /// The sidecar container's `securityContext` (the chart's
    /// `sidecar.securityContext`; [`hardened_security_context`] by default).
    /// `runAsUser`/`runAsGroup` unset leave the UID to the platform (OpenShift's
    /// SCC), and the genuineness check then accepts the one it assigns.
    pub security_context: SecurityContext,
}

impl Default for SidecarOptions {
    fn default() -> Self {
        SidecarOptions {
            annotation_bounds: AnnotationBounds::default(),
            security_context: hardened_security_context(),
        }
    }
}

/// The sidecar's default `securityContext`: non-root with its own UID, no
/// privilege escalation, no capabilities, read-only root, seccomp RuntimeDefault.
pub fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SIDECAR_UID),
        run_as_group: Some(SIDECAR_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".to_string()]),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Why a pod's sidecar setting is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct PodSettingError {
    /// The annotation.
    pub annotation: &'static str,
    /// Its value (at most [`MAX_VALUE_LEN`] characters of it).
    pub value: String,
    /// What is wrong, the bound, and what to do.
    pub reason: String,
}

/// What a pod asked of its sidecar, checked against the bounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSettings {
    /// `(requests or limits, resource, annotation, value)`, in annotation order.
    resources: Vec<(Side, &'static str, Quantity)>,
    /// The log level.
    log_level: Option<LogLevel>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Request,
    Limit,
}

impl PodSettings {
    /// Reads the pod's annotations of this module; `base` is the sidecar's
    /// resources before them (the chart's `sidecar.resources`).
    pub fn read(
        annotations: &BTreeMap<String, String>,
        bounds: &AnnotationBounds,
        base: &ResourceRequirements,
    ) -> Result<PodSettings, PodSettingError> {
        let mut settings = PodSettings::default();
        for (annotation, side, resource) in [
            (CPU_REQUEST_ANNOTATION, Side::Request, "cpu"),
            (CPU_LIMIT_ANNOTATION, Side::Limit, "cpu"),
            (MEMORY_REQUEST_ANNOTATION, Side::Request, "memory"),
            (MEMORY_LIMIT_ANNOTATION, Side::Limit, "memory"),
        ] {
            let Some(value) = annotations.get(annotation) else {
                continue;
            };
            let refuse = |reason: String| PodSettingError {
                annotation,
                value: value.chars().take(MAX_VALUE_LEN).collect(),
                reason,
            };
            let resource_bounds = match resource {
                "cpu" => &bounds.cpu,
                _ => &bounds.memory,
            };
            let Some(resource_bounds) = resource_bounds else {
                return Err(refuse(format!(
                    "the operator allows no per-pod sidecar {resource} (the chart's sidecar.annotationBounds.{resource} is unset); remove the annotation, or have the platform team set that bound"
                )));
            };
            let asked = parse_quantity(value).map_err(|why| refuse(why.to_string()))?;
            // The bounds were checked at start-up; one that does not parse
            // bounds nothing, so it refuses.
            let key = format!("sidecar.annotationBounds.{resource}");
            let max = parse_quantity(&resource_bounds.max.0)
                .map_err(|why| refuse(format!("the operator's {key}.max {why}")))?;
            if asked > max {
                return Err(refuse(format!(
                    "more than the chart's bound {key}.max = {}; ask for at most that, or have the platform team raise it",
                    resource_bounds.max.0
                )));
            }
            if let Some(min) = &resource_bounds.min {
                let least = parse_quantity(&min.0)
                    .map_err(|why| refuse(format!("the operator's {key}.min {why}")))?;
                if asked < least {
                    return Err(refuse(format!(
                        "less than the chart's bound {key}.min = {}; ask for at least that (the sidecar needs it)",
                        min.0
                    )));
                }
            }
            settings
                .resources
                .push((side, resource, Quantity(value.clone())));
        }
        settings.check_requests_within_limits(annotations, base)?;
        if let Some(value) = annotations.get(LOG_LEVEL_ANNOTATION) {
            let refuse = |reason: String| PodSettingError {
                annotation: LOG_LEVEL_ANNOTATION,
                value: value.chars().take(MAX_VALUE_LEN).collect(),
                reason,
            };
            let allowed: Vec<&str> = bounds.log_levels.iter().map(|l| l.as_str()).collect();
            let level = LogLevel::parse(value).ok_or_else(|| {
                refuse("expected one of error, warn, info, debug, trace".to_string())
            })?;
            if !bounds.log_levels.contains(&level) {
                return Err(refuse(if allowed.is_empty() {
                    "the operator allows no per-pod sidecar log level (the chart's sidecar.annotationBounds.logLevels is empty); remove the annotation, or have the platform team list the levels pods may pick".to_string()
                } else {
                    format!(
                        "not a level the chart's sidecar.annotationBounds.logLevels allows ({}); pick one of those",
                        allowed.join(", ")
                    )
                }));
            }
            settings.log_level = Some(level);
        }
        Ok(settings)
    }

    /// A request above its limit (the API server would refuse the pod with
    /// a message about the container, not the annotation).
    fn check_requests_within_limits(
        &self,
        annotations: &BTreeMap<String, String>,
        base: &ResourceRequirements,
    ) -> Result<(), PodSettingError> {
        let resources = self.resources_over(base);
        for (resource, request_annotation, limit_annotation) in [
            ("cpu", CPU_REQUEST_ANNOTATION, CPU_LIMIT_ANNOTATION),
            ("memory", MEMORY_REQUEST_ANNOTATION, MEMORY_LIMIT_ANNOTATION),
        ] {
            let get = |side: &Option<BTreeMap<String, Quantity>>| {
                side.as_ref().and_then(|m| m.get(resource)).cloned()
            };
            let (Some(request), Some(limit)) = (get(&resources.requests), get(&resources.limits))
            else {
                continue;
            };
            let (Ok(r), Ok(l)) = (parse_quantity(&request.0), parse_quantity(&limit.0)) else {
                continue;
            };
            if r <= l {
                continue;
            }
            let by_request = annotations.contains_key(request_annotation);
            let by_limit = annotations.contains_key(limit_annotation);
            let (annotation, reason) = match (by_request, by_limit) {
                (true, true) => (
                    request_annotation,
                    format!(
                        "above the sidecar's {resource} limit {} ({limit_annotation}); a request may not exceed its limit",
                        limit.0
                    ),
                ),
                (true, false) => (
                    request_annotation,
                    format!(
                        "above the sidecar's {resource} limit {} (the chart's sidecar.resources); set {limit_annotation} too, at least as high",
                        limit.0
                    ),
                ),
                _ => (
                    limit_annotation,
                    format!(
                        "below the sidecar's {resource} request {} (the chart's sidecar.resources); set {request_annotation} too, at most as high",
                        request.0
                    ),
                ),
            };
            let value = annotations.get(annotation).cloned().unwrap_or_default();
            return Err(PodSettingError {
                annotation,
                value: value.chars().take(MAX_VALUE_LEN).collect(),
                reason,
            });
        }
        Ok(())
    }

    /// `base` with the pod's resource annotations applied.
    fn resources_over(&self, base: &ResourceRequirements) -> ResourceRequirements {
        let mut resources = base.clone();
        for (side, resource, quantity) in &self.resources {
            let map = match side {
                Side::Request => &mut resources.requests,
                Side::Limit => &mut resources.limits,
            };
            map.get_or_insert_with(BTreeMap::new)
                .insert((*resource).to_string(), quantity.clone());
        }
        resources
    }

    /// Whether the pod asked for nothing.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.log_level.is_none()
    }

    /// Puts the settings on the injector's sidecar `container`: its resources,
    /// and `SLUICE_LOG` last among its variables (with the optional settings
    /// the genuineness check knows).
    pub fn apply(&self, container: &mut Container) {
        if !self.resources.is_empty() {
            let base = container.resources.clone().unwrap_or_default();
            container.resources = Some(self.resources_over(&base));
        }
        if let Some(level) = self.log_level {
            let env = container.env.get_or_insert_with(Vec::new);
            env.retain(|e| e.name != LOG_ENV);
            env.push(EnvVar {
                name: LOG_ENV.to_string(),
                value: Some(level.as_str().to_string()),
                value_from: None,
            });
        }
    }
}

/// A Kubernetes quantity in nano-units, exactly, for comparing bounds.
///
/// Hand-written: k8s-openapi keeps `Quantity` as a string, and no
/// quantity-parsing crate is in the lock; the grammar needed here is small.
/// Taken: digits with an optional fraction and a suffix (`n u m k M G T P E`,
/// `Ki Mi Gi Ti Pi Ei`, or none). Refused: signs, exponents (`1e3`), more than
/// 9 fraction digits, zero, and values too large to compare.
pub fn parse_quantity(text: &str) -> Result<u128, &'static str> {
    const MALFORMED: &str = "is not a Kubernetes quantity such as 250m, 1, 64Mi or 1Gi (digits, an optional fraction, and a suffix n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)";
    if text.is_empty() || text.len() > MAX_VALUE_LEN {
        return Err(MALFORMED);
    }
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    const NANO: u128 = 1_000_000_000;
    let multiplier: u128 = match suffix {
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "" => NANO,
        "k" => NANO * 1_000,
        "M" => NANO * 1_000_000,
        "G" => NANO * 1_000_000_000,
        "T" => NANO * 1_000_000_000_000,
        "P" => NANO * 1_000_000_000_000_000,
        "E" => NANO * 1_000_000_000_000_000_000,
        "Ki" => NANO << 10,
        "Mi" => NANO << 20,
        "Gi" => NANO << 30,
        "Ti" => NANO << 40,
        "Pi" => NANO << 50,
        "Ei" => NANO << 60,
        _ => return Err(MALFORMED),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(MALFORMED);
    }
    if fraction.len() > 9 {
        return Err("has more than 9 fraction digits; round it");
    }
    let mut mantissa: u128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(d - b'0')))
            .ok_or("is too large")?;
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let value = mantissa
        .checked_mul(multiplier)
        .ok_or("is too large")?
        .div_ceil(scale);
    if value == 0 {
        return Err("is zero; give a positive quantity");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> AnnotationBounds {
        AnnotationBounds {
            cpu: Some(QuantityBounds {
                min: Some(Quantity("10m".into())),
                max: Quantity("2".into()),
            }),
            memory: Some(QuantityBounds {
                min: Some(Quantity("32Mi".into())),
                max: Quantity("1Gi".into()),
            }),
            log_levels: vec![LogLevel::Error, LogLevel::Info, LogLevel::Debug],
        }
    }

    fn read(pairs: &[(&str, &str)]) -> Result<PodSettings, PodSettingError> {
        let annotations = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PodSettings::read(
            &annotations,
            &bounds(),
            &super::super::sidecar::default_sidecar_resources(),
        )
    }

    #[test]
    fn every_setting_is_under_the_prefix_the_pod_guard_watches() {
        for annotation in POD_SETTING_ANNOTATIONS {
            assert!(
                annotation.starts_with(SIDECAR_SETTING_PREFIX),
                "{annotation}"
            );
            assert!(super::super::pod_guard::read_at_injection(annotation));
        }
    }

    #[test]
    fn quantities_compare_exactly() {
        let q = |t| parse_quantity(t).unwrap();
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1.5"), q("1500m"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1k"), q("1000"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("129Mi") > q("128Mi"));
        assert!(q("0.5") < q("501m"));
        for bad in [
            "",
            "-1",
            "1e3",
            "1.",
            ".5",
            "1.2.3",
            "1gi",
            "1 Gi",
            "Gi",
            "0",
            "0m",
            "1Xi",
            "99999999999999999999999999999999Ei",
            "1.0000000001",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn settings_within_bounds_reach_the_container() {
        let settings = read(&[
            (CPU_REQUEST_ANNOTATION, "100m"),
            (CPU_LIMIT_ANNOTATION, "2"),
            (MEMORY_REQUEST_ANNOTATION, "64Mi"),
            (MEMORY_LIMIT_ANNOTATION, "1Gi"),
            (LOG_LEVEL_ANNOTATION, "debug"),
        ])
        .unwrap();
        let mut container = Container {
            resources: Some(super::super::sidecar::default_sidecar_resources()),
            ..Default::default()
        };
        settings.apply(&mut container);
        let resources = container.resources.unwrap();
        let requests = resources.requests.unwrap();
        let limits = resources.limits.unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "64Mi");
        assert_eq!(limits["cpu"].0, "2");
        assert_eq!(limits["memory"].0, "1Gi");
        let env = container.env.unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            (LOG_ENV, Some("debug"))
        );
    }

    #[test]
    fn out_of_bounds_malformed_or_unbounded_settings_are_refused_by_name() {
        for (pairs, annotation, needle) in [
            (
                vec![(MEMORY_LIMIT_ANNOTATION, "2Gi")],
                MEMORY_LIMIT_ANNOTATION,
                "more than the chart's bound sidecar.annotationBounds.memory.max = 1Gi",
            ),
            (
                vec![(CPU_REQUEST_ANNOTATION, "1m")],
                CPU_REQUEST_ANNOTATION,
                "less than the chart's bound sidecar.annotationBounds.cpu.min = 10m",
            ),
            (
                vec![(CPU_LIMIT_ANNOTATION, "lots")],
                CPU_LIMIT_ANNOTATION,
                "is not a Kubernetes quantity",
            ),
            (
                vec![(MEMORY_REQUEST_ANNOTATION, "256Mi")],
                MEMORY_REQUEST_ANNOTATION,
                "above the sidecar's memory limit 128Mi (the chart's sidecar.resources)",
            ),
            (
                vec![
                    (MEMORY_REQUEST_ANNOTATION, "512Mi"),
                    (MEMORY_LIMIT_ANNOTATION, "256Mi"),
                ],
                MEMORY_REQUEST_ANNOTATION,
                "above the sidecar's memory limit 256Mi (sluice.dev/sidecar-memory-limit)",
            ),
            (
                vec![(LOG_LEVEL_ANNOTATION, "trace")],
                LOG_LEVEL_ANNOTATION,
                "allows (error, info, debug)",
            ),
            (
                vec![(LOG_LEVEL_ANNOTATION, "sluice=trace")],
                LOG_LEVEL_ANNOTATION,
                "expected one of error, warn, info, debug, trace",
            ),
        ] {
            let error = read(&pairs).unwrap_err();
            assert_eq!(error.annotation, annotation, "{pairs:?}: {error:?}");
            assert!(error.reason.contains(needle), "{pairs:?}: {error:?}");
        }
        // Up to the default limit (128Mi) a request alone is fine.
        assert!(read(&[(MEMORY_REQUEST_ANNOTATION, "128Mi")]).is_ok());
        // A limit under the chart's request names the limit annotation.
        let mut base = super::super::sidecar::default_sidecar_resources();
        base.requests
            .as_mut()
            .unwrap()
            .insert("memory".into(), Quantity("256Mi".into()));
        let error = PodSettings::read(
            &BTreeMap::from([(MEMORY_LIMIT_ANNOTATION.to_string(), "64Mi".to_string())]),
            &bounds(),
            &base,
        )
        .unwrap_err();
        assert_eq!(error.annotation, MEMORY_LIMIT_ANNOTATION);
        assert!(
            error.reason.contains(
                "below the sidecar's memory request 256Mi (the chart's sidecar.resources)"
            ),
            "{error:?}"
        );
        // No bound: refused, whatever the value.
        let error = PodSettings::read(
            &BTreeMap::from([(CPU_LIMIT_ANNOTATION.to_string(), "100m".to_string())]),
            &AnnotationBounds::default(),
            &ResourceRequirements::default(),
        )
        .unwrap_err();
        assert!(
            error
                .reason
                .contains("sidecar.annotationBounds.cpu is unset"),
            "{error:?}"
        );
        let error = PodSettings::read(
            &BTreeMap::from([(LOG_LEVEL_ANNOTATION.to_string(), "info".to_string())]),
            &AnnotationBounds::default(),
            &ResourceRequirements::default(),
        )
        .unwrap_err();
        assert!(error.reason.contains("logLevels is empty"), "{error:?}");
    }

    #[test]
    fn bounds_are_checked_at_start_up() {
        let mut b = bounds();
        assert_eq!(b.check(), Ok(()));
        b.memory = Some(QuantityBounds {
            min: Some(Quantity("2Gi".into())),
            max: Quantity("1Gi".into()),
        });
        assert!(
            b.check()
                .unwrap_err()
                .contains("memory.min 2Gi is more than")
        );
        b.memory = Some(QuantityBounds {
            min: None,
            max: Quantity("1 GB".into()),
        });
        assert!(b.check().unwrap_err().contains("memory.max \"1 GB\""));
    }
}
