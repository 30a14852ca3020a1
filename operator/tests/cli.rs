//! The binary's command line: it must refuse to pretend it runs.

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice-operator"))
}

#[test]
fn says_it_is_not_implemented_and_fails() {
    let output = operator()
        .args([
            "--listen",
            "127.0.0.1:8443",
            "--webhook-url",
            "https://127.0.0.1:8443",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not implemented yet"), "{stderr}");
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
