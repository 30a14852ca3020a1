//! The operator binary and its settings file (what the Helm chart mounts at
//! /etc/sluice/config.yaml): read, typed, overridden by flags, refused with the
//! key's name when misspelt. `--check-config` shows what it resolved to
//! without contacting a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn operator(args: &[&str], config_env: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-operator"));
    command
        .args(args)
        .env_remove("SLUICE_CONFIG_FILE")
        .env_remove("SLUICE_NOTIFY_URL")
        .env_remove("SLUICE_SIDECAR_IMAGE")
        .env_remove("SLUICE_CERT_DIR")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    if let Some(path) = config_env {
        command.env("SLUICE_CONFIG_FILE", path);
    }
    command.output().expect("the operator binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CHART_FILE: &str = "sidecar:
  image: \"registry.example/sluice-sidecar:0.1.0\"
  imagePullPolicy: Always
  nativeSidecars: never
  resources:
    limits:
      cpu: 500m
      memory: 128Mi
    requests:
      cpu: 20m
      memory: 32Mi
audit:
  flushSeconds: 7
notifications:
  webhook:
    urlFile: URL_FILE
";

#[test]
fn check_config_shows_the_chart_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(
        &url_file,
        "https://hooks.example/T000/B000/very-secret-token\n",
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        CHART_FILE.replace("URL_FILE", url_file.to_str().unwrap()),
    )
    .unwrap();
    let flag = format!("--config-file={}", config.display());

    let out = operator(&[&flag, "--check-config"], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for line in [
        "sidecar image: registry.example/sluice-sidecar:0.1.0",
        "sidecar imagePullPolicy: Always",
        "native sidecars: false",
        "audit flush: 7s",
        "certificates: the operator's own CA",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("\"memory\":\"128Mi\""), "{stdout}");
    assert!(
        stdout.contains(&format!("notifications: read from {}", url_file.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("very-secret-token"), "{stdout}");
    assert!(!text(&out.stderr).contains("very-secret-token"));

    // Flags override the file.
    let out = operator(
        &[
            &flag,
            "--sidecar-image=registry.example/sluice-sidecar:flag",
            "--audit-flush-seconds=3",
            "--cert-dir=/etc/sluice-tls",
            "--cert-manager-certificate=sluice-operator-serving",
            "--check-config",
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("sidecar image: registry.example/sluice-sidecar:flag"),
        "{stdout}"
    );
    assert!(stdout.contains("audit flush: 3s"), "{stdout}");
    assert!(
        stdout.contains(
            "certificates: /etc/sluice-tls (caBundle: cert-manager cainjector from sluice-system/sluice-operator-serving)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_misspelt_key_stops_the_operator_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "sidecar:\n  resources:\n    limit:\n      memory: 1Gi\n",
    )
    .unwrap();
    // Not only --check-config: the real start-up refuses it before anything else.
    for extra in [&["--check-config"][..], &[][..]] {
        let mut args = vec![format!("--config-file={}", config.display())];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = operator(&args, None);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("unknown field `limit`"), "{stderr}");
        assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
    }

    let config = dir.path().join("sinks.yaml");
    std::fs::write(&config, "audit:\n  failClosed: false\n").unwrap();
    let out = operator(
        &[
            &format!("--config-file={}", config.display()),
            "--check-config",
        ],
        None,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("audit.failClosed: false is not supported"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_an_error_when_named_and_defaults_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config.yaml");
    let out = operator(
        &[
            &format!("--config-file={}", missing.display()),
            "--check-config",
        ],
        None,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read the operator settings file"),
        "{stderr}"
    );

    let out = operator(&["--check-config"], Some(&missing));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("sidecar image: sluice-sidecar:latest"),
        "{stdout}"
    );
    assert!(stdout.contains("audit flush: 10s"), "{stdout}");
    assert!(stdout.contains("notifications: off"), "{stdout}");
}
