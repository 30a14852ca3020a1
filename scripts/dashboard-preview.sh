#!/usr/bin/env bash
# Renders the chart's Grafana dashboard against real data, to look at it: a
# throwaway PostgreSQL, the sidecar standalone with examples/quickstart (and a
# second one for an identity no policy binds), a real Prometheus scraping both
# every second while psql sends allowed, masked, denied and refused traffic;
# then every panel's queries are run on Prometheus and drawn as the dashboard
# lays them out (scripts/dashboard_preview.py), and headless Chromium takes a
# screenshot. Needs prometheus (apt) and chromium (apt).
#
# Usage: scripts/dashboard-preview.sh OUT.png [SIDECAR_BINARY] [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../sidecar/demo/pg.sh
. "$root/sidecar/demo/pg.sh"
out=$(realpath -m "${1:?usage: scripts/dashboard-preview.sh OUT.png [SIDECAR_BINARY] [SECONDS]}")
bin=${2:-$root/target/debug/sluice-sidecar}
seconds=${3:-90}
for tool in prometheus chromium; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing: apt-get install -y --no-install-recommends $tool" >&2; exit 1; }
done
psql=$(pg_bin psql)
work=$(mktemp -d /tmp/sluice-dashboard.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  pg_stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

pg_port=$(free_port); listen=$(free_port); admin=$(free_port)
stranger_listen=$(free_port); stranger_admin=$(free_port); prom=$(free_port)
pg_start "$work/pg" "$pg_port" postgres "preview-pw"
demo_data "$pg_port" preview-pw
for who in app stranger; do
  mkdir "$work/$who"
  port=$listen; [ "$who" = stranger ] && port=$stranger_listen
  for f in "$root"/examples/quickstart/*.yaml; do
    sed -e "s/port: 5432/port: $pg_port/" -e "s/listen: {port: 15432}/listen: {port: $port}/" "$f" > "$work/$who/$(basename "$f")"
  done
done
"$bin" standalone -f "$work/app" --as shop/report-job --admin-addr "127.0.0.1:$admin" --no-audit-stdout 2>"$work/app.log" &
pids+=($!)
"$bin" standalone -f "$work/stranger" --as shop/stranger --admin-addr "127.0.0.1:$stranger_admin" --no-audit-stdout 2>"$work/stranger.log" &
pids+=($!)
wait_port "$listen"; wait_port "$admin"; wait_port "$stranger_admin"

# The labels a PodMonitor's targets carry (namespace, pod).
cat > "$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: sluice-sidecars
    static_configs:
      - targets: ["127.0.0.1:$admin"]
        labels: {namespace: shop, pod: report-job-7d9f-x2x4p}
      - targets: ["127.0.0.1:$stranger_admin"]
        labels: {namespace: shop, pod: stranger-5c4b-q8wz1}
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_port "$prom"

start=$(date +%s)
sql() { PGPASSWORD=x "$psql" -X -q -h 127.0.0.1 -p "$1" -U app -d orders -c "$2" >/dev/null 2>&1 || true; }
echo "traffic for ${seconds}s"
i=0
while (( $(date +%s) - start < seconds )); do
  i=$((i + 1))
  # A session of a few statements: reads (some masked), the odd denied
  # statement, and a session of an identity no policy binds.
  sql "$listen" "SELECT id, name, email FROM customers WHERE id = $((i % 3 + 1)); SELECT sum(amount) FROM orders; SELECT count(*) FROM orders WHERE amount > $i"
  (( i % 3 == 0 )) && sql "$listen" "DROP TABLE orders"
  (( i % 5 == 0 )) && sql "$listen" "TRUNCATE customers"
  (( i % 4 == 0 )) && sql "$stranger_listen" "SELECT 1"
  sleep 0.2
done
sleep 3
python3 "$root/scripts/dashboard_preview.py" "http://127.0.0.1:$prom" \
  "$root/charts/sluice/files/dashboards/sluice.json" "$start" "$(date +%s)" "$work/dashboard.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,2000 \
  --screenshot="$out" "file://$work/dashboard.html" >/dev/null 2>&1
echo "dashboard drawn from $(date -d "@$start" +%T) to $(date +%T): $out"
