#!/usr/bin/env bash
# `make bench`: pgbench through the Sluice sidecar vs the direct connection
# vs PgBouncer (session mode), interleaved in one run, against a throwaway
# PostgreSQL. Prints TPS, mean latency, ratios to direct, and the sidecar's
# peak RSS, and the CPU time the proxy process itself (sidecar or PgBouncer)
# spent per transaction, user and system apart (from /proc/PID/stat; less
# sensitive than TPS to other load on the machine; a select-only transaction
# is one statement), and the median latency of the one-client cells
# (pgbench -l) with what each proxy adds.
#
#   select-only (pgbench -S), 1 and 8 clients, simple and prepared protocol;
#   a 1M-row result, without and with a masked column.
#
# Usage: sidecar/bench/bench.sh [SIDECAR_BINARY]
# Env: DURATION (s per pgbench cell, default 5), ROUNDS (default 2), SCALE (default 10),
# CELLS (a regex selecting workloads, default all), BASELINE (a second sidecar
# binary, e.g. a build of an older commit: run as the target "baseline" with the
# same manifests, interleaved with the others, for an A/B in the same run),
# BATCHED (default 1: also run the same sidecar binary with
# SLUICE_AUDIT_DURABILITY=batched as the target "batched", for #22's
# batched-mode lines; 0 skips it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../demo/pg.sh
. "$root/sidecar/demo/pg.sh"
# shellcheck source=common.sh
. "$here/common.sh"

bin=${1:-${SLUICE_SIDECAR:-$root/target/release/sluice-sidecar}}
[ -x "$bin" ] || { echo "error: $bin not found; build it with: cargo build --release -p sluice-sidecar" >&2; exit 1; }
pgbench=$(pg_bin pgbench)
psql=$(pg_bin psql)
pgbouncer=$(command -v pgbouncer || true)
[ -n "$pgbouncer" ] || { echo "error: pgbouncer not found (apt-get install pgbouncer)" >&2; exit 1; }
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-10}

work=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # PgBouncer runs under runuser (as_pg), whose pid is in pids: stop
  # PgBouncer itself too, or it outlives the bench.
  if [ -n "${bouncer_pid:-}" ]; then kill "$bouncer_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  pg_stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

pw=bench-pw
pg_port=$(free_port); sidecar_port=$(free_port); bouncer_port=$(free_port); baseline_port=$(free_port); batched_port=$(free_port)
if [ -n "${BASELINE:-}" ]; then
  [ -x "$BASELINE" ] || { echo "error: BASELINE=$BASELINE is not an executable sidecar binary" >&2; exit 1; }
fi
echo "PostgreSQL on :$pg_port, sidecar on :$sidecar_port, PgBouncer on :$bouncer_port" >&2
pg_start "$work/pg" "$pg_port" postgres "$pw"
export PGPASSWORD=$pw
"$psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE bench"
"$pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$pg_port" -U postgres bench >/dev/null 2>&1
"$psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d bench <<'SQL'
CREATE TABLE big AS
  SELECT g AS id, md5(g::text) AS pad, 'secret-' || g AS secret FROM generate_series(1, 1000000) g;
VACUUM ANALYZE big;
SQL

# The sidecar: rules and a masked column, as a real deployment would have.
bench_manifests "$pg_port" "$sidecar_port" "$pw" > "$work/manifests.yaml"
uncache "$bin"
if [ -n "${BASELINE:-}" ]; then uncache "$BASELINE"; fi
"$bin" standalone -f "$work/manifests.yaml" --as bench/app \
  --audit-file "$work/audit.jsonl" --no-audit-stdout 2>"$work/sidecar.log" &
sidecar_pid=$!; pids+=("$sidecar_pid")
wait_port "$sidecar_port" || { cat "$work/sidecar.log" >&2; exit 1; }
baseline_pid=
targets=(direct pgbouncer sidecar)
if [ -n "${BASELINE:-}" ]; then
  # The same manifests, on the baseline's own port.
  sed "s/listen: {port: $sidecar_port}/listen: {port: $baseline_port}/" "$work/manifests.yaml" >"$work/baseline.yaml"
  "$BASELINE" standalone -f "$work/baseline.yaml" --as bench/app \
    --audit-file "$work/baseline-audit.jsonl" --no-audit-stdout 2>"$work/baseline.log" &
  baseline_pid=$!; pids+=("$baseline_pid")
  wait_port "$baseline_port" || { cat "$work/baseline.log" >&2; exit 1; }
  targets+=(baseline)
fi
batched_pid=
if [ "${BATCHED:-1}" != 0 ]; then
  # The same binary and manifests with batched audit durability (records
  # written off the client's path within SLUICE_AUDIT_BATCH_MS), on its own port.
  sed "s/listen: {port: $sidecar_port}/listen: {port: $batched_port}/" "$work/manifests.yaml" >"$work/batched.yaml"
  SLUICE_AUDIT_DURABILITY=batched "$bin" standalone -f "$work/batched.yaml" --as bench/app \
    --audit-file "$work/batched-audit.jsonl" --no-audit-stdout 2>"$work/batched.log" &
  batched_pid=$!; pids+=("$batched_pid")
  wait_port "$batched_port" || { cat "$work/batched.log" >&2; exit 1; }
  targets+=(batched)
fi

# PgBouncer in session mode.
mkdir -p "$work/bouncer"
cat > "$work/bouncer/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench user=postgres password=$pw
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = any
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $work/bouncer/pgbouncer.log
pidfile = $work/bouncer/pgbouncer.pid
INI
[ -n "$(pg_user)" ] && chown -R "$(pg_user)" "$work/bouncer"
as_pg "$pgbouncer" "$work/bouncer/pgbouncer.ini" >/dev/null 2>&1 &
pids+=("$!")
wait_port "$bouncer_port"
bouncer_pid=$(cat "$work/bouncer/pgbouncer.pid" 2>/dev/null || true)

port_of() { case $1 in direct) echo "$pg_port";; sidecar) echo "$sidecar_port";; pgbouncer) echo "$bouncer_port";; baseline) echo "$baseline_port";; batched) echo "$batched_port";; esac; }

cat > "$work/big_plain.sql" <<'SQL'
SELECT id, pad FROM big;
SQL
cat > "$work/big_masked.sql" <<'SQL'
SELECT id, pad, secret FROM big;
SQL

# cpu_ticks PID: "USER SYSTEM" clock ticks the process (all its threads) has
# used ("0 0" if unknown).
cpu_ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo "0 0"; return; }
  awk '{print $14, $15}' "/proc/$1/stat"
}
pid_of() { case $1 in sidecar) echo "$sidecar_pid";; pgbouncer) echo "$bouncer_pid";; baseline) echo "$baseline_pid";; batched) echo "$batched_pid";; *) echo "";; esac; }

# run TARGET NAME ARGS... -> "tps latency_ms user_us_per_tx system_us_per_tx p50_us"
# (appended to $work/results). One-client cells log every transaction
# (pgbench -l) for the median latency; the p50 of other cells is "-".
run() {
  local target=$1 name=$2; shift 2
  local out tps lat tx before after pid u0 s0 u1 s1 p50=- log=()
  pid=$(pid_of "$target")
  if [[ $name == *-c1-* ]]; then
    rm -f "$work"/txlog*
    log=(-l --log-prefix="$work/txlog")
  fi
  before=$(cpu_ticks "$pid")
  out=$("$pgbench" -h 127.0.0.1 -p "$(port_of "$target")" -U postgres -n "${log[@]}" "$@" bench 2>&1) || {
    echo "pgbench failed ($target $name): $out" >&2; exit 1; }
  after=$(cpu_ticks "$pid")
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n1)
  lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' | head -n1)
  tx=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' | head -n1)
  if [ ${#log[@]} -gt 0 ]; then
    # Field 3 of a pgbench log line is the transaction's latency in µs.
    p50=$(cat "$work"/txlog* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}')
    rm -f "$work"/txlog*
  fi
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  echo "$name $target $tps $lat $(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" -v n="${tx:-1}" \
    'BEGIN {printf "%.2f %.2f", u * 1e6 / hz / n, s * 1e6 / hz / n}') $p50" >> "$work/results"
}

cells=(
  "select-only-c1-simple|-S -c 1 -j 1 -M simple -T $DURATION"
  "select-only-c1-prepared|-S -c 1 -j 1 -M prepared -T $DURATION"
  "select-only-c8-simple|-S -c 8 -j 2 -M simple -T $DURATION"
  "select-only-c8-prepared|-S -c 8 -j 2 -M prepared -T $DURATION"
  "1M-rows-unmasked|-f $work/big_plain.sql -c 1 -M simple -t 3"
  "1M-rows-masked-column|-f $work/big_masked.sql -c 1 -M simple -t 3"
)
: > "$work/results"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for cell in "${cells[@]}"; do
    name=${cell%%|*}; args=${cell#*|}
    [[ $name =~ ${CELLS:-.} ]] || continue
    for target in "${targets[@]}"; do
      # shellcheck disable=SC2086
      run "$target" "$name" $args
    done
  done
done

rss_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$sidecar_pid/status")
# What the resident set is made of now: the binary's pages (file) and the heap
# and stacks (anonymous).
rss_parts=$(awk '/^Pss_File/ {f = $2} /^Pss_Anon/ {a = $2} END {printf "file-backed %.1f MiB, anonymous %.1f MiB", f / 1024, a / 1024}' "/proc/$sidecar_pid/smaps_rollup" 2>/dev/null || true)
base_rss_kb=0
[ -n "$baseline_pid" ] && base_rss_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$baseline_pid/status")
echo
python3 - "$work/results" "$rss_kb" "$base_rss_kb" "$rss_parts" <<'PY'
import sys, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
order = []
for line in open(sys.argv[1]):
    name, target, tps, lat, user, system, p50 = line.split()
    if name not in order: order.append(name)
    rows[name][target].append((float(tps), float(lat), float(user), float(system), None if p50 == '-' else float(p50)))
def mean(xs): return sum(xs) / len(xs)
def col(name, target, i): return mean([r[i] for r in rows[name][target]])
# The proxy's own CPU per transaction (a select-only transaction is one
# statement), user and system apart, from /proc/PID/stat.
print(f"{'workload':26} {'target':10} {'TPS':>10} {'mean ms':>9} {'TPS/direct':>11} {'time/direct':>12} {'user us/tx':>11} {'sys us/tx':>10} {'p50 us':>7} {'+p50 us':>8}")
for name in order:
    d_tps = col(name, 'direct', 0); d_lat = col(name, 'direct', 1)
    d_p50 = [r[4] for r in rows[name]['direct'] if r[4] is not None]
    for target in [t for t in ['direct', 'pgbouncer', 'sidecar', 'batched', 'baseline'] if rows[name][t]]:
        tps = col(name, target, 0); lat = col(name, target, 1)
        cpu = f"{col(name, target, 2):11.1f} {col(name, target, 3):10.1f}" if target != 'direct' else f"{'-':>11} {'-':>10}"
        p50s = [r[4] for r in rows[name][target] if r[4] is not None]
        if p50s and d_p50:
            p50 = f"{mean(p50s):7.0f} {mean(p50s) - mean(d_p50):+8.0f}"
        else:
            p50 = f"{'-':>7} {'-':>8}"
        print(f"{name:26} {target:10} {tps:10.1f} {lat:9.3f} {tps/d_tps:11.3f} {lat/d_lat:12.3f} {cpu} {p50}")
# Issue #22's lines, per cell: the sidecar's TPS ratio against PgBouncer's,
# its user CPU per statement, and its user+system against PgBouncer's.
for mode in ['sidecar', 'batched']:
    print(f"\n{mode + ' vs PgBouncer':26} {'TPS ratio':>10} {'user us/stmt':>13} {'user+sys us':>12} {'PgB user+sys':>13} {'CPU x PgB':>10}")
    for name in order:
        if not (rows[name][mode] and rows[name]['pgbouncer']): continue
        s_all = col(name, mode, 2) + col(name, mode, 3)
        b_all = col(name, 'pgbouncer', 2) + col(name, 'pgbouncer', 3)
        ratio = col(name, mode, 0) / col(name, 'pgbouncer', 0)
        print(f"{name:26} {ratio:10.3f} {col(name, mode, 2):13.1f} {s_all:12.1f} {b_all:13.1f} {s_all / max(b_all, 1e-9):10.2f}")
print(f"\nsidecar peak RSS: {int(sys.argv[2]) / 1024:.1f} MiB (at the end: {sys.argv[4]})")
if int(sys.argv[3]):
    print(f"baseline peak RSS: {int(sys.argv[3]) / 1024:.1f} MiB")
    print("\nsidecar vs baseline (same run): TPS ratio, proxy CPU ratio (user+system)")
    for name in order:
        s, b = rows[name]['sidecar'], rows[name]['baseline']
        s_cpu = mean([r[2] + r[3] for r in s]); b_cpu = mean([r[2] + r[3] for r in b])
        print(f"  {name:26} TPS {mean([r[0] for r in s]) / mean([r[0] for r in b]):6.3f}   CPU/tx {s_cpu / max(b_cpu, 1e-9):6.3f}")
PY
