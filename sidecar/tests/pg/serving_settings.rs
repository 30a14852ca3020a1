//! The binary's two modes take the planes' settings the same way: a value
//! one mode refuses, the other refuses in the same words, whether it came
//! as run mode's variable or as standalone's flag (or standalone's
//! variable), and both modes take every setting.

use std::process::{Command, Output};

/// `sluice-sidecar ARGS` with no `SLUICE_*` variable but `vars`.
fn sidecar(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-sidecar"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SLUICE_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sluice-sidecar: {e}"))
}

/// The `Error: …` line of a run that failed with exit code 1 (anything
/// else fails the test).
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("Error: "))
        .unwrap_or_else(|| panic!("no `Error:` line in: {stderr}"))
        .to_string()
}

/// Run mode's required settings (the CA is not one, so a run that gets
/// past its settings stops there).
const RUN: [(&str, &str); 3] = [
    ("SLUICE_GATEWAY_URL", "https://operator.invalid:8443"),
    ("SLUICE_TOKEN_FILE", "/nonexistent/token"),
    ("SLUICE_CA_PEM", "not a PEM"),
];

/// Where run mode stops once its settings are taken.
const PAST_THE_SETTINGS: &str = "holds no usable certificate";

#[test]
fn a_bad_setting_is_refused_in_the_same_words_by_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("none.yaml");
    let manifests = manifests.to_str().unwrap();
    let standalone = ["standalone", "-f", manifests, "--as", "shop/app"];
    for (name, flag, value, expected) in [
        ("SLUICE_HTTP_TIMEOUT", "--http-timeout", "30s", "seconds"),
        (
            "SLUICE_MAX_CONNECTIONS",
            "--max-connections",
            "0",
            "more than 0",
        ),
        ("SLUICE_FD_RESERVE", "--fd-reserve", "0", "more than 0"),
        (
            "SLUICE_HTTP_UPSTREAM_HTTP1_ONLY",
            "--http-upstream-http1-only",
            "yes",
            "true or false",
        ),
        (
            "SLUICE_CATALOG_SESSIONS",
            "--catalog-sessions",
            "17",
            "1 to 16",
        ),
        (
            "SLUICE_MAX_MESSAGE_SIZE",
            "--max-message-size",
            "100",
            "at least 1024",
        ),
        (
            "SLUICE_SHUTDOWN_GRACE",
            "--shutdown-grace",
            "-1",
            "from 0 to 3600",
        ),
    ] {
        let run = error_line(&sidecar(
            &["run"],
            &[RUN.as_slice(), &[(name, value)]].concat(),
        ));
        let with_flag = format!("{flag}={value}");
        let by_flag = error_line(&sidecar(
            &[&standalone[..], &[with_flag.as_str()]].concat(),
            &[],
        ));
        let by_var = error_line(&sidecar(&standalone, &[(name, value)]));
        assert_eq!(
            run, by_flag,
            "{name}: run mode and standalone's {flag} differ"
        );
        assert_eq!(
            run, by_var,
            "{name}: run mode and standalone's variable differ"
        );
        for part in [name, flag, &format!("{value:?}"), expected] {
            assert!(run.contains(part), "{name}: {part} missing from {run}");
        }
    }
}

/// Every setting of one mode is one of the other's: a good value of each
/// is taken by both, as a flag or a variable (standalone then stops at its
/// missing manifests, run mode at its CA: both past the settings).
#[test]
fn both_modes_take_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("none.yaml");
    let manifests = manifests.to_str().unwrap();
    for (name, flag, value) in [
        ("SLUICE_HTTP_TIMEOUT", "--http-timeout", "2.5"),
        ("SLUICE_HTTP_MAX_BODY", "--http-max-body", "4096"),
        (
            "SLUICE_HTTP_UPSTREAM_HTTP1_ONLY",
            "--http-upstream-http1-only",
            "true",
        ),
        ("SLUICE_SHUTDOWN_GRACE", "--shutdown-grace", "5"),
        ("SLUICE_PG_STARTUP_TIMEOUT", "--pg-startup-timeout", "7"),
        ("SLUICE_MAX_CONNECTIONS", "--max-connections", "9"),
        ("SLUICE_FD_RESERVE", "--fd-reserve", "11"),
        ("SLUICE_HTTP_HEADER_TIMEOUT", "--http-header-timeout", "3"),
        ("SLUICE_HTTP_IDLE_TIMEOUT", "--http-idle-timeout", "4"),
        ("SLUICE_BUFFER_BUDGET", "--buffer-budget", "2097152"),
        ("SLUICE_CATALOG_SESSIONS", "--catalog-sessions", "3"),
        ("SLUICE_CATALOG_WAIT", "--catalog-wait", "6"),
        ("SLUICE_MAX_MESSAGE_SIZE", "--max-message-size", "2048"),
    ] {
        let standalone = ["standalone", "-f", manifests, "--as", "shop/app"];
        for out in [
            sidecar(&[&standalone[..], &[flag, value]].concat(), &[]),
            sidecar(&standalone, &[(name, value)]),
        ] {
            let err = error_line(&out);
            assert!(
                err.contains("cannot load manifests"),
                "standalone {name}: {err}"
            );
        }
        for out in [
            sidecar(&["run", flag, value], &RUN),
            sidecar(&["run"], &[RUN.as_slice(), &[(name, value)]].concat()),
        ] {
            let err = error_line(&out);
            assert!(err.contains(PAST_THE_SETTINGS), "run {name}: {err}");
        }
    }
}
