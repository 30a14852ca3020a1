#!/usr/bin/env bash
# `make demo`: the in-cluster flow, locally. The test control plane (a small
# Kubernetes API server for tests, no Docker needed) with users alice (group
# dba, the approvers) and bob; a throwaway PostgreSQL; the CRDs and the
# examples applied with kubectl; the operator; an annotated pod injected by its
# webhook; the sidecar started as that pod's sidecar would be (a token bound to
# the pod); psql through it; an approval held and granted; the policy's
# counters, the AccessRequest's story, the audit chain, the recorded session
# replayed, and an evidence package exported for the run (kept in
# target/demo-evidence/, where the last line says). Cleans up the rest.
#
# Usage: sidecar/demo/cluster-demo.sh [BIN_DIR]   (default: target/release)
# BIN_DIR holds sluice-testcluster, sluice-operator, sluice-sidecar, kubectl-sluice.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=pg.sh
. "$here/pg.sh"

bin_dir=$(cd "${1:-${SLUICE_BIN_DIR:-$root/target/release}}" && pwd)
for b in sluice-testcluster sluice-operator sluice-sidecar kubectl-sluice; do
  [ -x "$bin_dir/$b" ] || {
    echo "error: $bin_dir/$b not found; build with: cargo build --release --locked -p sluice-e2e -p sluice-operator -p sluice-sidecar -p kubectl-sluice" >&2
    exit 1
  }
done
command -v kubectl >/dev/null || { echo "error: kubectl not found on PATH (the demo drives everything with it)" >&2; exit 1; }
# kubectl finds the plugin `kubectl sluice` on PATH.
export PATH="$bin_dir:$PATH"
psql=$(pg_bin psql)

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
chmod 755 "$work"
cd "$root"
export KUBECONFIG=$work/cluster/kubeconfig KUBECACHEDIR=$work/kube-cache
unset KUBERNETES_SERVICE_HOST
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pg_stop "$work/pg"
  if [ "$status" != 0 ]; then
    echo "== the demo failed; the last lines of each log:" >&2
    for log in cluster.log operator.log sidecar.log; do
      [ -f "$work/$log" ] && { echo "-- $log" >&2; tail -n 15 "$work/$log" >&2; }
    done
  fi
  cd /
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
# show CMD...: print the command as one would type it, then run it.
show() {
  local arg line='$'
  for arg in "$@"; do
    case $arg in
      '' | *[[:space:]\'\"\$\*\?\&\;\|\<\>\(\)\{\}\[\]]*) line+=" '${arg//\'/\'\\\'\'}'" ;;
      *) line+=" $arg" ;;
    esac
  done
  printf '%s\n' "$line"
  "$@"
}
# shown TEXT: print a command line that the next lines run (pipes, heredocs).
shown() { printf '$ %s\n' "$*"; }
indent() { sed 's/^/    /'; }

started=$(date +%s)
pg_port=$(free_port)
listen_port=$(free_port)
op_port=$(free_port)
admin_port=$(free_port)

step "1. the test control plane: a Kubernetes API server for tests, with users alice (group dba: the approvers) and bob"
shown "sluice-testcluster --dir $work/cluster --user alice:dba --user bob:dev &"
sluice-testcluster --dir "$work/cluster" --user alice:dba --user bob:dev >"$work/cluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -f "$work/cluster/ready" ] && break; sleep 0.1; done
[ -f "$work/cluster/ready" ] || { echo "error: the test control plane did not start" >&2; exit 1; }
shown "export KUBECONFIG=$KUBECONFIG"
show kubectl config get-contexts

step "2. a throwaway PostgreSQL on 127.0.0.1:$pg_port with the quickstart's sample data (orders, customers)"
pg_start "$work/pg" "$pg_port" postgres "demo-superuser-pw"
demo_data "$pg_port" demo-superuser-pw
echo "database orders, owner orders_app; the workload will never see that password"

step "3. the CRDs"
show kubectl apply -f crds/
show kubectl wait --for=condition=Established --timeout=30s \
  crd/connections.sluice.dev crd/accesspolicies.sluice.dev crd/accessrequests.sluice.dev

step "4. the examples: quickstart (pointed at this PostgreSQL) and approvals"
show kubectl apply -f examples/quickstart/namespace.yaml -f examples/quickstart/reporting-policy.yaml
shown "sed -e 's/port: 5432/port: $pg_port/' -e 's/listen: {port: 15432}/listen: {port: $listen_port}/' examples/quickstart/orders-db.yaml | kubectl apply -f -"
sed -e "s/port: 5432/port: $pg_port/" -e "s/listen: {port: 15432}/listen: {port: $listen_port}/" \
  examples/quickstart/orders-db.yaml | kubectl apply -f -
show kubectl apply -f examples/approvals/
echo "the reporting policy records its sessions, results included (masked), for replay:"
show kubectl patch accesspolicy reporting -n shop --type merge -p '{"spec":{"recording":"results"}}'

step "5. the operator, outside the cluster: it registers its webhooks with --webhook-url and serves the gateway API there"
shown "sluice-operator --listen 127.0.0.1:$op_port --webhook-url https://127.0.0.1:$op_port --audit-flush-seconds 1 &"
sluice-operator --listen "127.0.0.1:$op_port" --webhook-url "https://127.0.0.1:$op_port" \
  --audit-flush-seconds 1 2>"$work/operator.log" &
pids+=($!)
show kubectl wait --for=condition=Ready --timeout=30s -n shop connection/orders-db accesspolicy/reporting
show kubectl wait --for=condition=Ready --timeout=30s -n warehouse connection/inventory-db accesspolicy/maintenance
show kubectl get conn,ap -A
for _ in $(seq 1 100); do
  kubectl get mutatingwebhookconfiguration sluice-operator >/dev/null 2>&1 \
    && kubectl get validatingwebhookconfiguration sluice-operator-approvals >/dev/null 2>&1 && break
  sleep 0.2
done
show kubectl get mutatingwebhookconfigurations,validatingwebhookconfigurations

step "6. a pod that asks for the sidecar, in namespace shop (labelled sluice.dev/injection=enabled)"
show kubectl get namespace shop --show-labels
show kubectl create serviceaccount report-job -n shop
pod_yaml='apiVersion: v1
kind: Pod
metadata:
  name: report
  namespace: shop
  annotations: {sluice.dev/inject: "true"}
spec:
  serviceAccountName: report-job
  containers: [{name: app, image: example/report:1}]'
shown "kubectl apply -f - <<EOF"
echo "$pod_yaml" | indent
echo "EOF"
echo "$pod_yaml" | kubectl apply -f -
echo "it came back with the sidecar injected by the operator's webhook:"
shown "kubectl get pod report -n shop -o jsonpath=..."
kubectl get pod report -n shop -o jsonpath='{range .spec.initContainers[*]}native sidecar: initContainer {.name} (image {.image}, restartPolicy {.restartPolicy}, startupProbe {.startupProbe.httpGet.path}){"\n"}{end}{range .spec.volumes[*].projected.sources[*].serviceAccountToken}projected token: audience {.audience}, expires in {.expirationSeconds}s, mounted at /var/run/secrets/sluice.dev/serviceaccount{"\n"}{end}sidecar env: {.spec.initContainers[0].env[*].name}{"\n"}{range .spec.containers[*].env[*]}app env: {.name}={.value}{"\n"}{end}annotations: injected-revision {.metadata.annotations.sluice\.dev/injected-revision}, injected-connections {.metadata.annotations.sluice\.dev/injected-connections}{"\n"}' | indent

step "7. the sidecar, started as that pod's sidecar would be: its environment, and a token bound to the pod"
echo "(the test control plane runs no kubelet, so the demo plays kubelet: a TokenRequest bound to the pod, the pod's env)"
shown "kubectl create token report-job -n shop --audience sluice.dev --bound-object-kind Pod --bound-object-name report --duration 10m > $work/token"
kubectl create token report-job -n shop --audience sluice.dev --bound-object-kind Pod \
  --bound-object-name report --duration 10m > "$work/token"
sidecar_env() {
  kubectl get pod report -n shop -o jsonpath="{.spec.initContainers[?(@.name==\"sluice-sidecar\")].env[?(@.name==\"$1\")].value}"
}
gateway_url=$(sidecar_env SLUICE_GATEWAY_URL)
ca_pem=$(sidecar_env SLUICE_CA_PEM)
connections=$(sidecar_env SLUICE_CONNECTIONS)
pod_uid=$(kubectl get pod report -n shop -o jsonpath='{.metadata.uid}')
shown "SLUICE_GATEWAY_URL=$gateway_url SLUICE_CA_PEM=\"<the operator's CA, from the pod spec>\" SLUICE_TOKEN_FILE=$work/token \\"
echo "    SLUICE_CONNECTIONS=$connections SLUICE_POD_NAME=report SLUICE_POD_NAMESPACE=shop SLUICE_POD_UID=$pod_uid \\"
echo "    SLUICE_SERVICE_ACCOUNT=report-job SLUICE_ADMIN_ADDR=127.0.0.1:$admin_port sluice-sidecar run > $work/audit.jsonl &"
SLUICE_GATEWAY_URL=$gateway_url SLUICE_CA_PEM=$ca_pem SLUICE_TOKEN_FILE=$work/token \
  SLUICE_CONNECTIONS=$connections SLUICE_POD_NAME=report SLUICE_POD_NAMESPACE=shop SLUICE_POD_UID=$pod_uid \
  SLUICE_SERVICE_ACCOUNT=report-job SLUICE_ADMIN_ADDR=127.0.0.1:$admin_port \
  sluice-sidecar run >"$work/audit.jsonl" 2>"$work/sidecar.log" &
pids+=($!)
wait_port "$listen_port"
echo "token exchanged, bundle fetched: orders-db is served on 127.0.0.1:$listen_port"

run() {
  printf '\napp$ psql -h 127.0.0.1 -p %s -U app -d orders -c "%s"\n' "$listen_port" "$1"
  "$psql" -X -h 127.0.0.1 -p "$listen_port" -U app -d orders -c "$1" 2>&1 | indent || true
}

step "8. psql through the sidecar: no password; Sluice holds the credentials"
run "SELECT id, customer_id, amount, placed FROM orders ORDER BY id"
step "9. masked: ssn and password_hash redacted, email hashed, card numbers and e-mails in free text partly hidden"
run "SELECT name, email, ssn, password_hash, note FROM customers ORDER BY id"
step "10. denied: schema changes (rule no-schema-changes)"
run "DROP TABLE customers"

step "11. an approval: UPDATE without WHERE is held until a member of dba approves (rule bulk-writes-need-a-human, mode hold)"
held_sql="UPDATE orders SET amount = amount + 1"
printf 'app$ psql -h 127.0.0.1 -p %s -U app -d orders -c "%s"    # in the background: it waits\n' "$listen_port" "$held_sql"
"$psql" -X -h 127.0.0.1 -p "$listen_port" -U app -d orders -c "$held_sql" >"$work/held.out" 2>&1 &
held_pid=$!
pids+=("$held_pid")
ar=""
for _ in $(seq 1 100); do
  ar=$(kubectl get accessrequests -n shop -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  [ -n "$ar" ] && break
  kill -0 "$held_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ar" ]; then
  wait "$held_pid" 2>/dev/null || true
  indent < "$work/held.out"
  echo "error: the statement was not held for approval (no AccessRequest in shop); see $work/sidecar.log" >&2
  exit 1
fi
for _ in $(seq 1 50); do grep -q NOTICE "$work/held.out" && break; sleep 0.1; done
echo "psql is waiting; what it printed so far:"
indent < "$work/held.out"
seen=$(wc -l < "$work/held.out")
show kubectl sluice requests -n shop
echo "bob is not in dba: refused"
show kubectl sluice approve "$ar" -n shop --context bob || true
echo "alice is in dba: the statement runs, once"
show kubectl sluice approve "$ar" -n shop --context alice --reason "repricing, ticket OPS-42"
for _ in $(seq 1 300); do kill -0 "$held_pid" 2>/dev/null || break; sleep 0.1; done
wait "$held_pid" 2>/dev/null || true
echo "psql, once approved:"
tail -n +"$((seen + 1))" "$work/held.out" | indent
run "SELECT id, amount FROM orders ORDER BY id"
show kubectl get ar -n shop
show kubectl describe ar "$ar" -n shop

step "12. the policy's status: counters and recent denials, fed by the sidecar's audit events"
for _ in $(seq 1 100); do
  denied=$(kubectl get ap reporting -n shop -o jsonpath='{.status.counters.denied}')
  [ -n "$denied" ] && [ "$denied" -ge 1 ] && break
  sleep 0.2
done
show kubectl describe accesspolicy reporting -n shop

step "13. the audit stream (the sidecar's stdout): one hash-chained JSON line per event, literals redacted"
if command -v jq >/dev/null; then
  fields='{seq, type, command: .command.text, decision: .decision.action, rule: .decision.rule, rows: .outcome.rows, masked: .outcome.masked, approval: .approval}'
  shown "jq -c '$fields' $work/audit.jsonl"
  jq -c "$fields | with_entries(select(.value != null))" "$work/audit.jsonl"
else
  show cat "$work/audit.jsonl"
fi
show kubectl sluice audit verify "$work/audit.jsonl"
echo "... and with one line deleted it is not:"
shown "sed 3d $work/audit.jsonl > $work/edited.jsonl"
sed 3d "$work/audit.jsonl" > "$work/edited.jsonl"
show kubectl sluice audit verify "$work/edited.jsonl" || true

step "14. the recorded sessions, and one replayed: statements, decisions, and the results as psql received them (masked)"
show kubectl sluice sessions --audit "$work/audit.jsonl"
# The first recorded session with masked values (step 9), from the JSON
# list (flat objects, one per line after the split).
session=$(kubectl sluice sessions --audit "$work/audit.jsonl" -o json | tr '{' '\n' |
  grep '"recording":"results"' | grep -v '"masked":0' |
  sed -n 's/.*"session":"\([0-9a-f]*\)".*/\1/p' | head -n 1 || true)
if [ -n "$session" ]; then
  show kubectl sluice replay "$session" --audit "$work/audit.jsonl" --no-delay
fi

step "15. deleting the pod makes its token useless: the sidecar loses its bundle and refuses new sessions"
show kubectl delete pod report -n shop
for _ in $(seq 1 100); do
  "$psql" -X -h 127.0.0.1 -p "$listen_port" -U app -d orders -c "SELECT 1" >/dev/null 2>&1 || break
  sleep 0.2
done
run "SELECT 1"

step "16. evidence for this run: policies, Connections, AccessRequests, the verified audit, SOC 2 mapping, report"
evidence="$root/target/demo-evidence/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$(dirname "$evidence")"
show kubectl sluice evidence export --since 1h -n shop --audit "$work/audit.jsonl" -o "$evidence.tar.gz"
show kubectl sluice evidence verify "$evidence.tar.gz"
mkdir -p "$evidence" && tar -xzf "$evidence.tar.gz" -C "$evidence" --strip-components=1
echo "the HTML report of this run: $evidence/report.html"

step "done in $(($(date +%s) - started))s; cleaning up (sidecar, operator, PostgreSQL, test control plane)"
