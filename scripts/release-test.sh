#!/usr/bin/env bash
# Tests scripts/release.sh and scripts/release-check.sh in seconds (make chart
# runs it): the release steps run on small static stand-ins for the three
# binaries (a real `make release` builds them in minutes), with the real SBOM
# step when cargo-cyclonedx is installed, then each way a release can be
# wrong must be caught by the check:
#   a dynamically linked binary, a file changed after SHA256SUMS, a krew
#   manifest whose sha256 is not the archive's, a chart that ignores
#   global.imageRegistry.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
command -v gcc >/dev/null || { echo "release-test: gcc is needed for the stand-in binaries" >&2; exit 2; }

# Stand-ins: answer --version and `completion plugin` as the real ones do.
cat > "$WORK/stub.c" <<'C'
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--version") == 0) { printf("%s %s\n", NAME, VERSION); return 0; }
  if (argc > 2 && strcmp(argv[1], "completion") == 0 && strcmp(argv[2], "plugin") == 0) {
    fputs("#!/bin/sh\nexec kubectl-sluice __complete \"$@\"\n", stdout);
    return 0;
  }
  return 2;
}
C
mkdir -p "$WORK/static" "$WORK/dynamic"
for bin in sluice-operator sluice-sidecar kubectl-sluice; do
  gcc -O1 -static-pie -DNAME="\"$bin\"" -DVERSION="\"$VERSION\"" -o "$WORK/static/$bin" "$WORK/stub.c"
  cp "$WORK/static/$bin" "$WORK/dynamic/$bin"
done
gcc -O1 -DNAME='"sluice-sidecar"' -DVERSION="\"$VERSION\"" -o "$WORK/dynamic/sluice-sidecar" "$WORK/stub.c"

PASSED=0
FAILED=0
expect_refusal() { # expect_refusal WHAT NEEDLE -- command...
  local what="$1" needle="$2"; shift 3
  local out
  if out="$("$@" 2>&1)"; then
    echo "$out" | tail -20
    echo "✖ release-test: $what was not caught" >&2; FAILED=$((FAILED + 1)); return
  fi
  if ! grep -qF -- "$needle" <<<"$out"; then
    echo "$out" | tail -20
    echo "✖ release-test: $what failed without saying '$needle'" >&2; FAILED=$((FAILED + 1)); return
  fi
  echo "✔ caught: $what ($(grep -F -- "$needle" <<<"$out" | head -1 | cut -c1-140))"
  PASSED=$((PASSED + 1))
}

cd "$ROOT"
# The SBOM step runs for real (cargo-cyclonedx over this workspace, then the
# merge of its three documents) when cargo-cyclonedx is installed; release.sh
# would otherwise install it from crates.io, which is minutes.
sbom=(--no-sbom)
sbom_note="without the SBOM (cargo-cyclonedx is not installed; scripts/release.sh installs it)"
if command -v cargo-cyclonedx >/dev/null; then sbom=(); sbom_note="with its SBOM"; fi
if out="$(scripts/release.sh --bin-dir "$WORK/static" --out "$WORK/good" "${sbom[@]}" 2>&1)"; then
  grep -E '^(✔|✖)' <<<"$out"
  echo "✔ a release of static binaries passes the check, $sbom_note"
  PASSED=$((PASSED + 1))
else
  echo "$out" | tail -30
  echo "✖ release-test: the release of static binaries did not pass" >&2
  exit 1
fi

expect_refusal "a dynamically linked sidecar" "sluice-sidecar is dynamically linked" -- \
  scripts/release.sh --bin-dir "$WORK/dynamic" --out "$WORK/dynamic-out" --no-sbom

cp -r "$WORK/good" "$WORK/altered"
printf 'x' >> "$WORK/altered/sluice-$VERSION.tgz"
expect_refusal "an archive changed after SHA256SUMS" "SHA256SUMS does not match" -- \
  scripts/release-check.sh "$WORK/altered" --no-sbom

cp -r "$WORK/good" "$WORK/krew"
sed -i -E 's/^(    sha256: ).*/\1'"$(printf 'f%.0s' $(seq 64))"'/' "$WORK/krew/sluice.yaml"
(cd "$WORK/krew" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | sort | xargs sha256sum > SHA256SUMS)
expect_refusal "a krew manifest with another sha256" "krew manifest sluice.yaml: sha256 ffff" -- \
  scripts/release-check.sh "$WORK/krew" --no-sbom

# A chart whose image helper ignores global.imageRegistry.
cp -r "$ROOT/charts/sluice" "$WORK/chart"
sed -i 's/{{- \$repository = printf "%s\/%s" (trimSuffix "\/" .) \$repository -}}//' "$WORK/chart/templates/_helpers.tpl"
if cmp -s "$WORK/chart/templates/_helpers.tpl" "$ROOT/charts/sluice/templates/_helpers.tpl"; then
  echo "✖ release-test: could not remove the registry from the image helper" >&2; exit 1
fi
cp -r "$WORK/good" "$WORK/registry"
"${SLUICE_CHART_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-chart-venv}/bin/python" - "$WORK/chart" "$WORK/registry" <<'PY'
import os, sys, glob
import helm_python as helm
for old in glob.glob(os.path.join(sys.argv[2], "sluice-*.tgz")):
    os.remove(old)
helm.package(sys.argv[1], destination=sys.argv[2])
PY
(cd "$WORK/registry" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | sort | xargs sha256sum > SHA256SUMS)
expect_refusal "a chart that ignores global.imageRegistry" "with a registry and digests the images are" -- \
  scripts/release-check.sh "$WORK/registry" --no-sbom

echo "release-test: $PASSED passed, $FAILED failed"
((FAILED == 0))
