//! `sluice-testcluster --dir DIR [--user NAME:GROUP1,GROUP2]...`: serves the
//! test control plane until killed, with DIR/kubeconfig and DIR/ready.
#![forbid(unsafe_code)]

use clap::Parser;
use sluice_e2e::{Options, TestCluster, User};
use std::path::PathBuf;

/// A small Kubernetes API server for tests.
#[derive(Parser, Debug)]
#[command(name = "sluice-testcluster", version, about)]
struct Args {
    /// Directory for `kubeconfig` and `ready` (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// An extra user `NAME:GROUP1,GROUP2` with its own kubeconfig context.
    #[arg(long = "user")]
    users: Vec<User>,
    /// Enforce RBAC; without it every authenticated request is allowed.
    #[arg(long)]
    rbac: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| "sluice_e2e=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let dir = std::path::absolute(&args.dir)?;
    let cluster = TestCluster::start(Options {
        dir: Some(dir),
        users: args.users,
        rbac: args.rbac,
        max_in_flight: None,
    })
    .await?;
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    eprintln!("sluice-testcluster serving on {}", cluster.base_url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = std::fs::remove_file(cluster.dir().join("ready"));
    Ok(())
}
