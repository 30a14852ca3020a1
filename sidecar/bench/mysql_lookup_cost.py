#!/usr/bin/env python3
"""Server CPU per statement of the MySQL plane's views-lookup shapes.

Runs point queries on one connection, each after a candidate lookup (or
alone), and prints mariadbd's user+system CPU per iteration from
/proc/PID/stat: what a lookup costs the server on top of a point query.
Against the bench database mysql_setup.sh creates (bench.point).

Usage: mysql_lookup_cost.py PORT SERVER_PID [N] [SHAPE...]
Env: USER_NAME (default bench_app), PASSWORD (default bench-pw).
"""
import os
import random
import sys

import pymysql
from pymysql.constants import CLIENT

port, pid = int(sys.argv[1]), int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
only = sys.argv[4:]
hz = os.sysconf("SC_CLK_TCK")


def ticks():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def hexlit(s):
    return "_utf8mb3 X'" + s.encode().hex() + "'"


IS = (
    "SELECT LOWER(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
    f"{hexlit('bench')} AND TABLE_NAME = {hexlit('point')} AND TABLE_TYPE = 'VIEW' LIMIT 65"
)
P = "SELECT pad FROM point WHERE id = %d"
PV = "SELECT pad FROM pv WHERE id = %d"


def rules_tables(name):
    """Table rules' lookup since session 17: which names are views."""
    return (
        "SELECT 0 FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
        f"{hexlit('bench')} AND TABLE_NAME = {hexlit(name)} AND TABLE_TYPE = 'VIEW' LIMIT 65"
    )


def rules_views(name):
    """Table rules' lookup of session 16 (and, since 17, for views only)."""
    return (
        "SELECT CONCAT(0, ' ', IFNULL(VIEW_DEFINITION, '')) FROM information_schema.VIEWS "
        f"WHERE TABLE_SCHEMA = {hexlit('bench')} AND TABLE_NAME = {hexlit(name)} LIMIT 65"
    )


SHAPES = {
    "point": [P],
    "DO 1 + point": ["DO 1", P],
    "information_schema.TABLES + point": [IS, P],
    "SHOW FULL TABLES LIKE + point": ["SHOW FULL TABLES FROM `bench` LIKE 'point'", P],
    "SHOW CREATE TABLE + point": ["SHOW CREATE TABLE `bench`.`point`", P],
    "SHOW CREATE VIEW (a table) + point": ["SHOW CREATE VIEW `bench`.`point`", P],
    "2 x SHOW CREATE VIEW + point": ["SHOW CREATE VIEW `bench`.`point`"] * 2 + [P],
    # A Connection with a table deny/requireApproval rule (and masking):
    # a point query on a table, then one on a view (pv over point).
    "s16 rules: VIEWS + point": [rules_views("point"), P],
    "s16 rules+mask: VIEWS + SHOW + point": [rules_views("point"), "SHOW CREATE VIEW `bench`.`point`", P],
    "s17 rules(+mask): TABLES + point": [rules_tables("point"), P],
    "s16 rules: VIEWS x2 + view": [rules_views("pv"), rules_views("point"), PV],
    "s16 rules+mask: VIEWS x2 + SHOW + view": [rules_views("pv"), rules_views("point"), "SHOW CREATE VIEW `bench`.`pv`", PV],
    "s17 rules(+mask): TABLES+VIEWS+TABLES + view": [rules_tables("pv"), rules_views("pv"), rules_tables("point"), PV],
}

c = pymysql.connect(
    host="127.0.0.1",
    port=port,
    user=os.environ.get("USER_NAME", "bench_app"),
    password=os.environ.get("PASSWORD", "bench-pw"),
    database="bench",
    autocommit=True,
    client_flag=CLIENT.MULTI_STATEMENTS,
)
cur = c.cursor()
cur.execute("CREATE OR REPLACE VIEW pv AS SELECT id, pad FROM point")


def one(stmts, i):
    for s in stmts:
        try:
            cur.execute(s % i if "%d" in s else s)
            cur.fetchall()
        except pymysql.MySQLError:
            pass


for name, stmts in SHAPES.items():
    if only and name not in only:
        continue
    ids = [random.randint(1, 100000) for _ in range(n)]
    for i in range(100):
        one(stmts, ids[i])
    t0 = ticks()
    for i in range(n):
        one(stmts, ids[i])
    t1 = ticks()
    print(f"{name:36s} server {1e6 * (t1 - t0) / hz / n:7.1f} us/iteration", flush=True)
