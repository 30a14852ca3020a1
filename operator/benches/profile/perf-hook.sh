#!/bin/sh
# FLEET_AUDIT_HOOK for perf: record the operators during the audit phase.
case "$1" in
start)
  for p in $FLEET_OPERATOR_PIDS; do
    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$p" -o "${FLEET_PROFILE_DIR:-/tmp}/perf-$p.data" >${FLEET_PROFILE_DIR:-/tmp}/perf-$p.log 2>&1 &
    echo $! > "${FLEET_PROFILE_DIR:-/tmp}/perf-$p.pid"
  done
  sleep 1;;
stop)
  for p in $FLEET_OPERATOR_PIDS; do kill -INT "$(cat ${FLEET_PROFILE_DIR:-/tmp}/perf-$p.pid)"; done
  sleep 3;;
esac
