//! What every plane is served with ([`PlaneSettings`]), and the one parser
//! of it that both modes use.
//!
//! Run mode's `SLUICE_*` variables and standalone's flags are one set of
//! settings ([`ServingArgs`]): every flag is named after its variable
//! (`SLUICE_HTTP_TIMEOUT` is `--http-timeout`) and reads it when not given.
//! Both modes hand the values, by variable name, to
//! [`PlaneSettings::from_vars`] and [`shutdown_grace`], so a bad value gets
//! the same [`SettingError`] whichever way it came.

use std::time::Duration;

use clap::Args;
use sluice_policy::wire::env as wire;

use crate::limits::{Limits, env as limits};
use crate::postgres::catalog::{PoolSettings, env as catalog};

/// The variables of the plane settings that only the sidecar reads (the
/// HTTP ones are in [`sluice_policy::wire::env`], which the operator sets;
/// the limits' in [`crate::limits::env`], the catalog pool's in
/// [`crate::postgres::catalog::env`]).
pub mod env {
    /// Bytes; [`super::PlaneSettings::max_message_size`].
    pub const MAX_MESSAGE_SIZE: &str = "SLUICE_MAX_MESSAGE_SIZE";
}

/// The smallest `SLUICE_MAX_MESSAGE_SIZE` accepted.
pub const MIN_MAX_MESSAGE_SIZE: usize = 1024;

/// A setting's value the sidecar cannot use: which setting (its variable
/// and its flag), what it was given, what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} (--{flag}) is not valid: expected {expected}", flag = flag_of(.name))]
pub struct SettingError {
    /// The variable.
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// What the setting takes.
    pub expected: &'static str,
}

impl From<(&'static str, String, &'static str)> for SettingError {
    /// From the `(variable, value, expected)` of [`Limits::from_vars`] and
    /// [`PoolSettings::from_vars`].
    fn from((name, value, expected): (&'static str, String, &'static str)) -> Self {
        SettingError {
            name,
            value,
            expected,
        }
    }
}

/// The flag of the variable `name`, without its dashes:
/// `SLUICE_HTTP_TIMEOUT` → `http-timeout`.
pub fn flag_of(name: &str) -> String {
    name.strip_prefix("SLUICE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// The variable `name` read by `read` from its trimmed value: `None` when
/// unset or blank, an error naming it when `read` finds nothing usable.
fn setting<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    expected: &'static str,
    read: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, SettingError> {
    let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match read(value.trim()) {
        Some(v) => Ok(Some(v)),
        None => Err(SettingError {
            name,
            value,
            expected,
        }),
    }
}

/// How long sessions get to end after SIGTERM (`SLUICE_SHUTDOWN_GRACE`,
/// see [`crate::shutdown`]), from the variables looked up by `lookup`.
pub fn shutdown_grace(lookup: impl Fn(&str) -> Option<String>) -> Result<Duration, SettingError> {
    let grace = setting(
        &lookup,
        crate::shutdown::GRACE_ENV,
        "seconds, from 0 to 3600",
        |v| v.parse::<f64>().ok().and_then(crate::shutdown::grace),
    )?;
    Ok(grace.unwrap_or(crate::shutdown::DEFAULT_GRACE))
}

/// What the planes' Connections are served with: one part of run mode's
/// and standalone's settings alike ([`crate::run::RunConfig::planes`],
/// [`crate::standalone::StandaloneConfig::planes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneSettings {
    /// Connection caps and timeouts (see [`crate::limits`]).
    pub limits: Limits,
    /// Largest protocol message accepted from a client or a server.
    pub max_message_size: usize,
    /// Catalog sessions per postgres Connection and how long a lookup waits
    /// (see [`crate::postgres::catalog`]).
    pub catalog: PoolSettings,
    /// HTTP: how long the upstream has to answer with headers, and at most
    /// between two pieces of a body (either way).
    pub http_upstream_timeout: std::time::Duration,
    /// HTTP: largest request body buffered for `jsonBody` rules.
    pub http_max_request_body: usize,
    /// HTTP: offer HTTP/2 to the upstream as well as HTTP/1.1 (see
    /// [`crate::http::HttpUpstream::new`]).
    pub http_upstream_http2: bool,
}

impl Default for PlaneSettings {
    /// The defaults of both modes.
    fn default() -> Self {
        PlaneSettings {
            limits: Limits::default(),
            max_message_size: crate::postgres::framing::DEFAULT_MAX_MESSAGE_SIZE,
            catalog: PoolSettings::default(),
            http_upstream_timeout: crate::http::DEFAULT_UPSTREAM_TIMEOUT,
            http_max_request_body: crate::http::DEFAULT_MAX_REQUEST_BODY,
            http_upstream_http2: true,
        }
    }
}

impl PlaneSettings {
    /// The settings from the variables looked up by `lookup` (unset or
    /// blank: the default): [`ServingArgs`] lists them. Run mode looks them
    /// up in its environment, standalone in its flags (which read the same
    /// variables when not given).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let d = PlaneSettings::default();
        Ok(PlaneSettings {
            limits: Limits::from_vars(&lookup)?,
            max_message_size: setting(
                &lookup,
                env::MAX_MESSAGE_SIZE,
                "bytes, at least 1024",
                |v| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n >= MIN_MAX_MESSAGE_SIZE)
                },
            )?
            .unwrap_or(d.max_message_size),
            catalog: PoolSettings::from_vars(&lookup)?,
            http_upstream_timeout: setting(
                &lookup,
                wire::HTTP_TIMEOUT,
                "seconds, more than 0 and at most 86400",
                |v| {
                    v.parse::<f64>()
                        .ok()
                        .and_then(crate::http::upstream_timeout)
                },
            )?
            .unwrap_or(d.http_upstream_timeout),
            http_max_request_body: setting(
                &lookup,
                wire::HTTP_MAX_BODY,
                "a number of bytes",
                |v| v.parse::<usize>().ok(),
            )?
            .unwrap_or(d.http_max_request_body),
            http_upstream_http2: setting(
                &lookup,
                wire::HTTP_UPSTREAM_HTTP1_ONLY,
                "true or false",
                |v| match v {
                    "true" => Some(false),
                    "false" => Some(true),
                    _ => None,
                },
            )?
            .unwrap_or(d.http_upstream_http2),
        })
    }
}

/// The plane settings and the shutdown grace as arguments of both
/// `sluice-sidecar run` and `sluice-sidecar standalone`: each a flag named
/// after its variable that reads the variable when not given, so the help
/// documents both. Values are kept as text and checked by
/// [`PlaneSettings::from_vars`] and [`shutdown_grace`] (not by clap), so
/// that both modes refuse a bad value with the same words.
#[derive(Args, Debug, Default, Clone)]
pub struct ServingArgs {
    /// HTTP Connections: seconds the upstream has to answer with headers,
    /// and at most between two pieces of a request or response body
    /// (default 30).
    #[arg(long, env = wire::HTTP_TIMEOUT, value_name = "SECONDS")]
    pub http_timeout: Option<String>,
    /// HTTP Connections: largest request body read whole before it is
    /// forwarded (a chunked body, one a `jsonBody` rule reads, any body
    /// declared within it), in bytes (default 1 MiB).
    #[arg(long, env = wire::HTTP_MAX_BODY, value_name = "BYTES")]
    pub http_max_body: Option<String>,
    /// HTTP Connections: offer only HTTP/1.1 to the upstream (`true`, the
    /// same as the bare flag, or `false`); by default ALPN offers HTTP/2
    /// too and the upstream chooses.
    #[arg(long, env = wire::HTTP_UPSTREAM_HTTP1_ONLY, value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub http_upstream_http1_only: Option<String>,
    /// Seconds the open sessions get to end after SIGTERM or SIGINT before
    /// the sidecar ends them (on record) and exits, 0 to 3600 (default 20);
    /// keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = crate::shutdown::GRACE_ENV, value_name = "SECONDS")]
    pub shutdown_grace: Option<String>,
    /// PostgreSQL: seconds a client has to send its first message (startup
    /// packet or SSL request) before it is dropped (default 60).
    #[arg(long, env = limits::PG_STARTUP_TIMEOUT, value_name = "SECONDS")]
    pub pg_startup_timeout: Option<String>,
    /// Connections one listener holds at once, also capped at its share of
    /// the file descriptors (default 1024).
    #[arg(long, env = limits::MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: Option<String>,
    /// File descriptors kept free for everything but sessions (default 64).
    #[arg(long, env = limits::FD_RESERVE, value_name = "N")]
    pub fd_reserve: Option<String>,
    /// HTTP Connections: seconds a client has to send a request's headers
    /// (default 10).
    #[arg(long, env = limits::HTTP_HEADER_TIMEOUT, value_name = "SECONDS")]
    pub http_header_timeout: Option<String>,
    /// HTTP Connections: seconds a keep-alive connection may stay idle
    /// (default 60).
    #[arg(long, env = limits::HTTP_IDLE_TIMEOUT, value_name = "SECONDS")]
    pub http_idle_timeout: Option<String>,
    /// PostgreSQL: bytes all sessions' large messages (over 64 KiB) may
    /// hold together; a session whose message does not fit gets FATAL 53200
    /// and ends, the others go on (default 256 MiB, at least 1 MiB).
    #[arg(long, env = limits::BUFFER_BUDGET, value_name = "BYTES")]
    pub buffer_budget: Option<String>,
    /// PostgreSQL: catalog sessions per Connection, 1 to 16 (default 2).
    #[arg(long, env = catalog::SESSIONS, value_name = "N")]
    pub catalog_sessions: Option<String>,
    /// PostgreSQL: seconds a catalog lookup waits for a session (default 5).
    #[arg(long, env = catalog::WAIT, value_name = "SECONDS")]
    pub catalog_wait: Option<String>,
    /// Largest protocol message accepted from the client or the server, in
    /// bytes (default 64 MiB, at least 1024).
    #[arg(long, env = env::MAX_MESSAGE_SIZE, value_name = "BYTES")]
    pub max_message_size: Option<String>,
}

impl ServingArgs {
    /// Every setting by its variable's name.
    pub fn pairs(&self) -> [(&'static str, &Option<String>); 13] {
        [
            (wire::HTTP_TIMEOUT, &self.http_timeout),
            (wire::HTTP_MAX_BODY, &self.http_max_body),
            (
                wire::HTTP_UPSTREAM_HTTP1_ONLY,
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
            (env::MAX_MESSAGE_SIZE, &self.max_message_size),
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
}

#[cfg(test)]
mod tests;
