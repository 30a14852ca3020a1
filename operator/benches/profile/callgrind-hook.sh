#!/bin/sh
# FLEET_AUDIT_HOOK for callgrind (#25, with callgrind-operator.sh as
# FLEET_OPERATOR_BIN): counts the operators' instructions during the audit
# phase only. Instructions per event = the dump's Ir / the bench's
# "events accepted" (`callgrind_annotate FILE | head` shows the total).
case "$1" in
start)
  for p in $FLEET_OPERATOR_PIDS; do
    callgrind_control -i on "$p" >/dev/null
    callgrind_control -z "$p" >/dev/null
  done;;
stop)
  for p in $FLEET_OPERATOR_PIDS; do
    callgrind_control -d "$p" >/dev/null
    callgrind_control -i off "$p" >/dev/null
  done;;
esac
