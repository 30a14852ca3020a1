//! `sluice-sidecar`: the Sluice data-plane proxy.
//!
//! Audit events go to stdout as JSON lines; logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_sidecar::postgres::framing::DEFAULT_MAX_MESSAGE_SIZE;
use sluice_sidecar::{StandaloneConfig, standalone};

/// Sluice sidecar: decides, masks and audits what a workload sends to its databases.
#[derive(Parser)]
#[command(name = "sluice-sidecar", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Command {
    /// Run in a pod, with policies and credentials from the Sluice operator
    /// (settings from the environment the injection sets; each also a flag).
    Run(Box<sluice_sidecar::run_env::RunEnv>),
    /// Run from local manifests (Namespace, Secret, Connection, AccessPolicy YAML).
    Standalone {
        /// A YAML file (multi-document) or a folder of YAML files.
        #[arg(short = 'f', long = "filename", value_name = "MANIFESTS")]
        manifests: PathBuf,
        /// The workload identity, NAMESPACE/SERVICEACCOUNT.
        #[arg(long = "as", value_name = "NS/SA")]
        identity: String,
        /// Also append audit events (JSON lines) to this file.
        #[arg(long, value_name = "PATH")]
        audit_file: Option<PathBuf>,
        /// Do not write audit events to stdout (use with --audit-file).
        #[arg(long)]
        no_audit_stdout: bool,
        /// Serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090.
        #[arg(long, value_name = "ADDR")]
        admin_addr: Option<SocketAddr>,
        /// Largest protocol message accepted from the client or the server, in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_SIZE, value_name = "BYTES")]
        max_message_size: usize,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Worker threads; 1 (the default) runs every session on one thread,
        /// like PgBouncer: on a small pod that avoids cross-thread wake-ups,
        /// which cost more than the proxying itself.
        #[arg(long, default_value_t = 1, value_name = "N")]
        worker_threads: usize,
        /// HTTP Connections: seconds the upstream has to answer with headers,
        /// and at most between two pieces of a request or response body.
        #[arg(long, default_value_t = sluice_sidecar::http::DEFAULT_UPSTREAM_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
        http_timeout: f64,
        /// HTTP Connections: largest request body read whole before it is forwarded (a chunked body, one a `jsonBody` rule reads, any body declared within it), in bytes.
        #[arg(long, default_value_t = sluice_sidecar::http::DEFAULT_MAX_REQUEST_BODY, value_name = "BYTES")]
        http_max_body: usize,
        /// HTTP Connections: offer only HTTP/1.1 to the upstream (by default
        /// ALPN offers HTTP/2 too and the upstream chooses).
        #[arg(long)]
        http_upstream_http1_only: bool,
        /// Seconds the open sessions get to end after SIGTERM or SIGINT
        /// before the sidecar ends them (on record) and exits; keep it
        /// below the pod's terminationGracePeriodSeconds.
        #[arg(long, env = sluice_sidecar::shutdown::GRACE_ENV, value_name = "SECONDS",
              default_value_t = sluice_sidecar::shutdown::DEFAULT_GRACE.as_secs_f64())]
        shutdown_grace: f64,
        /// PostgreSQL: seconds a client has to send its first message
        /// (startup packet or SSL request) before it is dropped.
        #[arg(long, env = sluice_sidecar::limits::env::PG_STARTUP_TIMEOUT, value_name = "SECONDS",
              default_value_t = sluice_sidecar::limits::DEFAULT_PG_STARTUP_TIMEOUT.as_secs_f64())]
        pg_startup_timeout: f64,
        /// Connections one listener holds at once (also capped at its share
        /// of the file descriptors).
        #[arg(long, env = sluice_sidecar::limits::env::MAX_CONNECTIONS, value_name = "N",
              default_value_t = sluice_sidecar::limits::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// File descriptors kept free for everything but sessions.
        #[arg(long, env = sluice_sidecar::limits::env::FD_RESERVE, value_name = "N",
              default_value_t = sluice_sidecar::limits::DEFAULT_FD_RESERVE)]
        fd_reserve: usize,
        /// HTTP Connections: seconds a client has to send a request's headers.
        #[arg(long, env = sluice_sidecar::limits::env::HTTP_HEADER_TIMEOUT, value_name = "SECONDS",
              default_value_t = sluice_sidecar::limits::DEFAULT_HTTP_HEADER_TIMEOUT.as_secs_f64())]
        http_header_timeout: f64,
        /// HTTP Connections: seconds a keep-alive connection may stay idle.
        #[arg(long, env = sluice_sidecar::limits::env::HTTP_IDLE_TIMEOUT, value_name = "SECONDS",
              default_value_t = sluice_sidecar::limits::DEFAULT_HTTP_IDLE_TIMEOUT.as_secs_f64())]
        http_idle_timeout: f64,
        /// PostgreSQL: bytes all sessions' large messages (over 64 KiB) may
        /// hold together; a session whose message does not fit gets
        /// FATAL 53200 and ends, the others go on.
        #[arg(long, env = sluice_sidecar::limits::env::BUFFER_BUDGET, value_name = "BYTES",
              default_value_t = sluice_sidecar::limits::DEFAULT_BUFFER_BUDGET)]
        buffer_budget: usize,
        /// Signed checkpoints of the audit file (see sluice_sidecar::anchor).
        #[command(flatten)]
        anchor: sluice_sidecar::anchor::AnchorArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The `SLUICE_LOG` filter (`info` when unset or invalid). Plain
/// `target=level` directives are read by the static [`Targets`] filter
/// (the same syntax); only a value with span or field directives (`[`)
/// needs an `EnvFilter` (an empty one keeps its meaning there too),
/// whose span tracking costs a lock and a map lookup on every enter and
/// exit of a span, i.e. on every poll of every session (#22: about 1 % of
/// a statement's instructions).
///
/// [`Targets`]: tracing_subscriber::filter::Targets
fn log_filter(
    value: Option<&str>,
) -> Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    match value {
        Some(v) if v.contains('[') || v.trim().is_empty() => Box::new(
            EnvFilter::builder()
                .parse(v)
                .unwrap_or_else(|_| EnvFilter::new("info")),
        ),
        Some(v) => Box::new(
            v.parse::<Targets>()
                .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO)),
        ),
        None => Box::new(Targets::new().with_default(LevelFilter::INFO)),
    }
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let filter = log_filter(std::env::var("SLUICE_LOG").ok().as_deref());
    // No log level may print literals, parameters, header values or result
    // values (#15). Sluice's own events are written not to; other crates'
    // debug and trace events (a parser's token dumps, a protocol library's
    // frames) are capped at info whatever SLUICE_LOG asks for. The `log`
    // crate's are compiled out already (policy/Cargo.toml, max_level_info).
    let cap = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("sluice") || *meta.level() <= tracing::Level::INFO
    });
    // Colours only on a terminal, never in files or pipes.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Both filters are global (one output layer): a per-layer filter would
    // look the session's span up on every enter and exit, i.e. on every
    // poll of every session (#15's bench: ~1 % of a statement's instructions).
    let registry = tracing_subscriber::registry().with(filter).with(cap);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(settings) => {
            init_logs(LogFormat::Json);
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cfg = sluice_sidecar::run::RunConfig::from_vars(settings.lookup())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let running = sluice_sidecar::run::start(cfg).await?;
                for (name, addr) in &running.listeners {
                    tracing::info!(connection = %name, %addr, "ready");
                }
                let signal = shutdown_signal().await?;
                tracing::info!(signal, "shutting down");
                running.shutdown().await;
                anyhow::Ok(())
            })
        }
        Command::Standalone {
            manifests,
            identity,
            audit_file,
            no_audit_stdout,
            admin_addr,
            max_message_size,
            log_format,
            worker_threads,
            http_timeout,
            http_max_body,
            http_upstream_http1_only,
            shutdown_grace,
            pg_startup_timeout,
            max_connections,
            fd_reserve,
            http_header_timeout,
            http_idle_timeout,
            buffer_budget,
            anchor,
        } => {
            init_logs(log_format);
            let grace = sluice_sidecar::shutdown::grace(shutdown_grace)
                .context("--shutdown-grace must be between 0 and 3600 seconds")?;
            if max_message_size < 1024 {
                anyhow::bail!("--max-message-size must be at least 1024 bytes");
            }
            let mut cfg = StandaloneConfig::new(manifests, identity);
            cfg.audit_file = audit_file;
            cfg.audit_stdout = !no_audit_stdout;
            cfg.admin_addr = admin_addr;
            cfg.planes.max_message_size = max_message_size;
            cfg.planes.http_upstream_timeout = sluice_sidecar::http::upstream_timeout(http_timeout)
                .context("--http-timeout must be between 0 and 86400 seconds")?;
            cfg.planes.http_max_request_body = http_max_body;
            cfg.planes.http_upstream_http2 = !http_upstream_http1_only;
            let secs = |v: f64, flag: &str| {
                sluice_sidecar::limits::seconds(v).with_context(|| {
                    format!("{flag} must be more than 0 and at most 86400 seconds")
                })
            };
            if buffer_budget < sluice_sidecar::limits::MIN_BUFFER_BUDGET {
                anyhow::bail!("--buffer-budget must be at least 1048576 bytes (1 MiB)");
            }
            if max_connections == 0 {
                anyhow::bail!("--max-connections must be at least 1");
            }
            cfg.planes.limits = sluice_sidecar::limits::Limits {
                pg_startup_timeout: secs(pg_startup_timeout, "--pg-startup-timeout")?,
                max_connections,
                fd_reserve,
                http_header_timeout: secs(http_header_timeout, "--http-header-timeout")?,
                http_idle_timeout: secs(http_idle_timeout, "--http-idle-timeout")?,
                buffer_budget,
            };
            cfg.planes.catalog = sluice_sidecar::postgres::catalog::PoolSettings::from_env()
                .map_err(|(name, value, why)| {
                    anyhow::anyhow!("{name}={value:?} is not valid: expected {why}")
                })?;
            let runtime = if worker_threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads)
                    .enable_all()
                    .build()
            }
            .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let anchor =
                    sluice_sidecar::anchor::Anchor::start(&anchor, cfg.audit_file.as_deref())?;
                let running = standalone::start(cfg).await?;
                for (name, addr, bound) in &running.listeners {
                    tracing::info!(connection = %name, %addr, bound, "ready");
                }
                let signal = shutdown_signal().await?;
                tracing::info!(signal, "shutting down");
                running.shutdown(grace).await;
                if let Some(anchor) = anchor {
                    anchor.finish()?;
                }
                anyhow::Ok(())
            })
        }
    }
}

/// SIGINT (Ctrl-C), or SIGTERM (what the kubelet sends a container it
/// stops): which one came.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot wait for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C").map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")
            .map(|()| "SIGINT")
    }
}
