#!/usr/bin/env bash
# cargo deny with deny.toml: licenses, bans (duplicate versions, banned crates),
# sources, then advisories. The RustSec advisory database is a git repository
# fetched from GitHub; when it cannot be fetched this says so in capitals and
# checks against the copy already on this machine (saying how old it is), or
# not at all: it never reports "no advisories" it did not look for.
# SLUICE_REQUIRE_ADVISORIES=1 (for a release) makes an unchecked advisory run fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DENY_VERSION=0.20.2

if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  echo "deny: installing cargo-deny $DENY_VERSION from crates.io (once per machine; a few minutes)"
  cargo install --locked "cargo-deny@$DENY_VERSION"
fi

# deny.toml ignores RUSTSEC-2023-0071 (rsa) because no product code uses an RSA
# private key; the moment some does, the ignore is wrong: fail here.
if grep -rnE 'EncodingKey::from_rsa|RsaPrivateKey' \
  --include='*.rs' crds policy sidecar operator cli; then
  echo "deny: product code above uses an RSA private key: RUSTSEC-2023-0071 (rsa timing side channel) applies; remove its ignore in deny.toml and decide again" >&2
  exit 1
fi

echo "== deny: licenses, bans, sources"
cargo deny --locked check --hide-inclusion-graph licenses bans sources

echo "== deny: advisories"
DB_ROOT="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if timeout 120 cargo deny --locked fetch db >"$log" 2>&1; then
  cargo deny --locked --offline check --hide-inclusion-graph advisories
  echo "deny: advisories checked against the RustSec database fetched just now"
  exit 0
fi
echo "deny: ADVISORIES: THE RUSTSEC DATABASE COULD NOT BE FETCHED ($(tail -1 "$log" | cut -c1-200))"
db="$(find "$DB_ROOT" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -1)"
if [[ -n "$db" ]] && git -C "$db" rev-parse HEAD >/dev/null 2>&1; then
  age="$(git -C "$db" log -1 --format=%cr 2>/dev/null || echo 'of unknown age')"
  echo "deny: checking against the copy on this machine ($db, last advisory commit $age): advisories newer than that are NOT seen"
  cargo deny --locked --offline check --hide-inclusion-graph advisories
else
  echo "deny: NO ADVISORY DATABASE ON THIS MACHINE: known vulnerabilities were NOT checked"
  if [[ "${SLUICE_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
    echo "deny: SLUICE_REQUIRE_ADVISORIES=1: failing" >&2
    exit 1
  fi
fi
