#!/usr/bin/env bash
# Instructions per MySQL point query in the sidecar (load-independent, unlike
# timings): the sidecar runs under callgrind in front of a throwaway
# MariaDB with mysql_bench.sh's policy; mariadb-slap sends QUERIES point
# queries at one client once to warm up, then again with instrumentation
# on. Prints the instructions per query and writes the callgrind profile
# (callgrind_annotate it) to OUT.
#
# Usage: sidecar/bench/mysql_cg.sh [SIDECAR_BINARY]
# Env: QUERIES (default 3000), OUT (default /tmp/sluice-mysql-cg.out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../demo/pg.sh
. "$root/sidecar/demo/pg.sh"
# shellcheck source=../demo/mysql.sh
. "$root/sidecar/demo/mysql.sh"
# shellcheck source=common.sh
. "$here/common.sh"

bin=${1:-${SLUICE_SIDECAR:-$root/target/release/sluice-sidecar}}
[ -x "$bin" ] || { echo "error: $bin not found; build it with: cargo build --release -p sluice-sidecar" >&2; exit 1; }
why=$(maria_missing)
[ -z "$why" ] || { echo "error: $why; or skip the MySQL cells with MYSQL=0" >&2; exit 1; }
slap=$(maria_bin mariadb-slap || maria_bin mysqlslap) || { echo "error: mariadb-slap (mysqlslap) not found (apt-get install mariadb-client)" >&2; exit 1; }
client=$(maria_bin mariadb)
QUERIES=${QUERIES:-3000}
OUT=${OUT:-/tmp/sluice-mysql-cg.out}
BIG_ROWS=10

# shellcheck source=mysql_setup.sh
. "$here/mysql_setup.sh"
mysql_bench_setup
uncache "$bin"
rm -f "$OUT" "$OUT".*
valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no "$bin" standalone -f "$work/manifests.yaml" --as bench/app \
  --audit-file "$work/audit.jsonl" --no-audit-stdout 2>"$work/sidecar.log" &
sidecar_pid=$!
wait_port "$sidecar_port" || { cat "$work/sidecar.log" >&2; exit 1; }

# Point queries over random ids (mysqlslap cycles through the file).
python3 - "$work/point.sql" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    for _ in range(2000):
        f.write(f"SELECT pad FROM point WHERE id = {random.randint(1, 100000)};\n")
PY

slap_run() {
  "$slap" --no-defaults -h127.0.0.1 -P"$sidecar_port" -uapp --skip-ssl --init-command="SET NAMES utf8mb4" \
    --create-schema=bench --query="$work/point.sql" --delimiter=";" --concurrency=1 \
    --number-of-queries="$QUERIES" --iterations=1 --no-drop >/dev/null 2>&1 || {
    echo "error: mariadb-slap failed" >&2; cat "$work/sidecar.log" >&2; exit 1; }
}
slap_run
callgrind_control -i on "$sidecar_pid" >/dev/null
slap_run
callgrind_control -i off "$sidecar_pid" >/dev/null
callgrind_control -d "$sidecar_pid" >/dev/null
sleep 2
total=0
for f in "$OUT" "$OUT".*; do
  [ -s "$f" ] || continue
  n=$(callgrind_annotate "$f" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) (100.0%) *PROGRAM TOTALS.*/\1/p' | tr -d , | head -n1 || true)
  total=$((total + ${n:-0}))
done
echo "instructions per point query: $((total / QUERIES)) ($total over $QUERIES queries; profile: $OUT)"
