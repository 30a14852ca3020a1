//! `sluice-operator`: controllers, admission webhooks and the gateway API,
//! against the API server in `KUBECONFIG` (or the in-cluster one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use sluice_operator::config::{NativeSidecars, OperatorConfig, Overrides, Provenance, describe};
use sluice_operator::run::{Settings, WebhookTarget, start};

/// Sluice operator: reconciles Connections and AccessPolicies, injects the
/// sidecar, and serves the gateway API sidecars exchange tokens and fetch
/// policy bundles from.
#[derive(Parser, Debug)]
#[command(name = "sluice-operator", version)]
struct Args {
    /// Address the HTTPS server (webhooks, gateway API, /metrics, /healthz,
    /// /readyz) listens on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,

    /// Run outside the cluster: register the webhook configurations with this
    /// URL (e.g. https://127.0.0.1:8443) instead of the in-cluster Service.
    #[arg(long, env = "SLUICE_WEBHOOK_URL", value_parser = https_url)]
    webhook_url: Option<String>,

    /// URL sidecars reach the gateway API at; defaults to --webhook-url, else
    /// the in-cluster Service.
    #[arg(long, env = "SLUICE_GATEWAY_URL", value_parser = https_url)]
    gateway_url: Option<String>,

    /// Namespace the operator keeps its certificate and signing-key Secrets in.
    #[arg(long, env = "SLUICE_NAMESPACE", default_value = "sluice-system")]
    namespace: String,

    /// Settings file (YAML; the Helm chart writes it): the sidecar's image,
    /// pull policy and resources, audit and notification settings. Flags
    /// override it. Unknown keys stop the operator; a missing file at the
    /// path from SLUICE_CONFIG_FILE means defaults.
    #[arg(long, env = "SLUICE_CONFIG_FILE", value_name = "PATH")]
    config_file: Option<PathBuf>,

    /// Serve the certificate in this directory (tls.crt, tls.key, ca.crt, as
    /// cert-manager writes a Certificate's Secret) instead of the operator's
    /// own CA; re-read every few seconds, so renewals need no restart. The
    /// operator never writes these files, and sidecars trust ca.crt.
    #[arg(long, env = "SLUICE_CERT_DIR", value_name = "DIR")]
    cert_dir: Option<PathBuf>,

    /// With --cert-dir: NAMESPACE/NAME (or NAME, in --namespace) of the
    /// cert-manager Certificate behind it. The webhook configurations then
    /// carry cert-manager.io/inject-ca-from and cainjector fills their
    /// caBundle; without it the operator writes ca.crt there itself.
    #[arg(long, requires = "cert_dir", value_name = "NAMESPACE/NAME")]
    cert_manager_certificate: Option<String>,

    /// Image of the injected sidecar [default: sidecar.image of the settings
    /// file, else sluice-sidecar:latest].
    #[arg(long, env = "SLUICE_SIDECAR_IMAGE")]
    sidecar_image: Option<String>,

    /// Inject the sidecar as a native sidecar (Kubernetes 1.29+), a regular
    /// container, or decide from the API server's version [default:
    /// sidecar.nativeSidecars of the settings file, else auto].
    #[arg(long, value_enum)]
    native_sidecars: Option<NativeSidecars>,

    /// Namespace label (KEY=VALUE) that scopes the injection webhook.
    #[arg(long, default_value = "sluice.dev/injection=enabled")]
    injection_namespace_label: String,

    /// Name of the operator's Service, used when --webhook-url is not given.
    #[arg(long, default_value = "sluice-operator")]
    service_name: String,

    /// Port of the operator's Service.
    #[arg(long, default_value_t = 443)]
    service_port: u16,

    /// Lifetime of gateway tokens, in seconds.
    #[arg(long, default_value_t = 900)]
    token_ttl_seconds: u64,

    /// Lifetime of policy bundles, in seconds (how long a sidecar may run on
    /// its last bundle while the operator is unreachable).
    #[arg(long, default_value_t = 900)]
    bundle_ttl_seconds: u64,

    /// On SIGTERM/SIGINT: how long the operator may take to finish the
    /// gateway requests in flight (audit uploads, token exchanges) and write
    /// the last audit counters, in seconds; waiting bundle long-polls are
    /// answered 304 at once. Keep it below the pod's
    /// terminationGracePeriodSeconds (the chart sets both).
    #[arg(long, default_value_t = 20)]
    drain_grace_seconds: u64,

    /// On SIGTERM/SIGINT: how long the operator keeps serving everything (with
    /// /readyz failing) before the drain starts, in seconds, so that webhook
    /// calls and sidecars the Service still routes here during a rollout are
    /// answered rather than refused. Delay plus drain grace must stay below
    /// the pod's terminationGracePeriodSeconds (the chart checks).
    #[arg(long, default_value_t = sluice_operator::run::DEFAULT_DRAIN_DELAY.as_secs(),
        value_parser = clap::value_parser!(u64).range(0..=300))]
    drain_delay_seconds: u64,

    /// How long injected sidecars give their sessions to end after SIGTERM,
    /// in seconds (their SLUICE_SHUTDOWN_GRACE; at most 3600). A pod whose
    /// terminationGracePeriodSeconds is not at least 5 s longer gets it raised
    /// [default: sidecar.shutdownGraceSeconds of the settings file, else 20].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600))]
    sidecar_shutdown_grace_seconds: Option<u64>,

    /// How long a settled AccessRequest (Denied, Expired, Executed) is kept
    /// after its last phase change before the operator deletes it: `90d`,
    /// `36h`, `30m`, `10s` or plain seconds. Decided requests are evidence.
    #[arg(long, default_value = "90d", value_parser = parse_retention)]
    access_request_retention: Duration,

    /// How often audit counters are written to AccessPolicy status, in
    /// seconds [default: audit.flushSeconds of the settings file, else 10].
    #[arg(long)]
    audit_flush_seconds: Option<u64>,

    /// Register the pod webhook without its CEL matchConditions (every pod of
    /// a labelled namespace is then sent to the webhook, which passes
    /// unannotated pods through). Only for API servers whose CEL cannot
    /// evaluate `'sluice.dev/inject' in object.metadata.annotations`.
    #[arg(long)]
    no_webhook_match_conditions: bool,

    /// The webhook configurations are installed by the Helm chart (so
    /// `helm uninstall` removes them): fill their caBundle and restore drifted
    /// webhooks, but never create one.
    #[arg(long)]
    adopt_webhook_configurations: bool,

    /// POST Slack-compatible JSON (`{"text": ...}`) here when an approval is
    /// requested or decided; failures are logged and retried, never blocking
    /// [default: notifications.webhook.url or urlFile of the settings file].
    #[arg(long, env = "SLUICE_NOTIFY_URL", hide_env_values = true)]
    notify_url: Option<String>,

    /// This replica's name in the leader Lease and in Events.
    #[arg(long, env = "SLUICE_POD_NAME")]
    identity: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Read the settings file and the flags, print the settings that would
    /// be used, and exit (0 when they are usable) without contacting the API
    /// server. The notification URL is not printed.
    #[arg(long)]
    check_config: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn https_url(value: &str) -> Result<String, String> {
    match value.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() => Ok(value.trim_end_matches('/').to_string()),
        _ => Err(format!(
            "{value:?} is not an https:// URL; the API server only calls webhooks over HTTPS"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One filter variable for both binaries: SLUICE_LOG (RUST_LOG still
    // read when it is unset); colours only on a terminal, never in files or pipes.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("sluice-operator: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        return match check_config(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("sluice-operator: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--access-request-retention`: a whole number with `d`, `h`, `m` or `s`
/// (plain: seconds), at least one second and at most ten years. Hand-written:
/// four units do not warrant a duration-parsing dependency.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like 90d, 36h, 30m or 10s"
            ));
        }
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| (1..=10 * 365 * 86_400).contains(s))
        .ok_or_else(|| format!("{text:?} must be between 1s and 3650d"))?;
    Ok(Duration::from_secs(seconds))
}

/// Flags first, then the settings file, then the defaults of [`Settings::new`]
/// ([`OperatorConfig::merge_into`]).
fn apply_config_file(
    args: &Args,
    config: &OperatorConfig,
    settings: &mut Settings,
) -> anyhow::Result<()> {
    Ok(config.merge_into(&overrides(args), settings)?)
}

/// The flags that take precedence over the settings file.
fn overrides(args: &Args) -> Overrides {
    Overrides {
        sidecar_image: args.sidecar_image.clone(),
        sidecar_shutdown_grace_seconds: args.sidecar_shutdown_grace_seconds,
        native_sidecars: args.native_sidecars,
        audit_flush_seconds: args.audit_flush_seconds,
        notify_url: args.notify_url.clone(),
        cert_dir: args.cert_dir.clone(),
        cert_manager_certificate: args.cert_manager_certificate.clone(),
        namespace: args.namespace.clone(),
    }
}

/// The flags the settings file has no say in.
fn apply_flags(args: &Args, settings: &mut Settings) -> anyhow::Result<()> {
    settings.gateway_url = args.gateway_url.clone();
    settings.namespace = args.namespace.clone();
    settings.namespace_label = args
        .injection_namespace_label
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .context("--injection-namespace-label must be KEY=VALUE")?;
    settings.token_ttl = Duration::from_secs(args.token_ttl_seconds);
    settings.bundle_ttl = Duration::from_secs(args.bundle_ttl_seconds);
    settings.drain_grace = Duration::from_secs(args.drain_grace_seconds);
    settings.drain_delay = Duration::from_secs(args.drain_delay_seconds);
    settings.access_request_retention = args.access_request_retention;
    settings.webhook_match_conditions = !args.no_webhook_match_conditions;
    settings.adopt_webhook_configurations = args.adopt_webhook_configurations;
    if let Some(identity) = &args.identity {
        settings.identity = identity.clone();
    }
    Ok(())
}

/// `--check-config`: every setting the flags and the settings file resolve
/// to, one `name: value` line each. The notification URL is not printed (it
/// may carry a secret), only where it comes from; its file is named, not read
/// (it may only exist in the pod).
fn check_config(args: &Args) -> anyhow::Result<String> {
    let mut config = load_config(args)?;
    let url_file = config.notifications.webhook.url_file.take();
    // Route URLs are not read either: their files may only exist in the pod.
    for route in &mut config.notifications.routes {
        if let Some(path) = route.url_file.take() {
            route.url = Some(format!("(read from {})", path.display()));
        }
    }
    let has_url = config.notifications.webhook.url.is_some();
    let mut settings = Settings::new(args.listen, webhook_target(args));
    apply_config_file(args, &config, &mut settings)?;
    apply_flags(args, &mut settings)?;
    let notify = match (&args.notify_url, has_url, &url_file) {
        (Some(_), _, _) => "--notify-url".to_string(),
        (None, true, _) => "notifications.webhook.url".to_string(),
        (None, false, Some(path)) => format!("read from {}", path.display()),
        (None, false, None) => "off".to_string(),
    };
    Ok(describe(
        &settings,
        &Provenance {
            settings_file: args.config_file.as_deref(),
            notifications: notify,
            log_format: format!("{:?}", args.log_format).to_lowercase(),
        },
    )?)
}

fn webhook_target(args: &Args) -> WebhookTarget {
    match &args.webhook_url {
        Some(url) => WebhookTarget::Url(url.clone()),
        None => WebhookTarget::Service {
            name: args.service_name.clone(),
            port: args.service_port,
        },
    }
}

/// The settings file: required when named by `--config-file`, optional
/// (defaults) when it only came from SLUICE_CONFIG_FILE or is absent.
fn load_config(args: &Args) -> anyhow::Result<OperatorConfig> {
    let Some(path) = &args.config_file else {
        return Ok(OperatorConfig::default());
    };
    let from_flag = std::env::args_os().any(|a| {
        a.to_str()
            .is_some_and(|a| a == "--config-file" || a.starts_with("--config-file="))
    });
    let config = OperatorConfig::load(path, from_flag)?;
    tracing::info!(path = %path.display(), "read the settings file");
    Ok(config)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    // kube and the servers share one TLS provider; ring, as everywhere in Sluice.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("no usable Kubernetes API server: set KUBECONFIG, or run in a pod")?;
    let mut settings = Settings::new(args.listen, webhook_target(&args));
    apply_config_file(&args, &config, &mut settings)?;
    apply_flags(&args, &mut settings)?;
    let mut running = start(client, settings).await?;
    tracing::info!(
        addr = %running.addr,
        gateway_url = %running.gateway_url,
        "serving webhooks and the gateway API"
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        () = running.wait() => anyhow::bail!("a part of the operator stopped; see the log above"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; draining"),
        _ = terminate.recv() => tracing::info!("terminated; draining"),
    }
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_operator::identity::certs::CertSource;

    fn resolved(flags: &[&str], file: &str) -> Settings {
        let mut argv = vec!["sluice-operator"];
        argv.extend_from_slice(flags);
        let args = Args::try_parse_from(argv).unwrap();
        let config = OperatorConfig::parse(file, std::path::Path::new("config.yaml")).unwrap();
        let mut settings = Settings::new(args.listen, WebhookTarget::Listener);
        apply_config_file(&args, &config, &mut settings).unwrap();
        settings
    }

    const FILE: &str = "sidecar:\n  image: reg.example/sidecar:file\n  imagePullPolicy: Always\n  nativeSidecars: never\n  resources:\n    limits:\n      memory: 64Mi\naudit:\n  flushSeconds: 30\nnotifications:\n  webhook:\n    url: https://hooks.example/file\n";

    #[test]
    fn the_file_fills_what_flags_leave_open() {
        let settings = resolved(&[], FILE);
        assert_eq!(settings.sidecar_image, "reg.example/sidecar:file");
        assert_eq!(
            settings.sidecar_image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(settings.native_sidecars, Some(false));
        assert_eq!(settings.audit_flush_every, Duration::from_secs(30));
        assert_eq!(
            settings.notify_url.as_deref(),
            Some("https://hooks.example/file")
        );
        assert_eq!(
            settings.sidecar_resources.limits.unwrap()["memory"].0,
            "64Mi"
        );
        assert_eq!(settings.cert_source, CertSource::SelfManaged);
    }

    #[test]
    fn flags_override_the_file() {
        let settings = resolved(
            &[
                "--sidecar-image=reg.example/sidecar:flag",
                "--native-sidecars=always",
                "--audit-flush-seconds=5",
                "--notify-url=https://hooks.example/flag",
                "--cert-dir=/etc/sluice-tls",
                "--cert-manager-certificate=sluice-operator-serving",
            ],
            FILE,
        );
        assert_eq!(settings.sidecar_image, "reg.example/sidecar:flag");
        assert_eq!(settings.native_sidecars, Some(true));
        assert_eq!(settings.audit_flush_every, Duration::from_secs(5));
        assert_eq!(
            settings.notify_url.as_deref(),
            Some("https://hooks.example/flag")
        );
        assert_eq!(
            settings.cert_source,
            CertSource::Dir {
                dir: "/etc/sluice-tls".into(),
                ca_injection_from: Some("sluice-system/sluice-operator-serving".into()),
            }
        );
    }

    #[test]
    fn no_file_means_the_built_in_defaults() {
        let settings = resolved(&[], "");
        assert_eq!(settings.sidecar_image, "sluice-sidecar:latest");
        assert_eq!(settings.sidecar_image_pull_policy, None);
        assert_eq!(settings.native_sidecars, None);
        assert_eq!(settings.audit_flush_every, Duration::from_secs(10));
        assert_eq!(settings.notify_url, None);
        assert_eq!(
            settings.sidecar_resources,
            sluice_operator::injection::inject::default_sidecar_resources()
        );
    }

    #[test]
    fn sidecar_shutdown_grace_flag_file_default() {
        let file = "sidecar:\n  shutdownGraceSeconds: 40\n";
        assert_eq!(resolved(&[], file).sidecar_shutdown_grace_seconds, 40);
        assert_eq!(
            resolved(&["--sidecar-shutdown-grace-seconds=7"], file).sidecar_shutdown_grace_seconds,
            7
        );
        assert_eq!(resolved(&[], "").sidecar_shutdown_grace_seconds, 20);
        assert!(
            Args::try_parse_from(["sluice-operator", "--sidecar-shutdown-grace-seconds=3601"])
                .is_err()
        );
        assert!(
            OperatorConfig::parse(
                "sidecar:\n  shutdownGraceSeconds: 3601\n",
                std::path::Path::new("config.yaml")
            )
            .is_err()
        );
    }

    #[test]
    fn retention_parses_units_and_refuses_the_rest() {
        assert_eq!(parse_retention("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_retention("36h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_retention("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_retention("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_retention("45"), Ok(Duration::from_secs(45)));
        for bad in [
            "",
            "0s",
            "d",
            "1w",
            "-1d",
            "1.5h",
            "3651d",
            "99999999999999999999d",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad:?}");
        }
    }

    /// `--check-config` prints every flag's value: each flag below, given
    /// alone, shows in the output where the default does not; and every flag
    /// of the binary is in the list.
    #[test]
    fn check_config_prints_every_flag() {
        use clap::CommandFactory as _;
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().display().to_string();
        let cases: Vec<(&str, String, String)> = [
            (
                "listen",
                "--listen=127.0.0.1:9443",
                "listen: 127.0.0.1:9443",
            ),
            (
                "webhook_url",
                "--webhook-url=https://hooks.test:9443",
                "webhook: https://hooks.test:9443",
            ),
            (
                "gateway_url",
                "--gateway-url=https://gw.test:1",
                "gateway url: https://gw.test:1",
            ),
            ("namespace", "--namespace=ops-x", "namespace: ops-x"),
            ("config_file", "--config-file=PATH", "settings file: PATH"),
            (
                "cert_dir",
                "--cert-dir=/etc/certs-x",
                "certificates: /etc/certs-x (caBundle: ca.crt",
            ),
            (
                "cert_manager_certificate",
                "--cert-manager-certificate=ns-x/cert-x",
                "cainjector from ns-x/cert-x",
            ),
            (
                "sidecar_image",
                "--sidecar-image=reg.test/sc:9",
                "sidecar image: reg.test/sc:9",
            ),
            (
                "native_sidecars",
                "--native-sidecars=never",
                "native sidecars: false (never)",
            ),
            (
                "injection_namespace_label",
                "--injection-namespace-label=team=x",
                "injection namespace label: team=x",
            ),
            (
                "service_name",
                "--service-name=svc-x",
                "webhook: Service sluice-system/svc-x port 443",
            ),
            (
                "service_port",
                "--service-port=8444",
                "webhook: Service sluice-system/sluice-operator port 8444",
            ),
            (
                "token_ttl_seconds",
                "--token-ttl-seconds=901",
                "token ttl: 901s",
            ),
            (
                "bundle_ttl_seconds",
                "--bundle-ttl-seconds=902",
                "bundle ttl: 902s",
            ),
            (
                "drain_grace_seconds",
                "--drain-grace-seconds=23",
                "drain grace: 23s",
            ),
            (
                "drain_delay_seconds",
                "--drain-delay-seconds=7",
                "drain delay: 7s",
            ),
            (
                "sidecar_shutdown_grace_seconds",
                "--sidecar-shutdown-grace-seconds=41",
                "sidecar shutdown grace: 41s",
            ),
            (
                "access_request_retention",
                "--access-request-retention=36h",
                "access request retention: 36h",
            ),
            (
                "audit_flush_seconds",
                "--audit-flush-seconds=31",
                "audit flush: 31s",
            ),
            (
                "no_webhook_match_conditions",
                "--no-webhook-match-conditions",
                "webhook matchConditions: off",
            ),
            (
                "adopt_webhook_configurations",
                "--adopt-webhook-configurations",
                "adopt webhook configurations: on",
            ),
            (
                "notify_url",
                "--notify-url=https://hooks.test/x",
                "notifications: --notify-url",
            ),
            ("identity", "--identity=replica-x", "identity: replica-x"),
            ("log_format", "--log-format=json", "log format: json"),
        ]
        .into_iter()
        .map(|(id, flag, line)| (id, flag.replace("PATH", &path), line.replace("PATH", &path)))
        .collect();
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if ["check_config", "help", "version"].contains(&id) {
                continue;
            }
            assert!(
                cases.iter().any(|(c, _, _)| *c == id),
                "--{id} is not covered: add it to --check-config and to this test"
            );
        }
        let defaults = check_config(&Args::try_parse_from(["sluice-operator"]).unwrap()).unwrap();
        for line in [
            "drain delay: 5s",
            "drain grace: 20s",
            "access request retention: 90d",
            "adopt webhook configurations: off",
            "native sidecars: auto",
        ] {
            assert!(
                defaults.contains(line),
                "{line:?} missing from:\n{defaults}"
            );
        }
        assert!(!defaults.contains("hooks.test"));
        for (id, flag, line) in &cases {
            let mut argv = vec!["sluice-operator".to_string()];
            if *id == "cert_manager_certificate" {
                argv.push("--cert-dir=/etc/c".to_string());
            }
            argv.push(flag.clone());
            let text = check_config(&Args::try_parse_from(&argv).unwrap()).unwrap();
            assert!(
                text.contains(line.as_str()),
                "{flag}: {line:?} missing from:\n{text}"
            );
            assert!(
                !defaults.contains(line.as_str()),
                "{flag}: the default prints {line:?} too"
            );
        }
    }

    #[test]
    fn cert_manager_certificate_needs_a_cert_dir() {
        let error =
            Args::try_parse_from(["sluice-operator", "--cert-manager-certificate=x"]).unwrap_err();
        assert!(error.to_string().contains("--cert-dir"), "{error}");
    }
}
