//! Run mode's settings ([`RunConfig`]), from the environment the Sluice
//! injection webhook gives the sidecar container (see [`env`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use sluice_policy::wire::env;

use super::RunError;
use crate::planes::PlaneSettings;

/// Settings of run mode.
#[derive(Clone)]
pub struct RunConfig {
    /// `https://HOST[:PORT]` of the operator's gateway API.
    pub gateway_url: String,
    /// The projected service-account token (audience `sluice.dev`).
    pub token_file: PathBuf,
    /// PEM of the operator's CA.
    pub ca_pem: String,
    /// Serve only these Connections (`SLUICE_CONNECTIONS`); all when `None`.
    pub connections: Option<Vec<String>>,
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub admin_addr: Option<SocketAddr>,
    /// Write audit events to stdout.
    pub audit_stdout: bool,
    /// Address the listeners bind (loopback unless told otherwise).
    pub listen_host: IpAddr,
    /// How long one bundle long-poll waits for a change.
    pub poll_wait: Duration,
    /// How long [`start`] keeps trying to get the first bundle.
    pub first_bundle_timeout: Duration,
    /// How often audit events are sent to the operator.
    pub audit_upload_every: Duration,
    /// The pod this sidecar runs in, `NAMESPACE/SERVICEACCOUNT/POD`
    /// (`SLUICE_POD_NAMESPACE`, as the injection webhook sets it, or
    /// `SLUICE_NAMESPACE`; `SLUICE_SERVICE_ACCOUNT`, `SLUICE_POD_NAME`):
    /// a bundle for anyone else is not applied.
    pub expected_identity: Option<(String, String, String)>,
    /// How long sessions get to end after SIGTERM (`SLUICE_SHUTDOWN_GRACE`,
    /// seconds; see [`crate::shutdown`]).
    pub shutdown_grace: Duration,
    /// What every plane's Connections are served with: connection caps and
    /// timeouts, message sizes, catalog sessions and the HTTP upstream's
    /// settings, read by [`PlaneSettings::from_vars`] as standalone reads
    /// them (the variables: [`crate::planes::ServingArgs`]).
    pub planes: PlaneSettings,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("gateway_url", &self.gateway_url)
            .field("token_file", &self.token_file)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl RunConfig {
    /// Defaults for a gateway, a token file and a CA.
    pub fn new(gateway_url: String, token_file: PathBuf, ca_pem: String) -> Self {
        RunConfig {
            gateway_url,
            token_file,
            ca_pem,
            connections: None,
            admin_addr: None,
            audit_stdout: true,
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            poll_wait: Duration::from_secs(30),
            first_bundle_timeout: Duration::from_secs(300),
            audit_upload_every: Duration::from_secs(2),
            expected_identity: None,
            shutdown_grace: crate::shutdown::DEFAULT_GRACE,
            planes: PlaneSettings::default(),
        }
    }

    /// Settings from the environment the injection webhook sets:
    /// `SLUICE_GATEWAY_URL`, `SLUICE_TOKEN_FILE`, `SLUICE_CA_PEM` or
    /// `SLUICE_CA_FILE`, and optionally `SLUICE_CONNECTIONS` (comma-separated)
    /// and `SLUICE_ADMIN_ADDR`; the plane settings and the shutdown grace
    /// (see [`crate::planes::ServingArgs`]), among them the HTTP settings the
    /// operator sets from its settings file (`sidecar.http`).
    pub fn from_env() -> Result<Self, RunError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`RunConfig::from_env`] with the variables looked up by `lookup`.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RunError> {
        let var = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let gateway_url = var(env::GATEWAY_URL).ok_or(RunError::MissingEnv(env::GATEWAY_URL))?;
        let token_file = var(env::TOKEN_FILE).ok_or(RunError::MissingEnv(env::TOKEN_FILE))?;
        let ca_pem = match (var(env::CA_PEM), var(env::CA_FILE)) {
            (Some(pem), _) => pem,
            (None, Some(path)) => {
                std::fs::read_to_string(&path).map_err(|source| RunError::ReadFile {
                    what: "the operator CA (SLUICE_CA_FILE)",
                    path: PathBuf::from(path),
                    source,
                })?
            }
            (None, None) => return Err(RunError::MissingEnv("SLUICE_CA_PEM or SLUICE_CA_FILE")),
        };
        let mut cfg = RunConfig::new(gateway_url, PathBuf::from(token_file), ca_pem);
        cfg.connections = var(env::CONNECTIONS).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        });
        if let (Some(ns), Some(sa), Some(pod)) = (
            var(env::POD_NAMESPACE).or_else(|| var(env::NAMESPACE)),
            var(env::SERVICE_ACCOUNT),
            var(env::POD_NAME),
        ) {
            cfg.expected_identity = Some((ns, sa, pod));
        }
        if let Some(addr) = var(env::ADMIN_ADDR) {
            cfg.admin_addr = Some(
                addr.parse()
                    .map_err(|_| RunError::BadAdminAddr(addr.clone()))?,
            );
        }
        // The one parser of the plane settings and the grace, standalone's too.
        cfg.planes = PlaneSettings::from_vars(&lookup)?;
        cfg.shutdown_grace = crate::planes::shutdown_grace(&lookup)?;
        Ok(cfg)
    }
}
