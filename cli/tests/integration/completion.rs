//! Shell completion, through the real programs: bash, zsh and fish
//! completing `kubectl-sluice …` with the script `completion bash|zsh|fish`
//! prints, and kubectl completing `kubectl sluice …` through the
//! `kubectl_complete-sluice` script (`completion plugin`) found on PATH, as
//! kubectl 1.26+ does for plugins. zsh and fish come from
//! `scripts/ensure-deps.sh`; a test whose shell is missing says so and is
//! skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sluice() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-sluice")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(sluice()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `script` in a non-interactive bash with PATH starting at `path` and
/// returns its stdout.
fn bash(path: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env(
            "PATH",
            format!(
                "{}:{}",
                path.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A directory holding kubectl-sluice and kubectl_complete-sluice, as a user
/// (or krew) installs them.
fn install() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sluice(), dir.path().join("kubectl-sluice")).unwrap();
    let script = dir.path().join("kubectl_complete-sluice");
    std::fs::write(&script, run(&["completion", "plugin"])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// COMPREPLY of the bash completion function `func` for `line` (the cursor at its end).
fn complete_line(dir: &Path, setup: &str, func: &str, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "{setup}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n{func} {cmd} '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" "),
        cword = words.len() - 1,
        cmd = words[0],
        cur = words[words.len() - 1],
        prev = if words.len() > 1 {
            words[words.len() - 2]
        } else {
            ""
        },
    );
    bash(dir, &script)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_kubectl_sluice_commands_flags_and_values() {
    let dir = install();
    // The function the script registers for kubectl-sluice, as bash would call it.
    let setup = "source <(kubectl-sluice completion bash)\n\
                 func=$(complete -p kubectl-sluice | sed -E 's/.* -F ([^ ]+) .*/\\1/')";
    let func = "\"$func\"";
    assert!(
        !bash(dir.path(), &format!("{setup}\necho \"$func\""))
            .trim()
            .is_empty(),
        "the script registers no function for kubectl-sluice"
    );
    let top = complete_line(dir.path(), setup, func, "kubectl-sluice ");
    for want in [
        "policy",
        "audit",
        "approve",
        "requests",
        "check",
        "status",
        "completion",
    ] {
        assert!(
            top.contains(&want.to_string()),
            "{want} missing from {top:?}"
        );
    }
    assert_eq!(
        complete_line(dir.path(), setup, func, "kubectl-sluice pol"),
        vec!["policy"]
    );
    let expect = complete_line(
        dir.path(),
        setup,
        func,
        "kubectl-sluice policy eval --expect ",
    );
    assert_eq!(
        expect,
        vec!["allow", "deny", "requireApproval"],
        "{expect:?}"
    );
}

/// kubectl's completion entry point (`kubectl __complete …`, which kubectl's
/// bash, zsh and fish scripts all call) completing `kubectl sluice …`: kubectl
/// finds kubectl_complete-sluice on PATH and relays what it prints.
fn kubectl_complete(dir: &Path, words: &[&str]) -> (Vec<String>, String) {
    let out = Command::new("kubectl")
        .arg("__complete")
        .args(words)
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("kubectl runs (scripts/ensure-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let directive = stdout.lines().last().unwrap_or_default().to_string();
    let candidates = stdout
        .lines()
        .filter(|l| !l.starts_with(':'))
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect();
    (candidates, directive)
}

#[test]
fn kubectl_completes_the_plugin_through_kubectl_complete_sluice() {
    let dir = install();
    let complete = |words: &[&str]| {
        let (candidates, directive) = kubectl_complete(dir.path(), words);
        // 4: no file names besides these.
        assert_eq!(directive, ":4", "{words:?}: {candidates:?}");
        candidates
    };
    assert_eq!(complete(&["sluice", "po"]), vec!["policy"]);
    let deep = complete(&["sluice", "audit", ""]);
    for want in ["verify", "checkpoints", "jwks"] {
        assert!(
            deep.contains(&want.to_string()),
            "{want} missing from {deep:?}"
        );
    }
    let mut values = complete(&["sluice", "requests", "-o", ""]);
    values.sort();
    assert_eq!(values, vec!["json", "wide", "yaml"]);
    // Without the script on PATH kubectl offers nothing for the plugin: the
    // completions above came through it.
    let bare = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sluice(), bare.path().join("kubectl-sluice")).unwrap();
    let (candidates, _) = kubectl_complete(bare.path(), &["sluice", "po"]);
    assert!(candidates.is_empty(), "{candidates:?}");
}

/// The protocol kubectl reads: candidates with their help after a tab, then
/// `:4` (no file names); nothing to offer gives `:0` (the shell completes files).
#[test]
fn complete_protocol_lines_and_directives() {
    let out = run(&["__complete", "policy", "eval", "--ex"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&":4"), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("--expect\t")),
        "--expect with its help: {out}"
    );
    let out = run(&["__complete", "policy", "eval", "-f", ""]);
    assert!(out.ends_with('\n'), "{out}");
    let last = out.lines().last().unwrap();
    assert!(last == ":0" || last == ":4", "{out}");
    // The plugin script runs the plugin's __complete with every word.
    assert_eq!(
        run(&["completion", "plugin"]).lines().last(),
        Some("exec kubectl-sluice __complete \"$@\"")
    );
    // __complete is not offered as a command.
    assert!(!run(&["__complete", ""]).contains("__complete"));
}

/// Whether `program` is on PATH; if not, says the test is skipped and why.
fn shell_or_skip(program: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()));
    if !found {
        eprintln!(
            "SKIPPED {test}: {program} is not installed (apt-get install {program}; scripts/ensure-deps.sh installs it)"
        );
    }
    found
}

/// Runs `program args…` in `dir`, with PATH starting there; kills it after a minute
/// (a shell waiting for input that never comes would hang the suite).
/// Returns its stdout; panics with its output when it fails.
fn run_shell(dir: &Path, program: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("ZDOTDIR")
        // No file in the way of a command's name (fish falls back to files).
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{program} {args:?} did not finish within a minute: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: exit {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Drives an interactive zsh (`zsh -f -i`, no user files) on a pseudo-terminal
/// (zsh's own zpty module), as a user at a prompt: loads the script
/// `completion zsh` prints after `compinit`, then for each argument types it,
/// presses TAB, and runs what the line editor made of it through `print`, so
/// the output has one `BUF: <the completed line>` per argument. Each read waits
/// for its pattern (the Rust side bounds the whole run).
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty || { print -u2 "zsh lacks its zpty module"; exit 3 }
zpty -b z 'zsh -f -i' || exit 3
zpty -w z 'PS1="%% "; autoload -U compinit && compinit -u -D && source <(kubectl-sluice completion zsh) && print ${(U):-ready}'
zpty -r z out '*READY*' || { print -u2 "the completion script did not load: $out"; exit 4 }
for line in "$@"; do
  zpty -w -n z "$line"$'\t'
  zpty -w -n z $'\C-aprint -r -- ${(U):-buf}: \n'
  zpty -r z out '*BUF: *'$'\n' || exit 5
  print -r -- "BUF: ${${out##*BUF: }%%$'\r'*}"
done
zpty -d z
"#;

#[test]
fn zsh_completes_kubectl_sluice_commands_and_values_at_a_prompt() {
    if !shell_or_skip(
        "zsh",
        "zsh_completes_kubectl_sluice_commands_and_values_at_a_prompt",
    ) {
        return;
    }
    let dir = install();
    let lines = [
        "kubectl-sluice pol",
        "kubectl-sluice au",
        "kubectl-sluice policy eval --expect req",
    ];
    let mut args = vec!["-f", "-c", ZSH_DRIVER, "zsh"];
    args.extend(lines);
    let out = run_shell(dir.path(), "zsh", &args);
    let completed: Vec<&str> = out.lines().filter(|l| l.starts_with("BUF: ")).collect();
    assert_eq!(
        completed,
        vec![
            "BUF: kubectl-sluice policy",
            "BUF: kubectl-sluice audit",
            "BUF: kubectl-sluice policy eval --expect requireApproval",
        ],
        "{out}"
    );
}

/// fish's own completion engine (`complete -C LINE` prints what TAB would
/// offer) after the script `completion fish` prints is loaded.
#[test]
fn fish_completes_kubectl_sluice_commands_and_values() {
    if !shell_or_skip("fish", "fish_completes_kubectl_sluice_commands_and_values") {
        return;
    }
    let dir = install();
    let candidates = |line: &str| -> Vec<String> {
        let script =
            format!("kubectl-sluice completion fish | source; or exit 3\ncomplete -C'{line}'");
        run_shell(dir.path(), "fish", &["--no-config", "-c", &script])
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(candidates("kubectl-sluice pol"), vec!["policy"]);
    let top = candidates("kubectl-sluice ");
    for want in [
        "policy",
        "audit",
        "requests",
        "check",
        "status",
        "completion",
    ] {
        assert!(
            top.contains(&want.to_string()),
            "{want} missing from {top:?}"
        );
    }
    assert_eq!(
        candidates("kubectl-sluice policy eval --expect "),
        vec!["allow", "deny", "requireApproval"]
    );
    // Without the script fish knows nothing of kubectl-sluice's commands:
    // the candidates above came through it.
    let bare = run_shell(
        dir.path(),
        "fish",
        &["--no-config", "-c", "complete -C'kubectl-sluice pol'"],
    );
    assert!(!bare.contains("policy"), "{bare}");
}
