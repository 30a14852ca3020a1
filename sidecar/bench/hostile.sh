#!/usr/bin/env bash
# The sidecar's memory under hostile PostgreSQL clients (issue #17): a
# throwaway PostgreSQL, the sidecar standalone in front of it, then one
# hostile client at a time over raw wire bytes (sidecar/bench/hostile.py).
# After each, prints what the client got and the sidecar's resident memory
# (VmRSS) and its peak so far (VmHWM), beside a well-behaved session that
# must still be answered. Memory only: no timing is judged here.
#
# Usage: sidecar/bench/hostile.sh [SIDECAR_BINARY]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../demo/pg.sh
. "$root/sidecar/demo/pg.sh"

bin=${1:-${SLUICE_SIDECAR:-$root/target/release/sluice-sidecar}}
[ -x "$bin" ] || { echo "error: $bin not found; build it with: cargo build --release -p sluice-sidecar" >&2; exit 1; }
psql=$(pg_bin psql)

work=$(mktemp -d /tmp/sluice-hostile.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pg_stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

pw=hostile-pw
pg_port=$(free_port); sidecar_port=$(free_port)
pg_start "$work/pg" "$pg_port" postgres "$pw"
PGPASSWORD=$pw "$psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres <<'SQL'
CREATE TABLE big AS SELECT g AS id, md5(g::text) AS pad, 'secret-' || g AS secret FROM generate_series(1, 1000000) g;
SQL
cat > "$work/manifests.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: h}
stringData: {username: postgres, password: "$pw"}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: db, namespace: h}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: $pg_port, database: postgres, tls: {mode: disable}}
  credentials: {secretRef: {name: creds}}
  listen: {port: $sidecar_port}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: h}
spec:
  subjects: [{serviceAccount: app}]
  connections: [db]
  defaultAction: allow
  rules:
    - {name: no-drop, match: {statements: [drop]}, action: deny}
  masking:
    - {columns: ["big.secret"], strategy: redact}
YAML
"$bin" standalone -f "$work/manifests.yaml" --as h/app \
  --audit-file "$work/audit.jsonl" --no-audit-stdout 2>"$work/sidecar.log" &
sidecar_pid=$!; pids+=("$sidecar_pid")
wait_port "$sidecar_port" || { cat "$work/sidecar.log" >&2; exit 1; }

python3 "$here/hostile.py" 127.0.0.1 "$sidecar_port" "$sidecar_pid"
