#!/usr/bin/env bash
# MySQL part of `make bench` (MYSQL=0 skips it): select-only point queries
# through the Sluice sidecar vs direct to a throwaway MariaDB, at 1 and 8
# clients (mysqlslap, MariaDB's own load client, in C), interleaved in one
# run; a 1M-row result read whole by the `mariadb` CLI, without and with a
# masked column. Prints queries/s, ratios to direct, the CPU time the
# sidecar itself spent per statement (user and system apart, from
# /proc/PID/stat over the cell: less sensitive than queries/s to other load
# on the machine), the server's (mariadbd's user + system, for direct and
# through the sidecar: what the sidecar's own lookups cost the server), and
# the sidecar's peak RSS.
#
# Usage: sidecar/bench/mysql_bench.sh [SIDECAR_BINARY]
# Env: DURATION (sizes the point-query cells: DURATION * 3000 queries in all,
# default 5), QUERIES (the queries of a point cell, instead), ROUNDS (default 2),
# BIG_ROWS (rows of the big result, default 1000000), CELLS (a regex selecting
# cells, default all).
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
DURATION=${DURATION:-5}
QUERIES=${QUERIES:-$((DURATION * 3000))}
ROUNDS=${ROUNDS:-2}
BIG_ROWS=${BIG_ROWS:-1000000}

# shellcheck source=mysql_setup.sh
. "$here/mysql_setup.sh"
mysql_bench_setup
uncache "$bin"
"$bin" standalone -f "$work/manifests.yaml" --as bench/app \
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

# conn TARGET: the client's connection flags (the sidecar: any user, no
# password). Both clients speak utf8mb4 (the sidecar refuses other client
# character sets): mysqlslap with SET NAMES, the CLI with its flag.
conn() {
  case $1 in
    direct) echo "-h127.0.0.1 -P$db_port -ubench_app -p$pw --skip-ssl" ;;
    sidecar) echo "-h127.0.0.1 -P$sidecar_port -uapp --skip-ssl" ;;
  esac
}
cpu_ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo "0 0"; return; }
  awk '{print $14, $15}' "/proc/$1/stat"
}
now() { date +%s.%N; }

server_pid=$(cat "$work/maria/pid")
server_ticks() { cpu_ticks "$server_pid" | awk '{print $1 + $2}'; }

# run TARGET CELL -> "cell target statements seconds user_ticks sys_ticks server_ticks" in $work/results.
run() {
  local target=$1 cell=$2 before after t0 t1 n secs out server0 server1
  before=$(cpu_ticks "$([ "$target" = sidecar ] && echo "$sidecar_pid")")
  server0=$(server_ticks)
  case $cell in
    point-c1|point-c8)
      local c=${cell#point-c}
      # shellcheck disable=SC2046
      out=$("$slap" --no-defaults $(conn "$target") --init-command="SET NAMES utf8mb4" --create-schema=bench --query="$work/point.sql" \
        --delimiter=";" --concurrency="$c" --number-of-queries="$QUERIES" --iterations=1 --no-drop 2>&1) || {
        echo "mysqlslap failed ($target $cell): $out" >&2; exit 1; }
      secs=$(echo "$out" | sed -n 's/.*Average number of seconds to run all queries: \([0-9.]*\) seconds.*/\1/p' | head -n1)
      [ -n "$secs" ] || { echo "error: no timing in mysqlslap's output ($target $cell): $out" >&2; exit 1; }
      # mysqlslap divides --number-of-queries among its clients (its help
      # says "each client"; measured: direct at 8 clients gave 8x the rate
      # of 1 client when counted per client, on 2 cores).
      n=$QUERIES
      ;;
    1M-rows-unmasked|1M-rows-masked-column)
      local sql="SELECT id, pad FROM big"
      [ "$cell" = 1M-rows-masked-column ] && sql="SELECT id, pad, secret FROM big"
      t0=$(now)
      # shellcheck disable=SC2046
      n=$("$client" --no-defaults $(conn "$target") --default-character-set=utf8mb4 -D bench -N -B --quick -e "$sql" | wc -l)
      t1=$(now)
      [ "$n" = "$BIG_ROWS" ] || { echo "error: $cell via $target returned $n rows, not $BIG_ROWS" >&2; exit 1; }
      secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}')
      n=1
      ;;
  esac
  after=$(cpu_ticks "$([ "$target" = sidecar ] && echo "$sidecar_pid")")
  server1=$(server_ticks)
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  echo "$cell $target $n $secs $((u1 - u0)) $((s1 - s0)) $((server1 - server0))" >> "$work/results"
}

cells=(point-c1 point-c8 1M-rows-unmasked 1M-rows-masked-column)
: > "$work/results"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for cell in "${cells[@]}"; do
    [[ $cell =~ ${CELLS:-.} ]] || continue
    for target in direct sidecar; do
      run "$target" "$cell"
    done
  done
done
# The big result's values stayed masked on the way out.
if grep -q 'secret-1"' "$work/audit.jsonl"; then echo "error: a masked value reached the audit" >&2; exit 1; fi

rss_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$sidecar_pid/status")
echo
python3 - "$work/results" "$rss_kb" "$(getconf CLK_TCK)" <<'PY'
import sys, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
order = []
for line in open(sys.argv[1]):
    cell, target, n, secs, user, system, server = line.split()
    if cell not in order: order.append(cell)
    rows[cell][target].append((int(n), float(secs), int(user), int(system), int(server)))
hz = float(sys.argv[3])
def mean(xs): return sum(xs) / len(xs)
print(f"{'mysql workload':24} {'target':8} {'stmts/s':>10} {'s/stmt':>10} {'/direct':>8} {'user us/stmt':>13} {'sys us/stmt':>12} {'server us/stmt':>15}")
for cell in order:
    d = rows[cell]['direct']
    d_rate = mean([n / s for n, s, _, _, _ in d])
    for target in ['direct', 'sidecar']:
        r = rows[cell][target]
        if not r: continue
        rate = mean([n / s for n, s, _, _, _ in r])
        per = mean([s / n for n, s, _, _, _ in r])
        if target == 'sidecar':
            u = mean([u * 1e6 / hz / n for n, _, u, _, _ in r]); sy = mean([y * 1e6 / hz / n for n, _, _, y, _ in r])
            cpu = f"{u:13.1f} {sy:12.1f}"
        else:
            cpu = f"{'-':>13} {'-':>12}"
        server = mean([v * 1e6 / hz / n for n, _, _, _, v in r])
        print(f"{cell:24} {target:8} {rate:10.1f} {per:10.5f} {rate / d_rate:8.3f} {cpu} {server:15.1f}")
print("(the 1M-row cells are one statement each: stmts/s is results/s, us/stmt the CPU of the whole result)")
print(f"\nmysql sidecar peak RSS: {int(sys.argv[2]) / 1024:.1f} MiB")
PY
