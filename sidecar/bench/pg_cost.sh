#!/usr/bin/env bash
# What one pgbench transaction costs the sidecar, measured so that a busy
# machine does not change it (issue #15's bench criterion, #22):
#   cg   user-space instructions per transaction under callgrind, counted over
#        exactly TX transactions per client after a warm-up (difference of a
#        TX and a 2*TX run, so start-up and the connections' own set-up drop
#        out), and the callgrind profile of the 2*TX run;
#   ps   user and system CPU per transaction from /proc/PID/stat (these do
#        vary with load), and the peak RSS (VmHWM) with its file-backed and
#        anonymous parts (smaps_rollup) after the run;
#   massif  the heap over the run (valgrind --tool=massif), for the RSS.
#
# Usage: sidecar/bench/pg_cost.sh SIDECAR_BINARY cg|ps|massif simple|prepared TX [CLIENTS]
# Env: PG_PORT (a running PostgreSQL with pgbench's tables in database
# `bench`, superuser postgres, password PGPASSWORD; default: start one),
# SIDECAR_ARGS (more sidecar flags), CALLGRIND_ARGS (more callgrind flags,
# e.g. --cache-sim=yes for simulated cache misses), OUT (where profiles are copied;
# default the current directory).
# The hot code footprint per statement (the code lines every statement runs,
# which the CPU time follows more than the instruction count on a shared
# machine): CALLGRIND_ARGS=--dump-instr=yes, then cg_footprint.py.
# Note: valgrind hides SHA extensions from the program, so the audit's
# SHA-256 runs its portable code there (a large share of the count, the
# same for every build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../demo/pg.sh
. "$root/sidecar/demo/pg.sh"
# shellcheck source=common.sh
. "$here/common.sh"
bin=$1; mode=$2; proto=$3; tx=$4; clients=${5:-1}
pgbench=$(pg_bin pgbench)
work=$(mktemp -d /tmp/sluice-pg-cost.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${PG_PORT:-}" ] && pg_stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT
export PGPASSWORD=${PGPASSWORD:-bench-pw}
if [ -z "${PG_PORT:-}" ]; then
  pg_port=$(free_port)
  pg_start "$work/pg" "$pg_port" postgres "$PGPASSWORD"
  "$(pg_bin psql)" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE bench"
  "$pgbench" -i -q -s 1 -h 127.0.0.1 -p "$pg_port" -U postgres bench >/dev/null 2>&1
else
  pg_port=$PG_PORT
fi
port=$(free_port)
# The manifests of bench.sh: rules and a masked column.
bench_manifests "$pg_port" "$port" "$PGPASSWORD" > "$work/m.yaml"
# shellcheck disable=SC2206
args=(standalone -f "$work/m.yaml" --as bench/app --no-audit-stdout --audit-file "$work/audit.jsonl" ${SIDECAR_ARGS:-})
# As bench.sh: the binary starts read from disk, not from a just-written
# page cache (which maps several MiB more of it: RSS would not compare).
uncache "$bin"
case $mode in
  # shellcheck disable=SC2086
  cg) valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --instr-atstart=no ${CALLGRIND_ARGS:-} "$bin" "${args[@]}" >"$work/side.out" 2>"$work/side.log" & ;;
  massif) valgrind --tool=massif --massif-out-file="$work/massif.out" "$bin" "${args[@]}" >"$work/side.out" 2>"$work/side.log" & ;;
  ps) "$bin" "${args[@]}" >"$work/side.out" 2>"$work/side.log" & ;;
  *) echo "error: mode must be cg, ps or massif" >&2; exit 2 ;;
esac
side=$!; pids+=("$side")
wait_port "$port" || { cat "$work/side.log" >&2; exit 1; }
threads=1; [ "$clients" -gt 1 ] && threads=2
bench() { "$pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -S -M "$proto" -c "$clients" -j "$threads" -t "$1" bench >"$work/pgbench.out" 2>&1 || { cat "$work/pgbench.out" >&2; exit 1; }; }
bench 50 # warm-up: caches, catalog sessions
case $mode in
  cg)
    count() {
      callgrind_control -z "$side" >/dev/null
      callgrind_control -i on "$side" >/dev/null
      bench "$1"
      callgrind_control -i off "$side" >/dev/null
      rm -f "$work"/cg.out*
      callgrind_control -d "$side" >/dev/null
      local f
      for _ in $(seq 1 100); do f=$(ls -S "$work"/cg.out.* 2>/dev/null | head -1) && [ -n "$f" ] && break; sleep 0.1; done
      sleep 0.5
      cp "$f" "$work/cg-$1"
      callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
    }
    one=$(count "$tx")
    two=$(count $((2 * tx)))
    # Both profiles: their difference per function is the cost of TX transactions per client.
    cp "$work/cg-$tx" "${OUT:-.}/$(basename "$bin")-$proto-c$clients-1.cg"
    cp "$work/cg-$((2 * tx))" "${OUT:-.}/$(basename "$bin")-$proto-c$clients-2.cg"
    echo "proto=$proto clients=$clients tx=$((clients * tx)) Ir/tx=$(( (two - one) / (clients * tx) )) (Ir $one at $tx/client, $two at $((2 * tx))/client)"
    ;;
  ps)
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$side/stat")
    bench "$tx"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$side/stat")
    n=$((clients * tx)); t=$(getconf CLK_TCK)
    rss() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "$2"; }
    echo "proto=$proto clients=$clients tx=$n user_us/tx=$(awk -v d=$((u1 - u0)) -v t="$t" -v n="$n" 'BEGIN{printf "%.1f", d*1e6/t/n}') sys_us/tx=$(awk -v d=$((s1 - s0)) -v t="$t" -v n="$n" 'BEGIN{printf "%.1f", d*1e6/t/n}')" \
      "VmHWM=$(rss VmHWM "/proc/$side/status")kB Rss=$(rss Rss "/proc/$side/smaps_rollup")kB file=$(rss Pss_File "/proc/$side/smaps_rollup")kB anon=$(rss Pss_Anon "/proc/$side/smaps_rollup")kB threads=$(awk '/^Threads/ {print $2}' "/proc/$side/status")"
    ;;
  massif)
    bench "$tx"
    kill -INT "$side"; wait "$side" 2>/dev/null || true
    cp "$work/massif.out" "${OUT:-.}/$(basename "$bin")-$proto-c$clients.massif"
    ms_print "$work/massif.out" | sed -n '1,40p'
    ;;
esac
