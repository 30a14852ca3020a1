#!/bin/sh
# FLEET_OPERATOR_BIN for callgrind (#25): runs the operator in
# FLEET_OPERATOR_REAL_BIN (default target/release/sluice-operator) under
# callgrind with collection off; callgrind-hook.sh turns it on for the audit
# phase only. Output: FLEET_PROFILE_DIR (/tmp)/callgrind.out.PID.
exec valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="${FLEET_PROFILE_DIR:-/tmp}/callgrind.out.%p" \
  "${FLEET_OPERATOR_REAL_BIN:-target/release/sluice-operator}" "$@"
