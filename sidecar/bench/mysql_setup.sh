# Sourced by mysql_bench.sh and mysql_cg.sh: a throwaway MariaDB with the
# bench tables (`point`, 100,000 rows; `big`, $BIG_ROWS rows with a masked
# column) and the sidecar's manifests (rules and a masked column, as a real
# deployment would have) in $work, cleaned up on exit. Sets work, pw,
# db_port, sidecar_port; the caller starts the sidecar (sidecar_pid).
mysql_bench_setup() {
  work=$(mktemp -d /tmp/sluice-mysql-bench.XXXXXX)
  sidecar_pid=""
  cleanup() {
    [ -n "$sidecar_pid" ] && kill "$sidecar_pid" 2>/dev/null || true
    maria_stop "$work/maria"
    wait 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT

  pw=bench-pw
  db_port=$(free_port); sidecar_port=$(free_port)
  echo "MariaDB on :$db_port, sidecar on :$sidecar_port" >&2
  echo "$(date +%T) starting MariaDB and loading the tables" >&2
  maria_start "$work/maria" "$db_port" bench_app "$pw"
  maria_admin "$work/maria" "CREATE DATABASE bench; GRANT ALL ON bench.* TO 'bench_app'@'127.0.0.1'; GRANT ALL ON bench.* TO 'bench_app'@'%';
    USE bench;
    CREATE TABLE bench.point (id int PRIMARY KEY, pad char(60));
    INSERT INTO bench.point SELECT seq, md5(seq) FROM seq_1_to_100000;
    CREATE TABLE bench.big (id int PRIMARY KEY, pad char(32), secret varchar(20));
    INSERT INTO bench.big SELECT seq, md5(seq), concat('secret-', seq) FROM seq_1_to_$BIG_ROWS;
    ANALYZE TABLE bench.point, bench.big;" >/dev/null

  # The sidecar: rules and a masked column, as a real deployment would have.
  cat > "$work/manifests.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: bench-creds, namespace: bench}
stringData: {username: bench_app, password: "$pw"}
---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {name: bench-mysql, namespace: bench}
spec:
  protocol: mysql
  upstream: {host: 127.0.0.1, port: $db_port, database: bench, tls: {mode: disable}}
  credentials: {secretRef: {name: bench-creds}}
  listen: {port: $sidecar_port}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bench, namespace: bench}
spec:
  subjects: [{serviceAccount: app}]
  connections: [bench-mysql]
  defaultAction: allow
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
    - name: no-server-files
      match: {functions: ["load_file"]}
      action: deny
  masking:
    - columns: ["big.secret"]
      strategy: redact
YAML
}
