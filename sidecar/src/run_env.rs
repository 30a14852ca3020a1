//! The settings of `sluice-sidecar run`, as clap arguments read from the
//! `SLUICE_*` environment the injection webhook sets, so `run --help`
//! documents every variable (and a flag of the same name may stand in for
//! one, e.g. on a laptop). [`RunEnv::lookup`] hands them to
//! [`crate::run::RunConfig::from_vars`], which checks and converts them: the
//! one parser of these settings.

use clap::Args;

use crate::limits::env as limits;
use crate::postgres::catalog::env as catalog;
use crate::run::env;

/// `sluice-sidecar run`'s settings. Every one is read from its variable;
/// the injection webhook sets the required ones.
#[derive(Args, Debug, Default, Clone)]
pub struct RunEnv {
    /// HTTPS URL of the operator's gateway API (required).
    #[arg(long, env = env::GATEWAY_URL, value_name = "URL")]
    pub gateway_url: Option<String>,
    /// The pod's projected service-account token, audience sluice.dev (required).
    #[arg(long, env = env::TOKEN_FILE, value_name = "PATH")]
    pub token_file: Option<String>,
    /// PEM of the operator's CA (public; this or --ca-file is required).
    #[arg(long, env = env::CA_PEM, value_name = "PEM", hide_env_values = true)]
    pub ca_pem: Option<String>,
    /// A file holding the operator's CA PEM, instead of --ca-pem.
    #[arg(long, env = env::CA_FILE, value_name = "PATH")]
    pub ca_file: Option<String>,
    /// Connections to serve, comma-separated (default: every one of the bundle).
    #[arg(long, env = env::CONNECTIONS, value_name = "NAMES")]
    pub connections: Option<String>,
    /// Address of the admin server: /metrics, /healthz, /readyz, /debug/standing.
    #[arg(long, env = env::ADMIN_ADDR, value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// The pod's name (downward API); with the namespace and service
    /// account, the bundle must be for exactly this pod.
    #[arg(long, env = env::POD_NAME, value_name = "NAME")]
    pub pod_name: Option<String>,
    /// The pod's namespace (downward API).
    #[arg(long, env = env::POD_NAMESPACE, value_name = "NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Read when the pod namespace is not set (not set by the webhook).
    #[arg(long, env = env::NAMESPACE, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The pod's UID (downward API; informational).
    #[arg(long, env = env::POD_UID, value_name = "UID")]
    pub pod_uid: Option<String>,
    /// The pod's service account (downward API).
    #[arg(long, env = env::SERVICE_ACCOUNT, value_name = "NAME")]
    pub service_account: Option<String>,
    /// HTTP Connections: seconds the upstream has to answer (and at most
    /// between two pieces of a body).
    #[arg(long, env = env::HTTP_TIMEOUT, value_name = "SECONDS")]
    pub http_timeout: Option<String>,
    /// HTTP Connections: largest request body read whole to decide, in bytes.
    #[arg(long, env = env::HTTP_MAX_BODY, value_name = "BYTES")]
    pub http_max_body: Option<String>,
    /// HTTP Connections: `true` offers only HTTP/1.1 to the upstream.
    #[arg(long, env = env::HTTP_UPSTREAM_HTTP1_ONLY, value_name = "BOOL")]
    pub http_upstream_http1_only: Option<String>,
    /// Seconds the open sessions get to end after SIGTERM (0 to 3600).
    #[arg(long, env = crate::shutdown::GRACE_ENV, value_name = "SECONDS")]
    pub shutdown_grace: Option<String>,
    /// PostgreSQL: seconds a client has to send its first message.
    #[arg(long, env = limits::PG_STARTUP_TIMEOUT, value_name = "SECONDS")]
    pub pg_startup_timeout: Option<String>,
    /// Connections one listener holds at once.
    #[arg(long, env = limits::MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: Option<String>,
    /// File descriptors kept free for everything but sessions.
    #[arg(long, env = limits::FD_RESERVE, value_name = "N")]
    pub fd_reserve: Option<String>,
    /// HTTP Connections: seconds a client has to send a request's headers.
    #[arg(long, env = limits::HTTP_HEADER_TIMEOUT, value_name = "SECONDS")]
    pub http_header_timeout: Option<String>,
    /// HTTP Connections: seconds a keep-alive connection may stay idle.
    #[arg(long, env = limits::HTTP_IDLE_TIMEOUT, value_name = "SECONDS")]
    pub http_idle_timeout: Option<String>,
    /// PostgreSQL: bytes all sessions' large messages may hold together.
    #[arg(long, env = limits::BUFFER_BUDGET, value_name = "BYTES")]
    pub buffer_budget: Option<String>,
    /// PostgreSQL: catalog sessions per Connection, 1 to 16.
    #[arg(long, env = catalog::SESSIONS, value_name = "N")]
    pub catalog_sessions: Option<String>,
    /// PostgreSQL: seconds a catalog lookup waits for a session.
    #[arg(long, env = catalog::WAIT, value_name = "SECONDS")]
    pub catalog_wait: Option<String>,
}

impl RunEnv {
    /// Every setting by its variable's name.
    fn pairs(&self) -> [(&'static str, &Option<String>); 23] {
        [
            (env::GATEWAY_URL, &self.gateway_url),
            (env::TOKEN_FILE, &self.token_file),
            (env::CA_PEM, &self.ca_pem),
            (env::CA_FILE, &self.ca_file),
            (env::CONNECTIONS, &self.connections),
            (env::ADMIN_ADDR, &self.admin_addr),
            (env::POD_NAME, &self.pod_name),
            (env::POD_NAMESPACE, &self.pod_namespace),
            (env::NAMESPACE, &self.namespace),
            (env::POD_UID, &self.pod_uid),
            (env::SERVICE_ACCOUNT, &self.service_account),
            (env::HTTP_TIMEOUT, &self.http_timeout),
            (env::HTTP_MAX_BODY, &self.http_max_body),
            (
                env::HTTP_UPSTREAM_HTTP1_ONLY,
                &self.http_upstream_http1_only,
            ),
            (crate::shutdown::GRACE_ENV, &self.shutdown_grace),
            (limits::PG_STARTUP_TIMEOUT, &self.pg_startup_timeout),
            (limits::MAX_CONNECTIONS, &self.max_connections),
            (limits::FD_RESERVE, &self.fd_reserve),
            (limits::HTTP_HEADER_TIMEOUT, &self.http_header_timeout),
            (limits::HTTP_IDLE_TIMEOUT, &self.http_idle_timeout),
            (limits::BUFFER_BUDGET, &self.buffer_budget),
            (catalog::SESSIONS, &self.catalog_sessions),
            (catalog::WAIT, &self.catalog_wait),
        ]
    }

    /// The value of the variable `name`, as parsed (flag or environment).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| {
            self.pairs()
                .into_iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
        }
    }

    /// The names of every variable, for tests and docs.
    pub fn names() -> Vec<&'static str> {
        RunEnv::default().pairs().iter().map(|(n, _)| *n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        env: RunEnv,
    }

    #[test]
    fn flags_stand_in_for_their_variables() {
        let cli = Cli::try_parse_from([
            "run",
            "--gateway-url",
            "https://gw:8443",
            "--token-file",
            "/t",
            "--ca-pem",
            "PEM",
            "--max-connections",
            "7",
        ])
        .unwrap();
        let cfg = crate::run::RunConfig::from_vars(cli.env.lookup()).unwrap();
        assert_eq!(cfg.gateway_url, "https://gw:8443");
        assert_eq!(cfg.planes.limits.max_connections, 7);
        assert_eq!(cli.env.lookup()("SLUICE_NOT_A_SETTING"), None);
    }

    #[test]
    fn help_names_every_variable_and_hides_the_ca() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for name in RunEnv::names() {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{name} missing:\n{help}"
            );
        }
        assert_eq!(RunEnv::names().len(), 23);
    }
}
