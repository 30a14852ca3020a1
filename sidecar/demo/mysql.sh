#!/usr/bin/env bash
# Helpers shared by the MySQL demo and benchmark: find MariaDB's binaries
# and start a throwaway server in a temporary directory (TCP on 127.0.0.1,
# root on the socket only, a password-authenticated application user).
# Sourced after pg.sh (free_port, wait_port).
# shellcheck disable=SC2034

# maria_bin NAME: the path of MariaDB's NAME (server binaries live in /usr/sbin).
maria_bin() {
  local name=$1 d
  for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
    [ -x "$d/$name" ] && { echo "$d/$name"; return 0; }
  done
  return 1
}

# maria_missing: why MariaDB cannot be started here (empty when it can).
maria_missing() {
  local b
  for b in mariadbd mariadb-install-db mariadb; do
    maria_bin "$b" >/dev/null || { echo "MariaDB's $b is not installed (apt-get install mariadb-server mariadb-client)"; return; }
  done
}

# maria_start DIR PORT USER PASSWORD: install a data directory and start
# mariadbd on 127.0.0.1:PORT; USER@127.0.0.1 gets PASSWORD.
maria_start() {
  local dir=$1 port=$2 user=$3 password=$4 run_as=() i
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then run_as=(--user=root); fi
  "$(maria_bin mariadb-install-db)" --no-defaults --datadir="$dir/data" \
    --auth-root-authentication-method=socket --skip-test-db "${run_as[@]}" \
    >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; return 1; }
  "$(maria_bin mariadbd)" --no-defaults --datadir="$dir/data" --socket="$dir/sock" \
    --port="$port" --bind-address=127.0.0.1 --pid-file="$dir/pid" --skip-name-resolve \
    --innodb-buffer-pool-size=64M --max-connections=200 --log-error="$dir/error.log" \
    "${run_as[@]}" >/dev/null 2>&1 &
  for i in $(seq 1 600); do
    maria_admin "$dir" "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  maria_admin "$dir" "SELECT 1" >/dev/null || { cat "$dir/error.log" >&2; return 1; }
  maria_admin "$dir" "DROP USER IF EXISTS ''@'localhost'; CREATE USER '$user'@'127.0.0.1' IDENTIFIED BY '$password'; CREATE USER '$user'@'%' IDENTIFIED BY '$password';"
}

# maria_admin DIR SQL: SQL as root on the server's socket.
maria_admin() {
  "$(maria_bin mariadb)" --no-defaults --socket="$1/sock" -uroot -N -B -e "$2"
}

# maria_stop DIR: stops the server maria_start started.
maria_stop() {
  local dir=$1 pid i
  [ -s "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
