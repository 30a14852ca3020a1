//! The settings of `sluice-sidecar run`, as clap arguments read from the
//! `SLUICE_*` environment the injection webhook sets, so `run --help`
//! documents every variable (and a flag of the same name may stand in for
//! one, e.g. on a laptop). [`RunEnv::lookup`] hands them to
//! [`crate::run::RunConfig::from_vars`], which checks and converts them; the
//! plane settings and the shutdown grace are standalone's too
//! ([`ServingArgs`], read by [`crate::planes::PlaneSettings::from_vars`]).

use clap::Args;

use crate::planes::ServingArgs;
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
    /// What the planes are served with and the shutdown grace, as
    /// standalone takes them.
    #[command(flatten)]
    pub serving: ServingArgs,
}

impl RunEnv {
    /// Every setting of run mode's own by its variable's name (the
    /// serving ones: [`ServingArgs::pairs`]).
    fn pairs(&self) -> [(&'static str, &Option<String>); 11] {
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
        ]
    }

    /// The value of the variable `name`, as parsed (flag or environment).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        let serving = self.serving.lookup();
        move |name| match self.pairs().into_iter().find(|(n, _)| *n == name) {
            Some((_, v)) => v.clone(),
            None => serving(name),
        }
    }

    /// The names of every variable, for tests and docs.
    pub fn names() -> Vec<&'static str> {
        let all = RunEnv::default();
        let own = all.pairs().map(|(n, _)| n);
        let serving = all.serving.pairs().map(|(n, _)| n);
        own.into_iter().chain(serving).collect()
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
        // 23, and SLUICE_MAX_MESSAGE_SIZE since both modes take every
        // plane setting.
        assert_eq!(RunEnv::names().len(), 24);
    }
}
