#!/usr/bin/env bash
# Helpers shared by the demo and the benchmark: find PostgreSQL's binaries,
# run them as an unprivileged user when we are root (initdb refuses root),
# start a throwaway server in a temporary directory.
# shellcheck disable=SC2034

pg_bin() {
  local name=$1 p
  if p=$(command -v "$name" 2>/dev/null) && [ -x "$p" ]; then echo "$p"; return; fi
  if [ -x "/usr/local/bin/$name" ]; then echo "/usr/local/bin/$name"; return; fi
  p=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n1)
  if [ -n "$p" ]; then echo "$p"; return; fi
  echo "error: PostgreSQL's $name not found (install postgresql: apt-get install postgresql postgresql-client)" >&2
  return 1
}

# The user PostgreSQL runs as: ourselves, or `postgres`/`nobody` when root.
pg_user() {
  if [ "$(id -u)" != 0 ]; then echo ""; return; fi
  if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

as_pg() {
  local u; u=$(pg_user)
  if [ -n "$u" ]; then runuser -u "$u" -- "$@"; else "$@"; fi
}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    return
  fi
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# pg_start DIR PORT SUPERUSER PASSWORD: initdb + start, SCRAM auth on 127.0.0.1.
pg_start() {
  local dir=$1 port=$2 user=$3 password=$4 u
  u=$(pg_user)
  mkdir -p "$dir"
  printf '%s' "$password" > "$dir/pwfile"
  [ -n "$u" ] && chown -R "$u" "$dir"
  as_pg "$(pg_bin initdb)" -D "$dir/data" --auth=scram-sha-256 --username "$user" \
    --pwfile "$dir/pwfile" --no-sync --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  as_pg "$(pg_bin pg_ctl)" -D "$dir/data" -l "$dir/postgres.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=100" \
    start >/dev/null || { cat "$dir/postgres.log" >&2; return 1; }
}

pg_stop() {
  local dir=$1
  [ -d "$dir/data" ] && as_pg "$(pg_bin pg_ctl)" -D "$dir/data" stop -m fast >/dev/null 2>&1 || true
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (20 s).
wait_port() {
  local port=$1 i
  for i in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$port" >&2
  return 1
}

# demo_data PORT SUPERUSER_PASSWORD: the quickstart's database on a server
# started by pg_start (superuser `postgres`): role orders_app (the password of
# examples/quickstart/orders-db.yaml), database orders, customers and orders.
demo_data() {
  local port=$1 superpw=$2 psql
  psql=$(pg_bin psql) || return 1
  PGPASSWORD=$superpw "$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL' || return 1
CREATE ROLE orders_app LOGIN PASSWORD 'change-me-orders-app';
CREATE DATABASE orders OWNER orders_app;
SQL
  PGPASSWORD=change-me-orders-app "$psql" -X -q -h 127.0.0.1 -p "$port" -U orders_app -d orders -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, password_hash text, note text);
INSERT INTO customers VALUES
  (1, 'Alice Martin', 'alice@example.com', '123-45-6789', 'pbkdf2$a1b2c3', 'paid with 4111 1111 1111 1111'),
  (2, 'Bob Stone',    'bob@example.org',   '987-65-4321', 'pbkdf2$d4e5f6', 'call back at bob.stone@mail.example');
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric, placed date);
INSERT INTO orders VALUES (100, 1, 25.50, '2026-01-02'), (101, 2, 99.00, '2026-01-03'), (102, 1, 7.25, '2026-01-05');
SQL
}
