#!/usr/bin/env bash
# Builds what a Sluice release publishes, into one folder (default dist/VERSION):
#   sluice-operator-VERSION-linux-amd64.tar.gz  static binary
#   sluice-sidecar-VERSION-linux-amd64.tar.gz   static binary
#   kubectl-sluice-VERSION-linux-amd64.tar.gz   static plugin + kubectl_complete-sluice
#   sluice-VERSION.tgz                          the Helm chart, packaged by Helm's own code
#   sluice.yaml                                 the krew plugin manifest (archive sha256)
#   sluice-VERSION.cdx.json                     CycloneDX SBOM of the three binaries' crates
#   SHA256SUMS                                  every file above
# then checks it with scripts/release-check.sh. Images cannot be pushed from
# here: the chart takes global.imageRegistry and image digests once they are.
#
# Binaries are built with Cargo's dist profile (Cargo.toml: release with fat
# LTO and one codegen unit, no debug info). Static binaries: the
# x86_64-unknown-linux-musl target when rustup has it;
# otherwise glibc with crt-static (a static-pie: no dynamic loader, no shared
# libraries), which is what a machine without the musl standard library can
# build. glibc's static getaddrinfo still reads /etc/nsswitch.conf and may try
# to load NSS modules for sources other than files/dns, so in a scratch or
# distroless-static image, name resolution is DNS and /etc/hosts only.
#
# Usage: scripts/release.sh [--out DIR] [--bin-dir DIR] [--no-sbom]
#   --bin-dir DIR  package the binaries found in DIR instead of building them
#                  (sluice-operator, sluice-sidecar, kubectl-sluice)
#   --no-sbom      skip the SBOM (the check then refuses nothing for its absence)
# Environment: RELEASE_BASE_URL (where the archives will be downloaded from; the
# krew manifest's uri), SOURCE_DATE_EPOCH (archive timestamps; default: the last
# commit's time), SLUICE_CHART_VENV (the venv make chart uses).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
[[ -n "$VERSION" ]] || { echo "release: no workspace version in Cargo.toml" >&2; exit 2; }
OUT="dist/$VERSION"
BIN_DIR=""
SBOM=1
while (($#)); do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --no-sbom) SBOM=0; shift ;;
    *) echo "release: unknown argument $1; usage: scripts/release.sh [--out DIR] [--bin-dir DIR] [--no-sbom]" >&2; exit 2 ;;
  esac
done
BASE_URL="${RELEASE_BASE_URL:-https://sluice.dev/releases/v$VERSION}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
VENV="${SLUICE_CHART_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-chart-venv}"
BINARIES=(sluice-operator sluice-sidecar kubectl-sluice)
PLATFORM=linux-amd64

step() { printf '\n== release: %s\n' "$*"; }

if [[ -z "$BIN_DIR" ]]; then
  step "static binaries"
  if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    TARGET=x86_64-unknown-linux-musl
    echo "musl target installed: building for $TARGET"
    RUSTFLAGS_STATIC=""
  else
    TARGET=x86_64-unknown-linux-gnu
    echo "the musl standard library is not installed (rustup target add x86_64-unknown-linux-musl needs"
    echo "the toolchain server): building glibc static-pie binaries (crt-static) for $TARGET instead"
    RUSTFLAGS_STATIC="-C target-feature=+crt-static"
  fi
  # --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic.
  # The dist profile (Cargo.toml): release with fat LTO and one codegen unit.
  RUSTFLAGS="${RUSTFLAGS:-} $RUSTFLAGS_STATIC" \
    cargo build --profile dist --locked --target "$TARGET" -p sluice-operator -p sluice-sidecar -p kubectl-sluice --bins
  BIN_DIR="${CARGO_TARGET_DIR:-target}/$TARGET/dist"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

# Reproducible archives: sorted names, fixed owner and time, no gzip timestamp.
archive() { # archive NAME FILE...
  local name="$1"; shift
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
      --format=gnu -C "$STAGE/$name" -cf - "$@" | gzip -n -9 > "$OUT/$name.tar.gz"
}

step "archives ($PLATFORM)"
for bin in "${BINARIES[@]}"; do
  [[ -x "$BIN_DIR/$bin" ]] || { echo "release: $BIN_DIR/$bin is missing or not executable" >&2; exit 1; }
  name="$bin-$VERSION-$PLATFORM"
  mkdir -p "$STAGE/$name"
  install -m 0755 "$BIN_DIR/$bin" "$STAGE/$name/$bin"
  cp LICENSE "$STAGE/$name/LICENSE"
  files=("$bin" LICENSE)
  if [[ "$bin" == kubectl-sluice ]]; then
    # kubectl's plugin completion runs kubectl_complete-sluice from PATH.
    "$STAGE/$name/$bin" completion plugin > "$STAGE/$name/kubectl_complete-sluice"
    chmod 0755 "$STAGE/$name/kubectl_complete-sluice"
    files+=(kubectl_complete-sluice)
  fi
  archive "$name" "${files[@]}"
  echo "$name.tar.gz"
done

step "chart (Helm's packager, helm-python-sdk from make chart's venv)"
if ! "$VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --root-user-action=ignore helm-python-sdk==0.2.2
fi
"$VENV/bin/python" - "$ROOT/charts/sluice" "$OUT" "$VERSION" <<'PY'
import os, sys
import helm_python as helm
chart_dir, out, version = sys.argv[1:4]
meta = helm.Chart.load(chart_dir).metadata
if meta.get("version") != version or meta.get("appVersion") != version:
    sys.exit(f"charts/sluice/Chart.yaml has version {meta.get('version')} / appVersion "
             f"{meta.get('appVersion')}; the workspace is {version}: make them equal before releasing")
path = helm.package(chart_dir, destination=out)
print(os.path.basename(path))
PY

step "krew plugin manifest"
plugin_archive="kubectl-sluice-$VERSION-$PLATFORM.tar.gz"
sha="$(sha256sum "$OUT/$plugin_archive" | cut -d' ' -f1)"
sed -e "s|@VERSION@|v$VERSION|g" -e "s|@URI@|$BASE_URL/$plugin_archive|g" -e "s|@SHA256@|$sha|g" \
  scripts/release-krew.yaml > "$OUT/sluice.yaml"
if grep -q '@[A-Z0-9]*@' "$OUT/sluice.yaml"; then
  echo "release: a placeholder is left in the krew manifest" >&2; exit 1
fi
echo "sluice.yaml ($plugin_archive sha256 $sha)"

if ((SBOM)); then
  step "SBOM (CycloneDX, cargo-cyclonedx)"
  if ! command -v cargo-cyclonedx >/dev/null; then
    echo "installing cargo-cyclonedx from crates.io (once)"
    cargo install --locked cargo-cyclonedx@0.5.9
  fi
  # One document for the crates linked into the three binaries (normal
  # dependencies of their packages on the release target, not dev or build ones).
  # cargo-cyclonedx writes one document per workspace member, beside its Cargo.toml.
  SBOM_DIR="$STAGE/sbom"
  mkdir -p "$SBOM_DIR"
  cargo cyclonedx --manifest-path Cargo.toml --format json --spec-version 1.5 \
    --target x86_64-unknown-linux-gnu --no-build-deps --override-filename sluice-release-sbom --quiet
  for pkg in operator sidecar cli; do
    mv "$pkg/sluice-release-sbom.json" "$SBOM_DIR/$pkg.json"
  done
  rm -f ./*/sluice-release-sbom.json
  "$VENV/bin/python" - "$SBOM_DIR" "$OUT/sluice-$VERSION.cdx.json" "$VERSION" <<'PY'
import json, os, sys
src, dest, version = sys.argv[1:4]
merged, seen, deps = None, set(), {}
for f in sorted(os.listdir(src)):
    doc = json.load(open(os.path.join(src, f)))
    # Read each document's own parts before the first becomes the merged one
    # (replacing its component and list in place would drop its crates and
    # nest its new component in itself).
    own, components = doc["metadata"]["component"], doc.get("components", [])
    if merged is None:
        merged = doc
        merged["metadata"]["component"] = {
            "type": "application", "bom-ref": f"sluice@{version}", "name": "sluice", "version": version,
            "components": [], "licenses": [{"expression": "Apache-2.0"}]}
        merged["components"] = []
    merged["metadata"]["component"]["components"].append(own)
    for c in components:
        if c["bom-ref"] not in seen:
            seen.add(c["bom-ref"])
            merged["components"].append(c)
    for d in doc.get("dependencies", []):
        deps.setdefault(d["ref"], set()).update(d.get("dependsOn", []))
merged["dependencies"] = [{"ref": r, "dependsOn": sorted(d)} for r, d in sorted(deps.items())]
merged.pop("serialNumber", None)
json.dump(merged, open(dest, "w"), indent=1, sort_keys=True)
print(f"{os.path.basename(dest)}: {len(merged['components'])} components")
PY
fi

step "checksums"
(cd "$OUT" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | sort | xargs sha256sum > SHA256SUMS)
cat "$OUT/SHA256SUMS"

step "check"
scripts/release-check.sh "$OUT" $( ((SBOM)) || echo --no-sbom)
echo "release $VERSION: $OUT"
