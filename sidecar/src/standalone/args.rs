//! `sluice-sidecar standalone`'s arguments ([`StandaloneArgs`]) and the
//! [`StandaloneConfig`] they make: the plane settings through the one
//! parser run mode uses ([`PlaneSettings::from_vars`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::{StandaloneConfig, StandaloneError};
use crate::planes::{PlaneSettings, ServingArgs, shutdown_grace};

/// `sluice-sidecar standalone`'s arguments, but for how the process itself
/// runs (log format, worker threads, checkpoints: the binary's own).
#[derive(Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// A YAML file (multi-document) or a folder of YAML files.
    #[arg(short = 'f', long = "filename", value_name = "MANIFESTS")]
    pub manifests: PathBuf,
    /// The workload identity, NAMESPACE/SERVICEACCOUNT.
    #[arg(long = "as", value_name = "NS/SA")]
    pub identity: String,
    /// Also append audit events (JSON lines) to this file.
    #[arg(long, value_name = "PATH")]
    pub audit_file: Option<PathBuf>,
    /// Do not write audit events to stdout (use with --audit-file).
    #[arg(long)]
    pub no_audit_stdout: bool,
    /// Serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// What the planes are served with, as run mode takes it.
    #[command(flatten)]
    pub serving: ServingArgs,
}

impl StandaloneArgs {
    /// The settings these arguments give; `Err` names a setting whose
    /// value cannot be used, in run mode's words.
    pub fn config(self) -> Result<StandaloneConfig, StandaloneError> {
        let planes = PlaneSettings::from_vars(self.serving.lookup())?;
        let grace = shutdown_grace(self.serving.lookup())?;
        let mut cfg = StandaloneConfig::new(self.manifests, self.identity);
        cfg.audit_file = self.audit_file;
        cfg.audit_stdout = !self.no_audit_stdout;
        cfg.admin_addr = self.admin_addr;
        cfg.planes = planes;
        cfg.shutdown_grace = grace;
        Ok(cfg)
    }
}
