#!/usr/bin/env bash
# HTTP part of `make bench`: requests/s and latency through the Sluice
# sidecar vs direct to the same HTTPS upstream (wrk), as ratios, and the
# sidecar's peak RSS while it masks a ~100 MB JSON response.
#
# The upstream is the HTTPS server of the HTTP tests (sidecar/tests/http_support,
# its own CA), run as the example http_bench_upstream. Cells (interleaved, ROUNDS times):
#   direct      wrk -> https upstream /small
#   plain       wrk -> sidecar (no masking rule) -> upstream /small
#   masked      wrk -> sidecar (jsonPaths + detectors) -> upstream /small
#   nginx       wrk -> nginx (the peer: a reverse proxy doing the same job,
#               one worker, keep-alive pool, TLS verified, credential header
#               set) -> upstream /small; skipped when nginx is not installed
#   direct1, plain1, nginx1: the same with one connection (latency-bound: on
#               a small machine the cells above are CPU-bound, and every
#               process of the three competes for the same cores)
#
# Usage: sidecar/bench/http_bench.sh [SIDECAR_BINARY]
# Env: DURATION (s per cell, default 5), ROUNDS (default 2), CONNS (default 16),
# THREADS (default 2), BIG_ITEMS (default 1000000, ~100 MB), UPSTREAM_BIN (a prebuilt
# http_bench_upstream example binary, instead of building it with cargo), SIDECAR_THREADS (the sidecar's
# --worker-threads, default 1), SIDECAR_ARGS (more sidecar flags, e.g. --http-upstream-http1-only),
# BASELINE (a second sidecar binary, e.g. a build of an older commit: its cells
# base-plain, base-masked and base-plain1 run interleaved with the others, with the same
# manifests on their own ports, for an A/B in the same run), BASELINE_ARGS (flags for the
# BASELINE sidecar instead of SIDECAR_ARGS, e.g. the same binary with
# --http-upstream-http1-only for an A/B of a flag).
#
# Besides the ratios, every proxy cell prints the CPU the proxy process
# itself spent per request (user and system, from /proc/PID/stat over the
# cell: the sidecar's, or nginx's master and worker): on a shared machine
# this varies less than requests per second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-${SLUICE_SIDECAR:-$root/target/release/sluice-sidecar}}
[ -x "$bin" ] || { echo "error: $bin not found; build it with: cargo build --release -p sluice-sidecar" >&2; exit 1; }
command -v wrk >/dev/null || { echo "error: wrk not found (apt-get install wrk)" >&2; exit 1; }
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
BIG_ITEMS=${BIG_ITEMS:-1000000}

work=$(mktemp -d /tmp/sluice-http-bench.XXXXXX)
pids=()
cleanup() {
  touch "$work/stop"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${UPSTREAM_BIN:-}" ]; then
  # A prebuilt `cargo build --release -p sluice-sidecar --example http_bench_upstream` binary.
  "$UPSTREAM_BIN" "$work" >"$work/upstream.log" 2>&1 &
  pids+=($!)
else
  echo "building the bench upstream (release example)..." >&2
  (cd "$root" && cargo build --release -p sluice-sidecar --example http_bench_upstream >/dev/null 2>&1)
  "${CARGO_TARGET_DIR:-$root/target}/release/examples/http_bench_upstream" "$work" >"$work/upstream.log" 2>&1 &
  pids+=($!)
fi
for _ in $(seq 1 1200); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || { echo "error: the bench upstream did not start; see $work/upstream.log" >&2; cat "$work/upstream.log" >&2; exit 1; }
up=$(cat "$work/port")

plain_port=$((20000 + RANDOM % 20000))
masked_port=$((plain_port + 1))
{
  echo "apiVersion: v1"
  echo "kind: Secret"
  echo "metadata: {name: api-creds, namespace: bench}"
  echo "stringData: {Authorization: \"Bearer bench-token\"}"
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Secret"
  echo "metadata: {name: api-ca, namespace: bench}"
  echo "stringData:"
  echo "  ca.crt: |"
  sed 's/^/    /' "$work/ca.pem"
  for c in plain masked; do
    port=$plain_port; [ $c = masked ] && port=$masked_port
    cat <<YAML
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: api-$c, namespace: bench}
spec:
  protocol: http
  upstream: {baseURL: "https://localhost:$up", tls: {mode: verify-full, caSecretRef: {name: api-ca}}}
  credentials: {secretRef: {name: api-creds}}
  listen: {port: $port}
YAML
  done
  cat <<YAML
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: plain, namespace: bench}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api-plain]
  rules:
    - {name: no-admin, match: {paths: ["/admin/**"]}, action: deny}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: masked, namespace: bench}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api-masked]
  rules:
    - {name: no-admin, match: {paths: ["/admin/**"]}, action: deny}
  masking:
    - {jsonPaths: ["\$.email", "\$[*].card"], strategy: redact}
    - {detectors: [creditCard, email], strategy: redact}
YAML
} >"$work/manifests.yaml"

"$bin" standalone -f "$work/manifests.yaml" --as bench/app --no-audit-stdout --audit-file "$work/audit.jsonl" \
  --worker-threads "${SIDECAR_THREADS:-1}" ${SIDECAR_ARGS:-} \
  >"$work/sidecar.out" 2>"$work/sidecar.log" &
side=$!
pids+=($side)
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$masked_port/small" && break
  sleep 0.1
done

base_cells=""
if [ -n "${BASELINE:-}" ]; then
  [ -x "$BASELINE" ] || { echo "error: BASELINE=$BASELINE is not an executable sidecar binary" >&2; exit 1; }
  base_plain_port=$((masked_port + 2)); base_masked_port=$((masked_port + 3))
  sed -e "s/listen: {port: $plain_port}/listen: {port: $base_plain_port}/" \
      -e "s/listen: {port: $masked_port}/listen: {port: $base_masked_port}/" "$work/manifests.yaml" >"$work/baseline.yaml"
  "$BASELINE" standalone -f "$work/baseline.yaml" --as bench/app --no-audit-stdout --audit-file "$work/baseline-audit.jsonl" \
    --worker-threads "${SIDECAR_THREADS:-1}" ${BASELINE_ARGS-${SIDECAR_ARGS:-}} \
    >"$work/baseline.out" 2>"$work/baseline.log" &
  base_side=$!
  pids+=($base_side)
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$base_masked_port/small" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$base_masked_port/small" || { echo "error: the baseline sidecar did not serve" >&2; cat "$work/baseline.log" >&2; exit 1; }
  base_cells=" base-plain base-masked base-plain1"
fi

# The peer: nginx as a TLS-originating reverse proxy with the same job as the
# sidecar's plain cell (keep-alive pool to the upstream, certificate verified
# against the bench CA, the credential header set), one worker as the sidecar
# has one worker thread.
cells="direct plain masked direct1 plain1"
nginx_bin=$(command -v nginx || { test -x /usr/sbin/nginx && echo /usr/sbin/nginx; } || true)
if [ -n "$nginx_bin" ]; then
  nginx_port=$((masked_port + 1))
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream bench_up { server 127.0.0.1:$up; keepalive 32; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass https://bench_up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost;
      proxy_set_header Authorization "Bearer bench-token";
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $work/ca.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
NGINX
  "$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx/out.log" 2>&1 &
  nginx_master=$!
  pids+=($nginx_master)
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$nginx_port/small" && break
    sleep 0.1
  done
  if curl -sf -o /dev/null "http://127.0.0.1:$nginx_port/small"; then
    cells="direct plain masked nginx direct1 plain1 nginx1"
  else
    echo "warning: nginx did not serve the bench upstream (see $work/nginx/error.log); the peer cells are skipped" >&2
    cat "$work/nginx/error.log" >&2 || true
  fi
else
  echo "note: nginx is not installed (apt-get install nginx-light); the peer cells are skipped" >&2
fi

# rps, mean latency (ms) and requests completed of one wrk run.
run() {
  wrk -t"${2:-$THREADS}" -c"${3:-$CONNS}" -d"${DURATION}s" --latency "$1" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +Latency / && lat == "" {lat=$2}
    / requests in / {n=$1}
    END {
      if (lat ~ /ms$/) {sub(/ms$/, "", lat)} else if (lat ~ /us$/) {sub(/us$/, "", lat); lat = lat / 1000} else if (lat ~ /s$/) {sub(/s$/, "", lat); lat = lat * 1000}
      printf "%s %s %s\n", rps, lat, n
    }'
}

# The processes whose CPU a cell's proxy spends (none for direct cells).
proxy_pids() {
  case $1 in
    plain|masked|plain1) echo "$side" ;;
    base-*) echo "$base_side" ;;
    nginx|nginx1) echo "$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')" ;;
  esac
}

# User and system clock ticks spent so far by the processes given.
ticks() {
  local u=0 s=0 a b p
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}
tck=$(getconf CLK_TCK)

cells="$cells$base_cells"
declare -A rps lat reqs utick stick
for r in $(seq 1 "$ROUNDS"); do
  for cell in $cells; do
    case $cell in
      direct|direct1) url="https://localhost:$up/small" ;;
      plain|plain1) url="http://127.0.0.1:$plain_port/small" ;;
      nginx|nginx1) url="http://127.0.0.1:$nginx_port/small" ;;
      masked) url="http://127.0.0.1:$masked_port/small" ;;
      base-plain|base-plain1) url="http://127.0.0.1:$base_plain_port/small" ;;
      base-masked) url="http://127.0.0.1:$base_masked_port/small" ;;
    esac
    procs=$(proxy_pids "$cell")
    read -r u0 s0 < <(ticks $procs)
    case $cell in
      *1) read -r x l n < <(run "$url" 1 1) ;;
      *) read -r x l n < <(run "$url") ;;
    esac
    read -r u1 s1 < <(ticks $procs)
    rps[$cell]="${rps[$cell]:-} $x"
    lat[$cell]="${lat[$cell]:-} $l"
    reqs[$cell]=$(( ${reqs[$cell]:-0} + ${n:-0} ))
    utick[$cell]=$(( ${utick[$cell]:-0} + u1 - u0 ))
    stick[$cell]=$(( ${stick[$cell]:-0} + s1 - s0 ))
  done
done

mean() { echo "$@" | awk '{s=0; for(i=1;i<=NF;i++) s+=$i; printf "%.1f", s/NF}'; }
# CPU per request: the proxy process's own user (and user+system) time
# over the cell's requests, in microseconds.
per_req() {
  awk -v t="$1" -v n="$2" -v hz="$tck" 'BEGIN{ if (n > 0) printf "%.1f", t * 1e6 / hz / n; else printf "-" }'
}
printf "%-12s %12s %12s %14s %14s %12s %12s\n" cell "req/s" "mean ms" "rps/direct" "latency +ms" "user us/req" "u+s us/req"
for cell in $cells; do
  base=direct; [ "${cell%1}" != "$cell" ] && base=direct1
  d_rps=$(mean ${rps[$base]}); d_lat=$(mean ${lat[$base]})
  x=$(mean ${rps[$cell]}); l=$(mean ${lat[$cell]})
  cpu_u="-"; cpu_all="-"
  if [ -n "$(proxy_pids "$cell")" ]; then
    cpu_u=$(per_req "${utick[$cell]}" "${reqs[$cell]}")
    cpu_all=$(per_req "$(( ${utick[$cell]} + ${stick[$cell]} ))" "${reqs[$cell]}")
  fi
  printf "%-12s %12s %12s %14s %14s %12s %12s\n" "$cell" "$x" "$l" \
    "$(awk -v a="$x" -v b="$d_rps" 'BEGIN{printf "%.3f", a/b}')" \
    "$(awk -v a="$l" -v b="$d_lat" 'BEGIN{printf "%+.3f", a-b}')" "$cpu_u" "$cpu_all"
done

# A ~100 MB JSON array, masked while streaming.
start=$(date +%s.%N)
# Checked as it streams (nothing written to disk): no card number may pass.
bytes=$(curl -s --max-time 300 -o >(grep -c 4111111111111111 >"$work/leaks" || true) -w '%{size_download}' \
  "http://127.0.0.1:$masked_port/big/$BIG_ITEMS")
end=$(date +%s.%N)
sleep 1
leaks=$(cat "$work/leaks" 2>/dev/null || echo "?")
[ "$leaks" = 0 ] || { echo "error: card numbers passed unmasked (lines: $leaks)" >&2; exit 1; }
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$side/status")
printf "big masked response: %s bytes in %.2f s; sidecar peak RSS %s MiB\n" "$bytes" \
  "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k/1024}')"
