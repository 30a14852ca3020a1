//! The sidecar's `caching_sha2_password` authentication upstream, against
//! a minimal MySQL 8 server written for these tests
//! (`tests/mysql_caching_sha2.py`: Debian has no MySQL 8 server), which
//! checks what it receives as MySQL does: the fast path's scramble; full
//! authentication (the server's cache is empty) with the password in clear
//! over TLS, or encrypted with the server's RSA key (OAEP) without TLS. The
//! password never crosses plain TCP in clear: a key Sluice cannot read
//! strictly, a weak key, or a switch to `mysql_clear_password` ends the
//! session with an error that says why, and the password is not sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// The test server, killed when dropped.
struct FakeMysql8 {
    port: u16,
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl FakeMysql8 {
    /// Starts the server in `mode` (see the script), offering TLS with the
    /// test certificate when `tls`.
    fn start(mode: &str, tls: bool) -> FakeMysql8 {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mysql_caching_sha2.py"
        ))
        .arg(PASSWORD)
        .arg(mode);
        if tls {
            let (dir, _) = test_certs();
            cmd.arg(dir.join("server.crt")).arg(dir.join("server.key"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test server (python3)");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        FakeMysql8 { port, child, lines }
    }

    /// A sidecar in front of it with `tls` (the Connection's `tls` fields),
    /// reaching it as `host`.
    fn sidecar(&self, host: &str, tls: &str) -> Sidecar {
        let upstream = format!(
            "host: {host}, port: {}, database: app, tls: {{{tls}}}",
            self.port
        );
        let ca = ca_secret(&test_certs().1);
        let manifests = common::connection_manifests(
            ("shop-db", "mysql", upstream.as_str()),
            ("db-creds", USER),
            &ca,
        ) + &common::named_policy("reporting", "shop-db", POLICY);
        Sidecar::start(&manifests, "shop/report-job")
    }

    /// The server's next line (one per authentication).
    fn next_line(&mut self) -> String {
        self.lines.next().unwrap().unwrap()
    }

    /// Everything the server printed, once it is stopped.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        rest.join("\n")
    }
}

impl Drop for FakeMysql8 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fast path: the server checks the scramble (SHA-256 based) and
/// answers fast_auth_success.
#[test]
fn caching_sha2_password_fast_path() {
    let mut server = FakeMysql8::start("fast", false);
    let sidecar = server.sidecar("127.0.0.1", "mode: disable");
    let (_, out, err) = mariadb_cli(sidecar.port, "SELECT 'hello';\n");
    let auth = server.next_line();
    assert_eq!(auth, format!("auth ok {USER} fast"), "{err}");
    assert!(out.contains("hello"), "{out}{err}");
}

/// Full authentication over TLS (`verify-full` with the test CA): the
/// password goes in clear inside TLS, as MySQL 8 asks, and the session
/// serves queries.
#[test]
fn caching_sha2_full_authentication_over_tls() {
    let mut server = FakeMysql8::start("full", true);
    let sidecar = server.sidecar("localhost", "mode: verify-full, caSecretRef: {name: db-ca}");
    let (_, out, err) = mariadb_cli(sidecar.port, "SELECT 'hello';\n");
    let auth = server.next_line();
    assert_eq!(auth, format!("auth ok {USER} full-tls"), "{err}");
    assert!(out.contains("hello"), "{out}{err}");
    let rest = server.finish();
    assert!(!rest.contains("cleartext"), "{rest}");
}

/// Full authentication without TLS: the sidecar asks for the server's
/// public key and sends the password encrypted with it (the server
/// decrypts it with OAEP and checks it against the scramble); the
/// password's bytes never cross the wire in clear.
#[test]
fn caching_sha2_full_authentication_with_the_servers_rsa_key() {
    let mut server = FakeMysql8::start("full", false);
    let sidecar = server.sidecar("127.0.0.1", "mode: disable");
    let (_, out, err) = mariadb_cli(sidecar.port, "SELECT 'hello';\n");
    let auth = server.next_line();
    assert_eq!(auth, format!("auth ok {USER} full-rsa"), "{err}");
    assert!(out.contains("hello"), "{out}{err}");
    let rest = server.finish();
    assert!(!rest.contains("cleartext"), "{rest}");
}

/// Without TLS, what would put the password at risk ends the session
/// before the password is sent: a public key Sluice cannot read (a
/// malformed DER, which mysql_common's own reader panics on), a key under
/// 2048 bits, a switch to `mysql_clear_password`. The client hears why;
/// the server never gets the password, in clear or otherwise.
#[test]
fn caching_sha2_full_authentication_fails_closed_without_tls() {
    for (mode, says) in [
        ("badkey", "is not a valid public key"),
        ("weakkey", "has 1024 bits"),
        ("clear", "mysql_clear_password"),
    ] {
        let server = FakeMysql8::start(mode, false);
        let sidecar = server.sidecar("127.0.0.1", "mode: disable");
        let (ok, out, err) = mariadb_cli(sidecar.port, "SELECT 'hello';\n");
        assert!(!ok && !out.contains("hello"), "{mode}: {out}{err}");
        assert!(err.contains("(28000)"), "{mode}: {err}");
        assert!(err.contains(says), "{mode}: {err}");
        let printed = server.finish();
        assert!(!printed.contains("auth ok"), "{mode}: {printed}");
        assert!(!printed.contains("cleartext"), "{mode}: {printed}");
        // The refusal is on record with its reason.
        let events = sidecar.audit_events();
        assert!(
            events.iter().any(|e| e.to_string().contains(says)),
            "{mode}: the refusal is not on record: {events:#?}"
        );
    }
}
