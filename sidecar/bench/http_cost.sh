#!/usr/bin/env bash
# What one HTTP request costs the sidecar, measured so that a busy machine
# does not change it: user-space instructions per request under callgrind
# (`cg`: counted over exactly REQS requests after a warm-up, the count and a
# profile per function), or CPU time and context switches per request from
# /proc and perf (`ps`: these do vary with load). Used for the A/B of issue
# 16's bench criterion against a build of an older commit.
#
# Usage: sidecar/bench/http_cost.sh SIDECAR_BINARY cg|ps plain|masked REQS [CONNS]
# Env: UPSTREAM_BIN (required: a `cargo build --release -p sluice-sidecar
# --example http_bench_upstream` binary), SIDECAR_ARGS (more sidecar flags),
# OUT (where the callgrind profile is copied; default the current directory),
# TAG (added to the profile's file name, e.g. to tell SIDECAR_ARGS apart).
# Needs valgrind (cg) or perf (ps), and python3 (the client, http_client.py:
# exactly REQS keep-alive GETs of /small over CONNS connections).
# Note: valgrind hides SHA extensions from the program, so the audit's
# SHA-256 runs its portable code there (a large share of the count, the
# same for both builds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$1; mode=$2; cell=$3; reqs=$4; conns=${5:-1}
[ -x "${UPSTREAM_BIN:-}" ] || { echo "error: set UPSTREAM_BIN to a built http_bench_upstream example" >&2; exit 1; }
work=$(mktemp -d /tmp/sluice-http-cost.XXXXXX)
pids=()
cleanup() { touch "$work/stop"; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$UPSTREAM_BIN" "$work" >"$work/upstream.log" 2>&1 & pids+=($!)
for _ in $(seq 1 600); do [ -s "$work/port" ] && break; sleep 0.1; done
up=$(cat "$work/port")
port=$((20000 + RANDOM % 20000))
{
  echo "apiVersion: v1"; echo "kind: Secret"; echo "metadata: {name: api-creds, namespace: bench}"
  echo "stringData: {Authorization: \"Bearer bench-token\"}"
  echo "---"; echo "apiVersion: v1"; echo "kind: Secret"; echo "metadata: {name: api-ca, namespace: bench}"
  echo "stringData:"; echo "  ca.crt: |"; sed 's/^/    /' "$work/ca.pem"
  cat <<YAML
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: api, namespace: bench}
spec:
  protocol: http
  upstream: {baseURL: "https://localhost:$up", tls: {mode: verify-full, caSecretRef: {name: api-ca}}}
  credentials: {secretRef: {name: api-creds}}
  listen: {port: $port}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: bench}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api]
  rules:
    - {name: no-admin, match: {paths: ["/admin/**"]}, action: deny}
YAML
  if [ "$cell" = masked ]; then cat <<YAML
  masking:
    - {jsonPaths: ["\$.email", "\$[*].card"], strategy: redact}
    - {detectors: [creditCard, email], strategy: redact}
YAML
  fi
} >"$work/m.yaml"
args=(standalone -f "$work/m.yaml" --as bench/app --no-audit-stdout --audit-file "$work/audit.jsonl" --worker-threads 1 ${SIDECAR_ARGS:-})
if [ "$mode" = cg ]; then
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --instr-atstart=no "$bin" "${args[@]}" >"$work/side.out" 2>"$work/side.log" &
else
  "$bin" "${args[@]}" >"$work/side.out" 2>"$work/side.log" &
fi
side=$!; pids+=($side)
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$port/small" && break; sleep 0.2; done
url="http://127.0.0.1:$port/small"
# warm up (pool, TLS session)
python3 "$here/http_client.py" 127.0.0.1 $port /small 200 $conns >/dev/null
th=1; [ "$conns" -gt 1 ] && th=2
per=$((reqs / th))
if [ "$mode" = cg ]; then
  callgrind_control -i on "$side" >/dev/null
  python3 "$here/http_client.py" 127.0.0.1 $port /small $reqs $conns > "$work/client.out" 2>&1
  callgrind_control -i off "$side" >/dev/null
  callgrind_control -d "$side" >/dev/null
  sleep 1
  n=$(awk '/^requests/ {print $2}' "$work/client.out")
  f=$(ls -S "$work"/cg.out* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "cell=$cell conns=$conns requests=$n Ir=$ir Ir/req=$((ir / n))"
  cp "$f" "${OUT:-.}/$(basename "$bin")${TAG:+-$TAG}-$cell-c$conns.cg"
else
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$side/stat)
  cs0=$(cat /proc/$side/task/*/status | awk '/^voluntary_ctxt/ {v+=$2} /^nonvoluntary_ctxt/ {n+=$2} END {print v+n}')
  perf stat -x, -e task-clock,context-switches -p "$side" -o "$work/perf.out" -- env python3 "$here/http_client.py" 127.0.0.1 $port /small $reqs $conns > "$work/client.out" 2>&1
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$side/stat)
  cs1=$(cat /proc/$side/task/*/status | awk '/^voluntary_ctxt/ {v+=$2} /^nonvoluntary_ctxt/ {n+=$2} END {print v+n}')
  n=$(awk '/^requests/ {print $2}' "$work/client.out")
  tck=$(getconf CLK_TCK)
  awk -v n="$n" -v u=$((u1-u0)) -v s=$((s1-s0)) -v t="$tck" -v cs=$((cs1-cs0)) -v cell="$cell" -v c="$conns" -v f="$work/perf.out" 'BEGIN{
    while ((getline l < f) > 0) { split(l, a, ","); if (a[3]=="task-clock") tc=a[1]; if (a[3]=="context-switches") pcs=a[1] }
    printf "cell=%s conns=%d requests=%d user_us/req=%.1f sys_us/req=%.1f task-clock_us/req=%.1f ctxsw/req=%.3f (proc %.3f)\n", cell, c, n, u*1e6/t/n, s*1e6/t/n, tc*1000/n, pcs/n, cs/n }'
fi
