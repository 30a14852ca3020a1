//! `sluice-sidecar`: the Sluice data-plane proxy.
//!
//! Audit events go to stdout as JSON lines; logs go to stderr.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_sidecar::standalone;

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
        /// The manifests, the identity, the audit and the planes' settings.
        #[command(flatten)]
        args: Box<standalone::StandaloneArgs>,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Worker threads; 1 (the default) runs every session on one thread,
        /// like PgBouncer: on a small pod that avoids cross-thread wake-ups,
        /// which cost more than the proxying itself.
        #[arg(long, default_value_t = 1, value_name = "N")]
        worker_threads: usize,
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
            args,
            log_format,
            worker_threads,
            anchor,
        } => {
            init_logs(log_format);
            let cfg = args.config()?;
            let grace = cfg.shutdown_grace;
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
