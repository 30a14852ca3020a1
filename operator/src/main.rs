//! `sluice-operator`: controllers, admission webhooks and the gateway API,
//! against the API server in `KUBECONFIG` (or the in-cluster one).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
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

    /// Image of the injected sidecar.
    #[arg(
        long,
        env = "SLUICE_SIDECAR_IMAGE",
        default_value = "sluice-sidecar:latest"
    )]
    sidecar_image: String,

    /// Inject the sidecar as a native sidecar (Kubernetes 1.29+), a regular
    /// container, or decide from the API server's version.
    #[arg(long, value_enum, default_value_t = NativeSidecars::Auto)]
    native_sidecars: NativeSidecars,

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

    /// How often audit counters are written to AccessPolicy status, in seconds.
    #[arg(long, default_value_t = 10)]
    audit_flush_seconds: u64,

    /// Register the pod webhook without its CEL matchConditions (every pod of
    /// a labelled namespace is then sent to the webhook, which passes
    /// unannotated pods through). Only for API servers whose CEL cannot
    /// evaluate `'sluice.dev/inject' in object.metadata.annotations`.
    #[arg(long)]
    no_webhook_match_conditions: bool,

    /// POST Slack-compatible JSON (`{"text": ...}`) here when an approval is
    /// requested or decided; failures are logged and retried, never blocking.
    #[arg(long, env = "SLUICE_NOTIFY_URL")]
    notify_url: Option<String>,

    /// This replica's name in the leader Lease and in Events.
    #[arg(long, env = "SLUICE_POD_NAME")]
    identity: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum NativeSidecars {
    Auto,
    Always,
    Never,
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
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    tracing::debug!(?args, "parsed arguments");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("sluice-operator: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // kube and the servers share one TLS provider; ring, as everywhere in Sluice.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("no usable Kubernetes API server: set KUBECONFIG, or run in a pod")?;
    let webhook = match &args.webhook_url {
        Some(url) => WebhookTarget::Url(url.clone()),
        None => WebhookTarget::Service {
            name: args.service_name.clone(),
            port: args.service_port,
        },
    };
    let mut settings = Settings::new(args.listen, webhook);
    settings.gateway_url = args.gateway_url.clone();
    settings.namespace = args.namespace.clone();
    settings.sidecar_image = args.sidecar_image.clone();
    settings.native_sidecars = match args.native_sidecars {
        NativeSidecars::Auto => None,
        NativeSidecars::Always => Some(true),
        NativeSidecars::Never => Some(false),
    };
    settings.namespace_label = args
        .injection_namespace_label
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .context("--injection-namespace-label must be KEY=VALUE")?;
    settings.token_ttl = Duration::from_secs(args.token_ttl_seconds);
    settings.bundle_ttl = Duration::from_secs(args.bundle_ttl_seconds);
    settings.audit_flush_every = Duration::from_secs(args.audit_flush_seconds.max(1));
    settings.webhook_match_conditions = !args.no_webhook_match_conditions;
    settings.notify_url = args.notify_url.clone();
    if let Some(identity) = &args.identity {
        settings.identity = identity.clone();
    }
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
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = terminate.recv() => tracing::info!("terminated; stopping"),
    }
    running.shutdown().await;
    Ok(())
}
