#!/usr/bin/env bash
# Runs mysql_lookup_cost.py against a throwaway MariaDB with the bench
# tables (mysql_setup.sh): the server's CPU per point query after each
# candidate lookup shape. No sidecar is started.
# Usage: sidecar/bench/mysql_lookup_cost.sh [N] [SHAPE...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../demo/pg.sh
. "$root/sidecar/demo/pg.sh"
# shellcheck source=../demo/mysql.sh
. "$root/sidecar/demo/mysql.sh"
BIG_ROWS=${BIG_ROWS:-10}
# shellcheck source=mysql_setup.sh
. "$here/mysql_setup.sh"
mysql_bench_setup
python3 "$here/mysql_lookup_cost.py" "$db_port" "$(cat "$work/maria/pid")" "$@"
