#!/usr/bin/env bash
# Checks a release folder made by scripts/release.sh; exit 1 naming every problem.
#   - SHA256SUMS lists exactly the folder's files and each checksum matches;
#   - each binary archive holds its binary and LICENSE, and the binary is static
#     (no program interpreter, `file` says statically linked) and runs (--version);
#   - the plugin archive holds kubectl_complete-sluice, which calls `kubectl-sluice __complete`;
#   - the krew manifest names that archive with its sha256, and every file it installs is in it;
#   - the packaged chart has this version and renders with global.imageRegistry and
#     image digests into REGISTRY/sluice-operator@DIGEST and REGISTRY/sluice-sidecar@DIGEST,
#     and without them into the repositories and tags it had;
#   - the SBOM (unless --no-sbom) is CycloneDX JSON naming the crates the binaries link.
# Usage: scripts/release-check.sh DIR [--no-sbom]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:?usage: scripts/release-check.sh DIR [--no-sbom]}"
SBOM=1
[[ "${2:-}" == --no-sbom ]] && SBOM=0
VENV="${SLUICE_CHART_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-chart-venv}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)"
PLATFORM=linux-amd64
for tool in file readelf sha256sum tar; do
  command -v "$tool" >/dev/null || { echo "release-check: $tool is needed (apt-get install file binutils coreutils tar)" >&2; exit 2; }
done
"$VENV/bin/python" -c 'import helm_python, yaml' 2>/dev/null \
  || { echo "release-check: needs the chart venv $VENV (run make chart once, or scripts/release.sh)" >&2; exit 2; }

FAILED=0
CHECKED=0
fail() { echo "✖ $*"; FAILED=$((FAILED + 1)); }
ok() { echo "✔ $*"; CHECKED=$((CHECKED + 1)); }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

expected=(sluice-operator-$VERSION-$PLATFORM.tar.gz sluice-sidecar-$VERSION-$PLATFORM.tar.gz
          kubectl-sluice-$VERSION-$PLATFORM.tar.gz sluice-$VERSION.tgz sluice.yaml)
((SBOM)) && expected+=("sluice-$VERSION.cdx.json")

# --- checksums
if [[ ! -f "$DIR/SHA256SUMS" ]]; then
  fail "SHA256SUMS is missing"
else
  if out="$(cd "$DIR" && sha256sum --check --strict SHA256SUMS 2>&1)"; then
    ok "SHA256SUMS: $(wc -l < "$DIR/SHA256SUMS") checksums match"
  else
    fail "SHA256SUMS does not match: $(grep -v ': OK$' <<<"$out" | tr '\n' ';')"
  fi
  listed="$(awk '{print $2}' "$DIR/SHA256SUMS" | sed 's/^\*//' | sort)"
  present="$(cd "$DIR" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | sort)"
  [[ "$listed" == "$present" ]] || fail "SHA256SUMS lists [$(tr '\n' ' ' <<<"$listed")] but the folder holds [$(tr '\n' ' ' <<<"$present")]"
  for f in "${expected[@]}"; do
    grep -qx "$f" <<<"$listed" || fail "$f is not in SHA256SUMS"
  done
fi

# --- binaries
for bin in sluice-operator sluice-sidecar kubectl-sluice; do
  archive="$DIR/$bin-$VERSION-$PLATFORM.tar.gz"
  [[ -f "$archive" ]] || { fail "$archive is missing"; continue; }
  dest="$WORK/$bin"
  mkdir -p "$dest"
  tar -xzf "$archive" -C "$dest" || { fail "$archive does not extract"; continue; }
  exe="$dest/$bin"
  [[ -x "$exe" ]] || { fail "$archive has no executable $bin"; continue; }
  [[ -f "$dest/LICENSE" ]] || fail "$archive has no LICENSE"
  kind="$(file -b "$exe")"
  if readelf -lW "$exe" | grep -q 'INTERP'; then
    fail "$bin is dynamically linked (it has a program interpreter): $(readelf -lW "$exe" | grep -o 'interpreter: [^]]*')"
  elif ! grep -Eq 'static-pie linked|statically linked' <<<"$kind"; then
    fail "$bin: file does not call it static: $kind"
  else
    ok "$bin is static ($(grep -Eo 'static-pie linked|statically linked' <<<"$kind"), $(du -h "$exe" | cut -f1))"
  fi
  if got="$("$exe" --version 2>&1)" && grep -q "$VERSION" <<<"$got"; then
    ok "$bin --version: $got"
  else
    fail "$bin --version does not run or does not say $VERSION: $got"
  fi
done
complete="$WORK/kubectl-sluice/kubectl_complete-sluice"
if [[ -x "$complete" ]] && grep -q '^exec kubectl-sluice __complete "\$@"$' "$complete"; then
  ok "kubectl_complete-sluice is in the plugin archive"
else
  fail "the plugin archive lacks an executable kubectl_complete-sluice that runs kubectl-sluice __complete"
fi

# --- krew manifest, chart, SBOM
"$VENV/bin/python" - "$DIR" "$WORK" "$VERSION" "$PLATFORM" "$SBOM" <<'PY' || FAILED=$((FAILED + 1))
import hashlib, json, os, sys
import yaml
import helm_python as helm

d, work, version, platform, sbom = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
problems = []
def ok(what): print(f"✔ {what}")

# krew
plugin = f"kubectl-sluice-{version}-{platform}.tar.gz"
try:
    m = yaml.safe_load(open(os.path.join(d, "sluice.yaml")))
    assert m["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and m["kind"] == "Plugin", "not a krew Plugin"
    assert m["metadata"]["name"] == "sluice", f"plugin name {m['metadata']['name']!r}"
    assert m["spec"]["version"] == f"v{version}", f"version {m['spec']['version']!r}, want v{version}"
    (p,) = m["spec"]["platforms"]
    assert p["selector"]["matchLabels"] == {"os": "linux", "arch": "amd64"}, p["selector"]
    assert p["uri"].endswith("/" + plugin), f"uri {p['uri']} does not name {plugin}"
    actual = hashlib.sha256(open(os.path.join(d, plugin), "rb").read()).hexdigest()
    assert p["sha256"] == actual, f"sha256 {p['sha256']} but {plugin} is {actual}"
    for f in p["files"]:
        assert os.path.exists(os.path.join(work, "kubectl-sluice", f["from"])), f"installs {f['from']}, which the archive lacks"
    assert p["bin"] == "kubectl-sluice", p["bin"]
    ok(f"krew manifest: {plugin} sha256 {actual[:16]}…, {len(p['files'])} files")
except (AssertionError, KeyError, ValueError, OSError, yaml.YAMLError) as e:
    problems.append(f"krew manifest sluice.yaml: {e}")

# chart
registry = "registry.example.com:5000/mirror"
op_digest, sc_digest = "sha256:" + "a" * 64, "sha256:" + "b" * 64
def images(chart, values):
    rendered = chart.render(values, name="sluice", namespace="sluice-system", is_install=True)
    op = sc = None
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "sluice-operator":
                op = doc["spec"]["template"]["spec"]["containers"][0]["image"]
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "sluice-operator":
                sc = yaml.safe_load(doc["data"]["config.yaml"])["sidecar"]["image"]
    return op, sc
try:
    chart = helm.Chart.load_archive(open(os.path.join(d, f"sluice-{version}.tgz"), "rb").read())
    meta = chart.metadata
    assert meta["version"] == version and meta["appVersion"] == version, f"chart {meta['version']}/{meta['appVersion']}"
    pinned = {"global": {"imageRegistry": registry}, "image": {"digest": op_digest},
              "sidecar": {"image": {"digest": sc_digest}}}
    got = images(chart, pinned)
    want = (f"{registry}/sluice-operator@{op_digest}", f"{registry}/sluice-sidecar@{sc_digest}")
    assert got == want, f"with a registry and digests the images are {got}, want {want}"
    got = images(chart, {"global": {"imageRegistry": registry + "/"}})
    want = (f"{registry}/sluice-operator:{version}", f"{registry}/sluice-sidecar:{version}")
    assert got == want, f"with a registry (trailing /) the images are {got}, want {want}"
    got = images(chart, {})
    want = (f"sluice-operator:{version}", f"sluice-sidecar:{version}")
    assert got == want, f"by default the images are {got}, want {want}"
    for bad in ({"global": {"imageRegistry": "https://registry.example.com"}}, {"image": {"digest": "sha256:short"}}):
        try:
            chart.validate_schema(bad)
            problems.append(f"chart schema accepts {bad}")
        except helm.HelmValuesError:
            pass
    ok(f"chart sluice-{version}.tgz renders {registry}/…@digest for the operator and the sidecar, tags without; the schema refuses a URL as registry")
except (AssertionError, KeyError, OSError, helm.HelmError) as e:
    problems.append(f"chart sluice-{version}.tgz: {e}")

# SBOM
if sbom:
    try:
        doc = json.load(open(os.path.join(d, f"sluice-{version}.cdx.json")))
        assert doc["bomFormat"] == "CycloneDX", doc.get("bomFormat")
        names = {c["name"] for c in doc["components"]}
        # One crate each binary alone links (clap_complete: the plugin's), so a
        # document lost in the merge is missed.
        for crate in ("tokio", "rustls", "kube-client", "sqlparser", "serde-saphyr", "clap_complete", "pg_query"):
            assert crate in names, f"no component {crate}"
        packages = {c.get("name") for c in doc["metadata"]["component"].get("components", [])}
        assert {"sluice-operator", "sluice-sidecar", "kubectl-sluice"} <= packages, f"metadata.component names {sorted(packages)}, not the three packages"
        assert not {"serde_yaml", "rustls-pemfile"} & names, "a replaced crate is still linked"
        assert all(c.get("purl", "").startswith("pkg:cargo/") for c in doc["components"]), "a component without a cargo purl"
        ok(f"SBOM: CycloneDX {doc['specVersion']}, {len(doc['components'])} components")
    except (AssertionError, KeyError, ValueError, OSError) as e:
        problems.append(f"SBOM sluice-{version}.cdx.json: {e}")

for p in problems:
    print(f"✖ {p}")
sys.exit(1 if problems else 0)
PY

if ((FAILED)); then
  echo "release-check: $DIR is not a good release ($FAILED problems)"
  exit 1
fi
echo "release-check: $DIR is a good release"
