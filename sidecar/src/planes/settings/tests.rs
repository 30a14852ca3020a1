use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;
use crate::run::{RunConfig, RunError};
use crate::standalone::{StandaloneArgs, StandaloneConfig, StandaloneError};

/// `sluice-sidecar standalone`'s library part, as the binary flattens it.
#[derive(Parser)]
struct Standalone {
    #[command(flatten)]
    args: StandaloneArgs,
}

/// `sluice-sidecar run`'s settings, as the binary flattens them.
#[derive(Parser)]
struct Run {
    #[command(flatten)]
    env: crate::run_env::RunEnv,
}

/// Run mode from `vars` (and what it requires).
fn run(vars: &[(&str, &str)]) -> Result<RunConfig, RunError> {
    let required = [
        ("SLUICE_GATEWAY_URL", "https://op:8443"),
        ("SLUICE_TOKEN_FILE", "/token"),
        ("SLUICE_CA_PEM", "CA"),
    ];
    RunConfig::from_vars(|name| {
        required
            .iter()
            .chain(vars)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
}

/// Standalone mode from the flags of `vars` (`SLUICE_X_Y` given as
/// `--x-y`), with no variable set.
fn standalone(vars: &[(&str, &str)]) -> Result<StandaloneConfig, StandaloneError> {
    let mut argv = vec!["standalone".to_string(), "-f".into(), "m.yaml".into()];
    argv.extend(["--as".into(), "shop/app".into()]);
    for (name, value) in vars {
        argv.push(format!("--{}={value}", flag_of(name)));
    }
    Standalone::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("standalone does not take {vars:?}: {e}"))
        .args
        .config()
}

/// Every serving setting with a value none of its defaults has.
const EVERY_SETTING: [(&str, &str); 13] = [
    ("SLUICE_HTTP_TIMEOUT", "2.5"),
    ("SLUICE_HTTP_MAX_BODY", "4096"),
    ("SLUICE_HTTP_UPSTREAM_HTTP1_ONLY", "true"),
    ("SLUICE_SHUTDOWN_GRACE", "12"),
    ("SLUICE_PG_STARTUP_TIMEOUT", "7"),
    ("SLUICE_MAX_CONNECTIONS", "9"),
    ("SLUICE_FD_RESERVE", "11"),
    ("SLUICE_HTTP_HEADER_TIMEOUT", "3"),
    ("SLUICE_HTTP_IDLE_TIMEOUT", "4"),
    ("SLUICE_BUFFER_BUDGET", "2097152"),
    ("SLUICE_CATALOG_SESSIONS", "3"),
    ("SLUICE_CATALOG_WAIT", "6"),
    ("SLUICE_MAX_MESSAGE_SIZE", "2048"),
];

/// Each setting, given in either mode, reaches the planes (or the
/// shutdown) as the same value: the one parser serves both.
#[test]
fn every_setting_reaches_the_planes_in_both_modes() {
    let expected = PlaneSettings {
        limits: Limits {
            pg_startup_timeout: Duration::from_secs(7),
            max_connections: 9,
            fd_reserve: 11,
            http_header_timeout: Duration::from_secs(3),
            http_idle_timeout: Duration::from_secs(4),
            buffer_budget: 2 * 1024 * 1024,
        },
        max_message_size: 2048,
        catalog: PoolSettings {
            sessions: 3,
            wait: Duration::from_secs(6),
        },
        http_upstream_timeout: Duration::from_millis(2500),
        http_max_request_body: 4096,
        http_upstream_http2: false,
    };
    let (by_vars, by_flags) = (
        run(&EVERY_SETTING).unwrap(),
        standalone(&EVERY_SETTING).unwrap(),
    );
    assert_eq!(by_vars.planes, expected);
    assert_eq!(by_flags.planes, expected);
    assert_eq!(by_vars.shutdown_grace, Duration::from_secs(12));
    assert_eq!(by_flags.shutdown_grace, Duration::from_secs(12));
    // Each one on its own moves exactly its field off the default, in
    // both modes (no setting is read under another's name).
    for setting in EVERY_SETTING {
        let (by_vars, by_flags) = (run(&[setting]).unwrap(), standalone(&[setting]).unwrap());
        assert_eq!(by_vars.planes, by_flags.planes, "{setting:?}");
        assert_eq!(
            by_vars.shutdown_grace, by_flags.shutdown_grace,
            "{setting:?}"
        );
        let moved = usize::from(by_vars.planes != PlaneSettings::default())
            + usize::from(by_vars.shutdown_grace != crate::shutdown::DEFAULT_GRACE);
        assert_eq!(moved, 1, "{setting:?} changed nothing, or more than itself");
    }
    // The bare standalone flag still means `true`.
    let bare = Standalone::try_parse_from([
        "standalone",
        "-f",
        "m.yaml",
        "--as",
        "shop/app",
        "--http-upstream-http1-only",
    ])
    .unwrap();
    assert!(!bare.args.config().unwrap().planes.http_upstream_http2);
    // Nothing given: the defaults, in both modes.
    assert_eq!(run(&[]).unwrap().planes, PlaneSettings::default());
    assert_eq!(standalone(&[]).unwrap().planes, PlaneSettings::default());
}

/// A value a setting cannot take is refused in the same words by both
/// modes, naming the variable, the flag, the value and what it takes.
#[test]
fn a_bad_value_reads_the_same_in_both_modes() {
    for (name, value, expected) in [
        (
            "SLUICE_HTTP_TIMEOUT",
            "30s",
            "seconds, more than 0 and at most 86400",
        ),
        (
            "SLUICE_HTTP_TIMEOUT",
            "0",
            "seconds, more than 0 and at most 86400",
        ),
        ("SLUICE_HTTP_MAX_BODY", "1MB", "a number of bytes"),
        ("SLUICE_HTTP_UPSTREAM_HTTP1_ONLY", "yes", "true or false"),
        ("SLUICE_SHUTDOWN_GRACE", "3601", "seconds, from 0 to 3600"),
        (
            "SLUICE_PG_STARTUP_TIMEOUT",
            "NaN",
            "seconds, more than 0 and at most 86400",
        ),
        ("SLUICE_MAX_CONNECTIONS", "0", "a number more than 0"),
        ("SLUICE_FD_RESERVE", "-1", "a number more than 0"),
        (
            "SLUICE_HTTP_HEADER_TIMEOUT",
            "100000",
            "seconds, more than 0 and at most 86400",
        ),
        (
            "SLUICE_HTTP_IDLE_TIMEOUT",
            "x",
            "seconds, more than 0 and at most 86400",
        ),
        (
            "SLUICE_BUFFER_BUDGET",
            "1000",
            "bytes, at least 1048576 (1 MiB)",
        ),
        (
            "SLUICE_CATALOG_SESSIONS",
            "17",
            "a number of sessions from 1 to 16",
        ),
        (
            "SLUICE_CATALOG_WAIT",
            "601",
            "seconds, more than 0 and at most 600",
        ),
        ("SLUICE_MAX_MESSAGE_SIZE", "1023", "bytes, at least 1024"),
    ] {
        let by_var = run(&[(name, value)]).unwrap_err();
        let by_flag = standalone(&[(name, value)]).unwrap_err();
        assert!(
            matches!(by_var, RunError::BadEnv(_)),
            "{name}={value}: {by_var}"
        );
        assert!(
            matches!(by_flag, StandaloneError::Setting(_)),
            "{name}={value}: {by_flag}"
        );
        let text = by_var.to_string();
        assert_eq!(text, by_flag.to_string());
        assert_eq!(
            text,
            format!(
                "{name}={value:?} (--{}) is not valid: expected {expected}",
                flag_of(name)
            )
        );
    }
}

/// Every serving setting is a flag of both subcommands, named as its
/// variable (which the errors rely on) and reading that variable.
#[test]
fn every_flag_is_named_after_its_variable() {
    let names: Vec<&str> = ServingArgs::default().pairs().map(|(n, _)| n).to_vec();
    assert_eq!(
        names,
        EVERY_SETTING.map(|(n, _)| n).to_vec(),
        "a serving setting the tests above do not cover"
    );
    let commands = [Standalone::command(), Run::command()];
    for command in commands {
        for name in &names {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag_of(name).as_str()))
                .unwrap_or_else(|| panic!("{}: no --{}", command.get_name(), flag_of(name)));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(*name),
                "--{} of {}",
                flag_of(name),
                command.get_name()
            );
        }
    }
}
