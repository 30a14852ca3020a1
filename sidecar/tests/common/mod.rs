//! Test equipment: a real PostgreSQL started in a temporary directory (one per
//! test binary, stopped by a watchdog when the binary exits), and sidecar
//! processes started from manifests written per test.
//!
//! Nothing is skipped: when PostgreSQL's binaries are missing the tests fail
//! with a message saying what to install.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The superuser created by initdb, and its password.
pub const ADMIN: &str = "sluice_admin";
/// Password of every role created by the tests.
pub const PASSWORD: &str = "s3cret-pw";

/// Finds a PostgreSQL server binary: on PATH, in /usr/local/bin, or in the
/// newest /usr/lib/postgresql/*/bin.
pub fn pg_bin(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    let p = Path::new("/usr/local/bin").join(name);
    if p.is_file() {
        return p;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, p)) => p,
        None => panic!(
            "PostgreSQL's {name} was not found on PATH, in /usr/local/bin or in /usr/lib/postgresql/*/bin. \
             These tests run a real PostgreSQL: install it (e.g. `apt-get install postgresql postgresql-client`)."
        ),
    }
}

/// Starts a watchdog that runs `stop` (shell) and removes `dir` once this
/// test binary exits: the test servers are statics, never dropped.
pub fn watchdog(stop: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    // Never waited for: it outlives this process on purpose.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the watchdog");
}

/// A client program's outcome: (success, stdout, stderr).
pub fn outcome(out: std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    sluice_e2e::free_port().expect("a free loopback port")
}

/// The unprivileged user PostgreSQL runs as when the tests run as root
/// (initdb refuses root).
fn run_as() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    for user in ["postgres", "nobody"] {
        if Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(user.to_string());
        }
    }
    panic!(
        "running as root, but neither a `postgres` nor a `nobody` user exists to run PostgreSQL as"
    );
}

fn command(user: &Option<String>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(u).arg("--").arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn chown(user: &Option<String>, path: &Path) {
    if let Some(u) = user {
        let ok = Command::new("chown")
            .arg("-R")
            .arg(u)
            .arg(path)
            .status()
            .expect("run chown");
        assert!(ok.success(), "chown -R {u} {} failed", path.display());
    }
}

/// TLS material of a TLS-enabled server.
pub struct TlsFiles {
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
}

/// A running PostgreSQL.
pub struct PgServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Temporary directory (data, socket, logs).
    pub dir: PathBuf,
    /// TLS material when started with TLS.
    pub tls: Option<TlsFiles>,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static TLS_SERVER: OnceLock<PgServer> = OnceLock::new();

/// The shared plain server of this test binary.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| PgServer::start(false))
}

/// The shared TLS server of this test binary.
pub fn tls_server() -> &'static PgServer {
    TLS_SERVER.get_or_init(|| PgServer::start(true))
}

impl PgServer {
    fn start(tls: bool) -> PgServer {
        let user = run_as();
        let base = std::env::temp_dir().join(format!(
            "sluice-pg-{}-{}",
            std::process::id(),
            if tls { "tls" } else { "plain" }
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create the temp dir");
        let data = base.join("data");
        let pwfile = base.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        chown(&user, &base);

        let out = command(&user, &pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .arg("--auth=scram-sha-256")
            .arg("--username")
            .arg(ADMIN)
            .arg("--pwfile")
            .arg(&pwfile)
            .arg("--no-sync")
            .arg("--encoding=UTF8")
            .arg("--locale=C")
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all scram-sha-256\n\
             host all md5user 127.0.0.0/8 md5\n\
             host all clearuser 127.0.0.0/8 password\n\
             host all all 127.0.0.0/8 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");

        let mut tls_files = None;
        let mut ssl_opts = String::new();
        if tls {
            let ca_key = rcgen::KeyPair::generate().expect("ca key");
            let mut ca_params =
                rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "sluice test CA");
            let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
            let issuer = rcgen::Issuer::new(ca_params, ca_key);
            let key = rcgen::KeyPair::generate().expect("server key");
            let mut params = rcgen::CertificateParams::new(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .expect("server params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "localhost");
            let cert = params.signed_by(&key, &issuer).expect("server cert");
            std::fs::write(data.join("server.crt"), cert.pem()).expect("write cert");
            std::fs::write(data.join("server.key"), key.serialize_pem()).expect("write key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
            tls_files = Some(TlsFiles {
                ca_pem: ca_cert.pem(),
            });
            ssl_opts = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        }
        chown(&user, &base);

        let port = free_port();
        let log = base.join("postgres.log");
        let out = command(&user, &pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1,127.0.0.2 -c unix_socket_directories={} -c fsync=off -c max_connections=200{ssl_opts}",
                base.display()
            ))
            .arg("start")
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // A watchdog stops the server and removes its files when this test
        // binary exits (statics are never dropped).
        let pg_ctl = pg_bin("pg_ctl");
        let stop = match &user {
            Some(u) => format!(
                "runuser -u {u} -- {} -D {} stop -m immediate",
                pg_ctl.display(),
                data.display()
            ),
            None => format!(
                "{} -D {} stop -m immediate",
                pg_ctl.display(),
                data.display()
            ),
        };
        watchdog(&format!("{stop} >/dev/null 2>&1"), &base);
        PgServer {
            port,
            dir: base,
            tls: tls_files,
        }
    }

    /// A libpq connection string as the superuser, straight to the server.
    pub fn admin_url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={ADMIN} password={PASSWORD} dbname={db}",
            self.port
        )
    }

    /// Creates a database (dropping an old one of the same name).
    pub async fn create_database(&self, name: &str) {
        let c = connect(&self.admin_url("postgres")).await;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
    }
}

/// Connects with tokio-postgres (no TLS) and drives the connection in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Connects, returning the error instead of panicking.
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A running `sluice-sidecar standalone`.
pub struct Sidecar {
    child: Child,
    /// The listen port of the (first) Connection.
    pub port: u16,
    /// The admin port.
    pub admin_port: u16,
    /// The audit file.
    pub audit: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    /// `GET /metrics` on the admin port: the exposition text (headers too).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
            .await
            .expect("connect to the admin port");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send GET /metrics");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read /metrics");
        assert!(out.starts_with("HTTP/1.1 200"), "GET /metrics: {out}");
        out
    }

    /// Starts a sidecar from `manifests` (with `{PORT}` replaced by a free
    /// listen port) as `identity`, and waits until it listens.
    pub fn start(manifests: &str, identity: &str) -> Sidecar {
        Self::start_with(manifests, identity, &[])
    }

    /// Same, with extra command-line arguments.
    pub fn start_with(manifests: &str, identity: &str, extra: &[&str]) -> Sidecar {
        Self::start_env(manifests, identity, extra, &[])
    }

    /// Same, with extra environment variables.
    pub fn start_env(
        manifests: &str,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = free_port();
        let path = dir.path().join("manifests.yaml");
        std::fs::write(&path, manifests.replace("{PORT}", &port.to_string()))
            .expect("write manifests");
        let audit = dir.path().join("audit.jsonl");
        let log = dir.path().join("sidecar.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-sidecar"));
        cmd.arg("standalone")
            .arg("-f")
            .arg(&path)
            .arg("--as")
            .arg(identity);
        if !extra.contains(&"--audit-file") {
            cmd.arg("--audit-file").arg(&audit).arg("--no-audit-stdout");
        }
        let child = cmd
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(extra)
            .env("SLUICE_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn sluice-sidecar");
        let mut sidecar = Sidecar {
            child,
            port,
            admin_port,
            audit,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sidecar;
            }
            if let Ok(Some(status)) = sidecar.child.try_wait() {
                panic!(
                    "sluice-sidecar exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(&sidecar.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sluice-sidecar did not listen on {port} within 20s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection string to the sidecar (any user, no password).
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=app dbname=ignored", self.port)
    }

    /// Connects to the sidecar with tokio-postgres.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }

    /// The audit events written so far (panics when there are none: a
    /// check on an empty or missing file would pass vacuously).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.audit_text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// The raw audit file (panics when it is missing or empty).
    pub fn audit_text(&self) -> String {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_else(|e| {
            panic!(
                "the audit file {} cannot be read: {e}",
                self.audit.display()
            )
        });
        assert!(
            !text.is_empty(),
            "the audit file {} is empty",
            self.audit.display()
        );
        text
    }

    /// The audit events once one satisfies `done` (polled, 20 s deadline;
    /// async, so that the test's own client tasks go on meanwhile).
    pub async fn audit_events_until(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events: Vec<serde_json::Value> = std::fs::read_to_string(&self.audit)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if events.iter().any(&done) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the audit within 20s: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The audit file with what varies from run to run blanked, for checks
    /// that look for short digit strings such as an SSN's last four digits:
    /// each event's chain fields, time, stream, session and duration (a
    /// timestamp's fraction of a second contains `6789` about once in a
    /// thousand runs: CI saw it), then any run of 16 or more lowercase hex
    /// digits left (fingerprints). Everything a statement put in the event
    /// (its text, parameters, error, counts) stays as written. A line that
    /// is not JSON stays whole.
    pub fn audit_text_without_ids(&self) -> String {
        let text: String = self
            .audit_text()
            .lines()
            .map(
                |line| match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(mut event) => {
                        if let Some(fields) = event.as_object_mut() {
                            for key in ["v", "seq", "time", "stream", "session", "prev", "hash"] {
                                fields.remove(key);
                            }
                            if let Some(outcome) =
                                fields.get_mut("outcome").and_then(|o| o.as_object_mut())
                            {
                                outcome.remove("durationMs");
                            }
                        }
                        event.to_string() + "\n"
                    }
                    Err(_) => format!("{line}\n"),
                },
            )
            .collect();
        let mut out = String::with_capacity(text.len());
        let mut run = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() || ('a'..='f').contains(&c) {
                run.push(c);
                continue;
            }
            out.push_str(if run.len() >= 16 { "#" } else { &run });
            run.clear();
            out.push(c);
        }
        out.push_str(if run.len() >= 16 { "#" } else { &run });
        out
    }

    /// The sidecar's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Manifests: a namespace `shop`, the credentials Secret, a postgres
/// Connection `orders-db` to `db` on the test server, and `policy` (YAML
/// documents appended as they are).
pub fn manifests(server: &PgServer, db: &str, user: &str, tls: &str, policy: &str) -> String {
    let ca = match &server.tls {
        Some(t) => format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: db-ca, namespace: shop}}\nstringData:\n  ca.crt: |\n{}\n",
            t.ca_pem
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        None => String::new(),
    };
    let ca_ref = if server.tls.is_some() {
        ", caSecretRef: {name: db-ca}"
    } else {
        ""
    };
    let host = if server.tls.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let upstream = format!(
        "host: {host}, port: {port}, database: {db}, tls: {{mode: {tls}{ca_ref}}}",
        port = server.port
    );
    let connection = ("orders-db", "postgres", upstream.as_str());
    connection_manifests(connection, ("orders-db-creds", user), &ca) + policy + "\n"
}

/// Manifests: a namespace `shop`, the Secret `secret` with `user` and
/// [`PASSWORD`], `extra` documents (each ending with a newline), and the
/// Connection `(name, protocol, upstream)` (`upstream`: the entries of its
/// `spec.upstream` flow map) to be served on `{PORT}`; ends with a document
/// separator, so a policy can follow.
pub fn connection_manifests(
    (name, protocol, upstream): (&str, &str, &str),
    (secret, user): (&str, &str),
    extra: &str,
) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {secret}, namespace: shop}}
stringData: {{username: {user}, password: "{PASSWORD}"}}
{extra}---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {{name: {name}, namespace: shop}}
spec:
  protocol: {protocol}
  upstream: {{{upstream}}}
  credentials: {{secretRef: {{name: {secret}}}}}
  listen: {{port: {{PORT}}}}
---
"#
    )
}

/// Spec lines of a policy: allow by default, but deny DROP (rule `no-drops`).
pub const NO_DROPS: &str = "  defaultAction: allow
  rules:
    - name: no-drops
      match: {statements: [drop]}
      action: deny";

/// Spec lines of a policy: redact `customers.ssn`.
pub const REDACT_SSN: &str = r#"  masking:
    - columns: ["customers.ssn"]
      strategy: redact"#;

/// A policy binding `shop/report-job` to `orders-db` with these extra spec lines.
pub fn policy(extra: &str) -> String {
    named_policy("reporting", "orders-db", extra)
}

/// An AccessPolicy `name` in `shop` binding `shop/report-job` to
/// `connection`, with these extra spec lines.
pub fn named_policy(name: &str, connection: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  subjects: [{{serviceAccount: report-job}}]
  connections: [{connection}]
{extra}
"#
    )
}

/// Runs psql against the sidecar with `args`; returns (success, stdout, stderr).
pub fn psql(port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg(format!("host=127.0.0.1 port={port} user=app dbname=x"))
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql (install postgresql-client)");
    outcome(out)
}

/// A unique database name for a test.
pub fn db_name(test: &str) -> String {
    format!("t_{}", test.replace('-', "_"))
}

/// A fresh database for `test` on the shared server ([`server`]) with
/// `sql` run in it as the admin; its name.
pub async fn database(test: &str, sql: &str) -> String {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    connect(&pg.admin_url(&db))
        .await
        .batch_execute(sql)
        .await
        .unwrap();
    db
}

/// The server's (or sidecar's) message of an error, or its text.
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} [{}] {} {}",
            d.message(),
            d.code().code(),
            d.detail().unwrap_or(""),
            d.hint().unwrap_or("")
        ),
        None => e.to_string(),
    }
}

/// A minimal raw-protocol client: every byte the sidecar sends is kept, so a
/// test can prove a value is nowhere in them (not just not in what a
/// driver decoded).
pub struct RawClient {
    stream: std::net::TcpStream,
}

impl RawClient {
    /// Connects and completes startup (no password: the sidecar authenticates upstream).
    pub fn connect(port: u16) -> RawClient {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0database\0x\0\0");
        let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        stream.write_all(&msg).expect("startup");
        let mut c = RawClient { stream };
        let bytes = c.read_until_ready();
        assert!(!bytes.is_empty());
        c
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Reads whole messages until ReadyForQuery; returns every byte read.
    pub fn read_until_ready(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut all = Vec::new();
        loop {
            let mut header = [0u8; 5];
            self.stream.read_exact(&mut header).expect("read header");
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            self.stream.read_exact(&mut body).expect("read body");
            all.extend_from_slice(&header);
            all.extend_from_slice(&body);
            if header[0] == b'Z' {
                return all;
            }
        }
    }

    /// A simple Query; every byte of the answer.
    pub fn simple(&mut self, sql: &str) -> Vec<u8> {
        use std::io::Write;
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.stream
            .write_all(&Self::message(b'Q', &body))
            .expect("write");
        self.read_until_ready()
    }

    /// Sends raw protocol messages `(type, body)` as they are, without waiting.
    pub fn send(&mut self, messages: &[(u8, Vec<u8>)]) {
        use std::io::Write;
        let mut out = Vec::new();
        for (tag, body) in messages {
            out.extend(Self::message(*tag, body));
        }
        self.stream.write_all(&out).expect("write");
    }

    /// Reads `n` whole messages; returns their type bytes and all bytes.
    pub fn read_messages(&mut self, n: usize) -> (Vec<u8>, Vec<u8>) {
        use std::io::Read;
        let mut tags = Vec::new();
        let mut all = Vec::new();
        for _ in 0..n {
            let mut header = [0u8; 5];
            self.stream.read_exact(&mut header).expect("read header");
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            self.stream.read_exact(&mut body).expect("read body");
            tags.push(header[0]);
            all.extend_from_slice(&header);
            all.extend_from_slice(&body);
        }
        (tags, all)
    }

    /// Parse/Bind/Execute/Sync with results in binary (`binary`) or text format.
    pub fn extended(&mut self, sql: &str, binary: bool) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut parse = b"\0".to_vec();
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(b"\0\0\0");
        out.extend(Self::message(b'P', &parse));
        let mut bind = b"\0\0\0\0\0\0".to_vec();
        if binary {
            bind.extend_from_slice(&[0, 1, 0, 1]);
        } else {
            bind.extend_from_slice(&[0, 0]);
        }
        out.extend(Self::message(b'B', &bind));
        out.extend(Self::message(b'E', b"\0\0\0\0\0"));
        out.extend(Self::message(b'S', b""));
        self.stream.write_all(&out).expect("write");
        self.read_until_ready()
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

// === run mode (the operator in-process, see operator/tests/support) ===

/// A Secret with the admin's credentials and a `protocol: postgres`
/// Connection `testdb` in `shop` to database `db` of the test server on
/// `upstream_port`, served on `listen_port`; ends with a document separator,
/// so a policy can follow.
pub fn run_mode_connection(db: &str, upstream_port: u16, listen_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: testdb-creds, namespace: shop}}
stringData: {{username: {ADMIN}, password: "{PASSWORD}"}}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {{name: testdb, namespace: shop}}
spec:
  protocol: postgres
  upstream: {{host: 127.0.0.1, port: {upstream_port}, database: {db}, tls: {{mode: disable}}}}
  credentials: {{secretRef: {{name: testdb-creds}}}}
  listen: {{port: {listen_port}}}
---
"#
    )
}

/// Run-mode settings against `operator` serving only `connection`: no audit
/// on stdout, fast polls.
pub fn run_config(
    operator: &sluice_operator::run::Running,
    token_file: PathBuf,
    connection: &str,
) -> sluice_sidecar::run::RunConfig {
    let mut cfg = sluice_sidecar::run::RunConfig::new(
        format!("https://{}", operator.addr),
        token_file,
        operator.ca_bundle_pem(),
    );
    // The quickstart's orders-db may be in the bundle too; serve only ours.
    cfg.connections = Some(vec![connection.into()]);
    cfg.audit_stdout = false;
    cfg.poll_wait = Duration::from_secs(1);
    cfg.first_bundle_timeout = Duration::from_secs(20);
    cfg
}

/// The `sluice-sidecar run` command with the environment the injection
/// gives pod `shop/pod` of service account `sa`, against `operator`, serving
/// `connection`; audit events to `audit`, the log to `log`.
pub fn run_binary(
    operator: &sluice_operator::run::Running,
    token_file: &Path,
    connection: &str,
    (sa, pod): (&str, &str),
    audit: &Path,
    log: &Path,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-sidecar"));
    command
        .arg("run")
        .env("SLUICE_GATEWAY_URL", format!("https://{}", operator.addr))
        .env("SLUICE_TOKEN_FILE", token_file)
        .env("SLUICE_CA_PEM", operator.ca_bundle_pem())
        .env("SLUICE_CONNECTIONS", connection)
        .env("SLUICE_NAMESPACE", "shop")
        .env("SLUICE_SERVICE_ACCOUNT", sa)
        .env("SLUICE_POD_NAME", pod)
        .env_remove("SLUICE_CA_FILE")
        .env_remove("SLUICE_ADMIN_ADDR")
        .stdout(std::fs::File::create(audit).unwrap())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

/// Waits (30 s at most) until the sidecar's bundle revision satisfies `done`.
pub async fn revision_until(
    running: &sluice_sidecar::run::Running,
    what: &str,
    done: impl Fn(Option<&str>) -> bool,
) {
    let wait = Duration::from_secs(30);
    let mut rx = running.bundle_revision();
    tokio::time::timeout(wait, async {
        loop {
            if done(rx.borrow_and_update().as_deref()) {
                return;
            }
            rx.changed().await.expect("the sidecar stopped");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {wait:?} waiting for {what}"));
}

/// The SQLSTATE of a server error.
pub fn code(e: &tokio_postgres::Error) -> Option<tokio_postgres::error::SqlState> {
    e.as_db_error().map(|d| d.code().clone())
}

// === HTTPS upstreams ===

/// A TLS acceptor for a test HTTPS upstream: a new CA named `ca_name` and a
/// server certificate for `names` signed by it, offering `alpn`. Returns the
/// acceptor and the CA (PEM).
pub fn tls_upstream_acceptor(
    ca_name: &str,
    names: &[&str],
    alpn: &[&[u8]],
) -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    (acceptor, ca_cert.pem())
}

// === lifecycle: signals ===

impl Sidecar {
    /// Sends `signal` (e.g. `TERM`, `INT`) to the sidecar process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (at most `within`) for the sidecar to exit; its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for sluice-sidecar") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice-sidecar did not exit within {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The sidecar process's peak resident memory so far (VmHWM), in KiB.
pub fn sidecar_peak_rss_kib(sidecar: &Sidecar) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.child.id()))
        .expect("read the sidecar's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc status")
}

/// A PostgreSQL listener of the sidecar library whose binding follows `rx`
/// (as run mode's bundles and standalone edits feed it), in front of `db`
/// on `pg` as the admin; returns its port.
pub async fn serve_live(
    pg: &PgServer,
    db: &str,
    identity: sluice_policy::engine::Identity,
    rx: tokio::sync::watch::Receiver<sluice_sidecar::enforcement::Standing>,
) -> u16 {
    use sluice_sidecar::postgres::upstream::UpstreamConfig;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut registry = prometheus_client::registry::Registry::default();
    let max = sluice_sidecar::postgres::framing::DEFAULT_MAX_MESSAGE_SIZE;
    let upstream = UpstreamConfig {
        connection: "testdb".into(),
        host: "127.0.0.1".into(),
        port: pg.port,
        database: db.into(),
        username: ADMIN.into(),
        password: Arc::new(zeroize::Zeroizing::new(PASSWORD.into())),
        tls_mode: sluice_crds::TlsMode::Disable,
        tls: None,
        max_message_size: max,
    };
    let ctx = sluice_sidecar::postgres::session::ConnectionContext {
        name: "testdb".into(),
        catalog: sluice_sidecar::postgres::catalog::CatalogPool::new(
            upstream.clone(),
            Default::default(),
        ),
        upstream,
        binding: sluice_sidecar::enforcement::Binding::live(identity, "testdb", rx),
        audit: Arc::new(sluice_sidecar::audit::AuditLog::open("test", false, None).unwrap()),
        metrics: Arc::new(sluice_sidecar::metrics::Metrics::register(&mut registry)),
        cancel: Arc::new(sluice_sidecar::postgres::cancel::CancelRegistry::default()),
        max_message_size: max,
        buffer_budget: sluice_sidecar::limits::BufferBudget::new(
            sluice_sidecar::limits::DEFAULT_BUFFER_BUDGET,
        ),
        approvals: None,
    };
    tokio::spawn(sluice_sidecar::postgres::serve(listener, Arc::new(ctx)));
    port
}

/// Frontend messages as (type byte, body) pairs, for tests that write
/// pipelines of raw messages.
pub mod frontend {
    /// A simple Query.
    pub fn query(sql: &str) -> (u8, Vec<u8>) {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        (b'Q', b)
    }

    /// Parse of the unnamed statement, no parameter types.
    pub fn parse(sql: &str) -> (u8, Vec<u8>) {
        let mut b = vec![0];
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        (b'P', b)
    }

    /// Bind of the unnamed portal to the unnamed statement, no parameters.
    pub fn bind() -> (u8, Vec<u8>) {
        (b'B', vec![0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// Execute of the unnamed portal, all rows.
    pub fn execute() -> (u8, Vec<u8>) {
        (b'E', vec![0, 0, 0, 0, 0])
    }

    /// Sync.
    pub fn sync() -> (u8, Vec<u8>) {
        (b'S', vec![])
    }

    /// Flush.
    pub fn flush() -> (u8, Vec<u8>) {
        (b'H', vec![])
    }
}

/// Runs the CLI (`kubectl-sluice`, built beside the sidecar) with `args`.
pub fn kubectl_sluice(args: &[&str]) -> std::process::Output {
    let cli = sluice_e2e::harness::binary_beside(
        env!("CARGO_BIN_EXE_sluice-sidecar"),
        "kubectl-sluice",
        "kubectl-sluice",
    );
    Command::new(cli)
        .args(args)
        .output()
        .expect("run kubectl-sluice")
}

/// Runs a Python `script` with python3 and `env`; its stdout. Panics with
/// its stderr when it fails, saying to install `package` (the client
/// library it imports) in case that is what is missing.
pub fn python(script: &str, env: &[(&str, String)], package: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the script failed (install its client with `pip install {package}` if it is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many rows `table` holds, asked through `admin` (not the sidecar).
pub async fn row_count(admin: &tokio_postgres::Client, table: &str) -> i64 {
    admin
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}
