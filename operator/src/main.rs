//! `sluice-operator`: controllers, admission webhooks and the gateway API.
//!
//! Only the command line exists so far; the servers it would start are not
//! built yet, and the binary says so and exits non-zero rather than pretend.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

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
    let subscriber = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    tracing::debug!(?args, "parsed arguments");
    eprintln!(
        "sluice-operator: the controllers, admission webhooks and gateway API are not implemented yet; \
         this build only contains the injector, PKI and gateway-token libraries (crate sluice-operator). \
         Nothing was started."
    );
    ExitCode::FAILURE
}
