//! The binary's command line.

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice-operator"))
}

#[test]
fn without_an_api_server_it_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("missing-kubeconfig");
    let output = operator()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--webhook-url",
            "https://127.0.0.1:8443",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no usable Kubernetes API server"),
        "{stderr}"
    );
}

#[test]
fn webhook_url_must_be_https() {
    let output = operator()
        .args(["--webhook-url", "http://127.0.0.1:8443"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not an https:// URL"), "{stderr}");
}

#[test]
fn help_lists_the_design_flags() {
    let output = operator().arg("--help").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--webhook-url",
        "--gateway-url",
        "--sidecar-image",
        "--native-sidecars",
    ] {
        assert!(
            stdout.contains(flag),
            "{flag} missing from --help:\n{stdout}"
        );
    }
}
