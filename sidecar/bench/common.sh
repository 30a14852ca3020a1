# Sourced by bench.sh and pg_cost.sh: what both start the sidecar with, so the
# two measure the same configuration.

# bench_manifests PG_PORT LISTEN_PORT PASSWORD: the sidecar's manifests —
# rules and a masked column, as a real deployment would have.
bench_manifests() {
  cat <<YAML
apiVersion: v1
kind: Secret
metadata: {name: bench-creds, namespace: bench}
stringData: {username: postgres, password: "$3"}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: bench-db, namespace: bench}
spec:
  protocol: postgres
  upstream: {host: 127.0.0.1, port: $1, database: bench, tls: {mode: disable}}
  credentials: {secretRef: {name: bench-creds}}
  listen: {port: $2}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bench, namespace: bench}
spec:
  subjects: [{serviceAccount: app}]
  connections: [bench-db]
  defaultAction: allow
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
    - name: no-server-files
      match: {functions: ["pg_read_file", "lo_*"]}
      action: deny
  masking:
    - columns: ["big.secret"]
      strategy: redact
YAML
}

# uncache FILE: drops the file's clean pages from the page cache, so that a
# binary starts as a pod's does, read from disk. A file just written (a build
# moments ago) sits in the cache in large folios, and the process then maps
# several MiB more of its code at a fault: its RSS is not comparable to an
# older file's (measured: 24.9 against 22.4 MiB for two copies of one binary).
uncache() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1" || true; }
