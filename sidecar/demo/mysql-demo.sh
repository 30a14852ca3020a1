#!/usr/bin/env bash
# The MySQL part of `make demo`: a throwaway MariaDB with sample data, the
# sidecar standalone with a mysql Connection and a policy, and the `mariadb`
# CLI through it: a query allowed, one masked, one denied, then the audit
# lines. Skipped, with a line saying why, when MariaDB is not installed.
#
# Usage: sidecar/demo/mysql-demo.sh [SIDECAR_BINARY]   (default: target/release/sluice-sidecar)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=pg.sh
. "$here/pg.sh"
# shellcheck source=mysql.sh
. "$here/mysql.sh"

bin=${1:-${SLUICE_SIDECAR:-$root/target/release/sluice-sidecar}}
[ -x "$bin" ] || { echo "error: $bin not found; build it with: cargo build --release -p sluice-sidecar" >&2; exit 1; }
why=$(maria_missing)
if [ -n "$why" ]; then
  echo "== MySQL demo skipped: $why"
  exit 0
fi

work=$(mktemp -d /tmp/sluice-mysql-demo.XXXXXX)
sidecar_pid=""
cleanup() {
  [ -n "$sidecar_pid" ] && kill "$sidecar_pid" 2>/dev/null && wait "$sidecar_pid" 2>/dev/null || true
  maria_stop "$work/maria"
  rm -rf "$work"
}
trap cleanup EXIT

db_port=$(free_port)
listen_port=$(free_port)
echo "== starting a throwaway MariaDB on 127.0.0.1:$db_port"
maria_start "$work/maria" "$db_port" shop_app change-me-shop-app
maria_admin "$work/maria" "CREATE DATABASE shop; GRANT ALL ON shop.* TO 'shop_app'@'127.0.0.1'; GRANT ALL ON shop.* TO 'shop_app'@'%';
  CREATE TABLE shop.customers (id int PRIMARY KEY, name varchar(50), email varchar(80), ssn varchar(20), born date);
  INSERT INTO shop.customers VALUES (1, 'Alice Martin', 'alice@example.com', '123-45-6789', '1980-01-02'),
                                    (2, 'Bob Stone', 'bob@example.org', '987-65-4321', '1975-06-07');"

cat > "$work/manifests.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-mysql-creds, namespace: shop}
stringData: {username: shop_app, password: change-me-shop-app}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: shop-mysql, namespace: shop}
spec:
  protocol: mysql
  upstream: {host: 127.0.0.1, port: $db_port, database: shop, tls: {mode: disable}}
  credentials: {secretRef: {name: shop-mysql-creds}}
  listen: {port: $listen_port}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: reporting, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [shop-mysql]
  defaultAction: allow
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
  masking:
    - columns: ["customers.ssn", "customers.born"]
      strategy: redact
    - columns: ["customers.email"]
      strategy: partial
YAML

echo "== sluice-sidecar standalone: mysql Connection shop-mysql, policy reporting (127.0.0.1:$listen_port)"
"$bin" standalone -f "$work/manifests.yaml" --as shop/report-job \
  --audit-file "$work/audit.jsonl" --no-audit-stdout 2>"$work/sidecar.log" &
sidecar_pid=$!
wait_port "$listen_port" || { cat "$work/sidecar.log" >&2; exit 1; }

run() {
  echo
  echo "app> $1"
  "$(maria_bin mariadb)" --no-defaults -h127.0.0.1 -P"$listen_port" -uapp --skip-ssl --default-character-set=utf8mb4 -t -e "$1" 2>&1 | sed 's/^/     /' || true
}
echo
echo "== the app connects to localhost without a password; Sluice holds the credentials"
run "SELECT id, name FROM customers ORDER BY id"
echo
echo "== masked: ssn redacted, the date NULL (a value valid for its type), email partial"
run "SELECT name, email, ssn, born, concat('ssn: ', ssn) AS sneaky FROM customers ORDER BY id"
echo
echo "== denied: schema changes (ERR 1227, naming policy and rule; the session goes on)"
run "DROP TABLE customers"
echo
echo "== the data is untouched"
run "SELECT count(*) AS customers FROM customers"

sleep 0.3
echo
echo "== audit trail ($work/audit.jsonl)"
if command -v jq >/dev/null; then
  jq -c '{seq, type, command: .command.text, decision: .decision.action, rule: .decision.rule, rows: .outcome.rows, masked: .outcome.masked}' "$work/audit.jsonl"
else
  cat "$work/audit.jsonl"
fi
