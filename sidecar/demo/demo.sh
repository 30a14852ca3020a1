#!/usr/bin/env bash
# `make demo-standalone` (no cluster; `make demo` runs cluster-demo.sh): a throwaway PostgreSQL with sample data, the
# sidecar in standalone mode with examples/quickstart, and a short psql
# session through it: an allowed query, masked columns, a denied DROP, an
# UPDATE without WHERE that needs an approval, then the audit lines.
# Cleans up after itself.
#
# Usage: sidecar/demo/demo.sh [SIDECAR_BINARY]   (default: target/release/sluice-sidecar)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=pg.sh
. "$here/pg.sh"

bin=${1:-${SLUICE_SIDECAR:-$root/target/release/sluice-sidecar}}
[ -x "$bin" ] || { echo "error: $bin not found; build it with: cargo build --release -p sluice-sidecar" >&2; exit 1; }
psql=$(pg_bin psql)

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
chmod 755 "$work"
sidecar_pid=""
cleanup() {
  [ -n "$sidecar_pid" ] && kill "$sidecar_pid" 2>/dev/null && wait "$sidecar_pid" 2>/dev/null || true
  pg_stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

pg_port=$(free_port)
listen_port=$(free_port)
echo "== starting a throwaway PostgreSQL on 127.0.0.1:$pg_port"
pg_start "$work/pg" "$pg_port" postgres "demo-superuser-pw"
demo_data "$pg_port" demo-superuser-pw

echo "== the quickstart manifests, pointed at this PostgreSQL"
mkdir "$work/manifests"
for f in "$root"/examples/quickstart/*.yaml; do
  sed -e "s/port: 5432/port: $pg_port/" -e "s/listen: {port: 15432}/listen: {port: $listen_port}/" "$f" > "$work/manifests/$(basename "$f")"
done

echo "== sluice-sidecar standalone -f examples/quickstart --as shop/report-job (127.0.0.1:$listen_port)"
"$bin" standalone -f "$work/manifests" --as shop/report-job \
  --audit-file "$work/audit.jsonl" --no-audit-stdout 2>"$work/sidecar.log" &
sidecar_pid=$!
wait_port "$listen_port" || { cat "$work/sidecar.log" >&2; exit 1; }

run() {
  echo
  echo "app> $1"
  "$psql" -X -h 127.0.0.1 -p "$listen_port" -U app -d orders -c "$1" 2>&1 | sed 's/^/     /' || true
}
echo
echo "== the app connects to localhost without a password; Sluice holds the credentials"
run "SELECT id, customer_id, amount, placed FROM orders ORDER BY id"
echo
echo "== masked: ssn and password_hash redacted, email hashed, card numbers and emails in free text partial"
run "SELECT name, email, ssn, password_hash, note FROM customers ORDER BY id"
run "SELECT upper(ssn) AS sneaky, row_to_json(c) AS whole_row FROM customers c WHERE id = 1"
echo
echo "== denied: schema changes"
run "DROP TABLE customers"
echo
echo "== needs a human: UPDATE without WHERE (approvals need the operator; standalone refuses)"
run "UPDATE orders SET amount = 0"
echo
echo "== the data is untouched"
run "SELECT count(*) AS orders, sum(amount) AS total FROM orders"

sleep 0.3
echo
echo "== audit trail ($work/audit.jsonl): hash-chained JSON lines, literals redacted"
if command -v jq >/dev/null; then
  jq -c '{seq, type, command: .command.text, decision: .decision.action, rule: .decision.rule, rows: .outcome.rows, masked: .outcome.masked}' "$work/audit.jsonl"
else
  cat "$work/audit.jsonl"
fi
cli=${KUBECTL_SLUICE:-}
for c in "$root/target/release/kubectl-sluice" "$root/target/debug/kubectl-sluice"; do
  [ -z "$cli" ] && [ -x "$c" ] && cli=$c
done
if [ -n "$cli" ]; then
  echo
  echo "== kubectl sluice audit verify (the chain is intact)"
  "$cli" audit verify "$work/audit.jsonl" || true
  echo
  echo "== ... and after editing one line it is not"
  sed '3s/"rows":3/"rows":2/' "$work/audit.jsonl" > "$work/edited.jsonl"
  "$cli" audit verify "$work/edited.jsonl" || true
fi
