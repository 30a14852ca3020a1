//! A real MariaDB server for the MySQL plane's tests: installed in a
//! temporary directory (one per test binary), listening on 127.0.0.1, with
//! a password-authenticated user (no skip-grant-tables), stopped by a
//! watchdog when the binary exits. Nothing is skipped: missing binaries
//! fail the tests with what to install.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The SSN the tests' `customers` row holds: it must never reach a client.
pub const SSN: &str = "123-45-6789";

/// The policy of the plane and prepared-statement tests: schema changes
/// denied, `customers.ssn` and `customers.born` redacted.
pub const POLICY: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
  masking:
    - columns: ["customers.ssn", "customers.born"]
      strategy: redact
"#;

/// The application user every test database grants to, and its password.
pub const USER: &str = "app";
/// Its password.
pub const PASSWORD: &str = crate::common::PASSWORD;

/// A running MariaDB.
pub struct Maria {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Its admin socket (root, no password).
    pub socket: PathBuf,
}

static SERVER: OnceLock<Maria> = OnceLock::new();
static ALONE: OnceLock<Maria> = OnceLock::new();
static TLS: OnceLock<(Maria, String)> = OnceLock::new();
static CERTS: OnceLock<(PathBuf, String)> = OnceLock::new();

/// A server certificate for `localhost` and `127.0.0.1` from a test CA,
/// written as `server.crt` and `server.key` in the directory returned; and
/// that CA's PEM.
pub fn test_certs() -> &'static (PathBuf, String) {
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-mariadb-{}-certs", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice mysql test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        (dir, ca_cert.pem())
    })
}

/// A MariaDB of its own that takes TCP clients over TLS only
/// (`require_secure_transport`), with the certificate of [`test_certs`];
/// and its CA's PEM.
pub fn maria_tls() -> &'static (Maria, String) {
    TLS.get_or_init(|| {
        let (dir, ca) = test_certs();
        let ssl = [
            format!("--ssl-cert={}", dir.join("server.crt").display()),
            format!("--ssl-key={}", dir.join("server.key").display()),
            "--require-secure-transport=ON".to_string(),
        ];
        (Maria::start_with("tls", &ssl), ca.clone())
    })
}

/// A Secret `db-ca` in namespace `shop` holding `ca` (PEM) as `ca.crt`, as
/// a manifest document.
pub fn ca_secret(ca: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: db-ca, namespace: shop}}\nstringData:\n  ca.crt: |\n{}\n",
        ca.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The MariaDB server of this test binary.
pub fn maria() -> &'static Maria {
    SERVER.get_or_init(|| Maria::start("shared"))
}

/// A second server, for tests whose objects change how the sidecar reads
/// other tests' statements server-wide: a stored function named like a
/// built-in (`count`, `upper`) makes every session on the server treat that
/// name as a stored function (`sidecar/src/mysql/session/functions.rs`), so
/// other tests' `count(*)` would be masked.
pub fn maria_alone() -> &'static Maria {
    ALONE.get_or_init(|| Maria::start("alone"))
}

fn bin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "MariaDB's {name} was not found: these tests run a real MariaDB; install it (`apt-get install mariadb-server mariadb-client`)"
    );
}

impl Maria {
    fn start(tag: &str) -> Maria {
        Maria::start_with(tag, &[])
    }

    /// [`Maria::start`] with more server options.
    fn start_with(tag: &str, options: &[String]) -> Maria {
        let base =
            std::env::temp_dir().join(format!("sluice-mariadb-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let data = base.join("data");
        let socket = base.join("sock");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let user = if root {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        let out = Command::new(bin("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=socket")
            .arg(format!("--user={user}"))
            .arg("--skip-test-db")
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = sluice_e2e::free_port().expect("a free port");
        let mut cmd = Command::new(bin("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", base.join("pid").display()))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .arg(format!("--log-error={}", base.join("error.log").display()))
            .args(options);
        if root {
            cmd.arg("--user=root");
        }
        // Stopped by the watchdog below, never waited for here.
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        crate::common::watchdog(
            &format!(
                "kill {server} 2>/dev/null; sleep 2; kill -9 {server} 2>/dev/null",
                server = child.id()
            ),
            &base,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let m = Maria { port, socket };
        while m.try_admin("SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start within 60s: {}",
                std::fs::read_to_string(base.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Password authentication over TCP: the anonymous users
        // mariadb-install-db may create would shadow it.
        m.admin(&format!(
            "DROP USER IF EXISTS ''@'localhost'; CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
        ));
        m
    }

    fn try_admin(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(bin("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg("-uroot")
            .arg("-N")
            .arg("-B")
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` as root on the socket; panics on error. Returns the output (tab-separated).
    pub fn admin(&self, sql: &str) -> String {
        self.try_admin(sql)
            .unwrap_or_else(|e| panic!("admin SQL failed: {e}\n{sql}"))
    }

    /// A fresh database `name` granted to [`USER`].
    pub fn database(&self, name: &str) {
        self.admin(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; \
             GRANT ALL ON {name}.* TO '{USER}'@'%'; GRANT ALL ON {name}.* TO '{USER}'@'127.0.0.1';"
        ));
    }
}

/// Manifests: namespace `shop`, the credentials, a mysql Connection
/// `shop-db` to `db` (listen `{PORT}`), and the policy `reporting` binding
/// `shop/report-job` with the extra spec lines `policy`.
pub fn manifests(m: &Maria, db: &str, policy: &str) -> String {
    let upstream = format!(
        "host: 127.0.0.1, port: {}, database: {db}, tls: {{mode: disable}}",
        m.port
    );
    let connection = ("shop-db", "mysql", upstream.as_str());
    crate::common::connection_manifests(connection, ("db-creds", USER), "")
        + &crate::common::named_policy("reporting", "shop-db", policy)
}

/// Runs the `mariadb` CLI against the sidecar on `port` (any user, no
/// password, no TLS) with `--force` (go on after errors) and `sql` on stdin;
/// returns (success, stdout, stderr).
pub fn mariadb_cli(port: u16, sql: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(bin("mariadb"))
        .arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg("-uworkload")
        .arg("--skip-ssl")
        .arg("--force")
        .arg("-B")
        .arg("--connect-timeout=10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the mariadb client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    crate::common::outcome(child.wait_with_output().unwrap())
}

/// Runs each of `statements` on its own in one PyMySQL session of `db`;
/// prints `>>> SQL` then `ran` or `error CODE MSG`.
pub fn each(port: u16, db: &str, statements: &[&str]) -> String {
    let list = serde_json::to_string(statements).unwrap();
    pymysql(
        port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
for sql in json.loads({list:?}):
    print(">>>", sql)
    try:
        cur.execute(sql)
        print("ran")
    except pymysql.MySQLError as e:
        print("error", e.args[0], e.args[1])
"#
        ),
    )
}

/// The answer to `sql` in `out` (see [`each`]).
pub fn answer<'a>(out: &'a str, sql: &str) -> &'a str {
    out.split(">>> ")
        .find(|s| s.lines().next() == Some(sql))
        .and_then(|s| s.lines().nth(1))
        .unwrap_or_default()
}

/// Runs a Python script with PyMySQL (text protocol); `PORT` in the
/// environment. Returns its stdout; panics with stderr when it fails.
pub fn pymysql(port: u16, script: &str) -> String {
    let prelude = "import os, json, pymysql\n\
                   def connect(**kw):\n    \
                       return pymysql.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='workload', password='', connect_timeout=10, **kw)\n";
    python(port, prelude, ("PyMySQL", "pymysql"), script)
}

/// Runs a Python script with mysql-connector-python (pure Python, whose
/// `prepared=True` cursors use the binary protocol: COM_STMT_PREPARE and
/// COM_STMT_EXECUTE); `PORT` in the environment and `connect(**kw)`
/// defined. Returns its stdout; panics with stderr when it fails.
pub fn connector(port: u16, script: &str) -> String {
    let prelude = "import os, mysql.connector\n\
                   def connect(**kw):\n    \
                       return mysql.connector.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='workload', password='', connection_timeout=10, use_pure=True, **kw)\n";
    let client = ("mysql-connector-python", "mysql-connector-python");
    python(port, prelude, client, script)
}

/// Runs `prelude` and `script` with python3, `PORT` in the environment;
/// `(client, package)`: the client library the prelude imports and its pip
/// package. Returns its stdout; panics with stderr when it fails.
fn python(port: u16, prelude: &str, (_client, package): (&str, &str), script: &str) -> String {
    crate::common::python(
        &format!("{prelude}{script}"),
        &[("PORT", port.to_string())],
        package,
    )
}
